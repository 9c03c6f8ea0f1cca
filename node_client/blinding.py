"""Blinded categories: which slot of the chain's category mask holds which of a patient's categories.

On chain a category bit is a *slot*. The four emergency-safe categories (allergies, medications,
conditions, immunizations) keep their own bit, because break-glass access is checked on chain without
the patient. Every other category, and one spare slot (15), is moved to a slot chosen by a keyed
permutation of the twelve non-emergency slots, with a key only the patient can make: so nothing on chain
tells that a record or a consent concerns mental health rather than imaging, or a sensitive category
rather than an ordinary one (what still leaks: ``docs/data-on-chain.md``).

The key (:class:`CategoryKey`) is derived from the patient's EIP-712 signature of a fixed
``CategoryKeyRequest`` (RFC 6979 signatures are deterministic: the same wallet always gives the same
key, nothing to back up). The signature itself is what she hands an institution (in a health code, or
when she signs in to its portal): the gateway checks that it recovers to her before deriving the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from node_client._exceptions import SignatureError
from node_client.signing import CategoryKeyRequest, Domain, recover_signer, sign_typed
from node_client.vocabulary import CATEGORIES, EMERGENCY_SAFE, SLOT_COUNT

__all__ = [
    "BLINDED_SLOTS",
    "PUBLIC_SLOTS",
    "SLOT_COUNT",
    "CategoryKey",
    "category_key",
    "sign_category_key",
    "slot_category",
    "slot_name",
]

#: the emergency-safe categories' bits, the same number on chain for every patient
PUBLIC_SLOTS: tuple[int, ...] = tuple(b for b in range(SLOT_COUNT) if EMERGENCY_SAFE >> b & 1)
#: the other slots, permuted per patient (the last one has no category: a spare)
BLINDED_SLOTS: tuple[int, ...] = tuple(b for b in range(SLOT_COUNT) if not EMERGENCY_SAFE >> b & 1)

_KEY_TAG = b"hcl/category-key/v1\x00"
_SLOT_TAG = b"hcl/category-slot/v1\x00"


@dataclass(frozen=True, slots=True)
class CategoryKey:
    """One patient's permutation: category bit ↔ on-chain slot."""

    key: bytes = field(repr=False)
    #: the blinded slots sorted by their keyed tag: the i-th blinded category (or the spare) sits in the i-th
    _order: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("a category key is 32 bytes")
        tag = lambda s: hmac.new(self.key, _SLOT_TAG + bytes([s]), hashlib.sha256).digest()  # noqa: E731
        object.__setattr__(self, "_order", tuple(sorted(BLINDED_SLOTS, key=tag)))

    def slot(self, category: int) -> int:
        """The slot of ``category`` for this patient."""
        if not 0 <= category < len(CATEGORIES):
            raise ValueError(f"category {category} outside the vocabulary")
        if category in PUBLIC_SLOTS:
            return category
        return self._order[BLINDED_SLOTS.index(category)]

    def category(self, slot: int) -> int | None:
        """The category in ``slot`` for this patient (None for the spare slot)."""
        if not 0 <= slot < SLOT_COUNT:
            raise ValueError(f"slot {slot} outside 0..{SLOT_COUNT - 1}")
        if slot in PUBLIC_SLOTS:
            return slot
        c = BLINDED_SLOTS[self._order.index(slot)]
        return c if c < len(CATEGORIES) else None

    def slots(self, categories: int) -> int:
        """A category mask → the on-chain slot mask."""
        return _remap(categories, self.slot)

    def categories(self, slots: int) -> int:
        """An on-chain slot mask → the category mask (the spare slot dropped)."""
        return _remap(slots, self.category)


def _remap(mask: int, f: Callable[[int], int | None]) -> int:
    out = 0
    for bit in range(SLOT_COUNT):
        if mask >> bit & 1:
            to = f(bit)
            out |= 0 if to is None else 1 << to
    return out


def sign_category_key(account: LocalAccount, domain: Domain) -> bytes:
    """The patient's signature of her :class:`CategoryKeyRequest`: what she hands an institution."""
    return sign_typed(account, domain, CategoryKeyRequest(account.address))


def category_key(domain: Domain, patient: str, signature: bytes) -> CategoryKey:
    """The key ``signature`` makes, after checking that ``patient`` signed the request (SignatureError)."""
    signer = recover_signer(domain, CategoryKeyRequest(patient), signature)
    if signer.lower() != patient.lower():
        raise SignatureError(f"the category key is signed by {signer}, not by the patient {patient}")
    return CategoryKey(hashlib.sha256(_KEY_TAG + signature).digest())


def slot_category(key: CategoryKey | None, slot: int) -> int | None:
    """The category in ``slot``: with the patient's key any (None for her spare), without it only a public one."""
    if key is not None:
        return key.category(slot)
    return slot if slot in PUBLIC_SLOTS else None


def slot_name(key: CategoryKey | None, slot: int) -> str:
    """The category slug of ``slot``; ``slot-N`` for a blinded slot without the key (or the spare)."""
    category = slot_category(key, slot)
    return CATEGORIES[category].slug if category is not None else f"slot-{slot}"
