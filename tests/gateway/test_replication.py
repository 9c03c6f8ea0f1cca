"""Replication and recovery across institutions (federation step 4): each record's ciphertext pinned on a peer
gateway's IPFS node, refused for what the asker did not register, queued while the peer is down, and every
blob of a gateway that lost its store recovered from the swarm by ``reconcile``.

Real Hardhat node, two real gateways over HTTP (A: dev account 20, B: 21, as in ``test_federation.py``), each
on its own real Kubo node, the two in a private swarm (``node_client.network.kubo``). No mocks. Without a
Kubo binary the module skips, unless ``HCL_REQUIRE_IPFS=1`` (then it fails), like the other IPFS tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.ops.reconcile import reconcile
from gateway.settings import GatewaySettings
from gateway.storage import read_model, record_keys, replicas
from gateway.storage.blobs import IpfsBlobStore, cid_from_str
from gateway.wiring import Components
from node_client._client import ChainClient
from node_client._exceptions import GatewayProblem
from node_client._node import HardhatNode, free_port
from node_client.deploy import Ledger, dev_encryption_key
from node_client.gateway_client import GatewayClient
from node_client.keys import dev_account
from node_client.network.kubo import KuboNode, connect, new_swarm_key
from node_client.vocabulary import parse_purposes
from tests.support.federation import GW_A, GW_B, deploy_with_gateways, gateway_settings, served
from tests.support.gateway_harness import slots_of
from tests.support.network import kubo_node, need_kubo

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "fhir" / "synthea" / "patient-1-Emmie273_Kovacek682.json"
HOSPITAL, CLINIC = 4, 5


@dataclass
class Swarmed:
    """The chain, the two gateways' settings and their Kubo nodes."""

    node: HardhatNode
    client: ChainClient
    ledger: Ledger
    manifest_path: Path
    ports: dict[int, int]
    kubo: dict[int, KuboNode]
    binary: Path
    swarm_key: Path
    tmp: Path

    def url(self, gw: int) -> str:
        return f"http://127.0.0.1:{self.ports[gw]}"

    def settings(self, gw: int) -> GatewaySettings:
        return gateway_settings(
            self.tmp,
            self.node.url,
            self.manifest_path,
            gw,
            self.ports[gw],
            federation_timeout=6,
            store="ipfs",
            ipfs_api=self.kubo[gw].api_multiaddr,
            replicas=1,
        )

    def gateway(self, gw: int) -> AbstractContextManager[Components]:
        """Gateway ``gw`` served on its registered endpoint (its data survives a restart)."""
        return served(self.settings(gw))

    def store(self, gw: int) -> IpfsBlobStore:
        return IpfsBlobStore(self.kubo[gw].api_multiaddr)


def _start_kubo(nodes: list[KuboNode], binary: Path, key: Path) -> None:
    for node in nodes:
        node.init(binary, key)
    for node in nodes:
        node.write_peers(binary, nodes)
    for node in nodes:
        node.start(binary)


@pytest.fixture(scope="module")
def sw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarmed]:
    binary = need_kubo()
    tmp = tmp_path_factory.mktemp("replication")
    key = new_swarm_key(tmp / "swarm.key")
    kubo = {GW_A: kubo_node("a", tmp), GW_B: kubo_node("b", tmp)}
    node = HardhatNode(log_path=tmp / "hardhat.log").start(port=free_port())
    try:
        _start_kubo(list(kubo.values()), binary, key)
        connect(kubo[GW_A], kubo[GW_B])
        client = ChainClient(rpc_url=node.url)
        ports = {GW_A: free_port(), GW_B: free_port()}
        manifest = deploy_with_gateways(client, ports)
        manifest.save(tmp / "manifest.json")
        yield Swarmed(node, client, manifest.connect(client), tmp / "manifest.json", ports, kubo, binary, key, tmp)
    finally:
        for k in kubo.values():
            k.stop()
        node.stop()


def _upload(sw: Swarmed, gw: int, patient: int) -> list[dict[str, Any]]:
    with GatewayClient(sw.url(gw)) as client:
        client.sign_in(dev_account(HOSPITAL))
        return list(client.upload(dev_account(patient).address, SAMPLE.read_bytes())["records"])


def _until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> float:
    """Polls ``check`` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"timed out waiting until {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def _pinned(store: IpfsBlobStore, records: list[dict[str, Any]]) -> bool:
    return all(store.exists(cid_from_str(r["locator"])) for r in records)


def _health(sw: Swarmed, gw: int) -> tuple[int, dict[str, Any]]:
    resp = httpx.get(sw.url(gw) + "/healthz", timeout=10)
    return resp.status_code, resp.json()


# ---------------------------------------------------------------- replication


def test_an_upload_is_pinned_on_a_peer_gateways_node_and_listed_there(sw: Swarmed) -> None:
    with ExitStack() as stack:
        a, b = (stack.enter_context(sw.gateway(gw)) for gw in (GW_A, GW_B))
        records = _upload(sw, GW_A, 10)
        ids = {bytes.fromhex(r["recordId"][2:]) for r in records}

        def replicated() -> bool:
            listed = {r.record_id for r in replicas.replicas(b.db, holder=dev_account(GW_A).address)}
            return ids <= listed and _pinned(sw.store(GW_B), records)

        took = _until("B's node pins every record of the upload and lists it", replicated)
        print(f"\n{len(records)} records replicated A → B in {took:.2f}s")
        held = {r.record_id: r for r in replicas.replicas(b.db, holder=dev_account(GW_A).address)}
        for r in records:
            rid = bytes.fromhex(r["recordId"][2:])
            assert held[rid].locator == cid_from_str(r["locator"])
            assert record_keys.held(b.db, rid) is None, "only ciphertext moves: B holds no data key"
        _until("A's queue is empty", lambda: a.replicator is not None and a.replicator.status().backlog == 0)
        status, health = _health(sw, GW_A)
        assert status == 200 and health["checks"]["replication"]["backlog"] == 0
        assert "hcl_replication_backlog_records 0.0" in httpx.get(sw.url(GW_A) + "/metrics").text
        assert b.metrics.replicas_pinned._value.get() >= len(records)


def _pin_as(sw: Swarmed, asker: int, at: int, record_ids: list[str]) -> GatewayProblem:
    with GatewayClient(sw.url(at)) as gw:
        gw.act_for(dev_account(asker), dev_account(asker).address)
        with pytest.raises(GatewayProblem) as refused:
            gw.holder_pin(record_ids)
    return refused.value


def test_a_pin_request_for_what_the_asker_did_not_register_is_refused(sw: Swarmed) -> None:
    with ExitStack() as stack:
        for gw in (GW_A, GW_B):
            stack.enter_context(sw.gateway(gw))
        at_b = _upload(sw, GW_B, 11)
        store_b = sw.store(GW_B)
        before = set(store_b.locators())
        # a CID A put on its own node, registered nowhere, cannot be named: only record ids are
        stray = sw.store(GW_A).put(os.urandom(1000))
        not_holder = _pin_as(sw, GW_A, GW_B, [at_b[0]["recordId"]])
        assert (not_holder.status, not_holder.code) == (403, "not_record_holder")
        unknown = _pin_as(sw, GW_A, GW_B, ["0x" + hashlib.sha256(stray).hexdigest()])
        assert (unknown.status, unknown.code) == (404, "record_not_found")
        cid = _pin_as(sw, GW_A, GW_B, [at_b[0]["locator"]])
        assert (cid.status, cid.code) == (400, "invalid_request")
        unsigned = httpx.post(sw.url(GW_B) + "/v1/federation/pins", json={"recordIds": [at_b[0]["recordId"]]})
        assert unsigned.status_code == 401
        a_member_not_a_gateway = _pin_as(sw, HOSPITAL, GW_B, [at_b[0]["recordId"]])
        assert a_member_not_a_gateway.status == 403
        assert set(store_b.locators()) - before <= {cid_from_str(r["locator"]) for r in at_b}  # B's own uploads only
        assert not store_b.exists(stray)


def test_the_backlog_survives_a_restart_and_drains_when_the_peer_comes_back(sw: Swarmed) -> None:
    with sw.gateway(GW_A) as a:
        records = _upload(sw, GW_A, 12)  # B is down: the upload answers anyway
        assert a.replicator is not None
        _until("the first attempt failed", lambda: a.replicator.status().last_error is not None, timeout=15)
        status, health = _health(sw, GW_A)
        assert status == 200, "a backlog never fails health"
        assert health["checks"]["replication"]["backlog"] == len(records)
        assert "does not answer" in health["checks"]["replication"]["lastError"]
    time.sleep(2)  # B stays down a while
    with sw.gateway(GW_A) as a, sw.gateway(GW_B):
        assert a.replicator is not None
        assert a.replicator.status().backlog == len(records), "the queue is durable across a restart"
        took = _until("the backlog drains", lambda: a.replicator.status().backlog == 0)  # type: ignore[union-attr]
        print(f"\nbacklog of {len(records)} drained {took:.2f}s after B came back")
        assert _pinned(sw.store(GW_B), records)


# ---------------------------------------------------------------- recovery from the swarm


def _fresh_kubo_a(sw: Swarmed) -> None:
    """A's blob disk is lost: its Kubo repo is wiped and made anew (same swarm key and ports, new identity)."""
    old = sw.kubo[GW_A]
    old.stop()
    shutil.rmtree(old.repo)
    new = KuboNode(old.name, old.repo, old.swarm_port, old.api_port, old.gateway_port)
    new.init(sw.binary, sw.swarm_key)
    new.write_peers(sw.binary, [new, sw.kubo[GW_B]])
    new.start(sw.binary)
    connect(new, sw.kubo[GW_B])
    sw.kubo[GW_A] = new


def test_a_gateway_that_lost_its_blob_store_recovers_every_blob_from_the_swarm(sw: Swarmed) -> None:
    with sw.gateway(GW_A) as a, sw.gateway(GW_B):
        uploaded = _upload(sw, GW_A, 13)
        _until("everything A holds is replicated", lambda: a.replicator.status().backlog == 0)  # type: ignore[union-attr]
        registered = [r for r in record_keys.states(a.db) if r.state == "registered"]
        onchain = {r.record_id: read_model.record(a.db, r.record_id) for r in registered}
    _fresh_kubo_a(sw)
    assert sw.store(GW_A).locators() == []
    dry = reconcile(sw.settings(GW_A), dry_run=True)
    assert dry.counts().get("blob_recovered") == len(registered) and not any(f.repaired for f in dry.findings)
    assert sw.store(GW_A).locators() == []
    start = time.monotonic()
    report = reconcile(sw.settings(GW_A))  # the gateway is stopped, as reconcile requires
    took = time.monotonic() - start
    print(f"\nreconcile recovered {len(registered)} blobs from the swarm in {took:.2f}s")
    counts = report.counts()
    assert counts.get("blob_recovered") == len(registered) >= 4
    assert "blob_missing" not in counts and report.exit_code == 0
    store = sw.store(GW_A)
    for r in registered:  # each pinned again, its bytes those the chain's contentHash names
        rec = onchain[r.record_id]
        assert rec is not None and hashlib.sha256(store.get(r.locator)).digest() == rec.content_hash
    # B's reconcile keeps the replicas it pins for A: they are not its orphans
    held_by_b = [r.locator for r in registered]
    assert "orphan_blob" not in reconcile(sw.settings(GW_B)).counts()
    assert all(sw.store(GW_B).exists(locator) for locator in held_by_b)
    now = sw.client.block_timestamp()
    sw.ledger.consents.grant(
        dev_account(13),
        dev_account(CLINIC).address,
        slots_of(sw.ledger.consents.domain(), dev_account(13), "lab-results"),
        parse_purposes("treatment"),
        now - 60,
        now + 3600,
    )
    lab = next(r["recordId"] for r in uploaded if r["category"] == "lab-results")
    with sw.gateway(GW_A) as a:
        assert {r.state for r in record_keys.states(a.db)} == {"registered"}
        head = sw.client.block_number()
        _until("A indexed the grant", lambda: a.indexer.indexed_block >= head, timeout=15)
        with GatewayClient(sw.url(GW_A)) as gw:
            gw.sign_in(dev_account(CLINIC))
            fhir = gw.open(gw.release(lab, "treatment"), dev_encryption_key(CLINIC)[0])
    assert fhir["resourceType"] == "Bundle"
