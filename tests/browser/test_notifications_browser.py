"""Live notifications in the patient's portal, in a real browser against a real gateway and chain.

The patient's page is open and unlocked; the community health centre reads one of her records through
the API: the access appears on top of her timeline without a reload and is announced politely; then the
hospital breaks the glass and reads her allergies: that one arrives highlighted and is announced at once.
In Chinese and in English, at 1280 px and on a phone; every saved state passes axe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.storage import read_model
from node_client.commitments import reason_commitment
from node_client.vocabulary import parse_categories, parse_purposes
from tests.browser.steps import WANG, shot, unlock
from tests.support.gateway_harness import CLINIC, HOSPITAL, SALT, SALT_HEX, RunningGateway, dev

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EMERGENCY = "allergies,medications,conditions,immunizations"


def _record_of(gw: RunningGateway, categories: tuple[str, ...]) -> tuple[str, str]:
    """One of Wang's records in one of ``categories``: (record id, category slug)."""
    from node_client.vocabulary import CATEGORIES

    for r in read_model.records_of(gw.components.db, dev(WANG).address):
        slug = CATEGORIES[r.category].slug
        if slug in categories:
            return "0x" + r.record_id.hex(), slug
    raise AssertionError(f"Wang has no record in {categories}")


def _clinic_reads(gw: RunningGateway) -> None:
    record, category = _record_of(gw, ("observations", "laboratory", "conditions", "medications"))
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(WANG), dev(CLINIC).address, gw.slots(dev(WANG), category), parse_purposes("treatment"), now, now + 3600
    )
    gw.wait_indexed()
    r = gw.login(dev(CLINIC)).get(f"/v1/records/{record}", params={"purpose": "treatment"})
    assert r.status_code == 200, r.text


def _hospital_breaks_the_glass(gw: RunningGateway) -> None:
    hospital = dev(HOSPITAL)
    reason = "Unconscious on arrival in the emergency department; allergy check before anaesthesia"
    fn = gw.ledger.consents.contract.functions.emergencyAccess(
        dev(WANG).address, parse_categories(EMERGENCY), reason_commitment(reason, SALT)
    )
    tx = fn.build_transaction(
        {
            "from": hospital.address,
            "chainId": 31337,
            "gas": 200_000,
            "nonce": gw.client.w3.eth.get_transaction_count(hospital.address, "pending"),
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    raw = hospital.sign_transaction(tx).raw_transaction
    http = gw.login(hospital)
    opened = http.post(
        "/v1/emergency-access", json={"signedTransaction": "0x" + bytes(raw).hex(), "reason": reason, "salt": SALT_HEX}
    )
    assert opened.status_code == 201, opened.text
    gw.wait_indexed()
    record, _ = _record_of(gw, tuple(EMERGENCY.split(",")))
    r = http.get(f"/v1/records/{record}", params={"purpose": "emergency"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_a_new_access_appears_live_and_an_emergency_is_highlighted(
    net: tuple[RunningGateway, Path], new_page: Any, lang: str
) -> None:
    gw, keys = net
    zh = lang == "zh-CN"
    page = new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{gw.url}/portal/patient?lang={lang}")
    unlock(page, keys / "wang.json")
    page.wait_for_selector("#live-following:not([hidden])")  # the stream is open
    before = page.locator("#timeline ol.timeline > li").count()

    _clinic_reads(gw)
    first = page.locator("#timeline ol.timeline > li").first
    page.wait_for_selector("#timeline ol.timeline > li.new")
    assert page.locator("#timeline ol.timeline > li").count() == before + 1
    assert first.get_attribute("data-requester") == dev(CLINIC).address
    clinic_name = gw.components.member_names.name(dev(CLINIC).address, lang)
    polite = page.locator("#live-polite")
    polite.filter(has_text=clinic_name).wait_for()
    text = polite.inner_text()
    assert text.startswith("新的访问：" if zh else "New access: ") and ("读取了" if zh else " read ") in text
    assert page.locator("#live-polite").get_attribute("aria-live") == "polite"
    shot(page, f"notify-live-access-{lang}")

    _hospital_breaks_the_glass(gw)
    page.wait_for_selector("#timeline ol.timeline > li.new.emergency")
    top = page.locator("#timeline ol.timeline > li").first
    assert "emergency" in (top.get_attribute("class") or "")
    assert top.get_attribute("data-requester") == dev(HOSPITAL).address
    alert = page.locator("#live-assertive")
    alert.filter(has_text=gw.components.member_names.name(dev(HOSPITAL).address, lang)).wait_for()
    assert alert.inner_text().startswith("紧急访问：" if zh else "Emergency access: ")
    assert alert.get_attribute("role") == "alert"
    shot(page, f"notify-live-emergency-{lang}")
    page.set_viewport_size({"width": 320, "height": 800})
    shot(page, f"notify-live-emergency-{lang}-320")
