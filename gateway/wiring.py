"""Wiring: build the gateway's components from settings, start and stop their background threads.

The components are plain objects with one job each (chain access, database, blob store, KEK, journal,
anchorer, strict-mode group commit, indexer, access policy, authenticator, metrics); :class:`Components` only holds them so routes
can reach them through FastAPI dependencies. The work itself lives in :mod:`gateway.services`, whose
functions take the :class:`Components`; this module builds them and knows nothing of HTTP.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from gateway.access.auth import Authenticator, load_or_create_key
from gateway.access.peers import PeerVerifier
from gateway.access.policy import AccessPolicy
from gateway.federation.directory import Directory
from gateway.federation.outbound import Federation
from gateway.federation.replication import Replicator
from gateway.fhir import warm_up
from gateway.ledger.account import gateway_account
from gateway.ledger.anchoring import Anchorer, AnchorGuard
from gateway.ledger.indexer import Indexer
from gateway.ledger.journal import Journal
from gateway.ledger.journal_index import JournalIndex
from gateway.ledger.member_names import MemberNames
from gateway.ledger.registrations import Registrar
from gateway.ledger.strict_commit import StrictCommitter, ledger_commit
from gateway.observability import Metrics
from gateway.ops.lock import GatewayLock
from gateway.settings import GatewaySettings, LedgerMode, StoreKind
from gateway.storage import read_model
from gateway.storage.blobs import BlobStore, make_store
from gateway.storage.crypto import Kek
from gateway.storage.db import Database
from gateway.storage.keyrotation import finish_pending_rotation
from node_client._client import ChainClient
from node_client._exceptions import ChainUnavailable
from node_client.deploy import Ledger, Manifest

__all__ = ["Components", "build_components"]

log = logging.getLogger("hcl.gateway")

#: The interpreter's default recursion limit, restored when the gateway starts. py_ecc (imported by
#: web3 through eth_keys) raises the limit to 100,000 on import; with that, Python's json decoder (which
#: FastAPI uses for every JSON body) recurses into a body of ``[`` x 100,000 until the C stack
#: overflows and the whole process dies: one unauthenticated request to /v1/auth/challenge. With the
#: default limit the decoder raises RecursionError and the request is a 400 invalid_request.
RECURSION_LIMIT = 1000


def limit_recursion() -> None:
    """Puts the recursion limit back to :data:`RECURSION_LIMIT` if something raised it."""
    if sys.getrecursionlimit() > RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)


@dataclass
class Components:
    settings: GatewaySettings
    manifest: Manifest
    ledger: Ledger
    gateway_account: LocalAccount
    db: Database
    store: BlobStore
    kek: Kek
    policy: AccessPolicy
    indexer: Indexer
    auth: Authenticator
    metrics: Metrics
    federation: Federation
    peers: PeerVerifier
    registrar: Registrar
    journal: Journal | None = None
    anchorer: Anchorer | None = None
    journal_index: JournalIndex | None = None
    anchor_guard: AnchorGuard | None = None
    member_names: MemberNames = field(default_factory=lambda: MemberNames(None))
    replicator: Replicator | None = None  # IPFS store with replicas > 0 only
    strict: StrictCommitter | None = None  # strict mode only
    _lock: GatewayLock | None = None

    def start(self) -> None:
        """Starts following the chain (the read model catches up in the background); starts anchoring in batch mode.

        The FHIR models load in the background (1-3 s) so the first upload is not the one that pays.
        """
        limit_recursion()
        # one gateway per data dir (reconcile takes the same lock, so it never runs beside a gateway)
        self._lock = GatewayLock(self.settings.data_dir).acquire()
        if self.anchor_guard is not None:
            # the chain must not hold an anchor this journal cannot reproduce (journal rolled back or
            # replaced): then refuse to start. Anchors mined but not recorded (crash) are recorded here.
            try:
                self.anchor_guard.check()
            except ChainUnavailable:
                log.warning("chain unavailable at start: the journal's anchors are checked before the first anchor")
            except BaseException:
                self._lock.release()
                raise
        threading.Thread(target=warm_up, name="hcl-fhir-warm-up", daemon=True).start()
        for address in read_model.member_addresses(self.db):
            self.member_names.member_added(address)  # members indexed before a restart, still unnamed?
        # the indexer catches up in its thread while the gateway serves (from genesis: minutes on a long
        # chain); until it has, decisions go to the chain and /healthz says ``catchingUp``
        self.indexer.start()
        if self.anchorer is not None:
            self.anchorer.start()
        if self.strict is not None:
            self.strict.start()
        if self.replicator is not None:
            self.replicator.start()

    def catch_up(self) -> None:
        """Indexes up to the head now, so a caller reads its own write (best effort: the poller retries)."""
        self.indexer.catch_up()

    def catch_up_to(self, block: int) -> None:
        """:meth:`catch_up`, unless the indexer has already seen a head at or after ``block`` (the uploads of
        one group commit share the poll the registrar made)."""
        if self.indexer.status().head_block < block:
            self.catch_up()

    def stop(self) -> None:
        self.registrar.stop()
        if self.replicator is not None:
            self.replicator.stop()
        if self.anchorer is not None:
            self.anchorer.stop()
        if self.strict is not None:
            self.strict.stop()
        self.indexer.stop()
        self.federation.close()
        if self.journal is not None:
            self.journal.close()
        self.db.close()
        if self._lock is not None:
            self._lock.release()


def _kek(path: Path, db: Database) -> Kek:
    finish_pending_rotation(path, db)
    if not path.exists():
        log.info("creating a new key-encryption key", extra={"path": str(path)})
        Kek.generate(path)
    return Kek.load(path)


def build_components(settings: GatewaySettings) -> Components:
    client = ChainClient(rpc_url=settings.rpc_url, timeout=settings.rpc_timeout)
    manifest = Manifest.load(settings.manifest)
    ledger = manifest.connect(client)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    store = make_store(settings)
    account = gateway_account(settings, dev=ledger.dev)
    metrics = Metrics()
    names = MemberNames(Path(settings.manifest), manifest.members)
    confirmations = manifest.confirmations if settings.confirmations is None else settings.confirmations
    indexer = Indexer(
        ledger,
        db,
        deploy_block=manifest.deploy_block,
        poll_interval=settings.indexer_poll,
        member_names=names,
        confirmations=confirmations,
    )
    auth = Authenticator(
        db,
        load_or_create_key(settings.token_key_file),
        domain=settings.public_url.split("://", 1)[-1],
        uri=settings.public_url,
        chain_id=manifest.chain_id,
        token_ttl=settings.token_ttl,
        challenge_ttl=settings.challenge_ttl,
    )
    policy = AccessPolicy(ledger, db=db, indexer=indexer)
    federation = Federation(Directory(db, names, account.address), account, timeout=settings.federation_timeout)
    journal = anchorer = guard = strict = None
    if settings.ledger_mode is LedgerMode.STRICT:
        strict = StrictCommitter(
            ledger_commit(ledger, account, confirmations),
            max_batch=settings.strict_batch_max,
            on_batch=metrics.strict_batch_entries.observe,
        )
    if settings.ledger_mode is LedgerMode.BATCH:
        journal = Journal(
            settings.journal_path,
            segment_entries=settings.journal_segment_entries,
            segment_seconds=settings.journal_segment_seconds,
        )
        guard = AnchorGuard(journal, ledger, account, deploy_block=manifest.deploy_block, confirmations=confirmations)
        anchorer = Anchorer(
            journal, guard.anchor, interval=settings.anchor_interval, size_threshold=settings.anchor_threshold
        )
    return Components(
        settings=settings,
        manifest=manifest,
        ledger=ledger,
        gateway_account=account,
        db=db,
        store=store,
        kek=_kek(Path(settings.kek_file or settings.data_dir / "kek.key"), db),
        policy=policy,
        indexer=indexer,
        auth=auth,
        metrics=metrics,
        federation=federation,
        peers=PeerVerifier(policy, db),
        registrar=_registrar(settings, ledger, account, indexer, metrics),
        journal=journal,
        journal_index=JournalIndex(journal) if journal is not None else None,
        anchorer=anchorer,
        anchor_guard=guard,
        member_names=names,
        replicator=_replicator(settings, db, federation, metrics, indexer),
        strict=strict,
    )


def _registrar(
    settings: GatewaySettings, ledger: Ledger, account: LocalAccount, indexer: Indexer, metrics: Metrics
) -> Registrar:
    def observe(uploads: int, records: int) -> None:
        metrics.registration_uploads.observe(uploads)

    return Registrar(
        ledger.records, account, catch_up=indexer.catch_up, max_records=settings.registration_batch_max, observe=observe
    )


def _replicator(
    settings: GatewaySettings, db: Database, federation: Federation, metrics: Metrics, indexer: Indexer
) -> Replicator | None:
    """The replication worker when records live on IPFS and replicas are wanted (a directory has no swarm);
    it waits while the read model catches up (the peers it chooses from are the read model's members)."""
    if settings.store is not StoreKind.IPFS or settings.replicas == 0:
        return None
    return Replicator(db, federation, metrics, replicas=settings.replicas, ready=lambda: not indexer.catching_up)
