"""Domain errors (gateway/errors.py) are answered exactly as the Problem of their code."""

from __future__ import annotations

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import errors
from gateway.fhir import FhirIssue, InvalidFhir
from gateway.problems import PROBLEMS, Problem, install_problem_handlers, problem_response


def _subclasses(cls: type[errors.DomainError]) -> list[type[errors.DomainError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


GROUPS = {errors.Refused, errors.ConsentRefused, errors.Unavailable}
CONCRETE = [cls for cls in _subclasses(errors.DomainError) if cls not in GROUPS and cls is not InvalidFhir]


def test_every_domain_error_names_a_problem_code() -> None:
    for cls in CONCRETE:
        assert cls.code in PROBLEMS, cls
        assert cls.code != "internal_error", cls
    assert sorted(errors.__all__) == errors.__all__
    assert {cls.__name__ for cls in CONCRETE} | {"DomainError"} | {g.__name__ for g in GROUPS} == set(errors.__all__)


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (errors.ConsentExpired("not now", validUntil=5), Problem("consent_expired", "not now", validUntil=5)),
        (errors.ChainRejected("Nope", error="Nope"), Problem("chain_rejected", "Nope", error="Nope")),
        (errors.Unauthenticated("malformed bearer token"), Problem("unauthenticated", "malformed bearer token")),
        (errors.StorageFull(), Problem("storage_full")),
        (
            InvalidFhir([FhirIssue("Patient.x", "unknown element")]),
            Problem("invalid_fhir", "1 issue(s)", issues=[{"path": "Patient.x", "message": "unknown element"}]),
        ),
    ],
)
def test_a_domain_error_leaves_as_its_problem(error: errors.DomainError, problem: Problem) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/x")
    def raise_it() -> None:
        raise error

    response = TestClient(app).get("/x")
    expected = problem_response(problem, "/x")
    assert response.status_code == expected.status_code
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("www-authenticate") == expected.headers.get("www-authenticate")
    assert response.content == expected.body
    assert orjson.loads(response.content)["code"] == error.code
