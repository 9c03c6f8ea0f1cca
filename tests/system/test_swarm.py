"""The institutions' private IPFS swarm on real Kubo nodes (``node_client.network.kubo``): one pre-shared
swarm key, loopback only, blocks travel between members, a node with another key is kept out.

Most tests drive :class:`KuboNode` directly (two members and an outsider, a few seconds); the last one runs
``Network.up(..., ipfs=True)`` on the three-validator dev consortium (geth) for the wiring: status, down, up.
(Not on two validators: a two-signer Clique dev chain could stall at block 1 on this geth, the second
validator discarding the first one's block 1 while "syncing" and never syncing it, the first not allowed
to seal twice in a row; with three, the third signer carries the chain on.)
Without a Kubo binary the module skips, unless ``HCL_REQUIRE_IPFS=1`` (then it fails), as the IPFS fixture.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node_client._exceptions import NodeError
from node_client.cli import app
from node_client.network import Consortium, Network
from node_client.network.gateways import healthy
from node_client.network.kubo import KuboNode, connect, find_kubo, new_swarm_key, swarm_key_valid
from tests.support.network import kubo_node, need_geth, need_kubo, wait_until

pytestmark = pytest.mark.slow

#: Kubo's own deadline for a fetch that cannot succeed (its global ``--timeout`` option, in the query).
NO_BLOCK = "3s"


def _started(nodes: list[KuboNode], binary: Path, key: Path) -> list[KuboNode]:
    for node in nodes:
        node.init(binary, key)
    for node in nodes:
        node.write_peers(binary, nodes)
    try:
        for node in nodes:
            node.start(binary)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@pytest.fixture(scope="module")
def binary() -> Path:
    return need_kubo()


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, binary: Path) -> Iterator[list[KuboNode]]:
    """Two institutions' nodes on one swarm key, connected."""
    base = tmp_path_factory.mktemp("swarm")
    key = new_swarm_key(base / "swarm.key")
    nodes = _started([kubo_node("City Hospital", base), kubo_node("Riverside Clinic", base)], binary, key)
    try:
        connect(nodes[0], nodes[1])
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def outsider(tmp_path_factory: pytest.TempPathFactory, binary: Path) -> Iterator[KuboNode]:
    """A node set up the same way but on a swarm key of its own."""
    base = tmp_path_factory.mktemp("outsider")
    (node,) = _started([kubo_node("Outsider", base)], binary, new_swarm_key(base / "swarm.key"))
    try:
        yield node
    finally:
        node.stop()


def _put(node: KuboNode, data: bytes) -> str:
    reply = node.api("block/put", data=data, params={"cid-codec": "raw"})
    return str(reply["Key"])


# ---------------------------------------------------------------- the key


def test_the_swarm_key_is_kubo_format_mode_0600_and_never_replaced(tmp_path: Path, members: list[KuboNode]) -> None:
    key = new_swarm_key(tmp_path / "swarm.key")
    text = key.read_text()
    lines = text.splitlines()
    assert lines[:2] == ["/key/swarm/psk/1.0.0/", "/base16/"] and len(lines[2]) == 64 and swarm_key_valid(text)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(NodeError, match="never replaced"):
        new_swarm_key(key)
    assert key.read_text() == text
    assert new_swarm_key(tmp_path / "other.key").read_text() != text  # 32 fresh random bytes each time
    for node in members:  # each repo holds the network's key, readable by its owner only
        copy = node.repo / "swarm.key"
        assert copy.read_text() == members[0].repo.joinpath("swarm.key").read_text()
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not swarm_key_valid("/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n")


def test_a_node_without_a_swarm_key_does_not_start(tmp_path: Path, binary: Path) -> None:
    """``LIBP2P_FORCE_PNET=1``: without ``swarm.key`` Kubo refuses to start rather than join the public IPFS."""
    node = kubo_node("Keyless", tmp_path)
    node.init(binary, new_swarm_key(tmp_path / "swarm.key"))
    (node.repo / "swarm.key").unlink()
    with pytest.raises(NodeError, match="did not start"):
        node.start(binary, timeout=20)
    assert not node.running and "private network" in node.log_tail().lower()


# ---------------------------------------------------------------- the swarm


def test_a_block_added_at_one_institution_is_fetched_by_the_other(members: list[KuboNode]) -> None:
    a, b = members
    assert a.peers() == [b.peer_id] and b.peers() == [a.peer_id]
    data = os.urandom(300_000)
    cid = _put(a, data)
    started = time.monotonic()
    fetched = b.api("block/get", cid, timeout=15, params={"timeout": "10s"})
    took = time.monotonic() - started
    assert fetched == data
    assert took < 10, f"fetching 300 KB over loopback took {took:.1f}s"
    # and the other way round
    cid_b = _put(b, b"a consent receipt held at the clinic")
    assert a.api("block/get", cid_b, timeout=15, params={"timeout": "10s"}) == b"a consent receipt held at the clinic"


def test_a_node_with_another_key_cannot_connect_nor_fetch(members: list[KuboNode], outsider: KuboNode) -> None:
    a, b = members
    cid = _put(a, b"only for the consortium: " + os.urandom(64))
    with pytest.raises(NodeError, match="swarm/connect"):
        connect(outsider, a, timeout=15)
    with pytest.raises(NodeError, match="swarm/connect"):
        connect(a, outsider, timeout=15)
    assert outsider.peers() == []
    assert outsider.peer_id not in a.peers() and outsider.peer_id not in b.peers()
    with pytest.raises(NodeError):
        outsider.api("block/get", cid, timeout=15, params={"timeout": NO_BLOCK})
    assert outsider.peers() == [] and sorted(a.peers() + b.peers()) == sorted([a.peer_id, b.peer_id])


def test_nothing_listens_outside_loopback(members: list[KuboNode], outsider: KuboNode) -> None:
    for node in [*members, outsider]:
        config = json.loads((node.repo / "config").read_text())
        addresses = config["Addresses"]
        assert addresses["Swarm"] == [f"/ip4/127.0.0.1/tcp/{node.swarm_port}"]
        assert addresses["API"] == f"/ip4/127.0.0.1/tcp/{node.api_port}"
        assert addresses["Gateway"] == f"/ip4/127.0.0.1/tcp/{node.gateway_port}"
        assert addresses["Announce"] == [] and addresses["AppendAnnounce"] == []
        assert config["Bootstrap"] == [] and config["Routing"]["Type"] == "none"
        assert config["Discovery"]["MDNS"]["Enabled"] is False and config["AutoConf"]["Enabled"] is False
        transports = config["Swarm"]["Transports"]["Network"]
        assert transports == {
            "TCP": True,
            "Websocket": False,
            "QUIC": False,
            "WebTransport": False,
            "WebRTCDirect": False,
        }
        announced = node.identity()["Addresses"]
        assert announced and all(a.startswith(f"/ip4/127.0.0.1/tcp/{node.swarm_port}/") for a in announced)
        assert node.pid is not None
        sockets = _sockets_of(node.pid)
        if sockets is None:
            continue  # no /proc here: the configuration and the announced addresses are what is checked
        assert sockets, "the daemon should hold some sockets"
        outside = [s for s in sockets if not s[1].startswith(("127.", "::1", "::ffff:127."))]
        assert outside == [], f"{node.name} has sockets outside loopback: {outside}"
        listening = {s for s in sockets if s[0] == "tcp" and s[3]}
        assert {p for _, _, p, _ in listening} == {node.swarm_port, node.api_port, node.gateway_port}


def _sockets_of(pid: int) -> list[tuple[str, str, int, bool]] | None:
    """(protocol, local address, local port, listening) of every TCP/UDP socket of ``pid``, from /proc."""
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir():
        return None
    inodes = set()
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            address, port = fields[1].split(":")
            found.append(
                (table.rstrip("6"), _ip(address), int(port, 16), table.startswith("tcp") and fields[3] == "0A")
            )
    return found


def _ip(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # /proc prints each 32-bit word in host order
    return str(ipaddress.IPv6Address(b"".join(words)))


def test_find_kubo_names_the_build_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hardhat.config.js").write_text("")  # a checkout without .hcl/bin/ipfs
    monkeypatch.delenv("HCL_IPFS_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NodeError, match=r"\./scripts/build_ipfs"):
        find_kubo(tmp_path)


# ---------------------------------------------------------------- the network, with --ipfs


def test_network_up_with_ipfs_runs_a_connected_swarm_that_down_and_up_keep(tmp_path: Path, binary: Path) -> None:
    need_geth()
    folder = tmp_path / "net"
    network = Network(folder)
    started = time.monotonic()
    try:
        network.up(
            Consortium.development(3), manifest_path=folder / "manifest.json", timeout=180, ipfs=True, gateways=True
        )
        print(f"network of 3 validators + 3 IPFS nodes + 3 gateways up in {time.monotonic() - started:.1f}s")
        assert [k.name for k in network.kubo] == [n.name for n in network.nodes]
        # each institution's gateway keeps its blobs on its own institution's Kubo node
        assert [(g.store, g.running, healthy(g.url)) for g in network.gateways] == [("ipfs", True, True)] * 3
        assert stat.S_IMODE(network.swarm_key_file.stat().st_mode) == 0o600
        assert swarm_key_valid(network.swarm_key_file.read_text())
        saved = json.loads((folder / "network.json").read_text())["kubo"]
        assert [k["peer_id"] for k in saved] == [k.peer_id for k in network.kubo] and all(k["pid"] for k in saved)
        rows = network.status()
        assert all(r.ipfs is not None and r.ipfs.running and r.ipfs.peers == 2 for r in rows)

        a, _, c = network.kubo
        cid = _put(a, b"shared within the consortium")
        assert c.api("block/get", cid, timeout=15, params={"timeout": "10s"}) == b"shared within the consortium"

        out = CliRunner().invoke(app, ["network", "status", "--folder", str(folder), "--json"])
        assert out.exit_code == 0, out.output
        assert [row["ipfs"]["peers"] for row in json.loads(out.output)] == [2, 2, 2]

        pids = [k.pid for k in network.kubo]
        network.down()
        assert not any(k.running for k in network.kubo) and not any(n.running for n in network.nodes)
        assert all(p is not None and not _alive(p) for p in pids)
        reopened = Network(folder)  # as `hcl network up` would find it, without --ipfs
        assert [k.peer_id for k in reopened.kubo] == [k.peer_id for k in network.kubo]
        assert all(r.ipfs is not None and not r.ipfs.running for r in reopened.status())
        reopened.up(Consortium.development(3), manifest_path=folder / "manifest.json", timeout=180)
        network = reopened
        wait_until(
            lambda: all(r.ipfs is not None and r.ipfs.peers == 2 for r in reopened.status()),
            timeout=30,
            what="the restarted IPFS nodes to reconnect",
        )
        assert reopened.kubo[2].api("block/get", cid, timeout=15, params={"timeout": "10s"}) == (
            b"shared within the consortium"
        )
    finally:
        network.down()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
