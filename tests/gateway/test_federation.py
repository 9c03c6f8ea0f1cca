"""Two institutions' gateways on one chain: discovery and release across them, the signed gateway-to-gateway
requests, and what happens when the holder does not answer. Real Hardhat node, real apps over HTTP.

Gateway A is City First People's Hospital's (dev account 20), gateway B Riverside Community Health
Centre's (dev account 21); both are GATEWAY members whose endpoints are in their on-chain metadata.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from gateway.federation.directory import Directory
from gateway.ledger.member_names import MemberNames
from gateway.wiring import Components
from node_client import hpke, merkle, signing
from node_client._client import ChainClient
from node_client._exceptions import GatewayProblem
from node_client._node import HardhatNode, free_port
from node_client.blinding import category_key, sign_category_key
from node_client.deploy import Ledger, dev_encryption_key
from node_client.federation import HEADERS, signing_message
from node_client.gateway_client import GatewayClient, open_release
from node_client.keys import dev_account
from node_client.vocabulary import Category, parse_purposes
from tests.support.federation import GW_A, GW_B, deploy_with_gateways, gateway_settings, served
from tests.support.gateway_harness import slots_of

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "fhir" / "synthea" / "patient-1-Emmie273_Kovacek682.json"
HOSPITAL, CLINIC, LAB = 4, 5, 6


@dataclass
class Federation:
    node: HardhatNode
    client: ChainClient
    ledger: Ledger
    manifest_path: Path
    ports: dict[int, int]
    tmp: Path

    def url(self, gw: int) -> str:
        return f"http://127.0.0.1:{self.ports[gw]}"

    def gateway(self, gw: int, **overrides: Any) -> AbstractContextManager[Components]:
        """Gateway ``gw`` served on its registered endpoint (its data survives a restart)."""
        settings = gateway_settings(self.tmp, self.node.url, self.manifest_path, gw, self.ports[gw], **overrides)
        return served(settings)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("federation")
    node = HardhatNode(log_path=tmp / "hardhat.log").start(port=free_port())
    try:
        client = ChainClient(rpc_url=node.url)
        ports = {GW_A: free_port(), GW_B: free_port()}
        manifest = deploy_with_gateways(client, ports)
        manifest.save(tmp / "manifest.json")
        yield Federation(node, client, manifest.connect(client), tmp / "manifest.json", ports, tmp)
    finally:
        node.stop()


@pytest.fixture
def both(fed: Federation) -> Iterator[dict[int, Components]]:
    with ExitStack() as stack:
        yield {gw: stack.enter_context(fed.gateway(gw)) for gw in (GW_A, GW_B)}


def _upload(fed: Federation, gw: int, patient: int) -> dict[str, str]:
    with GatewayClient(fed.url(gw)) as client:
        client.sign_in(dev_account(HOSPITAL))
        out = client.upload(dev_account(patient).address, SAMPLE.read_bytes())
    return {r["category"]: r["recordId"] for r in out["records"]}


def _grant(fed: Federation, patient: int, grantee: int, categories: str) -> None:
    now = fed.client.block_timestamp()
    fed.ledger.consents.grant(
        dev_account(patient),
        dev_account(grantee).address,
        slots_of(fed.ledger.consents.domain(), dev_account(patient), categories),
        parse_purposes("treatment,referral"),
        now - 60,
        now + 86_400,
    )


def _wait_indexed(components: dict[int, Components], fed: Federation) -> None:
    head = fed.client.block_number()
    deadline = time.monotonic() + 15
    while any(c.indexer.indexed_block < head for c in components.values()):
        assert time.monotonic() < deadline, "the gateways did not catch up"
        time.sleep(0.05)


def _clinic_at(fed: Federation, gw: int) -> GatewayClient:
    client = GatewayClient(fed.url(gw))
    client.sign_in(dev_account(CLINIC))
    return client


# ---------------------------------------------------------------- discovery and release across institutions


def test_a_clinician_finds_and_reads_another_institutions_record_through_its_own_gateway(
    fed: Federation, both: dict[int, Components]
) -> None:
    records = _upload(fed, GW_A, 10)
    _grant(fed, 10, CLINIC, "lab-results")
    _wait_indexed(both, fed)
    with _clinic_at(fed, GW_B) as clinic:
        found = clinic.discover(dev_account(10).address)
        assert found["unavailable"] == []
        assert {r["recordId"] for r in found["records"]} == {records["lab-results"]}  # consented category only
        (rec,) = found["records"]
        assert rec["holder"] == dev_account(GW_A).address and rec["holderName"].startswith("City First")
        assert rec["resources"], "the holder's index travels with the record"
        body = clinic.release(records["lab-results"], "treatment")
        fhir = clinic.open(body, dev_encryption_key(CLINIC)[0])
    assert fhir["resourceType"] == "Bundle"
    assert body["ledger"]["mode"] == "strict"
    # ledgered by the holder: its gateway sent logAccess, naming the clinician as requester
    tx = fed.client.w3.eth.get_transaction(body["ledger"]["txHash"])
    assert tx["from"] == dev_account(GW_A).address
    # the forwarding gateway (B) cannot open what it passed on
    with pytest.raises(hpke.HpkeError):
        open_release(body, dev_encryption_key(GW_B)[0], dev_account(CLINIC).address)
    assert both[GW_B].metrics.forwarded._value.get() >= 1
    assert both[GW_A].metrics.peer_requests.labels(kind="release")._value.get() >= 1


def test_a_refusal_at_the_holder_reaches_the_clinician_as_it_is(fed: Federation, both: dict[int, Components]) -> None:
    records = _upload(fed, GW_A, 11)
    _grant(fed, 11, CLINIC, "lab-results")
    _wait_indexed(both, fed)
    with _clinic_at(fed, GW_B) as clinic:
        with pytest.raises(GatewayProblem) as not_consented:
            clinic.release(records["encounters"], "treatment")
        assert not_consented.value.status == 403 and not_consented.value.code == "wrong_category"
        fed.ledger.consents.revoke(dev_account(11), dev_account(CLINIC).address)
        _wait_indexed(both, fed)
        with pytest.raises(GatewayProblem) as revoked:
            clinic.release(records["lab-results"], "treatment")
        assert revoked.value.status == 403 and revoked.value.code == "consent_revoked"
        assert clinic.discover(dev_account(11).address)["records"] == []


def test_a_holder_that_does_not_answer_is_503_and_the_rest_works(fed: Federation) -> None:
    with fed.gateway(GW_B) as b:
        with fed.gateway(GW_A) as a:
            at_a = _upload(fed, GW_A, 12)
            at_b = _upload(fed, GW_B, 12)
            _grant(fed, 12, CLINIC, "lab-results")
            _wait_indexed({GW_A: a, GW_B: b}, fed)
        # A has stopped: B answers for what it holds and says what is missing
        with _clinic_at(fed, GW_B) as clinic:
            with pytest.raises(GatewayProblem) as down:
                clinic.release(at_a["lab-results"], "treatment")
            assert down.value.status == 503 and down.value.code == "holder_unavailable"
            found = clinic.discover(dev_account(12).address)
            assert [(u["gateway"], u["code"]) for u in found["unavailable"]] == [
                (dev_account(GW_A).address, "holder_unavailable")
            ]
            assert {r["recordId"] for r in found["records"]} == {at_b["lab-results"]}
            assert clinic.open(clinic.release(at_b["lab-results"], "treatment"), dev_encryption_key(CLINIC)[0])


def test_an_endpoint_the_chain_does_not_vouch_for_is_not_used(fed: Federation, both: dict[int, Components]) -> None:
    """A manifest edited to send gateway A's requests elsewhere: A drops out of B's directory."""
    directory = both[GW_B].federation.directory
    a = dev_account(GW_A).address
    assert directory.peer(a) is not None
    honest = directory.names.metadata(a)
    assert honest is not None
    tampered = MemberNames(None, [{**honest, "endpoint": "http://127.0.0.1:1"}])
    assert Directory(directory.db, tampered, directory.self_address).peer(a) is None
    assert Directory(directory.db, MemberNames(None, [honest]), directory.self_address).peer(a) is not None


# ---------------------------------------------------------------- the signed gateway-to-gateway requests


def _signed(
    fed: Federation, signer: int, acting_for: int, target: str, *, timestamp: int | None = None, nonce: str = "ab" * 16
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    account, member = dev_account(signer), dev_account(acting_for).address
    message = signing_message("GET", target, b"", gateway=account.address, acting_for=member, timestamp=ts, nonce=nonce)
    signature = Account.sign_message(encode_defunct(text=message), account.key).signature
    return {
        HEADERS["gateway"]: account.address,
        HEADERS["acting_for"]: member,
        HEADERS["timestamp"]: str(ts),
        HEADERS["nonce"]: nonce,
        HEADERS["signature"]: "0x" + bytes(signature).hex(),
    }


def test_gateway_requests_are_signed_fresh_once_and_by_a_gateway(fed: Federation, both: dict[int, Components]) -> None:
    target = f"/v1/federation/patients/{dev_account(10).address}/records?purpose=treatment"
    with httpx.Client(base_url=fed.url(GW_A), timeout=10) as http:

        def status(headers: dict[str, str], path: str = target) -> tuple[int, str]:
            resp = http.get(path, headers=headers)
            return resp.status_code, orjson.loads(resp.content).get("code", "")

        assert status({}) == (401, "invalid_signature")
        good = _signed(fed, GW_B, CLINIC, target, nonce="c1" * 16)
        assert status(good)[0] == 200
        assert status(good) == (401, "replayed_nonce")
        tampered = _signed(fed, GW_B, CLINIC, target, nonce="c2" * 16)
        assert status(tampered, target.replace("treatment", "research")) == (401, "invalid_signature")
        stale = _signed(fed, GW_B, CLINIC, target, timestamp=int(time.time()) - 600, nonce="c3" * 16)
        assert status(stale) == (401, "invalid_signature")
        not_a_gateway = _signed(fed, HOSPITAL, CLINIC, target, nonce="c4" * 16)
        assert status(not_a_gateway) == (403, "wrong_role")
        outsider = _signed(fed, 18, CLINIC, target, nonce="c5" * 16)
        assert status(outsider)[0] == 403
        for_an_outsider = _signed(fed, GW_B, 18, target, nonce="c6" * 16)
        assert status(for_an_outsider)[0] == 403


# ---------------------------------------------------------------- one verified history (batch mode: last, the
# gateways keep their journals from here on)


def _history_settled(fed: Federation, patient: int, want: int) -> dict:
    with GatewayClient(fed.url(GW_B)) as gw:
        gw.sign_in(dev_account(patient))
        deadline = time.monotonic() + 30
        while True:
            log = gw.my_access_log()
            if len(log["accesses"]) >= want and all(e["verified"] for e in log["accesses"]):
                return log
            assert time.monotonic() < deadline, f"history not verified in time: {log['accesses']}"
            time.sleep(0.3)


def test_the_patient_sees_every_gateways_releases_in_one_history_each_checked(fed: Federation) -> None:
    with fed.gateway(GW_A, ledger_mode="batch", anchor_interval=0.5) as a:
        with fed.gateway(GW_B, ledger_mode="batch", anchor_interval=0.5) as b:
            at_a, at_b = _upload(fed, GW_A, 13), _upload(fed, GW_B, 13)
            _grant(fed, 13, CLINIC, "lab-results")
            _wait_indexed({GW_A: a, GW_B: b}, fed)
            with _clinic_at(fed, GW_B) as clinic:
                from_a = clinic.release(at_a["lab-results"], "treatment")
                from_b = clinic.release(at_b["lab-results"], "treatment")
            assert from_a["ledger"]["mode"] == from_b["ledger"]["mode"] == "batch"
            log = _history_settled(fed, 13, 2)
            by_holder = {e["holder"]: e for e in log["accesses"]}
            assert set(by_holder) == {dev_account(GW_A).address, dev_account(GW_B).address}
            assert by_holder[dev_account(GW_A).address]["accessId"] == from_a["accessId"]
            assert {e["verification"] for e in log["accesses"]} == {"anchored_root"}
            assert all(e["requester"] == dev_account(CLINIC).address for e in log["accesses"])
            _pages_across_gateways_make_the_whole_history(fed, log)
            _a_gateway_that_alters_or_invents_an_entry_is_flagged(fed, b)
        # B alone: A's entries are missing and B says so
        with GatewayClient(fed.url(GW_A)) as gw:
            gw.sign_in(dev_account(13))
            log = gw.my_access_log()
        assert [u["gateway"] for u in log["unavailable"]] == [dev_account(GW_B).address]
        assert [e["holder"] for e in log["accesses"]] == [dev_account(GW_A).address]


def _pages_across_gateways_make_the_whole_history(fed: Federation, whole: dict) -> None:
    """One entry a page: B's own journal and A's (asked with the cursor over the federation) interleave
    newest first into exactly the whole history, and A answers a page, not everything."""
    with GatewayClient(fed.url(GW_B)) as gw:
        gw.sign_in(dev_account(13))
        first = gw.my_access_log(limit=1)
        assert len(first["accesses"]) == 1 and first["cursor"] and first["next"].endswith("limit=1")
        assert [e["accessId"] for e in gw.iter_access_log(limit=1)] == [e["accessId"] for e in whole["accesses"]]
    patient = dev_account(13).address
    with GatewayClient(fed.url(GW_A)) as gw:
        gw.act_for(dev_account(GW_B), patient)
        assert len(gw.holder_accesses(patient, limit=1)["entries"]) == 1
        newest = gw.holder_accesses(patient, limit=1)["entries"][0]
        assert gw.holder_accesses(patient, cursor=first["cursor"], limit=5)["entries"] in ([], [newest])


def _a_gateway_that_alters_or_invents_an_entry_is_flagged(fed: Federation, b: Components) -> None:
    """What A really answers for patient 13, altered two ways, as B checks it."""
    from gateway.services.access_history import _checked

    patient = dev_account(13).address
    with GatewayClient(fed.url(GW_A)) as gw:
        gw.act_for(dev_account(GW_B), patient)
        (item,) = gw.holder_accesses(patient)["entries"]
    peer = b.federation.directory.peer(dev_account(GW_A).address)
    assert peer is not None
    assert _checked(b, peer, patient, item, {})["verification"] == "anchored_root"
    raw = bytearray(bytes.fromhex(item["entry"][2:]))
    raw[-1] ^= 1  # one bit of the entry (its state-seen time) changed
    altered = {**item, "entry": "0x" + raw.hex()}
    assert _checked(b, peer, patient, altered, {})["verification"] == "proof_mismatch"
    invented_root = merkle.leaf_hash(bytes(raw))  # a one-entry tree of its own: consistent, never anchored
    invented = {
        **altered,
        "journalIndex": 0,
        "anchor": {**item["anchor"], "root": "0x" + invented_root.hex(), "treeSize": 1},
        "inclusionProof": [],
    }
    assert _checked(b, peer, patient, invented, {})["verification"] == "root_not_on_chain"


def test_discovery_pages_merge_every_gateways_records_by_key(fed: Federation, both: dict[int, Components]) -> None:
    """Each page asks each gateway for at most limit + 1 records below the cursor's key: the pages, merged
    newest first, neither repeat nor skip a record of either holder; the peer's own page has a cursor."""
    for gw in (GW_A, GW_B, GW_A, GW_B):
        _upload(fed, gw, 15)
    _grant(fed, 15, CLINIC, "encounters,medications,lab-results,conditions")
    _wait_indexed(both, fed)
    patient = dev_account(15).address
    with _clinic_at(fed, GW_A) as clinic:
        whole = clinic.discover(patient, limit=200)
        assert whole["cursor"] is None and {r["holder"] for r in whole["records"]} == {
            dev_account(GW_A).address,
            dev_account(GW_B).address,
        }
        keys = [(r["registeredAt"], r["recordId"]) for r in whole["records"]]
        assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
        walked = [r["recordId"] for r in clinic.iter_discover(patient, limit=3)]
        assert walked == [r for _, r in keys]
    with GatewayClient(fed.url(GW_B)) as b:
        b.act_for(dev_account(GW_A), dev_account(CLINIC).address)
        page = b.holder_discover(patient, limit=1)
        theirs = [r for r in whole["records"] if r["holder"] == dev_account(GW_B).address]
        assert [r["recordId"] for r in page["records"]] == [theirs[0]["recordId"]] and page["cursor"]
        rest = b.holder_discover(patient, limit=200, cursor=page["cursor"])
        assert [r["recordId"] for r in rest["records"]] == [r["recordId"] for r in theirs[1:]]


def test_a_blinded_category_is_asked_of_a_peer_by_its_slot(fed: Federation, both: dict[int, Components]) -> None:
    """Only B holds the patient's key: B maps ``mental-health`` to her slot and asks A for ``slot-N``, which A
    filters without the key (a slug would be A's 409 ``category_key_needed``: A listed unavailable)."""
    patient = Account.create()
    domain = fed.ledger.consents.domain()
    signature = sign_category_key(patient, domain)
    both[GW_B].category_keys.learn(patient.address, signature)
    slot = category_key(domain, patient.address, signature).slot(Category.MENTAL_HEALTH)
    allergy = (SAMPLE.parents[1] / "hl7-r4" / "AllergyIntolerance-example.json").read_bytes()
    with GatewayClient(fed.url(GW_A)) as hospital:
        hospital.sign_in(dev_account(HOSPITAL))
        (record,) = hospital.upload(patient.address, allergy)["records"]
        now = fed.client.block_timestamp()
        grant = fed.ledger.consents.build_grant(
            patient.address,
            dev_account(CLINIC).address,
            1 << Category.ALLERGIES | 1 << slot,
            parse_purposes("treatment"),
            now - 60,
            now + 3600,
            deadline=now + 600,
        )
        hospital.submit_consent(signing.sign(patient, domain, grant).as_dict())
    _wait_indexed(both, fed)
    with _clinic_at(fed, GW_B) as clinic:
        found = clinic.discover(patient.address, category="allergies,mental-health")
        assert found["unavailable"] == []
        assert [(r["recordId"], r["category"]) for r in found["records"]] == [(record["recordId"], "allergies")]
    with _clinic_at(fed, GW_A) as clinic, pytest.raises(GatewayProblem) as needed:
        clinic.discover(patient.address, category="mental-health")
    assert (needed.value.status, needed.value.code) == (409, "category_key_needed")
