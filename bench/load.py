"""The load generator: a separate process of asyncio clients that request record releases.

    python -m bench.load --url http://127.0.0.1:PORT --plan plan.json --clients 64 --seconds 10

``plan.json`` holds the bearer tokens (one per reading institution; clients share them round-robin, as
the terminals of one hospital would) and the record ids to ask for. Each client loops: pick the next
record, ``GET /v1/records/{id}?purpose=treatment``, read the whole body, time it. Requests that start
in the warm-up are not counted. Prints one JSON object: counts, status codes, latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def _client(
    http: httpx.AsyncClient,
    token: str,
    records: list[str],
    offset: int,
    start: float,
    warm_until: float,
    stop: float,
    latencies: list[float],
    statuses: dict[int, int],
    journal_indexes: list[int],
    totals: dict[str, int],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    i = offset
    while True:
        t0 = time.perf_counter()
        if t0 >= stop:
            return
        rid = records[i % len(records)]
        i += 7
        try:
            r = await http.get(f"/v1/records/{rid}", params={"purpose": "treatment"}, headers=headers)
            status = r.status_code
            body = r.content
        except httpx.HTTPError:
            status, body = 599, b""
        t1 = time.perf_counter()
        totals["requests"] += 1
        totals["released"] += status == 200
        if t0 >= warm_until:
            latencies.append((t1 - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                ledger = orjson.loads(body).get("ledger", {})
                if "journalIndex" in ledger:
                    journal_indexes.append(ledger["journalIndex"])


async def run(
    url: str, tokens: list[str], records: list[str], clients: int, seconds: float, warmup: float
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    journal_indexes: list[int] = []
    totals = {"requests": 0, "released": 0}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        start = time.perf_counter()
        warm_until = start + warmup
        stop = warm_until + seconds
        await asyncio.gather(
            *(
                _client(
                    http,
                    tokens[c % len(tokens)],
                    records,
                    c,
                    start,
                    warm_until,
                    stop,
                    latencies,
                    statuses,
                    journal_indexes,
                    totals,
                )
                for c in range(clients)
            )
        )
        measured = time.perf_counter() - warm_until
    latencies.sort()
    released = statuses.get(200, 0)
    return {
        "clients": clients,
        "seconds": round(measured, 3),
        "requests": len(latencies),
        "released": released,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": len(latencies) - released,
        "releases_per_s": round(released / measured, 1) if measured > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "requests_total": totals["requests"],
        "released_total": totals["released"],
        "journal_index_max": max(journal_indexes) if journal_indexes else None,
        "driver": "httpx",
    }


def run_wrk(
    url: str, tokens: list[str], records: list[str], clients: int, seconds: float, warmup: float, folder: Path
) -> dict[str, Any]:
    """The same measurement with wrk (C, a few % of a core instead of a whole one): warm-up, then the run."""
    plan = folder / "plan.txt"
    plan.write_text("".join(f"token {t}\n" for t in tokens) + "".join(f"record {r}\n" for r in records))
    threads = max(1, min(clients, len(tokens)))
    script = Path(__file__).with_name("release.lua")

    def wrk(duration: float) -> dict[str, Any]:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(clients),
                "-d",
                f"{max(1, round(duration))}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                url,
                "--",
                str(plan),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return orjson.loads(out.stdout.strip().splitlines()[-1])

    warm = (
        wrk(warmup) if warmup > 0 else {"requests": 0, "status": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    run = wrk(seconds)

    def failed(r: dict[str, Any]) -> int:
        return int(r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"])

    measured = run["duration_us"] / 1e6
    released = run["requests"] - failed(run)
    return {
        "clients": clients,
        "seconds": round(measured, 3),
        "requests": run["requests"],
        "released": released,
        "statuses": {"non_2xx": run["status"], "socket_errors": failed(run) - run["status"]},
        "errors": failed(run),
        "releases_per_s": round(released / measured, 1) if measured else 0.0,
        "p50_ms": round(run["p50_us"] / 1000, 2),
        "p95_ms": round(run["p95_us"] / 1000, 2),
        "p99_ms": round(run["p99_us"] / 1000, 2),
        "max_ms": round(run["max_us"] / 1000, 2),
        "requests_total": run["requests"] + warm["requests"],
        "released_total": released + warm["requests"] - failed(warm),
        "driver": "wrk",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True, help="JSON file: {tokens: [...], records: [...]}")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--driver", choices=("httpx", "wrk"), default="httpx")
    args = parser.parse_args(argv)
    with open(args.plan, "rb") as fh:
        plan = orjson.loads(fh.read())
    if args.driver == "wrk":
        result = run_wrk(
            args.url, plan["tokens"], plan["records"], args.clients, args.seconds, args.warmup, Path(args.plan).parent
        )
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, plan["tokens"], plan["records"], args.clients, args.seconds, args.warmup))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
