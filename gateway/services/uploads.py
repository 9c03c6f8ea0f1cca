"""Upload: FHIR in, encrypted records out, registered on-chain in one transaction.

Order matters for "nothing lost or half-written": every ciphertext is stored and every wrapped key is
written (state ``pending``) *before* the registration transaction, and marked ``registered`` after it.
A crash in between leaves pending rows that ``hcl gateway reconcile`` resolves against the chain; a
refused transaction removes what was written. With the IPFS store, the registered records are queued for
replication on peer gateways in the same transaction (:mod:`gateway.federation.replication`).

Uploads are idempotent (:mod:`gateway.storage.versions`): a record whose every resource the gateway
already holds unchanged is not stored again, a changed one is registered as a new version of its record
(``amend``, one transaction each; the old version stays readable), and a transaction entry's conditional
create (``ifNoneExist``) that matches a resource held for the patient is not created again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from eth_utils import is_address, to_checksum_address

from gateway import errors
from gateway.crashpoints import crashpoint
from gateway.fhir import RecordDraft, canonical_json, group, parse
from gateway.fhir.identity import conditional_creates, lookup_keys
from gateway.storage import identifier_index, record_keys, replicas, versions
from gateway.storage.blobs import BlobStoreError, StorageFull, cid_to_str
from gateway.storage.crypto import encrypt_record
from gateway.storage.db import RecordState
from gateway.wiring import Components
from node_client._client import TxResult
from node_client._exceptions import ChainUnavailable, ContractRevert, TransactionError
from node_client.contracts import RecordInput, RecordStatus
from node_client.vocabulary import Category

__all__ = ["UnchangedRecord", "UploadResult", "UploadedRecord", "retract", "upload"]

log = logging.getLogger("hcl.gateway.uploads")


@dataclass(frozen=True, slots=True)
class UploadedRecord:
    record_id: bytes
    category: int  # the slot (named per patient at the API)
    resources: int
    content_hash: bytes
    locator: str
    size: int
    previous: bytes | None = None  # the record this one amends (a new version of it)
    tx_hash: str = ""


@dataclass(frozen=True, slots=True)
class UnchangedRecord:
    """A record of the upload that the gateway already holds, resource for resource: nothing was done."""

    category: int  # the slot
    record_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class UploadResult:
    upload_id: str
    patient: str
    provider: str
    tx_hash: str | None  # None when nothing was new
    block_number: int | None
    records: list[UploadedRecord]
    ignored: list[tuple[str, str]]
    unchanged: list[UnchangedRecord] = field(default_factory=list)


def _storage_error(exc: BlobStoreError) -> errors.DomainError:
    if isinstance(exc, StorageFull):
        return errors.StorageFull("the record store is full; nothing was registered")
    return errors.StorageUnavailable("the record store cannot be written; nothing was registered")


@dataclass(slots=True)
class _Stored:
    """One record of an upload, its ciphertext stored: its row, its index, its resources (keyed)."""

    key: record_keys.NewRecordKey
    index: list[record_keys.IndexRow]
    resources: list[tuple[bytes, bytes]]
    out: UploadedRecord
    lookup: list[bytes] = field(default_factory=list)  # identifier_index digests (an identifiers record)


@dataclass(slots=True)
class _Written:
    """What an upload has written before its registration: to register, to answer with, or to undo."""

    upload_id: str
    patient: str
    provider: str
    created_at: int
    #: category → the slot its records take on chain for this patient (node_client.blinding)
    slots: dict[int, int] = field(default_factory=dict)
    records: list[_Stored] = field(default_factory=list)
    unchanged: list[UnchangedRecord] = field(default_factory=list)

    @property
    def blobs(self) -> list[tuple[bytes, bytes]]:  # (record_id, locator) to undo on refusal
        return [(r.key.record_id, r.key.locator) for r in self.records]


def upload(c: Components, *, provider: str, patient: str, body: bytes) -> UploadResult:
    """Validates, groups, encrypts, stores and registers the records of one upload (FHIR that is not
    acceptable: :class:`gateway.fhir.InvalidFhir`, with every issue). A record the gateway already holds
    is not stored again, a changed one is amended (:mod:`gateway.storage.versions`)."""
    c.policy.require_member(provider)
    if not is_address(patient):
        raise errors.InvalidRequest(f"patient {patient!r} is not an Ethereum address")
    patient = to_checksum_address(patient)
    resource, existing = _conditional_creates(c, patient, parse(body, max_entries=c.settings.max_bundle_entries))
    grouping = group(resource)
    ignored = [*existing, *grouping.ignored]
    if not grouping.records and not existing:
        raise errors.InvalidFhir(
            "no patient health data in this upload",
            issues=[{"path": t, "message": reason} for t, reason in grouping.ignored],
        )
    # every slot before anything is written: without the patient's key only emergency-safe records register
    slots = {int(d.category): c.category_keys.slot(patient, int(d.category)) for d in grouping.records}
    w = _Written(uuid.uuid4().hex, patient, provider, int(time.time()), slots)
    todo = _changed(c, w, grouping.records)
    if not todo:
        log.info("upload unchanged", extra={"upload": w.upload_id, "provider": provider})
        return UploadResult(w.upload_id, patient, provider, None, None, [], ignored, w.unchanged)
    _store_blobs(c, w, todo)
    crashpoint("upload.after_blobs")
    _write_pending(c, w)
    crashpoint("upload.after_pending_rows")
    txs = _register_all(c, w)
    crashpoint("upload.after_registered")
    if txs:
        c.catch_up_to(max(t.block_number for t in txs))
    if c.replicator is not None:
        c.replicator.wake()
    c.metrics.uploads.inc(len(w.records))
    log.info(
        "upload registered",
        extra={"upload": w.upload_id, "records": len(w.records), "provider": provider, "txs": len(txs)},
    )
    first = txs[0] if txs else None  # the registration of the new records, else the first amendment
    return UploadResult(
        w.upload_id,
        patient,
        provider,
        first.tx_hash if first else None,
        first.block_number if first else None,
        [r.out for r in w.records],
        ignored,
        w.unchanged,
    )


def _conditional_creates(
    c: Components, patient: str, resource: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The upload without the conditional creates (``ifNoneExist``) this gateway already holds a match of
    for the patient, and those entries reported as (resource type, why)."""
    asked = conditional_creates(resource)
    if not asked:
        return resource, []
    conn = c.db.read()
    held = {
        i: rid
        for i, ident in asked.items()
        if (rid := versions.holder_of_identity(conn, patient=patient, identity=versions.keyed(c.index_key, ident)))
    }
    if not held:
        return resource, []
    entries = resource["entry"]
    reported = [
        (
            str(entries[i]["resource"].get("resourceType")),
            f"Bundle.entry[{i}]: ifNoneExist matched, held in 0x{rid.hex()}",
        )
        for i, rid in sorted(held.items())
    ]
    return {**resource, "entry": [e for i, e in enumerate(entries) if i not in held]}, reported


def _lookup_digests(c: Components, draft: RecordDraft) -> list[bytes]:
    """An identifiers record's Patients' identifiers, keyed for the lookup index."""
    if draft.category != Category.IDENTIFIERS:
        return []
    own = [e["resource"] for e in draft.bundle["entry"][: draft.own] if e["resource"].get("resourceType") == "Patient"]
    return [identifier_index.digest(c.index_key, k) for p in own for k in lookup_keys(p)]


def _keyed(c: Components, draft: RecordDraft) -> list[tuple[bytes, bytes]]:
    return [(versions.keyed(c.index_key, ident), digest) for ident, digest in draft.resources]


def _changed(c: Components, w: _Written, drafts: tuple[RecordDraft, ...]) -> list[RecordDraft]:
    """The drafts that are not already held (first look, outside the write lock; decided again inside)."""
    conn = c.db.read()
    todo = []
    for draft in drafts:
        slot = w.slots[int(draft.category)]
        d = versions.decide(conn, patient=w.patient, provider=w.provider, category=slot, resources=_keyed(c, draft))
        if d.unchanged:
            w.unchanged.append(UnchangedRecord(slot, d.unchanged))
        else:
            todo.append(draft)
    return todo


def _store_blobs(c: Components, w: _Written, drafts: list[RecordDraft]) -> None:
    """Encrypts and stores each record (a store that fails: what was stored is removed)."""
    try:
        for draft in drafts:
            _store_blob(c, w, draft)
    except BlobStoreError as exc:
        _discard(c, w.blobs)
        raise _storage_error(exc) from exc


def _store_blob(c: Components, w: _Written, draft: RecordDraft) -> None:
    record_id = secrets.token_bytes(32)
    category = w.slots[int(draft.category)]  # the slot: what the chain and every table hold
    plaintext = canonical_json(draft.bundle)
    ciphertext, data_key = encrypt_record(plaintext, record_id=record_id, patient=w.patient, category=category)
    locator = c.store.put(ciphertext)
    key = record_keys.NewRecordKey(
        record_id,
        w.patient,
        w.provider,
        category,
        hashlib.sha256(ciphertext).digest(),
        locator,
        c.kek.wrap(data_key, record_id=record_id),
        c.kek.key_id,
        w.upload_id,
        len(ciphertext),
        w.created_at,
    )
    w.records.append(
        _Stored(
            key,
            [
                record_keys.IndexRow(
                    record_id, e.resource_type, e.resource_id, e.code_system, e.code, e.display, e.date
                )
                for e in draft.index
            ],
            _keyed(c, draft),
            UploadedRecord(
                record_id, category, len(draft.index), key.content_hash, cid_to_str(locator), len(ciphertext)
            ),
            _lookup_digests(c, draft),
        )
    )
    if len(w.records) == 1:
        crashpoint("upload.after_first_blob")


def _write_pending(c: Components, w: _Written) -> None:
    """The upload's rows in state ``pending``, in one transaction, before anything is sent to the chain.

    Which record each amends is decided here, under the write lock: of two identical uploads at once the
    second finds the first's pending records and stores nothing (its blobs are removed)."""
    try:
        with c.db.write() as conn:
            kept, dropped = _decide(conn, w)
            record_keys.insert_pending(conn, [r.key for r in kept], [i for r in kept for i in r.index])
            for r in kept:
                versions.insert(conn, r.key.record_id, r.resources)
                identifier_index.insert(conn, r.key.record_id, w.patient, r.lookup)
    except sqlite3.Error as exc:  # disk full, I/O error: the transaction rolled back, only blobs to undo
        _discard_blobs(c, w.blobs)
        if "full" in str(exc).lower():
            raise errors.StorageFull("the gateway's database is full; nothing was registered") from exc
        raise errors.StorageUnavailable("the gateway's database cannot be written; nothing was registered") from exc
    w.records = kept
    _discard_blobs(c, [(r.key.record_id, r.key.locator) for r in dropped])


def _decide(conn: sqlite3.Connection, w: _Written) -> tuple[list[_Stored], list[_Stored]]:
    """The records to write (each with the record it amends, if any), and those now held already."""
    kept: list[_Stored] = []
    dropped: list[_Stored] = []
    for r in w.records:
        k = r.key
        d = versions.decide(conn, patient=w.patient, provider=w.provider, category=k.category, resources=r.resources)
        if d.unchanged:
            w.unchanged.append(UnchangedRecord(k.category, d.unchanged))
            dropped.append(r)
        else:
            kept.append(replace(r, key=replace(k, previous_id=d.previous), out=replace(r.out, previous=d.previous)))
    return kept, dropped


def _register_all(c: Components, w: _Written) -> list[TxResult]:
    """New records in one registration (group-committed), then each amendment in its own transaction;
    every record is marked registered as its transaction is mined."""
    new = [r for r in w.records if r.key.previous_id is None]
    txs = []
    if new:
        tx = _register(c, w, new)
        crashpoint("upload.after_register_tx")
        txs.append(tx)
        _registered(c, new, tx)
    for i, r in enumerate(w.records):
        if r.key.previous_id is not None:
            tx = _amend(c, w, r, [x for x in w.records[i:] if x.key.previous_id is not None])
            txs.append(tx)
            _registered(c, [r], tx)
    return txs


def _registered(c: Components, records: list[_Stored], tx: TxResult) -> None:
    with c.db.write() as conn:
        record_keys.mark_registered(conn, [(r.key.record_id, tx.tx_hash) for r in records])
        if c.replicator is not None:  # queued with the registration: durable, sent in the background
            replicas.enqueue(conn, [r.key.record_id for r in records], time.time())
    for r in records:
        r.out = replace(r.out, tx_hash=tx.tx_hash)


def _register(c: Components, w: _Written, records: list[_Stored]) -> TxResult:
    """The upload's new records' registration, in a group commit with concurrent uploads (refused: what
    was written is removed)."""
    try:
        return c.registrar.register(w.patient, w.provider, [_input(r) for r in records])
    except ChainUnavailable as exc:
        # rows stay pending: reconcile finds out whether the transaction made it
        raise errors.ChainUnavailable("the registration could not be sent; retry later") from exc
    except ContractRevert as exc:
        _discard(c, w.blobs)
        raise errors.ChainRejected(f"{exc.error_name}", error=exc.error_name) from exc
    except TransactionError as exc:  # sent, but no receipt (node stalled): it may still be mined
        raise errors.ChainUnavailable("the registration's outcome is unknown; retry later") from exc


def _amend(c: Components, w: _Written, r: _Stored, unsent: list[_Stored]) -> TxResult:
    """``r`` registered as the new version of the record it amends (refused: it and the amendments not
    sent yet are removed; what was registered before stays, so that sending the upload again is safe)."""
    k = r.key
    assert k.previous_id is not None
    try:
        return c.ledger.records.amend(
            c.gateway_account, k.previous_id, k.record_id, w.provider, k.content_hash, k.locator
        )
    except ChainUnavailable as exc:
        raise errors.ChainUnavailable("the amendment could not be sent; retry later") from exc
    except ContractRevert as exc:
        _discard(c, [(x.key.record_id, x.key.locator) for x in unsent])
        raise errors.ChainRejected(f"{exc.error_name}", error=exc.error_name) from exc
    except TransactionError as exc:
        raise errors.ChainUnavailable("the amendment's outcome is unknown; retry later") from exc


def _input(r: _Stored) -> RecordInput:
    return RecordInput(r.key.record_id, r.key.category, r.key.content_hash, r.key.locator)


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
