"""Discovery cost over time (issue 21): a patient's first pages as their records grow among everyone's.

``./scripts/bench growth --part records`` (:func:`run_records_bench`): a whole gateway (batch mode,
Hardhat chain, the dev patients' grants to the reading institutions mined before it starts) whose
database is then filled *directly*, while it runs, with the rows an upload and the indexer would have
written for each record: ``record_keys`` and ``resource_index`` by the uploads' own functions
(:func:`gateway.storage.record_keys.insert_pending`, then ``mark_registered``), ``chain_records`` by the
indexer's ``RecordRegistered`` statement. Uploading 50,000 records through the API would take the run's
time registering them on-chain; what discovery reads is the same rows either way (no blob is stored: the
records are listed, never released).

The gateway-wide index has ``total_rows`` resource rows when the patient has the largest size: the other
dev patients' records (4 resources each, all HbA1c, LOINC 4548-4: the code asked for) fill the rest; of
the patient's own records every other one has that code, and 1 in 100 a rarer one (``RARE``: a page of it
reads up to ~5,000 of the patient's records). At each size: the hospital's discovery of the patient with
``code=4548-4``, with the rare code and without, and the patient's ``GET /v1/me/records``, first pages,
p50 ms.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.gateway import (
    HOSPITAL,
    chain,
    environment,
    gateway_process,
    grant_all,
    login,
    patient_key,
    timed,
    wait_indexed,
)
from gateway.storage import record_keys
from gateway.storage.db import Database, status_text
from node_client.contracts import RecordStatus
from node_client.keys import dev_account
from node_client.signing import Domain
from node_client.vocabulary import Category

__all__ = ["fill", "run_records_bench"]

PATIENT = 10
OTHERS = tuple(range(11, 18))
CODE = "4548-4"
RARE = "8462-4"  # on 1 in 100 of the patient's records: a page of it reads ~5,000 of them
OTHER_CODES = ("2345-7", "718-7", "8480-6")
ROWS_PER_RECORD = 4
GOALS = {"discovery_code_ms": 50, "at_records": 10_000, "at_rows": 200_000}


def _records(patient: int, first: int, n: int, *, every_other: bool) -> list[tuple[Any, ...]]:
    """``n`` records (record id, patient, time, codes) of dev account ``patient``, numbered from ``first``."""
    address = dev_account(patient).address
    out = []
    for i in range(first, first + n):
        rid = hashlib.sha256(b"%d/%d" % (patient, i)).digest()
        code = CODE if not every_other or i % 2 == 0 else RARE if i % 100 == 1 else "2339-0"
        out.append((rid, address, 1_750_000_000 + i, (code, *OTHER_CODES) if every_other else (CODE,) * 4))
    return out


def fill(db: Database, records: Sequence[tuple[Any, ...]], *, provider: str, gateway: str, slot: int) -> None:
    """The rows an upload (keys, index, then registered) and the indexer (``chain_records``) write, for
    records of one patient in ``slot`` (her slot of lab results)."""
    keys, index = [], []
    for rid, patient, t, codes in records:
        keys.append(record_keys.NewRecordKey(rid, patient, provider, slot, rid, rid, rid, "bench", rid.hex(), 1000, t))
        index += [
            record_keys.IndexRow(rid, "Observation", f"o{k}", "http://loinc.org", c, "bench", "2026-01-01")
            for k, c in enumerate(codes)
        ]
    with db.write() as conn:
        record_keys.insert_pending(conn, keys, index)
        record_keys.mark_registered(conn, [(rid, "0x" + rid.hex()) for rid, *_ in records])
        conn.executemany(  # the indexer's RecordRegistered row (gateway/ledger/indexer.py)
            "INSERT OR REPLACE INTO chain_records (record_id, patient, provider, category, content_hash, locator,"
            " status, gateway, block, time, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    rid,
                    patient,
                    provider,
                    slot,
                    rid,
                    rid,
                    status_text(RecordStatus.ACTIVE),
                    gateway,
                    1,
                    t,
                    "0x" + rid.hex(),
                )
                for rid, patient, t, _ in records
            ],
        )


def _measure(url: str, patient: str, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for who, label, path in (
        (HOSPITAL, "discovery_code", f"/v1/patients/{patient}/records?code={CODE}"),
        (HOSPITAL, "discovery_rare", f"/v1/patients/{patient}/records?code={RARE}"),
        (HOSPITAL, "discovery", f"/v1/patients/{patient}/records"),
        (PATIENT, "me_records", "/v1/me/records"),
    ):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {login(url, who)}"}, timeout=120) as h:
            h.get(path).raise_for_status()
            p50, times, r = timed(lambda: h.get(path), repeats)  # noqa: B023 (called at once)
        out[f"{label}_ms"] = p50
        out[f"{label}_times_ms"] = times
        out[f"{label}_page"] = len(r.json()["records"])
    return out


def run_records_bench(
    sizes: Sequence[int], *, total_rows: int = 200_000, repeats: int = 9, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The curve: the patient's records grown to each of ``sizes`` in one running gateway."""
    with tempfile.TemporaryDirectory(prefix="hcl-records-growth-") as tmp, chain(Path(tmp)) as net:
        grant_all(net)
        with gateway_process(Path(tmp), net) as gw:
            wait_indexed(gw, net)
            domain = net.manifest.connect(net.client).consents.domain()
            points = _grow(gw.url, Database(gw.data_dir / "gateway.db"), domain, sizes, total_rows, repeats, log)
    return {
        "part": "records",
        "code": CODE,
        "rows_per_record": ROWS_PER_RECORD,
        "environment": environment(),
        "goals": GOALS,
        "points": points,
    }


def _grow(
    url: str,
    db: Database,
    domain: Domain,
    sizes: Sequence[int],
    total_rows: int,
    repeats: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    gateway, provider = dev_account(3).address, dev_account(HOSPITAL).address
    lab = {p: patient_key(domain, p).slot(Category.LAB_RESULTS) for p in (PATIENT, *OTHERS)}
    background = max(0, total_rows - ROWS_PER_RECORD * max(sizes)) // ROWS_PER_RECORD
    for k, other in enumerate(OTHERS):  # the other patients' records, interleaved in time with the patient's
        share = background // len(OTHERS) + (k < background % len(OTHERS))
        fill(db, _records(other, 0, share, every_other=False), provider=provider, gateway=gateway, slot=lab[other])
    points, have = [], 0
    for size in sizes:
        mine = _records(PATIENT, have, size - have, every_other=True)
        fill(db, mine, provider=provider, gateway=gateway, slot=lab[PATIENT])
        have = size
        rows = db.read().execute("SELECT count(*) FROM resource_index").fetchone()[0]
        point = {"records": size, "gateway_rows": rows, **_measure(url, dev_account(PATIENT).address, repeats)}
        log(f"  {point}")
        points.append(point)
    return points
