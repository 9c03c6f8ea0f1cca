"""The auditor reviews an emergency access in the page: the hospital breaks the glass, the auditor page counts
it unreviewed, the auditor signs a verdict and a note with its own key in the page, the count drops to 0 and
the review shows, signed, kept and anchored (zh-CN and English, 1280 px and 320 px)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.storage import emergency_reviews
from node_client.reviews import check_reviews
from tests.browser.steps import LI, WANG, shot, unlock
from tests.support.gateway_harness import AUDITOR, RunningGateway, dev

TEXT = {
    "zh-CN": {"unreviewed": "待审核紧急访问：{n}", "verdict": "需跟进", "anchored": "已上链锚定"},
    "en": {
        "unreviewed": "Unreviewed emergency accesses: {n}",
        "verdict": "Needs follow-up",
        "anchored": "anchored on chain",
    },
}


def _break_glass(gw: RunningGateway, keys: Path, page: Any, lang: str, patient: str) -> None:
    page.goto(f"{gw.url}/portal/hospital?lang={lang}")
    unlock(page, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")
    page.fill("#bg-patient", patient)
    page.fill("#bg-reason", "Unconscious patient in the emergency department; checking allergies")
    page.click("#break-glass-form button[type=submit]")
    page.wait_for_selector("#window-open")


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_the_auditor_reviews_a_break_glass_in_the_page(
    net: tuple[RunningGateway, Path], new_page: Any, lang: str
) -> None:
    gw, keys = net
    text = TEXT[lang]
    patient = dev(LI if lang == "en" else WANG).address
    _break_glass(gw, keys, new_page(), lang, patient)

    auditor = new_page()
    auditor.goto(f"{gw.url}/portal/auditor?lang={lang}")
    unlock(auditor, keys / "auditor.json")
    auditor.wait_for_selector("#unreviewed[data-unreviewed='1']")
    assert auditor.inner_text("#unreviewed") == text["unreviewed"].format(n=1)
    row = auditor.locator("#emergencies tbody tr", has=auditor.locator("[data-reviews='0']"))
    assert row.count() == 1
    shot(auditor, f"60-{lang}-auditor-unreviewed")

    row.locator("summary").click()
    form = row.locator("form[data-action=review-emergency]")
    form.locator("select[name=verdict]").select_option("needs-follow-up")
    note = "反应史需与病区核对" if lang == "zh-CN" else "Ask the ward whether the allergy list was read"
    form.locator("textarea[name=note]").fill(note)
    shot(auditor, f"61-{lang}-auditor-review-form")
    form.locator("button[type=submit]").click()

    auditor.wait_for_selector("#unreviewed[data-unreviewed='0']")
    assert auditor.inner_text("#unreviewed") == text["unreviewed"].format(n=0)
    auditor.wait_for_selector("[aria-busy]", state="detached")
    focused = auditor.evaluate("document.activeElement.className")
    assert focused == "review", focused  # the keyboard focus is on the review just kept
    review = auditor.inner_text(".review:focus")
    assert text["verdict"] in review and note in review and text["anchored"] in review
    shot(auditor, f"62-{lang}-auditor-reviewed-1280")
    auditor.set_viewport_size({"width": 320, "height": 640})
    assert auditor.evaluate("document.documentElement.scrollWidth") <= 320
    shot(auditor, f"62-{lang}-auditor-reviewed-320")

    # kept signed by the auditor's key, hash-chained, and its root anchored on chain
    kept = emergency_reviews.every(gw.components.db)
    assert kept[-1].note == note and kept[-1].review.reviewer == dev(AUDITOR).address
    anchors = gw.ledger.access.reviews_anchors(gw.components.gateway_account.address)
    assert anchors[-1][0] == len(kept)
    assert check_reviews(gw.ledger.consents.domain(), kept, anchors) == []
