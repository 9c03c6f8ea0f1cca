"""Fixtures of the whole-system tests: a real 3-validator geth Clique network for each module that asks,
and one network whose institutions run their gateways, shared by the modules that need it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node_client.network import Consortium, Network
from tests.support.network import need_kubo, start_network


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The dev consortium on three validators (about a minute to create and onboard), stopped afterwards."""
    net = start_network(tmp_path_factory.mktemp("clique"), Consortium.development(3))
    try:
        yield net
    finally:
        net.down()


@pytest.fixture(scope="session")
def gateway_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The dev consortium on three validators, each institution with its Kubo node (one private swarm) and
    its batch-mode gateway storing there (about two minutes to create): shared by the gateway and federation
    modules, stopped at the end."""
    need_kubo()
    folder = tmp_path_factory.mktemp("gateways")
    net = start_network(folder, Consortium.development(3), gateways=True, ledger_mode="batch", ipfs=True)
    try:
        yield net
    finally:
        net.down()
