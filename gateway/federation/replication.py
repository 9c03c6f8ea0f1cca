"""Replication: each record's ciphertext pinned on other institutions' IPFS nodes, so a gateway that loses its
blob store recovers every blob from the swarm (``hcl gateway reconcile``, rule ``blob_recovered``).

Asking (:class:`Replicator`): an upload queues its records (``replication_queue``, in the transaction that
marks them registered), and a thread of its own asks ``replicas`` peer gateways — chosen by the record id's
hash, so the load spreads and the choice is the same after a restart — to pin them (``POST
/v1/federation/pins``, signed by this gateway for itself). A peer that fails is asked again with backoff; the
upload's answer never waits for any of it.

Answering (:func:`accept_pins`): the peer pins only records the chain says the asking gateway registered,
fetches them through the swarm and re-hashes them against the on-chain ``contentHash`` before keeping them.
Only ciphertext moves: the data keys never leave their holder, so a replica is unreadable anywhere else.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway import errors
from gateway.federation.directory import Peer
from gateway.federation.outbound import Federation
from gateway.observability import Metrics
from gateway.storage import read_model, replicas
from gateway.storage.blobs import BlobStore, BlobStoreError, IntegrityMismatch, IpfsBlobStore, cid_to_str
from gateway.storage.db import Database, status_text
from node_client.contracts import RecordStatus

__all__ = ["Replicator", "accept_pins", "choose_peers"]

log = logging.getLogger("hcl.gateway.replication")

#: records per pin request (the peer fetches them one after another within the request)
BATCH = 16


def choose_peers(peers: Sequence[Peer], record_id: bytes, count: int) -> list[Peer]:
    """``count`` peers for a record: consecutive in address order from a place its id's hash picks."""
    ordered = sorted(peers, key=lambda p: p.address.lower())
    if not ordered or count <= 0:
        return []
    start = int.from_bytes(hashlib.sha256(record_id).digest()[:8], "big") % len(ordered)
    return [ordered[(start + i) % len(ordered)] for i in range(min(count, len(ordered)))]


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    """The backlog as /healthz shows it: never a failure of the gateway, only something to watch."""

    backlog: int
    oldest_seconds: float | None
    last_error: str | None


class Replicator:
    """Drains the replication queue in a background thread (started and stopped with the gateway)."""

    def __init__(
        self,
        db: Database,
        federation: Federation,
        metrics: Metrics,
        *,
        replicas: int,
        poll: float = 1.0,
        max_backoff: float = 30.0,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.db = db
        self.ready = ready  # False while the read model, whose members are the directory, catches up
        self.federation = federation
        self.metrics = metrics
        self.replicas = replicas
        self.poll = poll
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="hcl-replication", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    def status(self) -> ReplicationStatus:
        b = replicas.backlog(self.db)
        self.metrics.replication_backlog.set(b.records)
        oldest = None if b.oldest_queued_at is None else max(0.0, time.time() - b.oldest_queued_at)
        return ReplicationStatus(b.records, oldest, b.last_error)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                while self.run_once() and not self._stopping.is_set():
                    pass  # a full round: more may be due at once
                self.status()
            except Exception:
                log.exception("replication round failed; retrying")
            self._wake.wait(self.poll)
            self._wake.clear()

    def run_once(self) -> int:
        """One round over what is due: asks each chosen peer for its records; returns how many were due."""
        now = time.time()
        due = replicas.due(self.db, now, BATCH * 8)
        if not due or not self.ready():  # an incomplete directory would choose other peers than the whole one
            return 0
        peers = self.federation.directory.peers()
        failed: dict[bytes, str] = {}
        if not peers:
            failed = dict.fromkeys(due, "no peer gateway with a verified endpoint in the directory")
        wanted: dict[str, list[bytes]] = defaultdict(list)
        by_address = {p.address: p for p in peers}
        for rid in due:
            for peer in choose_peers(peers, rid, self.replicas):
                wanted[peer.address].append(rid)
        for address, ids in wanted.items():
            for i in range(0, len(ids), BATCH):
                failed.update(self._ask(by_address[address], ids[i : i + BATCH]))
        with self.db.write() as conn:
            replicas.done(conn, [rid for rid in due if rid not in failed])
            replicas.retry_later(conn, failed, time.time(), max_backoff=self.max_backoff)  # after the wait
        return len(due)

    def _ask(self, peer: Peer, ids: list[bytes]) -> dict[bytes, str]:
        """The records ``peer`` did not pin, with why (empty when it pinned them all)."""
        try:
            self.federation.pin(peer, ids)
        except Exception as exc:  # noqa: BLE001 - any failure is retried later, and shown in /healthz
            self.metrics.replication_failures.inc()
            reason = f"{peer.name or peer.address}: {type(exc).__name__}: {exc}"
            log.warning("replication to a peer failed; will retry", extra={"gateway": peer.address, "error": reason})
            return dict.fromkeys(ids, reason)
        return {}


def accept_pins(db: Database, store: BlobStore, holder: str, record_ids: Sequence[bytes], *, timeout: float) -> None:
    """Pins the ciphertexts of ``holder``'s records on this gateway's node, each re-hashed against the chain.

    Every record is checked before anything is pinned: it must be registered (not retracted) and registered
    by ``holder`` — a peer cannot make this node keep arbitrary data. A replica already kept is fetched
    again cheaply (Kubo has it) and its ``pinned_at`` refreshed."""
    if not isinstance(store, IpfsBlobStore):
        raise errors.StorageUnavailable("this gateway keeps its records in a local directory: it holds no replicas")
    records = [_replicable(db, holder, rid) for rid in record_ids]
    for rec in records:
        try:
            store.replicate(rec.locator, rec.content_hash, timeout=timeout)
        except IntegrityMismatch as exc:
            raise errors.IntegrityError(f"record 0x{rec.record_id.hex()}: {exc}; not kept") from exc
        except BlobStoreError as exc:
            raise errors.StorageUnavailable(
                f"record 0x{rec.record_id.hex()} ({cid_to_str(rec.locator)}) could not be pinned: {exc}"
            ) from exc
        with db.write() as conn:
            replicas.record_replica(conn, rec.record_id, holder, rec.locator, int(time.time()))


def _replicable(db: Database, holder: str, record_id: bytes) -> read_model.ChainRecord:
    rec = read_model.record(db, record_id)
    if rec is None:
        raise errors.RecordNotFound(f"0x{record_id.hex()} is not a registered record")
    if rec.gateway.lower() != holder.lower():
        raise errors.NotRecordHolder(f"0x{record_id.hex()} was registered by another gateway")
    if rec.status == status_text(RecordStatus.RETRACTED):
        raise errors.RecordRetracted(f"0x{record_id.hex()} was retracted")
    return rec
