"""Consents (patient-signed EIP-712 grants and revokes) and emergency (break-glass) access."""

from __future__ import annotations

from eth_utils import to_checksum_address
from fastapi import APIRouter
from hexbytes import HexBytes

from gateway.api.deps import CallerDep, ComponentsDep
from gateway.api.models import EmergencyIn, SignedGrantIn, SignedRevokeIn
from gateway.api.schemas import ConsentGranted, ConsentRevoked, EmergencyOpened, problems
from gateway.problems import Problem
from gateway.services import relay
from gateway.services.relay import revert_error
from gateway.storage import emergency_reasons
from gateway.wiring import Components
from node_client import signing
from node_client._exceptions import ChainUnavailable, ContractRevert, SignatureError
from node_client.commitments import reason_commitment
from node_client.vocabulary import Role

router = APIRouter(tags=["consents"])


def _signed(c: Components, body: SignedGrantIn | SignedRevokeIn) -> signing.SignedMessage:
    message: signing.ConsentGrant | signing.ConsentRevoke
    if isinstance(body, SignedGrantIn):
        g = body.message
        message = signing.ConsentGrant(
            patient=to_checksum_address(g.patient),
            grantee=to_checksum_address(g.grantee),
            categories=g.categories,
            purposes=g.purposes,
            valid_from=g.validFrom,
            valid_until=g.validUntil,
            nonce=g.nonce,
            deadline=g.deadline,
        )
    else:
        r = body.message
        message = signing.ConsentRevoke(
            patient=to_checksum_address(r.patient),
            grantee=to_checksum_address(r.grantee),
            nonce=r.nonce,
            deadline=r.deadline,
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
        signer = to_checksum_address(signed.signer)  # as typed web3 wants it (the same string: checksummed above)
        try:
            is_contract = bool(client.rpc(lambda: client.w3.eth.get_code(signer)))
        except ChainUnavailable as chain_exc:
            raise Problem("chain_unavailable", str(chain_exc)) from chain_exc
        if is_contract:
            return signed
        raise Problem("consent_signature_invalid", str(exc)) from exc
    return signed


@router.post("/v1/consents", status_code=201, responses=problems(409, 422, 503))
def grant(body: SignedGrantIn, c: ComponentsDep, caller: CallerDep) -> ConsentGranted:
    """Submit a patient- (or guardian-) signed ConsentGrant — the health-code payload — with grantBySig.

    A code that carries the patient's category key hands it to this gateway first (a bad one: 422, nothing sent)."""
    signed = _signed(c, body)
    if body.categoryKey is not None:
        c.category_keys.learn(body.message.patient, bytes.fromhex(body.categoryKey[2:]))
    try:
        consent_id, tx = c.ledger.consents.grant_by_sig(c.gateway_account, signed)
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    except ContractRevert as exc:
        raise revert_error(exc) from exc
    c.catch_up()
    return ConsentGranted(consentId="0x" + consent_id.hex(), txHash=tx.tx_hash, blockNumber=tx.block_number)


@router.post("/v1/consents/{consent_id}/revoke", responses=problems(409, 422, 503))
def revoke(consent_id: str, body: SignedRevokeIn, c: ComponentsDep, caller: CallerDep) -> ConsentRevoked:
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
        raise revert_error(exc) from exc
    c.catch_up()
    return ConsentRevoked(consentId=consent_id, revoked=True, txHash=tx.tx_hash, blockNumber=tx.block_number)


@router.post("/v1/emergency-access", status_code=201, responses=problems(409, 503))
def emergency_access(body: EmergencyIn, c: ComponentsDep, caller: CallerDep) -> EmergencyOpened:
    """Break glass: relay the member's own signed ``emergencyAccess`` transaction; keep the reason off-chain.

    The gateway checks that the transaction is from the caller, calls ConsentRegistry.emergencyAccess and
    commits to exactly this reason (reasonHash = its salted commitment, ``node_client.commitments``) before
    relaying it; it keeps the reason and the salt (the opening) for the patient and auditors.
    """
    c.policy.require_member(caller, int(Role.EMERGENCY))
    call = relay.decode(c, body.signedTransaction, caller, frozenset({"emergencyAccess"}))
    salt = bytes.fromhex(body.salt[2:])
    if bytes(call.args["reasonHash"]) != reason_commitment(body.reason, salt):
        raise Problem("invalid_request", "reasonHash must be the salted commitment of the reason and salt given")
    result = relay.send(c, call)
    registry = c.ledger.consents
    (ev,) = registry.events_in(result, "EmergencyAccessGranted")
    with c.db.write() as conn:
        emergency_reasons.record(conn, bytes(ev["accessId"]), caller, ev["patient"], body.reason, salt)
    c.catch_up()
    return EmergencyOpened(
        accessId="0x" + bytes(ev["accessId"]).hex(),
        patient=ev["patient"],
        categories=c.category_keys.name_slots(ev["patient"], ev["categories"]),
        validUntil=ev["validUntil"],
        txHash=result.tx_hash,
    )
