"""The OpenAPI document says what the gateway really answers: problem+json errors and bearer sign-in.

FastAPI on its own declares a ``422`` ``HTTPValidationError`` on every operation with parameters, which
this gateway never sends (validation failures are ``400 invalid_request`` problems, see
:mod:`gateway.problems`), and knows nothing of the bearer token that :func:`gateway.api.deps.get_caller`
reads. :func:`install_openapi` drops that ``422``, adds the problem responses every operation's signature
implies (500; 400 with input; 401 and 403 with a caller) and declares the ``bearer`` security scheme on
every operation that needs a caller.

Everything else is declared by the routes themselves, next to them in :mod:`gateway.api`: the success
body (a model of :mod:`gateway.api.schemas`, or an explicit media type), the other problem statuses
(``responses=problems(404, 503)``), and anything else the route answers. Nothing here names an
operation, so a renamed or moved route keeps what it declared. The document is checked by
``tests/gateway/test_openapi_document.py`` and against the running gateway by ``tests/gateway/test_schemathesis.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from gateway.api.schemas import problem_response
from gateway.problems import PROBLEMS

__all__ = ["PROBLEM_SCHEMA", "install_openapi", "problem_statuses"]

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


def problem_statuses(*, has_input: bool, needs_caller: bool) -> list[int]:
    """The problem statuses every operation of this signature can answer; each route declares its others
    next to it (``responses=problems(...)``, :func:`gateway.api.schemas.problems`)."""
    statuses = {500}
    if has_input or needs_caller:
        statuses.add(400)  # malformed parameters or body; ambiguous framing
    if needs_caller:
        statuses |= {401, 403}
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
            for method in route.methods or ():  # an APIRoute always has its methods (GET by default)
                op = doc["paths"].get(route.path_format, {}).get(method.lower())
                if op is None:
                    continue
                needs_caller = _needs_caller(route.dependant)
                if needs_caller:
                    op["security"] = [{"bearer": []}]
                responses = op.setdefault("responses", {})
                if "HTTPValidationError" in str(responses.get("422")):
                    del responses["422"]  # FastAPI's own: never sent (a 400 problem instead)
                has_input = bool(op.get("parameters")) or "requestBody" in op
                for status in problem_statuses(has_input=has_input, needs_caller=needs_caller):
                    responses.setdefault(str(status), problem_response(status))
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the document
