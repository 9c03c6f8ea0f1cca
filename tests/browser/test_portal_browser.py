"""The portal in a real browser (Debian Chromium driven by Playwright) against a real gateway and chain.

The main story, end to end, as people would click it: the patient unlocks her keystore in the page and
signs a health code (EIP-712, in the browser) → the community health centre uploads the picture of the
QR, previews it and submits it → finds and opens a record (HPKE-decrypted in its page) → the patient's
timeline shows that read, with the institution and the time the ledger recorded → the patient revokes
→ the centre is refused with a clear message. Then the refusals: a wrong keystore password, an expired
code, a code made out to another institution; break-glass and the auditor's view; English and a phone.

Every page is saved as a screenshot under artifacts/screenshots/ (CI keeps them), and every portal page
and state that is saved is first checked by axe-core against WCAG 2.1 A and AA (tests/support/axe.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from node_client import healthcode as hc
from node_client.signing import sign
from tests.browser.steps import LI, TIMEOUT_MS, WANG, local_time, make_code, shot, unlock
from tests.support import browser_harness
from tests.support.axe import assert_accessible
from tests.support.gateway_harness import CLINIC, HOSPITAL, RunningGateway, dev

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a real Chromium against a real gateway (~1 min)


def test_health_code_story_from_patient_to_hospital_and_back(
    net: tuple[RunningGateway, Path], new_page: Any, tmp_path: Path
) -> None:
    gw, keys = net
    wang, clinic = dev(WANG).address, dev(CLINIC).address

    # the patient, locked: nothing personal is shown before the key is unlocked in the page
    patient = new_page()
    patient.goto(f"{gw.url}/portal/patient")
    assert patient.locator("#records").count() == 0
    shot(patient, "01-patient-locked")
    unlock(patient, keys / "wang.json")
    patient.wait_for_selector("#records tbody tr")
    assert wang in patient.inner_text("#key-status")
    shot(patient, "02-patient-records")

    # she makes a health code for the community health centre: lab results and medications, treatment
    picture = make_code(patient, clinic, ["lab-results", "medications"])
    code_text = patient.input_value("#code-text")
    assert hc.read_image(picture) == code_text
    assert hc.qr(code_text).version <= 15
    shot(patient, "03-patient-health-code")

    # the centre uploads the picture, previews the plain-language summary and submits it
    hospital = new_page()
    hospital.goto(f"{gw.url}/portal/hospital")
    unlock(hospital, keys / "clinic.json", enc_key=keys / "clinic.x25519.jwk")
    hospital.set_input_files("#picture", str(picture))  # choosing the picture previews it: no second press
    hospital.wait_for_selector("#code-summary")
    assert hospital.get_attribute("#code-summary", "data-submittable") == "1"
    assert hospital.inner_text("#summary-patient") == wang
    summary = hospital.inner_text("#code-summary")
    assert "检验结果" in summary and "用药与处方" in summary and "患者本人" in summary
    shot(hospital, "04-hospital-preview")
    hospital.click("#submit-code")
    hospital.wait_for_selector("#submitted")
    assert gw.ledger.consents.consent_of(wang, clinic).categories  # on-chain now

    # it lists what it may read, and opens the lab results: decrypted in its page with its X25519 key
    assert hospital.input_value("#patient") == wang
    hospital.click("#records-form button[type=submit]")
    hospital.wait_for_selector("#records-found tbody tr")
    rows = hospital.locator("#records-found tbody tr")
    categories = {rows.nth(i).inner_text().split("\t")[0] for i in range(rows.count())}
    assert categories == {"检验结果", "用药与处方"}, categories
    # each Open button says which record it opens (a screen reader's list of buttons is not "打开" × n)
    names = [b.get_attribute("aria-label") for b in hospital.locator("button[data-action=open-record]").all()]
    assert len(set(names)) == len(names), names
    assert hospital.get_by_role("button", name="打开：检验结果 · ").count() >= 1, names
    lab = hospital.locator("#records-found tbody tr", has_text="检验结果").first
    lab.locator("button[data-action=open-record]").click()
    hospital.wait_for_selector("#record-view[data-ready]")
    opened = hospital.inner_text("#record-view")
    assert "检验与观察结果" in opened and "Hemoglobin A1c" in opened, opened[:500]
    # on a zh-CN page the resource types and dates are Chinese too (the coded display text is the data's)
    assert "Observation" not in opened and "年" in opened and "T0" not in opened, opened[:500]
    shot(hospital, "05-hospital-record-open")

    # the patient's timeline: the centre read lab results, at the time the ledger recorded
    wait_indexed(gw)
    patient.reload()
    patient.wait_for_selector("#timeline li.access")
    entry = patient.locator(f"#timeline li.access[data-requester='{clinic}']").first
    ts = int(entry.get_attribute("data-time"))
    (access,) = [
        e
        for e in gw.components.db.read().execute(
            "SELECT time FROM chain_accesses WHERE requester = ? AND patient = ?", (clinic, wang)
        )
    ]
    assert ts == access["time"]
    text = entry.inner_text()
    assert "河滨社区卫生服务中心" in text and "检验结果" in text and local_time(gw, ts) in text
    assert entry.locator("a[href^='/portal/tx/0x']").count() == 1
    shot(patient, "06-patient-timeline")

    # the ledger link opens the decoded transaction
    href = entry.locator("a[href^='/portal/tx/0x']").get_attribute("href")
    proof = new_page()
    proof.goto(gw.url + href)
    assert "联盟链第" in proof.inner_text("#proof-verdict") and "已验证" in proof.inner_text("#proof-verdict")
    proof.click("#proof-technical summary")
    assert "AccessLedger.AccessLogged" in proof.inner_text("main")
    shot(proof, "07-ledger-proof")

    # she revokes (the key is gone after the reload: unlock again), one click and a confirmation
    unlock(patient, keys / "wang.json")
    patient.on("dialog", lambda d: d.accept())
    row = patient.locator("#consents tr[data-state=active]", has_text="河滨社区卫生服务中心").first
    row.locator("button[data-action=revoke]").click()
    patient.wait_for_selector("#consents tr[data-state=revoked]")
    state = patient.locator("#consents tr[data-state=revoked] .state").first
    assert state.inner_text() == "已撤销" and state.evaluate("s => s.getClientRects().length") == 1  # one line
    shot(patient, "08-patient-revoked")

    # the centre tries again: refused, with the reason in plain words, and nothing released
    lab.locator("button[data-action=open-record]").click()
    error = hospital.locator("#records-form .error")
    error.wait_for(state="visible")
    assert error.get_attribute("data-code") == "consent_revoked"
    assert "患者已撤销授权" in error.inner_text() and "revoked" in error.inner_text()
    shot(hospital, "09-hospital-refused")


#: a result with a reference range and one with an interpretation code, as other labs send them
FLAGGED = {
    "resourceType": "Bundle",
    "entry": [
        {
            "resource": {
                "resourceType": "Observation",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}], "text": "Glucose"},
                "effectiveDateTime": "2024-05-02",
                "valueQuantity": {"value": 7.84321, "unit": "mmol/L", "code": "mmol/L"},
                "referenceRange": [{"low": {"value": 3.9}, "high": {"value": 6.1}}],
            }
        },
        {
            "resource": {
                "resourceType": "Observation",
                "code": {"text": "Potassium"},
                "effectiveDateTime": "2024-05-01",
                "valueQuantity": {"value": 3.1, "unit": "mmol/L"},
                "interpretation": [{"coding": [{"code": "L"}]}],
            }
        },
    ],
}


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_the_opened_record_reads_like_a_lab_sheet(net: tuple[RunningGateway, Path], new_page: Any, lang: str) -> None:
    """The hospital opens Wang's lab results: one row per test, the latest on top, rounded with its unit,
    HbA1c's two results as a trend plot; the medications as a table; the raw JSON behind a <details>."""
    gw, keys = net
    wang, hospital = dev(WANG).address, dev(HOSPITAL).address
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(dev(WANG), hospital, gw.slots(dev(WANG), "lab-results,medications"), 1, now, now + 86400)
    page = new_page()
    page.goto(f"{gw.url}/portal/hospital?lang={lang}")
    unlock(page, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")
    page.fill("#patient", wang)
    page.click("#records-form button[type=submit]")
    lab_name = "检验结果" if lang == "zh-CN" else "Laboratory results"
    page.locator("#records-found tbody tr", has_text=lab_name).first.locator("button").click()
    page.wait_for_selector("#record-view[data-ready]")
    hba1c = page.locator("#record-results tr[data-code='4548-4']")
    assert hba1c.get_attribute("data-count") == "2"
    assert re.search(r"\b\d\.\d %", hba1c.locator(".value").inner_text()), hba1c.inner_text()
    assert not re.search(r"\d\.\d{4,}", page.inner_text("#record-results")), "unrounded values"
    plot = hba1c.locator("svg.trend[role=img]")
    assert plot.get_attribute("data-points") == "2" and "Hemoglobin A1c" in (plot.locator("title").text_content() or "")
    times = [
        t
        for t in page.locator("#record-results tbody tr td:nth-child(4) time").evaluate_all(
            "ts => ts.map(t => t.getAttribute('datetime'))"
        )
    ]
    assert times == sorted(times, reverse=True), times  # newest first
    assert page.locator("#record-view details summary").inner_text() in ("原始 FHIR JSON", "Raw FHIR JSON")
    shot(page, f"50-{lang}-record-view-lab")
    page.set_viewport_size({"width": 320, "height": 640})  # on a phone: one card per result, the plot fits
    assert_fits(page, 320, f"53-{lang}-record-view-phone")

    flags = page.evaluate(
        "b => { const v = document.querySelector('#record-view'); v.replaceChildren(window.hclRecord.render(b,"
        " { t: (k) => k, date: (d) => d, typeName: (x) => x })); return [...v.querySelectorAll('abbr.flag')]"
        ".map(a => a.textContent + ' ' + a.closest('tr').querySelector('.value').textContent); }",
        FLAGGED,
    )
    assert flags == ["H 7.8 mmol/L", "L 3.1 mmol/L"], flags

    med_name = "用药与处方" if lang == "zh-CN" else "Medications and prescriptions"
    page.locator("#records-found tbody tr", has_text=med_name).first.locator("button").click()
    page.wait_for_selector("#record-view[data-ready] #record-medications tbody tr")
    headers = page.locator("#record-medications th[scope=col]").all_inner_texts()
    assert headers == (
        ["药品", "状态", "用法用量", "开具日期 / 有效期"]
        if lang == "zh-CN"
        else ["Medication", "Status", "Dosage", "Prescribed / valid until"]
    )
    shot(page, f"51-{lang}-record-view-medications")

    # the proof of that read, in words first: the verdict, who read what and why, the raw event folded away
    tx = page.inner_text("#record-view p.muted").split(": ")[-1].split("：")[-1].strip()
    page.goto(f"{gw.url}/portal/tx/{tx}?lang={lang}")
    block = gw.client.w3.eth.get_transaction_receipt(tx)["blockNumber"]
    verdict = page.inner_text("#proof-verdict")
    assert verdict == (
        f"此次访问已记录在联盟链第 {block} 号区块中；已验证。"
        if lang == "zh-CN"
        else f"This access is in block {block} of the consortium ledger; verified."
    )
    facts = page.inner_text("dl.facts")
    if lang == "zh-CN":
        assert "市第一人民医院" in facts and "用药与处方" in facts and "诊疗" in facts and "否" in facts, facts
    else:
        assert "City First People's Hospital" in facts and "Medications and prescriptions" in facts, facts
    assert not page.locator("#proof-technical").evaluate("d => d.open")
    shot(page, f"52-{lang}-ledger-proof-readable")


def wait_indexed(gw: RunningGateway) -> None:
    gw.wait_indexed()


def test_an_institutions_key_on_the_patient_page_is_said_so(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    gw, keys = net
    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang=en")
    unlock(page, keys / "clinic.json")
    notice = page.locator("#member-key")
    notice.wait_for()
    assert "This is an institution's key" in notice.inner_text()
    assert notice.locator("a").get_attribute("href") == "/portal/hospital"
    shot(page, "05-patient-page-institution-key")


def test_wrong_keystore_password_is_refused_in_the_page(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    gw, keys = net
    page = new_page()
    page.goto(f"{gw.url}/portal/patient")
    page.set_input_files("#keystore", str(keys / "wang.json"))
    page.fill("#password", "not-the-password")
    page.click("#unlock-button")
    page.wait_for_selector("#unlock-error:visible")
    assert page.inner_text("#unlock-error") == "密码错误或密钥文件无效"
    assert page.get_attribute("#key-status", "data-state") == "locked"
    assert page.locator("#records").count() == 0
    shot(page, "10-wrong-password")


def _signed_code(gw: RunningGateway, patient: int, grantee: int, *, deadline_in: int) -> str:
    ledger = gw.ledger
    now = gw.client.block_timestamp()
    message = ledger.consents.build_grant(
        dev(patient).address,
        dev(grantee).address,
        gw.slots(dev(patient), "lab-results"),
        1,
        now,
        now + 86400,
        deadline=now + deadline_in,
    )
    domain = ledger.consents.domain()
    return hc.encode(sign(dev(patient), domain, message), domain)


def test_expired_and_misaddressed_codes_cannot_be_submitted(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    gw, keys = net
    page = new_page()
    page.goto(f"{gw.url}/portal/hospital?lang=en")
    unlock(page, keys / "clinic.json", enc_key=keys / "clinic.x25519.jwk")

    page.fill("#code-paste", _signed_code(gw, LI, CLINIC, deadline_in=-60))
    page.click("#scan-form button[type=submit]")
    page.wait_for_selector("#code-summary")
    assert page.get_attribute("#code-summary", "data-submittable") == "0"
    assert "EXPIRED" in page.inner_text("#code-summary")
    assert page.locator("#submit-code").count() == 0
    shot(page, "11-hospital-expired-code")

    page.fill("#code-paste", _signed_code(gw, LI, HOSPITAL, deadline_in=3600))
    page.click("#scan-form button[type=submit]")
    page.locator("#code-summary", has_text="another institution").wait_for()
    assert page.get_attribute("#code-summary", "data-submittable") == "0"
    assert page.locator("#submit-code").count() == 0
    shot(page, "12-hospital-code-for-another")

    page.fill("#code-paste", "HCL:NOT-A-CODE")
    page.click("#scan-form button[type=submit]")
    page.wait_for_selector("#scan-form .error:visible")
    assert "Not a valid health code: the text is damaged" in page.inner_text("#scan-form .error")
    assert_accessible(page, "an unreadable code")

    # and in Chinese, all of it in Chinese (the reason too, not the English detail)
    page.goto(f"{gw.url}/portal/hospital?lang=zh-CN")
    page.wait_for_selector("#code-paste")
    page.fill("#code-paste", "HCL:NOT-A-CODE")
    page.click("#scan-form button[type=submit]")
    page.wait_for_selector("#scan-form .error:visible")
    error = page.inner_text("#scan-form .error")
    assert "不是有效的健康码：文本已损坏" in error
    assert not re.search(r"[A-Za-z]{3,}", error), error


def test_break_glass_then_the_auditor_reviews_it(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    gw, keys = net
    li = dev(LI).address
    page = new_page()
    page.goto(f"{gw.url}/portal/hospital?lang=en")
    unlock(page, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")
    page.fill("#bg-patient", li)
    page.click("#break-glass-form button[type=submit]")  # no reason yet: the browser's required check
    assert page.locator("#window-open").count() == 0
    page.fill("#bg-reason", "Unconscious patient in the emergency department; checking allergies")
    page.click("#break-glass-form button[type=submit]")
    page.wait_for_selector("#window-open")
    shot(page, "13-hospital-break-glass")

    auditor = new_page()
    auditor.goto(f"{gw.url}/portal/auditor?lang=en")
    unlock(auditor, keys / "auditor.json")
    auditor.wait_for_selector("#emergencies tbody tr")
    text = auditor.inner_text("#emergencies")
    assert "City First People's Hospital" in text and "checking allergies" in text
    assert int(auditor.inner_text("[data-stat=members]")) >= 7
    shot(auditor, "14-auditor")

    # a patient signed in on the auditor page is told, not shown
    other = new_page()
    other.goto(f"{gw.url}/portal/auditor?lang=en")
    unlock(other, keys / "li.json")
    other.wait_for_selector("#forbidden")
    assert "Auditor" in other.inner_text("#forbidden")
    assert_accessible(other, "the auditor page refusing a patient")


def test_guardian_and_emergency_opt_out(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    gw, keys = net
    zhang, parent, aunt = dev(12).address, dev(16).address, dev(17).address
    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang=en")
    unlock(page, keys / "zhang.json")
    page.wait_for_selector(f"#guardians code:text('{parent}')")  # set on-chain by the demo seed

    # name a second guardian: the patient signs the transaction in the page, the gateway relays it
    page.fill("#guardian-address", aunt)
    page.fill("#guardian-days", "30")
    page.click("#guardian-form button[type=submit]")
    page.wait_for_selector(f"#guardians code:text('{aunt}')")
    assert gw.ledger.consents.guardian_until(zhang, aunt) > gw.client.block_timestamp()
    page.locator("#guardians li", has_text=aunt).locator("button[data-action=remove-guardian]").click()
    page.locator("#guardians li", has_text=aunt).wait_for(state="detached")
    assert gw.ledger.consents.guardian_until(zhang, aunt) == 0

    # opt out of emergency access: the hospital's break-glass is then refused
    page.click("button[data-action=opt-out]")
    page.wait_for_selector("#optout-state[data-opted-out='1']")
    page.wait_for_selector("[aria-busy]", state="detached")  # the section is new: its heading has the focus
    assert page.evaluate("document.activeElement.id") == "optout-title"
    assert gw.ledger.consents.emergency_opted_out(zhang)
    shot(page, "16-patient-guardian-opt-out")
    hospital = new_page()
    hospital.goto(f"{gw.url}/portal/hospital?lang=en")
    unlock(hospital, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")
    hospital.fill("#bg-patient", zhang)
    hospital.fill("#bg-reason", "Trauma call, allergy check")
    hospital.click("#break-glass-form button[type=submit]")
    error = hospital.locator("#break-glass-form .error")
    error.wait_for(state="visible")
    assert error.get_attribute("data-code") == "emergency_not_allowed"
    assert "Emergency access is not allowed here" in error.inner_text()
    assert_accessible(hospital, "break-glass refused")

    page.click("button[data-action=opt-out]")  # and back
    page.wait_for_selector("#optout-state[data-opted-out='0']")
    assert not gw.ledger.consents.emergency_opted_out(zhang)


def test_english_and_phone_width(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    gw, keys = net
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(f"{gw.url}/portal/patient")
    assert page.get_attribute("html", "lang") == "zh-CN"
    page.click("a[lang=en]")
    page.wait_for_selector("html[lang=en]")
    unlock(page, keys / "wang.json")
    page.wait_for_selector("#records tbody tr")
    assert "My records" in page.inner_text("#records")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the page scrolls sideways on a phone ({width}px)"
    shot(page, "15-patient-phone-en")
    # keyboard: the unlock form and every action are reachable with Tab and labelled
    for control in page.locator("input:not([type=hidden]), select, textarea").all():
        ident = control.get_attribute("id")
        if ident:
            assert page.locator(f"label[for='{ident}']").count() == 1, ident


def test_an_injected_wallet_signs_instead_of_a_keystore(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """An EIP-1193 wallet in the page (here: the Hardhat node's own account signing, reached through
    a bridge the test exposes) signs in and signs the health code; no keystore involved."""
    import httpx

    gw, _keys = net
    li = dev(LI).address
    rpc = httpx.Client(base_url=gw.settings.rpc_url, timeout=30)

    def bridge(method: str, params: list[Any]) -> Any:
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [li]
        reply = rpc.post("", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
        if "error" in reply:
            raise RuntimeError(reply["error"].get("message"))
        return reply["result"]

    page = new_page()
    page.expose_function("hclWalletBridge", bridge)
    page.add_init_script(
        "window.ethereum = { isTestWallet: true, on() {}, removeListener() {},"
        " request: ({ method, params }) => window.hclWalletBridge(method, params || []) };"
    )
    page.goto(f"{gw.url}/portal/patient?lang=en")
    page.click("#wallet-button")
    page.wait_for_selector("#key-status[data-state=unlocked]")
    assert li in page.inner_text("#key-status")
    make_code(page, dev(CLINIC).address, ["allergies"])
    signed = hc.decode(page.input_value("#code-text")).signed
    assert signed.signer == li and signed.message.patient == li
    shot(page, "17-patient-wallet-code")


def test_each_page_shows_who_it_acts_as_and_signs_out_alone(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """A shared desk: one browser, the patient on one tab and the clinic on another. Each header names the
    identity *its* page acts as, across reloads, and signing out on one tab leaves the other signed in."""
    gw, keys = net
    wang, clinic = dev(WANG).address, dev(CLINIC).address
    patient = new_page()
    hospital = same_browser(patient)
    patient.goto(f"{gw.url}/portal/patient?lang=en")
    assert patient.locator("#who").is_hidden()
    unlock(patient, keys / "wang.json")
    patient.wait_for_selector("#who:visible")
    assert patient.get_attribute("#viewer-address", "title") == wang  # shown as soon as it signs in
    # members onboarded while the gateway ran (the demo seed's county hospital) are listed by name
    assert "Lakeside County Hospital" in patient.inner_text("#grantee")
    hospital.goto(f"{gw.url}/portal/hospital?lang=en")
    unlock(hospital, keys / "clinic.json", enc_key=keys / "clinic.x25519.jwk")
    hospital.wait_for_selector("#who:visible")
    assert hospital.inner_text("#viewer-name") == "Riverside Community Health Centre"

    for page in (patient, hospital):
        page.reload()
    assert patient.get_attribute("#viewer-address", "title") == wang
    assert patient.locator("#records").count() == 1
    assert hospital.get_attribute("#viewer-address", "title") == clinic
    assert hospital.inner_text("#viewer-name") == "Riverside Community Health Centre"
    shot(patient, "18-two-tabs-patient")
    shot(hospital, "19-two-tabs-hospital")

    hospital.click("#sign-out")
    hospital.wait_for_load_state()
    hospital.wait_for_selector("#who", state="hidden")
    assert hospital.locator("#scan").count() == 0
    patient.reload()
    assert patient.get_attribute("#viewer-address", "title") == wang
    assert patient.locator("#records").count() == 1


def same_browser(page: Any) -> Any:
    """Another tab in ``page``'s browser context (same cookies), with the same timeout."""
    tab = page.context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    return tab


def offline(page: Any) -> list[str]:
    """Aborts every request that would leave the machine; returns the list it fills with their URLs."""
    from urllib.parse import urlsplit

    blocked: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in (
            "127.0.0.1",
            "localhost",
        ):
            blocked.append(url)
            r.abort()
        else:
            r.continue_()

    page.context.route("**/*", route)
    return blocked


def test_api_docs_render_with_no_internet(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """/docs (Swagger UI) and /redoc load their scripts from the gateway, not a CDN."""
    gw, _keys = net
    page = new_page()
    blocked = offline(page)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)

    page.goto(f"{gw.url}/docs")
    page.locator(".opblock", has_text="/v1/records").first.wait_for()
    assert page.locator(".opblock").count() > 10
    browser_harness.shot(page, "20-api-docs")

    page.goto(f"{gw.url}/redoc")
    page.locator("[data-section-id*='operation/']").first.wait_for()
    operations = page.locator("[data-section-id*='operation/']")
    assert operations.count() > 10
    assert "/v1/records" in page.inner_text("redoc")
    browser_harness.shot(page, "21-api-redoc", full_page=False)
    assert blocked == [], f"the docs tried to reach the internet: {blocked}"
    # the one external URL in ReDoc's bundle, its attribution logo: the docs' CSP stops it before any
    # request (the image then removes itself); nothing else may be refused
    others = [v for v in violations if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in v]
    assert others == [], others


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_every_page_passes_axe_in_both_languages(net: tuple[RunningGateway, Path], new_page: Any, lang: str) -> None:
    """The pages the stories above do not show in this language, each checked by axe: the start page, the
    role pages before sign-in, the 404 page, and the auditor's overview signed in."""
    gw, keys = net
    page = new_page()
    for path, name in [
        ("/portal", "index"),
        ("/portal/patient", "patient-locked"),
        ("/portal/hospital", "hospital-locked"),
        ("/portal/auditor", "auditor-locked"),
        ("/portal/no-such-page", "not-found"),
    ]:
        page.goto(f"{gw.url}{path}?lang={lang}")
        assert page.get_attribute("html", "lang") == lang
        shot(page, f"30-{lang}-{name}")
    page.goto(f"{gw.url}/portal/auditor?lang={lang}")
    unlock(page, keys / "auditor.json")
    page.wait_for_selector("#emergencies")
    shot(page, f"30-{lang}-auditor")


def tab_to(page: Any, selector: str, *, back: bool = False, limit: int = 120) -> None:
    """Presses Tab (Shift+Tab with ``back``) until the focused element matches ``selector``."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        if page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")


def press_and_keep_focus(page: Any, key: str, done: str, action: str, *, state: str = "visible") -> str:
    """Presses ``key`` on the focused control, waits for ``done`` (in ``state``) and the end of the work, and
    fails if the keyboard focus then sits on <body> or on something hidden; returns what has the focus."""
    page.keyboard.press(key)
    page.wait_for_selector(done, state=state)
    page.wait_for_selector("[aria-busy]", state="detached")
    where = page.evaluate(
        """() => { const a = document.activeElement;
          if (!a || a === document.body) return "body";
          if (!a.getClientRects().length) return "hidden " + a.outerHTML.slice(0, 80);
          return a.tagName.toLowerCase() + (a.id ? "#" + a.id : ""); }"""
    )
    assert where != "body" and not where.startswith("hidden"), f"after {action} the keyboard focus is on {where}"
    return str(where)


def unlock_by_keyboard(page: Any, keystore: Path, enc_key: Path | None = None) -> None:
    """Unlocks with the keyboard: the files are chosen as the system's file dialog would, the rest is typed."""
    page.set_input_files("#keystore", str(keystore))
    if enc_key is not None:
        page.set_input_files("#enckey", str(enc_key))
    tab_to(page, "#password")
    page.keyboard.type("demo")
    tab_to(page, "#unlock-button")
    assert press_and_keep_focus(page, "Enter", "#key-status[data-state=unlocked]", "unlock") == "p#key-status"


#: the focused element's outline and its contrast with the background around it (the nearest ancestor's
#: opaque background: the ring is drawn outside the element, offset by 2px)
FOCUS_RING = """() => {
  const a = document.activeElement;
  if (!a || a === document.body) return null;
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  let bg = [245, 247, 250];
  for (let el = a.parentElement; el; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || c[3] === 1) { bg = c; break; }
  }
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const style = getComputedStyle(a);
  const [l1, l2] = [lum(rgb(style.outlineColor)), lum(bg)];
  return { what: a.outerHTML.slice(0, 70), skip: a.matches(".skip"), style: style.outlineStyle,
    width: parseFloat(style.outlineWidth), ratio: (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05) };
}"""


def assert_focus_rings(page: Any, stops: int = 60) -> None:
    """Tabs through ``page`` from the top: every control shows a solid ring of at least 2px with at least
    3:1 against the background around it (WCAG 1.4.11; the blue ring was 1.39:1 on the green header)."""
    page.evaluate("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
    seen = 0
    for _ in range(stops):
        page.keyboard.press("Tab")
        ring = page.evaluate(FOCUS_RING)
        if ring is None or ring["skip"]:  # past the end, or the skip link (drawn over the header: dark box)
            continue
        seen += 1
        assert ring["style"] == "solid" and ring["width"] >= 2, ring
        assert ring["ratio"] >= 3, f"focus ring {ring['ratio']:.2f}:1 on {ring['what']}"
    assert seen > 5, "Tab reached almost nothing"


def test_keyboard_only_each_role_keeps_the_focus(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """Each role's main flow with Tab, Space and Enter only: after every action the focus stays on the
    control or moves to the result's heading, never to <body> (a screen reader would start over)."""
    gw, keys = net
    clinic = dev(CLINIC).address
    patient = new_page()
    patient.goto(f"{gw.url}/portal/patient?lang=en")
    patient.set_input_files("#keystore", str(keys / "wang.json"))
    tab_to(patient, "#password")
    patient.keyboard.type("not-the-password")
    tab_to(patient, "#unlock-button")
    assert press_and_keep_focus(patient, "Enter", "#unlock-error:visible", "a wrong password") == "button#unlock-button"
    tab_to(patient, "#password", back=True)
    patient.keyboard.press("Control+A")
    patient.keyboard.type("demo")
    tab_to(patient, "#unlock-button")
    assert press_and_keep_focus(patient, "Enter", "#key-status[data-state=unlocked]", "unlock") == "p#key-status"

    patient.select_option("#grantee", clinic)  # the native option list is the system's, like a file dialog
    tab_to(patient, "#code-form input[value=medications]")
    patient.keyboard.press("Space")
    tab_to(patient, "#code-form button[type=submit]")
    assert press_and_keep_focus(patient, "Enter", "#health-code img", "create code") == "h3"
    code_text = patient.input_value("#code-text")

    hospital = new_page()
    hospital.goto(f"{gw.url}/portal/hospital?lang=en")
    unlock_by_keyboard(hospital, keys / "clinic.json", keys / "clinic.x25519.jwk")
    tab_to(hospital, "#code-paste")
    hospital.keyboard.insert_text(code_text)
    tab_to(hospital, "#scan-form button[type=submit]")
    press_and_keep_focus(hospital, "Enter", "#code-summary", "preview")
    tab_to(hospital, "#submit-code")
    assert press_and_keep_focus(hospital, "Enter", "#submitted", "submit") == "p#submitted"
    tab_to(hospital, "#records-form button[type=submit]")
    press_and_keep_focus(hospital, "Enter", "#records-found tbody tr", "find records")
    assert hospital.get_by_role("button", name="Open: Medications and prescriptions · ").count() >= 1
    tab_to(hospital, "button[data-action=open-record]")
    assert press_and_keep_focus(hospital, "Enter", "#record-view[data-ready]", "open record") == "h3"
    shot(hospital, "22-hospital-keyboard")

    patient.on("dialog", lambda d: d.accept())
    patient.reload()
    unlock_by_keyboard(patient, keys / "wang.json")
    revoke = f"#consents tr[data-state=active] button[data-action=revoke][data-grantee='{clinic}']"
    tab_to(patient, revoke)
    press_and_keep_focus(patient, "Enter", "#consents", "revoke")
    assert patient.locator(revoke).count() == 0

    auditor = new_page()
    auditor.goto(f"{gw.url}/portal/auditor?lang=en")
    unlock_by_keyboard(auditor, keys / "auditor.json")
    for page in (hospital, patient, auditor):
        assert_focus_rings(page)


def test_keyboard_only_guardians_opt_out_and_break_glass(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """The paths the main flows do not take, by keyboard only: a patient names and removes a guardian and
    opts out of emergency access and back; a hospital opens an emergency window. The focus never drops."""
    gw, keys = net
    aunt, stranger = dev(17).address, dev(13).address
    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang=en")
    unlock_by_keyboard(page, keys / "zhang.json")
    tab_to(page, "#guardian-address")
    page.keyboard.type(aunt)
    tab_to(page, "#guardian-days")
    page.keyboard.type("30")
    tab_to(page, "#guardian-form button[type=submit]")
    press_and_keep_focus(page, "Enter", f"#guardians code:text('{aunt}')", "name a guardian")
    tab_to(page, "#guardians button[data-action=remove-guardian]", back=True)
    while aunt not in page.evaluate("document.activeElement.closest('li').innerText"):
        tab_to(page, "#guardians button[data-action=remove-guardian]")
    press_and_keep_focus(page, "Enter", f"#guardians li:has-text('{aunt}')", "remove a guardian", state="detached")
    for state in ("1", "0"):
        tab_to(page, "button[data-action=opt-out]")
        press_and_keep_focus(page, "Enter", f"#optout-state[data-opted-out='{state}']", "opt out or back")

    hospital = new_page()
    hospital.goto(f"{gw.url}/portal/hospital?lang=en")
    unlock_by_keyboard(hospital, keys / "hospital.json", keys / "hospital.x25519.jwk")
    tab_to(hospital, "#bg-patient")
    hospital.keyboard.type(stranger)
    tab_to(hospital, "#bg-reason")
    hospital.keyboard.type("Found unresponsive; checking allergies and medications")
    tab_to(hospital, "#break-glass-form button[type=submit]")
    press_and_keep_focus(hospital, "Enter", "#window-open", "break glass")
    shot(hospital, "23-hospital-break-glass-keyboard")


#: what sticks out of the viewport, skipping what is meant to be off-screen (the skip link, screen-reader text)
OVERFLOWING = """(w) => {
  const out = (r) => r.width > 0 && (r.right > w + 1 || r.left < -1);
  const boxes = [...document.querySelectorAll("body *")].filter((el) => out(el.getBoundingClientRect()));
  const texts = [];  // text can stick out of a box that fits
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const range = document.createRange(); range.selectNodeContents(n);
    if (out(range.getBoundingClientRect())) texts.push(n.parentElement);
  }
  return [...boxes, ...texts].filter((el) => !el.closest(".skip, .sr-only, thead")).slice(0, 5).map((el) =>
    `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}: ${(el.textContent || "").trim().slice(0, 40)}`);
}"""


def assert_fits(page: Any, width: int, name: str) -> None:
    """Fails when ``page`` scrolls sideways at ``width`` px or any element is wider than the viewport; then
    saves it at that width and at 1280 px."""
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{name} is {scroll}px wide at {width}px: {page.evaluate(OVERFLOWING, width)}"
    assert page.evaluate(OVERFLOWING, width) == [], f"{name} at {width}px"
    shot(page, f"{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 800})
    shot(page, f"{name}-1280")
    page.set_viewport_size({"width": width, "height": 640})


def test_every_page_fits_a_320px_phone(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """At 320 px (the narrowest phone) nothing scrolls sideways: not the transaction hash after a submit, not
    the tables (one card per row, each value labelled), not the ledger proof page."""
    gw, keys = net
    phone = {"viewport": {"width": 320, "height": 640}, "is_mobile": True, "has_touch": True}
    hospital = new_page(**phone)
    hospital.goto(f"{gw.url}/portal/hospital?lang=en")
    assert_fits(hospital, 320, "40-hospital-locked")
    unlock(hospital, keys / "clinic.json", enc_key=keys / "clinic.x25519.jwk")
    hospital.fill("#code-paste", _signed_code(gw, LI, CLINIC, deadline_in=3600))
    hospital.click("#scan-form button[type=submit]")
    hospital.wait_for_selector("#code-summary")
    assert_fits(hospital, 320, "41-hospital-preview")
    hospital.click("#submit-code")
    hospital.wait_for_selector("#submitted")
    # the result's echo sits in the page's flow (it covers nothing) and stays until tapped away
    assert hospital.locator("#toast").is_visible()
    assert hospital.eval_on_selector("#toast", "el => getComputedStyle(el).position") == "static"
    hospital.locator("#toast").tap()
    hospital.wait_for_selector("#toast", state="hidden")
    hospital.click("#records-form button[type=submit]")
    hospital.wait_for_selector("#records-found")
    assert_fits(hospital, 320, "42-hospital-submitted")
    tx = hospital.locator("#submitted a").get_attribute("href")

    patient = new_page(**phone)
    patient.goto(f"{gw.url}/portal/patient")
    unlock(patient, keys / "wang.json")
    patient.wait_for_selector("#records tbody tr")
    small = patient.evaluate(
        "[...document.querySelectorAll('input, select, textarea')]"
        ".filter((e) => parseFloat(getComputedStyle(e).fontSize) < 16).map((e) => e.id || e.name)"
    )
    assert small == [], f"fields under 16px (iOS zooms into them): {small}"
    label = patient.evaluate("getComputedStyle(document.querySelector('#records td[data-label]'), '::before').content")
    assert label.startswith('"类别'), label  # the value keeps its column's name when the header row is folded
    assert_fits(patient, 320, "43-patient")

    auditor = new_page(**phone)
    auditor.goto(f"{gw.url}/portal/auditor?lang=en")
    unlock(auditor, keys / "auditor.json")
    auditor.wait_for_selector("#emergencies")
    assert_fits(auditor, 320, "44-auditor")
    auditor.goto(gw.url + tx)
    assert_fits(auditor, 320, "45-ledger-proof")
    auditor.goto(f"{gw.url}/portal")
    assert_fits(auditor, 320, "46-index")
