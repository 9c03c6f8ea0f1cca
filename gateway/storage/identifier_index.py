"""The identifier lookup index: from a patient's identifier to her address, keyed so it holds no identifier.

Each ``identifiers`` record an upload stores adds its Patient's identifiers (``system|value``, phone numbers
as digits: :func:`gateway.fhir.identity.lookup_keys`) as HMAC-SHA256 under the gateway's index key, with the
patient and the record. The key is a gateway secret (``index.key`` in the data directory, 0600), never
logged and never on chain: without it a stolen database does not confirm a guessed national ID. Who may use
the index, and how a lookup is ledgered: :mod:`gateway.services.lookup`.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterable
from hashlib import sha256

from gateway.storage.db import Database, RecordState

__all__ = ["digest", "insert", "records_of"]


def digest(key: bytes, normalised: str) -> bytes:
    """The index's key for a normalised ``system|value`` (domain-separated from the resource identities)."""
    return hmac.new(key, b"lookup|" + normalised.encode(), sha256).digest()


def insert(conn: sqlite3.Connection, record_id: bytes, patient: str, digests: Iterable[bytes]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO identifier_index (digest, patient, record_id) VALUES (?, ?, ?)",
        [(d, patient, record_id) for d in digests],
    )


def records_of(db: Database, key: bytes) -> list[tuple[str, bytes]]:
    """(patient, identifiers record) for an index key: registered records not amended by a registered later
    version (a changed identifier stops finding the patient once the new version is registered)."""
    rows = (
        db.read()
        .execute(
            "SELECT i.patient, i.record_id FROM identifier_index i JOIN record_keys k ON k.record_id = i.record_id"
            " WHERE i.digest = ? AND k.state = ? AND NOT EXISTS (SELECT 1 FROM record_keys n"
            " WHERE n.previous_id = k.record_id AND n.state = ?) ORDER BY k.created_at DESC",
            (key, RecordState.REGISTERED, RecordState.REGISTERED),
        )
        .fetchall()
    )
    return [(str(r[0]), bytes(r[1])) for r in rows]
