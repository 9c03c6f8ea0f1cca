"""Which journal entries concern which patient, and how many each institution made.

Both are kept by the journal itself on disk (``by_patient``, ``requester_counts``), written in the same
transaction as the entries: nothing is rebuilt at start and a patient's page is an index range scan,
whatever the journal's size. This class is the read side the services use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from gateway.ledger.journal import Journal
from node_client.journal_entry import JournalEntry

__all__ = ["JournalIndex"]


class JournalIndex:
    """Journal entries by patient, newest first, in pages."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def page_of(
        self, patient: str, *, before: tuple[int, bytes] | None = None, limit: int = 50
    ) -> list[tuple[int, JournalEntry]]:
        """At most ``limit`` of the patient's entries below ``before`` ((time, access hash)), newest first."""
        return self.journal.patient_entries(patient, before=before, limit=limit)

    def entries_of(self, patient: str) -> Iterator[tuple[int, JournalEntry]]:
        """All the patient's journal entries, oldest first (each read and checked against the tree)."""
        yield from reversed(self.journal.patient_entries(patient))

    def requester_counts(self) -> Counter[str]:
        """Journal entries per requesting institution."""
        return self.journal.requester_counts()

    def entry(self, idx: int) -> JournalEntry | None:
        for _i, entry, _leaf in self.journal.entries(idx, idx + 1):
            return entry
        return None
