"""The OpenAPI document describes what the gateway really answers (see ``gateway.openapi``).

The running gateway is checked against it by ``tests/test_schemathesis.py``; this is the quick look at
the document itself.
"""

from __future__ import annotations

from gateway.app import create_app
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
