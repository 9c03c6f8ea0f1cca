""":func:`replay`: the phases in order — read the chain, check the journal against its anchors, replay the
state judging every access, judge timing races, check stores and claims, settle a checkpoint, summarize."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_client._client import ChainClient
from node_client.audit.anchors import JournalView, anchor_events, choose_gateway, inclusion, judge_anchors
from node_client.audit.chain import ChainView, load_chain
from node_client.audit.checkpoint import CHECKPOINT_MARGIN, Resume, build_checkpoint
from node_client.audit.evidence import check_blobs, check_claims
from node_client.audit.journal import load_journal
from node_client.audit.judge import Judge
from node_client.audit.model import REVIEW_KINDS, Anomaly, AuditReport, Findings, Progress
from node_client.audit.state import State
from node_client.audit.timing import measure_skew, schedule, timing_verdicts
from node_client.deploy import Manifest
from node_client.merkle import MerkleTree

__all__ = ["DEFAULT_MAX_STALENESS", "replay"]

#: the staleness bound a gateway promises (``Indexer.freshness`` of the gateway at the default poll)
DEFAULT_MAX_STALENESS = 1.0


def replay(
    client: ChainClient,
    manifest: Manifest,
    *,
    journal: Path | None = None,
    from_block: int | None = None,
    to_block: int | None = None,
    progress: Progress | None = None,
    gateway: str | None = None,
    clock_skew: int | None = 0,
    anchor_grace: int = 60,
    resume: Mapping[str, Any] | None = None,
    store: Path | str | None = None,
    claims: Path | None = None,
    checkpoint: bool = False,
    checkpoint_margin: int = CHECKPOINT_MARGIN,
    max_staleness: float = DEFAULT_MAX_STALENESS,
) -> AuditReport:
    """Replays the deployment's events (and the exported ``journal``) and verifies every access.

    ``from_block`` defaults to (and should stay at) the deploy block: state is rebuilt from events, so
    starting later misses what came before. ``gateway`` is the address whose anchors the journal is
    checked against (default: the anchoring gateway whose roots the journal matches best).
    How journal entries are judged: see the package docstring; ``clock_skew`` applies to version 1
    entries only (``None`` measures it from their anchors); ``max_staleness`` (seconds) is the bound the
    audited gateway promises between seeing a head and deciding on its state. Journal entries not covered
    by any anchor are reported only when older than ``anchor_grace`` seconds at ``to_block``.

    ``resume`` is a checkpoint (:attr:`AuditReport.checkpoint`, loaded from JSON): the replay then
    starts from the checkpoint's state and position instead of the deploy block, and reaches the
    same verdict as a full replay (see docs/audit.md for what a checkpoint holds). ``store`` (a
    local store directory or an IPFS API URL) re-hashes every stored record ciphertext against its
    on-chain ``contentHash``. ``claims`` is a JSON Lines file of release responses a requester says
    it received: each must be on the ledger (see :func:`node_client.audit.evidence.check_claims`).
    ``checkpoint`` fills :attr:`AuditReport.checkpoint` (a JSON-able dict) for a later ``resume``; its
    state stands ``checkpoint_margin`` seconds before the newest journal entry (see :data:`CHECKPOINT_MARGIN`).
    """
    # longer than a screen only by its signature and docstring: the body is the phases in order
    clock = _Clock(time.perf_counter())
    cp = _resume(client, manifest, resume, claims)
    origin, start, end = _span(client, manifest, cp, from_block, to_block)
    chain, clock.fetched = load_chain(client, manifest, origin, start, end, progress)
    clock.timed = time.perf_counter()
    findings = Findings()
    jv = _read_journal(chain, journal, cp, gateway, clock_skew, findings, progress)
    clock.verify_started = time.perf_counter()
    judge = Judge(
        chain,
        jv,
        State.from_json(cp.state) if cp is not None else State(),
        _names(manifest),
        findings,
        anchor_grace=anchor_grace,
    )
    judge.run()
    unsettled = timing_verdicts(judge, chain, jv, findings, max_staleness=max_staleness, margin=checkpoint_margin)
    clock.verified = time.perf_counter()
    if store is not None:
        for a in check_blobs(judge.state, store):
            findings.report(a, ("run", 0))
    if claims is not None:
        for a in check_claims(claims, judge.rows):
            findings.report(a, ("run", 0))
    checkpoint_data = (
        build_checkpoint(manifest, cp, chain, jv, judge.rows, findings, unsettled=unsettled, margin=checkpoint_margin)
        if checkpoint
        else None
    )
    report = _report(manifest, cp, chain, jv, judge, findings, clock, max_staleness)
    report.checkpoint = checkpoint_data
    return report


@dataclass(slots=True)
class _Clock:
    """When each phase ended (``time.perf_counter``), for the summary's timings."""

    started: float
    fetched: float = 0.0
    timed: float = 0.0
    verify_started: float = 0.0
    verified: float = 0.0


def _resume(
    client: ChainClient, manifest: Manifest, resume: Mapping[str, Any] | None, claims: Path | None
) -> Resume | None:
    if client.chain_id != manifest.chain_id:
        raise ValueError(f"manifest is for chain {manifest.chain_id}, the node is chain {client.chain_id}")
    cp = Resume.load(resume, manifest) if resume is not None else None
    if cp is not None and claims is not None:
        raise ValueError("claims are checked against every access: use --claims with a full replay, not --resume")
    return cp


def _span(
    client: ChainClient, manifest: Manifest, cp: Resume | None, from_block: int | None, to_block: int | None
) -> tuple[int, int, int]:
    """(origin: where the state is rebuilt from, start: the first block read now, end: the last)."""
    origin = manifest.deploy_block if from_block is None else from_block
    start = cp.block + 1 if cp is not None else origin
    if cp is not None:
        origin = cp.from_block
    end = client.block_number() if to_block is None else to_block
    if end < start - 1:
        raise ValueError(f"to_block {end} is before the checkpoint's block {start - 1}")
    return origin, start, end


def _names(manifest: Manifest) -> dict[str, str]:
    return {m["address"]: m.get("name", "") for m in manifest.members}


def _read_journal(
    chain: ChainView,
    path: Path | None,
    cp: Resume | None,
    gateway: str | None,
    clock_skew: int | None,
    findings: Findings,
    progress: Progress | None,
) -> JournalView:
    """The journal against the anchors (pure Merkle work, before the state replay), and when each entry is
    judged."""
    jv = JournalView(
        base=cp.journal_position if cp is not None else 0,
        gateway=cp.gateway if cp is not None else None,
        anchors_by_gw=anchor_events(chain.events),
        timeline={b: list(v) for b, v in (cp.timeline.items() if cp else ())},
    )
    jv.size = jv.base
    if path is None:
        jv.skew = clock_skew or 0
        return jv
    jv.entries, _header, problems = load_journal(path, skip=jv.base, chain_head=cp.chain_head if cp else None)
    for a in problems:
        index = a.evidence.get("entry_index")
        findings.report(a, ("entry", index) if isinstance(index, int) else ("run", 0))
    tree = MerkleTree.from_frontier(jv.base, cp.frontier) if cp is not None else MerkleTree()
    tree.extend([en.leaf for en in jv.entries])
    jv.size = tree.size
    if jv.gateway is None:
        jv.gateway = choose_gateway(jv.anchors_by_gw, tree, gateway)
    prior, judged_upto = (list(cp.anchors), cp.last_anchor_index) if cp is not None else ([], -1)
    jv.anchors = judge_anchors(jv, tree, prior, judged_upto, findings)
    jv.anchor_of = inclusion(jv.entries, jv.anchors, tree, findings)
    if clock_skew is None:
        legacy = [i for i, en in enumerate(jv.entries) if en.state_block is None]
        clock_skew = (
            measure_skew([jv.entries[i] for i in legacy], [jv.anchor_of[i] for i in legacy], chain) if legacy else 0
        )
    jv.skew = clock_skew
    schedule(jv, chain, progress)
    return jv


def _report(
    manifest: Manifest,
    cp: Resume | None,
    chain: ChainView,
    jv: JournalView,
    judge: Judge,
    findings: Findings,
    clock: _Clock,
    max_staleness: float,
) -> AuditReport:
    rows = judge.rows
    rows.sort(key=lambda r: (r.time, r.entry_index if r.entry_index is not None else -1))
    carried = [Anomaly.from_json(o) for o in cp.anomalies] if cp is not None else []
    all_anomalies = carried + findings.anomalies
    summary = _summary(cp, chain, jv, judge, all_anomalies, clock, max_staleness)
    return AuditReport(
        manifest.chain_id, dict(manifest.contracts), chain.origin, chain.end, all_anomalies, rows, summary
    )


def _summary(
    cp: Resume | None,
    chain: ChainView,
    jv: JournalView,
    judge: Judge,
    anomalies: list[Anomaly],
    clock: _Clock,
    max_staleness: float,
) -> dict[str, Any]:
    rows = judge.rows
    before: Mapping[str, int] = cp.counts if cp is not None else {}
    kinds = Counter(a.kind for a in anomalies)
    statuses = Counter(r.status for r in rows)
    statuses.update({k: before.get(k, 0) for k in ("ok", "review", "anomaly", "pending")})
    strict_n = len(rows) - len(jv.entries) + before.get("strict", 0)
    journal_n = len(jv.entries) + before.get("journal", 0)
    verify_s = clock.verified - clock.verify_started
    total_s = time.perf_counter() - clock.started
    return {
        "blocks": chain.end - chain.origin + 1,
        "events": len(chain.events) + before.get("events", 0),
        "strict_accesses": strict_n,
        "journal_entries": journal_n,
        "journal_gateway": jv.gateway,
        "anchors": sum(len(v) for v in jv.anchors_by_gw.values()),
        "accesses": strict_n + journal_n,
        "accesses_ok": statuses["ok"],
        "accesses_review": statuses["review"],
        "accesses_anomalous": statuses["anomaly"],
        "accesses_pending": statuses["pending"],
        "errors": sum(v for k, v in kinds.items() if k not in REVIEW_KINDS),
        "reviews": sum(v for k, v in kinds.items() if k in REVIEW_KINDS),
        "by_kind": dict(sorted(kinds.items())),
        "members": {m: {"status": s, "roles": r} for m, (s, r) in judge.state.members.items()},
        "clock_skew": jv.skew,
        "journal_entries_v1": sum(1 for en in jv.entries if en.state_block is None),
        "max_staleness": max_staleness,
        "resumed_from_block": cp.block if cp is not None else None,
        "seconds": {
            "events": round(clock.fetched - clock.started, 3),
            "timestamps": round(clock.timed - clock.fetched, 3),
            "journal": round(clock.verify_started - clock.timed, 3),
            "verify": round(verify_s, 3),
            "total": round(total_s, 3),
        },
        # state checks only (events and journal already loaded) / end to end, this run's accesses
        "accesses_per_s_verify": round(len(rows) / verify_s, 1) if verify_s > 0 and rows else None,
        "accesses_per_s": round(len(rows) / total_s, 1) if total_s > 0 and rows else None,
    }
