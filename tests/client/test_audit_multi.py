"""The auditor over a federation: two institutions' batch-mode gateways (dev accounts 20 and 21, GATEWAY
members) on one Hardhat chain, each with its own journal (the gateway's own ``Journal``, anchored through
``AccessLedger.anchorBatch`` by its own key with the gateway's ``Anchorer``) and exported with
``Journal.export``. Only the release requests are skipped; every ledger artefact is real.

``hcl audit replay --journal A --journal B`` matches each journal to the gateway whose anchored roots it
reproduces, proves both, and reports what only several journals can show: a gateway whose journal is
missing, one journal given twice, a journal that is no gateway's.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from gateway.ledger.anchoring import Anchorer
from gateway.ledger.journal import Journal, JournalEntry
from node_client._client import ChainClient
from node_client._node import HardhatNode, free_port
from node_client.audit import AuditReport, replay, write_outputs
from node_client.audit_cli import audit_app
from node_client.contracts import RecordInput
from node_client.deploy import Ledger, Manifest, MemberSpec, deploy_dev, dev_encryption_key
from node_client.keys import dev_account
from node_client.vocabulary import Purpose, Role

GATEWAY, CLINIC, LAB = 3, 5, 6  # the dev consortium's own gateway registers the records
GW_A, GW_B = 20, 21
PATIENT = 12
ENTRIES = 4  # per journal, anchored after 2 and after 4


@dataclass
class Network:
    node: HardhatNode
    client: ChainClient
    manifest: Manifest
    manifest_path: Path
    ledger: Ledger
    journals: dict[int, Path]  # gateway dev index -> its export
    tmp: Path

    def addr(self, i: int) -> str:
        return str(dev_account(i).address)


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _journal(net: Network, gw: int, record: bytes, consents: dict[str, bytes]) -> Path:
    """Gateway ``gw``'s journal of ENTRIES releases of ``record`` (clinic and lab in turn), each deciding on
    the chain's latest block, anchored by ``gw``'s key; its export."""
    journal = Journal(net.tmp / f"journal-{gw}.db")

    def anchor_fn(root: bytes, size: int) -> tuple[str, int]:
        tx = net.ledger.access.anchor_batch(dev_account(gw), root, size)
        return tx.tx_hash, tx.block_number

    anchorer = Anchorer(journal, anchor_fn, interval=3600)
    try:
        for k in range(ENTRIES):
            block = net.client.block_number()
            now_ms = int(time.time() * 1000)
            requester = net.addr(CLINIC if k % 2 == 0 else LAB)
            entry = JournalEntry(
                requester=requester,
                patient=net.addr(PATIENT),
                record_id=record,
                purpose=int(Purpose.TREATMENT),
                consent_id=consents[requester],
                emergency=False,
                access_hash=_h(f"release-{gw}-{k}"),
                released_at=now_ms,
                state_block=block,
                state_block_hash=bytes(net.client.w3.eth.get_block(block)["hash"]),
                state_seen_at=now_ms - 5,
            )
            journal.append(entry)
            if k % 2 == 1:
                anchorer.anchor_once()
        export = net.tmp / f"journal-{gw}.jsonl"
        assert journal.export(export) == ENTRIES
        return export
    finally:
        journal.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    tmp = tmp_path_factory.mktemp("audit-multi")
    node = HardhatNode(log_path=tmp / "hardhat.log").start(port=free_port())
    try:
        client = ChainClient(rpc_url=node.url)
        gateways = []
        for gw, name in ((GW_A, "City First People's Hospital gateway"), (GW_B, "Riverside gateway")):
            client.w3.provider.make_request("hardhat_setBalance", [dev_account(gw).address, hex(10**21)])
            gateways.append(MemberSpec(dev_account(gw).address, int(Role.GATEWAY), dev_encryption_key(gw)[1], name))
        manifest = deploy_dev(client, extra_members=gateways)
        manifest.save(tmp / "manifest.json")
        net = Network(node, client, manifest, tmp / "manifest.json", manifest.connect(client), {}, tmp)
        record = _h("record-12")
        rec = RecordInput(record, 0, _h("ciphertext-12"), b"\x01\x55\x12\x20" + _h("ciphertext-12"))
        net.ledger.records.register_batch(dev_account(GATEWAY), net.addr(PATIENT), net.addr(CLINIC), [rec])
        now = client.block_timestamp()
        consents = {}
        for reader in (CLINIC, LAB):
            cid, _ = net.ledger.consents.grant(
                dev_account(PATIENT), net.addr(reader), 1, 1 << int(Purpose.TREATMENT), now - 60, now + 86_400
            )
            consents[net.addr(reader)] = cid
        for gw in (GW_A, GW_B):
            net.journals[gw] = _journal(net, gw, record, consents)
        yield net
    finally:
        node.stop()


def _replay(net: Network, **kw: Any) -> AuditReport:
    return replay(net.client, net.manifest, **kw)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def _save(path: Path, objs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in objs) + b"\n")
    return path


def test_both_journals_prove_every_release_each_row_naming_its_gateway(net: Network, tmp_path: Path) -> None:
    report = _replay(net, journals=[net.journals[GW_A], net.journals[GW_B]])
    assert report.anomalies == [], [a.to_json() for a in report.anomalies]
    journal_rows = [r for r in report.accesses if r.source == "journal"]
    assert len(journal_rows) == 2 * ENTRIES and all(r.status == "ok" and r.anchored for r in journal_rows)
    assert sorted(r.gateway for r in journal_rows) == sorted([net.addr(GW_A)] * ENTRIES + [net.addr(GW_B)] * ENTRIES)
    assert {r.gateway_name for r in journal_rows if r.gateway == net.addr(GW_B)} == {"Riverside gateway"}
    s = report.summary
    assert s["journal_entries"] == 2 * ENTRIES and s["anchors"] == 4
    assert [(j["gateway"], j["matched_by"], j["anchors_reproduced"]) for j in s["journals"]] == [
        (net.addr(GW_A), "anchored roots", 2),
        (net.addr(GW_B), "anchored roots", 2),
    ]
    for gw in (GW_A, GW_B):
        per = s["by_gateway"][net.addr(gw)]
        assert (per["journal"], per["ok"], per["anchors"]) == (ENTRIES, ENTRIES, 2)
        assert per["journal_file"] == str(net.journals[gw])
    paths = write_outputs(report, tmp_path / "out")
    csv_text = paths["csv"].read_text()
    assert csv_text.count(net.addr(GW_A)) == ENTRIES and csv_text.count(net.addr(GW_B)) == ENTRIES
    assert "Per gateway" in paths["html"].read_text()


def test_a_gateway_whose_journal_is_not_given_is_journal_missing(net: Network) -> None:
    report = _replay(net, journals=[net.journals[GW_A]])
    (missing,) = report.anomalies
    assert missing.kind == "journal_missing" and missing.severity == "review"
    assert missing.evidence["gateway"] == net.addr(GW_B) and missing.evidence["anchors"] == 2
    assert missing.evidence["last_tree_size"] == ENTRIES
    assert report.exit_code == 0  # for review: the chain shows nothing wrong, the auditor lacks a file
    assert report.summary["by_gateway"][net.addr(GW_B)]["journal_file"] is None
    # no journal at all: both gateways' releases are unproven
    assert sorted(a.evidence["gateway"] for a in _replay(net).anomalies if a.kind == "journal_missing") == sorted(
        [net.addr(GW_A), net.addr(GW_B)]
    )


@pytest.mark.parametrize("entry", [2, 0])
def test_an_altered_entry_is_found_in_that_gateways_journal_only(net: Network, tmp_path: Path, entry: int) -> None:
    """Entry 2 (under the second anchor): the first root still matches. Entry 0: no root matches, the
    export's anchor lines (on chain, by gateway B) still say whose journal it is."""
    objs = _lines(net.journals[GW_B])
    objs[1 + entry]["released_at"] += 1
    edited = _save(tmp_path / "edited.jsonl", objs)
    report = _replay(net, journals=[net.journals[GW_A], edited])
    kinds = report.kinds()
    assert kinds["journal_chain_broken"] >= 1 and kinds["journal_root_mismatch"] >= 1
    assert report.exit_code == 1
    assert {a.evidence.get("gateway") for a in report.errors} == {net.addr(GW_B)}
    assert {a.evidence.get("journal") for a in report.errors} == {str(edited)}
    by_gw = report.summary["by_gateway"]
    assert by_gw[net.addr(GW_A)]["ok"] == ENTRIES and by_gw[net.addr(GW_B)]["ok"] < ENTRIES
    (b,) = [j for j in report.summary["journals"] if j["journal"] == str(edited)]
    assert b["gateway"] == net.addr(GW_B)
    assert b["matched_by"] == ("anchored roots" if entry else "export anchors")


def test_the_same_journal_twice_is_refused(net: Network, tmp_path: Path) -> None:
    copy = shutil.copy(net.journals[GW_A], tmp_path / "copy.jsonl")
    with pytest.raises(ValueError, match="both are gateway"):
        _replay(net, journals=[net.journals[GW_A], copy])
    with pytest.raises(ValueError, match="given twice"):
        _replay(net, journals=[net.journals[GW_A], net.journals[GW_A]])
    with pytest.raises(ValueError, match="checkpoints hold one journal"):
        _replay(net, journals=[net.journals[GW_A], net.journals[GW_B]], checkpoint=True)


def test_a_journal_of_no_gateway_is_an_error(net: Network, tmp_path: Path) -> None:
    """A journal no anchor on chain reproduces and whose anchor lines name none (here: gateway A's, its first
    entry edited and its anchor lines dropped)."""
    objs = [o for o in _lines(net.journals[GW_A]) if o["type"] != "anchor"]
    objs[1]["released_at"] += 1
    stranger = _save(tmp_path / "stranger.jsonl", objs)
    report = _replay(net, journals=[stranger, net.journals[GW_B]])
    kinds = report.kinds()
    assert kinds["journal_unmatched"] == 1 and kinds["journal_missing"] == 1  # A's anchors: its journal is not given
    (unmatched,) = [a for a in report.anomalies if a.kind == "journal_unmatched"]
    assert unmatched.evidence["journal"] == str(stranger) and unmatched.evidence["gateway"] is None
    assert report.exit_code == 1


@pytest.mark.parametrize("given", [GW_A, GW_B])
def test_a_resumed_run_still_reports_the_missing_journal(net: Network, given: int) -> None:
    """The checkpoint counts every gateway's anchors up to its block: a resumed run reports the same
    ``journal_missing`` as a full one, whichever side of the checkpoint the anchors are (B's come after
    the checkpoint of A's journal, A's before the one of B's)."""
    full = _replay(net, journals=[net.journals[given]], checkpoint=True, checkpoint_margin=0)
    assert full.checkpoint is not None and full.checkpoint["block"] < net.client.block_number()
    other = net.addr(GW_B if given == GW_A else GW_A)
    assert (other in full.checkpoint["anchoring"]) == (given == GW_B)
    resumed = _replay(net, journals=[net.journals[given]], resume=full.checkpoint)
    assert full.kinds() == resumed.kinds() == {"journal_missing": 1}
    before, after = (next(a for a in r.anomalies if a.kind == "journal_missing") for r in (full, resumed))
    assert before.evidence == after.evidence


def test_explicit_gateway_pairs(net: Network) -> None:
    a, b = net.journals[GW_A], net.journals[GW_B]
    paired = _replay(net, journals=[a, b], gateways=[net.addr(GW_A), net.addr(GW_B)])
    assert paired.anomalies == [] and {j["matched_by"] for j in paired.summary["journals"]} == {"given"}
    swapped = _replay(net, journals=[a, b], gateways=[net.addr(GW_B), net.addr(GW_A)])
    assert swapped.kinds()["journal_root_mismatch"] >= 2 and swapped.exit_code == 1
    with pytest.raises(ValueError, match="one --gateway per --journal"):
        _replay(net, journals=[a, b], gateways=[net.addr(GW_A)])


def test_cli_several_journals(net: Network, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["replay", "--rpc-url", net.node.url, "--manifest", str(net.manifest_path), "--json"]
    a, b = str(net.journals[GW_A]), str(net.journals[GW_B])
    res = runner.invoke(audit_app, [*base, "--journal", a, "--journal", b, "--out", str(tmp_path / "auto")])
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.stdout)["summary"]
    assert [j["gateway"] for j in summary["journals"]] == [net.addr(GW_A), net.addr(GW_B)]
    assert summary["accesses_ok"] == summary["accesses"] == 2 * ENTRIES
    pairs = ["--journal", a, "--gateway", net.addr(GW_A), "--journal", b, "--gateway", net.addr(GW_B)]
    res = runner.invoke(audit_app, [*base, *pairs, "--out", str(tmp_path / "pairs")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(audit_app, [*base, "--journal", a, "--journal", a, "--out", str(tmp_path / "twice")])
    assert res.exit_code == 2 and "given twice" in orjson.loads(res.stdout)["error"]
