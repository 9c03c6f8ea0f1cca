"""The indexer's in-memory state, shared with the worker processes of a multi-process gateway.

Only the primary process follows the chain (one writer of the read model); a worker decides from the same
SQLite read model and must know what the primary's :class:`~gateway.ledger.indexer.Indexer` knows: the
block the read model is at, when the head was last seen, and the write generation (odd while a page is
being applied). The primary publishes these into a small memory-mapped file after every change; a worker's
:class:`IndexerFollower` reads them (a seqlock: a read torn by a concurrent write is retried), so its
decisions follow exactly the rules of the primary's: same ``view``, ``synced`` and ``unchanged_since``.
``time.monotonic`` is the system-wide CLOCK_MONOTONIC on Linux, so the primary's times compare with ours.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.ledger.indexer import Indexer, IndexerStatus, ReadModelView
from gateway.storage.db import Database
from node_client.deploy import Ledger

__all__ = ["IndexerFollower", "SharedIndexerState", "Snapshot"]

_SEQ = struct.Struct("<Q")
# generation, indexed, at_block (-1: none), at_hash, at_time, seen_head, seen_at, head, head_time,
# last_poll, reorgs, pending_restrictions, caught up (not catching up), error length, error text
_BODY = struct.Struct("<QqqQ32sQdQQdQQ?H240s")
_TRIES = 10_000  # a primary killed mid-write leaves an odd sequence: then the state is unknown
_SIZE = _SEQ.size + _BODY.size


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The primary indexer's state at one instant."""

    generation: int
    indexed: int
    at: tuple[int, bytes, int] | None
    seen_head: int
    seen_at: float
    head: int
    head_time: int
    last_poll: float
    reorgs: int
    pending_restrictions: int
    caught_up: bool
    error: str | None


class SharedIndexerState:
    """The memory-mapped file: :meth:`publish` in the primary, :meth:`read` in the workers."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, 0)  # a killed primary's last state must not be read as this one's
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._seq = _SEQ.unpack_from(self._map, 0)[0]
        self._lock = threading.Lock()

    def publish(self, indexer: Indexer) -> None:
        """Writes the indexer's state; called by the indexer after each change (its thread or a catch-up)."""
        at = indexer._at
        error = (indexer._error or "").encode()[:240]
        body = _BODY.pack(
            indexer._generation,
            indexer._indexed,
            at[0] if at is not None else -1,
            at[2] if at is not None else 0,
            at[1] if at is not None else b"",
            indexer._seen_head,
            indexer._seen_at,
            indexer._head,
            indexer._head_time,
            indexer._last_poll,
            indexer.reorgs,
            len(indexer.restrictions),
            not indexer.catching_up,
            len(error),
            error,
        )
        with self._lock:
            self._seq += 1  # odd: a write is under way
            _SEQ.pack_into(self._map, 0, self._seq)
            self._map[_SEQ.size : _SIZE] = body
            self._seq += 1
            _SEQ.pack_into(self._map, 0, self._seq)

    def read(self) -> Snapshot | None:
        """The last published state, or None before the first publication (or after a torn one)."""
        for _ in range(_TRIES):
            before = _SEQ.unpack_from(self._map, 0)[0]
            raw = self._map[_SEQ.size : _SIZE]
            if before & 1 or _SEQ.unpack_from(self._map, 0)[0] != before:
                continue  # the primary is writing: a few microseconds
            if before == 0:
                return None
            (gen, indexed, at_block, at_time, at_hash, seen_head, seen_at, head, head_time, last_poll, reorgs,
             pending, caught_up, err_len, err) = _BODY.unpack(raw)  # fmt: skip
            at = (at_block, at_hash, at_time) if at_block >= 0 else None
            error = err[:err_len].decode(errors="replace") or None
            return Snapshot(
                gen, indexed, at, seen_head, seen_at, head, head_time, last_poll, reorgs, pending, caught_up, error
            )
        return None

    def close(self) -> None:
        self._map.close()


class IndexerFollower(Indexer):
    """A worker's indexer: never reads the chain, mirrors the primary's published state before each use.

    Pending restrictions of unconfirmed blocks live in the primary only: while it holds any, this follower
    is not synced, so decisions go to the chain (correct, slower; confirmations are 0 on Hardhat).
    """

    def __init__(
        self,
        ledger: Ledger,
        db: Database,
        state: SharedIndexerState,
        *,
        deploy_block: int,
        poll_interval: float,
        confirmations: int,
    ) -> None:
        super().__init__(
            ledger, db, deploy_block=deploy_block, poll_interval=poll_interval, confirmations=confirmations
        )
        self.state = state
        self._pending_elsewhere = 0

    def refresh(self) -> None:
        """Copies the primary's last published state into this object."""
        s = self.state.read()
        if s is None:
            self._error = "the primary has not indexed yet"
            return
        self._generation, self._indexed, self._at = s.generation, s.indexed, s.at
        self._seen_head, self._seen_at, self._head, self._head_time = s.seen_head, s.seen_at, s.head, s.head_time
        self._last_poll, self.reorgs, self._error = s.last_poll, s.reorgs, s.error
        self._pending_elsewhere, self._caught_up = s.pending_restrictions, s.caught_up

    def view(self, wait: float = 0.0) -> ReadModelView | None:
        """:meth:`Indexer.view` of the primary's state; a page being applied is waited for by polling."""
        deadline = time.monotonic() + wait
        self.refresh()
        while self._generation & 1 and time.monotonic() < deadline:
            time.sleep(0.001)
            self.refresh()
        return super().view(0)

    def unchanged_since(self, generation: int) -> bool:
        self.refresh()
        return super().unchanged_since(generation)

    @property
    def catching_up(self) -> bool:
        self.refresh()
        return not self._caught_up

    @property
    def synced(self) -> bool:
        self.refresh()
        return self._pending_elsewhere == 0 and Indexer.synced.fget(self)  # type: ignore[attr-defined]

    def status(self) -> IndexerStatus:
        self.refresh()
        return super().status()

    def poll_once(self) -> int:
        """Waits (up to :attr:`freshness`) for a poll of the primary that started after now; applies nothing."""
        started = time.monotonic()
        deadline = started + self.freshness
        self.refresh()
        while self._seen_at < started and time.monotonic() < deadline:
            time.sleep(self.poll_interval / 10)
            self.refresh()
        return 0

    def start(self) -> None:
        self.refresh()

    def stop(self) -> None:
        self.state.close()
