"""The hub behind live streams: one poll of the outbox per process, fanned out to each open stream.

Every process (each HTTP worker too) runs one; the outbox is in the shared database, so a stream sees an
access whichever process released it. Each stream has a bounded queue: a reader too slow to keep up is
ended (it reconnects with ``Last-Event-ID`` and is given what it missed) rather than let memory grow.
:meth:`EventHub.stop` ends every stream, so the server's shutdown does not wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

from gateway.storage import notifications
from gateway.storage.db import Database
from gateway.storage.notifications import AccessEvent

__all__ = ["QUEUE_SIZE", "EventHub"]

log = logging.getLogger("hcl.gateway.notify")

#: events a stream may have waiting before it is ended as too slow
QUEUE_SIZE = 64

_END = None  # what a queue is given to end its stream


class _Stream:
    def __init__(self, patient: str, loop: asyncio.AbstractEventLoop) -> None:
        self.patient, self.loop = patient, loop
        self.queue: asyncio.Queue[AccessEvent | None] = asyncio.Queue(QUEUE_SIZE + 1)

    def offer(self, item: AccessEvent | None) -> None:
        """In the stream's loop: queue ``item``; a full queue ends the stream instead."""
        if self.queue.qsize() >= QUEUE_SIZE:
            item = _END
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(item)


class EventHub:
    def __init__(self, db: Database, *, interval: float) -> None:
        self.db, self.interval = db, interval
        self._streams: set[_Stream] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.position = 0

    def start(self) -> None:
        self.position = notifications.last_seq(self.db)
        self._thread = threading.Thread(target=self._run, name="hcl-notify-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends every stream and the poll (idempotent)."""
        self._closed.set()
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            with contextlib.suppress(RuntimeError):  # its loop has gone already
                s.loop.call_soon_threadsafe(s.offer, _END)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _run(self) -> None:
        while not self._closed.wait(self.interval):
            try:
                self._dispatch(notifications.events_after(self.db, self.position))
            except Exception:
                log.warning("notification hub poll failed", exc_info=True)

    def _dispatch(self, events: list[AccessEvent]) -> None:
        if not events:
            return
        self.position = events[-1].seq
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            for e in events:
                if e.patient == s.patient:
                    with contextlib.suppress(RuntimeError):
                        s.loop.call_soon_threadsafe(s.offer, e)

    async def follow(self, patient: str, *, after: int | None, heartbeat: float) -> AsyncIterator[AccessEvent | None]:
        """The patient's new events as they come (``None``: time for a heartbeat), after event ``after`` when
        the client resumes; ends at :meth:`stop` or when the reader falls too far behind."""
        stream = _Stream(patient, asyncio.get_running_loop())
        with self._lock:
            self._streams.add(stream)
            seen = self.position
        try:
            if after is not None:  # what it missed, up to where the live events begin
                missed = await asyncio.to_thread(notifications.events_after, self.db, after, patient=patient, upto=seen)
                for e in missed:
                    yield e
            while not self.closed:
                try:
                    item = await asyncio.wait_for(stream.queue.get(), heartbeat)
                except TimeoutError:
                    yield None
                    continue
                if item is _END:
                    return
                yield item
        finally:
            with self._lock:
                self._streams.discard(stream)
