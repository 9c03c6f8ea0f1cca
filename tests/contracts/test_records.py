"""RecordRegistry: the record index (hashes and locators of encrypted records), on a real Hardhat node."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from node_client import errors
from node_client.contracts import Action, RecordInput, RecordStatus, UploadInput
from node_client.deploy import Ledger
from node_client.vocabulary import Category, Role
from tests.support.chain import Accounts, cid, h

ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20


def rid(label: str) -> bytes:
    return h(f"record:{label}")


def register(ledger: Ledger, accounts: Accounts, label: str, category: int = Category.LAB_RESULTS, *, patient: int = 0):
    return ledger.records.register(
        accounts.gateway,
        rid(label),
        accounts.patients[patient].address,
        accounts.lab.address,
        int(category),
        h(f"ciphertext:{label}"),
        cid(label),
    )


def batch_of(labels: list[str], category: int = Category.IMAGING) -> list[RecordInput]:
    return [RecordInput(rid(label), int(category), h(f"ciphertext:{label}"), cid(label)) for label in labels]


# ---------------------------------------------------------------- register


def test_register_stores_the_record_and_announces_hash_and_locator(ledger: Ledger, accounts: Accounts) -> None:
    patient = accounts.patients[0].address
    record_id, content, locator = rid("cbc-2025-03"), h("ciphertext:cbc"), cid("cbc")
    result = ledger.records.register(
        accounts.gateway, record_id, patient, accounts.lab.address, int(Category.LAB_RESULTS), content, locator
    )

    (ev,) = ledger.records.events_in(result, "RecordRegistered")
    assert ev.args == {
        "recordId": record_id,
        "patient": patient,
        "provider": accounts.lab.address,
        "category": int(Category.LAB_RESULTS),
        "contentHash": content,
        "locator": locator,
        "gateway": accounts.gateway.address,
    }
    r = ledger.records.record_of(record_id)
    assert r.patient == patient
    assert r.category == Category.LAB_RESULTS
    assert r.status is RecordStatus.ACTIVE
    assert r.registered_at == ledger.client.block_timestamp(result.block_number)


def test_unknown_record_reads_as_status_none(ledger: Ledger) -> None:
    r = ledger.records.record_of(rid("never-registered"))
    assert r.status is RecordStatus.NONE
    assert r.patient == ZERO_ADDRESS
    assert (r.category, r.registered_at) == (0, 0)


@pytest.mark.parametrize("provider", ["hospital", "clinic", "lab", "pharmacy"])
def test_every_care_provider_role_may_be_the_provider(ledger: Ledger, accounts: Accounts, provider: str) -> None:
    ledger.records.register(
        accounts.gateway,
        rid(provider),
        accounts.patients[1].address,
        getattr(accounts, provider).address,
        int(Category.MEDICATIONS),
        h(provider),
        cid(provider),
    )
    assert ledger.records.record_of(rid(provider)).status is RecordStatus.ACTIVE


@pytest.mark.parametrize("category", [0, 15])
def test_first_and_last_slots_are_accepted(ledger: Ledger, accounts: Accounts, category: int) -> None:
    """Slot 15, the spare of the blinded permutation, holds a category for some patients."""
    register(ledger, accounts, f"edge-{category}", category)
    assert ledger.records.record_of(rid(f"edge-{category}")).category == category


def test_a_long_locator_is_emitted_verbatim(ledger: Ledger, accounts: Accounts) -> None:
    locator = b"https://objects.example-gateway.cn/records/" + h("x").hex().encode() * 4
    result = ledger.records.register(
        accounts.gateway, rid("long"), accounts.patients[0].address, accounts.lab.address, 4, h("long"), locator
    )
    (ev,) = ledger.records.events_in(result, "RecordRegistered")
    assert ev["locator"] == locator


# ---------------------------------------------------------------- registerBatch


def test_register_batch_registers_ten_records_in_one_transaction_in_order(ledger: Ledger, accounts: Accounts) -> None:
    patient = accounts.patients[2].address
    labels = [f"ct-series-{i}" for i in range(10)]
    records = batch_of(labels)
    result = ledger.records.register_batch(accounts.gateway, patient, accounts.hospital.address, records)

    events = ledger.records.events_in(result, "RecordRegistered")
    assert [ev["recordId"] for ev in events] == [r.record_id for r in records]
    assert [ev.log_index for ev in events] == sorted(ev.log_index for ev in events)
    assert {ev.tx_hash for ev in events} == {result.tx_hash}
    for ev, rec in zip(events, records, strict=True):
        assert ev.args == {
            "recordId": rec.record_id,
            "patient": patient,
            "provider": accounts.hospital.address,
            "category": int(Category.IMAGING),
            "contentHash": rec.content_hash,
            "locator": rec.locator,
            "gateway": accounts.gateway.address,
        }
    block_time = ledger.client.block_timestamp(result.block_number)
    for rec in records:
        stored = ledger.records.record_of(rec.record_id)
        assert (stored.patient, stored.status, stored.registered_at) == (patient, RecordStatus.ACTIVE, block_time)


def test_register_batch_keeps_each_records_own_category(ledger: Ledger, accounts: Accounts) -> None:
    records = [
        RecordInput(rid("visit-allergy"), int(Category.ALLERGIES), h("a"), cid("a")),
        RecordInput(rid("visit-meds"), int(Category.MEDICATIONS), h("m"), cid("m")),
        RecordInput(rid("visit-note"), int(Category.ENCOUNTERS), h("n"), cid("n")),
    ]
    ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.clinic.address, records)
    assert [ledger.records.record_of(r.record_id).category for r in records] == [
        Category.ALLERGIES,
        Category.MEDICATIONS,
        Category.ENCOUNTERS,
    ]


def test_an_empty_batch_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.RecordEmptyBatch):
        ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.lab.address, [])


def _assert_nothing_registered(ledger: Ledger, records: list[RecordInput]) -> None:
    for rec in records:
        assert ledger.records.record_of(rec.record_id).status is RecordStatus.NONE


def test_a_batch_is_atomic_a_bad_fifth_record_registers_nothing(ledger: Ledger, accounts: Accounts) -> None:
    records = batch_of([f"mri-{i}" for i in range(10)])
    bad = records[4]
    records[4] = RecordInput(bad.record_id, 16, bad.content_hash, bad.locator)
    with pytest.raises(errors.RecordInvalidCategory) as exc:
        ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.lab.address, records)
    assert exc.value.category == 16
    _assert_nothing_registered(ledger, records)


def test_a_batch_with_an_empty_locator_in_fifth_position_registers_nothing(ledger: Ledger, accounts: Accounts) -> None:
    records = batch_of([f"xray-{i}" for i in range(10)])
    bad = records[4]
    records[4] = RecordInput(bad.record_id, bad.category, bad.content_hash, b"")
    with pytest.raises(errors.RecordInvalidInput) as exc:
        ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.lab.address, records)
    assert exc.value.recordId == bad.record_id
    _assert_nothing_registered(ledger, records)


def test_a_duplicate_inside_a_batch_is_refused_and_registers_nothing(ledger: Ledger, accounts: Accounts) -> None:
    records = batch_of([f"echo-{i}" for i in range(5)])
    records.append(RecordInput(records[1].record_id, int(Category.IMAGING), h("other"), cid("other")))
    with pytest.raises(errors.RecordAlreadyExists) as exc:
        ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.lab.address, records)
    assert exc.value.recordId == records[1].record_id
    _assert_nothing_registered(ledger, records)


def test_a_batch_reusing_an_existing_record_id_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "existing")
    records = batch_of(["fresh-1", "existing", "fresh-2"])
    with pytest.raises(errors.RecordAlreadyExists) as exc:
        ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.lab.address, records)
    assert exc.value.recordId == rid("existing")
    assert ledger.records.record_of(rid("fresh-1")).status is RecordStatus.NONE


def test_a_batch_checks_gateway_patient_and_provider(ledger: Ledger, accounts: Accounts) -> None:
    records = batch_of(["b-1", "b-2"])
    with pytest.raises(errors.RecordNotGateway):
        ledger.records.register_batch(accounts.hospital, accounts.patients[0].address, accounts.lab.address, records)
    with pytest.raises(errors.RecordInvalidPatient):
        ledger.records.register_batch(accounts.gateway, ZERO_ADDRESS, accounts.lab.address, records)
    with pytest.raises(errors.RecordInvalidProvider):
        ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.auditor.address, records)


# ---------------------------------------------------------------- registerUploads (group commit)


def test_register_uploads_registers_several_patients_uploads_in_one_transaction_in_order(
    ledger: Ledger, accounts: Accounts
) -> None:
    uploads = [
        UploadInput(accounts.patients[0].address, accounts.hospital.address, batch_of(["gc-a1", "gc-a2"])),
        UploadInput(accounts.patients[1].address, accounts.lab.address, batch_of(["gc-b1"], Category.LAB_RESULTS)),
        UploadInput(accounts.patients[0].address, accounts.clinic.address, batch_of(["gc-c1", "gc-c2", "gc-c3"])),
    ]
    result = ledger.records.register_uploads(accounts.gateway, uploads)

    events = ledger.records.events_in(result, "RecordRegistered")
    expected = [(u, r) for u in uploads for r in u.records]
    assert [ev["recordId"] for ev in events] == [r.record_id for _, r in expected]
    for ev, (u, rec) in zip(events, expected, strict=True):
        assert ev.args == {  # the same event registerBatch emits: readers and the auditor need no new rule
            "recordId": rec.record_id,
            "patient": u.patient,
            "provider": u.provider,
            "category": rec.category,
            "contentHash": rec.content_hash,
            "locator": rec.locator,
            "gateway": accounts.gateway.address,
        }
        stored = ledger.records.record_of(rec.record_id)
        assert (stored.patient, stored.status) == (u.patient, RecordStatus.ACTIVE)
        assert ledger.records.holder_of(rec.record_id) == accounts.gateway.address


def test_register_uploads_is_all_or_nothing(ledger: Ledger, accounts: Accounts) -> None:
    good = UploadInput(accounts.patients[0].address, accounts.hospital.address, batch_of(["gc-ok-1", "gc-ok-2"]))
    bad_provider = UploadInput(accounts.patients[1].address, accounts.auditor.address, batch_of(["gc-bad-1"]))
    with pytest.raises(errors.RecordInvalidProvider):
        ledger.records.register_uploads(accounts.gateway, [good, bad_provider])
    _assert_nothing_registered(ledger, list(good.records) + list(bad_provider.records))
    twice = UploadInput(accounts.patients[1].address, accounts.lab.address, batch_of(["gc-ok-1"]))
    with pytest.raises(errors.RecordAlreadyExists):
        ledger.records.register_uploads(accounts.gateway, [good, twice])
    _assert_nothing_registered(ledger, list(good.records))


def test_register_uploads_refuses_empty_input_and_non_gateways(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.RecordEmptyBatch):
        ledger.records.register_uploads(accounts.gateway, [])
    with pytest.raises(errors.RecordEmptyBatch):
        ledger.records.register_uploads(
            accounts.gateway, [UploadInput(accounts.patients[0].address, accounts.lab.address, [])]
        )
    one = [UploadInput(accounts.patients[0].address, accounts.lab.address, batch_of(["gc-x"]))]
    with pytest.raises(errors.RecordNotGateway):
        ledger.records.register_uploads(accounts.hospital, one)
    with pytest.raises(errors.RecordInvalidPatient):
        ledger.records.register_uploads(
            accounts.gateway, [UploadInput(ZERO_ADDRESS, accounts.lab.address, batch_of(["gc-y"]))]
        )


# ---------------------------------------------------------------- amend


def test_amend_supersedes_the_record_and_inherits_patient_and_category(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "lipid-panel-v1", Category.LAB_RESULTS, patient=3)
    new_id, content, locator = rid("lipid-panel-v2"), h("ciphertext:lipid-v2"), cid("lipid-v2")
    # a different provider may issue the correction
    result = ledger.records.amend(
        accounts.gateway, rid("lipid-panel-v1"), new_id, accounts.hospital.address, content, locator
    )

    (registered,) = ledger.records.events_in(result, "RecordRegistered")
    assert registered.args == {
        "recordId": new_id,
        "patient": accounts.patients[3].address,
        "provider": accounts.hospital.address,
        "category": int(Category.LAB_RESULTS),
        "contentHash": content,
        "locator": locator,
        "gateway": accounts.gateway.address,
    }
    (amended,) = ledger.records.events_in(result, "RecordAmended")
    assert amended.args == {"previousRecordId": rid("lipid-panel-v1"), "recordId": new_id}
    assert registered.log_index < amended.log_index

    old, new = ledger.records.record_of(rid("lipid-panel-v1")), ledger.records.record_of(new_id)
    assert old.status is RecordStatus.AMENDED
    assert new.status is RecordStatus.ACTIVE
    assert (new.patient, new.category) == (old.patient, old.category) == (accounts.patients[3].address, 4)
    assert new.registered_at == ledger.client.block_timestamp(result.block_number)


def test_amending_an_amended_record_is_refused_but_the_chain_continues_from_the_latest(
    ledger: Ledger, accounts: Accounts
) -> None:
    register(ledger, accounts, "v1")
    ledger.records.amend(accounts.gateway, rid("v1"), rid("v2"), accounts.lab.address, h("v2"), cid("v2"))
    with pytest.raises(errors.RecordInvalidStatus) as exc:
        ledger.records.amend(accounts.gateway, rid("v1"), rid("v3"), accounts.lab.address, h("v3"), cid("v3"))
    assert (exc.value.recordId, exc.value.status) == (rid("v1"), RecordStatus.AMENDED)
    ledger.records.amend(accounts.gateway, rid("v2"), rid("v3"), accounts.lab.address, h("v3"), cid("v3"))
    assert ledger.records.record_of(rid("v3")).status is RecordStatus.ACTIVE


def test_amending_a_retracted_record_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "erased")
    ledger.records.retract(accounts.gateway, rid("erased"))
    with pytest.raises(errors.RecordInvalidStatus) as exc:
        ledger.records.amend(accounts.gateway, rid("erased"), rid("erased-v2"), accounts.lab.address, h("x"), cid("x"))
    assert (exc.value.recordId, exc.value.status) == (rid("erased"), RecordStatus.RETRACTED)


def test_amending_an_unknown_record_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.RecordUnknown) as exc:
        ledger.records.amend(accounts.gateway, rid("ghost"), rid("ghost-v2"), accounts.lab.address, h("x"), cid("x"))
    assert exc.value.recordId == rid("ghost")


def test_amend_into_an_existing_id_is_refused_and_leaves_the_original_active(
    ledger: Ledger, accounts: Accounts
) -> None:
    register(ledger, accounts, "a")
    register(ledger, accounts, "b")
    for new_id in (rid("b"), rid("a")):  # another record, or the record itself
        with pytest.raises(errors.RecordAlreadyExists) as exc:
            ledger.records.amend(accounts.gateway, rid("a"), new_id, accounts.lab.address, h("x"), cid("x"))
        assert exc.value.recordId == new_id
    assert ledger.records.record_of(rid("a")).status is RecordStatus.ACTIVE


def test_amend_checks_caller_provider_and_input(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "base")
    with pytest.raises(errors.RecordNotGateway):
        ledger.records.amend(accounts.lab, rid("base"), rid("base-2"), accounts.lab.address, h("x"), cid("x"))
    with pytest.raises(errors.RecordInvalidProvider):
        ledger.records.amend(accounts.gateway, rid("base"), rid("base-2"), accounts.regulator.address, h("x"), cid("x"))
    with pytest.raises(errors.RecordInvalidInput):
        ledger.records.amend(accounts.gateway, rid("base"), rid("base-2"), accounts.lab.address, ZERO32, cid("x"))
    assert ledger.records.record_of(rid("base")).status is RecordStatus.ACTIVE


# ---------------------------------------------------------------- retract


def test_retract_erases_the_record_and_names_patient_and_gateway(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "psych-note", Category.MENTAL_HEALTH, patient=4)
    result = ledger.records.retract(accounts.gateway, rid("psych-note"))
    (ev,) = ledger.records.events_in(result, "RecordRetracted")
    assert ev.args == {
        "recordId": rid("psych-note"),
        "patient": accounts.patients[4].address,
        "gateway": accounts.gateway.address,
    }
    r = ledger.records.record_of(rid("psych-note"))
    assert r.status is RecordStatus.RETRACTED
    assert (r.patient, r.category) == (accounts.patients[4].address, Category.MENTAL_HEALTH)


def test_an_amended_record_can_be_retracted(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "old")
    ledger.records.amend(accounts.gateway, rid("old"), rid("new"), accounts.lab.address, h("n"), cid("n"))
    ledger.records.retract(accounts.gateway, rid("old"))
    assert ledger.records.record_of(rid("old")).status is RecordStatus.RETRACTED
    assert ledger.records.record_of(rid("new")).status is RecordStatus.ACTIVE


def test_retracting_twice_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "once")
    ledger.records.retract(accounts.gateway, rid("once"))
    with pytest.raises(errors.RecordInvalidStatus) as exc:
        ledger.records.retract(accounts.gateway, rid("once"))
    assert (exc.value.recordId, exc.value.status) == (rid("once"), RecordStatus.RETRACTED)


def test_retracting_an_unknown_record_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.RecordUnknown) as exc:
        ledger.records.retract(accounts.gateway, rid("ghost"))
    assert exc.value.recordId == rid("ghost")


def test_a_retracted_id_can_never_be_registered_again(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "gone")
    ledger.records.retract(accounts.gateway, rid("gone"))
    with pytest.raises(errors.RecordAlreadyExists):
        register(ledger, accounts, "gone")


def test_only_a_gateway_may_retract(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "kept")
    with pytest.raises(errors.RecordNotGateway) as exc:
        ledger.records.retract(accounts.lab, rid("kept"))  # not even the provider itself
    assert to_checksum_address(exc.value.account) == accounts.lab.address


# ---------------------------------------------------------------- register: errors


@pytest.mark.parametrize("caller", ["hospital", "auditor", "outsider", "admin"])
def test_only_an_active_gateway_may_register(ledger: Ledger, accounts: Accounts, caller: str) -> None:
    signer = accounts.admins[0] if caller == "admin" else getattr(accounts, caller)
    with pytest.raises(errors.RecordNotGateway) as exc:
        ledger.records.register(
            signer, rid("x"), accounts.patients[0].address, accounts.lab.address, 4, h("x"), cid("x")
        )
    assert to_checksum_address(exc.value.account) == signer.address


def test_a_suspended_gateway_may_not_register_amend_or_retract(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "before-suspension")
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.gateway.address)
    attempts = [
        lambda: register(ledger, accounts, "after-suspension"),
        lambda: ledger.records.register_batch(
            accounts.gateway, accounts.patients[0].address, accounts.lab.address, batch_of(["s"])
        ),
        lambda: ledger.records.amend(
            accounts.gateway, rid("before-suspension"), rid("v2"), accounts.lab.address, h("v2"), cid("v2")
        ),
        lambda: ledger.records.retract(accounts.gateway, rid("before-suspension")),
    ]
    for attempt in attempts:
        with pytest.raises(errors.RecordNotGateway) as exc:
            attempt()
        assert to_checksum_address(exc.value.account) == accounts.gateway.address
    ledger.members.enact(accounts.admins[:2], Action.REINSTATE_MEMBER, accounts.gateway.address)
    register(ledger, accounts, "after-reinstatement")


@pytest.mark.parametrize("who", ["outsider", "auditor", "regulator", "gateway", "patient"])
def test_provider_must_be_an_active_care_provider(ledger: Ledger, accounts: Accounts, who: str) -> None:
    provider = accounts.patients[5].address if who == "patient" else getattr(accounts, who).address
    with pytest.raises(errors.RecordInvalidProvider) as exc:
        ledger.records.register(accounts.gateway, rid("x"), accounts.patients[0].address, provider, 4, h("x"), cid("x"))
    assert to_checksum_address(exc.value.provider) == provider


def test_a_suspended_or_removed_provider_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.lab.address)
    with pytest.raises(errors.RecordInvalidProvider) as exc:
        register(ledger, accounts, "from-suspended-lab")
    assert to_checksum_address(exc.value.provider) == accounts.lab.address
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.lab.address)
    with pytest.raises(errors.RecordInvalidProvider):
        register(ledger, accounts, "from-removed-lab")


def test_an_auditor_promoted_to_lab_may_then_provide(ledger: Ledger, accounts: Accounts) -> None:
    auditor = accounts.auditor.address
    ledger.members.enact(accounts.admins[:2], Action.CHANGE_ROLES, auditor, arg=int(Role.AUDITOR | Role.LAB))
    ledger.records.register(accounts.gateway, rid("y"), accounts.patients[0].address, auditor, 4, h("y"), cid("y"))
    assert ledger.records.record_of(rid("y")).status is RecordStatus.ACTIVE


def test_zero_patient_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.RecordInvalidPatient):
        ledger.records.register(accounts.gateway, rid("x"), ZERO_ADDRESS, accounts.lab.address, 4, h("x"), cid("x"))


@pytest.mark.parametrize("category", [16, 255])
def test_category_outside_the_slots_is_refused(ledger: Ledger, accounts: Accounts, category: int) -> None:
    with pytest.raises(errors.RecordInvalidCategory) as exc:
        ledger.records.register(
            accounts.gateway, rid("x"), accounts.patients[0].address, accounts.lab.address, category, h("x"), cid("x")
        )
    assert exc.value.category == category


@pytest.mark.parametrize(
    ("record_id", "content_hash", "locator"),
    [(ZERO32, h("c"), cid("c")), (rid("c"), ZERO32, cid("c")), (rid("c"), h("c"), b"")],
    ids=["zero-id", "zero-hash", "empty-locator"],
)
def test_empty_id_hash_or_locator_is_refused(
    ledger: Ledger, accounts: Accounts, record_id: bytes, content_hash: bytes, locator: bytes
) -> None:
    with pytest.raises(errors.RecordInvalidInput) as exc:
        ledger.records.register(
            accounts.gateway, record_id, accounts.patients[0].address, accounts.lab.address, 4, content_hash, locator
        )
    assert exc.value.recordId == record_id


def test_registering_an_existing_id_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "dup", patient=0)
    with pytest.raises(errors.RecordAlreadyExists) as exc:
        register(ledger, accounts, "dup", patient=1)  # not even for another patient
    assert exc.value.recordId == rid("dup")
    assert ledger.records.record_of(rid("dup")).patient == accounts.patients[0].address


def test_a_patient_needs_no_membership(ledger: Ledger, accounts: Accounts) -> None:
    """Patients are plain addresses: even a fresh key that never transacted may own records."""
    fresh = Account.from_key(h("fresh-patient")).address
    ledger.records.register(accounts.gateway, rid("f"), fresh, accounts.clinic.address, 0, h("f"), cid("f"))
    assert ledger.records.record_of(rid("f")).patient == fresh


# ---------------------------------------------------------------- holder: only the registering gateway
# (security review, finding 3: any gateway member could retract or amend any other gateway's record)


def second_gateway(ledger: Ledger, accounts: Accounts, label: str = "second-gateway") -> LocalAccount:
    """A second GATEWAY member, onboarded through governance (funded fresh key; rolled back with the test)."""
    acct = Account.from_key(h(f"test-account:{label}"))
    ledger.client.w3.provider.make_request("hardhat_setBalance", [acct.address, hex(10**21)])
    ledger.members.enact(
        accounts.admins[:2], Action.ADD_MEMBER, acct.address, arg=int(Role.GATEWAY), encryption_key=h(f"x25519:{label}")
    )
    return acct


def test_another_gateway_may_not_retract_a_record_it_does_not_hold(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "held-by-first")
    other = second_gateway(ledger, accounts)
    with pytest.raises(errors.RecordNotHolder) as exc:
        ledger.records.retract(other, rid("held-by-first"))
    assert exc.value.recordId == rid("held-by-first")
    assert to_checksum_address(exc.value.caller) == other.address
    assert to_checksum_address(exc.value.holder) == accounts.gateway.address
    assert ledger.records.record_of(rid("held-by-first")).status is RecordStatus.ACTIVE


def test_another_gateway_may_not_amend_a_record_it_does_not_hold(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "held")
    other = second_gateway(ledger, accounts)
    with pytest.raises(errors.RecordNotHolder) as exc:
        ledger.records.amend(other, rid("held"), rid("held-v2"), accounts.lab.address, h("v2"), cid("v2"))
    assert (exc.value.recordId, to_checksum_address(exc.value.holder)) == (rid("held"), accounts.gateway.address)
    assert ledger.records.record_of(rid("held")).status is RecordStatus.ACTIVE
    assert ledger.records.record_of(rid("held-v2")).status is RecordStatus.NONE


def test_records_of_a_batch_are_held_by_the_registering_gateway(ledger: Ledger, accounts: Accounts) -> None:
    records = batch_of(["batch-held-1", "batch-held-2"])
    ledger.records.register_batch(accounts.gateway, accounts.patients[0].address, accounts.lab.address, records)
    other = second_gateway(ledger, accounts)
    for rec in records:
        assert ledger.records.holder_of(rec.record_id) == accounts.gateway.address
        with pytest.raises(errors.RecordNotHolder):
            ledger.records.retract(other, rec.record_id)


def test_each_gateway_retracts_and_amends_its_own_records(ledger: Ledger, accounts: Accounts) -> None:
    other = second_gateway(ledger, accounts)
    register(ledger, accounts, "first-1")
    register(ledger, accounts, "first-2")
    ledger.records.register(
        other, rid("second-1"), accounts.patients[0].address, accounts.lab.address, 4, h("s1"), cid("s1")
    )
    assert ledger.records.holder_of(rid("second-1")) == other.address
    with pytest.raises(errors.RecordNotHolder) as exc:
        ledger.records.retract(accounts.gateway, rid("second-1"))  # the other way round, too
    assert to_checksum_address(exc.value.holder) == other.address

    ledger.records.retract(accounts.gateway, rid("first-1"))
    ledger.records.amend(accounts.gateway, rid("first-2"), rid("first-2-v2"), accounts.lab.address, h("f2"), cid("f2"))
    ledger.records.retract(other, rid("second-1"))
    assert ledger.records.record_of(rid("first-1")).status is RecordStatus.RETRACTED
    assert ledger.records.record_of(rid("second-1")).status is RecordStatus.RETRACTED
    # the new version is held by the gateway that amended, like the old one
    assert ledger.records.holder_of(rid("first-2-v2")) == accounts.gateway.address
    with pytest.raises(errors.RecordNotHolder):
        ledger.records.retract(other, rid("first-2-v2"))
    ledger.records.retract(accounts.gateway, rid("first-2"))  # an amended version stays the holder's to erase


def test_holder_of_an_unknown_record_is_zero(ledger: Ledger) -> None:
    assert ledger.records.holder_of(rid("never-registered")) == ZERO_ADDRESS


@pytest.mark.parametrize("departure", [Action.REMOVE_MEMBER, Action.SUSPEND_MEMBER], ids=["removed", "suspended"])
def test_a_departed_gateways_records_pass_to_a_successor_through_governance(
    ledger: Ledger, accounts: Accounts, departure: Action
) -> None:
    register(ledger, accounts, "orphan-1", Category.MENTAL_HEALTH, patient=2)
    register(ledger, accounts, "orphan-2", patient=2)
    successor = second_gateway(ledger, accounts, "successor")
    number = ledger.members.number_of(accounts.gateway.address)
    ledger.members.enact(accounts.admins[:2], departure, accounts.gateway.address)
    # departure alone hands nothing over: the records stay the departed gateway's
    with pytest.raises(errors.RecordNotHolder):
        ledger.records.retract(successor, rid("orphan-1"))

    # M-of-N: custody of everything the departed gateway registered moves to the successor
    pid, _ = ledger.members.propose(accounts.admins[0], Action.TRANSFER_RECORDS, successor.address, arg=number)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[1], pid)
    (ev,) = ledger.members.events_in(result, "RecordsTransferred")
    assert ev.args == {"number": number, "from": accounts.gateway.address, "to": successor.address}
    assert ledger.members.custodian_of(number) == successor.address
    assert ledger.records.holder_of(rid("orphan-1")) == successor.address

    result = ledger.records.retract(successor, rid("orphan-1"))
    (retracted,) = ledger.records.events_in(result, "RecordRetracted")
    assert retracted.args == {
        "recordId": rid("orphan-1"),
        "patient": accounts.patients[2].address,
        "gateway": successor.address,
    }
    ledger.records.amend(successor, rid("orphan-2"), rid("adopted-v2"), accounts.lab.address, h("a2"), cid("a2"))
    assert ledger.records.record_of(rid("orphan-1")).status is RecordStatus.RETRACTED
    assert ledger.records.record_of(rid("orphan-2")).status is RecordStatus.AMENDED
    assert ledger.records.holder_of(rid("adopted-v2")) == successor.address


def test_a_reinstated_gateway_does_not_get_back_records_handed_to_a_successor(
    ledger: Ledger, accounts: Accounts
) -> None:
    register(ledger, accounts, "handed-over")
    successor = second_gateway(ledger, accounts, "successor")
    number = ledger.members.number_of(accounts.gateway.address)
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.gateway.address)
    ledger.members.enact(accounts.admins[:2], Action.TRANSFER_RECORDS, successor.address, arg=number)
    ledger.members.enact(accounts.admins[:2], Action.REINSTATE_MEMBER, accounts.gateway.address)

    with pytest.raises(errors.RecordNotHolder) as exc:
        ledger.records.retract(accounts.gateway, rid("handed-over"))
    assert to_checksum_address(exc.value.holder) == successor.address
    # back in service under a new number: what it registers now is its own
    assert ledger.members.number_of(accounts.gateway.address) not in (0, number)
    register(ledger, accounts, "after-reinstatement")
    ledger.records.retract(accounts.gateway, rid("after-reinstatement"))
    ledger.records.retract(successor, rid("handed-over"))


def test_a_re_added_gateway_keeps_the_records_nobody_took_over(ledger: Ledger, accounts: Accounts) -> None:
    register(ledger, accounts, "kept-over-removal")
    number = ledger.members.number_of(accounts.gateway.address)
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.gateway.address)
    ledger.members.enact(
        accounts.admins[:2], Action.ADD_MEMBER, accounts.gateway.address, arg=int(Role.GATEWAY), encryption_key=h("k")
    )
    assert ledger.members.number_of(accounts.gateway.address) == number
    ledger.records.retract(accounts.gateway, rid("kept-over-removal"))
