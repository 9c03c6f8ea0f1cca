"""The ``hcl`` command line, run in-process with typer's CliRunner against the test node."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from node_client.blinding import category_key, sign_category_key
from node_client.cli import app, parse_duration
from node_client.deploy import Ledger, Manifest
from node_client.keys import keystore_address, load_keystore
from node_client.vocabulary import Category

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, node, manifest: Manifest, ledger: Ledger) -> dict[str, str]:
    path = tmp_path / "manifest.json"
    manifest.save(path)
    return {"HCL_RPC_URL": node.url, "HCL_MANIFEST": str(path)}


def test_help_everywhere() -> None:
    for args in (
        [],
        ["chain"],
        ["member"],
        ["consent"],
        ["keys"],
        ["dev"],
        ["deploy"],
        ["member", "propose"],
        ["consent", "grant"],
        ["consent", "check"],
        ["gas-report"],
        ["chain", "up"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("hcl ")


def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * 86_400
    assert parse_duration("12h") == 43_200
    assert parse_duration("2w") == 1_209_600
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_keys_new_and_show(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    ks = tmp_path / "k" / "patient.json"
    result = runner.invoke(app, ["keys", "new", str(ks), "--password-file", str(pw)])
    assert result.exit_code == 0, result.output
    assert ks.stat().st_mode & 0o777 == 0o600
    address = keystore_address(ks)
    assert address in result.output
    assert load_keystore(ks, "correct horse battery staple").address == address
    shown = runner.invoke(app, ["keys", "show", str(ks)])
    assert shown.output.strip() == address
    again = runner.invoke(app, ["keys", "new", str(ks), "--password-file", str(pw)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def test_wrong_password_is_a_clear_error(tmp_path: Path, env: dict[str, str], accounts) -> None:
    pw = tmp_path / "pw"
    pw.write_text("right")
    ks = tmp_path / "k.json"
    runner.invoke(app, ["keys", "new", str(ks), "--password-file", str(pw)])
    pw.write_text("wrong")
    result = runner.invoke(
        app,
        ["consent", "revoke", "--grantee", accounts.hospital.address, "--key", str(ks), "--password-file", str(pw)],
        env=env,
    )
    assert result.exit_code == 1
    assert "KeystoreError" in result.output


def test_member_list_json(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["member", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.output)
    assert data["governance"] == {"admins": 3, "threshold": 2}
    names = {m["name"] for m in data["members"]}
    assert "City First People's Hospital" in names
    assert all(m["status"] == "active" for m in data["members"])


def test_member_governance_round_trip(env: dict[str, str], ledger: Ledger, accounts) -> None:
    target = accounts.clinic.address
    out = runner.invoke(app, ["member", "propose", "suspend", target, "--dev-account", "0"], env=env)
    assert out.exit_code == 0, out.output
    proposal_id = ledger.members.proposal_count()
    early = runner.invoke(app, ["member", "execute", str(proposal_id), "--dev-account", "0"], env=env)
    assert early.exit_code == 1 and "MemberRegistryNotEnoughApprovals" in early.output
    assert runner.invoke(app, ["member", "approve", str(proposal_id), "--dev-account", "1"], env=env).exit_code == 0
    assert runner.invoke(app, ["member", "execute", str(proposal_id), "--dev-account", "1"], env=env).exit_code == 0
    assert ledger.members.active_roles(target) == 0


def test_member_propose_transfer_records_names_the_departed_gateway(
    env: dict[str, str], ledger: Ledger, accounts
) -> None:
    from node_client.contracts import Action

    departed = accounts.gateway.address
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, departed)
    missing = runner.invoke(
        app, ["member", "propose", "transfer-records", accounts.hospital.address, "--dev-account", "0"], env=env
    )
    assert missing.exit_code == 2 and "--from-gateway" in missing.output
    out = runner.invoke(
        app,
        [
            "member",
            "propose",
            "transfer-records",
            accounts.hospital.address,
            "--from-gateway",
            departed,
            "--dev-account",
            "0",
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    p = ledger.members.proposal_of(ledger.members.proposal_count())
    assert (p.action, p.target, p.arg) == (
        Action.TRANSFER_RECORDS,
        accounts.hospital.address,
        ledger.members.number_of(departed),
    )


def test_consent_grant_check_list_revoke(env: dict[str, str], ledger: Ledger, accounts) -> None:
    hospital = accounts.hospital.address
    patient = accounts.patients[0].address
    granted = runner.invoke(
        app,
        [
            "consent",
            "grant",
            "--grantee",
            hospital,
            "--categories",
            "allergies,lab-results",
            "--purpose",
            "treatment",
            "--valid",
            "30d",
            "--dev-account",
            "10",
        ],
        env=env,
    )
    assert granted.exit_code == 0, granted.output
    domain = ledger.consents.domain()
    lab = category_key(domain, patient, sign_category_key(accounts.patients[0], domain)).slot(Category.LAB_RESULTS)
    assert ledger.consents.consent_of(patient, hospital).categories == 1 << Category.ALLERGIES | 1 << lab  # her slots
    as_her = ["--dev-account", "10"]
    ok = runner.invoke(app, ["consent", "check", patient, hospital, "lab-results", *as_her, "--json"], env=env)
    assert ok.exit_code == 0 and orjson.loads(ok.output)["allowed"] is True
    by_slot = runner.invoke(app, ["consent", "check", patient, hospital, f"slot-{lab}", "--json"], env=env)
    assert by_slot.exit_code == 0 and orjson.loads(by_slot.output)["allowed"] is True  # no key needed
    keyless = runner.invoke(app, ["consent", "check", patient, hospital, "lab-results"], env=env)
    assert keyless.exit_code == 2 and "slot of its own" in keyless.output
    refused = runner.invoke(app, ["consent", "check", patient, hospital, "imaging", "treatment", *as_her], env=env)
    assert refused.exit_code == 3 and "the consent does not cover imaging (wrong_category)" in refused.output
    research = runner.invoke(
        app, ["consent", "check", patient, hospital, "lab-results", "research", *as_her, "--json"], env=env
    )
    assert research.exit_code == 3 and orjson.loads(research.output)["reason"] == "wrong_purpose"
    listed = orjson.loads(runner.invoke(app, ["consent", "list", "--patient", patient, "--json"], env=env).output)
    assert listed[0]["grantee"] == hospital and listed[0]["state"] == "active"
    assert listed[0]["categories"] == ["allergies", f"slot-{lab}"]  # without her key
    mine = runner.invoke(app, ["consent", "list", "--patient", patient, *as_her, "--json"], env=env)
    assert orjson.loads(mine.output)[0]["categories"] == ["allergies", "lab-results"]
    not_hers = runner.invoke(app, ["consent", "list", "--patient", patient, "--dev-account", "11"], env=env)
    assert not_hers.exit_code == 2 and "only she can make her key" in not_hers.output
    revoked = runner.invoke(app, ["consent", "revoke", "--grantee", hospital, "--dev-account", "10"], env=env)
    assert revoked.exit_code == 0
    after = runner.invoke(app, ["consent", "check", patient, hospital, "allergies"], env=env)
    assert after.exit_code == 3 and "revoked this institution's consent (consent_revoked)" in after.output


def test_bad_input_exits_2(env: dict[str, str]) -> None:
    result = runner.invoke(
        app,
        ["consent", "grant", "--grantee", "not-an-address", "--categories", "allergies", "--dev-account", "10"],
        env=env,
    )
    assert result.exit_code == 2 and "not an Ethereum address" in result.output
    result = runner.invoke(app, ["consent", "check", "0x" + "11" * 20, "0x" + "22" * 20, "x-rays"], env=env)
    assert result.exit_code == 2 and "unknown category" in result.output


def test_missing_manifest_is_a_clear_error(tmp_path: Path, node) -> None:
    env = {"HCL_RPC_URL": node.url, "HCL_MANIFEST": str(tmp_path / "none.json")}
    result = runner.invoke(app, ["member", "list"], env=env)
    assert result.exit_code == 1 and "DeploymentError" in result.output


def test_unreachable_chain_fails_closed(tmp_path: Path, manifest: Manifest) -> None:
    from node_client._node import free_port

    path = tmp_path / "m.json"
    manifest.save(path)
    env = {"HCL_RPC_URL": f"http://127.0.0.1:{free_port()}", "HCL_MANIFEST": str(path), "HCL_RPC_TIMEOUT": "2"}
    result = runner.invoke(app, ["member", "list"], env=env)
    assert result.exit_code == 1 and "ChainUnavailable" in result.output
