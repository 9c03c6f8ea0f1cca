"""Upload: FHIR in, encrypted records out, registered on-chain in one transaction.

Order matters for "nothing lost or half-written": every ciphertext is stored and every wrapped key is
written (state ``pending``) *before* the registration transaction, and marked ``registered`` after it.
A crash in between leaves pending rows that ``hcl gateway reconcile`` resolves against the chain; a
refused transaction removes what was written.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass

from eth_utils import is_address, to_checksum_address

from gateway.crashpoints import crashpoint
from gateway.fhir import InvalidFhir, canonical_json, group, parse
from gateway.problems import Problem
from gateway.storage.blobs import BlobStoreError, StorageFull, cid_to_str
from gateway.storage.crypto import encrypt_record
from gateway.storage.db import RecordState
from gateway.wiring import Components
from node_client._exceptions import ChainUnavailable, ContractRevert, TransactionError
from node_client.contracts import RecordInput, RecordStatus

__all__ = ["UploadResult", "UploadedRecord", "retract", "upload"]

log = logging.getLogger("hcl.gateway.uploads")


@dataclass(frozen=True, slots=True)
class UploadedRecord:
    record_id: bytes
    category: int
    resources: int
    content_hash: bytes
    locator: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadResult:
    upload_id: str
    patient: str
    provider: str
    tx_hash: str
    block_number: int
    records: list[UploadedRecord]
    ignored: list[tuple[str, str]]


def _storage_problem(exc: BlobStoreError) -> Problem:
    if isinstance(exc, StorageFull):
        return Problem("storage_full", "the record store is full; nothing was registered")
    return Problem("storage_unavailable", "the record store cannot be written; nothing was registered")


def upload(c: Components, *, provider: str, patient: str, body: bytes) -> UploadResult:
    """Validates, groups, encrypts, stores and registers the records of one upload."""
    c.policy.require_member(provider)
    if not is_address(patient):
        raise Problem("invalid_request", f"patient {patient!r} is not an Ethereum address")
    patient = to_checksum_address(patient)
    try:
        grouping = group(parse(body, max_entries=c.settings.max_bundle_entries))
    except InvalidFhir as exc:
        raise Problem(
            "invalid_fhir",
            f"{len(exc.issues)} issue(s)",
            issues=[{"path": i.path, "message": i.message} for i in exc.issues],
        ) from exc
    if not grouping.records:
        raise Problem(
            "invalid_fhir",
            "no patient health data in this upload",
            issues=[{"path": t, "message": reason} for t, reason in grouping.ignored],
        )

    upload_id = uuid.uuid4().hex
    now = int(time.time())
    written: list[tuple[bytes, bytes]] = []  # (record_id, locator) to undo on refusal
    inputs: list[RecordInput] = []
    out: list[UploadedRecord] = []
    rows = []
    index_rows = []
    try:
        for draft in grouping.records:
            record_id = secrets.token_bytes(32)
            plaintext = canonical_json(draft.bundle)
            ciphertext, data_key = encrypt_record(
                plaintext, record_id=record_id, patient=patient, category=int(draft.category)
            )
            locator = c.store.put(ciphertext)
            written.append((record_id, locator))
            if len(written) == 1:
                crashpoint("upload.after_first_blob")
            content_hash = hashlib.sha256(ciphertext).digest()
            wrapped = c.kek.wrap(data_key, record_id=record_id)
            rows.append(
                (
                    record_id,
                    patient,
                    provider,
                    int(draft.category),
                    content_hash,
                    locator,
                    wrapped,
                    c.kek.key_id,
                    upload_id,
                    RecordState.PENDING,
                    len(ciphertext),
                    now,
                )
            )
            index_rows.extend(
                (record_id, e.resource_type, e.resource_id, e.code_system, e.code, e.display, e.date)
                for e in draft.index
            )
            inputs.append(RecordInput(record_id, int(draft.category), content_hash, locator))
            out.append(
                UploadedRecord(
                    record_id, int(draft.category), len(draft.index), content_hash, cid_to_str(locator), len(ciphertext)
                )
            )
    except BlobStoreError as exc:
        _discard(c, written)
        raise _storage_problem(exc) from exc
    crashpoint("upload.after_blobs")

    try:
        _write_pending(c, rows, index_rows)
    except sqlite3.Error as exc:  # disk full, I/O error: the transaction rolled back, only blobs to undo
        _discard_blobs(c, written)
        if "full" in str(exc).lower():
            raise Problem("storage_full", "the gateway's database is full; nothing was registered") from exc
        raise Problem(
            "storage_unavailable", "the gateway's database cannot be written; nothing was registered"
        ) from exc
    crashpoint("upload.after_pending_rows")

    try:
        result = c.ledger.records.register_batch(c.gateway_account, patient, provider, inputs)
    except ChainUnavailable as exc:
        # rows stay pending: reconcile finds out whether the transaction made it
        raise Problem("chain_unavailable", "the registration could not be sent; retry later") from exc
    except ContractRevert as exc:
        _discard(c, written)
        raise Problem("chain_rejected", f"{exc.error_name}", error=exc.error_name) from exc
    except TransactionError as exc:  # sent, but no receipt (node stalled): it may still be mined
        raise Problem("chain_unavailable", "the registration's outcome is unknown; retry later") from exc
    crashpoint("upload.after_register_tx")

    with c.db.write() as conn:
        conn.execute(
            "UPDATE record_keys SET state = ?, tx_hash = ? WHERE upload_id = ?",
            (RecordState.REGISTERED, result.tx_hash, upload_id),
        )
    crashpoint("upload.after_registered")
    c.catch_up()
    c.metrics.uploads.inc(len(out))
    log.info(
        "upload registered",
        extra={"upload": upload_id, "records": len(out), "provider": provider, "tx": result.tx_hash},
    )
    return UploadResult(upload_id, patient, provider, result.tx_hash, result.block_number, out, list(grouping.ignored))


def _write_pending(c: Components, rows: list, index_rows: list) -> None:  # type: ignore[type-arg]
    """The upload's rows in state ``pending``, in one transaction, before anything is sent to the chain."""
    with c.db.write() as conn:
        conn.executemany(
            "INSERT INTO record_keys (record_id, patient, provider, category, content_hash, locator, wrapped_key,"
            " kek_id, upload_id, state, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO resource_index (record_id, resource_type, resource_id, code_system, code, display, date)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            index_rows,
        )


def _discard(c: Components, written: list[tuple[bytes, bytes]]) -> None:
    """Removes what a refused upload wrote (blobs and pending rows)."""
    ids = [rid for rid, _ in written]
    with c.db.write() as conn:
        conn.executemany("DELETE FROM resource_index WHERE record_id = ?", [(r,) for r in ids])
        conn.executemany(
            "DELETE FROM record_keys WHERE record_id = ? AND state = ?", [(r, RecordState.PENDING) for r in ids]
        )
    _discard_blobs(c, written)


def _discard_blobs(c: Components, written: list[tuple[bytes, bytes]]) -> None:
    for _, locator in written:
        try:
            c.store.delete(locator)
        except BlobStoreError:
            log.warning("could not delete an orphan blob; reconcile will", extra={"locator": cid_to_str(locator)})


def retract(c: Components, *, caller: str, record_id: bytes) -> str:
    """Erases a record: destroys its data key (crypto-shredding), retracts it on-chain, deletes the blob.

    The key goes first: once asked, the data must become unreadable even if the chain is down (the
    on-chain retraction is then retried by reconcile). Allowed to the patient and to the provider that
    uploaded the record.
    """
    row = (
        c.db.read()
        .execute("SELECT patient, provider, locator, state FROM record_keys WHERE record_id = ?", (record_id,))
        .fetchone()
    )
    if row is None:
        raise Problem("record_not_found", "no such record at this gateway")
    if caller not in (row["patient"], row["provider"]):
        raise Problem("not_patient", "only the patient or the uploading provider may retract a record")
    if row["state"] == RecordState.RETRACTED:
        raise Problem("record_retracted", "already retracted")
    with c.db.write() as conn:
        conn.execute(
            "UPDATE record_keys SET wrapped_key = NULL, state = ? WHERE record_id = ?",
            (RecordState.SHREDDED, record_id),
        )
    crashpoint("retract.after_shred")
    try:
        result = c.ledger.records.retract(c.gateway_account, record_id)
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", "the key is destroyed; the on-chain retraction will be retried") from exc
    except ContractRevert as exc:
        # a concurrent (or earlier, crashed) retraction of the same record got there first
        try:
            status = c.ledger.records.record_of(record_id).status
        except ChainUnavailable as exc2:
            raise Problem(
                "chain_unavailable", "the key is destroyed; the on-chain retraction will be retried"
            ) from exc2
        if status is not RecordStatus.RETRACTED:
            raise Problem("chain_rejected", f"{exc.error_name}", error=exc.error_name) from exc
        with c.db.write() as conn:
            conn.execute("UPDATE record_keys SET state = ? WHERE record_id = ?", (RecordState.RETRACTED, record_id))
        raise Problem("record_retracted", "already retracted") from exc
    except TransactionError as exc:  # sent, but no receipt (node stalled): reconcile finds out
        raise Problem("chain_unavailable", "the key is destroyed; the on-chain retraction will be retried") from exc
    crashpoint("retract.after_chain_retract")
    with c.db.write() as conn:
        conn.execute("UPDATE record_keys SET state = ? WHERE record_id = ?", (RecordState.RETRACTED, record_id))
    crashpoint("retract.after_retracted")
    c.catch_up()
    try:
        c.store.delete(row["locator"])
    except BlobStoreError:
        log.warning("blob of a retracted record not deleted; reconcile will", extra={"record": record_id.hex()})
    return result.tx_hash
