"""Reading the ledger's events: paged over block ranges, decoded against the packaged ABIs.

One ``eth_getLogs`` per page covers every contract of a deployment; logs are decoded with a table built
once from the ABIs (topic0 → event), not through web3's per-event filter objects, because an auditor
replays millions of them. Pages shrink automatically when a node refuses a range as too large.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, cast

from eth_abi import decode as abi_decode
from eth_typing import ABIEvent, ChecksumAddress
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint

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


@lru_cache(maxsize=1 << 16)
def _checksummed(raw: bytes) -> str:
    """The EIP-55 spelling of a 20-byte address (a keccak each: cached, a ledger names few addresses often)."""
    return to_checksum_address(raw)


def _static_decoder(abi_type: str) -> Callable[[bytes], Any] | None:
    """A decoder of one 32-byte ABI word of ``abi_type`` (``None``: not a one-word type, eth_abi decodes it).
    Replaying a long chain decodes every event's fields: eth_abi's generic path was most of its time."""
    if abi_type == "address":
        return lambda w: _checksummed(w[12:])
    if abi_type == "bool":
        return lambda w: w[31] != 0
    if abi_type.startswith("uint") and abi_type[4:].isdigit():
        return lambda w: int.from_bytes(w, "big")
    if abi_type.startswith("int") and abi_type[3:].isdigit():
        return lambda w: int.from_bytes(w, "big", signed=True)
    if abi_type.startswith("bytes") and abi_type[5:].isdigit():
        size = int(abi_type[5:])
        return lambda w: w[:size]
    return None


def _decoder(abi_type: str) -> Callable[[bytes], Any]:
    """A decoder of one ABI word, eth_abi's for types that are not one word (addresses checksummed)."""
    fast = _static_decoder(abi_type)
    if fast is not None:
        return fast
    return lambda w: abi_decode([abi_type], w)[0]


class _EventSpec:
    __slots__ = ("contract", "data_decoders", "data_names", "data_types", "indexed", "name")

    def __init__(self, contract: str, item: Mapping[str, Any]) -> None:
        self.contract = contract
        self.name: str = item["name"]
        self.indexed = [(i["name"], _decoder(_type_str(i))) for i in item["inputs"] if i["indexed"]]
        data = [i for i in item["inputs"] if not i["indexed"]]
        self.data_names = [i["name"] for i in data]
        self.data_types = [_type_str(i) for i in data]
        decoders = [_static_decoder(t) for t in self.data_types]  # every field one word: sliced, not eth_abi
        self.data_decoders = [d for d in decoders if d is not None] if None not in decoders else None

    def decode_data(self, data: bytes) -> list[Any]:
        if self.data_decoders is not None:
            return [dec(data[32 * i : 32 * i + 32]) for i, dec in enumerate(self.data_decoders)]
        values = abi_decode(self.data_types, data)
        return [
            _checksummed(bytes.fromhex(v[2:])) if t == "address" else v
            for t, v in zip(self.data_types, values, strict=True)
        ]


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
        for (name, decode), topic in zip(spec.indexed, topics[1:], strict=True):
            args[name] = decode(_bytes(topic))
        if spec.data_types:
            args.update(zip(spec.data_names, spec.decode_data(_bytes(log["data"])), strict=True))
        return EventRecord(
            contract=spec.contract,
            name=spec.name,
            args=args,
            block_number=_int(log["blockNumber"]),
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            log_index=_int(log["logIndex"]),
            address=_checksummed(_bytes(log["address"])),
        )


def _bytes(value: str | bytes) -> bytes:
    """A log field as bytes: raw JSON-RPC answers hold hex strings, web3's formatted ones HexBytes."""
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)


def _int(value: str | int) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _raw_logs(client: ChainClient, params: dict[str, Any]) -> Sequence[Mapping[str, Any]]:
    """``eth_getLogs`` as the node answers it (hex strings): web3's formatting of every field of every log
    cost more than decoding them, and :class:`EventDecoder` reads either form."""
    response = client.w3.provider.make_request(RPCEndpoint("eth_getLogs"), [params])
    if response.get("error") is not None:
        raise Web3RPCError(str(response["error"]), rpc_response=response)
    result: Sequence[Mapping[str, Any]] = response["result"]
    return result


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
            params: dict[str, Any] = {"address": decoder.addresses, "fromBlock": hex(start), "toBlock": hex(end)}
            if topics is not None:
                params["topics"] = list(topics)
            logs = client.rpc(partial(_raw_logs, client, params))
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
