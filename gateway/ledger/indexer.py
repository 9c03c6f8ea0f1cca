"""The chain follower: contract events → the ``chain_*`` tables, block by block.

A background thread polls the head, reads every event of the deployment from the last indexed block on
(paged, in order) and applies a page in one SQLite transaction together with the new ``indexed_block``,
so the read model is always the state *at* some block. A poll that has applied everything up to the
head it read makes that head *seen*: ``synced`` says the read model is complete up to the newest block
the gateway has seen, and that it saw it recently. Release decisions may use the cache only then; a
revocation mined in block N is in force for every request that arrives after the gateway has seen
block N (one poll interval after it is mined, typically).

On a chain that can reorganise blocks (Clique) the read model follows the *confirmed* head, ``confirmations``
blocks below the newest, so a grant counts only once a short reorganisation can no longer take it back;
restricting events of the blocks above it (revocations, suspensions, retractions) are enforced at once
through :class:`~gateway.ledger.restrictions.PendingRestrictions`. Each poll first checks that the block the
read model is at is still on the chain (its hash); if a reorganisation deeper than the confirmation depth
replaced it, the read model is rebuilt from the deployment block (decisions go to the chain meanwhile).

Catching up with a long chain (a fresh data directory, a rebuild) happens in the indexer's thread while
the gateway serves: until the first poll reaches the head, :attr:`Indexer.catching_up` holds, decisions go
to the chain (the read model is not synced) and views only the read model can answer refuse
(:meth:`Indexer.require_complete`). Pages are sized by the events they return (:attr:`Indexer.page_events`:
a page's events are held in memory until it commits), and the timestamps of their blocks come in JSON-RPC
batches (one ``eth_getBlockByNumber`` per block was three quarters of a catch-up's time).

A decision reads several rows; :meth:`Indexer.view` names the block (number, hash, timestamp) the read
model is at and when the chain's head was last seen at most that block (the start of the last complete
poll), and :meth:`Indexer.unchanged_since` tells whether a page was applied meanwhile (a write
generation, odd while a page is being written), so a decision knows it read one block's state and
journals exactly that block.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from gateway import errors
from gateway.ledger.member_names import MemberNames
from gateway.ledger.restrictions import PendingRestrictions
from gateway.storage import read_model
from gateway.storage.db import Database, status_text
from node_client._exceptions import ChainUnavailable
from node_client.contracts import ConsentStatus, MemberStatus, RecordStatus
from node_client.deploy import Ledger
from node_client.events import EventRecord, read_events

__all__ = ["ChainReorganised", "Indexer", "IndexerStatus", "ReadModelView"]

log = logging.getLogger("hcl.gateway.indexer")

_MEMBER_STATUS = {
    "MemberSuspended": MemberStatus.SUSPENDED,
    "MemberReinstated": MemberStatus.ACTIVE,
    "MemberRemoved": MemberStatus.REMOVED,
}
_ACTIVE, _REVOKED = (status_text(ConsentStatus.ACTIVE), status_text(ConsentStatus.REVOKED))


class ChainReorganised(Exception):
    """A block the indexer relied on was replaced mid-poll; the next poll starts over from a known block."""


@dataclass(frozen=True, slots=True)
class IndexerStatus:
    indexed_block: int
    head_block: int
    last_poll: float
    error: str | None
    confirmations: int = 0
    reorgs: int = 0  # reorganisations that reached the read model (each one rebuilt it)
    pending_restrictions: int = 0
    catching_up: bool = False

    @property
    def lag_blocks(self) -> int:
        return max(0, self.head_block - self.indexed_block)


@dataclass(frozen=True, slots=True)
class ReadModelView:
    """The block the read model is at, for one decision (see :meth:`Indexer.view`)."""

    block: int
    block_hash: bytes
    block_time: int
    seen_at: float  # time.monotonic() at which the chain's head was at most ``block``
    generation: int


class Indexer:
    """Follows the chain into :class:`Database`. ``poll_once()`` is the unit of work; ``start()`` loops it."""

    def __init__(
        self,
        ledger: Ledger,
        db: Database,
        *,
        deploy_block: int,
        poll_interval: float = 0.25,
        page_size: int = 2_000,
        page_events: int = 5_000,
        member_names: MemberNames | None = None,
        confirmations: int = 0,
    ) -> None:
        self.ledger = ledger
        self.member_names = member_names
        self.db = db
        self.deploy_block = deploy_block
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.page_events = page_events  # events a page aims at (memory: a page is applied as one list)
        self._span = max(1, page_size // 8)  # blocks of the next page, adapted to the events per block
        self._page_times: dict[int, tuple[bytes, int]] = {}  # headers of the page being applied
        self.confirmations = max(0, confirmations)
        self.restrictions = PendingRestrictions()
        self.reorgs = 0
        self._head = 0
        self._head_time = 0  # timestamp of the seen head (see ``synced``)
        self._seen_head = 0  # the newest confirmed head whose events are all applied
        self._caught_up = False  # a poll has applied everything up to the head it read (see ``catching_up``)
        self._seen_at = 0.0  # monotonic time at which that poll read the head (the head was at most it then)
        self._indexed = int(db.get_meta("indexed_block", str(deploy_block - 1)) or 0)
        self._last_poll = 0.0
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._headers: dict[int, tuple[bytes, int]] = {}
        self._at: tuple[int, bytes, int] | None = None  # (indexed block, its hash, its timestamp)
        self._generation = 0  # bumped before and after each page is applied: odd while writing
        self._page_done = threading.Condition()  # notified when a page has been applied
        #: called after every change of the state above (the primary of several processes publishes it)
        self.on_change: Callable[[Indexer], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # ------------------------------------------------------------------ state

    @property
    def indexed_block(self) -> int:
        """The last block whose events are in the read model (kept in memory; persisted with each page)."""
        return self._indexed

    def status(self) -> IndexerStatus:
        return IndexerStatus(
            self.indexed_block,
            self._head,
            self._last_poll,
            self._error,
            self.confirmations,
            self.reorgs,
            len(self.restrictions),
            self.catching_up,
        )

    @property
    def head_time(self) -> int:
        """The timestamp of the newest block the gateway has seen (0 before the first complete poll)."""
        return self._head_time

    @property
    def freshness(self) -> float:
        """How long a completed poll keeps the read model usable for decisions (seconds).

        Also the longest a chain outage can go unnoticed by decisions: the gateway learns the chain is gone
        only when a poll fails, so this is kept short (a second at the default 0.25 s poll)."""
        return max(1.0, 4 * self.poll_interval)

    def view(self, wait: float = 0.0) -> ReadModelView | None:
        """The read model's block for a decision starting now, or ``None`` when it may not decide
        (not :attr:`synced`, or a page is being applied: waited for up to ``wait`` seconds, a few
        milliseconds of SQLite rather than a decision's calls to the chain). Check :meth:`unchanged_since`
        after reading."""
        if wait > 0 and self._generation & 1:
            with self._page_done:
                self._page_done.wait_for(lambda: not self._generation & 1, timeout=wait)
        generation = self._generation
        if generation & 1 or not self.synced:
            return None
        at, seen_at = self._at, self._seen_at
        if at is None or at[0] != self._indexed or self._generation != generation:
            return None
        return ReadModelView(at[0], at[1], at[2], seen_at, generation)

    def unchanged_since(self, generation: int) -> bool:
        """Whether no page was applied since a view of ``generation`` was taken (the rows read since
        are of its block)."""
        return self._generation == generation

    @property
    def catching_up(self) -> bool:
        """Whether no poll has reached the head yet since the gateway started (or since a rebuild after a
        deep reorganisation): the read model is incomplete, and may be by much. Decisions go to the chain;
        views that only the read model can answer say so (:class:`~gateway.errors.CatchingUp`)."""
        return not self._caught_up

    def require_complete(self) -> None:
        """For a view only the read model can answer (lists, history): :class:`~gateway.errors.CatchingUp`
        while it is :attr:`catching_up`, rather than an answer missing what it has not read yet."""
        if self.catching_up:
            raise errors.CatchingUp(f"the read model is at block {self._indexed} of {self._head}; ask again shortly")

    @property
    def synced(self) -> bool:
        """Whether the read model holds every event up to the newest head the gateway has seen, and that
        was recent (within :attr:`freshness`). A poll in progress does not unsync it; a failed one does."""
        return (
            self._error is None
            and self._seen_head > 0
            and self._indexed >= self._seen_head
            and time.monotonic() - self._seen_at < self.freshness
        )

    # ------------------------------------------------------------------ work

    def catch_up(self) -> None:
        """Indexes up to the head now, so a caller reads its own write (best effort: the poller retries).

        Not while :attr:`catching_up`: that poll may take minutes, and the read model is not synced
        meanwhile, so readers ask the chain anyway."""
        if self.catching_up:
            return
        try:
            self.poll_once()
        except Exception:  # noqa: BLE001 - the write stands; reading it back waits for the poller
            log.warning("catch-up indexing failed; the indexer thread will retry")

    def poll_once(self) -> int:
        """Indexes up to the confirmed head, notes the restrictions above it; returns the events applied."""
        with self._lock:
            polled_at = time.monotonic()  # the chain's head at this moment was at most the one read next
            head = self.ledger.client.block_number()
            head_time = self._header(head, fresh=True)[1]
            self._head = max(self._head, head)
            confirmed = head - self.confirmations
            self._follow_reorgs(confirmed)
            applied = 0
            start = self.indexed_block + 1
            while start <= confirmed and not self._stopping():
                end = min(start + self._span - 1, confirmed)
                events = self._apply_page(start, end)
                applied += events
                self._span = self._next_span(end - start + 1, events)
                start = end + 1
            if self._at is None or self._at[0] != self._indexed:  # nothing to apply since the gateway started
                at_hash, at_time = self._header(self._indexed)
                self._generation += 1
                self._changed()
                self._at = (self._indexed, at_hash, at_time)
                self._generation += 1
                self._changed()
            if self._indexed >= confirmed:  # (a poll stopped mid-way leaves the rest to the next one)
                self._note_unconfirmed(head)
            if self.member_names is not None:
                self.member_names.refresh()  # names of members added at run time (a stat unless one lacks it)
            self._last_poll = time.monotonic()
            if self._indexed >= confirmed:
                self._head_time = head_time
                self._seen_head = max(self._seen_head, confirmed)
                self._caught_up = True
                self._seen_at = polled_at
            self._error = None
            self._changed()
        return applied

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hcl-indexer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def registration(self, record_id: bytes) -> tuple[bytes, bytes] | None:
        """(contentHash, locator) of the record's registration, asked of the chain (one ``eth_getLogs``
        filtered by its id, up to the confirmed head): for a release while the read model catches up."""
        client = self.ledger.client
        confirmed = client.block_number() - self.confirmations
        found = read_events(
            client,
            {"RecordRegistry": self.ledger.addresses["RecordRegistry"]},
            from_block=self.deploy_block,
            to_block=confirmed,
            names=("RecordRegistered",),
            page_size=max(1, confirmed - self.deploy_block + 1),
            topics=[None, "0x" + record_id.hex()],
        )
        for ev in found:
            return bytes(ev.args["contentHash"]), bytes(ev.args["locator"])
        return None

    def _stopping(self) -> bool:
        """Whether the poller thread is asked to stop (a long catch-up ends between pages)."""
        return self._stop.is_set() and threading.current_thread() is self._thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except ChainUnavailable as exc:
                self._error = f"chain unavailable: {exc}"
            except ChainReorganised as exc:
                self._error = f"chain reorganised: {exc}"
                log.warning("indexer poll restarted: %s", exc)
            except Exception as exc:  # keep following; the error is visible in /healthz
                self._error = f"{type(exc).__name__}: {exc}"
                log.exception("indexer poll failed")
            self._changed()  # an error unsyncs the workers' followers too
            self._stop.wait(self.poll_interval)

    def _next_span(self, span: int, events: int) -> int:
        """Blocks in the next page: about :attr:`page_events` events' worth at the density just read (a
        page is held in memory until it commits), at most twice the last span and :attr:`page_size`."""
        if events == 0:
            return min(self.page_size, 2 * span)
        return max(1, min(self.page_size, 2 * span, span * self.page_events // events))

    def _apply_page(self, start: int, end: int) -> int:
        """Blocks ``start..end`` into the read model in one transaction, if they extend the block it is at.

        The timestamps of the blocks with events (and the end block's hash) come in JSON-RPC batches,
        read after the logs as one fresh read each; the check of the block the read model is at follows."""
        events = list(read_events(self.ledger.client, self.ledger.addresses, from_block=start, to_block=end))
        headers = self.ledger.client.block_headers([end, *(ev.block_number for ev in events)])
        end_hash, end_time = headers[end]
        self._headers[end] = (end_hash, end_time)
        if self._at is not None and self.ledger.client.block_hash(self._at[0]) != self._at[1]:
            raise ChainReorganised(f"block {self._at[0]} was replaced while block {end} was read")
        self._generation += 1
        self._changed()
        try:
            with self.db.write() as conn:
                self._page_times = headers
                for ev in events:
                    self._apply(conn, ev)
                self.db.set_meta(conn, "indexed_block", end)
                self.db.set_meta(conn, "indexed_hash", end_hash.hex())
            self._indexed = end
            self._at = (end, end_hash, end_time)
        finally:
            self._page_times = {}
            self._generation += 1
            self._changed()
            with self._page_done:
                self._page_done.notify_all()
        return len(events)

    def _note_unconfirmed(self, head: int) -> None:
        """Restricting events of the blocks above the read model, enforced before they are confirmed."""
        if self.confirmations and head > self._indexed:
            self.restrictions.observe(
                read_events(self.ledger.client, self.ledger.addresses, from_block=self._indexed + 1, to_block=head)
            )
        self.restrictions.confirmed_up_to(self._indexed)

    def _follow_reorgs(self, confirmed: int) -> None:
        """If the block the read model is at is no longer on the chain, rebuild the read model.

        The blocks of a reorganisation deeper than the confirmation depth cannot be told apart from the
        read model's rows, so everything derived from the chain is dropped and read again from the
        deployment block; until that is done the indexer is not synced and decisions go to the chain.
        """
        stored = self.db.get_meta("indexed_hash")
        if self._indexed < self.deploy_block or stored is None:
            return
        on_chain = (
            self.ledger.client.block_hash(self._indexed) if self._indexed <= confirmed + self.confirmations else None
        )
        if on_chain is not None and on_chain.hex() == stored:
            return
        self.reorgs += 1
        log.error(
            "the chain replaced block %d the read model was at (reorganisation deeper than %d): rebuilding",
            self._indexed,
            self.confirmations,
        )
        self._generation += 1
        self._changed()
        try:
            with self.db.write() as conn:
                read_model.clear(conn)
                self.db.set_meta(conn, "indexed_block", self.deploy_block - 1)
                conn.execute("DELETE FROM meta WHERE key = 'indexed_hash'")
            self._indexed, self._at, self._seen_head = self.deploy_block - 1, None, 0
            self._caught_up = False
            self._headers.clear()
        finally:
            self._generation += 1
            self._changed()

    # ------------------------------------------------------------------ events

    def _header(self, block: int, *, fresh: bool = False) -> tuple[bytes, int]:
        """(hash, timestamp) of ``block``, asked once (``fresh``: asked again, it may have been replaced)."""
        h = None if fresh else self._headers.get(block)
        if h is None:
            b = self.ledger.client.rpc(lambda: self.ledger.client.w3.eth.get_block(block))
            h = (bytes(b["hash"]), int(b["timestamp"]))
            if not fresh:  # a fresh read may be of a block not yet confirmed: never cached
                if len(self._headers) > 10_000:
                    self._headers.clear()
                self._headers[block] = h
        return h

    def _time(self, block: int) -> int:
        """The timestamp of an event's block (of the page being applied: batched; else asked once)."""
        h = self._page_times.get(block)
        return h[1] if h is not None else self._header(block)[1]

    def _apply(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        """One event into the read model (events the read model does not keep are skipped)."""
        handler = self._HANDLERS.get((ev.contract, ev.name))
        if handler is not None:
            handler(self, conn, ev)

    # MemberRegistry

    def _member_added(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT INTO chain_members (address, status, roles, encryption_key, metadata_hash, since_block)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET status = excluded.status,"
            " roles = excluded.roles, encryption_key = excluded.encryption_key,"
            " metadata_hash = excluded.metadata_hash, since_block = excluded.since_block",
            (a["member"], MemberStatus.ACTIVE, a["roles"], a["encryptionKey"], a["metadataHash"], ev.block_number),
        )
        if self.member_names is not None:
            self.member_names.member_added(a["member"])

    def _member_status(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        """MemberSuspended, MemberReinstated, MemberRemoved."""
        conn.execute(
            "UPDATE chain_members SET status = ? WHERE address = ?", (_MEMBER_STATUS[ev.name], ev.args["member"])
        )

    def _member_roles_changed(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        conn.execute("UPDATE chain_members SET roles = ? WHERE address = ?", (ev.args["roles"], ev.args["member"]))

    def _encryption_key_rotated(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        conn.execute(
            "UPDATE chain_members SET encryption_key = ? WHERE address = ?",
            (ev.args["encryptionKey"], ev.args["member"]),
        )

    # ConsentRegistry

    def _consent_granted(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT INTO chain_consents (patient, grantee, consent_id, categories, purposes, valid_from,"
            " valid_until, status, signer, block, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (patient, grantee) DO UPDATE SET consent_id = excluded.consent_id,"
            " categories = excluded.categories, purposes = excluded.purposes, valid_from = excluded.valid_from,"
            " valid_until = excluded.valid_until, status = excluded.status, signer = excluded.signer,"
            " block = excluded.block, tx_hash = excluded.tx_hash",
            (
                a["patient"],
                a["grantee"],
                a["consentId"],
                a["categories"],
                a["purposes"],
                a["validFrom"],
                a["validUntil"],
                _ACTIVE,
                a["signer"],
                ev.block_number,
                ev.tx_hash,
            ),
        )
        self._consent_event(conn, ev, "granted")

    def _consent_revoked(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "UPDATE chain_consents SET status = ?, block = ?, tx_hash = ? WHERE patient = ? AND grantee = ?",
            (_REVOKED, ev.block_number, ev.tx_hash, a["patient"], a["grantee"]),
        )
        self._consent_event(conn, ev, "revoked")

    def _consent_event(self, conn: sqlite3.Connection, ev: EventRecord, kind: str) -> None:
        a = ev.args
        conn.execute(
            "INSERT OR IGNORE INTO chain_consent_events (consent_id, kind, patient, grantee, categories, purposes,"
            " valid_from, valid_until, signer, block, time, tx_hash, log_index)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a["consentId"],
                kind,
                a["patient"],
                a["grantee"],
                a.get("categories"),
                a.get("purposes"),
                a.get("validFrom"),
                a.get("validUntil"),
                a["signer"],
                ev.block_number,
                self._time(ev.block_number),
                ev.tx_hash,
                ev.log_index,
            ),
        )

    def _guardian_set(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT INTO chain_guardians (patient, guardian, valid_until) VALUES (?, ?, ?)"
            " ON CONFLICT (patient, guardian) DO UPDATE SET valid_until = excluded.valid_until",
            (a["patient"], a["guardian"], a["validUntil"]),
        )

    def _guardian_removed(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        conn.execute(
            "DELETE FROM chain_guardians WHERE patient = ? AND guardian = ?", (ev.args["patient"], ev.args["guardian"])
        )

    def _emergency_opt_out_set(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        conn.execute(
            "INSERT INTO chain_optouts (patient, opted_out, block) VALUES (?, ?, ?)"
            " ON CONFLICT (patient) DO UPDATE SET opted_out = excluded.opted_out, block = excluded.block",
            (ev.args["patient"], int(ev.args["optedOut"]), ev.block_number),
        )

    def _emergency_access_granted(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT OR REPLACE INTO chain_emergency (access_id, patient, member, categories, valid_until,"
            " reason_hash, block, time, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a["accessId"],
                a["patient"],
                a["member"],
                a["categories"],
                a["validUntil"],
                a["reasonHash"],
                ev.block_number,
                self._time(ev.block_number),
                ev.tx_hash,
            ),
        )

    # RecordRegistry

    def _record_registered(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT OR REPLACE INTO chain_records (record_id, patient, provider, category, content_hash, locator,"
            " status, gateway, block, time, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                a["recordId"],
                a["patient"],
                a["provider"],
                a["category"],
                a["contentHash"],
                a["locator"],
                status_text(RecordStatus.ACTIVE),
                a["gateway"],
                ev.block_number,
                self._time(ev.block_number),
                ev.tx_hash,
            ),
        )

    def _record_amended(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        self._record_status(conn, ev.args["previousRecordId"], RecordStatus.AMENDED)

    def _record_retracted(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        self._record_status(conn, ev.args["recordId"], RecordStatus.RETRACTED)

    def _record_status(self, conn: sqlite3.Connection, record_id: bytes, status: RecordStatus) -> None:
        conn.execute("UPDATE chain_records SET status = ? WHERE record_id = ?", (status_text(status), record_id))

    # AccessLedger

    def _access_logged(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT OR IGNORE INTO chain_accesses (tx_hash, log_index, requester, patient, record_id, consent_id,"
            " purpose, emergency, access_hash, block, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.tx_hash,
                ev.log_index,
                a["requester"],
                a["patient"],
                a["recordId"],
                a["consentId"],
                a["purpose"],
                int(a["emergency"]),
                a["accessHash"],
                ev.block_number,
                self._time(ev.block_number),
            ),
        )

    def _access_batch_anchored(self, conn: sqlite3.Connection, ev: EventRecord) -> None:
        a = ev.args
        conn.execute(
            "INSERT OR IGNORE INTO chain_anchors (gateway, idx, root, tree_size, anchored_at, block, tx_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (a["gateway"], a["index"], a["root"], a["treeSize"], a["anchoredAt"], ev.block_number, ev.tx_hash),
        )

    #: (contract, event) → the method that applies it; events not listed are not kept in the read model
    _HANDLERS: ClassVar[dict[tuple[str, str], Callable[[Indexer, sqlite3.Connection, EventRecord], None]]] = {
        ("MemberRegistry", "MemberAdded"): _member_added,
        ("MemberRegistry", "MemberSuspended"): _member_status,
        ("MemberRegistry", "MemberReinstated"): _member_status,
        ("MemberRegistry", "MemberRemoved"): _member_status,
        ("MemberRegistry", "MemberRolesChanged"): _member_roles_changed,
        ("MemberRegistry", "EncryptionKeyRotated"): _encryption_key_rotated,
        ("ConsentRegistry", "ConsentGranted"): _consent_granted,
        ("ConsentRegistry", "ConsentRevoked"): _consent_revoked,
        ("ConsentRegistry", "GuardianSet"): _guardian_set,
        ("ConsentRegistry", "GuardianRemoved"): _guardian_removed,
        ("ConsentRegistry", "EmergencyOptOutSet"): _emergency_opt_out_set,
        ("ConsentRegistry", "EmergencyAccessGranted"): _emergency_access_granted,
        ("RecordRegistry", "RecordRegistered"): _record_registered,
        ("RecordRegistry", "RecordAmended"): _record_amended,
        ("RecordRegistry", "RecordRetracted"): _record_retracted,
        ("AccessLedger", "AccessLogged"): _access_logged,
        ("AccessLedger", "AccessBatchAnchored"): _access_batch_anchored,
    }
