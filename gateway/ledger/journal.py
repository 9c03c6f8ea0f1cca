"""The release journal of batch ledger mode: durable, hash-chained, Merkle-anchored (:mod:`gateway.ledger.anchoring`).

Its database, group commit, failure semantics and export format: docs/audit.md, "The release journal".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import fcntl
import hashlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple

import orjson

from gateway.crashpoints import crashpoint
from gateway.ledger.frontier import Frontier, Node, subtrees
from gateway.ledger.segments import (
    Segment,
    Store,
    drop_sealed,
    file_digest,
    segment_path,
    stray_files,
    write_segment,
)
from gateway.storage.fs import fsync_dir
from node_client.journal_entry import ENTRY_SIZE, ENTRY_VERSION, JournalEntry
from node_client.journal_entry import unhex as _unhex
from node_client.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    range_hash,
)

__all__ = [
    "ENTRY_SIZE",
    "ENTRY_VERSION",
    "Anchor",
    "ExportedJournal",
    "Journal",
    "JournalCorrupt",
    "JournalEntry",
    "JournalError",
    "JournalUnavailable",
    "read_export",
]

log = logging.getLogger("hcl.gateway.journal")

ZERO_HASH = b"\x00" * 32
EXPORT_FORMAT = "hcl-release-journal"
EXPORT_VERSION = 1
SCHEMA_VERSION = 3  # 2: interior nodes, checkpoint and the patient/requester indexes on disk; 3: segments
#: a checkpoint (size, chain head, frontier) is written every this many entries: opening re-verifies
#: at most this many rows (the rest was verified when written; ``verify_all`` re-checks everything)
CHECKPOINT_EVERY = 16384
#: entries per sealed segment file (docs/audit.md, "Segments"); 0: never rotate by size
SEGMENT_ENTRIES = 1_000_000
#: sealed rows deleted from the open database per writer transaction, between batches of appends
DROP_CHUNK = 4096

_sha256 = hashlib.sha256


class JournalError(Exception):
    """Base class of journal errors."""


class JournalUnavailable(JournalError):
    """The journal cannot durably record anything (closed, disk full, I/O error): release nothing."""


class JournalCorrupt(JournalError):
    """What is on disk is not what was written: a row changed, vanished or moved.

    ``index`` is the first entry found bad (``None`` when the damage is not tied to one entry).
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message if index is None else f"{message} (entry {index})")
        self.index = index


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _chain(previous: bytes, leaf: bytes) -> bytes:
    return _sha256(previous + leaf).digest()


class Anchor(NamedTuple):
    """A root published on-chain: ``anchorBatch(root, tree_size)`` mined in ``tx_hash``/``block_number``."""

    tree_size: int
    root: bytes
    tx_hash: str
    block_number: int
    anchored_at: int  # unix seconds


# ---------------------------------------------------------------------------------------- journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    chain_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS anchors (
    tree_size INTEGER PRIMARY KEY,
    root BLOB,
    tx_hash TEXT,
    block_number INTEGER,
    anchored_at INTEGER
);
CREATE TABLE IF NOT EXISTS nodes (
    height INTEGER NOT NULL,
    j INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (height, j)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    chain_head BLOB NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS by_patient (
    patient BLOB NOT NULL,
    time INTEGER NOT NULL,
    access BLOB NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (patient, time, access, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requester_counts (
    requester TEXT PRIMARY KEY,
    entries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    seq INTEGER PRIMARY KEY,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    chain_head BLOB NOT NULL,
    root BLOB NOT NULL,
    file_sha256 BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    sealed_at INTEGER NOT NULL
)
"""


def _address_key(address: str) -> bytes:
    """An address as the 20 bytes the patient index is keyed by."""
    return bytes.fromhex(address[2:])


#: a patient index row: (patient key, release time in seconds, access hash, journal index); the access
#: log pages by (time, access hash) descending, the order it merges chain and peer entries in
IndexRow = tuple[bytes, int, bytes, int]


def _index_row(entry: JournalEntry, idx: int) -> IndexRow:
    return (_address_key(entry.patient), entry.released_at // 1000, entry.access_hash, idx)


@dataclass(slots=True)
class _Tail:
    """Where a replay of rows has got to: the tree's frontier and the hash chain's head."""

    frontier: Frontier
    chain: bytes


class _SealReady(NamedTuple):
    """A sealed file written by the sealer thread, for the writer to record (the tree's frontier at its end)."""

    segment: Segment
    frontier: Frontier


class _Request:
    """One caller's append: its encoded entries, their leaf hashes and the future of their indexes."""

    __slots__ = ("blobs", "future", "leaves", "parties")

    def __init__(self, blobs: list[bytes], leaves: list[bytes], entries: list[JournalEntry]) -> None:
        self.blobs = blobs
        self.leaves = leaves
        self.parties = entries  # for the indexes
        self.future: Future[list[int]] = Future()


class _Stop(enum.Enum):
    """Markers in the writer's queue: ``STOP`` (queued by :meth:`Journal.close` after the last request: the
    writer stops there) and ``DROP`` (delete the next chunk of sealed rows from the open database)."""

    STOP = enum.auto()
    DROP = enum.auto()


_STOP: Final = _Stop.STOP
_DROP: Final = _Stop.DROP


class Journal:
    """The durable release journal (docs/audit.md, "The release journal"). Thread-safe.

    Memory and opening time do not grow with history: the Merkle tree is kept as its frontier
    (O(log n) hashes), its interior nodes, the patient index and per-requester counts are written to
    disk in the entries' own transaction, and opening re-verifies only the rows after the last
    checkpoint (at most ``checkpoint_every``). :meth:`verify_all` re-checks every row and node.
    """

    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 512,
        batch_wait_ms: float = 2.0,
        checkpoint_every: int = CHECKPOINT_EVERY,
        segment_entries: int = SEGMENT_ENTRIES,
        segment_seconds: float = 0.0,
    ) -> None:
        if batch_max < 1 or checkpoint_every < 1:
            raise ValueError("batch_max and checkpoint_every must be >= 1")
        if batch_wait_ms < 0 or segment_entries < 0 or segment_seconds < 0:
            raise ValueError("batch_wait_ms, segment_entries and segment_seconds must be >= 0")
        self.path = Path(path)
        self.batch_max = batch_max
        self.batch_wait = batch_wait_ms / 1000.0
        self.checkpoint_every = checkpoint_every
        self.segment_entries = segment_entries
        self.segment_seconds = segment_seconds
        #: rows and nodes read from sealed segment files by this object (opening should read ~none)
        self.sealed_reads = 0
        self._segments: list[Segment] = []
        self._open_since = time.time()  # when the open segment began (wall clock: survives restarts)
        self._seal_retry_at = 0.0
        #: committed transactions of entries (one fsync each): appends / commits is the batching factor
        self.commits = 0
        #: entries committed by this process
        self.appended = 0
        self.max_batch = 0

        self._state_lock = threading.Lock()  # closed / error / enqueue
        self._conn_lock = threading.Lock()  # the write connection
        self._tree_lock = threading.RLock()  # tree and anchor bookkeeping
        self._anchor_lock = threading.Lock()  # serialises record_anchor
        self._closed = False
        self._error: BaseException | None = None
        self._queue: queue.SimpleQueue[_Request | _Stop | _SealReady] = queue.SimpleQueue()
        self._seal_lock = threading.Lock()  # starting a sealer vs close() joining it
        self._sealer: threading.Thread | None = None
        self._seal_pending = False  # from starting a sealer until the writer recorded (or it dropped) its file
        self._listeners: list[Callable[[int], None]] = []
        self._commit_times: collections.deque[tuple[int, float]] = collections.deque()

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock_file()
        try:
            self._open()
        except BaseException as exc:
            self._release_lock_file()
            conn_ = getattr(self, "_conn", None)
            if conn_ is not None:
                conn_.close()
            if isinstance(exc, sqlite3.OperationalError):  # I/O, permissions, locked
                raise JournalUnavailable(f"cannot open {self.path}: {exc}") from exc
            if isinstance(exc, sqlite3.DatabaseError):  # malformed, not a database
                raise JournalCorrupt(f"{self.path} is not a readable journal database: {exc}") from exc
            raise
        if self._segments:  # rows a crash left behind after their seal: deleted in the background
            self._queue.put(_DROP)
        self._writer = threading.Thread(target=self._run, name=f"journal-writer:{self.path.name}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        """Opens the database (WAL, full sync), creates or checks its schema, and loads the tree."""
        created = not self.path.exists()
        self._conn: sqlite3.Connection | None = self._connect()
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode.lower() != "wal":
            raise JournalUnavailable(f"{self.path}: WAL mode unavailable (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalUnavailable(f"{self.path}: journal schema {version} is newer than this code")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):  # not executescript(): it would COMMIT first
            if statement.strip():
                conn.execute(statement)
        if version < 2:
            self._migrate_to_v2(conn)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
        if created:  # the new database (and its WAL) must survive a crash as directory entries too
            fsync_dir(self.path.parent)
        self._open_segments(conn)
        self._frontier = Frontier()
        self._chain_head = ZERO_HASH
        self._last_anchor: Anchor | None = None
        self._load()

    def _open_segments(self, conn: sqlite3.Connection) -> None:
        """Loads the manifest, deletes files of rotations that never committed, and checks each sealed file
        is there with its recorded size (a stat: their content is trusted by the anchored roots)."""
        self._segments = self._read_segments(conn)
        for stray in stray_files(self.path, self._segments[-1].seq if self._segments else 0):
            log.warning("deleting %s: a segment rotation that did not commit", stray)
            stray.unlink(missing_ok=True)
        for s in self._segments:
            path = segment_path(self.path, s.seq)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise JournalCorrupt(f"sealed segment {path.name} is missing", s.lo) from None
            if size != s.bytes:
                raise JournalCorrupt(f"sealed segment {path.name} has {size} bytes, sealed with {s.bytes}", s.lo)
        if self._segments:
            self._open_since = float(self._segments[-1].sealed_at)

    @staticmethod
    def _read_segments(conn: sqlite3.Connection) -> list[Segment]:
        rows = conn.execute(
            "SELECT seq, lo, hi, chain_head, root, file_sha256, bytes, sealed_at FROM segments ORDER BY seq"
        ).fetchall()
        return [Segment(*r) for r in rows]

    def _snapshot_segments(self, conn: sqlite3.Connection) -> list[Segment]:
        """The manifest as of ``conn``'s snapshot: the in-memory list (sealed segments never change, seq is
        1, 2, ...) cut to the snapshot's last seq, or extended by the rows after it; two index searches,
        not a read of the whole manifest per request."""
        with self._tree_lock:
            known = self._segments
        last = conn.execute("SELECT MAX(seq) FROM segments").fetchone()[0] or 0
        if last <= len(known):
            return known[:last]
        extra = conn.execute(
            "SELECT seq, lo, hi, chain_head, root, file_sha256, bytes, sealed_at FROM segments WHERE seq > ?"
            " ORDER BY seq",
            (len(known),),
        ).fetchall()
        return [*known, *(Segment(*r) for r in extra)]

    @contextlib.contextmanager
    def _routed(self, conn: sqlite3.Connection) -> Iterator[Store]:
        """A :class:`Store` over ``conn`` and the sealed files its snapshot's manifest names (a read
        transaction is begun if none is open, so the manifest and the rows agree)."""
        began = not conn.in_transaction
        if began:
            conn.execute("BEGIN")
        store = Store(conn, self._snapshot_segments(conn), self.path)
        try:
            yield store
        except FileNotFoundError as exc:  # a sealed file removed while the journal is open
            raise JournalCorrupt(str(exc)) from exc
        finally:
            self.sealed_reads += store.reads
            store.close()
            if began and conn.in_transaction:
                conn.execute("COMMIT")

    def _lock_file(self) -> int:
        """An exclusive ``flock`` on ``<db>.lock``: two processes appending to one journal would fork it."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise JournalUnavailable(f"{self.path} is open in another journal (process or object)") from exc
        return fd

    def _release_lock_file(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1

    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # TEXT comes back as bytes: a blob re-typed behind our back is judged by its content, and a
        # non-UTF-8 TEXT value cannot make reads fail with a decoding error
        conn.text_factory = bytes
        if readonly:
            conn.execute("PRAGMA query_only=1")
        return conn

    def _load(self) -> None:
        """Loads the checkpoint, re-verifies the rows after it and the anchors they reach."""
        assert self._conn is not None
        with self._routed(self._conn) as store:
            self._load_from(store)

    def _load_from(self, store: Store) -> None:
        conn = store.conn
        frontier, chain = self._read_checkpoint(store)
        tail_anchors = self._read_anchors(conn, after=frontier.size)
        made: list[Node] = []
        tail = _Tail(frontier, chain)
        for _idx, _blob, nodes in self._replay(conn, tail):
            made += nodes
            if tail_anchors and tail_anchors[0].tree_size == frontier.size:
                self._check_anchor_root(tail_anchors.pop(0), frontier.root())
        if tail_anchors:
            a = tail_anchors[0]
            raise JournalCorrupt(
                f"an anchor covers {a.tree_size} entries but the journal has {frontier.size}", frontier.size
            )
        self._check_stored_nodes(store, made)
        self._check_nothing_beyond(conn, frontier.size)
        self._frontier = frontier
        self._chain_head = tail.chain
        last = self._read_anchors(conn, last_only=True)
        if last and last[0].tree_size <= frontier.size:
            self._check_anchor_root(last[0], range_hash(self._disk_node(store), 0, last[0].tree_size))
        self._check_segment_anchors(conn, store.segments)
        self._last_anchor = last[0] if last else None
        anchored = self._last_anchor.tree_size if self._last_anchor else 0
        if frontier.size > anchored:
            # unanchored rows from a previous run: age them by their release time (wall clock)
            row = store.fetch(store.db(anchored, anchored + 1), "SELECT entry FROM entries WHERE idx = ?", (anchored,))
            age = max(0.0, time.time() - JournalEntry.from_bytes(bytes(row[0][0])).released_at / 1000)
            self._commit_times.append((frontier.size, time.monotonic() - age))
        if frontier.size and not store.segments:
            row = conn.execute("SELECT entry FROM entries WHERE idx = 0").fetchone()
            self._open_since = JournalEntry.from_bytes(bytes(row[0])).released_at / 1000

    def _check_segment_anchors(self, conn: sqlite3.Connection, segments: list[Segment]) -> None:
        """A sealed segment's recorded root must be the one anchored at its end, when one was."""
        for s in segments:
            row = conn.execute("SELECT root FROM anchors WHERE tree_size = ?", (s.hi,)).fetchone()
            if row is not None and row[0] != s.root:
                raise JournalCorrupt(f"sealed segment {s.seq}'s root is not the one anchored at {s.hi}", s.lo)

    @staticmethod
    def _check_anchor_root(anchor: Anchor, root: bytes) -> None:
        if anchor.root != root:
            raise JournalCorrupt(f"the entries do not hash to the root anchored at size {anchor.tree_size}")

    def _read_checkpoint(self, store: Store) -> tuple[Frontier, bytes]:
        """The checkpoint's frontier and chain head, checked against the stored nodes and row; a checkpoint
        at the end of the last sealed segment against its manifest row instead (no sealed file read)."""
        row = store.conn.execute("SELECT size, chain_head, frontier FROM checkpoint WHERE id = 1").fetchone()
        if row is None:
            if store.segments:
                raise JournalCorrupt("sealed segments but no checkpoint", 0)
            return Frontier(), ZERO_HASH
        try:
            frontier = Frontier.decode(int(row[0]), bytes(row[2]))
        except (TypeError, ValueError) as exc:
            raise JournalCorrupt(f"bad checkpoint: {exc}") from None
        if frontier.size < store.sealed_end:
            raise JournalCorrupt("the checkpoint precedes the last sealed segment", frontier.size)
        if store.segments and frontier.size == store.sealed_end:
            last = store.segments[-1]
            if frontier.root() != last.root or row[1] != last.chain_head:
                raise JournalCorrupt("the checkpoint does not match the last sealed segment", frontier.size - 1)
            return frontier, bytes(row[1])
        for height, j, h in frontier.nodes():
            if store.node(height, j) != h:
                raise JournalCorrupt("the checkpoint does not match the stored tree", j << height)
        if store.chain_hash(frontier.size - 1) != row[1]:
            raise JournalCorrupt("the checkpoint's chain head does not match its row", frontier.size - 1)
        return frontier, bytes(row[1])

    def _replay(self, conn: sqlite3.Connection, tail: _Tail) -> Iterator[tuple[int, bytes, list[Node]]]:
        """Rows from ``tail.frontier.size`` on, each verified (index, leaf, chain) and appended to the tail:
        ``(idx, entry, nodes made)``. The cost of opening is this loop over the rows after the checkpoint."""
        frontier, chain = tail.frontier, tail.chain
        expected = frontier.size
        sha = _sha256
        rows = conn.execute(
            "SELECT idx, entry, leaf_hash, chain_hash FROM entries WHERE idx >= ? ORDER BY idx", (expected,)
        )
        for idx, blob, leaf, stored_chain in rows:
            if (
                idx != expected
                or type(blob) is not bytes
                or sha(b"\x00" + blob).digest() != leaf
                or sha(chain + leaf).digest() != stored_chain
            ):
                self._check_row(expected, idx, blob, leaf, stored_chain, chain)
            chain = tail.chain = stored_chain
            expected += 1
            yield idx, blob, frontier.append(leaf)

    @staticmethod
    def _check_stored_nodes(store: Store, made: list[Node]) -> None:
        """The interior nodes recomputed from rows must be the ones stored when they were written."""
        for height, j, h in made:
            if store.node(height, j) != h:
                raise JournalCorrupt(f"stored tree node ({height}, {j}) differs from the entries", j << height)

    @staticmethod
    def _check_nothing_beyond(conn: sqlite3.Connection, size: int) -> None:
        """No stored node past the last row: rows were removed after they were written (the next append
        would otherwise collide with their nodes). One index probe per level."""
        for height in range(1, 64):
            row = conn.execute("SELECT j FROM nodes WHERE height = ? AND j >= ? LIMIT 1", (height, size >> height))
            if row.fetchone() is not None:
                raise JournalCorrupt("the stored tree covers entries that are missing", size)

    @staticmethod
    def _disk_node(store: Store) -> Callable[[int, int], bytes]:
        """``node(height, j)`` read from disk, wherever it lives (open database or sealed file)."""

        def node(height: int, j: int) -> bytes:
            h = store.node(height, j)
            if h is None:
                raise JournalCorrupt(f"stored tree node ({height}, {j}) missing", j << height)
            return h

        return node

    def _migrate_to_v2(self, conn: sqlite3.Connection) -> None:
        """Once, from schema 1: verifies every row and anchor and writes the nodes, indexes and checkpoint
        (streamed in chunks, inside the caller's transaction)."""
        frontier = Frontier()
        anchors = self._read_anchors(conn)
        tail = _Tail(frontier, ZERO_HASH)
        nodes: list[Node] = []
        patients: list[IndexRow] = []
        counts: collections.Counter[str] = collections.Counter()
        for idx, blob, made in self._replay(conn, tail):
            nodes += made
            entry = JournalEntry.from_bytes(blob)
            patients.append(_index_row(entry, idx))
            counts[entry.requester] += 1
            while anchors and anchors[0].tree_size == frontier.size:
                self._check_anchor_root(anchors.pop(0), frontier.root())
            if len(patients) >= 65536:
                self._write_derived(conn, nodes, patients, counts)
                nodes, patients, counts = [], [], collections.Counter()
        if anchors:
            raise JournalCorrupt(f"the entries do not hash to the root anchored at size {anchors[0].tree_size}")
        self._write_derived(conn, nodes, patients, counts)
        if frontier.size:
            self._write_checkpoint(conn, frontier, tail.chain)
        log.info("journal %s migrated to schema 2 (%d entries)", self.path, frontier.size)

    @staticmethod
    def _write_derived(
        conn: sqlite3.Connection,
        nodes: list[Node],
        patients: list[IndexRow],
        counts: collections.Counter[str],
    ) -> None:
        """Writes what the entries imply (tree nodes, patient index, requester counts) in the caller's
        transaction."""
        conn.executemany("INSERT INTO nodes (height, j, hash) VALUES (?, ?, ?)", nodes)
        conn.executemany("INSERT INTO by_patient (patient, time, access, idx) VALUES (?, ?, ?, ?)", patients)
        conn.executemany(
            "INSERT INTO requester_counts (requester, entries) VALUES (?, ?)"
            " ON CONFLICT (requester) DO UPDATE SET entries = entries + excluded.entries",
            list(counts.items()),
        )

    @staticmethod
    def _write_checkpoint(conn: sqlite3.Connection, frontier: Frontier, chain: bytes) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO checkpoint (id, size, chain_head, frontier) VALUES (1, ?, ?, ?)",
            (frontier.size, chain, frontier.encode()),
        )

    @staticmethod
    def _check_row(expected: int, idx: int, blob: bytes, leaf: bytes, stored_chain: bytes, chain: bytes) -> None:
        if idx != expected:
            raise JournalCorrupt("entry missing or out of place" if idx > expected else "bad index", expected)
        if not isinstance(blob, bytes) or leaf_hash(blob) != leaf:
            raise JournalCorrupt("entry does not match its leaf hash", idx)
        if _chain(chain, leaf) != stored_chain:
            raise JournalCorrupt("hash chain broken", idx)

    @staticmethod
    def _read_anchors(conn: sqlite3.Connection, *, after: int = 0, last_only: bool = False) -> list[Anchor]:
        """Recorded anchors of tree size > ``after``, ascending (or only the latest one)."""
        sql = "SELECT tree_size, root, tx_hash, block_number, anchored_at FROM anchors WHERE tree_size > ?"
        sql += " ORDER BY tree_size DESC LIMIT 1" if last_only else " ORDER BY tree_size"
        rows = conn.execute(sql, (after,)).fetchall()
        # a NULL or non-blob root (the column is nullable) can only come from outside: it then fails
        # the root comparison on open instead of crashing with a TypeError
        return [
            Anchor(
                r[0],
                r[1] if isinstance(r[1], bytes) else b"",
                r[2].decode("utf-8", "replace") if isinstance(r[2], bytes) else r[2],
                r[3],
                r[4],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ appending

    def _submit(self, entries: Sequence[JournalEntry]) -> _Request:
        blobs = []
        for e in entries:
            if not isinstance(e, JournalEntry):
                raise TypeError("expected a JournalEntry")
            blobs.append(e.to_bytes())
        # hash in the caller's thread: the single writer is the bottleneck, callers are not
        req = _Request(blobs, [leaf_hash(b) for b in blobs], list(entries))
        with self._state_lock:
            self._raise_if_unusable()
            self._queue.put(req)
        return req

    def _raise_if_unusable(self) -> None:
        if self._error is not None:
            raise JournalUnavailable(f"the journal failed: {self._error!r}") from self._error
        if self._closed:
            raise JournalUnavailable("the journal is closed")

    def append(self, entry: JournalEntry) -> int:
        """Appends one entry and returns its index once it is durable (fsynced). Blocks until then.

        Raises :class:`JournalUnavailable` if it could not be made durable: then it was not appended.
        """
        return self._submit([entry]).future.result()[0]

    def append_many(self, entries: Sequence[JournalEntry]) -> list[int]:
        """Appends entries atomically (one transaction, consecutive indexes); returns their indexes."""
        if not entries:
            return []
        return self._submit(list(entries)).future.result()

    def submit(self, entries: Sequence[JournalEntry]) -> Future[list[int]]:
        """Queues entries for the group commit without waiting; the future holds their indexes once durable
        (the journal server answers a worker from it)."""
        return self._submit(list(entries)).future

    async def append_async(self, entry: JournalEntry) -> int:
        """:meth:`append` for coroutines: awaits durability without blocking the event loop."""
        return (await asyncio.wrap_future(self._submit([entry]).future))[0]

    def _run(self) -> None:
        """The writer thread: take a batch, commit it, resolve it; forever, until stopped or broken."""
        previous_requests = 1
        batch: list[_Request] = []
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if item is _DROP:
                    if not self._drop_chunk():
                        return
                    continue
                if isinstance(item, _SealReady):
                    if not self._finish_seal(item):
                        return
                    continue
                if not item.future.set_running_or_notify_cancel():
                    continue  # its caller gave up before we started: not written, not reported
                batch = [item]
                count = len(item.blobs)
                stop = False
                ready: _SealReady | None = None
                deadline: float | None = None
                while count < self.batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        # linger only for the companions the previous batch suggests are coming
                        if self.batch_wait <= 0 or len(batch) >= previous_requests:
                            break
                        now = time.monotonic()
                        if deadline is None:
                            deadline = now + self.batch_wait
                        if now >= deadline:
                            break
                        try:
                            item = self._queue.get(timeout=deadline - now)
                        except queue.Empty:
                            break
                    if item is _STOP:
                        stop = True
                        break
                    if item is _DROP:  # after this batch, at the back of the queue
                        self._queue.put(_DROP)
                        break
                    if isinstance(item, _SealReady):  # after this batch
                        ready = item
                        break
                    # RUNNING from here: a late cancel() fails, so the result is always deliverable
                    if item.future.set_running_or_notify_cancel():
                        batch.append(item)
                        count += len(item.blobs)
                previous_requests = len(batch)
                if not self._commit(batch) or (ready is not None and not self._finish_seal(ready)) or stop:
                    return
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.exception("journal writer crashed")
            self._fail(exc, [r for r in batch if not r.future.done()])

    def _commit(self, batch: list[_Request]) -> bool:
        frontier = self._frontier.copy()  # becomes the journal's only once committed
        idx = frontier.size
        chain = self._chain_head
        rows: list[tuple[int, bytes, bytes, bytes]] = []
        nodes: list[Node] = []
        patients: list[IndexRow] = []
        counts: collections.Counter[str] = collections.Counter()
        firsts: list[int] = []
        for req in batch:
            firsts.append(idx)
            for blob, leaf, e in zip(req.blobs, req.leaves, req.parties, strict=True):
                chain = _chain(chain, leaf)
                rows.append((idx, blob, leaf, chain))
                nodes += frontier.append(leaf)
                patients.append(_index_row(e, idx))
                counts[e.requester] += 1
                idx += 1
        checkpoint = frontier.size // self.checkpoint_every != self._frontier.size // self.checkpoint_every
        try:
            with self._transaction() as conn:
                conn.executemany("INSERT INTO entries (idx, entry, leaf_hash, chain_hash) VALUES (?, ?, ?, ?)", rows)
                self._write_derived(conn, nodes, patients, counts)
                if checkpoint:
                    self._write_checkpoint(conn, frontier, chain)
                crashpoint("journal.before_commit")
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - the writer fails the whole journal on any error (fail closed), then re-raises to waiters
            log.error("journal write failed; the journal is now unavailable: %r", exc)
            self._fail(exc, batch)
            return False
        crashpoint("journal.after_commit")
        now = time.monotonic()
        with self._tree_lock:
            self._frontier = frontier
            self._chain_head = chain
            self._commit_times.append((idx, now))
        self.commits += 1
        self.appended += len(rows)
        self.max_batch = max(self.max_batch, len(rows))
        self._maybe_seal()  # before the callers hear back: a sealer is then already under way
        for req, first in zip(batch, firsts, strict=True):
            req.future.set_result(list(range(first, first + len(req.blobs))))
        for listener in list(self._listeners):
            try:
                listener(idx)
            except Exception:
                log.exception("journal commit listener failed")
        return True

    # ------------------------------------------------------------------ segments

    def _seal_due(self) -> tuple[int, int] | None:
        """``(lo, hi)`` of the segment to seal now, or None: the open segment has reached
        ``segment_entries`` or is older than ``segment_seconds``. ``hi`` is even, so every pair of
        leaves (and its height-1 node) lives in one file."""
        lo = self._segments[-1].hi if self._segments else 0
        hi = self._frontier.size & ~1
        if hi - lo < 2 or time.monotonic() < self._seal_retry_at:
            return None
        by_size = self.segment_entries and hi - lo >= self.segment_entries
        by_time = self.segment_seconds and time.time() - self._open_since >= self.segment_seconds
        return (lo, hi) if by_size or by_time else None

    def _maybe_seal(self) -> None:
        """Starts sealing the open segment when due, in a thread of its own: the copy and the hash need no
        write lock, so appends go on meanwhile; the writer records it when it is ready (:meth:`_finish_seal`)."""
        due = self._seal_due()
        if due is None:
            return
        with self._seal_lock:
            if self._closed or self._seal_pending:
                return
            self._seal_pending = True
            self._sealer = threading.Thread(
                target=self._prepare_seal, args=due, name=f"journal-sealer:{self.path.name}", daemon=True
            )
            self._sealer.start()

    def _prepare_seal(self, lo: int, hi: int) -> None:
        """Sealer thread: writes rows ``[lo, hi)`` (committed, so immutable) to a new file on a connection of
        its own (fsync, hash, rename, directory fsync), then queues it for the writer. A failure leaves
        the rows where they were; sealing is retried a minute later."""
        seq = self._segments[-1].seq + 1 if self._segments else 1
        final = segment_path(self.path, seq)
        tmp = final.with_name(final.name + ".tmp")
        try:
            conn = self._connect()
            try:
                with self._routed(conn) as store:
                    nodes = self._disk_node(store)
                    at_hi = Frontier.decode(hi, b"".join(nodes(h, j) for h, j in subtrees(hi)))
                    chain = store.chain_hash(hi - 1)
                assert chain is not None
                write_segment(conn, tmp, lo, hi, chain, at_hi.root())
            finally:
                conn.close()
            digest, size = file_digest(tmp)
            os.replace(tmp, final)
            fsync_dir(self.path.parent)
        except Exception as exc:  # noqa: BLE001 - nothing changed in the open database: retry later
            tmp.unlink(missing_ok=True)
            log.warning("journal segment not sealed, retrying in a minute: %r", exc)
            self._seal_retry_at = time.monotonic() + 60
            self._seal_pending = False
            return
        crashpoint("journal.segment_written")
        segment = Segment(seq, lo, hi, chain, at_hi.root(), digest, size, int(time.time()))
        self._queue.put(_SealReady(segment, at_hi))

    def _finish_seal(self, ready: _SealReady) -> bool:
        """Writer thread: records a prepared segment in one short transaction (manifest row, checkpoint moved
        up to its end if below); from then on reads of its rows go to the file, and the copies left in the
        open database are deleted a chunk at a time between appends (:meth:`_drop_chunk`), so a seal never
        holds the writer for long. A failure fails the journal like any failed write; returns False then."""
        s = ready.segment
        self._seal_pending = False
        try:
            with self._transaction() as conn:
                conn.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tuple(s))
                row = conn.execute("SELECT size FROM checkpoint WHERE id = 1").fetchone()
                if row is None or row[0] < s.hi:
                    self._write_checkpoint(conn, ready.frontier, s.chain_head)
                crashpoint("journal.segment_before_commit")
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - like a failed commit: fail closed
            log.error("journal segment commit failed; the journal is now unavailable: %r", exc)
            self._fail(exc, [])
            return False
        crashpoint("journal.segment_after_commit")
        with self._tree_lock:
            self._segments = [*self._segments, s]
        self._open_since = s.sealed_at
        log.info("journal segment %d sealed: entries [%d, %d), %d bytes", s.seq, s.lo, s.hi, s.bytes)
        self._queue.put(_DROP)
        self._maybe_seal()  # the open segment may have grown past the threshold again meanwhile
        return True

    def _drop_chunk(self) -> bool:
        """Writer thread: deletes the next :data:`DROP_CHUNK` sealed rows (and the inner nodes inside them)
        still in the open database, then queues itself again behind the appends waiting. A chunk stays in
        one segment, and the one that ends a segment also deletes that segment's nodes across chunk ends
        (never a node across two segments: those stay in the open database). Reads never see these copies
        (the manifest sends them to the file), so a crash between chunks only leaves work for the next
        opening."""
        segments = self._segments
        try:
            with self._transaction() as conn:
                first = conn.execute("SELECT MIN(idx) FROM entries").fetchone()[0]
                home = next((seg for seg in segments if first is not None and seg.lo <= first < seg.hi), None)
                more = False  # nothing sealed is left in the open database unless a chunk says otherwise
                if home is not None:
                    hi = min(first + DROP_CHUNK, home.hi)
                    drop_sealed(conn, home.lo if hi == home.hi else first, hi)
                    more = hi < home.hi or home is not segments[-1]  # more here, or segments a crash left
                    crashpoint("journal.drop_before_commit")
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - like a failed commit: fail closed
            log.error("deleting sealed rows failed; the journal is now unavailable: %r", exc)
            self._fail(exc, [])
            return False
        if more:
            self._queue.put(_DROP)
        return True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer's one way to write: BEGIN IMMEDIATE under the connection lock; the body commits (after
        its crash point), any error rolls back and propagates."""
        with self._conn_lock:
            conn = self._conn
            if conn is None:
                raise JournalUnavailable("the journal is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise

    def _fail(self, exc: BaseException, batch: list[_Request]) -> None:
        """Marks the journal unavailable and fails ``batch`` and everything still queued."""
        with self._state_lock:
            if self._error is None:
                self._error = exc
        error = JournalUnavailable(f"the journal could not be written: {exc!r}")
        error.__cause__ = exc
        pending = list(batch)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Request):
                pending.append(item)
        for req in pending:
            with contextlib.suppress(InvalidStateError):  # cancelled by its caller meanwhile
                req.future.set_exception(error)

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Calls ``listener(new_size)`` after every commit.

        It runs in the writer thread: it must be quick and must not append (that would deadlock).
        """
        self._listeners.append(listener)

    # ------------------------------------------------------------------ state and proofs

    @property
    def size(self) -> int:
        """Number of durable entries."""
        return self._committed().size

    def _committed(self) -> Frontier:
        """The committed tree's frontier, the one every read works on (a reader sees no later entry)."""
        with self._tree_lock:
            return self._frontier

    @property
    def available(self) -> bool:
        """False once closed or failed."""
        return self._error is None and not self._closed

    @property
    def error(self) -> BaseException | None:
        """Why the journal became unavailable, if it did."""
        return self._error

    def _snapshot(self, size: int | None) -> tuple[int, Frontier]:
        """``size`` checked against the current tree (default: all of it) and the current frontier."""
        frontier = self._committed()
        if size is None:
            return frontier.size, frontier
        if not 0 <= size <= frontier.size:
            raise ValueError(f"size {size} out of range: the tree has {frontier.size} leaves")
        return size, frontier

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` entries: from memory for the current size, else O(log n) node reads."""
        size, frontier = self._snapshot(size)
        if size == frontier.size:
            return frontier.root()
        if size == 0:
            return EMPTY_ROOT
        with self._reader() as conn, self._routed(conn) as store:
            return range_hash(self._disk_node(store), 0, size)

    def leaf_hash(self, idx: int) -> bytes:
        """The leaf hash of entry ``idx``, its row checked (``IndexError`` when out of range)."""
        if not 0 <= idx < self.size:
            raise IndexError(f"leaf index {idx} out of range for size {self.size}")
        for _i, _entry, leaf in self.entries(idx, idx + 1):
            return leaf
        raise JournalCorrupt("entry missing", idx)

    def inclusion_proof(self, idx: int, size: int | None = None) -> list[bytes]:
        """PATH(idx, D[size]) from the stored nodes (same proof as the in-memory tree gave)."""
        size, _frontier = self._snapshot(size)
        if not 0 <= idx < size:
            raise ValueError(f"leaf index {idx} not in a tree of size {size}")
        with self._reader() as conn, self._routed(conn) as store:
            return inclusion_path(self._disk_node(store), idx, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) from the stored nodes."""
        new_size, _frontier = self._snapshot(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"old size {old_size} not in 0..{new_size}")
        if old_size == 0 or old_size == new_size:
            return []
        with self._reader() as conn, self._routed(conn) as store:
            return consistency_path(self._disk_node(store), old_size, new_size)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A separate read-only connection: WAL readers never wait for the writer, nor it for them."""
        if self._closed:
            raise JournalUnavailable("the journal is closed")
        try:
            conn = self._connect(readonly=True)
        except sqlite3.Error as exc:
            raise JournalUnavailable(f"cannot read the journal: {exc!r}") from exc
        try:
            yield conn
        finally:
            conn.close()

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, JournalEntry, bytes]]:
        """``(idx, entry, leaf_hash)`` for ``start <= idx < stop`` (default: the current size).

        Each row is checked against the stored tree (see :meth:`_checked_rows`), so a row altered on
        disk since it was written is reported as :class:`JournalCorrupt`.
        """
        frontier = self._committed()
        stop = frontier.size if stop is None else min(stop, frontier.size)
        start = max(start, 0)
        if start >= stop:
            return
        with self._reader() as conn, self._routed(conn) as store:
            for idx, blob, leaf, _chain_hash in self._checked_rows(store, start, stop, frontier):
                try:
                    entry = JournalEntry.from_bytes(blob)
                except ValueError as exc:  # a valid leaf hash over an invalid encoding: never written by us
                    raise JournalCorrupt(f"entry does not decode: {exc}", idx) from exc
                yield idx, entry, leaf

    def _checked_rows(
        self, store: Store, start: int, stop: int, frontier: Frontier
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """Rows ``start..stop`` as ``(idx, entry, leaf, chain_hash)``, each in place, hashing to its leaf,
        and with its sibling hashing to their stored parent node (the unpaired last leaf: to the
        frontier's). A consistent rewrite of rows then also needs the tree rewritten to go unseen here;
        the anchored roots catch even that (:meth:`verify_all`, the auditor)."""
        lo, hi = start & ~1, min(frontier.size, stop + (stop & 1))
        expected = lo
        for chunk, end, rows in self._row_chunks(store, lo, hi):
            parents = dict(
                store.fetch(
                    store.db(chunk, end),
                    "SELECT j, hash FROM nodes WHERE height = 1 AND j >= ? AND j < ?",
                    (chunk >> 1, end >> 1),
                )
            )
            for pos, (idx, blob, leaf, chain_hash) in enumerate(rows):
                if idx != expected:
                    raise JournalCorrupt("entry missing or out of place", max(expected, start))
                if not isinstance(blob, bytes) or leaf_hash(blob) != leaf:
                    raise JournalCorrupt("entry changed on disk", idx)
                if idx & 1:
                    if node_hash(rows[pos - 1][2], leaf) != parents.get(idx >> 1):
                        raise JournalCorrupt("entry differs from the one committed", max(idx - 1, start))
                elif idx == frontier.size - 1 and leaf != frontier.last_leaf():
                    raise JournalCorrupt("entry differs from the one committed", idx)
                expected += 1
                if start <= idx < stop:
                    yield idx, blob, leaf, chain_hash
        if expected != hi:
            raise JournalCorrupt("entry missing", expected)

    @staticmethod
    def _row_chunks(store: Store, lo: int, hi: int) -> Iterator[tuple[int, int, list[tuple[Any, ...]]]]:
        """Rows ``[lo, hi)`` in chunks ``(chunk start, chunk end, rows)``, none crossing a segment boundary."""
        chunk = lo
        while chunk < hi:
            end = store.chunk_end(chunk, hi)
            rows = store.fetch(
                store.db(chunk, end),
                "SELECT idx, entry, leaf_hash, chain_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (chunk, end),
            )
            yield chunk, end, rows
            chunk = end

    def verify_chain(self, start: int = 0) -> None:
        """Re-reads rows ``start..size`` from disk and checks them; raises :class:`JournalCorrupt`.

        Each row must hash to its leaf, chain from the previous row's stored ``chain_hash``, and agree
        with the stored tree. ``start > 0`` trusts row ``start - 1``'s chain hash (checked earlier).
        """
        frontier = self._committed()
        size = frontier.size
        if not 0 <= start <= size:
            raise ValueError(f"start {start} not in 0..{size}")
        with self._reader() as conn, self._routed(conn) as store:
            chain = ZERO_HASH
            if start > 0:
                stored = store.chain_hash(start - 1)
                if stored is None:
                    raise JournalCorrupt("entry missing", start - 1)
                chain = stored
            for idx, _blob, leaf, stored_chain in self._checked_rows(store, start, size, frontier):
                if _chain(chain, leaf) != stored_chain:
                    raise JournalCorrupt("hash chain broken", idx)
                chain = stored_chain

    def verify_all(self) -> int:
        """Re-verifies everything from the rows up (what opening skips: rows before the checkpoint and
        sealed segments): every sealed file's hash, every row and the hash chain, every stored tree node
        recomputed, each segment's recorded root and chain head, the checkpoint, every anchor and the
        indexes' totals. O(n) time, O(log n) memory; returns the number of entries checked."""
        frontier = self._committed()
        size = frontier.size
        with self._reader() as conn, self._routed(conn) as store:
            for s, previous in zip(store.segments, [0] + [s.hi for s in store.segments], strict=False):
                self._check_segment_file(s, previous)
            anchors = self._read_anchors(conn)
            if anchors and anchors[-1].tree_size > size:
                a = anchors[-1]
                raise JournalCorrupt(f"an anchor covers {a.tree_size} entries but the journal has {size}", size)
            replayed = self._verify_tree(store, size, anchors)
            if replayed.nodes() != frontier.nodes():
                raise JournalCorrupt("the stored tree does not end in the journal's frontier", size)
            self._read_checkpoint(store)
            indexed, counted = conn.execute(
                "SELECT (SELECT COUNT(*) FROM by_patient WHERE idx < :n),"
                " (SELECT COALESCE(SUM(entries), 0) FROM requester_counts)",
                {"n": size},
            ).fetchone()
            if indexed != size or counted < size:
                raise JournalCorrupt(f"the indexes cover {indexed}/{counted} of {size} entries")
        return size

    def _check_segment_file(self, s: Segment, previous_hi: int) -> None:
        """A sealed file is the one sealed: same SHA-256 and size, its range right after the previous one."""
        path = segment_path(self.path, s.seq)
        if s.lo != previous_hi or s.hi <= s.lo:
            raise JournalCorrupt(f"sealed segment {s.seq} has range [{s.lo}, {s.hi})", s.lo)
        try:
            digest, size = file_digest(path)
        except FileNotFoundError:
            raise JournalCorrupt(f"sealed segment {path.name} is missing", s.lo) from None
        if (digest, size) != (s.sha256, s.bytes):
            raise JournalCorrupt(f"sealed segment {path.name} changed since it was sealed", s.lo)

    def _verify_tree(self, store: Store, size: int, anchors: list[Anchor]) -> Frontier:
        """Replays every row, sealed or open, through a fresh frontier: each row's leaf and chain hash,
        each interior node it completes against the stored one (and no extra node), each anchor and each
        segment's recorded root and chain head as the replay reaches their size."""
        tail = _Tail(Frontier(), ZERO_HASH)
        segments = list(store.segments)
        made = expected = 0
        for _chunk, _end, rows in self._row_chunks(store, 0, size):
            for idx, blob, leaf, stored_chain in rows:
                if idx != expected or type(blob) is not bytes or leaf_hash(blob) != leaf:
                    self._check_row(expected, idx, blob, leaf, stored_chain, tail.chain)
                if _chain(tail.chain, leaf) != stored_chain:
                    raise JournalCorrupt("hash chain broken", idx)
                tail.chain = stored_chain
                expected += 1
                for height, j, h in tail.frontier.append(leaf):
                    if store.node(height, j) != h:
                        raise JournalCorrupt(f"stored tree node ({height}, {j}) differs from the entries", j << height)
                    made += 1
                self._check_reached(tail, anchors, segments)
        if expected != size:
            raise JournalCorrupt("entry missing", expected)
        # the open database's own nodes: not the copies of a sealed segment's still being deleted
        stored = store.conn.execute(
            "SELECT COUNT(*) FROM nodes n WHERE NOT EXISTS (SELECT 1 FROM segments s"
            " WHERE (n.j << n.height) >= s.lo AND ((n.j + 1) << n.height) <= s.hi)"
        ).fetchone()[0]
        stored += sum(store.file(s).execute("SELECT COUNT(*) FROM nodes").fetchone()[0] for s in store.segments)
        if stored != made:
            raise JournalCorrupt(f"{stored} stored tree nodes where the entries make {made}")
        return tail.frontier

    def _check_reached(self, tail: _Tail, anchors: list[Anchor], segments: list[Segment]) -> None:
        size = tail.frontier.size
        while anchors and anchors[0].tree_size == size:
            self._check_anchor_root(anchors.pop(0), tail.frontier.root())
        if segments and segments[0].hi == size:
            s = segments.pop(0)
            if s.root != tail.frontier.root() or s.chain_head != tail.chain:
                raise JournalCorrupt(f"sealed segment {s.seq} does not end in its recorded root and chain head", s.lo)

    # ------------------------------------------------------------------ indexes

    def patient_entries(
        self, patient: str, *, before: tuple[int, bytes] | None = None, limit: int = -1
    ) -> list[tuple[int, JournalEntry]]:
        """The patient's entries newest first by (release second, access hash), those below ``before``
        (a page cursor), at most ``limit`` (-1: all); each row checked as in :meth:`entries`. An index
        range scan, whatever the journal's size."""
        frontier = self._committed()
        t, access = before if before is not None else (1 << 62, b"")
        out: list[tuple[int, JournalEntry]] = []
        with self._reader() as conn, self._routed(conn) as store:
            indexes = conn.execute(
                "SELECT idx FROM by_patient WHERE patient = ? AND (time, access) < (?, ?)"
                " AND idx < ? ORDER BY time DESC, access DESC LIMIT ?",
                (_address_key(patient), t, access, frontier.size, limit),
            ).fetchall()
            for (idx,) in indexes:
                for i, blob, _leaf, _chain in self._checked_rows(store, idx, idx + 1, frontier):
                    out.append((i, JournalEntry.from_bytes(blob)))
        return out

    def requester_counts(self) -> collections.Counter[str]:
        """Journal entries per requesting institution (kept up to date at append)."""
        with self._reader() as conn:
            rows = conn.execute("SELECT requester, entries FROM requester_counts").fetchall()
        return collections.Counter({r.decode() if isinstance(r, bytes) else r: n for r, n in rows})

    # ------------------------------------------------------------------ anchoring bookkeeping

    def pending_anchor(self) -> tuple[int, bytes] | None:
        """``(size, root)`` to anchor next, or None when everything is anchored already: the end of the
        last sealed segment if it is not anchored yet (so a sealed segment's last root is on-chain; when
        several were sealed between two anchors, the earlier ones are covered by it), else the whole journal."""
        with self._tree_lock:
            frontier = self._frontier
            anchored = self._last_anchor.tree_size if self._last_anchor else 0
            segments = self._segments
        if frontier.size <= anchored:
            return None
        if segments and segments[-1].hi > anchored:
            return segments[-1].hi, segments[-1].root
        return frontier.size, frontier.root()

    def record_anchor(
        self, tree_size: int, root: bytes, tx_hash: str, block_number: int, anchored_at: int | None = None
    ) -> Anchor:
        """Durably records that ``root`` of ``tree_size`` entries was anchored on-chain.

        Refuses (``ValueError``) a size that does not grow or a root this journal does not have: a
        bookkeeping error must never make the journal vouch for a root it cannot prove.
        """
        when = int(time.time()) if anchored_at is None else anchored_at
        anchor = Anchor(tree_size, bytes(root), tx_hash, block_number, when)
        with self._anchor_lock:
            last = self._last_anchor
            if tree_size < 1 or (last is not None and tree_size <= last.tree_size):
                raise ValueError(f"tree size {tree_size} does not grow (last anchored {last.tree_size if last else 0})")
            if tree_size > self.size:
                raise ValueError(f"tree size {tree_size} > journal size {self.size}")
            if anchor.root != self.root(tree_size):
                raise ValueError(f"{anchor.root.hex()} is not the journal's root at size {tree_size}")
            with self._conn_lock:
                conn = self._conn
                if conn is None or self._error is not None:
                    raise JournalUnavailable("the journal is closed or failed")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        conn.execute("INSERT INTO anchors VALUES (?, ?, ?, ?, ?)", tuple(anchor))
                        conn.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(Exception):
                            conn.execute("ROLLBACK")
                        raise
                except sqlite3.Error as exc:
                    raise JournalUnavailable(f"cannot record the anchor: {exc!r}") from exc
            with self._tree_lock:
                self._last_anchor = anchor
                while self._commit_times and self._commit_times[0][0] <= tree_size:
                    self._commit_times.popleft()
        return anchor

    def last_anchor(self) -> Anchor | None:
        """The latest recorded anchor (a tuple: ``last_anchor()[0]`` is its tree size)."""
        return self._last_anchor

    def anchors(self) -> list[Anchor]:
        """All recorded anchors, tree size ascending."""
        with self._reader() as conn:
            return self._read_anchors(conn)

    def unanchored_since(self) -> float | None:
        """``time.monotonic()`` when the oldest unanchored entry was committed; None if all are anchored."""
        with self._tree_lock:
            anchored = self._last_anchor.tree_size if self._last_anchor else 0
            if self._frontier.size <= anchored:
                return None
            for end, when in self._commit_times:
                if end > anchored:
                    return when
            return None

    # ------------------------------------------------------------------ export and close

    def export(self, path: Path) -> int:
        """Writes the journal (format: docs/audit.md, "Export format") atomically; returns the entry count.

        Streams (constant memory): the header's chain head is read first and the streamed rows must
        chain up to it, every row is checked as in :meth:`verify_chain`, and the file only replaces
        ``path`` (rename, then directory fsync) once complete and fsynced.
        """
        path = Path(path)
        frontier = self._committed()
        size, root = frontier.size, frontier.root()
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f, self._reader() as conn, self._routed(conn) as store:
                # one snapshot for the anchors, the head and the rows (sealed segments, then the open one)
                anchors = [a for a in self._read_anchors(conn) if a.tree_size <= size]
                head = ZERO_HASH
                if size:
                    stored = store.chain_hash(size - 1)
                    if stored is None:
                        raise JournalCorrupt("entry missing", size - 1)
                    head = stored
                header = {
                    "type": "header",
                    "format": EXPORT_FORMAT,
                    "version": EXPORT_VERSION,
                    "entry_encoding": f"HCLJ/{ENTRY_VERSION}",
                    "size": size,
                    "root": _hex(root),
                    "chain_head": _hex(head),
                }
                f.write(orjson.dumps(header) + b"\n")
                chain = self._export_entries(store, f, frontier)
                if chain != head:  # cannot happen unless the file changed under the snapshot
                    raise JournalCorrupt("chain head changed during the export", size - 1)
                for a in anchors:
                    anchor = {
                        "type": "anchor",
                        "tree_size": a.tree_size,
                        "root": _hex(a.root),
                        "tx_hash": a.tx_hash,
                        "block_number": a.block_number,
                        "anchored_at": a.anchored_at,
                    }
                    f.write(orjson.dumps(anchor) + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return size

    def _export_entries(self, store: Store, f: BinaryIO, frontier: Frontier) -> bytes:
        """Writes the entry lines of the frontier's rows, each checked as in :meth:`verify_chain`;
        returns the chain hash of the last one."""
        chain = ZERO_HASH
        for idx, blob, leaf, stored_chain in self._checked_rows(store, 0, frontier.size, frontier):
            if _chain(chain, leaf) != stored_chain:
                raise JournalCorrupt("hash chain broken", idx)
            chain = stored_chain
            obj = {"type": "entry", "idx": idx, **JournalEntry.from_bytes(blob).to_json()}
            obj.update(encoded=_hex(blob), leaf_hash=_hex(leaf), chain_hash=_hex(chain))
            f.write(orjson.dumps(obj) + b"\n")
        return chain

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Commits what is already queued, stops the writer, closes the database. Idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        with self._seal_lock:
            sealer = self._sealer
        if sealer is not None:  # its file is recorded (or discarded) before the writer stops
            sealer.join()
        self._queue.put(_STOP)
        self._writer.join()
        with self._conn_lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
        self._release_lock_file()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportedJournal:
    """A checked export: every hash re-derived from the entry fields, never taken from the file."""

    size: int
    root: bytes
    entries: list[JournalEntry]
    leaf_hashes: list[bytes]
    chain_head: bytes
    anchors: list[Anchor]
    tree: MerkleTree


def _read_entry(obj: dict[str, Any], idx: int, chain: bytes) -> tuple[JournalEntry, bytes, bytes]:
    """Entry line ``idx`` of an export, checked: its fields re-encoded, its leaf hash and the hash chain
    (``chain``: the previous entry's) recomputed. Returns the entry, its leaf hash and its chain hash."""
    if obj.get("idx") != idx:
        raise JournalCorrupt("entry missing or out of place", idx)
    try:
        entry = JournalEntry.from_json(obj)
    except (KeyError, ValueError) as exc:
        raise JournalCorrupt(f"bad entry fields: {exc}", idx) from exc
    encoded = entry.to_bytes()
    if _unhex(obj["encoded"]) != encoded:
        raise JournalCorrupt("encoded bytes differ from the fields", idx)
    leaf = leaf_hash(encoded)
    if _unhex(obj["leaf_hash"]) != leaf:
        raise JournalCorrupt("wrong leaf hash", idx)
    chain = _chain(chain, leaf)
    if _unhex(obj["chain_hash"]) != chain:
        raise JournalCorrupt("hash chain broken", idx)
    return entry, leaf, chain


def read_export(path: Path) -> ExportedJournal:
    """Parses and verifies an export (what an auditor does first); raises :class:`JournalCorrupt`.

    Checks: header format and version; indexes dense from 0; each ``encoded`` equals the re-encoded
    fields; ``leaf_hash`` and ``chain_hash`` recomputed; the header's size, root and chain head;
    each anchor's root equals the recomputed root at its size and sizes grow.
    """
    entries: list[JournalEntry] = []
    leaves: list[bytes] = []
    anchors: list[Anchor] = []
    tree = MerkleTree()
    chain = ZERO_HASH
    header: dict[str, Any] | None = None
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            obj = orjson.loads(line)
            kind = obj.get("type")
            if lineno == 1:
                if kind != "header" or obj.get("format") != EXPORT_FORMAT or obj.get("version") != EXPORT_VERSION:
                    raise JournalCorrupt("not a version 1 release-journal export")
                header = obj
                continue
            if kind == "entry":
                if anchors:
                    raise JournalCorrupt("entry after anchors", obj.get("idx"))
                entry, leaf, chain = _read_entry(obj, len(entries), chain)
                entries.append(entry)
                leaves.append(leaf)
                tree.append(leaf)
            elif kind == "anchor":
                a = Anchor(
                    obj["tree_size"], _unhex(obj["root"]), obj["tx_hash"], obj["block_number"], obj["anchored_at"]
                )
                if anchors and a.tree_size <= anchors[-1].tree_size:
                    raise JournalCorrupt("anchor sizes do not grow")
                if not 1 <= a.tree_size <= tree.size or a.root != tree.root(a.tree_size):
                    raise JournalCorrupt(f"anchor at size {a.tree_size} does not match the entries")
                anchors.append(a)
            else:
                raise JournalCorrupt(f"line {lineno}: unknown record type {kind!r}")
    if header is None:
        raise JournalCorrupt("empty export")
    if header["size"] != tree.size:
        raise JournalCorrupt(f"header says {header['size']} entries, found {tree.size}", tree.size)
    if _unhex(header["root"]) != tree.root() or _unhex(header["chain_head"]) != chain:
        raise JournalCorrupt("header root or chain head does not match the entries")
    return ExportedJournal(tree.size, tree.root(), entries, leaves, chain, anchors, tree)
