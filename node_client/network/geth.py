"""One geth v1.13.15 Clique validator on loopback: its folder, its ports, its process.

A node is described by :class:`GethNode` (saved in the network's ``network.json``) and runs detached in
its own process group, so ``hcl network up`` can return and ``hcl network down`` stop it later by PID. Its
p2p identity comes from a node key we write, so every enode is known before any node starts and peers are
static: no discovery, no NAT, nothing but 127.0.0.0/8.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from eth_keys.datatypes import PrivateKey

from node_client._compile import repo_root
from node_client._exceptions import NodeError
from node_client._node import _chain_id, _port_in_use
from node_client.network.daemon import Daemon

__all__ = ["GETH_VERSION", "GethNode", "find_geth"]

GETH_VERSION: Final = "1.13.15"
#: The RPC namespaces served on loopback: ``admin`` and ``clique`` drive peering and signer votes.
HTTP_APIS: Final = "eth,net,web3,txpool,clique,admin,miner"


def find_geth(root: Path | None = None) -> Path:
    """The geth binary: ``.hcl/bin/geth`` (``scripts/build_geth``) or ``geth`` on PATH, if it is 1.13.15."""
    candidates = [repo_root(root) / ".hcl" / "bin" / "geth"]
    on_path = shutil.which("geth")
    if on_path:
        candidates.append(Path(on_path))
    for binary in candidates:
        if binary.exists():
            try:
                out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            if f"Version: {GETH_VERSION}" in out:
                return binary
    raise NodeError(f"geth {GETH_VERSION} not found: run ./scripts/build_geth (it needs Go; ~5 minutes once)")


@dataclass
class GethNode(Daemon):
    """One validator: where its data lives, which ports it holds, who seals with it."""

    name: str
    datadir: Path
    signer: str
    p2p_port: int
    http_port: int
    authrpc_port: int
    node_key: str  # hex secp256k1 key of the p2p identity (not a funds key: it only names the node)
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def enode(self) -> str:
        public = PrivateKey(bytes.fromhex(self.node_key)).public_key.to_hex()[2:]
        return f"enode://{public}@127.0.0.1:{self.p2p_port}?discport=0"

    @staticmethod
    def new_node_key() -> str:
        return secrets.token_bytes(32).hex()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "datadir": str(self.datadir)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GethNode:
        return cls(**{**data, "datadir": Path(data["datadir"])})

    # ------------------------------------------------------------------ lifecycle

    def init(self, geth: Path, genesis: Path) -> None:
        """``geth init``: writes the genesis into a fresh datadir (hash-based state: archive mode needs it)."""
        self._run(geth, ["init", "--state.scheme", "hash", "--datadir", str(self.datadir), str(genesis)])

    def write_peers(self, peers: list[str]) -> None:
        """Static peers (every other validator's enode), read by geth at each start."""
        items = ", ".join(f'"{e}"' for e in peers if e != self.enode)
        (self.datadir / "config.toml").write_text(f"[Node.P2P]\nStaticNodes = [{items}]\nTrustedNodes = [{items}]\n")
        (self.datadir / "nodekey").write_text(self.node_key)
        os.chmod(self.datadir / "nodekey", 0o600)

    def command(self, geth: Path, *, chain_id: int, password_file: Path) -> list[str]:
        """The geth command line: archive (auditors read old state), loopback only, ready to seal as
        ``signer`` — but sealing starts only with ``miner_start``, once the node has its peers: validators
        that seal before they meet each seal their own block 1 and, Clique forbidding a signer two blocks in
        a row, can all end up waiting for each other."""
        return [
            str(geth),
            *("--datadir", str(self.datadir), "--config", str(self.datadir / "config.toml")),
            *("--networkid", str(chain_id), "--syncmode", "full", "--gcmode", "archive", "--state.scheme", "hash"),
            *("--port", str(self.p2p_port), "--nodekey", str(self.datadir / "nodekey")),
            *("--nodiscover", "--nat", "none", "--netrestrict", "127.0.0.0/8", "--ipcdisable"),
            *("--http", "--http.addr", "127.0.0.1", "--http.port", str(self.http_port), "--http.api", HTTP_APIS),
            *("--http.vhosts", "localhost,127.0.0.1", "--authrpc.addr", "127.0.0.1"),
            *("--authrpc.port", str(self.authrpc_port)),
            *("--miner.etherbase", self.signer, "--unlock", self.signer),
            *("--password", str(password_file), "--allow-insecure-unlock", "--verbosity", "3"),
            # a gateway sends every strict logAccess from one account: geth's default of 16 pending
            # transactions per account capped strict releases at ~16 a block (bench/results/network.json)
            *("--txpool.accountslots", "1024", "--txpool.globalslots", "16384", "--txpool.accountqueue", "1024"),
        ]

    def start(self, geth: Path, *, chain_id: int, password_file: Path, timeout: float = 60.0) -> int:
        """Starts the node detached (own process group, log in ``geth.log``) and waits until it answers."""
        if self.running:
            return self.pid or 0
        for port in (self.p2p_port, self.http_port, self.authrpc_port):
            if _port_in_use("127.0.0.1", port):
                raise NodeError(f"port {port} of {self.name} is taken by another process")
        # answering RPC is not enough: the sealing key is decrypted (scrypt) after that, and a
        # ``miner_start`` before it fails its first block and waits for the next head that never comes
        return self.launch(
            self.command(geth, chain_id=chain_id, password_file=password_file),
            ready=lambda log_start: (
                _chain_id(self.url) == chain_id and self.logged_since(log_start, b"Unlocked account")
            ),
            timeout=timeout,
            poll=0.2,
        )

    @property
    def log_path(self) -> Path:
        return self.datadir / "geth.log"

    def _run(self, geth: Path, args: list[str]) -> None:
        done = subprocess.run([str(geth), *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise NodeError(f"geth {args[0]} failed for {self.name}: {done.stderr[-2000:]}")
