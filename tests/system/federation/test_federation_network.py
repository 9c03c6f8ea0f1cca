"""Three institutions, each with its validator, its Kubo node (one private swarm) and its gateway (batch mode,
storing on that node), on a real geth Clique network: records read across institutions, ciphertext pinned on
another institution's node, revocation at every gateway, a holder that goes down, and the patient's one
history checked against the chain. The gateways are real ``hcl gateway serve`` processes.

Gateway 0 is City First People's Hospital's, 1 Riverside Community Health Centre's, 2 the Regional
Clinical Laboratory's; each institution uploads at its own gateway.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from node_client._client import ChainClient
from node_client._exceptions import GatewayProblem, NodeError
from node_client.audit import replay
from node_client.blinding import sign_category_key
from node_client.deploy import Ledger, Manifest, dev_encryption_key
from node_client.gateway_client import GatewayClient, open_release
from node_client.hpke import HpkeError
from node_client.keys import dev_account
from node_client.network import Consortium, Network
from node_client.network.kubo import KuboNode
from node_client.vocabulary import parse_purposes
from tests.support.gateway_harness import slots_of
from tests.support.network import wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "fhir" / "synthea" / "patient-1-Emmie273_Kovacek682.json"
HOSPITAL, CLINIC, LAB, AUDITOR = 4, 5, 6, 8
UPLOADER = {0: HOSPITAL, 1: CLINIC, 2: LAB}  # gateway index → the institution that uploads there


@pytest.fixture
def net(gateway_network: Network) -> Network:
    """The session's network of three institutions with their batch-mode gateways (tests/system/conftest.py)."""
    return gateway_network


def _ledger(net: Network) -> Ledger:
    assert net.manifest_path is not None
    return Manifest.load(net.manifest_path).connect(ChainClient(rpc_url=net.nodes[0].url, timeout=30))


def _signed_in(net: Network, gw: int, account: int) -> GatewayClient:
    client = GatewayClient(net.gateways[gw].url, timeout=60)
    client.sign_in(dev_account(account))
    return client


def _upload(client: GatewayClient, net: Network, patient: int) -> dict:
    """The patient hands her category key to the institution's gateway, which then uploads her bundle."""
    account = dev_account(patient)
    client.enrol_category_key(account.address, sign_category_key(account, _ledger(net).consents.domain()))
    return client.upload(account.address, SAMPLE.read_bytes())


def _upload_everywhere(net: Network, patient: int) -> dict[int, dict[str, str]]:
    """The patient's bundle uploaded at each gateway by its institution: gateway → category → record id."""
    out = {}
    for gw, uploader in UPLOADER.items():
        with _signed_in(net, gw, uploader) as client:
            up = _upload(client, net, patient)
        out[gw] = {r["category"]: r["recordId"] for r in up["records"]}
    return out


def _grant(net: Network, patient: int, grantee: int, categories: str) -> int:
    ledger = _ledger(net)
    now = ledger.client.block_timestamp()
    ledger.consents.grant(
        dev_account(patient),
        dev_account(grantee).address,
        slots_of(ledger.consents.domain(), dev_account(patient), categories),
        parse_purposes("treatment"),
        now - 60,
        now + 86_400,
    )
    return ledger.client.block_number()


def _until_counted(client: GatewayClient, record: str) -> dict:
    """The release, once the gateways count the grant (after its confirmations)."""
    found: list[dict] = []

    def released() -> bool:
        try:
            found.append(client.release(record, "treatment"))
        except GatewayProblem as exc:
            assert exc.status in (403, 404), exc
            return False
        return True

    wait_until(released, timeout=60, what="the grant to count")
    return found[-1]


def _gateway_address(net: Network, gw: int) -> str:
    account = net.gateways[gw].dev_account
    assert account is not None
    return dev_account(account).address


def test_the_centre_reads_every_institutions_records_through_its_own_gateway(net: Network) -> None:
    records = _upload_everywhere(net, 10)
    _grant(net, 10, CLINIC, "lab-results,allergies")
    with _signed_in(net, 1, CLINIC) as centre:
        bodies = {gw: _until_counted(centre, records[gw]["lab-results"]) for gw in (0, 2)}
        found = centre.discover(dev_account(10).address)
        fhir = centre.open(bodies[2], dev_encryption_key(CLINIC)[0])
    assert fhir["resourceType"] == "Bundle"
    assert found["unavailable"] == []
    holders = {r["recordId"]: r["holder"] for r in found["records"]}
    for gw in range(3):
        assert holders[records[gw]["lab-results"]] == _gateway_address(net, gw)
        assert holders[records[gw]["allergies"]] == _gateway_address(net, gw)
    assert {r["category"] for r in found["records"]} == {"lab-results", "allergies"}
    for body in bodies.values():  # ledgered by the holder, in its journal; sealed to the centre only
        assert body["ledger"]["mode"] == "batch"
        with pytest.raises(HpkeError):
            open_release(body, dev_encryption_key(net.gateways[1].dev_account or 0)[0], dev_account(CLINIC).address)


def test_a_revocation_is_enforced_by_every_gateway_once_it_has_seen_the_block(net: Network) -> None:
    records = _upload_everywhere(net, 11)
    _grant(net, 11, CLINIC, "lab-results")
    clients = [_signed_in(net, gw, CLINIC) for gw in range(3)]
    try:
        for gw in range(3):
            _until_counted(clients[gw], records[gw]["lab-results"])  # each holder releases its own
        ledger = _ledger(net)
        ledger.consents.revoke(dev_account(11), dev_account(CLINIC).address)
        revoked_at = ledger.client.block_number()
        for gw in range(3):  # one block plus one poll: each gateway has seen the block, then every one refuses
            wait_until(lambda gw=gw: _head_seen(net, gw) >= revoked_at, timeout=30, what=f"gateway {gw} to see it")
        for gw in range(3):
            for holder in range(3):
                with pytest.raises(GatewayProblem) as refused:
                    clients[gw].release(records[holder]["lab-results"], "treatment")
                assert refused.value.code == "consent_revoked", (gw, holder, refused.value)
        for gw in range(3):  # and discovery, at every gateway and from every holder, shows nothing any more
            assert clients[gw].discover(dev_account(11).address)["records"] == []
    finally:
        for c in clients:
            c.close()


def _head_seen(net: Network, gw: int) -> int:
    with GatewayClient(net.gateways[gw].url) as client:
        return int(client.health()["checks"]["indexer"]["headBlock"])


def test_a_holder_that_is_down_is_503_and_everything_else_works(net: Network) -> None:
    records = _upload_everywhere(net, 12)
    _grant(net, 12, CLINIC, "lab-results")
    with _signed_in(net, 1, CLINIC) as centre:
        _until_counted(centre, records[0]["lab-results"])
        lab = net.gateways[2]
        lab.stop()
        try:
            with pytest.raises(GatewayProblem) as down:
                centre.release(records[2]["lab-results"], "treatment")
            assert down.value.status == 503 and down.value.code == "holder_unavailable"
            assert centre.release(records[0]["lab-results"], "treatment")["ledger"]["mode"] == "batch"
            found = centre.discover(dev_account(12).address)
            assert [u["gateway"] for u in found["unavailable"]] == [_gateway_address(net, 2)]
            assert records[2]["lab-results"] not in {r["recordId"] for r in found["records"]}
        finally:
            assert net.manifest_path is not None
            net.up(Consortium.development(3), manifest_path=net.manifest_path, timeout=180)
        assert lab.running
        assert centre.release(records[2]["lab-results"], "treatment")["ledger"]["mode"] == "batch"


def test_the_patient_sees_one_history_of_every_gateway_each_entry_verified(net: Network) -> None:
    records = _upload_everywhere(net, 13)
    _grant(net, 13, CLINIC, "lab-results")
    with _signed_in(net, 1, CLINIC) as centre:
        released = [_until_counted(centre, records[gw]["lab-results"])["accessId"] for gw in range(3)]
    with _signed_in(net, 0, 13) as patient:  # at the hospital's gateway: the others' entries come from them

        def settled() -> bool:
            log = patient.my_access_log()
            mine = [e for e in log["accesses"] if e["accessId"] in released]
            return len(mine) == 3 and all(e["verified"] for e in mine)

        wait_until(settled, timeout=60, what="every entry anchored and verified")
        log = patient.my_access_log()
    entries = {e["accessId"]: e for e in log["accesses"]}
    assert {entries[a]["holder"] for a in released} == {_gateway_address(net, gw) for gw in range(3)}
    assert {entries[a]["verification"] for a in released} == {"anchored_root"}
    assert log["unavailable"] == []
    assert time.time() - min(entries[a]["time"] for a in released) < 600


def test_the_auditors_replay_of_every_journal_proves_the_patients_history(net: Network, tmp_path: Path) -> None:
    """The history the patient's gateway merged equals what the replay of the three journals proves; a
    journal altered at one gateway is reported against that gateway only."""
    records = _upload_everywhere(net, 14)
    _grant(net, 14, CLINIC, "lab-results")
    with _signed_in(net, 1, CLINIC) as centre:
        released = {_until_counted(centre, records[gw]["lab-results"])["accessId"] for gw in range(3)}
    with _signed_in(net, 2, 14) as patient:
        wait_until(
            lambda: _verified(patient.my_access_log(), released),
            timeout=60,
            what="the patient's history, every entry anchored",
        )
        history = {e["accessId"]: e["holder"] for e in patient.my_access_log()["accesses"]}
    journals = []
    for gw in range(3):
        with _signed_in(net, gw, AUDITOR) as auditor:
            journals.append(tmp_path / f"journal-{gw}.jsonl")
            auditor.download_journal(journals[-1])
    assert net.manifest_path is not None
    ledger = _ledger(net)
    manifest = Manifest.load(net.manifest_path)
    report = replay(ledger.client, manifest, journals=journals)
    assert report.errors == [], [a.to_json() for a in report.errors]
    proven = {r.access_hash: r.gateway for r in report.accesses if r.patient == dev_account(14).address}
    assert proven == history
    assert {proven[a] for a in released} == {_gateway_address(net, gw) for gw in range(3)}
    lines = journals[2].read_bytes().splitlines()
    entry = next(i for i, line in enumerate(lines) if b'"released_at"' in line)
    altered = orjson.loads(lines[entry])
    altered["released_at"] += 1
    lines[entry] = orjson.dumps(altered)
    journals[2].write_bytes(b"\n".join(lines) + b"\n")
    tampered = replay(ledger.client, manifest, journals=journals)
    assert tampered.exit_code == 1
    assert {a.evidence.get("gateway") for a in tampered.errors} == {_gateway_address(net, 2)}


def _verified(log: dict, released: set[str]) -> bool:
    mine = [e for e in log["accesses"] if e["accessId"] in released]
    return len(mine) == len(released) and all(e["verified"] for e in mine)


def test_each_ciphertext_is_pinned_on_another_institutions_node(net: Network) -> None:
    with _signed_in(net, 2, LAB) as lab:
        uploaded = _upload(lab, net, 15)["records"]
    locators = [r["locator"] for r in uploaded]
    assert len(net.kubo) == 3 and locators

    def replicated() -> bool:
        return all(any(_pinned(net.kubo[i], loc) for i in (0, 1)) for loc in locators)

    wait_until(replicated, timeout=60, what="a replica of every record at another institution")
    assert all(_pinned(net.kubo[2], loc) for loc in locators)  # and the holder's own copy


def _pinned(node: KuboNode, locator: str) -> bool:
    try:
        node.api("pin/ls", locator, params={"type": "recursive"})
    except NodeError:
        return False
    return True
