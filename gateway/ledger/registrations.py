"""Group commit of registrations: the records of concurrent uploads in one transaction.

An upload still stores its blobs and writes its pending rows first (nothing lost or half-written), then
hands its records to the :class:`Registrar` and waits. The registrar's thread takes every upload queued
while its previous transaction was in flight (up to ``max_records`` records), registers them in one
``registerUploads`` (a lone upload: ``registerBatch``), indexes the new head once for all of them, and
answers each upload with the transaction. The per-upload costs that dominated the upload profile — gas
estimate, signing, sending, waiting for the receipt, the read model's catch-up — are paid once per group.

``registerUploads`` is all or nothing: when a group is refused, each of its uploads is sent again alone,
so a bad upload is refused by itself and the others go through. When the chain is unavailable or no
receipt comes, every upload of the group gets that error; their rows stay pending for ``reconcile``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from node_client._client import TxResult
from node_client._exceptions import ContractRevert
from node_client.contracts import RecordInput, RecordRegistry, UploadInput

__all__ = ["Registrar"]

log = logging.getLogger("hcl.gateway.registrations")


@dataclass(frozen=True, slots=True)
class _Pending:
    upload: UploadInput
    future: Future[TxResult]


_STOP = object()


class Registrar:
    """Registers uploads' records on-chain, many uploads per transaction (see the module docstring)."""

    def __init__(
        self,
        records: RecordRegistry,
        account: LocalAccount,
        *,
        catch_up: Callable[[], None],
        max_records: int = 200,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        self.records = records
        self.account = account
        self.catch_up = catch_up
        self.max_records = max_records
        self.observe = observe  # (uploads, records) of each transaction sent, for the metrics
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def register(self, patient: str, provider: str, records: list[RecordInput]) -> TxResult:
        """The mined transaction that registered these records (raises what ``registerBatch`` would)."""
        self._ensure_started()
        pending = _Pending(UploadInput(patient, provider, records), Future())
        self._queue.put(pending)
        return pending.future.result()  # the transaction's own timeouts bound the wait

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=30)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hcl-registrar", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        group: list[_Pending] = []
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Pending)
            group, stop = self._gather(item)
            try:
                self._commit(group)
            except BaseException as exc:  # a bug here must not leave uploads waiting forever
                log.exception("registrar failed a group")
                for p in group:
                    with contextlib.suppress(InvalidStateError):
                        p.future.set_exception(exc)
            if stop:
                return

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` and the uploads queued behind it, up to ``max_records`` records; whether to stop after."""
        group, count = [first], len(first.upload.records)
        while count < self.max_records:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return group, True
            assert isinstance(item, _Pending)
            group.append(item)
            count += len(item.upload.records)
        return group, False

    def _commit(self, group: list[_Pending]) -> None:
        """One transaction for the group; refused as a whole: one per upload, so each gets its own answer."""
        try:
            result = self._send([p.upload for p in group])
        except ContractRevert as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for p in group:
                self._commit([p])
            return
        except Exception as exc:  # noqa: BLE001 - chain unavailable or no receipt: every upload of the group is told
            for p in group:
                p.future.set_exception(exc)
            return
        self.catch_up()  # once for the group: each upload reads its own write without polling again
        for p in group:
            p.future.set_result(result)

    def _send(self, uploads: list[UploadInput]) -> TxResult:
        if self.observe is not None:
            self.observe(len(uploads), sum(len(u.records) for u in uploads))
        if len(uploads) == 1:
            u = uploads[0]
            return self.records.register_batch(self.account, u.patient, u.provider, list(u.records))
        return self.records.register_uploads(self.account, uploads)
