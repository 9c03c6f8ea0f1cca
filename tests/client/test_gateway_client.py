"""node_client.gateway_client, the one client of the gateway protocol, against a real gateway and chain:
sign-in, upload, discovery, release and opening it with the reader's X25519 key, consents, the patient's
views, proofs, refusals as GatewayProblem; and ``hcl audit fetch-journal``: an auditor takes the journal of
a *running* batch gateway over HTTP, and the replay of what arrived is clean."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from node_client import hpke, signing
from node_client._exceptions import GatewayProblem, GatewayUnavailable
from node_client._node import free_port
from node_client.audit import replay
from node_client.cli import app
from node_client.deploy import dev_encryption_key
from node_client.gateway_client import GatewayClient, open_release
from node_client.keys import new_keystore
from node_client.vocabulary import parse_purposes
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

AUDITOR = 8
OBSERVATION = SAMPLES / "hl7-r4" / "Observation-f001.json"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("batch"), ledger_mode="batch") as gw:
        hospital = gw.login(dev(HOSPITAL))
        up = hospital.post(
            "/v1/records",
            params={"patient": dev(10).address},
            content=OBSERVATION.read_bytes(),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert up.status_code == 201, up.text
        now = gw.client.block_timestamp()
        gw.ledger.consents.grant(
            dev(10),
            dev(CLINIC).address,
            gw.slots(dev(10), "lab-results"),
            parse_purposes("treatment"),
            now,
            now + 86_400,
        )
        gw.wait_indexed()
        clinic = gw.login(dev(CLINIC))
        for record in up.json()["records"]:
            got = clinic.get(f"/v1/records/{record['recordId']}", params={"purpose": "treatment"})
            assert got.status_code == 200, got.text
        yield gw


def test_an_auditor_fetches_the_running_gateways_journal_and_it_replays_clean(
    batch: RunningGateway, tmp_path: Path
) -> None:
    with GatewayClient(batch.url) as gw:
        gw.sign_in(dev(AUDITOR))
        size = gw.download_journal(tmp_path / "journal.jsonl")
    lines = [orjson.loads(line) for line in (tmp_path / "journal.jsonl").read_bytes().splitlines()]
    assert size > 0 and lines[0]["type"] == "header" and lines[0]["size"] >= 1
    assert [e for e in lines if e["type"] == "entry"]
    report = replay(batch.client, batch.manifest, journal=tmp_path / "journal.jsonl")
    assert report.exit_code == 0, [a.to_json() for a in report.errors]


def test_the_cli_signs_in_with_a_keystore(batch: RunningGateway, tmp_path: Path) -> None:
    key = tmp_path / "auditor.json"
    new_keystore(key, "pw", account=dev(AUDITOR))
    (tmp_path / "pw").write_text("pw\n")
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "fetch-journal",
            str(tmp_path / "j.jsonl"),
            "--url",
            batch.url,
            "--key",
            str(key),
            "--password-file",
            str(tmp_path / "pw"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "j.jsonl").read_bytes().startswith(b'{"type":"header"')


def test_only_auditors_get_the_journal(batch: RunningGateway, tmp_path: Path) -> None:
    with GatewayClient(batch.url) as gw:
        gw.sign_in(dev(CLINIC))
        with pytest.raises(GatewayProblem) as refused:
            gw.download_journal(tmp_path / "journal.jsonl")
    assert (refused.value.status, refused.value.code) == (403, "wrong_role")
    assert not (tmp_path / "journal.jsonl").exists() and not (tmp_path / "journal.jsonl.part").exists()


def test_a_gateway_that_does_not_answer_is_its_own_error(tmp_path: Path) -> None:
    with GatewayClient(f"http://127.0.0.1:{free_port()}", timeout=2) as gw, pytest.raises(GatewayUnavailable):
        gw.sign_in(dev(AUDITOR))


# ---------------------------------------------------------------- the protocol, call by call


def test_a_release_opens_only_for_its_reader_with_the_protocols_info_and_aad() -> None:
    private, public = hpke.generate_keypair()
    record, reader = b"\x01" * 32, dev(CLINIC).address
    enc, ct = hpke.seal(
        public, b'{"resourceType":"Bundle"}', info=hpke.RELEASE_INFO, aad=hpke.release_aad(record, reader)
    )
    body = {
        "recordId": "0x" + record.hex(),
        "encryption": {"enc": base64.b64encode(enc).decode(), "ciphertext": base64.b64encode(ct).decode()},
    }
    assert open_release(body, private, reader) == b'{"resourceType":"Bundle"}'
    with pytest.raises(hpke.HpkeError):
        open_release(body, private, dev(HOSPITAL).address)  # sealed to another reader
    with pytest.raises(hpke.HpkeError):
        open_release({"recordId": body["recordId"]}, private, reader)  # neither sealed nor plaintext
    assert open_release({"resource": {"resourceType": "Patient"}}, private, reader) == b'{"resourceType":"Patient"}'


def test_public_calls_work_without_sign_in_and_request_answers_raw(batch: RunningGateway) -> None:
    with GatewayClient(batch.url) as gw:
        assert gw.health()["status"] == "ok"
        assert dev(CLINIC).address in {m["address"] for m in gw.members()}
        assert gw.request("GET", "/v1/me/records").status_code == 401
        with pytest.raises(GatewayProblem) as refused:
            gw.my_records()
        assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
        with pytest.raises(GatewayProblem):
            gw.open({"resource": {}}, b"\x00" * 32)  # a release is for a signed-in reader


def test_upload_consent_discover_read_proof_revoke_through_the_client(batch: RunningGateway) -> None:
    patient, clinic_acct = dev(11), dev(CLINIC)
    hospital, clinic, me = batch.sign_in(dev(HOSPITAL)), batch.sign_in(clinic_acct), batch.sign_in(patient)
    up = hospital.upload(patient.address, OBSERVATION.read_bytes())
    assert up["patient"] == patient.address and [r["category"] for r in up["records"]] == ["lab-results"]
    record_id = up["records"][0]["recordId"]

    consents, now = batch.ledger.consents, batch.client.block_timestamp()
    categories, purposes = batch.slots(patient, "lab-results"), parse_purposes("treatment")
    grant = consents.build_grant(
        patient.address, clinic_acct.address, categories, purposes, now, now + 86_400, deadline=now + 3600
    )
    consent_id = clinic.submit_consent(signing.sign(patient, consents.domain(), grant).as_dict())["consentId"]
    batch.wait_indexed()

    found = clinic.discover(patient.address, category="lab-results")
    assert found["consentedCategories"] == ["lab-results"] and record_id in {r["recordId"] for r in found["records"]}
    body = clinic.release(record_id, "treatment")
    assert body["consentId"] == consent_id and "resource" not in body
    assert "f001" in orjson.dumps(clinic.open(body, dev_encryption_key(CLINIC)[0])).decode()
    with pytest.raises(hpke.HpkeError):
        clinic.open(body, dev_encryption_key(HOSPITAL)[0])  # not the reader's key
    proof = clinic.proof(body["ledger"]["journalIndex"])
    assert proof["mode"] == "batch" and proof["accessId"] == body["accessId"]

    batch.wait_indexed()
    assert record_id in {r["recordId"] for r in me.my_records()}
    assert consent_id in {c["consentId"] for c in me.my_consents()["consents"]}
    assert body["accessId"] in {a["accessId"] for a in me.my_access_log()["accesses"]}

    revoke = consents.build_revoke(patient.address, clinic_acct.address, deadline=now + 3600)
    assert me.revoke_consent(consent_id, signing.sign(patient, consents.domain(), revoke).as_dict())["revoked"]
    with pytest.raises(GatewayProblem) as refused:
        clinic.release(record_id, "treatment")
    assert (refused.value.status, refused.value.code) == (403, "consent_revoked")
    with pytest.raises(GatewayProblem) as bad:
        clinic.emergency_access("0x00", "not a transaction", bytes(32))
    assert bad.value.status in (400, 403, 422)
    with pytest.raises(GatewayProblem):
        me.relay("0x00")
