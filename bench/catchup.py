"""Catch-up benchmark: how a fresh read model's cost grows with the chain (issue 21, "bounded cost over time").

One Hardhat chain grows in steps of consent grants (``per_block`` to a block, from funded fresh patients
to the dev consortium's providers, pre-signed and sent in JSON-RPC batches so the chain is built in
seconds, not minutes). After each step:

* a fresh read model is indexed from the deployment block in a separate process, the way a gateway
  started on an empty data directory does (events/s, and that process's peak RSS, imports included);
* a gateway process (``hcl gateway serve`` on an empty data directory) is timed from launch to the
  first answer of ``/healthz`` (any status) and to its read model caught up, with its peak RSS then.

``code`` points both at another checkout (``--code /work/main``: the numbers before a change).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector

from bench.gateway import Chain, chain, environment
from node_client._client import ChainClient
from node_client._node import free_port
from node_client.blinding import category_key, sign_category_key
from node_client.deploy import Manifest
from node_client.keys import dev_account
from node_client.vocabulary import parse_categories, parse_purposes

__all__ = ["grow", "run_catchup_bench"]

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = (4, 5, 6, 7)  # the dev consortium's hospital, clinic, lab, pharmacy (grantees must be providers)
_GRANT = function_signature_to_4byte_selector("grant(address,uint16,uint8,uint40,uint40)")

#: indexes a fresh read model from the deployment block (run with the checkout under test first on sys.path)
_PROBE = """
import json, resource, sys, time
from pathlib import Path
from gateway.ledger.indexer import Indexer
from gateway.storage.db import Database
from node_client._client import ChainClient
from node_client.deploy import Manifest
manifest = Manifest.load(Path(sys.argv[2]))
ledger = manifest.connect(ChainClient(rpc_url=sys.argv[1]))
indexer = Indexer(ledger, Database(Path(sys.argv[3])), deploy_block=manifest.deploy_block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
events = indexer.poll_once()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "events": events, "rss_before_mb": before, "peak_rss_mb": peak}))
"""


def _rpc_batch(url: str, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    answers = httpx.post(url, json=body, timeout=120).json()
    errors = [a["error"] for a in answers if "error" in a]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(calls)} calls failed, e.g. {errors[0]}")
    return [a["result"] for a in sorted(answers, key=lambda a: a["id"])]


def grow(
    client: ChainClient, manifest: Manifest, consents: int, *, per_block: int = 25, patients: int = 500, seed: int = 0
) -> None:
    """``consents`` more grants on a Hardhat chain, ``per_block`` to a block (automine off meanwhile)."""
    url, chain_id = client.rpc_url, client.chain_id
    keys = [Account.from_key((seed * 1_000_003 + i + 1).to_bytes(32, "big")) for i in range(patients)]
    _rpc_batch(url, [("hardhat_setBalance", [k.address, hex(10**24)]) for k in keys])
    nonces = _rpc_batch(url, [("eth_getTransactionCount", [k.address, "latest"]) for k in keys])
    next_nonce = [int(n, 16) for n in nonces]
    now = client.block_timestamp()
    domain = manifest.connect(client).consents.domain()
    lab = parse_categories("lab-results,vital-signs")
    slots = [category_key(domain, k.address, sign_category_key(k, domain)).slots(lab) for k in keys]  # hers
    purposes = parse_purposes("treatment")
    providers = [dev_account(i).address for i in PROVIDERS]
    _rpc_batch(url, [("evm_setAutomine", [False])])
    try:
        for first in range(0, consents, per_block):
            raw = []
            for n in range(first, min(consents, first + per_block)):
                k = n % patients
                data = _GRANT + abi_encode(
                    ["address", "uint16", "uint8", "uint40", "uint40"],
                    [providers[n // patients % len(providers)], slots[k], purposes, now - 60, now + 10**8],
                )
                tx = {"to": manifest.contracts["ConsentRegistry"], "data": data, "gas": 300_000, "value": 0,
                      "nonce": next_nonce[k], "chainId": chain_id, "maxFeePerGas": 10**11,
                      "maxPriorityFeePerGas": 10**9}  # fmt: skip
                next_nonce[k] += 1
                raw.append(("eth_sendRawTransaction", ["0x" + keys[k].sign_transaction(tx).raw_transaction.hex()]))
            _rpc_batch(url, raw)
            _rpc_batch(url, [("evm_mine", [])])
    finally:
        _rpc_batch(url, [("evm_setAutomine", [True])])


def catch_up(net: Chain, folder: Path, code: Path) -> dict[str, Any]:
    """A fresh read model indexed from the deployment block by the indexer of ``code`` (a process of its own)."""
    db = folder / f"probe-{time.monotonic_ns()}.sqlite"
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, net.rpc_url, str(net.manifest_path), str(db)],
        env=env, cwd=code, capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["events_per_s"] = round(result["events"] / result["seconds"]) if result["seconds"] else None
    return result


def fresh_gateway(net: Chain, folder: Path, code: Path, timeout: float = 600) -> dict[str, float]:
    """``hcl gateway serve`` of ``code`` on an empty data dir: seconds from launch to its first ``/healthz``
    and to its read model caught up (``catchingUp`` false; a gateway without the flag caught up before it
    answered), and the process's peak RSS by then."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "HCL_RPC_URL": net.rpc_url,
        "HCL_MANIFEST": str(net.manifest_path),
        "HCL_DATA_DIR": str(folder / f"gw-{time.monotonic_ns()}"),
        "HCL_GATEWAY_DEV_ACCOUNT": "3",
        "HCL_HOST": "127.0.0.1",
        "HCL_PORT": str(port),
        "HCL_LOG_LEVEL": "WARNING",
    }
    hcl = str(Path(sys.executable).with_name("hcl"))
    started = time.monotonic()
    proc = subprocess.Popen([hcl, "gateway", "serve"], env=env, cwd=code, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    first: float | None = None
    try:
        while time.monotonic() - started < timeout and proc.poll() is None:
            try:
                indexer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["checks"]["indexer"]
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            first = first if first is not None else round(time.monotonic() - started, 2)
            if not indexer.get("catchingUp", False):
                return {
                    "first_healthz_s": first,
                    "gateway_caught_up_s": round(time.monotonic() - started, 2),
                    "gateway_peak_rss_mb": _peak_rss_mb(proc.pid),
                }
            time.sleep(0.05)
        raise RuntimeError("the gateway did not answer /healthz or did not catch up")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def run_catchup_bench(
    *,
    steps: Sequence[int],
    per_block: int = 25,
    codes: Mapping[str, Path] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The curve: after each step of grants, a fresh catch-up and a fresh gateway's first ``/healthz``, by
    each of ``codes`` (label → checkout; default this one) on the same chain."""
    codes = codes or {"this": ROOT}
    points = []
    with tempfile.TemporaryDirectory(prefix="hcl-catchup-") as tmp, chain(Path(tmp)) as net:
        total = 0
        for i, step in enumerate(steps):
            started = time.monotonic()
            grow(net.client, net.manifest, step, per_block=per_block, seed=i)
            total += step
            log(f"{total:,} grants on the chain ({time.monotonic() - started:.0f} s to mine); catching up")
            for label, code in codes.items():
                point = {"code": label, "consents": total, "blocks": net.client.block_number()}
                point.update(catch_up(net, Path(tmp), code))
                point.update(fresh_gateway(net, Path(tmp), code))
                log(f"  {point}")
                points.append(point)
    return {
        "part": "catchup",
        "codes": {label: str(code) for label, code in codes.items()},
        "per_block": per_block,
        "environment": environment(),
        "goals": {"events_per_s": 10_000, "peak_rss_mb": 200, "first_healthz_s": 5},
        "points": points,
    }
