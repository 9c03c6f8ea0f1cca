"""The records this gateway holds: their wrapped data keys and states (``record_keys``) and the
per-resource discovery index (``resource_index``).

The one place their SQL lives. Writes take the connection of a transaction the caller opened with
:meth:`~gateway.storage.db.Database.write` (so an upload's rows are written, or undone, together);
reads take the :class:`~gateway.storage.db.Database`. A row's ``state`` is a :class:`RecordState` value.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from gateway.storage.db import Database, RecordState, status_text
from node_client.contracts import RecordStatus

__all__ = [
    "DiscoverableRecord",
    "HeldRecord",
    "IndexRow",
    "KeyState",
    "NewRecordKey",
    "ResourceRef",
    "delete_pending",
    "discoverable_page",
    "held",
    "indexed_resources",
    "insert_pending",
    "mark_registered",
    "set_state",
    "shred",
    "states",
]


@dataclass(frozen=True, slots=True)
class NewRecordKey:
    """One record of an upload, written ``pending`` before its registration."""

    record_id: bytes
    patient: str
    provider: str
    category: int
    content_hash: bytes
    locator: bytes
    wrapped_key: bytes
    kek_id: str
    upload_id: str
    size: int
    created_at: int
    previous_id: bytes | None = None  # the record this one amends (gateway.storage.versions)


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One FHIR resource of a record, for discovery (``GET /v1/patients/{address}/records``)."""

    record_id: bytes
    resource_type: str
    resource_id: str | None
    code_system: str | None
    code: str | None
    display: str | None
    date: str | None


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """What this gateway keeps of one record: who may retract it, where its ciphertext is, its key."""

    patient: str
    provider: str
    locator: bytes
    state: str
    wrapped_key: bytes | None  # None once crypto-shredded


@dataclass(frozen=True, slots=True)
class KeyState:
    """A ``record_keys`` row as ``hcl gateway reconcile`` surveys it."""

    record_id: bytes
    upload_id: str
    state: str
    locator: bytes


@dataclass(frozen=True, slots=True)
class DiscoverableRecord:
    """A registered, not retracted record of a patient that this gateway holds."""

    record_id: bytes
    category: int
    provider: str
    time: int
    block: int
    tx_hash: str
    status: str = "active"  # on chain: active, or amended (a later version replaces it)
    previous: bytes | None = None  # the record this one amends


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A resource of the discovery index, as a discovering member sees it."""

    resource_type: str
    code_system: str | None
    code: str | None
    display: str | None
    date: str | None


# ---------------------------------------------------------------------------------------- writes


def insert_pending(conn: sqlite3.Connection, keys: Sequence[NewRecordKey], index: Sequence[IndexRow]) -> None:
    """An upload's keys (state ``pending``) and its discovery index."""
    conn.executemany(
        "INSERT INTO record_keys (record_id, patient, provider, category, content_hash, locator, wrapped_key,"
        " kek_id, upload_id, state, size, created_at, previous_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                k.record_id,
                k.patient,
                k.provider,
                k.category,
                k.content_hash,
                k.locator,
                k.wrapped_key,
                k.kek_id,
                k.upload_id,
                RecordState.PENDING,
                k.size,
                k.created_at,
                k.previous_id,
            )
            for k in keys
        ],
    )
    conn.executemany(
        "INSERT INTO resource_index (record_id, resource_type, resource_id, code_system, code, display, date)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(i.record_id, i.resource_type, i.resource_id, i.code_system, i.code, i.display, i.date) for i in index],
    )


def mark_registered(conn: sqlite3.Connection, registrations: Iterable[tuple[bytes, str | None]]) -> None:
    """``(record_id, tx_hash)``: each of these records, if still pending, is registered (by ``tx_hash``)."""
    conn.executemany(
        "UPDATE record_keys SET state = ?, tx_hash = ? WHERE record_id = ? AND state = ?",
        [(RecordState.REGISTERED, tx_hash, record_id, RecordState.PENDING) for record_id, tx_hash in registrations],
    )


def delete_pending(conn: sqlite3.Connection, record_ids: Sequence[bytes]) -> None:
    """Forgets these records' index entries, and their keys while still pending (an upload undone)."""
    conn.executemany("DELETE FROM resource_index WHERE record_id = ?", [(r,) for r in record_ids])
    conn.executemany("DELETE FROM record_resources WHERE record_id = ?", [(r,) for r in record_ids])
    conn.executemany("DELETE FROM identifier_index WHERE record_id = ?", [(r,) for r in record_ids])
    conn.executemany(
        "DELETE FROM record_keys WHERE record_id = ? AND state = ?", [(r, RecordState.PENDING) for r in record_ids]
    )


def shred(conn: sqlite3.Connection, record_id: bytes) -> None:
    """Destroys the record's wrapped data key (crypto-shredding): state ``shredded``."""
    conn.execute(
        "UPDATE record_keys SET wrapped_key = NULL, state = ? WHERE record_id = ?",
        (RecordState.SHREDDED, record_id),
    )


def set_state(conn: sqlite3.Connection, record_id: bytes, state: RecordState) -> None:
    conn.execute("UPDATE record_keys SET state = ? WHERE record_id = ?", (state, record_id))


# ---------------------------------------------------------------------------------------- reads


def held(db: Database, record_id: bytes) -> HeldRecord | None:
    """This gateway's row of the record, or ``None`` if it never stored it."""
    row = (
        db.read()
        .execute(
            "SELECT patient, provider, locator, state, wrapped_key FROM record_keys WHERE record_id = ?", (record_id,)
        )
        .fetchone()
    )
    if row is None:
        return None
    wrapped = row["wrapped_key"]
    return HeldRecord(
        str(row["patient"]),
        str(row["provider"]),
        bytes(row["locator"]),
        str(row["state"]),
        None if wrapped is None else bytes(wrapped),
    )


def states(db: Database) -> list[KeyState]:
    """Every row's record id, upload, state and locator."""
    return [
        KeyState(bytes(r["record_id"]), str(r["upload_id"]), str(r["state"]), bytes(r["locator"]))
        for r in db.read().execute("SELECT record_id, upload_id, state, locator FROM record_keys").fetchall()
    ]


def discoverable_page(
    db: Database,
    patient: str,
    *,
    before: tuple[int, bytes] | None,
    limit: int,
    categories: Collection[int] | None = None,
    excluded: Collection[int] = (),
    code: str | None = None,
    since: str | None = None,
) -> list[DiscoverableRecord]:
    """At most ``limit`` of the patient's records registered through this gateway and not retracted, newest
    first by (time, record id), strictly below ``before``: only ``categories`` (if given), none of
    ``excluded``, and with ``code``/``since`` only records with such a resource. One range of the
    (patient, time, record_id) index, however many records."""
    t, rid = before if before is not None else (1 << 62, b"")
    q = (
        "SELECT r.record_id, r.category, r.provider, r.time, r.block, r.tx_hash, r.status, k.previous_id"
        " FROM chain_records r"
        " JOIN record_keys k ON k.record_id = r.record_id AND k.state = ?"
        " WHERE r.patient = ? AND r.status != ? AND (r.time, r.record_id) < (?, ?)"
    )
    args: list[object] = [RecordState.REGISTERED, patient, status_text(RecordStatus.RETRACTED), t, rid]
    if categories is not None:
        q += f" AND r.category IN ({','.join('?' * len(categories))})"
        args += sorted(categories)
    if excluded:
        q += f" AND r.category NOT IN ({','.join('?' * len(excluded))})"
        args += sorted(excluded)
    if code or since:
        q += " AND EXISTS (SELECT 1 FROM resource_index i WHERE i.record_id = r.record_id"
        if code:
            q += " AND i.code = ?"
            args.append(code)
        if since:
            q += " AND i.date >= ?"
            args.append(since)
        q += ")"
    q += " ORDER BY r.time DESC, r.record_id DESC LIMIT ?"
    args.append(limit)
    return [
        DiscoverableRecord(
            bytes(r["record_id"]),
            int(r["category"]),
            str(r["provider"]),
            int(r["time"]),
            int(r["block"]),
            str(r["tx_hash"]),
            str(r["status"]),
            None if r["previous_id"] is None else bytes(r["previous_id"]),
        )
        for r in db.read().execute(q, args).fetchall()
    ]


def indexed_resources(
    db: Database, record_id: bytes, *, code: str | None = None, since: str | None = None
) -> list[ResourceRef]:
    """The record's indexed resources; with ``code``, those of that code; with ``since`` (an ISO date),
    those dated on or after it."""
    q = "SELECT resource_type, code_system, code, display, date FROM resource_index WHERE record_id = ?"
    args: list[bytes | str] = [record_id]
    if code:
        q += " AND code = ?"
        args.append(code)
    if since:
        q += " AND date >= ?"
        args.append(since)
    return [
        ResourceRef(r["resource_type"], r["code_system"], r["code"], r["display"], r["date"])
        for r in db.read().execute(q, args).fetchall()
    ]
