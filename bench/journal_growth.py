"""Journal cost over time (issue 21): open time, RSS and a patient's first page on a generated journal.

``python -m bench.journal_growth generate <db> <entries>`` writes a journal with whichever gateway code is
importable (run it with main's tree on PYTHONPATH to get a schema 1 file); ``... measure <db>`` opens it
and prints one line: open seconds, RSS before/after, first and second page of one patient's newest 50
entries, one inclusion proof. Run each measurement in a fresh process (peak RSS is the process's).
``... startup <db> <code dir> <label>`` starts a whole gateway process (batch mode, Hardhat chain) twice on a
copy of the journal, with ``<code dir>`` as its PYTHONPATH, and prints its time to healthy and peak RSS;
``... generate <db> 1000000 8`` makes every 8th entry dev account 10's, and ``... accesslog <db> <code dir>
<label>`` then times that patient's ``GET /v1/me/access-log`` on a whole gateway.
Numbers: docs/performance.md, "Bounded growth".
"""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from gateway.ledger.journal import Journal, JournalEntry
from gateway.ledger.journal_index import JournalIndex
from node_client.keys import dev_account

PATIENTS, REQUESTERS, CHUNK = 8000, 20, 20_000


def _address(label: bytes) -> str:
    return str(to_checksum_address("0x" + hashlib.sha256(label).hexdigest()[:40]))


def generate(path: Path, n: int, heavy_every: int = 0) -> None:
    """``n`` entries in batches of ``CHUNK``: spread over ``PATIENTS`` patients, 10 ms apart; with
    ``heavy_every`` k, every k-th one is dev account 10's (a patient who can sign in: ``accesslog``)."""
    patients = [_address(b"p%d" % i) for i in range(PATIENTS)]
    heavy = dev_account(10).address
    requesters = [_address(b"r%d" % i) for i in range(REQUESTERS)]
    t0 = time.perf_counter()
    with Journal(path) as j:
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
    print(f"generated {n} entries in {time.perf_counter() - t0:.1f} s")


def _page(index: Any, patient: str) -> list[Any]:
    if hasattr(index, "page_of"):  # this tree
        return list(index.page_of(patient, limit=50))
    return list(index.entries_of(patient))[-50:]  # before: the in-memory index, caught up on first use


def _mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measure(path: Path) -> None:
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
        _page(index, patient)
        pages.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    j.inclusion_proof(j.size // 3)
    proof = (time.perf_counter() - t0) * 1000
    print(
        f"size={j.size} open_s={opened:.2f} rss_mb={before}->{after_open} peak_rss_mb={_mb()}"
        f" first_page_ms={pages[0]:.1f} second_page_ms={pages[1]:.1f} proof_ms={proof:.2f}"
    )
    j.close()


def startup(journal: Path, code: str, label: str) -> None:
    """A whole ``hcl gateway serve`` (batch mode) on a copy of ``journal``: seconds to healthy and peak RSS."""
    import shutil

    import httpx

    from bench.gateway import chain, gateway_process

    folder = Path(f"/tmp/journal-growth-{label}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    with chain(folder) as net:
        data = folder / "gateway-batch-local"
        data.mkdir()
        shutil.copy(journal, data / "journal.db")
        for attempt in (1, 2):
            t0 = time.perf_counter()
            with gateway_process(folder, net, extra_env={"PYTHONPATH": code}) as gw:
                ready = time.perf_counter() - t0
                size = httpx.get(gw.url + "/healthz", timeout=10).json()["checks"]["journal"]["size"]
                print(
                    f"{label} start {attempt}: healthy after {ready:.1f} s, peak RSS {gw.peak_rss_mb():.0f} MB, size {size}"
                )


def accesslog(journal: Path, code: str, label: str) -> None:
    """Dev account 10's ``GET /v1/me/access-log`` (no parameters) three times on a whole gateway."""
    import shutil

    import httpx

    from bench.gateway import chain, gateway_process, login

    folder = Path(f"/tmp/journal-growth-{label}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    with chain(folder) as net:
        data = folder / "gateway-batch-local"
        data.mkdir()
        shutil.copy(journal, data / "journal.db")
        with gateway_process(folder, net, extra_env={"PYTHONPATH": code}) as gw:
            auth = {"Authorization": f"Bearer {login(gw.url, 10)}"}
            rss = gw.peak_rss_mb()
            for attempt in (1, 2, 3):
                t0 = time.perf_counter()
                r = httpx.get(gw.url + "/v1/me/access-log", headers=auth, timeout=300)
                took = (time.perf_counter() - t0) * 1000
                n = len(r.json()["accesses"])
                print(
                    f"{label} request {attempt}: {r.status_code} {took:.0f} ms, {len(r.content) / 1e6:.2f} MB,"
                    f" {n} entries, peak RSS {rss:.0f} -> {gw.peak_rss_mb():.0f} MB"
                )


if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"]:
        generate(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif sys.argv[1:2] == ["measure"]:
        measure(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["accesslog"]:
        accesslog(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["startup"]:
        startup(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
