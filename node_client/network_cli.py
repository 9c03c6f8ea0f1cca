"""``hcl network``: a consortium chain of geth Clique validators on this machine.

    hcl network up --validators 3                      # dev consortium (public dev member keys), 3 validators
    hcl network up --consortium consortium.toml        # your institutions, fresh encrypted keys
    hcl network up --ipfs                              # and one Kubo (IPFS) node per validator, private swarm
    hcl network up --gateways                          # and one gateway per institution (hcl gateway serve)
    hcl network status                                 # heads, peers, signers, who sealed; IPFS peers, gateways
    hcl network add-validator --name "County Hospital" --roles hospital
    hcl network down                                   # stop by PID; data kept, `up` resumes it

The network itself is :mod:`node_client.network`; this module only parses options and prints.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from node_client._cli_common import JsonOpt, console, err_console, handle_errors, print_json

__all__ = ["network_app"]

network_app = typer.Typer(
    help="A consortium chain: one geth Clique validator per institution (with --ipfs one IPFS node, with"
    " --gateways one gateway each).",
    no_args_is_help=True,
)

FolderOpt = Annotated[
    Path, typer.Option("--folder", help="the network's folder (keys, genesis, node data)", envvar="HCL_NETWORK_DIR")
]
_DEFAULT_FOLDER = Path(".hcl/network")


def _say(message: str) -> None:
    err_console.print(f"[dim]…[/dim] {message}")


@network_app.command("up")
@handle_errors
def up(
    validators: Annotated[int, typer.Option(help="validators of the dev consortium (ignored with --consortium)")] = 3,
    consortium_file: Annotated[
        Path | None, typer.Option("--consortium", help="consortium file (TOML); default: the dev consortium")
    ] = None,
    manifest: Annotated[Path, typer.Option(help="where to write the deployment manifest")] = Path(
        "deployments/network.json"
    ),
    folder: FolderOpt = _DEFAULT_FOLDER,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the validators to agree")] = 120.0,
    ipfs: Annotated[
        bool, typer.Option("--ipfs", help="one Kubo (IPFS) node per validator institution, in a private swarm")
    ] = False,
    gateways: Annotated[
        bool,
        typer.Option(
            "--gateways",
            help="after the deployment, start one gateway (`hcl gateway serve`) per institution with"
            " `gateway = true` (the dev consortium: each validator's), on the endpoint in its member"
            " metadata, data in <folder>/gateways/<institution>/; ready when /healthz answers 200",
        ),
    ] = False,
    ledger_mode: Annotated[
        str | None, typer.Option("--ledger-mode", help="strict (default) or batch, for gateways started now")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create (first time) or restart the network, deploy and onboard the founding members.

    Later runs restart the IPFS nodes (--ipfs) and gateways (--gateways) a network has, without the flags."""
    from node_client.network import Consortium, Network

    consortium = Consortium.load(consortium_file) if consortium_file else Consortium.development(validators)
    if consortium.dev:
        err_console.print("[yellow]dev consortium[/yellow]: members use PUBLIC dev keys; never for real data")
    network = Network(folder, say=_say)
    result = network.up(
        consortium,
        manifest_path=manifest.resolve(),
        timeout=timeout,
        ipfs=ipfs,
        gateways=gateways,
        ledger_mode=ledger_mode,
    )
    if as_json:
        print_json(
            {
                "rpc_urls": network.urls,
                "ipfs_api_urls": [k.api_url for k in network.kubo],
                "gateways": [{"name": g.member, "url": g.url, "pid": g.pid} for g in network.gateways if g.running],
                "manifest": str(manifest),
                "chain_id": result.chain_id,
                "dev": result.dev,
            }
        )
        return
    console.print(f"network up: {len(network.nodes)} validators, chain {result.chain_id}, manifest {manifest}")
    for node in network.nodes:
        console.print(f"  {node.name}: {node.url} (pid {node.pid})")
    if network.kubo:
        console.print(f"private IPFS swarm: {len(network.kubo)} nodes, key {network.swarm_key_file}")
        for kubo in network.kubo:
            console.print(f"  {kubo.name}: api {kubo.api_url}, gateway {kubo.gateway_url} (pid {kubo.pid})")
    running = [g for g in network.gateways if g.running]
    if running:
        console.print(f"gateways: {len(running)}, data in {folder / 'gateways'}")
        for gw in running:
            console.print(f"  {gw.member}: {gw.url} ({gw.ledger_mode}, pid {gw.pid}, log {gw.log_path})")


@network_app.command("status")
@handle_errors
def status(folder: FolderOpt = _DEFAULT_FOLDER, as_json: JsonOpt = False) -> None:
    """Each validator: running, head, peers, signers and how many of the recent blocks each signer sealed;
    on a network with IPFS, its institution's Kubo node and how many swarm peers it has; on one whose
    gateways run, its gateway's endpoint and whether /healthz answers 200."""
    from node_client.network import Network

    network = Network(folder)
    if not network.exists:
        raise ValueError(f"no network in {folder}: run `hcl network up` first")
    rows = network.status()
    if as_json:
        print_json([asdict(row) for row in rows])
        return
    table = Table(title=f"network in {folder} (chain {network.chain_id})")
    columns = ["validator", "rpc", "pid", "head", "hash", "peers", "signer", "sealed"]
    if network.kubo:
        columns += ["ipfs api", "ipfs peers"]
    served = any(r.gateway for r in rows)
    if served:
        columns += ["gateway", "health"]
    for col in columns:
        table.add_column(col, no_wrap=col in ("rpc", "hash", "signer", "ipfs api", "gateway"))
    for row in rows:
        cells = [
            row.name,
            row.url,
            str(row.pid or "-"),
            "down" if not row.running else str(row.head if row.head is not None else "?"),
            (row.head_hash or "")[:10],
            str(row.peers if row.peers is not None else "-"),
            f"{row.signer[:10]}…",
            str(row.sealed_by_self) if row.running else "-",
        ]
        if network.kubo:
            kubo = row.ipfs
            cells += [kubo.api_url if kubo else "-", _swarm_peers(kubo.running, kubo.peers) if kubo else "-"]
        if served:
            gw = row.gateway
            cells += [gw.url if gw else "-", _health(gw.running, gw.healthy) if gw else "-"]
        table.add_row(*cells)
    console.print(table)
    signers = {len(r.signers) for r in rows if r.signers}
    console.print(f"signers: {'/'.join(map(str, sorted(signers))) or '?'}; sealed = blocks of the recent window")


def _health(running: bool, healthy: bool | None) -> str:
    if not running:
        return "down"
    return "ok" if healthy else "503/no answer"


def _swarm_peers(running: bool, peers: int | None) -> str:
    if not running:
        return "down"
    return "?" if peers is None else str(peers)


@network_app.command("down")
@handle_errors
def down(folder: FolderOpt = _DEFAULT_FOLDER) -> None:
    """Stop every gateway, IPFS node and validator by PID; the data stays, `hcl network up` resumes it."""
    from node_client.network import Network

    network = Network(folder, say=_say)
    ipfs = sum(k.running for k in network.kubo)
    gateways = sum(g.running for g in network.gateways)
    stopped = network.down()
    console.print(
        f"stopped {len(stopped)} validators"
        + (f", {gateways} gateways" if gateways else "")
        + (f" and {ipfs} IPFS nodes" if ipfs else "")
        + (f": {', '.join(stopped)}" if stopped else "")
    )


@network_app.command("add-validator")
@handle_errors
def add_validator(
    name: Annotated[str, typer.Option(help="the institution's name (off-chain; on-chain only its hash)")],
    roles: Annotated[str, typer.Option(help="comma-separated roles, e.g. hospital,emergency")] = "hospital",
    kind: Annotated[str, typer.Option(help="kind shown in the portal")] = "hospital",
    folder: FolderOpt = _DEFAULT_FOLDER,
    timeout: Annotated[float, typer.Option(help="seconds to wait for sync and the signers' votes")] = 180.0,
) -> None:
    """A new validator institution: M-of-N governance adds the member, the Clique signers vote it in."""
    from node_client.network import Institution, Network
    from node_client.network.consortium import parse_roles

    network = Network(folder, say=_say)
    node = network.add_validator(Institution(name, kind, parse_roles(roles.split(","))), timeout=timeout)
    console.print(f"{name} seals blocks now: signer {node.signer}, rpc {node.url}")
