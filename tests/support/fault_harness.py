"""Gateways as real separate processes for the fault tests: ``hcl gateway serve`` started with ``HCL_*``
variables against a Hardhat node the test owns, killed with SIGKILL (or by a crash point, see
:mod:`gateway.crashpoints`), restarted on the same data directory.

Unlike :mod:`gateway_harness` (the app in a thread of the test process), nothing here shares memory
with the gateway: what survives a kill is exactly what the gateway made durable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from eth_account.signers.local import LocalAccount

from gateway.settings import GatewaySettings
from node_client._client import ChainClient
from node_client._node import HardhatNode, free_port
from node_client.blinding import sign_category_key
from node_client.deploy import Ledger, Manifest, deploy_dev
from node_client.gateway_client import GatewayClient
from node_client.keys import dev_account
from tests.support.gateway_harness import DEV_ACCOUNTS, SAMPLES, slots_of

HCL = Path(sys.executable).with_name("hcl")
GATEWAY = 3  # dev account of the dev consortium's gateway


@dataclass
class FaultChain:
    """A Hardhat node with the dev deployment, owned by one test module."""

    node: HardhatNode
    client: ChainClient
    manifest: Manifest
    manifest_path: Path
    ledger: Ledger

    @classmethod
    def start(cls, tmp: Path) -> FaultChain:
        node = HardhatNode(log_path=tmp / "hardhat.log").start(port=free_port())
        client = ChainClient(rpc_url=node.url)
        manifest = deploy_dev(client)
        path = tmp / "manifest.json"
        manifest.save(path)
        return cls(node, client, manifest, path, manifest.connect(client))

    def stop(self) -> None:
        self.node.stop()

    def frozen(self):  # type: ignore[no-untyped-def]
        """The node stops answering (SIGSTOP of its process group) inside the block."""
        return self.node.frozen()

    def slots(self, patient: LocalAccount, categories: str | int) -> int:
        """``patient``'s slot mask of ``categories``: what a consent granted straight on chain carries."""
        return slots_of(self.ledger.consents.domain(), patient, categories)


class TcpProxy:
    """A loopback TCP forwarder in front of the chain node, so the test can really stop the endpoint
    (connection refused, open connections cut) and start it again on the same port: a Hardhat node
    keeps its state in memory, so restarting the node itself would be a new, empty chain."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone leaves it listening)
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def sign_in(url: str, account: LocalAccount) -> str:
    """A bearer token for ``account`` (Sign-In with Ethereum, by :class:`GatewayClient`)."""
    with GatewayClient(url, timeout=30) as gw:
        return gw.sign_in(account)


class GatewayProcess:
    """``hcl gateway serve`` in its own process (own session), on a fixed port and data directory."""

    def __init__(
        self,
        chain: FaultChain,
        data_dir: Path,
        *,
        mode: str = "strict",
        rpc_url: str | None = None,
        **settings: Any,
    ) -> None:
        self.chain = chain
        self.data_dir = data_dir
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.values: dict[str, Any] = {
            "rpc_url": rpc_url or chain.node.url,
            "manifest": str(chain.manifest_path),
            "data_dir": str(data_dir),
            "gateway_dev_account": GATEWAY,
            "host": "127.0.0.1",
            "port": self.port,
            "ledger_mode": mode,
            "indexer_poll": 0.1,
            "anchor_interval": 0.5,
            "rpc_timeout": 3,
            "log_level": "WARNING",
            **settings,
        }
        self._tokens: dict[str, str] = {}
        self._enrolled = False

    def settings(self) -> GatewaySettings:
        return GatewaySettings(**self.values)

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HCL_")}
        env.update({f"HCL_{k.upper()}": str(v) for k, v in self.values.items()})
        if crash_at:
            env["HCL_TEST_CRASH_AT"] = crash_at
        return env

    def start(self, crash_at: str | None = None, timeout: float = 60) -> GatewayProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            log.write(f"--- start crash_at={crash_at}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(HCL), "gateway", "serve"],
                env=self.env(crash_at),
                cwd=self.data_dir.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                httpx.get(self.url + "/healthz", timeout=5)
            except httpx.TransportError:
                pass
            else:
                self._enrol_dev_patients()
                return self
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"gateway did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _enrol_dev_patients(self) -> None:
        """Every dev account's category key handed over once, as if each had signed in to the portal (the
        gateway keeps them in its database across restarts): tests upload records of any of them."""
        if self._enrolled:
            return
        domain = self.chain.ledger.consents.domain()
        with GatewayClient(self.url, timeout=30) as gw:
            gw.sign_in(dev_account(GATEWAY))
            for i in range(DEV_ACCOUNTS):
                gw.enrol_category_key(dev_account(i).address, sign_category_key(dev_account(i), domain))
        self._enrolled = True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_dead(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> int:
        """kill -9."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(30)

    def stop(self) -> int:
        """A clean stop (SIGTERM: uvicorn shuts down, the anchorer flushes)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.proc.returncode

    def token(self, account: LocalAccount) -> str:
        """Tokens survive restarts (the token key is in the data directory)."""
        if account.address not in self._tokens:
            self._tokens[account.address] = sign_in(self.url, account)
        return self._tokens[account.address]

    def http(self, account: LocalAccount | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(account)}"} if account is not None else {}
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def health(self) -> dict[str, Any]:
        """``/healthz``'s body, healthy (200) or degraded (503)."""
        with GatewayClient(self.url, timeout=30) as gw:
            return gw.health()

    def reconcile_cli(self, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HCL), "gateway", "reconcile", *args],
            env=self.env(crash_at),
            cwd=self.data_dir.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )


_ALLERGY = orjson.loads((SAMPLES / "hl7-r4" / "AllergyIntolerance-example.json").read_bytes())


def fresh_allergy() -> bytes:
    """The HL7 allergy example as a new resource at each call (its own id, no identifier): an upload the
    gateway does not hold yet, so it is stored and registered (the same upload again would store nothing)."""
    resource = {k: v for k, v in _ALLERGY.items() if k != "identifier"}
    return orjson.dumps({**resource, "id": f"{_ALLERGY['id']}.{os.urandom(6).hex()}"})
