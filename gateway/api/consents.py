"""Consents (patient-signed EIP-712 grants and revokes) and emergency (break-glass) access."""

from __future__ import annotations

import hashlib
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from fastapi import APIRouter
from hexbytes import HexBytes
from web3.exceptions import Web3RPCError

from node_client import signing
from node_client._exceptions import ChainUnavailable, ContractRevert, SignatureError
from node_client.vocabulary import CATEGORIES, Role, categories_of

from gateway.api.deps import CallerDep, ComponentsDep
from gateway.api.models import EmergencyIn, SignedGrantIn, SignedRevokeIn
from gateway.problems import Problem

router = APIRouter(tags=["consents"])


def _signed(c, body: SignedGrantIn | SignedRevokeIn) -> signing.SignedMessage:  # type: ignore[no-untyped-def]
    m = body.message
    message: signing.ConsentGrant | signing.ConsentRevoke
    if isinstance(body, SignedGrantIn):
        message = signing.ConsentGrant(
            patient=to_checksum_address(m.patient), grantee=to_checksum_address(m.grantee),
            categories=m.categories, purposes=m.purposes, valid_from=m.valid_from,  # type: ignore[union-attr]
            valid_until=m.valid_until, nonce=m.nonce, deadline=m.deadline,  # type: ignore[union-attr]
        )
    else:
        message = signing.ConsentRevoke(
            patient=to_checksum_address(m.patient), grantee=to_checksum_address(m.grantee),
            nonce=m.nonce, deadline=m.deadline,
        )
    signed = signing.SignedMessage(message, to_checksum_address(body.signer), bytes(HexBytes(body.signature)))
    try:
        domain = c.ledger.consents.domain()
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    try:
        signing.verify(domain, signed)
    except SignatureError as exc:
        # may still be an ERC-1271 contract wallet: only the chain can tell; EOAs fail here, cheaply
        client = c.ledger.client
        try:
            is_contract = bool(client.rpc(lambda: client.w3.eth.get_code(signed.signer)))
        except ChainUnavailable as chain_exc:
            raise Problem("chain_unavailable", str(chain_exc)) from chain_exc
        if is_contract:
            return signed
        raise Problem("invalid_signature", str(exc)) from exc
    return signed


def _chain_problem(exc: ContractRevert) -> Problem:
    name = exc.error_name
    code = {
        "ConsentInvalidNonce": "replayed_nonce",
        "ConsentExpiredSignature": "invalid_signature",
        "ConsentInvalidSignature": "invalid_signature",
        "ConsentInvalidSigner": "not_patient",
        "ConsentNotActive": "consent_missing",
        "ConsentInvalidGrantee": "not_member",
        "ConsentEmergencyOptedOut": "emergency_not_allowed",
        "ConsentEmergencyCategoryNotAllowed": "emergency_not_allowed",
        "ConsentNotEmergencyMember": "emergency_not_allowed",
    }.get(name, "chain_rejected")
    return Problem(code, str(exc), error=name)


@router.post("/v1/consents", status_code=201)
def grant(body: SignedGrantIn, c: ComponentsDep, caller: CallerDep) -> dict[str, Any]:
    """Submit a patient- (or guardian-) signed ConsentGrant — the health-code payload — with grantBySig."""
    signed = _signed(c, body)
    try:
        consent_id, tx = c.ledger.consents.grant_by_sig(c.gateway_account, signed)
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    except ContractRevert as exc:
        raise _chain_problem(exc) from exc
    c.catch_up()
    return {"consentId": "0x" + consent_id.hex(), "txHash": tx.tx_hash, "blockNumber": tx.block_number}


@router.post("/v1/consents/{consent_id}/revoke")
def revoke(consent_id: str, body: SignedRevokeIn, c: ComponentsDep, caller: CallerDep) -> dict[str, Any]:
    """Submit a patient-signed ConsentRevoke for the consent ``consent_id``."""
    signed = _signed(c, body)
    try:
        current = c.ledger.consents.consent_of(body.message.patient, body.message.grantee)
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    if "0x" + current.consent_id.hex() != consent_id.lower():
        raise Problem("consent_missing", "that consent is not the one in force for this patient and institution")
    try:
        tx = c.ledger.consents.revoke_by_sig(c.gateway_account, signed)
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    except ContractRevert as exc:
        raise _chain_problem(exc) from exc
    c.catch_up()
    return {"consentId": consent_id, "revoked": True, "txHash": tx.tx_hash, "blockNumber": tx.block_number}


@router.post("/v1/emergency-access", status_code=201)
def emergency_access(body: EmergencyIn, c: ComponentsDep, caller: CallerDep) -> dict[str, Any]:
    """Break glass: relay the member's own signed ``emergencyAccess`` transaction; keep the reason off-chain.

    The gateway checks that the transaction is from the caller, calls ConsentRegistry.emergencyAccess and
    commits to exactly this reason (reasonHash = SHA-256 of the UTF-8 reason) before relaying it.
    """
    c.policy.require_member(caller, int(Role.EMERGENCY))
    raw = bytes(HexBytes(body.signedTransaction))
    try:
        sender = Account.recover_transaction(raw)
        from eth_account.typed_transactions import TypedTransaction

        tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    except Exception:
        raise Problem("invalid_request", "signedTransaction must be a signed typed (EIP-1559) transaction") from None
    if sender != caller:
        raise Problem("invalid_signature", "the transaction is not signed by the caller")
    registry = c.ledger.consents
    if to_checksum_address(tx.get("to") or "0x" + "00" * 20) != registry.address:
        raise Problem("invalid_request", "the transaction does not call the ConsentRegistry")
    try:
        fn, args = registry.contract.decode_function_input(tx["data"])
    except Exception:
        raise Problem("invalid_request", "the transaction does not call emergencyAccess") from None
    if fn.fn_name != "emergencyAccess":
        raise Problem("invalid_request", "the transaction does not call emergencyAccess")
    if bytes(args["reasonHash"]) != hashlib.sha256(body.reason.encode()).digest():
        raise Problem("invalid_request", "reasonHash must be the SHA-256 of the reason given")
    try:
        tx_hash = c.ledger.client.rpc(lambda: c.ledger.client.w3.eth.send_raw_transaction(raw))
        result = c.ledger.client.wait(tx_hash, fn=registry.contract.functions.emergencyAccess(
            args["patient"], args["categories"], args["reasonHash"]), sender=sender)
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    except ContractRevert as exc:
        raise _chain_problem(exc) from exc
    except Web3RPCError as exc:
        raise Problem("chain_rejected", f"the node refused the transaction: {exc}") from exc
    (ev,) = registry.events_in(result, "EmergencyAccessGranted")
    with c.db.write() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO emergency_reasons (access_id, member, patient, reason, created_at)"
            " VALUES (?, ?, ?, ?, strftime('%s','now'))",
            (bytes(ev["accessId"]), caller, ev["patient"], body.reason),
        )
    c.catch_up()
    return {
        "accessId": "0x" + bytes(ev["accessId"]).hex(),
        "patient": ev["patient"],
        "categories": [CATEGORIES[int(t)].slug for t in categories_of(ev["categories"])],
        "validUntil": ev["validUntil"],
        "txHash": result.tx_hash,
    }
