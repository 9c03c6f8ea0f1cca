"""Reading the chain: the deployment's events, block timestamps and hashes, transaction senders.

What a replay needs from a node, fetched once and in JSON-RPC batches (a replay touches thousands of blocks
and one request each would dominate); nodes that do not answer batches are asked one by one.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests
from eth_typing import HexStr
from eth_utils import to_checksum_address

from node_client._client import ChainClient
from node_client.audit.model import Progress
from node_client.deploy import Manifest
from node_client.events import DEFAULT_PAGE_SIZE, EventRecord, read_events

__all__ = ["ChainView", "block_timestamps", "fetch_events", "load_chain", "tx_senders"]


def _batch_rpc(client: ChainClient, method: str, params: list[list[Any]]) -> list[Any]:
    """One JSON-RPC batch request: the results in the order of ``params``. Raises ``ValueError`` when the
    node does not answer batches (callers then ask one by one)."""
    payload: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": j, "method": method, "params": p} for j, p in enumerate(params)
    ]
    resp = client.rpc(lambda: requests.post(client.rpc_url, json=payload, timeout=client.timeout))
    resp.raise_for_status()
    answers = resp.json()
    if not isinstance(answers, list):
        raise ValueError("node does not batch")
    by_id = {int(a["id"]): a["result"] for a in answers}
    return [by_id[j] for j in range(len(params))]


def block_timestamps(
    client: ChainClient,
    blocks: Iterable[int],
    cache: dict[int, int],
    progress: Progress | None = None,
    batch: int = 500,
    hashes: dict[int, bytes] | None = None,
) -> dict[int, int]:
    """Each distinct block's timestamp into ``cache`` (and hash, into ``hashes`` if given), fetched once."""
    todo = sorted({b for b in blocks if b not in cache or (hashes is not None and b not in hashes)})
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        try:
            answers = _batch_rpc(client, "eth_getBlockByNumber", [[hex(n), False] for n in chunk])
            for n, ans in zip(chunk, answers, strict=True):
                cache[n] = int(ans["timestamp"], 16)
                if hashes is not None:
                    hashes[n] = bytes.fromhex(ans["hash"][2:])
        except (ValueError, KeyError, TypeError, requests.RequestException):
            for n in chunk:  # a node without batch support: one by one
                b = client.rpc(partial(client.w3.eth.get_block, n))
                cache[n] = int(b["timestamp"])
                if hashes is not None:
                    hashes[n] = bytes(b["hash"])
        if progress:
            progress("timestamps", min(i + batch, len(todo)), len(todo))
    return cache


def fetch_events(
    client: ChainClient, manifest: Manifest, start: int, end: int, progress: Progress | None
) -> list[EventRecord]:
    """Every event of the deployment's contracts in ``[start, end]``, in chain order."""
    events: list[EventRecord] = []
    total = end - start + 1
    page = start
    while page <= end:
        stop = min(page + DEFAULT_PAGE_SIZE - 1, end)
        events.extend(read_events(client, manifest.contracts, from_block=page, to_block=stop))
        if progress:
            progress("events", stop - start + 1, total)
        page = stop + 1
    events.sort(key=lambda e: (e.block_number, e.log_index))
    return events


def tx_senders(client: ChainClient, tx_hashes: Iterable[str], batch: int = 500) -> dict[str, str]:
    """``from`` of each transaction, in JSON-RPC batches (a strict ledger has one tx per access)."""
    todo = sorted(set(tx_hashes))
    out: dict[str, str] = {}
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        try:
            answers = _batch_rpc(client, "eth_getTransactionByHash", [[h] for h in chunk])
            for h, ans in zip(chunk, answers, strict=True):
                out[h] = str(to_checksum_address(ans["from"]))
        except (ValueError, KeyError, TypeError, requests.RequestException):
            for h in chunk:
                out[h] = str(to_checksum_address(client.rpc(partial(client.w3.eth.get_transaction, HexStr(h)))["from"]))
    return out


@dataclass(slots=True)
class ChainView:
    """What a replay read from the chain for blocks ``[start, end]`` (state rebuilt from ``origin``)."""

    client: ChainClient
    origin: int
    start: int
    end: int
    events: list[EventRecord] = field(default_factory=list)
    timestamps: dict[int, int] = field(default_factory=dict)  # block -> timestamp; grows as blocks are needed
    senders: dict[str, str] = field(default_factory=dict)  # AccessLogged tx -> its sender
    block_order: list[int] = field(default_factory=list)  # the distinct blocks with events, ascending
    block_ts: list[int] = field(default_factory=list)  # their timestamps
    hashes: dict[int, bytes] = field(default_factory=dict)  # block -> hash, of the blocks journal entries name
    _first_at: dict[int, int | None] = field(default_factory=dict)

    @property
    def end_ts(self) -> int:
        return self.timestamps[self.end]

    def first_block_at(self, v: int) -> int | None:
        """The first block (up to ``end``) whose timestamp is ``>= v``: bisection between the known event
        blocks, asking the node for the few timestamps in between."""
        if v in self._first_at:
            return self._first_at[v]
        found: int | None = None
        ts = self.timestamps
        if ts[self.end] >= v:
            k = bisect.bisect_left(self.block_ts, v)
            hi = self.block_order[k] if k < len(self.block_order) else self.end
            lo = self.block_order[k - 1] if k > 0 else self.start - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mid not in ts:
                    ts[mid] = self.client.block_timestamp(mid)
                if ts[mid] >= v:
                    hi = mid
                else:
                    lo = mid
            found = hi
        self._first_at[v] = found
        return found


def load_chain(
    client: ChainClient, manifest: Manifest, origin: int, start: int, end: int, progress: Progress | None
) -> tuple[ChainView, float]:
    """The events of ``[start, end]``, their blocks' timestamps and the senders of ``logAccess``; and when the
    events were fetched (``time.perf_counter``, for the report's timings)."""
    view = ChainView(client, origin, start, end)
    view.events = fetch_events(client, manifest, start, end, progress) if end >= start else []
    fetched = time.perf_counter()
    block_timestamps(client, {e.block_number for e in view.events} | {end}, view.timestamps, progress)
    view.senders = tx_senders(client, (e.tx_hash for e in view.events if e.name == "AccessLogged"))
    view.block_order = sorted({e.block_number for e in view.events})
    view.block_ts = [view.timestamps[b] for b in view.block_order]
    return view, fetched
