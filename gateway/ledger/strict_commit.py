"""Strict mode's group commit: concurrent releases' ledger entries mined in one ``logAccessBatch``.

Each release hands its entry to :class:`StrictCommitter` and waits for its own outcome. One thread sends
whatever has gathered (up to ``max_batch`` entries) as soon as the previous transaction is confirmed: a
busy gateway pays one transaction per batch, an idle one sends a batch of one at once (no timer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from node_client._client import TxResult
from node_client._exceptions import ChainUnavailable
from node_client.contracts import AccessEntry, AccessOutcome
from node_client.deploy import Ledger

__all__ = ["CommitFn", "Committed", "StrictCommitter", "ledger_commit"]

log = logging.getLogger("hcl.gateway.strict")

#: ``commit_fn(entries) -> (outcomes, tx)``: mines one batch (``logAccessBatch``), confirmed deep enough
CommitFn = Callable[[list[AccessEntry]], tuple[list[AccessOutcome], TxResult]]


@dataclass(frozen=True, slots=True)
class Committed:
    """One entry's outcome and the (confirmed) transaction that carried it."""

    outcome: AccessOutcome
    tx: TxResult


def ledger_commit(ledger: Ledger, account: LocalAccount, confirmations: int) -> CommitFn:
    """The gateway's commit function: ``logAccessBatch`` mined, then ``confirmations`` blocks deep."""

    def commit(entries: list[AccessEntry]) -> tuple[list[AccessOutcome], TxResult]:
        outcomes, tx = ledger.access.log_access_batch(account, entries)
        return outcomes, ledger.client.confirm(tx, confirmations)

    return commit


class StrictCommitter:
    """Collects entries from many threads and commits them in batches, one transaction at a time.

    A failed transaction (chain down, no receipt, the whole batch reverted) fails every entry it
    carried with that exception; a refused entry is an outcome (``logged`` false), not an exception.
    """

    def __init__(
        self, commit_fn: CommitFn, *, max_batch: int = 64, on_batch: Callable[[int], None] | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.commit_fn = commit_fn
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.batches = 0
        self._queue: list[tuple[AccessEntry, Future[Committed]]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, entry: AccessEntry) -> Future[Committed]:
        """Queues ``entry``; the future resolves once its transaction is confirmed (or fails)."""
        future: Future[Committed] = Future()
        with self._cond:
            if self._stopping:
                raise ChainUnavailable("the gateway is stopping: no more ledger entries")
            if self._thread is None:
                self.start()
            self._queue.append((entry, future))
            self._cond.notify()
        return future

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="hcl-strict-commit", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Lets the batch in flight finish; entries not sent yet fail (nothing of theirs is released)."""
        with self._cond:
            self._stopping = True
            left, self._queue = self._queue, []
            self._cond.notify_all()
        for _, future in left:
            if future.set_running_or_notify_cancel():
                future.set_exception(ChainUnavailable("the gateway stopped before the entry was sent"))
        if self._thread is not None:
            self._thread.join(timeout)

    def _take(self) -> list[tuple[AccessEntry, Future[Committed]]] | None:
        """The next batch (entries whose release gave up waiting are dropped); None once stopping."""
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                batch = [(e, f) for e, f in taken if f.set_running_or_notify_cancel()]
                if batch:
                    return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self._commit(batch)

    def _commit(self, batch: list[tuple[AccessEntry, Future[Committed]]]) -> None:
        try:
            outcomes, tx = self.commit_fn([e for e, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting release gets the failure; the loop must not die
            log.warning("strict batch of %d not ledgered: %s: %s", len(batch), type(exc).__name__, exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(Committed(outcome, tx))
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(batch))
