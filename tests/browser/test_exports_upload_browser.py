"""Exports and the portal upload in a real browser against the seeded demo gateway (issue 17).

The patient downloads her access history and her consents in each format from her page, and the files say
what the API says; the hospital uploads a FHIR file from its page, a valid one (the records it made, by
category, with the ledger transaction) and an invalid one (the API's problem with every issue at its path).
Both in zh-CN and English; every saved page passes axe (``shot``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_client.vocabulary import CATEGORIES, parse_categories, parse_purposes
from tests.browser.steps import LI, WANG, shot, unlock
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BOM = b"\xef\xbb\xbf"
VALID = SAMPLES / "hl7-r4" / "AllergyIntolerance-example.json"
INVALID = SAMPLES / "invalid" / "microsoft-fhir-server" / "InvalidObservation.json"


@pytest.fixture(scope="module")
def history(net: tuple[RunningGateway, Path]) -> None:
    """The clinic reads two of Wang's records under a consent she gives it: her history has entries."""
    gw, _ = net
    now = gw.client.block_timestamp()
    every = gw.slots(dev(WANG), parse_categories(t.slug for t in CATEGORIES))
    gw.ledger.consents.grant(dev(WANG), dev(CLINIC).address, every, parse_purposes("treatment"), now, now + 86_400)
    gw.wait_indexed()
    clinic = gw.login(dev(CLINIC))
    for r in gw.login(dev(WANG)).get("/v1/me/records").json()["records"][:2]:
        assert clinic.get(f"/v1/records/{r['recordId']}", params={"purpose": "treatment"}).status_code == 200
    gw.wait_indexed()


def _download(page: Any, selector: str) -> tuple[str, bytes]:
    with page.expect_download() as dl:
        page.click(selector)
    return dl.value.suggested_filename, Path(dl.value.path()).read_bytes()


def _fits(page: Any, name: str) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    assert page.evaluate("document.documentElement.scrollWidth") <= 320, name
    shot(page, f"{name}-320")
    page.set_viewport_size({"width": 1280, "height": 800})


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_the_patient_downloads_her_exports(
    net: tuple[RunningGateway, Path], history: None, new_page: Any, lang: str, tmp_path: Path
) -> None:
    gw, keys = net
    api = gw.login(dev(WANG))
    log = api.get("/v1/me/access-log", params={"limit": 200}).json()["accesses"]
    consents = api.get("/v1/me/consents").json()["consents"]
    assert len(log) >= 2 and consents
    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang={lang}")
    unlock(page, keys / "wang.json")
    page.wait_for_selector("#exports a[data-export=access-log-csv]")
    files = {
        (w, f): _download(page, f"#exports a[data-export={w}-{f}]")
        for w in ("access-log", "consents")
        for f in ("csv", "html", "fhir")
    }
    page.locator("#exports").scroll_into_view_if_needed()
    shot(page, f"60-{lang}-patient-exports")
    if lang == "en":
        _fits(page, "60-en-patient-exports")

    name, body = files["access-log", "csv"]
    assert name.startswith("access-log-0x") and name.endswith(".csv") and body.startswith(BOM)
    header, *rows = csv.reader(io.StringIO(body[len(BOM) :].decode()))
    assert header[0] == ("时间" if lang == "zh-CN" else "Time")
    assert [r[10] for r in rows] == [a["accessId"] for a in log]
    name, body = files["consents", "csv"]
    assert name.endswith(".csv") and len(list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))) == len(consents) + 1

    name, body = files["access-log", "html"]
    assert name.endswith(".html") and all(a["accessId"].encode() in body for a in log)
    assert f"<html lang='{lang}'>".encode() in body
    assert files["consents", "html"][1].count(b"<section>") == 2

    name, body = files["access-log", "fhir"]
    assert name.endswith(".fhir.json")
    events = orjson.loads(body)["entry"]
    assert [e["resource"]["resourceType"] for e in events] == ["AuditEvent"] * len(log)
    assert len(orjson.loads(files["consents", "fhir"][1])["entry"]) == len(consents)

    printable = new_page()  # the printable page as it opens from the downloads folder
    (tmp_path / "access-log.html").write_bytes(files["access-log", "html"][1])
    printable.goto((tmp_path / "access-log.html").as_uri())
    shot(printable, f"61-{lang}-printable-access-history")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_the_hospital_uploads_a_fhir_file(net: tuple[RunningGateway, Path], new_page: Any, lang: str) -> None:
    gw, keys = net
    who = LI if lang == "zh-CN" else WANG  # a patient each: the same file again for one is not stored again
    patient = dev(who).address
    page = new_page()
    page.goto(f"{gw.url}/portal/hospital?lang={lang}")
    unlock(page, keys / "hospital.json")
    before = {r["recordId"] for r in gw.login(dev(who)).get("/v1/me/records").json()["records"]}

    page.fill("#up-patient", patient)
    page.set_input_files("#up-file", str(VALID))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-done h3")
    assert page.evaluate("document.activeElement.matches('#upload-done h3')")
    done = page.locator("#upload-done li[data-category=allergies]")
    assert ("过敏与不耐受" if lang == "zh-CN" else "Allergies") in done.inner_text()
    record = done.locator("code").inner_text()
    tx = page.locator("#upload-done a[href^='/portal/tx/']").inner_text()
    gw.wait_indexed()
    mine = gw.login(dev(who)).get("/v1/me/records").json()["records"]
    (new,) = [r for r in mine if r["recordId"] not in before]
    assert (new["recordId"], new["txHash"], new["provider"]) == (record, tx, dev(HOSPITAL).address)
    shot(page, f"62-{lang}-hospital-upload-done")

    page.click("#upload-form button[type=submit]")  # the same file again: held already, nothing stored
    page.wait_for_selector("#upload-done #upload-unchanged")
    assert page.locator("#upload-done a[href^='/portal/tx/']").count() == 0

    page.set_input_files("#up-file", str(INVALID))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-problem[role=alert] h3")
    assert page.evaluate("document.activeElement.matches('#upload-problem h3')")
    problem = (
        gw.login(dev(HOSPITAL))
        .post(
            "/v1/records",
            params={"patient": patient},
            content=INVALID.read_bytes(),
            headers={"Content-Type": "application/fhir+json"},
        )
        .json()
    )
    assert problem["code"] == "invalid_fhir" and problem["issues"]
    assert page.inner_text("#upload-problem h3") == (
        "FHIR 内容无效" if lang == "zh-CN" else "The FHIR content is invalid"
    )
    assert page.locator("#upload-problem li code").all_inner_texts() == [i["path"] for i in problem["issues"]]
    assert page.locator("#upload-problem li").all_inner_texts() == [
        f"{i['path']}: {i['message']}" for i in problem["issues"]
    ]
    count = page.inner_text("#upload-issue-count")
    assert count == (f"发现 {len(problem['issues'])} 个问题（校验器原文为英文）：" if lang == "zh-CN" else count)
    assert page.locator("#upload-problem li span[lang=en]").count() == len(problem["issues"])
    shot(page, f"63-{lang}-hospital-upload-problem")
    if lang == "en":
        _fits(page, "63-en-hospital-upload-problem")
