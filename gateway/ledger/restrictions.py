"""Restrictions seen in blocks not yet confirmed: in force at once, forgotten only once the chain confirms.

The read model holds the chain's state at the *confirmed* block (head minus the confirmation depth), so a
grant counts only once no short reorganisation can take it back. A revocation, a suspension or a
retraction must not wait for that: the indexer reads the unconfirmed blocks at every poll and notes each
restricting event here. A note stays after a reorganisation drops its block — the patient's revocation
may well be mined again — until the read model has been confirmed past that block; from then on the
read model says whether it happened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from node_client.events import EventRecord

__all__ = ["PendingRestrictions"]

Key = tuple[str, ...]


def _key(ev: EventRecord) -> Key | None:
    """The decision an event restricts, or None for events that grant or change nothing restrictive."""
    a = ev.args
    match ev.name:
        case "ConsentRevoked":
            return ("consent", a["patient"], a["grantee"])
        case "MemberSuspended" | "MemberRemoved":
            return ("member", a["member"])
        case "RecordRetracted":
            return ("record", bytes(a["recordId"]).hex())
        case "GuardianRemoved":
            return ("guardian", a["patient"], a["guardian"])
        case _:
            return None


class PendingRestrictions:
    """Restricting events of unconfirmed blocks (thread-safe: the indexer writes, decisions read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[Key, int] = {}  # restriction → the highest block it was seen in

    def observe(self, events: Iterable[EventRecord]) -> None:
        """Notes the restricting ``events`` (read from blocks above the confirmed one)."""
        with self._lock:
            for ev in events:
                key = _key(ev)
                if key is not None:
                    self._seen[key] = max(self._seen.get(key, 0), ev.block_number)

    def confirmed_up_to(self, block: int) -> None:
        """The read model now holds the chain up to ``block``: notes of blocks up to it are its to tell."""
        with self._lock:
            self._seen = {k: b for k, b in self._seen.items() if b > block}

    def consent_revoked(self, patient: str, grantee: str) -> bool:
        return ("consent", patient, grantee) in self._seen

    def member_restricted(self, member: str) -> bool:
        return ("member", member) in self._seen

    def record_withdrawn(self, record_id: bytes) -> bool:
        return ("record", record_id.hex()) in self._seen

    def guardian_removed(self, patient: str, guardian: str) -> bool:
        return ("guardian", patient, guardian) in self._seen

    def __len__(self) -> int:
        return len(self._seen)
