"""Journal cost over time (issue 21): a whole gateway's start-up, RSS and first pages on a generated journal.

``./scripts/bench growth --part journal`` (:func:`run_journal_bench`): for each size a journal is
generated (:func:`journal_file`, kept under a scratch directory and reused by later runs: about 40 s per
million entries), then a whole ``hcl gateway serve`` (batch mode, one Hardhat chain for all sizes) is
started on a copy of it, twice (:func:`gateway_point`): seconds from launch to ``/healthz`` 200, peak RSS
then, the patient's first ``GET /v1/me/access-log`` page and one inclusion proof (``GET
/v1/accesses/{i}/proof`` once anchored), each a few times (p50).

By hand: ``python -m bench.journal_growth generate <db> <entries> [heavy_every]`` writes a journal with
whichever gateway code is importable (main's tree on PYTHONPATH: a file of main's schema); ``... measure
<db>`` opens it in this process and prints open seconds, RSS, a patient's first pages and a proof;
``... gateway <db> [code dir]`` prints :func:`gateway_point` of a gateway run from ``code dir`` (default
this checkout). Numbers: docs/performance.md, "Bounded growth".
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from eth_utils import to_checksum_address

from bench.gateway import Chain, chain, environment, gateway_process, login, timed
from gateway.ledger.journal import SEGMENT_ENTRIES, Journal, JournalEntry
from gateway.ledger.journal_index import JournalIndex
from gateway.ledger.segments import segment_path
from node_client.keys import dev_account

__all__ = ["gateway_point", "generate", "journal_file", "run_journal_bench"]

PATIENTS, REQUESTERS, CHUNK = 8000, 20, 20_000
#: every this many entries is dev account 10's: a patient with a long history who can sign in
HEAVY_EVERY = 8
HEAVY = 10
#: where generated journals are kept between runs (never in the repository): ``HCL_BENCH_SCRATCH``
SCRATCH = Path(os.environ.get("HCL_BENCH_SCRATCH", Path(tempfile.gettempdir()) / "hcl-bench-growth"))
GOALS = {"healthz_s": 5, "peak_rss_mb": 300, "access_log_ms": 50, "at_entries": 10_000_000}


def _address(label: bytes) -> str:
    return str(to_checksum_address("0x" + hashlib.sha256(label).hexdigest()[:40]))


def generate(path: Path, n: int, heavy_every: int = 0, *, segment_entries: int = SEGMENT_ENTRIES) -> None:
    """``n`` entries in batches of ``CHUNK``: spread over ``PATIENTS`` patients, 10 ms apart; with
    ``heavy_every`` k, every k-th one is dev account ``HEAVY``'s (a patient who can sign in)."""
    patients = [_address(b"p%d" % i) for i in range(PATIENTS)]
    heavy = dev_account(HEAVY).address
    requesters = [_address(b"r%d" % i) for i in range(REQUESTERS)]
    with Journal(path, segment_entries=segment_entries) as j:
        for start in range(0, n, CHUNK):
            batch = []
            for i in range(start, min(n, start + CHUNK)):
                h = hashlib.sha256(b"%d" % i).digest()
                patient = heavy if heavy_every and i % heavy_every == 0 else patients[(i * 7919) % PATIENTS]
                batch.append(
                    JournalEntry(
                        requesters[i % REQUESTERS],
                        patient,
                        h,
                        1 + i % 5,
                        h,
                        False,
                        hashlib.sha256(h).digest(),
                        1_750_000_000_000 + i * 10,
                    )
                )
            j.append_many(batch)


def journal_file(n: int, scratch: Path = SCRATCH, log: Callable[[str], None] = print) -> Path:
    """A generated ``n``-entry journal under ``scratch`` (made once; a ``complete`` file marks it whole,
    so an interrupted generation is made again)."""
    folder = scratch / f"journal-{n}"
    path = folder / "journal.db"
    if (folder / "complete").exists():
        return path
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    generate(path, n, HEAVY_EVERY)
    (folder / "complete").write_text(f"{time.perf_counter() - started:.1f} s\n")
    log(f"generated {n:,} entries in {time.perf_counter() - started:.0f} s: {folder}")
    return path


def copy_journal(journal: Path, data_dir: Path) -> int:
    """``journal`` (the open database, copied) and its sealed segments (immutable: hard-linked) into
    ``data_dir``; their bytes in all."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(journal, data_dir / journal.name)
    total = journal.stat().st_size
    seq = 1
    while (sealed := segment_path(journal, seq)).exists():
        try:
            os.link(sealed, data_dir / sealed.name)
        except OSError:  # another file system
            shutil.copy(sealed, data_dir / sealed.name)
        total += sealed.stat().st_size
        seq += 1
    return total


def gateway_point(
    net: Chain, folder: Path, journal: Path, *, starts: int = 2, repeats: int = 9, code: Path | None = None
) -> dict[str, Any]:
    """A whole gateway on a copy of ``journal``, started ``starts`` times on the same data directory: each
    start's seconds to ``/healthz`` 200 and peak RSS; on the last, the heavy patient's first access-log
    page and an inclusion proof of one of its entries (p50 of ``repeats``), and the peak RSS after them."""
    data_dir = folder / "gateway-batch-local"
    shutil.rmtree(data_dir, ignore_errors=True)
    point: dict[str, Any] = {"journal_mb": round(copy_journal(journal, data_dir) / 1e6, 1), "starts": []}
    env = {"PYTHONPATH": str(code)} if code else None
    for n in range(starts):
        t0 = time.perf_counter()
        with gateway_process(folder, net, extra_env=env) as gw:
            point["starts"].append(
                {"healthz_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(gw.peak_rss_mb(), 1)}
            )
            if n == starts - 1:
                point["entries"] = httpx.get(gw.url + "/healthz", timeout=30).json()["checks"]["journal"]["size"]
                point.update(_pages(gw.url, point["entries"], repeats))
                point["peak_rss_after_mb"] = round(gw.peak_rss_mb(), 1)
    point["healthz_s"] = max(s["healthz_s"] for s in point["starts"])
    point["peak_rss_mb"] = max(s["peak_rss_mb"] for s in point["starts"])
    return point


def _pages(url: str, size: int, repeats: int) -> dict[str, Any]:
    """The heavy patient's first access-log page and a proof of its entry a third of the way in."""
    auth = {"Authorization": f"Bearer {login(url, HEAVY)}"}
    with httpx.Client(base_url=url, headers=auth, timeout=120) as http:
        deadline = time.monotonic() + 60
        while (first := http.get("/v1/me/access-log")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)  # the read model catching up: not what is measured
        first.raise_for_status()
        p50, times, page = timed(lambda: http.get("/v1/me/access-log"), repeats)
        idx = size // 3 // HEAVY_EVERY * HEAVY_EVERY
        deadline = time.monotonic() + 60
        while (proof := http.get(f"/v1/accesses/{idx}/proof")).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.5)  # until the anchorer has anchored the journal
        proof_p50, proof_times, proof = timed(lambda: http.get(f"/v1/accesses/{idx}/proof"), repeats)
    return {
        "access_log_ms": p50,
        "access_log_times_ms": times,
        "access_log_entries": len(page.json()["accesses"]),
        "proof_ms": proof_p50,
        "proof_times_ms": proof_times,
        "proof_status": proof.status_code,
    }


def run_journal_bench(
    sizes: Sequence[int], *, starts: int = 2, scratch: Path = SCRATCH, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The curve: a :func:`gateway_point` per journal size, all on one Hardhat chain."""
    points = []
    with tempfile.TemporaryDirectory(prefix="hcl-journal-growth-") as tmp, chain(Path(tmp)) as net:
        for n in sizes:
            journal = journal_file(n, scratch, log)
            point = {"size": n, **gateway_point(net, Path(tmp), journal, starts=starts)}
            log(f"  {point}")
            points.append(point)
    return {
        "part": "journal",
        "scratch": str(scratch),
        "heavy_every": HEAVY_EVERY,
        "environment": environment(),
        "goals": GOALS,
        "points": points,
    }


def _mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measure(path: Path) -> None:
    """Open ``path`` in this process: open seconds, RSS, one patient's first two pages, one proof."""
    patient = _address(b"p17")
    before = _mb()
    t0 = time.perf_counter()
    j = Journal(path)
    opened = time.perf_counter() - t0
    after_open = _mb()
    index = JournalIndex(j)
    pages = []
    for _ in range(2):
        t0 = time.perf_counter()
        list(index.page_of(patient, limit=50))
        pages.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    j.inclusion_proof(j.size // 3)
    proof = (time.perf_counter() - t0) * 1000
    print(
        f"size={j.size} open_s={opened:.2f} rss_mb={before}->{after_open} peak_rss_mb={_mb()}"
        f" first_page_ms={pages[0]:.1f} second_page_ms={pages[1]:.1f} proof_ms={proof:.2f}"
    )
    j.close()


def _gateway_by_hand(journal: Path, code: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="hcl-journal-growth-") as tmp, chain(Path(tmp)) as net:
        print(gateway_point(net, Path(tmp), journal, code=code))


if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"]:
        generate(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif sys.argv[1:2] == ["measure"]:
        measure(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["gateway"]:
        _gateway_by_hand(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
    else:
        sys.exit(__doc__)
