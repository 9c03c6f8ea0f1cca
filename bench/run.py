"""``./scripts/bench``: the benchmark suite.

``./scripts/bench`` (or ``--quick``) runs every benchmark of :data:`SUITE`; ``./scripts/bench audit``
or ``./scripts/bench gas`` runs one. Each writes ``bench/results/<name>.json`` and prints a table.
``./scripts/bench network`` creates a 3-validator geth Clique network for its run (about 4 minutes in
all): part of the full run when geth is built, never of ``--quick``; so is ``./scripts/bench federation``
(the same network with a gateway per institution: local vs cross-institution releases/s, about 5 minutes).
``./scripts/bench growth`` follows cost as history grows (catch-up, a 10k → 10M-entry journal, a patient's
records among 200k rows; generated journals are kept under ``HCL_BENCH_SCRATCH``) and plots docs/growth.svg.
Throughput benchmarks of the gateway (release, upload, consent) are meant to be added here as
further commands and ``SUITE`` entries.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

app = typer.Typer(help="HealthCode Ledger benchmarks; results go to bench/results/.", add_completion=False)
console = Console()

QuickOpt = Annotated[bool, typer.Option("--quick", help="small sizes: a smoke run in well under a minute")]


@app.command("audit")
def audit_cmd(
    quick: QuickOpt = False,
    accesses: Annotated[
        int | None, typer.Option("--accesses", help="journal entries (default 1,000,000; --quick 10,000)")
    ] = None,
    anchor_every: Annotated[
        int | None, typer.Option("--anchor-every", help="entries per anchor (default: N/20, at most 10,000)")
    ] = None,
    detail: Annotated[str, typer.Option("--detail", help="hcl audit replay --detail (all|issues)")] = "issues",
    out: Annotated[
        Path | None, typer.Option("--out", help="result file (default bench/results/audit.json, audit-quick.json)")
    ] = None,
) -> None:
    """A batch-mode ledger of N accesses (real chain, consents, anchors), replayed by ``hcl audit replay``."""
    from bench.audit import GOAL_SECONDS, GOAL_VERIFY_RATE, run_audit_bench

    n = accesses or (10_000 if quick else 1_000_000)
    with Progress(
        TextColumn("journal entries"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("journal", total=n)
        result = run_audit_bench(
            n,
            anchor_every=anchor_every,
            log=lambda m: console.print(f"[dim]{m}[/dim]"),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            replay_args=["--detail", detail],
        )
    data = result.to_json()
    data["detail"] = detail
    data["quick"] = quick
    out = out or RESULTS / ("audit-quick.json" if quick else "audit.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    table = Table(title=f"Audit replay of {result.accesses:,} accesses ({data['anchors']} anchors)")
    for col in ("measure", "value", "goal"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    verify = data["accesses_per_s_verify"] or 0
    table.add_row(
        "end to end (hcl audit replay)", f"{data['seconds']:.1f} s", f"<= {GOAL_SECONDS:.0f} s" if not quick else ""
    )
    table.add_row("accesses/s, end to end", f"{data['accesses_per_s']:,.0f}", "")
    table.add_row("accesses/s, verify phase", f"{verify:,.0f}", f">= {GOAL_VERIFY_RATE:,.0f}")
    for phase, secs in (data["phases"] or {}).items():
        table.add_row(f"  phase {phase}", f"{secs:.2f} s", "")
    table.add_row("ledger generation (not timed)", f"{data['generate_seconds']:.1f} s", "")
    console.print(table)
    console.print(f"written: {out}")


@app.command("gas")
def gas_cmd(quick: QuickOpt = False) -> None:
    """Gas of every state-changing function (``hcl gas-report``, writes bench/results/gas.json)."""
    hcl = str(Path(sys.executable).with_name("hcl"))
    code = subprocess.call([hcl, "gas-report", "--out", str(RESULTS / "gas.json")], cwd=ROOT)
    if code:
        raise typer.Exit(code)


@contextlib.contextmanager
def _kubo() -> Iterator[str | None]:
    """A Kubo RPC API for the IPFS runs: ``HCL_BENCH_IPFS_API``, else an offline node started from the
    binary ``./scripts/build_ipfs`` built (the tests' starter), else ``None`` (IPFS runs are skipped)."""
    import os
    import tempfile

    if os.environ.get("HCL_BENCH_IPFS_API"):
        yield os.environ["HCL_BENCH_IPFS_API"]
        return
    from tests.support.ipfs_fixture import IpfsFixtureError, find_ipfs_binary, start_ipfs_node

    if find_ipfs_binary() is None:
        console.print("[yellow]no Kubo binary (./scripts/build_ipfs): the IPFS runs are skipped[/yellow]")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="hcl-bench-ipfs-") as tmp:
        try:
            node = start_ipfs_node(Path(tmp))
        except IpfsFixtureError as exc:
            console.print(f"[yellow]Kubo did not start ({exc}): the IPFS runs are skipped[/yellow]")
            yield None
            return
        try:
            yield node.api_multiaddr
        finally:
            node.stop()


def _release_table(data: dict) -> Table:  # type: ignore[type-arg]
    goals = data["goals"]
    table = Table(title="Ledgered releases (loopback, this machine)")
    for col in (
        "mode",
        "store",
        "size",
        "clients",
        "releases/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "released",
        "ledgered",
        "anchored in",
        "gas/access",
        "entries/tx",
        "peak RSS MB",
    ):
        table.add_column(col, justify="left" if col in ("mode", "store") else "right")
    for r in data["runs"]:
        size = f"{r['size'] // 1024} KB" if r["size"] < 1 << 20 else f"{r['size'] >> 20} MB"
        same = "[green]" if r["ledgered"] == r["released"] else "[red]"
        table.add_row(
            r["mode"],
            r["store"],
            size,
            str(r["clients"]),
            f"{r['releases_per_s']:,.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            str(r["errors"]),
            f"{r['released']:,}",
            f"{same}{r['ledgered']:,}",
            f"{r['anchor_delay_s']} s" if r.get("anchor_delay_s") is not None else "-",
            str(r.get("anchor_gas_per_access", r.get("gas_per_access", "-"))),
            str(r.get("entries_per_tx", "-")),
            f"{r['peak_rss_mb']:.0f}",
        )
    table.caption = (
        f"goals (batch, 10 KB, 64 clients, local): >= {goals['releases_per_s']:,.0f}/s, p99 <= "
        f"{goals['p99_ms']:.0f} ms, anchored <= {goals['anchor_s']:.0f} s, <= {goals['gas_per_access']:.0f} "
        f"gas/access, RSS <= {goals['peak_rss_mb']:.0f} MB"
    )
    return table


def _merge_mode(old: dict, new: dict, mode: str) -> dict:  # type: ignore[type-arg]
    """``old``'s results with its ``mode`` runs replaced by ``new``'s, each new run naming its commit."""
    runs = [r for r in old["runs"] if r["mode"] != mode]
    runs += [{**r, "commit": new.get("commit")} for r in new["runs"]]
    return {**old, "runs": runs}


@app.command("release")
def release_cmd(
    quick: QuickOpt = False,
    seconds: Annotated[float | None, typer.Option(help="measured seconds per run (default 8; --quick 2)")] = None,
    out: Annotated[Path | None, typer.Option(help="result file (default bench/results/release.json)")] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="only this ledger mode (batch or strict); its runs replace that mode's in the result file"),
    ] = None,
    workers: Annotated[
        str | None, typer.Option(help="gateway processes to compare in batch mode, e.g. 1,2 (HCL_WORKERS)")
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="just this batch/local run, SIZExCLIENTS in bytes, e.g. 10240x64")
    ] = None,
) -> None:
    """Ledgered releases/s and latency: sizes x concurrent clients x ledger mode x store (a gateway process,
    a separate load process)."""
    from bench.release import default_plan, restrict, run_release_bench

    if mode not in (None, "batch", "strict"):
        raise typer.BadParameter("batch or strict", param_hint="--mode")
    with _kubo() if not quick and mode != "strict" and not only else contextlib.nullcontext(None) as api:
        plan = default_plan(quick=quick, ipfs=api is not None, mode=mode)
        size_clients = (int(only.split("x")[0]), int(only.split("x")[1])) if only else None
        counts = [int(n) for n in workers.split(",")] if workers else None
        plan = restrict(plan, workers=counts, only=size_clients)
        if seconds:
            plan.seconds = seconds
        data = run_release_bench(plan, ipfs_api=api, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    data["quick"] = quick
    out = out or RESULTS / ("release-quick.json" if quick else "release.json")
    if mode is not None and out.exists():
        data = _merge_mode(orjson.loads(out.read_bytes()), data, mode)
    out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    console.print(_release_table(data))
    console.print(f"written: {out}")
    bad = [r for r in data["runs"] if r["ledgered"] != r["released"]]
    if bad:
        console.print(f"[red]ledgered != released in {len(bad)} run(s): the promise is broken[/red]")
        raise typer.Exit(1)


@app.command("consent")
def consent_cmd(
    quick: QuickOpt = False,
    out: Annotated[Path | None, typer.Option(help="result file (default bench/results/consent.json)")] = None,
) -> None:
    """Consent decision latency (read model vs eth_call) and revocation-to-refusal delay."""
    from bench.consent import run_consent_bench

    data = run_consent_bench(quick=quick, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    data["quick"] = quick
    out = out or RESULTS / ("consent-quick.json" if quick else "consent.json")
    out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    table = Table(title="Consent decisions")
    for col in ("what", "n", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for name, label in (("cache", "read model (synced)"), ("eth_call", "ConsentRegistry.check, eth_call")):
        d = data["decision"][name]
        table.add_row(label, f"{d['n']:,}", f"{d['p50_ms']:.4f}", f"{d['p95_ms']:.4f}", f"{d['p99_ms']:.4f}")
    rev = data["revocation"]
    table.caption = (
        f"revocation mined -> first refusal: median {rev['delay_ms_median']} ms, max {rev['delay_ms_max']} ms "
        f"over {len(rev['trials'])} trials; goal: cache p99 <= {data['goals']['cache_p99_ms']} ms"
    )
    console.print(table)
    console.print(f"written: {out}")


GROWTH_PARTS = ("catchup", "journal", "records")


def _ints(text: str | None) -> list[int] | None:
    return [int(s) for s in text.split(",")] if text else None


@app.command("growth")
def growth_cmd(
    quick: QuickOpt = False,
    part: Annotated[
        str, typer.Option(help="which cost to follow as history grows: catchup|journal|records|all")
    ] = "all",
    steps: Annotated[
        str | None, typer.Option(help="catchup: grants added before each point (default 10000,10000,30000)")
    ] = None,
    per_block: Annotated[int, typer.Option(help="catchup: grants mined to a block")] = 25,
    before: Annotated[
        Path | None, typer.Option(help="catchup: another checkout measured on the same chain (e.g. main's)")
    ] = None,
    sizes: Annotated[
        str | None, typer.Option(help="journal: entries at each point (default 10000,100000,1000000,10000000)")
    ] = None,
    records: Annotated[str | None, typer.Option(help="records: the patient's records at each point")] = None,
    rows: Annotated[int | None, typer.Option(help="records: gateway-wide resource rows (default 200,000)")] = None,
    plot: Annotated[
        bool, typer.Option("--plot", help="only redraw docs/growth.svg from the result file (another's: beside it)")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="result file (default bench/results/growth.json)")] = None,
) -> None:
    """Cost over time: a fresh read model's catch-up, a gateway on a growing journal, discovery among
    growing records; each part's points under its key of the result file, plotted in docs/growth.svg."""
    out = out or RESULTS / ("growth-quick.json" if quick else "growth.json")
    if plot:
        _growth_plot(out)
        return
    parts = GROWTH_PARTS if part == "all" else (part,)
    if any(p not in GROWTH_PARTS for p in parts):
        raise typer.BadParameter(f"unknown part {part!r} (catchup, journal, records or all)")
    log = lambda m: console.print(f"[dim]{m}[/dim]")  # noqa: E731
    for name in parts:
        console.rule(f"growth: {name}")
        if name == "catchup":
            data = _growth_catchup(quick, _ints(steps), per_block, before, log)
        elif name == "journal":
            data = _growth_journal(quick, _ints(sizes), log)
        else:
            data = _growth_records(quick, _ints(records), rows, log)
        data["quick"] = quick
        data["load_average"] = [round(v, 2) for v in os.getloadavg()]  # 1, 5, 15 min: the machine is shared
        previous = orjson.loads(out.read_bytes()) if out.exists() else {}
        out.write_bytes(orjson.dumps({**previous, name: data}, option=orjson.OPT_INDENT_2))
        console.print(f"written: {out}")
    if not quick:
        _growth_plot(out)


def _growth_plot(result: Path) -> None:
    """docs/growth.svg from bench/results/growth.json; another result file's plot goes beside it."""
    from bench.plot import growth_svg

    svg = ROOT / "docs" / "growth.svg" if result == RESULTS / "growth.json" else result.with_suffix(".svg")
    try:
        growth_svg(orjson.loads(result.read_bytes()), svg)
    except ImportError:
        console.print("[yellow]no matplotlib (the bench extra): pip install -c constraints.txt -e '.[bench]'[/yellow]")
        raise typer.Exit(1) from None
    console.print(f"plotted: {svg}")


def _growth_catchup(
    quick: bool, steps: list[int] | None, per_block: int, before: Path | None, log: Callable[[str], None]
) -> dict:  # type: ignore[type-arg]
    from bench.catchup import ROOT as CODE
    from bench.catchup import run_catchup_bench

    codes = {"before": before, "after": CODE} if before is not None else {"this": CODE}
    data = run_catchup_bench(
        steps=steps or ([2_000] if quick else [10_000, 10_000, 30_000]), per_block=per_block, codes=codes, log=log
    )
    table = Table(title="Catch-up of a fresh read model from the deployment block")
    for col in (
        "code",
        "grants",
        "blocks",
        "events",
        "seconds",
        "events/s",
        "peak RSS MB",
        "first /healthz s",
        "gateway caught up s",
        "gateway peak RSS MB",
    ):
        table.add_column(col, justify="right")
    for p in data["points"]:
        table.add_row(
            p["code"],
            f"{p['consents']:,}",
            f"{p['blocks']:,}",
            f"{p['events']:,}",
            f"{p['seconds']:.2f}",
            f"{p['events_per_s']:,}",
            f"{p['peak_rss_mb']:.0f}",
            f"{p['first_healthz_s']:.1f}",
            f"{p['gateway_caught_up_s']:.1f}",
            f"{p['gateway_peak_rss_mb']:.0f}",
        )
    goals = data["goals"]
    table.caption = (
        f"goals: >= {goals['events_per_s']:,} events/s, <= {goals['peak_rss_mb']} MB, /healthz within "
        f"{goals['first_healthz_s']} s of start"
    )
    console.print(table)
    return data


def _growth_journal(quick: bool, sizes: list[int] | None, log: Callable[[str], None]) -> dict:  # type: ignore[type-arg]
    from bench.journal_growth import run_journal_bench

    sizes = sizes or ([10_000, 50_000] if quick else [10_000, 100_000, 1_000_000, 10_000_000])
    data = run_journal_bench(sizes, starts=1 if quick else 2, log=log)
    table = Table(title="A whole gateway (batch mode) on a journal of N entries")
    for col in ("entries", "journal MB", "/healthz s", "peak RSS MB", "after pages MB", "access log ms", "proof ms"):
        table.add_column(col, justify="right")
    for p in data["points"]:
        table.add_row(
            f"{p['entries']:,}",
            f"{p['journal_mb']:,.0f}",
            " / ".join(f"{s['healthz_s']:.1f}" for s in p["starts"]),
            " / ".join(f"{s['peak_rss_mb']:.0f}" for s in p["starts"]),
            f"{p['peak_rss_after_mb']:.0f}",
            f"{p['access_log_ms']:.1f}",
            f"{p['proof_ms']:.1f}" + ("" if p["proof_status"] == 200 else f" ({p['proof_status']})"),
        )
    goals = data["goals"]
    table.caption = (
        f"goals at {goals['at_entries']:,} entries: /healthz <= {goals['healthz_s']} s, RSS <= "
        f"{goals['peak_rss_mb']} MB; first access-log page <= {goals['access_log_ms']} ms at any size"
    )
    console.print(table)
    return data


def _growth_records(quick: bool, sizes: list[int] | None, rows: int | None, log: Callable[[str], None]) -> dict:  # type: ignore[type-arg]
    from bench.records_growth import run_records_bench

    sizes = sizes or ([100, 1_000] if quick else [100, 1_000, 10_000])
    data = run_records_bench(sizes, total_rows=rows or (20_000 if quick else 200_000), log=log)
    table = Table(title=f"First pages of a patient's records ({data['code']} on most gateway-wide rows)")
    for col in ("records", "gateway rows", "code= ms", "rare code= ms", "discovery ms", "/v1/me/records ms"):
        table.add_column(col, justify="right")
    for p in data["points"]:
        table.add_row(
            f"{p['records']:,}",
            f"{p['gateway_rows']:,}",
            f"{p['discovery_code_ms']:.1f}",
            f"{p['discovery_rare_ms']:.1f}",
            f"{p['discovery_ms']:.1f}",
            f"{p['me_records_ms']:.1f}",
        )
    goals = data["goals"]
    table.caption = (
        f"goal: discovery with code= <= {goals['discovery_code_ms']} ms for {goals['at_records']:,} records "
        f"among {goals['at_rows']:,} rows (p50 of {len(data['points'][0]['discovery_times_ms'])})"
    )
    console.print(table)
    return data


@app.command("upload")
def upload_cmd(
    quick: QuickOpt = False,
    out: Annotated[Path | None, typer.Option(help="result file (default bench/results/upload.json)")] = None,
) -> None:
    """Records uploaded (validated, encrypted, stored, registered on-chain) per second."""
    from bench.upload import run_upload_bench

    data = run_upload_bench(quick=quick, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    data["quick"] = quick
    out = out or RESULTS / ("upload-quick.json" if quick else "upload.json")
    out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    table = Table(title="Uploads (Bundles of 10-50 resources, 5 categories)")
    for col in ("uploads", "records", "records/s", "resources/s", "p50 ms", "p99 ms", "errors", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{data['uploads']:,}",
        f"{data['records']:,}",
        f"{data['records_per_s']:,.0f}",
        f"{data['resources_per_s']:,.0f}",
        f"{data['p50_ms']:.0f}",
        f"{data['p99_ms']:.0f}",
        str(data["errors"]),
        f"{data['peak_rss_mb']:.0f}",
    )
    table.caption = f"goal: >= {data['goals']['records_per_s']:.0f} records/s"
    console.print(table)
    console.print(f"written: {out}")


def _network_tables(data: dict) -> tuple[Table, Table]:  # type: ignore[type-arg]
    net, g = data["network"], data["grants"]
    head = (
        f"{net['validators']} geth {net['geth']} Clique validators, {net['block_period_s']} s blocks "
        f"(measured {net['block_interval_s']} s), {net['confirmations']} confirmations, "
        f"gas limit {net['block_gas_limit']:,}"
    )
    grants = Table(title=f"Consent grants on the network ({head})")
    for col in (
        "grants",
        "patients",
        "grants/s",
        "blocks",
        "per block",
        "inclusion p50/p95/max ms",
        "confirmed p50 ms",
    ):
        grants.add_column(col, justify="right")
    grants.add_row(
        str(g["grants"]),
        str(g["patients"]),
        f"{g['grants_per_s']:.1f}",
        str(g["blocks"]),
        " ".join(map(str, g["per_block"])),
        f"{g['inclusion']['p50_ms']:.0f} / {g['inclusion']['p95_ms']:.0f} / {g['inclusion']['max_ms']:.0f}",
        f"{g['confirmed']['p50_ms']:.0f}",
    )
    grants.caption = (
        f"{g['gas_per_grant']:,} gas per grant: at most {g['gas_bound_grants_per_block']:,} grants per block "
        f"({g['gas_bound_grants_per_s']:,.0f}/s) by the block gas limit"
    )
    rel = Table(title=f"Ledgered releases through the gateway on the network ({data['size'] // 1024} KB, local store)")
    for col in ("mode", "clients", "releases/s", "p50 ms", "p99 ms", "errors", "released", "ledgered", "bound"):
        rel.add_column(col, justify="left" if col == "mode" else "right")
    for r in data["runs"]:
        same = "[green]" if r["ledgered"] == r["released"] else "[red]"
        if r.get("gas_bound_releases_per_s"):
            bound = f"{r['gas_bound_releases_per_s']:,.0f}/s by gas"
        elif r.get("anchor_delay_s") is not None:
            bound = f"anchored in {r['anchor_delay_s']} s"
        else:
            bound = "-"
        rel.add_row(
            r["mode"],
            str(r["clients"]),
            f"{r['releases_per_s']:,.1f}",
            f"{r['p50_ms']:,.0f}",
            f"{r['p99_ms']:,.0f}",
            str(r["errors"]),
            f"{r['released']:,}",
            f"{same}{r['ledgered']:,}",
            bound,
        )
    ref = data.get("hardhat_reference")
    if ref:
        rel.caption = "Hardhat (bench/results/release.json, commit {}): {}".format(
            ref["commit"],
            ", ".join(f"{r['mode']} x{r['clients']} {r['releases_per_s']:,.0f}/s" for r in ref["runs"]),
        )
    return grants, rel


@app.command("network")
def network_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="20 grants, one 10 s run per mode: about 2 minutes with the network")
    ] = False,
    grants: Annotated[
        int | None, typer.Option(help="grants from distinct (patient, grantee) pairs (default 60; --quick 20)")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="measured seconds per release run (default 20; --quick 10)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="result file (default bench/results/network.json)")] = None,
) -> None:
    """A 3-validator geth Clique network (1 s blocks) created for the run: consent grants/s and time to
    inclusion, strict and batch releases/s through a gateway process on it; the validators are stopped after."""
    from bench.network import default_plan, run_network_bench

    plan = default_plan(quick=quick)
    if grants:
        plan.grants = grants
    if seconds:
        plan.seconds = seconds
    data = run_network_bench(plan, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    _network_result(data, "network", quick, out, _network_tables(data))


def _network_result(
    data: dict,  # type: ignore[type-arg]
    name: str,
    quick: bool,
    out: Path | None,
    tables: Sequence[Table],
) -> None:
    """Writes a network benchmark's result (``bench/results/<name>[-quick].json``), prints its tables and
    fails when a run released more than it ledgered."""
    data["quick"] = quick
    out = out or RESULTS / (f"{name}-quick.json" if quick else f"{name}.json")
    out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    for table in tables:
        console.print(table)
    console.print(f"written: {out} (the whole run: {data['total_seconds']:.0f} s)")
    bad = [r for r in data["runs"] if r["ledgered"] != r["released"]]
    if bad:
        console.print(f"[red]ledgered != released in {len(bad)} run(s): the promise is broken[/red]")
        raise typer.Exit(1)


def _on_network_in_suite(name: str, command: Callable[..., None], quick: bool) -> None:
    """A benchmark on a geth network in a full run (skipped without geth: ./scripts/build_geth); not in
    --quick (CI): bringing the network up alone takes a minute or more, and CI already plays on one."""
    from node_client._exceptions import NodeError
    from node_client.network.geth import find_geth

    if quick:
        console.print(f"[dim]{name}: not in --quick (run ./scripts/bench {name} --quick)[/dim]")
        return
    try:
        find_geth()
    except NodeError as exc:
        console.print(f"[yellow]{name} skipped: {exc}[/yellow]")
        return
    command(quick=False)


def _network_in_suite(quick: bool = False) -> None:
    _on_network_in_suite("network", network_cmd, quick)


def _refused(refused: dict) -> str:  # type: ignore[type-arg]
    return ", ".join(f"{k} {v}" for k, v in refused.items()) or "-"


def _federation_tables(data: dict) -> tuple[Table, Table, Table]:  # type: ignore[type-arg]
    net = data["network"]
    names = {g["index"]: g["short"] for g in net["gateways"]}
    agg = Table(
        title=f"Releases over three institutions' gateways ({net['validators']} geth Clique validators, "
        f"{net['block_period_s']} s blocks; batch, local store, {data['size'] // 1024} KB)"
    )
    for col in ("mode", "clients", "releases/s", "p50 ms", "p95 ms", "p99 ms", "errors", "received", "released"):
        agg.add_column(col, justify="left" if col == "mode" else "right")
    for col in ("ledgered", "forwarded", "refused"):
        agg.add_column(col, justify="left" if col == "refused" else "right")
    per = Table(title="Per gateway (each institution's clients at its own gateway)")
    for col in ("mode", "clients", "gateway", "its clients", "releases/s", "p50 ms", "p95 ms", "errors"):
        per.add_column(col, justify="left" if col in ("mode", "gateway") else "right")
    for col in ("released here", "ledgered here", "forwarded from here", "refused here"):
        per.add_column(col, justify="left" if col == "refused here" else "right")
    for r in data["runs"]:
        same = "[green]" if r["ledgered"] == r["released"] else "[red]"
        pcts = (f"{r[k]:,.1f}" for k in ("releases_per_s", "p50_ms", "p95_ms", "p99_ms"))
        counts = (f"{r[k]:,}" for k in ("received", "released"))
        ledger = (f"{same}{r['ledgered']:,}", f"{r['forwarded']:,}", _refused(r["refused"]))
        agg.add_row(r["mode"], str(r["clients"]), *pcts, str(r["errors"]), *counts, *ledger)
        for p in r["per_gateway"]:
            per.add_row(
                r["mode"],
                str(r["clients"]),
                names.get(p["gateway"], str(p["gateway"])),
                str(p["clients"]),
                *(f"{p[k]:,.1f}" for k in ("releases_per_s", "p50_ms", "p95_ms")),
                str(p["errors"]),
                *(f"{p[k]:,}" for k in ("released_here", "ledgered_here", "forwarded_from_here")),
                _refused(p["refused"]),
            )
    agg.caption = (
        "local: each institution reads what its own gateway holds; cross: what the two other gateways hold, through "
        "its own (forwarded; ledgered and sealed at the holder). released/ledgered: counted at the holders, warm-up "
        "and requests abandoned at the deadline included; received: what the clients got"
    )
    return agg, per, _federation_cpu_table(data)


def _federation_cpu_table(data: dict) -> Table:  # type: ignore[type-arg]
    names = [g["short"] for g in data["network"]["gateways"]]
    cpu = Table(title="Where the CPU went during each run (seconds; warm-up, quiescing and anchoring included)")
    for col in ("mode", "clients", "wall", *(f"{n} gateway" for n in names), "validators", "load generator"):
        cpu.add_column(col, justify="left" if col == "mode" else "right")
    for col in ("gateways ms/release", "load avg (1 min)", "all anchored in"):
        cpu.add_column(col, justify="right")
    for r in data["runs"]:
        c = r["cpu"]
        cpu.add_row(
            r["mode"],
            str(r["clients"]),
            f"{c['wall_s']:.1f}",
            *(f"{s:.1f}" for s in c["gateways_s"]),
            f"{c['validators_s']:.1f}",
            f"{c['load_s']:.1f}",
            f"{c['gateways_ms_per_release']:.1f}",
            f"{r['load_average_1m']:.2f}",
            f"{r['anchored_after_s']} s" if r["anchored_after_s"] is not None else "[red]not in 60 s",
        )
    return cpu


@app.command("federation")
def federation_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="4 patients, 12 clients, one 5 s run per mode: about 2.5 minutes in all")
    ] = False,
    clients: Annotated[
        list[int] | None, typer.Option("--clients", help="K, spread over the 3 gateways (repeatable; default 3 24 48)")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="measured seconds per run (default 15; --quick 5)")] = None,
    out: Annotated[Path | None, typer.Option(help="result file (default bench/results/federation.json)")] = None,
) -> None:
    """Three institutions' gateways on a 3-validator geth network created for the run (batch mode): aggregate
    releases/s and latency when every release asks the holder (local) and when it asks the reader's own
    gateway, which forwards it (cross-institution); ledgered == released checked over the three journals."""
    from bench.federation import default_plan, run_federation_bench

    plan = default_plan(quick=quick)
    if clients:
        plan.clients = clients
    if seconds:
        plan.seconds = seconds
    data = run_federation_bench(plan, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    _network_result(data, "federation", quick, out, _federation_tables(data))


def _federation_in_suite(quick: bool = False) -> None:
    _on_network_in_suite("federation", federation_cmd, quick)


@app.command("soak")
def soak_cmd(
    seconds: Annotated[
        float, typer.Option(help="seconds of mixed load with revocations, split between strict and batch")
    ] = 600,
) -> None:
    """The soak test (tests/system/test_soak.py) for longer than CI's 60 s: afterwards requests = releases +
    refusals, releases = ledger entries, and no release after a revocation the gateway had seen."""
    import os

    env = {**os.environ, "HCL_SOAK_SECONDS": str(seconds)}
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/system/test_soak.py"], cwd=ROOT, env=env)
    if code:
        raise typer.Exit(code)


@app.command("report")
def report_cmd(
    write: Annotated[bool, typer.Option("--write", help="replace the tables in docs/performance.md")] = False,
) -> None:
    """The measured tables of bench/results/*.json as Markdown (for docs/performance.md)."""
    from bench.report import markdown
    from bench.report import write as write_doc

    if write:
        console.print(f"written: {write_doc()}")
    else:
        print(markdown())


#: every benchmark, in the order a full run takes them: name -> command
SUITE: dict[str, Callable[..., None]] = {
    "gas": gas_cmd,
    "release": release_cmd,
    "upload": upload_cmd,
    "consent": consent_cmd,
    "audit": audit_cmd,
    "growth": growth_cmd,
    "network": _network_in_suite,
    "federation": _federation_in_suite,
}


@app.callback(invoke_without_command=True)
def run_all(ctx: typer.Context, quick: QuickOpt = False) -> None:
    """Without a command: run every benchmark (``--quick``: each at its small size)."""
    if ctx.invoked_subcommand is not None:
        if quick:  # ``./scripts/bench --quick growth`` means the command's own --quick
            ctx.default_map = {ctx.invoked_subcommand: {"quick": True}}
        return
    failed = []
    for name, command in SUITE.items():
        console.rule(name)
        try:
            command(quick=quick)
        except typer.Exit as exc:  # one broken part must not hide the others' numbers
            if exc.exit_code:
                failed.append(name)
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red]")
        raise typer.Exit(1)


def main() -> None:
    app()
