"""The auditor against real ledgers: a strict-mode gateway and a batch-mode gateway, each on its own
Hardhat chain, then tampered journal exports and crafted entries, each reported with the right kind."""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from node_client.audit import AuditReport, replay, write_outputs
from node_client.audit.html_report import ReportLanguage, member_names
from node_client.audit_cli import audit_app
from node_client.blinding import category_key, sign_category_key
from node_client.commitments import reason_commitment
from node_client.contracts import Action
from node_client.merkle import MerkleTree
from node_client.vocabulary import Category, parse_categories, parse_purposes
from tests.support.gateway_harness import (
    AUDITOR,
    CLINIC,
    HOSPITAL,
    SALT,
    SALT_HEX,
    SAMPLES,
    RunningGateway,
    dev,
    running_gateway,
)

SYNTHEA = SAMPLES / "synthea" / "patient-1-Emmie273_Kovacek682.json"
FHIR = {"Content-Type": "application/fhir+json"}


def _grant(gw: RunningGateway, patient: int, grantee: str, categories: str, purposes: str = "treatment") -> bytes:
    now = gw.client.block_timestamp()
    consent_id, _ = gw.ledger.consents.grant(
        dev(patient), grantee, gw.slots(dev(patient), categories), parse_purposes(purposes), now, now + 86_400
    )
    return consent_id


def _skew(gw: RunningGateway) -> int:
    """How far the dev chain's clock runs ahead of wall time (Hardhat: +1 s per block in a burst)."""
    return max(0, math.ceil(gw.client.block_timestamp() - time.time())) + 1


# ---------------------------------------------------------------- strict mode


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, dict[str, Any]]]:
    with running_gateway(tmp_path_factory.mktemp("strict")) as gw:
        hospital = gw.login(dev(HOSPITAL))
        up = hospital.post(
            "/v1/records", params={"patient": dev(10).address}, content=SYNTHEA.read_bytes(), headers=FHIR
        )
        assert up.status_code == 201, up.text
        records = {r["category"]: r["recordId"] for r in up.json()["records"]}
        _grant(gw, 10, dev(CLINIC).address, "encounters,medications")
        clinic = gw.login(dev(CLINIC))
        for cat in ("encounters", "medications", "encounters"):
            r = clinic.get(f"/v1/records/{records[cat]}", params={"purpose": "treatment"})
            assert r.status_code == 200, r.text
        reason = "unconscious on arrival"
        fn = gw.ledger.consents.contract.functions.emergencyAccess(
            dev(10).address, parse_categories("allergies"), reason_commitment(reason, SALT)
        )
        tx = fn.build_transaction(
            {
                "from": dev(HOSPITAL).address,
                "chainId": 31337,
                "gas": 200_000,
                "nonce": gw.client.w3.eth.get_transaction_count(dev(HOSPITAL).address, "pending"),
                "maxFeePerGas": 10**10,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        raw = dev(HOSPITAL).sign_transaction(tx).raw_transaction
        body = {"signedTransaction": "0x" + bytes(raw).hex(), "reason": reason, "salt": SALT_HEX}
        r = hospital.post("/v1/emergency-access", json=body)
        assert r.status_code == 201, r.text
        got = hospital.get(f"/v1/records/{records['allergies']}", params={"purpose": "emergency"})
        assert got.status_code == 200 and got.json()["emergency"] is True
        yield gw, records


def test_clean_strict_ledger_has_no_errors_and_lists_the_emergency_for_review(strict, tmp_path: Path) -> None:
    gw, _records = strict
    report = replay(gw.client, gw.manifest)
    assert report.errors == [], [a.to_json() for a in report.errors]
    assert report.exit_code == 0
    assert report.summary["strict_accesses"] == 4
    (review,) = report.reviews
    assert review.kind == "emergency_access" and review.evidence["tx_hash"].startswith("0x")
    assert review.evidence["requester"] == dev(HOSPITAL).address
    assert [r.status for r in report.accesses].count("review") == 1
    assert all(r.tx_hash and r.block for r in report.accesses)
    paths = write_outputs(report, tmp_path / "out")
    data = orjson.loads(paths["json"].read_bytes())
    assert data["exit_code"] == 0 and len(data["accesses"]) == 4
    assert paths["csv"].read_text().count("\n") == 5  # header + 4 rows
    page = paths["html"].read_text()
    assert "CLEAN" in page and "City First People" in page and "emergency_access" in page
    bundle = orjson.loads(paths["fhir"].read_bytes())
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 4
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"AuditEvent"}


def test_the_auditor_names_emergency_safe_slots_by_category_and_the_others_by_slot(strict, tmp_path: Path) -> None:
    """The auditor holds no patient's category key: a blinded slot is ``slot-N`` in every output, never
    the category whose bit number it happens to be."""
    gw, _records = strict
    domain = gw.ledger.consents.domain()
    encounters = category_key(domain, dev(10).address, sign_category_key(dev(10), domain)).slot(Category.ENCOUNTERS)
    report = replay(gw.client, gw.manifest)
    assert {r.category for r in report.accesses} == {"allergies", "medications", f"slot-{encounters}"}
    paths = write_outputs(report, tmp_path / "out")
    assert f"slot-{encounters}" in paths["csv"].read_text() and "encounters" not in paths["csv"].read_text()
    assert "encounters" not in paths["fhir"].read_text()
    zh, en = ReportLanguage("zh", "Asia/Shanghai", {}), ReportLanguage("en", "UTC", {})
    assert (zh.category(encounters), en.category(f"slot-{encounters}")) == (
        f"受保护类别 {encounters}",
        f"slot {encounters}",
    )
    assert (en.category(int(Category.MEDICATIONS)), zh.category("medications")) == (
        "Medications and prescriptions",
        "用药与处方",
    )


def test_the_html_report_in_chinese_names_institutions_and_says_the_verdict_first(strict, tmp_path: Path) -> None:
    """``--lang zh``: the verdict sentence first, institutions by their Chinese names, purposes by label,
    local times; the raw evidence only in the folded technical detail."""
    gw, _records = strict
    report = replay(gw.client, gw.manifest)
    language = ReportLanguage("zh", "Asia/Shanghai", member_names(gw.manifest.members, "zh"))
    page = write_outputs(report, tmp_path / "zh", language=language)["html"].read_text()
    assert "<html lang='zh-CN'>" in page and "无异常" in page
    sentence = f"联盟链第 {report.from_block}–{report.to_block} 号区块中的全部 4 次访问均有授权并已上链记录；已验证。"
    assert sentence in page and page.index(sentence) < page.index("<details")
    assert "市第一人民医院" in page and "City First" not in page.split("<details")[0]
    assert f"访问机构: 市第一人民医院 ({dev(HOSPITAL).address})" in page  # the emergency to review, by name
    assert " CST" in page and "purpose: 1" not in page.split("<details")[0]
    english = write_outputs(report, tmp_path / "en")["html"].read_text()
    assert "All 4 accesses in blocks" in english and "City First People&#x27;s Hospital" in english


def test_emergency_reasons_open_their_commitments(strict, tmp_path: Path) -> None:
    """The auditor fetches the gateway's emergency reasons and checks each against the chain's commitment;
    a reason changed afterwards, or one for no window, is reported."""
    gw, _ = strict
    keystore = tmp_path / "auditor.json"
    keystore.write_text(orjson.dumps(dev(AUDITOR).encrypt("pw")).decode())
    (tmp_path / "pw").write_text("pw")
    reasons = tmp_path / "reasons.jsonl"
    args = ["--url", gw.url, "--key", str(keystore), "--password-file", str(tmp_path / "pw")]
    fetched = CliRunner().invoke(audit_app, ["fetch-reasons", str(reasons), *args])
    assert fetched.exit_code == 0, fetched.output
    (opening,) = [orjson.loads(line) for line in reasons.read_bytes().splitlines()]
    assert opening["reason"] == "unconscious on arrival" and opening["salt"] == SALT_HEX
    assert replay(gw.client, gw.manifest, reasons=reasons).errors == []

    edited = tmp_path / "edited.jsonl"
    unknown = {**opening, "accessId": "0x" + "ab" * 32}
    edited.write_bytes(orjson.dumps({**opening, "reason": "routine check"}) + b"\n" + orjson.dumps(unknown) + b"\n")
    kinds = sorted(a.kind for a in replay(gw.client, gw.manifest, reasons=edited).errors)
    assert kinds == ["emergency_reason_mismatch", "emergency_reason_unknown"]


def test_patient_access_log_equals_the_replay(strict) -> None:
    """Patients get the same truth: the gateway's access log for a patient equals the replay's rows."""
    gw, _ = strict
    gw.wait_indexed()
    log = gw.login(dev(10)).get("/v1/me/access-log").json()
    rows = [r for r in replay(gw.client, gw.manifest).accesses if r.patient == dev(10).address]
    assert sorted(a["ledger"]["txHash"] for a in log["accesses"]) == sorted(r.tx_hash for r in rows)
    assert sum(a["emergency"] for a in log["accesses"]) == sum(r.emergency for r in rows) == 1


def test_cli_exit_codes_and_json(strict, tmp_path: Path) -> None:
    gw, _ = strict
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["replay", "--rpc-url", gw.settings.rpc_url, "--manifest", str(gw.settings.manifest), "--out", str(out)]
    res = runner.invoke(audit_app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["summary"]["accesses"] == 4
    assert (out / "report.json").exists() and (out / "accesses.csv").exists()
    zh = runner.invoke(audit_app, [*args[:-1], str(tmp_path / "zh"), "--lang", "zh", "--json"])
    assert zh.exit_code == 0 and "市第一人民医院" in (tmp_path / "zh" / "report.html").read_text()
    assert runner.invoke(audit_app, [*args, "--lang", "fr", "--json"]).exit_code == 2
    bad = runner.invoke(audit_app, [*args[:-4], "--manifest", str(tmp_path / "missing.json"), "--json"])
    assert bad.exit_code == 2
    journal = tmp_path / "j.jsonl"
    journal.write_text('{"type": "header", "format": "hcl-release-journal", "version": 1, "size": 1}\n')
    res = runner.invoke(audit_app, [*args, "--journal", str(journal), "--json"])
    assert res.exit_code == 1  # header claims an entry the file lacks


def test_suspended_member_access_via_crafted_entry(strict, tmp_path: Path) -> None:
    """Suspension is checked at the entry's time: a crafted release after it is reported."""
    gw, records = strict
    admins = [dev(0), dev(1)]
    gw.ledger.members.enact(admins, Action.SUSPEND_MEMBER, dev(CLINIC).address)
    try:
        at = gw.client.block_timestamp() + 1
        journal = tmp_path / "j.jsonl"
        _write_export(journal, [_entry(dev(CLINIC).address, dev(10).address, records["encounters"], 0, at * 1000)])
        report = replay(gw.client, gw.manifest, journal=journal, anchor_grace=10**6)
        kinds = report.kinds()
        assert kinds["access_by_suspended_member"] == 1
        ev = next(a for a in report.anomalies if a.kind == "access_by_suspended_member").evidence
        assert ev["entry_index"] == 0
    finally:
        gw.ledger.members.enact(admins, Action.REINSTATE_MEMBER, dev(CLINIC).address)


# ---------------------------------------------------------------- batch mode


def _entry(
    requester: str, patient: str, record_id: str, purpose: int, released_at: int, consent_id: bytes = b"\x00" * 32
) -> dict[str, Any]:
    return {
        "type": "entry",
        "requester": requester,
        "patient": patient,
        "record_id": record_id,
        "purpose": purpose,
        "consent_id": "0x" + consent_id.hex(),
        "emergency": False,
        "access_hash": "0x" + hashlib.sha256(str(released_at).encode() + record_id.encode()).hexdigest(),
        "released_at": released_at,
    }


def _encode(e: dict[str, Any]) -> bytes:
    """HCLJ/2 when the entry names its state block (what the gateway writes), else HCLJ/1 (docs/audit.md)."""
    head = (
        bytes.fromhex(e["requester"][2:]),
        bytes.fromhex(e["patient"][2:]),
        bytes.fromhex(e["record_id"][2:]),
        e["purpose"],
        bytes.fromhex(e["consent_id"][2:]),
        int(e["emergency"]),
        bytes.fromhex(e["access_hash"][2:]),
        e["released_at"],
    )
    if "state_block" not in e:
        return struct.pack(">4sB20s20s32sB32sB32sQ", b"HCLJ", 1, *head)
    return struct.pack(
        ">4sB20s20s32sB32sB32sQQ32sQ",
        b"HCLJ",
        2,
        *head,
        e["state_block"],
        bytes.fromhex(e["state_block_hash"][2:]),
        e["state_seen_at"],
    )


def _write_export(path: Path, entries: list[dict[str, Any]], anchors: list[dict[str, Any]] = ()) -> None:
    """Writes a well-formed export (valid encodings and hash chain) of ``entries``, as a forger would."""
    chain = b"\x00" * 32
    tree = MerkleTree()
    lines = []
    for i, e in enumerate(entries):
        enc = _encode(e)
        leaf = hashlib.sha256(b"\x00" + enc).digest()
        chain = hashlib.sha256(chain + leaf).digest()
        tree.append(leaf)
        lines.append(
            {
                **e,
                "type": "entry",
                "idx": i,
                "encoded": "0x" + enc.hex(),
                "leaf_hash": "0x" + leaf.hex(),
                "chain_hash": "0x" + chain.hex(),
            }
        )
    header = {
        "type": "header",
        "format": "hcl-release-journal",
        "version": 1,
        "entry_encoding": "HCLJ/1",
        "size": len(entries),
        "root": "0x" + tree.root().hex(),
        "chain_head": "0x" + chain.hex(),
    }
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in [header, *lines, *anchors]) + b"\n")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _save(path: Path, objs: list[dict[str, Any]]) -> None:
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in objs) + b"\n")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path, int, str]]:
    tmp = tmp_path_factory.mktemp("batch")
    with running_gateway(tmp, ledger_mode="batch") as gw:
        hospital = gw.login(dev(HOSPITAL))
        body = (SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes()
        up = hospital.post("/v1/records", params={"patient": dev(14).address}, content=body, headers=FHIR).json()
        record = up["records"][0]["recordId"]
        _grant(gw, 14, dev(CLINIC).address, up["records"][0]["category"])
        skew = _skew(gw)
        clinic = gw.login(dev(CLINIC))
        for i in range(5):
            r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
            assert r.status_code == 200, r.text
            if i == 1:
                time.sleep(0.8)  # let an anchor land in between: two anchors, a consistency proof to check
        deadline = time.monotonic() + 15
        while True:
            anchors = list(gw.ledger.access.events(["AccessBatchAnchored"]))
            if anchors and anchors[-1]["treeSize"] == 5:
                break
            assert time.monotonic() < deadline, "no anchor of the whole journal"
            time.sleep(0.2)
        export = tmp / "journal.jsonl"
        assert gw.components.journal.export(export) == 5
        yield gw, export, skew, record


def _audit(gw: RunningGateway, journal: Path, skew: int, **kw: Any) -> AuditReport:
    return replay(gw.client, gw.manifest, journal=journal, clock_skew=skew, **kw)


def test_clean_batch_journal_replays_clean(batch) -> None:
    gw, export, skew, _ = batch
    report = _audit(gw, export, skew)
    assert report.anomalies == [], [a.to_json() for a in report.anomalies]
    assert report.exit_code == 0
    assert report.summary["journal_entries"] == 5 and report.summary["journal_gateway"] == dev(3).address
    assert all(r.anchored and r.status == "ok" and r.tx_hash for r in report.accesses)
    assert report.summary["anchors"] >= 1


def test_edited_entry_is_chain_break_and_root_mismatch(batch, tmp_path: Path) -> None:
    gw, export, skew, _ = batch
    objs = _lines(export)
    objs[2]["released_at"] += 1  # entry 1 (line 0 is the header)
    path = tmp_path / "edited.jsonl"
    _save(path, objs)
    report = _audit(gw, path, skew)
    kinds = report.kinds()
    assert kinds["journal_chain_broken"] >= 1 and kinds["journal_root_mismatch"] >= 1
    broken = [a.evidence.get("entry_index") for a in report.anomalies if a.kind == "journal_chain_broken"]
    assert 1 in broken
    mismatch = next(a for a in report.anomalies if a.kind == "journal_root_mismatch")
    assert mismatch.evidence["tx_hash"].startswith("0x") and mismatch.evidence["tree_size"] >= 2
    assert report.exit_code == 1


def test_dropped_entry_is_chain_break_and_unbacked_anchor(batch, tmp_path: Path) -> None:
    gw, export, skew, _ = batch
    objs = _lines(export)
    del objs[2]
    path = tmp_path / "dropped.jsonl"
    _save(path, objs)
    kinds = _audit(gw, path, skew).kinds()
    assert kinds["journal_chain_broken"] >= 1
    assert kinds["anchor_not_backed_by_journal"] >= 1


def test_reordered_entries_are_chain_break_and_root_mismatch(batch, tmp_path: Path) -> None:
    gw, export, skew, _ = batch
    objs = _lines(export)
    objs[2], objs[3] = objs[3], objs[2]
    path = tmp_path / "reordered.jsonl"
    _save(path, objs)
    report = _audit(gw, path, skew)
    kinds = report.kinds()
    assert kinds["journal_chain_broken"] >= 1 and kinds["journal_root_mismatch"] >= 1
    assert {1, 2} <= {a.evidence.get("entry_index") for a in report.anomalies if a.kind == "journal_chain_broken"}


def test_forged_entry_appended_is_unanchored(batch, tmp_path: Path) -> None:
    gw, export, skew, _record = batch
    entries = [o for o in _lines(export) if o["type"] == "entry"]
    forged = {
        k: entries[-1][k]
        for k in ("requester", "patient", "record_id", "purpose", "consent_id", "emergency", "released_at")
    }
    forged["access_hash"] = "0x" + "77" * 32
    forged["released_at"] += 1
    path = tmp_path / "forged.jsonl"
    _write_export(path, [*entries, forged])  # a perfect hash chain: only the anchors can tell
    report = _audit(gw, path, skew, anchor_grace=-3600)  # no grace: the forger's entry is not "recent"
    kinds = report.kinds()
    assert kinds == {"journal_entry_unanchored": 1}, [a.to_json() for a in report.anomalies]
    (a,) = report.anomalies
    assert a.evidence["entry_index"] == 5


def test_access_after_revocation_in_crafted_entry(batch, tmp_path: Path) -> None:
    gw, export, skew, _record = batch
    result = gw.ledger.consents.revoke(dev(14), dev(CLINIC).address)
    revoked_at = gw.client.block_timestamp(result.block_number)
    entries = [o for o in _lines(export) if o["type"] == "entry"]
    crafted = {k: entries[-1][k] for k in ("requester", "patient", "record_id", "purpose", "consent_id", "emergency")}
    crafted["released_at"] = (revoked_at + 1) * 1000
    crafted["access_hash"] = "0x" + "55" * 32
    path = tmp_path / "revoked.jsonl"
    _write_export(path, [*entries, crafted])
    report = _audit(gw, path, skew)
    hits = [a for a in report.anomalies if a.kind == "access_after_revocation"]
    assert len(hits) == 1, [a.to_json() for a in report.anomalies]
    assert hits[0].evidence["entry_index"] == 5
    assert hits[0].evidence["revoked_block"] == result.block_number and hits[0].evidence["revoked_tx"]
    assert report.exit_code == 1


def test_rewritten_history_anchored_later_is_inconsistent(batch, tmp_path: Path) -> None:
    """The gateway key rewrites entry 0 and anchors the new tree: the old root is no prefix of it."""
    gw, export, skew, _ = batch
    entries = [o for o in _lines(export) if o["type"] == "entry"]
    fields = ("requester", "patient", "record_id", "purpose", "consent_id", "emergency", "access_hash", "released_at")
    rewritten = [{k: e[k] for k in fields} for e in entries]
    rewritten[0]["access_hash"] = "0x" + "99" * 32
    rewritten.append(
        {**rewritten[-1], "access_hash": "0x" + "98" * 32, "released_at": rewritten[-1]["released_at"] + 1}
    )
    path = tmp_path / "rewritten.jsonl"
    _write_export(path, rewritten)
    tree = MerkleTree(hashlib.sha256(b"\x00" + _encode(e)).digest() for e in rewritten)
    gw.ledger.access.anchor_batch(dev(3), tree.root(6), 6)  # dev#3 is the gateway's key
    report = _audit(gw, path, skew, gateway=dev(3).address)
    kinds = report.kinds()
    assert kinds["anchor_inconsistent"] == 1, [a.to_json() for a in report.anomalies]
    bad = next(a for a in report.anomalies if a.kind == "anchor_inconsistent")
    assert bad.evidence["tree_size"] == 6 and bad.evidence["previous_tree_size"] == 5 and bad.evidence["proof"]
    assert kinds["journal_root_mismatch"] >= 1  # the earlier anchors do not match the rewritten rows
