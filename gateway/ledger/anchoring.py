"""Anchoring: the journal's Merkle roots published on-chain, and the journal and the chain kept in agreement.

:class:`Anchorer` publishes the journal's root (``AccessLedger.anchorBatch(root, treeSize)``) every few
seconds, or sooner once enough entries wait; :class:`AnchorGuard` is the anchor function the gateway gives
it, which first checks (:func:`sync_anchors`) that every anchor the chain holds for this gateway is one the
journal reproduces. ``hcl gateway reconcile`` runs the same check (:mod:`gateway.ops.reconcile`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from eth_account.signers.local import LocalAccount

from gateway.crashpoints import crashpoint
from gateway.ledger.journal import Anchor, Journal, JournalError
from node_client._exceptions import TransactionError
from node_client.deploy import Ledger

__all__ = ["AnchorFn", "AnchorGuard", "Anchorer", "AnchorsAdopted", "JournalBehindChain", "sync_anchors"]

log = logging.getLogger("hcl.gateway.journal")


class JournalBehindChain(JournalError):
    """The chain holds an anchor of this gateway that the journal cannot reproduce: the journal was
    rolled back, truncated or replaced (or belongs to another chain). The gateway refuses to start."""


class AnchorsAdopted(JournalError):
    """Anchors found on-chain were recorded just now; the anchorer computes its next root again."""


# ---------------------------------------------------------------------------------------- anchorer

#: ``anchor_fn(root, tree_size) -> (tx_hash, block_number)``: publishes a root (``anchorBatch``).
AnchorFn = Callable[[bytes, int], tuple[str, int]]


class Anchorer:
    """Anchors the journal's root on-chain every ``interval`` seconds, or sooner once
    ``size_threshold`` entries are waiting. Failures are logged, exposed and retried next interval.

    ``anchor_fn`` is injected (the gateway passes one calling ``AccessLedger.anchorBatch``). It is
    never called concurrently. If it succeeds but the anchor cannot be recorded locally, the anchor
    is kept and recorded on the next round rather than anchoring the same size twice (the contract
    would refuse a size that does not grow).
    """

    def __init__(
        self,
        journal: Journal,
        anchor_fn: AnchorFn,
        *,
        interval: float = 2.0,
        size_threshold: int = 10_000,
        retry_interval: float | None = None,
    ) -> None:
        if interval <= 0 or size_threshold < 1:
            raise ValueError("interval must be > 0 and size_threshold >= 1")
        self.journal = journal
        self.anchor_fn = anchor_fn
        self.interval = interval
        self.size_threshold = size_threshold
        self.retry_interval = interval if retry_interval is None else retry_interval
        #: the last failure (``"ExceptionType: message"``), cleared by the next success
        self.last_error: str | None = None
        self.anchors_made = 0
        self.failures = 0
        self._attempt_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unrecorded: Anchor | None = None
        self._backoff_until = 0.0
        journal.add_commit_listener(self._on_commit)

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest entry not yet anchored (0.0 when everything is anchored)."""
        since = self.journal.unanchored_since()
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def lagging(self, bound: float) -> str | None:
        """Why no release may be journaled now (the oldest unanchored entry is older than ``bound`` s), or None."""
        lag = self.lag_seconds
        if lag <= bound:
            return None
        return f"the oldest journal entry has waited {lag:.0f}s for its anchor (bound {bound:.0f}s); nothing released"

    def _anchored_size(self) -> int:
        last = self.journal.last_anchor()
        return last.tree_size if last else 0

    def _on_commit(self, size: int) -> None:
        if size - self._anchored_size() >= self.size_threshold and time.monotonic() >= self._backoff_until:
            self._wake.set()

    def anchor_once(self) -> Anchor | None:
        """Anchors what is pending now, in the calling thread; raises what ``anchor_fn`` raises."""
        with self._attempt_lock:
            if self._unrecorded is not None:  # anchored on-chain last time, but not recorded
                u = self._unrecorded
                try:
                    self.journal.record_anchor(*u)
                except ValueError:  # recorded meanwhile (or superseded): nothing left to do
                    log.warning("dropping unrecorded anchor at size %d", u.tree_size)
                self._unrecorded = None
                self.anchors_made += 1
            pending = self.journal.pending_anchor()
            if pending is None:
                return None
            size, root = pending
            crashpoint("anchor.before_tx")
            tx_hash, block_number = self.anchor_fn(root, size)
            crashpoint("anchor.after_tx")
            anchor = Anchor(size, root, str(tx_hash), int(block_number), int(time.time()))
            self._unrecorded = anchor
            self.journal.record_anchor(*anchor)
            crashpoint("anchor.after_record")
            self._unrecorded = None
            self.anchors_made += 1
            log.info("journal anchored", extra={"tree_size": size, "root": root.hex(), "tx": anchor.tx_hash})
            return anchor

    def _attempt(self) -> bool:
        try:
            self.anchor_once()
        except Exception as exc:  # noqa: BLE001 - the anchor loop reports and retries whatever failed; it must not die
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("anchoring failed (will retry): %s", self.last_error)
            return False
        self.last_error = None
        return True

    def _run(self) -> None:
        next_due = time.monotonic() + self.interval
        while not self._stopping:
            self._wake.wait(max(0.0, next_due - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                return
            now = time.monotonic()
            if now < next_due:  # woken early: only for the threshold, and not while backing off
                pending = self.journal.pending_anchor()
                if now < self._backoff_until or pending is None:
                    continue
                if pending[0] - self._anchored_size() < self.size_threshold:
                    continue
            if self._attempt():
                next_due = time.monotonic() + self.interval
                self._backoff_until = 0.0
            else:
                next_due = self._backoff_until = time.monotonic() + self.retry_interval

    def start(self) -> None:
        """Starts the background thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="journal-anchorer", daemon=True)
        self._thread.start()

    def stop(self, *, flush: bool = True, timeout: float | None = 30.0) -> None:
        """Stops the thread, then (``flush``) anchors whatever is still pending, once."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("anchorer did not stop within %s s (anchor_fn hanging?); not flushing", timeout)
                return
        if flush and self.journal.available:
            self._attempt()


# ---------------------------------------------------------------------------------------- the chain's anchors


def _chain_anchors(ledger: Ledger, gateway: str, from_block: int) -> list[Anchor]:
    out = []
    for ev in ledger.access.events(["AccessBatchAnchored"], from_block=from_block):
        if ev["gateway"] == gateway:
            root = ev["root"]
            root = bytes.fromhex(root.removeprefix("0x")) if isinstance(root, str) else bytes(root)
            out.append(Anchor(int(ev["treeSize"]), root, ev.tx_hash, ev.block_number, int(ev["anchoredAt"])))
    return sorted(out)


def sync_anchors(
    journal: Journal, ledger: Ledger, gateway: str, *, deploy_block: int = 0, record: bool = True
) -> list[Anchor]:
    """Compares the journal's anchors with the chain's for ``gateway``; returns the anchors the chain has
    and the journal had not recorded (recorded now unless ``record=False``).

    Raises :class:`JournalBehindChain` when the chain has an anchor the journal cannot reproduce (its
    root at that size differs, or the journal is shorter), or the journal recorded anchors the chain
    does not have (another chain). :class:`~node_client.ChainUnavailable` when the chain cannot be asked.
    """
    latest = ledger.access.latest_anchor(gateway)
    last = journal.last_anchor()
    local = last.tree_size if last else 0
    if latest.tree_size < local:
        raise JournalBehindChain(
            f"the journal recorded anchors up to {local} entries but the chain's latest anchor of {gateway}"
            f" covers {latest.tree_size}: this journal belongs to another chain or deployment"
        )
    if latest.tree_size == local:
        if last is not None:  # same size: the same root, or the journal was replaced by another one
            same = [a for a in _chain_anchors(ledger, gateway, last.block_number) if a.tree_size == local]
            if not same or same[0].root != last.root:
                raise JournalBehindChain(f"the chain's anchor at size {local} has another root than the journal's")
        return []
    missing = [
        a for a in _chain_anchors(ledger, gateway, last.block_number if last else deploy_block) if a.tree_size > local
    ]
    adopted = []
    for a in missing:
        if a.tree_size > journal.size or journal.root(a.tree_size) != a.root:
            raise JournalBehindChain(
                f"the chain has an anchor of {a.tree_size} entries (root 0x{a.root.hex()}, tx {a.tx_hash}) that this"
                f" journal of {journal.size} entries does not reproduce: it was rolled back or replaced"
            )
        if record:
            journal.record_anchor(*a)
        adopted.append(a)
    if adopted:
        log.warning("recorded %d anchor(s) found on-chain only (crash after anchoring?)", len(adopted))
    return adopted


class AnchorGuard:
    """Keeps the journal and the chain in agreement about this gateway's anchors.

    :meth:`check` runs at gateway start (a mismatch refuses the start). An anchor counts once it is
    ``confirmations`` blocks deep; one a reorganisation dropped is sent again. If the chain cannot be asked
    then, :meth:`anchor`, the anchorer's ``anchor_fn``, checks before its first anchor; a mismatch found
    there stays in :attr:`problem` (``/healthz`` shows the journal as failed) and no anchor is sent.
    """

    def __init__(
        self, journal: Journal, ledger: Ledger, account: LocalAccount, *, deploy_block: int, confirmations: int = 0
    ) -> None:
        self.journal = journal
        self.confirmations = confirmations
        self.ledger = ledger
        self.account = account
        self.deploy_block = deploy_block
        self.checked = False
        self.problem: str | None = None

    def check(self) -> list[Anchor]:
        try:
            adopted = sync_anchors(self.journal, self.ledger, self.account.address, deploy_block=self.deploy_block)
        except JournalBehindChain as exc:
            self.problem = str(exc)
            raise
        self.checked, self.problem = True, None
        return adopted

    def anchor(self, root: bytes, tree_size: int) -> tuple[str, int]:
        if not self.checked:
            self.check()
            last = self.journal.last_anchor()
            if last is not None and last.tree_size >= tree_size:
                raise AnchorsAdopted(f"anchors up to {last.tree_size} were found on-chain and recorded")
        result = self.ledger.access.anchor_batch(self.account, root, tree_size)
        try:  # recorded only once a reorganisation can no longer drop it; else sent again next round
            result = self.ledger.client.confirm(result, self.confirmations)
        except TransactionError:
            self.checked = False  # the next round first adopts it, should it be mined after all
            raise
        return result.tx_hash, result.block_number
