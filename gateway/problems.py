"""The gateway's one error model: RFC 9457 ``application/problem+json`` with stable type codes.

Every refusal and failure is a :class:`Problem` carrying a stable ``code`` (``consent_missing``,
``chain_unavailable``, ...). The response's ``type`` is ``/problems/<code>``, a page the gateway serves
describing the code, and ``code`` is repeated as a member so clients can switch on it.

Domain code below the API raises :class:`gateway.errors.DomainError` (each names its code); the handler
installed here answers it exactly as the :class:`Problem` of that code (:meth:`Problem.of`).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.errors import DomainError

__all__ = ["PROBLEMS", "Problem", "install_problem_handlers", "problem_response"]

log = logging.getLogger("hcl.gateway")

#: code → (HTTP status, title). The list is the contract; codes are never renamed.
PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "The request is malformed"),
    "invalid_fhir": (422, "The FHIR content is invalid"),
    "invalid_signature": (401, "The signature does not verify"),
    "unauthenticated": (401, "Authentication is required"),
    "token_expired": (401, "The bearer token has expired"),
    "replayed_nonce": (401, "The sign-in nonce was already used or has expired"),
    "consent_signature_invalid": (422, "The consent's signature does not verify"),
    "consent_signature_expired": (422, "The signed consent's submit-before time has passed"),
    "consent_already_used": (409, "This consent was already submitted, or a later one replaced it"),
    "not_member": (403, "The caller is not an active consortium member"),
    "member_suspended": (403, "The caller's membership is suspended"),
    "wrong_role": (403, "The caller's role does not allow this"),
    "not_patient": (403, "Only the patient (or a guardian) may do this"),
    "consent_missing": (403, "No consent covers this access"),
    "consent_expired": (403, "The consent has expired or is not valid yet"),
    "consent_revoked": (403, "The consent was revoked"),
    "wrong_category": (403, "The consent does not cover this category"),
    "wrong_purpose": (403, "The consent does not cover this purpose"),
    "emergency_not_allowed": (403, "Emergency access is not allowed here"),
    "record_not_found": (404, "No such record"),
    "not_found": (404, "Not found"),
    "patient_not_found": (404, "No patient you may look up has this identifier"),
    "category_key_invalid": (422, "The category key is not signed by the patient"),
    "category_key_needed": (409, "The patient's category key is not known to this gateway"),
    "category_key_conflict": (409, "This gateway holds another category key for the patient"),
    "record_retracted": (410, "The record was retracted"),
    "not_record_holder": (403, "Only the gateway that registered a record may ask for replicas of it"),
    "payload_too_large": (413, "The request body is too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "invalid_webhook_url": (422, "The webhook URL is not an absolute http(s) URL"),
    "chain_rejected": (409, "The chain refused the transaction"),
    "integrity_error": (502, "Stored data does not match the ledger"),
    "chain_unavailable": (503, "The chain is unreachable; nothing was released"),
    "storage_unavailable": (503, "Record storage is unreachable; nothing was released"),
    "journal_unavailable": (503, "The release journal is unavailable; nothing was released"),
    "anchor_lagging": (503, "The journal is not being anchored on-chain in time; nothing was released"),
    "catching_up": (503, "The gateway is still reading the chain's history; ask again shortly"),
    "holder_unavailable": (503, "The institution holding the record does not answer; nothing was released"),
    "storage_full": (507, "Record storage is full"),
    "internal_error": (500, "Internal error"),
    "review_signature_invalid": (422, "The review's signature, signer or note does not verify"),
    "emergency_access_unknown": (404, "No such emergency access"),
    "already_reviewed": (409, "This auditor already reviewed this emergency access"),
}


class Problem(Exception):
    """A refusal or failure to report as problem+json."""

    def __init__(self, code: str, detail: str = "", *, status: int | None = None, **extra: Any) -> None:
        if code not in PROBLEMS:
            raise ValueError(f"unknown problem code {code!r}")
        default_status, self.title = PROBLEMS[code]
        self.code = code
        self.status = status or default_status
        self.detail = detail
        self.extra = extra
        super().__init__(f"{code}: {detail}")

    @classmethod
    def of(cls, error: DomainError) -> Problem:
        """The problem a domain error is answered with: its code, detail and extra members."""
        return cls(error.code, error.detail, **error.extra)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "code": self.code,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return Response(
        orjson.dumps(problem.body(instance), default=_default),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=headers,
    )


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app can produce leaves as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request.url.path)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        return problem_response(Problem.of(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"path": ".".join(str(p) for p in err.get("loc", ())), "message": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        return problem_response(
            Problem("invalid_request", "request validation failed", errors=errors), request.url.path
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "record_not_found", 405: "invalid_request", 413: "payload_too_large"}.get(
            exc.status_code, "invalid_request"
        )
        problem = Problem(code, str(exc.detail), status=exc.status_code)
        if exc.status_code == 404 and not request.url.path.startswith("/v1/records/"):
            problem = Problem("not_found", "no such endpoint")
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(Problem("internal_error"), request.url.path)
