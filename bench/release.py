"""``./scripts/bench release``: ledgered releases per second, and their latency.

For each ledger mode (batch, strict) and store (local; IPFS when a Kubo binary is there) a gateway
*process* is started on a fresh chain, records of each size are uploaded through the API and the
patients grant the four reading institutions. Then, for each record size and number of concurrent
clients, a separate load process (:mod:`bench.load`) requests releases for a fixed time.

Every run checks the product's promise, not just speed: ``ledgered`` (batch: journal entries added;
strict: ``AccessLogged`` events in the run's blocks) must equal ``released`` (HTTP 200s), and in batch
mode the time until every entry of the run is anchored on-chain is measured, with the anchoring gas per
access; in strict mode the gas per access and the entries per ``logAccessBatch`` transaction (group commit). The gateway's peak RSS is read from /proc.

Before the first gateway run of each (size, clients), the same load is put on a bare FastAPI app with the
gateway's server settings (:mod:`bench.ceiling`): each run records ``ceiling_releases_per_s``,
``ceiling_p50_ms``, ``ceiling_p99_ms`` and ``ratio_to_ceiling`` (its releases/s over the ceiling's), the
ceiling being shared by the runs of that (size, clients) in every mode and store.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.ceiling import ceiling_process
from bench.gateway import (
    READERS,
    Chain,
    GatewayProcess,
    chain,
    environment,
    gateway_process,
    grant_all,
    login,
    seed_records,
    wait_indexed,
)

SIZES = (1024, 10 * 1024, 100 * 1024, 1024 * 1024)
CLIENTS = (1, 8, 64)
NOTES = (
    "Loopback on a 2-core VM shared with other engineers' test and benchmark runs: absolute figures vary run to run; "
    "compare ratio_to_ceiling (the bare app of bench/ceiling.py under the same load, measured in this run, once per "
    "(size, clients) before the first gateway run of it, while the Hardhat node and the gateway sat idle)."
)
GOAL_RATE, GOAL_P99_MS, GOAL_ANCHOR_S, GOAL_GAS, GOAL_RSS_MB = 2000.0, 50.0, 2.0, 100.0, 300.0


@dataclass
class Plan:
    """Which runs to make: (mode, store) gateways, and per gateway the (size, clients) grid."""

    gateways: list[tuple[str, str]]
    grid: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    seconds: float = 8.0
    warmup: float = 1.0
    #: how long the gateway's release counter must stand still before a run is read: longer than one
    #: release takes (a strict release on a Clique network waits ~5 s for its block and 3 confirmations)
    quiet: float = 1.0
    driver: str = field(default_factory=lambda: "wrk" if shutil.which("wrk") else "httpx")
    #: gateway processes to compare (``HCL_WORKERS``; batch mode only, strict runs always use 1)
    workers: list[int] = field(default_factory=lambda: [1])


def default_plan(*, quick: bool, ipfs: bool, mode: str | None = None) -> Plan:
    """The runs to make; ``mode`` (batch or strict) keeps only that ledger mode's gateways."""
    if quick:
        plan = Plan([("batch", "local"), ("strict", "local")], seconds=2.0, warmup=0.5)
        plan.grid = {("batch", "local"): [(10 * 1024, 8)], ("strict", "local"): [(10 * 1024, 8)]}
    else:
        plan = Plan([("batch", "local"), ("strict", "local")] + ([("batch", "ipfs")] if ipfs else []))
        plan.grid[("batch", "local")] = [(s, c) for s in SIZES for c in CLIENTS]
        plan.grid[("strict", "local")] = [(10 * 1024, c) for c in CLIENTS] + [(1024 * 1024, 8)]
        if ipfs:
            plan.grid[("batch", "ipfs")] = [(10 * 1024, c) for c in CLIENTS] + [(1024 * 1024, 8)]
    if mode is not None:
        plan.gateways = [g for g in plan.gateways if g[0] == mode]
    return plan


def restrict(plan: Plan, *, workers: list[int] | None, only: tuple[int, int] | None) -> Plan:
    """``--workers`` (batch gateways run once per count) and ``--only SIZExCLIENTS`` (that one run, batch and
    local store only): the comparison of issue 15 without the whole grid."""
    if workers:
        plan.workers = workers
    if only is not None:
        plan.gateways = [("batch", "local")]
        plan.grid = {("batch", "local"): [only]}
    return plan


def _strict_ledger(net: Chain, from_block: int, to_block: int) -> dict[str, Any]:
    """Strict mode: the run's ``AccessLogged`` events, the transactions that carried them (group commit)
    and their gas per access."""
    ledger = net.manifest.connect(net.client)
    logs = ledger.access.contract.events.AccessLogged().get_logs(from_block=from_block, to_block=to_block)
    txs = {log["transactionHash"] for log in logs}
    gas = sum(int(net.client.w3.eth.get_transaction_receipt(t)["gasUsed"]) for t in txs)
    return {
        "ledgered": len(logs),
        "transactions": len(txs),
        "entries_per_tx": round(len(logs) / max(1, len(txs)), 1),
        "gas_per_access": round(gas / max(1, len(logs))),
    }


def _journal(gw: GatewayProcess) -> dict[str, Any]:
    return httpx.get(gw.url + "/healthz", timeout=30).json()["checks"]["journal"]


def _anchor_gas(net: Chain, from_block: int, to_block: int) -> tuple[int, int]:
    """(anchors, total gas) of the anchoring transactions mined in the block range."""
    ledger = net.manifest.connect(net.client)
    logs = ledger.access.contract.events.AccessBatchAnchored().get_logs(from_block=from_block, to_block=to_block)
    gas = sum(int(net.client.w3.eth.get_transaction_receipt(log["transactionHash"])["gasUsed"]) for log in logs)
    return len(logs), gas


def _quiesce(gw: GatewayProcess, timeout: float = 120.0, quiet: float = 1.0) -> None:
    """Waits until the gateway has finished every request in flight (its release counter stands still for
    ``quiet`` seconds): a client stopping at its deadline leaves requests behind, which must not be counted
    in the next run's window."""
    deadline = time.monotonic() + timeout
    last = gw.metric("hcl_releases_total")
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = gw.metric("hcl_releases_total")
        if now == last:
            return
        last = now


def _load(url: str, plan_file: Path, clients: int, plan: Plan) -> dict[str, Any]:
    """One run of the load generator (:mod:`bench.load`, its own process) against ``url``."""
    args = ["--url", url, "--plan", str(plan_file), "--clients", str(clients), "--seconds", str(plan.seconds)]
    args += ["--warmup", str(plan.warmup), "--driver", plan.driver]
    out = subprocess.run([sys.executable, "-m", "bench.load", *args], capture_output=True, text=True, check=True)
    return orjson.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def ceiling_run(url: str, size: int, tokens: list[str], clients: int, plan: Plan, folder: Path) -> dict[str, Any]:
    """The bare app (:mod:`bench.ceiling`) under the same load as a gateway run: same driver, tokens,
    connections, warm-up and duration; its one "record" is the body size."""
    plan_file = folder / f"ceiling-{size}.json"
    plan_file.write_bytes(orjson.dumps({"tokens": tokens, "records": [str(size)]}))
    load = _load(url, plan_file, clients, plan)
    return {
        "ceiling_releases_per_s": load["releases_per_s"],
        "ceiling_p50_ms": load["p50_ms"],
        "ceiling_p99_ms": load["p99_ms"],
        "ceiling_errors": load["errors"],
    }


def _with_ceiling(run: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    rate = ceiling["ceiling_releases_per_s"]
    return {**run, **ceiling, "ratio_to_ceiling": round(run["releases_per_s"] / rate, 3) if rate else None}


def _batch_ledger(net: Chain, gw: GatewayProcess, size0: int, block0: int, lags: list[float]) -> dict[str, Any]:
    """Batch mode: waits until every entry is anchored; the entries added, the anchors and their gas, and the
    longest any entry waited for its anchor while the run went on (``lags``, sampled during it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        j = _journal(gw)
        if j["anchoredSize"] >= j["size"]:
            break
        time.sleep(0.05)
    ledgered = _journal(gw)["size"] - size0
    anchors, gas = _anchor_gas(net, block0 + 1, net.client.block_number())
    return {
        "ledgered": ledgered,
        "anchor_delay_s": round(max(lags), 2) if lags else None,  # max age of an unanchored entry
        "anchors": anchors,
        "anchor_gas_per_access": round(gas / max(1, ledgered), 1),
    }


def one_run(
    net: Chain,
    gw: GatewayProcess,
    mode: str,
    store: str,
    size: int,
    records: list[str],
    tokens: list[str],
    clients: int,
    plan: Plan,
    folder: Path,
) -> dict[str, Any]:
    plan_file = folder / "plan.json"
    plan_file.write_bytes(orjson.dumps({"tokens": tokens, "records": records}))
    _quiesce(gw, quiet=plan.quiet)
    block0 = net.client.block_number()
    size0 = _journal(gw)["size"] if mode == "batch" else 0
    released0 = gw.metric("hcl_releases_total")
    lags: list[float] = []
    sampling = threading.Event()

    def sample_anchor_lag() -> None:  # the age of the oldest unanchored entry, as the gateway reports it
        while not sampling.is_set():
            try:
                lag = _journal(gw).get("anchorLagSeconds")
            except (httpx.HTTPError, KeyError):
                lag = None
            if lag is not None:
                lags.append(float(lag))
            sampling.wait(0.2)

    sampler = threading.Thread(target=sample_anchor_lag, daemon=True)
    if mode == "batch":
        sampler.start()
    load = _load(gw.url, plan_file, clients, plan)
    _quiesce(gw, quiet=plan.quiet)  # the requests the clients abandoned at their deadline finish, and are counted here
    # rates and latencies are of the measured window. ``released`` is the gateway's own count of responses
    # it released (warm-up included), ``received`` what the clients got: requests still in flight when a
    # client stops at its deadline are released and ledgered but not received (at most ``clients`` per run)
    run: dict[str, Any] = {
        "mode": mode,
        "store": store,
        "size": size,
        "clients": clients,
        **{
            k: load[k]
            for k in (
                "releases_per_s",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
                "errors",
                "requests",
                "seconds",
                "statuses",
                "driver",
            )
        },
        "received": load["released_total"],
    }
    if mode == "batch":
        sampling.set()
        sampler.join()
        run.update(_batch_ledger(net, gw, size0, block0, lags))
    else:
        run.update(_strict_ledger(net, block0 + 1, net.client.block_number()))
    run["released"] = int(gw.metric("hcl_releases_total") - released0)
    run["peak_rss_mb"] = round(gw.peak_rss_mb(), 1)
    run["peak_rss_each_mb"] = gw.peak_rss_each_mb()  # the primary (or the one process) first
    return run


def run_release_bench(plan: Plan, *, ipfs_api: str | None = None, log: Any = print) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    ceilings: dict[tuple[int, int, int], dict[str, Any]] = {}
    all_sizes = sorted({s for grid in plan.grid.values() for s, _ in grid})
    with tempfile.TemporaryDirectory(prefix="hcl-bench-release-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        ceiling_urls = {n: stack.enter_context(ceiling_process(folder, all_sizes, workers=n)) for n in plan.workers}
        for mode, store in plan.gateways:
            grid = plan.grid[(mode, store)]
            sizes = tuple(sorted({s for s, _ in grid}))
            for workers in plan.workers if mode == "batch" else [1]:
                name = f"{mode}-{store}" + (f"-w{workers}" if workers > 1 else "")
                (folder / name).mkdir(parents=True, exist_ok=True)
                with chain(folder / name) as net:
                    grant_all(net)
                    env = {"HCL_WORKERS": str(workers)}
                    with gateway_process(
                        folder / name, net, mode=mode, store=store, ipfs_api=ipfs_api, extra_env=env
                    ) as gw:
                        log(
                            f"{mode}/{store} x{workers} processes: seeding records of {', '.join(_fmt(s) for s in sizes)}"
                        )
                        records = seed_records(gw, sizes)
                        wait_indexed(gw, net)
                        tokens = [login(gw.url, r) for r in READERS]
                        for size, clients in grid:
                            key = (size, clients, workers)
                            if key not in ceilings:  # once per (size, clients, workers), reused across gateways
                                ceilings[key] = ceiling_run(ceiling_urls[workers], size, tokens, clients, plan, folder)
                            run = one_run(
                                net, gw, mode, store, size, records[size], tokens, clients, plan, folder / name
                            )
                            run = {**_with_ceiling(run, ceilings[key]), "workers": workers}
                            log(
                                f"{mode}/{store} x{workers} {_fmt(size)} x{clients}: {run['releases_per_s']:.0f}/s "
                                f"p50 {run['p50_ms']} p99 {run['p99_ms']} ms, ledgered {run['ledgered']} "
                                f"released {run['released']}; ceiling {run['ceiling_releases_per_s']:.0f}/s "
                                f"p99 {run['ceiling_p99_ms']} ms, ratio {run['ratio_to_ceiling']}"
                            )
                            runs.append(run)
    return {
        "runs": runs,
        "notes": NOTES,
        "goals": {
            "releases_per_s": GOAL_RATE,
            "p99_ms": GOAL_P99_MS,
            "anchor_s": GOAL_ANCHOR_S,
            "gas_per_access": GOAL_GAS,
            "peak_rss_mb": GOAL_RSS_MB,
        },
        **environment(),
    }


def _fmt(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"
