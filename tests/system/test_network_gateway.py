"""The gateway on a real 3-validator Clique network: confirmations, a real reorganisation, validator faults.

* a grant counts once it is ``confirmations`` blocks deep; a revocation is in force as soon as it is seen;
* a partition: one validator is cut off, both sides build, each side mines a grant spending the same
  patient nonce (only one can survive); after the heal the gateway that followed the lone validator holds
  exactly what a fresh replay of the final chain holds, with or without confirmations;
* faults under load: the gateway's own RPC node killed (fail over), one of three validators down (grants,
  revocations, releases go on; every release ledgered and anchored), two of three frozen (strict releases
  503, batch releases stop at the anchor-lag bound, /healthz 503), then back by itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.ledger.indexer import Indexer
from gateway.storage.db import Database
from gateway.storage.read_model import CHAIN_TABLES
from gateway.wiring import Components
from node_client._client import ChainClient
from node_client._exceptions import GatewayProblem, TransactionError
from node_client.deploy import Ledger, Manifest, dev_encryption_key
from node_client.gateway_client import GatewayClient, open_release
from node_client.keys import dev_account
from node_client.network import Consortium, Network
from node_client.vocabulary import parse_purposes
from tests.support.gateway_harness import slots_of
from tests.support.network import heal, network_gateway, partition, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "fhir" / "synthea" / "patient-1-Emmie273_Kovacek682.json"
HOSPITAL, CLINIC, LAB = 4, 5, 6


@pytest.fixture(autouse=True)
def _agreed(network: Network) -> None:
    """Each test starts on a network whose validators are fully peered and agree (a restarted or thawed one
    has reconnected and caught up), that still seals blocks, and whose pools are empty: a transaction the
    previous test left pending at one node would hold the nonce a new gateway, asking another node, is
    about to use; a restarted node without peers would hold the gateway's first transaction unmined."""
    agreed = network.wait_agreement(timeout=90)
    wait_until(lambda: _agree(network) and _agree_head(network) >= agreed + 2, timeout=90, what="new blocks")
    wait_until(lambda: _pools_empty(network), timeout=90, what="the transaction pools to drain")


def _agree_head(net: Network) -> int:
    return min(net.client(i).block_number() for i in range(len(net.nodes)))


def _pools_empty(net: Network) -> bool:
    return all(int(net.rpc(i, "txpool_status")["pending"], 16) == 0 for i in range(len(net.nodes)))


def _ledger(net: Network, node: int = 0, timeout: float = 30) -> Ledger:
    assert net.manifest_path is not None
    return Manifest.load(net.manifest_path).connect(ChainClient(rpc_url=net.nodes[node].url, timeout=timeout))


def _grant(net: Network, patient: int, grantee: int, categories: str, *, node: int = 0, timeout: float = 30) -> bytes:
    ledger = _ledger(net, node, timeout)
    now = ledger.client.block_timestamp()
    consent_id, _ = ledger.consents.grant(
        dev_account(patient),
        dev_account(grantee).address,
        slots_of(ledger.consents.domain(), dev_account(patient), categories),
        parse_purposes("treatment"),
        now - 60,
        now + 86_400,
    )
    return bytes(consent_id)


def _upload(url: str, patient: int) -> dict[str, str]:
    with GatewayClient(url) as gw:
        gw.sign_in(dev_account(HOSPITAL))
        out = gw.upload(dev_account(patient).address, SAMPLE.read_bytes())
    return {r["category"]: r["recordId"] for r in out["records"]}


def _release(url: str, reader: int, record: str) -> dict | GatewayProblem:
    with GatewayClient(url, timeout=60) as gw:
        gw.sign_in(dev_account(reader))
        try:
            body = gw.release(record, "treatment")
        except GatewayProblem as problem:
            return problem
    assert open_release(body, dev_encryption_key(reader)[0], dev_account(reader).address)  # really opens
    return body


def _until_released(url: str, record: str, *, timeout: float) -> None:
    """Retries the clinic's release until it succeeds (a grant counting, or the chain coming back)."""
    wait_until(lambda: isinstance(_release(url, CLINIC, record), dict), timeout=timeout, what="a release")


def _wait_seen(c: Components, block: int) -> None:
    wait_until(lambda: c.indexer.status().head_block >= block, timeout=30, what=f"the gateway to see block {block}")


# ---------------------------------------------------------------- confirmations


def test_a_grant_counts_once_confirmed_and_a_revocation_at_once(network: Network, tmp_path: Path) -> None:
    with network_gateway(tmp_path, network) as (c, url):
        assert c.indexer.confirmations == 3  # from the network's manifest
        records = _upload(url, 10)
        ledger = _ledger(network)
        _grant(network, 10, CLINIC, "encounters,lab-results")
        grant_block = ledger.client.block_number()
        _wait_seen(c, grant_block)
        early = _release(url, CLINIC, records["lab-results"])
        assert isinstance(early, GatewayProblem) and early.status in (403, 404), "counted before confirmation"
        wait_until(lambda: c.indexer.indexed_block >= grant_block, timeout=30, what="the grant to confirm")
        body = _release(url, CLINIC, records["lab-results"])
        assert isinstance(body, dict) and body["ledger"]["mode"] == "strict"
        receipt_block = body["ledger"]["blockNumber"]
        assert ledger.client.block_number() - receipt_block >= 3, "released before logAccess was 3 deep"
        ledger.consents.revoke(dev_account(10), dev_account(CLINIC).address)
        _wait_seen(c, ledger.client.block_number())
        refused = _release(url, CLINIC, records["lab-results"])
        assert isinstance(refused, GatewayProblem) and refused.code == "consent_revoked"
        assert c.indexer.indexed_block < ledger.client.block_number()  # refused before it was confirmed


# ---------------------------------------------------------------- a real reorganisation


def _chain_rows(db_path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(db_path)
    try:
        return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in CHAIN_TABLES}
    finally:
        conn.close()


def _partition_after_anothers_block(net: Network, lone: int) -> None:
    """Cuts ``lone`` off right after a block it did not seal, so that it may seal one more on its own
    (Clique lets one signer of three seal at most every other block): both sides then build."""
    for _ in range(5):
        partition(net, lone)
        head = net.rpc(lone, "eth_getBlockByNumber", ["latest", False])["hash"]
        if net.rpc(lone, "clique_getSigner", [head]).lower() != net.nodes[lone].signer.lower():
            return
        heal(net, lone)
        time.sleep(1.5)
    pytest.fail("could not partition after another signer's block")


@pytest.mark.parametrize("confirmations", [0, 3])
def test_after_a_partition_heals_the_gateway_equals_a_fresh_replay(
    network: Network, tmp_path: Path, confirmations: int
) -> None:
    lone, patient = 2, 11 if confirmations == 0 else 12
    with network_gateway(tmp_path / "gw", network, rpc=[lone], confirmations=confirmations) as (c, _url):
        wait_until(lambda: _agree(network), timeout=60, what="agreement before the partition")
        try:
            _partition_after_anothers_block(network, lone)
            start = network.client(lone).block_number()
            # the same nonce of the patient on both sides: only the majority's grant can survive the heal
            with contextlib.suppress(TransactionError):  # the lone side may seal its one block without it
                _grant(network, patient, CLINIC, "lab-results", node=lone, timeout=8)
            wait_until(lambda: network.client(lone).block_number() > start, timeout=15, what="the lone block")
            lone_tip = network.client(lone).block_number()
            lone_hash = network.rpc(lone, "eth_getBlockByNumber", [hex(lone_tip), False])["hash"]
            _wait_seen(c, lone_tip)
            _grant(network, patient, LAB, "lab-results", node=0)
            wait_until(lambda: network.client(0).block_number() >= lone_tip + 3, timeout=60, what="the majority")
        finally:
            heal(network, lone)
        wait_until(lambda: _agree(network), timeout=90, what="the validators to agree after the heal")
        assert network.rpc(0, "eth_getBlockByNumber", [hex(lone_tip), False])["hash"] != lone_hash
        majority = _ledger(network, 0)
        head = majority.client.block_number()
        wait_until(lambda: c.indexer.indexed_block >= head - confirmations, timeout=60, what="the gateway to follow")
        if confirmations == 0:
            assert c.indexer.reorgs >= 1, "the lone block was indexed, so its loss must have been noticed"
        fresh_db = tmp_path / "fresh.sqlite"
        deploy_block = Manifest.load(Path(str(network.manifest_path))).deploy_block
        fresh = Indexer(majority, Database(fresh_db), deploy_block=deploy_block, confirmations=0)
        fresh.poll_once()
        target = fresh.indexed_block
        # the same block range on both sides: the majority's grant may sit in the last `confirmations` blocks
        wait_until(lambda: c.indexer.indexed_block >= target, timeout=60, what="the gateway to pass the replay")
        assert _chain_rows(c.settings.db_path) == _chain_rows(fresh_db)
        # the two grants spent the same nonce: exactly one survives (Clique's fork choice picks the branch)
        consents = {(r[0], r[1]) for r in _chain_rows(fresh_db)["chain_consents"]}
        survivors = {g for g in (LAB, CLINIC) if (dev_account(patient).address, dev_account(g).address) in consents}
        assert len(survivors) == 1, survivors


def _agree(net: Network) -> bool:
    heads = [net.client(i).block_number() for i in range(len(net.nodes))]
    tip = min(heads)
    return len({net.rpc(i, "eth_getBlockByNumber", [hex(tip), False])["hash"] for i in range(len(net.nodes))}) == 1


# ---------------------------------------------------------------- faults under load


def test_validator_faults_under_load(network: Network, tmp_path: Path) -> None:
    """Batch mode: the gateway talks to validator 0 first, then 1 and 2."""
    with network_gateway(tmp_path, network, ledger_mode="batch", max_anchor_lag=6.0) as (c, url):
        records = _upload(url, 13)
        _grant(network, 13, CLINIC, "lab-results,encounters")
        _until_released(url, records["lab-results"], timeout=30)
        released = 1
        # the gateway's first node dies: it fails over, releases and grants go on
        network.nodes[0].stop()
        try:
            for _ in range(5):
                assert isinstance(_release(url, CLINIC, records["lab-results"]), dict)
                released += 1
            _grant(network, 14, CLINIC, "lab-results", node=1)
            _ledger(network, 1).consents.revoke(dev_account(14), dev_account(CLINIC).address)  # and revocations
            assert c.ledger.client.rpc_url != network.nodes[0].url
            # two of three down: production stops; batch releases go on until the anchor-lag bound, then 503
            network.nodes[1].freeze()
            refused = None
            deadline = time.monotonic() + 60
            while refused is None and time.monotonic() < deadline:
                out = _release(url, CLINIC, records["lab-results"])
                if isinstance(out, GatewayProblem):
                    refused = out
                else:
                    released += 1
                time.sleep(0.5)
            assert refused is not None and refused.status == 503, "batch releases must stop at the bound"
            with GatewayClient(url) as gw:
                health = gw.request("GET", "/healthz")
            assert health.status_code == 503
        finally:
            network.nodes[1].thaw()
            network.up(Consortium.development(3), manifest_path=Path(str(network.manifest_path)))
        # back by itself: anchors catch up, releases resume
        wait_until(lambda: c.anchorer is not None and c.anchorer.lag_seconds == 0, timeout=120, what="anchors")
        assert isinstance(_release(url, CLINIC, records["lab-results"]), dict)
        released += 1
        assert c.journal is not None and c.journal.size == released, "every release is ledgered, nothing else"


def test_two_of_three_frozen_strict_releases_refuse_then_recover(network: Network, tmp_path: Path) -> None:
    with network_gateway(tmp_path, network) as (_c, url):
        records = _upload(url, 15)
        _grant(network, 15, CLINIC, "lab-results")
        _until_released(url, records["lab-results"], timeout=30)
        before = list(_ledger(network).access.events(["AccessLogged"], from_block=0))
        network.nodes[1].freeze()
        network.nodes[2].freeze()
        try:
            out = _release(url, CLINIC, records["lab-results"])
            assert isinstance(out, GatewayProblem) and out.status == 503, "a release without a mined logAccess"
        finally:
            network.nodes[1].thaw()
            network.nodes[2].thaw()
        _until_released(url, records["lab-results"], timeout=90)
        after = list(_ledger(network).access.events(["AccessLogged"], from_block=0))
        assert len(after) >= len(before) + 1
