"""The OpenAPI document says what the gateway really answers: problem+json errors and bearer sign-in.

FastAPI on its own declares a ``422`` ``HTTPValidationError`` on every operation with parameters, which
this gateway never sends (validation failures are ``400 invalid_request`` problems, see
:mod:`gateway.problems`), and knows nothing of the bearer token that :func:`gateway.api.deps.get_caller`
reads. :func:`install_openapi` replaces the generated document's responses with the problem responses
each operation can give, declares the ``bearer`` security scheme on every operation that needs a
caller, and declares the FHIR request body of ``POST /v1/records`` (read raw by the route). The document
is checked against the running gateway by ``tests/test_schemathesis.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from gateway.problems import PROBLEMS

__all__ = ["PROBLEM_SCHEMA", "install_openapi", "problem_statuses"]

PROBLEM_MEDIA = "application/problem+json"

#: RFC 9457 problem details as the gateway writes them (extra members, e.g. ``errors``, may follow)
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "code", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "/problems/<code>: a page describing the code"},
        "code": {"type": "string", "enum": sorted(PROBLEMS)},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}

#: problem statuses an operation can answer beyond the common ones (see :func:`problem_statuses`)
_EXTRA: dict[str, tuple[int, ...]] = {
    "auth-token": (401,),
    "records-upload_records": (409, 413, 415, 422, 507),
    "records-get_record": (404, 410, 502),
    "records-retract_record": (404, 409, 410),
    "consents-grant": (409,),
    "consents-revoke": (409,),
    "consents-emergency_access": (409,),
    "transactions-draft": (409,),
    "transactions-submit": (409,),
    "accesses-proof": (404,),
    "accesses-journal": (404,),
    "system-problem_page": (404,),
}

_CHAIN_FREE = {"system-problem_page", "system-problem_index", "system-metrics", "system-healthz"}

_STATUS_TEXT = {
    400: "Malformed request (invalid_request)",
    401: "No valid bearer token (unauthenticated, token_expired, invalid_signature, replayed_nonce)",
    403: "Refused: not a member, wrong role, or no consent covers it",
    404: "No such record, access, problem type or endpoint",
    409: "The chain refused the transaction (chain_rejected)",
    410: "The record was retracted",
    413: "The request body is too large",
    415: "Unsupported media type",
    422: "The FHIR content is invalid (invalid_fhir)",
    500: "Internal error",
    502: "Stored data does not match the ledger (integrity_error)",
    503: "The chain, the record store or the journal is unavailable; nothing was released",
    507: "Record storage is full",
}


def _needs_caller(dependant: Dependant) -> bool:
    from gateway.api.deps import get_caller

    return any(d.call is get_caller or _needs_caller(d) for d in dependant.dependencies)


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI ≥ 0.16x keeps them nested, paths in full)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes)


def problem_statuses(operation_id: str, *, has_input: bool, needs_caller: bool) -> list[int]:
    """The problem statuses ``operation_id`` can answer."""
    statuses = {500, *_EXTRA.get(operation_id, ())}
    if has_input or needs_caller:
        statuses.add(400)  # malformed parameters or body; ambiguous framing
    if needs_caller:
        statuses |= {401, 403}
    if operation_id not in _CHAIN_FREE:
        statuses.add(503)
    return sorted(statuses)


def install_openapi(app: FastAPI) -> None:
    """Replaces ``app.openapi`` with the corrected document (built once, then cached like FastAPI's)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for fastapi_only in ("HTTPValidationError", "ValidationError"):
            schemas.pop(fastapi_only, None)
        schemas["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "POST /v1/auth/challenge, sign it, POST /v1/auth/token",
            },
        }
        for route in _api_routes(app.routes):
            if not route.include_in_schema:
                continue
            for method in route.methods:
                op = doc["paths"].get(route.path_format, {}).get(method.lower())
                if op is None:
                    continue
                needs_caller = _needs_caller(route.dependant)
                if needs_caller:
                    op["security"] = [{"bearer": []}]
                responses = op.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's HTTPValidationError: never sent (400 problem instead)
                if op["operationId"] == "records-upload_records":
                    op["requestBody"] = {
                        "required": True,
                        "content": {
                            "application/fhir+json": {
                                "schema": {
                                    "type": "object",
                                    "description": "a FHIR R4 resource or Bundle",
                                    "required": ["resourceType"],
                                    "properties": {"resourceType": {"type": "string"}},
                                }
                            }
                        },
                    }
                if op["operationId"] == "system-metrics":
                    responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
                if op["operationId"] == "system-healthz":
                    responses["503"] = {
                        "description": "Degraded: some check failed (same body as 200)",
                        "content": {"application/json": {"schema": {}}},
                    }
                has_input = bool(op.get("parameters")) or "requestBody" in op
                for status in problem_statuses(op["operationId"], has_input=has_input, needs_caller=needs_caller):
                    responses.setdefault(
                        str(status),
                        {
                            "description": _STATUS_TEXT[status],
                            "content": {PROBLEM_MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                        },
                    )
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
