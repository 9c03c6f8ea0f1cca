"""AccessLedger.logAccessBatch: strict mode's group commit, on a real Hardhat node.

Each entry is checked exactly as ``logAccess`` checks it and emits the same ``AccessLogged``; an entry
``logAccess`` would refuse is skipped with an ``AccessRefused(index, reason)`` that names no health facts,
and never reverts the others.
"""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector

from node_client import errors
from node_client._client import TxResult
from node_client.contracts import AccessEntry, AccessOutcome, Action
from node_client.deploy import Ledger
from node_client.vocabulary import EMERGENCY_SAFE, Category, Purpose
from tests.contracts.test_access_ledger import access_hash, add_record, addr, grant, log, rid
from tests.support.chain import Accounts, Chain, h


@pytest.fixture
def treatment(ledger: Ledger, accounts: Accounts, chain: Chain) -> tuple[bytes, bytes]:
    """patients[0] lets the hospital read lab results for treatment; one lab-results record."""
    consent_id = grant(
        ledger, chain, accounts.patients[0], accounts.hospital.address, [Category.LAB_RESULTS], [Purpose.TREATMENT]
    )
    return consent_id, add_record(ledger, accounts, "hba1c", Category.LAB_RESULTS)


def entry(
    accounts: Accounts,
    record_id: bytes,
    label: str,
    purpose: int = Purpose.TREATMENT,
    *,
    requester: LocalAccount | None = None,
    patient: LocalAccount | None = None,
) -> AccessEntry:
    return AccessEntry(
        (requester or accounts.hospital).address,
        (patient or accounts.patients[0]).address,
        record_id,
        int(purpose),
        access_hash(label),
    )


def batch(
    ledger: Ledger, accounts: Accounts, entries: list[AccessEntry], gateway: LocalAccount | None = None
) -> tuple[list[AccessOutcome], TxResult]:
    return ledger.access.log_access_batch(gateway or accounts.gateway, entries)


def refused_one(ledger: Ledger, accounts: Accounts, bad: AccessEntry, good: AccessEntry) -> type[errors.ContractRevert]:
    """Sends [good, bad, good'] and returns the error the bad entry was refused with; the good ones are logged."""
    again = AccessEntry(good.requester, good.patient, good.record_id, good.purpose, h("again"))
    outcomes, result = batch(ledger, accounts, [good, bad, again])
    assert [o.logged for o in outcomes] == [True, False, True]
    refused = [(e["index"], e["reason"]) for e in ledger.access.events_in(result, "AccessRefused")]
    assert [i for i, _ in refused] == [1]
    assert outcomes[1].refusal is not None
    return outcomes[1].refusal


# ---------------------------------------------------------------- success


def test_every_entry_emits_the_same_event_as_log_access(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    consent_id, record_id = treatment
    _, single = log(ledger, accounts, record_id, label="single")
    outcomes, result = batch(ledger, accounts, [entry(accounts, record_id, f"b{i}") for i in range(3)])

    (one,) = ledger.access.events_in(single, "AccessLogged")
    logged = ledger.access.events_in(result, "AccessLogged")
    assert [e.args for e in logged] == [{**one.args, "accessHash": access_hash(f"b{i}")} for i in range(3)]
    assert all(e.address == one.address for e in logged)
    assert [(o.logged, o.consent_id, o.emergency, o.refusal) for o in outcomes] == [(True, consent_id, False, None)] * 3
    assert ledger.access.events_in(result, "AccessRefused") == []


def test_emergency_entries_are_logged_as_emergency(ledger: Ledger, accounts: Accounts) -> None:
    patient = accounts.patients[1]
    record_id = add_record(ledger, accounts, "allergy", Category.ALLERGIES, patient=patient)
    access_id, _ = ledger.consents.emergency_access(accounts.hospital, patient.address, EMERGENCY_SAFE, h("reason"))
    outcomes, result = batch(ledger, accounts, [entry(accounts, record_id, "er", Purpose.EMERGENCY, patient=patient)])
    assert (outcomes[0].consent_id, outcomes[0].emergency) == (access_id, True)
    (ev,) = ledger.access.events_in(result, "AccessLogged")
    assert (ev["consentId"], ev["emergency"]) == (access_id, True)


def test_the_receipt_names_the_entries_in_order_across_patients(
    ledger: Ledger, accounts: Accounts, chain: Chain
) -> None:
    entries = []
    for i, patient in enumerate(accounts.patients[:3]):
        grant(ledger, chain, patient, accounts.hospital.address, [Category.IMAGING], [Purpose.TREATMENT])
        record_id = add_record(ledger, accounts, f"ct-{i}", Category.IMAGING, patient=patient)
        entries.append(entry(accounts, record_id, f"ct-{i}", patient=patient))
    outcomes, result = batch(ledger, accounts, entries)
    assert all(o.logged for o in outcomes)
    logged = ledger.access.events_in(result, "AccessLogged")
    assert [(e["patient"], e["accessHash"]) for e in logged] == [(e.patient, e.access_hash) for e in entries]


# ---------------------------------------------------------------- each refusal, per entry


def test_an_unknown_record_is_skipped(ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]) -> None:
    _, record_id = treatment
    bad = entry(accounts, rid("never-registered"), "bad")
    assert refused_one(ledger, accounts, bad, entry(accounts, record_id, "ok")) is errors.AccessLedgerUnknownRecord


def test_a_record_of_another_patient_is_skipped(
    ledger: Ledger, accounts: Accounts, chain: Chain, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    other = accounts.patients[1]
    grant(ledger, chain, other, accounts.hospital.address, [Category.LAB_RESULTS], [Purpose.TREATMENT])
    bad = entry(accounts, record_id, "bad", patient=other)
    assert refused_one(ledger, accounts, bad, entry(accounts, record_id, "ok")) is errors.AccessLedgerRecordMismatch


def test_a_retracted_record_is_skipped(ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]) -> None:
    _, record_id = treatment
    gone = add_record(ledger, accounts, "gone", Category.LAB_RESULTS)
    ledger.records.retract(accounts.gateway, gone)
    bad = entry(accounts, gone, "bad")
    assert refused_one(ledger, accounts, bad, entry(accounts, record_id, "ok")) is errors.AccessLedgerRecordRetracted


@pytest.mark.parametrize("requester", ["outsider", "auditor", "gateway"])
def test_a_requester_that_is_no_care_provider_is_skipped(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes], requester: str
) -> None:
    _, record_id = treatment
    bad = entry(accounts, record_id, "bad", requester=getattr(accounts, requester))
    assert refused_one(ledger, accounts, bad, entry(accounts, record_id, "ok")) is errors.AccessLedgerInvalidRequester


def test_a_suspended_requester_is_skipped(
    ledger: Ledger, accounts: Accounts, chain: Chain, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    grant(ledger, chain, accounts.patients[0], accounts.lab.address, [Category.LAB_RESULTS], [Purpose.TREATMENT])
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.hospital.address)
    bad = entry(accounts, record_id, "bad")
    good = entry(accounts, record_id, "ok", requester=accounts.lab)
    assert refused_one(ledger, accounts, bad, good) is errors.AccessLedgerInvalidRequester


@pytest.mark.parametrize("why", ["no consent", "category", "purpose", "revoked", "emergency without a window"])
def test_an_unauthorized_entry_is_skipped(
    ledger: Ledger, accounts: Accounts, chain: Chain, treatment: tuple[bytes, bytes], why: str
) -> None:
    _, record_id = treatment
    good = entry(accounts, record_id, "ok")
    if why == "no consent":
        bad = entry(accounts, record_id, "bad", requester=accounts.clinic)
    elif why == "category":
        bad = entry(accounts, add_record(ledger, accounts, "x-ray", Category.IMAGING), "bad")
    elif why == "purpose":
        bad = entry(accounts, record_id, "bad", Purpose.RESEARCH)
    elif why == "emergency without a window":
        bad = entry(accounts, add_record(ledger, accounts, "allergy", Category.ALLERGIES), "bad", Purpose.EMERGENCY)
    else:  # revoked: the good entry is another patient's
        ledger.consents.revoke(accounts.patients[0], accounts.hospital.address)
        bad = entry(accounts, record_id, "bad")
        other = accounts.patients[1]
        grant(ledger, chain, other, accounts.hospital.address, [Category.LAB_RESULTS], [Purpose.TREATMENT])
        good = entry(
            accounts, add_record(ledger, accounts, "o", Category.LAB_RESULTS, patient=other), "o", patient=other
        )
    assert refused_one(ledger, accounts, bad, good) is errors.AccessLedgerNotAuthorized


def test_an_expired_consent_is_skipped(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    record_id = add_record(ledger, accounts, "hba1c", Category.LAB_RESULTS)
    now = chain.now()
    grant(
        ledger, chain, accounts.patients[0], accounts.hospital.address, [Category.LAB_RESULTS], [Purpose.TREATMENT],
        valid_until=now + 100,
    )  # fmt: skip
    chain.advance(200)
    outcomes, result = batch(ledger, accounts, [entry(accounts, record_id, "late")])
    assert (outcomes[0].logged, outcomes[0].refusal) == (False, errors.AccessLedgerNotAuthorized)
    assert ledger.access.events_in(result, "AccessLogged") == []


def test_a_mixed_batch_logs_only_the_authorized_entries(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    consent_id, record_id = treatment
    entries = [
        entry(accounts, record_id, "0"),
        entry(accounts, rid("unknown"), "1"),
        entry(accounts, record_id, "2", requester=accounts.clinic),
        entry(accounts, record_id, "3"),
        entry(accounts, record_id, "4", requester=accounts.outsider),
    ]
    outcomes, result = batch(ledger, accounts, entries)
    assert [o.refusal for o in outcomes] == [
        None,
        errors.AccessLedgerUnknownRecord,
        errors.AccessLedgerNotAuthorized,
        None,
        errors.AccessLedgerInvalidRequester,
    ]
    assert [o.consent_id for o in outcomes if o.logged] == [consent_id, consent_id]
    refused = ledger.access.events_in(result, "AccessRefused")
    assert [(e["index"], e["reason"]) for e in refused] == [
        (1, function_signature_to_4byte_selector("AccessLedgerUnknownRecord(bytes32)")),
        (2, function_signature_to_4byte_selector("AccessLedgerNotAuthorized(address,address,uint8,uint8)")),
        (4, function_signature_to_4byte_selector("AccessLedgerInvalidRequester(address)")),
    ]
    assert [e["accessHash"] for e in ledger.access.events_in(result, "AccessLogged")] == [
        access_hash("0"),
        access_hash("3"),
    ]


def test_a_batch_of_refusals_is_mined_and_logs_nothing(ledger: Ledger, accounts: Accounts) -> None:
    outcomes, result = batch(ledger, accounts, [entry(accounts, rid("nothing"), "x")])
    assert not outcomes[0].logged
    assert ledger.access.events_in(result, "AccessLogged") == []


# ---------------------------------------------------------------- the whole batch


def test_an_empty_batch_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.AccessLedgerEmptyBatch):
        batch(ledger, accounts, [])


@pytest.mark.parametrize("caller", ["hospital", "auditor", "outsider"])
def test_only_a_gateway_may_log_a_batch(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes], caller: str
) -> None:
    _, record_id = treatment
    signer = getattr(accounts, caller)
    with pytest.raises(errors.AccessLedgerNotGateway) as exc:
        batch(ledger, accounts, [entry(accounts, record_id, "x")], gateway=signer)
    assert addr(exc.value.account) == signer.address


def test_a_suspended_gateway_may_not_log_a_batch(
    ledger: Ledger, accounts: Accounts, treatment: tuple[bytes, bytes]
) -> None:
    _, record_id = treatment
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.gateway.address)
    with pytest.raises(errors.AccessLedgerNotGateway):
        batch(ledger, accounts, [entry(accounts, record_id, "x")])
