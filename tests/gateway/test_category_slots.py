"""The gateway's edges with blinded categories, over HTTP with a real gateway and chain: a ``category=`` filter
is mapped to the patient's slots and every answer names the slots back with her key; a gateway without her
key names the emergency-safe slots and shows a blinded one as ``slot-N`` (API, FHIR Consent, exports)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from eth_account import Account

from node_client import signing
from node_client.blinding import BLINDED_SLOTS
from node_client.vocabulary import Category, parse_purposes
from tests.support.fhir_validator import FhirValidator
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

FHIR = {"Content-Type": "application/fhir+json"}
ALLERGY = (SAMPLES / "hl7-r4" / "AllergyIntolerance-example.json").read_bytes()
LAB = orjson.loads((SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes())
SNOMED = "http://snomed.info/sct"
PATIENT = 13
#: a blinded slot: a fresh patient's consent carries it, and a gateway without her key cannot name it
SLOT = BLINDED_SLOTS[3]


def _depression(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": SNOMED, "code": "370143000", "display": "Major depressive disorder"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "onsetDateTime": "2012-11-01",
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("slots")) as running:
        yield running


@pytest.fixture(scope="module")
def keyed(gw: RunningGateway) -> dict[str, str]:
    """Dev patient #13 (her key held here): a mental-health and a lab record; the clinic may read mental health."""
    patient = dev(PATIENT)
    hospital = gw.login(dev(HOSPITAL))
    out = {}
    for body in (_depression("p13"), LAB):
        up = hospital.post("/v1/records", params={"patient": patient.address}, content=orjson.dumps(body), headers=FHIR)
        assert up.status_code == 201, up.text
        (record,) = up.json()["records"]
        out[record["category"]] = record["recordId"]
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        patient, dev(CLINIC).address, gw.slots(patient, "mental-health"), parse_purposes("treatment"), now, now + 3600
    )
    gw.wait_indexed()
    return out


def test_a_category_filter_finds_the_patients_slot_and_answers_name_it(
    gw: RunningGateway, keyed: dict[str, str]
) -> None:
    assert set(keyed) == {"mental-health", "lab-results"}
    slot = gw.slots(dev(PATIENT), "mental-health").bit_length() - 1
    on_chain = gw.ledger.records.record_of(bytes.fromhex(keyed["mental-health"][2:]))
    assert on_chain.category == slot
    clinic = gw.login(dev(CLINIC))
    url = f"/v1/patients/{dev(PATIENT).address}/records"
    for asked in ("mental-health", f"slot-{slot}", "mental-health,lab-results"):
        found = clinic.get(url, params={"category": asked})
        assert found.status_code == 200, found.text
        body = found.json()
        assert [r["recordId"] for r in body["records"]] == [keyed["mental-health"]], asked
        assert [r["category"] for r in body["records"]] == ["mental-health"]
        assert body["consentedCategories"] == ["mental-health"]
    assert clinic.get(url, params={"category": "lab-results"}).json()["records"] == []
    assert clinic.get(url, params={"category": "no-such-thing"}).status_code == 400

    mine = gw.login(dev(PATIENT))
    assert {r["category"] for r in mine.get("/v1/me/records").json()["records"]} == {"mental-health", "lab-results"}
    (consent,) = mine.get("/v1/me/consents").json()["consents"]
    assert consent["categories"] == ["mental-health"]
    refused = clinic.get(f"/v1/records/{keyed['lab-results']}", params={"purpose": "treatment"}).json()
    assert (refused["code"], refused["detail"]) == ("wrong_category", "the consent does not cover lab-results")


@pytest.fixture(scope="module")
def keyless(gw: RunningGateway) -> dict[str, Any]:
    """A patient who never handed this gateway her key: an allergy record, and a consent to the clinic (her signed
    health code) for allergies and a blinded slot."""
    patient = Account.create()
    up = gw.login(dev(HOSPITAL)).post("/v1/records", params={"patient": patient.address}, content=ALLERGY, headers=FHIR)
    assert up.status_code == 201, up.text
    now = gw.client.block_timestamp()
    grant = gw.ledger.consents.build_grant(
        patient.address,
        dev(CLINIC).address,
        1 << Category.ALLERGIES | 1 << SLOT,
        parse_purposes("treatment"),
        now,
        now + 3600,
        deadline=now + 600,
    )
    signed = signing.sign(patient, gw.ledger.consents.domain(), grant).as_dict()
    r = gw.login(dev(CLINIC)).post("/v1/consents", json=signed)
    assert r.status_code == 201, r.text
    gw.wait_indexed()
    return {"patient": patient, "record": up.json()["records"][0]["recordId"]}


def test_without_her_key_a_blinded_slot_is_slot_n(gw: RunningGateway, keyless: dict[str, Any]) -> None:
    patient = keyless["patient"]
    assert gw.components.category_keys.get(patient.address) is None
    mine = gw.login(patient)
    (consent,) = mine.get("/v1/me/consents").json()["consents"]
    assert consent["categories"] == ["allergies", f"slot-{SLOT}"]

    clinic = gw.login(dev(CLINIC))
    url = f"/v1/patients/{patient.address}/records"
    found = clinic.get(url).json()
    assert [(r["recordId"], r["category"]) for r in found["records"]] == [(keyless["record"], "allergies")]
    assert clinic.get(url, params={"category": "allergies"}).json()["consentedCategories"] == ["allergies"]
    needed = clinic.get(url, params={"category": "mental-health"})
    assert (needed.status_code, needed.json()["code"]) == (409, "category_key_needed")
    assert clinic.get(url, params={"category": f"slot-{SLOT}"}).json()["records"] == []

    rows = list(csv.reader(io.StringIO(mine.get("/v1/me/exports/consents").text.lstrip("\ufeff"))))
    assert f"Protected category {SLOT}" in rows[1][3]
    zh = mine.get("/v1/me/exports/consents", params={"lang": "zh-CN"}).text
    assert f"受保护类别 {SLOT}" in zh


def test_the_fhir_consent_of_an_unnamed_slot_codes_it_locally_and_validates(
    gw: RunningGateway, keyless: dict[str, Any], fhir_validator: FhirValidator, tmp_path: Path
) -> None:
    patient = keyless["patient"]
    bundle = gw.login(patient).get("/fhir/Consent", params={"patient": patient.address}).json()
    (entry,) = bundle["entry"]
    provision = entry["resource"]["provision"]
    assert provision["class"] == [
        {"system": "urn:hcl:category", "code": "allergies"},
        {"system": "urn:hcl:category-slot", "code": str(SLOT)},
    ]
    report = fhir_validator.validate_json(bundle, tmp_path / "consent.json")
    assert report.errors_except(()) == [], report.errors
