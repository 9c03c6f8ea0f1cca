"""A real geth Clique network for tests: built once per machine (``scripts/build_geth``), one per module.

Without geth the network tests skip, unless ``HCL_REQUIRE_GETH=1`` (CI), where they fail: a consortium
feature that was never run on a consortium chain must not pass by skipping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from node_client._exceptions import NodeError
from node_client._node import free_port
from node_client.network import Consortium, Network
from node_client.network.geth import find_geth
from node_client.network.kubo import KuboNode, find_kubo

__all__ = [
    "heal",
    "kubo_node",
    "need_geth",
    "need_kubo",
    "network_gateway",
    "partition",
    "start_network",
    "wait_until",
]


def _required(find: Callable[[], Path], what: str, env: str) -> Path:
    """The binary ``find`` gives, or a skip (a failure when ``env`` is set: CI must not pass by skipping)."""
    try:
        return find()
    except NodeError as exc:
        if os.environ.get(env, "") not in ("", "0"):
            pytest.fail(f"{what} required ({env}) but unavailable: {exc}", pytrace=False)
        pytest.skip(str(exc))


def need_geth() -> Path:
    """The geth binary, or a skip (a failure under ``HCL_REQUIRE_GETH=1``)."""
    return _required(find_geth, "geth", "HCL_REQUIRE_GETH")


def need_kubo() -> Path:
    """The Kubo binary, or a skip (a failure under ``HCL_REQUIRE_IPFS=1``)."""
    return _required(find_kubo, "IPFS", "HCL_REQUIRE_IPFS")


def kubo_node(name: str, base: Path) -> KuboNode:
    """A Kubo node (not initialised) with its repo under ``base/name`` and free loopback ports."""
    return KuboNode(name, base / name, swarm_port=free_port(), api_port=free_port(), gateway_port=free_port())


def start_network(
    folder: Path, consortium: Consortium, *, gateways: bool = False, ledger_mode: str | None = None, ipfs: bool = False
) -> Network:
    """A network in ``folder``, up and deployed (manifest ``folder/manifest.json``); ``gateways``: with
    each gateway institution's ``hcl gateway serve`` running and healthy (the dev consortium: one per
    validator), in ``ledger_mode`` (default strict); ``ipfs``: each validator institution with its Kubo node
    in one private swarm (gateways then store there)."""
    need_geth()
    network = Network(folder)
    try:
        network.up(
            consortium,
            manifest_path=folder / "manifest.json",
            timeout=180,
            gateways=gateways,
            ledger_mode=ledger_mode,
            ipfs=ipfs,
        )
    except BaseException:
        network.down()
        raise
    return network


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25) -> None:
    """Polls ``condition`` until it holds; fails the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def network_gateway(tmp: Path, network: Network, *, rpc: list[int] | None = None, **overrides: Any) -> Iterator[Any]:
    """The real gateway app (uvicorn, in a thread) on the network's dev deployment, signing as dev account
    3; ``rpc``: the validators it talks to, in failover order (default: all); it holds every dev patient's
    category key. Yields its Components and URL."""
    from gateway.settings import GatewaySettings
    from gateway.wiring import build_components
    from tests.support.gateway_harness import enrol_dev_patients, serving

    assert network.manifest_path is not None
    port = free_port()
    nodes = rpc if rpc is not None else list(range(len(network.nodes)))
    settings = GatewaySettings(
        rpc_url=",".join(network.nodes[i].url for i in nodes),
        manifest=network.manifest_path,
        data_dir=tmp,
        gateway_dev_account=3,
        host="127.0.0.1",
        port=port,
        indexer_poll=0.1,
        anchor_interval=0.5,
        rpc_timeout=10,
        log_level="WARNING",
        **overrides,
    )
    components = build_components(settings)
    enrol_dev_patients(components)
    with serving(settings, components):
        yield components, f"http://127.0.0.1:{port}"


def partition(network: Network, lone: int) -> None:
    """Cuts validator ``lone`` off from the others (static and trusted peers removed on both sides). The
    removal is repeated until it holds: a dial already under way when it was issued can reconnect them."""

    def cut() -> bool:
        for j, other in enumerate(network.nodes):
            if j != lone:
                for a, b in ((lone, other.enode), (j, network.nodes[lone].enode)):
                    network.rpc(a, "admin_removeTrustedPeer", [b])
                    network.rpc(a, "admin_removePeer", [b])
        time.sleep(0.5)
        return int(network.rpc(lone, "net_peerCount"), 16) == 0

    wait_until(cut, timeout=30, what="the partition")


def heal(network: Network, lone: int) -> None:
    """Reconnects validator ``lone`` with the others."""
    for j, other in enumerate(network.nodes):
        if j != lone:
            network.rpc(lone, "admin_addPeer", [other.enode])
            network.rpc(lone, "admin_addTrustedPeer", [other.enode])
            network.rpc(j, "admin_addTrustedPeer", [network.nodes[lone].enode])
    want = len(network.nodes) - 1
    wait_until(lambda: int(network.rpc(lone, "net_peerCount"), 16) == want, timeout=60, what="the heal")
