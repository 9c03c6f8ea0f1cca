"""The chain client: concurrency-safe nonces, error translation, event paging, manifests, exports."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from eth_account import Account
from web3.exceptions import BlockNotFound

import node_client
from node_client import errors
from node_client._client import ChainClient
from node_client.deploy import Ledger, Manifest
from node_client.events import read_events
from node_client.vocabulary import Category
from tests.support.chain import Accounts, cid, h


def test_exports_are_sorted_and_importable() -> None:
    assert node_client.__all__ == sorted(node_client.__all__)
    for name in node_client.__all__:
        assert hasattr(node_client, name), name


def test_custom_errors_are_importable_by_name() -> None:
    cls = errors.ConsentInvalidNonce
    assert issubclass(cls, errors.ContractRevert) and issubclass(cls, errors.NodeClientError)
    assert cls.__name__ == "ConsentInvalidNonce"
    with pytest.raises(AttributeError):
        errors.NoSuchError  # noqa: B018


def test_decode_revert_known_and_unknown() -> None:
    from eth_abi import encode
    from eth_utils import function_signature_to_4byte_selector as sel

    data = sel("ConsentInvalidNonce(uint64,uint64)") + encode(["uint64", "uint64"], [3, 5])
    exc = errors.decode_revert(data)
    assert isinstance(exc, errors.ConsentInvalidNonce)
    assert exc.nonce == 3 and exc.expected == 5
    assert "ConsentInvalidNonce(nonce=3, expected=5)" in str(exc)
    unknown = errors.decode_revert(b"\xde\xad\xbe\xef")
    assert type(unknown) is errors.ContractRevert


def test_concurrent_senders_share_one_key(ledger: Ledger, accounts: Accounts) -> None:
    """Sixteen threads register records with the gateway's key at once: no nonce is reused or lost."""
    patient = accounts.patients[0].address

    def register(i: int) -> int:
        result = ledger.records.register(
            accounts.gateway,
            h(f"conc-{i}"),
            patient,
            accounts.hospital.address,
            Category.LAB_RESULTS,
            h(f"ct-{i}"),
            cid(f"ct-{i}"),
        )
        return result.block_number

    with ThreadPoolExecutor(max_workers=8) as pool:
        blocks = list(pool.map(register, range(16)))
    assert len(set(blocks)) == 16
    for i in range(16):
        assert ledger.records.record_of(h(f"conc-{i}")).patient == patient


def test_nonce_recovers_after_a_failed_send(ledger: Ledger, accounts: Accounts) -> None:
    with pytest.raises(errors.RecordInvalidCategory):
        ledger.records.register(
            accounts.gateway, h("bad"), accounts.patients[0].address, accounts.hospital.address, 99, h("c"), cid("c")
        )
    ledger.records.register(
        accounts.gateway, h("good"), accounts.patients[0].address, accounts.hospital.address, 1, h("c"), cid("c")
    )


def test_a_key_used_by_another_program_meanwhile_costs_no_failed_send(
    ledger: Ledger, manifest: Manifest, accounts: Accounts
) -> None:
    """The gateway's key sends from a second client (an operator's CLI, a test) after this one cached its
    nonce: the node refuses the stale nonce, the client asks again and the transaction goes through."""
    p0, ok = accounts.patients[0].address, 1

    def register(ledger: Ledger, name: str) -> None:
        ledger.records.register(accounts.gateway, h(name), p0, accounts.hospital.address, ok, h(name), cid(name))

    register(ledger, "mine-1")  # caches the gateway's nonce
    other = manifest.connect(ChainClient(rpc_url=ledger.client.rpc_urls[0]))
    register(other, "theirs-1")
    register(other, "theirs-2")
    register(ledger, "mine-2")
    for name in ("mine-1", "theirs-1", "theirs-2", "mine-2"):
        assert ledger.records.record_of(h(name)).patient == p0
    # a refusal for another reason is not retried: it raises as the node said
    client = ledger.client
    fn = ledger.records.contract.functions.register(h("x"), p0, accounts.hospital.address, ok, h("x"), cid("x"))
    with pytest.raises(errors.TransactionError, match=r"(?i)sender doesn't have enough funds|insufficient funds"):
        client.transact(fn, signer=Account.create(), gas=300_000)


def test_revert_in_a_mined_transaction_is_decoded(ledger: Ledger, accounts: Accounts) -> None:
    """With an explicit gas limit nothing is estimated: the tx is mined, reverts, and is replayed."""
    fn = ledger.consents.contract.functions.revoke(accounts.hospital.address)
    with pytest.raises(errors.ConsentNotActive) as exc:
        ledger.client.transact(fn, signer=accounts.patients[0], gas=100_000)
    assert exc.value.tx_hash is not None


def test_read_events_pages_over_block_ranges(ledger: Ledger, manifest: Manifest) -> None:
    addresses = ledger.addresses
    whole = list(read_events(ledger.client, addresses, from_block=manifest.deploy_block))
    paged = list(read_events(ledger.client, addresses, from_block=manifest.deploy_block, page_size=2))
    assert [(e.block_number, e.log_index) for e in paged] == [(e.block_number, e.log_index) for e in whole]
    names = {e.name for e in whole}
    assert {"MemberAdded", "ProposalCreated", "ProposalApproved", "ProposalExecuted"} <= names
    only = list(read_events(ledger.client, addresses, from_block=manifest.deploy_block, names=["MemberAdded"]))
    assert len(only) == len(manifest.members) == 7


def test_read_events_decodes_as_web3_does(ledger: Ledger, manifest: Manifest) -> None:
    """The raw logs sliced word by word give what web3's own event decoding gives (addresses checksummed)."""
    events = list(read_events(ledger.client, ledger.addresses, from_block=manifest.deploy_block))
    added = [e for e in events if e.name == "MemberAdded"]
    by_web3 = ledger.members.contract.events.MemberAdded().get_logs(from_block=manifest.deploy_block)
    assert len(by_web3) == len(added) > 0
    assert [dict(e.args) for e in added] == [dict(w["args"]) for w in by_web3]
    assert [(e.block_number, e.tx_hash, e.log_index) for e in added] == [
        (w["blockNumber"], w["transactionHash"].to_0x_hex(), w["logIndex"]) for w in by_web3
    ]


def test_block_headers_come_in_batches_as_one_by_one(ledger: Ledger) -> None:
    client = ledger.client
    head = client.block_number()
    blocks = [0, 1, head, head - 1, 1]
    headers = client.block_headers(blocks, chunk=2)
    assert headers == {n: (client.block_hash(n), client.block_timestamp(n)) for n in set(blocks)}
    with pytest.raises(BlockNotFound):
        client.block_headers([head + 1_000])


def test_manifest_round_trip_and_chain_check(tmp_path: Path, manifest: Manifest, client: ChainClient) -> None:
    path = tmp_path / "m.json"
    manifest.save(path)
    assert Manifest.load(path) == manifest
    other = Manifest(**{**manifest.__dict__, "chain_id": 1})
    with pytest.raises(errors.DeploymentError, match="chain 1"):
        other.connect(client)
    tampered = Manifest(**{**manifest.__dict__, "abi_hashes": {**manifest.abi_hashes, "AccessLedger": "0x00"}})
    with pytest.raises(errors.DeploymentError, match="another ABI"):
        tampered.connect(client)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(errors.DeploymentError):
        Manifest.load(tmp_path / "bad.json")


def test_manifest_has_no_personal_data(manifest: Manifest) -> None:
    """Institution names live in the manifest (off-chain); on-chain there is only their hash."""
    for member in manifest.members:
        assert len(bytes.fromhex(member["metadataHash"][2:])) == 32
        assert len(bytes.fromhex(member["encryptionKey"][2:])) == 32


def test_proof_of_authority_blocks_are_recognised_by_their_seal(node) -> None:
    """No engine flag: a Clique/QBFT seal in extraData becomes proofOfAuthorityData, plain blocks pass."""
    from node_client._client import _poa_block

    sealed = {"number": "0x1", "extraData": "0x" + "00" * 32 + "11" * 20 + "00" * 65}
    assert "extraData" not in _poa_block(sealed) and len(_poa_block(sealed)["proofOfAuthorityData"]) == 117
    plain = {"number": "0x1", "extraData": "0x" + "ab" * 32}
    assert _poa_block(plain) == plain and _poa_block(None) is None
    client = ChainClient(rpc_url=node.url)
    assert "extraData" in client.w3.eth.get_block("latest")  # Hardhat: unchanged


def test_unreachable_node_raises_chain_unavailable() -> None:
    from node_client._node import free_port

    client = ChainClient(rpc_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    assert client.is_connected() is False
    with pytest.raises(errors.ChainUnavailable):
        client.block_number()
