"""``hcl patient category-key``: a patient makes her category key and hands it to a gateway, against a real
gateway and chain; by default nothing secret is printed and nothing is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from eth_account import Account
from typer.testing import CliRunner

from node_client import healthcode as hc
from node_client.blinding import category_key, sign_category_key
from node_client.cli import app
from node_client.vocabulary import Category
from tests.support.gateway_harness import RunningGateway, dev, running_gateway

runner = CliRunner()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("key-cli")) as running:
        yield running


def _env(gw: RunningGateway) -> dict[str, str]:
    return {"HCL_RPC_URL": gw.settings.rpc_url, "HCL_MANIFEST": str(gw.settings.manifest)}


def test_help() -> None:
    for args in (["patient"], ["patient", "category-key"], ["code", "new"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
    assert "--enrol" in runner.invoke(app, ["patient", "category-key", "--help"]).output
    assert "--no-category-key" in runner.invoke(app, ["code", "new", "--help"]).output


def test_by_default_nothing_secret_is_printed_and_nothing_is_sent(gw: RunningGateway) -> None:
    patient = dev(13)
    out = runner.invoke(app, ["patient", "category-key", "--dev-account", "13", "--json"], env=_env(gw))
    assert out.exit_code == 0, out.output
    data = orjson.loads(out.stdout)
    assert data["patient"] == patient.address and len(data["fingerprint"]) == 16 and "learned" not in data
    domain = gw.ledger.consents.domain()
    signature = sign_category_key(patient, domain)
    assert (
        signature.hex() not in out.output
        and category_key(domain, patient.address, signature).key.hex() not in out.output
    )
    again = runner.invoke(app, ["patient", "category-key", "--dev-account", "13", "--json"], env=_env(gw))
    assert orjson.loads(again.stdout)["fingerprint"] == data["fingerprint"]  # same wallet, same key


def test_enrol_hands_the_key_to_the_gateway_once(gw: RunningGateway, tmp_path: Path) -> None:
    patient = Account.create()
    keystore, password = tmp_path / "patient.json", tmp_path / "pw"
    keystore.write_text(orjson.dumps(patient.encrypt("pw")).decode())
    password.write_text("pw")
    args = ["patient", "category-key", "--key", str(keystore), "--password-file", str(password), "--enrol", gw.url]
    assert gw.components.category_keys.get(patient.address) is None
    first = runner.invoke(app, args, env=_env(gw))
    assert first.exit_code == 0, first.output
    assert "now holds it" in first.output
    domain = gw.ledger.consents.domain()
    assert gw.components.category_keys.get(patient.address) == category_key(
        domain, patient.address, sign_category_key(patient, domain)
    )
    second = runner.invoke(app, [*args, "--json"], env=_env(gw))
    assert second.exit_code == 0 and orjson.loads(second.stdout)["learned"] is False


def test_an_unreachable_gateway_is_a_clear_error(gw: RunningGateway) -> None:
    out = runner.invoke(
        app, ["patient", "category-key", "--dev-account", "13", "--enrol", "http://127.0.0.1:9"], env=_env(gw)
    )
    assert out.exit_code == 1 and "GatewayUnavailable" in out.output, out.output


def test_a_guardian_is_handed_her_wards_key_and_grants_a_blinded_category(gw: RunningGateway) -> None:
    """``hcl code new --patient WARD --ward-key-from URL``: the gateway that holds the ward's key hands it to
    her current guardian, whose grant names the ward's slot and whose code carries the ward's key; without
    it a guardian may grant only the emergency-safe categories; a guardian removed meanwhile is refused."""
    ward, guardian, clinic = dev(17), dev(18), dev(5)
    domain = gw.ledger.consents.domain()
    gw.ledger.consents.set_guardian(ward, guardian.address, gw.client.block_timestamp() + 86_400)
    base = ["code", "new", "--dev-account", "18", "--patient", ward.address, "--grantee", clinic.address]
    base += ["--categories", "mental-health"]
    refused = runner.invoke(app, base, env=_env(gw))
    assert refused.exit_code == 2 and "--ward-key-from" in refused.output, refused.output

    made = runner.invoke(app, [*base, "--ward-key-from", gw.url], env=_env(gw))
    assert made.exit_code == 0, made.output
    code = hc.decode(made.stdout.strip())
    key = category_key(domain, ward.address, sign_category_key(ward, domain))
    assert code.signed.signer == guardian.address and code.key() == key
    assert code.signed.message.categories == key.slots(1 << Category.MENTAL_HEALTH)
    submitted = runner.invoke(app, ["code", "submit", "--dev-account", "4", made.stdout.strip()], env=_env(gw))
    assert submitted.exit_code == 0, submitted.output
    assert gw.ledger.consents.consent_of(ward.address, clinic.address).categories == key.slots(
        1 << Category.MENTAL_HEALTH
    )

    gw.ledger.consents.remove_guardian(ward, guardian.address)
    gone = runner.invoke(app, [*base, "--ward-key-from", gw.url], env=_env(gw))
    assert gone.exit_code == 1 and "not_patient" in gone.output, gone.output
