"""Queries of the read model: the ``chain_*`` tables that :mod:`gateway.ledger.indexer` keeps from
contract events (it alone writes them, as it applies each event).

The one place their queries live, each answering typed rows. Status columns keep the read model's
text (``active``, ``revoked``, …: :func:`~gateway.storage.db.status_text`) except a member's, which
is its :class:`~node_client.contracts.MemberStatus`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.storage.db import Database
from node_client.contracts import Member, MemberStatus

__all__ = [
    "ChainAccess",
    "ChainConsent",
    "ChainConsentEvent",
    "ChainCounts",
    "ChainEmergency",
    "ChainGuardian",
    "ChainRecord",
    "PatientAccess",
    "access_by_hash",
    "access_counts",
    "accesses_after",
    "accesses_of",
    "active_members",
    "anchor_block",
    "consent",
    "consent_events_of",
    "consents_of",
    "counts",
    "emergencies",
    "emergencies_of",
    "guardians_of",
    "last_access_row",
    "member",
    "member_addresses",
    "members_page",
    "opted_out",
    "record",
    "record_categories_of",
    "records_of",
    "wards_of",
]


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """``chain_records``: a registration (``status``: active, amended or retracted)."""

    record_id: bytes
    patient: str
    provider: str
    category: int
    content_hash: bytes
    locator: bytes
    status: str
    gateway: str
    block: int
    time: int
    tx_hash: str


@dataclass(frozen=True, slots=True)
class ChainConsent:
    """``chain_consents``: the consent in force from a patient to a grantee (``status``: active or revoked)."""

    patient: str
    grantee: str
    consent_id: bytes
    categories: int
    purposes: int
    valid_from: int
    valid_until: int
    status: str
    signer: str
    block: int
    tx_hash: str


@dataclass(frozen=True, slots=True)
class ChainConsentEvent:
    """``chain_consent_events``: one grant or revocation (a revocation has no terms)."""

    consent_id: bytes
    kind: str  # granted | revoked
    patient: str
    grantee: str
    categories: int | None
    purposes: int | None
    valid_from: int | None
    valid_until: int | None
    signer: str
    block: int
    time: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True, slots=True)
class ChainAccess:
    """``chain_accesses``: one ``AccessLogged`` (a strict-mode release)."""

    tx_hash: str
    log_index: int
    requester: str
    patient: str
    record_id: bytes
    consent_id: bytes
    purpose: int
    emergency: bool
    access_hash: bytes
    block: int
    time: int


@dataclass(frozen=True, slots=True)
class PatientAccess(ChainAccess):
    """An access with its record's category (``None`` when the read model does not know the record)."""

    category: int | None


@dataclass(frozen=True, slots=True)
class ChainEmergency:
    """``chain_emergency``: one break-glass window."""

    access_id: bytes
    patient: str
    member: str
    categories: int
    valid_until: int
    reason_hash: bytes
    block: int
    time: int
    tx_hash: str


@dataclass(frozen=True, slots=True)
class ChainGuardian:
    """``chain_guardians``: a guardian of a patient, until ``valid_until``."""

    patient: str
    guardian: str
    valid_until: int


@dataclass(frozen=True, slots=True)
class ChainCounts:
    """How much the read model holds: active members, grants ever made, records, accesses, anchors."""

    active_members: int
    consents_granted: int
    records: int
    accesses: int
    anchors: int


# ---------------------------------------------------------------------------------------- members


def _member(r: sqlite3.Row) -> Member:
    return Member(
        str(r["address"]),
        MemberStatus(r["status"]),
        int(r["roles"]),
        int(r["since_block"]),
        bytes(r["encryption_key"]),
        bytes(r["metadata_hash"]),
    )


def member(db: Database, address: str) -> Member | None:
    """The member as the read model has it, or ``None`` if it was never added."""
    row = db.read().execute("SELECT * FROM chain_members WHERE address = ?", (address,)).fetchone()
    return None if row is None else _member(row)


def members_page(db: Database, *, after: tuple[int, str] | None, limit: int) -> list[Member]:
    """At most ``limit`` of every member ever added, in the order they were (``since`` block, then address),
    after ``after`` ((since block, address)): one range of the (since_block, address) index."""
    block, address = after if after is not None else (-1, "")
    rows = db.read().execute(
        "SELECT * FROM chain_members WHERE (since_block, address) > (?, ?) ORDER BY since_block, address LIMIT ?",
        (block, address, limit),
    )
    return [_member(r) for r in rows.fetchall()]


def active_members(db: Database) -> list[Member]:
    """The active members, in the order they were added (``since`` block)."""
    rows = db.read().execute(
        "SELECT * FROM chain_members WHERE status = ? ORDER BY since_block", (int(MemberStatus.ACTIVE),)
    )
    return [_member(r) for r in rows.fetchall()]


def member_addresses(db: Database) -> list[str]:
    return [str(r["address"]) for r in db.read().execute("SELECT address FROM chain_members")]


# ---------------------------------------------------------------------------------------- guardians and opt-outs


def guardians_of(db: Database, patient: str) -> list[ChainGuardian]:
    """The patient's guardians (expired ones included), by address."""
    rows = db.read().execute(
        "SELECT patient, guardian, valid_until FROM chain_guardians WHERE patient = ? ORDER BY guardian", (patient,)
    )
    return [ChainGuardian(str(r["patient"]), str(r["guardian"]), int(r["valid_until"])) for r in rows.fetchall()]


def wards_of(db: Database, guardian: str) -> list[ChainGuardian]:
    """The patients whose guardian ``guardian`` is or was, by address."""
    rows = db.read().execute(
        "SELECT patient, guardian, valid_until FROM chain_guardians WHERE guardian = ? ORDER BY patient", (guardian,)
    )
    return [ChainGuardian(str(r["patient"]), str(r["guardian"]), int(r["valid_until"])) for r in rows.fetchall()]


def opted_out(db: Database, patient: str) -> bool:
    """Whether the patient has opted out of emergency access (``False`` if they never said)."""
    row = db.read().execute("SELECT opted_out FROM chain_optouts WHERE patient = ?", (patient,)).fetchone()
    return row is not None and bool(row["opted_out"])


# ---------------------------------------------------------------------------------------- records


def _record(r: sqlite3.Row) -> ChainRecord:
    return ChainRecord(
        bytes(r["record_id"]),
        str(r["patient"]),
        str(r["provider"]),
        int(r["category"]),
        bytes(r["content_hash"]),
        bytes(r["locator"]),
        str(r["status"]),
        str(r["gateway"]),
        int(r["block"]),
        int(r["time"]),
        str(r["tx_hash"]),
    )


def record(db: Database, record_id: bytes) -> ChainRecord | None:
    row = db.read().execute("SELECT * FROM chain_records WHERE record_id = ?", (record_id,)).fetchone()
    return None if row is None else _record(row)


def records_of(db: Database, patient: str) -> list[ChainRecord]:
    """The patient's records, newest block first."""
    rows = db.read().execute("SELECT * FROM chain_records WHERE patient = ? ORDER BY block DESC", (patient,))
    return [_record(r) for r in rows.fetchall()]


def records_page(db: Database, patient: str, *, before: tuple[int, bytes] | None, limit: int) -> list[ChainRecord]:
    """At most ``limit`` of the patient's records newest first by (time, record id), below ``before``: one
    range of the (patient, time, record_id) index, whatever her history."""
    time, record = before if before is not None else (1 << 62, b"")
    rows = db.read().execute(
        "SELECT * FROM chain_records WHERE patient = ? AND (time, record_id) < (?, ?)"
        " ORDER BY time DESC, record_id DESC LIMIT ?",
        (patient, time, record, limit),
    )
    return [_record(r) for r in rows.fetchall()]


def record_categories_of(db: Database, patient: str) -> dict[bytes, int]:
    """Record id → category, of the patient's records."""
    return {
        bytes(r["record_id"]): int(r["category"])
        for r in db.read().execute("SELECT record_id, category FROM chain_records WHERE patient = ?", (patient,))
    }


# ---------------------------------------------------------------------------------------- consents


def _consent(r: sqlite3.Row) -> ChainConsent:
    return ChainConsent(
        str(r["patient"]),
        str(r["grantee"]),
        bytes(r["consent_id"]),
        int(r["categories"]),
        int(r["purposes"]),
        int(r["valid_from"]),
        int(r["valid_until"]),
        str(r["status"]),
        str(r["signer"]),
        int(r["block"]),
        str(r["tx_hash"]),
    )


def consent(db: Database, patient: str, grantee: str) -> ChainConsent | None:
    """The consent from ``patient`` to ``grantee`` (the latest granted, possibly revoked since)."""
    row = (
        db.read()
        .execute("SELECT * FROM chain_consents WHERE patient = ? AND grantee = ?", (patient, grantee))
        .fetchone()
    )
    return None if row is None else _consent(row)


def consents_of(db: Database, patient: str) -> list[ChainConsent]:
    """The patient's consents, one per grantee."""
    return [_consent(r) for r in db.read().execute("SELECT * FROM chain_consents WHERE patient = ?", (patient,))]


def _optional_int(value: int | None) -> int | None:
    return None if value is None else int(value)


def consent_events_of(db: Database, patient: str) -> list[ChainConsentEvent]:
    """The patient's grants and revocations, oldest first."""
    rows = db.read().execute(
        "SELECT * FROM chain_consent_events WHERE patient = ? ORDER BY block, log_index", (patient,)
    )
    return [
        ChainConsentEvent(
            bytes(r["consent_id"]),
            str(r["kind"]),
            str(r["patient"]),
            str(r["grantee"]),
            _optional_int(r["categories"]),
            _optional_int(r["purposes"]),
            _optional_int(r["valid_from"]),
            _optional_int(r["valid_until"]),
            str(r["signer"]),
            int(r["block"]),
            int(r["time"]),
            str(r["tx_hash"]),
            int(r["log_index"]),
        )
        for r in rows.fetchall()
    ]


# ---------------------------------------------------------------------------------------- accesses


def _access_fields(r: sqlite3.Row) -> tuple[str, int, str, str, bytes, bytes, int, bool, bytes, int, int]:
    return (
        str(r["tx_hash"]),
        int(r["log_index"]),
        str(r["requester"]),
        str(r["patient"]),
        bytes(r["record_id"]),
        bytes(r["consent_id"]),
        int(r["purpose"]),
        bool(r["emergency"]),
        bytes(r["access_hash"]),
        int(r["block"]),
        int(r["time"]),
    )


def access_by_hash(db: Database, access_hash: bytes) -> ChainAccess | None:
    row = db.read().execute("SELECT * FROM chain_accesses WHERE access_hash = ?", (access_hash,)).fetchone()
    return None if row is None else ChainAccess(*_access_fields(row))


def accesses_of(db: Database, patient: str) -> list[PatientAccess]:
    """The patient's strict-mode accesses, newest first, each with its record's category."""
    rows = db.read().execute(
        "SELECT a.*, r.category FROM chain_accesses a LEFT JOIN chain_records r ON r.record_id = a.record_id"
        " WHERE a.patient = ? ORDER BY a.block DESC, a.log_index DESC",
        (patient,),
    )
    return [PatientAccess(*_access_fields(r), category=_optional_int(r["category"])) for r in rows.fetchall()]


def accesses_page(db: Database, patient: str, *, before: tuple[int, bytes] | None, limit: int) -> list[PatientAccess]:
    """At most ``limit`` of the patient's strict-mode accesses below ``before`` ((time, access hash)),
    newest first: one range of the (patient, time, access_hash) index, however long the history."""
    t, access = before if before is not None else (1 << 62, b"")
    rows = db.read().execute(
        "SELECT a.*, r.category FROM chain_accesses a LEFT JOIN chain_records r ON r.record_id = a.record_id"
        " WHERE a.patient = ? AND (a.time, a.access_hash) < (?, ?)"
        " ORDER BY a.time DESC, a.access_hash DESC LIMIT ?",
        (patient, t, access, limit),
    )
    return [PatientAccess(*_access_fields(r), category=_optional_int(r["category"])) for r in rows.fetchall()]


def accesses_after(db: Database, rowid: int, *, limit: int = 500) -> list[tuple[int, PatientAccess]]:
    """Strict-mode accesses indexed after row ``rowid``, in the order they were indexed (the notification
    feed follows them); ``rowid`` 0: from the first."""
    rows = db.read().execute(
        "SELECT a.rowid AS n, a.*, r.category FROM chain_accesses a LEFT JOIN chain_records r"
        " ON r.record_id = a.record_id WHERE a.rowid > ? ORDER BY a.rowid LIMIT ?",
        (rowid, limit),
    )
    return [
        (int(r["n"]), PatientAccess(*_access_fields(r), category=_optional_int(r["category"]))) for r in rows.fetchall()
    ]


def last_access_row(db: Database) -> int:
    """The row of the last strict-mode access indexed (0: none)."""
    return int(db.read().execute("SELECT MAX(rowid) FROM chain_accesses").fetchone()[0] or 0)


def access_counts(db: Database) -> dict[str, int]:
    """Requester → number of its strict-mode accesses."""
    rows = db.read().execute("SELECT requester, COUNT(*) AS n FROM chain_accesses GROUP BY requester")
    return {str(r["requester"]): int(r["n"]) for r in rows.fetchall()}


def _emergency(r: sqlite3.Row) -> ChainEmergency:
    return ChainEmergency(
        bytes(r["access_id"]),
        str(r["patient"]),
        str(r["member"]),
        int(r["categories"]),
        int(r["valid_until"]),
        bytes(r["reason_hash"]),
        int(r["block"]),
        int(r["time"]),
        str(r["tx_hash"]),
    )


def emergencies_of(db: Database, patient: str) -> list[ChainEmergency]:
    """The patient's break-glass windows, newest block first."""
    rows = db.read().execute("SELECT * FROM chain_emergency WHERE patient = ? ORDER BY block DESC", (patient,))
    return [_emergency(r) for r in rows.fetchall()]


def emergencies(db: Database) -> list[ChainEmergency]:
    """Every break-glass window, newest block first."""
    return [_emergency(r) for r in db.read().execute("SELECT * FROM chain_emergency ORDER BY block DESC").fetchall()]


# ---------------------------------------------------------------------------------------- totals


def counts(db: Database) -> ChainCounts:
    """The read model's totals (the auditor's overview)."""
    row = (
        db.read()
        .execute(
            "SELECT (SELECT COUNT(*) FROM chain_members WHERE status = ?) AS active_members,"
            " (SELECT COUNT(*) FROM chain_consent_events WHERE kind = 'granted') AS consents_granted,"
            " (SELECT COUNT(*) FROM chain_records) AS records,"
            " (SELECT COUNT(*) FROM chain_accesses) AS accesses,"
            " (SELECT COUNT(*) FROM chain_anchors) AS anchors",
            (int(MemberStatus.ACTIVE),),
        )
        .fetchone()
    )
    return ChainCounts(
        int(row["active_members"]),
        int(row["consents_granted"]),
        int(row["records"]),
        int(row["accesses"]),
        int(row["anchors"]),
    )


#: every table the indexer derives from the chain (and nothing else: the gateway's own rows stay)
CHAIN_TABLES = (
    "chain_members",
    "chain_consents",
    "chain_consent_events",
    "chain_guardians",
    "chain_optouts",
    "chain_emergency",
    "chain_records",
    "chain_accesses",
    "chain_anchors",
)


def clear(conn: sqlite3.Connection) -> None:
    """Empties the read model (inside the caller's write transaction), to rebuild it after a reorganisation."""
    for table in CHAIN_TABLES:
        conn.execute(f"DELETE FROM {table}")  # table names: the constants above


def anchor_block(db: Database, gateway: str, root: bytes, tree_size: int) -> int | None:
    """The block in which ``gateway`` anchored ``root`` over ``tree_size`` entries, or ``None`` if it never did."""
    row = (
        db.read()
        .execute(
            "SELECT block FROM chain_anchors WHERE gateway = ? AND root = ? AND tree_size = ?",
            (gateway, root, tree_size),
        )
        .fetchone()
    )
    return None if row is None else int(row["block"])
