"""``gateway.ledger.journal``: durability, group commit, fail-closed writes, tamper evidence, anchoring, export.

No chain here: ``anchor_fn`` is a plain function recording its calls (the real ``anchorBatch`` path is
covered by the gateway API tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gateway.ledger.anchoring import Anchorer
from gateway.ledger.journal import (
    ENTRY_SIZE,
    Journal,
    JournalCorrupt,
    JournalEntry,
    JournalUnavailable,
    read_export,
)
from node_client.merkle import (
    MerkleTree,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

REQUESTER = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
PATIENT = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


def entry(i: int, *, emergency: bool = False, requester: str = REQUESTER) -> JournalEntry:
    return JournalEntry(
        requester=requester,
        patient=PATIENT,
        record_id=hashlib.sha256(b"record %d" % i).digest(),
        purpose=1 + i % 5,
        consent_id=hashlib.sha256(b"consent %d" % i).digest(),
        emergency=emergency,
        access_hash=hashlib.sha256(b"access %d" % i).digest(),
        released_at=1_750_000_000_000 + i,
    )


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(jpath: Path) -> Iterator[Journal]:
    j = Journal(jpath)
    yield j
    j.close()


def fill(j: Journal, n: int, start: int = 0) -> list[int]:
    return j.append_many([entry(i) for i in range(start, start + n)])


def db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# ------------------------------------------------------------------------------------ encoding


def test_entry_encoding_is_the_documented_layout() -> None:
    e = entry(7, emergency=True)
    manual = (
        b"HCLJ"
        + b"\x01"
        + bytes.fromhex(REQUESTER[2:])
        + bytes.fromhex(PATIENT[2:])
        + e.record_id
        + bytes([e.purpose])
        + e.consent_id
        + b"\x01"
        + e.access_hash
        + e.released_at.to_bytes(8, "big")
    )
    assert e.to_bytes() == manual and len(manual) == ENTRY_SIZE == 151
    assert e.leaf_hash() == hashlib.sha256(b"\x00" + manual).digest()
    assert JournalEntry.from_bytes(manual) == e
    # pinned: any change to the encoding changes every leaf, so it must come with a new version
    assert manual.hex() == PINNED_ENTRY_7


PINNED_ENTRY_7 = (
    "48434c4a01"  # magic, version
    "5b38da6a701c568545dcfcb03fcb875f56beddc4"  # requester
    "ab8483f64d9c6d1ecf9b849ae677dd3315835cb2"  # patient
    "18c49c3d2bbfb66335adf138654aaaf638f695f1e8824850eca26819675e844e"  # record_id
    "03"  # purpose
    "fe6a89fef0355c488ec3989910d7875fe26c5749138459609028919b479f172a"  # consent_id
    "01"  # emergency
    "1e043ae4c882b81e938b7f796046abc0a6a387c68fced5ecfb6619faaf44229f"  # access_hash
    "000001977420dc07"  # released_at (ms, big-endian)
)


def test_entry_validation_and_normalisation() -> None:
    lower = entry(1, requester=REQUESTER.lower())
    assert lower.requester == REQUESTER  # EIP-55 form, whatever case came in
    assert lower == entry(1) and lower.to_bytes() == entry(1).to_bytes()
    good = entry(1)
    bad_kwargs: list[dict[str, object]] = [
        {"requester": "0x1234"},
        {"requester": REQUESTER[2:]},
        {"patient": "not an address"},
        {"record_id": b"\x00" * 31},
        {"consent_id": "00" * 32},
        {"access_hash": b"\x00" * 33},
        {"purpose": 256},
        {"purpose": -1},
        {"purpose": True},
        {"emergency": 1},
        {"released_at": -1},
        {"released_at": 1 << 64},
        {"released_at": 1.5},
    ]
    for kw in bad_kwargs:
        fields = {f: getattr(good, f) for f in JournalEntry.__dataclass_fields__}
        fields.update(kw)
        with pytest.raises(ValueError):
            JournalEntry(**fields)  # type: ignore[arg-type]


def test_from_bytes_rejects_non_canonical_encodings() -> None:
    raw = bytearray(entry(3).to_bytes())
    for mutate in (
        lambda b: b[:-1],
        lambda b: b + b"\x00",
        lambda b: b"XCLJ" + b[4:],
        lambda b: b[:4] + b"\x02" + b[5:],
        lambda b: b[:110] + b"\x02" + b[111:],  # emergency must be exactly 0 or 1
    ):
        with pytest.raises(ValueError):
            JournalEntry.from_bytes(bytes(mutate(raw)))


# ------------------------------------------------------------------------------------ appending


def test_append_reopen_keeps_entries_chain_and_tree(jpath: Path) -> None:
    with Journal(jpath) as j:
        assert j.size == 0 and j.root() == hashlib.sha256(b"").digest()
        assert j.append(entry(0)) == 0
        assert fill(j, 99, start=1) == list(range(1, 100))
        root, size = j.root(), j.size
        root50 = j.root(50)
    with Journal(jpath) as j:
        assert j.size == size == 100
        assert j.root() == root and j.root(50) == root50
        j.verify_chain()
        j.verify_chain(start=40)
        got = list(j.entries())
        assert [i for i, _, _ in got] == list(range(100))
        assert [e for _, e, _ in got] == [entry(i) for i in range(100)]
        assert all(leaf == entry(i).leaf_hash() for i, _, leaf in got)
        assert [i for i, _, _ in j.entries(10, 13)] == [10, 11, 12]
        assert j.append(entry(100)) == 100  # continues the chain
    with sqlite3.connect(jpath) as conn:
        rows = conn.execute("SELECT idx, leaf_hash, chain_hash FROM entries ORDER BY idx").fetchall()
    chain = b"\x00" * 32
    for idx, leaf, stored in rows:
        chain = hashlib.sha256(chain + leaf).digest()
        assert stored == chain, idx
    assert (jpath.parent / "journal.db").exists()


def test_wal_and_full_sync(journal: Journal, jpath: Path) -> None:
    assert journal._conn is not None
    assert journal._conn.execute("PRAGMA journal_mode").fetchone()[0] in ("wal", b"wal")
    assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_group_commit_batches_concurrent_appends(journal: Journal) -> None:
    threads, per_thread = 64, 25
    results: dict[int, list[tuple[int, JournalEntry]]] = {}
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        barrier.wait()
        mine = []
        for k in range(per_thread):
            e = entry(t * 1000 + k)
            mine.append((journal.append(e), e))
        results[t] = mine

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    total = threads * per_thread
    indexes = [i for mine in results.values() for i, _ in mine]
    assert sorted(indexes) == list(range(total))  # dense and unique
    assert journal.size == total == journal.appended
    assert journal.commits * 4 <= total, f"{journal.commits} commits for {total} appends"
    # each caller got the index of ITS entry
    on_disk = {i: e for i, e, _ in journal.entries()}
    for mine in results.values():
        assert [i for i, _ in mine] == sorted(i for i, _ in mine)  # a caller's own appends are ordered
        for i, e in mine:
            assert on_disk[i] == e


def test_an_acknowledged_index_is_provable_at_once(journal: Journal) -> None:
    """The tree is extended before callers are woken: a caller can prove its entry immediately."""
    failures: list[str] = []

    def worker(t: int) -> None:
        for k in range(30):
            e = entry(t * 1000 + k)
            i = journal.append(e)
            size = journal.size
            if not verify_inclusion(e.leaf_hash(), i, size, journal.inclusion_proof(i, size), journal.root(size)):
                failures.append(f"{t}/{k}")

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not failures and journal.size == 16 * 30


def test_append_many_is_atomic_and_contiguous(journal: Journal) -> None:
    out: list[list[int]] = []
    ts = [threading.Thread(target=lambda k=k: out.append(fill(journal, 10, start=k * 10))) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for idxs in out:
        assert idxs == list(range(idxs[0], idxs[0] + 10))
    assert journal.append_many([]) == []
    big = fill(journal, journal.batch_max + 7, start=1000)  # larger than a batch: still one transaction
    assert big == list(range(80, 80 + journal.batch_max + 7))


def test_a_lone_caller_does_not_wait_for_companions(jpath: Path) -> None:
    with Journal(jpath, batch_wait_ms=100) as j:
        started = time.monotonic()
        for i in range(20):
            j.append(entry(i))
        assert time.monotonic() - started < 1.0  # 20 x 100 ms if it lingered
        assert j.commits == 20


def test_append_async_does_not_block_the_loop(journal: Journal) -> None:
    async def main() -> tuple[list[int], int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        idxs = await asyncio.gather(*(journal.append_async(entry(i)) for i in range(200)))
        done = True
        await t
        return list(idxs), ticks

    idxs, ticks = asyncio.run(main())
    assert sorted(idxs) == list(range(200))
    assert ticks > 1  # the loop kept running while appends were being committed


def test_cancelled_async_appends_do_not_break_the_journal(journal: Journal) -> None:
    """A client that goes away cancels its task, and with it the future the writer will resolve."""

    async def main() -> list[object]:
        tasks = [asyncio.create_task(journal.append_async(entry(i))) for i in range(300)]
        for round_ in range(6):
            await asyncio.sleep(0.001 * round_)
            for t in tasks[round_::6]:
                t.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    for _ in range(5):
        results = asyncio.run(main())
        assert any(isinstance(r, asyncio.CancelledError) for r in results)
        assert journal.available, journal.error
        done = {r: i for i, r in enumerate(results) if isinstance(r, int)}
        entries = {idx: e for idx, e, _ in journal.entries()}
        for idx, i in done.items():
            assert entries[idx] == entry(i)
    assert journal.append(entry(1)) == journal.size - 1


def test_closed_journal_refuses_and_second_opener_is_refused(jpath: Path) -> None:
    j = Journal(jpath)
    with pytest.raises(JournalUnavailable):
        Journal(jpath)  # one writer per journal file
    j.append(entry(0))
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalUnavailable):
        j.append(entry(1))
    with pytest.raises(JournalUnavailable):
        list(j.entries())
    with Journal(jpath) as again:
        assert again.size == 1


# ------------------------------------------------------------------------------------ write failures


def _run_until_failure(j: Journal, threads: int, breaker: Callable[[], None]) -> tuple[list[int], list[BaseException]]:
    """``threads`` threads append until they fail; ``breaker`` runs once appends are flowing.

    Returns the acknowledged indexes and the error each thread ended with.
    """
    acked: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    flowing = threading.Event()

    def worker(t: int) -> None:
        for k in range(1_000_000):
            try:
                i = j.append(entry(t * 1_000_000 + k))
            except BaseException as exc:  # noqa: BLE001 - recorded and checked by the test
                with lock:
                    errors.append(exc)
                return
            with lock:
                acked.append(i)
            if k == 20:
                flowing.set()

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    assert flowing.wait(30)
    breaker()
    for t in ts:
        t.join(30)
        assert not t.is_alive(), "an appender is still blocked after the failure"
    assert len(errors) == threads, "every appending thread must end with an error"
    return acked, errors


def _check_nothing_unacked_was_reported(jpath: Path, acked: list[int]) -> None:
    with Journal(jpath) as reopened:
        assert sorted(acked) == list(range(reopened.size)), "acked != durable"
        reopened.verify_chain()


def test_write_failure_fails_pending_and_later_appends(jpath: Path) -> None:
    j = Journal(jpath)

    def close_connection_underneath() -> None:
        with j._conn_lock:
            assert j._conn is not None
            j._conn.close()

    acked, errors = _run_until_failure(j, 16, close_connection_underneath)
    assert all(isinstance(e, JournalUnavailable) for e in errors)
    assert not j.available and j.error is not None
    assert j.size == len(acked)
    with pytest.raises(JournalUnavailable):
        j.append(entry(0))
    with pytest.raises(JournalUnavailable):
        j.append_many([entry(0)])
    with pytest.raises(JournalUnavailable):
        j.record_anchor(1, j.root(1), "0x", 1)
    j.close()
    _check_nothing_unacked_was_reported(jpath, acked)


def test_disk_full_is_unavailable_not_lost(jpath: Path) -> None:
    """SQLITE_FULL via ``max_page_count`` (what a full disk looks like to SQLite)."""
    j = Journal(jpath)
    fill(j, 10)

    def fill_the_disk() -> None:
        with j._conn_lock:
            assert j._conn is not None
            pages = j._conn.execute("PRAGMA page_count").fetchone()[0]
            j._conn.execute(f"PRAGMA max_page_count={pages + 2}")

    acked, errors = _run_until_failure(j, 32, fill_the_disk)
    assert all(isinstance(e, JournalUnavailable) for e in errors)
    assert "full" in repr(j.error).lower()
    j.close()
    _check_nothing_unacked_was_reported(jpath, acked + list(range(10)))


def test_real_enospc_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        path = mnt / "journal.db"
        j = Journal(path)
        acked: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker(t: int) -> None:
            for k in range(100_000):
                try:
                    i = j.append(entry(t * 100_000 + k))
                except BaseException as exc:  # noqa: BLE001
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    acked.append(i)

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert len(errors) == 16 and all(isinstance(e, JournalUnavailable) for e in errors)
        assert acked, "some appends fit before the disk filled"
        assert "full" in repr(j.error).lower() or "space" in repr(j.error).lower()
        j.close()
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        _check_nothing_unacked_was_reported(path, acked)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ------------------------------------------------------------------------------------ tampering


def _tamper(jpath: Path, sql: str, *params: object) -> None:
    conn = db(jpath)
    conn.execute(sql, params)
    conn.close()


@pytest.mark.parametrize("victim", [0, 5, 19])
def test_changed_entry_byte_is_caught_on_open(jpath: Path, victim: int) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
    blob = bytearray(entry(victim).to_bytes())
    blob[100] ^= 0x01
    _tamper(jpath, "UPDATE entries SET entry = ? WHERE idx = ?", bytes(blob), victim)
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == victim


def test_flipped_byte_in_the_database_file_is_caught(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
    # closing the last connection checkpoints the WAL into the main file
    data = bytearray(jpath.read_bytes())
    needle = entry(9).record_id  # (its access hash is also in the patient index)
    at = data.find(needle)
    assert at > 0 and data.count(needle) == 1
    data[at + 5] ^= 0x80
    jpath.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 9


def test_deleted_row_is_caught(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
    _tamper(jpath, "DELETE FROM entries WHERE idx = 7")
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 7


def test_reordered_rows_are_caught(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
    conn = db(jpath)
    r3 = conn.execute("SELECT entry, leaf_hash FROM entries WHERE idx = 3").fetchone()
    r4 = conn.execute("SELECT entry, leaf_hash FROM entries WHERE idx = 4").fetchone()
    conn.execute("UPDATE entries SET entry = ?, leaf_hash = ? WHERE idx = 3", r4)
    conn.execute("UPDATE entries SET entry = ?, leaf_hash = ? WHERE idx = 4", r3)
    conn.close()
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 3


def test_swapped_whole_rows_are_caught(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
    conn = db(jpath)
    conn.execute("UPDATE entries SET idx = -1 WHERE idx = 12")
    conn.execute("UPDATE entries SET idx = 12 WHERE idx = 13")
    conn.execute("UPDATE entries SET idx = 13 WHERE idx = -1")
    conn.close()
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 12


def _rewrite_from(jpath: Path, start: int, new: JournalEntry) -> None:
    """A careful attacker: replaces entry ``start`` and recomputes every leaf and chain hash after it."""
    conn = db(jpath)
    rows = conn.execute("SELECT idx, entry, leaf_hash, chain_hash FROM entries ORDER BY idx").fetchall()
    chain = rows[start - 1][3] if start else b"\x00" * 32
    conn.execute("BEGIN")
    for idx, blob, _, _ in rows[start:]:
        blob = new.to_bytes() if idx == start else blob
        leaf = leaf_hash(blob)
        chain = hashlib.sha256(chain + leaf).digest()
        conn.execute(
            "UPDATE entries SET entry = ?, leaf_hash = ?, chain_hash = ? WHERE idx = ?", (blob, leaf, chain, idx)
        )
    conn.execute("COMMIT")
    conn.close()


def test_a_consistent_rewrite_is_caught_by_the_recorded_anchor(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
        j.record_anchor(15, j.root(15), "0xfeed", 3)
    _rewrite_from(jpath, 10, entry(999))
    with pytest.raises(JournalCorrupt, match="anchored at size 15"):
        Journal(jpath)


def test_an_unanchored_consistent_rewrite_is_caught_by_the_stored_tree(jpath: Path) -> None:
    """Rows after the last anchor rewritten consistently (leaf and chain hashes) no longer hash to the
    interior nodes stored with them. (Someone who also rewrites the nodes is only visible to the chain
    anchors, through the auditor.)"""
    with Journal(jpath) as j:
        fill(j, 20)
        j.record_anchor(15, j.root(15), "0xfeed", 3)
    _rewrite_from(jpath, 17, entry(999))
    with pytest.raises(JournalCorrupt, match="stored tree node") as info:
        Journal(jpath)
    assert info.value.index == 16


def test_truncated_anchored_tail_is_caught(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
        j.record_anchor(20, j.root(), "0xfeed", 3)
    _tamper(jpath, "DELETE FROM entries WHERE idx >= 18")
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 18


def test_a_row_of_the_wrong_type_is_corruption_not_a_crash(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 6)
    _tamper(jpath, "UPDATE entries SET entry = 12345 WHERE idx = 2")
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 2


def test_a_file_that_is_not_a_database_is_corruption(jpath: Path) -> None:
    jpath.write_bytes(b"this is not an SQLite database, just a file with some bytes in it" * 100)
    for _ in range(2):  # the second time too: a failed open must not leave its lock behind
        with pytest.raises(JournalCorrupt):
            Journal(jpath)


def test_a_null_anchor_root_is_corruption_not_a_crash(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 3)
        j.record_anchor(3, j.root(), "0x1", 1)
    _tamper(jpath, "UPDATE anchors SET root = NULL")
    with pytest.raises(JournalCorrupt, match="anchored at size 3"):
        Journal(jpath)


def test_tampering_while_open_is_caught_by_reads_and_verify_chain(journal: Journal, jpath: Path) -> None:
    fill(journal, 20)
    # a consistent rewrite (leaf and chain recomputed): only the in-memory tree still knows the truth
    _rewrite_from(jpath, 4, entry(4, emergency=True))
    with pytest.raises(JournalCorrupt) as info:
        list(journal.entries())
    assert info.value.index == 4
    assert [i for i, _, _ in journal.entries(0, 4)] == [0, 1, 2, 3]  # the rows before are still fine
    with pytest.raises(JournalCorrupt) as info:
        journal.verify_chain()
    assert info.value.index == 4
    with pytest.raises(JournalCorrupt) as info:
        journal.verify_chain(start=2)
    assert info.value.index == 4
    _tamper(jpath, "UPDATE entries SET entry = 3.5 WHERE idx = 1")
    with pytest.raises(JournalCorrupt) as info:
        list(journal.entries())
    assert info.value.index == 1
    with pytest.raises(JournalCorrupt):
        journal.export(jpath.parent / "export.jsonl")


# ------------------------------------------------------------------------------------ proofs


def test_inclusion_and_consistency_proofs_from_the_journal(journal: Journal) -> None:
    fill(journal, 37)
    for size in (1, 2, 16, 17, 37):
        root = journal.root(size)
        for idx in range(size):
            proof = journal.inclusion_proof(idx, size)
            assert verify_inclusion(entry(idx).leaf_hash(), idx, size, proof, root)
            assert not verify_inclusion(entry(idx + 1).leaf_hash(), idx, size, proof, root)
    for old in range(0, 38, 3):
        proof = journal.consistency_proof(old, 37)
        assert verify_consistency(old, 37, journal.root(old), journal.root(37), proof)
    assert journal.root() == root_from_leaf_hashes([entry(i).leaf_hash() for i in range(37)])


# ------------------------------------------------------------------------------------ anchoring


class FakeChain:
    """Stands in for ``AccessLedger.anchorBatch``: checks sizes grow, can fail on demand."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[float, bytes, int]] = []
        self.fail_first = fail_first
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, root: bytes, tree_size: int) -> tuple[str, int]:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                raise ConnectionError("chain unreachable")
            if self.calls:
                assert tree_size > self.calls[-1][2], "AccessLedgerTreeSizeNotIncreasing"
            self.calls.append((time.monotonic(), root, tree_size))
            return f"0x{len(self.calls):064x}", 100 + len(self.calls)


def wait_for(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_anchorer_anchors_growing_consistent_roots(journal: Journal) -> None:
    chain = FakeChain()
    anchorer = Anchorer(journal, chain, interval=0.05, size_threshold=10_000)
    anchorer.start()
    try:
        for k in range(8):
            fill(journal, 5 + k, start=k * 100)
            assert wait_for(lambda: journal.pending_anchor() is None)
    finally:
        anchorer.stop()
    sizes = [s for _, _, s in chain.calls]
    assert sizes == sorted(set(sizes)) and sizes[-1] == journal.size
    for _, root, size in chain.calls:
        assert root == journal.root(size)
    for (_, r1, s1), (_, r2, s2) in itertools.pairwise(chain.calls):
        assert verify_consistency(s1, s2, r1, r2, journal.consistency_proof(s1, s2))
    recorded = journal.anchors()
    assert [(a.tree_size, a.root) for a in recorded] == [(s, r) for _, r, s in chain.calls]
    assert recorded[-1].tx_hash == f"0x{len(chain.calls):064x}" and recorded[-1].block_number == 100 + len(chain.calls)
    assert journal.last_anchor() == recorded[-1] and journal.last_anchor()[0] == journal.size  # type: ignore[index]
    assert anchorer.lag_seconds == 0.0 and anchorer.last_error is None


def test_anchorer_retries_after_failures(journal: Journal) -> None:
    chain = FakeChain(fail_first=2)
    anchorer = Anchorer(journal, chain, interval=0.05, size_threshold=10_000)
    fill(journal, 3)
    anchorer.start()
    try:
        assert wait_for(lambda: anchorer.failures >= 1)
        assert anchorer.last_error is not None and "ConnectionError" in anchorer.last_error
        assert wait_for(lambda: journal.pending_anchor() is None)
        assert anchorer.last_error is None and anchorer.failures == 2
        assert [s for _, _, s in chain.calls] == [3]
    finally:
        anchorer.stop()


def test_anchorer_respects_the_interval(journal: Journal) -> None:
    chain = FakeChain()
    anchorer = Anchorer(journal, chain, interval=0.25, size_threshold=10_000)
    anchorer.start()
    started = time.monotonic()
    k = 0
    while time.monotonic() - started < 1.3:
        journal.append(entry(k))
        k += 1
        time.sleep(0.002)
    anchorer.stop(flush=False)
    times = [t for t, _, _ in chain.calls]
    assert 2 <= len(times) <= 6, times
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times)), "anchored more often than the interval"


def test_anchorer_anchors_early_at_the_threshold(journal: Journal) -> None:
    chain = FakeChain()
    anchorer = Anchorer(journal, chain, interval=60, size_threshold=50)
    anchorer.start()
    try:
        fill(journal, 49)
        time.sleep(0.3)
        assert chain.calls == []  # below the threshold, interval far away
        journal.append(entry(49))
        assert wait_for(lambda: len(chain.calls) == 1, 5)
        assert chain.calls[0][2] == 50
        fill(journal, 10, start=50)
        time.sleep(0.3)
        assert len(chain.calls) == 1
        assert anchorer.lag_seconds > 0.2
    finally:
        anchorer.stop(flush=False)


def test_anchorer_stop_flushes(journal: Journal) -> None:
    chain = FakeChain()
    anchorer = Anchorer(journal, chain, interval=60, size_threshold=10_000)
    anchorer.start()
    fill(journal, 5)
    assert anchorer.lag_seconds >= 0.0 and journal.pending_anchor() is not None
    anchorer.stop()
    assert [s for _, _, s in chain.calls] == [5]
    assert journal.last_anchor() is not None and journal.last_anchor().tree_size == 5  # type: ignore[union-attr]
    assert journal.pending_anchor() is None


def test_anchor_made_but_not_recorded_is_recorded_not_repeated(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = FakeChain()
    anchorer = Anchorer(journal, chain, interval=60)
    fill(journal, 4)
    real = journal.record_anchor

    def broken(*a: object, **k: object) -> object:
        raise JournalUnavailable("disk hiccup")

    monkeypatch.setattr(journal, "record_anchor", broken)
    with pytest.raises(JournalUnavailable):
        anchorer.anchor_once()
    monkeypatch.setattr(journal, "record_anchor", real)
    assert anchorer.anchor_once() is None  # recorded the earlier anchor; nothing new to anchor
    assert [s for _, _, s in chain.calls] == [4]
    assert journal.last_anchor() is not None and journal.last_anchor().tree_size == 4  # type: ignore[union-attr]


def test_anchor_bookkeeping_rules_and_persistence(jpath: Path) -> None:
    with Journal(jpath) as j:
        assert j.pending_anchor() is None and j.last_anchor() is None
        fill(j, 10)
        assert j.pending_anchor() == (10, j.root())
        with pytest.raises(ValueError):
            j.record_anchor(6, j.root(5), "0x1", 1)  # not the root at that size
        with pytest.raises(ValueError):
            j.record_anchor(11, j.root(), "0x1", 1)  # beyond the journal
        j.record_anchor(6, j.root(6), "0x1", 1, anchored_at=1_750_000_000)
        with pytest.raises(ValueError):
            j.record_anchor(6, j.root(6), "0x2", 2)  # must grow
        assert j.pending_anchor() == (10, j.root())
        assert j.unanchored_since() is not None
        j.record_anchor(10, j.root(), "0x2", 2)
        assert j.pending_anchor() is None and j.unanchored_since() is None
    with Journal(jpath) as j:
        assert [a.tree_size for a in j.anchors()] == [6, 10]
        assert j.last_anchor() is not None and j.last_anchor().tx_hash == "0x2"  # type: ignore[union-attr]
        assert j.anchors()[0].anchored_at == 1_750_000_000


# ------------------------------------------------------------------------------------ export


def test_export_round_trips_and_rederives_everything(journal: Journal, tmp_path: Path) -> None:
    fill(journal, 23)
    journal.record_anchor(8, journal.root(8), "0xa", 1)
    journal.record_anchor(23, journal.root(23), "0xb", 2)
    out = tmp_path / "journal.jsonl"
    assert journal.export(out) == 23

    # an independent reading, as an auditor in another language would do it
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    header, body = lines[0], lines[1:]
    assert header["type"] == "header" and header["format"] == "hcl-release-journal" and header["version"] == 1
    entries = [o for o in body if o["type"] == "entry"]
    anchors = [o for o in body if o["type"] == "anchor"]
    assert [o["idx"] for o in entries] == list(range(23))
    leaves = []
    chain = b"\x00" * 32
    for o in entries:
        encoded = struct.pack(
            ">4sB20s20s32sB32sB32sQ",
            b"HCLJ",
            1,
            bytes.fromhex(o["requester"][2:]),
            bytes.fromhex(o["patient"][2:]),
            bytes.fromhex(o["record_id"][2:]),
            o["purpose"],
            bytes.fromhex(o["consent_id"][2:]),
            int(o["emergency"]),
            bytes.fromhex(o["access_hash"][2:]),
            o["released_at"],
        )
        assert encoded.hex() == o["encoded"][2:]
        leaf = hashlib.sha256(b"\x00" + encoded).digest()
        assert leaf.hex() == o["leaf_hash"][2:]
        chain = hashlib.sha256(chain + leaf).digest()
        assert chain.hex() == o["chain_hash"][2:]
        leaves.append(leaf)
    assert root_from_leaf_hashes(leaves).hex() == header["root"][2:] == journal.root().hex()
    assert [(a["tree_size"], a["root"][2:]) for a in anchors] == [
        (8, root_from_leaf_hashes(leaves[:8]).hex()),
        (23, root_from_leaf_hashes(leaves).hex()),
    ]
    assert entries[5]["requester"] == REQUESTER and JournalEntry.from_json(entries[5]) == entry(5)

    # and the provided reader agrees
    exported = read_export(out)
    assert exported.size == 23 and exported.root == journal.root()
    assert exported.entries == [entry(i) for i in range(23)]
    assert [a.tree_size for a in exported.anchors] == [8, 23]


@pytest.mark.parametrize(
    ("field", "value"),
    [("purpose", 5), ("emergency", True), ("released_at", 1), ("leaf_hash", "0x" + "00" * 32), ("idx", 99)],
)
def test_read_export_rejects_an_edited_export(journal: Journal, tmp_path: Path, field: str, value: object) -> None:
    fill(journal, 12)
    out = tmp_path / "journal.jsonl"
    journal.export(out)
    lines = out.read_bytes().splitlines()
    obj = orjson.loads(lines[1 + 6])
    obj[field] = value if obj[field] != value else 4
    lines[1 + 6] = orjson.dumps(obj)
    out.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(JournalCorrupt) as info:
        read_export(out)
    assert info.value.index == 6


def test_export_of_an_empty_journal(journal: Journal, tmp_path: Path) -> None:
    out = tmp_path / "empty.jsonl"
    assert journal.export(out) == 0
    exported = read_export(out)
    assert exported.size == 0 and exported.root == hashlib.sha256(b"").digest()


# ------------------------------------------------------------------------------------ bounded state


def test_stored_tree_gives_the_in_memory_trees_roots_and_proofs(jpath: Path) -> None:
    """Proofs read from the on-disk nodes are bit for bit those of node_client's in-memory tree."""
    tree = MerkleTree()
    with Journal(jpath, batch_max=7) as j:
        for n in (1, 2, 5, 13, 21):  # batches cross node and checkpoint boundaries at odd places
            for i in fill(j, n, start=tree.size):
                tree.append(entry(i).leaf_hash())
    with Journal(jpath) as j:
        assert j.size == tree.size == 42
        for size in range(1, 43):
            assert j.root(size) == tree.root(size)
            for idx in range(size):
                assert j.inclusion_proof(idx, size) == tree.inclusion_proof(idx, size)
            for old in range(size + 1):
                assert j.consistency_proof(old, size) == tree.consistency_proof(old, size)
        assert [j.leaf_hash(i) for i in range(42)] == [tree.leaf(i) for i in range(42)]
        assert j.verify_all() == 42


def test_opening_reverifies_only_rows_after_the_checkpoint(jpath: Path) -> None:
    with Journal(jpath, checkpoint_every=8) as j:
        fill(j, 20)  # one batch: the checkpoint is at 20
        fill(j, 3, start=20)
    conn = db(jpath)
    assert conn.execute("SELECT size FROM checkpoint").fetchone() == (20,)
    conn.close()
    blob = bytearray(entry(5).to_bytes())
    blob[100] ^= 0x01
    _tamper(jpath, "UPDATE entries SET entry = ? WHERE idx = 5", bytes(blob))
    with Journal(jpath, checkpoint_every=8) as j:  # row 5 precedes the checkpoint: not read at open
        assert j.size == 23
        with pytest.raises(JournalCorrupt) as info:
            j.verify_all()  # the explicit full check finds it
        assert info.value.index == 5
    _tamper(jpath, "UPDATE entries SET entry = ? WHERE idx = 5", entry(5).to_bytes())
    _rewrite_from(jpath, 21, entry(999))  # after the checkpoint: caught at open
    with pytest.raises(JournalCorrupt) as info:
        Journal(jpath)
    assert info.value.index == 20


def test_a_tampered_stored_node_is_caught_by_verify_all(jpath: Path) -> None:
    with Journal(jpath, checkpoint_every=16) as j:
        fill(j, 40)
    _tamper(jpath, "UPDATE nodes SET hash = ? WHERE height = 2 AND j = 1", b"\x07" * 32)
    with Journal(jpath) as j, pytest.raises(JournalCorrupt, match=r"node \(2, 1\)"):
        j.verify_all()


def test_a_schema_1_journal_is_migrated_once(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 30)
        j.record_anchor(25, j.root(25), "0xfeed", 3)
        root, proofs = j.root(), [j.inclusion_proof(i) for i in range(30)]
    conn = db(jpath)  # back to what schema 1 had
    for table in ("nodes", "checkpoint", "by_patient", "requester_counts"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version=1")
    conn.close()
    with Journal(jpath) as j:
        assert j.root() == root and [j.inclusion_proof(i) for i in range(30)] == proofs
        assert sorted(i for i, _ in j.patient_entries(PATIENT)) == list(range(30))
        assert j.requester_counts() == {REQUESTER: 30}
        assert j.verify_all() == 30
    conn = db(jpath)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    conn.close()


def test_patient_index_pages_newest_first(jpath: Path) -> None:
    other = "0x1111111111111111111111111111111111111111"
    with Journal(jpath) as j:
        # entry i is released at second 1_750_000_000 + i // 4: several share a second
        mixed = [
            dataclasses.replace(entry(i), released_at=1_750_000_000_000 + 250 * i, patient=PATIENT if i % 3 else other)
            for i in range(30)
        ]
        j.append_many(mixed)

        def key(i: int) -> tuple[int, bytes]:
            return (mixed[i].released_at // 1000, mixed[i].access_hash)

        mine = sorted((i for i in range(30) if i % 3), key=key, reverse=True)
        assert [i for i, _ in j.patient_entries(PATIENT)] == mine
        first = [i for i, _ in j.patient_entries(PATIENT, limit=5)]
        assert first == mine[:5]
        rest = [i for i, _ in j.patient_entries(PATIENT, before=key(first[-1]), limit=100)]
        assert rest == mine[5:]
        assert len(j.patient_entries(other)) == 10
        assert j.patient_entries("0x2222222222222222222222222222222222222222") == []


def test_verify_journal_command(jpath: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hcl gateway verify-journal``: the full check, exit 0 when intact and 1 naming the bad entry."""
    from typer.testing import CliRunner

    from gateway.cli import gateway_app

    with Journal(jpath, checkpoint_every=8) as j:
        fill(j, 20)
    monkeypatch.setenv("HCL_DATA_DIR", str(jpath.parent))
    ok = CliRunner().invoke(gateway_app, ["verify-journal"])
    assert ok.exit_code == 0 and "20 entries verified" in ok.output, ok.output
    _tamper(jpath, "UPDATE entries SET entry = ? WHERE idx = 3", entry(4).to_bytes())  # before the checkpoint
    bad = CliRunner().invoke(gateway_app, ["verify-journal"])
    assert bad.exit_code == 1 and "entry 3" in bad.output, bad.output


def test_a_truncated_unanchored_tail_is_caught_by_its_stored_nodes(jpath: Path) -> None:
    with Journal(jpath) as j:
        fill(j, 20)
    _tamper(jpath, "DELETE FROM entries WHERE idx >= 17")
    with pytest.raises(JournalCorrupt, match="covers entries that are missing") as info:
        Journal(jpath)
    assert info.value.index == 17


_CRASHING_WRITER = """
import sys
from pathlib import Path
from gateway.ledger.journal import Journal
from tests.gateway.test_journal import entry
j = Journal(Path(sys.argv[1]), checkpoint_every=8)
for b in range(40):
    j.append_many([entry(i) for i in range(5 * b, 5 * b + 5)])
"""


@pytest.mark.parametrize(("point", "survivors"), [("journal.before_commit:7", 30), ("journal.after_commit:7", 35)])
def test_kill_9_mid_commit_leaves_nodes_index_and_checkpoint_consistent(
    jpath: Path, point: str, survivors: int
) -> None:
    """SIGKILL in the writer around a commit that also crosses a checkpoint (30 -> 35 over 32): what
    reopens is exactly the committed batches, with their tree nodes, index rows and checkpoint."""
    env = {**os.environ, "HCL_TEST_CRASH_AT": point}
    done = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(jpath)], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    with Journal(jpath, checkpoint_every=8) as j:
        assert j.size == survivors
        assert j.verify_all() == survivors
        assert j.root() == root_from_leaf_hashes([entry(i).leaf_hash() for i in range(survivors)])
        fill(j, 12, start=survivors)  # and it goes on from there
        assert len(j.patient_entries(PATIENT)) == survivors + 12
        assert j.verify_all() == survivors + 12
