"""A patient hands her category key to this gateway: ``POST /v1/category-keys`` (her signed request), and
``GET /v1/category-keys/request`` (what she signs). Why and what the key does: docs/data-on-chain.md."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Query, Response

from gateway.api.deps import CallerDep, ComponentsDep
from gateway.api.models import CategoryKeyIn
from gateway.api.schemas import CategoryKeyLearned, CategoryKeyRequestOut, problems
from node_client.signing import CategoryKeyRequest, typed_data

router = APIRouter(tags=["consents"])


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
