"""Blinded categories in the portal (issue 16), in a real browser against a real gateway and chain.

A new patient's sign-in hands her category key to the gateway (she signs her ``CategoryKeyRequest`` in the
page), and the health code she then makes grants her *slot* of the category she picked, not its bit. A
gateway without a patient's key names a blinded slot "Protected category N", never a category guessed
from the bit. Every state is saved in zh-CN and English, at 1280 and 320 px, after axe finds nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from node_client import healthcode as hc
from node_client.blinding import category_key, sign_category_key
from node_client.keys import new_keystore
from node_client.signing import sign
from node_client.vocabulary import Category
from tests.browser.steps import make_code, shot, unlock
from tests.support.gateway_harness import CLINIC, RunningGateway, dev

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTHS = (1280, 320)


def _fresh_patient(tmp_path: Path) -> tuple[LocalAccount, Path]:
    """A patient the gateway has never seen (the harness holds only the dev accounts' keys)."""
    account: LocalAccount = Account.create()
    keystore = tmp_path / "new-patient.json"
    new_keystore(keystore, "demo", account=account)
    return account, keystore


def _shots(page: Any, name: str) -> None:
    """The page at each width, after axe (and nothing wider than a 320 px phone)."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"{name} is {scroll}px wide at {width}px"
        shot(page, f"{name}-{width}")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_sign_in_hands_over_the_key_and_her_code_grants_her_slot(
    net: tuple[RunningGateway, Path], new_page: Any, tmp_path: Path, lang: str
) -> None:
    gw, _keys = net
    patient, keystore = _fresh_patient(tmp_path)
    assert gw.components.category_keys.get(patient.address) is None

    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang={lang}")
    unlock(page, keystore)
    page.wait_for_selector("#code-form")
    held = gw.components.category_keys.get(patient.address)
    assert held is not None, "signing in did not hand the category key over"
    domain = gw.ledger.consents.domain()
    assert held == category_key(domain, patient.address, sign_category_key(patient, domain))
    assert page.locator("#toast.bad").count() == 0 or page.is_hidden("#toast")
    _shots(page, f"60-new-patient-signed-in-{lang}")

    make_code(page, dev(CLINIC).address, ["mental-health"])
    code = hc.decode(page.input_value("#code-text"))
    signed = code.signed
    assert signed.message.patient == patient.address
    slot = held.slot(Category.MENTAL_HEALTH)
    assert signed.message.categories == 1 << slot  # her slot of mental health, whatever bit that is
    assert code.category_key == sign_category_key(patient, domain)  # the code hands her key to its reader
    _shots(page, f"61-new-patient-code-{lang}")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_a_slot_without_the_key_shows_as_a_protected_category(
    net: tuple[RunningGateway, Path], new_page: Any, lang: str
) -> None:
    """A code signed outside the portal by a patient this gateway holds no key of: the institution's preview
    names the public slot (allergies) and says "protected category N" for the blinded one."""
    gw, keys = net
    patient: LocalAccount = Account.create()
    domain = gw.ledger.consents.domain()
    key = category_key(domain, patient.address, sign_category_key(patient, domain))
    slot = key.slot(Category.MENTAL_HEALTH)
    now = gw.client.block_timestamp()
    message = gw.ledger.consents.build_grant(
        patient.address,
        dev(CLINIC).address,
        1 << slot | 1 << Category.ALLERGIES,
        1,
        now,
        now + 86400,
        deadline=now + 3600,
    )
    code = hc.encode(sign(patient, domain, message), domain)

    page = new_page()
    page.goto(f"{gw.url}/portal/hospital?lang={lang}")
    unlock(page, keys / "clinic.json", enc_key=keys / "clinic.x25519.jwk")
    page.fill("#code-paste", code)
    page.click("#scan-form button[type=submit]")
    page.wait_for_selector("#code-summary")
    summary = page.inner_text("#code-summary")
    protected = f"受保护类别 {slot}" if lang == "zh-CN" else f"Protected category {slot}"
    allergies = "过敏" if lang == "zh-CN" else "Allergies"
    assert protected in summary and allergies in summary, summary
    assert ("精神" not in summary) if lang == "zh-CN" else ("Mental" not in summary)
    _shots(page, f"62-hospital-protected-category-{lang}")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_a_guardian_makes_a_code_for_her_ward_with_the_wards_slot(
    net: tuple[RunningGateway, Path], new_page: Any, tmp_path: Path, lang: str
) -> None:
    """A guardian signs in on the patient page: the code form offers her current ward; a code for the ward
    names the ward as patient, the guardian as signer, grants the ward's slot of mental health (the gateway
    holds the ward's key) and carries the ward's key signature, so the grantee's gateway learns it."""
    gw, _keys = net
    ward = dev(19)
    guardian, keystore = _fresh_patient(tmp_path)
    gw.ledger.consents.set_guardian(ward, guardian.address, gw.client.block_timestamp() + 86_400)
    gw.wait_indexed()

    page = new_page()
    page.goto(f"{gw.url}/portal/patient?lang={lang}")
    unlock(page, keystore)
    page.wait_for_selector("#code-patient")
    page.select_option("#code-patient", ward.address)
    _shots(page, f"70-guardian-code-form-{lang}")
    make_code(page, dev(CLINIC).address, ["mental-health"])
    code = hc.decode(page.input_value("#code-text"))
    domain = gw.ledger.consents.domain()
    key = category_key(domain, ward.address, sign_category_key(ward, domain))
    assert (code.signed.message.patient, code.signed.signer) == (ward.address, guardian.address)
    assert code.signed.message.categories == 1 << key.slot(Category.MENTAL_HEALTH)
    assert code.category_key == sign_category_key(ward, domain)
    _shots(page, f"71-guardian-code-{lang}")

    # her ward's consents and latest accesses are on her page; she revokes one for the ward
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(ward, dev(CLINIC).address, gw.slots(ward, "allergies"), 1, now, now + 86_400)
    gw.wait_indexed()
    page.reload()
    unlock(page, keystore)
    row = page.locator(f"#wards tr[data-consent] button[data-patient='{ward.address}']")
    row.wait_for()
    _shots(page, f"72-guardian-wards-{lang}")
    page.once("dialog", lambda d: d.accept())
    row.click()
    page.wait_for_selector("#wards tr[data-state=revoked]")
    assert gw.ledger.consents.consent_of(ward.address, dev(CLINIC).address).status.name == "REVOKED"
