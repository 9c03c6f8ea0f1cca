"""The journal shared by several gateway processes: one writer, appends over a Unix socket.

With ``workers > 1`` the primary process owns the :class:`~gateway.ledger.journal.Journal` (its group
commit, its anchorer) and serves it with :class:`JournalServer`; each HTTP worker appends through a
:class:`JournalClient`. Both the journal itself and the client are a :class:`JournalAppender`, so the
release path has one way to journal an access whatever the process layout.

Wire format (little work per frame, no parsing library): a request is ``<u32 length><u64 id>`` then the
encoded entry (:meth:`JournalEntry.to_bytes`); the answer is ``<u64 id><u64 index>``, sent only once the
entry is durable, or with index :data:`REFUSED` when the journal could not make it durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Protocol

from gateway.ledger.journal import Journal, JournalUnavailable
from node_client.journal_entry import JournalEntry

__all__ = ["LAGGING", "REFUSED", "AnchorsLagging", "JournalAppender", "JournalClient", "JournalServer"]

log = logging.getLogger("hcl.gateway.journal_service")

_REQUEST = struct.Struct("<IQ")
_ANSWER = struct.Struct("<QQ")
#: the index of an answer that says "not journaled": nothing may be released
REFUSED = 2**64 - 1
#: the index of an answer that says "not journaled: anchoring lags" (the primary's anchorer, for the workers)
LAGGING = 2**64 - 2
_MAX_ENTRY = 4096  # entries are ~200 bytes; anything larger is a broken peer


class JournalAppender(Protocol):
    """What the release path needs of a journal: append one entry, durably, and say whether it can."""

    def append(self, entry: JournalEntry) -> int: ...

    async def append_async(self, entry: JournalEntry) -> int: ...

    @property
    def available(self) -> bool: ...

    @property
    def error(self) -> BaseException | None: ...


class AnchorsLagging(JournalUnavailable):
    """Not journaled because the oldest unanchored entry is older than the bound (503 anchor_lagging)."""


# ------------------------------------------------------------------------------------------ server


class JournalServer:
    """Serves a :class:`Journal` on a Unix socket: each request joins the journal's group commit and is
    answered after its fsync. A thread reads each connection, another writes its answers in batches."""

    def __init__(self, journal: Journal, path: Path, *, lagging: Callable[[], str | None] = lambda: None) -> None:
        self.journal = journal
        self.path = Path(path)
        self.lagging = lagging  # the anchor-lag check a single process makes before appending
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> JournalServer:
        """Binds the socket (owner-only: any process that can append can make releases look ledgered)."""
        self.path.unlink(missing_ok=True)  # a stale socket of a killed primary; the data-dir lock is ours
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_mask)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, name="journal-server", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stops accepting and drops every connection (their pending appends still commit in the journal)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            self.path.unlink(missing_ok=True)
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and self._listener is listener:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            answers: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
            threading.Thread(target=self._send, args=(conn, answers), name="journal-answers", daemon=True).start()
            threading.Thread(target=self._serve, args=(conn, answers), name="journal-requests", daemon=True).start()

    def _serve(self, conn: socket.socket, answers: queue.SimpleQueue[tuple[int, int] | None]) -> None:
        """Reads requests until the peer goes; each one is submitted to the group commit at once."""
        buffer = bytearray()
        try:
            while chunk := conn.recv(65536):
                buffer += chunk
                offset = self._submit_frames(buffer, answers)
                del buffer[:offset]
        except (OSError, ValueError) as exc:
            log.warning("journal connection dropped: %r", exc)
        finally:
            answers.put(None)
            with self._lock:
                self._connections.discard(conn)

    def _submit_frames(self, buffer: bytearray, answers: queue.SimpleQueue[tuple[int, int] | None]) -> int:
        """Submits the complete frames of ``buffer`` as one journal request (consecutive indexes, one
        transaction: a future per read, not per entry); returns how many bytes they took."""
        offset = 0
        rids: list[int] = []
        entries: list[JournalEntry] = []
        while len(buffer) - offset >= _REQUEST.size:
            length, rid = _REQUEST.unpack_from(buffer, offset)
            if length > _MAX_ENTRY:
                raise ValueError(f"a {length}-byte entry")
            end = offset + _REQUEST.size + length
            if len(buffer) < end:
                break
            entries.append(JournalEntry.from_bytes(bytes(buffer[offset + _REQUEST.size : end])))
            rids.append(rid)
            offset = end
        if not rids:
            return offset
        if self.lagging() is not None:
            for rid in rids:
                answers.put((rid, LAGGING))
            return offset
        try:
            future = self.journal.submit(entries)
        except JournalUnavailable:
            for rid in rids:
                answers.put((rid, REFUSED))
            return offset
        future.add_done_callback(functools.partial(_answer, answers, rids))
        return offset

    def _send(self, conn: socket.socket, answers: queue.SimpleQueue[tuple[int, int] | None]) -> None:
        """Writes answers, all those ready in one ``sendall``, so the writer thread never blocks on a peer."""
        try:
            while (item := answers.get()) is not None:
                out = bytearray(_ANSWER.pack(*item))
                with contextlib.suppress(queue.Empty):
                    while len(out) < 65536:
                        more = answers.get_nowait()
                        if more is None:
                            conn.sendall(out)
                            return
                        out += _ANSWER.pack(*more)
                conn.sendall(out)
        except OSError:
            pass  # the worker went away: its answers are moot, its entries are journaled anyway
        finally:
            conn.close()


def _answer(answers: queue.SimpleQueue[tuple[int, int] | None], rids: list[int], future: Future[list[int]]) -> None:
    """Queues the answers to requests ``rids`` (runs in the journal's writer thread: only queue puts)."""
    indexes = [REFUSED] * len(rids) if future.exception() is not None else future.result()
    for rid, index in zip(rids, indexes, strict=True):
        answers.put((rid, index))


# ------------------------------------------------------------------------------------------ client


class JournalClient:
    """A worker's journal: appends go to the primary's :class:`JournalServer`, one connection, pipelined.

    Fails closed: while the primary is unreachable every append raises :class:`JournalUnavailable`
    (nothing is released); the next append after it is back reconnects.
    """

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()  # the connection, the pending table, the socket's send side
        self._sock: socket.socket | None = None
        self._pending: dict[int, Future[int]] = {}
        self._ids = itertools.count(1)
        self._error: BaseException | None = None

    @property
    def available(self) -> bool:
        """True when connected to the primary (or when a connection can be made now)."""
        with self._lock:
            try:
                self._connected()
            except JournalUnavailable:
                return False
            return True

    @property
    def error(self) -> BaseException | None:
        """Why the last connection failed or ended, while not connected."""
        return None if self._sock is not None else self._error

    def append(self, entry: JournalEntry) -> int:
        """Returns the entry's index once the primary has made it durable; raises :class:`JournalUnavailable`."""
        try:
            return self.submit(entry).result(timeout=self.timeout)
        except FutureTimeout as exc:
            raise JournalUnavailable(f"no answer from the journal writer in {self.timeout} s") from exc

    async def append_async(self, entry: JournalEntry) -> int:
        """:meth:`append` without blocking the event loop."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self.submit(entry)), self.timeout)
        except TimeoutError as exc:
            raise JournalUnavailable(f"no answer from the journal writer in {self.timeout} s") from exc

    def submit(self, entry: JournalEntry) -> Future[int]:
        """Sends the entry; the future holds its index, or :class:`JournalUnavailable`."""
        blob = entry.to_bytes()
        future: Future[int] = Future()
        with self._lock:
            sock = self._connected()
            rid = next(self._ids)
            self._pending[rid] = future
            try:
                sock.sendall(_REQUEST.pack(len(blob), rid) + blob)
            except OSError as exc:
                self._pending.pop(rid, None)
                self._drop(sock, exc)
                raise JournalUnavailable(f"the journal writer is gone: {exc!r}") from exc
        return future

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._drop(self._sock, JournalUnavailable("the journal client is closed"))

    def _connected(self) -> socket.socket:
        """The live connection, made now if there is none (caller holds the lock)."""
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            self._error = exc
            raise JournalUnavailable(f"cannot reach the journal writer at {self.path}: {exc!r}") from exc
        self._sock, self._error = sock, None
        threading.Thread(target=self._read, args=(sock,), name="journal-client", daemon=True).start()
        return sock

    def _read(self, sock: socket.socket) -> None:
        """Resolves each pending append from its answer, until the connection ends."""
        buffer = bytearray()
        reason: BaseException = JournalUnavailable("the journal writer closed the connection")
        try:
            while chunk := sock.recv(65536):
                buffer += chunk
                whole = len(buffer) - len(buffer) % _ANSWER.size
                for rid, index in _ANSWER.iter_unpack(bytes(buffer[:whole])):
                    with self._lock:
                        future = self._pending.pop(rid, None)
                    if future is not None:
                        _resolve(future, index)
                del buffer[:whole]
        except OSError as exc:
            reason = exc
        with self._lock:
            self._drop(sock, reason)

    def _drop(self, sock: socket.socket, reason: BaseException) -> None:
        """Forgets the connection and fails every append still waiting on it (caller holds the lock)."""
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._sock is not sock:
            return  # dropped already: its appends were failed then, those pending now are the next one's
        self._sock, self._error = None, reason
        pending, self._pending = self._pending, {}
        for future in pending.values():
            _refuse(future, f"the journal writer is gone: {reason!r}")


def _resolve(future: Future[int], index: int) -> None:
    if index == LAGGING and not future.done():
        future.set_exception(AnchorsLagging("the journal's anchors lag behind the bound; nothing released"))
    elif index == REFUSED:
        _refuse(future, "the journal writer could not make the entry durable")
    elif not future.done():
        future.set_result(index)


def _refuse(future: Future[int], why: str) -> None:
    if not future.done():
        future.set_exception(JournalUnavailable(why))
