"""The hospital page's record list loads a page at a time: "more records" / "更多病历" appends the next
page's rows, by keyboard too, and the focus stays on the list (the new button, or the first new row)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_client.vocabulary import CATEGORIES
from tests.browser.steps import WANG, seeded_gateway, shot, unlock
from tests.support.gateway_harness import HOSPITAL, RunningGateway, dev

PAGE = 2  # the portal's page size here: Wang's seeded records fill several pages


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    """The seeded demo gateway of conftest.py, with a small portal page."""
    with seeded_gateway(tmp_path_factory.mktemp("paging"), portal_page_size=PAGE) as seeded:
        yield seeded


@pytest.mark.parametrize(("lang", "width"), [("zh-CN", 1280), ("en", 320)])
def test_more_records_loads_the_next_page_and_keeps_the_focus(
    net: tuple[RunningGateway, Path], new_page: Any, lang: str, width: int
) -> None:
    gw, keys = net
    wang, hospital = dev(WANG).address, dev(HOSPITAL).address
    now = gw.client.block_timestamp()
    every = gw.slots(dev(WANG), sum(1 << t.bit for t in CATEGORIES))
    gw.ledger.consents.grant(dev(WANG), hospital, every, 1, now, now + 86400)
    gw.wait_indexed()
    whole = gw.login(dev(HOSPITAL)).get(f"/v1/patients/{wang}/records", params={"limit": 200}).json()["records"]
    assert len(whole) > PAGE, "the seed has too few records of Wang to page"
    page = new_page(viewport={"width": width, "height": 900})
    page.goto(f"{gw.url}/portal/hospital?lang={lang}")
    unlock(page, keys / "hospital.json", enc_key=keys / "hospital.x25519.jwk")
    page.fill("#patient", wang)
    page.click("#records-form button[type=submit]")
    rows = page.locator("#records-found tbody tr")
    rows.first.wait_for()
    assert rows.count() == PAGE
    more = page.locator("#records-found button[data-action=more-records]")
    assert more.inner_text() == ("更多病历" if lang == "zh-CN" else "More records")
    more.focus()
    page.keyboard.press("Enter")
    rows.nth(min(2 * PAGE, len(whole)) - 1).wait_for()
    assert page.evaluate("document.activeElement.dataset.action") in ("more-records", "open-record")
    shot(page, f"paging-more-records-{lang}-{width}")
    while (n := rows.count()) < len(whole):
        more.click()
        rows.nth(min(n + PAGE, len(whole)) - 1).wait_for()
    more.wait_for(state="detached")
    shown = rows.evaluate_all("rs => rs.map(r => r.dataset.record)")
    assert shown == [r["recordId"] for r in whole]
    assert page.evaluate("document.activeElement !== document.body")


def test_the_patients_own_records_page_too(net: tuple[RunningGateway, Path], new_page: Any) -> None:
    """Her own list shows the newest page; "more records" appends the next, newest first, until all are shown."""
    gw, keys = net
    whole = gw.login(dev(WANG)).get("/v1/me/records", params={"limit": 200}).json()["records"]
    assert len(whole) > PAGE
    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang=en")
    unlock(page, keys / "wang.json")
    rows = page.locator("#records tbody tr")
    rows.first.wait_for()
    assert rows.count() == PAGE
    more = page.locator("#records button[data-action=more-my-records]")
    more.focus()
    page.keyboard.press("Enter")
    rows.nth(min(2 * PAGE, len(whole)) - 1).wait_for()
    assert page.evaluate("document.activeElement !== document.body")
    while (n := rows.count()) < len(whole):
        more.click()
        rows.nth(min(n + PAGE, len(whole)) - 1).wait_for()
    more.wait_for(state="detached")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.record)") == [r["recordId"] for r in whole]
    assert page.evaluate("document.activeElement.id") == "records-title"
    shot(page, "paging-my-records-en")
