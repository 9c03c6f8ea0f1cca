"""The patient's exports (``/v1/me/exports``) over HTTP: the real gateway app, a real Hardhat node, real crypto.

One batch-mode gateway serves the module: patient dev#10 has a Synthea upload, consents to the clinic (one of
them revoked) and a few releases, so the history has journal entries proven against anchors.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.api import exports
from gateway.services import access_history
from node_client.deploy import DEV_NAMES_ZH
from node_client.vocabulary import parse_purposes
from tests.support.fhir_validator import FhirValidator
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
PATIENT = 10
RELEASES = 5
BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw"), ledger_mode="batch") as running:
        hospital, clinic = running.login(dev(HOSPITAL)), running.login(dev(CLINIC))
        up = hospital.post(
            "/v1/records",
            params={"patient": dev(PATIENT).address},
            content=SYNTHEA.read_bytes(),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert up.status_code == 201, up.text
        consents = running.ledger.consents
        for grantee, purposes in ((HOSPITAL, "research"), (CLINIC, "treatment")):  # the first one revoked below
            now = running.client.block_timestamp()
            every = running.slots(dev(PATIENT), "lab-results,conditions,medications,allergies,demographics,encounters")
            consents.grant(dev(PATIENT), dev(grantee).address, every, parse_purposes(purposes), now, now + 86_400)
        consents.revoke(dev(PATIENT), dev(HOSPITAL).address)
        records = [r["recordId"] for r in up.json()["records"] if r["category"] in ("lab-results", "conditions")]
        for n in range(RELEASES):
            got = clinic.get(f"/v1/records/{records[n % len(records)]}", params={"purpose": "treatment"})
            assert got.status_code == 200, got.text
        running.wait_indexed()
        yield running


def _log(gw: RunningGateway) -> list[dict[str, Any]]:
    log = gw.login(dev(PATIENT)).get("/v1/me/access-log", params={"limit": 200}).json()
    assert len(log["accesses"]) == RELEASES
    return list(log["accesses"])


def _csv(body: bytes) -> list[list[str]]:
    assert body.startswith(BOM)
    return list(csv.reader(io.StringIO(body[len(BOM) :].decode("utf-8"))))


def test_access_log_csv_has_the_log_in_the_readers_language(gw: RunningGateway) -> None:
    me, log = gw.login(dev(PATIENT)), _log(gw)
    r = me.get("/v1/me/exports/access-log", params={"format": "csv", "lang": "zh-CN"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="access-log-0x')
    assert r.headers["content-disposition"].endswith('.csv"')
    header, *rows = _csv(r.content)
    assert header[:5] == ["时间", "访问机构", "访问机构地址", "数据类别", "用途"]
    assert [row[header.index("访问 ID")] for row in rows] == [a["accessId"] for a in log]  # newest first
    first = dict(zip(header, rows[0], strict=True))
    assert first["访问机构"] == DEV_NAMES_ZH[CLINIC] and first["访问机构地址"] == dev(CLINIC).address
    assert first["用途"] == "诊疗" and first["紧急访问"] == "否"
    assert datetime.fromisoformat(first["时间"]).utcoffset().total_seconds() == 8 * 3600  # Asia/Shanghai
    assert int(datetime.fromisoformat(first["时间"]).timestamp()) == log[0]["time"]
    english = _csv(me.get("/v1/me/exports/access-log", params={"format": "csv", "lang": "en"}).content)
    assert english[0][:2] == ["Time", "Institution that read it"]
    assert english[1][1] == "Riverside Community Health Centre" and english[1][4] == "Treatment"


def test_consents_csv_lists_each_consent_with_its_state(gw: RunningGateway) -> None:
    me = gw.login(dev(PATIENT))
    mine = me.get("/v1/me/consents").json()["consents"]
    header, *rows = _csv(me.get("/v1/me/exports/consents", params={"format": "csv", "lang": "en"}).content)
    assert header[:3] == ["Institution granted", "Its address", "State"]
    assert sorted(row[header.index("Consent ID")] for row in rows) == sorted(c["consentId"] for c in mine)
    states = {row[1]: row[2] for row in rows}
    assert states == {dev(HOSPITAL).address: "revoked", dev(CLINIC).address: "active"}
    zh = _csv(me.get("/v1/me/exports/consents", params={"format": "csv", "lang": "zh-CN"}).content)
    assert {row[2] for row in zh[1:]} == {"已撤销", "有效"} and "检验结果" in zh[1][3]


def test_html_exports_are_printable_pages_with_every_entry(gw: RunningGateway) -> None:
    me, log = gw.login(dev(PATIENT)), _log(gw)
    page = me.get("/v1/me/exports/access-log", params={"format": "html", "lang": "en"})
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    text = page.text
    assert text.startswith("<!doctype html><html lang='en'>") and text.endswith("</html>")
    assert "@media print" in text and "break-after:page" in text
    assert all(a["accessId"] in text for a in log) and text.count("<tr>") == RELEASES + 1  # the header row too
    assert "Riverside Community Health Centre" in text
    consents = me.get("/v1/me/exports/consents", params={"format": "html", "lang": "zh-CN"}).text
    assert consents.count("<section>") == 2 and "授权历史" in consents and DEV_NAMES_ZH[CLINIC] in consents


def test_fhir_exports_validate_as_r4(gw: RunningGateway, fhir_validator: FhirValidator, tmp_path: Path) -> None:
    me, log = gw.login(dev(PATIENT)), _log(gw)
    for what, kind, count in (("access-log", "AuditEvent", RELEASES), ("consents", "Consent", 2)):
        r = me.get(f"/v1/me/exports/{what}", params={"format": "fhir"})
        assert r.headers["content-type"] == "application/fhir+json"
        assert r.headers["content-disposition"].endswith('.fhir.json"')
        bundle = r.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
        assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [kind] * count
        report = fhir_validator.validate_json(r.content, tmp_path / f"{what}.json")
        assert report.errors == (), report.errors
    events = me.get("/v1/me/exports/access-log", params={"format": "fhir"}).json()["entry"]
    fhir_api = me.get("/fhir/AuditEvent", params={"patient": dev(PATIENT).address}).json()["entry"]
    assert [e["resource"] for e in events] == [e["resource"] for e in fhir_api]  # one mapping
    assert len(log) == len(events)


def test_an_empty_history_is_a_valid_bundle_without_entries(gw: RunningGateway) -> None:
    r = gw.login(dev(30)).get("/v1/me/exports/access-log", params={"format": "fhir"})
    assert r.status_code == 200 and "entry" not in r.json()
    header, *rows = _csv(gw.login(dev(30)).get("/v1/me/exports/access-log").content)
    assert rows == [] and header[0] == "Time"


def test_a_history_longer_than_a_page_streams_a_page_at_a_time(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of 2 the 5 entries take 3 reads of the history, each asking for one page only, and every
    format gets every entry; the body is streamed (chunked, no Content-Length)."""
    reads: list[int] = []
    real = access_history.network_page

    def counted(c: Any, patient: str, **kwargs: Any) -> access_history.History:
        reads.append(kwargs["limit"])
        return real(c, patient, **kwargs)

    monkeypatch.setattr(exports, "PAGE_SIZE", 2)
    monkeypatch.setattr(exports.access_history, "network_page", counted)
    me, log = gw.login(dev(PATIENT)), _log(gw)
    reads.clear()
    with me.stream("GET", "/v1/me/exports/access-log", params={"format": "csv"}) as r:
        assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
        body = r.read()
    assert reads == [2, 2, 2]
    assert [row[10] for row in _csv(body)[1:]] == [a["accessId"] for a in log]
    for fmt in ("html", "fhir"):
        reads.clear()
        body = me.get("/v1/me/exports/access-log", params={"format": fmt}).content
        assert reads == [2, 2, 2], fmt
        assert all(a["accessId"] in body.decode() for a in log) if fmt == "html" else True
    assert len(orjson.loads(body)["entry"]) == RELEASES


def test_bad_requests_are_problems(gw: RunningGateway) -> None:
    me = gw.login(dev(PATIENT))
    for params in ({"format": "pdf"}, {"lang": "fr"}):
        r = me.get("/v1/me/exports/access-log", params=params)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["code"] == "invalid_request"
    assert gw.http().get("/v1/me/exports/consents").json()["code"] == "unauthenticated"


def test_the_portal_links_download_the_same_files(gw: RunningGateway) -> None:
    """The patient page's links: the signed-in patient's exports through the page's session, in its language."""
    api, http = gw.login(dev(PATIENT)), gw.http()
    token = api.headers["Authorization"].split()[1]
    assert http.post("/portal/session", json={"token": token, "page": "patient"}, headers={"X-HCL-Portal": "1"})
    sections = http.get("/portal/patient/sections", params={"lang": "en"}).text
    assert 'href="/portal/patient/exports/access-log?format=csv"' in sections
    portal = http.get("/portal/patient/exports/consents", params={"format": "csv", "lang": "zh-CN"})
    assert portal.status_code == 200
    assert portal.content == api.get("/v1/me/exports/consents", params={"format": "csv", "lang": "zh-CN"}).content
    assert gw.http().get("/portal/patient/exports/consents").status_code == 401
