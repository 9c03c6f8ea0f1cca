"""A patient hands her category key to this gateway: ``POST /v1/category-keys`` (her signed request), and
``GET /v1/category-keys/request`` (what she signs); the gateway hands it on to her current guardian only
(``GET /v1/category-keys/{patient}``). Why and what the key does: docs/data-on-chain.md."""

from __future__ import annotations

import logging
from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path, Query, Response

from gateway import errors
from gateway.api.deps import CallerDep, ComponentsDep
from gateway.api.models import CategoryKeyIn
from gateway.api.schemas import CategoryKeyHandedOver, CategoryKeyLearned, CategoryKeyRequestOut, problems
from node_client.signing import CategoryKeyRequest, typed_data

router = APIRouter(tags=["consents"])
log = logging.getLogger("hcl.gateway.category_keys")


@router.get("/v1/category-keys/request")
def category_key_request(
    c: ComponentsDep, _caller: CallerDep, patient: Annotated[str, Query(pattern=r"^0x[0-9a-fA-F]{40}$")]
) -> CategoryKeyRequestOut:
    """The EIP-712 ``CategoryKeyRequest`` of ``patient`` (``typedData`` for ``eth_signTypedData_v4``)."""
    message = CategoryKeyRequest(to_checksum_address(patient))
    typed = typed_data(c.category_keys.domain, message)
    return CategoryKeyRequestOut(type="CategoryKeyRequest", message=typed["message"], typedData=typed)


@router.post(
    "/v1/category-keys",
    status_code=201,
    responses={200: {"model": CategoryKeyLearned, "description": "already held"}, **problems(409, 422)},
)
def learn_category_key(
    body: CategoryKeyIn, response: Response, c: ComponentsDep, _caller: CallerDep
) -> CategoryKeyLearned:
    """Keep the patient's category key (the signature is hers: any signed-in member or she may bring it)."""
    learned = c.category_keys.learn(body.patient, bytes.fromhex(body.signature[2:]))
    if not learned:
        response.status_code = 200
    return CategoryKeyLearned(patient=to_checksum_address(body.patient), learned=learned)


@router.get("/v1/category-keys/{patient}", responses=problems(400, 401, 403, 404, 503))
def hand_over_category_key(
    c: ComponentsDep, caller: CallerDep, patient: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")]
) -> CategoryKeyHandedOver:
    """Her signature that makes her category key, to the patient or her current guardian (asked of the chain:
    a removed guardian is refused at once): a guardian cannot make her ward's key, and needs it
    to grant a blinded category for her ward (``hcl code new --patient WARD --ward-key-from URL``)."""
    if not c.policy.speaks_for(caller, patient):
        raise errors.NotPatient("only the patient or her current guardian is handed her category key")
    signature = c.category_keys.signature(patient)
    if signature is None:
        raise errors.NotFound(
            f"this gateway does not hold the signature of {patient}'s category key: she signs in to its portal once"
        )
    log.info("category key handed over", extra={"patient": patient.lower(), "to": caller.lower()})
    c.metrics.key_handovers.labels(to="patient" if caller.lower() == patient.lower() else "guardian").inc()
    return CategoryKeyHandedOver(patient=to_checksum_address(patient), signature="0x" + signature.hex())
