"""Access decisions: is the caller an active member in a fitting role, and does consent hold *now*?

Two sources, one answer:

* **the read model** (the indexer's ``chain_*`` tables), but only while the indexer is *synced*: it has
  applied every block up to the head the gateway last saw, and saw it recently (see
  :attr:`gateway.ledger.indexer.Indexer.synced`). A revocation or suspension is then in force for every
  request that arrives after the gateway has seen its block. Time is taken conservatively: a consent
  must have started by the head block's time and must still be valid at the later of the wall clock and
  that time, so the cache is never looser than the chain at its head. Only *yes* comes from the cache:
* **the chain** (``eth_call`` at the latest block) decides everything else: when the indexer lags or has
  failed, every refusal (so the caller gets the chain's word and a precise reason), and every emergency
  (break-glass) request. When the chain cannot be asked, nothing is decided:
  :class:`gateway.errors.ChainUnavailable` (fail closed).

In strict ledger mode the chain checks again in ``logAccess`` whatever the cache said.

A release decides on one block's state and journals that block (batch mode, ``HCLJ/2``):
:meth:`AccessPolicy.state_view` picks it — the read model's block, or the chain's latest block to which
every ``eth_call`` of the decision is then pinned — and :meth:`AccessPolicy.confirm` checks, after the
reads, that the read model did not move meanwhile and that the head was seen less than the staleness
bound (:attr:`gateway.ledger.indexer.Indexer.freshness`) before the decision; otherwise the decision is made
again (:class:`StaleView`).

When the chain says no, :meth:`AccessPolicy.explain` looks at the consent to give the caller the precise
reason (missing, revoked, expired, wrong category, wrong purpose) as a domain error with a stable problem code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address
from web3.contract.contract import ContractFunction
from web3.types import BlockIdentifier

from gateway import errors
from gateway.storage import read_model
from gateway.storage.category_keys import CategoryKeys
from gateway.storage.db import record_status, status_text
from node_client._exceptions import ChainUnavailable
from node_client.contracts import (
    CheckResult,
    Consent,
    ConsentStatus,
    Member,
    MemberStatus,
    Record,
    RecordStatus,
)
from node_client.deploy import Ledger
from node_client.refusals import refusal
from node_client.vocabulary import PROVIDER_ROLES, SLOT_COUNT, Purpose, Role

if TYPE_CHECKING:
    from gateway.ledger.indexer import Indexer
    from gateway.ledger.restrictions import PendingRestrictions
    from gateway.storage.db import Database

__all__ = ["AccessPolicy", "Confirmed", "Decision", "NeedsChain", "StaleView", "StateView"]

#: seconds a blocking decision waits for the indexer to finish the page it is applying before asking the
#: chain instead (strict mode mines a block per group commit, so pages are applied all the time)
_PAGE_WAIT = 0.1

#: the refusal codes of :func:`node_client.refusals.refusal` → the domain errors they are answered with
_REFUSALS: dict[str, type[errors.DomainError]] = {
    cls.code: cls
    for cls in (
        errors.MemberSuspended,
        errors.NotMember,
        errors.WrongRole,
        errors.EmergencyNotAllowed,
        errors.ConsentMissing,
        errors.ConsentRevoked,
        errors.ConsentExpired,
        errors.WrongCategory,
        errors.WrongPurpose,
    )
}


class NeedsChain(Exception):
    """Raised in ``offline`` mode when only the chain can answer (the caller then takes the full path)."""


class StaleView(Exception):
    """The state a decision read is not one block's, or was seen too long ago: decide again."""


@dataclass(frozen=True, slots=True)
class StateView:
    """The chain state one decision reads: the read model at ``block`` (``source="cache"``) or
    ``eth_call`` pinned to ``block`` (``"chain"``). ``seen_at`` (``time.monotonic()``) is a moment at
    which the chain's head was at most ``block``; ``generation`` the read model's write generation."""

    source: str
    block: int
    block_hash: bytes
    block_time: int
    seen_at: float
    generation: int = -1


@dataclass(frozen=True, slots=True)
class Confirmed:
    """When a decision was made (unix ms) and when the state it used was seen current (unix ms, earlier)."""

    decided_at: int
    seen_at: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    consent_id: bytes
    emergency: bool
    source: str = "chain"  # "chain" | "cache" | "pending" (a revocation not yet confirmed)


class AccessPolicy:
    """Membership, record and consent checks: from the synced read model, else from the chain."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        db: Database | None = None,
        indexer: Indexer | None = None,
        category_keys: CategoryKeys | None = None,
    ) -> None:
        self.ledger = ledger
        self.db = db
        self.indexer = indexer
        #: names the slot a refusal is about (a problem's detail), never needed to decide
        self.category_keys = category_keys

    # ------------------------------------------------------------------ one block's state per decision

    def state_view(self, *, cache: bool = True, offline: bool = False) -> StateView:
        """The state a decision starting now reads: the read model's block when it may decide (and
        ``cache``), else (unless ``offline``: :class:`NeedsChain`) the chain's latest block."""
        if cache and self.indexer is not None and self.db is not None:
            v = self.indexer.view(wait=0 if offline else _PAGE_WAIT)
            if v is not None:
                return StateView("cache", v.block, v.block_hash, v.block_time, v.seen_at, v.generation)
        if offline:
            raise NeedsChain("the read model is not synced")
        seen_at = time.monotonic()  # the head the node answers next is at least the one it had now
        client = self.ledger.client
        try:
            b = client.rpc(lambda: client.w3.eth.get_block("latest"))
            if self.confirmations:  # a grant counts once confirmed; ``require`` checks the head as well
                confirmed = max(0, int(b["number"]) - self.confirmations)
                b = client.rpc(lambda: client.w3.eth.get_block(confirmed))
        except ChainUnavailable as exc:
            raise errors.ChainUnavailable(str(exc)) from exc
        return StateView("chain", int(b["number"]), bytes(b["hash"]), int(b["timestamp"]), seen_at)

    @property
    def confirmations(self) -> int:
        """Blocks on top before a grant counts (the indexer's setting; 0 without an indexer)."""
        return self.indexer.confirmations if self.indexer is not None else 0

    def staleness_bound(self) -> float:
        """Seconds a decision may use a state after the chain's head was seen at its block."""
        return self.indexer.freshness if self.indexer is not None else 1.0

    def confirm(self, view: StateView) -> Confirmed:
        """After a decision's reads: its time, if they were all of ``view``'s block and the head was
        seen recently enough; else :class:`StaleView`."""
        now = time.monotonic()
        wall = time.time()
        if view.source == "cache" and (self.indexer is None or not self.indexer.unchanged_since(view.generation)):
            raise StaleView("the read model moved during the decision")
        age = now - view.seen_at
        if age >= self.staleness_bound():
            raise StaleView("the state was seen too long ago")
        decided_at = int(wall * 1000)
        return Confirmed(decided_at, max(0, decided_at - math.ceil(age * 1000)))

    def _pinned(self, fn: ContractFunction, block: BlockIdentifier) -> Any:
        """``fn`` called at ``block`` (its decoded outputs, as the ABI gives them)."""
        try:
            return self.ledger.client.call(fn, block=block)
        except ChainUnavailable as exc:
            raise errors.ChainUnavailable(str(exc)) from exc

    def speaks_for(self, caller: str, patient: str) -> bool:
        """Whether ``caller`` is the patient or her current guardian, asked of the chain (never the read model):
        a guardianship counts once confirmed, and a removal mined above that block is in force at once."""
        if caller.lower() == patient.lower():
            return True
        fn = self.ledger.consents.contract.functions.guardianUntil(
            to_checksum_address(patient), to_checksum_address(caller)
        )
        client = self.ledger.client
        try:
            blocks = [client.rpc(lambda: client.w3.eth.get_block("latest"))]  # the head: a removal is in force
            if self.confirmations:  # and the confirmed block: an appointment counts once confirmed
                confirmed = max(0, int(blocks[0]["number"]) - self.confirmations)
                blocks.append(client.rpc(lambda: client.w3.eth.get_block(confirmed)))
        except ChainUnavailable as exc:
            raise errors.ChainUnavailable(str(exc)) from exc
        return all(int(self._pinned(fn, int(b["number"]))) > int(b["timestamp"]) for b in blocks)

    def _member_at(self, address: str, block: BlockIdentifier) -> Member:
        status, roles, since, key, meta = self._pinned(self.ledger.members.contract.functions.memberOf(address), block)
        return Member(address, MemberStatus(status), roles, since, bytes(key), bytes(meta))

    def _consent_at(self, patient: str, grantee: str, block: BlockIdentifier) -> Consent:
        cid, cats, purposes, status, vf, vu, nonce = self._pinned(
            self.ledger.consents.contract.functions.consentOf(patient, grantee), block
        )
        return Consent(bytes(cid), cats, purposes, ConsentStatus(status), vf, vu, nonce)

    def cache_ready(self) -> bool:
        """Whether the read model may answer now (there is one, and it is synced to the seen head)."""
        return self.db is not None and self.indexer is not None and self.indexer.synced

    def _cached_member(self, address: str) -> Member:
        assert self.db is not None
        m = read_model.member(self.db, address)
        return Member(address, MemberStatus.NONE, 0, 0, b"", b"") if m is None else m

    def member(self, address: str, *, offline: bool = False, view: StateView | None = None) -> Member:
        if view is not None:
            return self._cached_member(address) if view.source == "cache" else self._member_at(address, view.block)
        if self.cache_ready():
            return self._cached_member(address)
        if offline:
            raise NeedsChain("the read model is not synced")
        try:
            return self.ledger.members.member_of(address)
        except ChainUnavailable as exc:
            raise errors.ChainUnavailable(str(exc)) from exc

    def _pending(self) -> PendingRestrictions | None:
        """Restrictions mined above the state a decision reads (enforced before they are confirmed)."""
        return self.indexer.restrictions if self.indexer is not None else None

    def record(self, record_id: bytes, *, offline: bool = False, view: StateView | None = None) -> Record:
        """The record's registration (patient, category, status), retracted if a retraction is pending;
        with ``view``, at its block (a record the read model does not know: :class:`NeedsChain`)."""
        found = self._record(record_id, offline=offline, view=view)
        pending = self._pending()
        if pending is not None and pending.record_withdrawn(record_id):
            return replace(found, status=RecordStatus.RETRACTED)
        return found

    def _record(self, record_id: bytes, *, offline: bool, view: StateView | None) -> Record:
        if view is not None and view.source == "chain":
            patient, category, status, at = self._pinned(
                self.ledger.records.contract.functions.recordOf(record_id), view.block
            )
            return Record(record_id, patient, category, RecordStatus(status), at)
        if view is not None or self.cache_ready():
            assert self.db is not None
            r = read_model.record(self.db, record_id)
            if r is not None:
                return Record(record_id, r.patient, r.category, record_status(r.status), r.time)
            # unknown to the synced read model: registered after the head we saw, or never; the chain says
        if offline or view is not None:
            raise NeedsChain("the record is not in the read model")
        try:
            return self.ledger.records.record_of(record_id)
        except ChainUnavailable as exc:
            raise errors.ChainUnavailable(str(exc)) from exc

    def require_member(
        self, address: str, roles: int = int(PROVIDER_ROLES), *, offline: bool = False, view: StateView | None = None
    ) -> Member:
        """The caller's member record if it is active and holds one of ``roles``; else :class:`~gateway.errors.Refused`."""
        m = self.member(address, offline=offline, view=view)
        pending = self._pending()
        if pending is not None and pending.member_restricted(address):
            raise errors.MemberSuspended(f"{address} was suspended or removed in a block not yet confirmed")
        if m.status is MemberStatus.SUSPENDED:
            raise errors.MemberSuspended(f"{address} is suspended")
        if m.status is not MemberStatus.ACTIVE:
            raise errors.NotMember(f"{address} is not an active member")
        if not m.roles & roles:
            raise errors.WrongRole(f"{address} lacks the role for this ({Role(roles)!r})")
        return m

    def _from_cache(
        self,
        patient: str,
        requester: str,
        category: int,
        purpose: int,
        member: Member | None = None,
        view: StateView | None = None,
    ) -> Decision | None:
        """A *yes* from the synced read model, or ``None`` (then the chain decides). ``member``: the
        requester's record if the caller already read it from the read model (saves the lookup).
        ``view``: the read model's block the decision reads (its timestamp is the chain's time)."""
        if purpose == Purpose.EMERGENCY or not 0 <= category < SLOT_COUNT:
            return None
        if view is None and not self.cache_ready():
            return None
        assert self.db is not None and self.indexer is not None
        m = member if member is not None else self._cached_member(requester)
        if m.status is not MemberStatus.ACTIVE or not m.roles & int(PROVIDER_ROLES):
            return None
        k = read_model.consent(self.db, patient, requester)
        if k is None or k.status != status_text(ConsentStatus.ACTIVE):
            return None
        head_time = view.block_time if view is not None else self.indexer.head_time
        if not (k.valid_from <= head_time and max(head_time, time.time()) < k.valid_until):
            return None
        if not (k.categories >> category & 1 and k.purposes >> purpose & 1):
            return None
        return Decision(True, k.consent_id, False, "cache")

    def check(self, patient: str, requester: str, category: int, purpose: int) -> Decision:
        """Whether the access is allowed now (a *no* is an answer, not an error): what discovery shows.
        A revocation mined above the decided state counts, as in :meth:`require`."""
        pending = self._pending()
        if purpose != Purpose.EMERGENCY and pending is not None and pending.consent_revoked(patient, requester):
            return Decision(False, bytes(32), False, "pending")
        cached = self._from_cache(patient, requester, category, purpose)
        if cached is not None:
            return cached
        try:
            result: CheckResult = self.ledger.consents.check(patient, requester, category, purpose)
        except ChainUnavailable as exc:
            raise errors.ChainUnavailable(str(exc)) from exc
        return Decision(result.allowed, result.consent_id, result.emergency)

    def require(
        self,
        patient: str,
        requester: str,
        category: int,
        purpose: int,
        *,
        offline: bool = False,
        member: Member | None = None,
        view: StateView | None = None,
    ) -> Decision:
        """A *yes*, or the domain error saying why not. ``offline``: a yes from the read model or :class:`NeedsChain`.
        ``view``: decide at its block only (a read-model view without a yes: :class:`NeedsChain`).
        A revocation mined above that block and not yet confirmed is in force (:meth:`_pending`)."""
        pending = self._pending()
        if purpose != Purpose.EMERGENCY and pending is not None and pending.consent_revoked(patient, requester):
            raise errors.ConsentRevoked("the patient revoked this institution's consent (in a block not yet confirmed)")
        if view is not None and view.source == "cache":
            cached = self._from_cache(patient, requester, category, purpose, member, view)
            if cached is None:
                raise NeedsChain("only the chain can decide this")
            return cached
        if view is not None:
            try:
                result = self.ledger.consents.check(patient, requester, category, purpose, block=view.block)
                # at the confirmed block it is a yes; what was mined above it may still say no
                head_says_no = (
                    result.allowed
                    and self.confirmations > 0
                    and not result.emergency
                    and not self.ledger.consents.check(patient, requester, category, purpose).allowed
                )
                if head_says_no:
                    raise self.explain(patient, requester, category, purpose)
            except ChainUnavailable as exc:
                raise errors.ChainUnavailable(str(exc)) from exc
            if not result.allowed:
                raise self.explain(patient, requester, category, purpose, view=view)
            return Decision(True, result.consent_id, result.emergency)
        if offline:
            cached = self._from_cache(patient, requester, category, purpose, member)
            if cached is None:
                raise NeedsChain("only the chain can decide this")
            return cached
        decision = self.check(patient, requester, category, purpose)
        if not decision.allowed:
            raise self.explain(patient, requester, category, purpose)
        return decision

    def explain(
        self, patient: str, requester: str, category: int, purpose: int, *, view: StateView | None = None
    ) -> errors.DomainError:
        """Why ``check`` said no, as a domain error (with a chain ``view``: at its block, as the check was)."""
        try:
            if view is not None and view.source == "chain":
                member = self._member_at(requester, view.block)
                consent = self._consent_at(patient, requester, view.block)
                now = view.block_time
            else:
                member = self.ledger.members.member_of(requester)  # the chain's word, not the cache's
                consent = self.ledger.consents.consent_of(patient, requester)
                now = self.ledger.client.block_timestamp()
        except ChainUnavailable as exc:
            return errors.ChainUnavailable(str(exc))
        except errors.DomainError as error:
            return error
        name = self.category_keys.name_slot(patient, category) if self.category_keys is not None else None
        why = refusal(member, consent, now, category, purpose, category_name=name)
        extra = {} if why.valid_until is None else {"validUntil": why.valid_until}
        return _REFUSALS[why.code](why.detail, **extra)
