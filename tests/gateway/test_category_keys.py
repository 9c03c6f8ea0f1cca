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
