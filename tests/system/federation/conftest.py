"""The federation's whole-system tests share one network of three institutions, each with its validator,
its Kubo node and its gateway process; it is stopped when the package's last test is done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node_client.network import Consortium, Network
from tests.support.network import need_kubo, start_network


@pytest.fixture(scope="package")
def gateway_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The dev consortium on three validators, each institution with its Kubo node (one private swarm) and
    its batch-mode gateway storing there (about two minutes to create): shared by this package's modules and
    stopped after them (nothing else runs beside it)."""
    need_kubo()
    folder = tmp_path_factory.mktemp("gateways")
    net = start_network(folder, Consortium.development(3), gateways=True, ledger_mode="batch", ipfs=True)
    try:
        yield net
    finally:
        net.down()
