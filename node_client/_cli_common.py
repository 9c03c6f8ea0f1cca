"""Helpers shared by the ``hcl`` sub-commands: consoles, option types, settings, signers, errors.

A module of its own so that sub-apps (``hcl code``, ``hcl audit``) can use them without importing the
top-level CLI, which imports the sub-apps.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address
from rich.console import Console

from node_client._client import ChainClient
from node_client._exceptions import NodeClientError
from node_client.settings import DEV_CHAIN_ID, ClientSettings

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# ---------------------------------------------------------------- shared options

RpcOpt = Annotated[str | None, typer.Option("--rpc-url", help="JSON-RPC URL [env HCL_RPC_URL]", show_default=False)]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", help="deployment manifest [env HCL_MANIFEST]", show_default=False)
]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="encrypted keystore file of the signer")]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="file holding the keystore password [env HCL_KEY_PASSWORD]")
]
DevAccountOpt = Annotated[
    int | None, typer.Option("--dev-account", help="sign with Hardhat dev account N (dev chain 31337 only)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NodeClientError as exc:
            err_console.print(f"[red]error[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None
        except ValueError as exc:
            err_console.print(f"[red]invalid input[/red]: {exc}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings(rpc_url: str | None = None, manifest: Path | None = None) -> ClientSettings:
    overrides: dict[str, Any] = {}
    if rpc_url:
        overrides["rpc_url"] = rpc_url
    if manifest:
        overrides["manifest"] = manifest
    return ClientSettings(**overrides)


def _client(settings: ClientSettings) -> ChainClient:
    return ChainClient(rpc_url=settings.rpc_url, poa=settings.poa, timeout=settings.rpc_timeout)


def _ledger(settings: ClientSettings):  # type: ignore[no-untyped-def]
    from node_client.deploy import Manifest

    client = _client(settings)
    return Manifest.load(settings.manifest).connect(client)


def _signer(client: ChainClient, key: Path | None, password_file: Path | None, dev_account: int | None) -> LocalAccount:
    from node_client.keys import dev_account as _dev
    from node_client.keys import load_keystore

    if key is not None and dev_account is not None:
        raise ValueError("give either --key or --dev-account, not both")
    if dev_account is not None:
        if client.chain_id != DEV_CHAIN_ID:
            raise ValueError(f"--dev-account is only allowed on the dev chain {DEV_CHAIN_ID}")
        return _dev(dev_account)
    if key is None:
        raise ValueError("a signer is needed: --key <keystore> (or --dev-account N on the dev chain)")
    return load_keystore(key, _password(password_file, confirm=False))


def _password(password_file: Path | None, *, confirm: bool) -> str:
    if password_file is not None:
        return password_file.read_text().rstrip("\n")
    env = os.environ.get("HCL_KEY_PASSWORD")
    if env:
        return env
    password = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ValueError("passwords differ")
    return password


def _address(value: str, what: str) -> str:
    if not is_address(value):
        raise ValueError(f"{what} {value!r} is not an Ethereum address")
    return to_checksum_address(value)


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: str) -> int:
    """``"30d"`` → seconds. Units: s, m, h, d, w."""
    match = _DURATION.match(value.strip().lower())
    if not match:
        raise ValueError(f"duration {value!r} must look like 90m, 12h, 30d or 2w")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _print_json(data: Any) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=_json_default).decode())


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)
