"""Access decisions: is the caller an active member in a fitting role, and does consent hold *now*?

Decisions ask the chain (``eth_call``) at the latest block. The indexer's cache is used only for
read models (lists, timelines), never to say yes to a release, unless it is synced to the head the
gateway last saw (see :attr:`gateway.indexer.Indexer.synced`). When the chain cannot be asked, nothing
is decided: :class:`Problem` ``chain_unavailable`` (fail closed).

When the chain says no, :meth:`AccessPolicy.explain` looks at the consent to give the caller the precise
reason (missing, revoked, expired, wrong category, wrong purpose) as a stable problem code.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_client._exceptions import ChainUnavailable
from node_client.contracts import CheckResult, ConsentStatus, Member, MemberStatus
from node_client.deploy import Ledger
from node_client.vocabulary import PROVIDER_ROLES, Category, Purpose, Role

from gateway.problems import Problem

__all__ = ["AccessPolicy", "Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    consent_id: bytes
    emergency: bool


class AccessPolicy:
    """Membership and consent checks against the chain."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def member(self, address: str) -> Member:
        try:
            return self.ledger.members.member_of(address)
        except ChainUnavailable as exc:
            raise Problem("chain_unavailable", str(exc)) from exc

    def require_member(self, address: str, roles: int = int(PROVIDER_ROLES)) -> Member:
        """The caller's member record if it is active and holds one of ``roles``; else a 403 problem."""
        m = self.member(address)
        if m.status is MemberStatus.SUSPENDED:
            raise Problem("member_suspended", f"{address} is suspended")
        if m.status is not MemberStatus.ACTIVE:
            raise Problem("not_member", f"{address} is not an active member")
        if not m.roles & roles:
            raise Problem("wrong_role", f"{address} lacks the role for this ({Role(roles)!r})")
        return m

    def check(self, patient: str, requester: str, category: int, purpose: int) -> Decision:
        try:
            result: CheckResult = self.ledger.consents.check(patient, requester, category, purpose)
        except ChainUnavailable as exc:
            raise Problem("chain_unavailable", str(exc)) from exc
        return Decision(result.allowed, result.consent_id, result.emergency)

    def require(self, patient: str, requester: str, category: int, purpose: int) -> Decision:
        decision = self.check(patient, requester, category, purpose)
        if not decision.allowed:
            raise self.explain(patient, requester, category, purpose)
        return decision

    def explain(self, patient: str, requester: str, category: int, purpose: int) -> Problem:
        """Why ``check`` said no, as a problem."""
        try:
            consent = self.ledger.consents.consent_of(patient, requester)
            now = self.ledger.client.block_timestamp()
        except ChainUnavailable as exc:
            return Problem("chain_unavailable", str(exc))
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
