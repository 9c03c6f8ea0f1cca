"""Soak: concurrent uploads and releases against a gateway process while patients revoke mid-stream.

``HCL_SOAK_SECONDS`` (default 60) is split between strict and batch mode. Afterwards:

* every request was answered: ``requests = releases + refusals`` (no 5xx, no dropped connection);
* ``releases = ledger entries``, one to one by access hash (strict: ``AccessLogged`` events of this
  gateway's chain; batch: journal rows, and the chain's latest anchor covers all of them);
* no release after a revocation the gateway had seen: once the gateway's indexer reports the
  revocation's block (``/healthz`` ``indexedBlock``), every request of that pair that starts later
  is refused with ``consent_revoked``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.ledger.journal import Journal
from node_client.vocabulary import parse_purposes
from tests.support.fault_harness import GATEWAY, FaultChain, GatewayProcess, fresh_allergy
from tests.support.gateway_harness import CLINIC, HOSPITAL, LAB, dev

pytestmark = pytest.mark.slow  # HCL_SOAK_SECONDS of mixed load (60 s by default)

SECONDS = float(os.environ.get("HCL_SOAK_SECONDS", "60")) / 2  # per mode
FHIR = {"Content-Type": "application/fhir+json"}
PATIENTS = tuple(range(10, 16))
READERS = (CLINIC, CLINIC, LAB)
REVOCATIONS = 4


@dataclass(frozen=True)
class Outcome:
    reader: str
    patient: str
    started: float  # time.monotonic() when the request was sent
    status: int
    code: str | None
    access_id: str | None


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[FaultChain]:
    c = FaultChain.start(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize("mode", ["strict", "batch"])
def test_soak_with_revocations_mid_stream(mode: str, chain: FaultChain, tmp_path: Path) -> None:
    now = chain.client.block_timestamp()
    for p in PATIENTS:
        for reader in (CLINIC, LAB):
            chain.ledger.consents.grant(
                dev(p),
                dev(reader).address,
                chain.slots(dev(p), "allergies"),
                parse_purposes("treatment"),
                now,
                now + 86_400,
            )
    gw = GatewayProcess(chain, tmp_path / "gw", mode=mode).start()
    records: dict[str, list[str]] = {dev(p).address: [] for p in PATIENTS}
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    failures: list[str] = []
    seen: dict[tuple[str, str], float] = {}  # (patient, reader) -> when the gateway had indexed the revocation
    stop = threading.Event()

    hospital_token = gw.token(dev(HOSPITAL))
    with httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {hospital_token}"}) as h:
        for patient in records:
            r = h.post("/v1/records", params={"patient": patient}, content=fresh_allergy(), headers=FHIR)
            assert r.status_code == 201, r.text
            records[patient].append(r.json()["records"][0]["recordId"])
    uploads = len(records)

    def uploader(k: int) -> None:
        nonlocal uploads
        rnd = random.Random(k)
        with httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {hospital_token}"}) as h:
            while not stop.is_set():
                patient = rnd.choice(list(records))
                try:
                    r = h.post("/v1/records", params={"patient": patient}, content=fresh_allergy(), headers=FHIR)
                except httpx.TransportError as exc:
                    failures.append(f"upload: {exc!r}")
                    return
                if r.status_code != 201:
                    failures.append(f"upload: {r.status_code} {r.text[:200]}")
                    continue
                with lock:
                    records[patient].append(r.json()["records"][0]["recordId"])
                    uploads += 1

    def reader(k: int, account_index: int) -> None:
        rnd = random.Random(100 + k)
        address = dev(account_index).address
        token = gw.token(dev(account_index))
        with httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
            while not stop.is_set():
                patient = rnd.choice(list(records))
                with lock:
                    record = rnd.choice(records[patient])
                started = time.monotonic()
                try:
                    r = http.get(f"/v1/records/{record}", params={"purpose": "treatment"})
                except httpx.TransportError as exc:
                    failures.append(f"release: {exc!r}")
                    return
                body = r.json()
                with lock:
                    outcomes.append(
                        Outcome(
                            address,
                            patient,
                            started,
                            r.status_code,
                            body.get("code"),
                            body.get("accessId") if r.status_code == 200 else None,
                        )
                    )

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=reader, args=(k, acct)) for k, acct in enumerate(READERS)]
    for t in threads:
        t.start()
    pairs = [(dev(p).address, dev(r).address) for p, r in zip(PATIENTS, (CLINIC, LAB, CLINIC, LAB), strict=False)]
    try:
        for patient, grantee in pairs[:REVOCATIONS]:
            time.sleep(SECONDS / (REVOCATIONS + 1))
            block = chain.ledger.consents.revoke(
                dev(next(p for p in PATIENTS if dev(p).address == patient)), grantee
            ).block_number
            deadline = time.monotonic() + 30
            while gw.health()["checks"]["indexer"]["indexedBlock"] < block:
                assert time.monotonic() < deadline, "the gateway did not index the revocation"
                time.sleep(0.05)
            seen[(patient, grantee)] = time.monotonic()
        time.sleep(SECONDS / (REVOCATIONS + 1))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert gw.stop() in (0, -15), gw.log_tail()

    assert not failures, failures[:5]
    releases = [o for o in outcomes if o.status == 200]
    refusals = [o for o in outcomes if o.status != 200]
    assert len(outcomes) == len(releases) + len(refusals)
    assert all(o.status == 403 and o.code == "consent_revoked" for o in refusals), {
        (o.status, o.code) for o in refusals
    }
    assert len(releases) > 50 and len(refusals) > 0, (len(releases), len(refusals))
    for o in outcomes:  # nothing released after a revocation the gateway had seen
        after = seen.get((o.patient, o.reader))
        if after is not None and o.started > after:
            assert o.status == 403 and o.code == "consent_revoked", o

    released = sorted(o.access_id for o in releases if o.access_id)
    if mode == "strict":
        logged = sorted("0x" + bytes(ev["accessHash"]).hex() for ev in chain.ledger.access.events(["AccessLogged"]))
        assert logged == released
    else:
        with Journal(gw.settings().journal_path) as journal:
            journal.verify_chain()
            journaled = sorted("0x" + e.access_hash.hex() for _, e, _ in journal.entries())
            assert journaled == released
            assert chain.ledger.access.latest_anchor(dev(GATEWAY).address).tree_size == journal.size
    print(
        f"soak {mode} {SECONDS:.0f}s: {len(outcomes)} requests = {len(releases)} releases + {len(refusals)} refusals,"
        f" {uploads} uploads, {len(seen)} revocations"
    )
