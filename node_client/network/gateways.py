"""One gateway per institution (``hcl network up --gateways``): its folder, its port, its process.

A gateway runs as ``hcl gateway serve`` — the console script beside this Python, found by name, so the
client never imports the gateway package — detached in its own process group like a validator, configured
by ``HCL_*`` environment variables alone (:meth:`GatewayProcess.env`) and started in its data folder
``gateways/<slug>/`` (its database, KEK, journal, blobs and ``gateway.log``), which no restart wipes. Its
port is chosen once, when the network is created: the endpoint ``http://127.0.0.1:<port>`` is part of its
member's metadata on chain, and changing it takes governance.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

from node_client._exceptions import NodeError
from node_client._node import _port_in_use
from node_client.network.daemon import Daemon

__all__ = ["LEDGER_MODES", "GatewayProcess", "gateway_command", "healthy"]

LEDGER_MODES: Final = ("strict", "batch")
_LOOPBACK: Final = "127.0.0.1"


def gateway_command() -> list[str]:
    """How to run ``hcl``: the console script beside ``sys.executable`` (a venv's ``bin/``), else this
    Python calling ``node_client.cli.main``; :class:`NodeError` if the gateway is not installed at all."""
    if not any(ep.name == "gateway" for ep in entry_points(group="hcl.commands")):
        raise NodeError(
            "cannot launch a gateway: the gateway package is not installed in this Python "
            f"({sys.executable}; no `hcl gateway` command): pip install healthcode-ledger, or ./scripts/up"
        )
    script = Path(sys.executable).parent / "hcl"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from node_client.cli import main; main()"]


def healthy(url: str, *, timeout: float = 2.0) -> bool:
    """Whether ``GET <url>/healthz`` answers 200 (a 503 tells an unsynced or unhealthy gateway)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(f"{url}/healthz", timeout=timeout) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class GatewayProcess(Daemon):
    """One institution's gateway: its member, where its data lives, its port, how it signs, its process."""

    stop_grace = 20.0  # the gateway finishes a release and closes its journal (a class attribute)

    name: str  # the institution's name
    member: str  # the gateway member's name ("<institution> gateway")
    data_dir: Path
    port: int
    dev_account: int | None = None  # dev networks: the public dev account it signs with
    keystore: Path | None = None  # real networks: its member keystore (the network's password unlocks it)
    store: str = ""  # "local" or "ipfs", fixed at its first start: its blobs stay where they were put
    ledger_mode: str = "strict"
    pid: int | None = None

    @property
    def url(self) -> str:
        """The endpoint, as registered in its member's metadata."""
        return f"http://{_LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "gateway.log"

    @property
    def label(self) -> str:
        return self.member

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data, "data_dir": str(self.data_dir), "keystore": str(self.keystore) if self.keystore else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GatewayProcess:
        keystore = Path(data["keystore"]) if data.get("keystore") else None
        return cls(**{**data, "data_dir": Path(data["data_dir"]), "keystore": keystore})

    def env(self, *, rpc_urls: list[str], manifest: Path, password_file: Path, ipfs_api: str | None) -> dict[str, str]:
        """The gateway's whole configuration: this environment without any inherited ``HCL_*`` (nor
        proxies: everything is loopback), then its own. ``ipfs_api``: its institution's Kubo node."""
        env = {
            k: v for k, v in os.environ.items() if not k.upper().startswith("HCL_") and not k.upper().endswith("_PROXY")
        }
        env.update(
            HCL_RPC_URL=",".join(rpc_urls),
            HCL_MANIFEST=str(manifest.resolve()),
            HCL_DATA_DIR=str(self.data_dir.resolve()),
            HCL_HOST=_LOOPBACK,
            HCL_PORT=str(self.port),
            HCL_PUBLIC_URL=self.url,
            HCL_LEDGER_MODE=self.ledger_mode,
            HCL_STORE=self.store or "local",
        )
        if self.store == "ipfs" and ipfs_api:
            env["HCL_IPFS_API"] = ipfs_api
        if self.dev_account is not None:
            env["HCL_GATEWAY_DEV_ACCOUNT"] = str(self.dev_account)
        elif self.keystore is not None:
            env["HCL_GATEWAY_KEY"] = str(self.keystore.resolve())
            env["HCL_GATEWAY_KEY_PASSWORD_FILE"] = str(password_file.resolve())
        return env

    def start(self, command: list[str], env: dict[str, str], *, timeout: float = 120.0) -> int:
        """Starts ``hcl gateway serve`` detached in its data folder and waits until ``/healthz`` is 200
        (the chain indexed); on failure :class:`NodeError` carries ``gateway.log``'s tail."""
        if self.running:
            return self.pid or 0
        if _port_in_use(_LOOPBACK, self.port):
            raise NodeError(f"port {self.port} of {self.member} (its registered endpoint) is taken by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.data_dir, 0o700)  # its KEK and database
        return self.launch(
            [*command, "gateway", "serve"],
            env=env,
            cwd=self.data_dir,
            ready=lambda _log_start: healthy(self.url),
            timeout=timeout,
            poll=0.5,
        )
