"""Wiring: build the gateway's components from settings, start and stop their background threads.

The components are plain objects with one job each (chain access, database, blob store, KEK, journal,
anchorer, strict-mode group commit, indexer, access policy, authenticator, metrics); :class:`Components` only holds them so routes
can reach them through FastAPI dependencies. The work itself lives in :mod:`gateway.services`, whose
functions take the :class:`Components`; this module builds them and knows nothing of HTTP.
"""

from __future__ import annotations

import enum
import functools
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from gateway.ledger.indexer_state import IndexerFollower, SharedIndexerState
from gateway.ledger.journal import Journal
from gateway.ledger.journal_index import JournalIndex
from gateway.ledger.journal_service import JournalAppender, JournalClient, JournalServer
from gateway.ledger.journal_view import JournalView
from gateway.ledger.member_names import MemberNames
from gateway.ledger.registrations import Registrar
from gateway.ledger.review_anchoring import anchor_pending
from gateway.ledger.strict_commit import StrictCommitter, ledger_commit
from gateway.notify.feed import AccessFeed
from gateway.notify.hub import EventHub
from gateway.notify.webhooks import Deliverer
from gateway.observability import Metrics
from gateway.ops.lock import GatewayLock
from gateway.settings import GatewaySettings, LedgerMode, StoreKind
from gateway.storage import read_model
from gateway.storage.blobs import BlobStore, make_store
from gateway.storage.category_keys import CategoryKeys
from gateway.storage.crypto import Kek
from gateway.storage.db import Database
from gateway.storage.keyrotation import finish_pending_rotation
from node_client._client import ChainClient
from node_client._exceptions import ChainUnavailable
from node_client.deploy import Ledger, Manifest
from node_client.signing import Domain

__all__ = ["Components", "Role", "build_components", "build_worker_components"]

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


class Role(enum.Enum):
    """Which part of the gateway a process plays (``settings.workers``)."""

    SINGLE = "single"  # the whole gateway in one process
    PRIMARY = "primary"  # of several: journal writer, anchorer, indexer; serves no HTTP
    WORKER = "worker"  # of several: serves HTTP, journals through the primary


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
    #: the patients' category keys this gateway holds (naming slots, registering blinded records)
    category_keys: CategoryKeys
    #: HMAC key of the keyed indexes (gateway.storage.versions, the identifier lookup): never logged, never on chain
    index_key: bytes = field(default=b"", repr=False)
    journal: Journal | None = None
    anchorer: Anchorer | None = None
    journal_index: JournalIndex | None = None
    anchor_guard: AnchorGuard | None = None
    member_names: MemberNames = field(default_factory=lambda: MemberNames(None))
    replicator: Replicator | None = None  # IPFS store with replicas > 0 only
    strict: StrictCommitter | None = None  # strict mode only
    #: where releases are journaled (batch mode): the journal itself, or a worker's client of the primary's
    appender: JournalAppender | None = None
    role: Role = Role.SINGLE
    journal_server: JournalServer | None = None  # the primary's, for its workers
    #: every process's: the live streams of new accesses (docs/notifications.md)
    events: EventHub | None = None
    #: the journal owner's (one process, or the primary): fill the outbox, deliver webhooks
    feed: AccessFeed | None = None
    deliverer: Deliverer | None = None
    _lock: GatewayLock | None = None

    def __post_init__(self) -> None:
        if self.appender is None:
            self.appender = self.journal
        s = self.settings
        if self.events is None:
            self.events = EventHub(self.db, interval=s.notify_poll)
        if self.role is not Role.WORKER and self.feed is None:
            self.feed = AccessFeed(
                self.db,
                self.member_names,
                self.category_keys,
                self.gateway_account.address,
                journal=self.journal,
                interval=s.notify_poll,
            )
            self.deliverer = Deliverer(
                self.db,
                self.metrics,
                interval=s.notify_poll,
                timeout=s.webhook_timeout,
                backoff=s.webhook_backoff,
                backoff_max=s.webhook_backoff_max,
            )

    def start(self) -> None:
        """Starts following the chain (the read model catches up in the background); starts anchoring in batch mode.

        The FHIR models load in the background (1-3 s) so the first upload is not the one that pays; not in
        a primary of several processes, which serves no uploads (25 MB less).
        """
        limit_recursion()
        if self.role is Role.WORKER:  # the primary holds the lock, checks the anchors, follows the chain
            threading.Thread(target=warm_up, name="hcl-fhir-warm-up", daemon=True).start()
            self.indexer.start()
            self._start_notifications()
            return
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
        if self.role is not Role.PRIMARY:  # a primary serves no HTTP, so never validates an upload
            threading.Thread(target=warm_up, name="hcl-fhir-warm-up", daemon=True).start()
        for address in read_model.member_addresses(self.db):
            self.member_names.member_added(address)  # members indexed before a restart, still unnamed?
        # the indexer catches up in its thread while the gateway serves (from genesis: minutes on a long
        # chain); until it has, decisions go to the chain and /healthz says ``catchingUp``
        self.indexer.start()
        if self.journal_server is not None:
            self.journal_server.start()
        if self.anchorer is not None and self.role is not Role.PRIMARY:
            self.anchorer.start()  # a primary's starts once its workers serve (gateway.processes)
        if self.strict is not None:
            self.strict.start()
        if self.replicator is not None:
            self.replicator.start()
        # reviews a failed anchor (chain down) left unanchored: in the background, the chain may be slow
        args = (self.db, self.ledger, self.gateway_account)
        threading.Thread(target=anchor_pending, args=args, name="hcl-review-anchor", daemon=True).start()
        self._start_notifications()

    def _start_notifications(self) -> None:
        for part in (self.events, self.feed, self.deliverer):
            if part is not None:
                part.start()

    def catch_up(self) -> None:
        """Indexes up to the head now, so a caller reads its own write (best effort: the poller retries)."""
        self.indexer.catch_up()

    def catch_up_to(self, block: int) -> None:
        """:meth:`catch_up`, unless the indexer has already seen a head at or after ``block`` (the uploads of
        one group commit share the poll the registrar made)."""
        if self.indexer.status().head_block < block:
            self.catch_up()

    def stop(self) -> None:
        for part in (self.events, self.feed, self.deliverer):
            if part is not None:
                part.stop()
        self.registrar.stop()
        if self.replicator is not None:
            self.replicator.stop()
        if self.anchorer is not None:
            self.anchorer.stop()
        if self.strict is not None:
            self.strict.stop()
        self.indexer.stop()
        self.federation.close()
        if self.journal_server is not None:
            self.journal_server.stop()
        if isinstance(self.appender, JournalClient):
            self.appender.close()
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


@dataclass
class _Parts:
    """What every process of a gateway builds alike: the chain, the stores, the account, the names."""

    settings: GatewaySettings
    manifest: Manifest
    ledger: Ledger
    db: Database
    account: LocalAccount
    names: MemberNames
    confirmations: int

    @classmethod
    def build(cls, settings: GatewaySettings) -> _Parts:
        # several processes send with one key: they take turns for nonces (none is needed in one process)
        nonce_lock = settings.nonce_lock_path if settings.workers > 1 else None
        client = ChainClient(rpc_url=settings.rpc_url, timeout=settings.rpc_timeout, nonce_lock=nonce_lock)
        manifest = Manifest.load(settings.manifest)
        ledger = manifest.connect(client)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        confirmations = manifest.confirmations if settings.confirmations is None else settings.confirmations
        return cls(
            settings,
            manifest,
            ledger,
            Database(settings.db_path),
            gateway_account(settings, dev=ledger.dev),
            MemberNames(Path(settings.manifest), manifest.members),
            confirmations,
        )

    def components(self, indexer: Indexer, kek: Kek, metrics: Metrics, **extra: Any) -> Components:
        """The :class:`Components` around ``indexer``, with the process's own ledger parts in ``extra``."""
        settings, db, account = self.settings, self.db, self.account
        auth = Authenticator(
            db,
            load_or_create_key(settings.token_key_file),
            domain=settings.public_url.split("://", 1)[-1],
            uri=settings.public_url,
            chain_id=self.manifest.chain_id,
            token_ttl=settings.token_ttl,
            challenge_ttl=settings.challenge_ttl,
        )
        category_keys = CategoryKeys(db, kek, Domain(self.manifest.chain_id, self.ledger.consents.address))
        policy = AccessPolicy(self.ledger, db=db, indexer=indexer, category_keys=category_keys)
        federation = Federation(
            Directory(db, self.names, account.address), account, timeout=settings.federation_timeout
        )
        return Components(
            settings=settings,
            manifest=self.manifest,
            ledger=self.ledger,
            gateway_account=account,
            db=db,
            store=make_store(settings),
            kek=kek,
            policy=policy,
            indexer=indexer,
            auth=auth,
            metrics=metrics,
            federation=federation,
            peers=PeerVerifier(policy, db),
            registrar=_registrar(settings, self.ledger, account, indexer, metrics),
            category_keys=category_keys,
            index_key=load_or_create_key(settings.index_key_file),
            member_names=self.names,
            **extra,
        )


def build_components(settings: GatewaySettings) -> Components:
    """The gateway of one process, or the primary of several (``settings.workers > 1``)."""
    p = _Parts.build(settings)
    metrics = Metrics()
    indexer = Indexer(
        p.ledger,
        p.db,
        deploy_block=p.manifest.deploy_block,
        poll_interval=settings.indexer_poll,
        member_names=p.names,
        confirmations=p.confirmations,
    )
    journal = anchorer = guard = strict = server = None
    if settings.ledger_mode is LedgerMode.STRICT:
        strict = StrictCommitter(
            ledger_commit(p.ledger, p.account, p.confirmations),
            max_batch=settings.strict_batch_max,
            on_batch=metrics.strict_batch_entries.observe,
        )
    if settings.ledger_mode is LedgerMode.BATCH:
        journal = Journal(
            settings.journal_path,
            segment_entries=settings.journal_segment_entries,
            segment_seconds=settings.journal_segment_seconds,
        )
        guard = AnchorGuard(
            journal, p.ledger, p.account, deploy_block=p.manifest.deploy_block, confirmations=p.confirmations
        )
        anchorer = Anchorer(
            journal, guard.anchor, interval=settings.anchor_interval, size_threshold=settings.anchor_threshold
        )
    if settings.workers > 1 and journal is not None and anchorer is not None:
        # the workers follow this indexer and append to this journal
        indexer.on_change = SharedIndexerState(settings.indexer_state_path, create=True).publish
        server = JournalServer(
            journal, settings.journal_socket, lagging=functools.partial(anchorer.lagging, settings.max_anchor_lag)
        )
    c = p.components(
        indexer,
        _kek(Path(settings.kek_file or settings.data_dir / "kek.key"), p.db),
        metrics,
        journal=journal,
        journal_index=JournalIndex(journal) if journal is not None else None,
        anchorer=anchorer,
        anchor_guard=guard,
        strict=strict,
        journal_server=server,
        role=Role.PRIMARY if server is not None else Role.SINGLE,
    )
    c.replicator = _replicator(settings, p.db, c.federation, metrics, indexer)
    return c


def build_worker_components(settings: GatewaySettings) -> Components:
    """An HTTP worker of a multi-process gateway: decides from the primary's read model (followed through
    its published indexer state), journals through the primary's journal server and reads the journal
    (proofs, exports, a patient's history) from its database."""
    p = _Parts.build(settings)
    follower = IndexerFollower(
        p.ledger,
        p.db,
        SharedIndexerState(settings.indexer_state_path),
        deploy_block=p.manifest.deploy_block,
        poll_interval=settings.indexer_poll,
        confirmations=p.confirmations,
    )
    kek = Kek.load(Path(settings.kek_file or settings.data_dir / "kek.key"))  # the primary made or rotated it
    view = JournalView(settings.journal_path)  # proofs, exports and the patient index, read from its database
    return p.components(
        follower,
        kek,
        Metrics(),
        journal=view,
        journal_index=JournalIndex(view),
        appender=JournalClient(settings.journal_socket),
        role=Role.WORKER,
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
