"""Member metadata with a gateway endpoint, and consortium files whose institutions run gateways: the hash
of a member without an endpoint is what it always was, one with an endpoint hashes it too; ``gateway =
true`` gives an institution a second member, its gateway, with keys of its own. No chain needed."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

import orjson
import pytest
from eth_utils import to_checksum_address

from node_client._exceptions import DeploymentError, NodeError
from node_client._node import free_port
from node_client.deploy import DEV_CONSORTIUM, MemberSpec, dev_encryption_key, dev_members, metadata_hash
from node_client.keys import dev_account, load_keystore
from node_client.network import Consortium, Institution
from node_client.network.consortium import DEV_GATEWAY_ACCOUNTS, materialise
from node_client.network.gateways import GatewayProcess, healthy
from node_client.vocabulary import Role

ADDRESS = "0x" + "ab" * 20


def _spec(endpoint: str = "") -> MemberSpec:
    return MemberSpec(ADDRESS, int(Role.GATEWAY), b"\x01" * 32, "Clinic gateway", "gateway", endpoint)


def test_the_metadata_hash_of_a_member_without_an_endpoint_is_unchanged() -> None:
    # what deploy registered before endpoints existed: SHA-256 of the sorted JSON of name, kind, address
    legacy = orjson.dumps(
        {"name": "Clinic gateway", "kind": "gateway", "address": to_checksum_address(ADDRESS)},
        option=orjson.OPT_SORT_KEYS,
    )
    assert _spec().metadata_hash == hashlib.sha256(legacy).digest() == metadata_hash(_spec().metadata)
    assert set(_spec().metadata) == {"name", "kind", "address"}
    # the dev consortium's hashes: its localised names are hashed with the rest (a member without them,
    # like every manifest written before they existed, hashes name, kind and address only, as above)
    hospital = next(m for m in dev_members() if m.kind == "hospital")
    base = {"name": hospital.name, "kind": "hospital", "address": dev_account(4).address}
    assert hospital.name_zh == "市第一人民医院"
    assert (
        hospital.metadata_hash.hex()
        == metadata_hash({**base, "name_zh": "市第一人民医院", "name_en": hospital.name}).hex()
    )


def test_a_consortium_file_gives_an_institution_and_its_gateway_chinese_names(tmp_path: Path) -> None:
    from node_client.network.consortium import Consortium

    path = _file(
        tmp_path,
        '[[institution]]\nname = "Hill Hospital"\nname_zh = "山城医院"\nkind = "hospital"\nroles = ["hospital"]\n'
        "admin = true\nvalidator = true\ngateway = true\n",
    )
    (inst,) = Consortium.load(path).institutions
    member = inst.member(ADDRESS, int(Role.HOSPITAL), b"\x01" * 32)
    gateway = inst.member(ADDRESS, int(Role.GATEWAY), b"\x01" * 32, gateway=True)
    assert (member.name_zh, member.name_en) == ("山城医院", "Hill Hospital")
    assert (gateway.name_zh, gateway.name_en, gateway.kind) == ("山城医院网关", "Hill Hospital gateway", "gateway")
    assert Consortium.development(1).institutions[1].name_zh == "市第一人民医院"


def test_an_endpoint_is_part_of_the_hashed_metadata() -> None:
    with_endpoint = _spec("http://127.0.0.1:8101")
    assert with_endpoint.metadata == {**_spec().metadata, "endpoint": "http://127.0.0.1:8101"}
    assert with_endpoint.metadata_hash == metadata_hash(with_endpoint.metadata)
    assert with_endpoint.metadata_hash != _spec().metadata_hash
    assert with_endpoint.metadata_hash != _spec("http://127.0.0.1:8102").metadata_hash


def _file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "consortium.toml"
    path.write_text("chain_id = 45021\nthreshold = 1\n" + body)
    return path


_HOSPITAL = '[[institution]]\nname = "County Hospital"\nkind = "hospital"\nroles = ["hospital"]\nadmin = true\n'


def test_gateway_true_in_a_consortium_file_gives_the_institution_a_gateway(tmp_path: Path) -> None:
    consortium = Consortium.load(_file(tmp_path, _HOSPITAL + "validator = true\ngateway = true\n"))
    (inst,) = consortium.institutions
    assert inst.gateway and consortium.gateways == (inst,)
    assert (inst.gateway_name, inst.gateway_slug) == ("County Hospital gateway", "county-hospital-gateway")
    assert Consortium.from_json(consortium.to_json()) == consortium
    plain = Consortium.load(_file(tmp_path, _HOSPITAL + "validator = true\n"))
    assert not plain.institutions[0].gateway and plain.gateways == ()
    # network.json written before gateways existed has no "gateway" key: it reads as none
    old = {**consortium.to_json(), "institutions": [{k: v for k, v in vars_of(inst).items() if k != "gateway"}]}
    assert Consortium.from_json(old).gateways == ()


def vars_of(inst: Institution) -> dict[str, object]:
    return {f: getattr(inst, f) for f in ("name", "kind", "roles", "admin", "validator", "gateway")}


def test_a_gateway_needs_a_validator_and_a_name_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="validator = true"):
        Consortium.load(
            _file(tmp_path, _HOSPITAL + "validator = true\n" + _HOSPITAL.replace("County", "Town") + "gateway = true\n")
        )
    clash = '[[institution]]\nname = "County Hospital gateway"\nroles = ["gateway"]\n'
    with pytest.raises(DeploymentError, match="unique"):
        Consortium.load(_file(tmp_path, _HOSPITAL + "validator = true\ngateway = true\n" + clash))


def test_materialise_creates_a_gateway_member_with_keys_of_its_own(tmp_path: Path) -> None:
    consortium = Consortium.load(_file(tmp_path, _HOSPITAL + "validator = true\ngateway = true\n"))
    keys = materialise(consortium, tmp_path / "net", "pw", endpoints={"County Hospital": "http://127.0.0.1:8101"})
    gateway = keys.gateways["County Hospital"]
    assert (gateway.name, gateway.kind, gateway.roles) == ("County Hospital gateway", "gateway", int(Role.GATEWAY))
    assert gateway.endpoint == "http://127.0.0.1:8101" and gateway in keys.members
    keystore = tmp_path / "net" / "keys" / "county-hospital-gateway.json"
    jwk = tmp_path / "net" / "keys" / "county-hospital-gateway.x25519.jwk"
    assert keys.gateway_keystores == {"County Hospital": keystore} and not keys.gateway_dev_accounts
    assert load_keystore(keystore, "pw").address == gateway.address != keys.members[0].address
    assert stat.S_IMODE(jwk.stat().st_mode) == 0o600 and gateway.encryption_key != keys.members[0].encryption_key
    again = materialise(consortium, tmp_path / "net", "pw")  # read back, not made again; no endpoint given
    assert again.gateways["County Hospital"].address == gateway.address
    assert again.gateways["County Hospital"].endpoint == ""


def test_the_dev_consortium_gives_each_validator_a_gateway_on_dev_accounts_from_20(tmp_path: Path) -> None:
    consortium = Consortium.development(3)
    assert [i.name for i in consortium.gateways] == [i.name for i in consortium.validators]
    assert [i.name for i in consortium.gateways] == [entry[2] for entry in DEV_CONSORTIUM[1:4]]
    endpoints = {inst.name: f"http://127.0.0.1:{9000 + n}" for n, inst in enumerate(consortium.gateways)}
    keys = materialise(consortium, tmp_path, "demo", endpoints=endpoints)
    assert keys.gateway_dev_accounts == {
        inst.name: DEV_GATEWAY_ACCOUNTS + n for n, inst in enumerate(consortium.gateways)
    }
    for inst in consortium.gateways:
        spec, index = keys.gateways[inst.name], keys.gateway_dev_accounts[inst.name]
        assert spec.address == dev_account(index).address and spec.encryption_key == dev_encryption_key(index)[1]
        assert spec.endpoint == endpoints[inst.name]
    assert not keys.member_keystores and not keys.gateway_keystores and not (tmp_path / "keys").exists()
    # the seven dev institutions first, as deploy_dev onboards them, then the three gateways
    assert [m.name for m in keys.members] == [m.name for m in dev_members()] + [
        i.gateway_name for i in consortium.gateways
    ]
    # seven validators: the "Regional Health Data Gateway" is a gateway member itself and gets no second one
    assert "Regional Health Data Gateway" not in {i.name for i in Consortium.development(7).gateways}


def test_a_gateway_process_saves_and_reads_back_its_endpoint(tmp_path: Path) -> None:
    gw = GatewayProcess(
        "County Hospital", "County Hospital gateway", tmp_path / "gw", port=8101, keystore=tmp_path / "k.json"
    )
    assert gw.url == "http://127.0.0.1:8101"
    assert GatewayProcess.from_json(gw.to_json()) == gw
    env = gw.env(
        rpc_urls=["http://a", "http://b"], manifest=tmp_path / "m.json", password_file=tmp_path / "pw", ipfs_api=None
    )
    assert env["HCL_RPC_URL"] == "http://a,http://b" and env["HCL_PUBLIC_URL"] == gw.url
    assert env["HCL_GATEWAY_KEY"] == str((tmp_path / "k.json").resolve()) and "HCL_GATEWAY_DEV_ACCOUNT" not in env
    assert env["HCL_STORE"] == "local" and "HCL_IPFS_API" not in env


def test_a_gateway_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    """A process that exits before ``/healthz`` answers: :class:`NodeError` naming it, with the log's tail."""
    gw = GatewayProcess("County Hospital", "County Hospital gateway", tmp_path / "gw", port=free_port())
    crash = [sys.executable, "-c", "import sys; print('no manifest here', sys.argv[1:]); raise SystemExit(3)"]
    with pytest.raises(NodeError, match=r"County Hospital gateway did not start(.|\n)*no manifest here"):
        gw.start(crash, dict(os.environ), timeout=30)
    assert gw.pid is None and not gw.running and not healthy(gw.url)
    assert "'gateway', 'serve'" in gw.log_path.read_text()  # launched as `<hcl> gateway serve` in its folder
