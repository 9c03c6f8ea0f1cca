"""Two institutions' gateways on one Hardhat chain, for the gateway-level federation tests: a deployment
whose gateway members (dev accounts 20 and 21) carry their endpoints, and each gateway served on its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.settings import GatewaySettings
from gateway.wiring import Components, build_components
from node_client._client import ChainClient
from node_client.deploy import Manifest, MemberSpec, deploy_dev, dev_encryption_key
from node_client.keys import dev_account
from node_client.vocabulary import Role
from tests.support.gateway_harness import enrol_dev_patients, serving

GW_A, GW_B = 20, 21
NAMES = {GW_A: "City First People's Hospital gateway", GW_B: "Riverside Community Health Centre gateway"}


def deploy_with_gateways(client: ChainClient, ports: dict[int, int]) -> Manifest:
    """The dev deployment plus one funded GATEWAY member per entry of ``ports`` (dev account → its port)."""
    specs = []
    for gw, port in ports.items():
        client.w3.provider.make_request("hardhat_setBalance", [dev_account(gw).address, hex(10**21)])
        specs.append(
            MemberSpec(
                dev_account(gw).address,
                int(Role.GATEWAY),
                dev_encryption_key(gw)[1],
                NAMES.get(gw, f"gateway {gw}"),
                "gateway",
                endpoint=f"http://127.0.0.1:{port}",
            )
        )
    return deploy_dev(client, extra_members=specs)


def gateway_settings(tmp: Path, rpc_url: str, manifest: Path, gw: int, port: int, **overrides: Any) -> GatewaySettings:
    """Gateway ``gw``'s settings: its data under ``tmp/gw<account>``, its registered port, fast polling."""
    values: dict[str, Any] = {
        "rpc_url": rpc_url,
        "manifest": manifest,
        "data_dir": tmp / f"gw{gw}",
        "gateway_dev_account": gw,
        "host": "127.0.0.1",
        "port": port,
        "indexer_poll": 0.1,
        "federation_timeout": 5,
        "log_level": "WARNING",
    }
    return GatewaySettings(**{**values, **overrides})


@contextmanager
def served(settings: GatewaySettings) -> Iterator[Components]:
    """The gateway of ``settings`` served until the block ends (its data survives a restart), holding every
    dev account's category key (as :func:`~tests.support.gateway_harness.running_gateway`'s does)."""
    components = build_components(settings)
    enrol_dev_patients(components)
    with serving(settings, components):
        yield components
