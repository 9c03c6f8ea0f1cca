"""The FHIR read API (``/fhir``) over HTTP against the real gateway: every answer validates as R4 (HAPI), consents
granted here round-trip, and the mapping speaks the vocabulary of the HL7 R4 Consent examples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_client.audit import replay, write_outputs
from node_client.vocabulary import parse_purposes
from tests.support.fhir_validator import FhirValidator, Report
from tests.support.gateway_harness import AUDITOR, CLINIC, HOSPITAL, LAB, SAMPLES, RunningGateway, dev, running_gateway

pytestmark = [pytest.mark.fhir]

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
HL7_CONSENTS = sorted((SAMPLES / "hl7-r4" / "consent").glob("Consent-*.json"))
FHIR = {"Content-Type": "application/fhir+json"}
PATIENT = 11
#: validator limits, as in tests/system/test_fhir_conformance.py: none are needed for what /fhir emits
ALLOWED: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("fhirapi")) as running:
        yield running


@pytest.fixture(scope="module")
def granted(gw: RunningGateway) -> dict[str, Any]:
    """Patient dev#11: a record, a consent to the clinic (two categories, two purposes), one to the lab then
    revoked, and two reads by the clinic."""
    patient = dev(PATIENT)
    up = gw.login(dev(HOSPITAL)).post(
        "/v1/records", params={"patient": patient.address}, content=SYNTHEA.read_bytes(), headers=FHIR
    )
    assert up.status_code == 201, up.text
    now = gw.client.block_timestamp()
    clinic_id, _ = gw.ledger.consents.grant(
        patient,
        dev(CLINIC).address,
        gw.slots(patient, "conditions,medications"),
        parse_purposes("treatment,research"),
        now,
        now + 86_400,
    )
    lab_id, _ = gw.ledger.consents.grant(
        patient, dev(LAB).address, gw.slots(patient, "lab-results"), parse_purposes("treatment"), now, now + 3_600
    )
    gw.ledger.consents.revoke(patient, dev(LAB).address)
    clinic = gw.login(dev(CLINIC))
    conditions = [r["recordId"] for r in up.json()["records"] if r["category"] in ("conditions", "medications")]
    for record in conditions[:2]:
        got = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
        assert got.status_code == 200, got.text
    gw.wait_indexed()
    return {"clinic": "0x" + clinic_id.hex(), "lab": "0x" + lab_id.hex(), "now": now, "reads": len(conditions[:2])}


def _valid(fhir_validator: FhirValidator, body: Any, path: Path) -> None:
    report: Report = fhir_validator.validate_json(body, path)
    assert report.errors_except(ALLOWED) == [], report.errors


def _get(gw: RunningGateway, account: int, url: str, **params: Any) -> Any:
    r = gw.login(dev(account)).get(url, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()


def test_metadata_is_a_valid_capability_statement(
    gw: RunningGateway, fhir_validator: FhirValidator, tmp_path: Path
) -> None:
    r = gw.http().get("/fhir/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    cs = r.json()
    assert (cs["kind"], cs["fhirVersion"], cs["format"]) == ("instance", "4.0.1", ["json"])
    assert {res["type"] for res in cs["rest"][0]["resource"]} == {"Consent", "AuditEvent"}
    _valid(fhir_validator, cs, tmp_path / "metadata.json")


def test_consents_round_trip_and_validate(
    gw: RunningGateway, granted: dict[str, Any], fhir_validator: FhirValidator, tmp_path: Path
) -> None:
    bundle = _get(gw, PATIENT, "/fhir/Consent", patient=dev(PATIENT).address)
    _valid(fhir_validator, bundle, tmp_path / "consents.json")
    assert (bundle["type"], bundle["total"]) == ("searchset", 2)
    by_id = {
        next(i["value"] for i in e["resource"]["identifier"] if i["system"] == "urn:hcl:consent-id"): e
        for e in bundle["entry"]
    }
    clinic, lab = by_id[granted["clinic"]]["resource"], by_id[granted["lab"]]["resource"]
    assert (clinic["status"], lab["status"]) == ("active", "inactive")
    assert clinic["patient"]["identifier"] == {"system": "urn:hcl:address", "value": dev(PATIENT).address}
    assert clinic["organization"][0]["identifier"]["value"] == dev(CLINIC).address
    provision = clinic["provision"]
    assert [c["code"] for c in provision["class"]] == ["medications", "conditions"]
    assert {c["code"] for c in provision["purpose"]} == {"TREAT", "HRESCH"}
    assert provision["period"]["end"] > provision["period"]["start"]
    assert any(i["system"] == "urn:hcl:tx-hash" for i in clinic["identifier"])
    assert (
        clinic["dateTime"] <= provision["period"]["end"] and clinic["scope"]["coding"][0]["code"] == "patient-privacy"
    )
    again = _get(gw, PATIENT, "/fhir/Consent", patient=dev(PATIENT).address)
    assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in bundle["entry"]]  # uuid5 of the id


def test_the_mapping_speaks_the_hl7_consent_examples_vocabulary(gw: RunningGateway, granted: dict[str, Any]) -> None:
    assert HL7_CONSENTS, "samples/fhir/hl7-r4/consent holds the HL7 R4 Consent examples"
    examples = [orjson.loads(p.read_bytes()) for p in HL7_CONSENTS]
    ours = _get(gw, PATIENT, "/fhir/Consent", patient=dev(PATIENT).address)["entry"][0]["resource"]

    def codings(field: str, resources: list[dict[str, Any]]) -> set[tuple[str, str]]:
        out = set()
        for r in resources:
            value = r.get(field)
            for concept in value if isinstance(value, list) else [value] if value else []:
                out |= {(c["system"], c["code"]) for c in concept["coding"]}
        return out

    for field in ("scope", "category", "policyRule"):
        assert codings(field, [ours]) <= codings(field, examples), field
    purposes = {(c["system"], c["code"]) for e in examples for c in (e.get("provision") or {}).get("purpose", [])}
    assert {s for s, _ in purposes} == {c["system"] for c in ours["provision"]["purpose"]}


def test_who_may_read_consents(gw: RunningGateway, granted: dict[str, Any]) -> None:
    patient = dev(PATIENT).address
    assert _get(gw, AUDITOR, "/fhir/Consent", patient=patient)["total"] == 2
    clinics = _get(gw, CLINIC, "/fhir/Consent", patient=patient)
    assert [e["resource"]["organization"][0]["identifier"]["value"] for e in clinics["entry"]] == [dev(CLINIC).address]
    assert _get(gw, HOSPITAL, "/fhir/Consent", patient=patient)["total"] == 0
    stranger = gw.login(dev(19)).get("/fhir/Consent", params={"patient": patient})
    assert stranger.status_code == 403 and stranger.json()["code"] == "wrong_role"
    assert stranger.headers["content-type"] == "application/problem+json"
    assert gw.http().get("/fhir/Consent", params={"patient": patient}).status_code == 401
    bad = gw.login(dev(PATIENT)).get("/fhir/Consent", params={"patient": "nobody"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"


def test_audit_events_page_and_validate(
    gw: RunningGateway, granted: dict[str, Any], fhir_validator: FhirValidator, tmp_path: Path
) -> None:
    patient = dev(PATIENT).address
    whole = _get(gw, AUDITOR, "/fhir/AuditEvent", patient=patient)
    _valid(fhir_validator, whole, tmp_path / "audit-events.json")
    assert whole["total"] == granted["reads"] == len(whole["entry"])
    event = whole["entry"][0]["resource"]
    assert event["agent"][0]["who"]["identifier"]["value"] == f"urn:ethereum:{dev(CLINIC).address}"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    first = _get(gw, PATIENT, "/fhir/AuditEvent", patient=patient, _count=1)
    assert "total" not in first and len(first["entry"]) == 1
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = gw.login(dev(PATIENT)).get(following)
    assert second.status_code == 200, second.text
    _valid(fhir_validator, second.json(), tmp_path / "page-2.json")
    urls = [e["fullUrl"] for e in first["entry"] + second.json()["entry"]]
    assert urls == [e["fullUrl"] for e in whole["entry"]]
    refused = gw.login(dev(CLINIC)).get("/fhir/AuditEvent", params={"patient": patient})
    assert refused.status_code == 403 and refused.json()["code"] == "wrong_role"


def test_the_gateway_and_the_auditor_map_an_access_alike(
    gw: RunningGateway, granted: dict[str, Any], tmp_path: Path
) -> None:
    """One mapping: the auditor's Bundle (replayed from the chain) and the gateway's searchset name the same
    accesses with the same ids, purposes and agents; only the observer differs."""
    ours = _get(gw, PATIENT, "/fhir/AuditEvent", patient=dev(PATIENT).address)["entry"]
    report = replay(gw.client, gw.manifest)
    audit = orjson.loads(write_outputs(report, tmp_path)["fhir"].read_bytes())["entry"]
    theirs = {e["fullUrl"]: e["resource"] for e in audit}
    assert ours and all(e["fullUrl"] in theirs for e in ours)
    for e in ours:
        mine, auditors = e["resource"], theirs[e["fullUrl"]]
        for element in ("type", "subtype", "recorded", "purposeOfEvent", "entity"):
            assert mine[element] == auditors[element], element
        assert mine["agent"][0] == auditors["agent"][0]
