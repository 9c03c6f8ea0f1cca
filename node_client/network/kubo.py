"""One Kubo (IPFS) node per institution, in a private swarm on loopback: its repo, its ports, its process.

A node is described by :class:`KuboNode` (saved in the network's ``network.json`` beside the validators)
and runs detached in its own process group, like a :class:`~node_client.network.geth.GethNode`, so
``hcl network up`` can return and ``hcl network down`` stop it later by PID.

The swarm is private: every node holds the network's pre-shared ``swarm.key`` (libp2p pnet: each
connection is encrypted with it, so a node without the key cannot even finish a handshake) and runs with
``LIBP2P_FORCE_PNET=1`` (Kubo refuses to start without a key instead of joining the public IPFS network).
Nothing leaves 127.0.0.1: the swarm, the RPC API and the gateway listen on loopback only; there are no
bootstrap peers, no DHT or delegated routing (``Routing.Type=none``), no MDNS, no NAT mapping, relay, hole
punching or AutoNAT, no AutoConf/AutoTLS (both would fetch from the internet), no telemetry. The peers are
static, as the validators' are: each node lists the others in ``Peering.Peers`` (Kubo keeps those
connections up and redials them after a restart) and :func:`connect` joins them at once.

Under pnet Kubo 0.41 leaves QUIC, WebTransport and WebRTC-Direct off by default (they cannot carry a
pre-shared key); they are switched off explicitly anyway, and so is the websocket transport, which is on by
default and would otherwise share the TCP listener (not supported under pnet).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import requests

from node_client._compile import repo_root
from node_client._exceptions import NodeClientError, NodeError
from node_client._node import _port_in_use
from node_client.network.daemon import Daemon

__all__ = ["KUBO_MIN_VERSION", "KuboNode", "connect", "find_kubo", "new_swarm_key", "swarm_key_valid"]

#: The oldest Kubo whose configuration keys this module sets (``scripts/build_ipfs`` builds 0.41.0).
KUBO_MIN_VERSION: Final = (0, 41)
_SWARM_KEY_HEADER: Final = "/key/swarm/psk/1.0.0/\n/base16/\n"
_LOOPBACK: Final = "127.0.0.1"
#: The daemon prints this once the pre-shared key is in effect (Kubo ``cmd/ipfs/kubo/daemon.go``).
_PNET_BANNER: Final = b"Swarm is limited to private network of peers with the swarm key"


def find_kubo(root: Path | None = None) -> Path:
    """The Kubo binary: ``$HCL_IPFS_BIN``, ``.hcl/bin/ipfs`` (``scripts/build_ipfs``) or ``ipfs`` on PATH,
    if it is Kubo 0.41 or newer."""
    candidates = [Path(env)] if (env := os.environ.get("HCL_IPFS_BIN")) else []
    with contextlib.suppress(NodeClientError):  # an installed package, not a checkout: only PATH is left
        candidates.append(repo_root(root) / ".hcl" / "bin" / "ipfs")
    if on_path := shutil.which("ipfs"):
        candidates.append(Path(on_path))
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK) and _version(binary) >= KUBO_MIN_VERSION:
            return binary
    wanted = ".".join(map(str, KUBO_MIN_VERSION))
    raise NodeError(f"Kubo (ipfs) {wanted} or newer not found: run ./scripts/build_ipfs (it needs Go; minutes once)")


def _version(binary: Path) -> tuple[int, ...]:
    try:
        out = subprocess.run([binary, "version", "--number"], capture_output=True, text=True, timeout=30).stdout
        return tuple(int(part) for part in out.strip().split("-")[0].split(".")[:2])
    except (OSError, subprocess.SubprocessError, ValueError):
        return ()


def new_swarm_key(path: Path) -> Path:
    """Writes a fresh pre-shared swarm key (32 random bytes, Kubo's three-line format) with mode 0600.

    It never overwrites: a network's key is made once, and a node with another key is out of the swarm.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise NodeError(f"{path} exists: a swarm key is never replaced (every node of the swarm holds it)") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(_SWARM_KEY_HEADER + secrets.token_bytes(32).hex() + "\n")
    return path


def swarm_key_valid(text: str) -> bool:
    """Whether ``text`` is a swarm key in the format Kubo reads (``/key/swarm/psk/1.0.0/``, base16, 64 hex)."""
    lines = text.strip().splitlines()
    return (
        len(lines) == 3
        and lines[0] == "/key/swarm/psk/1.0.0/"
        and lines[1] == "/base16/"
        and len(lines[2]) == 64
        and all(c in "0123456789abcdefABCDEF" for c in lines[2])
    )


@dataclass
class KuboNode(Daemon):
    """One institution's IPFS node: its repo (``IPFS_PATH``), its loopback ports, its identity, its process."""

    stop_grace = 15.0  # Kubo closes its datastore (a class attribute, not a field)

    name: str
    repo: Path
    swarm_port: int
    api_port: int
    gateway_port: int
    peer_id: str = ""  # known after :meth:`init` (the identity key is made by ``ipfs init``)
    pid: int | None = None

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:<port>``: the Kubo RPC API (``/api/v0/…``); unauthenticated, loopback only."""
        return f"http://{_LOOPBACK}:{self.api_port}"

    @property
    def api_multiaddr(self) -> str:
        """The API as a multiaddr, what ``IpfsBlobStore`` / ``ipfshttpclient`` take."""
        return f"/ip4/{_LOOPBACK}/tcp/{self.api_port}/http"

    @property
    def gateway_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.gateway_port}"

    @property
    def swarm_address(self) -> str:
        """Where the other nodes dial this one: ``/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>``."""
        return f"/ip4/{_LOOPBACK}/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    @property
    def log_path(self) -> Path:
        return self.repo / "daemon.log"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "repo": str(self.repo)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KuboNode:
        return cls(**{**data, "repo": Path(data["repo"])})

    def config(self) -> list[tuple[str, object]]:
        """Every configuration key this module sets, with its value (applied by :meth:`init`)."""
        loopback_tcp = f"/ip4/{_LOOPBACK}/tcp/"
        return [
            ("Addresses.Swarm", [f"{loopback_tcp}{self.swarm_port}"]),
            ("Addresses.API", f"{loopback_tcp}{self.api_port}"),
            ("Addresses.Gateway", f"{loopback_tcp}{self.gateway_port}"),
            ("Addresses.Announce", []),
            ("Addresses.AppendAnnounce", []),
            ("Addresses.NoAnnounce", []),
            ("Bootstrap", []),
            ("Routing.Type", "none"),
            ("Routing.DelegatedRouters", []),
            ("Ipns.DelegatedPublishers", []),
            ("DNS.Resolvers", {}),
            ("Discovery.MDNS.Enabled", False),
            ("AutoConf.Enabled", False),
            ("AutoTLS.Enabled", False),
            ("AutoNAT.ServiceMode", "disabled"),
            ("HTTPRetrieval.Enabled", False),
            ("Swarm.DisableNatPortMap", True),
            ("Swarm.EnableHolePunching", False),
            ("Swarm.RelayClient.Enabled", False),
            ("Swarm.RelayService.Enabled", False),
            ("Swarm.Transports.Network.TCP", True),
            ("Swarm.Transports.Network.Websocket", False),
            ("Swarm.Transports.Network.QUIC", False),
            ("Swarm.Transports.Network.WebTransport", False),
            ("Swarm.Transports.Network.WebRTCDirect", False),
            ("Plugins.Plugins", {"telemetry": {"Config": {"Mode": "off"}}}),
        ]

    # ------------------------------------------------------------------ lifecycle

    def init(self, binary: Path, swarm_key: Path) -> None:
        """Creates the repo (first time), applies :meth:`config`, installs the swarm key, learns the peer id.

        ``ipfs init --profile=test`` starts from Kubo's own isolated settings (loopback, no bootstrap, no
        AutoConf placeholders), which :meth:`config` then pins one by one, so a later Kubo changing that
        profile cannot open anything. Running it again on an initialised repo re-applies the settings.
        """
        if not swarm_key_valid(swarm_key.read_text()):
            raise NodeError(f"{swarm_key} is not a swarm key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits)")
        if not (self.repo / "config").exists():
            self.repo.mkdir(parents=True, exist_ok=True)
            os.chmod(self.repo, 0o700)
            self._ipfs(binary, ["init", "--empty-repo", "--profile=test"])
        for key, value in self.config():
            self._ipfs(binary, ["config", "--json", key, json.dumps(value)])
        target = self.repo / "swarm.key"
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(swarm_key.read_text())
        self.peer_id = self._ipfs(binary, ["config", "Identity.PeerID"]).strip()

    def write_peers(self, binary: Path, peers: list[KuboNode]) -> None:
        """``Peering.Peers``: every other node, kept connected by Kubo (read at the next start)."""
        listed = [{"ID": p.peer_id, "Addrs": [f"/ip4/{_LOOPBACK}/tcp/{p.swarm_port}"]} for p in peers if p is not self]
        self._ipfs(binary, ["config", "--json", "Peering.Peers", json.dumps(listed)])

    def env(self) -> dict[str, str]:
        """The daemon's environment: its repo, pnet forced, telemetry off, no HTTP proxy (loopback only)."""
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env.update({"IPFS_PATH": str(self.repo), "LIBP2P_FORCE_PNET": "1", "IPFS_TELEMETRY": "off"})
        return env

    def start(self, binary: Path, *, timeout: float = 60.0) -> int:
        """Starts the daemon detached (own process group, log in ``daemon.log``) and waits until its API
        answers as this peer with the pre-shared key in effect."""
        if self.running:
            return self.pid or 0
        for port in (self.swarm_port, self.api_port, self.gateway_port):
            if _port_in_use(_LOOPBACK, port):
                raise NodeError(f"port {port} of {self.name}'s IPFS node is taken by another process")
        return self.launch(
            [str(binary), "daemon"],
            env=self.env(),
            ready=lambda log_start: self._answers_as_self() and self.logged_since(log_start, _PNET_BANNER),
            timeout=timeout,
        )

    # ------------------------------------------------------------------ the RPC API

    def api(
        self,
        command: str,
        *args: str,
        data: bytes | None = None,
        params: Mapping[str, str | int | bool] | None = None,
        timeout: float = 10.0,
    ) -> Any:
        """``POST /api/v0/<command>?arg=…&<params>`` (``data`` sent as the multipart ``file``); the JSON
        answer, or the raw bytes when the answer is not JSON (``block/get``, ``cat``). ``timeout`` is this
        client's; Kubo's own deadline for the command is ``params={"timeout": "5s"}``.

        Raises :class:`NodeError` if the node does not answer or refuses (Kubo's ``Message`` in it).
        """
        query: list[tuple[str, str]] = [("arg", a) for a in args]
        query += [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (params or {}).items()]
        files = {"file": ("data", data)} if data is not None else None
        try:
            with requests.Session() as session:
                session.trust_env = False  # loopback: no proxy, whatever the environment says
                reply = session.post(f"{self.api_url}/api/v0/{command}", params=query, files=files, timeout=timeout)
        except requests.RequestException as exc:
            raise NodeError(f"IPFS node of {self.name}: {command} failed: {exc}") from None
        if reply.status_code != 200:
            try:
                message = reply.json().get("Message", reply.text)
            except ValueError:
                message = reply.text
            raise NodeError(f"IPFS node of {self.name}: {command} refused ({reply.status_code}): {message}")
        if reply.headers.get("Content-Type", "").startswith("application/json"):
            return reply.json()
        return reply.content

    def identity(self) -> dict[str, Any]:
        """``/api/v0/id``: the peer id, the agent version and the addresses it announces."""
        info: dict[str, Any] = self.api("id", timeout=2)
        return info

    def peers(self) -> list[str]:
        """The peer ids this node is connected to now."""
        reply = self.api("swarm/peers", timeout=5)
        return [str(p["Peer"]) for p in (reply.get("Peers") or [])]

    def _answers_as_self(self) -> bool:
        try:
            return self.identity().get("ID") == self.peer_id
        except NodeError:
            return False

    # ------------------------------------------------------------------ helpers

    def _ipfs(self, binary: Path, args: list[str]) -> str:
        done = subprocess.run([str(binary), *args], env=self.env(), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise NodeError(f"ipfs {args[0]} failed for {self.name}: {done.stderr[-2000:]}")
        return done.stdout


def connect(a: KuboNode, b: KuboNode, *, timeout: float = 10.0) -> None:
    """Connects ``a`` to ``b`` now (``swarm connect`` through ``a``'s RPC API); a node without the same
    swarm key fails the handshake, which this raises as :class:`NodeError`."""
    if a.peer_id == b.peer_id:
        return
    a.api("swarm/connect", b.swarm_address, timeout=timeout)
