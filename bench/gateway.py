"""What the gateway benchmarks share: a real chain, a real gateway *process*, a realistic dataset.

* :func:`chain` starts a Hardhat node on a free port and deploys the dev consortium (``deploy_dev``);
  a :class:`Chain` may also be a chain this module did not start (``node`` None, ``rpc_url`` listing its
  nodes: ``bench/network.py``'s geth validators).
* :func:`gateway_process` runs ``hcl gateway serve`` as its own process (settings through ``HCL_*``
  variables, as an operator would), so the load generator never shares its CPU time or GIL.
* :func:`seed` uploads FHIR records of a given size through the API (the real upload path: validation,
  encryption, storage, on-chain registration) and has the patients grant the reading institutions.

Nothing here is mocked; the numbers are for this machine, loopback only.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from node_client._client import ChainClient
from node_client._node import HardhatNode, free_port
from node_client.blinding import CategoryKey, category_key, sign_category_key
from node_client.deploy import Manifest, deploy_dev
from node_client.gateway_client import GatewayClient
from node_client.keys import dev_account
from node_client.signing import Domain
from node_client.vocabulary import parse_categories, parse_purposes

ROOT = Path(__file__).resolve().parents[1]
HOSPITAL = 4
READERS = (4, 5, 6, 7)  # hospital, clinic, lab, pharmacy: the institutions that read in the runs
PATIENTS = tuple(range(10, 18))


def environment() -> dict[str, Any]:
    """What every result records: the commit, the machine, the interpreter."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "commit": commit,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class Chain:
    node: HardhatNode | None  # None: a chain started elsewhere (a geth network)
    client: ChainClient
    manifest: Manifest
    manifest_path: Path
    rpc_url: str  # what a gateway is given: one node, or several comma-separated (failover order)


@contextmanager
def chain(folder: Path) -> Iterator[Chain]:
    node = HardhatNode(log_path=folder / "hardhat.log").start(port=free_port())
    try:
        client = ChainClient(rpc_url=node.url)
        manifest = deploy_dev(client)
        path = folder / "manifest.json"
        manifest.save(path)
        yield Chain(node, client, manifest, path, node.url)
    finally:
        node.stop()


def patient_key(domain: Domain, patient: int) -> CategoryKey:
    """Dev account ``patient``'s category key (what her wallet makes from her CategoryKeyRequest)."""
    account = dev_account(patient)
    return category_key(domain, account.address, sign_category_key(account, domain))


def patient_slots(domain: Domain, patient: int, categories: str) -> int:
    """``categories`` (slugs) as dev account ``patient``'s on-chain slot mask: what her consents carry."""
    return patient_key(domain, patient).slots(parse_categories(categories))


def enrol(url: str, domain: Domain, patients: Iterable[int], *, by: int = HOSPITAL) -> None:
    """Each patient's category key handed to the gateway at ``url`` (her signed request, submitted by the
    institution ``by``): before it, the gateway files only emergency-safe records of hers. Not measured."""
    with signed_in(url, by, timeout=30) as gw:
        for p in patients:
            gw.enrol_category_key(dev_account(p).address, sign_category_key(dev_account(p), domain))


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def peak_rss_mb(self) -> float:
        """Peak resident set size of the gateway's processes so far (the sum of each one's VmHWM: a primary's
        and its workers' with ``HCL_WORKERS`` > 1), in MB."""
        return sum(self.peak_rss_each_mb()) or float("nan")

    def peak_rss_each_mb(self) -> list[float]:
        """Each process's VmHWM in MB: the first is the gateway (or the primary), then its workers."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        each = []
        for p in [pid, *map(int, children)]:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    each.append(round(int(line.split()[1]) / 1024, 1))
        return each

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of a Prometheus counter's samples matching ``labels`` (a substring), from /metrics."""
        total = 0.0
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line.startswith(name) and not line.startswith(name + "_created") and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


def wait_healthy(url: str, proc: subprocess.Popen[bytes], *, timeout: float, what: str, poll: float = 0.1) -> None:
    """Until ``url``'s ``/healthz`` answers 200; ``RuntimeError(what)`` if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(what)
        time.sleep(poll)


@contextmanager
def gateway_process(
    folder: Path,
    net: Chain,
    *,
    mode: str = "batch",
    store: str = "local",
    ipfs_api: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    port = free_port()
    data_dir = folder / f"gateway-{mode}-{store}"
    env = {
        **os.environ,
        "HCL_RPC_URL": net.rpc_url,
        "HCL_MANIFEST": str(net.manifest_path),
        "HCL_DATA_DIR": str(data_dir),
        "HCL_GATEWAY_DEV_ACCOUNT": "3",
        "HCL_LEDGER_MODE": mode,
        "HCL_STORE": store,
        "HCL_HOST": "127.0.0.1",
        "HCL_PORT": str(port),
        "HCL_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    if ipfs_api:
        env["HCL_IPFS_API"] = ipfs_api
    hcl = str(Path(sys.executable).with_name("hcl"))
    log = (folder / f"gateway-{mode}-{store}.log").open("wb")
    proc = subprocess.Popen([hcl, "gateway", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=90, what=f"the gateway did not start; see {log.name}", poll=0.2)
        enrol(url, net.manifest.connect(net.client).consents.domain(), PATIENTS)
        yield GatewayProcess(url, proc, data_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def timed(call: Callable[[], httpx.Response], repeats: int) -> tuple[float, list[float], httpx.Response]:
    """``call`` made ``repeats`` times: the median and every time in ms, and the last response."""
    times, r = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = call()
        times.append(round((time.perf_counter() - t0) * 1000, 2))
    assert r is not None
    return statistics.median(times), times, r


def signed_in(url: str, index: int, *, timeout: float = 120) -> GatewayClient:
    """A gateway client signed in as dev account ``index`` (SIWE, signed locally)."""
    gw = GatewayClient(url, timeout=timeout)
    gw.sign_in(dev_account(index))
    return gw


def login(url: str, index: int) -> str:
    """A bearer token for dev account ``index``, for load generators in other processes (wrk, bench.load)."""
    with GatewayClient(url, timeout=30) as gw:
        return gw.sign_in(dev_account(index))


def observation_bundle(size: int, serial: int, *, resources: int = 1) -> bytes:
    """A FHIR Bundle of ``resources`` laboratory Observations (HbA1c), padded to about ``size`` bytes."""
    entries = []
    for r in range(resources):
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"bench-{serial}-{r}",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {
                        "coding": [
                            {
                                "system": "http://loinc.org",
                                "code": "4548-4",
                                "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
                            }
                        ]
                    },
                    "effectiveDateTime": f"2026-{1 + serial % 12:02d}-{1 + r % 28:02d}T08:00:00Z",
                    "valueQuantity": {
                        "value": 5.0 + (serial % 30) / 10,
                        "unit": "%",
                        "system": "http://unitsofmeasure.org",
                        "code": "%",
                    },
                }
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    base = len(orjson.dumps(bundle))
    if size > base + 64:
        note = "x" * (size - base - 40)
        entries[0]["resource"]["note"] = [{"text": note}]
    return orjson.dumps(bundle)


def grant_all(net: Chain, readers: tuple[int, ...] = READERS, categories: str = "lab-results,vital-signs") -> None:
    """Every demo patient lets every reader see ``categories`` for treatment, for a year (signed by the
    patient, in her slots)."""
    ledger = net.manifest.connect(net.client)
    domain = ledger.consents.domain()
    now = net.client.block_timestamp()
    for p in PATIENTS:
        slots = patient_slots(domain, p, categories)
        for r in readers:
            ledger.consents.grant(
                dev_account(p),
                dev_account(r).address,
                slots,
                parse_purposes("treatment"),
                now,
                now + 365 * 86_400,
            )


def seed_records(gw: GatewayProcess, sizes: tuple[int, ...]) -> dict[int, list[str]]:
    """One record of each size per patient, uploaded by the hospital: size -> record ids."""
    out: dict[int, list[str]] = {}
    with signed_in(gw.url, HOSPITAL) as hospital:
        for size in sizes:
            for n, p in enumerate(PATIENTS):
                result = hospital.upload(dev_account(p).address, observation_bundle(size, n))
                out.setdefault(size, []).extend(r["recordId"] for r in result["records"])
    return out


def wait_indexed(gw: GatewayProcess, net: Chain, timeout: float = 30) -> None:
    head = net.client.block_number()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(gw.url + "/healthz", timeout=10).json()
        indexer = health.get("indexer") or health.get("checks", {}).get("indexer") or {}
        if int(indexer.get("indexedBlock", indexer.get("indexed_block", -1))) >= head:
            return
        time.sleep(0.2)
    raise RuntimeError("the gateway's indexer did not catch up")
