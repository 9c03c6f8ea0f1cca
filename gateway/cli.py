"""``hcl gateway``: run and maintain the gateway service.

``hcl`` (``node_client.cli``) finds this app through the ``hcl.commands`` entry-point group declared in
pyproject.toml (``gateway = "gateway.cli:gateway_app"``); the client library never imports the gateway.
Gateway modules are imported inside each command, so ``hcl --help`` stays fast and loading this app needs
nothing but typer and the shared CLI helpers of ``node_client._cli_common``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from node_client._cli_common import JsonOpt, console, err_console, handle_errors, print_json

__all__ = ["gateway_app"]

gateway_app = typer.Typer(help="The gateway service hospitals call.", no_args_is_help=True)


@gateway_app.command("serve")
@handle_errors
def gateway_serve(
    host: Annotated[str | None, typer.Option(help="interface [env HCL_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env HCL_PORT]")] = None,
) -> None:
    """Run the gateway (settings from HCL_* variables and hcl.toml; HCL_WORKERS > 1: several processes)."""
    from gateway.processes import serve
    from gateway.settings import GatewaySettings

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    serve(GatewaySettings(**overrides))


@gateway_app.command("rotate-kek")
@handle_errors
def gateway_rotate_kek() -> None:
    """Re-wrap every data key under a new key-encryption key (ciphertexts untouched). Stop the gateway first."""
    from gateway.settings import GatewaySettings
    from gateway.storage.db import Database
    from gateway.storage.keyrotation import rotate_kek

    settings = GatewaySettings()
    db = Database(settings.db_path)
    result = rotate_kek(Path(settings.kek_file or settings.data_dir / "kek.key"), db)
    console.print(f"KEK {result.old_key_id} -> {result.new_key_id}: {result.rewrapped} data keys re-wrapped")


@gateway_app.command("export-journal")
@handle_errors
def gateway_export_journal(
    out: Annotated[Path, typer.Argument(help="JSON Lines file to write")],
) -> None:
    """Export the release journal (batch mode) with its anchors, for the auditor."""
    from gateway.ledger.journal import Journal, JournalUnavailable
    from gateway.settings import GatewaySettings

    settings = GatewaySettings()
    if not settings.journal_path.exists():
        raise ValueError(f"no journal at {settings.journal_path} (batch mode writes one)")
    try:
        journal = Journal(settings.journal_path)
    except JournalUnavailable as exc:
        err_console.print(
            f"[red]error[/red] {exc}: while the gateway runs, fetch the journal over HTTP "
            "with `hcl audit fetch-journal` (an auditor's key), or stop the gateway first"
        )
        raise typer.Exit(2) from None
    try:
        count = journal.export(out)
    finally:
        journal.close()
    console.print(f"{count} entries written to {out}")


@gateway_app.command("verify-journal")
@handle_errors
def gateway_verify_journal() -> None:
    """Re-verify the whole release journal (batch mode): every sealed segment file's hash, every row, the hash
    chain, every stored Merkle node, the checkpoint, every recorded anchor and the indexes. The gateway's
    start-up only re-checks the open segment's rows after the last checkpoint and trusts sealed segments by
    their recorded roots; this reads everything (minutes for tens of millions of entries). Stop the gateway
    first. Exit 0: intact; 1: corrupt (the first bad entry is named); 2: cannot open it."""
    from gateway.ledger.journal import Journal, JournalCorrupt, JournalUnavailable
    from gateway.settings import GatewaySettings

    settings = GatewaySettings()
    if not settings.journal_path.exists():
        raise ValueError(f"no journal at {settings.journal_path} (batch mode writes one)")
    try:
        journal = Journal(settings.journal_path)
    except JournalUnavailable as exc:
        err_console.print(f"[red]error[/red] {exc}: stop the gateway first")
        raise typer.Exit(2) from None
    except JournalCorrupt as exc:
        err_console.print(f"[red]corrupt[/red] {exc}")
        raise typer.Exit(1) from None
    try:
        count = journal.verify_all()
    except JournalCorrupt as exc:
        err_console.print(f"[red]corrupt[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        journal.close()
    console.print(
        f"{count} entries verified: segment files, rows, hash chain, tree nodes, checkpoint, anchors and indexes intact"
    )


@gateway_app.command("reconcile")
@handle_errors
def gateway_reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be repaired; change nothing")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Find and repair what a crash left half-done: blobs without registration, pending uploads and
    retractions, anchors not recorded; recover lost blobs from the private swarm (IPFS store); report what
    cannot be repaired (missing blobs, a rolled-back journal). Stop the gateway first (it holds
    <data_dir>/gateway.lock).

    Exit 0: nothing left to do; 1: something needs a person (or, with --dry-run, something to repair);
    2: reconcile could not run (gateway running, chain or store unavailable). Rules: docs/reliability.md.
    """
    from gateway.ops.lock import GatewayRunning
    from gateway.ops.reconcile import ReconcileError, reconcile
    from gateway.settings import GatewaySettings

    try:
        report = reconcile(GatewaySettings(), dry_run=dry_run)
    except (GatewayRunning, ReconcileError) as exc:
        err_console.print(f"[red]error[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    if json_out:
        print_json(report.as_dict())
    else:
        table = Table("kind", "subject", "severity", "action", "done")
        for f in report.findings:
            table.add_row(f.kind, f.subject, f.severity, f.action, "yes" if f.repaired else "no")
        if report.findings:
            console.print(table)
        checked = ", ".join(f"{v} {k}" for k, v in report.checked.items())
        verdict = "nothing to repair" if not report.findings else f"{len(report.outstanding)} outstanding"
        console.print(f"{'dry run: ' if dry_run else ''}checked {checked}: {verdict}")
    code = 1 if (dry_run and report.outstanding) else report.exit_code
    raise typer.Exit(code)
