"""Idempotent uploads and versions over HTTP (real gateway, chain, store and crypto): the same upload
twice creates nothing, a changed resource amends its record and the old version stays readable, a
conditional create (``ifNoneExist``) is honoured, and two identical uploads at once make one record set."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from node_client.vocabulary import parse_purposes
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, open_release, running_gateway

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw")) as running:
        yield running


def _upload(gw: RunningGateway, patient: int, body: bytes | dict[str, Any]) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return gw.login(dev(HOSPITAL)).post(
        "/v1/records", params={"patient": dev(patient).address}, content=content, headers=FHIR
    )


def _registered(gw: RunningGateway, patient: int) -> list[Any]:
    return [e for e in gw.ledger.records.events(["RecordRegistered"]) if e["patient"] == dev(patient).address]


def test_the_same_bundle_twice_creates_nothing_the_second_time(gw: RunningGateway) -> None:
    first = _upload(gw, 10, SYNTHEA.read_bytes())
    assert first.status_code == 201, first.text
    block = gw.client.block_number()
    again = _upload(gw, 10, SYNTHEA.read_bytes())
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["records"] == [] and body["txHash"] is None and body["blockNumber"] is None
    held = {r["category"]: r["recordId"] for r in first.json()["records"]}
    assert {u["category"]: u["recordIds"] for u in body["unchanged"]} == {k: [v] for k, v in held.items()}
    assert gw.client.block_number() == block  # no transaction at all
    assert len(_registered(gw, 10)) == len(held)


def _changed_observation(bundle: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The bundle with its first quantity Observation's value changed, and that Observation's id."""
    out = copy.deepcopy(bundle)
    for entry in out["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Observation" and "valueQuantity" in res:
            res["valueQuantity"]["value"] += 1
            return out, res["id"]
    raise AssertionError("no quantity Observation")


def test_a_changed_observation_amends_its_record_and_the_old_version_stays_readable(gw: RunningGateway) -> None:
    bundle = orjson.loads(SYNTHEA.read_bytes())
    first = _upload(gw, 11, bundle).json()
    changed, obs_id = _changed_observation(bundle)
    r = _upload(gw, 11, changed)
    assert r.status_code == 201, r.text
    body = r.json()
    (new,) = body["records"]  # only the record holding the changed Observation
    old = next(x for x in first["records"] if x["category"] == new["category"])
    assert new["amends"] == old["recordId"] and new["txHash"] == body["txHash"]
    assert {u["category"] for u in body["unchanged"]} == {x["category"] for x in first["records"]} - {new["category"]}
    (ev,) = gw.ledger.records.events_in(
        type("R", (), {"receipt": gw.client.w3.eth.get_transaction_receipt(body["txHash"])})(), "RecordAmended"
    )
    assert "0x" + bytes(ev["previousRecordId"]).hex() == old["recordId"]

    # both versions are releasable to a consented reader; discovery lists the current one and marks history
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(11), dev(CLINIC).address, gw.slots(dev(11), new["category"]), parse_purposes("treatment"), now, now + 3600
    )
    clinic = gw.login(dev(CLINIC))
    values = {}
    for rec in (old["recordId"], new["recordId"]):
        released = clinic.get(f"/v1/records/{rec}", params={"purpose": "treatment"})
        assert released.status_code == 200, released.text
        entries = orjson.loads(open_release(released.json(), CLINIC, dev(CLINIC).address))["entry"]
        values[rec] = next(e["resource"] for e in entries if e["resource"].get("id") == obs_id)["valueQuantity"][
            "value"
        ]
    assert values[new["recordId"]] == values[old["recordId"]] + 1
    gw.wait_indexed()
    found = clinic.get(f"/v1/patients/{dev(11).address}/records", params={"purpose": "treatment"}).json()["records"]
    status = {x["recordId"]: (x["status"], x["amends"]) for x in found}
    assert status[new["recordId"]] == ("active", old["recordId"]) and status[old["recordId"]] == ("amended", None)

    # the changed bundle again: nothing new; the original again: a new version of the new one
    assert _upload(gw, 11, changed).status_code == 200
    back = _upload(gw, 11, bundle).json()["records"]
    assert [x["amends"] for x in back] == [new["recordId"]]


def _transaction(patient: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:4b0a2a4e-0a5c-4f36-9d2f-3a1d2b6b9c01",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": if_none_exist},
            }
        ],
    }


def test_if_none_exist_is_honoured(gw: RunningGateway) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-41-0001"}],
        "gender": "female",
        "birthDate": "1980-02-03",
    }
    created = _upload(gw, 12, _transaction(patient, "identifier=urn:oid:2.16.840.1.113883.4.1|999-41-0001"))
    assert created.status_code == 201, created.text
    # a different resource (other id, other content) with the same identifier: not created again
    other = {**patient, "id": "another", "gender": "other"}
    again = _upload(gw, 12, _transaction(other, "identifier=urn:oid:2.16.840.1.113883.4.1|999-41-0001"))
    assert again.status_code == 200, again.text
    assert again.json()["records"] == [] and "ifNoneExist matched" in again.json()["ignored"][0]["reason"]
    # an identifier not held: created
    fresh = {**patient, "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-41-0002"}]}
    assert (
        _upload(gw, 12, _transaction(fresh, "identifier=urn:oid:2.16.840.1.113883.4.1|999-41-0002")).status_code == 201
    )
    # a search this gateway does not run is refused, not ignored
    refused = _upload(gw, 12, _transaction(fresh, "family=Smith"))
    assert refused.status_code == 422 and "ifNoneExist" in refused.json()["issues"][0]["path"]


def test_two_identical_uploads_at_once_make_one_record_set(gw: RunningGateway) -> None:
    body = SYNTHEA.read_bytes()
    answers: list[Any] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        answers.append(_upload(gw, 13, body))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
    created = next(a.json() for a in answers if a.status_code == 201)
    assert len(_registered(gw, 13)) == len(created["records"])


def test_after_the_current_version_is_retracted_an_upload_makes_a_new_record(gw: RunningGateway) -> None:
    """The retracted version's predecessor stays Amended on chain (it cannot be amended again): the next
    upload of that resource is a new record, not an amendment the chain would refuse."""
    obs = orjson.loads((SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes())
    (v1,) = _upload(gw, 14, obs).json()["records"]
    obs["valueQuantity"]["value"] += 1
    (v2,) = _upload(gw, 14, obs).json()["records"]
    assert v2["amends"] == v1["recordId"]
    assert gw.login(dev(HOSPITAL)).delete(f"/v1/records/{v2['recordId']}").status_code == 200
    r = _upload(gw, 14, obs)
    assert r.status_code == 201, r.text
    (v3,) = r.json()["records"]
    assert v3["amends"] is None and v3["recordId"] not in (v1["recordId"], v2["recordId"])
