"""The connection to a chain: RPC, transaction sending, nonce management and error translation.

One :class:`ChainClient` is shared by every contract wrapper. It signs transactions locally (keys never
go to the node), keeps a per-sender nonce so concurrent senders in one process never collide, estimates
gas, waits for receipts, and turns web3/requests failures into :mod:`node_client.errors` exceptions at
this boundary: a revert becomes the Solidity error's own exception class, an unreachable node becomes
:class:`ChainUnavailable` so callers can fail closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3._utils.rpc_abi import RPC
from web3.contract.contract import ContractFunction
from web3.exceptions import BlockNotFound, ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError
from web3.middleware.formatting import FormattingMiddlewareBuilder
from web3.middleware.proof_of_authority import extradata_to_poa_cleanup
from web3.types import BlockIdentifier, RPCEndpoint, TxParams, TxReceipt, Wei

from node_client._exceptions import (
    ChainUnavailable,
    ContractRevert,
    TransactionError,
    decode_revert,
)

__all__ = ["DEFAULT_GAS_MARGIN", "DEFAULT_TIMEOUT", "ChainClient", "TxResult"]

#: Seconds to wait for an RPC answer and for a receipt.
DEFAULT_TIMEOUT: float = 30.0
#: Estimated gas is multiplied by this, so a state change between estimate and inclusion does not OOG.
DEFAULT_GAS_MARGIN: float = 1.2

T = TypeVar("T")

#: ``extraData`` longer than this is a proof-of-authority seal (Clique: vanity + signers + signature).
_PLAIN_EXTRA_DATA_BYTES = 32


def _poa_block(block: Any) -> Any:
    """A block whose ``extraData`` is a PoA seal gets it as ``proofOfAuthorityData`` (web3's PoA layout).

    Blocks of proof-of-work/dev chains pass unchanged, so one client works on Hardhat, Clique and QBFT
    without being told which it talks to.
    """
    if not isinstance(block, dict):
        return block
    extra = block.get("extraData")
    if isinstance(extra, str) and len(extra.removeprefix("0x")) > 2 * _PLAIN_EXTRA_DATA_BYTES:
        return extradata_to_poa_cleanup(block)
    return block


#: Every block read through web3 passes :func:`_poa_block` (web3's own PoA middleware, but per block).
_PoaTolerant = FormattingMiddlewareBuilder.build(
    result_formatters={
        RPC.eth_getBlockByHash: _poa_block,
        RPC.eth_getBlockByNumber: _poa_block,
        RPC.eth_subscribe: _poa_block,
    }
)


@dataclass(frozen=True, slots=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    receipt: TxReceipt


class _NonceManager:
    """Next nonce per sender, safe under concurrent senders in one process.

    The first use asks the node for the pending count; afterwards nonces are handed out locally so that
    two threads sending for the same key never reuse one. A failed send resynchronises from the node.
    With ``lock_file``, processes sharing one key take turns (an ``flock`` held until the transaction is
    sent) and each turn asks the node, so none reuses a nonce another process has just sent.
    """

    def __init__(self, w3: Web3, lock_file: Path | None = None) -> None:
        self._w3 = w3
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}
        self._sender_locks: dict[str, threading.Lock] = {}
        self._lock_file = lock_file

    @contextlib.contextmanager
    def reserve(self, address: str) -> Iterator[int]:
        """Yields the sender's next nonce; it is consumed only if the block exits without error."""
        with self._lock:
            sender_lock = self._sender_locks.setdefault(address, threading.Lock())
        with sender_lock, self._processes_lock():
            nonce = None if self._lock_file is not None else self._next.get(address)
            if nonce is None:
                nonce = self._w3.eth.get_transaction_count(cast(ChecksumAddress, address), "pending")
            try:
                yield nonce
            except BaseException:
                self._next.pop(address, None)  # resync from the node next time
                raise
            self._next[address] = nonce + 1

    @contextlib.contextmanager
    def _processes_lock(self) -> Iterator[None]:
        if self._lock_file is None:
            yield
            return
        with open(self._lock_file, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
            yield

    def reset(self) -> None:
        """Forgets every cached nonce (after a chain reorg, ``evm_revert`` or a restart of the node)."""
        with self._lock:
            self._next.clear()


class ChainClient:
    """A connection to one chain.

    Example::

        client = ChainClient(rpc_url="http://127.0.0.1:8545")
        result = client.transact(contract.functions.revoke(grantee), signer=patient)

    The engine is never configured: blocks whose ``extraData`` is a proof-of-authority seal (Clique,
    Besu QBFT) are recognised one by one, so the same client works on Hardhat and consortium chains.

    ``rpc_url`` may list several nodes of the same chain, comma-separated: a call that cannot reach the
    current one moves to the next (in order, wrapping) and is tried once on each before
    :class:`ChainUnavailable`. Cached nonces are dropped on a move, so the new node's pending count rules.
    """

    def __init__(
        self,
        *,
        rpc_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        gas_margin: float = DEFAULT_GAS_MARGIN,
        nonce_lock: Path | None = None,
    ) -> None:
        self.rpc_urls = [u.strip().rstrip("/") for u in rpc_url.split(",") if u.strip()]
        if not self.rpc_urls:
            raise ValueError("rpc_url names no node")
        self._current = 0
        self._failover_lock = threading.Lock()
        self.timeout = timeout
        self.gas_margin = gas_margin
        self.w3 = Web3(self._provider(self.rpc_urls[0]))
        self.w3.middleware_onion.inject(_PoaTolerant, layer=0)
        self._nonces = _NonceManager(self.w3, nonce_lock)
        self._fees: tuple[float, dict[str, int]] = (0.0, {})  # (monotonic time, fees) for _send
        self._chain_id: int | None = None

    def _provider(self, url: str) -> HTTPProvider:
        # no retries inside web3: its default retries a timed-out read 5 times with back-off, so a node
        # that accepts connections but does not answer (frozen, overloaded) made each call take ~7x
        # ``timeout`` and a gateway request (several calls) half a minute before its 503. Callers retry.
        # eth_chainId cached per provider: web3 asks it twice before every call and transaction (its
        # validation middleware), which tripled the round trips of a consent check; it never changes
        return HTTPProvider(
            url,
            request_kwargs={"timeout": self.timeout},
            exception_retry_configuration=None,
            cache_allowed_requests=True,
            cacheable_requests={RPC.eth_chainId},
        )

    @property
    def rpc_url(self) -> str:
        """The node calls go to now."""
        return self.rpc_urls[self._current]

    def _fail_over(self, failed: int) -> None:
        """Moves to the next node, unless another thread already moved away from ``failed``."""
        with self._failover_lock:
            if self._current == failed:
                self._current = (failed + 1) % len(self.rpc_urls)
                self.w3.provider = self._provider(self.rpc_urls[self._current])
                self._nonces.reset()

    # ------------------------------------------------------------------ basics

    @property
    def chain_id(self) -> int:
        """The chain id (asked once, then cached)."""
        if self._chain_id is None:
            self._chain_id = self.rpc(lambda: self.w3.eth.chain_id)
        return self._chain_id

    def block_number(self) -> int:
        """The latest block number."""
        return self.rpc(lambda: self.w3.eth.block_number)

    def block_hash(self, block: int) -> bytes | None:
        """The hash of block ``block`` on the branch the node follows now (None beyond its head)."""
        try:
            return bytes(self.rpc(lambda: self.w3.eth.get_block(block))["hash"])
        except BlockNotFound:
            return None

    def block_headers(self, blocks: Iterable[int], *, chunk: int = 500) -> dict[int, tuple[bytes, int]]:
        """Block number → (hash, timestamp) of ``blocks``, asked in JSON-RPC batches of ``chunk`` (one round
        trip each: catching up with a long chain read one ``eth_getBlockByNumber`` per block, 77 % of its
        time). A node that refuses batches is asked block by block. A block beyond the head raises
        :class:`BlockNotFound`."""
        wanted = sorted(set(blocks))
        out: dict[int, tuple[bytes, int]] = {}
        for i in range(0, len(wanted), chunk):
            part = wanted[i : i + chunk]
            try:
                answers = self.rpc(partial(self._batch_blocks, part))
            except Web3RPCError:  # e.g. a proxy without batches, or a smaller batch limit than ``chunk``
                answers = [self.rpc(partial(self._raw_block, n)) for n in part]
            for number, block in zip(part, answers, strict=True):
                if not block:
                    raise BlockNotFound(f"block {number} not found")
                out[number] = (bytes.fromhex(block["hash"][2:]), int(block["timestamp"], 16))
        return out

    def _batch_blocks(self, numbers: list[int]) -> list[Any]:
        """One JSON-RPC batch of ``eth_getBlockByNumber`` (without transactions), the node's answers as
        they are: web3's formatting of each block cost as much as the round trip."""
        calls = [(RPCEndpoint("eth_getBlockByNumber"), [hex(n), False]) for n in numbers]
        answers = cast(HTTPProvider, self.w3.provider).make_batch_request(calls)
        if not isinstance(answers, list):  # the node refused the whole batch
            raise Web3RPCError(str(answers.get("error")), rpc_response=answers)
        failed = [a for a in answers if a.get("error") is not None]
        if failed or len(answers) != len(numbers):
            raise Web3RPCError(f"block batch: {failed[0]['error'] if failed else 'answers missing'}")
        return [a.get("result") for a in answers]

    def _raw_block(self, number: int) -> Any:
        """One ``eth_getBlockByNumber`` (without transactions), answered as the node has it."""
        answer = self.w3.provider.make_request(RPCEndpoint("eth_getBlockByNumber"), [hex(number), False])
        if answer.get("error") is not None:
            raise Web3RPCError(str(answer["error"]), rpc_response=answer)
        return answer.get("result")

    def block_timestamp(self, block: BlockIdentifier = "latest") -> int:
        """The timestamp of ``block``."""
        return int(self.rpc(lambda: self.w3.eth.get_block(block))["timestamp"])

    def is_connected(self) -> bool:
        """Whether the node answers."""
        try:
            self.block_number()
        except ChainUnavailable:
            return False
        return True

    def reset_nonces(self) -> None:
        """Forgets cached nonces: call after reverting the chain to a snapshot or restarting the node."""
        self._nonces.reset()

    def rpc(self, fn: Callable[[], T]) -> T:
        """Runs one RPC-using callable, translating transport failures into :class:`ChainUnavailable`
        once every configured node has been tried."""
        for attempt in range(len(self.rpc_urls)):
            current = self._current
            try:
                return fn()
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt + 1 == len(self.rpc_urls):
                    nodes = ", ".join(self.rpc_urls)
                    raise ChainUnavailable(f"chain RPC unreachable ({nodes}): {exc}") from exc
                self._fail_over(current)
            except ContractLogicError as exc:
                raise _revert_from(exc) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def call(self, fn: ContractFunction, *, block: BlockIdentifier = "latest") -> Any:
        """``eth_call`` of a contract function; a revert raises the Solidity error's exception."""
        return self.rpc(lambda: fn.call(block_identifier=block))

    # ------------------------------------------------------------------ transactions

    def transact(
        self,
        fn: ContractFunction,
        *,
        signer: LocalAccount,
        gas: int | None = None,
        value: int = 0,
    ) -> TxResult:
        """Signs and sends a contract call, waits for its receipt and returns it.

        Gas is estimated (times :attr:`gas_margin`) unless given; a revert found by the estimate raises
        before anything is sent. A transaction that is mined but reverted is replayed with ``eth_call``
        at its block to recover the error.
        """
        call = {"to": fn.address, "data": fn._encode_transaction_data(), "value": value}
        return self._send(call, signer=signer, gas=gas, fn=fn)

    def _send(
        self, tx: dict[str, Any], *, signer: LocalAccount, gas: int | None, fn: ContractFunction | None = None
    ) -> TxResult:
        """The one way a transaction this client signs is sent: gas, a nonce, fees, signature, broadcast,
        receipt. A node that says the nonce is taken (the key was used by another program meanwhile) is
        asked for the sender's count again and the transaction sent once more."""
        sender = signer.address
        params: dict[str, Any] = {"value": 0, "chainId": self.chain_id, **tx, "from": sender}
        if gas is None:
            gas = int(self.rpc(lambda: self.w3.eth.estimate_gas(cast(TxParams, params))) * self.gas_margin)
        else:  # a node that does not answer is found before it holds the transaction (it may mine it later)
            self.block_number()
        for attempt in (1, 2):
            try:
                with self._nonces.reserve(sender) as nonce:  # a refused send drops the cached nonce
                    full: dict[str, Any] = {**params, **self._recent_fees(), "gas": gas, "nonce": nonce}
                    tx_hash = self._broadcast(signer.sign_transaction(full).raw_transaction)
                break
            except TransactionError as exc:
                if attempt == 2 or not _nonce_taken(exc):
                    raise
        return self.wait(tx_hash, fn=fn, sender=sender)

    def _broadcast(self, raw: bytes) -> HexBytes:
        """``eth_sendRawTransaction``; a revert the node reports at once raises its Solidity error."""
        try:
            return self.rpc(lambda: self.w3.eth.send_raw_transaction(raw))
        except Web3RPCError as exc:
            revert = _revert_from_rpc_error(exc)
            if revert is not None:
                raise revert from exc
            raise TransactionError(f"node refused the transaction: {exc}") from exc

    def draft(self, fn: ContractFunction, *, sender: str) -> dict[str, Any]:
        """An unsigned transaction of ``fn`` from ``sender``, for a key held elsewhere (a browser) to sign.

        Gas is estimated from ``sender`` (a revert found by the estimate raises here, before anyone
        signs), the nonce is the sender's pending count, fees follow :meth:`_fill_fees`.
        """
        tx_params: TxParams = {"from": cast(ChecksumAddress, sender), "value": Wei(0), "chainId": self.chain_id}
        gas = int(self.rpc(lambda: fn.estimate_gas(tx_params)) * self.gas_margin)
        nonce = self.rpc(lambda: self.w3.eth.get_transaction_count(cast(ChecksumAddress, sender), "pending"))
        tx = {**tx_params, "to": fn.address, "data": fn._encode_transaction_data(), "gas": gas, "nonce": nonce}
        self._fill_fees(tx)
        return tx

    def transact_data(
        self,
        to: str,
        data: bytes,
        *,
        signer: LocalAccount,
        gas: int | None = None,
        fn: ContractFunction | None = None,
    ) -> TxResult:
        """:meth:`transact` for calldata the caller encoded itself (web3's encoder takes ~25 ms for an array
        of a few dozen structs); ``fn``, the same call, only names the error of a mined revert."""
        return self._send({"to": to, "data": data}, signer=signer, gas=gas, fn=fn)

    def _recent_fees(self, max_age: float = 1.0) -> dict[str, int]:
        """:meth:`_fill_fees`' answer, asked again once it is ``max_age`` seconds old: a group commit sends
        back to back, and twice the base fee stays enough for several blocks' rises."""
        at, fees = self._fees
        if time.monotonic() - at >= max_age:
            fees = {}
            self._fill_fees(fees)
            self._fees = (time.monotonic(), fees)
        return dict(fees)

    def send_signed(self, raw: bytes, *, fn: ContractFunction | None = None, sender: str | None = None) -> TxResult:
        """Broadcasts a transaction someone else signed and waits for it; reverts raise as in :meth:`transact`."""
        return self.wait(self._broadcast(raw), fn=fn, sender=sender)

    def send_raw(self, tx: dict[str, Any], *, signer: LocalAccount) -> TxResult:
        """Signs and sends a plain transaction (e.g. a contract deployment built by the caller)."""
        return self._send({k: v for k, v in tx.items() if k != "gas"}, signer=signer, gas=tx.get("gas"))

    def wait(
        self, tx_hash: HexBytes | bytes, *, fn: ContractFunction | None = None, sender: str | None = None
    ) -> TxResult:
        """Waits for the receipt of ``tx_hash``; raises if it reverted."""
        tx_hash = HexBytes(tx_hash)
        hex_hash = tx_hash.to_0x_hex()
        try:
            receipt = self.rpc(
                lambda: self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout, poll_latency=0.05)
            )
        except TimeExhausted as exc:
            raise TransactionError(f"no receipt for {hex_hash} after {self.timeout}s", tx_hash=hex_hash) from exc
        self._until_head(int(receipt["blockNumber"]))
        if receipt["status"] != 1:
            if fn is not None and sender is not None:
                try:
                    fn.call({"from": sender}, block_identifier=receipt["blockNumber"] - 1)
                except ContractLogicError as exc:
                    err = _revert_from(exc)
                    err.tx_hash = hex_hash
                    raise err from exc
            raise TransactionError(f"transaction {hex_hash} reverted", tx_hash=hex_hash)
        return TxResult(hex_hash, int(receipt["blockNumber"]), int(receipt["gasUsed"]), receipt)

    def confirm(self, result: TxResult, depth: int, *, timeout: float | None = None) -> TxResult:
        """Waits until ``result``'s transaction has ``depth`` blocks on top of it on the branch the node
        follows now, re-reading the receipt each time: a reorganisation may move it to another block or
        return it to the pool. :class:`TransactionError` if that does not happen within ``timeout``."""
        if depth <= 0:
            return result
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        tx_hash = HexBytes(result.tx_hash)
        while True:
            receipt = self.rpc(lambda: self._receipt_or_none(tx_hash))
            if receipt is not None:
                if receipt["status"] != 1:
                    raise TransactionError(f"transaction {result.tx_hash} reverted after a reorganisation")
                number = int(receipt["blockNumber"])
                head = self.block_number()
                canonical = self.block_hash(number) == bytes(receipt["blockHash"])
                if canonical and head - number >= depth:
                    return TxResult(result.tx_hash, number, int(receipt["gasUsed"]), receipt)
            if time.monotonic() > deadline:
                raise TransactionError(
                    f"transaction {result.tx_hash} not {depth} blocks deep after {self.timeout}s",
                    tx_hash=result.tx_hash,
                )
            time.sleep(0.2)

    def _until_head(self, number: int) -> None:
        """Waits until the node's head is at least block ``number``. geth stores a block's receipts before it
        moves its head onto the block: a call at "latest" right after the receipt (the next transaction's gas
        estimate) could still run on the block before, and be refused for want of this transaction."""
        deadline = time.monotonic() + self.timeout
        while self.block_number() < number and time.monotonic() < deadline:
            time.sleep(0.01)

    def _receipt_or_none(self, tx_hash: HexBytes) -> TxReceipt | None:
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None

    def _fill_fees(self, tx: dict[str, Any]) -> None:
        if "gasPrice" in tx or "maxFeePerGas" in tx:
            return
        latest = self.rpc(lambda: self.w3.eth.get_block("latest"))
        base = latest.get("baseFeePerGas")
        if base is None:  # pre-London / zero-fee permissioned chains
            tx["gasPrice"] = self.rpc(lambda: self.w3.eth.gas_price)
            return
        tip = self.rpc(lambda: self.w3.eth.max_priority_fee)
        tx["maxPriorityFeePerGas"] = tip
        tx["maxFeePerGas"] = 2 * int(base) + int(tip)


def _nonce_taken(exc: TransactionError) -> bool:
    """Whether the node refused a send because its nonce is used (Hardhat, geth and Besu's words)."""
    text = str(exc).lower()
    return "nonce too low" in text or "replacement transaction underpriced" in text


def _revert_from_rpc_error(exc: Web3RPCError) -> ContractRevert | None:
    """The revert carried by a refused ``eth_sendRawTransaction``, if any.

    Hardhat (automine) mines a transaction that passed the gas estimate but reverts at inclusion (the
    state or the block time changed in between) and answers the send with an error holding the revert
    data and the transaction hash, so no receipt is ever waited for: decode it here.
    """
    response = exc.rpc_response or {}
    error = response.get("error") if isinstance(response, dict) else None
    data = error.get("data") if isinstance(error, dict) else None
    tx_hash = None
    if isinstance(data, dict):
        tx_hash = data.get("txHash")
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return decode_revert(data, tx_hash=tx_hash)
    return None


def _revert_from(exc: ContractLogicError) -> ContractRevert:
    """web3's revert exception → ours, decoded against the contracts' ABIs."""
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return decode_revert(data)
    return ContractRevert({"message": str(exc)})
