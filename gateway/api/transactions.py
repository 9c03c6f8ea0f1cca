"""Relay: patients and members sign their own ConsentRegistry transactions; the gateway broadcasts them.

``POST /v1/transactions/draft`` → the unsigned transaction → the caller signs it → ``POST /v1/transactions``.
Used by the portal for guardians and the emergency opt-out; see :mod:`gateway.services.relay` for the checks.
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import CallerDep, ComponentsDep
from gateway.api.models import SignedTxIn, TxDraftIn
from gateway.api.schemas import TxDraft, TxSent, UnsignedTx, problems
from gateway.services import relay

router = APIRouter(tags=["transactions"])

_PATIENT_CALLS = frozenset({"setGuardian", "removeGuardian", "setEmergencyOptOut"})


@router.post("/v1/transactions/draft", responses=problems(409, 503), response_model_exclude_unset=True)
def draft(body: TxDraftIn, c: ComponentsDep, caller: CallerDep) -> TxDraft:
    """The unsigned EIP-1559 transaction of a relayable ConsentRegistry call from the caller.

    A call the contract would refuse (an unknown guardian, emergency access after an opt-out, ...) is
    refused here with its problem, before anything is signed.
    """
    tx = UnsignedTx.model_validate(relay.draft(c, caller, body.function, body.args))
    return TxDraft(function=body.function, transaction=tx)


@router.post("/v1/transactions", responses=problems(409, 503))
def submit(body: SignedTxIn, c: ComponentsDep, caller: CallerDep) -> TxSent:
    """Relays the caller's own signed guardian or opt-out transaction (break-glass has its own endpoint,
    which also keeps the reason)."""
    call = relay.decode(c, body.signedTransaction, caller, _PATIENT_CALLS)
    result = relay.send(c, call)
    c.catch_up()
    return TxSent(function=call.function, txHash=result.tx_hash, blockNumber=result.block_number)
