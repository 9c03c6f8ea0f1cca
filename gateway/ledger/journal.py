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
from gateway.storage.fs import fsync_dir
from node_client.journal_entry import ENTRY_SIZE, ENTRY_VERSION, JournalEntry
from node_client.journal_entry import unhex as _unhex
from node_client.merkle import MerkleTree, leaf_hash

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
SCHEMA_VERSION = 1

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
"""


class _Request:
    """One caller's append: its encoded entries, their leaf hashes and the future of their indexes."""

    __slots__ = ("blobs", "future", "leaves")

    def __init__(self, blobs: list[bytes], leaves: list[bytes]) -> None:
        self.blobs = blobs
        self.leaves = leaves
        self.future: Future[list[int]] = Future()


class _Stop(enum.Enum):
    """What :meth:`Journal.close` queues after the last request: the writer stops there."""

    STOP = enum.auto()


_STOP: Final = _Stop.STOP


class Journal:
    """The durable release journal (docs/audit.md, "The release journal"). Thread-safe.

    Opening loads every row, re-derives each leaf hash from the stored entry, checks the hash chain
    and the recorded anchors, and builds the in-memory Merkle tree: O(n), a few seconds per million
    rows, and ~64 bytes of memory per entry for the tree. Then every root and proof is O(log n) from
    memory. (At a sustained 2,000 releases/s that is 7 M entries an hour: a journal meant to run for
    long at that rate needs epochs/rotation, which this version does not do.)
    """

    def __init__(self, path: Path, *, batch_max: int = 512, batch_wait_ms: float = 2.0) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be >= 1")
        if batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must be >= 0")
        self.path = Path(path)
        self.batch_max = batch_max
        self.batch_wait = batch_wait_ms / 1000.0
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
        self._queue: queue.SimpleQueue[_Request | _Stop] = queue.SimpleQueue()
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
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
        if created:  # the new database (and its WAL) must survive a crash as directory entries too
            fsync_dir(self.path.parent)
        self._tree = MerkleTree()
        self._chain_head = ZERO_HASH
        self._last_anchor: Anchor | None = None
        self._load()

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
        """Rebuilds the tree from disk, verifying every row, then checks the recorded anchors."""
        assert self._conn is not None
        expected = 0
        chain = ZERO_HASH
        tree = self._tree
        chunk: list[bytes] = []
        sha = _sha256
        rows = self._conn.execute("SELECT idx, entry, leaf_hash, chain_hash FROM entries ORDER BY idx")
        for idx, blob, leaf, stored_chain in rows:
            # the fast check inline (this loop is the cost of opening); _check_row names the fault
            if (
                idx != expected
                or type(blob) is not bytes
                or sha(b"\x00" + blob).digest() != leaf
                or sha(chain + leaf).digest() != stored_chain
            ):
                self._check_row(expected, idx, blob, leaf, stored_chain, chain)
            chain = stored_chain
            chunk.append(leaf)
            expected += 1
            if len(chunk) == 65536:
                tree.extend(chunk)
                chunk.clear()
        tree.extend(chunk)
        self._chain_head = chain
        anchors = self._read_anchors(self._conn)
        previous = 0
        for a in anchors:
            if a.tree_size <= previous:
                raise JournalCorrupt("anchor tree sizes do not increase")
            previous = a.tree_size
            if a.tree_size > tree.size:
                raise JournalCorrupt(
                    f"an anchor covers {a.tree_size} entries but the journal has {tree.size}", tree.size
                )
            if a.root != tree.root(a.tree_size):
                raise JournalCorrupt(f"the entries do not hash to the root anchored at size {a.tree_size}")
        self._last_anchor = anchors[-1] if anchors else None
        anchored = self._last_anchor.tree_size if self._last_anchor else 0
        if tree.size > anchored:
            # unanchored rows from a previous run: age them by their release time (wall clock)
            row = self._conn.execute("SELECT entry FROM entries WHERE idx = ?", (anchored,)).fetchone()
            age = max(0.0, time.time() - JournalEntry.from_bytes(bytes(row[0])).released_at / 1000)
            self._commit_times.append((tree.size, time.monotonic() - age))

    @staticmethod
    def _check_row(expected: int, idx: int, blob: bytes, leaf: bytes, stored_chain: bytes, chain: bytes) -> None:
        if idx != expected:
            raise JournalCorrupt("entry missing or out of place" if idx > expected else "bad index", expected)
        if not isinstance(blob, bytes) or leaf_hash(blob) != leaf:
            raise JournalCorrupt("entry does not match its leaf hash", idx)
        if _chain(chain, leaf) != stored_chain:
            raise JournalCorrupt("hash chain broken", idx)

    @staticmethod
    def _read_anchors(conn: sqlite3.Connection) -> list[Anchor]:
        rows = conn.execute(
            "SELECT tree_size, root, tx_hash, block_number, anchored_at FROM anchors ORDER BY tree_size"
        ).fetchall()
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
        req = _Request(blobs, [leaf_hash(b) for b in blobs])
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
                if not item.future.set_running_or_notify_cancel():
                    continue  # its caller gave up before we started: not written, not reported
                batch = [item]
                count = len(item.blobs)
                stop = False
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
                    # RUNNING from here: a late cancel() fails, so the result is always deliverable
                    if item.future.set_running_or_notify_cancel():
                        batch.append(item)
                        count += len(item.blobs)
                previous_requests = len(batch)
                if not self._commit(batch) or stop:
                    return
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.exception("journal writer crashed")
            self._fail(exc, [r for r in batch if not r.future.done()])

    def _commit(self, batch: list[_Request]) -> bool:
        idx = self._tree.size
        chain = self._chain_head
        rows: list[tuple[int, bytes, bytes, bytes]] = []
        firsts: list[int] = []
        for req in batch:
            firsts.append(idx)
            for blob, leaf in zip(req.blobs, req.leaves, strict=True):
                chain = _chain(chain, leaf)
                rows.append((idx, blob, leaf, chain))
                idx += 1
        try:
            with self._conn_lock:
                conn = self._conn
                if conn is None:
                    raise JournalUnavailable("the journal is closed")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO entries (idx, entry, leaf_hash, chain_hash) VALUES (?, ?, ?, ?)", rows
                    )
                    crashpoint("journal.before_commit")
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise
        except BaseException as exc:  # noqa: BLE001 - the writer fails the whole journal on any error (fail closed), then re-raises to waiters
            log.error("journal write failed; the journal is now unavailable: %r", exc)
            self._fail(exc, batch)
            return False
        crashpoint("journal.after_commit")
        now = time.monotonic()
        with self._tree_lock:
            for row in rows:
                self._tree.append(row[2])
            self._chain_head = chain
            self._commit_times.append((idx, now))
        self.commits += 1
        self.appended += len(rows)
        self.max_batch = max(self.max_batch, len(rows))
        for req, first in zip(batch, firsts, strict=True):
            req.future.set_result(list(range(first, first + len(req.blobs))))
        for listener in list(self._listeners):
            try:
                listener(idx)
            except Exception:
                log.exception("journal commit listener failed")
        return True

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
            if item is not _STOP:
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
        return self._tree.size

    @property
    def available(self) -> bool:
        """False once closed or failed."""
        return self._error is None and not self._closed

    @property
    def error(self) -> BaseException | None:
        """Why the journal became unavailable, if it did."""
        return self._error

    def root(self, size: int | None = None) -> bytes:
        with self._tree_lock:
            return self._tree.root(size)

    def leaf_hash(self, idx: int) -> bytes:
        with self._tree_lock:
            return self._tree.leaf(idx)

    def inclusion_proof(self, idx: int, size: int | None = None) -> list[bytes]:
        with self._tree_lock:
            return self._tree.inclusion_proof(idx, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        with self._tree_lock:
            return self._tree.consistency_proof(old_size, new_size)

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

        Each row is checked against the in-memory tree (verified at open, extended only by our own
        commits), so a row altered on disk since is reported as :class:`JournalCorrupt`.
        """
        size = self.size
        stop = size if stop is None else min(stop, size)
        start = max(start, 0)
        if start >= stop:
            return
        with self._reader() as conn:
            expected = start
            for idx, blob, _leaf in conn.execute(
                "SELECT idx, entry, leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop)
            ):
                leaf = self._tree.leaf(expected)
                if idx != expected:
                    raise JournalCorrupt("entry missing or out of place", expected)
                if not isinstance(blob, bytes) or leaf_hash(blob) != leaf:
                    raise JournalCorrupt("entry changed on disk", idx)
                try:
                    entry = JournalEntry.from_bytes(blob)
                except ValueError as exc:  # a valid leaf hash over an invalid encoding: never written by us
                    raise JournalCorrupt(f"entry does not decode: {exc}", idx) from exc
                yield idx, entry, leaf
                expected += 1
            if expected != stop:
                raise JournalCorrupt("entry missing", expected)

    def verify_chain(self, start: int = 0) -> None:
        """Re-reads rows ``start..size`` from disk and checks them; raises :class:`JournalCorrupt`.

        Each row must hash to its leaf, chain from the previous row's stored ``chain_hash``, and agree
        with the in-memory tree. ``start > 0`` trusts row ``start - 1``'s chain hash (checked earlier).
        """
        size = self.size
        if not 0 <= start <= size:
            raise ValueError(f"start {start} not in 0..{size}")
        with self._reader() as conn:
            chain = ZERO_HASH
            if start > 0:
                row = conn.execute("SELECT chain_hash FROM entries WHERE idx = ?", (start - 1,)).fetchone()
                if row is None or not isinstance(row[0], bytes):
                    raise JournalCorrupt("entry missing", start - 1)
                chain = row[0]
            expected = start
            rows = conn.execute(
                "SELECT idx, entry, leaf_hash, chain_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, size),
            )
            for idx, blob, leaf, stored_chain in rows:
                self._check_row(expected, idx, blob, leaf, stored_chain, chain)
                if leaf != self._tree.leaf(idx):
                    raise JournalCorrupt("entry differs from the one committed", idx)
                chain = stored_chain
                expected += 1
            if expected != size:
                raise JournalCorrupt("entry missing", expected)

    # ------------------------------------------------------------------ anchoring bookkeeping

    def pending_anchor(self) -> tuple[int, bytes] | None:
        """``(size, root)`` to anchor next, or None when everything is anchored already."""
        with self._tree_lock:
            size = self._tree.size
            anchored = self._last_anchor.tree_size if self._last_anchor else 0
            if size <= anchored:
                return None
            return size, self._tree.root(size)

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
            if self._tree.size <= anchored:
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
        with self._tree_lock:
            size = self._tree.size
            root = self._tree.root(size)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f, self._reader() as conn:
                conn.execute("BEGIN")  # one snapshot for the anchors, the head and the rows
                anchors = [a for a in self._read_anchors(conn) if a.tree_size <= size]
                head = ZERO_HASH
                if size:
                    row = conn.execute("SELECT chain_hash FROM entries WHERE idx = ?", (size - 1,)).fetchone()
                    if row is None:
                        raise JournalCorrupt("entry missing", size - 1)
                    head = bytes(row[0])
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
                chain = self._export_entries(conn, f, size)
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
                conn.execute("COMMIT")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return size

    def _export_entries(self, conn: sqlite3.Connection, f: BinaryIO, size: int) -> bytes:
        """Writes the entry lines of the first ``size`` rows, each checked as in :meth:`verify_chain` and
        against the tree; returns the chain hash of the last one."""
        chain = ZERO_HASH
        expected = 0
        for idx, blob, leaf, stored_chain in conn.execute(
            "SELECT idx, entry, leaf_hash, chain_hash FROM entries WHERE idx < ? ORDER BY idx", (size,)
        ):
            self._check_row(expected, idx, blob, leaf, stored_chain, chain)
            if leaf != self._tree.leaf(idx):
                raise JournalCorrupt("entry differs from the one committed", idx)
            chain = stored_chain
            obj = {"type": "entry", "idx": idx, **JournalEntry.from_bytes(blob).to_json()}
            obj.update(encoded=_hex(blob), leaf_hash=_hex(leaf), chain_hash=_hex(chain))
            f.write(orjson.dumps(obj) + b"\n")
            expected += 1
        if expected != size:
            raise JournalCorrupt("entry missing", expected)
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
