"""Replication's two tables: this gateway's records still to be pinned by peer gateways
(``replication_queue``, durable so a restart loses nothing and retried with backoff), and the other
institutions' ciphertexts this gateway pins for them (``replicas``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.storage.db import Database

__all__ = [
    "Backlog",
    "Replica",
    "backlog",
    "done",
    "due",
    "enqueue",
    "record_replica",
    "replicas",
    "retry_later",
]


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the queue holds: how many records, since when, and why the last attempt failed."""

    records: int
    oldest_queued_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Replica:
    """Another gateway's record whose ciphertext this gateway pins."""

    record_id: bytes
    holder: str
    locator: bytes
    pinned_at: int


def enqueue(conn: sqlite3.Connection, record_ids: Sequence[bytes], now: float) -> None:
    """Queues records for replication, due at once (a record already queued keeps its place)."""
    conn.executemany(
        "INSERT OR IGNORE INTO replication_queue (record_id, attempts, next_at, queued_at) VALUES (?, 0, ?, ?)",
        [(rid, now, now) for rid in record_ids],
    )


def due(db: Database, now: float, limit: int) -> list[bytes]:
    """The queued records whose next attempt is due, oldest first."""
    rows = db.read().execute(
        "SELECT record_id FROM replication_queue WHERE next_at <= ? ORDER BY queued_at LIMIT ?", (now, limit)
    )
    return [bytes(r["record_id"]) for r in rows]


def done(conn: sqlite3.Connection, record_ids: Sequence[bytes]) -> None:
    """Forgets records every chosen peer has pinned."""
    conn.executemany("DELETE FROM replication_queue WHERE record_id = ?", [(rid,) for rid in record_ids])


def retry_later(conn: sqlite3.Connection, failed: Mapping[bytes, str], now: float, *, max_backoff: float) -> None:
    """Puts failed records back with exponential backoff (1 s, 2 s, 4 s … up to ``max_backoff``)."""
    conn.executemany(
        "UPDATE replication_queue SET attempts = attempts + 1, last_error = ?,"
        " next_at = ? + MIN(?, 1 << MIN(attempts, 20)) WHERE record_id = ?",
        [(error[:500], now, max_backoff, rid) for rid, error in failed.items()],
    )


def backlog(db: Database) -> Backlog:
    """The queue's size, its oldest entry and the most recent failure (for /healthz and the gauge)."""
    conn = db.read()
    row = conn.execute("SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM replication_queue").fetchone()
    err = conn.execute(
        "SELECT last_error FROM replication_queue WHERE last_error IS NOT NULL ORDER BY next_at DESC LIMIT 1"
    ).fetchone()
    oldest = row["oldest"]
    return Backlog(int(row["n"]), None if oldest is None else float(oldest), None if err is None else str(err[0]))


def record_replica(conn: sqlite3.Connection, record_id: bytes, holder: str, locator: bytes, now: int) -> None:
    """Remembers that this gateway pins ``holder``'s record (asking again refreshes ``pinned_at``)."""
    conn.execute(
        "INSERT INTO replicas (record_id, holder, locator, pinned_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (record_id) DO UPDATE SET pinned_at = excluded.pinned_at",
        (record_id, holder, locator, now),
    )


def replicas(db: Database, holder: str | None = None) -> list[Replica]:
    """The replicas this gateway pins (of one holder's records, if given), oldest first."""
    rows = db.read().execute(
        "SELECT * FROM replicas WHERE ? IS NULL OR holder = ? ORDER BY pinned_at, record_id", (holder, holder)
    )
    return [Replica(bytes(r["record_id"]), str(r["holder"]), bytes(r["locator"]), int(r["pinned_at"])) for r in rows]
