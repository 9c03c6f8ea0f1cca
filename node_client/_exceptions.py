"""Every error the node client raises on purpose.

    NodeClientError
    ├── CompilationError        solc reported errors
    ├── NodeError               a local Hardhat node could not be started or stopped
    ├── ChainUnavailable        the RPC endpoint does not answer (fail closed on this)
    ├── KeystoreError           a keystore file is missing, malformed or the password is wrong
    ├── SignatureError          an EIP-712 message does not verify off-chain
    ├── DeploymentError         a manifest is missing, malformed or for another chain
    ├── GatewayUnavailable      a gateway does not answer over HTTP (fail closed on this too)
    ├── GatewayProblem          a gateway refused: its RFC 9457 problem as .status / .code / .detail
    └── TransactionError        a transaction failed (carries .tx_hash when one was sent)
        └── ContractRevert      the contract reverted; .error_name / .args_by_name / .data
            ├── <one subclass per Solidity custom error, named after it>
            │     e.g. ConsentExpiredSignature, MemberRegistryNotAdmin, AccessLedgerNotAuthorized
            └── RevertWithReason / Panic (Error(string) / Panic(uint256))

Custom-error classes are built from the packaged interface ABIs the first time they are needed, so
``from node_client.errors import ConsentInvalidNonce`` and ``except ConsentInvalidNonce`` work and
stay in sync with the contracts without a hand-written copy.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

__all__ = [
    "ChainUnavailable",
    "CompilationError",
    "ContractRevert",
    "DeploymentError",
    "GatewayProblem",
    "GatewayUnavailable",
    "KeystoreError",
    "NodeClientError",
    "NodeError",
    "Panic",
    "RevertWithReason",
    "SignatureError",
    "TransactionError",
    "decode_revert",
    "revert_class",
    "revert_class_of",
]


class NodeClientError(Exception):
    """Root of every error the node client raises on purpose."""


class CompilationError(NodeClientError):
    """The Solidity compiler reported errors (the message lists them)."""


class NodeError(NodeClientError):
    """A local Hardhat node could not be started or did not answer in time."""


class ChainUnavailable(NodeClientError):
    """The chain's RPC endpoint does not answer. Callers must fail closed."""


class KeystoreError(NodeClientError):
    """A keystore file is missing or malformed, or its password is wrong."""


class SignatureError(NodeClientError):
    """An EIP-712 message does not verify off-chain."""


class DeploymentError(NodeClientError):
    """A deployment manifest is missing, malformed or belongs to another chain."""


class GatewayUnavailable(NodeClientError):
    """A gateway does not answer over HTTP (refused, timed out, cut off)."""


class GatewayProblem(NodeClientError):
    """A gateway answered with an RFC 9457 problem (``application/problem+json``)."""

    def __init__(self, status: int, code: str, title: str, detail: str = "") -> None:
        super().__init__(f"{status} {code}: {detail or title}")
        self.status, self.code, self.title, self.detail = status, code, title, detail


class TransactionError(NodeClientError):
    """A transaction could not be sent or did not succeed."""

    def __init__(self, message: str, *, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


class ContractRevert(TransactionError):
    """A contract call or transaction reverted.

    ``error_name`` is the Solidity error's name, ``args_by_name`` its decoded arguments by name (also
    readable as attributes, e.g. ``exc.deadline``; addresses checksummed), ``data`` the raw revert data
    (selector + ABI-encoded arguments).
    """

    error_name: str = "ContractRevert"

    def __init__(
        self,
        args: Mapping[str, Any] | None = None,
        *,
        data: bytes = b"",
        tx_hash: str | None = None,
    ) -> None:
        self.args_by_name: dict[str, Any] = dict(args or {})
        self.data = data
        detail = ", ".join(f"{k}={_fmt(v)}" for k, v in self.args_by_name.items())
        super().__init__(f"{self.error_name}({detail})", tx_hash=tx_hash)

    def __getattr__(self, name: str) -> Any:
        # error arguments by name, e.g. exc.deadline (only called when normal lookup fails)
        args = self.__dict__.get("args_by_name", {})
        if name in args:
            return args[name]
        raise AttributeError(name)


class RevertWithReason(ContractRevert):
    """``Error(string)``: a ``require`` with a message (our contracts use custom errors instead)."""

    error_name = "Error"


class Panic(ContractRevert):
    """``Panic(uint256)``: an assertion, arithmetic overflow or similar bug."""

    error_name = "Panic"


def _fmt(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _abi_type(inp: Mapping[str, Any]) -> str:
    if inp["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in inp["components"])
        return f"({inner}){inp['type'][5:]}"
    return str(inp["type"])


@functools.cache
def _registry() -> dict[bytes, tuple[type[ContractRevert], list[str], list[str]]]:
    """selector → (class, argument names, argument types), built once from the packaged ABIs."""
    from node_client._abi import all_abis  # local import: the ABI loader imports nothing from here

    table: dict[bytes, tuple[type[ContractRevert], list[str], list[str]]] = {
        function_signature_to_4byte_selector("Error(string)"): (RevertWithReason, ["reason"], ["string"]),
        function_signature_to_4byte_selector("Panic(uint256)"): (Panic, ["code"], ["uint256"]),
    }
    for abi in all_abis().values():
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            if selector in table:
                continue
            cls = type(
                item["name"], (ContractRevert,), {"error_name": item["name"], "__module__": "node_client.errors"}
            )
            table[selector] = (cls, [i["name"] for i in item["inputs"]], types)
    return table


@functools.cache
def _by_name() -> dict[str, type[ContractRevert]]:
    return {cls.error_name: cls for cls, _, _ in _registry().values()}


def revert_class(name: str) -> type[ContractRevert]:
    """The exception class for the Solidity error ``name`` (KeyError if no contract declares it)."""
    return _by_name()[name]


def revert_class_of(selector: bytes) -> type[ContractRevert]:
    """The exception class of the error with 4-byte ``selector`` (as ``AccessRefused`` reports it);
    :class:`ContractRevert` itself if no contract declares it."""
    entry = _registry().get(bytes(selector))
    return ContractRevert if entry is None else entry[0]


def decode_revert(data: bytes | str, *, tx_hash: str | None = None) -> ContractRevert:
    """Revert data → the most specific :class:`ContractRevert` (generic if the selector is unknown)."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x"))
    entry = _registry().get(bytes(data[:4]))
    if entry is None:
        return ContractRevert({"data": data}, data=data, tx_hash=tx_hash)
    cls, names, types = entry
    try:
        values = abi_decode(types, bytes(data[4:]))
    except Exception:  # noqa: BLE001 - malformed revert data: keep the raw bytes rather than hide the revert
        return cls({}, data=data, tx_hash=tx_hash)
    # Addresses checksummed, as in decoded events and LocalAccount.address (eth-abi gives lowercase).
    args = [to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True)]
    return cls(dict(zip(names, args, strict=True)), data=data, tx_hash=tx_hash)
