"""Emergency reasons (``emergency_reasons``): the free text a member gave for breaking the glass.

It stays off-chain, in the gateway, with the salt of its commitment; the chain holds only the commitment
(``chain_emergency.reason_hash``, :func:`node_client.commitments.reason_commitment`). Reasons kept before
salting have no salt: their commitment is the bare SHA-256 of the text.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.storage.db import Database

__all__ = ["Opening", "every", "of_patient", "openings", "record"]


def record(conn: sqlite3.Connection, access_id: bytes, member: str, patient: str, reason: str, salt: bytes) -> None:
    """Keeps ``reason`` and its ``salt`` for the emergency access ``access_id`` (replacing any kept before)."""
    conn.execute(
        "INSERT OR REPLACE INTO emergency_reasons (access_id, member, patient, reason, salt, created_at)"
        " VALUES (?, ?, ?, ?, ?, strftime('%s','now'))",
        (access_id, member, patient, reason, salt),
    )


def of_patient(db: Database, patient: str) -> dict[bytes, str]:
    """Access id → reason, of the patient's emergency accesses."""
    return {
        bytes(r["access_id"]): str(r["reason"])
        for r in db.read().execute("SELECT access_id, reason FROM emergency_reasons WHERE patient = ?", (patient,))
    }


def every(db: Database) -> dict[bytes, str]:
    """Access id → reason, of every emergency access the gateway kept a reason for."""
    return {
        bytes(r["access_id"]): str(r["reason"])
        for r in db.read().execute("SELECT access_id, reason FROM emergency_reasons")
    }


@dataclass(frozen=True, slots=True)
class Opening:
    """What an auditor needs to check an emergency access's ``reasonHash``: the text and its salt."""

    access_id: bytes
    member: str
    patient: str
    reason: str
    salt: bytes | None  # None: kept before salting (a bare SHA-256)
    created_at: int  # unix seconds: with the access id, its place in the list


def openings(db: Database, *, after: tuple[int, bytes] | None = None, limit: int = -1) -> list[Opening]:
    """The reasons this gateway kept, with their salts, oldest first by (created_at, access id): all, or at
    most ``limit`` strictly after ``after`` (one range of the (created_at, access_id) index)."""
    t, access = after if after is not None else (-1, b"")
    rows = db.read().execute(
        "SELECT access_id, member, patient, reason, salt, created_at FROM emergency_reasons"
        " WHERE (created_at, access_id) > (?, ?) ORDER BY created_at, access_id LIMIT ?",
        (t, access, limit),
    )
    return [
        Opening(
            bytes(r["access_id"]),
            str(r["member"]),
            str(r["patient"]),
            str(r["reason"]),
            None if r["salt"] is None else bytes(r["salt"]),
            int(r["created_at"]),
        )
        for r in rows
    ]
