"""The category key: a patient's permutation of the non-emergency slots (node_client/blinding.py)."""

from __future__ import annotations

import pytest
from eth_account import Account

from node_client._exceptions import SignatureError
from node_client.blinding import BLINDED_SLOTS, PUBLIC_SLOTS, CategoryKey, category_key, sign_category_key
from node_client.signing import Domain
from node_client.vocabulary import CATEGORIES, EMERGENCY_SAFE, SENSITIVE, SLOT_COUNT, Category

DOMAIN = Domain(31337, "0x" + "11" * 20)


def test_the_key_is_the_patients_and_always_the_same():
    patient = Account.create()
    sig = sign_category_key(patient, DOMAIN)
    assert sign_category_key(patient, DOMAIN) == sig  # RFC 6979: nothing to back up
    assert category_key(DOMAIN, patient.address, sig) == category_key(DOMAIN, patient.address, sig)
    with pytest.raises(SignatureError):
        category_key(DOMAIN, Account.create().address, sig)
    other = Domain(31337, "0x" + "22" * 20)
    assert category_key(other, patient.address, sign_category_key(patient, other)) != category_key(
        DOMAIN, patient.address, sig
    )


def test_emergency_safe_slots_are_public_and_the_rest_a_permutation():
    assert tuple(t.bit for t in CATEGORIES if t.emergency_safe) == PUBLIC_SLOTS
    assert sorted(PUBLIC_SLOTS + BLINDED_SLOTS) == list(range(SLOT_COUNT))
    key = CategoryKey(bytes(range(32)))
    slots = [key.slot(t.bit) for t in CATEGORIES]
    assert len(set(slots)) == len(CATEGORIES)
    assert all(key.slot(b) == b for b in PUBLIC_SLOTS)
    assert all(key.category(key.slot(t.bit)) == t.bit for t in CATEGORIES)
    spare = (set(BLINDED_SLOTS) - set(slots)).pop()
    assert key.category(spare) is None
    assert key.categories(key.slots(SENSITIVE)) == SENSITIVE
    assert key.slots(EMERGENCY_SAFE) == EMERGENCY_SAFE


def test_patients_slots_differ_so_a_slot_names_no_category():
    """Over many patients every blinded category lands in every blinded slot: no slot means 'mental health'."""
    seen: dict[int, set[int]] = {c: set() for c in range(len(CATEGORIES)) if c not in PUBLIC_SLOTS}
    for i in range(400):
        key = CategoryKey(i.to_bytes(32, "big"))
        for c in seen:
            seen[c].add(key.slot(c))
    assert all(s == set(BLINDED_SLOTS) for s in seen.values())
    assert Category.MENTAL_HEALTH in seen
