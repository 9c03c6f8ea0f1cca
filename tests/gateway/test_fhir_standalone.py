"""Records that stand alone and minimum-necessary demographics (issue 16), on the grouping itself.

Every shipped Synthea bundle and HL7 R4 example: each reference in each record resolves inside that record,
copies are only the minimal Patient and directory/medication resources, a demographics record holds no name,
identifier, contact point or address, and the identifiers record holds them. The same records, released
through a real gateway and judged by the HAPI validator: tests/system/test_fhir_conformance.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.fhir import group, parse
from node_client.vocabulary import Category
from tests.gateway.test_fhir import HL7, SYNTHEA, check_grouping, mdd_condition

UPLOADS = sorted(SYNTHEA.glob("*.json")) + sorted(p for p in HL7.rglob("*.json") if p.name != "package.json")
IDENTIFYING = {"name", "identifier", "telecom", "address", "photo", "contact"}


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = parse(path.read_bytes())
    return doc


@pytest.mark.parametrize("path", UPLOADS, ids=lambda p: p.name)
def test_every_reference_of_every_record_resolves_inside_it(path: Path) -> None:
    """check_grouping checks each record: references resolve, copies are allowed ones, no identifiers leak."""
    grouping = check_grouping(_load(path))
    for record in grouping.records:
        for entry in record.bundle["entry"][record.own :]:
            assert entry["resource"].get("resourceType") != "Bundle"


@pytest.mark.parametrize("path", sorted(SYNTHEA.glob("*.json")), ids=lambda p: p.name)
def test_a_synthea_patient_is_split_into_demographics_and_identifiers(path: Path) -> None:
    doc = _load(path)
    (sent,) = (e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient")
    records = {r.category: r for r in group(doc).records}
    (demographics,) = (e["resource"] for e in records[Category.DEMOGRAPHICS].bundle["entry"])
    assert demographics == {
        "resourceType": "Patient",
        "id": sent["id"],
        "gender": sent["gender"],
        "birthDate": sent["birthDate"][:4],
        "communication": [{"language": c["language"]} for c in sent["communication"]],
    }
    (identifiers,) = (e["resource"] for e in records[Category.IDENTIFIERS].bundle["entry"])
    assert IDENTIFYING & set(sent) == IDENTIFYING & set(identifiers)
    assert {"name", "identifier", "telecom", "address"} <= set(identifiers)
    assert all(identifiers[k] == sent[k] for k in IDENTIFYING & set(identifiers))
    ssn = next(i["value"] for i in sent["identifier"] if i.get("system") == "http://hl7.org/fhir/sid/us-ssn")
    family = sent["name"][0]["family"].encode()
    for category, record in records.items():  # the copies of the Patient are the minimal one
        if category is not Category.IDENTIFIERS:
            assert ssn.encode() not in orjson.dumps(record.bundle) and family not in orjson.dumps(record.bundle)


def test_a_reference_to_another_categorys_data_becomes_a_logical_one() -> None:
    doc = _load(SYNTHEA / "patient-2-7b4cf3d5.json")
    lab = next(r for r in group(doc).records if r.category is Category.LAB_RESULTS)
    obs = lab.bundle["entry"][0]["resource"]
    sent = next(e["resource"] for e in doc["entry"] if e["resource"].get("id") == obs["id"])
    assert obs["encounter"] == {
        "type": "Encounter",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": sent["encounter"]["reference"]},
    }
    assert obs["subject"] == sent["subject"]  # the Patient, copied in as the minimal one
    assert not any(e["resource"]["resourceType"] == "Encounter" for e in lab.bundle["entry"])
    assert "reference" in sent["encounter"], "the upload itself is not changed"


def test_a_mental_health_encounter_is_never_copied_and_a_relative_reference_keeps_its_type() -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"code": "AMB"},
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "370143000"}]}],
    }
    lab = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"code": "laboratory"}]}],
        "code": {"text": "HbA1c"},
        "encounter": {"reference": "Encounter/e1", "display": "visit"},
        "performer": [{"reference": "Practitioner/nowhere"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "http://h.example/fhir/Encounter/e1", "resource": encounter},
            {"fullUrl": "urn:uuid:0b1", "resource": lab},
        ],
    }
    records = {r.category: r for r in check_grouping(bundle).records}
    assert set(records) == {Category.LAB_RESULTS, Category.MENTAL_HEALTH}
    (entry,) = records[Category.LAB_RESULTS].bundle["entry"]
    assert entry["resource"]["encounter"] == {
        "display": "visit",
        "type": "Encounter",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "http://h.example/fhir/Encounter/e1"},
    }
    # not in the upload: the reference as sent is the identifier, its type read from it
    assert entry["resource"]["performer"] == [{"type": "Practitioner", "identifier": {"value": "Practitioner/nowhere"}}]


def test_a_sensitive_medication_is_not_copied_into_an_ordinary_record() -> None:
    ring = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1367439"}  # NuvaRing
    medication = {"resourceType": "Medication", "id": "m", "code": {"coding": [ring]}}
    aspirin = {"resourceType": "Medication", "id": "a", "code": {"text": "aspirin"}}
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "urn:uuid:p"},
        "reasonReference": [{"reference": "urn:uuid:dx"}],
    }
    entries = [
        {
            "fullUrl": "urn:uuid:p",
            "resource": {"resourceType": "Patient", "name": [{"family": "Wang"}], "gender": "female"},
        },
        {"fullUrl": "urn:uuid:m", "resource": medication},
        {"fullUrl": "urn:uuid:a", "resource": aspirin},
        {"fullUrl": "urn:uuid:dx", "resource": mdd_condition()},
        {"fullUrl": "urn:uuid:r1", "resource": {**request, "medicationReference": {"reference": "urn:uuid:m"}}},
        {"fullUrl": "urn:uuid:r2", "resource": {**request, "medicationReference": {"reference": "urn:uuid:a"}}},
    ]
    records = {
        r.category: r
        for r in check_grouping({"resourceType": "Bundle", "type": "collection", "entry": entries}).records
    }
    meds = records[Category.MEDICATIONS].bundle["entry"]
    assert [e["fullUrl"] for e in meds] == ["urn:uuid:a", "urn:uuid:r1", "urn:uuid:r2", "urn:uuid:p"]
    r1 = meds[1]["resource"]
    assert r1["medicationReference"] == {
        "type": "Medication",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:m"},
    }
    assert r1["reasonReference"] == [
        {"type": "Condition", "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:dx"}}
    ]
    assert meds[3]["resource"] == {"resourceType": "Patient", "gender": "female"}
    sexual = records[Category.SEXUAL_REPRODUCTIVE_HEALTH].bundle["entry"]
    assert [e["fullUrl"] for e in sexual] == ["urn:uuid:m"]


def test_documents_are_released_as_sent() -> None:
    doc = _load(HL7 / "Bundle-father.json")
    (record,) = group(doc).records
    assert record.bundle["entry"] == [{"fullUrl": record.bundle["entry"][0]["fullUrl"], "resource": doc}]
