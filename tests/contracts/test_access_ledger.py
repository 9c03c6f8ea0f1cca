"""AccessLedger: strict per-release logging and batch Merkle anchors, on a real Hardhat node.

Strict mode re-checks every release at its block: the gateway, the requester's membership, the record
and the patient's consent (or an open break-glass window). Nothing unauthorized can be ledgered.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from node_client import errors
from node_client._client import TxResult
from node_client.contracts import Action, CheckResult
from node_client.deploy import Ledger
from node_client.vocabulary import EMERGENCY_SAFE, Category, Purpose, Role, category_mask, purpose_mask
from tests.support.chain import Accounts, Chain, cid, h

EMERGENCY_WINDOW = 4 * 3600
DAY = 24 * 3600
ZERO32 = b"\x00" * 32


def rid(label: str) -> bytes:
    return h(f"record:{label}")


def access_hash(label: str) -> bytes:
    return h(f"release:{label}")


def add_record(
    ledger: Ledger, accounts: Accounts, label: str, category: int, *, patient: LocalAccount | None = None
) -> bytes:
    patient = patient or accounts.patients[0]
    ledger.records.register(
        accounts.gateway, rid(label), patient.address, accounts.lab.address, int(category), h(label), cid(label)
    )
    return rid(label)


def grant(
    ledger: Ledger,
    chain: Chain,
    patient: LocalAccount,
    grantee: str,
    categories: list[Category],
    purposes: list[Purpose],
    *,
    valid_from: int | None = None,
    valid_until: int | None = None,
) -> bytes:
    now = chain.now()
    consent_id, _ = ledger.consents.grant(
        patient,
        grantee,
        category_mask(categories),
        purpose_mask(purposes),
        now if valid_from is None else valid_from,
        now + 30 * DAY if valid_until is None else valid_until,
    )
    return consent_id


def addr(value: str) -> str:
    return to_checksum_address(value)


def assert_not_authorized(
    exc: pytest.ExceptionInfo[errors.ContractRevert],
    requester: str,
    patient: str,
    category: int,
    purpose: int,
) -> None:
    assert addr(exc.value.requester) == requester
    assert addr(exc.value.patient) == patient
    assert (exc.value.category, exc.value.purpose) == (int(category), int(purpose))


@pytest.fixture
def treatment(ledger: Ledger, accounts: Accounts, chain: Chain) -> tuple[bytes, bytes]:
    """patients[0] lets the hospital read lab results and imaging for treatment; one lab-results record."""
    consent_id = grant(
        ledger,
        chain,
        accounts.patients[0],
        accounts.hospital.address,
        [Category.LAB_RESULTS, Category.IMAGING],
        [Purpose.TREATMENT, Purpose.REFERRAL],
    )
    record_id = add_record(ledger, accounts, "hba1c-2025-02", Category.LAB_RESULTS)
    return consent_id, record_id


def log(
    ledger: Ledger,
    accounts: Accounts,
    record_id: bytes,
    purpose: int = Purpose.TREATMENT,
    *,
    requester: LocalAccount | None = None,
    patient: LocalAccount | None = None,
    gateway: LocalAccount | None = None,
    label: str = "r",
) -> tuple[CheckResult, TxResult]:
    """The gateway ledgers a release of ``record_id`` of ``patient`` (patients[0]) to ``requester`` (hospital)."""
    return ledger.access.log_access(
        gateway or accounts.gateway,
        (requester or accounts.hospital).address,
        (patient or accounts.patients[0]).address,
        record_id,
        int(purpose),
        access_hash(label),
    )


# ---------------------------------------------------------------- logAccess: success


def test_log_access_under_consent_emits_the_consent_id(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    consent_id, record_id = treatment
    patient, hospital = accounts.patients[0].address, accounts.hospital.address
    check, result = ledger.access.log_access(
        accounts.gateway, hospital, patient, record_id, int(Purpose.TREATMENT), access_hash("first")
    )

    (ev,) = ledger.access.events_in(result, "AccessLogged")
    assert ev.args == {
        "requester": hospital,
        "patient": patient,
        "recordId": record_id,
        "consentId": consent_id,
        "purpose": int(Purpose.TREATMENT),
        "emergency": False,
        "accessHash": access_hash("first"),
    }
    assert consent_id == ledger.consents.consent_of(patient, hospital).consent_id != ZERO32
    assert (check.allowed, check.consent_id, check.emergency) == (True, consent_id, False)


def test_log_access_writes_one_event_per_release(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    for i in range(3):
        _, result = log(ledger, accounts, record_id, label=f"release-{i}")
        assert [e["accessHash"] for e in ledger.access.events_in(result)] == [access_hash(f"release-{i}")]
    logged = list(ledger.access.events(["AccessLogged"], from_block=result.block_number - 2))
    assert [e["accessHash"] for e in logged] == [access_hash(f"release-{i}") for i in range(3)]


def test_a_new_grant_is_ledgered_under_its_new_consent_id(
    ledger: Ledger, accounts: Accounts, chain: Chain, treatment: tuple[bytes, bytes]
) -> None:
    first_id, record_id = treatment
    second_id = grant(
        ledger, chain, accounts.patients[0], accounts.hospital.address, [Category.LAB_RESULTS], [Purpose.TREATMENT]
    )
    assert second_id != first_id
    check, _ = log(ledger, accounts, record_id)
    assert (
        check.consent_id
        == second_id
        == ledger.consents.consent_of(accounts.patients[0].address, accounts.hospital.address).consent_id
    )


def test_emergency_access_is_ledgered_as_emergency_under_the_access_id(ledger: Ledger, accounts: Accounts) -> None:
    patient = accounts.patients[1]
    record_id = add_record(ledger, accounts, "penicillin-allergy", Category.ALLERGIES, patient=patient)
    access_id, _ = ledger.consents.emergency_access(
        accounts.hospital, patient.address, EMERGENCY_SAFE, h("reason:unconscious, ED admission 02:14")
    )

    check, result = log(ledger, accounts, record_id, Purpose.EMERGENCY, patient=patient, label="er")

    (ev,) = ledger.access.events_in(result, "AccessLogged")
    assert ev.args == {
        "requester": accounts.hospital.address,
        "patient": patient.address,
        "recordId": record_id,
        "consentId": access_id,
        "purpose": int(Purpose.EMERGENCY),
        "emergency": True,
        "accessHash": access_hash("er"),
    }
    assert (check.consent_id, check.emergency) == (access_id, True)


def test_a_consent_covering_the_emergency_purpose_is_used_before_break_glass(
    ledger: Ledger, accounts: Accounts, chain: Chain
) -> None:
    patient = accounts.patients[2]
    record_id = add_record(ledger, accounts, "asthma", Category.CONDITIONS, patient=patient)
    consent_id = grant(ledger, chain, patient, accounts.hospital.address, [Category.CONDITIONS], [Purpose.EMERGENCY])
    ledger.consents.emergency_access(accounts.hospital, patient.address, EMERGENCY_SAFE, h("reason:asthma attack"))
    check, _ = log(ledger, accounts, record_id, Purpose.EMERGENCY, patient=patient)
    assert (check.consent_id, check.emergency) == (consent_id, False)


def test_amended_records_remain_accessible(ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]) -> None:
    consent_id, record_id = treatment
    corrected = rid("hba1c-2025-02-corrected")
    ledger.records.amend(accounts.gateway, record_id, corrected, accounts.lab.address, h("fix"), cid("fix"))
    for rec in (record_id, corrected):
        check, _ = log(ledger, accounts, rec)
        assert check.consent_id == consent_id


def test_every_provider_role_may_be_a_requester(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    record_id = add_record(ledger, accounts, "rx-history", Category.MEDICATIONS)
    for requester in (accounts.clinic, accounts.lab, accounts.pharmacy):
        grant(
            ledger, chain, accounts.patients[0], requester.address, [Category.MEDICATIONS], [Purpose.CARE_COORDINATION]
        )
        check, _ = log(ledger, accounts, record_id, Purpose.CARE_COORDINATION, requester=requester)
        assert check.allowed


# ---------------------------------------------------------------- logAccess: gateway and requester


@pytest.mark.parametrize("caller", ["hospital", "auditor", "outsider", "patient"])
def test_only_a_gateway_may_log(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes], caller: str
) -> None:
    _, record_id = treatment
    signer = accounts.patients[0] if caller == "patient" else getattr(accounts, caller)
    with pytest.raises(errors.AccessLedgerNotGateway) as exc:
        log(ledger, accounts, record_id, gateway=signer)
    assert addr(exc.value.account) == signer.address


def test_a_suspended_gateway_may_not_log(ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]) -> None:
    _, record_id = treatment
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.gateway.address)
    with pytest.raises(errors.AccessLedgerNotGateway) as exc:
        log(ledger, accounts, record_id)
    assert addr(exc.value.account) == accounts.gateway.address


@pytest.mark.parametrize("requester", ["outsider", "auditor", "regulator", "gateway"])
def test_requester_must_be_a_care_provider(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes], requester: str
) -> None:
    _, record_id = treatment
    who = getattr(accounts, requester)
    with pytest.raises(errors.AccessLedgerInvalidRequester) as exc:
        log(ledger, accounts, record_id, requester=who)
    assert addr(exc.value.requester) == who.address


def test_log_access_reverts_for_a_suspended_member_despite_its_consent(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    log(ledger, accounts, record_id)  # fine while active
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.hospital.address)
    with pytest.raises(errors.AccessLedgerInvalidRequester) as exc:
        log(ledger, accounts, record_id)
    assert addr(exc.value.requester) == accounts.hospital.address
    # reinstated, the untouched consent applies again
    ledger.members.enact(accounts.admins[:2], Action.REINSTATE_MEMBER, accounts.hospital.address)
    check, _ = log(ledger, accounts, record_id)
    assert check.allowed


def test_a_removed_member_is_an_invalid_requester(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.hospital.address)
    with pytest.raises(errors.AccessLedgerInvalidRequester):
        log(ledger, accounts, record_id)


def test_a_suspended_member_cannot_use_its_emergency_window(ledger: Ledger, accounts: Accounts) -> None:
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    ledger.consents.emergency_access(accounts.hospital, accounts.patients[0].address, EMERGENCY_SAFE, h("reason"))
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.hospital.address)
    with pytest.raises(errors.AccessLedgerInvalidRequester):
        log(ledger, accounts, record_id, Purpose.EMERGENCY)


# ---------------------------------------------------------------- logAccess: record


def test_an_unknown_record_is_refused(ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]) -> None:
    with pytest.raises(errors.AccessLedgerUnknownRecord) as exc:
        log(ledger, accounts, rid("never-registered"))
    assert exc.value.recordId == rid("never-registered")


def test_a_record_of_another_patient_is_refused(
    ledger: Ledger, accounts: Accounts, chain: Chain, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment  # belongs to patients[0]
    other = accounts.patients[1]
    grant(ledger, chain, other, accounts.hospital.address, [Category.LAB_RESULTS], [Purpose.TREATMENT])
    with pytest.raises(errors.AccessLedgerRecordMismatch) as exc:
        log(ledger, accounts, record_id, patient=other)
    assert exc.value.recordId == record_id
    assert addr(exc.value.patient) == other.address


def test_a_retracted_record_is_refused_despite_consent(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    ledger.records.retract(accounts.gateway, record_id)
    with pytest.raises(errors.AccessLedgerRecordRetracted) as exc:
        log(ledger, accounts, record_id)
    assert exc.value.recordId == record_id


def test_a_retracted_amended_record_is_refused_but_its_successor_is_not(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    successor = rid("successor")
    ledger.records.amend(accounts.gateway, record_id, successor, accounts.lab.address, h("s"), cid("s"))
    ledger.records.retract(accounts.gateway, record_id)
    with pytest.raises(errors.AccessLedgerRecordRetracted):
        log(ledger, accounts, record_id)
    assert log(ledger, accounts, successor)[0].allowed


# ---------------------------------------------------------------- logAccess: consent


def test_no_consent_is_not_authorized(ledger: Ledger, accounts: Accounts) -> None:
    record_id = add_record(ledger, accounts, "no-consent", Category.LAB_RESULTS)
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id)
    assert_not_authorized(
        exc, accounts.hospital.address, accounts.patients[0].address, Category.LAB_RESULTS, Purpose.TREATMENT
    )


def test_a_consent_to_another_institution_does_not_authorize(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment  # consent is to the hospital
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id, requester=accounts.clinic)
    assert addr(exc.value.requester) == accounts.clinic.address


def test_a_category_outside_the_consent_is_not_authorized(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    record_id = add_record(ledger, accounts, "depression-screening", Category.MENTAL_HEALTH)
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id)
    assert_not_authorized(
        exc, accounts.hospital.address, accounts.patients[0].address, Category.MENTAL_HEALTH, Purpose.TREATMENT
    )


def test_a_record_in_slot_15_is_released_under_a_consent_on_slot_15(
    ledger: Ledger, accounts: Accounts, chain: Chain
) -> None:
    """Slot 15 (the spare of the blinded permutation) is a slot like any other: consent and record meet there."""
    patient, hospital = accounts.patients[0], accounts.hospital.address
    now = chain.now()
    consent_id, _ = ledger.consents.grant(patient, hospital, 1 << 15, purpose_mask([Purpose.TREATMENT]), now, now + DAY)
    record_id = add_record(ledger, accounts, "slot-15", 15)
    assert ledger.records.record_of(record_id).category == 15
    check, _ = log(ledger, accounts, record_id)
    assert (check.allowed, check.consent_id, check.emergency) == (True, consent_id, False)
    other = add_record(ledger, accounts, "slot-14", 14)
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, other, label="other")
    assert_not_authorized(exc, hospital, patient.address, 14, Purpose.TREATMENT)


@pytest.mark.parametrize("purpose", [Purpose.RESEARCH, Purpose.PAYMENT, Purpose.EMERGENCY, 7, 255])
def test_a_purpose_outside_the_consent_is_not_authorized(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes], purpose: int
) -> None:
    _, record_id = treatment  # TREATMENT and REFERRAL only
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id, purpose)
    assert_not_authorized(exc, accounts.hospital.address, accounts.patients[0].address, Category.LAB_RESULTS, purpose)


def test_a_revoked_consent_is_not_authorized(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    log(ledger, accounts, record_id)
    ledger.consents.revoke(accounts.patients[0], accounts.hospital.address)
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, record_id)


def test_an_expired_consent_is_not_authorized(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    record_id = add_record(ledger, accounts, "ecg", Category.VITAL_SIGNS)
    valid_until = chain.now() + 3600
    grant(
        ledger,
        chain,
        accounts.patients[0],
        accounts.hospital.address,
        [Category.VITAL_SIGNS],
        [Purpose.TREATMENT],
        valid_until=valid_until,
    )
    log(ledger, accounts, record_id)
    chain.advance(3600)
    assert chain.now() >= valid_until
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id)
    assert_not_authorized(
        exc, accounts.hospital.address, accounts.patients[0].address, Category.VITAL_SIGNS, Purpose.TREATMENT
    )


def test_a_consent_not_yet_valid_is_not_authorized_until_it_starts(
    ledger: Ledger, accounts: Accounts, chain: Chain
) -> None:
    record_id = add_record(ledger, accounts, "referral-letter", Category.ENCOUNTERS)
    valid_from = chain.now() + DAY
    grant(
        ledger,
        chain,
        accounts.patients[0],
        accounts.hospital.address,
        [Category.ENCOUNTERS],
        [Purpose.REFERRAL],
        valid_from=valid_from,
        valid_until=valid_from + 7 * DAY,
    )
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, record_id, Purpose.REFERRAL)
    chain.advance(DAY)
    assert log(ledger, accounts, record_id, Purpose.REFERRAL)[0].allowed


# ---------------------------------------------------------------- logAccess: emergency


def test_emergency_purpose_on_a_non_emergency_safe_category_is_not_authorized(
    ledger: Ledger, accounts: Accounts
) -> None:
    record_id = add_record(ledger, accounts, "brain-mri", Category.IMAGING)
    ledger.consents.emergency_access(
        accounts.hospital, accounts.patients[0].address, EMERGENCY_SAFE, h("reason:stroke")
    )
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id, Purpose.EMERGENCY)
    assert_not_authorized(
        exc, accounts.hospital.address, accounts.patients[0].address, Category.IMAGING, Purpose.EMERGENCY
    )


def test_emergency_window_covers_only_the_categories_opened(ledger: Ledger, accounts: Accounts) -> None:
    allergies = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    meds = add_record(ledger, accounts, "meds", Category.MEDICATIONS)
    ledger.consents.emergency_access(
        accounts.hospital, accounts.patients[0].address, category_mask([Category.ALLERGIES]), h("reason")
    )
    assert log(ledger, accounts, allergies, Purpose.EMERGENCY)[0].emergency
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, meds, Purpose.EMERGENCY)


def test_emergency_window_does_not_serve_other_purposes(ledger: Ledger, accounts: Accounts) -> None:
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    ledger.consents.emergency_access(accounts.hospital, accounts.patients[0].address, EMERGENCY_SAFE, h("reason"))
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, record_id, Purpose.TREATMENT)


def test_emergency_purpose_without_a_window_is_not_authorized(ledger: Ledger, accounts: Accounts) -> None:
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    for requester in (accounts.hospital, accounts.clinic):  # with and without the EMERGENCY capability
        with pytest.raises(errors.AccessLedgerNotAuthorized):
            log(ledger, accounts, record_id, Purpose.EMERGENCY, requester=requester)


def test_another_members_emergency_window_does_not_authorize(ledger: Ledger, accounts: Accounts) -> None:
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    ledger.members.enact(
        accounts.admins[:2], Action.CHANGE_ROLES, accounts.clinic.address, arg=int(Role.CLINIC | Role.EMERGENCY)
    )
    ledger.consents.emergency_access(accounts.hospital, accounts.patients[0].address, EMERGENCY_SAFE, h("reason"))
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, record_id, Purpose.EMERGENCY, requester=accounts.clinic)


def test_losing_the_emergency_capability_closes_the_window(ledger: Ledger, accounts: Accounts) -> None:
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    ledger.consents.emergency_access(accounts.hospital, accounts.patients[0].address, EMERGENCY_SAFE, h("reason"))
    ledger.members.enact(accounts.admins[:2], Action.CHANGE_ROLES, accounts.hospital.address, arg=int(Role.HOSPITAL))
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, record_id, Purpose.EMERGENCY)


def test_emergency_window_ends_after_four_hours(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES)
    _, result = ledger.consents.emergency_access(
        accounts.hospital, accounts.patients[0].address, EMERGENCY_SAFE, h("reason")
    )
    opened_at = ledger.client.block_timestamp(result.block_number)
    assert ledger.consents.emergency_window(accounts.patients[0].address, accounts.hospital.address) == (
        EMERGENCY_SAFE,
        opened_at + EMERGENCY_WINDOW,
    )
    chain.advance(EMERGENCY_WINDOW - 600)
    assert log(ledger, accounts, record_id, Purpose.EMERGENCY)[0].emergency
    chain.advance(600)
    assert chain.now() >= opened_at + EMERGENCY_WINDOW
    with pytest.raises(errors.AccessLedgerNotAuthorized) as exc:
        log(ledger, accounts, record_id, Purpose.EMERGENCY)
    assert_not_authorized(
        exc, accounts.hospital.address, accounts.patients[0].address, Category.ALLERGIES, Purpose.EMERGENCY
    )


def test_opting_out_mid_window_ends_emergency_access(ledger: Ledger, accounts: Accounts) -> None:
    patient = accounts.patients[3]
    record_id = add_record(ledger, accounts, "vaccines", Category.IMMUNIZATIONS, patient=patient)
    ledger.consents.emergency_access(accounts.hospital, patient.address, EMERGENCY_SAFE, h("reason"))
    assert log(ledger, accounts, record_id, Purpose.EMERGENCY, patient=patient)[0].emergency
    ledger.consents.set_emergency_opt_out(patient, True)
    with pytest.raises(errors.AccessLedgerNotAuthorized):
        log(ledger, accounts, record_id, Purpose.EMERGENCY, patient=patient)


# ---------------------------------------------------------------- anchorBatch


def test_anchor_batch_emits_and_records_the_anchor(ledger: Ledger, accounts: Accounts) -> None:
    gateway = accounts.gateway
    before = ledger.access.latest_anchor(gateway.address)
    assert (before.tree_size, before.anchored_at, before.count) == (0, 0, 0)
    result = ledger.access.anchor_batch(gateway, h("root:1"), 128)
    at = ledger.client.block_timestamp(result.block_number)
    (ev,) = ledger.access.events_in(result, "AccessBatchAnchored")
    assert ev.args == {"gateway": gateway.address, "index": 0, "root": h("root:1"), "treeSize": 128, "anchoredAt": at}
    a = ledger.access.latest_anchor(gateway.address)
    assert (a.tree_size, a.anchored_at, a.count) == (128, at, 1)


def test_anchor_indexes_increase_with_each_anchor(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    sizes = [1, 2, 1000, 1001]
    for i, size in enumerate(sizes):
        chain.advance(60)
        result = ledger.access.anchor_batch(accounts.gateway, h(f"root:{size}"), size)
        (ev,) = ledger.access.events_in(result, "AccessBatchAnchored")
        assert (ev["index"], ev["treeSize"], ev["root"]) == (i, size, h(f"root:{size}"))
        assert ev["anchoredAt"] == ledger.client.block_timestamp(result.block_number)
        a = ledger.access.latest_anchor(accounts.gateway.address)
        assert (a.tree_size, a.anchored_at, a.count) == (size, ev["anchoredAt"], i + 1)


@pytest.mark.parametrize("next_size", [100, 99, 0], ids=["equal", "smaller", "zero"])
def test_tree_size_must_increase(ledger: Ledger, accounts: Accounts, next_size: int) -> None:
    ledger.access.anchor_batch(accounts.gateway, h("root:100"), 100)
    with pytest.raises(errors.AccessLedgerTreeSizeNotIncreasing) as exc:
        ledger.access.anchor_batch(accounts.gateway, h("root:again"), next_size)
    assert (exc.value.treeSize, exc.value.previousTreeSize) == (next_size, 100)
    assert ledger.access.latest_anchor(accounts.gateway.address).count == 1


def test_a_first_anchor_of_an_empty_journal_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.AccessLedgerTreeSizeNotIncreasing) as exc:
        ledger.access.anchor_batch(accounts.gateway, h("root:empty"), 0)
    assert (exc.value.treeSize, exc.value.previousTreeSize) == (0, 0)


def test_a_zero_root_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.AccessLedgerInvalidRoot):
        ledger.access.anchor_batch(accounts.gateway, ZERO32, 10)


@pytest.mark.parametrize("caller", ["hospital", "auditor", "outsider"])
def test_only_a_gateway_may_anchor(ledger: Ledger, accounts: Accounts, caller: str) -> None:
    signer = getattr(accounts, caller)
    with pytest.raises(errors.AccessLedgerNotGateway) as exc:
        ledger.access.anchor_batch(signer, h("root"), 10)
    assert addr(exc.value.account) == signer.address


def test_a_suspended_gateway_may_not_anchor(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.gateway.address)
    with pytest.raises(errors.AccessLedgerNotGateway):
        ledger.access.anchor_batch(accounts.gateway, h("root"), 10)


def _second_gateway(ledger: Ledger, accounts: Accounts) -> LocalAccount:
    gw = Account.from_key(h("test-account:gateway-2"))
    ledger.client.w3.provider.make_request("hardhat_setBalance", [gw.address, hex(10**21)])
    ledger.members.enact(
        accounts.admins[:2],
        Action.ADD_MEMBER,
        gw.address,
        arg=int(Role.GATEWAY),
        encryption_key=h("x25519:gateway-2"),
        metadata_hash=h("meta:gateway-2"),
    )
    return gw


def test_anchors_are_per_gateway(ledger: Ledger, accounts: Accounts) -> None:
    second = _second_gateway(ledger, accounts)
    ledger.access.anchor_batch(accounts.gateway, h("root:a"), 500)
    result = ledger.access.anchor_batch(second, h("root:b"), 3)  # smaller than the other gateway's: fine
    (ev,) = ledger.access.events_in(result, "AccessBatchAnchored")
    assert (ev["gateway"], ev["index"], ev["treeSize"]) == (second.address, 0, 3)
    assert ledger.access.latest_anchor(accounts.gateway.address).tree_size == 500
    b = ledger.access.latest_anchor(second.address)
    assert (b.tree_size, b.count) == (3, 1)
    with pytest.raises(errors.AccessLedgerTreeSizeNotIncreasing) as exc:
        ledger.access.anchor_batch(second, h("root:b2"), 3)
    assert exc.value.previousTreeSize == 3


def test_a_second_gateway_may_log_access(ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]) -> None:
    consent_id, record_id = treatment
    second = _second_gateway(ledger, accounts)
    check, result = log(ledger, accounts, record_id, gateway=second)
    assert check.consent_id == consent_id
    assert ledger.client.w3.eth.get_transaction(result.tx_hash)["from"] == second.address


# ---------------------------------------------------------------- anchorReviews


def test_anchor_reviews_emits_its_own_event_and_leaves_the_journal_anchor_alone(
    ledger: Ledger, accounts: Accounts
) -> None:
    result = ledger.access.anchor_reviews(accounts.gateway, h("reviews:2"), 2)
    at = ledger.client.block_timestamp(result.block_number)
    (ev,) = ledger.access.events_in(result, "EmergencyReviewsAnchored")
    assert ev.args == {"gateway": accounts.gateway.address, "root": h("reviews:2"), "size": 2, "anchoredAt": at}
    assert not ledger.access.events_in(result, "AccessBatchAnchored")
    assert ledger.access.latest_anchor(accounts.gateway.address).count == 0
    assert ledger.access.reviews_anchors(accounts.gateway.address) == [(2, h("reviews:2"))]


@pytest.mark.parametrize("caller", ["hospital", "auditor", "outsider"])
def test_only_a_gateway_may_anchor_reviews(ledger: Ledger, accounts: Accounts, caller: str) -> None:
    with pytest.raises(errors.AccessLedgerNotGateway):
        ledger.access.anchor_reviews(getattr(accounts, caller), h("reviews"), 1)
    with pytest.raises(errors.AccessLedgerInvalidRoot):
        ledger.access.anchor_reviews(accounts.gateway, ZERO32, 1)
