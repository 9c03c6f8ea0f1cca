"""The OpenAPI document describes what the gateway really answers (see ``gateway.openapi``).

The running gateway is checked against it by ``tests/gateway/test_schemathesis.py``; this is the quick look at
the document itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI

from gateway.api.schemas import problems
from gateway.app import create_app
from gateway.openapi import install_openapi
from gateway.problems import PROBLEMS
from gateway.settings import GatewaySettings


def _doc() -> dict:
    return create_app(GatewaySettings()).openapi()


def test_errors_are_declared_as_problems_and_never_as_fastapi_422() -> None:
    doc = _doc()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]) == set(PROBLEMS)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and not (path == "/healthz" and status == "503"):
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)
            if op.get("parameters") or "requestBody" in op:
                assert "400" in op["responses"], (method, path)
    upload = doc["paths"]["/v1/records"]["post"]
    assert {"413", "415", "422"} <= set(upload["responses"])
    assert list(upload["requestBody"]["content"]) == ["application/fhir+json"]
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def test_bearer_scheme_is_declared_exactly_where_a_caller_is_needed() -> None:
    doc = _doc()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "POST /v1/auth/challenge, sign it, POST /v1/auth/token",
    }
    secured = {(m, p) for p, ops in doc["paths"].items() for m, op in ops.items() if op.get("security")}
    assert ("get", "/v1/records/{record_id}") in secured and ("get", "/v1/me/access-log") in secured
    assert ("post", "/v1/auth/challenge") not in secured and ("get", "/v1/members") not in secured
    for m, p in secured:
        assert {"401", "403"} <= set(doc["paths"][p][m]["responses"]), (m, p)
    assert not any(p.startswith(("/portal", "/static")) for p in doc["paths"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_operation_declares_a_success_body_and_every_ref_resolves() -> None:
    doc = _doc()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            success = {status: r for status, r in op["responses"].items() if status.startswith("2")}
            assert success, (method, path)
            for status, response in success.items():
                content = response.get("content")
                assert content, (method, path, status)
                for media, body in content.items():
                    schema = body.get("schema")
                    assert schema, (method, path, status, media)  # a model, or a string for text and files
                    if media == "application/json":
                        assert set(schema) & {"$ref", "anyOf", "oneOf"}, (method, path, status, schema)
                    elif media == "application/fhir+json":  # the /fhir API: a FHIR resource, whatever its type
                        assert schema["required"] == ["resourceType"], (method, path, status, schema)
                    else:
                        assert schema.get("type") == "string", (method, path, status, media)
    refs = set(_refs(doc))
    assert "#/components/schemas/Problem" in refs and "#/components/schemas/EncryptedRelease" in refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
    assert list(doc["paths"]["/healthz"]["get"]["responses"]["503"]["content"]) == ["application/json"]
    proof = doc["paths"]["/v1/accesses/{ref}/proof"]["get"]["responses"]
    assert "Retry-After" in proof["202"]["headers"]
    assert list(doc["paths"]["/v1/journal"]["get"]["responses"]["200"]["content"]) == ["application/jsonl"]
    for fhir in ("/fhir/metadata", "/fhir/Consent", "/fhir/AuditEvent"):
        assert list(doc["paths"][fhir]["get"]["responses"]["200"]["content"]) == ["application/fhir+json"], fhir


def test_a_route_declares_its_own_problem_statuses_whatever_its_name() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/anything/{x}", responses=problems(404, 410))
    def any_name_at_all(x: str) -> dict[str, str]:
        return {"x": x}

    app.include_router(router)
    install_openapi(app)
    responses = app.openapi()["paths"]["/anything/{x}"]["get"]["responses"]
    assert set(responses) == {"200", "400", "404", "410", "500"}  # 400: it has input; no caller, no 401/403
    assert responses["410"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
