"""``./scripts/bench consent``: how fast a consent decision is, and how soon a revocation bites.

1. **Decision latency**, in the gateway's own code: :meth:`AccessPolicy.require` answered from the synced
   read model (``offline=True``: a *yes* only from the cache) against ``ConsentRegistry.check`` by
   ``eth_call`` on the Hardhat node, N times each, same (patient, institution, category, purpose).
2. **Revocation to refusal**, end to end: a gateway process in batch mode, an institution reading a
   record in a tight loop; the patient revokes (a real transaction); the delay is from the block that
   mined the revocation (its receipt) to the first refusal, and the releases in between are counted
   (they are allowed: the gateway had not seen the block yet — that window is what this measures).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from bench.gateway import (
    Chain,
    chain,
    environment,
    gateway_process,
    grant_all,
    patient_key,
    patient_slots,
    seed_records,
    signed_in,
    wait_indexed,
)
from node_client._exceptions import GatewayProblem
from node_client.deploy import Ledger
from node_client.gateway_client import GatewayClient
from node_client.keys import dev_account
from node_client.vocabulary import Category, Purpose, parse_purposes

GOAL_P99_MS = 1.0


def _pcts(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def p(q: float) -> float:
        return round(values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))], 4)

    return {"p50_ms": p(50), "p95_ms": p(95), "p99_ms": p(99), "mean_ms": round(statistics.fmean(values), 4)}


def decision_latency(folder: Path, net: Chain, n: int) -> dict[str, Any]:
    from gateway.settings import GatewaySettings
    from gateway.wiring import build_components

    settings = GatewaySettings(
        rpc_url=net.rpc_url,
        manifest=net.manifest_path,
        data_dir=folder / "decisions",
        gateway_dev_account=3,
        ledger_mode="batch",
        log_level="WARNING",
        indexer_poll=0.1,
    )
    c = build_components(settings)
    c.start()
    try:
        deadline = time.monotonic() + 30
        while not c.policy.cache_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the read model did not sync")
            time.sleep(0.05)
        patient, reader = dev_account(10).address, dev_account(5).address
        # the policy and the contract compare slots: lab results' slot of this patient
        cat, pur = patient_key(c.ledger.consents.domain(), 10).slot(Category.LAB_RESULTS), int(Purpose.TREATMENT)
        cached: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            d = c.policy.require(patient, reader, cat, pur, offline=True)
            cached.append((time.perf_counter() - t0) * 1000)
            assert d.allowed and d.source == "cache"
        chained: list[float] = []
        for _ in range(max(200, n // 10)):
            t0 = time.perf_counter()
            r = c.ledger.consents.check(patient, reader, cat, pur)
            chained.append((time.perf_counter() - t0) * 1000)
            assert r.allowed
        return {"cache": {"n": len(cached), **_pcts(cached)}, "eth_call": {"n": len(chained), **_pcts(chained)}}
    finally:
        c.stop()


def _released(reader: GatewayClient, record_id: str) -> bool:
    """One read: True if released, False if refused by consent (403)."""
    try:
        reader.release(record_id, "treatment")
    except GatewayProblem as exc:
        if exc.status != 403:
            raise
        return False
    return True


def _revoke(ledger: Ledger, patient: LocalAccount, reader: str, mined_at: list[float], done: threading.Event) -> None:
    """The patient's revocation (a real transaction); notes when its receipt came back."""
    ledger.consents.revoke(patient, reader)
    mined_at.append(time.monotonic())
    done.set()


def revocation_delay(folder: Path, net: Chain, trials: int) -> dict[str, Any]:
    ledger = net.manifest.connect(net.client)
    patient = dev_account(11)
    slots = patient_slots(ledger.consents.domain(), 11, "lab-results,vital-signs")
    reader = 6  # the lab
    results = []
    with gateway_process(folder, net, mode="batch") as gw:
        records = seed_records(gw, (1024,))  # one record per patient, in PATIENTS order: dev 11 is the second
        target = records[1024][1]
        with signed_in(gw.url, reader, timeout=30) as lab:
            for _ in range(trials):
                now = net.client.block_timestamp()
                ledger.consents.grant(
                    patient,
                    dev_account(reader).address,
                    slots,
                    parse_purposes("treatment"),
                    now,
                    now + 86_400,
                )
                wait_indexed(gw, net)
                assert _released(lab, target)
                mined_at: list[float] = []
                done = threading.Event()
                releases_after, refused_at = 0, None
                t = threading.Thread(
                    target=_revoke, args=(ledger, patient, dev_account(reader).address, mined_at, done)
                )
                t.start()
                while refused_at is None:
                    released = _released(lab, target)
                    now_m = time.monotonic()
                    if not released:
                        refused_at = now_m
                    elif done.is_set():
                        releases_after += 1
                t.join()
                results.append(
                    {"delay_ms": round((refused_at - mined_at[0]) * 1000, 1), "releases_after_mined": releases_after}
                )
    delays = [r["delay_ms"] for r in results]
    return {
        "trials": results,
        "delay_ms_median": statistics.median(delays),
        "delay_ms_max": max(delays),
        "indexer_poll_s": 0.25,
    }


def run_consent_bench(*, quick: bool, log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hcl-bench-consent-") as tmp:
        folder = Path(tmp)
        with chain(folder) as net:
            grant_all(net)
            log("decision latency: read model vs eth_call")
            latency = decision_latency(folder, net, 2_000 if quick else 20_000)
            log("revocation to refusal, end to end")
            revocation = revocation_delay(folder, net, 3 if quick else 10)
    return {"decision": latency, "revocation": revocation, "goals": {"cache_p99_ms": GOAL_P99_MS}, **environment()}
