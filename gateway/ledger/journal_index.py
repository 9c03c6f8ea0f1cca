"""Which journal entries concern which patient, and how many each institution made: an in-memory index.

The journal itself is append-only and ordered by index, which is what Merkle proofs need, but a
patient's access log must not scan every entry of every patient (a million releases is a few minutes'
load in batch mode). The index catches up incrementally when asked (never on the release hot path),
and keeps 4 bytes per entry (``array('L')`` of indexes per patient).
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter
from collections.abc import Iterator

from gateway.ledger.journal import Journal
from node_client.journal_entry import JournalEntry

__all__ = ["JournalIndex"]


class JournalIndex:
    """Journal indexes by patient address, caught up on demand."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._position = 0
        self._by_patient: dict[str, array[int]] = {}
        self._by_requester: Counter[str] = Counter()
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Indexes entries appended since the last call; returns the journal size now covered."""
        with self._lock:
            size = self.journal.size
            for idx, entry, _leaf in self.journal.entries(self._position, size):
                self._by_patient.setdefault(entry.patient, array("L")).append(idx)
                self._by_requester[entry.requester] += 1
            self._position = max(self._position, size)
            return self._position

    def entries_of(self, patient: str) -> Iterator[tuple[int, JournalEntry]]:
        """The patient's journal entries, oldest first (each read and checked against the tree)."""
        self.refresh()
        with self._lock:
            indexes = list(self._by_patient.get(patient, ()))
        for idx in indexes:
            for i, entry, _leaf in self.journal.entries(idx, idx + 1):
                yield i, entry

    def requester_counts(self) -> Counter[str]:
        """Journal entries per requesting institution."""
        self.refresh()
        with self._lock:
            return Counter(self._by_requester)

    def entry(self, idx: int) -> JournalEntry | None:
        for _i, entry, _leaf in self.journal.entries(idx, idx + 1):
            return entry
        return None
