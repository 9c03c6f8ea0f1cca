"""Start and stop a local Hardhat node (Hardhat 2's built-in EDR chain) for tests and demos.

The project's machines cannot download a chain client, but the Hardhat npm package ships its EDR
node inside, so ``hardhat node`` is the one local chain always at hand: chain id 31337, automine,
``evm_snapshot``/``evm_revert``. This module owns its process lifecycle so that tests never leak a
node: the node runs in its own session (process group) and :meth:`HardhatNode.stop` signals the
whole group. Ports are chosen by the caller, because 8545 may be taken on a shared machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from node_client._compile import repo_root
from node_client._exceptions import NodeError

__all__ = ["HardhatNode", "NodeError", "free_port"]

#: How long :meth:`HardhatNode.stop` waits after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS: Final = 10.0
_POLL_INTERVAL: Final = 0.1
_LOG_TAIL_BYTES: Final = 4000


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now, never one this process was given
    before: the OS picks it (bind to port 0), and two calls in a row may get the same port from it, which
    a network choosing a dozen ports before starting its nodes would then give to two of them. Another
    process could still take it before the node binds, which :meth:`HardhatNode.start` then reports.
    """
    with _handed_out_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _chain_id(url: str, timeout: float = 1.0) -> int | None:
    """``eth_chainId`` of the node at ``url``, or None while it does not answer yet."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read())
        return int(reply["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
        return None


class HardhatNode:
    """A ``hardhat node`` subprocess, usable as a context manager.

    ``with HardhatNode().start(port=free_port()) as node: ... node.url ...`` stops the node on
    exit; entering a node that was not started starts it with :meth:`start`'s defaults.
    Output (including the well-known dev account keys Hardhat prints) goes to :attr:`log_path`.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root: Path = repo_root(root)
        self._log_path_arg = log_path
        self._env = dict(os.environ if env is None else env)
        self.log_path: Path | None = log_path
        self.host: str | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """HTTP JSON-RPC endpoint, e.g. ``http://127.0.0.1:8545``."""
        if self.host is None or self.port is None:
            raise NodeError("the node has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the node process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id (and process-group id) of the node, while started."""
        return self._proc.pid if self._proc is not None else None

    def start(self, port: int = 8545, host: str = "127.0.0.1", timeout: float = 60.0) -> HardhatNode:
        """Launch ``hardhat node`` and return once it answers ``eth_chainId``.

        Raises :class:`NodeError` if the port already answers (it may be someone else's
        node, which tests must never talk to by mistake), if the process exits, or if it does not
        answer within ``timeout`` seconds; the error carries the tail of the node's log.
        """
        if self._proc is not None:
            raise NodeError(f"already started at {self.url}")
        if _port_in_use(host, port):
            raise NodeError(f"{host}:{port} is already in use; pick another port (e.g. free_port())")
        binary = self.root / "node_modules" / ".bin" / "hardhat"
        if not binary.exists():
            raise NodeError(f"{binary} not found: run `npm ci` in {self.root}")

        self.host, self.port = host, port
        log_path = self._log_path_arg or (self.root / ".hcl" / "logs" / f"hardhat-node-{port}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**self._env, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"}
        try:
            self._proc = subprocess.Popen(
                [str(binary), "node", "--hostname", host, "--port", str(port)],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can signal all of it
            )
        except OSError as exc:
            self._close_log()
            raise NodeError(f"cannot run {binary}: {exc}") from exc

        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise NodeError(
                    f"hardhat node exited with code {code} before answering; log {log_path}:\n{self.log_tail()}"
                )
            chain_id = _chain_id(self.url)
            if chain_id is not None and self._proc.poll() is None:
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise NodeError(
                    f"hardhat node did not answer eth_chainId at {self.url} within {timeout}s; "
                    f"log {log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The node stops answering inside the block (SIGSTOP of its process group), and resumes after it:
        an outage that keeps the chain's state, for fail-closed tests."""
        assert self.pid is not None, "the node is not running"
        os.killpg(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.pid, signal.SIGCONT)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Terminate the node's process group; SIGKILL it if still alive after ``grace`` s."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # The leader may be gone while children linger: make sure the group is empty.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._close_log()

    def detach(self) -> int:
        """Leave the node running after this object is gone (``hcl chain up --detach``); returns its pid.

        The node is the leader of its own process group, so ``os.killpg(pid, SIGTERM)`` stops it later.
        """
        if self._proc is None:
            raise NodeError("the node has not been started")
        pid = self._proc.pid
        self._proc = None
        self._close_log()
        return pid

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """Last ``limit`` bytes of the node's log, for error messages."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - limit))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> HardhatNode:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
