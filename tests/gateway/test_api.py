"""End-to-end over HTTP: the real gateway app, a real Hardhat node, the local blob store, real crypto.

One gateway (strict ledger mode) serves the whole module; tests use distinct patients so they do not
depend on each other's state. Batch mode and outages have fixtures of their own at the end.
"""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.api.schemas import EncryptedRelease
from node_client import signing
from node_client._client import TxResult
from node_client.commitments import reason_commitment
from node_client.contracts import AccessEntry, AccessOutcome, Action
from node_client.gateway_client import KEEPALIVE_EXPIRY
from node_client.paging import encode_cursor
from node_client.vocabulary import Category, Purpose, parse_categories, parse_purposes
from tests.support.gateway_harness import (
    AUDITOR,
    CLINIC,
    HOSPITAL,
    LAB,
    SALT,
    SALT_HEX,
    SAMPLES,
    RunningGateway,
    dev,
    open_release,
    running_gateway,
)

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw")) as running:
        yield running


@pytest.fixture(scope="module")
def uploaded(gw: RunningGateway) -> dict:
    """Patient dev#10's Synthea record, uploaded by the hospital."""
    hospital = gw.login(dev(HOSPITAL))
    r = hospital.post("/v1/records", params={"patient": dev(10).address}, content=SYNTHEA.read_bytes(), headers=FHIR)
    assert r.status_code == 201, r.text
    return r.json()


def _record(uploaded: dict, category: str) -> str:
    return next(r["recordId"] for r in uploaded["records"] if r["category"] == category)


def _grant(
    gw: RunningGateway, patient: int, grantee: str, categories: str, purposes: str = "treatment", seconds: int = 86_400
) -> bytes:
    now = gw.client.block_timestamp()
    consent_id, _ = gw.ledger.consents.grant(
        dev(patient), grantee, gw.slots(dev(patient), categories), parse_purposes(purposes), now, now + seconds
    )
    return consent_id


# ---------------------------------------------------------------- service basics


def test_healthz_metrics_docs_and_problem_pages(gw: RunningGateway) -> None:
    http = gw.http()
    health = http.get("/healthz")
    assert health.status_code == 200, health.text
    checks = health.json()["checks"]
    assert checks["chain"]["ok"] and checks["storage"]["ok"] and checks["database"]["ok"]
    assert "hcl_releases_total" in http.get("/metrics").text or http.get("/metrics").status_code == 200
    assert http.get("/openapi.json").json()["info"]["title"] == "HealthCode Ledger gateway"
    assert http.get("/docs").status_code == 200
    page = http.get("/problems/consent_revoked")
    assert page.status_code == 200 and "consent_revoked" in page.text


def test_gateway_keeps_idle_connections_longer_than_clients_do(gw: RunningGateway) -> None:
    """A client drops an idle connection before the gateway closes it, so it never sends a request on a
    connection the gateway is closing that instant (a reset: seen once in a demo when both sides used 5 s)."""
    assert gw.settings.keep_alive > KEEPALIVE_EXPIRY + 2
    conn = http.client.HTTPConnection("127.0.0.1", gw.settings.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read()
        first = conn.sock
        time.sleep(KEEPALIVE_EXPIRY + 1.5)  # past the client's expiry and uvicorn's default 5 s
        conn.request("GET", "/healthz")  # the same socket: a closed one would raise RemoteDisconnected
        assert conn.sock is first and conn.getresponse().status == 200
    finally:
        conn.close()


def test_member_directory_has_names_from_off_chain_metadata(gw: RunningGateway) -> None:
    gw.wait_indexed()
    members = gw.http().get("/v1/members").json()["members"]
    by_addr = {m["address"]: m for m in members}
    assert by_addr[dev(HOSPITAL).address]["name"] == "City First People's Hospital"
    assert "emergency" in by_addr[dev(HOSPITAL).address]["roles"]
    # names in the language the client asks for (Accept-Language, q-values honoured), else the default name
    for header, name in (
        ("zh-CN,zh;q=0.9,en;q=0.8", "市第一人民医院"),
        ("en-GB", "City First People's Hospital"),
        ("fr, zh;q=0.5", "市第一人民医院"),
        ("fr", "City First People's Hospital"),
    ):
        named = gw.http().get("/v1/members", headers={"Accept-Language": header}).json()["members"]
        assert {m["address"]: m["name"] for m in named}[dev(HOSPITAL).address] == name, header


# ---------------------------------------------------------------- authentication


def test_sign_in_and_single_use_nonce(gw: RunningGateway) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    http = gw.http()
    msg = http.post("/v1/auth/challenge", json={"address": dev(HOSPITAL).address}).json()["message"]
    assert "wants you to sign in with your Ethereum account" in msg and "Chain ID: 31337" in msg
    sig = "0x" + bytes(Account.sign_message(encode_defunct(text=msg), dev(HOSPITAL).key).signature).hex()
    first = http.post("/v1/auth/token", json={"message": msg, "signature": sig})
    assert first.status_code == 200 and first.json()["tokenType"] == "Bearer"
    assert first.json()["expiresAt"] - time.time() <= 900
    again = http.post("/v1/auth/token", json={"message": msg, "signature": sig})
    assert again.status_code == 401 and again.json()["code"] == "replayed_nonce"
    assert again.headers["content-type"].startswith("application/problem+json")


def test_forged_signature_and_bad_tokens_are_refused(gw: RunningGateway) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    http = gw.http()
    msg = http.post("/v1/auth/challenge", json={"address": dev(HOSPITAL).address}).json()["message"]
    forged = "0x" + bytes(Account.sign_message(encode_defunct(text=msg), dev(LAB).key).signature).hex()
    r = http.post("/v1/auth/token", json={"message": msg, "signature": forged})
    assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
    assert http.get("/v1/me/records").json()["code"] == "unauthenticated"
    r = http.get("/v1/me/records", headers={"Authorization": "Bearer hcl1.e30.AAAA"})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


# ---------------------------------------------------------------- upload


def test_synthea_bundle_becomes_about_a_dozen_records_in_one_transaction(gw: RunningGateway, uploaded: dict) -> None:
    records = uploaded["records"]
    assert 6 <= len(records) <= 16, [r["category"] for r in records]
    assert len({r["category"] for r in records}) == len(records)  # one record per category
    receipt = gw.client.w3.eth.get_transaction_receipt(uploaded["txHash"])
    assert receipt["status"] == 1
    for r in records:
        onchain = gw.ledger.records.record_of(bytes.fromhex(r["recordId"][2:]))
        assert onchain.patient == dev(10).address
        assert r["locator"].startswith("b")  # CIDv1 base32
    assert any(i["resourceType"] in ("Claim", "ExplanationOfBenefit") for i in uploaded["ignored"])


def test_invalid_fhir_is_422_with_every_issue(gw: RunningGateway) -> None:
    hospital = gw.login(dev(HOSPITAL))
    bad = {"resourceType": "Observation", "status": "not-a-status", "code": {"text": 5}}
    r = hospital.post("/v1/records", params={"patient": dev(11).address}, content=orjson.dumps(bad), headers=FHIR)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_fhir" and len(body["issues"]) >= 1
    assert all({"path", "message"} <= set(i) for i in body["issues"])


def test_oversized_body_is_413_and_wrong_media_type_415(gw: RunningGateway) -> None:
    hospital = gw.login(dev(HOSPITAL))
    big = b"{" + b" " * (gw.settings.max_body_bytes + 10) + b"}"
    r = hospital.post("/v1/records", params={"patient": dev(11).address}, content=big, headers=FHIR)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = hospital.post(
        "/v1/records", params={"patient": dev(11).address}, content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415


def test_only_active_care_providers_upload(gw: RunningGateway) -> None:
    body = (SAMPLES / "hl7-r4" / "AllergyIntolerance-example.json").read_bytes()
    outsider = gw.login(dev(18))
    r = outsider.post("/v1/records", params={"patient": dev(11).address}, content=body, headers=FHIR)
    assert r.status_code == 403 and r.json()["code"] == "not_member"
    auditor = gw.login(dev(8))
    r = auditor.post("/v1/records", params={"patient": dev(11).address}, content=body, headers=FHIR)
    assert r.status_code == 403 and r.json()["code"] == "wrong_role"


# ---------------------------------------------------------------- release


def test_release_requires_consent_then_is_ledgered_and_encrypted_to_the_reader(
    gw: RunningGateway, uploaded: dict
) -> None:
    clinic = gw.login(dev(CLINIC))
    record = _record(uploaded, "encounters")
    refused = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    assert refused.status_code == 403 and refused.json()["code"] == "consent_missing"

    consent_id = _grant(gw, 10, dev(CLINIC).address, "encounters,medications,lab-results")
    r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    assert r.status_code == 200, r.text
    body = r.json()
    # the route sends the service's body as it is: it is exactly what the document declares
    assert list(body) == list(EncryptedRelease.model_fields) and EncryptedRelease.model_validate(body)
    assert body["consentId"] == "0x" + consent_id.hex() and body["emergency"] is False
    assert "resource" not in body  # never plaintext by default
    bundle = orjson.loads(open_release(body, CLINIC, dev(CLINIC).address))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} & {"Encounter", "Composition", "DocumentReference"}

    # ledgered before release: the AccessLogged event carries the response's access id
    tx = body["ledger"]["txHash"]
    (ev,) = gw.ledger.access.events_in(
        type("R", (), {"receipt": gw.client.w3.eth.get_transaction_receipt(tx)})(), "AccessLogged"
    )
    assert "0x" + bytes(ev["accessHash"]).hex() == body["accessId"]
    assert ev["requester"] == dev(CLINIC).address and ev["patient"] == dev(10).address


def test_refusals_name_the_reason(gw: RunningGateway, uploaded: dict) -> None:
    lab = gw.login(dev(LAB))
    _grant(gw, 10, dev(LAB).address, "lab-results", "treatment")
    imaging_or_other = next(r["recordId"] for r in uploaded["records"] if r["category"] not in ("lab-results",))
    r = lab.get(f"/v1/records/{imaging_or_other}", params={"purpose": "treatment"})
    assert r.json()["code"] == "wrong_category"
    lab_record = _record(uploaded, "lab-results")
    r = lab.get(f"/v1/records/{lab_record}", params={"purpose": "research"})
    assert r.json()["code"] == "wrong_purpose"
    assert lab.get(f"/v1/records/{lab_record}", params={"purpose": "treatment"}).status_code == 200
    gw.ledger.consents.revoke(dev(10), dev(LAB).address)
    r = lab.get(f"/v1/records/{lab_record}", params={"purpose": "treatment"})
    assert r.status_code == 403 and r.json()["code"] == "consent_revoked"
    r = lab.get(f"/v1/records/0x{'ab' * 32}", params={"purpose": "treatment"})
    assert r.status_code == 404 and r.json()["code"] == "record_not_found"
    r = lab.get("/v1/records/not-hex", params={"purpose": "treatment"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_suspended_member_is_refused_at_once(gw: RunningGateway, uploaded: dict) -> None:
    pharmacy = dev(7)
    _grant(gw, 10, pharmacy.address, "medications")
    http = gw.login(pharmacy)
    record = _record(uploaded, "medications")
    assert http.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
    admins = [dev(0), dev(1)]
    gw.ledger.members.enact(admins, Action.SUSPEND_MEMBER, pharmacy.address)
    r = http.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    assert r.status_code == 403 and r.json()["code"] == "member_suspended"
    gw.ledger.members.enact(admins, Action.REINSTATE_MEMBER, pharmacy.address)


def test_discovery_lists_only_consented_categories_and_finds_codes(gw: RunningGateway, uploaded: dict) -> None:
    clinic = gw.login(dev(CLINIC))
    gw.wait_indexed()
    found = clinic.get(f"/v1/patients/{dev(10).address}/records").json()
    cats = {r["category"] for r in found["records"]}
    assert cats and cats <= {"encounters", "medications", "lab-results"}
    assert all(r["providerName"] == "City First People's Hospital" for r in found["records"])
    lab_only = clinic.get(f"/v1/patients/{dev(10).address}/records", params={"category": "lab-results"}).json()
    assert {r["category"] for r in lab_only["records"]} <= {"lab-results"}
    codes = {res["code"] for r in lab_only["records"] for res in r["resources"]}
    if "4548-4" in codes:  # HbA1c, when the sample has one
        hba1c = clinic.get(f"/v1/patients/{dev(10).address}/records", params={"code": "4548-4"}).json()
        assert hba1c["records"] and all(res["code"] == "4548-4" for r in hba1c["records"] for res in r["resources"])


def test_integrity_error_releases_nothing(gw: RunningGateway) -> None:
    hospital = gw.login(dev(HOSPITAL))
    body = (SAMPLES / "hl7-r4" / "Immunization-example.json").read_bytes()
    up = hospital.post("/v1/records", params={"patient": dev(12).address}, content=body, headers=FHIR).json()
    record = up["records"][0]
    _grant(gw, 12, dev(CLINIC).address, "immunizations")
    # flip a byte of the stored ciphertext
    path = next(p for p in gw.settings.blob_dir.rglob(record["locator"]) if p.is_file())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    before = gw.client.block_number()
    clinic = gw.login(dev(CLINIC))
    r = clinic.get(f"/v1/records/{record['recordId']}", params={"purpose": "treatment"})
    assert r.status_code == 502 and r.json()["code"] == "integrity_error"
    assert list(gw.ledger.access.events(["AccessLogged"], from_block=before + 1)) == []
    assert "hcl_integrity_errors_total 1.0" in gw.http().get("/metrics").text


# ---------------------------------------------------------------- consents via the gateway


def test_signed_health_code_grant_and_revoke(gw: RunningGateway, uploaded: dict) -> None:
    patient = dev(10)
    hospital = gw.login(dev(HOSPITAL))
    domain = gw.ledger.consents.domain()
    now = gw.client.block_timestamp()
    grant = gw.ledger.consents.build_grant(
        patient.address,
        dev(HOSPITAL).address,
        gw.slots(patient, "allergies,conditions"),
        parse_purposes("treatment"),
        now,
        now + 30 * 86_400,
        deadline=now + 3600,
    )
    signed = signing.sign(patient, domain, grant).as_dict()
    r = hospital.post("/v1/consents", json=signed)
    assert r.status_code == 201, r.text
    consent_id = r.json()["consentId"]
    replay = hospital.post("/v1/consents", json=signed)
    assert (replay.status_code, replay.json()["code"]) == (409, "consent_already_used")
    tampered = {**signed, "message": {**signed["message"], "categories": 0x3FFF}}
    forged = hospital.post("/v1/consents", json=tampered)
    assert (forged.status_code, forged.json()["code"]) == (422, "consent_signature_invalid")
    message = signed["message"]
    renamed = {k: v for k, v in message.items() if k not in ("validFrom", "validUntil")}
    renamed |= {"valid_from": message["validFrom"], "valid_until": message["validUntil"]}
    wrong_names = hospital.post("/v1/consents", json={**signed, "message": renamed})
    assert (wrong_names.status_code, wrong_names.json()["code"]) == (400, "invalid_request")
    assert "validFrom" in wrong_names.text

    revoke = signing.sign(
        patient, domain, gw.ledger.consents.build_revoke(patient.address, dev(HOSPITAL).address, deadline=now + 3600)
    ).as_dict()
    r = hospital.post(f"/v1/consents/{consent_id}/revoke", json=revoke)
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert (
        gw.ledger.consents.check(patient.address, dev(HOSPITAL).address, Category.ALLERGIES, Purpose.TREATMENT).allowed
        is False
    )


# ---------------------------------------------------------------- emergency


def test_break_glass_releases_only_emergency_categories(gw: RunningGateway, uploaded: dict) -> None:
    hospital = dev(HOSPITAL)
    http = gw.login(hospital)
    reason = "unconscious on arrival, allergy check before anaesthesia"
    fn = gw.ledger.consents.contract.functions.emergencyAccess(
        dev(10).address,
        parse_categories("allergies,medications,conditions,immunizations"),
        reason_commitment(reason, SALT),
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
    body = {"signedTransaction": "0x" + bytes(raw).hex(), "reason": reason, "salt": SALT_HEX}
    r = http.post("/v1/emergency-access", json=body)
    assert r.status_code == 201, r.text
    # on chain only the salted commitment: hashing a guess of the wording does not confirm it
    (window,) = [e for e in gw.ledger.consents.events(["EmergencyAccessGranted"]) if e["accessId"].hex() in r.text]
    assert bytes(window["reasonHash"]) == reason_commitment(reason, SALT)
    assert bytes(window["reasonHash"]) != hashlib.sha256(reason.encode()).digest()
    # the opening is for auditors only
    assert http.get("/v1/emergency-reasons").json()["code"] == "wrong_role"
    openings = gw.login(dev(AUDITOR)).get("/v1/emergency-reasons").json()["reasons"]
    assert {"accessId": r.json()["accessId"], "reason": reason, "salt": SALT_HEX}.items() <= openings[-1].items()
    allergies = _record(uploaded, "allergies")
    got = http.get(f"/v1/records/{allergies}", params={"purpose": "emergency"})
    assert got.status_code == 200, got.text
    assert got.json()["emergency"] is True
    other = next(
        rec["recordId"]
        for rec in uploaded["records"]
        if rec["category"] not in ("allergies", "medications", "conditions", "immunizations")
    )
    refused = http.get(f"/v1/records/{other}", params={"purpose": "emergency"})
    assert refused.status_code == 403 and refused.json()["code"] == "emergency_not_allowed"

    clinic = gw.login(dev(CLINIC))  # no EMERGENCY capability
    r = clinic.post("/v1/emergency-access", json=body)
    assert r.status_code == 403


# ---------------------------------------------------------------- patients see everything


def test_patient_access_log_matches_the_chain(gw: RunningGateway, uploaded: dict) -> None:
    gw.wait_indexed()
    me = gw.login(dev(10))
    log = me.get("/v1/me/access-log").json()
    chain = [e for e in gw.ledger.access.events(["AccessLogged"]) if e["patient"] == dev(10).address]
    assert sorted(a["ledger"]["txHash"] for a in log["accesses"]) == sorted(e.tx_hash for e in chain)
    assert any(a["emergency"] for a in log["accesses"])
    emergency = next(a for a in log["accesses"] if a["emergency"])
    assert emergency["emergencyReason"] == "unconscious on arrival, allergy check before anaesthesia"
    assert log["emergencyWindows"][0]["reason"] == emergency["emergencyReason"]
    assert {a["requesterName"] for a in log["accesses"]} >= {"Riverside Community Health Centre"}
    records = me.get("/v1/me/records").json()["records"]
    assert len(records) == len(uploaded["records"])
    consents = me.get("/v1/me/consents").json()
    assert any(c["state"] == "revoked" for c in consents["consents"])


def test_access_log_pages_newest_first_with_a_cursor(gw: RunningGateway, uploaded: dict) -> None:
    gw.wait_indexed()
    me = gw.login(dev(10))
    whole = me.get("/v1/me/access-log", params={"limit": 200}).json()
    assert whole["cursor"] is None and whole["next"] is None and len(whole["accesses"]) >= 2
    keys = [(a["time"], a["accessId"]) for a in whole["accesses"]]
    assert keys == sorted(keys, reverse=True)
    seen, url, pages = [], "/v1/me/access-log?limit=1", 0
    while url:
        page = me.get(url).json()
        assert len(page["accesses"]) == 1 and page["emergencyWindows"] == whole["emergencyWindows"]
        seen += [a["accessId"] for a in page["accesses"]]
        url, pages = page["next"], pages + 1
        assert (page["cursor"] is None) == (url is None)
    assert seen == [a["accessId"] for a in whole["accesses"]] and pages == len(seen)
    for bad in ({"cursor": "not-a-cursor"}, {"cursor": "A" * 53}, {"limit": 0}, {"limit": 201}):
        r = me.get("/v1/me/access-log", params=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "invalid_request"


def test_portal_timeline_fetches_the_next_page(gw: RunningGateway, uploaded: dict) -> None:
    """The patient page's "older accesses" button asks /portal/patient/access-log for the page after a
    cursor: an HTML fragment of the following entries (and its own button while more follow)."""
    gw.wait_indexed()
    api = gw.login(dev(10))
    whole = api.get("/v1/me/access-log").json()["accesses"]
    assert len(whole) >= 2
    http = gw.http()
    token = api.headers["Authorization"].split()[1]
    assert http.post(
        "/portal/session", json={"token": token, "page": "patient"}, headers={"X-HCL-Portal": "1"}
    ).is_success
    assert 'data-action="older-accesses"' not in http.get("/portal/patient/sections").text  # fewer than a page
    cursor = encode_cursor(whole[0]["time"], bytes.fromhex(whole[0]["accessId"][2:]))
    page = http.get("/portal/patient/access-log", params={"cursor": cursor, "lang": "en"})
    assert page.status_code == 200, page.text
    assert page.text.count('<li class="access') == len(whole) - 1
    assert 'data-action="older-accesses"' not in page.text
    assert http.get("/portal/patient/access-log", params={"cursor": "bad"}).status_code == 400
    assert gw.http().get("/portal/patient/access-log", params={"cursor": cursor}).status_code == 401


# ---------------------------------------------------------------- retraction and key rotation


def test_retraction_shreds_the_key_and_refuses_release(gw: RunningGateway) -> None:
    hospital = gw.login(dev(HOSPITAL))
    body = (SAMPLES / "hl7-r4" / "Condition-example.json").read_bytes()
    up = hospital.post("/v1/records", params={"patient": dev(13).address}, content=body, headers=FHIR).json()
    record = up["records"][0]["recordId"]
    _grant(gw, 13, dev(CLINIC).address, "conditions")
    clinic = gw.login(dev(CLINIC))
    assert clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
    patient = gw.login(dev(13))
    r = patient.delete(f"/v1/records/{record}")
    assert r.status_code == 200, r.text
    row = (
        gw.components.db.read()
        .execute("SELECT wrapped_key, state FROM record_keys WHERE record_id = ?", (bytes.fromhex(record[2:]),))
        .fetchone()
    )
    assert row["wrapped_key"] is None and row["state"] == "retracted"
    r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    assert r.status_code == 410 and r.json()["code"] == "record_retracted"


def test_kek_rotation_rewraps_without_touching_ciphertext(gw: RunningGateway, uploaded: dict) -> None:
    from gateway.storage.crypto import Kek
    from gateway.storage.keyrotation import rotate_kek

    kek_file = Path(gw.settings.kek_file)
    blobs_before = {p: p.read_bytes() for p in gw.settings.blob_dir.rglob("*") if p.is_file()}
    result = rotate_kek(kek_file, gw.components.db)
    assert result.rewrapped >= len(uploaded["records"])
    gw.components.kek = Kek.load(kek_file)  # what a restart does
    assert {p: p.read_bytes() for p in blobs_before} == blobs_before
    _grant(gw, 10, dev(CLINIC).address, "encounters,medications,lab-results")
    clinic = gw.login(dev(CLINIC))
    r = clinic.get(f"/v1/records/{_record(uploaded, 'encounters')}", params={"purpose": "treatment"})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- batch mode


def test_batch_mode_journals_then_anchors(tmp_path: Path) -> None:
    with running_gateway(tmp_path, ledger_mode="batch") as bgw:
        hospital = bgw.login(dev(HOSPITAL))
        body = (SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes()
        up = hospital.post("/v1/records", params={"patient": dev(14).address}, content=body, headers=FHIR).json()
        record = up["records"][0]["recordId"]
        _grant(bgw, 14, dev(CLINIC).address, up["records"][0]["category"])
        clinic = bgw.login(dev(CLINIC))
        released = [clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"}) for _ in range(3)]
        assert all(r.status_code == 200 for r in released), released[0].text
        assert all(EncryptedRelease.model_validate(r.json()).ledger.mode == "batch" for r in released)
        indexes = [r.json()["ledger"]["journalIndex"] for r in released]
        assert indexes == sorted(set(indexes))
        deadline = time.monotonic() + 10
        while not list(bgw.ledger.access.events(["AccessBatchAnchored"])):
            assert time.monotonic() < deadline, "no anchor within 10 s"
            time.sleep(0.2)
        anchor = list(bgw.ledger.access.events(["AccessBatchAnchored"]))[-1]
        assert anchor["treeSize"] >= 1
        assert bgw.http().get("/healthz").json()["checks"]["journal"]["size"] == 3


# ---------------------------------------------------------------- outages


def test_chain_outage_is_503_and_releases_nothing(tmp_path: Path) -> None:
    with running_gateway(tmp_path, rpc_timeout=2) as ogw:
        hospital = ogw.login(dev(HOSPITAL))
        body = (SAMPLES / "hl7-r4" / "AllergyIntolerance-example.json").read_bytes()
        up = hospital.post("/v1/records", params={"patient": dev(15).address}, content=body, headers=FHIR).json()
        _grant(ogw, 15, dev(HOSPITAL).address, "allergies")
        record = up["records"][0]["recordId"]
        assert hospital.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
        released_before = len(list(ogw.ledger.access.events(["AccessLogged"])))
        with ogw.chain_paused():
            r = hospital.get(f"/v1/records/{record}", params={"purpose": "treatment"})
            assert r.status_code == 503 and r.json()["code"] == "chain_unavailable", r.text
            assert "resource" not in r.json() and "encryption" not in r.json()
            assert ogw.http().get("/healthz").status_code == 503
        # service resumes by itself once the node answers again
        assert hospital.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
        assert len(list(ogw.ledger.access.events(["AccessLogged"]))) == released_before + 1


# ---------------------------------------------------------------- the ipfs blob store


def test_ipfs_store_end_to_end(tmp_path: Path, ipfs_node) -> None:  # ipfs_node: tests/support/ipfs_fixture.py
    """Upload and release through a gateway whose ciphertexts live in a real Kubo node."""
    with running_gateway(tmp_path, store="ipfs", ipfs_api=ipfs_node.api_multiaddr) as igw:
        assert igw.http().get("/healthz").json()["checks"]["storage"]["kind"] == "ipfs"
        hospital = igw.login(dev(HOSPITAL))
        r = hospital.post(
            "/v1/records", params={"patient": dev(16).address}, content=SYNTHEA.read_bytes(), headers=FHIR
        )
        assert r.status_code == 201, r.text
        records = r.json()["records"]
        pinned = ipfs_node.ipfs("pin", "ls", "--type=recursive")
        assert all(rec["locator"] in pinned for rec in records)
        labs = next(rec for rec in records if rec["category"] == "lab-results")
        _grant(igw, 16, dev(CLINIC).address, "lab-results")
        clinic = igw.login(dev(CLINIC))
        got = clinic.get(f"/v1/records/{labs['recordId']}", params={"purpose": "treatment"})
        assert got.status_code == 200, got.text
        bundle = orjson.loads(open_release(got.json(), CLINIC, dev(CLINIC).address))
        assert bundle["type"] == "collection"


# ---------------------------------------------------------------- more refusals


def test_revocation_seen_in_block_n_stops_every_later_request(gw: RunningGateway, uploaded: dict) -> None:
    """A revocation mined in block N stops every request arriving after the gateway has seen block N."""
    _grant(gw, 10, dev(LAB).address, "lab-results")
    lab = gw.login(dev(LAB))
    record = _record(uploaded, "lab-results")
    assert lab.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
    block_n = gw.ledger.consents.revoke(dev(10), dev(LAB).address).block_number
    gw.wait_indexed()
    assert gw.components.indexer.indexed_block >= block_n
    for _ in range(3):
        r = lab.get(f"/v1/records/{record}", params={"purpose": "treatment"})
        assert r.status_code == 403 and r.json()["code"] == "consent_revoked"


def test_a_revocation_mined_after_the_decision_is_refused_by_the_batch(gw: RunningGateway, uploaded: dict) -> None:
    """Strict mode: the chain has the last word. A consent revoked after the gateway decided but before
    the group commit's ``logAccessBatch`` is mined: the entry is refused on-chain (``AccessRefused``),
    the release answers what ``logAccess``'s revert did, nothing is released or ledgered."""
    _grant(gw, 10, dev(LAB).address, "lab-results")
    lab = gw.login(dev(LAB))
    record = _record(uploaded, "lab-results")
    committer = gw.components.strict
    assert committer is not None
    send = committer.commit_fn
    sent: list[int] = []

    def revoke_then_send(entries: list[AccessEntry]) -> tuple[list[AccessOutcome], TxResult]:
        gw.ledger.consents.revoke(dev(10), dev(LAB).address)
        outcomes, tx = send(entries)
        sent.append(tx.block_number)
        return outcomes, tx

    logged = len(list(gw.ledger.access.events(["AccessLogged"])))
    committer.commit_fn = revoke_then_send
    try:
        r = lab.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    finally:
        committer.commit_fn = send
    assert r.status_code == 403 and r.json()["code"] == "consent_revoked", r.text
    assert "resource" not in r.json() and "encryption" not in r.json()
    assert len(list(gw.ledger.access.events(["AccessLogged"]))) == logged
    (refused,) = gw.ledger.access.events(["AccessRefused"], from_block=sent[0])
    assert refused["index"] == 0
    assert "hcl_strict_batch_entries_count" in gw.http().get("/metrics").text


def test_expired_consent_is_refused(gw: RunningGateway, uploaded: dict) -> None:
    _grant(gw, 10, dev(LAB).address, "lab-results", seconds=60)
    lab = gw.login(dev(LAB))
    record = _record(uploaded, "lab-results")
    assert lab.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
    gw.client.w3.provider.make_request("evm_increaseTime", [120])
    gw.client.w3.provider.make_request("evm_mine", [])
    r = lab.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    assert r.status_code == 403 and r.json()["code"] == "consent_expired"


def test_storage_outage_is_503_and_releases_nothing(gw: RunningGateway, uploaded: dict) -> None:
    _grant(gw, 10, dev(CLINIC).address, "encounters,medications,lab-results")
    clinic = gw.login(dev(CLINIC))
    record = _record(uploaded, "medications")
    blobs = gw.settings.blob_dir
    hidden = blobs.with_name("blobs-away")
    before = gw.client.block_number()
    blobs.rename(hidden)
    try:
        r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
        assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
        assert list(gw.ledger.access.events(["AccessLogged"], from_block=before + 1)) == []
    finally:
        hidden.rename(blobs)
    assert clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"}).status_code == 200
