"""A worker's read-only view of the journal its primary writes (``HCL_WORKERS`` > 1).

The journal keeps its whole Merkle tree on disk (interior nodes stored as they complete, sealed segments
in files), so another process can answer every read the primary can — an entry, an inclusion or
consistency proof, a patient's page of the index, the anchors, an export — from the database alone,
without the primary's memory and without a request on the append socket. Each read works on the size
the database holds when it begins (SQLite WAL: a reader never waits for the writer, nor it for readers).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from gateway.ledger.frontier import Frontier, subtrees
from gateway.ledger.journal import Anchor, Journal, JournalCorrupt, JournalEntry, JournalUnavailable

__all__ = ["JournalView"]


class JournalView(Journal):
    """:class:`Journal`'s reads over a journal another process appends to; its writes refuse.

    It takes no writer lock, starts no writer thread and verifies nothing at opening: the writer verified
    the rows it loaded, each read checks the rows it returns against the stored tree, and the anchored
    roots vouch for the rest (the auditor, ``hcl gateway verify-journal``).
    """

    def __init__(self, path: Path) -> None:  # the writer's state is not built: only its reads are used
        self.path = Path(path)
        if not self.path.exists():
            raise JournalUnavailable(f"{self.path}: no journal yet (its writer creates it)")
        self.sealed_reads = 0
        self._segments = []  # the manifest is read from the database at each read
        self._tree_lock = threading.RLock()
        self._closed = False
        self._error = None

    def _committed(self) -> Frontier:
        """The frontier of every committed entry: one subtree node per set bit of the size, read from disk."""
        with self._reader() as conn, self._routed(conn) as store:
            last = conn.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
            sealed = conn.execute("SELECT MAX(hi) FROM segments").fetchone()[0]
            size = max(-1 if last is None else last, (sealed or 0) - 1) + 1
            stack = []
            for height, j in subtrees(size):
                node = store.node(height, j)
                if node is None:
                    raise JournalCorrupt(f"stored tree node ({height}, {j}) missing", j << height)
                stack.append((height, node))
        return Frontier(size, stack)

    def last_anchor(self) -> Anchor | None:
        with self._reader() as conn:
            last = self._read_anchors(conn, last_only=True)
        return last[0] if last else None

    def _submit(self, entries: Sequence[JournalEntry]) -> NoReturn:
        raise JournalUnavailable("a read-only view of the journal: appends go through its writer")

    def record_anchor(
        self, tree_size: int, root: bytes, tx_hash: str, block_number: int, anchored_at: int | None = None
    ) -> NoReturn:
        raise JournalUnavailable("a read-only view of the journal: anchors are recorded by its writer")

    def close(self) -> None:
        self._closed = True
