"""The per-request queries are index searches, by the plan SQLite chose, not by hope.

Each hot read is run through the real function with the connection's trace callback on; every statement
it executed is then asked ``EXPLAIN QUERY PLAN``. A full scan of a table, or the wrong index for the
discovery filter (the gateway-wide ``code`` index made ``code=`` discovery quadratic in the issue's
measurement), fails the test. The database holds enough rows that the planner has something to choose.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.journal import Journal
from gateway.storage import emergency_reasons, read_model, record_keys
from gateway.storage.db import Database
from node_client.journal_entry import JournalEntry

PATIENT, GRANTEE = "0x" + "11" * 20, "0x" + "22" * 20


def _rid(i: int) -> bytes:
    return hashlib.sha256(f"record-{i}".encode()).digest()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    db = Database(Path(tmp_path_factory.mktemp("plans")) / "gateway.db")
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO resource_index (record_id, resource_type, resource_id, code_system, code, display, date)"
            " VALUES (?, 'Observation', ?, 'http://loinc.org', ?, 'x', '2026-01-01')",
            [(_rid(i % 200), str(i), "718-7" if i % 2 else f"code-{i}") for i in range(4000)],
        )
        conn.executemany(
            "INSERT INTO chain_accesses (tx_hash, log_index, requester, patient, record_id, consent_id, purpose,"
            " emergency, access_hash, block, time) VALUES (?, 0, ?, ?, ?, ?, 1, 0, ?, ?, ?)",
            [
                (
                    f"0x{i:064x}",
                    GRANTEE,
                    PATIENT if i % 3 else GRANTEE,
                    _rid(i),
                    _rid(i),
                    _rid(-i),
                    i,
                    1_750_000_000 + i,
                )
                for i in range(2000)
            ],
        )
        conn.executemany(
            "INSERT INTO chain_records (record_id, patient, provider, category, content_hash, locator, status,"
            " gateway, block, time, tx_hash) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?)",
            [
                (
                    _rid(i),
                    PATIENT if i % 3 else GRANTEE,
                    GRANTEE,
                    i % 5,
                    _rid(i),
                    b"x",
                    GRANTEE,
                    i,
                    1_750_000_000 + i,
                    "0x",
                )
                for i in range(2000)
            ],
        )
        conn.executemany(
            "INSERT INTO record_keys (record_id, patient, provider, category, content_hash, locator, upload_id,"
            " state, size, created_at) VALUES (?, ?, ?, ?, ?, ?, 'u', 'registered', 1, 0)",
            [(_rid(i), PATIENT if i % 3 else GRANTEE, GRANTEE, i % 5, _rid(i), b"x") for i in range(2000)],
        )
    return db


HOT: dict[str, Callable[[Database], Any]] = {
    "record": lambda db: read_model.record(db, _rid(1)),
    "records_of": lambda db: read_model.records_of(db, PATIENT),
    "member": lambda db: read_model.member(db, GRANTEE),
    "consent": lambda db: read_model.consent(db, PATIENT, GRANTEE),
    "consents_of": lambda db: read_model.consents_of(db, PATIENT),
    "emergencies_of": lambda db: read_model.emergencies_of(db, PATIENT),
    "access_by_hash": lambda db: read_model.access_by_hash(db, b"\x01" * 32),
    "accesses_page": lambda db: read_model.accesses_page(db, PATIENT, before=None, limit=51),
    "accesses_page_after": lambda db: read_model.accesses_page(
        db, PATIENT, before=(1_750_000_000, b"\x05" * 32), limit=51
    ),
    "held": lambda db: record_keys.held(db, _rid(1)),
    "discoverable_page": lambda db: record_keys.discoverable_page(db, PATIENT, before=None, limit=51),
    "discoverable_page_filtered": lambda db: record_keys.discoverable_page(
        db,
        PATIENT,
        before=(1_750_000_900, _rid(900)),
        limit=51,
        categories={1, 2, 3},
        excluded={2},
        code="718-7",
        since="2025-01-01",
    ),
    "emergency_reasons_page": lambda db: emergency_reasons.openings(db, after=(1_750_000_000, b"\x05" * 32), limit=51),
    "members_page": lambda db: read_model.members_page(db, after=(5, GRANTEE), limit=51),
    "my_records_page": lambda db: read_model.records_page(db, PATIENT, before=(1_750_000_900, _rid(900)), limit=51),
    "indexed_resources": lambda db: record_keys.indexed_resources(db, _rid(1)),
    "indexed_resources_by_code": lambda db: record_keys.indexed_resources(db, _rid(1), code="718-7"),
}


def _plans(db: Database, fn: Callable[[Database], Any]) -> list[tuple[str, list[str]]]:
    conn = db.read()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        fn(db)
    finally:
        conn.set_trace_callback(None)
    return [
        (sql, [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql)])
        for sql in statements
        if sql.lstrip().upper().startswith("SELECT")
    ]


@pytest.mark.parametrize("name", sorted(HOT))
def test_a_hot_query_searches_an_index(db: Database, name: str) -> None:
    plans = _plans(db, HOT[name])
    assert plans, f"{name} ran no SELECT"
    for sql, steps in plans:
        scans = [s for s in steps if s.startswith("SCAN") and "USING" not in s]
        assert not scans, f"{name}: full scan {scans} in {sql!r}"


def test_discovery_by_code_uses_the_per_record_index(db: Database) -> None:
    ((_, steps),) = _plans(db, HOT["indexed_resources_by_code"])
    assert any("resource_index_record_code" in s for s in steps), steps


def test_an_access_log_page_needs_no_sort(db: Database) -> None:
    """Newest first straight off the (patient, time, access_hash) index: no temporary B-tree to sort a
    patient's whole history before the first page."""
    for name in ("accesses_page", "accesses_page_after"):
        ((_sql, steps),) = _plans(db, HOT[name])
        assert any("chain_accesses_patient_time" in s for s in steps), steps
        assert not [s for s in steps if "TEMP B-TREE" in s], (name, steps)


def test_a_discovery_page_needs_no_sort(db: Database) -> None:
    """Newest first straight off the (patient, time, record_id) index, whatever the filters: a page reads
    O(page) rows of the patient's records, never sorts all of them first."""
    for name in ("discoverable_page", "discoverable_page_filtered"):
        ((sql, steps),) = _plans(db, HOT[name])
        assert any("chain_records_patient_time" in s for s in steps), (name, steps)
        assert not [s for s in steps if "TEMP B-TREE" in s], (name, steps)
        if "EXISTS" in sql:
            assert any("resource_index_record_code" in s for s in steps), (name, steps)


def test_other_list_pages_need_no_sort(db: Database) -> None:
    for name, index in (
        ("emergency_reasons_page", "emergency_reasons_created"),
        ("members_page", "chain_members_since"),
        ("my_records_page", "chain_records_patient_time"),
    ):
        ((_sql, steps),) = _plans(db, HOT[name])
        assert any(index in s for s in steps), (name, steps)
        assert not [s for s in steps if "TEMP B-TREE" in s], (name, steps)


class _TracedJournal(Journal):
    """A real journal whose read connections record what they execute."""

    statements: list[str]

    def _connect(self, *, readonly: bool = False) -> Any:
        conn = super()._connect(readonly=readonly)
        if readonly:
            conn.set_trace_callback(self.statements.append)
        return conn


def test_journal_reads_search_indexes(tmp_path: Path) -> None:
    """A patient's page, a proof and a root of a past size read O(page + log n) rows by index, never the
    journal: what keeps the first access-log page fast at any history size."""
    _TracedJournal.statements = []
    with _TracedJournal(tmp_path / "journal.db", segment_entries=1000) as j:  # reads cross sealed segments
        j.append_many(
            [
                JournalEntry(
                    GRANTEE, PATIENT if i % 2 else GRANTEE, _rid(i), 1, _rid(-i), False, _rid(i), 1_750_000_000_000 + i
                )
                for i in range(3000)
            ]
        )
        deadline = time.monotonic() + 10
        while not j._segments:  # sealed by a sealer thread right after the commit
            assert time.monotonic() < deadline, "not sealed"
            time.sleep(0.01)
        j.patient_entries(PATIENT, limit=51)
        j.patient_entries(PATIENT, before=(1_750_000_001, b"\x05" * 32), limit=51)
        j.inclusion_proof(1234, 2999)
        j.consistency_proof(1000, 2999)
        j.root(2001)
        list(j.entries(10, 30))
        statements = [s for s in j.statements if s.lstrip().upper().startswith("SELECT")]
        conn = sqlite3.connect(tmp_path / "journal.db")
        assert statements
        for sql in set(statements):
            steps = [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql.replace("?", "1"))]
            assert not [s for s in steps if s.startswith("SCAN") or "TEMP B-TREE" in s], (sql, steps)
        conn.close()
