"""A real, fully offline Kubo (go-ipfs) node for tests.

Use (``tests/conftest.py`` registers this module's fixture for every test directory)::

    def test_x(ipfs_node):
        store = IpfsBlobStore(ipfs_node.api_multiaddr)

or, for a node the test controls (e.g. to stop it), :func:`start_ipfs_node` / :meth:`IpfsNode.stop`.

Binary lookup: ``$HCL_IPFS_BIN``, else ``<repo>/.hcl/bin/ipfs``, else ``ipfs`` on ``PATH``. If none
is found, or the node does not start, tests using the fixture are **skipped with the reason**
(printed in pytest's ``-ra`` summary). Set ``HCL_REQUIRE_IPFS=1`` (CI, once Kubo is built there)
to turn those skips into failures so a broken build cannot pass as "skipped".

Isolation — no traffic may leave loopback:

* ``ipfs init --profile=test``: API/Gateway/Swarm on ``127.0.0.1`` port 0, no bootstrap peers,
  MDNS off, AutoTLS off, AutoConf off (Kubo ≥ 0.37 otherwise fetches network defaults over HTTPS),
  NAT port mapping off, no DNS resolvers / delegated routers.
* On top of it: ``Routing.Type=none`` and telemetry off twice — env ``IPFS_TELEMETRY=off`` and
  config ``Plugins.Plugins.telemetry.Config.Mode=off`` (both documented in Kubo's
  docs/telemetry.md; Kubo ≥ 0.36 sends usage telemetry by default).
* ``ipfs daemon --offline``: no libp2p swarm at all, only the RPC API and gateway on loopback.
* Ports: the API binds ``tcp/0`` and the fixture reads the chosen port from ``$IPFS_PATH/api``
  (written by the daemon), so there is no free-port race with parallel test runs.

The daemon runs in its own session/process group with output in ``<tmp>/ipfs-daemon.log``; it is
stopped by signalling that process group (its own id, never by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "IpfsFixtureError",
    "IpfsNode",
    "find_ipfs_binary",
    "ipfs_node",
    "start_ipfs_node",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0

_CONFIG: list[tuple[str, object]] = [
    # Re-asserted although --profile=test sets most of them: the fixture must not depend on what a
    # future Kubo's test profile happens to contain.
    ("Addresses.API", "/ip4/127.0.0.1/tcp/0"),
    ("Addresses.Gateway", "/ip4/127.0.0.1/tcp/0"),
    ("Addresses.Swarm", ["/ip4/127.0.0.1/tcp/0"]),
    ("Addresses.Announce", []),
    ("Bootstrap", []),
    ("Discovery.MDNS.Enabled", False),
    ("AutoConf.Enabled", False),
    ("AutoTLS.Enabled", False),
    ("Swarm.DisableNatPortMap", True),
    ("Routing.Type", "none"),
    ("Plugins.Plugins", {"telemetry": {"Config": {"Mode": "off"}}}),
]


class IpfsFixtureError(RuntimeError):
    """The IPFS binary is missing or the node could not be initialised/started."""


def find_ipfs_binary() -> Path | None:
    """``$HCL_IPFS_BIN`` → ``<repo>/.hcl/bin/ipfs`` → ``ipfs`` on PATH; ``None`` if none is executable."""
    env = os.environ.get("HCL_IPFS_BIN")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT / ".hcl" / "bin" / "ipfs")
    found = shutil.which("ipfs")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class IpfsNode:
    """A running offline Kubo daemon owned by the test session."""

    binary: Path
    repo: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    api_multiaddr: str = ""
    """``/ip4/127.0.0.1/tcp/<port>/http`` — what ``IpfsBlobStore``/``ipfshttpclient.Client`` take."""
    api_url: str = ""
    """``http://127.0.0.1:<port>``"""
    version: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def ipfs(self, *args: str, timeout: float = 30) -> str:
        """Runs an ``ipfs`` CLI command against this node's repo (e.g. ``add``) and returns stdout."""
        done = subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise IpfsFixtureError(f"ipfs {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the daemon's own process group, SIGKILL after ``timeout``; idempotent."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGINT)  # Kubo shuts down cleanly on SIGINT/SIGTERM
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _run(binary: Path, args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([str(binary), *args], env=env, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise IpfsFixtureError(f"`ipfs {' '.join(args)}` failed: {done.stderr.decode(errors='replace').strip()}")


def _api_answers(api_url: str) -> dict[str, object] | None:
    req = urllib.request.Request(api_url + "/api/v0/id", method="POST", data=b"")
    # Explicitly no proxy: loopback only, whatever HTTP(S)_PROXY says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=2) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start_ipfs_node(base_dir: Path, *, binary: Path | None = None, timeout: float = START_TIMEOUT) -> IpfsNode:
    """Initialises a fresh repo under ``base_dir`` and starts ``ipfs daemon --offline``.

    Returns once ``POST /api/v0/id`` answers; raises :class:`IpfsFixtureError` (with the log tail)
    if the binary is missing, init/config fails, the daemon exits, or it is not ready in time.
    """
    binary = binary or find_ipfs_binary()
    if binary is None:
        raise IpfsFixtureError(
            "no ipfs (Kubo) binary: set HCL_IPFS_BIN, build it into .hcl/bin/ipfs, or put ipfs on PATH"
        )
    repo = base_dir / "ipfs-repo"
    log_path = base_dir / "ipfs-daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update({"IPFS_PATH": str(repo), "IPFS_TELEMETRY": "off", "HOME": str(base_dir)})
    _run(binary, ["init", "--profile=test", "--empty-repo"], env)
    for key, value in _CONFIG:
        _run(binary, ["config", "--json", key, json.dumps(value)], env)

    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        process = subprocess.Popen(
            [str(binary), "daemon", "--offline"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals exactly this daemon
        )
    finally:
        log.close()
    node = IpfsNode(binary=binary, repo=repo, log_path=log_path, process=process, env=env)

    deadline = time.monotonic() + timeout
    api_file = repo / "api"
    try:
        while True:
            if process.poll() is not None:
                raise IpfsFixtureError(f"ipfs daemon exited with {process.returncode}:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise IpfsFixtureError(f"ipfs daemon not ready after {timeout:.0f}s:\n{node.log_tail()}")
            if api_file.exists():
                maddr = api_file.read_text().strip()  # e.g. /ip4/127.0.0.1/tcp/38885
                parts = maddr.split("/")
                if len(parts) >= 5 and parts[1] == "ip4" and parts[3] == "tcp":
                    url = f"http://{parts[2]}:{parts[4]}"
                    info = _api_answers(url)
                    if info is not None:
                        node.api_multiaddr = f"/ip4/{parts[2]}/tcp/{parts[4]}/http"
                        node.api_url = url
                        node.version = str(info.get("AgentVersion", ""))
                        return node
            time.sleep(0.1)
    except BaseException:
        node.stop()
        raise


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("HCL_REQUIRE_IPFS", "") not in ("", "0"):
        pytest.fail(f"IPFS required (HCL_REQUIRE_IPFS) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"real IPFS node unavailable: {reason}")


def node_or_skip(base_dir: Path) -> IpfsNode:
    """:func:`start_ipfs_node`, turning failure into a skip (or a failure under HCL_REQUIRE_IPFS)."""
    try:
        return start_ipfs_node(base_dir)
    except IpfsFixtureError as exc:
        _skip_or_fail(str(exc))
        raise  # unreachable: skip/fail raise


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """One offline Kubo node per test session (module import makes it available to a test file)."""
    node = node_or_skip(tmp_path_factory.mktemp("ipfs"))
    try:
        yield node
    finally:
        node.stop()
