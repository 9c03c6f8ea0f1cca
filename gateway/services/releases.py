"""Release: the only path by which a byte of a patient's record leaves the gateway.

1. the caller is an active care provider (asked of the chain);
2. the record exists on-chain, is not retracted, and consent for (patient, caller, category, purpose)
   holds at the latest block (``ConsentRegistry.check``). Steps 1 and 2 read one block's state: the
   synced read model's block, or the chain's latest block with every call pinned to it
   (:meth:`gateway.access.policy.AccessPolicy.state_view`); the journal entry names that block, and the time
   of the decision (``released_at``) is taken right after it;
3. the ciphertext is fetched and its SHA-256 compared with the on-chain ``contentHash``; it is decrypted
   and re-encrypted to the caller's registered X25519 key (HPKE) — all in memory, nothing sent yet;
4. the access is ledgered: strict mode waits until its entry is mined in a ``AccessLedger.logAccessBatch``
   (the group commit of :mod:`gateway.ledger.strict_commit`, which re-checks each entry's consent on-chain
   and logs nothing for an entry whose consent no longer holds); batch mode appends a durable journal row;
5. only then is the response returned. Any failure before the end releases nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from gateway import errors
from gateway.access.policy import Confirmed, Decision, NeedsChain, StaleView, StateView
from gateway.crashpoints import crashpoint
from gateway.ledger.journal import JournalEntry, JournalUnavailable
from gateway.ledger.journal_service import AnchorsLagging
from gateway.ledger.strict_commit import Committed
from gateway.settings import LedgerMode
from gateway.storage import read_model, record_keys
from gateway.storage.blobs import BlobStoreError, IntegrityMismatch
from gateway.storage.crypto import GatewayCryptoError, decrypt_record
from gateway.storage.db import RecordState
from gateway.wiring import Components
from node_client import hpke
from node_client._exceptions import ChainUnavailable, ContractRevert, TransactionError
from node_client.contracts import AccessEntry, Member, Record, RecordStatus
from node_client.vocabulary import PURPOSES

__all__ = ["Release", "release", "release_async"]

log = logging.getLogger("hcl.gateway.releases")


@dataclass(frozen=True, slots=True)
class Release:
    body: dict[str, Any]
    emergency: bool


def _onchain_content(c: Components, record_id: bytes, *, offline: bool = False) -> tuple[bytes, bytes]:
    """(contentHash, locator) as registered on-chain, from the read model (indexing once if needed)."""
    row = read_model.record(c.db, record_id)
    if row is None:
        if offline:
            raise NeedsChain("the record is not in the read model yet")
        if c.indexer.catching_up:  # indexing "once" would be the whole catch-up: the chain says
            found = c.indexer.registration(record_id)
            if found is None:
                raise errors.RecordNotFound("the record's registration is not visible on-chain")
            return found
        c.indexer.poll_once()
        row = read_model.record(c.db, record_id)
    if row is None:
        raise errors.RecordNotFound("the record's registration is not visible on-chain")
    return row.content_hash, row.locator


@dataclass(slots=True)
class _Prepared:
    """A release checked, decrypted and re-encrypted in memory: everything but the ledger step."""

    started: float
    caller: str
    record_id: bytes
    patient: str
    category: int
    purpose: int
    consent_id: bytes
    emergency: bool
    access_hash: bytes
    released_at: int
    payload: dict[str, Any]
    view: StateView
    seen_at: int  # unix ms: the chain's head was at most ``view.block`` then


#: a strict release waits for its entry at most this many RPC timeouts: the batch before it, its own
#: receipt, its confirmations
_STRICT_WAIT_FACTOR = 3

#: decisions made again when the read model moved under one, before giving up (fail closed)
_DECIDE_ATTEMPTS = 4


def _decide(
    c: Components, *, caller: str, record_id: bytes, purpose: int, offline: bool
) -> tuple[Member, Record, bytes, Decision, StateView, Confirmed]:
    """Steps 1-2: member, record and consent read at one block (see the module docstring); with the
    record's wrapped data key."""
    cache = True
    for _ in range(_DECIDE_ATTEMPTS):
        view = c.policy.state_view(cache=cache, offline=offline)
        try:
            member = c.policy.require_member(caller, view=view)
            record = c.policy.record(record_id, view=view)
            if record.status is RecordStatus.NONE:
                raise errors.RecordNotFound("no such record")
            if record.status is RecordStatus.RETRACTED:
                raise errors.RecordRetracted("the record was retracted")
            held = record_keys.held(c.db, record_id)
            if held is not None and held.state in (RecordState.SHREDDED, RecordState.RETRACTED):
                raise errors.RecordRetracted("the record was retracted; its key is destroyed")
            if held is None or held.state != RecordState.REGISTERED or held.wrapped_key is None:
                raise errors.RecordNotFound("this gateway does not hold the record")
            wrapped_key = held.wrapped_key
            decision = c.policy.require(record.patient, caller, record.category, purpose, member=member, view=view)
        except NeedsChain:
            if offline or view.source == "chain":
                raise
            cache = False  # the read model has no yes: the chain decides, at its latest block
            continue
        try:
            confirmed = c.policy.confirm(view)
        except StaleView:
            continue
        return member, record, wrapped_key, decision, view, confirmed
    if offline:
        raise NeedsChain("the read model kept moving during the decision")
    raise errors.ChainUnavailable("the chain state kept changing during the decision; nothing released")


def _prepare(c: Components, *, caller: str, record_id: bytes, purpose: int, offline: bool) -> _Prepared:
    """Steps 1-3 of the module docstring. ``offline``: from the read model only, else :class:`NeedsChain`."""
    started = time.perf_counter()
    member, record, wrapped_key, decision, view, confirmed = _decide(
        c, caller=caller, record_id=record_id, purpose=purpose, offline=offline
    )
    c.metrics.decisions.labels(source=decision.source).inc()
    crashpoint("release.after_decision")

    plaintext = _plaintext(c, record_id, record, wrapped_key, offline=offline)
    payload, response_bytes = _payload(c, member, caller, record_id, plaintext)
    released_at = confirmed.decided_at
    return _Prepared(
        started,
        caller,
        record_id,
        record.patient,
        record.category,
        purpose,
        decision.consent_id,
        decision.emergency,
        _access_hash(record_id, caller, purpose, response_bytes, released_at),
        released_at,
        payload,
        view,
        confirmed.seen_at,
    )


def _plaintext(c: Components, record_id: bytes, record: Record, wrapped_key: bytes, *, offline: bool) -> bytes:
    """The record's FHIR: its ciphertext, checked against the on-chain hash, decrypted with its data key."""
    content_hash, locator = _onchain_content(c, record_id, offline=offline)
    try:
        ciphertext = c.store.get(locator)
    except IntegrityMismatch:
        ciphertext = b""  # corrupted at rest: fall through to the integrity failure below
    except BlobStoreError as exc:
        raise errors.StorageUnavailable("the record's ciphertext cannot be read") from exc
    if hashlib.sha256(ciphertext).digest() != content_hash:
        c.metrics.integrity_errors.inc()
        log.error("integrity error: stored ciphertext does not match the chain", extra={"record": record_id.hex()})
        raise errors.IntegrityError("the stored record does not match its on-chain hash; nothing released")
    try:
        data_key = c.kek.unwrap(wrapped_key, record_id=record_id)
        return decrypt_record(
            ciphertext, data_key, record_id=record_id, patient=record.patient, category=record.category
        )
    except GatewayCryptoError as exc:
        c.metrics.integrity_errors.inc()
        log.error("record does not decrypt", extra={"record": record_id.hex()})
        raise errors.IntegrityError("the record does not decrypt; nothing released") from exc


def _payload(
    c: Components, member: Member, caller: str, record_id: bytes, plaintext: bytes
) -> tuple[dict[str, Any], bytes]:
    """The release's body and the bytes the caller receives: the FHIR sealed to the caller's key (HPKE),
    or as is when the gateway answers in plaintext (``plaintext_responses``)."""
    if c.settings.plaintext_responses:
        return {"contentType": "application/fhir+json", "resource": orjson.loads(plaintext)}, plaintext
    enc, sealed = hpke.seal(
        member.encryption_key, plaintext, info=hpke.RELEASE_INFO, aad=hpke.release_aad(record_id, caller)
    )
    payload = {
        "contentType": "application/fhir+json",
        "encryption": {
            "suite": hpke.SUITE_ID,
            "info": hpke.RELEASE_INFO.decode(),
            "aad": "recordId || requester address",
            "enc": base64.b64encode(enc).decode(),
            "ciphertext": base64.b64encode(sealed).decode(),
        },
    }
    return payload, enc + sealed


def _access_hash(record_id: bytes, caller: str, purpose: int, response_bytes: bytes, released_at: int) -> bytes:
    """The release's access id: SHA-256 over what was released, to whom, why and when (and a nonce)."""
    return hashlib.sha256(
        orjson.dumps(
            {
                "v": 1,
                "recordId": record_id.hex(),
                "requester": caller,
                "purpose": purpose,
                "response": hashlib.sha256(response_bytes).hexdigest(),
                "nonce": secrets.token_hex(16),
                "releasedAt": released_at,
            },
            option=orjson.OPT_SORT_KEYS,
        )
    ).digest()


def _entry(p: _Prepared) -> JournalEntry:
    return JournalEntry(
        requester=p.caller,
        patient=p.patient,
        record_id=p.record_id,
        purpose=p.purpose,
        consent_id=p.consent_id,
        emergency=p.emergency,
        access_hash=p.access_hash,
        released_at=p.released_at,
        state_block=p.view.block,
        state_block_hash=p.view.block_hash,
        state_seen_at=p.seen_at,
    )


def _finish(c: Components, p: _Prepared, ledger_info: dict[str, Any]) -> Release:
    """Step 5: the access is ledgered; count it and build the response."""
    mode = c.settings.ledger_mode
    c.metrics.releases.labels(mode=mode.value, emergency=str(p.emergency).lower()).inc()
    c.metrics.release_seconds.labels(mode=mode.value).observe(time.perf_counter() - p.started)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "record released",
            extra={
                "record": p.record_id.hex(),
                "requester": p.caller,
                "purpose": p.purpose,
                "emergency": p.emergency,
                "mode": mode.value,
            },
        )
    body = {
        "accessId": "0x" + p.access_hash.hex(),
        "recordId": "0x" + p.record_id.hex(),
        "patient": p.patient,
        "category": c.category_keys.name_slot(p.patient, p.category),
        "purpose": PURPOSES[p.purpose].slug,
        "consentId": "0x" + p.consent_id.hex(),
        "emergency": p.emergency,
        "ledger": ledger_info,
        **p.payload,
    }
    return Release(body, p.emergency)


def release(c: Components, *, caller: str, record_id: bytes, purpose: int) -> Release:
    """The whole release, blocking (strict mode mines a transaction; a lagging read model asks the chain)."""
    p = _prepare(c, caller=caller, record_id=record_id, purpose=purpose, offline=False)
    crashpoint("release.before_ledger")
    if c.settings.ledger_mode is LedgerMode.STRICT:
        ledger_info = _log_access(c, p, caller, record_id, purpose)
    else:
        assert c.appender is not None  # built with batch mode
        _check_anchor_lag(c)
        try:
            index = c.appender.append(_entry(p))
        except AnchorsLagging as exc:  # a worker's: the primary checked its anchorer
            raise errors.AnchorLagging(str(exc)) from exc
        except JournalUnavailable as exc:
            raise errors.JournalUnavailable("the access could not be journaled; nothing released") from exc
        ledger_info = {"mode": "batch", "journalIndex": index}
    crashpoint("release.after_ledger")
    return _finish(c, p, ledger_info)


def _log_access(c: Components, p: _Prepared, caller: str, record_id: bytes, purpose: int) -> dict[str, Any]:
    """Strict mode's step 4: the entry logged in a ``logAccessBatch`` mined and ``confirmations`` blocks
    deep, or nothing is released."""
    future = _submit_strict(c, p, caller, record_id, purpose)
    try:
        done = future.result(timeout=_STRICT_WAIT_FACTOR * c.settings.rpc_timeout)
    except FutureTimeout as exc:
        future.cancel()  # not sent yet: never will be; sent: ledgered perhaps, but not released
        raise errors.ChainUnavailable("the access could not be ledgered in time; nothing released") from exc
    except (ChainUnavailable, ContractRevert, TransactionError) as exc:
        raise _strict_failure(c, p, caller, purpose, exc) from exc
    return _strict_logged(c, p, caller, purpose, done)


async def _log_access_async(c: Components, p: _Prepared, caller: str, record_id: bytes, purpose: int) -> dict[str, Any]:
    """:func:`_log_access` for the event loop: awaits the committer instead of holding a pool thread;
    only a refusal, whose reason may need the chain, goes to the pool."""
    future = _submit_strict(c, p, caller, record_id, purpose)
    try:
        done = await asyncio.wait_for(asyncio.wrap_future(future), _STRICT_WAIT_FACTOR * c.settings.rpc_timeout)
    except TimeoutError as exc:  # wait_for cancelled the future: not sent yet, never will be
        raise errors.ChainUnavailable("the access could not be ledgered in time; nothing released") from exc
    except (ChainUnavailable, ContractRevert, TransactionError) as exc:
        raise await run_in_threadpool(_strict_failure, c, p, caller, purpose, exc) from exc
    if not done.outcome.logged:
        return await run_in_threadpool(_strict_logged, c, p, caller, purpose, done)
    return _strict_logged(c, p, caller, purpose, done)


def _submit_strict(c: Components, p: _Prepared, caller: str, record_id: bytes, purpose: int) -> Future[Committed]:
    assert c.strict is not None  # built with strict mode
    try:
        return c.strict.submit(AccessEntry(caller, p.patient, record_id, purpose, p.access_hash))
    except ChainUnavailable as exc:  # the gateway is stopping
        raise errors.ChainUnavailable("the access could not be ledgered; nothing released") from exc


def _strict_failure(c: Components, p: _Prepared, caller: str, purpose: int, exc: Exception) -> Exception:
    """What a release answers when its entry's transaction failed (blocking: a revert asks the chain why)."""
    if isinstance(exc, ContractRevert):  # the whole batch reverted (e.g. this gateway was suspended)
        return c.policy.explain(p.patient, caller, p.category, purpose)
    # chain down, or sent but no (confirmed) receipt in time: not known to be ledgered
    return errors.ChainUnavailable("the access could not be ledgered; nothing released")


def _strict_logged(c: Components, p: _Prepared, caller: str, purpose: int, done: Committed) -> dict[str, Any]:
    """The ledger part of the response once the entry is mined; a refused entry raises the chain's reason."""
    if not done.outcome.logged:
        refusal = done.outcome.refusal
        if refusal is not None and refusal.error_name == "AccessLedgerRecordRetracted":  # retracted meanwhile
            raise errors.RecordRetracted("the record was retracted")
        # consent changed between the check and the transaction: the chain has the last word
        raise c.policy.explain(p.patient, caller, p.category, purpose)
    p.consent_id, p.emergency = done.outcome.consent_id, done.outcome.emergency
    return {"mode": "strict", "txHash": done.tx.tx_hash, "blockNumber": done.tx.block_number}


def _check_anchor_lag(c: Components) -> None:
    """Batch mode: no release while the oldest unanchored entry is older than ``max_anchor_lag``."""
    problem = c.anchorer.lagging(c.settings.max_anchor_lag) if c.anchorer is not None else None
    if problem is not None:
        raise errors.AnchorLagging(problem)


async def release_async(c: Components, *, caller: str, record_id: bytes, purpose: int) -> Release:
    """The release for the event loop: with the local store and a synced read model it decides and seals
    in the loop (a few hundred microseconds of CPU, no I/O that can stall) and *awaits* the ledger — the
    journal's group commit (batch) or its entry's ``logAccessBatch`` (strict); anything else — IPFS, a
    lagging read model, a refusal that needs the chain's reason — runs :func:`release` in the thread
    pool. Same checks, same order, same result."""
    strict = c.settings.ledger_mode is LedgerMode.STRICT
    ledger_ready = c.strict is not None if strict else c.appender is not None
    if not ledger_ready or c.store.remote or not c.policy.cache_ready():
        return await run_in_threadpool(release, c, caller=caller, record_id=record_id, purpose=purpose)
    try:
        p = _prepare(c, caller=caller, record_id=record_id, purpose=purpose, offline=True)
    except NeedsChain:
        return await run_in_threadpool(release, c, caller=caller, record_id=record_id, purpose=purpose)
    crashpoint("release.before_ledger")
    if strict:
        ledger_info = await _log_access_async(c, p, caller, record_id, purpose)
    else:
        assert c.appender is not None
        _check_anchor_lag(c)
        try:
            index = await c.appender.append_async(_entry(p))
        except AnchorsLagging as exc:
            raise errors.AnchorLagging(str(exc)) from exc
        except JournalUnavailable as exc:
            raise errors.JournalUnavailable("the access could not be journaled; nothing released") from exc
        ledger_info = {"mode": "batch", "journalIndex": index}
    crashpoint("release.after_ledger")
    return _finish(c, p, ledger_info)
