"""The growth benchmark's own parts (``./scripts/bench growth``): what it generates is what the gateway reads.

Its rows must be the ones discovery and ``/v1/me/records`` page through (or it measures nothing), a
journal generated once must be reused and copied whole (sealed segments too), and the plot must be drawn
from a result file, the same bytes each time.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from bench.journal_growth import HEAVY, copy_journal, generate, journal_file
from bench.records_growth import CODE, PATIENT, _records, fill
from gateway.ledger.journal import Journal
from gateway.ledger.segments import segment_path
from gateway.storage import read_model, record_keys
from gateway.storage.db import Database
from node_client.keys import dev_account


def test_filled_records_are_what_discovery_pages(tmp_path: Path) -> None:
    db = Database(tmp_path / "gateway.db")
    gateway, provider = dev_account(3).address, dev_account(4).address
    slot = 9  # any slot: the rows of a record, whichever category it holds
    fill(db, _records(PATIENT, 0, 30, every_other=True), provider=provider, gateway=gateway, slot=slot)
    fill(db, _records(11, 0, 30, every_other=False), provider=provider, gateway=gateway, slot=slot)
    patient = dev_account(PATIENT).address
    coded = record_keys.discoverable_page(db, patient, before=None, limit=50, code=CODE)
    assert len(coded) == 15  # every other record of the patient has the code; none of patient 11's
    assert [r.time for r in coded] == sorted((r.time for r in coded), reverse=True)
    assert len(record_keys.discoverable_page(db, patient, before=None, limit=50)) == 30
    assert len(read_model.records_page(db, patient, before=None, limit=50)) == 30
    assert db.read().execute("SELECT count(*) FROM resource_index").fetchone()[0] == 60 * 4


def test_a_generated_journal_is_made_once(tmp_path: Path) -> None:
    path = journal_file(300, tmp_path, log=lambda _: None)
    made = path.stat().st_mtime_ns
    assert journal_file(300, tmp_path, log=lambda _: None) == path
    assert path.stat().st_mtime_ns == made
    (path.parent / "complete").unlink()  # as if interrupted: made again
    journal_file(300, tmp_path, log=lambda _: None)
    assert path.stat().st_mtime_ns != made


def test_a_journal_is_copied_with_its_sealed_segments(tmp_path: Path) -> None:
    path = tmp_path / "made" / "journal.db"
    generate(path, 300, 8, segment_entries=100)
    sealed = segment_path(path, 1)
    assert sealed.exists()
    copy_journal(path, tmp_path / "data")
    assert (tmp_path / "data" / sealed.name).stat().st_ino == sealed.stat().st_ino  # linked, not copied
    with Journal(tmp_path / "data" / "journal.db") as j:
        assert j.size == 300
        assert j.verify_all() == 300  # the sealed rows read from the linked segment
        assert next(j.entries(8, 9))[1].patient == dev_account(HEAVY).address


def test_the_plot_is_drawn_from_a_result_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from bench.plot import growth_svg

    starts = [{"healthz_s": 3.1, "peak_rss_mb": 140}, {"healthz_s": 2.0, "peak_rss_mb": 130}]
    journal = {"size": 10_000, "starts": starts, "healthz_s": 3.1, "peak_rss_mb": 140, "peak_rss_after_mb": 141}
    data = {
        "journal": {
            "goals": {"healthz_s": 5, "peak_rss_mb": 300, "access_log_ms": 50},
            "points": [
                {**journal, "access_log_ms": 9.0, "proof_ms": 3.0},
                {**journal, "size": 100_000, "access_log_ms": 10.0, "proof_ms": 4.0},
            ],
        },
        "records": {
            "code": CODE,
            "goals": {"discovery_code_ms": 50},
            "points": [
                {"records": n, "discovery_code_ms": 4.0, "discovery_ms": 5.0, "me_records_ms": 2.0} for n in (100, 1000)
            ],
        },
    }  # no catch-up part: its panels stay empty
    first = growth_svg(data, tmp_path / "a.svg").read_bytes()
    assert growth_svg(data, tmp_path / "b.svg").read_bytes() == first
    text = first.decode()
    ElementTree.fromstring(text)  # well-formed
    for title in ("Gateway start-up to /healthz 200", "Records, first page", "goal 50"):
        assert title in text
