""":func:`replay`: the phases in order — read the chain, match each journal to its gateway and check it against
that gateway's anchors, replay the state judging every access, judge timing races, check stores and claims,
settle a checkpoint, summarize."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_client._client import ChainClient
from node_client.audit.anchors import (
    JournalView,
    anchor_events,
    anchoring,
    inclusion,
    judge_anchors,
    match_gateway,
    missing_journals,
)
from node_client.audit.chain import ChainView, load_chain
from node_client.audit.checkpoint import CHECKPOINT_MARGIN, Resume, build_checkpoint
from node_client.audit.evidence import check_blobs, check_claims, check_reasons
from node_client.audit.journal import load_journal
from node_client.audit.judge import Judge
from node_client.audit.model import REVIEW_KINDS, Anomaly, AuditReport, Findings, Progress, hex0x
from node_client.audit.reviews import check_review_file
from node_client.audit.state import State
from node_client.audit.timing import measure_skew, schedule, timing_verdicts
from node_client.deploy import Manifest
from node_client.events import EventRecord
from node_client.merkle import MerkleTree
from node_client.signing import Domain

__all__ = ["DEFAULT_MAX_STALENESS", "replay"]

#: the staleness bound a gateway promises (``Indexer.freshness`` of the gateway at the default poll)
DEFAULT_MAX_STALENESS = 1.0


def replay(
    client: ChainClient,
    manifest: Manifest,
    *,
    journal: Path | None = None,
    journals: Sequence[Path] = (),
    from_block: int | None = None,
    to_block: int | None = None,
    progress: Progress | None = None,
    gateway: str | None = None,
    gateways: Sequence[str | None] = (),
    clock_skew: int | None = 0,
    anchor_grace: int = 60,
    resume: Mapping[str, Any] | None = None,
    store: Path | str | None = None,
    claims: Path | None = None,
    reasons: Path | None = None,
    reviews: Path | None = None,
    checkpoint: bool = False,
    checkpoint_margin: int = CHECKPOINT_MARGIN,
    max_staleness: float = DEFAULT_MAX_STALENESS,
) -> AuditReport:
    """Replays the deployment's events (and the exported journals) and verifies every access.

    ``from_block`` defaults to (and should stay at) the deploy block: state is rebuilt from events, so
    starting later misses what came before. ``journals`` are exports of several gateways (``journal`` is
    one, as before; not both). Each is checked against its gateway's anchors: ``gateways[k]`` (or
    ``gateway`` for ``journal``) if given and not ``None``, else the anchoring gateway whose anchored
    roots it reproduces (see :func:`node_client.audit.anchors.match_gateway`). Two journals of one gateway
    are refused (``ValueError``); an anchoring gateway without a journal is ``journal_missing``.
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
    ``reasons`` is a JSON Lines file of emergency-reason openings a gateway kept: each must open its
    window's on-chain ``reasonHash`` (:func:`node_client.audit.evidence.check_reasons`). ``reviews`` is a
    gateway's auditors' reviews of emergency accesses (:func:`node_client.audit.reviews.check_review_file`;
    the summary's ``emergency_reviews`` counts the windows no valid review covers); refused with ``resume``.
    ``checkpoint`` fills :attr:`AuditReport.checkpoint` (a JSON-able dict) for a later ``resume``; its
    state stands ``checkpoint_margin`` seconds before the newest journal entry (see :data:`CHECKPOINT_MARGIN`).
    """
    # longer than a screen only by its signature and docstring: the body is the phases in order
    clock = _Clock(time.perf_counter())
    paths, given = _inputs(journal, journals, gateway, gateways)
    cp = _resume(client, manifest, resume, claims)
    if reviews is not None and cp is not None:
        raise ValueError("--reviews needs every emergency window: run it on a full replay, not with --resume")
    if len(paths) > 1 and (cp is not None or checkpoint):
        raise ValueError("checkpoints hold one journal: --checkpoint and --resume take a single --journal")
    origin, start, end = _span(client, manifest, cp, from_block, to_block)
    chain, clock.fetched = load_chain(client, manifest, origin, start, end, progress)
    clock.timed = time.perf_counter()
    findings = Findings()
    names = _names(manifest)
    jvs = _read_journals(chain, paths, given, cp, clock_skew, findings, progress)
    claimed = [jv.gateway for jv in jvs if jv.path is not None]
    missing_journals(anchoring(jvs[0].anchors_by_gw, None, cp.anchoring if cp else None), claimed, names, findings)
    clock.verify_started = time.perf_counter()
    state = State.from_json(cp.state) if cp is not None else State()
    judge = Judge(chain, jvs, state, names, findings, anchor_grace=anchor_grace)
    judge.run()
    unsettled = timing_verdicts(judge, chain, jvs, max_staleness=max_staleness, margin=checkpoint_margin)
    clock.verified = time.perf_counter()
    jv = jvs[0]
    if store is not None:
        for a in check_blobs(judge.state, store):
            findings.report(a, ("run", 0))
    if claims is not None:
        for a in check_claims(claims, judge.rows):
            findings.report(a, ("run", 0))
    if reasons is not None:
        for a in check_reasons(reasons, chain.events):
            findings.report(a, ("run", 0))
    reviewed = None
    if reviews is not None:
        domain = Domain(chain_id=manifest.chain_id, verifying_contract=manifest.contracts["ConsentRegistry"])
        found, reviewed = check_review_file(reviews, chain.events, domain, judge.state.members)
        for a in found:
            findings.report(a, ("run", 0))
    checkpoint_data = (
        build_checkpoint(
            manifest, cp, chain, jv, judge.rows, findings, unsettled=unsettled[0], margin=checkpoint_margin
        )
        if checkpoint
        else None
    )
    report = _report(manifest, cp, chain, jvs, judge, findings, clock, max_staleness)
    report.checkpoint = checkpoint_data
    report.summary["emergency_reviews"] = reviewed
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


def _inputs(
    journal: Path | None, journals: Sequence[Path], gateway: str | None, gateways: Sequence[str | None]
) -> tuple[list[Path], list[str | None]]:
    """The journals and, per journal, the gateway given for it (``None``: recognise it)."""
    if journal is not None and journals:
        raise ValueError("give journal= or journals=, not both")
    if gateway is not None and gateways:
        raise ValueError("give gateway= or gateways=, not both")
    paths = [journal] if journal is not None else [Path(p) for p in journals]
    given = list(gateways) if gateways and paths else [gateway] * len(paths)  # no journal: as before, ignored
    if len(given) != len(paths):
        raise ValueError(f"{len(given)} gateways for {len(paths)} journals: give one --gateway per --journal, or none")
    resolved = [p.resolve() for p in paths]
    for k, p in enumerate(resolved):
        if p in resolved[:k]:
            raise ValueError(f"journal {paths[k]} is given twice")
    return paths, given


def _read_journals(
    chain: ChainView,
    paths: list[Path],
    given: list[str | None],
    cp: Resume | None,
    clock_skew: int | None,
    findings: Findings,
    progress: Progress | None,
) -> list[JournalView]:
    """Each journal matched to its gateway and checked against that gateway's anchors (pure Merkle work,
    before the state replay), and when each entry is judged; one view without entries when none is given."""
    by_gw = anchor_events(chain.events)
    if not paths:
        jv = _view(cp, by_gw, None)
        jv.skew = clock_skew or 0
        return [jv]
    loaded = [_load(_view(cp, by_gw, path), cp) for path in paths]
    lone = len(paths) == 1
    owner: dict[str, Path] = {}
    for (jv, tree, exported), g in zip(loaded, given, strict=True):
        if jv.gateway is None:  # a checkpoint names it otherwise
            m = match_gateway(by_gw, tree, exported, given=g, lone=lone)
            jv.gateway, jv.matched_by = m.gateway, m.how
        if jv.gateway is not None and jv.gateway in owner:
            raise ValueError(
                f"journals {owner[jv.gateway]} and {jv.path} both are gateway {jv.gateway}'s "
                "(the same journal twice?): give each gateway's journal once"
            )
        if jv.gateway is not None:
            owner[jv.gateway] = jv.path or Path()
    for jv, tree, _exported in loaded:
        found = findings.scoped(jv.scope)
        if jv.gateway is None and not lone:
            message = "the journal reproduces no gateway's anchored root and its anchor lines name none on chain"
            evidence = {"entries": jv.size, "root": hex0x(tree.root()) if tree.size else None}
            found.report(Anomaly("journal_unmatched", message, evidence), ("run", 0))
        _prove(chain, jv, tree, cp, clock_skew, found, progress)
    return [jv for jv, _tree, _exported in loaded]


def _view(cp: Resume | None, by_gw: dict[str, list[EventRecord]], path: Path | None) -> JournalView:
    jv = JournalView(
        base=cp.journal_position if cp is not None else 0,
        path=path,
        gateway=cp.gateway if cp is not None else None,
        matched_by="checkpoint" if cp is not None and cp.gateway is not None else "",
        anchors_by_gw=by_gw,
        timeline={b: list(v) for b, v in (cp.timeline.items() if cp else ())},
    )
    jv.size = jv.base
    return jv


def _load(jv: JournalView, cp: Resume | None) -> tuple[JournalView, MerkleTree, list[dict[str, Any]]]:
    """Reads ``jv.path`` into ``jv``: its entries, its Merkle tree, its anchor lines; problems kept in ``jv``."""
    assert jv.path is not None
    loaded = load_journal(jv.path, skip=jv.base, chain_head=cp.chain_head if cp else None)
    jv.entries, jv.problems = loaded.entries, loaded.problems
    tree = MerkleTree.from_frontier(jv.base, cp.frontier) if cp is not None else MerkleTree()
    tree.extend([en.leaf for en in jv.entries])
    jv.size = tree.size
    return jv, tree, loaded.anchors


def _prove(
    chain: ChainView,
    jv: JournalView,
    tree: MerkleTree,
    cp: Resume | None,
    clock_skew: int | None,
    findings: Findings,
    progress: Progress | None,
) -> None:
    """One journal against its gateway's anchors (roots, consistency, inclusion), then its schedule."""
    for a in jv.problems:
        index = a.evidence.get("entry_index")
        findings.report(a, ("entry", index) if isinstance(index, int) else ("run", 0))
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


def _report(
    manifest: Manifest,
    cp: Resume | None,
    chain: ChainView,
    jvs: list[JournalView],
    judge: Judge,
    findings: Findings,
    clock: _Clock,
    max_staleness: float,
) -> AuditReport:
    rows = judge.rows
    rows.sort(key=lambda r: (r.time, r.entry_index if r.entry_index is not None else -1))
    carried = [Anomaly.from_json(o) for o in cp.anomalies] if cp is not None else []
    all_anomalies = carried + findings.anomalies
    summary = _summary(cp, chain, jvs, judge, all_anomalies, clock, max_staleness)
    summary["journals"] = [_journal_summary(jv, judge.names) for jv in jvs if jv.path is not None]
    summary["by_gateway"] = _by_gateway(judge, jvs)
    return AuditReport(
        manifest.chain_id, dict(manifest.contracts), chain.origin, chain.end, all_anomalies, rows, summary
    )


def _summary(
    cp: Resume | None,
    chain: ChainView,
    jvs: list[JournalView],
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
    entries_n = sum(len(jv.entries) for jv in jvs)
    strict_n = len(rows) - entries_n + before.get("strict", 0)
    journal_n = entries_n + before.get("journal", 0)
    one = jvs[0] if len(jvs) == 1 else None
    verify_s = clock.verified - clock.verify_started
    total_s = time.perf_counter() - clock.started
    return {
        "blocks": chain.end - chain.origin + 1,
        "events": len(chain.events) + before.get("events", 0),
        "strict_accesses": strict_n,
        "journal_entries": journal_n,
        "journal_gateway": one.gateway if one else None,  # several journals: see "journals"
        "anchors": sum(len(v) for v in jvs[0].anchors_by_gw.values()),
        "accesses": strict_n + journal_n,
        "accesses_ok": statuses["ok"],
        "accesses_review": statuses["review"],
        "accesses_anomalous": statuses["anomaly"],
        "accesses_pending": statuses["pending"],
        "errors": sum(v for k, v in kinds.items() if k not in REVIEW_KINDS),
        "reviews": sum(v for k, v in kinds.items() if k in REVIEW_KINDS),
        "by_kind": dict(sorted(kinds.items())),
        "members": {m: {"status": s, "roles": r} for m, (s, r) in judge.state.members.items()},
        "clock_skew": one.skew if one else None,
        "journal_entries_v1": sum(1 for jv in jvs for en in jv.entries if en.state_block is None),
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


def _journal_summary(jv: JournalView, names: Mapping[str, str]) -> dict[str, Any]:
    """One journal in the summary: whose it is, how that was found, what of it the chain proves."""
    return {
        "journal": str(jv.path),
        "gateway": jv.gateway,
        "gateway_name": names.get(jv.gateway, "") if jv.gateway else "",
        "matched_by": jv.matched_by,
        "entries": jv.size,
        "anchors": len(jv.anchors),
        "anchors_reproduced": sum(1 for a in jv.anchors if a.ok),
        "clock_skew": jv.skew,
    }


def _by_gateway(judge: Judge, jvs: list[JournalView]) -> dict[str, dict[str, Any]]:
    """Per gateway (the ``logAccess`` sender or the journal's), this run's accesses by source (``strict``,
    ``journal``) and status, its anchors on chain, and the journal given for it (``journal_file``)."""
    out: dict[str, dict[str, Any]] = {}

    def slot(g: str) -> dict[str, Any]:
        if g not in out:
            out[g] = {"name": judge.names.get(g, ""), "journal_file": None, "anchors": 0, "accesses": 0}
            out[g].update(dict.fromkeys(("strict", "journal", "ok", "review", "anomaly", "pending"), 0))
        return out[g]

    for g, events in jvs[0].anchors_by_gw.items():
        slot(g)["anchors"] = len(events)
    for jv in jvs:
        if jv.path is not None and jv.gateway is not None:
            slot(jv.gateway)["journal_file"] = str(jv.path)
    for r in judge.rows:
        c = slot(r.gateway or "")
        c["accesses"] += 1
        c[r.source] += 1
        c[r.status] += 1
    return dict(sorted(out.items()))
