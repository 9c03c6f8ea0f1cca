"""Outages of what the gateway depends on, against a gateway running as its own process:

* the chain endpoint stopped (connection refused) and started again, and the node frozen (SIGSTOP):
  every request meanwhile is 503 ``chain_unavailable``, nothing is released, service resumes by itself;
* the local blob directory replaced by a file, and an IPFS node stopped and started again:
  503 ``storage_unavailable``, nothing released, recovery;
* a full disk under the blob store (507 ``storage_full``, no partial file, no pending row) and under the
  journal (503 ``journal_unavailable``; every acknowledged release is in the journal; the journal stays
  failed until the gateway restarts, then works with its hash chain intact).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ledger.journal import Journal
from gateway.ops.reconcile import reconcile
from gateway.storage.db import Database
from node_client.vocabulary import parse_purposes
from tests.support.fault_harness import FaultChain, GatewayProcess, TcpProxy, fresh_allergy
from tests.support.gateway_harness import CLINIC, HOSPITAL, dev

pytestmark = pytest.mark.slow  # gateway processes through chain, store and disk outages (~1 min)

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultChain]:
    c = FaultChain.start(tmp_path_factory.mktemp("outages"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def own_chain(tmp_path: Path) -> Iterator[FaultChain]:
    """A chain of its own for a batch-mode gateway: a gateway refuses to start with a journal that does
    not reproduce the anchors its account already has on the chain (another gateway's, here)."""
    c = FaultChain.start(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def _grant(chain: FaultChain, patient: int) -> None:
    now = chain.client.block_timestamp()
    chain.ledger.consents.grant(
        dev(patient),
        dev(CLINIC).address,
        chain.slots(dev(patient), "allergies"),
        parse_purposes("treatment"),
        now,
        now + 86_400,
    )


def _upload(gw: GatewayProcess, patient: int) -> str:
    with gw.http(dev(HOSPITAL)) as hospital:
        r = hospital.post(
            "/v1/records", params={"patient": dev(patient).address}, content=fresh_allergy(), headers=FHIR
        )
    assert r.status_code == 201, r.text
    return str(r.json()["records"][0]["recordId"])


def _release(gw: GatewayProcess, record: str) -> tuple[int, dict]:
    with gw.http(dev(CLINIC), timeout=60) as clinic:
        r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
    return r.status_code, r.json()


def _ledger_count(gw: GatewayProcess, chain: FaultChain) -> int:
    """Releases ledgered so far: AccessLogged events (strict) or journal entries (batch)."""
    if gw.mode == "strict":
        return len(list(chain.ledger.access.events(["AccessLogged"])))
    return int(gw.health()["checks"]["journal"]["size"])


def _assert_reconciled(gw: GatewayProcess) -> None:
    """Reconcile (gateway stopped) leaves nothing outstanding. Gateways of this module share one chain
    and gateway account, so each sees the others' registrations as "registered without a key here"."""
    settings = gw.settings()
    reconcile(settings)
    report = reconcile(settings, dry_run=True)
    left = [f for f in report.outstanding if f.kind != "registration_without_key"]
    assert not left, report.findings


def _wait_outage_noticed(gw: GatewayProcess) -> None:
    """Batch mode answers consent from the indexer's read model while it counts as synced (its last
    poll succeeded less than max(2 s, 8 polls) ago, gateway.access.policy): a request in that window after the
    chain went away can still be released (journaled) on the cached decision. From the first failed
    poll on, the read model is not used and everything needs the chain. Wait for that point."""
    import time

    deadline = time.monotonic() + 30
    while gw.health()["checks"]["indexer"]["ok"]:
        assert time.monotonic() < deadline, "the indexer never noticed the outage"
        time.sleep(0.1)


def _assert_refused(status: int, body: dict, code: str) -> None:
    assert (
        status
        == {"chain_unavailable": 503, "storage_unavailable": 503, "journal_unavailable": 503, "storage_full": 507}[code]
        and body["code"] == code
    ), (status, body)
    assert "encryption" not in body and "resource" not in body


# ---------------------------------------------------------------------------------------- chain


@pytest.mark.parametrize("mode", ["strict", "batch"])
def test_chain_endpoint_stopped_and_started_again(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    chain: FaultChain = request.getfixturevalue("chain" if mode == "strict" else "own_chain")
    proxy = TcpProxy(int(chain.node.url.rsplit(":", 1)[1])).start()
    patient = 10 if mode == "strict" else 11
    gw = GatewayProcess(chain, tmp_path / "gw", mode=mode, rpc_url=proxy.url, rpc_timeout=2).start()
    try:
        record = _upload(gw, patient)
        _grant(chain, patient)
        assert _release(gw, record)[0] == 200
        before = _ledger_count(gw, chain)
        proxy.stop()
        try:
            if mode == "batch":
                _wait_outage_noticed(gw)
                before = _ledger_count(gw, chain)  # the journal answers without the chain
            for _ in range(3):
                _assert_refused(*_release(gw, record), "chain_unavailable")
            with gw.http(dev(HOSPITAL)) as hospital:
                r = hospital.post(
                    "/v1/records", params={"patient": dev(patient).address}, content=fresh_allergy(), headers=FHIR
                )
            assert r.status_code == 503 and r.json()["code"] == "chain_unavailable", r.text
            health = gw.health()
            assert health["status"] == "degraded" and not health["checks"]["chain"]["ok"]
        finally:
            proxy.start()
        assert _ledger_count(gw, chain) == before  # zero releases during the outage
        status, body = _release(gw, record)  # resumes by itself
        assert status == 200, body
        assert _ledger_count(gw, chain) == before + 1
        if mode == "batch":
            # frozen (SIGSTOP): connections are accepted but never answered, each call waits for
            # HCL_RPC_TIMEOUT
            with chain.frozen():
                _wait_outage_noticed(gw)
                before = _ledger_count(gw, chain)
                for _ in range(2):
                    _assert_refused(*_release(gw, record), "chain_unavailable")
                assert _ledger_count(gw, chain) == before
            assert _release(gw, record)[0] == 200
        # the upload refused during the outage left pending rows and blobs: reconcile removes them
        gw.stop()
        _assert_reconciled(gw)
        proxy.stop()
        assert gw.reconcile_cli("--dry-run").returncode == 2  # cannot run without the chain: says so
    finally:
        gw.stop()
        proxy.stop()


def test_gateway_refuses_a_journal_the_chain_contradicts(own_chain: FaultChain, tmp_path: Path) -> None:
    """Journal rolled back (replaced by an older copy): the chain holds an anchor it cannot reproduce."""
    import time

    chain = own_chain
    gw = GatewayProcess(chain, tmp_path / "gw", mode="batch")
    journal = gw.settings().journal_path
    Journal(journal).close()  # the journal as a backup taken before these releases has it: empty
    shutil.copy(journal, tmp_path / "journal-backup.db")
    gw.start()
    try:
        record = _upload(gw, 17)
        _grant(chain, 17)
        for _ in range(2):
            assert _release(gw, record)[0] == 200
        deadline = time.monotonic() + 20
        while gw.health()["checks"]["journal"]["anchoredSize"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        gw.stop()
    current = tmp_path / "journal-current.db"
    journal.rename(current)
    for suffix in ("-wal", "-shm"):
        journal.with_name(journal.name + suffix).unlink(missing_ok=True)
    shutil.copy(tmp_path / "journal-backup.db", journal)  # the rollback
    with pytest.raises(RuntimeError, match="JournalBehindChain"):
        gw.start()
    done = gw.reconcile_cli("--json")
    assert done.returncode == 1 and '"journal_behind_chain"' in done.stdout, done.stdout + done.stderr
    journal.unlink()
    current.rename(journal)  # the real journal back: starts, anchors agree
    gw.start()
    try:
        assert _release(gw, record)[0] == 200
    finally:
        gw.stop()


# ---------------------------------------------------------------------------------------- storage


def test_blob_directory_replaced_by_a_file(chain: FaultChain, tmp_path: Path) -> None:
    gw = GatewayProcess(chain, tmp_path / "gw", mode="strict").start()
    blobs = gw.settings().blob_dir
    try:
        record = _upload(gw, 13)
        _grant(chain, 13)
        assert _release(gw, record)[0] == 200
        before = _ledger_count(gw, chain)
        away = blobs.with_name("blobs-away")
        blobs.rename(away)
        blobs.write_bytes(b"not a directory")  # root cannot "chmod" its way out of reading: a file it is
        try:
            _assert_refused(*_release(gw, record), "storage_unavailable")
            with gw.http(dev(HOSPITAL)) as hospital:
                r = hospital.post(
                    "/v1/records", params={"patient": dev(13).address}, content=fresh_allergy(), headers=FHIR
                )
            _assert_refused(r.status_code, r.json(), "storage_unavailable")
            assert gw.health()["checks"]["storage"]["ok"] is False
            assert _ledger_count(gw, chain) == before
        finally:
            blobs.unlink()
            away.rename(blobs)
        assert _release(gw, record)[0] == 200
        _upload(gw, 13)
    finally:
        gw.stop()
    _assert_reconciled(gw)  # the refused upload left nothing behind


from tests.support.ipfs_fixture import IpfsNode, node_or_skip  # noqa: E402


def _restart_ipfs(node: IpfsNode) -> None:
    """Starts the daemon again on the same repo and the same API port (stop() left both)."""
    port = node.api_url.rsplit(":", 1)[1]
    node.ipfs("config", "Addresses.API", f"/ip4/127.0.0.1/tcp/{port}")
    log = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        node.process = subprocess.Popen(
            [str(node.binary), "daemon", "--offline"],
            env=node.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    import time
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(node.api_url + "/api/v0/id", method="POST"), timeout=2)
            return
        except OSError:
            assert node.process.poll() is None and time.monotonic() < deadline, node.log_tail()
            time.sleep(0.1)


def test_ipfs_node_stopped_and_started_again(chain: FaultChain, tmp_path: Path) -> None:
    (tmp_path / "ipfs").mkdir()
    node = node_or_skip(tmp_path / "ipfs")
    gw = GatewayProcess(chain, tmp_path / "gw", mode="strict", store="ipfs", ipfs_api=node.api_multiaddr).start()
    try:
        record = _upload(gw, 14)
        _grant(chain, 14)
        assert _release(gw, record)[0] == 200
        before = _ledger_count(gw, chain)
        node.stop()
        try:
            _assert_refused(*_release(gw, record), "storage_unavailable")
            with gw.http(dev(HOSPITAL)) as hospital:
                r = hospital.post(
                    "/v1/records", params={"patient": dev(14).address}, content=fresh_allergy(), headers=FHIR
                )
            _assert_refused(r.status_code, r.json(), "storage_unavailable")
            assert _ledger_count(gw, chain) == before
        finally:
            _restart_ipfs(node)
        assert _release(gw, record)[0] == 200
        _upload(gw, 14)
    finally:
        gw.stop()
        node.stop()


# ---------------------------------------------------------------------------------------- disk full


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("needs root and mount(8) to make a small tmpfs")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Writes a filler file until the filesystem is full (ENOSPC)."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_blob_store_disk_full_is_507_and_leaves_nothing(chain: FaultChain, tmp_path: Path, tmpfs) -> None:
    data_dir = tmp_path / "gw"
    tmpfs(data_dir / "blobs", "1m")
    gw = GatewayProcess(chain, data_dir, mode="strict").start()
    try:
        record = _upload(gw, 15)
        _grant(chain, 15)
        filler = _fill(data_dir / "blobs")
        with gw.http(dev(HOSPITAL)) as hospital:
            r = hospital.post("/v1/records", params={"patient": dev(15).address}, content=fresh_allergy(), headers=FHIR)
        _assert_refused(r.status_code, r.json(), "storage_full")
        assert not list((data_dir / "blobs").glob("*/.tmp-*"))  # no partial blob
        db = Database(gw.settings().db_path)
        try:
            assert db.read().execute("SELECT count(*) FROM record_keys WHERE state != 'registered'").fetchone()[0] == 0
        finally:
            db.close()
        assert _release(gw, record)[0] == 200  # reading does not need space
        filler.unlink()
        _upload(gw, 15)  # recovers once space is freed
    finally:
        gw.stop()
    _assert_reconciled(gw)


def test_journal_disk_full_is_503_then_restart_recovers(own_chain: FaultChain, tmp_path: Path, tmpfs) -> None:
    chain = own_chain
    data_dir = tmpfs(tmp_path / "gw", "8m")
    gw = GatewayProcess(chain, data_dir, mode="batch").start()
    acked: list[tuple[int, str]] = []
    try:
        record = _upload(gw, 16)
        _grant(chain, 16)
        status, body = _release(gw, record)
        assert status == 200
        acked.append((body["ledger"]["journalIndex"], body["accessId"]))
        filler = _fill(data_dir)
        codes = []
        for _ in range(4):
            status, body = _release(gw, record)
            codes.append(body.get("code") if status != 200 else 200)
            if status == 200:
                acked.append((body["ledger"]["journalIndex"], body["accessId"]))
            else:
                _assert_refused(status, body, "journal_unavailable")
        assert "journal_unavailable" in codes and codes[codes.index("journal_unavailable") :] == [
            "journal_unavailable"
        ] * (len(codes) - codes.index("journal_unavailable")), codes
        filler.unlink()
        # a failed journal is not retried (after a failed fsync a retry can lie): it stays failed ...
        _assert_refused(*_release(gw, record), "journal_unavailable")
        health = gw.health()
        assert health["status"] == "degraded" and health["checks"]["journal"]["ok"] is False
    finally:
        gw.stop()
    with Journal(gw.settings().journal_path) as journal:  # ... until the gateway re-opens what is on disk
        journal.verify_chain()
        entries = {idx: "0x" + e.access_hash.hex() for idx, e, _ in journal.entries()}
        assert all(entries.get(i) == a for i, a in acked), (acked, entries)
    gw.start()
    try:
        status, body = _release(gw, record)
        assert status == 200, body
    finally:
        gw.stop()


# ---------------------------------------------------------------------------------------- lost data


def test_registered_record_whose_blob_vanished_is_marked_and_reported(chain: FaultChain, tmp_path: Path) -> None:
    """Reconcile cannot invent a ciphertext: it marks the record, reports it, and undoes the mark once
    the blob is restored (from a backup)."""
    gw = GatewayProcess(chain, tmp_path / "gw", mode="strict").start()
    try:
        record = _upload(gw, 18)
        _grant(chain, 18)
        assert _release(gw, record)[0] == 200
    finally:
        gw.stop()
    settings = gw.settings()
    (blob,) = [f for f in settings.blob_dir.glob("*/b*")]
    backup = tmp_path / "blob-backup"
    blob.rename(backup)
    report = reconcile(settings)
    (lost,) = [f for f in report.findings if f.kind == "blob_missing"]
    assert lost.severity == "lost" and lost.subject == record[2:] and report.exit_code == 1
    db = Database(settings.db_path)
    try:
        state = db.read().execute("SELECT state FROM record_keys").fetchone()[0]
    finally:
        db.close()
    assert state == "missing_blob"
    gw.start()
    try:
        status, body = _release(gw, record)
        assert status == 404 and body["code"] == "record_not_found", body
    finally:
        gw.stop()
    backup.rename(blob)
    assert [f.kind for f in reconcile(settings).findings if f.repaired] == ["blob_restored"]
    gw.start()
    try:
        assert _release(gw, record)[0] == 200
    finally:
        gw.stop()
