"""The auditor over a journal stored in sealed segments (issue 21): a gateway sealing every 2 entries,
its export replayed clean, a sealed range tampered with caught (in the export, and on disk)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ledger.journal import JournalCorrupt
from gateway.ledger.segments import segment_path
from node_client.audit import replay
from node_client.merkle import verify_inclusion
from tests.client.test_audit import FHIR, _grant, _lines, _save, _skew
from tests.support.gateway_harness import CLINIC, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

RELEASES = 7


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path, int]]:
    tmp = tmp_path_factory.mktemp("segmented")
    with running_gateway(tmp, ledger_mode="batch", journal_segment_entries=2) as gw:
        hospital = gw.login(dev(HOSPITAL))
        body = (SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes()
        up = hospital.post("/v1/records", params={"patient": dev(14).address}, content=body, headers=FHIR).json()
        record = up["records"][0]["recordId"]
        _grant(gw, 14, dev(CLINIC).address, up["records"][0]["category"])
        skew = _skew(gw)
        clinic = gw.login(dev(CLINIC))
        for _ in range(RELEASES):
            r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
            assert r.status_code == 200, r.text
        journal = gw.components.journal
        assert journal is not None
        deadline = time.monotonic() + 60  # seconds on an idle machine; a loaded 2-core one needs more
        while (journal.last_anchor() or (0,))[0] < RELEASES or len(journal._segments) < 3:
            assert time.monotonic() < deadline, "no anchor of the whole journal or too few segments"
            time.sleep(0.2)  # 7 releases, sealed every 2 (by a sealer thread, while releases go on)
        export = tmp / "journal.jsonl"
        assert journal.export(export) == RELEASES
        yield gw, export, skew


def test_a_segmented_journal_replays_clean(segmented) -> None:
    gw, export, skew = segmented
    report = replay(gw.client, gw.manifest, journal=export, clock_skew=skew)
    assert report.anomalies == [], [a.to_json() for a in report.anomalies]
    assert report.summary["journal_entries"] == RELEASES
    assert all(r.anchored and r.status == "ok" for r in report.accesses)
    clinic = gw.login(dev(CLINIC))
    for idx in range(RELEASES):  # the inclusion-proof endpoint, for entries of every segment
        body = clinic.get(f"/v1/accesses/{idx}/proof").json()
        assert body["anchored"], body
        root, size = bytes.fromhex(body["anchor"]["root"][2:]), body["anchor"]["treeSize"]
        proof = [bytes.fromhex(h[2:]) for h in body["inclusionProof"]]
        assert verify_inclusion(bytes.fromhex(body["leafHash"][2:]), idx, size, proof, root)


def test_an_entry_of_a_sealed_segment_edited_in_the_export_is_caught(segmented, tmp_path: Path) -> None:
    gw, export, skew = segmented
    objs = _lines(export)
    objs[1 + 1]["released_at"] += 1  # entry 1: sealed segment 1, [0, 2)
    edited = tmp_path / "edited.jsonl"
    _save(edited, objs)
    kinds = replay(gw.client, gw.manifest, journal=edited, clock_skew=skew).kinds()
    assert kinds["journal_chain_broken"] >= 1 and kinds["journal_root_mismatch"] >= 1


def test_a_sealed_segment_changed_on_disk_is_not_exported(segmented, tmp_path: Path) -> None:
    gw = segmented[0]
    journal = gw.components.journal
    seg = segment_path(journal.path, 1)
    conn = sqlite3.connect(seg)
    try:
        conn.execute("UPDATE entries SET entry = entry || x'00' WHERE idx = 0")
        conn.commit()
        with pytest.raises(JournalCorrupt, match="entry 0"):
            journal.export(tmp_path / "export.jsonl")
    finally:
        conn.execute("UPDATE entries SET entry = substr(entry, 1, length(entry) - 1) WHERE idx = 0")
        conn.commit()
        conn.close()
