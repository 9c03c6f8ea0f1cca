"""A real gateway for tests: its own Hardhat node and deployment, the FastAPI app served by uvicorn on a
free port in a background thread, and an HTTP client that signs in like a hospital or patient does.

The gateway gets its own chain (not the session node of the contract tests) because the contract tests
revert snapshots, which would pull the chain out from under the gateway's indexer.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from eth_account.signers.local import LocalAccount

from gateway.app import GatewayServer, create_app, server_config
from gateway.settings import GatewaySettings
from gateway.wiring import Components, build_components
from node_client._client import ChainClient
from node_client._node import HardhatNode, free_port
from node_client.blinding import category_key, sign_category_key
from node_client.deploy import Ledger, Manifest, deploy_dev, dev_encryption_key
from node_client.gateway_client import GatewayClient
from node_client.gateway_client import open_release as _open_release
from node_client.keys import dev_account
from node_client.signing import Domain
from node_client.vocabulary import parse_categories

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "fhir"
#: the salt tests commit emergency reasons with (node_client.commitments; the portal draws a random one)
SALT = bytes(range(32))
SALT_HEX = "0x" + SALT.hex()

#: dev account indices of the dev consortium (node_client.deploy.DEV_CONSORTIUM)
GATEWAY, HOSPITAL, CLINIC, LAB, PHARMACY, AUDITOR = 3, 4, 5, 6, 7, 8
DEV_ACCOUNTS = 20  # funded by `hardhat node`


@dataclass
class RunningGateway:
    url: str
    settings: GatewaySettings
    components: Components
    client: ChainClient
    manifest: Manifest
    ledger: Ledger
    server: uvicorn.Server
    node: HardhatNode

    def slots(self, patient: LocalAccount, categories: str | int) -> int:
        """The on-chain slot mask of ``categories`` (slugs or a category mask) for ``patient``: what a
        consent granted straight on chain carries (the portal and the CLI map them the same way)."""
        return slots_of(self.ledger.consents.domain(), patient, categories)

    def chain_paused(self):  # type: ignore[no-untyped-def]
        """The chain node stops answering (SIGSTOP) inside the block, and resumes after it."""
        return self.node.frozen()

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def sign_in(self, account: LocalAccount) -> GatewayClient:
        """A :class:`GatewayClient` signed in as ``account`` (Sign-In with Ethereum)."""
        gw = GatewayClient(self.url, timeout=30)
        gw.sign_in(account)
        return gw

    def login(self, account: LocalAccount) -> httpx.Client:
        """An HTTP client carrying a bearer token for ``account``: the signed-in client's ``http``."""
        return self.sign_in(account).http

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Blocks until the indexer has reached the head once (it catches up in the background at start)."""
        deadline = time.monotonic() + timeout
        while self.components.indexer.catching_up:
            if time.monotonic() > deadline:
                raise TimeoutError("indexer did not catch up")
            time.sleep(0.02)

    def wait_indexed(self, timeout: float = 10.0) -> None:
        """Blocks until the gateway's indexer has seen the current head."""
        head = self.client.block_number()
        deadline = time.monotonic() + timeout
        while self.components.indexer.indexed_block < head:
            if time.monotonic() > deadline:
                raise TimeoutError("indexer did not catch up")
            time.sleep(0.05)


def open_release(body: dict[str, Any], account_index: int, requester: str) -> bytes:
    """Decrypts a release response with the requester's X25519 private key (dev key of that account)."""
    return _open_release(body, dev_encryption_key(account_index)[0], requester)


#: the thread serving each running server (see :func:`stop_serving`)
_THREADS: weakref.WeakKeyDictionary[uvicorn.Server, threading.Thread] = weakref.WeakKeyDictionary()


def stop_serving(server: uvicorn.Server) -> None:
    """Shuts the server down (its components stop with it) and waits until it has."""
    server.should_exit = True
    thread = _THREADS.get(server)
    if thread is not None:
        thread.join(timeout=30)


@contextmanager
def restarted(gw: RunningGateway, prepare: Callable[[Components], None] | None = None) -> Iterator[RunningGateway]:
    """``gw`` stopped and started again on its data directory and chain (new components: ``prepare``d before
    they start), not waited for to catch up; the restarted one stops at the end of the block."""
    stop_serving(gw.server)
    settings = gw.settings.model_copy(update={"port": free_port()})
    components = build_components(settings)
    if prepare is not None:
        prepare(components)
    with serving(settings, components, caught_up=False) as server:
        yield replace(
            gw, url=f"http://127.0.0.1:{settings.port}", settings=settings, components=components, server=server
        )


def _first_poll(components: Components, timeout: float = 60) -> None:
    """Until the indexer has caught up once or failed a poll (the chain may be down on purpose): the
    gateway no longer waits for it at start, the tests begin where they used to."""
    indexer = components.indexer
    deadline = time.monotonic() + timeout
    while indexer.catching_up and indexer.status().error is None and time.monotonic() < deadline:
        time.sleep(0.02)


@contextmanager
def serving(settings: GatewaySettings, components: Components, *, caught_up: bool = True) -> Iterator[uvicorn.Server]:
    """The gateway app on ``settings.port`` in a background thread, until the block ends (from when its
    read model has caught up with the chain, or failed to, unless not ``caught_up``)."""
    app = create_app(settings, components=components)
    server = GatewayServer(server_config(settings, app))
    thread = threading.Thread(target=server.run, daemon=True)
    _THREADS[server] = thread
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.05)
    if caught_up:
        _first_poll(components)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def running_gateway(tmp: Path, *, enrolled: bool = True, **overrides: Any) -> Iterator[RunningGateway]:
    """A gateway on a fresh dev chain; ``enrolled``: it holds every dev patient's category key already."""
    node = HardhatNode(log_path=tmp / "hardhat.log").start(port=free_port())
    try:
        client = ChainClient(rpc_url=node.url)
        manifest = deploy_dev(client)
        manifest_path = tmp / "manifest.json"
        manifest.save(manifest_path)
        port = free_port()
        settings = GatewaySettings(
            rpc_url=node.url,
            manifest=manifest_path,
            data_dir=tmp / "gateway",
            gateway_dev_account=GATEWAY,
            host="127.0.0.1",
            port=port,
            indexer_poll=0.1,
            anchor_interval=0.5,
            log_level="WARNING",
            **overrides,
        )
        components = build_components(settings)
        if enrolled:
            enrol_dev_patients(components)
        with serving(settings, components) as server:
            running = RunningGateway(
                f"http://127.0.0.1:{port}",
                settings,
                components,
                client,
                manifest,
                manifest.connect(client),
                server,
                node,
            )
            yield running
    finally:
        node.stop()


def enrol_dev_patients(components: Components) -> None:
    """Every dev account's category key held by the gateway, as if each had signed in to its portal once:
    tests upload records of any of them (a test of the key itself uses a fresh account)."""
    domain = components.category_keys.domain
    for i in range(DEV_ACCOUNTS):
        components.category_keys.learn(dev(i).address, sign_category_key(dev(i), domain))


def slots_of(domain: Domain, patient: LocalAccount, categories: str | int) -> int:
    """``categories`` (slugs or a category mask) as ``patient``'s slot mask under ``domain``."""
    mask = parse_categories(categories) if isinstance(categories, str) else categories
    return category_key(domain, patient.address, sign_category_key(patient, domain)).slots(mask)


def dev(i: int) -> LocalAccount:
    return dev_account(i)
