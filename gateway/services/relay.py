"""Relaying transactions that patients and members sign themselves.

Some ConsentRegistry calls must come from the patient's or member's own account (``msg.sender``):
appointing a guardian, the emergency opt-out, breaking the glass. Patients do not run chain nodes, so
the gateway relays for them, without ever holding their keys:

1. ``draft`` builds the unsigned transaction (gas estimated from the caller, so a call the contract
   would refuse is refused here, before anyone signs);
2. the caller signs it where its key lives (the portal page, a wallet, ``hcl``);
3. ``decode`` checks the signed bytes — sent by the authenticated caller, to the ConsentRegistry,
   calling one of :data:`RELAYABLE` — and ``send`` broadcasts it and waits for the receipt.

The gateway cannot alter a signed transaction, so relaying adds no trust: the chain sees the caller's
own signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils import is_address, to_checksum_address
from eth_utils.abi import filter_abi_by_type
from hexbytes import HexBytes
from web3.contract.contract import ContractFunction

from gateway import errors
from gateway.wiring import Components
from node_client._client import TxResult
from node_client._exceptions import ChainUnavailable, ContractRevert, TransactionError

__all__ = ["RELAYABLE", "SignedCall", "decode", "draft", "revert_error", "send"]

#: ConsentRegistry functions a caller may have relayed, and who may call them (checked by the contract).
RELAYABLE = frozenset({"setGuardian", "removeGuardian", "setEmergencyOptOut", "emergencyAccess"})


@dataclass(frozen=True, slots=True)
class SignedCall:
    """A decoded, checked, signed ConsentRegistry call."""

    raw: bytes
    sender: str
    function: str
    args: dict[str, Any]

    def bound(self, c: Components) -> ContractFunction:
        """The contract function with these arguments (used to decode a revert)."""
        return c.ledger.consents.contract.functions[self.function](**self.args)


#: ConsentRegistry custom errors → the domain error they are answered with (others: ``chain_rejected``)
_REVERTS: dict[str, type[errors.DomainError]] = {
    "ConsentInvalidNonce": errors.ConsentAlreadyUsed,
    "ConsentExpiredSignature": errors.ConsentSignatureExpired,
    "ConsentInvalidSignature": errors.ConsentSignatureInvalid,
    "ConsentInvalidSigner": errors.NotPatient,
    "ConsentNotActive": errors.ConsentMissing,
    "ConsentInvalidGrantee": errors.NotMember,
    "ConsentEmergencyOptedOut": errors.EmergencyNotAllowed,
    "ConsentEmergencyCategoryNotAllowed": errors.EmergencyNotAllowed,
    "ConsentNotEmergencyMember": errors.EmergencyNotAllowed,
    "ConsentEmergencyReasonRequired": errors.InvalidRequest,
    "ConsentInvalidGuardian": errors.InvalidRequest,
    "ConsentUnknownGuardian": errors.InvalidRequest,
}


def revert_error(exc: ContractRevert) -> errors.DomainError:
    """The domain error for a ConsentRegistry custom error (``error``: its name)."""
    name = exc.error_name
    return _REVERTS.get(name, errors.ChainRejected)(str(exc), error=name)


def _arg(kind: str, name: str, value: Any) -> Any:
    """One ABI argument from JSON: addresses checksummed, integers from int or decimal/hex strings."""
    try:
        if kind == "address":
            if not isinstance(value, str) or not is_address(value):
                raise ValueError("not an address")
            return to_checksum_address(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError("not a boolean")
            return value
        if kind.startswith("uint"):
            number = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value), 0)
            if not 0 <= number < 2 ** int(kind[4:] or 256):
                raise ValueError(f"out of range for {kind}")
            return number
        if kind == "bytes32":
            raw = bytes(HexBytes(value))
            if len(raw) != 32:
                raise ValueError("not 32 bytes")
            return raw
    except (TypeError, ValueError) as exc:
        raise errors.InvalidRequest(f"argument {name!r}: {exc}") from None
    raise errors.InvalidRequest(f"argument {name!r}: unsupported type {kind}")


def draft(c: Components, caller: str, function: str, args: dict[str, Any]) -> dict[str, Any]:
    """The unsigned transaction of ``function(args)`` from ``caller``, as JSON for a signer."""
    if function not in RELAYABLE:
        raise errors.InvalidRequest(f"relayable functions: {', '.join(sorted(RELAYABLE))}")
    registry = c.ledger.consents
    abi = next(e for e in filter_abi_by_type("function", registry.contract.abi) if e["name"] == function)
    names = [i["name"] for i in abi["inputs"]]
    if set(args) != set(names):
        raise errors.InvalidRequest(f"{function} takes {', '.join(names) or 'no arguments'}")
    values = [_arg(i["type"], i["name"], args[i["name"]]) for i in abi["inputs"]]
    fn = registry.contract.functions[function](*values)
    try:
        tx = c.ledger.client.draft(fn, sender=caller)
    except ChainUnavailable as exc:
        raise errors.ChainUnavailable(str(exc)) from exc
    except ContractRevert as exc:
        raise revert_error(exc) from exc
    out = {k: (v if isinstance(v, str) else int(v)) for k, v in tx.items() if k != "from"}
    out["type"] = 2 if "maxFeePerGas" in tx else 0
    return out


def decode(c: Components, signed_transaction: str, caller: str, allowed: frozenset[str] = RELAYABLE) -> SignedCall:
    """Checks a signed transaction: from ``caller``, to the ConsentRegistry, calling one of ``allowed``."""
    raw = bytes(HexBytes(signed_transaction))
    try:
        sender = Account.recover_transaction(raw)
        tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict() if raw[:1] in (b"\x01", b"\x02") else None
    except Exception:  # noqa: BLE001 - anything undecodable is refused as invalid_request
        raise errors.InvalidRequest("signedTransaction is not a signed transaction") from None
    if tx is None:
        raise errors.InvalidRequest("signedTransaction must be a typed (EIP-1559 or EIP-2930) transaction")
    if sender != caller:
        raise errors.InvalidSignature("the transaction is not signed by the caller")
    registry = c.ledger.consents
    if to_checksum_address(tx.get("to") or "0x" + "00" * 20) != registry.address:
        raise errors.InvalidRequest("the transaction does not call the ConsentRegistry")
    if tx.get("chainId") != c.ledger.client.chain_id:
        raise errors.InvalidRequest("the transaction is for another chain")
    try:
        fn, args = registry.contract.decode_function_input(tx["data"])
    except Exception:  # noqa: BLE001 - anything undecodable is refused as invalid_request
        raise errors.InvalidRequest("the transaction's call data does not decode") from None
    if fn.fn_name not in allowed:
        raise errors.InvalidRequest(f"the transaction may call only {', '.join(sorted(allowed))}")
    return SignedCall(raw, sender, fn.fn_name, dict(args))


def send(c: Components, call: SignedCall) -> TxResult:
    """Broadcasts ``call`` and waits; a revert becomes the domain error of its custom error."""
    try:
        return c.ledger.client.send_signed(call.raw, fn=call.bound(c), sender=call.sender)
    except ChainUnavailable as exc:
        raise errors.ChainUnavailable(str(exc)) from exc
    except ContractRevert as exc:
        raise revert_error(exc) from exc
    except TransactionError as exc:
        raise errors.ChainRejected(str(exc)) from exc
