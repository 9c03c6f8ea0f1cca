"""Idempotent uploads and versions: which stored record an uploaded record repeats or amends.

Each record's own resources are kept here by keyed identity and content hash (``record_resources``):
the identity (:mod:`gateway.fhir.identity`) under HMAC-SHA256 with the gateway's index key, so that no
national ID or MRN is stored in the clear, and the SHA-256 of the resource's canonical JSON as stored.

The rule (:func:`decide`), for each record of an upload (one category), against the *current* versions
(pending or registered, not amended by a later one) of the records the same provider stored for the same
patient in that category and that share at least one resource identity with it:

Pending records count (an identical upload at the same time is thus not stored twice) while they may be
in flight (:data:`IN_FLIGHT_SECONDS`).

* every resource of the upload's record is held, with the same hash, by those records → **unchanged**:
  nothing is stored or registered;
* otherwise, if some record shares identities → **amend** the one sharing the most (the newest on a
  tie): the new version is this upload's record (a record is the set of resources of one category of one
  upload, so the new version replaces the old one's content; the old version stays readable as history);
* otherwise → a **new** record.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.storage.db import RecordState

__all__ = ["Decision", "decide", "holder_of_identity", "insert", "keyed"]

#: a pending row older than this is not an upload in flight but one a crash left for reconcile: it is
#: not taken for what the gateway holds (an upload takes at most a few RPC timeouts)
IN_FLIGHT_SECONDS = 300
_CHUNK = 500  # identities per query (SQLite's bound-parameter limit)


def keyed(key: bytes, identity: str) -> bytes:
    """The identity as stored: HMAC-SHA256 under the gateway's index key."""
    return hmac.new(key, identity.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one record of an upload: ``unchanged`` (the records holding it), or store it as a
    new record (``previous`` None) or as a new version of ``previous``."""

    unchanged: tuple[bytes, ...] = ()
    previous: bytes | None = None


def decide(
    conn: sqlite3.Connection, *, patient: str, provider: str, category: int, resources: Sequence[tuple[bytes, bytes]]
) -> Decision:
    """The :class:`Decision` for a record of ``(keyed identity, hash)`` resources (see the module docstring)."""
    held: dict[bytes, tuple[bytes, bytes]] = {}  # identity -> (record, hash)
    shared: dict[bytes, int] = {}
    newest: dict[bytes, int] = {}
    for record_id, ident, digest, created in _current(conn, patient, provider, category, [i for i, _ in resources]):
        held[ident] = (record_id, digest)
        shared[record_id] = shared.get(record_id, 0) + 1
        newest[record_id] = created
    if resources and all(held.get(i, (b"", b""))[1] == h for i, h in resources):
        return Decision(unchanged=tuple(sorted({held[i][0] for i, _ in resources})))
    if not shared:
        return Decision()
    return Decision(previous=max(shared, key=lambda r: (shared[r], newest[r])))


def _current(
    conn: sqlite3.Connection, patient: str, provider: str, category: int, identities: list[bytes]
) -> Iterable[tuple[bytes, bytes, bytes, int]]:
    """(record, identity, hash, created_at) of the current versions holding any of ``identities``."""
    for start in range(0, len(identities), _CHUNK):
        chunk = identities[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT r.record_id, r.identity, r.hash, k.created_at FROM record_resources r"
            " JOIN record_keys k ON k.record_id = r.record_id"
            f" WHERE r.identity IN ({marks}) AND k.patient = ? AND k.provider = ? AND k.category = ?"
            f" AND {_live('k')} AND NOT {_superseded('k')}",
            (*chunk, patient, provider, category, *_live_args(), *_superseded_args()),
        ).fetchall()
        yield from ((bytes(r[0]), bytes(r[1]), bytes(r[2]), int(r[3])) for r in rows)


def _live(t: str) -> str:
    """SQL: row ``t`` of ``record_keys`` is registered, or pending and possibly in flight."""
    return f"({t}.state = ? OR ({t}.state = ? AND {t}.created_at >= ?))"


def _live_args() -> tuple[str, str, int]:
    return (RecordState.REGISTERED, RecordState.PENDING, int(time.time()) - IN_FLIGHT_SECONDS)


def _superseded(t: str) -> str:
    """SQL: record ``t`` has a later version (even one retracted since: on chain it stays ``Amended``, so it
    cannot be amended again), unless that version is a pending row a crash left behind."""
    return (
        f"EXISTS (SELECT 1 FROM record_keys n WHERE n.previous_id = {t}.record_id"
        " AND NOT (n.state = ? AND n.created_at < ?))"
    )


def _superseded_args() -> tuple[str, int]:
    return (RecordState.PENDING, int(time.time()) - IN_FLIGHT_SECONDS)


def holder_of_identity(conn: sqlite3.Connection, *, patient: str, identity: bytes) -> bytes | None:
    """A current record of ``patient`` at this gateway (any provider) holding a resource of that keyed
    identity: what a conditional create (``ifNoneExist``) asks."""
    row = conn.execute(
        "SELECT r.record_id FROM record_resources r JOIN record_keys k ON k.record_id = r.record_id"
        f" WHERE r.identity = ? AND k.patient = ? AND {_live('k')} AND NOT {_superseded('k')} LIMIT 1",
        (identity, patient, *_live_args(), *_superseded_args()),
    ).fetchone()
    return None if row is None else bytes(row[0])


def insert(conn: sqlite3.Connection, record_id: bytes, resources: Iterable[tuple[bytes, bytes]]) -> None:
    """The record's resources (keyed identity, hash); a resource sent twice in one upload counts once."""
    conn.executemany(
        "INSERT OR REPLACE INTO record_resources (record_id, identity, hash) VALUES (?, ?, ?)",
        [(record_id, i, h) for i, h in resources],
    )
