"""The hospital finds a patient by her ID at the front desk (the portal's "find a patient by ID" form): with
her consent for identifiers the address fills the patient fields; without, the same "not found" as for an
unknown ID. zh-CN and English, at 1280 px and on a 320 px phone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.steps import WANG, shot, unlock
from tests.browser.test_portal_browser import assert_fits
from tests.support.gateway_harness import HOSPITAL, RunningGateway, dev

SSN = ("http://hl7.org/fhir/sid/us-ssn", "999-30-4482")  # Wang's (Synthea patient-1's) in the demo
TREATMENT = 1


def _look_up(page: Any, system: str, value: str) -> None:
    page.fill("#lookup-system", system)
    page.fill("#lookup-value", value)
    page.click("#lookup-form button[type=submit]")


def _not_found(page: Any) -> None:
    page.wait_for_selector("#lookup-form .error[data-code=patient_not_found]")
    assert page.input_value("#patient") == ""


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_find_a_patient_by_id(net: tuple[RunningGateway, Path], new_page: Any, lang: str) -> None:
    gw, keys = net
    page = new_page()
    page.goto(f"{gw.url}/portal/hospital?lang={lang}")
    unlock(page, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")

    if lang == "zh-CN":  # the first run: no consent for identifiers yet; then granted (for both runs)
        _look_up(page, *SSN)
        _not_found(page)
        page.reload()
        unlock(page, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")
        now = gw.client.block_timestamp()
        identifiers = gw.slots(dev(WANG), "identifiers")
        gw.ledger.consents.grant(dev(WANG), dev(HOSPITAL).address, identifiers, TREATMENT, now, now + 86400)
    _look_up(page, SSN[0], "999-00-0000")  # an ID nobody has: the same answer
    _not_found(page)
    shot(page, f"60-{lang}-hospital-lookup-not-found")

    _look_up(page, *SSN)
    page.wait_for_selector("#lookup-found:not([hidden])")
    assert not page.locator("#lookup-form .error").is_visible()
    wang = dev(WANG).address
    assert page.input_value("#patient") == wang and page.input_value("#up-patient") == wang
    assert wang in page.inner_text("#lookup-found")
    assert page.input_value("#lookup-value") == ""  # the ID does not stay on the screen
    page.set_viewport_size({"width": 320, "height": 640})
    assert_fits(page, 320, f"60-{lang}-hospital-lookup")
