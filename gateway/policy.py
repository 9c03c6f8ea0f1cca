"""Access decisions: is the caller an active member in a fitting role, and does consent hold *now*?

Two sources, one answer:

* **the read model** (the indexer's ``chain_*`` tables), but only while the indexer is *synced*: it has
  applied every block up to the head the gateway last saw, and saw it recently (see
  :attr:`gateway.indexer.Indexer.synced`). A revocation or suspension is then in force for every
  request that arrives after the gateway has seen its block. Time is taken conservatively: a consent
  must have started by the head block's time and must still be valid at the later of the wall clock and
  that time, so the cache is never looser than the chain at its head. Only *yes* comes from the cache:
* **the chain** (``eth_call`` at the latest block) decides everything else: when the indexer lags or has
  failed, every refusal (so the caller gets the chain's word and a precise reason), and every emergency
  (break-glass) request. When the chain cannot be asked, nothing is decided: :class:`Problem`
  ``chain_unavailable`` (fail closed).

In strict ledger mode the chain checks again in ``logAccess`` whatever the cache said.

When the chain says no, :meth:`AccessPolicy.explain` looks at the consent to give the caller the precise
reason (missing, revoked, expired, wrong category, wrong purpose) as a stable problem code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node_client._exceptions import ChainUnavailable
from node_client.contracts import CheckResult, ConsentStatus, Member, MemberStatus, Record, RecordStatus
from node_client.deploy import Ledger
from node_client.vocabulary import PROVIDER_ROLES, Category, Purpose, Role

from gateway.problems import Problem

if TYPE_CHECKING:
    from gateway.db import Database
    from gateway.indexer import Indexer

__all__ = ["AccessPolicy", "Decision", "NeedsChain"]


class NeedsChain(Exception):
    """Raised in ``offline`` mode when only the chain can answer (the caller then takes the full path)."""


_RECORD_STATUS = {"active": RecordStatus.ACTIVE, "amended": RecordStatus.AMENDED, "retracted": RecordStatus.RETRACTED}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    consent_id: bytes
    emergency: bool
    source: str = "chain"  # "chain" | "cache"


class AccessPolicy:
    """Membership, record and consent checks: from the synced read model, else from the chain."""

    def __init__(self, ledger: Ledger, *, db: Database | None = None, indexer: Indexer | None = None) -> None:
        self.ledger = ledger
        self.db = db
        self.indexer = indexer

    def cache_ready(self) -> bool:
        """Whether the read model may answer now (there is one, and it is synced to the seen head)."""
        return self.db is not None and self.indexer is not None and self.indexer.synced

    def _cached_member(self, address: str) -> Member:
        assert self.db is not None
        row = self.db.read().execute("SELECT * FROM chain_members WHERE address = ?", (address,)).fetchone()
        if row is None:
            return Member(address, MemberStatus.NONE, 0, 0, b"", b"")
        return Member(address, MemberStatus(row["status"]), int(row["roles"]), int(row["since_block"]),
                      bytes(row["encryption_key"]), bytes(row["metadata_hash"]))

    def member(self, address: str, *, offline: bool = False) -> Member:
        if self.cache_ready():
            return self._cached_member(address)
        if offline:
            raise NeedsChain("the read model is not synced")
        try:
            return self.ledger.members.member_of(address)
        except ChainUnavailable as exc:
            raise Problem("chain_unavailable", str(exc)) from exc

    def record(self, record_id: bytes, *, offline: bool = False) -> Record:
        """The record's registration (patient, category, status)."""
        if self.cache_ready():
            assert self.db is not None
            row = self.db.read().execute(
                "SELECT patient, category, status, time FROM chain_records WHERE record_id = ?", (record_id,)
            ).fetchone()
            if row is not None:
                return Record(record_id, row["patient"], int(row["category"]), _RECORD_STATUS[row["status"]],
                              int(row["time"]))
            # unknown to the synced read model: registered after the head we saw, or never; the chain says
        if offline:
            raise NeedsChain("the record is not in the read model")
        try:
            return self.ledger.records.record_of(record_id)
        except ChainUnavailable as exc:
            raise Problem("chain_unavailable", str(exc)) from exc

    def require_member(self, address: str, roles: int = int(PROVIDER_ROLES), *, offline: bool = False) -> Member:
        """The caller's member record if it is active and holds one of ``roles``; else a 403 problem."""
        m = self.member(address, offline=offline)
        if m.status is MemberStatus.SUSPENDED:
            raise Problem("member_suspended", f"{address} is suspended")
        if m.status is not MemberStatus.ACTIVE:
            raise Problem("not_member", f"{address} is not an active member")
        if not m.roles & roles:
            raise Problem("wrong_role", f"{address} lacks the role for this ({Role(roles)!r})")
        return m

    def _from_cache(self, patient: str, requester: str, category: int, purpose: int,
                    member: Member | None = None) -> Decision | None:
        """A *yes* from the synced read model, or ``None`` (then the chain decides). ``member``: the
        requester's record if the caller already read it from the read model (saves the lookup)."""
        if purpose == Purpose.EMERGENCY or not 0 <= category < len(Category) or not self.cache_ready():
            return None
        assert self.db is not None and self.indexer is not None
        m = member if member is not None else self._cached_member(requester)
        if m.status is not MemberStatus.ACTIVE or not m.roles & int(PROVIDER_ROLES):
            return None
        k = self.db.read().execute(
            "SELECT consent_id, categories, purposes, valid_from, valid_until, status FROM chain_consents"
            " WHERE patient = ? AND grantee = ?",
            (patient, requester),
        ).fetchone()
        if k is None or k["status"] != "active":
            return None
        head_time = self.indexer.head_time
        if not (k["valid_from"] <= head_time and max(head_time, time.time()) < k["valid_until"]):
            return None
        if not (k["categories"] >> category & 1 and k["purposes"] >> purpose & 1):
            return None
        return Decision(True, bytes(k["consent_id"]), False, "cache")

    def check(self, patient: str, requester: str, category: int, purpose: int) -> Decision:
        cached = self._from_cache(patient, requester, category, purpose)
        if cached is not None:
            return cached
        try:
            result: CheckResult = self.ledger.consents.check(patient, requester, category, purpose)
        except ChainUnavailable as exc:
            raise Problem("chain_unavailable", str(exc)) from exc
        return Decision(result.allowed, result.consent_id, result.emergency)

    def require(self, patient: str, requester: str, category: int, purpose: int, *, offline: bool = False,
                member: Member | None = None) -> Decision:
        """A *yes*, or the problem saying why not. ``offline``: a yes from the read model or :class:`NeedsChain`."""
        if offline:
            cached = self._from_cache(patient, requester, category, purpose, member)
            if cached is None:
                raise NeedsChain("only the chain can decide this")
            return cached
        decision = self.check(patient, requester, category, purpose)
        if not decision.allowed:
            raise self.explain(patient, requester, category, purpose)
        return decision

    def explain(self, patient: str, requester: str, category: int, purpose: int) -> Problem:
        """Why ``check`` said no, as a problem."""
        try:
            member = self.ledger.members.member_of(requester)  # the chain's word, not the cache's
            consent = self.ledger.consents.consent_of(patient, requester)
            now = self.ledger.client.block_timestamp()
        except ChainUnavailable as exc:
            return Problem("chain_unavailable", str(exc))
        if member.status is MemberStatus.SUSPENDED:
            return Problem("member_suspended", f"{requester} is suspended")
        if member.status is not MemberStatus.ACTIVE:
            return Problem("not_member", f"{requester} is not an active member")
        if not member.roles & int(PROVIDER_ROLES):
            return Problem("wrong_role", f"{requester} is not a care provider")
        cat, pur = Category(category).name.lower(), Purpose(purpose).name.lower()
        if purpose == Purpose.EMERGENCY and (consent.status is not ConsentStatus.ACTIVE or not consent.purposes >> purpose & 1):
            return Problem(
                "emergency_not_allowed",
                f"no open emergency access covers {cat} (only emergency-safe categories, not after opt-out)",
            )
        if consent.status is ConsentStatus.NONE:
            return Problem("consent_missing", "the patient has not granted this institution any consent")
        if consent.status is ConsentStatus.REVOKED:
            return Problem("consent_revoked", "the patient revoked this institution's consent")
        if not consent.valid_from <= now < consent.valid_until:
            return Problem("consent_expired", "the consent is not valid at this time", validUntil=consent.valid_until)
        if not consent.categories >> category & 1:
            return Problem("wrong_category", f"the consent does not cover {cat}")
        if not consent.purposes >> purpose & 1:
            return Problem("wrong_purpose", f"the consent does not cover the purpose {pur}")
        return Problem("not_member", "the requester is not an active care provider")
