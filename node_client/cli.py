"""``hcl``: the HealthCode Ledger command line.

Thin commands over the node client: each parses options, builds settings, and delegates. Every failure
the client raises on purpose (``NodeClientError``) is printed as one line and exits 1.

Commands of other installed packages join through the ``hcl.commands`` entry-point group: each entry
point names a ``typer.Typer`` that becomes ``hcl <entry point name>`` (the gateway's ``hcl gateway``,
declared in pyproject.toml). This library never imports them by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from node_client import __version__
from node_client._cli_common import (
    ChainOpts,
    JsonOpt,
    KeyOpt,
    PasswordFileOpt,
    SignerOpts,
    console,
    err_console,
    handle_errors,
    option_groups,
    own_category_key,
    parse_address,
    parse_duration,
    parse_slot,
    print_json,
    read_password,
)
from node_client._client import ChainClient
from node_client.audit_cli import audit_app
from node_client.code_cli import code_app
from node_client.network_cli import network_app
from node_client.patient_cli import patient_app

if TYPE_CHECKING:
    from node_client.blinding import CategoryKey
    from node_client.contracts import Action
    from node_client.deploy import Ledger

__all__ = ["COMMANDS_GROUP", "app", "main", "parse_duration"]

#: the entry-point group through which other packages add ``hcl`` sub-commands
COMMANDS_GROUP = "hcl.commands"

app = typer.Typer(name="hcl", help="HealthCode Ledger: consent and data-sharing audit network.", no_args_is_help=True)
chain_app = typer.Typer(help="Run a local chain node.", no_args_is_help=True)
member_app = typer.Typer(help="Consortium membership and M-of-N governance.", no_args_is_help=True)
consent_app = typer.Typer(help="Patient consents.", no_args_is_help=True)
keys_app = typer.Typer(help="Encrypted keystore files.", no_args_is_help=True)
dev_app = typer.Typer(help="Developer tasks: regenerate generated files.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")
app.add_typer(member_app, name="member")
app.add_typer(consent_app, name="consent")
app.add_typer(keys_app, name="keys")
app.add_typer(dev_app, name="dev")
app.add_typer(code_app, name="code")
app.add_typer(audit_app, name="audit")
app.add_typer(network_app, name="network")
app.add_typer(patient_app, name="patient")
_BUILT_IN = frozenset({"deploy", "gas-report", "chain", "member", "consent", "keys", "dev", "code", "audit", "network"})

# ---------------------------------------------------------------- top level


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hcl {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """HealthCode Ledger: patient-controlled consent and a tamper-evident access ledger."""


@app.command()
@handle_errors
@option_groups
def deploy(
    *,
    chain: ChainOpts,
    dev: Annotated[
        bool, typer.Option("--dev", help="dev consortium: Hardhat accounts 0-2 admins (2-of-3), 7 members")
    ] = False,
    key: KeyOpt = None,
    password_file: PasswordFileOpt = None,
    admins: Annotated[str | None, typer.Option(help="comma-separated admin addresses (non-dev)")] = None,
    threshold: Annotated[int, typer.Option(help="approvals needed per governance action (non-dev)")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Compile, deploy and wire the four contracts; write the deployment manifest."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from node_client._compile import compile_contracts
    from node_client.deploy import chain_funds_dev_keys, deploy_dev
    from node_client.deploy import deploy as _deploy

    client = chain.client()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("compiling contracts", total=2)
        artifacts = compile_contracts()
        bar.update(task, advance=1, description="deploying and running initial governance")
        if dev:
            if not chain_funds_dev_keys(client):
                raise ValueError("--dev is only allowed on a dev chain (one whose genesis funds the public dev keys)")
            result = deploy_dev(client, artifacts=artifacts)
        else:
            deployer = SignerOpts(key=key, password_file=password_file).account()
            admin_list = [parse_address(a, "admin") for a in (admins or deployer.address).split(",") if a.strip()]
            signers = [deployer] if deployer.address in admin_list else []
            result = _deploy(
                client,
                deployer=deployer,
                admins=admin_list,
                threshold=threshold,
                governance_signers=signers,
                artifacts=artifacts,
            )
        bar.update(task, advance=1, description="deployed")
    result.save(chain.settings.manifest)
    if as_json:
        typer.echo(result.to_json().decode())
        return
    table = Table(title=f"HealthCode Ledger on chain {result.chain_id} (block {result.deploy_block})")
    table.add_column("contract")
    table.add_column("address")
    for name, address in result.contracts.items():
        table.add_row(name, address)
    console.print(table)
    console.print(f"admins: {len(result.admins)}, threshold {result.threshold}; members: {len(result.members)}")
    console.print(f"manifest: {chain.settings.manifest}")


@app.command("gas-report")
@handle_errors
def gas_report_cmd(
    out: Annotated[Path, typer.Option(help="JSON output")] = Path("bench/results/gas.json"),
) -> None:
    """Measure the gas of every state-changing function on a fresh local node; write JSON, print a table."""
    from node_client._node import HardhatNode, free_port
    from node_client.gas_report import GOALS, run_gas_report, write_gas_report

    with HardhatNode().start(port=free_port()) as node:
        solc, rows = run_gas_report(ChainClient(rpc_url=node.url))
    path = write_gas_report(solc, rows, out)
    table = Table(title=f"Gas (solc {solc})")
    for col in ("operation", "gas", "goal", "", "note"):
        table.add_column(col, justify="right" if col in ("gas", "goal") else "left")
    for row in rows:
        goal = GOALS.get(row.name)
        mark = "" if goal is None else ("[green]ok[/green]" if row.per_access <= goal else "[yellow]over[/yellow]")
        table.add_row(row.name, f"{row.gas:,}", f"{goal:,}" if goal else "", mark, row.note)
    console.print(table)
    console.print(f"written: {path}")


# ---------------------------------------------------------------- chain


@chain_app.command("up")
@handle_errors
def chain_up(
    port: Annotated[int, typer.Option(help="TCP port", envvar="HCL_CHAIN_PORT")] = 8545,
    host: Annotated[str, typer.Option(help="interface to bind (keep it on loopback)")] = "127.0.0.1",
    detach: Annotated[bool, typer.Option(help="leave the node running in the background and return")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait until the node answers")] = 60.0,
) -> None:
    """Start a local Hardhat node and wait until it answers (foreground unless --detach)."""
    from node_client._node import HardhatNode

    node = HardhatNode().start(port=port, host=host, timeout=timeout)
    console.print(f"chain up: {node.url} (Hardhat dev chain, pid {node.pid}, log {node.log_path})")
    if detach:
        pid_file = Path(".hcl") / f"chain-{port}.pid"
        pid_file.parent.mkdir(exist_ok=True)
        pid_file.write_text(str(node.detach()))
        return

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while node.running:
            time.sleep(0.5)
        err_console.print(f"[red]the node exited[/red]; log {node.log_path}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping the chain")
    finally:
        node.stop()


@chain_app.command("down")
@handle_errors
def chain_down(port: Annotated[int, typer.Option(help="port of a node started with --detach")] = 8545) -> None:
    """Stop a node started with ``hcl chain up --detach``."""
    pid_file = Path(".hcl") / f"chain-{port}.pid"
    if not pid_file.exists():
        raise ValueError(f"no detached node on port {port} ({pid_file} missing)")
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGTERM)
    pid_file.unlink()
    console.print(f"chain on port {port} stopped")


# ---------------------------------------------------------------- members


def _action(name: str) -> Action:
    from node_client.contracts import Action

    key = name.upper().replace("-", "_")
    aliases = {
        "ADD": "ADD_MEMBER",
        "SUSPEND": "SUSPEND_MEMBER",
        "REINSTATE": "REINSTATE_MEMBER",
        "REMOVE": "REMOVE_MEMBER",
    }
    key = aliases.get(key, key)
    try:
        return Action[key]
    except KeyError:
        known = ", ".join(a.name.lower().replace("_", "-") for a in Action)
        raise ValueError(f"unknown action {name!r}; known: {known}") from None


@member_app.command("propose")
@handle_errors
@option_groups
def member_propose(
    action: Annotated[
        str,
        typer.Argument(
            help="add, suspend, reinstate, remove, change-roles, rotate-encryption-key, add-admin, remove-admin, change-threshold, transfer-records"
        ),
    ],
    target: Annotated[
        str | None,
        typer.Argument(
            help="member or admin address (none for change-threshold; the successor gateway for transfer-records)"
        ),
    ] = None,
    roles: Annotated[str | None, typer.Option(help="roles, e.g. hospital,emergency (add, change-roles)")] = None,
    threshold: Annotated[int | None, typer.Option(help="new threshold (change-threshold)")] = None,
    encryption_key: Annotated[str | None, typer.Option(help="X25519 public key, 32 bytes hex")] = None,
    metadata_file: Annotated[
        Path | None, typer.Option(help="off-chain metadata JSON; its SHA-256 goes on-chain")
    ] = None,
    from_gateway: Annotated[
        str | None,
        typer.Option(help="transfer-records: the suspended or removed gateway whose records the target takes over"),
    ] = None,
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Propose a membership or governance change (your approval counts at once)."""
    from node_client.contracts import Action
    from node_client.deploy import metadata_hash
    from node_client.vocabulary import parse_roles

    act = _action(action)
    ledger = chain.ledger()
    account = signer.account(dev=ledger.dev)
    arg = parse_roles(roles) if roles else 0
    if act is Action.CHANGE_THRESHOLD:
        if threshold is None:
            raise ValueError("change-threshold needs --threshold")
        arg = threshold
    if act is Action.TRANSFER_RECORDS:
        if from_gateway is None:
            raise ValueError("transfer-records needs --from-gateway (the departed gateway's address)")
        arg = ledger.members.number_of(parse_address(from_gateway, "--from-gateway"))
    meta = metadata_hash(orjson.loads(metadata_file.read_bytes())) if metadata_file else None
    enc = bytes.fromhex(encryption_key.removeprefix("0x")) if encryption_key else None
    addr = parse_address(target, "target") if target else None
    proposal_id, result = ledger.members.propose(account, act, addr, arg=arg, encryption_key=enc, metadata_hash=meta)
    console.print(f"proposal {proposal_id} created ({act.name.lower()}), tx {result.tx_hash}")


@member_app.command("approve")
@handle_errors
@option_groups
def member_approve(
    proposal_id: Annotated[int, typer.Argument(help="proposal id")],
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Approve a pending proposal."""
    ledger = chain.ledger()
    result = ledger.members.approve(signer.account(dev=ledger.dev), proposal_id)
    p = ledger.members.proposal_of(proposal_id)
    console.print(
        f"proposal {proposal_id}: {p.approvals} approval(s), threshold {ledger.members.governance().threshold}; tx {result.tx_hash}"
    )


@member_app.command("execute")
@handle_errors
@option_groups
def member_execute(
    proposal_id: Annotated[int, typer.Argument(help="proposal id")],
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Execute a proposal that has enough approvals."""
    ledger = chain.ledger()
    result = ledger.members.execute(signer.account(dev=ledger.dev), proposal_id)
    console.print(f"proposal {proposal_id} executed, tx {result.tx_hash}")


@member_app.command("list")
@handle_errors
@option_groups
def member_list(*, chain: ChainOpts, as_json: JsonOpt = False) -> None:
    """List the consortium's members with their current status and roles."""
    from node_client.vocabulary import roles_of

    man = chain.load_manifest()
    ledger = man.connect(chain.client())
    names = {m["address"]: m["name"] for m in man.members}
    members = ledger.members.members()
    gov = ledger.members.governance()
    if as_json:
        print_json(
            {
                "governance": {"admins": gov.admin_count, "threshold": gov.threshold},
                "members": [
                    {
                        "address": m.address,
                        "name": names.get(m.address, ""),
                        "status": m.status.name.lower(),
                        "roles": roles_of(m.roles),
                        "since": m.since,
                        "encryptionKey": m.encryption_key,
                    }
                    for m in members
                ],
            }
        )
        return
    table = Table(title=f"Members (governance: {gov.threshold}-of-{gov.admin_count})")
    for col in ("address", "name (off-chain)", "status", "roles"):
        table.add_column(col)
    for m in members:
        table.add_row(m.address, names.get(m.address, ""), m.status.name.lower(), ",".join(roles_of(m.roles)))
    console.print(table)


# ---------------------------------------------------------------- consents


@consent_app.command("grant")
@handle_errors
@option_groups
def consent_grant(
    grantee: Annotated[str, typer.Option(help="member address that may read")],
    categories: Annotated[str, typer.Option(help="e.g. allergies,lab-results")],
    purposes: Annotated[str, typer.Option("--purposes", "--purpose", help="e.g. treatment,referral")] = "treatment",
    valid: Annotated[str, typer.Option(help="validity, e.g. 30d, 12h, 2w")] = "30d",
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Grant a consent as the patient (the signer), effective now: the categories go on chain as her slots."""
    from node_client.vocabulary import parse_categories, parse_purposes

    ledger = chain.ledger()
    patient = signer.account(dev=ledger.dev)
    key, _signature = own_category_key(patient, ledger.consents.domain())
    now = ledger.client.block_timestamp()
    consent_id, result = ledger.consents.grant(
        patient,
        parse_address(grantee, "grantee"),
        key.slots(parse_categories(categories)),
        parse_purposes(purposes),
        now,
        now + parse_duration(valid),
    )
    console.print(f"consent 0x{consent_id.hex()} granted, tx {result.tx_hash}")


@consent_app.command("revoke")
@handle_errors
@option_groups
def consent_revoke(
    grantee: Annotated[str, typer.Option(help="member whose consent to revoke")],
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Revoke your consent to a member, effective from the next block."""
    ledger = chain.ledger()
    patient = signer.account(dev=ledger.dev)
    result = ledger.consents.revoke(patient, parse_address(grantee, "grantee"))
    console.print(f"consent revoked, tx {result.tx_hash}")


@consent_app.command("list")
@handle_errors
@option_groups
def consent_list(
    patient: Annotated[str, typer.Option(help="patient address")],
    *,
    chain: ChainOpts,
    signer: SignerOpts,
    as_json: JsonOpt = False,
) -> None:
    """List a patient's consents (current state of every institution ever granted).

    Emergency-safe categories by name, the others as their slot (slot-N): which category a slot holds is
    known only with her key, so as the patient (--key / --dev-account) every category is named.
    """
    from node_client.blinding import slot_name
    from node_client.vocabulary import PURPOSES, SLOT_COUNT

    ledger = chain.ledger()
    who = parse_address(patient, "patient")
    key = _key_of(who, ledger, signer)
    grantees: dict[str, None] = {}
    for ev in ledger.consents.events(["ConsentGranted"]):
        if ev["patient"] == who:
            grantees.setdefault(ev["grantee"], None)
    now = ledger.client.block_timestamp()
    rows: list[dict[str, Any]] = []
    for grantee in grantees:
        c = ledger.consents.consent_of(who, grantee)
        state = c.status.name.lower()
        if state == "active" and now >= c.valid_until:
            state = "expired"
        elif state == "active" and now < c.valid_from:
            state = "not yet valid"
        rows.append(
            {
                "grantee": grantee,
                "consentId": c.consent_id,
                "state": state,
                "categories": [slot_name(key, s) for s in range(SLOT_COUNT) if c.categories >> s & 1],
                "purposes": [t.slug for t in PURPOSES if c.purposes >> t.bit & 1],
                "validFrom": c.valid_from,
                "validUntil": c.valid_until,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Consents of {who}")
    for col in ("grantee", "state", "categories", "purposes", "valid until (UTC)"):
        table.add_column(col)
    for r in rows:
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["validUntil"]))
        table.add_row(r["grantee"], r["state"], ",".join(r["categories"]), ",".join(r["purposes"]), until)
    console.print(table)


def _key_of(patient: str, ledger: Ledger, signer: SignerOpts) -> CategoryKey | None:
    """The patient's category key when she is the signer given, else None (no signer: no key)."""
    if signer.key is None and signer.dev_account is None:
        return None
    account = signer.account(dev=ledger.dev)
    if account.address != patient:
        raise ValueError(f"the signer {account.address} is not the patient {patient}: only she can make her key")
    return own_category_key(account, ledger.consents.domain())[0]


@consent_app.command("check")
@handle_errors
@option_groups
def consent_check(
    patient: Annotated[str, typer.Argument(help="patient address")],
    grantee: Annotated[str, typer.Argument(help="member address")],
    category: Annotated[str, typer.Argument(help="one category, e.g. lab-results, or a slot, e.g. slot-9")],
    purpose: Annotated[str, typer.Argument(help="one purpose, e.g. treatment")] = "treatment",
    *,
    chain: ChainOpts,
    signer: SignerOpts,
    as_json: JsonOpt = False,
) -> None:
    """Ask the chain whether a member may read a category of a patient's data for a purpose, now.

    An emergency-safe category or a slot (slot-N) needs no key; another category is found in its slot with
    the patient's key, so check it as the patient (--key / --dev-account).
    A refusal names its reason (no consent, revoked, expired, category, purpose, suspended member, ...).
    Exits 0 when allowed, 3 when refused.
    """
    from node_client.refusals import refusal
    from node_client.vocabulary import parse_purposes

    pur_mask = parse_purposes(purpose)
    if pur_mask & (pur_mask - 1):
        raise ValueError("check takes exactly one category and one purpose")
    ledger = chain.ledger()
    who, whose = parse_address(grantee, "grantee"), parse_address(patient, "patient")
    cat, pur = parse_slot(category, _key_of(whose, ledger, signer)), pur_mask.bit_length() - 1
    result = ledger.consents.check(whose, who, cat, pur)
    why = None
    if not result.allowed:
        now = ledger.client.block_timestamp()
        named = None if category.startswith("slot-") else category
        member, consent = ledger.members.member_of(who), ledger.consents.consent_of(whose, who)
        why = refusal(member, consent, now, cat, pur, category_name=named)
    if as_json:
        body = {"allowed": result.allowed, "consentId": result.consent_id, "emergency": result.emergency}
        if why is not None:
            body |= {"reason": why.code, "detail": why.detail}
        print_json(body)
    elif why is None:
        emergency = ", EMERGENCY" if result.emergency else ""
        console.print(f"[green]allowed[/green] (consent 0x{result.consent_id.hex()}{emergency})")
    else:
        console.print(f"[red]refused[/red]: {why.detail} ({why.code})")
    if why is not None:
        raise typer.Exit(3)


# ---------------------------------------------------------------- keys


@keys_app.command("new")
@handle_errors
def keys_new(
    out: Annotated[Path, typer.Argument(help="keystore file to create (refuses to overwrite)")],
    password_file: PasswordFileOpt = None,
) -> None:
    """Create a new key in an encrypted keystore file (scrypt, mode 0600)."""
    from node_client.keys import new_keystore

    address = new_keystore(out, read_password(password_file, confirm=True))
    console.print(f"{address}  ->  {out}")


@keys_app.command("new-encryption")
@handle_errors
def keys_new_encryption(
    out: Annotated[Path, typer.Argument(help="JWK file to create, e.g. hospital.x25519.jwk (refuses to overwrite)")],
) -> None:
    """Create a member's release-decryption key (X25519 JWK, mode 0600); prints the public key to register."""
    from node_client.keys import write_x25519_jwk

    typer.echo("0x" + write_x25519_jwk(out).hex())


@keys_app.command("show")
@handle_errors
def keys_show(keystore: Annotated[Path, typer.Argument(help="keystore file")]) -> None:
    """Print the address a keystore holds (without decrypting it)."""
    from node_client.keys import keystore_address

    typer.echo(keystore_address(keystore))


# ---------------------------------------------------------------- dev


@dev_app.command("gen-abi")
@handle_errors
def dev_gen_abi() -> None:
    """Regenerate node_client/abi/*.json from the contracts."""
    from node_client._abi import CONTRACT_NAMES
    from node_client._compile import compile_contracts, repo_root

    result = compile_contracts()
    for name in CONTRACT_NAMES:
        path = repo_root() / "node_client" / "abi" / f"{name}.json"
        path.write_bytes(orjson.dumps(result.contracts[name].abi, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"wrote {path}")


@dev_app.command("gen-vocabulary")
@handle_errors
def dev_gen_vocabulary() -> None:
    """Regenerate contracts/libraries/Vocabulary.sol and docs/vocabulary.md from node_client/vocabulary.py."""
    from node_client._compile import repo_root
    from node_client.vocabulary import render_markdown, render_solidity

    for path, text in (
        (repo_root() / "contracts" / "libraries" / "Vocabulary.sol", render_solidity()),
        (repo_root() / "docs" / "vocabulary.md", render_markdown()),
    ):
        path.write_text(text)
        console.print(f"wrote {path}")


# ---------------------------------------------------------------- commands of other packages


def _add_plugin(ep: EntryPoint) -> None:
    """``hcl <ep.name>``: the ``typer.Typer`` the entry point names. A plugin that cannot be loaded is
    reported on stderr and left out, so the library's own commands keep working."""
    if ep.name in _BUILT_IN:
        err_console.print(f"[yellow]hcl[/yellow]: {ep.value} not added: {ep.name!r} is a built-in command")
        return
    try:
        sub = ep.load()
    except Exception as exc:  # noqa: BLE001 - any broken plugin: say so, keep the rest of hcl usable
        err_console.print(
            f"[yellow]hcl[/yellow]: command {ep.name!r} ({ep.value}) not loaded: {type(exc).__name__}: {exc}"
        )
        return
    if not isinstance(sub, typer.Typer):
        err_console.print(f"[yellow]hcl[/yellow]: {ep.value} is not a typer.Typer; {ep.name!r} not added")
        return
    app.add_typer(sub, name=ep.name)


for _ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
    _add_plugin(_ep)


def main() -> None:
    """Console-script entry point."""
    app()
