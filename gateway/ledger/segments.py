"""The release journal in segments: sealed, read-only files of a contiguous index range, one Merkle tree.

Segments are a storage layout, not separate trees: a sealed file ``<stem>-000001.db`` holds the rows
``[lo, hi)`` and every interior node whose subtree lies inside that range; nodes spanning a boundary stay
in the open database. The open database keeps the manifest (``segments`` table: range, last chain hash,
the root at ``hi``, the file's SHA-256 and size), so any ``(height, j)`` node or row is found by its
index range alone (:class:`Store`). Layout and crash safety: docs/audit.md, "Segments".
"""

from __future__ import annotations

import bisect
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = ["Segment", "Store", "drop_sealed", "file_digest", "segment_path", "stray_files", "write_segment"]

#: rows per read: bounded memory for scans, few enough statements for speed
CHUNK = 8192

_FILE_SCHEMA = (
    "CREATE TABLE seg.entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL, leaf_hash BLOB NOT NULL,"
    " chain_hash BLOB NOT NULL)",
    "CREATE TABLE seg.nodes (height INTEGER NOT NULL, j INTEGER NOT NULL, hash BLOB NOT NULL,"
    " PRIMARY KEY (height, j)) WITHOUT ROWID",
    "CREATE TABLE seg.segment (lo INTEGER NOT NULL, hi INTEGER NOT NULL, chain_head BLOB NOT NULL, root BLOB NOT NULL)",
)


class Segment(NamedTuple):
    """A manifest row: sealed entries ``[lo, hi)`` in file ``seq``; ``root`` is MTH of entries ``[0, hi)``."""

    seq: int
    lo: int
    hi: int
    chain_head: bytes
    root: bytes
    sha256: bytes
    bytes: int
    sealed_at: int


def segment_path(journal: Path, seq: int) -> Path:
    """``journal.db`` -> ``journal-000001.db`` in the same folder (the archive layout)."""
    return journal.with_name(f"{journal.stem}-{seq:06d}{journal.suffix}")


def stray_files(journal: Path, last_seq: int) -> list[Path]:
    """Segment files no manifest row names (a rotation killed before its commit) and temporary files:
    their rows are still in the open database, so they are safe to delete."""
    out = []
    for p in journal.parent.glob(f"{journal.stem}-*{journal.suffix}*"):
        name = p.name.removeprefix(f"{journal.stem}-")
        number = name.split(".", 1)[0]
        if number.isdigit() and (p.name.endswith(".tmp") or int(number) > last_seq):
            out.append(p)
    return out


def file_digest(path: Path) -> tuple[bytes, int]:
    """SHA-256 and size of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.digest(), size


def _node_ranges(lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
    """``(height, first j, end j)`` of the interior nodes whose subtree lies inside ``[lo, hi)``."""
    for height in range(1, hi.bit_length() + 1):
        first, end = -(-lo >> height), hi >> height
        if first < end:
            yield height, first, end


def write_segment(conn: sqlite3.Connection, tmp: Path, lo: int, hi: int, chain_head: bytes, root: bytes) -> None:
    """Copies rows ``[lo, hi)`` and the nodes inside that range from ``conn``'s main database into a new
    file ``tmp``, then fsyncs it. SQLite copies (no row passes through Python); the caller renames."""
    tmp.unlink(missing_ok=True)
    conn.execute("ATTACH DATABASE ? AS seg", (str(tmp),))
    try:
        conn.execute("PRAGMA seg.journal_mode=OFF")  # written once, discarded if anything fails
        for statement in _FILE_SCHEMA:
            conn.execute(statement)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO seg.entries SELECT * FROM main.entries WHERE idx >= ? AND idx < ?", (lo, hi))
        for height, first, end in _node_ranges(lo, hi):
            conn.execute(
                "INSERT INTO seg.nodes SELECT height, j, hash FROM main.nodes WHERE height = ? AND j >= ? AND j < ?",
                (height, first, end),
            )
        conn.execute("INSERT INTO seg.segment VALUES (?, ?, ?, ?)", (lo, hi, chain_head, root))
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("DETACH DATABASE seg")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_sealed(conn: sqlite3.Connection, lo: int, hi: int) -> None:
    """Deletes the sealed range's rows and inner nodes from the open database (caller's transaction)."""
    conn.execute("DELETE FROM entries WHERE idx >= ? AND idx < ?", (lo, hi))
    for height, first, end in _node_ranges(lo, hi):
        conn.execute("DELETE FROM nodes WHERE height = ? AND j >= ? AND j < ?", (height, first, end))


class Store:
    """Reads of rows and tree nodes, each sent to where it lives: a sealed file or the open database.

    Built from the manifest in ``conn``'s snapshot (so a rotation committing meanwhile cannot move rows
    under it); sealed files are opened read-only on first use. ``reads`` counts rows and nodes read
    from sealed files (what start-up must keep near zero).
    """

    def __init__(self, conn: sqlite3.Connection, segments: list[Segment], journal: Path) -> None:
        self.conn = conn
        self.segments = segments
        self.sealed_end = segments[-1].hi if segments else 0
        self.reads = 0
        self._his = [s.hi for s in segments]
        self._journal = journal
        self._files: dict[int, sqlite3.Connection] = {}

    def db(self, lo: int, hi: int) -> sqlite3.Connection:
        """The database holding rows / nodes of ``[lo, hi)``: a sealed file if one holds all of it."""
        if hi <= self.sealed_end:
            s = self.segments[bisect.bisect_right(self._his, lo)]
            if s.lo <= lo and hi <= s.hi:
                return self.file(s)
        return self.conn

    def chunk_end(self, lo: int, hi: int) -> int:
        """Where a scan chunk from ``lo`` must stop: at ``hi``, CHUNK rows or the end of ``lo``'s segment."""
        end = min(hi, lo + CHUNK)
        if lo < self.sealed_end:
            end = min(end, self.segments[bisect.bisect_right(self._his, lo)].hi)
        return end

    def file(self, s: Segment) -> sqlite3.Connection:
        conn = self._files.get(s.seq)
        if conn is None:
            path = segment_path(self._journal, s.seq)
            if not path.exists():
                raise FileNotFoundError(f"sealed segment {path} is missing")
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            conn.text_factory = bytes
            self._files[s.seq] = conn
        return conn

    def fetch(self, conn: sqlite3.Connection, sql: str, params: tuple[int, ...]) -> list[tuple]:  # type: ignore[type-arg]
        rows = conn.execute(sql, params).fetchall()
        if conn is not self.conn:
            self.reads += len(rows)
        return rows

    def node(self, height: int, j: int) -> bytes | None:
        """The stored hash of node ``(height, j)`` (height 0: a row's leaf hash), or None if absent."""
        conn = self.db(j << height, (j + 1) << height)
        if height == 0:
            rows = self.fetch(conn, "SELECT leaf_hash FROM entries WHERE idx = ?", (j,))
        else:
            rows = self.fetch(conn, "SELECT hash FROM nodes WHERE height = ? AND j = ?", (height, j))
        return rows[0][0] if rows and isinstance(rows[0][0], bytes) else None

    def chain_hash(self, idx: int) -> bytes | None:
        rows = self.fetch(self.db(idx, idx + 1), "SELECT chain_hash FROM entries WHERE idx = ?", (idx,))
        return rows[0][0] if rows and isinstance(rows[0][0], bytes) else None

    def close(self) -> None:
        for conn in self._files.values():
            conn.close()
        self._files.clear()
