"""The gateway's SQLite database: its own state and its index of the chain.

Two kinds of tables live here:

* gateway-owned state the chain must never see: wrapped data keys, the per-resource discovery index,
  sign-in nonces, emergency reasons (free text), auditors' reviews of emergency accesses;
* ``chain_*`` tables, a read model rebuilt from contract events by :mod:`gateway.ledger.indexer`. They can be
  dropped and rebuilt from the chain at any time; the chain stays the source of truth.

SQLite runs in WAL mode so request threads read while the indexer writes. One connection per thread.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node_client.contracts import ConsentStatus, RecordStatus

__all__ = ["Database", "RecordState", "record_status", "status_text"]


class RecordState(enum.StrEnum):
    """``record_keys.state``: where this gateway is with a record it stored (see ``hcl gateway reconcile``)."""

    PENDING = "pending"  # ciphertext stored, key written; the registration is not confirmed yet
    REGISTERED = "registered"  # registered on-chain: releasable
    SHREDDED = "shredded"  # data key destroyed; the on-chain retraction is not confirmed yet
    RETRACTED = "retracted"  # data key destroyed and the record retracted on-chain
    MISSING_BLOB = "missing_blob"  # registered, but its ciphertext is not in the store (reconcile found it)


def status_text(status: ConsentStatus | RecordStatus) -> str:
    """How the read model stores a consent's or a record's on-chain status: ``active``, ``revoked``,
    ``amended``, ``retracted`` (the enum's name in lower case)."""
    return status.name.lower()


def record_status(text: str) -> RecordStatus:
    """The :class:`RecordStatus` a ``chain_records.status`` stands for."""
    return RecordStatus[text.upper()]


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS record_keys (
    record_id    BLOB PRIMARY KEY,
    patient      TEXT NOT NULL,
    provider     TEXT NOT NULL,
    category     INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    locator      BLOB NOT NULL,
    wrapped_key  BLOB,              -- NULL once crypto-shredded
    kek_id       TEXT,
    upload_id    TEXT NOT NULL,
    state        TEXT NOT NULL,     -- RecordState: pending | registered | shredded | retracted | missing_blob
    tx_hash      TEXT,
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    previous_id  BLOB               -- the record this one amends (a new version of it); NULL: a first version
);
CREATE INDEX IF NOT EXISTS record_keys_patient ON record_keys (patient);
CREATE INDEX IF NOT EXISTS record_keys_state ON record_keys (state);

CREATE TABLE IF NOT EXISTS resource_index (
    record_id     BLOB NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    code_system   TEXT,
    code          TEXT,
    display       TEXT,
    date          TEXT
);
-- every query is of one record (optionally one code): one index serves both; a gateway-wide index on
-- code alone was what SQLite picked for ``record_id = ? AND code = ?`` (discovery with code= went
-- through every row of that code at the gateway, per record)
DROP INDEX IF EXISTS resource_index_record;
DROP INDEX IF EXISTS resource_index_code;
CREATE INDEX IF NOT EXISTS resource_index_record_code ON resource_index (record_id, code);

-- the resources each record holds, for idempotent uploads and versions (gateway.storage.versions): the
-- identity is keyed with the gateway's index key, so no identifier is stored in the clear
CREATE TABLE IF NOT EXISTS record_resources (
    record_id BLOB NOT NULL,
    identity  BLOB NOT NULL,        -- HMAC-SHA256(index key, gateway.fhir.identity.identity(resource))
    hash      BLOB NOT NULL,        -- SHA-256 of the resource's canonical JSON as stored in the record
    PRIMARY KEY (record_id, identity)
);
CREATE INDEX IF NOT EXISTS record_resources_identity ON record_resources (identity);

-- find a patient by an identifier (gateway.storage.identifier_index): keyed, never the identifier itself
CREATE TABLE IF NOT EXISTS identifier_index (
    digest    BLOB NOT NULL,        -- HMAC-SHA256(index key, "lookup|" + normalised "system|value")
    patient   TEXT NOT NULL,
    record_id BLOB NOT NULL,        -- the identifiers record that holds it
    PRIMARY KEY (digest, record_id)
);

-- patients' category keys, wrapped under the KEK (gateway/storage/category_keys.py)
CREATE TABLE IF NOT EXISTS category_keys (
    patient    TEXT PRIMARY KEY,     -- lower-case 0x address
    wrapped    BLOB NOT NULL,        -- Kek.wrap(key, record_id=SHA-256(tag || patient))
    learned_at INTEGER NOT NULL,
    signature  BLOB                  -- her signature that makes it, wrapped alike under another tag (what a
                                     -- guardian is handed); NULL: learned before it was kept
);

CREATE TABLE IF NOT EXISTS nonces (
    nonce      TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    message    TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

-- gateway-to-gateway request nonces, kept until the request could no longer be accepted (federation)
CREATE TABLE IF NOT EXISTS peer_nonces (
    gateway    TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (gateway, nonce)
);

-- replication (IPFS store): this gateway's records still to be pinned by peer gateways, retried with backoff
CREATE TABLE IF NOT EXISTS replication_queue (
    record_id  BLOB PRIMARY KEY,
    attempts   INTEGER NOT NULL,
    next_at    REAL NOT NULL,     -- unix seconds of the next attempt
    last_error TEXT,
    queued_at  REAL NOT NULL
);

-- replication: other institutions' ciphertexts this gateway pins (verified against the chain's contentHash)
CREATE TABLE IF NOT EXISTS replicas (
    record_id BLOB PRIMARY KEY,
    holder    TEXT NOT NULL,      -- the gateway that registered the record and asked for the replica
    locator   BLOB NOT NULL,
    pinned_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS emergency_reasons (
    access_id  BLOB PRIMARY KEY,
    member     TEXT NOT NULL,
    patient    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    salt       BLOB,              -- of the reason's commitment on chain; NULL: kept before salting
    created_at INTEGER NOT NULL
);
-- GET /v1/emergency-reasons pages oldest first by (created_at, access_id)
CREATE INDEX IF NOT EXISTS emergency_reasons_created ON emergency_reasons (created_at, access_id);

-- auditors' signed reviews of emergency accesses, in order and hash-chained (gateway/storage/emergency_reviews.py)
CREATE TABLE IF NOT EXISTS emergency_reviews (
    idx         INTEGER PRIMARY KEY,   -- 0, 1, ...: the Merkle leaf index
    access_id   BLOB NOT NULL,
    reviewer    TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    note        TEXT NOT NULL,
    note_hash   BLOB NOT NULL,
    reviewed_at INTEGER NOT NULL,
    signature   BLOB NOT NULL,
    leaf_hash   BLOB NOT NULL,
    chain_hash  BLOB NOT NULL,
    UNIQUE (access_id, reviewer)
);

-- the reviews' Merkle roots this gateway anchored (AccessLedger.anchorReviews)
CREATE TABLE IF NOT EXISTS emergency_review_anchors (
    size    INTEGER PRIMARY KEY,
    root    BLOB NOT NULL,
    tx_hash TEXT NOT NULL,
    block   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS chain_members (
    address        TEXT PRIMARY KEY,
    status         INTEGER NOT NULL,  -- MemberStatus: 1 active | 2 suspended | 3 removed
    roles          INTEGER NOT NULL,  -- Role bits
    encryption_key BLOB NOT NULL,
    metadata_hash  BLOB NOT NULL,
    since_block    INTEGER NOT NULL
);
-- GET /v1/members pages by (since_block, address): the order members were added in
CREATE INDEX IF NOT EXISTS chain_members_since ON chain_members (since_block, address);

CREATE TABLE IF NOT EXISTS chain_consents (
    patient     TEXT NOT NULL,
    grantee     TEXT NOT NULL,
    consent_id  BLOB NOT NULL,
    categories  INTEGER NOT NULL,
    purposes    INTEGER NOT NULL,
    valid_from  INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    status      TEXT NOT NULL,      -- status_text(ConsentStatus): active | revoked
    signer      TEXT NOT NULL,
    block       INTEGER NOT NULL,
    tx_hash     TEXT NOT NULL,
    PRIMARY KEY (patient, grantee)
);

CREATE TABLE IF NOT EXISTS chain_consent_events (
    consent_id  BLOB NOT NULL,
    kind        TEXT NOT NULL,      -- granted | revoked
    patient     TEXT NOT NULL,
    grantee     TEXT NOT NULL,
    categories  INTEGER,
    purposes    INTEGER,
    valid_from  INTEGER,
    valid_until INTEGER,
    signer      TEXT NOT NULL,
    block       INTEGER NOT NULL,
    time        INTEGER NOT NULL,
    tx_hash     TEXT NOT NULL,
    log_index   INTEGER NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS chain_consent_events_patient ON chain_consent_events (patient);

CREATE TABLE IF NOT EXISTS chain_guardians (
    patient     TEXT NOT NULL,
    guardian    TEXT NOT NULL,
    valid_until INTEGER NOT NULL,
    PRIMARY KEY (patient, guardian)
);
CREATE INDEX IF NOT EXISTS chain_guardians_by_guardian ON chain_guardians (guardian);  -- a guardian's wards

CREATE TABLE IF NOT EXISTS chain_optouts (
    patient   TEXT PRIMARY KEY,
    opted_out INTEGER NOT NULL,
    block     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS chain_emergency (
    access_id   BLOB PRIMARY KEY,
    patient     TEXT NOT NULL,
    member      TEXT NOT NULL,
    categories  INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    reason_hash BLOB NOT NULL,
    block       INTEGER NOT NULL,
    time        INTEGER NOT NULL,
    tx_hash     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chain_emergency_patient ON chain_emergency (patient);

CREATE TABLE IF NOT EXISTS chain_records (
    record_id    BLOB PRIMARY KEY,
    patient      TEXT NOT NULL,
    provider     TEXT NOT NULL,
    category     INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    locator      BLOB NOT NULL,
    status       TEXT NOT NULL,     -- status_text(RecordStatus): active | amended | retracted
    gateway      TEXT NOT NULL,
    block        INTEGER NOT NULL,
    time         INTEGER NOT NULL,
    tx_hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chain_records_patient ON chain_records (patient);
-- discovery pages a patient's records newest first by (time, record_id): one range of this index per page
CREATE INDEX IF NOT EXISTS chain_records_patient_time ON chain_records (patient, time, record_id);

CREATE TABLE IF NOT EXISTS chain_accesses (
    tx_hash     TEXT NOT NULL,
    log_index   INTEGER NOT NULL,
    requester   TEXT NOT NULL,
    patient     TEXT NOT NULL,
    record_id   BLOB NOT NULL,
    consent_id  BLOB NOT NULL,
    purpose     INTEGER NOT NULL,
    emergency   INTEGER NOT NULL,
    access_hash BLOB NOT NULL,
    block       INTEGER NOT NULL,
    time        INTEGER NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS chain_accesses_patient ON chain_accesses (patient);
CREATE INDEX IF NOT EXISTS chain_accesses_hash ON chain_accesses (access_hash);
CREATE INDEX IF NOT EXISTS chain_accesses_patient_time ON chain_accesses (patient, time, access_hash);

CREATE TABLE IF NOT EXISTS chain_anchors (
    gateway     TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    root        BLOB NOT NULL,
    tree_size   INTEGER NOT NULL,
    anchored_at INTEGER NOT NULL,
    block       INTEGER NOT NULL,
    tx_hash     TEXT NOT NULL,
    PRIMARY KEY (gateway, idx)
);

-- notifications (gateway/storage/notifications.py): the outbox of new accesses, written by the one process
-- that follows the journal and the read model, read by every process (live streams, webhooks)
CREATE TABLE IF NOT EXISTS access_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    access_id  BLOB NOT NULL UNIQUE,
    patient    TEXT NOT NULL,
    provider   TEXT,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_events_patient ON access_events (patient, seq);
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id         TEXT PRIMARY KEY,
    member     TEXT NOT NULL,
    url        TEXT NOT NULL,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_member ON webhook_subscriptions (member);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    subscription TEXT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_seq    INTEGER NOT NULL REFERENCES access_events (seq),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    last_error   TEXT,
    PRIMARY KEY (subscription, event_seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at);
"""


#: (table, column, declaration) of columns added since their table shipped (see ``Database._add_columns``)
ADDED_COLUMNS = (
    ("emergency_reasons", "salt", "BLOB"),
    ("record_keys", "previous_id", "BLOB"),
    ("category_keys", "signature", "BLOB"),
)


class Database:
    """SQLite in WAL mode with a connection per thread.

    ``read()`` gives a connection for queries; ``write()`` a transaction that commits on success and
    rolls back on error, serialised by a process-wide lock so writers never see ``database is locked``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        with self._write_lock:
            self._conn().executescript(SCHEMA)  # executescript manages its own transaction
            self._add_columns()

    def _add_columns(self) -> None:
        """Columns added to tables after they first shipped: a database made before gets them, empty."""
        conn = self._conn()
        for table, column, decl in ADDED_COLUMNS:
            if column not in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def read(self) -> sqlite3.Connection:
        return self._conn()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.read().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, conn: sqlite3.Connection, key: str, value: int | str) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    def check(self) -> None:
        """Raises sqlite3.Error if the database cannot be read."""
        self.read().execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()
