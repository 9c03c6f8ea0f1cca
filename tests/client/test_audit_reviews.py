"""``hcl audit review``, ``fetch-reviews`` and ``replay --reviews``: an auditor signs a review from its keystore,
the real gateway keeps and anchors it, and the replay checks what it is given against the chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from node_client.audit import replay
from node_client.audit_cli import audit_app
from node_client.commitments import reason_commitment
from node_client.vocabulary import parse_categories
from tests.support.gateway_harness import AUDITOR, HOSPITAL, SALT, RunningGateway, dev, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("audit-reviews")) as running:
        yield running


def _break_glass(gw: RunningGateway, patient: int) -> str:
    access_id, _ = gw.ledger.consents.emergency_access(
        dev(HOSPITAL), dev(patient).address, parse_categories("allergies"), reason_commitment("unconscious", SALT)
    )
    gw.wait_indexed()
    return "0x" + access_id.hex()


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in lines))
    return path


def test_reviews_signed_from_the_keystore_are_verified_by_the_replay(gw: RunningGateway, tmp_path: Path) -> None:
    reviewed, unreviewed = _break_glass(gw, 11), _break_glass(gw, 12)
    keystore = tmp_path / "auditor.json"
    keystore.write_text(orjson.dumps(dev(AUDITOR).encrypt("pw")).decode())
    (tmp_path / "pw").write_text("pw")
    auth = ["--url", gw.url, "--key", str(keystore), "--password-file", str(tmp_path / "pw")]
    note = "unconscious on arrival; only allergies were read"
    run = CliRunner().invoke(audit_app, ["review", reviewed, "--verdict", "justified", "--note", note, *auth])
    assert run.exit_code == 0, run.output
    again = CliRunner().invoke(audit_app, ["review", reviewed, "--verdict", "unjustified", "--note", "x", *auth])
    assert again.exit_code == 2 and "already_reviewed" in again.output

    reviews = tmp_path / "reviews.jsonl"
    fetched = CliRunner().invoke(audit_app, ["fetch-reviews", str(reviews), *auth])
    assert fetched.exit_code == 0, fetched.output
    header, kept = _lines(reviews)
    assert header["gateway"] == gw.components.gateway_account.address and kept["note"] == note
    report = replay(gw.client, gw.manifest, reviews=reviews)
    assert report.errors == []
    summary = report.summary["emergency_reviews"]
    assert summary["reviews"] == summary["anchored"] == 1 and summary["unreviewed"] == [unreviewed]

    # a stored review edited afterwards: its note no longer opens the signed hash
    edited = _write(tmp_path / "note.jsonl", [header, {**kept, "note": "routine check"}])
    assert [a.kind for a in replay(gw.client, gw.manifest, reviews=edited).errors] == ["review_note_mismatch"]
    # its verdict changed: the signature, the hash chain and the anchored root all disagree
    edited = _write(tmp_path / "verdict.jsonl", [header, {**kept, "verdict": "unjustified"}])
    report = replay(gw.client, gw.manifest, reviews=edited)
    kinds = {a.kind for a in report.errors}
    assert kinds == {"review_signature_invalid", "review_chain_broken", "review_root_mismatch"}
    assert len(report.summary["emergency_reviews"]["unreviewed"]) == 2  # an invalid review reviews nothing
    # a review dropped: the anchored root covers more than it is given
    dropped = _write(tmp_path / "dropped.jsonl", [header])
    assert [a.kind for a in replay(gw.client, gw.manifest, reviews=dropped).errors] == ["review_root_mismatch"]
    # the CLI exits 1 on such a file and says how many emergencies are unreviewed
    out = tmp_path / "out"
    chain = ["--rpc-url", gw.settings.rpc_url, "--manifest", str(gw.settings.manifest)]
    cli = CliRunner().invoke(audit_app, ["replay", *chain, "--reviews", str(edited), "--out", str(out)])
    assert cli.exit_code == 1 and "unreviewed emergency accesses: 2" in cli.output, cli.output
