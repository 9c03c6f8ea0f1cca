"""Checkpoints: what a replay settled, so a later one resumes there and reaches the same verdict.

Format in docs/audit.md: the rebuilt state at a block, the journal position with its Merkle frontier and
hash-chain head, the judged anchors, the journal's timeline after the block, the settled anomalies and
counts. What is settled: entries under a judged anchor whose verdict no later export can change, and every
block before the earliest decision still open (or decided within the margin before the newest entry).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from node_client.audit.anchors import AnchorRef, JournalView, anchoring
from node_client.audit.chain import ChainView
from node_client.audit.journal import ZERO
from node_client.audit.model import AccessRow, AuditReport, Findings, Origin, hex0x, unhex
from node_client.audit.state import State
from node_client.audit.timing import note_seen
from node_client.deploy import Manifest
from node_client.merkle import MerkleTree

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_MARGIN",
    "CHECKPOINT_VERSION",
    "Resume",
    "build_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]

#: checkpoint file format (see :func:`node_client.audit.replay` and docs/audit.md); version 1 files are read too
CHECKPOINT_FORMAT = "hcl-audit-checkpoint"
CHECKPOINT_VERSION = 2
#: entries released up to this many seconds before the journal's newest one may still turn up in a
#: later export (concurrent releases commit out of time order): the checkpoint's state stays that far back
CHECKPOINT_MARGIN = 10


@dataclass(frozen=True, slots=True)
class Resume:
    """A loaded, checked checkpoint (format in docs/audit.md)."""

    from_block: int
    block: int
    journal_position: int
    chain_head: bytes
    frontier: list[bytes]
    gateway: str | None
    last_anchor_index: int
    anchors: list[AnchorRef]
    state: Mapping[str, Any]
    counts: Mapping[str, int]
    anomalies: list[dict[str, Any]]
    timeline: dict[int, list[int | None]]  # block -> [latest state_seen_at, earliest released_at]
    anchoring: dict[str, dict[str, Any]]  # per anchoring gateway, its anchors up to ``block`` (count, last)

    @classmethod
    def load(cls, obj: Mapping[str, Any], manifest: Manifest) -> Resume:
        if obj.get("format") != CHECKPOINT_FORMAT or obj.get("version") not in (1, CHECKPOINT_VERSION):
            raise ValueError("not a version 1 or 2 audit checkpoint")
        if obj["chain_id"] != manifest.chain_id or obj["contracts"] != dict(manifest.contracts):
            raise ValueError("the checkpoint is of another deployment")
        j = obj["journal"]
        frontier = [unhex(h, 32) for h in j["frontier"]]
        if len(frontier) != bin(int(j["position"])).count("1"):
            raise ValueError("checkpoint frontier does not match its journal position")
        tl = j.get("timeline") or {}
        timeline: dict[int, list[int | None]] = {int(b): [s, d] for b, s, d in tl.get("points", [])}
        if tl.get("seen_before") is not None:
            slot = timeline.setdefault(int(obj["block"]), [None, None])
            slot[0] = max(int(tl["seen_before"]), slot[0] if slot[0] is not None else -1)
        return cls(
            int(obj["from_block"]),
            int(obj["block"]),
            int(j["position"]),
            unhex(j["chain_head"], 32),
            frontier,
            j.get("gateway"),
            int(j["last_anchor_index"]),
            [AnchorRef.from_json(a) for a in j["anchors"]],
            obj["state"],
            {k: int(v) for k, v in obj["counts"].items()},
            list(obj["anomalies"]),
            timeline,
            {str(g): dict(v) for g, v in (obj.get("anchoring") or {}).items()},
        )


def write_checkpoint(report: AuditReport, path: Path) -> Path:
    """Writes ``report.checkpoint`` (a replay run with ``checkpoint=True``) atomically."""
    if report.checkpoint is None:
        raise ValueError("this report was made without checkpoint=True")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(report.checkpoint))
    tmp.replace(path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint file for ``replay(..., resume=...)``."""
    obj = orjson.loads(Path(path).read_bytes())
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not an audit checkpoint")
    return obj


# ---------------------------------------------------------------------------------------- building one


def _settled_position(jv: JournalView, judged: list[AnchorRef], unsettled: set[int]) -> int:
    """The journal position up to which entries are settled: under a judged anchor, verdict final."""
    limit = judged[-1].tree_size if judged else jv.base
    position = jv.base
    for i, en in enumerate(jv.entries):
        if en.position >= limit or i in unsettled:
            break
        position += 1
    return position


def _checkpoint_block(jv: JournalView, chain: ChainView, position: int, margin_ms: int) -> int:
    """At or before the block of every entry not settled, and of every entry decided in the margin before
    the newest one (a later export may add entries committed late)."""

    def decided_on(i: int) -> int | None:
        en = jv.entries[i]
        if en.state_block is None:
            pos = jv.eval_before[i]
            return chain.block_order[pos - 1] if pos > 0 else chain.start - 1
        return en.state_block if i not in jv.invalid and en.state_block <= chain.end else None

    block = chain.end
    recent = jv.newest_release - margin_ms
    for i, en in enumerate(jv.entries):
        if en.position >= position or en.released_at >= recent:
            b_i = decided_on(i)
            if b_i is not None and b_i < block:
                block = b_i
    return max(block, chain.start - 1)


def _state_at(cp: Resume | None, chain: ChainView, block: int) -> State:
    st = State.from_json(cp.state) if cp is not None else State()
    for e in chain.events:
        if e.block_number > block:
            break
        if e.name != "AccessLogged":
            st.apply(e, chain.timestamps[e.block_number])
    return st


def _kept_anomalies(findings: Findings, block: int, position: int) -> list[dict[str, Any]]:
    def settled(about: Origin) -> bool:
        kind, key = about
        if kind == "block":
            return key <= block
        if kind == "entry":
            return key < position
        return kind == "anchor"  # only judged anchors are reported with this origin

    return [a.to_json() for a, about in zip(findings.anomalies, findings.origins, strict=True) if settled(about)]


def _kept_counts(cp: Resume | None, rows: list[AccessRow], chain: ChainView, block: int, position: int) -> Counter[str]:
    counts: Counter[str] = Counter(cp.counts if cp is not None else {})
    for r in rows:
        if (r.source == "strict" and r.block is not None and r.block <= block) or (
            r.source == "journal" and r.entry_index is not None and r.entry_index < position
        ):
            counts[r.source] += 1
            counts[r.status] += 1
    counts["events"] += sum(1 for e in chain.events if e.block_number <= block)
    return counts


def _journal_head(cp: Resume | None, jv: JournalView, position: int) -> tuple[list[bytes], bytes]:
    """The Merkle frontier and hash-chain head at ``position`` (leaves from ``jv.base`` on are in entries)."""
    frontier = list(cp.frontier) if cp is not None else []
    head = cp.chain_head if cp is not None else ZERO
    if position > jv.base:
        part = MerkleTree.from_frontier(jv.base, frontier)
        settled_leaves = [en.leaf for en in jv.entries[: position - jv.base]]
        part.extend(settled_leaves)
        frontier = part.frontier()
        for leaf in settled_leaves:
            head = hashlib.sha256(head + leaf).digest()
    return frontier, head


def _kept_timeline(cp: Resume | None, jv: JournalView, chain: ChainView, position: int) -> dict[int, list[int | None]]:
    """The settled entries' part of the journal's timeline, for verdicts of entries exported later."""
    kept: dict[int, list[int | None]] = {b: list(v) for b, v in (cp.timeline.items() if cp else ())}
    for i, en in enumerate(jv.entries[: position - jv.base]):
        if en.state_block is not None and i not in jv.invalid and en.state_block <= chain.end:
            note_seen(kept, en)
    return kept


def _journal_part(
    cp: Resume | None, jv: JournalView, chain: ChainView, judged: list[AnchorRef], position: int, block: int
) -> dict[str, Any]:
    frontier, head = _journal_head(cp, jv, position)
    timeline = _kept_timeline(cp, jv, chain, position)
    seen_upto = max((v[0] for b, v in timeline.items() if b <= block and v[0] is not None), default=None)
    last_root = hex0x(judged[-1].root) if judged else (hex0x(cp.anchors[-1].root) if cp and cp.anchors else None)
    kept = judged or (cp.anchors if cp else [])
    anchors = [a.to_json() for a in kept if a.tree_size >= position][-10_000:]
    # a checkpoint keeps anchors sized >= its position; the last judged one is always among them
    if judged and not any(a["index"] == judged[-1].index for a in anchors):
        anchors.append(judged[-1].to_json())
    return {
        "position": position,
        "chain_head": hex0x(head),
        "frontier": [hex0x(h) for h in frontier],
        "gateway": jv.gateway,
        "last_anchor_index": judged[-1].index if judged else (cp.last_anchor_index if cp else -1),
        "last_root": last_root,
        "anchors": anchors,
        "timeline": {
            "seen_before": seen_upto,
            "points": [[b, v[0], v[1]] for b, v in sorted(timeline.items()) if b > block],
        },
    }


def build_checkpoint(
    manifest: Manifest,
    cp: Resume | None,
    chain: ChainView,
    jv: JournalView,
    judge_rows: list[AccessRow],
    findings: Findings,
    *,
    unsettled: set[int],
    margin: int,
) -> dict[str, Any]:
    """The checkpoint of a replay (``AuditReport.checkpoint``): see the module docstring."""
    judged = [a for a in jv.anchors if a.judged]
    position = _settled_position(jv, judged, unsettled)
    block = _checkpoint_block(jv, chain, position, int(margin * 1000))
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "chain_id": manifest.chain_id,
        "contracts": dict(manifest.contracts),
        "from_block": chain.origin,
        "block": block,
        "block_timestamp": chain.timestamps.get(block),
        "clock_skew": jv.skew,
        "journal": _journal_part(cp, jv, chain, judged, position, block),
        "state": _state_at(cp, chain, block).to_json(),
        "counts": dict(_kept_counts(cp, judge_rows, chain, block, position)),
        "anchoring": anchoring(jv.anchors_by_gw, block, cp.anchoring if cp is not None else None),
        "anomalies": [*(cp.anomalies if cp is not None else []), *_kept_anomalies(findings, block, position)],
    }
