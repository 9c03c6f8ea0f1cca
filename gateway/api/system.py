"""Operations: health, metrics, the problem-type pages, the member directory."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import ComponentsDep
from gateway.problems import PROBLEMS, Problem
from node_client.contracts import MemberStatus
from node_client.vocabulary import roles_of

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz(c: ComponentsDep) -> JSONResponse:
    """Chain, storage, journal, indexer lag and anchor lag. 200 when everything answers, else 503."""
    checks: dict[str, Any] = {}
    ok = True
    try:
        head = c.ledger.client.block_number()
        checks["chain"] = {"ok": True, "head": head}
    except Exception as exc:
        ok, head = False, None
        checks["chain"] = {"ok": False, "error": type(exc).__name__}
    try:
        c.store.check()
        checks["storage"] = {"ok": True, "kind": c.store.name}
    except Exception as exc:
        ok = False
        checks["storage"] = {"ok": False, "kind": c.store.name, "error": type(exc).__name__}
    try:
        c.db.check()
        checks["database"] = {"ok": True}
    except Exception as exc:
        ok = False
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    st = c.indexer.status()
    lag = (head - st.indexed_block) if head is not None else None
    checks["indexer"] = {
        "ok": st.error is None,
        "synced": c.indexer.synced,
        "indexedBlock": st.indexed_block,
        "lagBlocks": lag,
        "error": st.error,
    }
    c.metrics.indexed_block.set(st.indexed_block)
    if lag is not None:
        c.metrics.indexer_lag.set(lag)
    if c.journal is not None and c.anchorer is not None:
        last = c.journal.last_anchor()
        # a failed journal (disk full, I/O error) stays failed until restart; a journal the chain's
        # anchors contradict (rolled back, replaced) is reported by the anchor guard
        guard_problem = c.anchor_guard.problem if c.anchor_guard is not None else None
        journal_ok = c.journal.available and guard_problem is None
        ok = ok and journal_ok
        checks["journal"] = {
            "ok": journal_ok,
            "error": (repr(c.journal.error) if c.journal.error is not None else None) or guard_problem,
            "size": c.journal.size,
            "anchoredSize": last[0] if last else 0,
            "anchorLagSeconds": c.anchorer.lag_seconds,
            "anchorError": c.anchorer.last_error,
        }
        c.metrics.anchor_lag.set(c.anchorer.lag_seconds or 0)
    body = {
        "status": "ok" if ok else "degraded",
        "ledgerMode": c.settings.ledger_mode.value,
        "time": int(time.time()),
        "deployment": {
            "chainId": c.manifest.chain_id,
            "deployBlock": c.manifest.deploy_block,
            "contracts": c.manifest.contracts,
            "gateway": c.gateway_account.address,
        },
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(c: ComponentsDep) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/problems/{code}", response_class=HTMLResponse)
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


def _member_status(value: int) -> str:
    """A member's status in the directory: ``active``, ``suspended``, ``removed`` (else ``unknown``)."""
    known = (MemberStatus.ACTIVE, MemberStatus.SUSPENDED, MemberStatus.REMOVED)
    return MemberStatus(value).name.lower() if value in known else "unknown"


@router.get("/v1/members")
def members(c: ComponentsDep) -> dict[str, Any]:
    """The consortium directory: address, display name (off-chain), roles, status, encryption key."""
    rows = c.db.read().execute("SELECT * FROM chain_members ORDER BY since_block").fetchall()
    return {
        "members": [
            {
                "address": r["address"],
                "name": c.member_names.get(r["address"], ""),
                "roles": roles_of(r["roles"]),
                "status": _member_status(r["status"]),
                "encryptionKey": "0x" + bytes(r["encryption_key"]).hex(),
            }
            for r in rows
        ]
    }
