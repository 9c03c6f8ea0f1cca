"""The portal over plain HTTP (no browser): translations complete, sessions and CSRF guard, role pages,
report serving, the ledger-proof page, and the relay API the pages use for patients' own transactions."""

from __future__ import annotations

import dataclasses
import re
import stat
import time
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.portal import i18n
from gateway.problems import PROBLEMS
from node_client._exceptions import KeystoreError
from node_client.blinding import sign_category_key
from node_client.contracts import Action
from node_client.deploy import Manifest, MemberSpec, dev_encryption_key
from node_client.keys import read_x25519_jwk, write_x25519_jwk
from node_client.vocabulary import Role
from tests.support.gateway_harness import AUDITOR, CLINIC, RunningGateway, dev, running_gateway

ROOT = Path(__file__).resolve().parents[2]
PATIENT = 13


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with running_gateway(tmp_path_factory.mktemp("portal-http")) as running:
        yield running


def portal_client(
    gw: RunningGateway, account: LocalAccount, page: str = "patient", http: httpx.Client | None = None
) -> httpx.Client:
    """A browser-like client signed in on one role page: the API's token handed to /portal/session with
    the page (that page's cookie). Pass ``http`` to sign another page in in the same "browser"."""
    api = gw.login(account)
    token = api.headers["Authorization"].split()[1]
    http = http or gw.http()
    r = http.post("/portal/session", json={"token": token, "page": page}, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith(f"hcl_session_{page}=") and "httponly" in cookie and "samesite=strict" in cookie
    http.headers["Authorization"] = api.headers["Authorization"]  # for the /v1 calls the page script makes
    return http


# ---------------------------------------------------------------- translations


def test_every_message_the_templates_and_the_script_use_exists_in_both_languages() -> None:
    used: set[str] = set()
    for path in (ROOT / "gateway" / "portal" / "templates").glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_A-Z0-9 .-]+)["']\s*\)""", path.read_text()))
    for script in ("portal.js", "record_view.js"):
        text = (ROOT / "gateway" / "portal" / "static" / script).read_text()
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_0-9]+)["']\s*\)""", text))
    assert used, "no t(...) calls found: the pattern is wrong"
    missing = sorted(k for k in used if k not in i18n.MESSAGES)
    assert not missing, missing
    for key, (zh, en) in i18n.MESSAGES.items():
        assert zh.strip() and en.strip(), key
    # dynamic keys: consent states, record statuses, signer kinds, problem titles
    for state in ("active", "revoked", "expired", "not yet valid"):
        assert f"state_{state}" in i18n.MESSAGES
    for code in PROBLEMS:
        assert f"problem_{code}" in i18n.MESSAGES, code


def test_language_is_zh_by_default_and_switchable(gw: RunningGateway) -> None:
    http = gw.http()
    page = http.get("/portal")
    assert page.status_code == 200 and '<html lang="zh-CN">' in page.text and "健康码链" in page.text
    en = http.get("/portal?lang=en")
    assert '<html lang="en">' in en.text and "HealthCode Ledger" in en.text
    assert "hcl_lang=en" in en.headers["set-cookie"]
    assert '<html lang="en">' in http.get("/portal/patient").text  # remembered
    assert http.get("/", follow_redirects=False).headers["location"] == "/portal"


# ---------------------------------------------------------------- sessions and guards


def test_pages_carry_a_strict_content_security_policy(gw: RunningGateway) -> None:
    r = gw.http().get("/portal/patient")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert gw.http().get("/static/vendor/hcl-vendor.js").status_code == 200  # bundled at install, no CDN


def test_portal_posts_need_the_portal_header_and_a_valid_token(gw: RunningGateway) -> None:
    http = gw.http()
    api = gw.login(dev(PATIENT))
    token = api.headers["Authorization"].split()[1]
    r = http.post("/portal/session", json={"token": token, "page": "patient"})  # a cross-site form cannot add it
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = http.post("/portal/session", json={"token": token, "page": "admin"}, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"  # only the three role pages
    r = http.post(
        "/portal/session", json={"token": "hcl1.forged.token", "page": "patient"}, headers={"X-HCL-Portal": "1"}
    )
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    r = http.post(
        "/portal/patient/draft",
        json={"grantee": dev(CLINIC).address, "categories": ["allergies"], "purposes": ["treatment"]},
        headers={"X-HCL-Portal": "1"},
    )
    assert r.status_code == 401  # no session cookie
    assert http.get("/portal/patient/sections").status_code == 401
    # the /v1 API never accepts the cookie: only a bearer token
    cookie_only = portal_client(gw, dev(PATIENT))
    del cookie_only.headers["Authorization"]
    assert cookie_only.get("/v1/me/records").status_code == 401


def test_signed_out_pages_show_nothing_personal_and_roles_are_enforced(gw: RunningGateway) -> None:
    anonymous = gw.http().get("/portal/patient")
    assert 'id="records"' not in anonymous.text and 'id="unlock"' in anonymous.text
    patient = portal_client(gw, dev(PATIENT))
    assert 'id="records"' in patient.get("/portal/patient").text
    assert 'id="unlock"' in patient.get("/portal/hospital").text  # signed in on the patient page only
    portal_client(gw, dev(PATIENT), "hospital", patient)
    portal_client(gw, dev(PATIENT), "auditor", patient)
    hospital_page = patient.get("/portal/hospital")
    assert 'id="forbidden"' in hospital_page.text and 'id="scan"' not in hospital_page.text
    assert patient.get("/portal/auditor/sections").status_code == 403
    r = patient.post("/portal/logout", json={"page": "patient"}, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 200 and 'id="records"' not in patient.get("/portal/patient").text


def test_each_role_page_shows_and_acts_as_its_own_sign_in(gw: RunningGateway) -> None:
    """One browser, two desks: the patient on /portal/patient, the clinic on /portal/hospital."""
    desk = portal_client(gw, dev(PATIENT), "patient")
    portal_client(gw, dev(CLINIC), "hospital", desk)
    del desk.headers["Authorization"]  # pages act through their cookies here
    patient_page, hospital_page = desk.get("/portal/patient?lang=en"), desk.get("/portal/hospital?lang=en")
    assert _header_address(patient_page.text) == dev(PATIENT).address
    assert _header_address(hospital_page.text) == dev(CLINIC).address
    assert "Riverside Community Health Centre" in hospital_page.text.split("</header>")[0]
    assert "Riverside" not in patient_page.text.split("</header>")[0]
    # in Chinese the institution has its Chinese name (name_zh of its member metadata)
    assert "河滨社区卫生服务中心" in desk.get("/portal/hospital?lang=zh-CN").text.split("</header>")[0]
    # each page's helpers act as that page's viewer: the patient's draft is the patient's
    draft = desk.post(
        "/portal/patient/draft",
        json={"grantee": dev(CLINIC).address, "categories": ["allergies"], "purposes": ["treatment"]},
        headers={"X-HCL-Portal": "1"},
    )
    assert draft.status_code == 200 and draft.json()["message"]["patient"] == dev(PATIENT).address
    assert desk.get("/portal/hospital/records", params={"patient": dev(PATIENT).address}).status_code == 200
    # signing out on the hospital page leaves the patient page signed in
    r = desk.post("/portal/logout", json={"page": "hospital"}, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 200 and "hcl_session_hospital=" in r.headers["set-cookie"]
    assert (
        'id="who"' in desk.get("/portal/hospital").text
        and 'id="who" data-page="hospital" hidden' in desk.get("/portal/hospital").text
    )
    assert _header_address(desk.get("/portal/patient").text) == dev(PATIENT).address
    assert desk.get("/portal/hospital/sections").status_code == 401
    assert desk.post("/portal/logout", json={}, headers={"X-HCL-Portal": "1"}).status_code == 400


def _header_address(html: str) -> str:
    match = re.search(r'id="viewer-address" title="(0x[0-9a-fA-F]{40})"', html)
    assert match, "no signed-in identity in the header"
    return match.group(1)


def test_unknown_portal_pages_are_a_localized_404_page(gw: RunningGateway) -> None:
    http = gw.http()
    for path in ("/portal/nope", "/portal/nope/sections", "/portal/patient/nope/deeper"):
        r = http.get(path)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert '<html lang="zh-CN">' in r.text and "未找到" in r.text and 'id="not-found"' in r.text, path
        assert "script-src 'self'" in r.headers["content-security-policy"]
    en = http.get("/portal/nope?lang=en")
    assert en.status_code == 404 and '<html lang="en">' in en.text and "Not found" in en.text
    assert 'href="?lang=zh-CN"' in en.text  # the same language switch as every page


def test_unknown_api_paths_are_a_not_found_problem(gw: RunningGateway) -> None:
    http = gw.http()
    for path in ("/nope", "/v1/nope", "/v1/me/nope"):
        r = http.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", path
        body = r.json()
        assert body["code"] == "not_found" and body["title"] == "Not found", body
        assert body["type"] == "/problems/not_found" and body["instance"] == path
    page = http.get("/problems/not_found")
    assert page.status_code == 200 and "Not found" in page.text
    assert http.get("/problems/nope").json()["code"] == "not_found"
    assert http.get("/v1/records/0x" + "ab" * 32 + "/x").json()["code"] == "record_not_found"


def test_draft_is_the_typed_data_the_patient_signs(gw: RunningGateway) -> None:
    patient = portal_client(gw, dev(PATIENT))
    body = {
        "grantee": dev(CLINIC).address,
        "categories": ["allergies", "lab-results"],
        "purposes": ["treatment"],
        "validDays": 7,
        "deadlineHours": 2,
    }
    r = patient.post("/portal/patient/draft", json=body, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 200, r.text
    typed = r.json()["typedData"]
    assert typed["primaryType"] == "ConsentGrant" and typed["domain"]["name"] == "HealthCode Ledger"
    assert typed["message"]["patient"] == dev(PATIENT).address
    assert typed["message"]["categories"] == gw.slots(dev(PATIENT), "allergies,lab-results")  # her slots
    assert typed["message"]["validUntil"] - typed["message"]["validFrom"] == 7 * 86400
    # from now, not from the idle chain's last block (which may be minutes old)
    assert typed["message"]["validFrom"] >= int(time.time()) - 1
    bad = patient.post(
        "/portal/patient/draft", json={**body, "categories": ["not-a-category"]}, headers={"X-HCL-Portal": "1"}
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
    none = patient.post("/portal/patient/draft", json={**body, "categories": []}, headers={"X-HCL-Portal": "1"})
    assert none.status_code == 400


def test_only_a_current_guardian_drafts_for_a_ward(gw: RunningGateway) -> None:
    """``patient`` names the ward: her current guardian gets the ward's grant in the ward's slots; anyone else
    (or a guardian once removed) 403 ``not_patient``; a made code carries the ward's key only for her guardian."""
    ward, guardian = dev(16), Account.create()
    body = {"patient": ward.address, "grantee": dev(CLINIC).address, "categories": ["mental-health"]}
    body["purposes"] = ["treatment"]
    http = portal_client(gw, guardian)
    refused = http.post("/portal/patient/draft", json=body, headers={"X-HCL-Portal": "1"})
    assert refused.status_code == 403 and refused.json()["code"] == "not_patient"
    gw.ledger.consents.set_guardian(ward, guardian.address, gw.client.block_timestamp() + 86_400)
    r = http.post("/portal/patient/draft", json=body, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 200, r.text
    message = r.json()["typedData"]["message"]
    assert message["patient"] == ward.address and message["categories"] == gw.slots(ward, "mental-health")
    gw.ledger.consents.remove_guardian(ward, guardian.address)
    again = http.post("/portal/patient/draft", json=body, headers={"X-HCL-Portal": "1"})
    assert again.json()["code"] == "not_patient"
    assert (
        http.post("/portal/patient/draft", json={**body, "patient": "0x12"}, headers={"X-HCL-Portal": "1"}).status_code
        == 400
    )


def test_draft_needs_the_patients_category_key(gw: RunningGateway) -> None:
    """A patient whose key this gateway does not hold (her sign-in's hand-over failed) gets the localized 409,
    and a draft once she has handed it over."""
    fresh: LocalAccount = Account.create()
    patient = portal_client(gw, fresh)
    body = {"grantee": dev(CLINIC).address, "categories": ["mental-health"], "purposes": ["treatment"]}
    r = patient.post("/portal/patient/draft", json=body, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 409 and r.json()["code"] == "category_key_needed", r.text
    assert "problem_category_key_needed" in i18n.MESSAGES
    domain = gw.components.category_keys.domain
    handed = patient.post(
        "/v1/category-keys",
        json={"patient": fresh.address, "signature": "0x" + sign_category_key(fresh, domain).hex()},
    )
    assert handed.status_code == 201, handed.text
    r = patient.post("/portal/patient/draft", json=body, headers={"X-HCL-Portal": "1"})
    assert r.status_code == 200 and r.json()["message"]["categories"] == gw.slots(fresh, "mental-health")


def test_preview_refuses_what_is_not_a_health_code(gw: RunningGateway, tmp_path: Path) -> None:
    clinic = portal_client(gw, dev(CLINIC), "hospital")
    h = {"X-HCL-Portal": "1"}
    r = clinic.post("/portal/hospital/preview?lang=en", data={"text": ""}, headers=h)
    assert r.status_code == 400 and "Upload a picture" in r.json()["detail"]
    picture = {"picture": ("x.png", b"not a picture", "image/png")}
    r = clinic.post("/portal/hospital/preview?lang=en", files=picture, headers=h)
    assert r.status_code == 400 and "the picture cannot be read" in r.json()["detail"]
    r = clinic.post("/portal/hospital/preview?lang=en", data={"text": "HCL:XYZ"}, headers=h)
    assert r.status_code == 400 and "Not a valid health code" in r.json()["detail"]
    r = clinic.post("/portal/hospital/preview?lang=zh-CN", data={"text": "HCL:XYZ"}, headers=h)
    assert r.json()["detail"] == "不是有效的健康码：文本已损坏"  # the page's language, the reason too


# ---------------------------------------------------------------- members added at run time


def test_a_member_added_at_run_time_shows_its_name_without_a_restart(gw: RunningGateway) -> None:
    """Governance onboards a hospital while the gateway runs; its off-chain name is appended to the
    manifest *after* the transaction (as ``demo seed`` does) and shows in the API and the portal."""
    county = dev(19)
    spec = MemberSpec(
        county.address, int(Role.HOSPITAL), dev_encryption_key(19)[1], "Lakeside County Hospital", "hospital"
    )
    gw.ledger.members.enact(
        [dev(0), dev(1)],
        Action.ADD_MEMBER,
        spec.address,
        arg=spec.roles,
        encryption_key=spec.encryption_key,
        metadata_hash=spec.metadata_hash,
    )
    gw.wait_indexed()
    http = gw.http()
    assert _directory_name(http, county.address) == ""  # a member now, its name not known yet

    path = gw.settings.manifest
    manifest = Manifest.load(path)
    entry = {
        "address": spec.address,
        "name": spec.name,
        "kind": spec.kind,
        "roles": spec.roles,
        "metadataHash": "0x" + spec.metadata_hash.hex(),
        "encryptionKey": "0x" + spec.encryption_key.hex(),
    }
    dataclasses.replace(manifest, members=[*manifest.members, entry]).save(path)
    deadline = time.monotonic() + 10
    while _directory_name(http, county.address) != spec.name:
        assert time.monotonic() < deadline, "the new member's name never appeared"
        time.sleep(0.1)
    patient_page = portal_client(gw, dev(PATIENT)).get("/portal/patient").text
    assert f'value="{county.address}"' in patient_page and "Lakeside County Hospital" in patient_page
    signed_in = portal_client(gw, county, "hospital").get("/portal/hospital?lang=en").text
    assert (
        _header_address(signed_in) == county.address and "Lakeside County Hospital" in signed_in.split("</header>")[0]
    )


def _directory_name(http: httpx.Client, address: str) -> str:
    members = {m["address"]: m for m in http.get("/v1/members").json()["members"]}
    return members[address]["name"]


# ---------------------------------------------------------------- ledger proof and reports


def test_member_names_in_each_language_and_hashes_of_members_without_them() -> None:
    """name_zh/name_en are hashed only when set: an older member's metadata hash is unchanged, and it shows
    its ``name`` in both languages; the manifest entry hashes to what the spec registered."""
    from gateway.ledger.member_names import MemberNames
    from node_client.deploy import _manifest_entry, metadata_hash

    old = MemberSpec(dev(18).address, int(Role.CLINIC), b"\x01" * 32, "Old Clinic", "clinic")
    new = dataclasses.replace(old, address=dev(19).address, name="Hill Clinic", name_zh="山城诊所")
    assert old.metadata_hash == metadata_hash({"name": "Old Clinic", "kind": "clinic", "address": old.address})
    names = MemberNames(None, [_manifest_entry(old), _manifest_entry(new)])
    assert names.name(old.address, "zh-CN") == names.name(old.address, "en") == "Old Clinic"
    assert names.name(new.address, "zh-CN") == "山城诊所" and names.name(new.address, "en") == "Hill Clinic"
    assert names[new.address] == "Hill Clinic" and names.name(dev(17).address, "en") == ""
    for spec in (old, new):
        assert metadata_hash(names.metadata(spec.address) or {}) == spec.metadata_hash


def test_transaction_page_decodes_the_ledger_events(gw: RunningGateway) -> None:
    http = gw.http()
    tx = gw.ledger.consents.set_emergency_opt_out(dev(PATIENT), True)
    page = http.get(f"/portal/tx/{tx.tx_hash}?lang=en")
    assert page.status_code == 200 and "ConsentRegistry.EmergencyOptOutSet" in page.text
    assert 'data-verified="1"' in page.text and "of the consortium ledger; verified." in page.text
    assert "Emergency access preference changed" in page.text
    assert dev(PATIENT).address in page.text
    gw.ledger.consents.set_emergency_opt_out(dev(PATIENT), False)
    assert http.get("/portal/tx/0x1234").status_code == 400
    assert http.get("/portal/tx/0x" + "ab" * 32).status_code == 404


def test_auditor_lists_and_serves_replay_reports_and_nothing_else(gw: RunningGateway) -> None:
    reports = gw.settings.data_dir / "audit"
    (reports / "2026-11-23").mkdir(parents=True, exist_ok=True)
    (reports / "2026-11-23" / "report.html").write_text("<h1>replay</h1>")
    (reports / "2026-11-23" / "report.json").write_text('{"verdict": "clean"}')
    (gw.settings.data_dir / "secret.txt").write_text("not for auditors")
    auditor = portal_client(gw, dev(AUDITOR), "auditor")
    page = auditor.get("/portal/auditor?lang=en")
    assert 'href="/portal/reports/2026-11-23/report.html"' in page.text and "clean" in page.text
    assert auditor.get("/portal/reports/2026-11-23/report.html").text == "<h1>replay</h1>"
    for evil in ("..%2Fsecret.txt/x", "2026-11-23/..%2F..%2Fsecret.txt", "../secret.txt"):
        assert auditor.get(f"/portal/reports/{evil}").status_code in (400, 404), evil
    patient = portal_client(gw, dev(PATIENT))
    assert patient.get("/portal/reports/2026-11-23/report.html").status_code == 401  # reports: the auditor page's
    portal_client(gw, dev(PATIENT), "auditor", patient)
    assert patient.get("/portal/reports/2026-11-23/report.html").status_code == 403


# ---------------------------------------------------------------- relay of patients' own transactions


def _sign(account: LocalAccount, tx: dict) -> str:  # type: ignore[type-arg]
    fields = {k: v for k, v in tx.items() if k != "type"}
    fields["type"] = tx["type"]
    return "0x" + bytes(account.sign_transaction(fields).raw_transaction).hex()


def test_relay_drafts_checks_and_sends_the_patients_own_transaction(gw: RunningGateway) -> None:
    patient, guardian = dev(PATIENT), dev(17)
    api = gw.login(patient)
    until = gw.client.block_timestamp() + 86400
    d = api.post(
        "/v1/transactions/draft",
        json={"function": "setGuardian", "args": {"guardian": guardian.address, "validUntil": until}},
    )
    assert d.status_code == 200, d.text
    tx = d.json()["transaction"]
    assert tx["to"] == gw.ledger.consents.address and tx["chainId"] == gw.client.chain_id

    # signed by someone else, or aimed elsewhere, or for another chain: refused before broadcasting
    assert (
        api.post("/v1/transactions", json={"signedTransaction": _sign(dev(18), tx)}).json()["code"]
        == "invalid_signature"
    )
    elsewhere = _sign(patient, {**tx, "to": gw.ledger.records.address})
    assert "ConsentRegistry" in api.post("/v1/transactions", json={"signedTransaction": elsewhere}).json()["detail"]
    other_chain = _sign(patient, {**tx, "chainId": 1})
    assert "another chain" in api.post("/v1/transactions", json={"signedTransaction": other_chain}).json()["detail"]

    r = api.post("/v1/transactions", json={"signedTransaction": _sign(patient, tx)})
    assert r.status_code == 200, r.text
    assert gw.ledger.consents.guardian_until(patient.address, guardian.address) == until
    replay = api.post("/v1/transactions", json={"signedTransaction": _sign(patient, tx)})
    assert replay.status_code in (400, 409), replay.text  # same nonce: the node refuses it

    # the contract's own refusals surface at draft time, with the right problem
    self_guard = api.post(
        "/v1/transactions/draft",
        json={"function": "setGuardian", "args": {"guardian": patient.address, "validUntil": until}},
    )
    assert self_guard.status_code == 400 and self_guard.json()["error"] == "ConsentInvalidGuardian"
    assert api.post("/v1/transactions/draft", json={"function": "grant", "args": {}}).status_code == 400
    assert (
        api.post(
            "/v1/transactions/draft", json={"function": "setEmergencyOptOut", "args": {"optedOut": "yes"}}
        ).status_code
        == 400
    )
    # break-glass is relayed only with its reason, by its own endpoint
    clinic = gw.login(dev(CLINIC))
    eg = clinic.post(
        "/v1/transactions/draft",
        json={
            "function": "emergencyAccess",
            "args": {"patient": patient.address, "categories": 2, "reasonHash": "0x" + "11" * 32},
        },
    )
    assert eg.status_code == 403 and eg.json()["code"] == "emergency_not_allowed"  # the clinic lacks EMERGENCY


def test_release_keys_are_x25519_jwk_files(tmp_path: Path) -> None:
    path = tmp_path / "member.x25519.jwk"
    public = write_x25519_jwk(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(public) == 32
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    assert read_x25519_jwk(path).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == public
    with pytest.raises(KeystoreError):
        write_x25519_jwk(path)
    (tmp_path / "bad.jwk").write_text('{"kty": "EC"}')
    with pytest.raises(KeystoreError):
        read_x25519_jwk(tmp_path / "bad.jwk")
