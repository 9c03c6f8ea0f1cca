"""node_client.gateway_client and ``hcl audit fetch-journal``: an auditor takes the journal of a *running*
batch gateway over HTTP (a real gateway and chain), and the replay of what arrived is clean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway
from typer.testing import CliRunner

from node_client._exceptions import GatewayProblem, GatewayUnavailable
from node_client._node import free_port
from node_client.audit import replay
from node_client.cli import app
from node_client.gateway_client import GatewayClient
from node_client.keys import new_keystore
from node_client.vocabulary import parse_categories, parse_purposes

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
            parse_categories("lab-results"),
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
