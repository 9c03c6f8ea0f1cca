"""kill -9 at 21 named points of a running gateway, then reconcile, restart and check what survived.

The gateway runs as a real process (``hcl gateway serve``); ``HCL_TEST_CRASH_AT=<point>:<n>`` makes it
SIGKILL itself the n-th time it reaches ``<point>`` (:mod:`gateway.crashpoints`) while three clients
upload, release and retract concurrently. One data directory and one chain per ledger mode go through
every point in turn, as one gateway that keeps crashing would. After each kill:

* the process died of SIGKILL (the point was reached);
* ``hcl gateway reconcile`` repairs what was half-written, and a second (dry) run finds nothing;
* every acknowledged release has its ledger entry (strict: an ``AccessLogged`` with that access hash;
  batch: the journal row at the acknowledged index with that hash), the journal's hash chain is intact
  and its recorded anchors are the chain's;
* every acknowledged upload is registered with its blob; every acknowledged retraction is retracted
  on-chain and its blob gone;
* after the last point the gateway anchors everything and the chain's latest anchor is the journal's size.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.crashpoints import POINTS
from gateway.ledger.journal import Journal
from gateway.ops.reconcile import reconcile
from gateway.storage.blobs import LocalBlobStore
from gateway.storage.db import Database
from node_client.contracts import RecordStatus
from node_client.vocabulary import parse_purposes
from tests.support.fault_harness import GATEWAY, FaultChain, GatewayProcess
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, dev

pytestmark = pytest.mark.slow  # gateway processes killed at every crash point (~1.5 min)

FHIR = {"Content-Type": "application/fhir+json"}
PATIENTS = (10, 11, 12)
SIGKILL = -9

#: (point:n) per mode; together they cover every point of gateway.crashpoints.POINTS
STRICT_POINTS = [
    "upload.after_first_blob:2",
    "upload.after_blobs:3",
    "upload.after_pending_rows:2",
    "reconcile.after_repair",  # kills the reconcile run after the previous crash, not the gateway
    "upload.after_register_tx:3",
    "upload.after_registered:2",
    "blob.after_temp_write:4",
    "blob.after_rename:3",
    "retract.after_shred",
    "retract.after_chain_retract",
    "retract.after_retracted",
    "blob.after_delete",
    "release.after_decision:4",
    "release.before_ledger:5",
    "release.after_ledger:6",
]
BATCH_POINTS = [
    "release.after_ledger:5",
    "journal.before_commit:6",
    "journal.after_commit:4",
    "journal.segment_written:2",  # the gateway seals a segment every 6 entries here
    "journal.segment_before_commit:2",
    "journal.segment_after_commit",
    "journal.drop_before_commit:2",  # the second seal's copies not yet deleted from the open database
    "anchor.before_tx:2",
    "anchor.after_tx",
    "anchor.after_tx:2",
    "anchor.after_record:2",
]


#: the repair each crash must leave for reconcile (other clients' in-flight requests may add more)
EXPECTED_REPAIR = {
    "upload.after_first_blob": "orphan_blob",
    "upload.after_blobs": "orphan_blob",
    "reconcile.after_repair": "orphan_blob",  # rows deleted by the killed run, blobs left
    "upload.after_register_tx": "upload_registered",
    "blob.after_temp_write": "temp_file",
    "blob.after_rename": "orphan_blob",
    "retract.after_shred": "retract_pending",
    "retract.after_chain_retract": "retract_pending",
    "retract.after_retracted": "orphan_blob",
    "anchor.after_tx": "anchor_unrecorded",
}


def test_every_crash_point_is_exercised() -> None:
    used = {p.split(":")[0] for p in STRICT_POINTS + BATCH_POINTS}
    assert used == set(POINTS)
    assert len(STRICT_POINTS) + len(BATCH_POINTS) - 1 >= 20  # kills of a gateway (one kills reconcile)


def bundle(tag: str = "") -> bytes:
    """An allergy and a lab result; a ``tag`` makes them new resources (their own ids, no identifiers), so
    that the upload is stored and registered: the same upload again is held already and stores nothing."""
    resources = [
        orjson.loads((SAMPLES / "hl7-r4" / name).read_bytes())
        for name in ("AllergyIntolerance-example.json", "Observation-f001.json")
    ]
    if tag:
        resources = [{**{k: v for k, v in r.items() if k != "identifier"}, "id": f"{r['id']}.{tag}"} for r in resources]
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})


BUNDLE = bundle()


@dataclass
class Ledgered:
    """What the clients were told (acknowledged), across every round."""

    uploads: dict[str, str] = field(default_factory=dict)  # record id -> patient
    releases: list[dict[str, Any]] = field(default_factory=list)  # release bodies' accessId + ledger
    retracts: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _drive(gw: GatewayProcess, acked: Ledgered, seed: int, max_ops: int = 60) -> None:
    """Three clients (upload / release / retract) until the gateway dies or each did ``max_ops``.

    With several processes the workers outlive a killed primary by a second, refusing (503
    ``journal_unavailable``): for a client that is the gateway dying too."""
    workers = int(gw.values.get("workers", 1))
    hospital_token, clinic_token = gw.token(dev(HOSPITAL)), gw.token(dev(CLINIC))

    def worker(k: int) -> None:
        rnd = random.Random(seed * 10 + k)
        hospital = httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {hospital_token}"})
        clinic = httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {clinic_token}"})
        try:
            for i in range(max_ops):
                with acked.lock:
                    live = sorted(set(acked.uploads) - acked.retracts)
                try:
                    if i % 3 == 0 or not live:
                        patient = dev(PATIENTS[(i + k) % len(PATIENTS)]).address
                        content = bundle(f"{seed}.{k}.{i}")
                        r = hospital.post("/v1/records", params={"patient": patient}, content=content, headers=FHIR)
                        if r.status_code == 201:
                            with acked.lock:
                                acked.uploads.update({x["recordId"]: patient for x in r.json()["records"]})
                            continue
                    elif i % 6 == 5:
                        rid = rnd.choice(live)
                        r = hospital.delete(f"/v1/records/{rid}")
                        if r.status_code == 200:
                            with acked.lock:
                                acked.retracts.add(rid)
                            continue
                    else:
                        rid = rnd.choice(live)
                        r = clinic.get(f"/v1/records/{rid}", params={"purpose": "treatment"})
                        if r.status_code == 200:
                            body = r.json()
                            with acked.lock:
                                acked.releases.append({"recordId": rid, "accessId": body["accessId"], **body["ledger"]})
                            continue
                except httpx.TransportError:
                    return  # the gateway died (or is dying): stop this client
                if workers > 1 and r.status_code == 503 and r.json().get("code") == "journal_unavailable":
                    return
                if r.status_code not in (404, 410):  # a record retracted by another client meanwhile
                    with acked.lock:
                        acked.unexpected.append(
                            f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}"
                        )
        finally:
            hospital.close()
            clinic.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)


def _check_after_crash(gw: GatewayProcess, chain: FaultChain, acked: Ledgered, label: str) -> None:
    settings = gw.settings()
    report = reconcile(settings)
    assert not [f for f in report.findings if f.severity == "lost"], (label, report.findings)
    expected = EXPECTED_REPAIR.get(label.split(":")[0])
    if expected is not None:
        assert any(f.kind == expected and f.repaired for f in report.findings), (label, report.findings)
    again = reconcile(settings, dry_run=True)
    assert again.outstanding == [], (label, again.findings)  # zero orphans remain

    db = Database(settings.db_path)
    store = LocalBlobStore(settings.blob_dir)
    try:
        rows = {"0x" + bytes(r["record_id"]).hex(): r for r in db.read().execute("SELECT * FROM record_keys")}
        blobs = set(store.locators())
        for rid in acked.uploads:
            row = rows.get(rid)
            assert row is not None, (label, "acknowledged upload lost", rid)
            if rid in acked.retracts:
                continue
            if row["state"] == "registered":
                assert bytes(row["locator"]) in blobs, (label, "registered record without blob", rid)
            else:  # retracted by a retraction that was not acknowledged (crash): that is allowed
                assert row["state"] == "retracted", (label, rid, row["state"])
        for rid in acked.retracts:
            assert rows[rid]["state"] == "retracted", (label, rid)
            assert bytes(rows[rid]["locator"]) not in blobs, (label, "blob of a retracted record", rid)
            assert chain.ledger.records.record_of(bytes.fromhex(rid[2:])).status is RecordStatus.RETRACTED
        for row in rows.values():  # nothing half-written after reconcile
            assert row["state"] in ("registered", "retracted"), (label, dict(row))
            assert (row["state"] == "registered") == (bytes(row["locator"]) in blobs), (label, dict(row))
    finally:
        db.close()
    assert not list(settings.blob_dir.glob("*/.tmp-*")), label

    if gw.mode == "strict":
        logged = {"0x" + bytes(ev["accessHash"]).hex() for ev in chain.ledger.access.events(["AccessLogged"])}
        missing = [r for r in acked.releases if r["accessId"] not in logged]
        assert not missing, (label, "acknowledged releases without a ledger entry", missing)
    else:
        with Journal(settings.journal_path) as journal:
            journal.verify_chain()
            assert journal.verify_all() == journal.size, label  # sealed segments included
            entries = {idx: "0x" + e.access_hash.hex() for idx, e, _ in journal.entries()}
            for r in acked.releases:
                assert entries.get(r["journalIndex"]) == r["accessId"], (label, "acknowledged release not journaled", r)
            chain_roots = {
                int(ev["treeSize"]): bytes(ev["root"]) for ev in chain.ledger.access.events(["AccessBatchAnchored"])
            }
            for a in journal.anchors():
                assert chain_roots.get(a.tree_size) == a.root, (label, "recorded anchor not on chain", a)
            for size, root in chain_roots.items():  # the chain never holds a root the journal cannot prove
                assert size <= journal.size and journal.root(size) == root, (label, size)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[FaultChain]:
    """A chain per mode: reconcile counts every registration of the gateway account as its own."""
    c = FaultChain.start(tmp_path)
    now = c.client.block_timestamp()
    for p in PATIENTS:
        c.ledger.consents.grant(
            dev(p),
            dev(CLINIC).address,
            c.slots(dev(p), "allergies,lab-results"),
            parse_purposes("treatment"),
            now,
            now + 30 * 86_400,
        )
    try:
        yield c
    finally:
        c.stop()


#: the primary's points with two HTTP workers (a worker killed mid-load: tests/system/test_workers.py)
WORKERS_POINTS = [p for p in BATCH_POINTS if not p.startswith("release.")]


@pytest.mark.parametrize(
    ("mode", "workers"), [("strict", 1), ("batch", 1), ("batch", 2)], ids=["strict", "batch", "batch-2-workers"]
)
def test_kill_9_at_every_crash_point(mode: str, workers: int, chain: FaultChain, tmp_path: Path) -> None:
    points = STRICT_POINTS if mode == "strict" else BATCH_POINTS if workers == 1 else WORKERS_POINTS
    tiny = {"journal_segment_entries": 6} if mode == "batch" else {}  # rotations: the journal.segment_* points
    gw = GatewayProcess(chain, tmp_path / f"gw-{mode}", mode=mode, workers=workers, **tiny)
    acked = Ledgered()
    anchored: list[int] = []
    for n, point in enumerate(points):
        if point.startswith("reconcile."):
            # the previous crash left repairs to make: kill reconcile after its first, then finish
            done = gw.reconcile_cli("--json", crash_at=point)
            assert done.returncode == SIGKILL, (done.returncode, done.stdout, done.stderr)
            _check_after_crash(gw, chain, acked, point)
            continue
        gw.start(crash_at=point)
        _drive(gw, acked, seed=n)
        code = gw.wait_dead(60) if gw.alive else gw.proc.returncode  # type: ignore[union-attr]
        assert code == SIGKILL, (point, code, gw.log_tail())
        assert not acked.unexpected, (point, acked.unexpected)
        if point.startswith("upload.after_pending_rows"):
            continue  # left for the reconcile crash that follows
        _check_after_crash(gw, chain, acked, point)
        if mode == "batch":
            anchored.append(chain.ledger.access.latest_anchor(dev(GATEWAY).address).tree_size)

    # a last clean run: anchoring resumes where it stopped and catches up with the journal
    gw.start()
    _drive(gw, acked, seed=99, max_ops=6)
    assert not acked.unexpected, acked.unexpected
    if mode == "batch":
        import time

        deadline = time.monotonic() + 20
        while True:
            j = gw.health()["checks"]["journal"]
            if j["size"] == j["anchoredSize"] and j["size"] > 0:
                break
            assert time.monotonic() < deadline, j
            time.sleep(0.2)
    assert gw.stop() in (0, -15), gw.log_tail()  # uvicorn re-raises SIGTERM after its graceful shutdown
    _check_after_crash(gw, chain, acked, "final")
    assert len(acked.releases) > 0 and len(acked.uploads) > 0
    if mode == "batch":
        final = chain.ledger.access.latest_anchor(dev(GATEWAY).address).tree_size
        anchored.append(final)
        assert anchored == sorted(anchored), anchored  # anchors only grow
        with Journal(gw.settings().journal_path) as journal:
            assert final == journal.size == journal.last_anchor().tree_size  # type: ignore[union-attr]
