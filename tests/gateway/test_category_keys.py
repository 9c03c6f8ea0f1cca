"""A patient's category key at a gateway (``/v1/category-keys``) and what it is needed for, over HTTP with a
real gateway and chain: without it only emergency-safe records register (the rest: 409
``category_key_needed``, nothing stored); with it a record takes the patient's slot on chain and the API
names it by its category; a key that is not the patient's is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account

from node_client.blinding import category_key, sign_category_key
from node_client.vocabulary import Category
from tests.support.gateway_harness import HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

FHIR = {"Content-Type": "application/fhir+json"}
ALLERGY = (SAMPLES / "hl7-r4" / "AllergyIntolerance-example.json").read_bytes()
LAB = (SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("keys")) as running:
        yield running


def _upload(gw: RunningGateway, patient: str, body: bytes):  # type: ignore[no-untyped-def]
    return gw.login(dev(HOSPITAL)).post("/v1/records", params={"patient": patient}, content=body, headers=FHIR)


def test_without_the_key_only_emergency_safe_records_register(gw: RunningGateway) -> None:
    patient = Account.create()
    r = _upload(gw, patient.address, LAB)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "category_key_needed"
    r = _upload(gw, patient.address, ALLERGY)
    assert r.status_code == 201, r.text
    assert [x["category"] for x in r.json()["records"]] == ["allergies"]


def test_the_key_is_learned_once_and_names_the_slots(gw: RunningGateway) -> None:
    patient, other = Account.create(), Account.create()
    hospital = gw.login(dev(HOSPITAL))
    typed = hospital.get("/v1/category-keys/request", params={"patient": patient.address}).json()["typedData"]
    signature = bytes(Account.sign_typed_data(patient.key, full_message=typed).signature)
    domain = gw.ledger.consents.domain()
    assert signature == sign_category_key(patient, domain)  # the portal's request is the client's
    body = {"patient": patient.address, "signature": "0x" + signature.hex()}
    wrong = {"patient": patient.address, "signature": "0x" + sign_category_key(other, domain).hex()}
    assert hospital.post("/v1/category-keys", json=wrong).json()["code"] == "category_key_invalid"
    first = hospital.post("/v1/category-keys", json=body)
    assert (first.status_code, first.json()["learned"]) == (201, True)
    assert hospital.post("/v1/category-keys", json=body).status_code == 200

    r = _upload(gw, patient.address, LAB)
    assert r.status_code == 201, r.text
    (record,) = r.json()["records"]
    assert record["category"] == "lab-results"
    on_chain = gw.ledger.records.record_of(bytes.fromhex(record["recordId"][2:]))
    key = category_key(domain, patient.address, signature)
    assert on_chain.category == key.slot(Category.LAB_RESULTS)


def test_the_key_is_handed_to_the_patient_and_her_current_guardian_only(gw: RunningGateway) -> None:
    """``GET /v1/category-keys/{patient}``: to her, or her guardian while the chain says so (a removed
    guardian at once); anyone else 403 before learning whether the key is held; a key kept before its
    signature was gets it back when she hands it over again."""
    ward, guardian, stranger = dev(16), dev(18), dev(19)
    domain = gw.ledger.consents.domain()
    path = f"/v1/category-keys/{ward.address}"
    mine = gw.login(ward).get(path)
    assert mine.status_code == 200, mine.text
    signature = bytes.fromhex(mine.json()["signature"][2:])
    assert category_key(domain, ward.address, signature) == gw.components.category_keys.get(ward.address)
    assert gw.login(guardian).get(path).json()["code"] == "not_patient"

    gw.ledger.consents.set_guardian(ward, guardian.address, gw.client.block_timestamp() + 86_400)
    handed = gw.login(guardian).get(path)
    assert handed.status_code == 200 and handed.json() == mine.json()
    assert gw.login(stranger).get(path).status_code == 403
    unknown = Account.create().address
    gw.ledger.consents.set_guardian(ward, guardian.address, gw.client.block_timestamp() + 86_400)
    assert gw.login(guardian).get(f"/v1/category-keys/{unknown}").status_code == 403  # not her ward
    gw.ledger.consents.remove_guardian(ward, guardian.address)
    assert gw.login(guardian).get(path).json()["code"] == "not_patient"

    with gw.components.db.write() as conn:  # as a key learned before signatures were kept
        conn.execute("UPDATE category_keys SET signature = NULL WHERE patient = ?", (ward.address.lower(),))
    assert gw.login(ward).get(path).json()["code"] == "not_found"
    assert gw.login(ward).post("/v1/category-keys", json=mine.json()).status_code == 200
    assert gw.login(ward).get(path).json() == mine.json()
    assert gw.login(ward).get("/v1/category-keys/0x1234").json()["code"] == "invalid_request"


def test_kek_rotation_rewraps_the_category_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A restart after ``rotate-kek`` reads every key and signature it held (they are wrapped under the KEK)."""
    from gateway.storage.category_keys import CategoryKeys
    from gateway.storage.crypto import Kek
    from gateway.storage.keyrotation import finish_pending_rotation, rotate_kek

    with running_gateway(tmp_path) as gw:
        held = gw.components.category_keys
        kek_file = gw.settings.kek_file
        patients = [dev(i).address for i in range(10, 20)]
        before = {p: (held.get(p), held.signature(p)) for p in patients}
        result = rotate_kek(kek_file, gw.components.db)
        assert result.rewrapped >= len(patients)
        finish_pending_rotation(kek_file, gw.components.db)  # nothing pending: a no-op
        fresh = CategoryKeys(gw.components.db, Kek.load(kek_file), held.domain)  # what a restart reads
        assert {p: (fresh.get(p), fresh.signature(p)) for p in patients} == before
        assert all(k is not None and s is not None for k, s in before.values())


def test_with_confirmations_a_guardianship_counts_once_confirmed_and_a_removal_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On a chain with confirmations (Clique), guardianship follows the rule of consents: an appointment
    counts once confirmed, a removal mined above the confirmed block is in force as soon as it is seen."""
    with running_gateway(tmp_path, confirmations=2) as g:
        ward, guardian = dev(15), dev(18)
        path = f"/v1/category-keys/{ward.address}"
        mine = lambda: g.client.w3.provider.make_request("evm_mine", [])  # noqa: E731
        g.ledger.consents.set_guardian(ward, guardian.address, g.client.block_timestamp() + 86_400)
        http = g.login(guardian)
        assert http.get(path).json()["code"] == "not_patient"  # not yet confirmed
        mine(), mine()
        assert http.get(path).status_code == 200
        g.ledger.consents.remove_guardian(ward, guardian.address)
        assert http.get(path).json()["code"] == "not_patient"  # the head says no, before it is confirmed
