"""The registrar's group commit, on a real Hardhat node: many uploads in one transaction, a refused group
split so each upload gets its own answer, and concurrent uploads through the real gateway sharing
transactions."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from gateway.ledger.registrations import Registrar, _Pending
from node_client import errors
from node_client._client import TxResult
from node_client.contracts import RecordInput, RecordStatus, UploadInput
from node_client.deploy import Ledger
from node_client.vocabulary import Category
from tests.support.chain import Accounts, cid, h


def _records(*labels: str) -> list[RecordInput]:
    return [RecordInput(h(f"reg:{x}"), int(Category.LAB_RESULTS), h(f"ct:{x}"), cid(x)) for x in labels]


def _pending(patient: str, provider: str, records: list[RecordInput]) -> _Pending:
    return _Pending(UploadInput(patient, provider, records), Future())


def _registrar(ledger: Ledger, accounts: Accounts, seen: list[tuple[int, int]], polls: list[int]) -> Registrar:
    return Registrar(
        ledger.records,
        accounts.gateway,
        catch_up=lambda: polls.append(1),
        observe=lambda uploads, records: seen.append((uploads, records)),
    )


def test_a_group_is_one_transaction_and_one_catch_up(ledger: Ledger, accounts: Accounts) -> None:
    seen: list[tuple[int, int]] = []
    polls: list[int] = []
    registrar = _registrar(ledger, accounts, seen, polls)
    group = [
        _pending(accounts.patients[0].address, accounts.hospital.address, _records("a1", "a2")),
        _pending(accounts.patients[1].address, accounts.lab.address, _records("b1")),
        _pending(accounts.patients[2].address, accounts.clinic.address, _records("c1", "c2", "c3")),
    ]
    registrar._commit(group)
    results = [p.future.result(timeout=0) for p in group]
    assert len({r.tx_hash for r in results}) == 1 and seen == [(3, 6)] and polls == [1]
    for p in group:
        for r in p.upload.records:
            assert ledger.records.record_of(r.record_id).patient == p.upload.patient


def test_a_refused_group_is_split_and_only_the_bad_upload_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.records.register_batch(
        accounts.gateway, accounts.patients[0].address, accounts.lab.address, _records("taken")
    )
    seen: list[tuple[int, int]] = []
    registrar = _registrar(ledger, accounts, seen, [])
    good1 = _pending(accounts.patients[1].address, accounts.hospital.address, _records("g1"))
    bad = _pending(accounts.patients[2].address, accounts.lab.address, _records("fresh", "taken"))
    good2 = _pending(accounts.patients[3].address, accounts.clinic.address, _records("g2", "g3"))
    registrar._commit([good1, bad, good2])
    with pytest.raises(errors.RecordAlreadyExists):
        bad.future.result(timeout=0)
    assert isinstance(good1.future.result(timeout=0), TxResult)
    assert isinstance(good2.future.result(timeout=0), TxResult)
    assert ledger.records.record_of(h("reg:fresh")).status is RecordStatus.NONE  # the bad upload: nothing
    assert ledger.records.record_of(h("reg:g3")).status is RecordStatus.ACTIVE
    assert seen[0] == (3, 5)  # the group was tried first (the estimate refused it), then upload by upload


def test_concurrent_register_calls_share_transactions(ledger: Ledger, accounts: Accounts) -> None:
    seen: list[tuple[int, int]] = []
    registrar = _registrar(ledger, accounts, seen, [])
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(
                    lambda i: registrar.register(
                        accounts.patients[i % 4].address, accounts.hospital.address, _records(f"con-{i}")
                    ),
                    range(24),
                )
            )
    finally:
        registrar.stop()
    assert sum(u for u, _ in seen) == 24 and len(seen) == len({r.tx_hash for r in results})
    for i in range(24):
        assert ledger.records.record_of(h(f"reg:con-{i}")).status is RecordStatus.ACTIVE
