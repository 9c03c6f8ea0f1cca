"""The FHIR R4 read API: ``/fhir/metadata``, ``/fhir/Consent?patient=`` and ``/fhir/AuditEvent?patient=`` —
the consents and accesses of ``/v1/me`` in the format hospital systems speak (``application/fhir+json``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from gateway import errors
from gateway.api.deps import PAGE_LIMIT_MAX, CallerDep, ComponentsDep, CursorQuery, page_key
from gateway.api.schemas import problems
from gateway.fhir import ledger as fhir_ledger
from gateway.services import access_history
from gateway.storage import read_model
from gateway.storage.db import status_text
from gateway.wiring import Components
from node_client.contracts import ConsentStatus, MemberStatus
from node_client.paging import encode_cursor
from node_client.vocabulary import AUDIT_ROLES

router = APIRouter(prefix="/fhir", tags=["fhir"])

FHIR_JSON = "application/fhir+json"
PatientQuery = Annotated[str, Query(max_length=64, description="the patient's ledger address (0x…)")]
CountQuery = Annotated[int, Query(alias="_count", ge=1, le=PAGE_LIMIT_MAX, description="entries per page")]
_RESOURCE = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}
_BUNDLE: dict[int | str, dict[str, Any]] = {
    200: {"description": "a FHIR R4 resource (JSON)", "content": {FHIR_JSON: {"schema": _RESOURCE}}}
}


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def _patient(value: str) -> str:
    if not is_address(value):
        raise errors.InvalidRequest("patient must be a ledger address (0x followed by 40 hex digits)")
    return to_checksum_address(value)


def _audit_role(c: Components, caller: str) -> bool:
    member = c.policy.member(caller)
    return member.status is MemberStatus.ACTIVE and bool(member.roles & AUDIT_ROLES)


def _grantee_only(c: Components, caller: str, patient: str) -> str | None:
    """Whose consents the caller sees: all (``None``) for the patient and auditors, the caller's own as a grantee
    for another active member; anyone else is refused."""
    if caller == patient or _audit_role(c, caller):
        return None
    if c.policy.member(caller).status is MemberStatus.ACTIVE:
        return caller
    raise errors.WrongRole("only the patient, auditors and the consent's grantee may read consents")


@router.get("/metadata", response_class=FhirResponse, responses=_BUNDLE)
def metadata(request: Request) -> FhirResponse:
    """The CapabilityStatement of this FHIR endpoint (read-only searches, bearer tokens from /v1/auth)."""
    date = datetime.now(UTC).isoformat(timespec="seconds")
    return FhirResponse(fhir_ledger.capability_statement(str(request.base_url) + "fhir", date))


def consent_facts(c: Components, patient: str, grantee: str | None = None) -> list[fhir_ledger.ConsentFacts]:
    """The patient's on-chain consents (only those granted to ``grantee`` when given), as the FHIR mapping takes them."""
    granted = {e.consent_id: e.time for e in read_model.consent_events_of(c.db, patient) if e.kind == "granted"}
    return [
        fhir_ledger.ConsentFacts(
            consent_id="0x" + bytes(r.consent_id).hex(),
            patient=patient,
            grantee=r.grantee,
            grantee_name=c.member_names.get(r.grantee, ""),
            categories=c.category_keys.name_slots(patient, r.categories),
            purposes=r.purposes,
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            revoked=r.status != status_text(ConsentStatus.ACTIVE),
            granted_at=granted.get(r.consent_id),
            tx_hash=r.tx_hash,
        )
        for r in read_model.consents_of(c.db, patient)
        if grantee is None or r.grantee == grantee
    ]


@router.get("/Consent", response_class=FhirResponse, responses=_BUNDLE | problems(400, 403, 503))
def consents(request: Request, c: ComponentsDep, caller: CallerDep, patient: PatientQuery) -> FhirResponse:
    """Each on-chain consent of ``patient`` as an R4 Consent (a searchset Bundle): the patient's and auditors'
    view is every consent, an institution's only those granted to it."""
    who = _patient(patient)
    grantee = _grantee_only(c, caller, who)
    c.indexer.require_complete()
    now = c.ledger.client.block_timestamp()
    resources = [fhir_ledger.consent(f, now) for f in consent_facts(c, who, grantee)]
    return FhirResponse(fhir_ledger.searchset(resources, total=len(resources), self_url=str(request.url)))


@router.get("/AuditEvent", response_class=FhirResponse, responses=_BUNDLE | problems(400, 403, 503))
def audit_events(
    request: Request,
    c: ComponentsDep,
    caller: CallerDep,
    patient: PatientQuery,
    count: CountQuery = 50,
    cursor: CursorQuery = None,
) -> FhirResponse:
    """Each access to ``patient``'s records (the access log, newest first) as an R4 AuditEvent, a page at a
    time (``_count``; the ``next`` link pages on). The patient and auditors only."""
    who = _patient(patient)
    if caller != who and not _audit_role(c, caller):
        raise errors.WrongRole("only the patient and auditors may read a patient's accesses")
    history = access_history.network_page(c, who, before=page_key(cursor), limit=count)
    following = encode_cursor(*history.next) if history.next is not None else None
    query = {"patient": who, "_count": count}
    next_url = f"{request.base_url}fhir/AuditEvent?{urlencode(query | {'cursor': following})}" if following else None
    observer = f"HealthCode Ledger gateway {c.gateway_account.address}"
    resources = fhir_ledger.audit_events(history.entries, who, observer)
    # total only when this one page is the whole log: counting would read every peer's whole journal
    total = len(resources) if cursor is None and next_url is None else None
    return FhirResponse(fhir_ledger.searchset(resources, total=total, self_url=str(request.url), next_url=next_url))
