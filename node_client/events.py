"""Reading the ledger's events: paged over block ranges, decoded against the packaged ABIs.

One ``eth_getLogs`` per page covers every contract of a deployment; logs are decoded with a table built
once from the ABIs (topic0 → event), not through web3's per-event filter objects, because an auditor
replays millions of them. Pages shrink automatically when a node refuses a range as too large.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from eth_abi import decode as abi_decode
from eth_typing import ABIEvent, ChecksumAddress
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import Web3RPCError
from web3.types import FilterParams

from node_client._abi import load_abi
from node_client._client import ChainClient

__all__ = ["DEFAULT_PAGE_SIZE", "EventDecoder", "EventRecord", "read_events"]

#: Blocks per ``eth_getLogs`` request.
DEFAULT_PAGE_SIZE = 5_000


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One decoded event, with where it happened."""

    contract: str
    name: str
    args: Mapping[str, Any]
    block_number: int
    tx_hash: str
    log_index: int
    address: str

    def __getitem__(self, key: str) -> Any:
        return self.args[key]


def _type_str(inp: Mapping[str, Any]) -> str:
    if inp["type"].startswith("tuple"):
        return "(" + ",".join(_type_str(c) for c in inp["components"]) + ")" + str(inp["type"])[5:]
    return str(inp["type"])


def _normalise(abi_type: str, value: Any) -> Any:
    if abi_type == "address":
        return to_checksum_address(value)
    return value


class _EventSpec:
    __slots__ = ("contract", "data_names", "data_types", "indexed", "name")

    def __init__(self, contract: str, item: Mapping[str, Any]) -> None:
        self.contract = contract
        self.name: str = item["name"]
        self.indexed = [(i["name"], _type_str(i)) for i in item["inputs"] if i["indexed"]]
        data = [i for i in item["inputs"] if not i["indexed"]]
        self.data_names = [i["name"] for i in data]
        self.data_types = [_type_str(i) for i in data]


class EventDecoder:
    """Decodes raw logs of the given contracts (by address) into :class:`EventRecord`."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        """``addresses``: contract name → deployed address."""
        self._by_address: dict[str, dict[bytes, _EventSpec]] = {}
        for name, address in addresses.items():
            specs: dict[bytes, _EventSpec] = {}
            for item in load_abi(name):
                if item.get("type") == "event":
                    specs[bytes(event_abi_to_log_topic(cast(ABIEvent, item)))] = _EventSpec(name, item)
            self._by_address[address.lower()] = specs

    @property
    def addresses(self) -> list[ChecksumAddress]:
        return [to_checksum_address(a) for a in self._by_address]

    def decode(self, log: Mapping[str, Any]) -> EventRecord | None:
        """The event of ``log``, or None if it is not one of ours."""
        specs = self._by_address.get(str(log["address"]).lower())
        topics = log["topics"]
        if not specs or not topics:
            return None
        spec = specs.get(bytes(HexBytes(topics[0])))
        if spec is None:
            return None
        args: dict[str, Any] = {}
        for (name, abi_type), topic in zip(spec.indexed, topics[1:], strict=True):
            (value,) = abi_decode([abi_type], bytes(HexBytes(topic)))
            args[name] = _normalise(abi_type, value)
        if spec.data_types:
            values = abi_decode(spec.data_types, bytes(HexBytes(log["data"])))
            for name, abi_type, value in zip(spec.data_names, spec.data_types, values, strict=True):
                args[name] = _normalise(abi_type, value)
        return EventRecord(
            contract=spec.contract,
            name=spec.name,
            args=args,
            block_number=int(log["blockNumber"]),
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            log_index=int(log["logIndex"]),
            address=to_checksum_address(log["address"]),
        )


def read_events(
    client: ChainClient,
    addresses: Mapping[str, str],
    *,
    from_block: int,
    to_block: int | None = None,
    names: Iterable[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    topics: Sequence[str | None] | None = None,
) -> Iterator[EventRecord]:
    """Every event of the given contracts from ``from_block`` to ``to_block`` (default: latest), in order.

    ``names`` restricts to these event names (decoded either way, filtered after decoding); ``topics``
    is the node's topic filter (e.g. ``[None, "0x<indexed id>"]``: the node finds them, not a scan here).
    """
    decoder = EventDecoder(addresses)
    wanted = set(names) if names is not None else None
    last = client.block_number() if to_block is None else to_block
    start = from_block
    size = page_size
    while start <= last:
        end = min(start + size - 1, last)
        try:
            params: FilterParams = {"address": decoder.addresses, "fromBlock": start, "toBlock": end}
            if topics is not None:
                params["topics"] = list(topics)
            logs: Sequence[Mapping[str, Any]] = client.rpc(partial(client.w3.eth.get_logs, params))
        except Web3RPCError:
            if size == 1:
                raise
            size = max(1, size // 4)  # the node refused the range (too many results): smaller pages
            continue
        for log in logs:
            record = decoder.decode(log)
            if record is not None and (wanted is None or record.name in wanted):
                yield record
        start = end + 1
