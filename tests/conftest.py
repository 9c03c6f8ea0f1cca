"""Fixtures shared by every test directory: one real Hardhat node per test session, one dev deployment,
a snapshot per test; and, from ``tests/support``, the offline Kubo node (``ipfs_node``).

Each test runs against the same deployment and is rolled back with ``evm_snapshot``/``evm_revert``
afterwards, so tests are independent without paying a deployment each. The helpers the tests import
(``Accounts``, ``Chain``, ``h``, ``cid``) are in :mod:`tests.support.chain`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node_client._client import ChainClient
from node_client._compile import CompileResult, compile_contracts
from node_client._node import HardhatNode, free_port
from node_client.deploy import DEV_ADMINS, Ledger, Manifest, deploy_dev
from node_client.keys import dev_account
from tests.support.chain import Accounts, Chain

#: fixtures defined in the support package, available to every directory
pytest_plugins = ["tests.support.ipfs_fixture", "tests.support.fhir_validator"]


@pytest.fixture(scope="session")
def artifacts() -> CompileResult:
    return compile_contracts()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardhatNode]:
    log = tmp_path_factory.mktemp("hardhat") / "node.log"
    hh = HardhatNode(log_path=log).start(port=free_port())
    try:
        yield hh
    finally:
        hh.stop()


@pytest.fixture(scope="session")
def client(node: HardhatNode) -> ChainClient:
    return ChainClient(rpc_url=node.url)


@pytest.fixture(scope="session")
def manifest(client: ChainClient, artifacts: CompileResult) -> Manifest:
    return deploy_dev(client, artifacts=artifacts)


@pytest.fixture(scope="session")
def accounts() -> Accounts:
    return Accounts(
        admins=tuple(dev_account(i) for i in DEV_ADMINS),
        gateway=dev_account(3),
        hospital=dev_account(4),
        clinic=dev_account(5),
        lab=dev_account(6),
        pharmacy=dev_account(7),
        auditor=dev_account(8),
        regulator=dev_account(9),
        patients=tuple(dev_account(i) for i in range(10, 18)),
        outsider=dev_account(18),
    )


@pytest.fixture
def ledger(client: ChainClient, manifest: Manifest) -> Iterator[Ledger]:
    """The dev deployment, rolled back after the test."""
    snap = client.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield manifest.connect(client)
    finally:
        client.w3.provider.make_request("evm_revert", [snap])
        client.reset_nonces()


@pytest.fixture
def chain(client: ChainClient, ledger: Ledger) -> Chain:
    return Chain(client)
