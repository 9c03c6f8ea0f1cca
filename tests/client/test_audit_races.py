"""The auditor on batch releases made concurrently with consent changes (security review, finding 2).

A real batch-mode gateway on its own Hardhat chain, several threads releasing over HTTP while patients
revoke and grant. Hardhat's clock runs ahead of wall time whenever blocks come faster than one a second,
so no single gateway-to-chain clock offset fits these journals: each entry must be judged at the block
whose state its decision used, and what the journal cannot order (a release decided on the state just
before a revocation, in the gateway's staleness window) is a review item of its own kind, never ``ok``
and never an error of an honest gateway.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from node_client.audit import AuditReport, read_checkpoint, replay, write_checkpoint
from node_client.audit_cli import audit_app
from node_client.merkle import MerkleTree
from node_client.vocabulary import parse_categories, parse_purposes
from tests.support.gateway_harness import CLINIC, HOSPITAL, LAB, SAMPLES, RunningGateway, dev, running_gateway

FHIR = {"Content-Type": "application/fhir+json"}
OBSERVATION = SAMPLES / "hl7-r4" / "Observation-f001.json"
PHARMACY = 7
WINDOW = "access_in_staleness_window"


@dataclass(frozen=True)
class Outcome:
    reader: str
    patient: str
    sent: float  # time.time() before the request
    done: float  # time.time() after the response
    status: int
    code: str | None
    index: int | None  # journal index of a release


@dataclass
class World:
    gw: RunningGateway
    records: dict[int, str]  # patient dev index -> record id
    category: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_gateway(tmp_path_factory.mktemp("races"), ledger_mode="batch") as gw:
        hospital = gw.login(dev(HOSPITAL))
        records: dict[int, str] = {}
        category = 0
        for p in (10, 11, 12, 13):
            up = hospital.post(
                "/v1/records", params={"patient": dev(p).address}, content=OBSERVATION.read_bytes(), headers=FHIR
            )
            assert up.status_code == 201, up.text
            records[p] = up.json()["records"][0]["recordId"]
            category = parse_categories(up.json()["records"][0]["category"])
        for p, reader in ((10, CLINIC), (11, CLINIC), (11, LAB), (12, CLINIC), (12, LAB)):
            _grant(gw, p, reader, category)
        gw.wait_indexed()
        yield World(gw, records, category)


def _grant(gw: RunningGateway, patient: int, reader: int, category: int) -> int:
    now = gw.client.block_timestamp()
    _cid, tx = gw.ledger.consents.grant(
        dev(patient),
        dev(reader).address,
        gw.slots(dev(patient), category),
        parse_purposes("treatment"),
        now,
        now + 86_400,
    )
    return tx.block_number


class Load:
    """Threads releasing over HTTP, each as one reader account over a list of (patient, record)."""

    def __init__(self, w: World, plan: list[tuple[int, list[int]]]) -> None:
        self.w = w
        self.plan = plan  # per thread: (reader dev index, patient dev indexes)
        self.outcomes: list[Outcome] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k, r, ps)) for k, (r, ps) in enumerate(plan)]

    def _run(self, k: int, reader: int, patients: list[int]) -> None:
        http = self.w.gw.login(dev(reader))
        i = k
        try:
            while not self._stop.is_set():
                p = patients[i % len(patients)]
                i += 1
                sent = time.time()
                try:
                    r = http.get(f"/v1/records/{self.w.records[p]}", params={"purpose": "treatment"})
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.failures.append(repr(exc))
                    return
                done = time.time()
                body = r.json()
                index = body["ledger"]["journalIndex"] if r.status_code == 200 else None
                with self._lock:
                    self.outcomes.append(
                        Outcome(dev(reader).address, dev(p).address, sent, done, r.status_code, body.get("code"), index)
                    )
        finally:
            http.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def releases_after(self, t: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status == 200 and o.sent > t]


def _anchor_all(gw: RunningGateway) -> None:
    journal = gw.components.journal
    deadline = time.monotonic() + 30
    while True:
        gw.components.anchorer.anchor_once()
        last = journal.last_anchor()
        if last is not None and last.tree_size == journal.size:
            return
        assert time.monotonic() < deadline, "the journal was not anchored"
        time.sleep(0.1)


def _audit(w: World, tmp: Path, **kw: Any) -> tuple[AuditReport, Path]:
    _anchor_all(w.gw)
    export = tmp / "journal.jsonl"
    w.gw.components.journal.export(export)
    return replay(w.gw.client, w.gw.manifest, journal=export, clock_skew=None, **kw), export


def _rows(report: AuditReport) -> dict[int, Any]:
    return {r.entry_index: r for r in report.accesses if r.source == "journal"}


def _wait_seen(gw: RunningGateway, block: int) -> float:
    deadline = time.monotonic() + 30
    while gw.components.indexer.indexed_block < block:
        assert time.monotonic() < deadline, "the gateway did not index the block"
        time.sleep(0.02)
    return time.time()


# ------------------------------------------------------------------------------------------ scenarios


def test_revocation_under_eight_concurrent_readers(world: World, tmp_path: Path) -> None:
    """The reviewer's first scenario: 8 readers, then the patient revokes. What was decided before the
    revocation is clean; what was requested after it was mined (served from the read model before the
    gateway saw the block: the indexer is held for a moment, within the read model's freshness) is
    flagged; once the gateway has seen the block, everything is refused; an honest journal audits to 0."""
    w = world
    gw = w.gw
    indexer = gw.components.indexer
    with Load(w, [(CLINIC, [10])] * 8) as load:
        time.sleep(1.5)
        indexer.stop()  # a slow poll: the read model stays usable until its freshness lapses
        try:
            indexer.poll_once()  # freshly seen: the whole freshness is left for the revocation and the reads
            t_send = time.time()
            revoked = gw.ledger.consents.revoke(dev(10), dev(CLINIC).address).block_number
            t_receipt = time.time()
            deadline = time.monotonic() + 0.6
            while not load.releases_after(t_receipt) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            indexer.start()
        t_seen = _wait_seen(gw, revoked)
        time.sleep(0.5)
    assert not load.failures, load.failures[:3]
    outcomes = load.outcomes
    assert all(o.status == 200 or (o.status == 403 and o.code == "consent_revoked") for o in outcomes), {
        (o.status, o.code) for o in outcomes
    }
    late = [o for o in outcomes if o.sent > t_seen]
    assert late and all(o.status == 403 for o in late), "released after the gateway had seen the revocation"

    report, _ = _audit(w, tmp_path)
    rows = _rows(report)
    releases = [o for o in outcomes if o.status == 200]
    before = [o for o in releases if o.done < t_send]
    after = [o for o in releases if o.sent > t_receipt]
    assert len(before) > 50 and after, (len(before), len(after))
    for o in before:  # decided before the revocation existed: never an error
        row = rows[o.index]
        assert row.status == "ok" or row.kinds == [WINDOW], (o, row)
    settled = [o for o in before if o.done < t_send - 0.5]  # well before: the journal itself proves it
    assert settled and all(rows[o.index].status == "ok" for o in settled), [
        rows[o.index].to_json() for o in settled if rows[o.index].status != "ok"
    ][:3]
    for o in after:  # requested after the revocation was mined: flagged, not ok
        row = rows[o.index]
        assert row.status == "review" and row.kinds == [WINDOW], (o, row)
        (a,) = [a for a in report.anomalies if a.kind == WINDOW and a.evidence["entry_index"] == o.index]
        assert a.evidence["change_block"] == revoked and a.evidence["state_block"] < revoked
        assert a.evidence["change"] == "access_after_revocation"
    assert report.exit_code == 0, [a.to_json() for a in report.errors][:5]
    window = sum(1 for r in rows.values() if r.kinds == [WINDOW])
    assert window < len(releases) / 2, (window, len(releases))


def test_grants_and_revocations_interleaved_with_concurrent_releases_audit_clean(world: World, tmp_path: Path) -> None:
    """The reviewer's other scenario and the exit code: consents granted, revoked and granted again while
    six threads release; an honest batch journal gives exit 0, and releases after a grant are ok."""
    w = world
    gw = w.gw
    plan = [
        (CLINIC, [11, 12, 13]),
        (CLINIC, [12, 13, 11]),
        (CLINIC, [13, 11, 12]),
        (LAB, [11, 12, 13]),
        (LAB, [12, 13, 11]),
        (LAB, [13, 11, 12]),
    ]
    granted: dict[tuple[str, str], float] = {}
    with Load(w, plan) as load:
        time.sleep(0.8)
        _grant(gw, 13, CLINIC, w.category)
        granted[(dev(13).address, dev(CLINIC).address)] = time.time()
        time.sleep(0.8)
        gw.ledger.consents.revoke(dev(11), dev(CLINIC).address)
        time.sleep(0.8)
        _grant(gw, 13, LAB, w.category)
        time.sleep(0.8)
        gw.ledger.consents.revoke(dev(12), dev(LAB).address)
        time.sleep(0.8)
        _grant(gw, 11, CLINIC, w.category)
        time.sleep(1.0)
    assert not load.failures, load.failures[:3]
    outcomes = load.outcomes
    assert all(
        o.status == 200 or (o.status == 403 and o.code in ("consent_revoked", "consent_missing")) for o in outcomes
    ), {(o.status, o.code) for o in outcomes}

    report, export = _audit(w, tmp_path)
    assert report.errors == [], [a.to_json() for a in report.errors][:5]
    rows = _rows(report)
    after_grant = [o for o in outcomes if o.status == 200 and (o.patient, o.reader) in granted]
    assert after_grant and all(rows[o.index].status == "ok" for o in after_grant)
    assert report.summary["journal_entries"] == w.gw.components.journal.size

    res = CliRunner().invoke(
        audit_app,
        [
            "replay",
            "--rpc-url",
            gw.settings.rpc_url,
            "--manifest",
            str(gw.settings.manifest),
            "--journal",
            str(export),
            "--json",
            "--detail",
            "issues",
            "--out",
            str(tmp_path / "cli"),
        ],
    )
    assert res.exit_code == 0, res.output[-2000:]


def test_the_entry_names_the_block_whose_state_decided(world: World, tmp_path: Path) -> None:
    """From the read model: the block the read model was at (not the head mined after it); from the
    chain (read model not usable): the block the calls were pinned to. Either way the hash is the
    chain's and the head was seen at most the staleness bound before the decision."""
    w = world
    gw = w.gw
    indexer = gw.components.indexer
    clinic = gw.login(dev(CLINIC))
    _grant(gw, 13, CLINIC, w.category)
    gw.wait_indexed()
    time.sleep(0.3)
    indexer.stop()
    try:
        at = indexer.indexed_block
        _grant(gw, 12, PHARMACY, w.category)  # a block the read model has not seen
        assert gw.client.block_number() > at
        r = clinic.get(f"/v1/records/{w.records[13]}", params={"purpose": "treatment"})
        assert r.status_code == 200, r.text
        cached = _entry(gw, r.json()["ledger"]["journalIndex"])
        indexer._seen_at -= indexer.freshness + 1  # no recent poll: decisions go to the chain
        assert not indexer.synced
        head = gw.client.block_number()
        r = clinic.get(f"/v1/records/{w.records[13]}", params={"purpose": "treatment"})
        assert r.status_code == 200, r.text
        chained = _entry(gw, r.json()["ledger"]["journalIndex"])
    finally:
        indexer.start()
        gw.wait_indexed()
    assert cached.state_block == at
    assert chained.state_block == head
    for e in (cached, chained):
        block = gw.client.w3.eth.get_block(e.state_block)
        assert e.state_block_hash == bytes(block["hash"])
        assert 0 <= e.released_at - e.state_seen_at < indexer.freshness * 1000


def _entry(gw: RunningGateway, idx: int) -> Any:
    for _i, entry, _leaf in gw.components.journal.entries(idx, idx + 1):
        return entry
    raise AssertionError(f"no journal entry {idx}")


# ------------------------------------------------------------------------------------------ forged


_V2 = struct.Struct(">4sB20s20s32sB32sB32sQQ32sQ")


def _encode(e: dict[str, Any]) -> bytes:
    """The documented HCLJ/2 layout (docs/audit.md), written out independently of the gateway's code."""
    return _V2.pack(
        b"HCLJ",
        2,
        bytes.fromhex(e["requester"][2:]),
        bytes.fromhex(e["patient"][2:]),
        bytes.fromhex(e["record_id"][2:]),
        e["purpose"],
        bytes.fromhex(e["consent_id"][2:]),
        int(e["emergency"]),
        bytes.fromhex(e["access_hash"][2:]),
        e["released_at"],
        e["state_block"],
        bytes.fromhex(e["state_block_hash"][2:]),
        e["state_seen_at"],
    )


def _append(export: Path, extra: list[dict[str, Any]], path: Path) -> None:
    """The export plus forged entries with a valid hash chain (only the anchors and the chain can tell)."""
    header, *rest = [orjson.loads(x) for x in export.read_bytes().splitlines()]
    entries = [o for o in rest if o["type"] == "entry"]
    anchors = [o for o in rest if o["type"] == "anchor"]
    tree = MerkleTree(bytes.fromhex(e["leaf_hash"][2:]) for e in entries)
    chain = bytes.fromhex(entries[-1]["chain_hash"][2:])
    for e in extra:
        data = _encode(e)
        leaf = hashlib.sha256(b"\x00" + data).digest()
        chain = hashlib.sha256(chain + leaf).digest()
        tree.append(leaf)
        entries.append(
            {
                "type": "entry",
                "idx": len(entries),
                **e,
                "encoded": "0x" + data.hex(),
                "leaf_hash": "0x" + leaf.hex(),
                "chain_hash": "0x" + chain.hex(),
            }
        )
    header = {**header, "size": len(entries), "root": "0x" + tree.root().hex(), "chain_head": "0x" + chain.hex()}
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in [header, *entries, *anchors]) + b"\n")


def test_forged_state_claims_are_errors(world: World, tmp_path: Path) -> None:
    """A gateway cannot talk its way out: an entry whose named state already held the revocation, a
    block hash that is not the chain's, and a decision on a state older than one the journal itself shows
    in use (the release provably came after the revocation) are errors."""
    w = world
    gw = w.gw
    _grant(gw, 13, CLINIC, w.category)
    _grant(gw, 13, PHARMACY, w.category)
    gw.wait_indexed()
    pharmacy = gw.login(dev(PHARMACY))
    r = pharmacy.get(f"/v1/records/{w.records[13]}", params={"purpose": "treatment"})
    assert r.status_code == 200, r.text
    revoked = gw.ledger.consents.revoke(dev(13), dev(PHARMACY).address).block_number
    _anchor_all(gw)
    export = tmp_path / "journal.jsonl"
    gw.components.journal.export(export)
    entries = [o for o in (orjson.loads(x) for x in export.read_bytes().splitlines()) if o["type"] == "entry"]
    honest = next(e for e in reversed(entries) if e["requester"] == dev(PHARMACY).address)
    n = len(entries)

    def block_hash(b: int) -> str:
        return "0x" + bytes(gw.client.w3.eth.get_block(b)["hash"]).hex()

    now_ms = int(time.time() * 1000)
    base = {k: honest[k] for k in ("requester", "patient", "record_id", "purpose", "consent_id", "emergency")}
    forged = [
        # the state it names already has the revocation
        {
            **base,
            "access_hash": "0x" + "a1" * 32,
            "released_at": now_ms,
            "state_block": revoked,
            "state_block_hash": block_hash(revoked),
            "state_seen_at": now_ms - 10,
        },
        # a block hash that is not the chain's
        {
            **base,
            "access_hash": "0x" + "a2" * 32,
            "released_at": now_ms,
            "state_block": revoked - 1,
            "state_block_hash": "0x" + "ee" * 32,
            "state_seen_at": now_ms - 10,
        },
        # the journal shows the revocation's state in use (entry n + 3) before this one's head observation
        {
            **base,
            "access_hash": "0x" + "a3" * 32,
            "released_at": now_ms + 500,
            "state_block": revoked - 1,
            "state_block_hash": block_hash(revoked - 1),
            "state_seen_at": now_ms + 400,
        },
        {
            **base,
            "requester": dev(CLINIC).address,
            "access_hash": "0x" + "a4" * 32,
            "released_at": now_ms + 100,
            "state_block": revoked,
            "state_block_hash": block_hash(revoked),
            "state_seen_at": now_ms + 50,
        },
    ]
    consent = gw.ledger.consents.consent_of(dev(13).address, dev(CLINIC).address)
    forged[3]["consent_id"] = "0x" + consent.consent_id.hex()
    path = tmp_path / "forged.jsonl"
    _append(export, forged, path)
    report = replay(gw.client, gw.manifest, journal=path, clock_skew=None, anchor_grace=10**6)
    by_entry: dict[int, list[str]] = {}
    for a in report.anomalies:
        if isinstance(a.evidence.get("entry_index"), int):
            by_entry.setdefault(a.evidence["entry_index"], []).append(a.kind)
    assert by_entry.get(n) == ["access_after_revocation"], by_entry
    assert by_entry.get(n + 1) == ["entry_state_block_invalid"], by_entry
    assert by_entry.get(n + 2) == ["stale_decision"], by_entry
    assert n + 3 not in by_entry, by_entry
    stale = next(a for a in report.anomalies if a.kind == "stale_decision")
    assert stale.evidence["change_block"] == revoked and stale.evidence["change"] == "access_after_revocation"
    assert report.exit_code == 1
    assert [k for i, ks in by_entry.items() if i < n for k in ks if k not in (WINDOW, "emergency_access")] == []


def test_checkpoint_and_resume_reach_the_full_verdict_under_races(world: World, tmp_path: Path) -> None:
    """A checkpoint taken while releases race consent changes, then more racing releases: the resumed
    replay reaches the verdict of a full replay (same kinds, same counts), reading fewer entries."""
    w = world
    gw = w.gw
    _grant(gw, 13, LAB, w.category)
    _grant(gw, 11, LAB, w.category)
    with Load(w, [(LAB, [13, 11])] * 4) as load:
        time.sleep(0.8)
        gw.ledger.consents.revoke(dev(13), dev(LAB).address)
        time.sleep(0.6)
    assert not load.failures, load.failures[:3]
    first, _ = _audit(w, tmp_path, checkpoint=True, checkpoint_margin=1)
    assert first.exit_code == 0, [a.to_json() for a in first.errors][:3]
    cp = read_checkpoint(write_checkpoint(first, tmp_path / "cp.json"))
    assert 0 < cp["journal"]["position"] <= first.summary["journal_entries"]

    with Load(w, [(LAB, [11, 13])] * 4) as load:
        time.sleep(0.6)
        _grant(gw, 13, LAB, w.category)
        time.sleep(0.6)
        gw.ledger.consents.revoke(dev(11), dev(LAB).address)
        time.sleep(0.6)
    assert not load.failures, load.failures[:3]
    (tmp_path / "2").mkdir()
    full, export = _audit(w, tmp_path / "2")
    resumed = replay(gw.client, gw.manifest, journal=export, clock_skew=None, resume=cp)
    assert full.kinds() == resumed.kinds()
    assert full.exit_code == resumed.exit_code == 0, [a.to_json() for a in full.errors][:3]
    for key in (
        "accesses",
        "journal_entries",
        "strict_accesses",
        "accesses_ok",
        "accesses_review",
        "accesses_anomalous",
        "errors",
        "reviews",
        "events",
        "blocks",
    ):
        assert full.summary[key] == resumed.summary[key], key
    assert len(resumed.accesses) < len(full.accesses)
