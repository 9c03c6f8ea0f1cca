"""``./scripts/bench federation``: the aggregate releases/s of three institutions' gateways, local and forwarded.

The network is created for the run (``Network(folder).up(Consortium.development(3), gateways=True,
ledger_mode="batch")``: three geth 1.13.15 Clique validators, 1 s blocks, manifest ``confirmations: 3``,
and one ``hcl gateway serve`` per institution — City First People's Hospital (gateway 0), Riverside
Community Health Centre (1), Regional Clinical Laboratory (2) — batch mode, local blob store) and
stopped at the end (``Network.down()``), whatever happens in between.

Setup (not measured): each institution (hospital dev account 4, clinic 5, lab 6) uploads one 10 KB
record (``bench.gateway.observation_bundle``, lab-results) per patient at its own gateway; every patient
grants the three institutions (``bench.network.send_grants``, all at once); the run waits until every
institution, at its own gateway, is released a record of every holder (the grants have their
3 confirmations and every gateway has indexed every record).

Then, for each K, two runs of a fixed duration with K concurrent clients spread evenly over the three
gateways, each client signed in at its own institution's gateway (one SIWE token per institution):

1. **local**: every release asks the gateway that holds the record — the hospital's clients read the
   hospital's records at the hospital's gateway, and so on: no forwarding;
2. **cross-institution**: every release asks the reader's own gateway for a record one of the two other
   gateways holds: forwarded (signed gateway request), consent-checked, ledgered in the holder's
   journal and sealed to the reader there, passed through.

Load: one wrk process per gateway started together (one thread, its share of the K connections; a warm-up
of a few seconds, then the measured window), with a Lua script written for the run that prints wrk's
latency histogram (with wrk's coordinated-omission correction, as ``bench/release.lua``'s percentiles),
so the aggregate p50/p95/p99 are of the three gateways' requests merged; without wrk, ``bench.load``'s
asyncio client per gateway (aggregate percentiles are then the request-weighted means of the gateways').
Aggregate releases/s is the sum of the three gateways' 200s per second of their measured windows.

Each run checks the promise across gateways: ``ledgered`` (the three journals' growth, ``/healthz``) must
equal ``released`` (the three ``hcl_releases_total`` growths, counted at the holders), warm-up and
abandoned requests included; ``received`` is what the clients got, ``forwarded`` the forwarding gateways'
``hcl_forwarded_releases_total`` (0 local, ``released`` cross). It also records the refusals by problem
code (``hcl_denials_total``; a refusal of a forwarded release counts at the holder and at the forwarder),
the time until every entry was anchored, and the CPU seconds of each gateway, the validators and the load
generator over the run (``/proc``, ``getrusage``): with two shared cores they say what bounded it.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.gateway import enrol, environment, login, observation_bundle, signed_in
from bench.network import send_grants
from node_client._client import ChainClient
from node_client._exceptions import GatewayProblem, NodeError
from node_client.deploy import Manifest
from node_client.keys import dev_account
from node_client.network import Consortium, Network
from node_client.network.geth import GETH_VERSION

SIZE = 10 * 1024
#: gateway index -> the institution (dev account) that uploads and reads there
INSTITUTIONS = (4, 5, 6)
SHORT = ("hospital", "clinic", "lab")
MODES = ("local", "cross")

#: wrk: one thread per gateway (one institution's token), its connections that institution's terminals;
#: ``done`` prints the counts and the latency histogram (microseconds, count) as one JSON line
LUA = r"""
local token, records = "", {}
function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local kind, value = line:match("^(%a+) (.+)$")
    if kind == "token" then token = value elseif kind == "record" then records[#records + 1] = value end
  end
  f:close()
  counter = 0
end
function request()
  counter = counter + 1
  local rid = records[(counter % #records) + 1]
  return wrk.format("GET", "/v1/records/" .. rid .. "?purpose=treatment", { ["Authorization"] = "Bearer " .. token })
end
function done(summary, latency, requests)
  local e, hist = summary.errors, {}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[#hist + 1] = string.format("[%d,%d]", value, count)
  end
  io.write(string.format('{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "hist": [%s]}\n', summary.requests, summary.duration, e.connect, e.read,
    e.write, e.status, e.timeout, table.concat(hist, ",")))
end
"""


@dataclass
class FederationPlan:
    clients: list[int] = field(default_factory=lambda: [3, 24, 48])  # K, spread over the three gateways
    seconds: float = 15.0
    warmup: float = 2.0
    patients: int = 8  # each has one record at every gateway
    driver: str = field(default_factory=lambda: "wrk" if shutil.which("wrk") else "httpx")


def default_plan(*, quick: bool) -> FederationPlan:
    if quick:
        return FederationPlan(clients=[12], seconds=5.0, warmup=1.0, patients=4)
    return FederationPlan()


# ---------------------------------------------------------------- the network and its data


@contextmanager
def federation_network(folder: Path, *, log: Any = print) -> Iterator[tuple[Network, Manifest]]:
    """The 3-validator network with its three gateways (batch, local store), stopped on the way out; a second
    try in a fresh folder if the first does not come up (a free port can be taken in between)."""
    network: Network | None = None
    try:
        for attempt in (1, 2):
            network = Network(folder / f"network-{attempt}", say=lambda m: log(f"network: {m}"))
            try:
                manifest = network.up(
                    Consortium.development(3),
                    manifest_path=folder / f"manifest-{attempt}.json",
                    timeout=180,
                    gateways=True,
                    ledger_mode="batch",
                )
                break
            except NodeError as exc:
                for daemon in [*network.nodes, *network.gateways]:
                    log(f"{daemon.label}'s log ends:\n{daemon.log_tail(1200)}")
                network.down()
                if attempt == 2:
                    raise
                log(f"the network did not come up ({exc}): once more, in a fresh folder")
        yield network, manifest
    finally:
        if network is not None:
            stopped = network.down()
            log(f"network: stopped {len(stopped)} validator(s) and their gateways")


def upload_all(network: Network, patients: list[int]) -> list[list[str]]:
    """One 10 KB record per patient at each gateway, uploaded by its institution (all concurrently):
    gateway index -> the record ids it holds."""

    def one(gw: int, n: int, patient: int) -> list[str]:
        with signed_in(network.gateways[gw].url, INSTITUTIONS[gw]) as client:
            result = client.upload(dev_account(patient).address, observation_bundle(SIZE, 100 * gw + n))
        return [r["recordId"] for r in result["records"]]

    jobs = [(gw, n, p) for gw in range(3) for n, p in enumerate(patients)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        ids = list(pool.map(lambda job: one(*job), jobs))
    held: list[list[str]] = [[], [], []]
    for (gw, _, _), rids in zip(jobs, ids, strict=True):
        held[gw].extend(rids)
    return held


def wait_counted(network: Network, held: list[list[str]], *, timeout: float = 120.0) -> float:
    """Seconds until each institution, at its own gateway, is released one record of every holder (the
    grants have their confirmations, every gateway indexed every record); a 403/404 is retried."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    for gw in range(3):
        with signed_in(network.gateways[gw].url, INSTITUTIONS[gw]) as client:
            for holder in range(3):
                while True:
                    try:
                        client.release(held[holder][0], "treatment")
                        break
                    except GatewayProblem as exc:
                        if exc.status not in (403, 404) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
    return time.monotonic() - t0


# ---------------------------------------------------------------- what the gateways and processes say


def _counters(url: str) -> dict[str, Any]:
    """One gateway's counters: releases (here, as holder), forwarded, denials by code, journal size."""
    out: dict[str, Any] = {"released": 0.0, "forwarded": 0.0, "peer_releases": 0.0, "refused": Counter()}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("hcl_releases_total"):
            out["released"] += float(value)
        elif name.startswith("hcl_forwarded_releases_total"):
            out["forwarded"] += float(value)
        elif name.startswith("hcl_peer_requests_total{") and 'kind="release"' in name:
            out["peer_releases"] += float(value)
        elif name.startswith("hcl_denials_total{"):
            out["refused"][name.split('reason="', 1)[1].split('"', 1)[0]] += int(float(value))
    journal = httpx.get(url + "/healthz", timeout=30).json()["checks"]["journal"]
    out["journal"], out["anchored"] = int(journal["size"]), int(journal["anchoredSize"])
    return out


def _snapshot(network: Network) -> list[dict[str, Any]]:
    return [_counters(gw.url) for gw in network.gateways]


def _quiesce(network: Network, *, quiet: float = 1.0, timeout: float = 120.0) -> None:
    """Until no gateway's release or forward counter moved for ``quiet`` seconds: requests a client abandoned
    at its deadline finish and are counted in this run, not the next."""

    def moving() -> list[float]:
        return [c["released"] + c["forwarded"] for c in _snapshot(network)]

    deadline, last = time.monotonic() + timeout, moving()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = moving()
        if now == last:
            return
        last = now


def _wait_anchored(network: Network, timeout: float = 60.0) -> float | None:
    """Seconds until every gateway's journal is anchored up to its end (None: not within ``timeout``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(c["anchored"] >= c["journal"] for c in _snapshot(network)):
            return round(time.monotonic() - t0, 2)
        time.sleep(0.1)
    return None


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(network: Network) -> dict[str, Any]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "gateways": [_cpu_seconds(gw.pid) for gw in network.gateways],
        "validators": sum(_cpu_seconds(n.pid) for n in network.nodes),
        "load": children.ru_utime + children.ru_stime,  # the wrk (or bench.load) processes, once they ended
        "wall": time.monotonic(),
    }


def _cpu_used(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "wall_s": round(after["wall"] - before["wall"], 1),
        "gateways_s": [round(a - b, 1) for a, b in zip(after["gateways"], before["gateways"], strict=True)],
        "validators_s": round(after["validators"] - before["validators"], 1),
        "load_s": round(after["load"] - before["load"], 1),
    }


# ---------------------------------------------------------------- load


def _spread(clients: int) -> list[int]:
    """K clients over three gateways, as evenly as can be (at least one each)."""
    return [max(1, clients // 3 + (1 if g < clients % 3 else 0)) for g in range(3)]


def _wrk_phase(
    urls: list[str], plans: list[Path], spread: list[int], seconds: float, script: Path
) -> list[dict[str, Any]]:
    """The three wrk processes, started together, each waited for: their JSON lines."""
    procs = [
        subprocess.Popen(
            ["wrk", "-t", "1", "-c", str(c), "-d", f"{max(1, round(seconds))}s", "--timeout", "30s"]
            + ["-s", str(script), url, "--", str(plan)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url, plan, c in zip(urls, plans, spread, strict=True)
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr.strip()[-500:]}")
        outs.append(orjson.loads(stdout.strip().splitlines()[-1]))
    return outs


def _hist_pcts(hist: list[list[int]]) -> dict[str, float]:
    """p50/p95/p99/max in ms of a wrk histogram ([microseconds, count] pairs), as wrk computes them."""
    hist = sorted(hist)
    total = sum(c for _, c in hist)
    out: dict[str, float] = {}
    for q in (50, 95, 99):
        rank, seen = total * q / 100, 0
        for value, count in hist:
            seen += count
            if seen >= rank:
                out[f"p{q}_ms"] = round(value / 1000, 2)
                break
    out["max_ms"] = round(hist[-1][0] / 1000, 2) if hist else float("nan")
    return out


def _load_wrk(
    urls: list[str], tokens: list[str], targets: list[list[str]], spread: list[int], plan: FederationPlan, folder: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    script = folder / "federation.lua"
    script.write_text(LUA)
    plans = []
    for g, (token, records) in enumerate(zip(tokens, targets, strict=True)):
        plans.append(folder / f"plan-{g}.txt")
        plans[-1].write_text(f"token {token}\n" + "".join(f"record {r}\n" for r in records))
    warm = _wrk_phase(urls, plans, spread, plan.warmup, script) if plan.warmup > 0 else [{}] * 3
    runs = _wrk_phase(urls, plans, spread, plan.seconds, script)
    per_gateway = []
    for g, (w, r) in enumerate(zip(warm, runs, strict=True)):
        socket = r["connect"] + r["read"] + r["write"] + r["timeout"]
        released = r["requests"] - r["status"]
        per_gateway.append(
            {
                "gateway": g,
                "clients": spread[g],
                "releases_per_s": round(released / (r["duration_us"] / 1e6), 1),
                **_hist_pcts(r["hist"]),
                "requests": r["requests"],
                "errors": r["status"] + socket,
                "non_2xx": r["status"],
                "socket_errors": socket,
                "seconds": round(r["duration_us"] / 1e6, 3),
                "received": released + w.get("requests", 0) - w.get("status", 0),
            }
        )
    merged = _hist_pcts([pair for r in runs for pair in r["hist"]])
    return per_gateway, {**merged, "percentiles": "merged wrk histograms of the three gateways"}


def _load_httpx(
    urls: list[str], tokens: list[str], targets: list[list[str]], spread: list[int], plan: FederationPlan, folder: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Without wrk: ``bench.load``'s asyncio client, one process per gateway, started together."""
    procs = []
    for g, (url, token, records) in enumerate(zip(urls, tokens, targets, strict=True)):
        path = folder / f"plan-{g}.json"
        path.write_bytes(orjson.dumps({"tokens": [token], "records": records}))
        args = ["--url", url, "--plan", str(path), "--clients", str(spread[g]), "--seconds", str(plan.seconds)]
        args += ["--warmup", str(plan.warmup), "--driver", "httpx"]
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.load", *args], stdout=subprocess.PIPE, text=True))
    per_gateway = []
    for g, proc in enumerate(procs):
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"bench.load failed ({proc.returncode}) for gateway {g}")
        r = orjson.loads(stdout.strip().splitlines()[-1])
        keep = ("releases_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "requests", "errors", "seconds")
        per_gateway.append(
            {"gateway": g, "clients": spread[g], **{k: r[k] for k in keep}, "received": r["released_total"]}
        )
    n = sum(p["requests"] for p in per_gateway) or 1
    merged = {f"p{q}_ms": round(sum(p[f"p{q}_ms"] * p["requests"] for p in per_gateway) / n, 2) for q in (50, 95, 99)}
    merged["max_ms"] = max(p["max_ms"] or 0 for p in per_gateway)
    return per_gateway, {**merged, "percentiles": "request-weighted means of the gateways' (asyncio client)"}


# ---------------------------------------------------------------- a run


def targets_for(mode: str, held: list[list[str]]) -> list[list[str]]:
    """What the clients at gateway g ask for: its own records (local), or the other two's (cross)."""
    if mode == "local":
        return [list(held[g]) for g in range(3)]
    return [[rid for h in range(3) if h != g for rid in held[h]] for g in range(3)]


def _delta(after: list[dict[str, Any]], before: list[dict[str, Any]], key: str) -> list[int]:
    return [int(a[key] - b[key]) for a, b in zip(after, before, strict=True)]


def one_run(
    network: Network, mode: str, clients: int, held: list[list[str]], plan: FederationPlan, folder: Path
) -> dict[str, Any]:
    urls = [gw.url for gw in network.gateways]
    tokens = [login(urls[g], INSTITUTIONS[g]) for g in range(3)]  # fresh: a token lives 15 minutes
    spread = _spread(clients)
    _quiesce(network)
    load_avg = os.getloadavg()[0]
    before, cpu0 = _snapshot(network), _cpu(network)
    drive = _load_wrk if plan.driver == "wrk" else _load_httpx
    per_gateway, merged = drive(urls, tokens, targets_for(mode, held), spread, plan, folder)
    _quiesce(network)
    anchored_after = _wait_anchored(network)
    after, cpu1 = _snapshot(network), _cpu(network)
    released, ledgered = _delta(after, before, "released"), _delta(after, before, "journal")
    cpu = _cpu_used(cpu0, cpu1)
    forwarded = _delta(after, before, "forwarded")
    for g, p in enumerate(per_gateway):
        p.update(released_here=released[g], ledgered_here=ledgered[g], forwarded_from_here=forwarded[g])
        p["refused"] = dict(after[g]["refused"] - before[g]["refused"])
    return {
        "mode": mode,
        "clients": sum(spread),
        "releases_per_s": round(sum(p["releases_per_s"] for p in per_gateway), 1),
        **merged,
        "errors": sum(p["errors"] for p in per_gateway),
        "requests": sum(p["requests"] for p in per_gateway),
        "received": sum(p["received"] for p in per_gateway),
        "released": sum(released),
        "ledgered": sum(ledgered),
        "forwarded": sum(forwarded),
        "refused": dict(sum((Counter(p["refused"]) for p in per_gateway), Counter())),
        "anchored_after_s": anchored_after,
        "load_average_1m": round(load_avg, 2),
        "cpu": {**cpu, "gateways_ms_per_release": round(1000 * sum(cpu["gateways_s"]) / max(1, sum(released)), 1)},
        "per_gateway": per_gateway,
        "driver": plan.driver,
    }


def _describe(network: Network) -> list[dict[str, Any]]:
    return [
        {
            "index": g,
            "institution": gw.name,
            "member": gw.member,
            "gateway_dev_account": gw.dev_account,
            "reader_dev_account": INSTITUTIONS[g],
            "short": SHORT[g],
            "ledger_mode": gw.ledger_mode,
            "store": gw.store,
        }
        for g, gw in enumerate(network.gateways)
    ]


def _setup(
    network: Network, manifest: Manifest, plan: FederationPlan, log: Any
) -> tuple[list[list[str]], dict[str, Any]]:
    patients = list(range(10, 10 + plan.patients))
    domain = manifest.connect(ChainClient(rpc_url=network.nodes[0].url, timeout=60)).consents.domain()
    for gw, institution in INSTITUTIONS.items():  # each patient hands each institution her key (not timed)
        enrol(network.gateways[gw].url, domain, patients, by=institution)
    t0 = time.monotonic()
    held = upload_all(network, patients)
    uploaded = time.monotonic() - t0
    log(
        f"uploaded {sum(map(len, held))} records of {SIZE // 1024} KB ({len(patients)} patients x 3 gateways) in {uploaded:.1f} s"
    )
    t0 = time.monotonic()
    grants = send_grants(network, manifest, [(p, r) for r in INSTITUTIONS for p in patients])
    granted = time.monotonic() - t0
    counted = wait_counted(network, held)
    log(f"{len(grants)} grants mined in {granted:.1f} s, counted at every gateway {counted:.1f} s later")
    return held, {
        "patients": len(patients),
        "records_per_gateway": [len(h) for h in held],
        "upload_seconds": round(uploaded, 1),
        "grants": len(grants),
        "grant_seconds": round(granted, 1),
        "counted_after_s": round(counted, 1),
    }


def run_federation_bench(plan: FederationPlan, *, log: Any = print) -> dict[str, Any]:
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hcl-bench-federation-") as tmp:
        folder = Path(tmp)
        log(f"starting 3 geth {GETH_VERSION} Clique validators and three gateways (batch, local store)")
        with federation_network(folder, log=log) as (network, manifest):
            setup_s = time.monotonic() - started
            log(f"network, deployment and gateways up in {setup_s:.0f} s")
            held, setup = _setup(network, manifest, plan, log)
            gateways = _describe(network)
            for clients in plan.clients:
                for mode in MODES:
                    run = one_run(network, mode, clients, held, plan, folder)
                    log(
                        f"{mode} x{run['clients']}: {run['releases_per_s']:.1f}/s p50 {run['p50_ms']} p95 "
                        f"{run['p95_ms']} ms, errors {run['errors']}, released {run['released']} ledgered "
                        f"{run['ledgered']} forwarded {run['forwarded']}, refused {run['refused']}, CPU {run['cpu']}"
                    )
                    runs.append(run)
    return {
        "network": {
            "validators": 3,
            "engine": "clique",
            "geth": GETH_VERSION,
            "block_period_s": manifest.block_period,
            "confirmations": manifest.confirmations,
            "gateways": gateways,
            "setup_seconds": round(setup_s, 1),
        },
        "setup": setup,
        "size": SIZE,
        "parameters": {
            "clients": plan.clients,
            "seconds": plan.seconds,
            "warmup": plan.warmup,
            "patients": plan.patients,
            "driver": plan.driver,
        },
        "runs": runs,
        "total_seconds": round(time.monotonic() - started, 1),
        "machine": {"node": os.uname().nodename, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "notes": (
            "Three validators, three gateways and the load generator share this machine's cores with other "
            "engineers' tests running at the same time: the figures are noisy and say more about this machine "
            "than about the design (compare local with cross-institution within this run; see each run's CPU "
            "seconds and load average)."
        ),
        **environment(),
    }
