"""``gateway.ledger.journal_view``: a worker reads the journal its primary writes, from the database alone.

A real journal appending (tiny segments, so reads cross sealed files) and a view over the same file: every
read the view gives equals the writer's, at whatever size the writer has reached; the view never writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ledger.journal import Journal, JournalUnavailable, read_export
from gateway.ledger.journal_view import JournalView
from tests.gateway.test_journal import PATIENT, entry, fill, wait_for


def _same_reads(j: Journal, v: JournalView) -> None:
    size = j.size
    assert v.size == size and v.root() == j.root()
    for idx in {0, 1, size // 3, size // 2, size - 2, size - 1}:
        for at in {idx + 1, size // 2 + 1, size}:
            if idx < at <= size:
                assert v.inclusion_proof(idx, at) == j.inclusion_proof(idx, at), (idx, at)
        assert v.leaf_hash(idx) == j.leaf_hash(idx)
    assert v.consistency_proof(size // 3, size) == j.consistency_proof(size // 3, size)
    assert list(v.entries()) == list(j.entries())
    assert v.patient_entries(PATIENT, limit=7) == j.patient_entries(PATIENT, limit=7)
    assert v.requester_counts() == j.requester_counts()


def test_the_view_reads_what_the_writer_wrote_across_sealed_segments(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path, segment_entries=8, checkpoint_every=16) as j:
        fill(j, 5)
        v = JournalView(path)
        _same_reads(j, v)
        for start in range(5, 45, 5):  # 45 entries: several sealed segments and an open one
            fill(j, 5, start=start)
            assert wait_for(lambda: not j._seal_pending)
            _same_reads(j, v)  # the same view follows the writer: no reopening
        assert len(j._segments) >= 3
        assert v.last_anchor() is None
        anchor = j.record_anchor(40, j.root(40), "0x" + "ab" * 32, 7)
        assert v.last_anchor() == anchor and v.anchors() == j.anchors()
        v.export(tmp_path / "export.jsonl")
        exported = read_export(tmp_path / "export.jsonl")
        assert exported.size == j.size and exported.root == j.root() and exported.anchors == [anchor]


def test_the_view_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with pytest.raises(JournalUnavailable, match="no journal yet"):
        JournalView(path)
    with Journal(path) as j:
        fill(j, 3)
        v = JournalView(path)
        with pytest.raises(JournalUnavailable, match="read-only"):
            v.append(entry(3))
        with pytest.raises(JournalUnavailable, match="read-only"):
            v.record_anchor(3, j.root(), "0x" + "cd" * 32, 9)
        assert j.size == 3 and j.last_anchor() is None and j.available
        v.close()
        with pytest.raises(JournalUnavailable, match="closed"):
            v.root(2)
