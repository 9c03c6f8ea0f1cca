"""The consortium chain on real geth 1.13.15 Clique validators: up, agree, deploy, survive a validator,
stall without a majority, grow by governance and vote, fail over between nodes.

One dev network of three validators serves the module (about a minute to create and onboard); tests that
stop or freeze a validator bring it back before they end.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node_client._client import ChainClient
from node_client._exceptions import ChainUnavailable
from node_client._node import free_port
from node_client.cli import app
from node_client.deploy import Manifest
from node_client.network import Consortium, Institution, Network
from node_client.network.gateways import healthy
from node_client.vocabulary import Role
from tests.support.network import need_geth, start_network, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _heads(net: Network, nodes: list[int]) -> list[int]:
    return [net.client(i).block_number() for i in nodes]


def test_three_validators_agree_seal_in_turn_and_hold_the_deployment(network: Network) -> None:
    assert [r.running for r in network.status()] == [True, True, True]
    # a connection dialled from both sides at once is dropped and re-dialled: peer counts settle in a moment
    wait_until(
        lambda: all(r.peers == 2 and len(r.signers) == 3 for r in network.status()),
        timeout=30,
        what="every validator to have both peers and three signers",
    )
    wait_until(lambda: all(r.sealed_by_self > 0 for r in network.status()), timeout=30, what="every signer to seal")
    assert network.manifest_path is not None
    manifest = Manifest.load(network.manifest_path)
    assert manifest.dev and manifest.chain_id == network.chain_id != 31337
    ledger = manifest.connect(network.client(1))  # any validator serves the same deployment
    assert all(ledger.members.is_active(m["address"], m["roles"]) for m in manifest.members)


def test_blocks_carry_a_clique_seal_and_the_client_needs_no_flag(network: Network) -> None:
    block = network.client().w3.eth.get_block("latest")
    assert "proofOfAuthorityData" in block and len(block["proofOfAuthorityData"]) == 32 + 65
    assert block["baseFeePerGas"] > 0  # London: EIP-1559 fees as on Hardhat


def test_the_client_fails_over_to_the_next_node(network: Network) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = ChainClient(rpc_url=f"{dead},{network.nodes[1].url}", timeout=5)
    assert client.block_number() > 0 and client.rpc_url == network.nodes[1].url
    with pytest.raises(ChainUnavailable):
        ChainClient(rpc_url=dead, timeout=2).block_number()


def test_one_of_three_stopped_the_others_go_on_and_it_catches_up(network: Network) -> None:
    network.nodes[2].stop()
    start = max(_heads(network, [0, 1]))
    wait_until(lambda: min(_heads(network, [0, 1])) >= start + 4, timeout=30, what="two validators to seal on")
    assert not network.status()[2].running
    network.up(Consortium.development(3), manifest_path=Path(str(network.manifest_path)))  # restarts it
    # a restarted validator may seal a block of its own at the tip before it syncs: Clique resolves that
    # fork by a short reorg, so "caught up" is all three agreeing on one block at or past where the two were
    wait_until(lambda: _agree_from(network, start + 4), timeout=90, what="the restarted one to catch up and agree")


def _agree_from(net: Network, height: int) -> bool:
    """All three hold one block at ``tip`` (a node reorganising onto a shorter, heavier Clique chain may
    not have that height for a moment: then they do not agree yet)."""
    tip = min(_heads(net, [0, 1, 2]))
    blocks = [net.rpc(i, "eth_getBlockByNumber", [hex(tip), False]) for i in range(3)]
    return tip >= height and None not in blocks and len({b["hash"] for b in blocks}) == 1


def test_two_of_three_frozen_production_stalls_then_resumes(network: Network) -> None:
    network.nodes[1].freeze()
    network.nodes[2].freeze()
    try:
        time.sleep(3)  # the last block a lone signer may seal lands within its turn
        before = network.client(0).block_number()
        time.sleep(5)
        assert network.client(0).block_number() <= before + 1, "a single signer of three must not run the chain"
    finally:
        network.nodes[1].thaw()
        network.nodes[2].thaw()
    wait_until(lambda: network.client(0).block_number() >= before + 3, timeout=60, what="production to resume")


def test_a_new_validator_institution_joins_by_governance_and_clique_votes(network: Network) -> None:
    node = network.add_validator(Institution("Harbour County Hospital", "hospital", int(Role.HOSPITAL)), timeout=180)
    wait_until(lambda: all(len(r.signers) == 4 for r in network.status() if r.running), timeout=60, what="four signers")
    wait_until(lambda: network.status()[-1].sealed_by_self > 0, timeout=60, what="the new validator to seal")
    assert network.manifest_path is not None
    ledger = Manifest.load(network.manifest_path).connect(network.client())
    assert network.consortium is not None
    member = next(m for m in network.consortium.institutions if m.name == "Harbour County Hospital")
    assert member.validator and node.signer
    keystore = network.folder / "keys" / f"{member.slug}.json"
    from node_client.keys import keystore_address

    assert ledger.members.is_active(keystore_address(keystore), int(Role.HOSPITAL))


def test_status_and_down_on_the_command_line(network: Network) -> None:
    out = CliRunner().invoke(app, ["network", "status", "--folder", str(network.folder), "--json"])
    assert out.exit_code == 0, out.output
    assert '"running": true' in out.output and "signers" in out.output


# ---------------------------------------------------------------- a consortium of one's own (not dev)


ONE_VALIDATOR = """
chain_id = 73_2027
threshold = 2

[[institution]]
name = "City First People's Hospital"
roles = ["hospital", "emergency"]
admin = true
validator = true
gateway = true

[[institution]]
name = "Riverside Community Health Centre"
roles = ["clinic"]
admin = true

[[institution]]
name = "Regional Health Data Gateway"
roles = ["gateway"]
"""


def test_the_example_consortium_file_is_valid() -> None:
    consortium = Consortium.load(REPO / "deployments" / "consortium.example.toml")
    assert len(consortium.validators) == 3 and not consortium.dev and consortium.threshold == 2
    assert [i.name for i in consortium.gateways] == [
        "City First People's Hospital",
        "Riverside Community Health Centre",
    ]


def test_a_consortium_file_gets_fresh_keys_and_refuses_dev_conveniences(tmp_path: Path) -> None:
    need_geth()
    consortium_file = tmp_path / "consortium.toml"
    consortium_file.write_text(ONE_VALIDATOR)
    consortium = Consortium.load(consortium_file)
    net = start_network(tmp_path / "net", consortium, gateways=True)  # its gateway signs with a keystore
    try:
        manifest = Manifest.load(tmp_path / "net" / "manifest.json")
        assert not manifest.dev and manifest.threshold == 2 and len(manifest.members) == 4
        assert (tmp_path / "net" / "password").stat().st_mode & 0o077 == 0
        (gw,) = net.gateways
        assert (
            gw.dev_account is None
            and gw.keystore == tmp_path / "net" / "keys" / "city-first-people-s-hospital-gateway.json"
        )
        assert manifest.members[-1]["endpoint"] == gw.url and healthy(gw.url)
        env = {"HCL_RPC_URL": net.nodes[0].url, "HCL_MANIFEST": str(tmp_path / "net" / "manifest.json")}
        runner = CliRunner()
        revoke = ["consent", "revoke", "--grantee", "0x" + "11" * 20, "--dev-account", "10"]
        refused = runner.invoke(app, revoke, env=env)
        assert refused.exit_code == 2 and "dev deployment" in refused.output
        dev_deploy = runner.invoke(app, ["deploy", "--dev"], env={**env, "HCL_MANIFEST": str(tmp_path / "x.json")})
        assert dev_deploy.exit_code == 2 and "dev chain" in dev_deploy.output
    finally:
        net.down()
    assert not any(n.running for n in net.nodes)


def test_geth_is_pinned_and_built_by_the_script() -> None:
    script = (REPO / "scripts" / "build_geth").read_text()
    assert "v1.13.15" in script and "-checklinkname=0" in script
    if shutil.which("go") is None:
        pytest.skip("no Go here")
