"""One gateway per institution on the consortium network (``hcl network up --gateways``): real geth
validators, three ``hcl gateway serve`` processes on the endpoints registered in their members' metadata.

The package's ``gateway_network`` (tests/system/federation/conftest.py: three validators, each institution with
its Kubo node and batch-mode gateway) serves the module, after the federation tests; the last test stops it
and brings it back.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node_client.cli import app
from node_client.deploy import OPTIONAL_METADATA, Manifest, metadata_hash
from node_client.network import Consortium, Network
from node_client.vocabulary import Role

pytestmark = pytest.mark.slow


def _health(url: str) -> tuple[int, dict[str, object]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/healthz", timeout=10) as reply:
        return int(reply.status), json.loads(reply.read())


def _gateway_members(net: Network) -> list[dict[str, object]]:
    assert net.manifest_path is not None
    return [m for m in Manifest.load(net.manifest_path).members if m["kind"] == "gateway" and "endpoint" in m]


def test_each_institution_runs_a_healthy_gateway_in_its_own_folder(gateway_network: Network) -> None:
    gateways = gateway_network.gateways
    assert [g.name for g in gateways] == [n.name for n in gateway_network.nodes]
    assert len({g.url for g in gateways}) == 3 and all(g.running for g in gateways)
    for gw in gateways:
        assert _health(gw.url)[0] == 200
        assert gw.data_dir == gateway_network.folder / "gateways" / gw.data_dir.name
        assert (gw.data_dir / "gateway.db").exists() and gw.log_path.exists()
        assert gw.dev_account is not None and gw.dev_account >= 20 and gw.ledger_mode == "batch"


def test_the_manifest_and_the_chain_name_each_gateway_and_its_endpoint(gateway_network: Network) -> None:
    members = _gateway_members(gateway_network)
    assert [m["name"] for m in members] == [g.member for g in gateway_network.gateways]
    assert [m["endpoint"] for m in members] == [g.url for g in gateway_network.gateways]
    assert gateway_network.manifest_path is not None
    ledger = Manifest.load(gateway_network.manifest_path).connect(gateway_network.client(2))
    for entry in members:
        meta = {k: entry[k] for k in ("name", "kind", "address", *OPTIONAL_METADATA) if k in entry}
        assert meta["endpoint"] and meta["name_zh"].endswith("网关")  # hashed: a manifest edit cannot change them
        on_chain = ledger.members.member_of(str(entry["address"]))
        assert on_chain.metadata_hash == metadata_hash(meta) == bytes.fromhex(str(entry["metadataHash"])[2:])
        assert ledger.members.is_active(str(entry["address"]), int(Role.GATEWAY))
    # the old single gateway (dev account 3) is still there, without an endpoint
    assert any(
        m["name"] == "Regional Health Data Gateway" and "endpoint" not in m for m in ledger_members(gateway_network)
    )


def ledger_members(net: Network) -> list[dict[str, object]]:
    assert net.manifest_path is not None
    return Manifest.load(net.manifest_path).members


def test_status_json_lists_the_gateways_with_url_and_pid(gateway_network: Network) -> None:
    out = CliRunner().invoke(app, ["network", "status", "--folder", str(gateway_network.folder), "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    listed = [(r["gateway"]["name"], r["gateway"]["url"], r["gateway"]["pid"], r["gateway"]["healthy"]) for r in rows]
    assert listed == [(g.member, g.url, g.pid, True) for g in gateway_network.gateways]


def test_down_and_up_restart_the_gateways_on_their_endpoints_with_their_data(gateway_network: Network) -> None:
    net = gateway_network
    before = {g.name: (g.url, g.pid, _data(g.data_dir)) for g in net.gateways}
    marker = net.gateways[0].data_dir / "kept.txt"
    marker.write_text("kept")
    pids = [g.pid for g in net.gateways]
    net.down()
    assert all(p is not None and not _alive(p) for p in pids)
    assert all(not r.running and r.gateway is not None and not r.gateway.running for r in Network(net.folder).status())
    reopened = Network(net.folder)  # as `hcl network up` finds it, without --gateways
    assert net.manifest_path is not None
    reopened.up(Consortium.development(3), manifest_path=net.manifest_path, timeout=180)
    net.gateways, net.nodes, net.kubo = reopened.gateways, reopened.nodes, reopened.kubo  # `down` stops these
    for gw in reopened.gateways:
        url, pid, data = before[gw.name]
        assert gw.url == url and gw.pid != pid and gw.running and _health(gw.url)[0] == 200
        assert _data(gw.data_dir) == data  # the same KEK and token key, the same database file
    assert marker.read_text() == "kept"
    assert [m["endpoint"] for m in _gateway_members(reopened)] == [g.url for g in reopened.gateways]


def _data(folder: Path) -> tuple[bytes, bytes, int]:
    return (folder / "kek.key").read_bytes(), (folder / "token.key").read_bytes(), (folder / "gateway.db").stat().st_ino


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
