"""A gateway of several processes (``HCL_WORKERS=2``): a primary (journal, anchorer, indexer) and two HTTP
workers on one port, as real processes under HTTP load.

* releases from both workers are journaled exactly once each, every acknowledged one at its index;
* kill -9 of a worker mid-load loses nothing acknowledged, the primary starts another worker, and the
  journal's export (with its anchors) passes the auditor's reader;
* with the primary gone, the workers refuse (503 ``journal_unavailable``) and /healthz says why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.ledger.journal import Journal
from node_client import merkle
from node_client.audit.journal import load_journal
from node_client.vocabulary import parse_purposes
from tests.support.fault_harness import FaultChain, GatewayProcess
from tests.support.gateway_harness import CLINIC, HOSPITAL, dev

pytestmark = pytest.mark.slow  # three gateway processes and a chain (~30 s)

FHIR = {"Content-Type": "application/fhir+json"}
PATIENT = 10


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[FaultChain]:
    c = FaultChain.start(tmp_path)
    now = c.client.block_timestamp()
    c.ledger.consents.grant(
        dev(PATIENT),
        dev(CLINIC).address,
        c.slots(dev(PATIENT), "allergies,lab-results"),
        parse_purposes("treatment"),
        now,
        now + 86_400,
    )
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def gateway(chain: FaultChain, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(chain, tmp_path / "gw", mode="batch", workers=2).start()
    try:
        yield gw
    finally:
        if gw.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gw.proc.pid, signal.SIGKILL)  # the primary and its workers (one session)
            gw.proc.wait(30)


def _workers(gw: GatewayProcess) -> list[int]:
    assert gw.proc is not None
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _upload(gw: GatewayProcess) -> list[str]:
    from tests.system.test_faults import bundle

    with gw.http(dev(HOSPITAL)) as hospital:
        body = bundle(uuid.uuid4().hex)  # new resources each time: the same upload again stores nothing
        r = hospital.post("/v1/records", params={"patient": dev(PATIENT).address}, content=body, headers=FHIR)
        assert r.status_code == 201, r.text
        return [x["recordId"] for x in r.json()["records"]]


def _release_loop(gw: GatewayProcess, records: list[str], acked: list[dict[str, Any]], stop: threading.Event) -> None:
    """Releases until ``stop``; a connection cut by a killed worker is replaced (a fresh one lands anywhere)."""
    token = gw.token(dev(CLINIC))
    client = httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
    i = 0
    while not stop.is_set():
        try:
            r = client.get(f"/v1/records/{records[i % len(records)]}", params={"purpose": "treatment"})
        except httpx.TransportError:
            client.close()
            client = httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
            continue
        assert r.status_code == 200, r.text
        acked.append({"accessId": r.json()["accessId"], **r.json()["ledger"]})
        i += 1
    client.close()


def test_two_workers_journal_each_release_once_and_survive_kill_9(gateway: GatewayProcess) -> None:
    gw = gateway
    first = _workers(gw)
    assert len(first) == 2
    records = _upload(gw)
    acked: list[dict[str, Any]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_release_loop, args=(gw, records, acked, stop)) for _ in range(6)]
    for t in threads:
        t.start()
    while len(acked) < 150:
        time.sleep(0.05)
    os.kill(first[0], signal.SIGKILL)  # a worker dies mid-load
    deadline = time.monotonic() + 30
    while len(acked) < 400 or set(_workers(gw)) & {first[0]}:
        assert time.monotonic() < deadline, (len(acked), _workers(gw))
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    replacement = set(_workers(gw)) - set(first)
    assert len(replacement) == 1  # the primary started another worker
    for _ in range(6):  # read-model views answer in every worker (a new connection lands on any of them)
        with gw.http(dev(PATIENT)) as patient:
            assert patient.get("/v1/me/records").status_code == 200
    with gw.http() as anyone:
        health = anyone.get("/healthz")
        assert health.status_code == 200
        assert health.json()["checks"]["journal"]["size"] >= len(acked)  # the primary's published check
        released = sum(
            float(line.rsplit(" ", 1)[1])
            for line in anyone.get("/metrics").text.splitlines()
            if line.startswith("hcl_releases_total{")
        )
        assert released >= len(acked)  # every worker's count, the killed one's included

    indexes = [a["journalIndex"] for a in acked]
    assert len(set(indexes)) == len(indexes)  # exactly once each
    assert gw.stop() in (0, -15), gw.log_tail()
    settings = gw.settings()
    with Journal(settings.journal_path) as journal:
        journal.verify_chain()
        entries = {idx: "0x" + e.access_hash.hex() for idx, e, _ in journal.entries()}
        assert all(entries[a["journalIndex"]] == a["accessId"] for a in acked)
        # ledgered == released, but for the few the killed worker had journaled and not yet answered
        assert len(acked) <= journal.size <= len(acked) + 6
        assert journal.last_anchor() is not None and journal.last_anchor()[0] == journal.size  # flushed at stop
        journal.export(settings.data_dir / "export.jsonl")
    loaded = load_journal(settings.data_dir / "export.jsonl")
    assert not loaded.problems and len(loaded.entries) == len(entries)


def test_primary_gone_workers_refuse_and_say_why(gateway: GatewayProcess) -> None:
    gw = gateway
    records = _upload(gw)
    with gw.http(dev(CLINIC)) as clinic, gw.http() as health:
        assert clinic.get(f"/v1/records/{records[0]}", params={"purpose": "treatment"}).status_code == 200
        assert health.get("/healthz").status_code == 200  # keeps its connection to a worker
        gw.kill()  # kill -9 of the primary: the workers' journal writer is gone
        r = clinic.get(f"/v1/records/{records[0]}", params={"purpose": "treatment"})
        assert r.status_code == 503 and r.json()["code"] == "journal_unavailable", r.text
        h = health.get("/healthz")
        assert h.status_code == 503 and not h.json()["checks"]["journal"]["ok"], h.text
        assert "primary" in h.json()["checks"]["journal"]["error"]


def test_workers_answer_journal_reads_from_the_database(gateway: GatewayProcess) -> None:
    """Proofs, the patient's history and the journal export need the journal's tree, which the primary
    writes: each worker reads it from the database (journal_view), so every connection gets them."""
    gw = gateway
    records = _upload(gw)
    with gw.http(dev(CLINIC)) as clinic:
        released = [clinic.get(f"/v1/records/{r}", params={"purpose": "treatment"}).json() for r in records]
    deadline = time.monotonic() + 30
    for body in released:
        idx = body["ledger"]["journalIndex"]
        for _ in range(4):  # a new connection each time: both workers answer
            with gw.http(dev(PATIENT)) as patient:
                while (p := patient.get(f"/v1/accesses/{idx}/proof")).status_code == 202:
                    assert time.monotonic() < deadline, "not anchored within 30 s"
                    time.sleep(0.2)
                assert p.status_code == 200, p.text
                proof = p.json()
                leaf = merkle.leaf_hash(bytes.fromhex(proof["entry"][2:]))
                path = [bytes.fromhex(h[2:]) for h in proof["inclusionProof"]]
                root = merkle.root_from_inclusion_proof(leaf, idx, proof["anchor"]["treeSize"], path)
                assert proof["accessId"] == body["accessId"] and "0x" + root.hex() == proof["anchor"]["root"]
                log = patient.get("/v1/me/access-log").json()
                assert {b["accessId"] for b in released} <= {a["accessId"] for a in log["accesses"]}
    with gw.http(dev(8)) as auditor:  # dev 8: the auditor
        export = auditor.get("/v1/journal")
        assert export.status_code == 200, export.text
    path = gw.settings().data_dir / "worker-export.jsonl"
    path.write_bytes(export.content)
    loaded = load_journal(path)
    assert not loaded.problems and len(loaded.entries) >= len(released)
