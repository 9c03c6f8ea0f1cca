"""Emergency reasons (``emergency_reasons``): the free text a member gave for breaking the glass.

It stays off-chain, in the gateway; the chain holds only its SHA-256 (``chain_emergency.reason_hash``).
"""

from __future__ import annotations

import sqlite3

from gateway.storage.db import Database

__all__ = ["every", "of_patient", "record"]


def record(conn: sqlite3.Connection, access_id: bytes, member: str, patient: str, reason: str) -> None:
    """Keeps ``reason`` for the emergency access ``access_id`` (replacing any kept before)."""
    conn.execute(
        "INSERT OR REPLACE INTO emergency_reasons (access_id, member, patient, reason, created_at)"
        " VALUES (?, ?, ?, ?, strftime('%s','now'))",
        (access_id, member, patient, reason),
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
