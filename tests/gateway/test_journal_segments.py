"""The release journal in segments (issue 21): rotation, one Merkle tree across sealed files, start-up
that trusts sealed segments by their recorded and anchored roots, verify-journal that re-reads them, and
kill -9 at every rotation crash point. Tiny segments; docs/audit.md, "Segments"."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ledger.journal import Journal, JournalCorrupt, read_export
from gateway.ledger.segments import segment_path
from node_client.merkle import MerkleTree
from tests.gateway.test_journal import PATIENT, entry, fill, wait_for


def _tree(n: int) -> MerkleTree:
    return MerkleTree(entry(i).leaf_hash() for i in range(n))


def _open_rows(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT idx FROM entries ORDER BY idx")]
    finally:
        conn.close()


def _drained(path: Path, rows: list[int]) -> bool:
    """The open database holds exactly ``rows`` once the writer has deleted the sealed copies (a chunk at a
    time, between appends, after the seal's commit)."""
    return wait_for(lambda: _open_rows(path) == rows)


def _sealed(j: Journal, n: int) -> bool:
    """Rotation runs in the writer right after the commit that makes it due: wait for the n-th seal."""
    return wait_for(lambda: len(j._segments) == n)


def _segmented(path: Path, batches: int = 7, per: int = 5, **kw: object) -> Journal:
    """A journal of ``batches * per`` entries sealed every 8 entries (at batch ends, rounded to even)."""
    j = Journal(path, segment_entries=8, checkpoint_every=16, **kw)  # type: ignore[arg-type]
    for b in range(batches):
        fill(j, per, start=per * b)
        _settled(j)
    return j


def _settled(j: Journal) -> None:
    """Waits for a rotation under way (appends go on while a sealer thread writes the file): the tests
    want the boundaries a journal appended to one batch at a time has."""
    assert wait_for(lambda: not j._seal_pending)


def test_rotation_at_the_threshold(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with _segmented(path, batches=1) as j:
        assert not segment_path(path, 1).exists()  # 5 < 8
        fill(j, 5, start=5)  # 10 entries: [0, 10) sealed
        assert _sealed(j, 1) and segment_path(path, 1).exists() and _drained(path, [])
        fill(j, 5, start=10)
        assert not segment_path(path, 2).exists() and _drained(path, list(range(10, 15)))
        fill(j, 5, start=15)  # 20: [10, 20) sealed
        assert _sealed(j, 2) and segment_path(path, 2).exists() and _drained(path, [])
        fill(j, 3, start=20)  # 23 entries, 22 - 20 < 8: nothing due
        assert _drained(path, [20, 21, 22])


def test_rotation_by_age(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path, segment_entries=0, segment_seconds=0.001) as j:
        fill(j, 4)  # released in 2025: the open segment is older than a millisecond
        assert _sealed(j, 1) and segment_path(path, 1).exists() and _drained(path, [])
        fill(j, 3, start=4)
        assert _sealed(j, 2) and segment_path(path, 2).exists() and _drained(path, [6])  # 7 rounds down to 6


def test_proofs_across_segments_are_the_single_trees(tmp_path: Path) -> None:
    """Segments are a storage layout: roots and proofs of any size are the one tree's, also after reopening."""
    path = tmp_path / "journal.db"
    _segmented(path).close()  # 35 entries, sealed [0,10) [10,20) [20,30)
    tree = _tree(35)
    with Journal(path, segment_entries=8) as j:
        assert [s.hi for s in j._segments] == [10, 20, 30]
        assert j.root() == tree.root()
        for size in (1, 9, 10, 11, 20, 29, 30, 35):
            assert j.root(size) == tree.root(size)
            assert j.consistency_proof(size // 2, size) == tree.consistency_proof(size // 2, size)
            for i in range(size):
                assert j.inclusion_proof(i, size) == tree.inclusion_proof(i, size)
        assert [i for i, _e, _l in j.entries()] == list(range(35))
        assert sorted(i for i, _ in j.patient_entries(PATIENT)) == list(range(35))
        assert j.patient_entries(PATIENT, limit=3) == j.patient_entries(PATIENT)[:3]
        assert j.verify_all() == 35


def test_export_streams_every_segment_in_the_one_format(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with _segmented(path) as j:
        j.record_anchor(10, j.root(10), "0xfeed", 3)
        j.record_anchor(35, j.root(), "0xbeef", 4)
        assert j.export(tmp_path / "export.jsonl") == 35
    exported = read_export(tmp_path / "export.jsonl")
    assert exported.size == 35 and exported.root == _tree(35).root()
    assert [a.tree_size for a in exported.anchors] == [10, 35]


def test_the_last_sealed_segment_end_is_anchored_first(tmp_path: Path) -> None:
    with _segmented(tmp_path / "journal.db", batches=5) as j:
        assert _sealed(j, 2)
        for size in (20, 25):  # [0, 10) is covered by the root at 20
            pending = j.pending_anchor()
            assert pending == (size, j.root(size))
            j.record_anchor(*pending, "0xfeed", size)
        assert j.pending_anchor() is None
        fill(j, 5, start=25)
        assert _sealed(j, 3) and j.pending_anchor() == (30, j.root(30))


def test_opening_reads_no_sealed_segment_but_verify_all_reads_them_all(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    j = _segmented(path, batches=41)  # 205 entries, 20 sealed segments, 5 rows open
    j.close()
    with Journal(path, segment_entries=8, checkpoint_every=16) as j:
        # the oldest unanchored entry's release time: one row
        assert j.sealed_reads == 1 and j.size == 205
        j.record_anchor(203, j.root(203), "0xfeed", 3)
    with Journal(path, segment_entries=8, checkpoint_every=16) as j:
        # the last anchor's root: O(log n) stored nodes, no row
        assert j.sealed_reads <= 8 and j.size == 205
        before = j.sealed_reads
        assert j.verify_all() == 205
        assert j.sealed_reads - before > 200 + 100  # every sealed row (200) and inner node (150)


def _flip_a_sealed_entry(path: Path) -> None:
    """Changes one entry's bytes inside sealed segment 1 (same file size: opening does not look)."""
    seg = segment_path(path, 1)
    conn = sqlite3.connect(seg)
    blob = bytearray(conn.execute("SELECT entry FROM entries WHERE idx = 3").fetchone()[0])
    blob[-1] ^= 1
    conn.execute("UPDATE entries SET entry = ? WHERE idx = 3", (bytes(blob),))
    conn.commit()
    conn.execute("VACUUM")  # same page count, so same size; and no journal file left behind
    conn.close()


def test_a_tampered_sealed_segment_is_caught_by_verify_all_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    _segmented(path).close()
    size = segment_path(path, 1).stat().st_size
    _flip_a_sealed_entry(path)
    assert segment_path(path, 1).stat().st_size == size
    with Journal(path, segment_entries=8) as j:  # trusted at start-up, by design
        with pytest.raises(JournalCorrupt, match=r"sealed segment journal-000001\.db changed"):
            j.verify_all()
        with pytest.raises(JournalCorrupt, match="entry 3"):
            j.export(tmp_path / "export.jsonl")
        with pytest.raises(JournalCorrupt):
            list(j.entries(2, 4))


def test_a_missing_or_resized_sealed_segment_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    _segmented(path).close()
    seg = segment_path(path, 2)
    with open(seg, "ab") as f:
        f.write(b"\0")
    with pytest.raises(JournalCorrupt, match="bytes, sealed with"):
        Journal(path)
    seg.unlink()
    with pytest.raises(JournalCorrupt, match=r"journal-000002\.db is missing"):
        Journal(path)


def test_a_sealed_segment_removed_while_open_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with _segmented(path) as j:
        segment_path(path, 2).unlink()
        assert j.inclusion_proof(3, 10) == _tree(10).inclusion_proof(3)  # segment 1 still reads
        with pytest.raises(JournalCorrupt, match="missing"):
            list(j.entries(12, 13))


_ROTATING_WRITER = """
import sys
from pathlib import Path
from gateway.ledger.journal import Journal
from tests.gateway.test_journal import entry
from tests.gateway.test_journal_segments import _settled
j = Journal(Path(sys.argv[1]), segment_entries=8, checkpoint_every=16)
for b in range(6):
    j.append_many([entry(i) for i in range(5 * b, 5 * b + 5)])
    print(j.size, flush=True)
    _settled(j)
"""


@pytest.mark.parametrize(
    ("point", "sealed"),
    [
        ("journal.segment_written:2", 1),  # the second rotation, [10, 20), killed before its manifest row
        ("journal.segment_before_commit:2", 1),
        ("journal.segment_after_commit:2", 2),
        ("journal.drop_before_commit:2", 2),  # the second seal's rows, not yet deleted from the open database
    ],
)
def test_kill_9_at_each_rotation_crash_point(tmp_path: Path, point: str, sealed: int) -> None:
    """Whatever the point, what reopens has every committed entry, one tree, and goes on rotating."""
    path = tmp_path / "journal.db"
    env = {**os.environ, "HCL_TEST_CRASH_AT": point}
    done = subprocess.run([sys.executable, "-c", _ROTATING_WRITER, str(path)], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    acked = [int(line) for line in done.stdout.split()]
    with Journal(path, segment_entries=8, checkpoint_every=16) as j:
        n = j.size  # appends go on while the sealer thread writes the file: 20 or more survive
        assert n >= max([20, *acked]) and n % 5 == 0
        assert len(j._segments) == sealed
        assert not segment_path(path, 2).with_name("journal-000002.db.tmp").exists()
        assert sealed == 2 or not segment_path(path, 2).exists()  # the uncommitted file was removed
        assert j.verify_all() == n and j.root() == _tree(n).root()
        fill(j, 10, start=n)  # and it goes on from there, sealing again
        assert _sealed(j, sealed + 1)
        assert j.root() == _tree(n + 10).root() and j.verify_all() == n + 10
        assert len(j.patient_entries(PATIENT)) == n + 10


def test_verify_journal_command_reads_sealed_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hcl gateway verify-journal`` over a segmented journal: exit 0 intact, 1 once a sealed file changed
    (which the gateway's own start-up does not look for)."""
    from typer.testing import CliRunner

    from gateway.cli import gateway_app

    path = tmp_path / "journal.db"
    _segmented(path).close()
    monkeypatch.setenv("HCL_DATA_DIR", str(tmp_path))
    ok = CliRunner().invoke(gateway_app, ["verify-journal"])
    assert ok.exit_code == 0 and "35 entries verified: segment files" in ok.output, ok.output
    _flip_a_sealed_entry(path)
    bad = CliRunner().invoke(gateway_app, ["verify-journal"])
    assert bad.exit_code == 1 and "journal-000001.db changed" in bad.output, bad.output
