"""``./scripts/bench network``: figures of a real consortium chain, three geth Clique validators.

The network is created for the run (``Network(folder).up(Consortium.development(3))``: geth 1.13.15,
1 s blocks, the dev consortium deployed and onboarded, manifest ``confirmations: 3``) and stopped at
the end (``Network.down()``), whatever happens in between.

1. **Consent grants**: N grants (``ConsentRegistry.grant``, signed and sent by the patient), one thread
   each, released at once; 15 funded dev accounts act as patients, each on one of the three validators'
   RPC (round-robin), every (patient, grantee) pair distinct so every grant is a first grant; a
   patient's grants share its nonce sequence (the client's nonce manager). Measured: grants/s mined (N
   over first send to last receipt), time to inclusion (send to receipt: gas estimate, signing,
   broadcast, the wait for a block, receipt polling at 50 ms), time until the grant's block has 3 blocks
   on top (the head as validator 0 sees it, polled every 20 ms), the grants per block and the gas per
   grant. The chain's own bound is ``gasLimit / gas per grant`` per block period, reported beside it
   (computed from this run's gas).
2. **Releases**: the gateway as its own process (``bench/gateway.py``, as in ``bench/release.py``) given
   the three validators' RPC URLs (failover order) and the network's manifest, strict mode then batch
   mode, each with records uploaded through its API; K concurrent clients (``bench/load.py``: wrk, or
   the asyncio client) release 10 KB records for a fixed time (``bench.release.one_run``: the same
   measurement, the same ``ledgered == released`` check). Strict releases wait for ``logAccess`` and 3
   confirmations each; their gas per ``logAccess`` gives the chain's bound in the same way. Each run
   also records the gateway's refusals by problem code and the CPU seconds the gateway and the
   validators used (``/proc``), which say what bounded it on this machine. The Hardhat figures of
   ``bench/results/release.json`` (same size and mode) are copied beside them for comparison, with the
   commit they were measured at: they are not of this run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
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

from bench.gateway import (
    HOSPITAL,
    PATIENTS,
    READERS,
    Chain,
    GatewayProcess,
    environment,
    gateway_process,
    login,
    observation_bundle,
    patient_slots,
    signed_in,
    wait_indexed,
)
from bench.load import percentile
from bench.release import Plan, one_run
from node_client._client import ChainClient
from node_client._exceptions import NodeError
from node_client.deploy import Ledger, Manifest
from node_client.keys import dev_account
from node_client.network import Consortium, Network
from node_client.network.geth import GETH_VERSION
from node_client.vocabulary import parse_purposes

ROOT = Path(__file__).resolve().parents[1]
VALIDATORS = 3
SIZE = 10 * 1024
#: dev accounts that grant: the ten demo patients, then five more funded keys (any address can be a
#: patient); grantees need a provider role: hospital, clinic, lab, pharmacy. 15 x 4 distinct pairs.
GRANTERS = (*range(10, 20), 0, 1, 2, 8, 9)
PROVIDERS = (4, 5, 6, 7)
MAX_GRANTS = len(GRANTERS) * len(PROVIDERS)


@dataclass
class NetworkPlan:
    grants: int = 60
    #: (mode, clients) in order; strict runs first, on one gateway, then batch on another
    runs: list[tuple[str, int]] = field(default_factory=lambda: [("strict", 16), ("strict", 64), ("batch", 64)])
    seconds: float = 20.0
    warmup: float = 2.0


def default_plan(*, quick: bool) -> NetworkPlan:
    if quick:
        return NetworkPlan(grants=20, runs=[("strict", 16), ("batch", 16)], seconds=10.0, warmup=2.0)
    return NetworkPlan()


# ---------------------------------------------------------------- the network


def _up(folder: Path, log: Any) -> tuple[Network, Manifest]:
    """A fresh network in ``folder``; a second try in a fresh folder if the first does not agree on a head
    within 120 s (seen once here, before validators waited to be peered before sealing: fcb708f; a free
    port can also be taken by another process between its choice and the node's start). The nodes of a
    failed try are stopped and the tails of their logs shown."""
    for attempt in (1, 2):
        network = Network(folder / f"network-{attempt}", say=lambda m: log(f"network: {m}"))
        try:
            manifest = network.up(
                Consortium.development(VALIDATORS), manifest_path=folder / "manifest.json", timeout=120
            )
            return network, manifest
        except BaseException as exc:
            if isinstance(exc, NodeError):
                for node in network.nodes:
                    log(f"{node.name}'s log ends:\n{node.log_tail(1200)}")
            network.down()
            if attempt == 2 or not isinstance(exc, NodeError):
                raise
            log(f"the network did not come up ({exc}): once more, in a fresh folder")
    raise AssertionError("unreachable")


@contextmanager
def network_chain(folder: Path, *, log: Any = print) -> Iterator[tuple[Network, Chain]]:
    """A fresh 3-validator dev network in ``folder``, deployed; stopped on the way out."""
    network, manifest = _up(folder, log)
    manifest_path = folder / "manifest.json"
    try:
        urls = ",".join(network.urls)
        yield network, Chain(None, ChainClient(rpc_url=urls, timeout=60), manifest, manifest_path, urls)
    finally:
        stopped = network.down()
        log(f"network: stopped {len(stopped)} validator(s)")


class _HeadWatch(threading.Thread):
    """When each block number was first seen at one node (polled every 20 ms)."""

    def __init__(self, client: ChainClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.seen: dict[int, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        last = -1
        while not self.halt.is_set():
            try:
                head = self.client.block_number()
            except Exception:  # noqa: BLE001 - a missed poll is retried 20 ms later
                head = last
            if head > last:
                now = time.perf_counter()
                for b in range(head if last < 0 else last + 1, head + 1):
                    self.seen.setdefault(b, now)
                last = head
            self.halt.wait(0.02)

    def wait_for(self, block: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while block not in self.seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"block {block} not seen within {timeout:.0f}s")
            time.sleep(0.05)


@dataclass
class _Grant:
    patient: int
    grantee: int
    node: int
    t0: float
    t1: float
    block: int
    gas: int


def grant_pairs(n: int) -> list[tuple[int, int]]:
    """The first ``n`` distinct (patient, grantee) pairs, grantee by grantee."""
    pairs = [(p, g) for g in PROVIDERS for p in GRANTERS]
    if not 1 <= n <= len(pairs):
        raise ValueError(f"1 to {len(pairs)} grants (distinct patient/grantee pairs), not {n}")
    return pairs[:n]


def send_grants(network: Network, manifest: Manifest, pairs: list[tuple[int, int]]) -> list[_Grant]:
    """Every pair's grant from its own thread, released together; one client per patient, on validator
    ``i % 3`` for the i-th patient. Raises if any grant failed."""
    patients = list(dict.fromkeys(p for p, _ in pairs))
    ledgers: dict[int, tuple[int, Ledger]] = {}
    for i, p in enumerate(patients):
        node = i % len(network.nodes)
        ledger = manifest.connect(ChainClient(rpc_url=network.nodes[node].url, timeout=60))
        _ = ledger.client.chain_id  # cached before the clock starts
        ledgers[p] = (node, ledger)
    accounts = {i: dev_account(i) for i in {*patients, *(g for _, g in pairs)}}
    now = ledgers[patients[0]][1].client.block_timestamp()
    domain = ledgers[patients[0]][1].consents.domain()
    slots = {p: patient_slots(domain, p, "lab-results,vital-signs") for p in patients}  # each in her slots
    purposes = parse_purposes("treatment")
    barrier = threading.Barrier(len(pairs))
    out: list[_Grant | None] = [None] * len(pairs)
    errors: list[str] = []

    def one(k: int, patient: int, grantee: int) -> None:
        node, ledger = ledgers[patient]
        barrier.wait()
        t0 = time.perf_counter()
        try:
            _, tx = ledger.consents.grant(
                accounts[patient], accounts[grantee].address, slots[patient], purposes, now, now + 365 * 86_400
            )
        except Exception as exc:  # noqa: BLE001 - reported below, with the pair
            errors.append(f"{patient}->{grantee}: {exc!r}")
            return
        out[k] = _Grant(patient, grantee, node, t0, time.perf_counter(), tx.block_number, tx.gas_used)

    threads = [threading.Thread(target=one, args=(k, p, g)) for k, (p, g) in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} grant(s) failed: {'; '.join(errors[:3])}")
    return [g for g in out if g is not None]


def _pcts_ms(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "max_ms": round(ms[-1], 1),
    }


def grant_bench(network: Network, net: Chain, n: int, *, log: Any = print) -> dict[str, Any]:
    confirmations = net.manifest.confirmations
    period = net.manifest.block_period or 1
    watch = _HeadWatch(network.client(0))
    watch.start()
    try:
        pairs = grant_pairs(n)
        grants = send_grants(network, net.manifest, pairs)
        last_block = max(g.block for g in grants)
        watch.wait_for(last_block + confirmations)
    finally:
        watch.halt.set()
        watch.join()
    first, last = min(g.t0 for g in grants), max(g.t1 for g in grants)
    inclusion = [g.t1 - g.t0 for g in grants]
    confirmed = [max(g.t1, watch.seen[g.block + confirmations]) - g.t0 for g in grants]
    per_block = Counter(g.block for g in grants)
    gas = statistics.fmean(g.gas for g in grants)
    gas_limit = int(net.client.rpc(lambda: net.client.w3.eth.get_block(last_block))["gasLimit"])
    per_block_bound = gas_limit // round(gas)
    result = {
        "grants": len(grants),
        "patients": len({g.patient for g in grants}),
        "grantees": len({g.grantee for g in grants}),
        "nodes": len({g.node for g in grants}),
        "seconds": round(last - first, 3),
        "grants_per_s": round(len(grants) / (last - first), 1),
        "inclusion": _pcts_ms(inclusion),
        "confirmations": confirmations,
        "confirmed": _pcts_ms(confirmed),
        "blocks": len(per_block),
        "per_block": [per_block[b] for b in sorted(per_block)],
        "gas_per_grant": round(gas),
        "block_gas_limit": gas_limit,
        "block_period_s": period,
        "gas_bound_grants_per_block": per_block_bound,
        "gas_bound_grants_per_s": round(per_block_bound / period, 1),
    }
    log(
        f"grants: {result['grants']} in {result['seconds']} s ({result['grants_per_s']}/s) over "
        f"{result['blocks']} blocks {result['per_block']}; inclusion p50 {result['inclusion']['p50_ms']} ms, "
        f"{confirmations} confirmations p50 {result['confirmed']['p50_ms']} ms"
    )
    return result


def top_up_grants(network: Network, net: Chain, done: set[tuple[int, int]]) -> int:
    """The grants the release runs need (every record's patient to every reader) not granted yet."""
    missing = [(p, r) for r in READERS for p in PATIENTS if (p, r) not in done]
    if missing:
        send_grants(network, net.manifest, missing)
    return len(missing)


# ---------------------------------------------------------------- releases


def seed(gw: GatewayProcess, size: int) -> list[str]:
    """One record of ``size`` per patient, uploaded by the hospital, the patients' uploads concurrently
    (each waits for its ``registerBatch`` to be mined: about a block)."""

    def one(n: int, patient: int) -> list[str]:
        with signed_in(gw.url, HOSPITAL) as hospital:
            result = hospital.upload(dev_account(patient).address, observation_bundle(size, n))
        return [r["recordId"] for r in result["records"]]

    with ThreadPoolExecutor(len(PATIENTS)) as pool:
        return [rid for ids in pool.map(one, range(len(PATIENTS)), PATIENTS) for rid in ids]


def _strict_chain_load(net: Chain, from_block: int, to_block: int) -> dict[str, Any]:
    """Gas per ``logAccess`` (up to 20 receipts of the run) and the most mined in one block."""
    ledger = net.manifest.connect(net.client)
    logs = ledger.access.contract.events.AccessLogged().get_logs(from_block=from_block, to_block=to_block)
    if not logs:
        return {}
    hashes = list(dict.fromkeys(log["transactionHash"] for log in logs))[:20]
    gas = statistics.fmean(int(net.client.w3.eth.get_transaction_receipt(h)["gasUsed"]) for h in hashes)
    per_block = Counter(int(log["blockNumber"]) for log in logs)
    return {"gas_per_log_access": round(gas), "log_access_per_block_max": max(per_block.values())}


def _refusals(gw: GatewayProcess) -> Counter[str]:
    """The gateway's refused releases so far, by problem code (``hcl_denials_total``)."""
    out: Counter[str] = Counter()
    for line in httpx.get(gw.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("hcl_denials_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="', 1)[1].split('"', 1)[0]] += int(float(value))
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes so far (``/proc/<pid>/stat``), in seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def release_runs(
    network: Network, folder: Path, net: Chain, plan: NetworkPlan, *, log: Any = print
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    # a strict release takes inclusion (~2 blocks) and 3 confirmations: a quiet gateway is one whose
    # release counter stood still for longer than that (releases of one block complete together)
    quiet = (net.manifest.confirmations + 3) * (net.manifest.block_period or 1) + 1.0
    for mode in dict.fromkeys(m for m, _ in plan.runs):
        where = folder / mode
        where.mkdir(parents=True, exist_ok=True)
        with gateway_process(where, net, mode=mode) as gw:
            log(f"{mode}: uploading {len(PATIENTS)} records of {SIZE // 1024} KB")
            records = seed(gw, SIZE)
            wait_indexed(gw, net, timeout=60)
            tokens = [login(gw.url, r) for r in READERS]
            load_plan = Plan([], seconds=plan.seconds, warmup=plan.warmup, quiet=quiet if mode == "strict" else 1.0)
            for clients in (c for m, c in plan.runs if m == mode):
                geth = [n.pid for n in network.nodes if n.pid is not None]
                block0, refused0 = net.client.block_number(), _refusals(gw)
                t0, gw_cpu0, geth_cpu0 = time.monotonic(), _cpu_seconds([gw.process.pid]), _cpu_seconds(geth)
                run = one_run(net, gw, mode, "local", SIZE, records, tokens, clients, load_plan, where)
                run["refused"] = dict(_refusals(gw) - refused0)  # by problem code, warm-up and tail included
                # where the machine's two cores went during the run (warm-up, quiescing and tail included)
                run["cpu"] = {
                    "wall_s": round(time.monotonic() - t0, 1),
                    "gateway_s": round(_cpu_seconds([gw.process.pid]) - gw_cpu0, 1),
                    "geth_s": round(_cpu_seconds(geth) - geth_cpu0, 1),
                }
                if mode == "strict":
                    run.update(_strict_chain_load(net, block0 + 1, net.client.block_number()))
                log(
                    f"{mode} x{clients}: {run['releases_per_s']:.1f}/s p50 {run['p50_ms']} p99 {run['p99_ms']} ms, "
                    f"errors {run['errors']}, ledgered {run['ledgered']} released {run['released']}"
                )
                log(f"{mode} x{clients} CPU: {run['cpu']}")
                if run["refused"]:
                    log(f"{mode} x{clients} refused: {run['refused']}")
                runs.append(run)
    return runs


def hardhat_reference(path: Path = ROOT / "bench" / "results" / "release.json") -> dict[str, Any] | None:
    """The Hardhat runs of the same size and store from the release benchmark's result file (not this run)."""
    if not path.is_file():
        return None
    data = orjson.loads(path.read_bytes())
    keep = ("mode", "clients", "releases_per_s", "p50_ms", "p99_ms")
    runs = [{k: r[k] for k in keep} for r in data["runs"] if r["store"] == "local" and r["size"] == SIZE]
    return {"file": "bench/results/release.json", "commit": data.get("commit"), "runs": runs}


def run_network_bench(plan: NetworkPlan, *, log: Any = print) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hcl-bench-network-") as tmp:
        folder = Path(tmp)
        log(f"starting {VALIDATORS} geth {GETH_VERSION} Clique validators")
        with network_chain(folder, log=log) as (network, net):
            setup = time.monotonic() - started
            log(f"network up and deployed in {setup:.0f} s")
            grants = grant_bench(network, net, plan.grants, log=log)
            topped = top_up_grants(network, net, set(grant_pairs(plan.grants)))
            if topped:
                log(f"{topped} more grants for the release runs (not measured)")
            runs = release_runs(network, folder, net, plan, log=log)
            gas_limit = grants["block_gas_limit"]
            for run in runs:
                if run.get("gas_per_log_access"):
                    bound = gas_limit // run["gas_per_log_access"]
                    run["gas_bound_releases_per_s"] = round(bound / grants["block_period_s"], 1)
            head = net.client.block_number()
            span = 200 if head > 200 else head - 1
            ts = [net.client.block_timestamp(b) for b in (head - span, head)]
    return {
        "network": {
            "validators": VALIDATORS,
            "engine": "clique",
            "geth": GETH_VERSION,
            "block_period_s": grants["block_period_s"],
            "block_interval_s": round((ts[1] - ts[0]) / span, 3),  # the last blocks' timestamps, measured
            "confirmations": grants["confirmations"],
            "block_gas_limit": grants["block_gas_limit"],
            "setup_seconds": round(setup, 1),
        },
        "grants": grants,
        "size": SIZE,
        "seconds": plan.seconds,
        "runs": runs,
        "hardhat_reference": hardhat_reference(),
        "total_seconds": round(time.monotonic() - started, 1),
        **environment(),
    }
