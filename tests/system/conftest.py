"""Fixtures of the whole-system tests: a real 3-validator geth Clique network for each module that asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node_client.network import Consortium, Network
from tests.support.network import start_network


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The dev consortium on three validators (about a minute to create and onboard), stopped afterwards."""
    net = start_network(tmp_path_factory.mktemp("clique"), Consortium.development(3))
    try:
        yield net
    finally:
        net.down()
