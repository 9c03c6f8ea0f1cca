"""The auditor's later checks against a real batch-mode gateway on its own Hardhat chain: checkpoint and
resume, stored-blob re-hashing, releases a requester holds that no ledger has (the ledger step disabled in
a test-only build of the release flow), the sender of strict accesses, and entries judged at their block."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from node_client.audit import Anomaly, read_checkpoint, replay, write_checkpoint
from node_client.audit.journal import FieldCodec
from node_client.audit_cli import audit_app
from node_client.blobs import local_blob_path
from node_client.contracts import AccessEntry, Action
from node_client.journal_entry import JournalEntry
from node_client.vocabulary import Purpose, parse_categories, parse_purposes
from tests.support.gateway_harness import CLINIC, GATEWAY, HOSPITAL, SAMPLES, RunningGateway, dev, running_gateway

FHIR = {"Content-Type": "application/fhir+json"}
OBSERVATION = SAMPLES / "hl7-r4" / "Observation-f001.json"


def _grant(gw: RunningGateway, patient: int, grantee: str, categories: int) -> None:
    now = gw.client.block_timestamp()
    slots = gw.slots(dev(patient), categories)
    gw.ledger.consents.grant(dev(patient), grantee, slots, parse_purposes("treatment"), now, now + 86_400)


def _wait_anchored(gw: RunningGateway) -> None:
    gw.components.anchorer.anchor_once()


def _reads(gw: RunningGateway, record: str, n: int) -> list[dict[str, Any]]:
    clinic = gw.login(dev(CLINIC))
    out = []
    for _ in range(n):
        r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str, int]]:
    tmp = tmp_path_factory.mktemp("audit-more")
    with running_gateway(tmp, ledger_mode="batch") as gw:
        hospital = gw.login(dev(HOSPITAL))
        up = hospital.post(
            "/v1/records", params={"patient": dev(15).address}, content=OBSERVATION.read_bytes(), headers=FHIR
        ).json()
        record = up["records"][0]["recordId"]
        category = parse_categories(up["records"][0]["category"])
        _grant(gw, 15, dev(CLINIC).address, category)
        _reads(gw, record, 3)
        _wait_anchored(gw)
        yield gw, record, category


def _export(gw: RunningGateway, path: Path) -> Path:
    gw.components.journal.export(path)
    return path


def test_field_codec_agrees_with_the_entry_format() -> None:
    """The auditor's fast re-encoder gives the bytes of JournalEntry.to_bytes, and refuses what it refuses."""
    rnd = random.Random(5)
    codec = FieldCodec()
    for _ in range(200):
        e = JournalEntry(
            requester="0x" + os.urandom(20).hex(),
            patient=dev(rnd.randrange(10, 18)).address.lower(),
            record_id=os.urandom(32),
            purpose=rnd.randrange(256),
            consent_id=os.urandom(32),
            emergency=rnd.random() < 0.5,
            access_hash=os.urandom(32),
            released_at=rnd.randrange(1 << 64),
        )
        data, fields = codec.encode(e.to_json())
        assert data == e.to_bytes()
        assert fields[0] == e.requester and fields[1] == e.patient  # checksummed like JournalEntry
    good = JournalEntry.from_bytes(data).to_json()
    for key, bad in (
        ("purpose", True),
        ("purpose", 256),
        ("emergency", 1),
        ("released_at", -1),
        ("requester", "0x12"),
        ("record_id", "0x" + "00" * 31),
        ("access_hash", "00" * 32),
    ):
        with pytest.raises(ValueError):
            codec.encode({**good, key: bad})


def test_checkpoint_then_resume_gives_the_full_verdict(gw, tmp_path: Path) -> None:
    g, record, category = gw
    first = _export(g, tmp_path / "j1.jsonl")
    # margin 0: the state is checkpointed right at the newest entry (releases are sequential here)
    r1 = replay(g.client, g.manifest, journal=first, clock_skew=None, checkpoint=True, checkpoint_margin=0)
    assert r1.exit_code == 0, [a.to_json() for a in r1.anomalies]
    cp_path = write_checkpoint(r1, tmp_path / "cp.json")
    cp = read_checkpoint(cp_path)
    assert cp["block"] >= g.manifest.deploy_block and cp["journal"]["position"] <= r1.summary["journal_entries"]
    assert cp["journal"]["position"] == 3 and cp["counts"]["journal"] == 3  # the three reads are settled

    # more activity after the checkpoint: releases, a revocation, a release crafted after it, anchors
    _reads(g, record, 4)
    _wait_anchored(g)
    g.ledger.consents.revoke(dev(15), dev(CLINIC).address)
    second = _export(g, tmp_path / "j2.jsonl")
    objs = [orjson.loads(x) for x in second.read_bytes().splitlines()]
    last_entry = [o for o in objs if o["type"] == "entry"][-1]
    late = {k: last_entry[k] for k in ("requester", "patient", "record_id", "purpose", "consent_id", "emergency")}
    late.update(access_hash="0x" + "42" * 32, released_at=(g.client.block_timestamp() + 5) * 1000)
    forged = tmp_path / "j3.jsonl"
    _rewrite_with(objs, late, forged)

    full = replay(g.client, g.manifest, journal=forged, clock_skew=None, anchor_grace=-(10**6))
    resumed = replay(g.client, g.manifest, journal=forged, clock_skew=None, anchor_grace=-(10**6), resume=cp)
    assert full.kinds() == resumed.kinds()
    assert full.kinds()["access_after_revocation"] == 1 and full.kinds()["journal_entry_unanchored"] == 1
    assert full.exit_code == resumed.exit_code == 1
    for key in (
        "accesses",
        "journal_entries",
        "strict_accesses",
        "accesses_ok",
        "accesses_anomalous",
        "errors",
        "events",
        "blocks",
    ):
        assert full.summary[key] == resumed.summary[key], key
    assert resumed.summary["resumed_from_block"] == cp["block"]
    _grant(g, 15, dev(CLINIC).address, category)  # for the tests that follow
    assert len(resumed.accesses) == len(full.accesses) - 3 - cp["counts"].get("strict", 0)

    # the resume refuses an export that does not extend the checkpointed journal
    edited = [dict(o) for o in objs]
    edited[cp["journal"]["position"]]["chain_hash"] = "0x" + "00" * 32  # the last checkpointed entry
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(orjson.dumps(o) for o in edited) + b"\n")
    assert replay(g.client, g.manifest, journal=bad, clock_skew=None, resume=cp).kinds()["journal_chain_broken"] >= 1


def _rewrite_with(objs: list[dict[str, Any]], extra: dict[str, Any], path: Path) -> None:
    """The export plus one forged entry with a valid hash chain (only the anchors can tell)."""
    from node_client.merkle import MerkleTree

    header, *rest = objs
    entries = [o for o in rest if o["type"] == "entry"]
    anchors = [o for o in rest if o["type"] == "anchor"]
    prev = bytes.fromhex(entries[-1]["chain_hash"][2:])
    data = JournalEntry.from_json(extra).to_bytes()
    leaf = hashlib.sha256(b"\x00" + data).digest()
    chain = hashlib.sha256(prev + leaf).digest()
    new = {
        "type": "entry",
        "idx": len(entries),
        **extra,
        "encoded": "0x" + data.hex(),
        "leaf_hash": "0x" + leaf.hex(),
        "chain_hash": "0x" + chain.hex(),
    }
    tree = MerkleTree()
    tree.extend([bytes.fromhex(e["leaf_hash"][2:]) for e in entries] + [leaf])
    header = {**header, "size": len(entries) + 1, "root": "0x" + tree.root().hex(), "chain_head": "0x" + chain.hex()}
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in [header, *entries, new, *anchors]) + b"\n")


def test_corrupted_blob_is_reported_with_evidence(gw, tmp_path: Path) -> None:
    g, record, _ = gw
    store = g.settings.blob_dir
    clean = replay(g.client, g.manifest, store=store)
    assert not [a for a in clean.anomalies if a.kind.startswith("blob_")], [a.to_json() for a in clean.anomalies]
    (row,) = (
        g.components.db.read()
        .execute("SELECT locator FROM record_keys WHERE record_id = ?", (bytes.fromhex(record[2:]),))
        .fetchall()
    )
    path = local_blob_path(store, bytes(row["locator"]))  # the layout the gateway's local store uses
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        report = replay(g.client, g.manifest, store=store)
        (bad,) = [a for a in report.anomalies if a.kind == "blob_hash_mismatch"]
        assert bad.evidence["record_id"] == record and bad.evidence["path"] == str(path)
        assert bad.evidence["stored_sha256"] == "0x" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert bad.evidence["content_hash"] != bad.evidence["stored_sha256"] and bad.evidence["tx_hash"]
        assert report.exit_code == 1
        path.unlink()
        assert replay(g.client, g.manifest, store=store).kinds()["blob_missing"] == 1
    finally:
        path.write_bytes(original)


def test_release_without_ledger_entry_is_reported_from_the_requesters_claims(gw, tmp_path: Path, monkeypatch) -> None:
    """A test-only build of the release flow whose ledger step does nothing (the journal append is
    replaced in this process only): the clinic still receives the record, and the auditor, given the
    responses the clinic holds, reports the one that no ledger has."""
    g, record, _ = gw
    honest = _reads(g, record, 1)[0]
    journal = g.components.journal

    class NoLedgerJournal:
        """Pretends to journal: returns the next index, writes nothing (what releases see is its answer)."""

        def append(self, entry: JournalEntry) -> int:
            return journal.size

        async def append_async(self, entry: JournalEntry) -> int:  # the event-loop release path
            return journal.size

    monkeypatch.setattr(g.components, "appender", NoLedgerJournal())  # what the release path appends through
    skipped = _reads(g, record, 1)[0]
    monkeypatch.undo()
    assert skipped["ledger"]["mode"] == "batch" and "encryption" in skipped
    _wait_anchored(g)
    export = _export(g, tmp_path / "j.jsonl")
    claims = tmp_path / "claims.jsonl"
    claims.write_bytes(
        b"\n".join(orjson.dumps({k: v for k, v in c.items() if k != "encryption"}) for c in (honest, skipped)) + b"\n"
    )
    report = replay(g.client, g.manifest, journal=export, clock_skew=None, claims=claims)
    (hit,) = [a for a in report.anomalies if a.kind == "release_without_ledger_entry"]
    assert hit.evidence["access_id"] == skipped["accessId"] and hit.evidence["line"] == 2
    assert report.exit_code == 1
    runner = CliRunner()
    res = runner.invoke(
        audit_app,
        [
            "replay",
            "--rpc-url",
            g.settings.rpc_url,
            "--manifest",
            str(g.settings.manifest),
            "--journal",
            str(export),
            "--claims",
            str(claims),
            "--out",
            str(tmp_path / "o"),
            "--json",
        ],
    )
    assert res.exit_code == 1 and orjson.loads(res.stdout)["summary"]["by_kind"]["release_without_ledger_entry"] == 1


def test_strict_access_sender_must_be_an_active_gateway(gw) -> None:
    """logAccess itself insists on a gateway; the auditor checks the sender too, against the state it
    rebuilt: a gateway that lost its role later does not taint accesses it ledgered before."""
    g, record, _ = gw
    g.ledger.access.log_access(
        dev(GATEWAY),
        dev(CLINIC).address,
        dev(15).address,
        bytes.fromhex(record[2:]),
        int(Purpose.TREATMENT),
        b"\x07" * 32,
    )
    report = replay(g.client, g.manifest)
    strict = [r for r in report.accesses if r.source == "strict"]
    assert strict and all(r.gateway == dev(GATEWAY).address for r in strict)
    assert "access_logged_by_non_gateway" not in report.kinds()
    admins = [dev(0), dev(1)]
    g.ledger.members.enact(admins, Action.SUSPEND_MEMBER, dev(GATEWAY).address)
    try:
        assert "access_logged_by_non_gateway" not in replay(g.client, g.manifest).kinds()
    finally:
        g.ledger.members.enact(admins, Action.REINSTATE_MEMBER, dev(GATEWAY).address)


def test_batch_logged_strict_accesses_replay_clean(gw) -> None:
    """``logAccessBatch`` emits the very ``AccessLogged`` of ``logAccess``: the auditor judges each entry
    of a group commit at its block with the transaction's sender as the gateway, and a refused entry
    (``AccessRefused``, no health facts) is no access at all."""
    g, record, _ = gw
    rid = bytes.fromhex(record[2:])
    hashes = [hashlib.sha256(f"group-commit-{i}".encode()).digest() for i in range(3)]
    who = [dev(CLINIC).address, dev(HOSPITAL).address, dev(CLINIC).address]  # the hospital has no consent
    entries = [
        AccessEntry(w, dev(15).address, rid, int(Purpose.TREATMENT), x) for w, x in zip(who, hashes, strict=True)
    ]
    outcomes, tx = g.ledger.access.log_access_batch(dev(GATEWAY), entries)
    assert [o.logged for o in outcomes] == [True, False, True]
    report = replay(g.client, g.manifest)
    rows = [r for r in report.accesses if r.tx_hash == tx.tx_hash]
    assert sorted(r.access_hash for r in rows) == sorted("0x" + x.hex() for x in (hashes[0], hashes[2]))
    assert all((r.source, r.gateway, r.status) == ("strict", dev(GATEWAY).address, "ok") for r in rows)
    assert not [a for a in report.anomalies if a.evidence.get("tx_hash") == tx.tx_hash]


def test_entries_are_judged_at_their_state_block_not_by_a_clock_skew(gw, tmp_path: Path) -> None:
    """The gateway writes HCLJ/2: each entry names the block its decision read, with the chain's hash,
    before the block that anchored it; no clock offset is measured or needed (it is for HCLJ/1 rows)."""
    g, _, _ = gw
    export = _export(g, tmp_path / "j.jsonl")
    report = replay(g.client, g.manifest, journal=export, clock_skew=None)
    assert report.summary["journal_entries_v1"] == 0 and report.summary["clock_skew"] == 0
    anchored = [r for r in report.accesses if r.source == "journal" and r.anchored]
    assert anchored and all(r.state_block is not None and r.state_block < r.block for r in anchored)
    for o in (orjson.loads(x) for x in export.read_bytes().splitlines()):
        if o["type"] == "entry":
            assert o["state_block_hash"] == "0x" + bytes(g.client.w3.eth.get_block(o["state_block"])["hash"]).hex()
            assert 0 <= o["released_at"] - o["state_seen_at"] < 1000
    # an entry not yet anchored (the background anchorer's timing) when a change was mined is rightly left
    # for review: nothing proves it was released before the change; anything else is a finding
    left = [a.to_json() for a in report.anomalies if not _explained_by_anchor_timing(a)]
    assert not left, orjson.dumps(left).decode()


def _explained_by_anchor_timing(a: Anomaly) -> bool:
    """An anomaly this module's timing may produce: an entry anchored only after a later change, or not yet."""
    if a.kind in ("release_without_ledger_entry", "journal_entry_unanchored"):
        return True
    anchor = a.evidence.get("anchor_block")
    return a.kind == "access_in_staleness_window" and (anchor is None or anchor > a.evidence["change_block"])
