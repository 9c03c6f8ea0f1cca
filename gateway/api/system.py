"""Operations: health, metrics, the problem-type pages, the member directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import ComponentsDep, CursorQuery, LimitQuery, page_key, page_links
from gateway.api.schemas import (
    ChainCheck,
    DatabaseCheck,
    Deployment,
    Health,
    HealthChecks,
    IndexerCheck,
    JournalCheck,
    Member,
    Members,
    MemberStatusSlug,
    ReplicationCheck,
    StorageCheck,
    problems,
)
from gateway.ledger.journal_service import JournalAppender
from gateway.problems import PROBLEMS, Problem
from gateway.storage import read_model
from gateway.wiring import Components, Role
from node_client.contracts import MemberStatus
from node_client.vocabulary import roles_of

router = APIRouter(tags=["system"])


_HEALTH: dict[int | str, dict[str, Any]] = {
    200: {"description": "Everything answers (``status``: ok)"},
    503: {"model": Health, "description": "Degraded: some check failed (``status``: degraded; the same body)"},
}


def _failed(exc: Exception) -> str:
    return type(exc).__name__


def journal_check(c: Components) -> JournalCheck | None:
    """The journal's health: this process's journal, or (a worker's) the one its primary publishes."""
    if c.role is Role.WORKER and c.appender is not None:
        return _worker_journal_check(c.appender, c.settings.journal_status_path)
    if c.journal is None or c.anchorer is None:
        return None
    last = c.journal.last_anchor()
    # a failed journal (disk full, I/O error) stays failed until restart; a journal the chain's
    # anchors contradict (rolled back, replaced) is reported by the anchor guard
    guard_problem = c.anchor_guard.problem if c.anchor_guard is not None else None
    lag = c.anchorer.lag_seconds
    c.metrics.anchor_lag.set(lag or 0)
    lagging = f"oldest unanchored entry {lag:.0f}s old (bound {c.settings.max_anchor_lag:.0f}s)"
    too_old = lag > c.settings.max_anchor_lag
    return JournalCheck(
        ok=c.journal.available and guard_problem is None and not too_old,
        error=(repr(c.journal.error) if c.journal.error is not None else None)
        or guard_problem
        or (lagging if too_old else None),
        size=c.journal.size,
        anchoredSize=last[0] if last else 0,
        anchorLagSeconds=c.anchorer.lag_seconds,
        anchorError=c.anchorer.last_error,
    )


#: how old the primary's published journal check may be before a worker calls it stale (it writes every 0.2 s)
STATUS_STALE_S = 2.0


def _worker_journal_check(appender: JournalAppender, status: Path) -> JournalCheck:
    """A worker's journal is the primary's: its published check, failed if the primary does not answer or
    has stopped publishing."""
    try:
        published = JournalCheck.model_validate_json(status.read_bytes())
        age = time.time() - status.stat().st_mtime
    except (OSError, ValueError):
        published, age = None, 0.0
    problem = None
    if not appender.available:
        problem = f"the journal writer (primary process) is unreachable: {appender.error!r}"
    elif published is None or age > STATUS_STALE_S:
        problem = "the primary process publishes no journal status"
    if published is None:
        return JournalCheck(ok=False, error=problem, size=0, anchoredSize=0, anchorLagSeconds=0.0, anchorError=None)
    if problem is not None:
        return published.model_copy(update={"ok": False, "error": problem})
    return published


def _chain_check(c: Components) -> tuple[ChainCheck, int]:
    """The head, and whether it is fresh: on a chain that seals on a clock, a head older than the bound
    means this node (or the whole chain) has stopped, and decisions must not rest on it."""
    block = c.ledger.client.rpc(lambda: c.ledger.client.w3.eth.get_block("latest"))
    head, age = int(block["number"]), max(0.0, time.time() - int(block["timestamp"]))
    bound = c.settings.max_head_age
    if bound is None and c.manifest.block_period > 0:
        bound = 30.0 * c.manifest.block_period
    if bound is not None and age > bound:
        return ChainCheck(
            ok=False, head=head, headAgeSeconds=age, error=f"head is {age:.0f}s old (bound {bound:.0f}s)"
        ), head
    return ChainCheck(ok=True, head=head, headAgeSeconds=age), head


@router.get("/healthz", responses=_HEALTH, response_model_exclude_unset=True)
def healthz(c: ComponentsDep, response: Response) -> Health:
    """Chain (and the age of its head), storage, database, indexer and journal (anchor lag). 200 when every
    part works, else 503: a failing indexer, a stale head or a lagging anchor fail it too."""
    head: int | None = None
    try:
        chain, head = _chain_check(c)
    except Exception as exc:  # noqa: BLE001 - the check reports any failure, by its type
        chain = ChainCheck(ok=False, error=_failed(exc))
    try:
        c.store.check()
        storage = StorageCheck(ok=True, kind=c.store.name)
    except Exception as exc:  # noqa: BLE001 - as above
        storage = StorageCheck(ok=False, kind=c.store.name, error=_failed(exc))
    try:
        c.db.check()
        database = DatabaseCheck(ok=True)
    except Exception as exc:  # noqa: BLE001 - as above
        database = DatabaseCheck(ok=False, error=_failed(exc))
    st = c.indexer.status()
    lag = (head - st.indexed_block) if head is not None else None
    indexer = IndexerCheck(
        ok=st.error is None,
        synced=c.indexer.synced,
        indexedBlock=st.indexed_block,
        headBlock=st.head_block,
        lagBlocks=lag,
        error=st.error,
        confirmations=st.confirmations,
        reorgs=st.reorgs,
        pendingRestrictions=st.pending_restrictions,
        catchingUp=st.catching_up,
    )
    c.metrics.indexed_block.set(st.indexed_block)
    c.metrics.indexer_catching_up.set(int(st.catching_up))
    if lag is not None:
        c.metrics.indexer_lag.set(lag)
    journal = journal_check(c)
    ok = chain.ok and storage.ok and database.ok and indexer.ok and (journal is None or journal.ok)
    parts: dict[str, Any] = {"chain": chain, "storage": storage, "database": database, "indexer": indexer}
    if journal is not None:  # batch mode only: absent, not null, in strict mode
        parts["journal"] = journal
    if c.replicator is not None:  # a backlog is retried, so it is shown but never fails health
        rep = c.replicator.status()
        parts["replication"] = ReplicationCheck(
            backlog=rep.backlog, oldestSeconds=rep.oldest_seconds, lastError=rep.last_error
        )
    response.status_code = 200 if ok else 503
    return Health(
        status="ok" if ok else "degraded",
        ledgerMode=c.settings.ledger_mode.value,
        time=int(time.time()),
        deployment=Deployment(
            chainId=c.manifest.chain_id,
            deployBlock=c.manifest.deploy_block,
            contracts=c.manifest.contracts,
            gateway=c.gateway_account.address,
        ),
        checks=HealthChecks(**parts),
    )


_METRICS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=PlainTextResponse, responses=_METRICS)
def metrics(c: ComponentsDep) -> Response:
    """Prometheus metrics."""
    return Response(c.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/problems/{code}", response_class=HTMLResponse, responses=problems(404))
def problem_page(code: str) -> HTMLResponse:
    """What a problem type means (the ``type`` URI of every error response)."""
    if code not in PROBLEMS:
        raise Problem("not_found", "unknown problem type")
    status, title = PROBLEMS[code]
    return HTMLResponse(
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{code}</title>"
        f"<h1>{code}</h1><p>HTTP {status}: {title}.</p><p><a href='/problems'>All problem types</a></p></html>"
    )


@router.get("/problems", response_class=HTMLResponse)
def problem_index() -> HTMLResponse:
    rows = "".join(
        f"<tr><td><a href='/problems/{k}'>{k}</a></td><td>{s}</td><td>{t}</td></tr>" for k, (s, t) in PROBLEMS.items()
    )
    return HTMLResponse(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Problem types</title><h1>Problem types</h1>"
        f"<table><tr><th>code</th><th>status</th><th>meaning</th></tr>{rows}</table></html>"
    )


_MEMBER_STATUS: dict[int, MemberStatusSlug] = {
    MemberStatus.ACTIVE: "active",
    MemberStatus.SUSPENDED: "suspended",
    MemberStatus.REMOVED: "removed",
}


def _member_status(value: int) -> MemberStatusSlug:
    """A member's status in the directory: ``active``, ``suspended``, ``removed`` (else ``unknown``)."""
    return _MEMBER_STATUS.get(value, "unknown")


@router.get("/v1/members", responses=problems(400, 503))
def members(c: ComponentsDep, cursor: CursorQuery = None, limit: LimitQuery = 50) -> Members:
    """The consortium directory: address, display name (off-chain), roles, status, encryption key. In the
    order members were added, a page at a time: ``cursor`` (and the ``next`` link) give the following page."""
    after = _member_key(page_key(cursor))
    c.indexer.require_complete()
    page = read_model.members_page(c.db, after=after, limit=limit + 1)
    last = page[limit - 1] if len(page) > limit else None
    return Members(
        members=[
            Member(
                address=m.address,
                name=c.member_names.get(m.address, ""),
                roles=roles_of(m.roles),
                status=_member_status(m.status),
                encryptionKey="0x" + m.encryption_key.hex(),
            )
            for m in page[:limit]
        ],
        **page_links("/v1/members", {"limit": limit}, None if last is None else (last.since, _padded(last.address))),
    )


def _padded(address: str) -> bytes:
    """An address as the 32 bytes of a page cursor's id (left-padded, as the ABI pads it)."""
    return bytes.fromhex(address[2:]).rjust(32, b"\0")


def _member_key(key: tuple[int, bytes] | None) -> tuple[int, str] | None:
    """A members page cursor's key as (since block, address); 400 for a key that holds no address."""
    if key is None:
        return None
    block, raw = key
    if raw[:12] != bytes(12):
        raise Problem("invalid_request", "cursor is not one this gateway returned")
    return block, to_checksum_address(raw[12:])
