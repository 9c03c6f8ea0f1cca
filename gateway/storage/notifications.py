"""Notifications at rest: the outbox of new accesses, webhook subscriptions and their pending deliveries.

``access_events`` is written by the one process that follows the journal and the read model
(:mod:`gateway.notify.feed`) and read by every process: each live stream follows it by ``seq``, so an
access is announced whichever HTTP worker released it. A delivery row exists until its webhook answered
2xx; it survives restarts, which is what makes delivery at-least-once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from gateway.storage.db import Database

__all__ = [
    "AccessEvent",
    "Delivery",
    "Subscription",
    "add_event",
    "add_subscription",
    "delivered",
    "deliveries_due",
    "events_after",
    "failed",
    "last_seq",
    "position",
    "prune",
    "remove_subscription",
    "set_position",
    "subscriptions_of",
]


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One new access as streams and webhooks carry it (``payload``: the access log's entry shape)."""

    seq: int
    patient: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    member: str
    url: str
    secret: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A pending delivery: the event, where it goes and how often it was tried."""

    subscription: Subscription
    event: AccessEvent
    attempts: int


def position(db: Database, source: str) -> int | None:
    """How far the feed has followed ``source`` (``journal``, ``chain``); ``None`` before it ever ran."""
    value = db.get_meta(f"notify_{source}")
    return None if value is None else int(value)


def set_position(conn: sqlite3.Connection, db: Database, source: str, value: int) -> None:
    db.set_meta(conn, f"notify_{source}", value)


def add_event(
    conn: sqlite3.Connection, access_id: bytes, patient: str, provider: str | None, payload: dict[str, Any]
) -> int | None:
    """Adds the access to the outbox with a delivery for each subscription of its record's provider; ``None``
    when it is there already (the feed re-reading after a crash)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO access_events (access_id, patient, provider, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (access_id, patient, provider, json.dumps(payload, separators=(",", ":")), int(time.time())),
    )
    if cur.rowcount == 0:
        return None
    seq = int(cur.lastrowid or 0)
    if provider is not None:
        conn.execute(
            "INSERT INTO webhook_deliveries (subscription, event_seq, next_at)"
            " SELECT id, ?, ? FROM webhook_subscriptions WHERE member = ?",
            (seq, time.time(), provider),
        )
    return seq


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Removes the events made before ``before`` (Unix seconds) that no delivery still waits for."""
    return conn.execute(
        "DELETE FROM access_events WHERE created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = access_events.seq)",
        (int(before),),
    ).rowcount


def _event(r: sqlite3.Row) -> AccessEvent:
    return AccessEvent(int(r["seq"]), str(r["patient"]), json.loads(r["payload"]))


def events_after(
    db: Database, seq: int, *, patient: str | None = None, upto: int | None = None, limit: int = 500
) -> list[AccessEvent]:
    """Events after ``seq`` (up to ``upto``), oldest first: every patient's (a process's one poll feeds all
    its streams), or one patient's (a stream resuming)."""
    where, args = "seq > ?", list[object]([seq])
    if patient is not None:
        where, args = where + " AND patient = ?", [*args, patient]
    if upto is not None:
        where, args = where + " AND seq <= ?", [*args, upto]
    rows = db.read().execute(f"SELECT * FROM access_events WHERE {where} ORDER BY seq LIMIT ?", (*args, limit))
    return [_event(r) for r in rows.fetchall()]


def last_seq(db: Database) -> int:
    row = db.read().execute("SELECT MAX(seq) AS seq FROM access_events").fetchone()
    return int(row["seq"] or 0)


def _subscription(r: sqlite3.Row) -> Subscription:
    return Subscription(str(r["id"]), str(r["member"]), str(r["url"]), bytes(r["secret"]), int(r["created_at"]))


def add_subscription(conn: sqlite3.Connection, sub_id: str, member: str, url: str, secret: bytes) -> Subscription:
    now = int(time.time())
    conn.execute(
        "INSERT INTO webhook_subscriptions (id, member, url, secret, created_at) VALUES (?, ?, ?, ?, ?)",
        (sub_id, member, url, secret, now),
    )
    return Subscription(sub_id, member, url, secret, now)


def subscriptions_of(db: Database, member: str) -> list[Subscription]:
    rows = db.read().execute("SELECT * FROM webhook_subscriptions WHERE member = ? ORDER BY created_at", (member,))
    return [_subscription(r) for r in rows.fetchall()]


def remove_subscription(conn: sqlite3.Connection, member: str, sub_id: str) -> bool:
    """Removes the member's subscription and its pending deliveries; ``False`` if it has none of that id."""
    return conn.execute("DELETE FROM webhook_subscriptions WHERE id = ? AND member = ?", (sub_id, member)).rowcount > 0


def deliveries_due(db: Database, now: float, *, limit: int = 50) -> list[Delivery]:
    """Deliveries whose time has come, the longest waiting first."""
    rows = db.read().execute(
        "SELECT d.attempts, s.*, e.seq, e.patient, e.payload FROM webhook_deliveries d"
        " JOIN webhook_subscriptions s ON s.id = d.subscription JOIN access_events e ON e.seq = d.event_seq"
        " WHERE d.next_at <= ? ORDER BY d.next_at LIMIT ?",
        (now, limit),
    )
    return [Delivery(_subscription(r), _event(r), int(r["attempts"])) for r in rows.fetchall()]


def delivered(conn: sqlite3.Connection, d: Delivery) -> None:
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE subscription = ? AND event_seq = ?", (d.subscription.id, d.event.seq)
    )


def failed(conn: sqlite3.Connection, d: Delivery, next_at: float, error: str) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, last_error = ?"
        " WHERE subscription = ? AND event_seq = ?",
        (next_at, error[:500], d.subscription.id, d.event.seq),
    )
