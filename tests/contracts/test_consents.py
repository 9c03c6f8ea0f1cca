"""ConsentRegistry: direct grants, replacement, revocation, guardians, emergency access and every error.

Signed (EIP-712) grants and revocations are in ``test_consent_signatures.py``; the property test
comparing ``check()`` with a model of the rules is in ``test_consent_model.py`` (both beside this file).

Time-boundary assertions pin the block they ask about (``check(..., block=n)``) and place blocks at
exact timestamps with ``evm_setNextBlockTimestamp``, so they never depend on the wall clock.
"""

from __future__ import annotations

import itertools

import pytest
from eth_abi import encode
from eth_utils import keccak

from node_client.contracts import Action, ConsentStatus
from node_client.errors import (
    ConsentEmergencyCategoryNotAllowed,
    ConsentEmergencyOptedOut,
    ConsentEmergencyReasonRequired,
    ConsentInvalidCategories,
    ConsentInvalidGrantee,
    ConsentInvalidGuardian,
    ConsentInvalidPurposes,
    ConsentInvalidWindow,
    ConsentNotActive,
    ConsentNotEmergencyMember,
    ConsentUnknownGuardian,
)
from node_client.vocabulary import (
    ALL_CATEGORIES,
    ALL_PURPOSES,
    EMERGENCY_SAFE,
    SENSITIVE,
    Category,
    Purpose,
    category_mask,
    purpose_mask,
)
from tests.support.chain import h

DAY = 24 * 3600
HOUR = 3600
EMERGENCY_WINDOW = 4 * HOUR
ZERO_ADDRESS = "0x" + "00" * 20
ZERO32 = b"\x00" * 32

# A typical GP referral: the hospital may read the allergy list, medications and lab results for
# treatment and referral, for six months.
REFERRAL_CATEGORIES = category_mask([Category.ALLERGIES, Category.MEDICATIONS, Category.LAB_RESULTS])
REFERRAL_PURPOSES = purpose_mask([Purpose.TREATMENT, Purpose.REFERRAL])
SIX_MONTHS = 182 * DAY


def consent_id(patient: str, grantee: str, grant_nonce: int) -> bytes:
    """The consent id as the contract documents it: keccak256(abi.encode(patient, grantee, grantNonce))."""
    return keccak(encode(["address", "address", "uint64"], [patient, grantee, grant_nonce]))


def emergency_id(patient: str, member: str, valid_until: int) -> bytes:
    return keccak(encode(["string", "address", "address", "uint40"], ["emergency", patient, member, valid_until]))


def set_next_timestamp(client, ts: int) -> None:
    client.w3.provider.make_request("evm_setNextBlockTimestamp", [ts])


def mine_at(client, ts: int) -> int:
    """Mines one empty block with timestamp ``ts``; returns its number."""
    set_next_timestamp(client, ts)
    client.w3.provider.make_request("evm_mine", [])
    block = client.block_number()
    assert client.block_timestamp(block) == ts
    return block


def allowed_matrix(ledger, patient: str, grantee: str) -> dict:
    """check() at the latest block for every (category, purpose) of the vocabulary, in one JSON-RPC batch."""
    fn = ledger.consents.contract.functions.check
    combos = list(itertools.product(Category, Purpose))
    with ledger.client.w3.batch_requests() as batch:
        for cat, pur in combos:
            batch.add(fn(patient, grantee, int(cat), int(pur)))
        results = batch.execute()
    return {combo: (bool(a), bytes(c), bool(e)) for combo, (a, c, e) in zip(combos, results, strict=True)}


def suspend(ledger, accounts, member: str) -> None:
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, member)


def reinstate(ledger, accounts, member: str) -> None:
    ledger.members.enact(accounts.admins[:2], Action.REINSTATE_MEMBER, member)


# ---------------------------------------------------------------------------------------------- grant


def test_grant_emits_event_stores_consent_and_check_follows_the_masks(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    valid_from, valid_until = now - 60, now + SIX_MONTHS

    cid_, result = ledger.consents.grant(
        patient, hospital, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, valid_from, valid_until
    )

    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["consentId"] == cid_ == consent_id(patient.address, hospital, 0)
    assert ev["patient"] == patient.address
    assert ev["grantee"] == hospital
    assert ev["categories"] == REFERRAL_CATEGORIES
    assert ev["purposes"] == REFERRAL_PURPOSES
    assert ev["validFrom"] == valid_from
    assert ev["validUntil"] == valid_until
    assert ev["signer"] == patient.address

    consent = ledger.consents.consent_of(patient.address, hospital)
    assert consent.consent_id == cid_
    assert consent.categories == REFERRAL_CATEGORIES
    assert consent.purposes == REFERRAL_PURPOSES
    assert consent.status is ConsentStatus.ACTIVE
    assert (consent.valid_from, consent.valid_until) == (valid_from, valid_until)
    assert consent.nonce == 1 == ledger.consents.nonces(patient.address, hospital)

    granted_cats = {Category.ALLERGIES, Category.MEDICATIONS, Category.LAB_RESULTS}
    granted_purposes = {Purpose.TREATMENT, Purpose.REFERRAL}
    matrix = allowed_matrix(ledger, patient.address, hospital)
    for (cat, pur), (allowed, got_id, emergency) in matrix.items():
        expected = cat in granted_cats and pur in granted_purposes
        assert allowed is expected, (Category(cat).name, Purpose(pur).name)
        assert got_id == (cid_ if expected else ZERO32)
        assert emergency is False
    assert sum(a for a, _, _ in matrix.values()) == 6

    # The consent is the patient's to this grantee only.
    assert not ledger.consents.check(
        patient.address, accounts.clinic.address, Category.ALLERGIES, Purpose.TREATMENT
    ).allowed
    assert not ledger.consents.check(
        accounts.patients[1].address, hospital, Category.ALLERGIES, Purpose.TREATMENT
    ).allowed


def test_no_consent_reads_as_none(ledger, accounts):
    consent = ledger.consents.consent_of(accounts.patients[0].address, accounts.hospital.address)
    assert consent.status is ConsentStatus.NONE
    assert consent.consent_id == ZERO32
    assert (consent.categories, consent.purposes, consent.nonce) == (0, 0, 0)


def test_every_provider_role_can_be_a_grantee(ledger, chain, accounts):
    patient = accounts.patients[0]
    now = chain.now()
    for grantee in (accounts.hospital, accounts.clinic, accounts.lab, accounts.pharmacy):
        ledger.consents.grant(patient, grantee.address, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY)
        assert ledger.consents.check(patient.address, grantee.address, Category.MEDICATIONS, Purpose.TREATMENT).allowed


def test_validity_window_is_half_open_from_valid_from_to_valid_until(ledger, chain, accounts, client):
    patient, clinic = accounts.patients[0], accounts.clinic.address
    now = chain.now()
    valid_from, valid_until = now + DAY, now + 8 * DAY  # a week of follow-up care starting tomorrow
    cid_, _ = ledger.consents.grant(patient, clinic, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, valid_from, valid_until)

    def allowed(block: int) -> bool:
        return ledger.consents.check(
            patient.address, clinic, Category.ALLERGIES, Purpose.TREATMENT, block=block
        ).allowed

    assert not allowed(client.block_number())  # granted, not yet in force
    assert not allowed(mine_at(client, valid_from - 1))
    first = mine_at(client, valid_from)
    assert allowed(first)
    assert (
        ledger.consents.check(patient.address, clinic, Category.ALLERGIES, Purpose.TREATMENT, block=first).consent_id
        == cid_
    )
    assert allowed(mine_at(client, valid_until - 1))
    assert not allowed(mine_at(client, valid_until))
    # Expired, not revoked: the stored consent still says Active.
    assert ledger.consents.consent_of(patient.address, clinic).status is ConsentStatus.ACTIVE


# ---------------------------------------------------------------------------------------- replacement


def test_second_grant_to_the_same_grantee_replaces_the_first(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    first_id, _ = ledger.consents.grant(
        patient, hospital, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + SIX_MONTHS
    )

    # The patient narrows the consent: medications only, treatment only, one month.
    meds = category_mask([Category.MEDICATIONS])
    treatment = purpose_mask([Purpose.TREATMENT])
    second_id, result = ledger.consents.grant(patient, hospital, meds, treatment, now, now + 30 * DAY)

    assert second_id != first_id
    assert second_id == consent_id(patient.address, hospital, 1)
    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["consentId"] == second_id
    consent = ledger.consents.consent_of(patient.address, hospital)
    assert consent.consent_id == second_id
    assert (consent.categories, consent.purposes) == (meds, treatment)
    assert consent.valid_until == now + 30 * DAY
    assert consent.nonce == 2
    assert consent.status is ConsentStatus.ACTIVE

    ok = ledger.consents.check(patient.address, hospital, Category.MEDICATIONS, Purpose.TREATMENT)
    assert ok.allowed and ok.consent_id == second_id
    # Nothing of the first consent survives the replacement.
    assert not ledger.consents.check(patient.address, hospital, Category.ALLERGIES, Purpose.TREATMENT).allowed
    assert not ledger.consents.check(patient.address, hospital, Category.MEDICATIONS, Purpose.REFERRAL).allowed


def test_grants_to_different_grantees_are_independent(ledger, chain, accounts):
    patient = accounts.patients[0]
    now = chain.now()
    ledger.consents.grant(patient, accounts.hospital.address, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY)
    lab_id, _ = ledger.consents.grant(
        patient,
        accounts.lab.address,
        category_mask([Category.LAB_RESULTS]),
        purpose_mask([Purpose.TREATMENT]),
        now,
        now + DAY,
    )
    assert lab_id == consent_id(patient.address, accounts.lab.address, 0)
    assert ledger.consents.nonces(patient.address, accounts.hospital.address) == 1
    assert ledger.consents.nonces(patient.address, accounts.lab.address) == 1

    ledger.consents.revoke(patient, accounts.lab.address)
    assert ledger.consents.check(
        patient.address, accounts.hospital.address, Category.LAB_RESULTS, Purpose.TREATMENT
    ).allowed
    assert not ledger.consents.check(
        patient.address, accounts.lab.address, Category.LAB_RESULTS, Purpose.TREATMENT
    ).allowed


# --------------------------------------------------------------------------------------------- revoke


def test_revoke_takes_effect_from_its_block(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    cid_, granted = ledger.consents.grant(
        patient, hospital, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + SIX_MONTHS
    )
    chain.advance(3 * DAY)

    result = ledger.consents.revoke(patient, hospital)

    (ev,) = ledger.consents.events_in(result, "ConsentRevoked")
    assert ev["consentId"] == cid_
    assert ev["patient"] == patient.address
    assert ev["grantee"] == hospital
    assert ev["signer"] == patient.address

    def allowed(block: int | str) -> bool:
        return ledger.consents.check(
            patient.address, hospital, Category.LAB_RESULTS, Purpose.TREATMENT, block=block
        ).allowed

    assert allowed(result.block_number - 1)
    assert not allowed(result.block_number)
    assert not allowed("latest")
    consent = ledger.consents.consent_of(patient.address, hospital)
    assert consent.status is ConsentStatus.REVOKED
    assert consent.consent_id == cid_  # the revoked consent keeps its id
    assert consent.nonce == 2
    assert granted.block_number < result.block_number


def test_grant_after_revoke_is_a_new_consent(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    first_id, _ = ledger.consents.grant(patient, hospital, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY)
    ledger.consents.revoke(patient, hospital)
    second_id, _ = ledger.consents.grant(patient, hospital, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY)
    assert second_id == consent_id(patient.address, hospital, 2) != first_id
    consent = ledger.consents.consent_of(patient.address, hospital)
    assert consent.status is ConsentStatus.ACTIVE and consent.nonce == 3
    check = ledger.consents.check(patient.address, hospital, Category.ALLERGIES, Purpose.REFERRAL)
    assert check.allowed and check.consent_id == second_id


def test_an_expired_consent_can_still_be_revoked(ledger, chain, accounts):
    patient, lab = accounts.patients[0], accounts.lab.address
    now = chain.now()
    cid_, _ = ledger.consents.grant(
        patient, lab, category_mask([Category.LAB_RESULTS]), purpose_mask([Purpose.TREATMENT]), now, now + HOUR
    )
    chain.advance(2 * HOUR)
    result = ledger.consents.revoke(patient, lab)
    (ev,) = ledger.consents.events_in(result, "ConsentRevoked")
    assert ev["consentId"] == cid_


def test_revoke_without_consent_reverts(ledger, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    with pytest.raises(ConsentNotActive) as info:
        ledger.consents.revoke(patient, hospital)
    assert info.value.patient == patient.address
    assert info.value.grantee == hospital


def test_revoke_twice_reverts(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    ledger.consents.grant(patient, hospital, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY)
    ledger.consents.revoke(patient, hospital)
    with pytest.raises(ConsentNotActive) as info:
        ledger.consents.revoke(patient, hospital)
    assert info.value.args_by_name == {"patient": patient.address, "grantee": hospital}
    assert ledger.consents.nonces(patient.address, hospital) == 2  # the failed revoke consumed nothing


# ------------------------------------------------------------------------------------------ guardians


def test_set_change_and_remove_guardian(ledger, chain, accounts):
    child, parent = accounts.patients[0], accounts.patients[1]
    now = chain.now()
    until = now + 365 * DAY

    result = ledger.consents.set_guardian(child, parent.address, until)
    (ev,) = ledger.consents.events_in(result, "GuardianSet")
    assert (ev["patient"], ev["guardian"], ev["validUntil"]) == (child.address, parent.address, until)
    assert ledger.consents.guardian_until(child.address, parent.address) == until
    assert ledger.consents.guardian_until(parent.address, child.address) == 0  # not symmetric

    # Calling again changes the expiry (shorter here).
    ledger.consents.set_guardian(child, parent.address, now + 30 * DAY)
    assert ledger.consents.guardian_until(child.address, parent.address) == now + 30 * DAY

    result = ledger.consents.remove_guardian(child, parent.address)
    (ev,) = ledger.consents.events_in(result, "GuardianRemoved")
    assert (ev["patient"], ev["guardian"]) == (child.address, parent.address)
    assert ledger.consents.guardian_until(child.address, parent.address) == 0


def test_an_expired_guardian_can_still_be_removed(ledger, chain, accounts):
    child, parent = accounts.patients[0], accounts.patients[1]
    ledger.consents.set_guardian(child, parent.address, chain.now() + HOUR)
    chain.advance(2 * HOUR)
    ledger.consents.remove_guardian(child, parent.address)
    assert ledger.consents.guardian_until(child.address, parent.address) == 0


@pytest.mark.parametrize("case", ["zero", "self", "expiry-now", "expiry-past"])
def test_set_guardian_rejects_invalid_guardians(ledger, chain, accounts, case):
    patient = accounts.patients[0]
    now = chain.now()
    guardian, until = {
        "zero": (ZERO_ADDRESS, now + DAY),
        "self": (patient.address, now + DAY),
        "expiry-now": (accounts.patients[1].address, now),
        "expiry-past": (accounts.patients[1].address, now - DAY),
    }[case]
    with pytest.raises(ConsentInvalidGuardian) as info:
        ledger.consents.set_guardian(patient, guardian, until)
    assert info.value.guardian.lower() == guardian.lower()


def test_remove_unknown_guardian_reverts(ledger, chain, accounts):
    patient, stranger = accounts.patients[0], accounts.patients[2]
    with pytest.raises(ConsentUnknownGuardian) as info:
        ledger.consents.remove_guardian(patient, stranger.address)
    assert info.value.args_by_name == {"patient": patient.address, "guardian": stranger.address}

    ledger.consents.set_guardian(patient, stranger.address, chain.now() + DAY)
    ledger.consents.remove_guardian(patient, stranger.address)
    with pytest.raises(ConsentUnknownGuardian):
        ledger.consents.remove_guardian(patient, stranger.address)


# ---------------------------------------------------------------------------------- emergency opt-out


def test_emergency_opt_out_and_back_in(ledger, accounts):
    patient = accounts.patients[0]
    assert ledger.consents.emergency_opted_out(patient.address) is False

    result = ledger.consents.set_emergency_opt_out(patient, True)
    (ev,) = ledger.consents.events_in(result, "EmergencyOptOutSet")
    assert (ev["patient"], ev["optedOut"]) == (patient.address, True)
    assert ledger.consents.emergency_opted_out(patient.address) is True

    result = ledger.consents.set_emergency_opt_out(patient, False)
    (ev,) = ledger.consents.events_in(result, "EmergencyOptOutSet")
    assert (ev["patient"], ev["optedOut"]) == (patient.address, False)
    assert ledger.consents.emergency_opted_out(patient.address) is False


# ------------------------------------------------------------------------------------ emergency access

ALLERGIES_AND_MEDICATIONS = category_mask([Category.ALLERGIES, Category.MEDICATIONS])


def test_emergency_window_constant_is_four_hours(ledger):
    assert ledger.consents.contract.functions.EMERGENCY_WINDOW().call() == EMERGENCY_WINDOW


def test_emergency_access_opens_a_four_hour_window_on_safe_categories(ledger, chain, accounts, client):
    patient, er = accounts.patients[0], accounts.hospital  # unconscious patient in the emergency room
    reason = h("ER admission 2026-11-23: unconscious, suspected anaphylaxis")
    opened_at = chain.now() + 7
    set_next_timestamp(client, opened_at)

    access_id, result = ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, reason)

    until = opened_at + EMERGENCY_WINDOW
    (ev,) = ledger.consents.events_in(result, "EmergencyAccessGranted")
    assert ev["accessId"] == access_id == emergency_id(patient.address, er.address, until)
    assert ev["patient"] == patient.address
    assert ev["member"] == er.address
    assert ev["categories"] == ALLERGIES_AND_MEDICATIONS
    assert ev["validUntil"] == until
    assert ev["reasonHash"] == reason
    assert ledger.consents.emergency_window(patient.address, er.address) == (ALLERGIES_AND_MEDICATIONS, until)

    def check(cat: Category, pur: Purpose = Purpose.EMERGENCY, block: int | str = "latest"):
        return ledger.consents.check(patient.address, er.address, cat, pur, block=block)

    for cat in (Category.ALLERGIES, Category.MEDICATIONS):
        result = check(cat)
        assert (result.allowed, result.consent_id, result.emergency) == (True, access_id, True)
    # Only the emergency purpose, only the categories asked for, only safe categories.
    assert not check(Category.ALLERGIES, Purpose.TREATMENT).allowed
    assert not check(Category.CONDITIONS).allowed  # safe, but not requested
    for sensitive in (
        Category.GENOMICS,
        Category.MENTAL_HEALTH,
        Category.SEXUAL_REPRODUCTIVE_HEALTH,
        Category.LAB_RESULTS,
    ):
        assert not check(sensitive).allowed
    # No consent was created; other members get nothing.
    assert ledger.consents.consent_of(patient.address, er.address).status is ConsentStatus.NONE
    assert not ledger.consents.check(
        patient.address, accounts.clinic.address, Category.ALLERGIES, Purpose.EMERGENCY
    ).allowed

    # The window is [opened_at, opened_at + 4 h).
    assert check(Category.ALLERGIES, block=mine_at(client, until - 1)).allowed
    assert not check(Category.ALLERGIES, block=mine_at(client, until)).allowed


def test_emergency_access_on_a_sensitive_category_is_never_allowed(ledger, accounts):
    patient, er = accounts.patients[0], accounts.hospital
    ledger.consents.emergency_access(er, patient.address, EMERGENCY_SAFE, h("trauma bay"))
    for cat in Category:
        allowed = ledger.consents.check(patient.address, er.address, cat, Purpose.EMERGENCY).allowed
        assert allowed is bool(EMERGENCY_SAFE >> cat & 1), cat.name
    assert EMERGENCY_SAFE & SENSITIVE == 0


def test_regular_consent_takes_precedence_over_emergency_window(ledger, chain, accounts):
    patient, er = accounts.patients[0], accounts.hospital
    now = chain.now()
    cid_, _ = ledger.consents.grant(
        patient, er.address, category_mask([Category.ALLERGIES]), purpose_mask([Purpose.EMERGENCY]), now, now + DAY
    )
    access_id, _ = ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    by_consent = ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY)
    assert (by_consent.allowed, by_consent.consent_id, by_consent.emergency) == (True, cid_, False)
    by_window = ledger.consents.check(patient.address, er.address, Category.MEDICATIONS, Purpose.EMERGENCY)
    assert (by_window.allowed, by_window.consent_id, by_window.emergency) == (True, access_id, True)


def test_opting_out_mid_window_ends_the_window(ledger, chain, accounts):
    patient, er = accounts.patients[0], accounts.hospital
    ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    chain.advance(HOUR)
    assert ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY).allowed

    result = ledger.consents.set_emergency_opt_out(patient, True)
    assert not ledger.consents.check(
        patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY, block=result.block_number
    ).allowed
    with pytest.raises(ConsentEmergencyOptedOut) as info:
        ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER again"))
    assert info.value.patient == patient.address


def test_opting_back_in_does_not_revive_a_window_ended_by_opting_out(ledger, chain, accounts):
    patient, er = accounts.patients[0], accounts.hospital
    ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    chain.advance(HOUR)
    ledger.consents.set_emergency_opt_out(patient, True)
    chain.advance(60)
    ledger.consents.set_emergency_opt_out(patient, False)  # still inside the original 4 h
    assert not ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY).allowed

    # A new break-glass access after opting back in works as usual.
    access_id, _ = ledger.consents.emergency_access(
        er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER, second visit")
    )
    again = ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY)
    assert (again.allowed, again.consent_id, again.emergency) == (True, access_id, True)


def test_a_new_emergency_access_replaces_the_window(ledger, chain, accounts):
    patient, er = accounts.patients[0], accounts.hospital
    ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    chain.advance(3 * HOUR)
    immunizations = category_mask([Category.IMMUNIZATIONS])
    access_id, _ = ledger.consents.emergency_access(er, patient.address, immunizations, h("ER, tetanus status"))
    assert (
        ledger.consents.check(patient.address, er.address, Category.IMMUNIZATIONS, Purpose.EMERGENCY).consent_id
        == access_id
    )
    assert not ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY).allowed
    chain.advance(2 * HOUR)  # past the first window's end, inside the second's
    assert ledger.consents.check(patient.address, er.address, Category.IMMUNIZATIONS, Purpose.EMERGENCY).allowed


@pytest.mark.parametrize("member", ["clinic", "lab", "auditor", "gateway", "outsider"])
def test_emergency_access_needs_the_emergency_capability(ledger, accounts, member):
    caller = getattr(accounts, member)
    with pytest.raises(ConsentNotEmergencyMember) as info:
        ledger.consents.emergency_access(caller, accounts.patients[0].address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    assert info.value.account == caller.address


def test_emergency_access_by_a_suspended_hospital_reverts(ledger, accounts):
    suspend(ledger, accounts, accounts.hospital.address)
    with pytest.raises(ConsentNotEmergencyMember):
        ledger.consents.emergency_access(
            accounts.hospital, accounts.patients[0].address, ALLERGIES_AND_MEDICATIONS, h("ER")
        )


@pytest.mark.parametrize(
    "categories",
    [
        category_mask([Category.GENOMICS]),
        category_mask([Category.MENTAL_HEALTH]),
        category_mask([Category.SEXUAL_REPRODUCTIVE_HEALTH]),
        category_mask([Category.ALLERGIES, Category.MENTAL_HEALTH]),  # one unsafe category spoils the request
        category_mask([Category.LAB_RESULTS]),  # not sensitive, but not emergency-safe either
        0,
        1 << 14,
    ],
    ids=["genomics", "mental-health", "sexual-health", "allergies+mental-health", "lab-results", "zero", "bit-14"],
)
def test_emergency_access_rejects_categories_outside_the_safe_set(ledger, accounts, categories):
    with pytest.raises(ConsentEmergencyCategoryNotAllowed) as info:
        ledger.consents.emergency_access(accounts.hospital, accounts.patients[0].address, categories, h("ER"))
    assert info.value.categories == categories


def test_emergency_access_rejects_opted_out_patient(ledger, accounts):
    patient = accounts.patients[0]
    ledger.consents.set_emergency_opt_out(patient, True)
    with pytest.raises(ConsentEmergencyOptedOut) as info:
        ledger.consents.emergency_access(accounts.hospital, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    assert info.value.patient == patient.address


def test_emergency_access_needs_a_reason(ledger, accounts):
    with pytest.raises(ConsentEmergencyReasonRequired) as info:
        ledger.consents.emergency_access(
            accounts.hospital, accounts.patients[0].address, ALLERGIES_AND_MEDICATIONS, ZERO32
        )
    assert info.value.args_by_name == {}


# ------------------------------------------------------------------------------------- grant errors


@pytest.mark.parametrize("who", ["outsider", "auditor", "regulator", "gateway", "patient"])
def test_grant_to_a_non_provider_reverts(ledger, chain, accounts, who):
    grantee = accounts.patients[1].address if who == "patient" else getattr(accounts, who).address
    now = chain.now()
    with pytest.raises(ConsentInvalidGrantee) as info:
        ledger.consents.grant(accounts.patients[0], grantee, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY)
    assert info.value.grantee == grantee


def test_grant_to_a_suspended_hospital_reverts(ledger, chain, accounts):
    suspend(ledger, accounts, accounts.hospital.address)
    now = chain.now()
    with pytest.raises(ConsentInvalidGrantee) as info:
        ledger.consents.grant(
            accounts.patients[0], accounts.hospital.address, REFERRAL_CATEGORIES, REFERRAL_PURPOSES, now, now + DAY
        )
    assert info.value.grantee == accounts.hospital.address


def test_grant_rejects_an_empty_category_mask(ledger, chain, accounts):
    """Every bit of the uint16 mask is a slot (15 is the spare): only an empty mask is invalid."""
    categories = 0
    now = chain.now()
    with pytest.raises(ConsentInvalidCategories) as info:
        ledger.consents.grant(
            accounts.patients[0], accounts.hospital.address, categories, REFERRAL_PURPOSES, now, now + DAY
        )
    assert info.value.categories == categories


@pytest.mark.parametrize("purposes", [0, 1 << 7, ALL_PURPOSES | 1 << 7])
def test_grant_rejects_invalid_purposes(ledger, chain, accounts, purposes):
    now = chain.now()
    with pytest.raises(ConsentInvalidPurposes) as info:
        ledger.consents.grant(
            accounts.patients[0], accounts.hospital.address, REFERRAL_CATEGORIES, purposes, now, now + DAY
        )
    assert info.value.purposes == purposes


def test_grant_accepts_the_whole_vocabulary(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    ledger.consents.grant(patient, hospital, ALL_CATEGORIES, ALL_PURPOSES, now, now + DAY)
    assert all(a for a, _, _ in allowed_matrix(ledger, patient.address, hospital).values())


@pytest.mark.parametrize(
    "window",
    [
        lambda now: (now + DAY, now + DAY),  # empty
        lambda now: (now + 2 * DAY, now + DAY),  # reversed
        lambda now: (now - 2 * DAY, now - DAY),  # over
        lambda now: (0, now),  # ends now: the grant's block is later
    ],
    ids=["from-equals-until", "from-after-until", "until-in-the-past", "until-now"],
)
def test_grant_rejects_invalid_windows(ledger, chain, accounts, window):
    valid_from, valid_until = window(chain.now())
    with pytest.raises(ConsentInvalidWindow) as info:
        ledger.consents.grant(
            accounts.patients[0],
            accounts.hospital.address,
            REFERRAL_CATEGORIES,
            REFERRAL_PURPOSES,
            valid_from,
            valid_until,
        )
    assert (info.value.validFrom, info.value.validUntil) == (valid_from, valid_until)


def test_failed_grants_consume_no_nonce(ledger, chain, accounts):
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    with pytest.raises(ConsentInvalidCategories):
        ledger.consents.grant(patient, hospital, 0, REFERRAL_PURPOSES, now, now + DAY)
    assert ledger.consents.nonces(patient.address, hospital) == 0
    assert ledger.consents.consent_of(patient.address, hospital).status is ConsentStatus.NONE


# ------------------------------------------------------------------------------- grantee membership


def test_a_suspended_grantee_is_refused_until_reinstated(ledger, chain, accounts):
    patient, lab = accounts.patients[0], accounts.lab.address
    now = chain.now()
    cid_, _ = ledger.consents.grant(
        patient, lab, category_mask([Category.LAB_RESULTS]), purpose_mask([Purpose.TREATMENT]), now, now + 30 * DAY
    )
    assert ledger.consents.check(patient.address, lab, Category.LAB_RESULTS, Purpose.TREATMENT).allowed

    suspend(ledger, accounts, lab)
    refused = ledger.consents.check(patient.address, lab, Category.LAB_RESULTS, Purpose.TREATMENT)
    assert (refused.allowed, refused.consent_id, refused.emergency) == (False, ZERO32, False)
    # The consent itself is untouched.
    assert ledger.consents.consent_of(patient.address, lab).status is ConsentStatus.ACTIVE

    reinstate(ledger, accounts, lab)
    again = ledger.consents.check(patient.address, lab, Category.LAB_RESULTS, Purpose.TREATMENT)
    assert (again.allowed, again.consent_id) == (True, cid_)


def test_a_suspended_hospital_loses_its_emergency_window(ledger, accounts):
    patient, er = accounts.patients[0], accounts.hospital
    access_id, _ = ledger.consents.emergency_access(er, patient.address, ALLERGIES_AND_MEDICATIONS, h("ER"))
    suspend(ledger, accounts, er.address)
    assert not ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY).allowed
    reinstate(ledger, accounts, er.address)
    assert (
        ledger.consents.check(patient.address, er.address, Category.ALLERGIES, Purpose.EMERGENCY).consent_id
        == access_id
    )


def test_a_removed_grantee_is_refused(ledger, chain, accounts):
    patient, pharmacy = accounts.patients[0], accounts.pharmacy.address
    now = chain.now()
    ledger.consents.grant(
        patient, pharmacy, category_mask([Category.MEDICATIONS]), purpose_mask([Purpose.TREATMENT]), now, now + DAY
    )
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, pharmacy)
    assert not ledger.consents.check(patient.address, pharmacy, Category.MEDICATIONS, Purpose.TREATMENT).allowed


# --------------------------------------------------------------------------------- out of vocabulary


@pytest.mark.parametrize("category,purpose", [(15, 0), (16, 0), (255, 0), (0, 7), (0, 8), (0, 255), (255, 255)])
def test_check_outside_the_vocabulary_returns_false_without_reverting(ledger, chain, accounts, category, purpose):
    patient, er = accounts.patients[0], accounts.hospital
    now = chain.now()
    ledger.consents.grant(patient, er.address, ALL_CATEGORIES, ALL_PURPOSES, now, now + DAY)
    ledger.consents.emergency_access(er, patient.address, EMERGENCY_SAFE, h("ER"))
    result = ledger.consents.check(patient.address, er.address, category, purpose)
    assert (result.allowed, result.consent_id, result.emergency) == (False, ZERO32, False)
