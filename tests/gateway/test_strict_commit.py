"""``gateway.ledger.strict_commit``: strict mode's group commit, with a plain function for the chain.

The real ``logAccessBatch`` path is covered by the gateway API, attack-matrix and fault tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from gateway.ledger.strict_commit import StrictCommitter
from node_client._client import TxResult
from node_client._exceptions import ChainUnavailable
from node_client.contracts import AccessEntry, AccessOutcome
from node_client.errors import AccessLedgerNotAuthorized

HOSPITAL = "0x" + "11" * 20
PATIENT = "0x" + "22" * 20


def entry(i: int) -> AccessEntry:
    return AccessEntry(HOSPITAL, PATIENT, bytes([1]) * 32, 0, i.to_bytes(32, "big"))


def tx(n: int) -> TxResult:
    return TxResult(f"0x{n:064x}", n, 21_000, cast(Any, {}))


class FakeChain:
    """Records each batch; takes ``delay`` seconds per transaction; refuses odd access hashes if asked."""

    def __init__(self, delay: float = 0.0, refuse_odd: bool = False, fail: Exception | None = None) -> None:
        self.batches: list[list[AccessEntry]] = []
        self.delay, self.refuse_odd, self.fail = delay, refuse_odd, fail
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, entries: list[AccessEntry]) -> tuple[list[AccessOutcome], TxResult]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            self.batches.append(list(entries))
            outcomes = [
                AccessOutcome(False, refusal=AccessLedgerNotAuthorized)
                if self.refuse_odd and e.access_hash[-1] % 2
                else AccessOutcome(True, b"\x07" * 32)
                for e in entries
            ]
            return outcomes, tx(len(self.batches))
        finally:
            with self._lock:
                self.in_flight -= 1


Make = Callable[..., StrictCommitter]


@pytest.fixture
def committer_for() -> Iterator[Make]:
    made: list[StrictCommitter] = []

    def make(chain: FakeChain, max_batch: int = 64, on_batch: Callable[[int], None] | None = None) -> StrictCommitter:
        c = StrictCommitter(chain, max_batch=max_batch, on_batch=on_batch)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def test_a_lone_entry_is_sent_at_once(committer_for: Make) -> None:
    chain = FakeChain()
    c = committer_for(chain)
    started = time.monotonic()
    done = c.submit(entry(1)).result(timeout=5)
    assert time.monotonic() - started < 0.5
    assert done.outcome.logged and done.tx.block_number == 1
    assert chain.batches == [[entry(1)]]


def test_concurrent_entries_share_transactions_one_at_a_time(committer_for: Make) -> None:
    chain = FakeChain(delay=0.05)
    sizes: list[int] = []
    c = committer_for(chain, max_batch=16, on_batch=sizes.append)
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda i: c.submit(entry(i)).result(timeout=10), range(64)))
    assert all(r.outcome.logged for r in results)
    assert chain.max_in_flight == 1  # the next batch waits for the previous transaction
    assert sum(sizes) == 64 and max(sizes) <= 16 and len(sizes) < 64
    sent = [e.access_hash for b in chain.batches for e in b]
    assert sorted(sent) == sorted(entry(i).access_hash for i in range(64))
    # each entry resolves with the transaction that carried it
    carried = {e.access_hash: n for n, b in enumerate(chain.batches, 1) for e in b}
    assert all(r.tx.block_number == carried[entry(i).access_hash] for i, r in enumerate(results))


def test_each_entry_gets_its_own_outcome(committer_for: Make) -> None:
    c = committer_for(FakeChain(delay=0.02, refuse_odd=True))
    futures = [c.submit(entry(i)) for i in range(10)]
    outcomes = [f.result(timeout=5).outcome for f in futures]
    assert [o.logged for o in outcomes] == [i % 2 == 0 for i in range(10)]
    assert {o.refusal for o in outcomes if not o.logged} == {AccessLedgerNotAuthorized}


def test_a_failed_transaction_fails_every_entry_it_carried(committer_for: Make) -> None:
    c = committer_for(FakeChain(fail=ChainUnavailable("down")))
    futures = [c.submit(entry(i)) for i in range(5)]
    for f in futures:
        with pytest.raises(ChainUnavailable):
            f.result(timeout=5)
    # the loop survives: the next entry is tried again
    c.commit_fn = FakeChain()
    assert c.submit(entry(9)).result(timeout=5).outcome.logged


def test_a_cancelled_entry_is_never_sent(committer_for: Make) -> None:
    chain = FakeChain(delay=0.2)
    c = committer_for(chain)
    first = c.submit(entry(1))
    time.sleep(0.05)  # the first batch is in flight
    gave_up = c.submit(entry(2))
    assert gave_up.cancel()
    kept = c.submit(entry(3))
    assert first.result(timeout=5).outcome.logged and kept.result(timeout=5).outcome.logged
    assert [e.access_hash[-1] for b in chain.batches for e in b] == [1, 3]


def test_stopping_fails_entries_not_sent(committer_for: Make) -> None:
    chain = FakeChain(delay=0.2)
    c = committer_for(chain)
    first = c.submit(entry(1))
    time.sleep(0.05)
    waiting = c.submit(entry(2))
    c.stop()
    assert first.result(timeout=5).outcome.logged
    with pytest.raises(ChainUnavailable):
        waiting.result(timeout=5)
    with pytest.raises(ChainUnavailable):
        c.submit(entry(3))
