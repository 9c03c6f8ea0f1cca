"""The feed: follows the journal and the read model and puts every new access in the outbox.

It runs in the process that owns the journal (one process, or the primary of several), so an access
released by any HTTP worker is seen once, where it becomes durable, and never on the request path: a
release does not wait for a notification. Strict-mode accesses come from the read model (the chain's
``AccessLogged`` events). Where it has got to is kept with the events it wrote, in one transaction, so a
restart neither repeats nor loses one; the first start begins at the present (no flood of old accesses).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from gateway.ledger.journal import Journal
from gateway.ledger.member_names import MemberNames
from gateway.storage import notifications, read_model
from gateway.storage.category_keys import CategoryKeys
from gateway.storage.db import Database
from node_client.journal_entry import JournalEntry
from node_client.vocabulary import PURPOSES

__all__ = ["AccessFeed"]

log = logging.getLogger("hcl.gateway.notify")

#: accesses moved into the outbox per transaction
BATCH = 500
#: how long a delivered event stays in the outbox (a stream resuming with Last-Event-ID finds it), and how
#: often older ones are removed
KEEP_SECONDS = 7 * 86_400
PRUNE_EVERY = 3600.0


class AccessFeed:
    """A thread that moves new journal entries and strict accesses into ``access_events``."""

    def __init__(
        self,
        db: Database,
        names: MemberNames,
        keys: CategoryKeys,
        gateway: str,
        *,
        journal: Journal | None,
        interval: float,
    ) -> None:
        self.db, self.names, self.keys, self.gateway = db, names, keys, gateway
        self.journal, self.interval = journal, interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if journal is not None:
            journal.add_commit_listener(lambda _size: self._wake.set())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hcl-notify-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        pruned = 0.0
        while not self._stop.is_set():
            behind = False
            try:
                behind = self.poll() >= BATCH
                if time.monotonic() - pruned > PRUNE_EVERY:
                    with self.db.write() as conn:
                        notifications.prune(conn, time.time() - KEEP_SECONDS)
                    pruned = time.monotonic()
            except Exception:  # a closed journal at shutdown, a locked database: try again next time
                log.warning("notification feed poll failed", exc_info=True)
            if not behind:
                self._wake.wait(self.interval)
                self._wake.clear()

    def poll(self) -> int:
        """Moves what is new into the outbox (a step of at most ``BATCH`` per source); answers how many
        events it added."""
        return self._journal() + self._chain()

    def _journal(self) -> int:
        if self.journal is None:
            return 0
        size, start = self.journal.size, notifications.position(self.db, "journal")
        if start is None or start > size:  # first start (or a journal replaced): from now on
            start = size
        size = min(size, start + BATCH)  # a long way behind (a restart under load): a bounded step at a time
        entries = list(self.journal.entries(start, size))
        added = 0
        with self.db.write() as conn:
            for idx, e, _leaf in entries:
                ledger = {"mode": "batch", "journalIndex": idx}
                added += self._add(conn, e, e.released_at // 1000, ledger)
            notifications.set_position(conn, self.db, "journal", size)
        return added

    def _chain(self) -> int:
        last, start = read_model.last_access_row(self.db), notifications.position(self.db, "chain")
        if start is None:
            start = last
        elif start > last:  # the read model was rebuilt: read it again (the outbox drops repeats)
            start = 0
        rows = read_model.accesses_after(self.db, start, limit=BATCH)
        added = 0
        with self.db.write() as conn:
            for n, a in rows:
                start = n
                if a.time < time.time() - KEEP_SECONDS:  # re-read after a rebuild, its event long pruned: old news
                    continue
                ledger = {"mode": "strict", "txHash": a.tx_hash, "blockNumber": a.block}
                added += self._add(conn, a, a.time, ledger)
            notifications.set_position(conn, self.db, "chain", start)
        return added

    def _add(
        self, conn: sqlite3.Connection, e: JournalEntry | read_model.PatientAccess, at: int, ledger: dict[str, Any]
    ) -> bool:
        """Puts one access in the outbox, shaped as the access log shows it (``GET /v1/me/access-log``)."""
        record = read_model.record(self.db, e.record_id)
        holder = record.gateway if record is not None else self.gateway
        payload = {
            "accessId": "0x" + e.access_hash.hex(),
            "patient": e.patient,
            "requester": e.requester,
            "requesterName": self.names.get(e.requester, ""),
            "recordId": "0x" + e.record_id.hex(),
            "category": self.keys.name_slot(e.patient, record.category) if record is not None else None,
            "purpose": PURPOSES[e.purpose].slug,
            "emergency": e.emergency,
            "time": at,
            "holder": holder,
            "holderName": self.names.get(holder, ""),
            "ledger": ledger,
        }
        provider = record.provider if record is not None else None
        return notifications.add_event(conn, e.access_hash, e.patient, provider, payload) is not None
