"""What every ``hcl`` command shares: consoles, option groups, error handling, parsing, printing.

The top-level CLI (``node_client.cli``), its sub-apps (``hcl code``, ``hcl audit``) and commands that other
packages contribute through the ``hcl.commands`` entry-point group (``hcl gateway``) import from here; this
module imports none of them, so there is no cycle.

Option groups: a command that talks to a chain declares a keyword-only parameter ``chain: ChainOpts``, one
that signs a transaction ``signer: SignerOpts``; :func:`option_groups` turns each into its options
(``--rpc-url --manifest``; ``--key --password-file --dev-account``) in place, so the options are spelled once
and every command reads them the same way::

    @app.command()
    @handle_errors
    @option_groups
    def revoke(grantee: GranteeArg, *, chain: ChainOpts, signer: SignerOpts) -> None:
        ledger = chain.ledger()
        ledger.consents.revoke(signer.account(dev=ledger.dev), grantee)
"""

from __future__ import annotations

import getpass
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, get_type_hints

import orjson
import typer
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address
from rich.console import Console

from node_client._client import ChainClient
from node_client._exceptions import ContractRevert, NodeClientError
from node_client.refusals import revert_hint
from node_client.settings import ClientSettings

if TYPE_CHECKING:
    from node_client.blinding import CategoryKey
    from node_client.deploy import Ledger, Manifest
    from node_client.signing import Domain

__all__ = [
    "ChainOpts",
    "DevAccountOpt",
    "GatewayUrlOpt",
    "JsonOpt",
    "KeyOpt",
    "ManifestOpt",
    "PasswordFileOpt",
    "RpcOpt",
    "SignerOpts",
    "console",
    "err_console",
    "handle_errors",
    "option_groups",
    "own_category_key",
    "parse_address",
    "parse_duration",
    "parse_slot",
    "print_json",
    "read_password",
]

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

# ---------------------------------------------------------------- options

RpcOpt = Annotated[str | None, typer.Option("--rpc-url", help="JSON-RPC URL [env HCL_RPC_URL]", show_default=False)]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", help="deployment manifest [env HCL_MANIFEST]", show_default=False)
]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="encrypted keystore file of the signer")]
GatewayUrlOpt = Annotated[str, typer.Option("--url", envvar="HCL_GATEWAY_URL", help="the gateway's base URL")]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="file holding the keystore password [env HCL_KEY_PASSWORD]")
]
DevAccountOpt = Annotated[
    int | None, typer.Option("--dev-account", help="sign with public dev account N (dev deployments only)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@dataclass(frozen=True)
class ChainOpts:
    """``--rpc-url`` and ``--manifest``: which node, which deployment (defaults from ``HCL_*``)."""

    rpc_url: RpcOpt = None
    manifest: ManifestOpt = None

    @cached_property
    def settings(self) -> ClientSettings:
        overrides: dict[str, Any] = {}
        if self.rpc_url:
            overrides["rpc_url"] = self.rpc_url
        if self.manifest:
            overrides["manifest"] = self.manifest
        return ClientSettings(**overrides)

    def client(self) -> ChainClient:
        s = self.settings
        return ChainClient(rpc_url=s.rpc_url, timeout=s.rpc_timeout)

    def load_manifest(self) -> Manifest:
        from node_client.deploy import Manifest

        return Manifest.load(self.settings.manifest)

    def ledger(self) -> Ledger:
        """The deployment's contracts, connected to the node."""
        return self.load_manifest().connect(self.client())


@dataclass(frozen=True)
class SignerOpts:
    """``--key``, ``--password-file``, ``--dev-account``: who signs."""

    key: KeyOpt = None
    password_file: PasswordFileOpt = None
    dev_account: DevAccountOpt = None

    def account(self, *, dev: bool = False) -> LocalAccount:
        """The signer: a keystore (password from ``--password-file``, ``HCL_KEY_PASSWORD`` or a prompt) or,
        for a dev deployment only (``dev``: the manifest says so), a public dev account."""
        from node_client.keys import dev_account as _dev
        from node_client.keys import load_keystore

        if self.key is not None and self.dev_account is not None:
            raise ValueError("give either --key or --dev-account, not both")
        if self.dev_account is not None:
            if not dev:
                raise ValueError("--dev-account is only allowed on a dev deployment (its manifest says dev: true)")
            return _dev(self.dev_account)
        if self.key is None:
            raise ValueError("a signer is needed: --key <keystore> (or --dev-account N on a dev deployment)")
        return load_keystore(self.key, read_password(self.password_file, confirm=False))


_GROUPS: tuple[type[ChainOpts] | type[SignerOpts], ...] = (ChainOpts, SignerOpts)


def _group_options(group: type[Any]) -> list[inspect.Parameter]:
    hints = get_type_hints(group, include_extras=True)  # the Annotated[..., typer.Option(...)] of each field
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hints[f.name])
        for f in fields(group)
    ]


def option_groups(fn: Callable[..., R]) -> Callable[..., R]:
    """Replaces each parameter annotated :class:`ChainOpts` or :class:`SignerOpts` by that group's options,
    at the same place (so ``--help`` lists them where the parameter stands); the command receives the group.

    All parameters of the command as typer sees it are keyword-only (typer passes every value by name).
    """
    sig = inspect.signature(fn, eval_str=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, type[Any]] = {}
    for p in sig.parameters.values():
        if p.annotation in _GROUPS:
            groups[p.name] = p.annotation
            params.extend(_group_options(p.annotation))
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    names = [q.name for q in params]
    if len(set(names)) != len(names):
        raise TypeError(f"{fn.__name__}: an option group repeats a parameter name ({names})")

    @wraps(fn)
    def wrapper(**kwargs: Any) -> R:
        for name, group in groups.items():
            kwargs[name] = group(**{f.name: kwargs.pop(f.name) for f in fields(group)})
        return fn(**kwargs)  # kwargs now match fn's own signature

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]  # read by typer
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
    return wrapper


# ---------------------------------------------------------------- errors


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Every failure the client raises on purpose (``NodeClientError``) exits 1 with one line; bad input
    (``ValueError``) exits 2."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ContractRevert as exc:
            hint = revert_hint(exc)
            err_console.print(f"[red]error[/red] {hint} ({exc})" if hint else f"[red]error[/red] {exc}")
            raise typer.Exit(1) from None
        except NodeClientError as exc:
            err_console.print(f"[red]error[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None
        except ValueError as exc:
            err_console.print(f"[red]invalid input[/red]: {exc}")
            raise typer.Exit(2) from None

    return wrapper


# ---------------------------------------------------------------- parsing


def read_password(password_file: Path | None, *, confirm: bool) -> str:
    """A keystore password: from ``password_file``, else ``HCL_KEY_PASSWORD``, else a prompt."""
    if password_file is not None:
        return password_file.read_text().rstrip("\n")
    env = os.environ.get("HCL_KEY_PASSWORD")
    if env:
        return env
    password = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ValueError("passwords differ")
    return password


def parse_address(value: str, what: str) -> str:
    """``value`` as a checksummed address; ``ValueError`` naming ``what`` otherwise."""
    if not is_address(value):
        raise ValueError(f"{what} {value!r} is not an Ethereum address")
    return str(to_checksum_address(value))


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: str) -> int:
    """``"30d"`` → seconds. Units: s, m, h, d, w."""
    match = _DURATION.match(value.strip().lower())
    if not match:
        raise ValueError(f"duration {value!r} must look like 90m, 12h, 30d or 2w")
    return int(match.group(1)) * _UNITS[match.group(2)]


# ---------------------------------------------------------------- printing


def own_category_key(account: LocalAccount, domain: Domain) -> tuple[CategoryKey, bytes]:
    """The signer's own category key (she is the patient) and the signature that makes it."""
    from node_client import blinding

    signature = blinding.sign_category_key(account, domain)
    return blinding.category_key(domain, account.address, signature), signature


def parse_slot(value: str, key: CategoryKey | None) -> int:
    """One category (a slug) or slot (``slot-N``) → the patient's slot; a blinded category needs her key."""
    from node_client.blinding import PUBLIC_SLOTS
    from node_client.vocabulary import SLOT_COUNT, parse_categories

    if value.startswith("slot-") and value[5:].isdigit() and int(value[5:]) < SLOT_COUNT:
        return int(value[5:])
    mask = parse_categories(value)
    if mask & (mask - 1):
        raise ValueError("give exactly one category")
    category = mask.bit_length() - 1
    if key is not None:
        return key.slot(category)
    if category not in PUBLIC_SLOTS:
        raise ValueError(
            f"{value} sits in a slot of its own for each patient: give the slot (slot-N, as `hcl consent list` "
            "shows it) or sign as the patient (--key / --dev-account)"
        )
    return category


def print_json(data: Any) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=_json_default).decode())


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)
