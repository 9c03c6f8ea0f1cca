"""``hcl audit``: replay the ledger and prove (or refute) every release, from cron, CI or a terminal.

Exit codes are part of the interface (cron and CI branch on them): 0 clean (break-glass accesses listed
for review are allowed), 1 anomalies found, 2 the audit could not be run (no chain, bad manifest, bad
journal file...). The lead registers :data:`audit_app` in ``node_client/cli.py`` as ``hcl audit``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar
from zoneinfo import ZoneInfo

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from node_client._cli_common import (
    ChainOpts,
    GatewayUrlOpt,
    KeyOpt,
    PasswordFileOpt,
    SignerOpts,
    err_console,
    option_groups,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from node_client.audit import AuditReport
    from node_client.gateway_client import GatewayClient

T = TypeVar("T")

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Audit the ledger: replay it from genesis and verify every release.", no_args_is_help=True)


@audit_app.callback()
def _audit() -> None:
    """Audit the ledger: replay it from genesis and verify every release."""
    # a callback keeps ``replay`` a sub-command even while it is the only one


@audit_app.command("replay")
@option_groups
def replay_cmd(
    *,
    chain: ChainOpts,
    journal: Annotated[
        list[Path] | None,
        typer.Option("--journal", help="a gateway's exported release journal (JSON Lines); repeat it for each gateway"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="folder for report.json, accesses.csv, report.html, FHIR")] = Path(
        "audit-report"
    ),
    from_block: Annotated[int | None, typer.Option("--from-block", help="default: the deploy block")] = None,
    to_block: Annotated[int | None, typer.Option("--to-block", help="default: the latest block")] = None,
    gateway: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway",
            help="the gateway whose anchors a journal is checked against: once per --journal, in the same "
            "order (default: the gateway whose anchored roots the journal reproduces)",
        ),
    ] = None,
    clock_skew: Annotated[
        str,
        typer.Option(
            "--clock-skew",
            help="version 1 journal entries only: seconds the chain clock runs ahead of the gateway's, "
            "or 'auto' to measure it from the anchors",
        ),
    ] = "auto",
    max_staleness: Annotated[
        float,
        typer.Option(
            "--max-staleness",
            help="seconds the gateway may decide on a state after seeing its block "
            "(its read model's freshness: max(1, 4 x HCL_INDEXER_POLL))",
        ),
    ] = 1.0,
    anchor_grace: Annotated[int, typer.Option("--anchor-grace", help="seconds an entry may stay unanchored")] = 60,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="write the rebuilt state and position here, for a later --resume"),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="continue from a checkpoint instead of the deploy block (same verdict as a full replay)"
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="re-hash stored ciphertexts: a local blob-store folder or an IPFS API URL (http://...:5001)"
        ),
    ] = None,
    claims: Annotated[
        Path | None,
        typer.Option("--claims", help="JSON Lines of release responses a requester received; each must be ledgered"),
    ] = None,
    reasons: Annotated[
        Path | None,
        typer.Option(
            "--reasons",
            help="JSON Lines of emergency reasons a gateway kept (hcl audit fetch-reasons); each must open its "
            "window's reasonHash on chain",
        ),
    ] = None,
    reviews: Annotated[
        Path | None,
        typer.Option(
            "--reviews",
            help="a gateway's auditors' reviews of emergency accesses (hcl audit fetch-reviews): signatures, hash "
            "chain and anchored roots are checked; unreviewed emergencies are counted",
        ),
    ] = None,
    detail: Annotated[
        str,
        typer.Option(
            "--detail", help="per-access rows in the outputs: 'all', or 'issues' (not ok) for very large ledgers"
        ),
    ] = "all",
    lang: Annotated[
        str, typer.Option("--lang", help="language of report.html: 'en' or 'zh' (names, labels, verdict)")
    ] = "en",
    tz: Annotated[str, typer.Option("--tz", help="time zone of the times in report.html")] = "Asia/Shanghai",
    as_json: Annotated[bool, typer.Option("--json", help="quiet: print the summary as JSON only")] = False,
) -> None:
    """Replays every event from the deploy block (plus each gateway's journal) and writes the audit outputs."""
    from node_client.audit import DETAILS, read_checkpoint, replay, write_checkpoint, write_outputs
    from node_client.audit.html_report import LANGS, ReportLanguage, member_names

    try:
        if detail not in DETAILS:
            raise ValueError(f"--detail must be one of {', '.join(DETAILS)}")
        if lang not in LANGS:
            raise ValueError(f"--lang must be one of {', '.join(LANGS)}")
        manifest = chain.load_manifest()
        language = ReportLanguage(lang, str(ZoneInfo(tz)), member_names(manifest.members, lang))
        run = partial(
            replay,
            chain.client(),
            manifest,
            journals=journal or (),
            from_block=from_block,
            to_block=to_block,
            gateways=gateway or (),
            clock_skew=None if clock_skew == "auto" else int(clock_skew),
            anchor_grace=anchor_grace,
            store=store if store is None or "://" in store else Path(store),
            claims=claims,
            reasons=reasons,
            reviews=reviews,
            checkpoint=checkpoint is not None,
            max_staleness=max_staleness,
            resume=read_checkpoint(resume) if resume is not None else None,
        )
        if as_json:
            report = run()
        else:
            with _progress_bar() as progress:
                report = run(progress=progress)
        paths = write_outputs(report, out, detail=detail, language=language)
        if checkpoint is not None:
            paths["checkpoint"] = write_checkpoint(report, checkpoint)
    except Exception as exc:  # noqa: BLE001 - any failure to audit is exit 2, never a false "clean"
        if as_json:
            typer.echo(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}).decode())
        else:
            err_console.print(f"[red]audit failed[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    _print_outcome(report, paths, out, as_json=as_json)
    raise typer.Exit(report.exit_code)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr per replay phase; yields the ``progress`` callback for ``replay``."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = {"events": "blocks", "timestamps": "timestamps"}.get(phase, phase)
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield progress


def _print_outcome(report: AuditReport, paths: dict[str, Path], out: Path, *, as_json: bool) -> None:
    if as_json:
        outputs = {k: str(v) for k, v in paths.items()}
        typer.echo(
            orjson.dumps({"exit_code": report.exit_code, "summary": report.summary, "outputs": outputs}).decode()
        )
        return
    s = report.summary
    colour = "green" if report.exit_code == 0 else "red"
    err_console.print(
        f"[{colour}]{'clean' if report.exit_code == 0 else 'ANOMALIES'}[/{colour}] "
        f"{s['accesses']} accesses, {s['errors']} errors, {s['reviews']} for review "
        f"({s['seconds']['total']} s); outputs in {out}"
    )
    for j in s.get("journals") or []:
        err_console.print(
            f"  journal {j['journal']}: gateway {j['gateway'] or '(unmatched)'} {j['gateway_name']} "
            f"({j['matched_by']}), {j['entries']} entries, {j['anchors_reproduced']}/{j['anchors']} anchors reproduced"
        )
    if s.get("emergency_reviews") is not None:
        r = s["emergency_reviews"]
        err_console.print(
            f"  emergency reviews at {r['gateway']}: {r['reviews']} ({r['anchored']} anchored); "
            f"unreviewed emergency accesses: {len(r['unreviewed'])}"
        )
    for a in report.errors[:20]:
        err_console.print(
            f"  [red]{a.kind}[/red] {a.message} {a.evidence.get('tx_hash') or a.evidence.get('entry_index', '')}"
        )


@audit_app.command("fetch-journal")
def fetch_journal_cmd(
    out: Annotated[Path, typer.Argument(help="JSON Lines file to write (then: hcl audit replay --journal OUT)")],
    url: GatewayUrlOpt,
    key: KeyOpt = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Download a running gateway's release journal (batch mode) with its anchors, signed in as an auditor.

    Exit 0 written; 2 the gateway refused (not an auditor, strict mode) or does not answer.
    """
    size = _as_auditor(url, key, password_file, lambda gw, _: gw.download_journal(out))
    err_console.print(f"wrote {out} ({size} bytes) from {url}")


@audit_app.command("fetch-reasons")
def fetch_reasons_cmd(
    out: Annotated[Path, typer.Argument(help="JSON Lines file to write (then: hcl audit replay --reasons OUT)")],
    url: GatewayUrlOpt,
    key: KeyOpt = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Download the emergency reasons a gateway relayed, each with the salt that opens its on-chain
    commitment, signed in as an auditor. Exit 0 written; 2 the gateway refused or does not answer.
    """
    openings = _as_auditor(url, key, password_file, lambda gw, _: gw.emergency_reasons())
    out.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in openings))
    err_console.print(f"wrote {out} ({len(openings)} reasons) from {url}")


@audit_app.command("fetch-reviews")
def fetch_reviews_cmd(
    out: Annotated[Path, typer.Argument(help="JSON Lines file to write (then: hcl audit replay --reviews OUT)")],
    url: GatewayUrlOpt,
    key: KeyOpt = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Download the auditors' reviews of emergency accesses a gateway keeps, oldest first, after a header
    naming the gateway (whose anchored roots the replay checks them against). Exit 0 written; 2 refused."""
    from node_client.audit.reviews import FORMAT

    def fetch(gw: GatewayClient, _: LocalAccount) -> list[dict[str, object]]:
        header = {"type": "header", "format": FORMAT, "gateway": gw.health()["deployment"]["gateway"]}
        return [header, *gw.emergency_reviews()]

    lines = _as_auditor(url, key, password_file, fetch)
    out.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in lines))
    err_console.print(f"wrote {out} ({len(lines) - 1} reviews) from {url}")


@audit_app.command("review")
def review_cmd(
    access_id: Annotated[str, typer.Argument(help="the emergency access id (0x…, as the auditor page lists it)")],
    verdict: Annotated[str, typer.Option("--verdict", help="justified, unjustified or needs-follow-up")],
    note: Annotated[str, typer.Option("--note", help="what the auditor found (kept off-chain; its hash is signed)")],
    url: GatewayUrlOpt,
    key: KeyOpt = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Sign a review of an emergency access with the auditor's keystore and submit it to the gateway, which
    keeps it and anchors the reviews' root on chain. Exit 0 kept; 2 refused (not an auditor, reviewed already...)."""
    kept = _as_auditor(url, key, password_file, partial(_review, access_id, verdict, note))
    err_console.print(f"review {kept['idx']} kept at {url}: {kept['verdict']} of {kept['accessId']}")


def _review(access_id: str, verdict: str, note: str, gw: GatewayClient, account: LocalAccount) -> dict[str, object]:
    """Signs what the gateway's draft says only if it is what the auditor asked for (its domain is the chain's)."""
    from node_client.reviews import signed_review
    from node_client.signing import Domain

    draft = gw.review_draft(access_id, verdict, note)
    d = draft["typedData"]["domain"]
    domain = Domain(d["chainId"], d["verifyingContract"], d["name"], d["version"])
    signed = signed_review(
        account, domain, bytes.fromhex(access_id.removeprefix("0x")), verdict, note, draft["message"]["reviewedAt"]
    )
    if signed["message"] != draft["message"]:
        raise ValueError(f"the gateway's draft {draft['message']} is not the review asked for {signed['message']}")
    return gw.submit_review(signed)


def _as_auditor(
    url: str, key: Path | None, password_file: Path | None, fetch: Callable[[GatewayClient, LocalAccount], T]
) -> T:
    """``fetch(gateway, account)`` on the gateway at ``url`` signed in with the auditor's keystore; exit 2
    (with why) if the key is missing, the gateway refuses or does not answer."""
    from node_client._exceptions import NodeClientError
    from node_client.gateway_client import GatewayClient

    try:
        if key is None:
            raise ValueError("--key: the auditor's (or regulator's) keystore")
        account = SignerOpts(key=key, password_file=password_file).account()
        with GatewayClient(url) as gw:
            gw.sign_in(account)
            return fetch(gw, account)
    except (NodeClientError, ValueError, OSError) as exc:
        err_console.print(f"[red]fetch failed[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
