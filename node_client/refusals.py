"""Why the chain says no, in words a person at the desk can act on.

``ConsentRegistry.check`` answers only allowed or not; :func:`refusal` reads the member and the consent
the check looked at and names the first reason, with the same codes the gateway's problems use
(``consent_revoked``, ``member_suspended``, ...), so the CLI and the gateway give one answer.
:func:`revert_hint` does the same for the reverts of submitting a health code.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_client._exceptions import ContractRevert
from node_client.blinding import slot_category
from node_client.contracts import Consent, ConsentStatus, Member, MemberStatus
from node_client.vocabulary import PROVIDER_ROLES, SLOT_COUNT, Category, Purpose

__all__ = ["Refusal", "refusal", "revert_hint", "slot_word"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first reason an access is refused: a stable ``code`` and a sentence (``valid_until`` if expired)."""

    code: str
    detail: str
    valid_until: int | None = None


def slot_word(slot: int) -> str:
    """A slot in a sentence, for one who holds no key: an emergency-safe one by its category, else "slot N"."""
    if not 0 <= slot < SLOT_COUNT:
        return str(slot)
    category = slot_category(None, slot)
    return f"slot {slot}" if category is None else Category(category).name.lower()


def refusal(
    member: Member, consent: Consent, now: int, category: int, purpose: int, *, category_name: str | None = None
) -> Refusal:
    """Why ``member`` may not read slot ``category`` for ``purpose`` under ``consent`` at chain time ``now``.

    ``category_name`` names the slot's category (by one who holds the patient's key); else :func:`slot_word`.
    """
    if member.status is MemberStatus.SUSPENDED:
        return Refusal("member_suspended", f"{member.address} is suspended")
    if member.status is not MemberStatus.ACTIVE:
        return Refusal("not_member", f"{member.address} is not an active member")
    if not member.roles & int(PROVIDER_ROLES):
        return Refusal("wrong_role", f"{member.address} is not a care provider")
    cat, pur = category_name or slot_word(category), Purpose(purpose).name.lower()
    if purpose == Purpose.EMERGENCY and (
        consent.status is not ConsentStatus.ACTIVE or not consent.purposes >> purpose & 1
    ):
        return Refusal(
            "emergency_not_allowed",
            f"no open emergency access covers {cat} (only emergency-safe categories, not after opt-out)",
        )
    if consent.status is ConsentStatus.NONE:
        return Refusal("consent_missing", "the patient has not granted this institution any consent")
    if consent.status is ConsentStatus.REVOKED:
        return Refusal("consent_revoked", "the patient revoked this institution's consent")
    if not consent.valid_from <= now < consent.valid_until:
        return Refusal("consent_expired", "the consent is not valid at this time", consent.valid_until)
    if not consent.categories >> category & 1:
        return Refusal("wrong_category", f"the consent does not cover {cat}")
    if not consent.purposes >> purpose & 1:
        return Refusal("wrong_purpose", f"the consent does not cover the purpose {pur}")
    return Refusal("not_member", "the requester is not an active care provider")


#: ConsentRegistry reverts a submitter of a health code meets → what to do about it
_HINTS = {
    "ConsentInvalidNonce": "this health code was already used, or a newer grant or revoke of the same patient "
    "and institution replaced it: ask the patient for a new code",
    "ConsentExpiredSignature": "the code's submit-before time has passed: ask the patient for a new code",
    "ConsentInvalidSignature": "the code's signature does not verify: it was changed after signing, or signed "
    "for another ledger",
    "ConsentInvalidSigner": "the code is signed by neither the patient nor one of the patient's current guardians",
    "ConsentInvalidGrantee": "the institution the code names is not an active member that may receive data",
    "ConsentUnauthorizedSubmitter": "only an active member may submit a health code",
    "ConsentNotActive": "there is no consent in force between this patient and institution",
    "ConsentInvalidWindow": "the code's validity window is empty or already over",
}


def revert_hint(exc: ContractRevert) -> str | None:
    """A sentence for a revert a person can act on, or None where the error's name says it all."""
    return _HINTS.get(exc.error_name)
