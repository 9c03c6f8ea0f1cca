"""When a journal entry is judged, and what changed after the state it was decided on.

A version 2 entry is judged against the state as of the block it names (``state_block``, its hash checked);
a version 1 entry at ``released_at // 1000 + clock_skew``, capped by its anchor's block. After the state
replay, :func:`timing_verdicts` looks for the first later block that would have changed a clean verdict and
uses the journal's own timeline to settle races the chain alone cannot order (see the package docstring).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from node_client.audit.anchors import AnchorRef, JournalView
from node_client.audit.chain import ChainView, block_timestamps
from node_client.audit.journal import Entry
from node_client.audit.model import Finding, Progress
from node_client.audit.state import run_of

if TYPE_CHECKING:
    from node_client.audit.judge import Change, Judge, KeyWatch

__all__ = ["Timeline", "measure_skew", "schedule", "timing_verdicts"]


def measure_skew(entries: list[Entry], anchor_of: list[AnchorRef | None], chain: ChainView) -> int:
    """How far the chain clock runs ahead of the gateway's, as far as the anchors tell.

    No entry can have been released after the block anchoring it, so for every anchored entry
    ``released_at + skew <= timestamp(anchor block)``: the smallest such margin is the largest skew
    the evidence allows, and the real one is at most one anchoring interval (seconds) below it.
    Evaluating at that skew puts each batch's last entry at its anchor's block, never later.
    0 when nothing is anchored.
    """
    margins: dict[int, int] = {}
    for en, a in zip(entries, anchor_of, strict=True):
        if a is not None:
            m = margins.get(a.block_number)
            t = en.released_at // 1000
            if m is None or t > m:
                margins[a.block_number] = t
    if not margins:
        return 0
    block_timestamps(chain.client, margins, chain.timestamps)
    return min(chain.timestamps[b] - t for b, t in margins.items())


def _state_block_problem(en: Entry, anchor: AnchorRef | None, end: int, hashes: Mapping[int, bytes]) -> str | None:
    """Why a version 2 entry's state claim cannot hold, or ``None``."""
    b = en.state_block
    assert b is not None and en.seen_at is not None
    if anchor is not None and b >= anchor.block_number:
        return f"the decision names block {b}, not before the block {anchor.block_number} that anchored it"
    if b > end:
        return None  # beyond the audited range: not judged by this run
    if hashes.get(b) != en.state_hash:
        return f"block {b} of this chain has another hash"
    if en.seen_at > en.released_at:
        return "state_seen_at is after released_at"
    return None


def note_seen(timeline: dict[int, list[int | None]], en: Entry) -> None:
    """Adds a version 2 entry to the journal's timeline: when the gateway saw its block, when it decided."""
    assert en.state_block is not None and en.seen_at is not None
    slot = timeline.get(en.state_block)
    if slot is None:
        timeline[en.state_block] = [en.seen_at, en.released_at]
        return
    if slot[0] is None or en.seen_at > slot[0]:
        slot[0] = en.seen_at
    if slot[1] is None or en.released_at < slot[1]:
        slot[1] = en.released_at


def schedule(jv: JournalView, chain: ChainView, progress: Progress | None) -> None:
    """Fills ``jv.eval_before`` (per entry, the index of the first event block it is judged before),
    ``jv.invalid`` and ``jv.timeline``; fetches the timestamps and hashes of the blocks entries name."""
    end = chain.end
    named = {en.state_block for en in jv.entries if en.state_block is not None and en.state_block <= end}
    block_timestamps(chain.client, named, chain.timestamps, progress, hashes=chain.hashes)
    order = chain.block_order
    for i, (en, a) in enumerate(zip(jv.entries, jv.anchor_of, strict=True)):
        b = en.state_block
        if b is None:  # version 1: the latest event block at or before its time, capped by its anchor
            pos = bisect.bisect_right(chain.block_ts, en.released_at // 1000 + jv.skew)  # first block with ts > t
            if a is not None:
                pos = min(pos, bisect.bisect_left(order, a.block_number))
            jv.eval_before.append(pos)
            continue
        jv.eval_before.append(bisect.bisect_right(order, b) if b <= end else len(order))
        problem = _state_block_problem(en, a, end, chain.hashes)
        if problem is not None:
            jv.invalid[i] = problem
        elif b <= end:  # the journal's own timeline: when the gateway saw which head (its clock)
            note_seen(jv.timeline, en)


class Timeline:
    """The journal's timeline (gateway clock) indexed by block: what it shows of the head before a block,
    and of decisions on a state at or after one."""

    __slots__ = ("_blocks", "_seen", "_used")

    def __init__(self, points: Mapping[int, list[int | None]]) -> None:
        self._blocks = sorted(points)
        self._seen: list[int] = []  # max state_seen_at over entries deciding on a block <= _blocks[k]
        for b in self._blocks:
            s_b = points[b][0]
            self._seen.append(max(s_b if s_b is not None else -1, self._seen[-1] if self._seen else -1))
        self._used: list[int | None] = [None] * len(self._blocks)  # min released_at over blocks >= _blocks[k]
        low: int | None = None
        for k in range(len(self._blocks) - 1, -1, -1):
            d_b = points[self._blocks[k]][1]
            if d_b is not None and (low is None or d_b < low):
                low = d_b
            self._used[k] = low

    def seen_before(self, block: int) -> int:
        """The latest moment (gateway ms) the journal shows the chain's head before ``block``; -1 if none."""
        k = bisect.bisect_left(self._blocks, block) - 1
        return self._seen[k] if k >= 0 else -1

    def used_from(self, block: int) -> int | None:
        """The earliest decision (gateway ms) the journal shows on a state at or after ``block``."""
        k = bisect.bisect_left(self._blocks, block)
        return self._used[k] if k < len(self._blocks) else None


def _next_change(keys: KeyWatch, chain: ChainView, kid: int, seg: int, run_end: int) -> tuple[int, Change] | None:
    """The first block after evaluation ``seg`` of key ``kid`` at which its verdict would no longer be
    clean: the end of its validity run, or an event that changed its standing."""
    blocks, wins, changes = keys.blocks[kid], keys.wins[kid], keys.changes[kid]
    j, hi = seg, run_end
    while True:
        nxt = blocks[j + 1] if j + 1 < len(blocks) else None
        n_time = chain.first_block_at(hi)
        if n_time is not None and (nxt is None or n_time < nxt):
            return n_time, ("access_after_expiry", {"valid_until": hi})
        if nxt is None:
            return None
        j += 1
        change = changes[j]
        if change is not None:
            return blocks[j], change
        hi = (run_of(wins[j], chain.timestamps[blocks[j]]) or (0, 0))[1]


def _timing_finding(en: Entry, used: int | None, seen: int, bound_ms: int, detail: dict[str, Any]) -> Finding | None:
    """The verdict on a clean decision whose state changed before the entry was anchored."""
    assert en.seen_at is not None
    if used is not None and used < en.seen_at:
        message = (
            "decided on a state older than one the journal shows in use before this "
            "decision's head was seen: released after the change was in force"
        )
        return "stale_decision", message, detail
    if seen > en.released_at:
        return None  # the journal shows the head still before the change after this decision
    if en.released_at - en.seen_at > bound_ms:
        message = (
            "decided on a state seen longer ago than the staleness bound, and it changed before the entry was anchored"
        )
        return "stale_decision", message, detail
    message = (
        "decided on the state just before a change mined before "
        "the entry was anchored: before the change, or within the gateway's staleness bound "
        "after it; the journal cannot tell which"
    )
    return "access_in_staleness_window", message, detail


def timing_verdicts(
    judge: Judge, chain: ChainView, jvs: Sequence[JournalView], *, max_staleness: float, margin: int
) -> list[set[int]]:
    """Judges what changed after each clean decision's block, before the entry was anchored, each journal
    against its own timeline (its gateway's clock); returns per journal the entries whose timing verdict a
    later export could still change (not settled for a checkpoint)."""
    timelines = [Timeline(jv.timeline) for jv in jvs]
    bound_ms = int(max_staleness * 1000)
    margin_ms = int(margin * 1000)
    newest = [jv.newest_release for jv in jvs]
    unsettled: list[set[int]] = [set() for _ in jvs]
    for (j, kid, seg, run_end), members in judge.groups.items():
        change = _next_change(judge.keys, chain, kid, seg, run_end)
        if change is None:
            continue
        jv = jvs[j]
        n_block, (change_kind, change_detail) = change
        used = timelines[j].used_from(n_block)
        seen = timelines[j].seen_before(n_block)
        for i in members:
            a = jv.anchor_of[i]
            if a is not None and n_block >= a.block_number:
                continue  # the access was anchored before the change: authorized whenever it happened
            en = jv.entries[i]
            if used is None or used + bound_ms + margin_ms > newest[j]:
                unsettled[j].add(i)
            detail = {
                "change": change_kind,
                "change_block": n_block,
                "change_detail": change_detail,
                "change_in_use_from": used,
                "head_before_change_seen_until": seen if seen >= 0 else None,
                "staleness_bound_ms": bound_ms,
            }
            f = _timing_finding(en, used, seen, bound_ms, detail)
            if f is None:
                continue
            row = judge.entry_rows[j][i]
            assert row is not None  # every entry in a group was checked
            judge.found[j].record(row, [f], en.evidence(row), ("entry", en.position))
    return unsettled
