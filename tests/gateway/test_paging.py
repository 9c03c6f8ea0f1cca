"""Paged lists: discovery, emergency reasons and the directory, a page at a time by cursor.

A real gateway on a Hardhat node; records uploaded through the API. Pages must neither repeat nor skip a
record while new ones arrive between pages, whatever is filtered out after the SQL (categories the
caller has no consent for) and whatever the filters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest

from gateway.storage import emergency_reasons
from node_client.gateway_client import GatewayClient
from node_client.vocabulary import parse_purposes
from tests.support.gateway_harness import AUDITOR, CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

FHIR = {"Content-Type": "application/fhir+json"}
PATIENT = 14
GLUCOSE, OTHER = "15074-8", "2345-7"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("paging")) as running:
        yield running


def _observation(n: int, code: str) -> bytes:
    """A lab result of its own (a new id, so a new record), of ``code``."""
    body = json.loads((SAMPLES / "hl7-r4" / "Observation-f001.json").read_text())
    body["id"] = f"paging-{n}-{os.urandom(4).hex()}"
    body["code"]["coding"][0]["code"] = code
    return json.dumps(body).encode()


def _condition(n: int) -> bytes:
    body = json.loads((SAMPLES / "hl7-r4" / "Condition-example.json").read_text())
    body["id"] = f"paging-{n}-{os.urandom(4).hex()}"
    return json.dumps(body).encode()


def _upload(hospital: httpx.Client, body: bytes) -> str:
    r = hospital.post("/v1/records", params={"patient": dev(PATIENT).address}, content=body, headers=FHIR)
    assert r.status_code == 201, r.text
    (record,) = r.json()["records"]
    return str(record["recordId"])


@pytest.fixture(scope="module")
def uploaded(gw: RunningGateway) -> list[str]:
    """Nine lab results (every third another code) between conditions the clinic may not see."""
    hospital = gw.login(dev(HOSPITAL))
    labs = []
    for n in range(9):
        labs.append(_upload(hospital, _observation(n, OTHER if n % 3 == 0 else GLUCOSE)))
        if n % 2:
            _upload(hospital, _condition(n))
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(PATIENT),
        dev(CLINIC).address,
        gw.slots(dev(PATIENT), "lab-results"),
        parse_purposes("treatment"),
        now,
        now + 86_400,
    )
    gw.wait_indexed()
    return labs


def _walk(http: httpx.Client, url: str, items: str = "records", between: object = None) -> list[str]:
    seen: list[str] = []
    while url:
        page = http.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [r.get("recordId") or r.get("accessId") or r["address"] for r in body[items]]
        assert (body["cursor"] is None) == (body["next"] is None)
        url = body["next"]
        if callable(between):
            between()
    return seen


def test_discovery_pages_neither_repeat_nor_skip_while_records_arrive(gw: RunningGateway, uploaded: list[str]) -> None:
    clinic = gw.login(dev(CLINIC))
    base = f"/v1/patients/{dev(PATIENT).address}/records"
    whole = clinic.get(base, params={"limit": 200}).json()
    assert whole["next"] is None and whole["consentedCategories"] == ["lab-results"]
    keys = [(r["registeredAt"], r["recordId"]) for r in whole["records"]]
    assert keys == sorted(keys, reverse=True) and sorted(r for _, r in keys) == sorted(uploaded)
    hospital = gw.login(dev(HOSPITAL))
    arrived: list[str] = []

    def another() -> None:  # a new lab result and a hidden condition between pages: both land before page 1
        arrived.append(_upload(hospital, _observation(100 + len(arrived), GLUCOSE)))
        _upload(hospital, _condition(100 + len(arrived)))
        gw.wait_indexed()

    seen = _walk(clinic, f"{base}?limit=2", between=another)
    assert seen == [r for _, r in keys], "a page repeated or skipped a record"
    assert len(arrived) == 5 and not set(arrived) & set(seen)
    assert clinic.get(base, params={"limit": 1}).json()["records"][0]["recordId"] == arrived[-1]


def test_discovery_filters_page_too(gw: RunningGateway, uploaded: list[str]) -> None:
    clinic = gw.login(dev(CLINIC))
    base = f"/v1/patients/{dev(PATIENT).address}/records"
    others = _walk(clinic, f"{base}?limit=1&code={OTHER}")
    assert others == [uploaded[6], uploaded[3], uploaded[0]]
    every = clinic.get(base, params={"code": GLUCOSE, "limit": 200}).json()["records"]
    assert _walk(clinic, f"{base}?limit=2&code={GLUCOSE}&category=lab-results") == [r["recordId"] for r in every]
    assert _walk(clinic, f"{base}?limit=3&category=conditions") == []
    assert _walk(clinic, f"{base}?limit=2&since=2000-01-01") == _walk(clinic, f"{base}?limit=200&since=2000-01-01")


def test_bad_cursors_and_limits_are_400(gw: RunningGateway, uploaded: list[str]) -> None:
    clinic = gw.login(dev(CLINIC))
    for path in (f"/v1/patients/{dev(PATIENT).address}/records", "/v1/members"):
        for bad in ({"cursor": "not-a-cursor"}, {"cursor": "A" * 53}, {"limit": 0}, {"limit": 201}):
            r = clinic.get(path, params=bad)
            assert r.status_code == 400, (path, bad, r.text)
            assert r.json()["code"] == "invalid_request"
    auditor = gw.login(dev(AUDITOR))
    assert auditor.get("/v1/emergency-reasons", params={"limit": 201}).status_code == 400
    assert auditor.get("/v1/emergency-reasons", params={"cursor": "bad"}).status_code == 400


def test_members_and_emergency_reasons_page(gw: RunningGateway) -> None:
    http = gw.http()
    whole = http.get("/v1/members", params={"limit": 200}).json()["members"]
    assert len(whole) > 3 and _walk(http, "/v1/members?limit=3", "members") == [m["address"] for m in whole]
    with gw.components.db.write() as conn:
        for i in range(5):
            emergency_reasons.record(
                conn, os.urandom(32), dev(CLINIC).address, dev(PATIENT).address, f"r{i}", b"s" * 32
            )
    auditor = gw.login(dev(AUDITOR))
    reasons = auditor.get("/v1/emergency-reasons", params={"limit": 200}).json()["reasons"]
    assert len(reasons) >= 5
    assert _walk(auditor, "/v1/emergency-reasons?limit=2", "reasons") == [o["accessId"] for o in reasons]
    with GatewayClient(gw.url) as client:
        client.sign_in(dev(AUDITOR))
        assert [o["accessId"] for o in client.iter_emergency_reasons(limit=2)] == [o["accessId"] for o in reasons]
        assert client.emergency_reasons() == reasons
        assert [m["address"] for m in client.members()] == [m["address"] for m in whole]


def test_the_client_iterates_every_page_of_discovery(gw: RunningGateway, uploaded: list[str]) -> None:
    with GatewayClient(gw.url) as client:
        client.sign_in(dev(CLINIC))
        whole = client.discover(dev(PATIENT).address, limit=200)["records"]
        walked = list(client.iter_discover(dev(PATIENT).address, limit=2))
        assert [r["recordId"] for r in walked] == [r["recordId"] for r in whole]
        assert set(uploaded) <= {r["recordId"] for r in walked}


def test_my_records_page_too(gw: RunningGateway, uploaded: list[str]) -> None:
    """The patient's own list: every record (hidden from the clinic or not), newest first, a page at a time;
    the client follows the pages; a bad cursor is 400."""
    patient = gw.login(dev(PATIENT))
    whole = patient.get("/v1/me/records", params={"limit": 200}).json()
    assert whole["next"] is None and set(uploaded) <= {r["recordId"] for r in whole["records"]}
    keys = [(r["registeredAt"], r["recordId"]) for r in whole["records"]]
    assert keys == sorted(keys, reverse=True)
    assert _walk(patient, "/v1/me/records?limit=3") == [r for _, r in keys]
    with GatewayClient(gw.url) as client:
        client.sign_in(dev(PATIENT))
        assert [r["recordId"] for r in client.my_records()] == [r for _, r in keys]
    assert patient.get("/v1/me/records", params={"cursor": "bad"}).json()["code"] == "invalid_request"
