"""Upload: FHIR in, encrypted records out, registered on-chain in one transaction.

Order matters for "nothing lost or half-written": every ciphertext is stored and every wrapped key is
written (state ``pending``) *before* the registration transaction, and marked ``registered`` after it.
A crash in between leaves pending rows that ``hcl gateway reconcile`` resolves against the chain; a
refused transaction removes what was written. With the IPFS store, the registered records are queued for
replication on peer gateways in the same transaction (:mod:`gateway.federation.replication`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass, field

from eth_utils import is_address, to_checksum_address

from gateway import errors
from gateway.crashpoints import crashpoint
from gateway.fhir import RecordDraft, canonical_json, group, parse
from gateway.storage import record_keys, replicas
from gateway.storage.blobs import BlobStoreError, StorageFull, cid_to_str
from gateway.storage.crypto import encrypt_record
from gateway.storage.db import RecordState
from gateway.wiring import Components
from node_client._client import TxResult
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


def _storage_error(exc: BlobStoreError) -> errors.DomainError:
    if isinstance(exc, StorageFull):
        return errors.StorageFull("the record store is full; nothing was registered")
    return errors.StorageUnavailable("the record store cannot be written; nothing was registered")


@dataclass(slots=True)
class _Written:
    """What an upload has written before its registration: to register, to answer with, or to undo."""

    upload_id: str
    patient: str
    provider: str
    created_at: int
    blobs: list[tuple[bytes, bytes]] = field(default_factory=list)  # (record_id, locator) to undo on refusal
    inputs: list[RecordInput] = field(default_factory=list)
    out: list[UploadedRecord] = field(default_factory=list)
    keys: list[record_keys.NewRecordKey] = field(default_factory=list)
    index: list[record_keys.IndexRow] = field(default_factory=list)


def upload(c: Components, *, provider: str, patient: str, body: bytes) -> UploadResult:
    """Validates, groups, encrypts, stores and registers the records of one upload (FHIR that is not
    acceptable: :class:`gateway.fhir.InvalidFhir`, with every issue)."""
    c.policy.require_member(provider)
    if not is_address(patient):
        raise errors.InvalidRequest(f"patient {patient!r} is not an Ethereum address")
    patient = to_checksum_address(patient)
    grouping = group(parse(body, max_entries=c.settings.max_bundle_entries))
    if not grouping.records:
        raise errors.InvalidFhir(
            "no patient health data in this upload",
            issues=[{"path": t, "message": reason} for t, reason in grouping.ignored],
        )
    w = _Written(uuid.uuid4().hex, patient, provider, int(time.time()))
    _store_blobs(c, w, grouping.records)
    crashpoint("upload.after_blobs")
    _write_pending(c, w)
    crashpoint("upload.after_pending_rows")
    result = _register(c, w)
    crashpoint("upload.after_register_tx")
    with c.db.write() as conn:
        record_keys.mark_upload_registered(conn, w.upload_id, result.tx_hash)
        if c.replicator is not None:  # queued with the registration: durable, sent in the background
            replicas.enqueue(conn, [rid for rid, _ in w.blobs], time.time())
    crashpoint("upload.after_registered")
    c.catch_up_to(result.block_number)
    if c.replicator is not None:
        c.replicator.wake()
    c.metrics.uploads.inc(len(w.out))
    log.info(
        "upload registered",
        extra={"upload": w.upload_id, "records": len(w.out), "provider": provider, "tx": result.tx_hash},
    )
    return UploadResult(
        w.upload_id, patient, provider, result.tx_hash, result.block_number, w.out, list(grouping.ignored)
    )


def _store_blobs(c: Components, w: _Written, drafts: tuple[RecordDraft, ...]) -> None:
    """Encrypts and stores each record (a store that fails: what was stored is removed)."""
    try:
        for draft in drafts:
            _store_blob(c, w, draft)
    except BlobStoreError as exc:
        _discard(c, w.blobs)
        raise _storage_error(exc) from exc


def _store_blob(c: Components, w: _Written, draft: RecordDraft) -> None:
    record_id = secrets.token_bytes(32)
    category = int(draft.category)
    plaintext = canonical_json(draft.bundle)
    ciphertext, data_key = encrypt_record(plaintext, record_id=record_id, patient=w.patient, category=category)
    locator = c.store.put(ciphertext)
    w.blobs.append((record_id, locator))
    if len(w.blobs) == 1:
        crashpoint("upload.after_first_blob")
    content_hash = hashlib.sha256(ciphertext).digest()
    wrapped = c.kek.wrap(data_key, record_id=record_id)
    w.keys.append(
        record_keys.NewRecordKey(
            record_id,
            w.patient,
            w.provider,
            category,
            content_hash,
            locator,
            wrapped,
            c.kek.key_id,
            w.upload_id,
            len(ciphertext),
            w.created_at,
        )
    )
    w.index.extend(
        record_keys.IndexRow(record_id, e.resource_type, e.resource_id, e.code_system, e.code, e.display, e.date)
        for e in draft.index
    )
    w.inputs.append(RecordInput(record_id, category, content_hash, locator))
    w.out.append(
        UploadedRecord(record_id, category, len(draft.index), content_hash, cid_to_str(locator), len(ciphertext))
    )


def _write_pending(c: Components, w: _Written) -> None:
    """The upload's rows in state ``pending``, in one transaction, before anything is sent to the chain."""
    try:
        with c.db.write() as conn:
            record_keys.insert_pending(conn, w.keys, w.index)
    except sqlite3.Error as exc:  # disk full, I/O error: the transaction rolled back, only blobs to undo
        _discard_blobs(c, w.blobs)
        if "full" in str(exc).lower():
            raise errors.StorageFull("the gateway's database is full; nothing was registered") from exc
        raise errors.StorageUnavailable("the gateway's database cannot be written; nothing was registered") from exc


def _register(c: Components, w: _Written) -> TxResult:
    """The upload's registration, in a group commit with concurrent uploads (refused: what was written is
    removed)."""
    try:
        return c.registrar.register(w.patient, w.provider, w.inputs)
    except ChainUnavailable as exc:
        # rows stay pending: reconcile finds out whether the transaction made it
        raise errors.ChainUnavailable("the registration could not be sent; retry later") from exc
    except ContractRevert as exc:
        _discard(c, w.blobs)
        raise errors.ChainRejected(f"{exc.error_name}", error=exc.error_name) from exc
    except TransactionError as exc:  # sent, but no receipt (node stalled): it may still be mined
        raise errors.ChainUnavailable("the registration's outcome is unknown; retry later") from exc


def _discard(c: Components, written: list[tuple[bytes, bytes]]) -> None:
    """Removes what a refused upload wrote (blobs and pending rows)."""
    ids = [rid for rid, _ in written]
    with c.db.write() as conn:
        record_keys.delete_pending(conn, ids)
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
    held = record_keys.held(c.db, record_id)
    if held is None:
        raise errors.RecordNotFound("no such record at this gateway")
    if caller not in (held.patient, held.provider):
        raise errors.NotPatient("only the patient or the uploading provider may retract a record")
    if held.state == RecordState.RETRACTED:
        raise errors.RecordRetracted("already retracted")
    with c.db.write() as conn:
        record_keys.shred(conn, record_id)
    crashpoint("retract.after_shred")
    try:
        result = c.ledger.records.retract(c.gateway_account, record_id)
    except ChainUnavailable as exc:
        raise errors.ChainUnavailable("the key is destroyed; the on-chain retraction will be retried") from exc
    except ContractRevert as exc:
        # a concurrent (or earlier, crashed) retraction of the same record got there first
        try:
            status = c.ledger.records.record_of(record_id).status
        except ChainUnavailable as exc2:
            raise errors.ChainUnavailable("the key is destroyed; the on-chain retraction will be retried") from exc2
        if status is not RecordStatus.RETRACTED:
            raise errors.ChainRejected(f"{exc.error_name}", error=exc.error_name) from exc
        with c.db.write() as conn:
            record_keys.set_state(conn, record_id, RecordState.RETRACTED)
        raise errors.RecordRetracted("already retracted") from exc
    except TransactionError as exc:  # sent, but no receipt (node stalled): reconcile finds out
        raise errors.ChainUnavailable("the key is destroyed; the on-chain retraction will be retried") from exc
    crashpoint("retract.after_chain_retract")
    with c.db.write() as conn:
        record_keys.set_state(conn, record_id, RecordState.RETRACTED)
    crashpoint("retract.after_retracted")
    c.catch_up()
    try:
        c.store.delete(held.locator)
    except BlobStoreError:
        log.warning("blob of a retracted record not deleted; reconcile will", extra={"record": record_id.hex()})
    return result.tx_hash
