"""Catching up with a long chain: the same read model whatever the pages, and a gateway that serves meanwhile.

A fresh read model is built in pages sized by the events they hold, with the blocks' timestamps fetched
in batches; it must hold exactly what the read model that followed the chain block by block holds. A
gateway whose read model is far behind answers ``/healthz`` at once (``catchingUp``), decides releases
from the chain, and refuses (503 ``catching_up``) the views only the read model could answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.catchup import grow
from gateway.ledger.indexer import Indexer
from gateway.storage import read_model
from gateway.storage.db import Database
from gateway.wiring import Components
from node_client.vocabulary import parse_purposes
from tests.support.gateway_harness import (
    CLINIC,
    HOSPITAL,
    SAMPLES,
    RunningGateway,
    dev,
    restarted,
    running_gateway,
)

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
FHIR = {"Content-Type": "application/fhir+json"}
PATIENT = 10


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("catch-up"), ledger_mode="batch") as running:
        yield running


def _upload(gw: RunningGateway) -> dict[str, str]:
    r = gw.login(dev(HOSPITAL)).post(
        "/v1/records", params={"patient": dev(PATIENT).address}, content=SYNTHEA.read_bytes(), headers=FHIR
    )
    assert r.status_code == 201, r.text
    return {rec["category"]: rec["recordId"] for rec in r.json()["records"]}


def _grant(gw: RunningGateway, grantee: str, categories: str) -> None:
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(PATIENT), grantee, gw.slots(dev(PATIENT), categories), parse_purposes("treatment"), now - 10, now + 86_400
    )


def _rows(db: Database) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every read-model table, in a fixed order."""
    out = {}
    for table in read_model.CHAIN_TABLES:
        out[table] = sorted(tuple(r) for r in db.read().execute(f"SELECT * FROM {table}"))
    return out


def test_a_fresh_catch_up_builds_the_read_model_that_following_the_chain_built(
    gw: RunningGateway, tmp_path: Path
) -> None:
    _upload(gw)
    _grant(gw, dev(CLINIC).address, "lab-results")
    grow(gw.client, gw.manifest, 600, per_block=25, patients=40)  # 24 blocks of 25 grants
    gw.ledger.consents.revoke(dev(PATIENT), dev(CLINIC).address)
    gw.client.rpc(lambda: gw.client.w3.provider.make_request("hardhat_mine", [hex(300)]))  # empty blocks
    gw.wait_indexed()

    # small pages: the span adapts to ~40 events, so the 25-grant blocks come a block or two at a time
    fresh = Indexer(
        gw.ledger,
        Database(tmp_path / "fresh.sqlite"),
        deploy_block=gw.manifest.deploy_block,
        page_size=64,
        page_events=40,
    )
    assert fresh.poll_once() > 600
    assert fresh.indexed_block == gw.components.indexer.indexed_block
    followed, rebuilt = _rows(gw.components.db), _rows(fresh.db)
    assert len(rebuilt["chain_consent_events"]) > 600
    assert rebuilt == followed
    times = fresh.db.read().execute("SELECT DISTINCT block, time FROM chain_consent_events").fetchall()
    assert len(times) > 20
    for block, when in times:
        assert when == gw.client.block_timestamp(block)


def _forget_the_read_model(settings_db: Path, deploy_block: int) -> None:
    """The read model emptied, as on a fresh data directory (the gateway's own rows stay: it holds the records)."""
    db = Database(settings_db)
    with db.write() as conn:
        read_model.clear(conn)
        db.set_meta(conn, "indexed_block", deploy_block - 1)
    db.close()


def _slow_catch_up(c: Components) -> None:
    c.indexer.page_size = 1  # a page per block: thousands of pages to go


def test_a_gateway_serves_while_it_catches_up(tmp_path: Path) -> None:
    with running_gateway(tmp_path, ledger_mode="batch") as first:
        # thousands of blocks before the record: a page per block reaches it only after a long while
        first.client.rpc(lambda: first.client.w3.provider.make_request("hardhat_mine", [hex(5_000)]))
        records = _upload(first)
        _grant(first, dev(CLINIC).address, "lab-results")
        first.wait_indexed()
        _forget_the_read_model(first.settings.db_path, first.manifest.deploy_block)
        with restarted(first, _slow_catch_up) as gw:
            health = gw.http().get("/healthz")
            indexer = health.json()["checks"]["indexer"]
            assert gw.components.indexer.catching_up
            assert health.status_code == 200, health.text  # decisions go to the chain meanwhile
            assert indexer["catchingUp"] is True and indexer["synced"] is False
            assert indexer["lagBlocks"] > 1_000
            assert "hcl_indexer_catching_up 1.0" in gw.http().get("/metrics").text
            record = bytes.fromhex(records["lab-results"].removeprefix("0x"))
            assert read_model.record(gw.components.db, record) is None

            # a release is decided by the chain; its registration is read from the chain, not the read model
            chain = gw.components.metrics.decisions.labels(source="chain")._value.get()
            r = gw.login(dev(CLINIC)).get(f"/v1/records/{records['lab-results']}", params={"purpose": "treatment"})
            assert r.status_code == 200, r.text
            assert gw.components.metrics.decisions.labels(source="chain")._value.get() == chain + 1
            r = gw.login(dev(CLINIC)).get(f"/v1/records/{records['medications']}", params={"purpose": "treatment"})
            assert r.status_code == 403 and r.json()["code"] == "wrong_category"

            # a list only the read model holds is not answered incomplete
            patient = gw.login(dev(PATIENT))
            r = patient.get("/v1/me/records")
            assert r.status_code == 503 and r.json()["code"] == "catching_up", r.text
            for fhir in ("/fhir/Consent", "/fhir/AuditEvent"):  # the FHIR views of the same read model
                r = patient.get(fhir, params={"patient": dev(PATIENT).address})
                assert r.status_code == 503 and r.json()["code"] == "catching_up", (fhir, r.text)
            assert gw.components.indexer.catching_up  # all of it while the read model was behind

            gw.components.indexer.page_size = 2_000  # let it finish
            gw.wait_caught_up(timeout=60)
            assert gw.http().get("/healthz").json()["checks"]["indexer"]["catchingUp"] is False
            r = patient.get("/v1/me/records")
            assert r.status_code == 200 and len(r.json()["records"]) == len(records), r.text
            r = patient.get("/fhir/Consent", params={"patient": dev(PATIENT).address})
            assert r.status_code == 200 and r.json()["total"] == 1, r.text
