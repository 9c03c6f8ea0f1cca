"""Find a patient by an identifier (``POST /v1/patients/lookup``) over HTTP, real gateway and chain: the same
404 for an unknown identifier and one the caller may not look up; found with a consent for ``identifiers``,
and then ledgered like a release and in the patient's access log; the index holds no identifier in the
clear; nothing of it reaches the chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from gateway.fhir.identity import normalised_identifier
from gateway.storage import identifier_index
from node_client.cli import app as hcl
from node_client.vocabulary import parse_purposes
from tests.gateway.test_privacy_scan import needles_of, scan_chain
from tests.support.gateway_harness import (
    CLINIC,
    HOSPITAL,
    LAB,
    SAMPLES,
    RunningGateway,
    dev,
    open_release,
    running_gateway,
)

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
FHIR = {"Content-Type": "application/fhir+json"}
SSN = {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-30-4482"}
LICENCE = "S99911736"
PATIENT = 10


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw")) as running:
        r = running.login(dev(HOSPITAL)).post(
            "/v1/records", params={"patient": dev(PATIENT).address}, content=SYNTHEA.read_bytes(), headers=FHIR
        )
        assert r.status_code == 201, r.text
        yield running


def _lookup(gw: RunningGateway, who: int, **body: str) -> Any:
    return gw.login(dev(who)).post("/v1/patients/lookup", json={"purpose": "treatment", **body})


def _same_problem(r: Any) -> dict[str, Any]:
    assert r.status_code == 404, r.text
    return {k: v for k, v in r.json().items() if k != "instance"}


def test_unknown_and_not_allowed_get_the_same_answer(gw: RunningGateway) -> None:
    not_allowed = _same_problem(_lookup(gw, CLINIC, **SSN))
    unknown = _same_problem(_lookup(gw, CLINIC, system=SSN["system"], value="999-00-0000"))
    assert not_allowed == unknown and unknown["code"] == "patient_not_found"
    # a consent for other categories is no consent for identifiers
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(PATIENT),
        dev(LAB).address,
        gw.slots(dev(PATIENT), "lab-results"),
        parse_purposes("treatment"),
        now,
        now + 3600,
    )
    assert _same_problem(_lookup(gw, LAB, **SSN)) == unknown
    assert gw.login(dev(CLINIC)).post("/v1/patients/lookup", json={**SSN, "extra": 1}).status_code == 400


def test_found_with_an_identifiers_consent_and_ledgered_as_a_release(gw: RunningGateway) -> None:
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(PATIENT),
        dev(CLINIC).address,
        gw.slots(dev(PATIENT), "identifiers"),
        parse_purposes("treatment"),
        now,
        now + 3600,
    )
    clinic = gw.sign_in(dev(CLINIC))
    found = clinic.lookup_patient(SSN["system"], SSN["value"])
    assert found["patient"] == dev(PATIENT).address
    release = found["release"]
    bundle = orjson.loads(open_release(release, CLINIC, dev(CLINIC).address))
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert SSN in [{k: i[k] for k in ("system", "value")} for i in patient["identifier"]]

    # the same identifier written differently, and the phone number in any format, find her too
    assert (
        _lookup(gw, CLINIC, system=" " + SSN["system"], value=SSN["value"] + " ").json()["patient"] == found["patient"]
    )
    assert _lookup(gw, CLINIC, system="phone", value="(555) 849 7395").json()["patient"] == found["patient"]
    # not for another purpose, nor in an emergency: identifiers are not emergency-safe
    assert _lookup(gw, CLINIC, **SSN, purpose="research").status_code == 404
    assert _lookup(gw, CLINIC, **SSN, purpose="emergency").status_code == 404

    # ledgered: an AccessLogged of her identifiers record, in her access log as a read by the clinic
    tx = release["ledger"]["txHash"]
    receipt = type("R", (), {"receipt": gw.client.w3.eth.get_transaction_receipt(tx)})()
    (ev,) = gw.ledger.access.events_in(receipt, "AccessLogged")
    assert "0x" + bytes(ev["recordId"]).hex() == found["recordId"] and ev["requester"] == dev(CLINIC).address
    gw.wait_indexed()
    log = gw.login(dev(PATIENT)).get("/v1/me/access-log").json()["accesses"]
    mine = [a for a in log if a["ledger"].get("txHash") == tx]
    assert mine and mine[0]["category"] == "identifiers" and mine[0]["requester"] == dev(CLINIC).address


def test_the_index_holds_no_identifier_in_the_clear(gw: RunningGateway) -> None:
    db = gw.settings.db_path
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for value in (SSN["value"], LICENCE, "555-849-7395", "5558497395"):
        assert value.encode() not in stored, value
    digest = identifier_index.digest(gw.components.index_key, normalised_identifier(SSN["system"], SSN["value"]))
    assert identifier_index.records_of(gw.components.db, digest)  # and yet it finds her
    assert b"index.key" not in stored and gw.components.index_key not in stored


def test_nothing_of_the_lookup_reaches_the_chain(gw: RunningGateway) -> None:
    _lookup(gw, CLINIC, **SSN)
    needles = needles_of(orjson.loads(SYNTHEA.read_bytes())) | {SSN["value"], LICENCE}
    hay = scan_chain(gw)
    assert hay.find(needles) == []
    key = gw.components.index_key
    digests = [identifier_index.digest(key, normalised_identifier(SSN["system"], SSN["value"])), key]
    assert not any(d in data for d in digests for _, data in hay.parts)


def test_hcl_patient_lookup(gw: RunningGateway, tmp_path: Path) -> None:
    """The CLI: the address on stdout (exit 0) for a consented clinic, exit 1 for the lab without one."""
    args = [
        "--url",
        gw.url,
        "--system",
        SSN["system"],
        "--value",
        SSN["value"],
        "--password-file",
        str(tmp_path / "pw"),
    ]
    (tmp_path / "pw").write_text("pw")
    for who, code in ((CLINIC, 0), (LAB, 1)):
        keystore = tmp_path / f"{who}.json"
        keystore.write_text(orjson.dumps(dev(who).encrypt("pw")).decode())
        out = CliRunner().invoke(hcl, ["patient", "lookup", *args, "--key", str(keystore)])
        assert out.exit_code == code, out.output
        assert (dev(PATIENT).address in out.stdout) is (code == 0)


def test_in_batch_mode_a_lookup_is_a_journal_entry_in_her_access_log(tmp_path: Path) -> None:
    """Batch mode: the lookup is journaled like any release (``ledgered == released``), and her access log
    shows the read of her identifiers record by the clinic."""
    with running_gateway(tmp_path, ledger_mode="batch") as bgw:
        up = bgw.login(dev(HOSPITAL)).post(
            "/v1/records", params={"patient": dev(PATIENT).address}, content=SYNTHEA.read_bytes(), headers=FHIR
        )
        assert up.status_code == 201, up.text
        now = bgw.client.block_timestamp()
        bgw.ledger.consents.grant(
            dev(PATIENT),
            dev(CLINIC).address,
            bgw.slots(dev(PATIENT), "identifiers"),
            parse_purposes("treatment"),
            now,
            now + 3600,
        )
        journal = bgw.http().get("/healthz").json()["checks"]["journal"]["size"]
        found = _lookup(bgw, CLINIC, **SSN).json()
        ledger = found["release"]["ledger"]
        assert found["patient"] == dev(PATIENT).address and ledger["mode"] == "batch"
        assert bgw.http().get("/healthz").json()["checks"]["journal"]["size"] == journal + 1
        log = bgw.login(dev(PATIENT)).get("/v1/me/access-log").json()["accesses"]
        (entry,) = [a for a in log if a["accessId"] == found["release"]["accessId"]]
        assert entry["category"] == "identifiers" and entry["requester"] == dev(CLINIC).address
