"""Reconcile: find and repair what a crash (or an outage in the middle of a request) left half-done.

``hcl gateway reconcile [--dry-run] [--json]``. Run it with the gateway stopped: it takes the gateway's
lock (``<data_dir>/gateway.lock``, held by a running gateway) and refuses to run while it is held, so
an upload in flight is never taken for an orphan. Every rule is idempotent, so a reconcile that is
itself interrupted is simply run again.

Repair rules (``kind``: what it is → what reconcile does):

``upload_unregistered``
    record_keys rows ``pending`` whose records are not on-chain: the upload was never acknowledged
    (no 201 was sent), so the provider retries it. → rows, index rows and blobs **deleted**. Not
    re-registered: the provider would then hold a duplicate it never heard of. Skipped (reported) while
    the gateway account has a transaction in the mempool, which might still register them.
``upload_registered``
    rows ``pending`` whose records *are* on-chain (crash between the transaction and the update)
    → marked ``registered`` (with the transaction hash): the upload took effect, nothing is lost. With the
    IPFS store and ``replicas`` > 0 they are queued for replication too, as the upload would have.
``retract_pending``
    rows ``shredded`` (data key already destroyed) whose record is not retracted on-chain → the
    ``retract`` transaction is **retried**, then the row is ``retracted`` and the blob deleted; rows
    whose retract was mined (or whose record never was registered) → ``retracted``, blob deleted.
``orphan_blob``
    a ciphertext in the store that no pending/registered/shredded row references (crash after the
    store write, or a retracted record's blob left behind) → **deleted**. Replicas this gateway pins for
    other institutions (table ``replicas``) are not orphans.
``temp_file``
    a ``.tmp-*`` file of the local store (crash mid-write) → deleted.
``blob_recovered``
    IPFS store: a registered (or ``missing_blob``) record whose ciphertext is not on this gateway's node
    → **fetched from the private swarm** (where peer gateways pin replicas; bounded by
    ``federation_timeout`` per blob), re-hashed against the on-chain ``contentHash``, pinned; the row
    stays (or goes back to) ``registered``. Only when that fails is it ``blob_missing``.
``blob_missing`` (lost)
    a registered record whose ciphertext is neither in the store nor (IPFS store) in the swarm → row
    marked ``missing_blob`` (releases answer ``record_not_found``) and **reported**: data cannot be
    invented; restore the blob from a backup and run reconcile again (the row then goes back to
    ``registered``, ``blob_restored``). A dry run does not look in the swarm (it reports ``blob_recovered``
    as what it would try).
``registration_without_key`` (lost)
    a record this gateway registered on-chain with no row here (the database was lost or replaced)
    → **reported**.
``anchor_unrecorded``
    an ``AccessBatchAnchored`` of this gateway that the journal did not record (crash between the
    anchor transaction and its bookkeeping) whose root the journal reproduces → **recorded**.
``journal_behind_chain`` (lost)
    the chain holds an anchor the journal cannot reproduce (the journal was rolled back, truncated
    or replaced) → **reported**; the gateway refuses to start until an operator restores the journal.
``journal_unanchored`` (info)
    durable journal entries not anchored yet → reported; the gateway's anchorer resumes on start.

Exit codes of the command: 0 nothing left to do, 1 something needs a person (``lost`` findings, or a
dry run found something to repair), 2 reconcile could not run (gateway running, chain or store down).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from gateway.crashpoints import crashpoint
from gateway.ledger.account import gateway_account
from gateway.ledger.anchoring import JournalBehindChain, sync_anchors
from gateway.ledger.journal import Journal, JournalError
from gateway.ops.lock import GatewayLock
from gateway.settings import GatewaySettings, StoreKind
from gateway.storage import record_keys, replicas
from gateway.storage.blobs import BlobStore, BlobStoreError, IpfsBlobStore, LocalBlobStore, cid_to_str, make_store
from gateway.storage.db import Database, RecordState
from node_client._client import ChainClient
from node_client._exceptions import ChainUnavailable, ContractRevert
from node_client.contracts import RecordStatus
from node_client.deploy import Ledger, Manifest

__all__ = [
    "Finding",
    "ReconcileError",
    "Report",
    "reconcile",
]

log = logging.getLogger("hcl.gateway.reconcile")

#: severities: "repair" (an orphan reconcile fixes), "lost" (needs a person), "info"
REPAIR, LOST, INFO = "repair", "lost", "info"


class ReconcileError(Exception):
    """Reconcile could not run (nothing was changed by the step that failed)."""


# ---------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str  # record id, locator, or journal size
    severity: str  # repair | lost | info
    action: str  # what was done (or, in a dry run, would be done)
    repaired: bool = False


@dataclass
class Report:
    dry_run: bool
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def outstanding(self) -> list[Finding]:
        """Findings that still need something (not info, not repaired)."""
        return [f for f in self.findings if f.severity != INFO and not f.repaired]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for f in self.findings:
            out[f.kind] += 1
        return dict(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "checked": self.checked,
            "counts": self.counts(),
            "outstanding": len(self.outstanding),
            "findings": [asdict(f) for f in self.findings],
        }

    @property
    def exit_code(self) -> int:
        if any(f.severity == LOST for f in self.findings):
            return 1
        return 1 if self.outstanding else 0


# ---------------------------------------------------------------------------------------- reconcile


@dataclass(frozen=True, slots=True)
class _Swarm:
    """What reconcile does with the private swarm (IPFS store): recover lost blobs, queue replication."""

    timeout: float  # seconds to wait for one lost blob
    replicate: bool  # replicas > 0: a registration reconcile completes is queued for replication


class _Reconciler:
    def __init__(
        self, *, db: Database, store: BlobStore, ledger: Ledger, account: LocalAccount, dry_run: bool, swarm: _Swarm
    ) -> None:
        self.db = db
        self.store = store
        self.ledger = ledger
        self.account = account
        self.report = Report(dry_run)
        self.dry_run = dry_run
        self.swarm = swarm
        self._repairs = 0
        self._mempool: bool | None = None
        # filled by _survey, then read and updated by the rules in turn
        self.stored: set[bytes] = set()  # locators in the store
        self.rows: list[record_keys.KeyState] = []  # record_keys rows
        self.registrations: dict[bytes, str] = {}  # record id → tx, of this gateway's RecordRegistered
        self.content_hashes: dict[bytes, bytes] = {}  # record id → its on-chain contentHash (same events)
        self.referenced: set[bytes] = set()  # locators that rows still need (not orphans)

    def _found(self, kind: str, subject: str, severity: str, action: str) -> Finding:
        f = Finding(kind, subject, severity, action, repaired=False)
        self.report.findings.append(f)
        return f

    def _done(self, f: Finding) -> None:
        self.report.findings[self.report.findings.index(f)] = Finding(f.kind, f.subject, f.severity, f.action, True)
        self._repairs += 1
        if self._repairs == 1:
            crashpoint("reconcile.after_repair")

    def _status(self, record_id: bytes) -> RecordStatus:
        return self.ledger.records.record_of(record_id).status

    def _delete_blob(self, locator: bytes) -> None:
        try:
            self.store.delete(locator)
        except BlobStoreError as exc:
            raise ReconcileError(f"cannot delete blob {cid_to_str(locator)}: {exc}") from exc

    def run(self, journal_path: Path | None) -> Report:
        """Every rule of the module docstring, in order; returns the report."""
        self._survey()
        self._pending_uploads()
        self._pending_retractions()
        self._registered_blobs()
        self._registrations_without_key()
        self._orphan_blobs()
        self._temp_files()
        if journal_path is not None and journal_path.exists():
            self._journal(journal_path)
        return self.report

    def _survey(self) -> None:
        """What there is: the store's blobs, the record_keys rows, this gateway's on-chain registrations."""
        try:
            self.stored = set(self.store.locators())
        except BlobStoreError as exc:
            raise ReconcileError(f"the blob store cannot be listed: {exc}") from exc
        self.rows = record_keys.states(self.db)
        self.referenced.update(r.locator for r in replicas.replicas(self.db))  # other institutions' ciphertext
        self.report.checked = {"rows": len(self.rows), "blobs": len(self.stored)}
        self.registrations = {}
        for ev in self.ledger.records.events(["RecordRegistered"]):
            if ev["gateway"] == self.account.address:
                self.registrations[bytes(ev["recordId"])] = ev.tx_hash
                self.content_hashes[bytes(ev["recordId"])] = bytes(ev["contentHash"])
        self.report.checked["registrations"] = len(self.registrations)

    # ------------------------------------------------------------------ upload_registered, upload_unregistered

    def _pending_uploads(self) -> None:
        """Pending uploads: registered on-chain or not at all (registerBatch and registerUploads are atomic)."""
        uploads: dict[str, list[record_keys.KeyState]] = defaultdict(list)
        for r in self.rows:
            if r.state == RecordState.PENDING:
                uploads[r.upload_id].append(r)
        for upload_id, group in uploads.items():
            self._pending_upload(upload_id, [r.record_id for r in group], [r.locator for r in group])

    def _pending_upload(self, upload_id: str, ids: list[bytes], locators: list[bytes]) -> None:
        on_chain = [self._status(i) is not RecordStatus.NONE for i in ids]
        if all(on_chain):
            self._upload_registered(upload_id, ids, locators)
        elif any(on_chain):  # cannot happen with either; never guess
            self._found("upload_partial", upload_id, LOST, "some records of the upload are on-chain, some not")
            self.referenced.update(locators)
        elif self._mempool_busy():
            self._found(
                "upload_unregistered", upload_id, REPAIR, "skipped: a gateway transaction is pending; run again"
            )
            self.referenced.update(locators)
        else:
            self._upload_unregistered(upload_id, ids, locators)

    def _mempool_busy(self) -> bool:
        """Whether the gateway account has a transaction in the mempool (asked once per run)."""
        if self._mempool is None:
            addr, w3 = self.account.address, self.ledger.client.w3
            self._mempool = bool(
                self.ledger.client.rpc(
                    lambda: w3.eth.get_transaction_count(addr, "pending") > w3.eth.get_transaction_count(addr, "latest")
                )
            )
        return self._mempool

    def _upload_registered(self, upload_id: str, ids: list[bytes], locators: list[bytes]) -> None:
        f = self._found("upload_registered", upload_id, REPAIR, f"{len(ids)} record(s) marked registered")
        self.referenced.update(locators)
        if self.dry_run:
            return
        with self.db.write() as conn:
            record_keys.mark_registered(conn, [(i, self.registrations.get(i)) for i in ids])
            if self.swarm.replicate:
                replicas.enqueue(conn, ids, time.time())
        self._done(f)

    def _upload_unregistered(self, upload_id: str, ids: list[bytes], locators: list[bytes]) -> None:
        f = self._found(
            "upload_unregistered", upload_id, REPAIR, f"{len(ids)} unacknowledged record(s) and blob(s) deleted"
        )
        if self.dry_run:
            self.referenced.update(locators)
            return
        with self.db.write() as conn:  # rows first: a crash in between leaves orphan blobs, found next time
            record_keys.delete_pending(conn, ids)
        self._done(f)
        for locator in locators:
            self._delete_blob(locator)

    # ------------------------------------------------------------------ retract_pending

    def _pending_retractions(self) -> None:
        """Retractions whose on-chain part did not happen (or was not recorded)."""
        for r in self.rows:
            if r.state == RecordState.SHREDDED:
                self._pending_retraction(r.record_id, r.locator)

    def _pending_retraction(self, rid: bytes, locator: bytes) -> None:
        if self._status(rid) in (RecordStatus.ACTIVE, RecordStatus.AMENDED):
            f = self._found("retract_pending", rid.hex(), REPAIR, "on-chain retract retried, blob deleted")
            if self.dry_run:
                return
            try:
                self.ledger.records.retract(self.account, rid)
            except ContractRevert:
                if self._status(rid) is not RecordStatus.RETRACTED:
                    raise
        else:
            f = self._found("retract_pending", rid.hex(), REPAIR, "marked retracted, blob deleted")
            if self.dry_run:
                return
        self._set_state(rid, RecordState.RETRACTED)
        self._done(f)
        self._delete_blob(locator)
        self.stored.discard(locator)

    # ------------------------------------------------------------------ blob_recovered, blob_missing, blob_restored

    def _registered_blobs(self) -> None:
        """Registered records and their blobs."""
        for r in self.rows:
            locator, rid = r.locator, r.record_id
            if r.state in (RecordState.REGISTERED, RecordState.MISSING_BLOB):
                self.referenced.add(locator)
                if locator in self.stored:
                    if r.state == RecordState.MISSING_BLOB:
                        self._blob_restored(rid)
                elif not self._blob_recovered(rid, locator):
                    self._blob_missing(rid, r.state)
            elif r.state == RecordState.SHREDDED and self.dry_run:
                self.referenced.add(locator)

    def _blob_recovered(self, rid: bytes, locator: bytes) -> bool:
        """Whether a lost blob came back from the swarm (IPFS store), pinned and re-hashed against the chain."""
        content_hash = self.content_hashes.get(rid)
        if content_hash is None or not isinstance(self.store, IpfsBlobStore):
            return False
        if self.dry_run:
            self._found("blob_recovered", rid.hex(), REPAIR, "would be fetched from the swarm (else blob_missing)")
            return True
        try:
            self.store.replicate(locator, content_hash, timeout=self.swarm.timeout)
        except BlobStoreError as exc:
            log.warning("lost blob not recovered from the swarm", extra={"record": rid.hex(), "error": str(exc)})
            return False
        f = self._found("blob_recovered", rid.hex(), REPAIR, "fetched from the swarm, matches contentHash, pinned")
        self.stored.add(locator)
        self._set_state(rid, RecordState.REGISTERED)
        self._done(f)
        return True

    def _blob_missing(self, rid: bytes, state: str) -> None:
        if state == RecordState.MISSING_BLOB:
            self._found("blob_missing", rid.hex(), LOST, "still missing; restore the blob and run again")
            return
        self._found("blob_missing", rid.hex(), LOST, "marked missing_blob; restore the blob and run again")
        if not self.dry_run:
            self._set_state(rid, RecordState.MISSING_BLOB)

    def _blob_restored(self, rid: bytes) -> None:
        f = self._found("blob_restored", rid.hex(), REPAIR, "blob is back: marked registered")
        if not self.dry_run:
            self._set_state(rid, RecordState.REGISTERED)
            self._done(f)

    def _set_state(self, rid: bytes, state: RecordState) -> None:
        with self.db.write() as conn:
            record_keys.set_state(conn, rid, state)

    # ------------------------------------------------------------------ registration_without_key, orphan_blob, temp_file

    def _registrations_without_key(self) -> None:
        known = {r.record_id for r in self.rows}
        for rid, tx in self.registrations.items():
            if rid not in known:
                self._found(
                    "registration_without_key", rid.hex(), LOST, f"registered on-chain (tx {tx}) but no key here"
                )

    def _orphan_blobs(self) -> None:
        for locator in sorted(self.stored - self.referenced):
            f = self._found("orphan_blob", cid_to_str(locator), REPAIR, "deleted")
            if not self.dry_run:
                self._delete_blob(locator)
                self._done(f)

    def _temp_files(self) -> None:
        if not isinstance(self.store, LocalBlobStore):
            return
        temps = list(self.store.root.glob(".tmp-*")) + list(self.store.root.glob("*/.tmp-*"))
        for t in temps:
            f = self._found("temp_file", t.name, REPAIR, "deleted")
            if not self.dry_run:
                t.unlink(missing_ok=True)
                self._done(f)

    # ------------------------------------------------------------------ anchor_unrecorded, journal_*

    def _journal(self, path: Path) -> None:
        try:
            journal = Journal(path)  # opening verifies every row, the hash chain and the recorded anchors
        except JournalError as exc:
            self._found("journal_corrupt", path.name, LOST, f"{type(exc).__name__}: {exc}")
            return
        try:
            journal.verify_chain()
            self.report.checked["journalEntries"] = journal.size
            try:
                adopted = sync_anchors(
                    journal,
                    self.ledger,
                    self.account.address,
                    deploy_block=self.ledger.access.deploy_block,
                    record=not self.dry_run,
                )
            except JournalBehindChain as exc:
                self._found("journal_behind_chain", str(journal.size), LOST, str(exc))
                return
            for a in adopted:
                f = self._found("anchor_unrecorded", str(a.tree_size), REPAIR, f"recorded (tx {a.tx_hash})")
                if not self.dry_run:
                    self._done(f)
            last = journal.last_anchor()
            anchored = last.tree_size if last else 0
            if adopted and self.dry_run:
                anchored = adopted[-1].tree_size
            if journal.size > anchored:
                self._found(
                    "journal_unanchored",
                    str(journal.size - anchored),
                    INFO,
                    f"entries {anchored}..{journal.size - 1} not anchored yet; the gateway's anchorer resumes on start",
                )
        finally:
            journal.close()


def reconcile(settings: GatewaySettings, *, dry_run: bool = False) -> Report:
    """Runs every rule of the module docstring against the gateway configured by ``settings``.

    Raises :class:`~gateway.ops.lock.GatewayRunning` while a gateway (or another reconcile) holds the data
    directory, :class:`ReconcileError` when the database, the chain or the store cannot be used.
    """
    with GatewayLock(settings.data_dir):
        if not settings.db_path.exists():
            raise ReconcileError(f"no gateway database at {settings.db_path}")
        db = Database(settings.db_path)
        try:
            client = ChainClient(rpc_url=settings.rpc_url, timeout=settings.rpc_timeout)
            ledger = Manifest.load(settings.manifest).connect(client)
            store = make_store(settings)
            account = gateway_account(settings, dev=ledger.dev)
            swarm = _Swarm(settings.federation_timeout, settings.store is StoreKind.IPFS and settings.replicas > 0)
            reconciler = _Reconciler(db=db, store=store, ledger=ledger, account=account, dry_run=dry_run, swarm=swarm)
            return reconciler.run(settings.journal_path)
        except ChainUnavailable as exc:
            raise ReconcileError(f"the chain is unavailable: {exc}") from exc
        finally:
            db.close()
