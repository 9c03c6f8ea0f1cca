"""Records: upload (providers), discovery, release, retraction."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

import orjson
from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from gateway.api.deps import CallerDep, ComponentsDep, CursorQuery, LimitQuery, page_key, page_links, read_body
from gateway.api.models import LookupIn
from gateway.api.schemas import (
    DiscoveredRecord,
    DiscoveredRecords,
    IgnoredResource,
    PatientFound,
    Release,
    Retracted,
    UnavailableHolder,
    UnchangedRecord,
    Uploaded,
    UploadedRecord,
    problems,
)
from gateway.errors import DomainError
from gateway.problems import Problem
from gateway.services import discovery, forwarding, lookup, releases, uploads
from gateway.wiring import Components
from node_client.vocabulary import PURPOSES, SLOT_COUNT, parse_purposes

router = APIRouter(tags=["records"])
log = logging.getLogger("hcl.gateway.records")

FHIR_TYPES = ("application/fhir+json", "application/json")

#: the upload's body, read raw by the route (so FastAPI cannot describe it)
_FHIR_BODY = {
    "requestBody": {
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
}


def parse_record_id(value: str) -> bytes:
    raw = value.removeprefix("0x")
    if len(raw) != 64:
        raise Problem("invalid_request", "a record id is 32 bytes of hex")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise Problem("invalid_request", "a record id is 32 bytes of hex") from None


#: FHIR date or dateTime, possibly partial (``2013``, ``2013-04``, ``2013-04-02``, ``2013-04-02T09:30:10+01:00``)
_FHIR_DATE = re.compile(
    r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:([0-5][0-9]|60)(\.[0-9]{1,9})?)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?",
    re.ASCII,
)


def parse_since(value: str | None) -> str | None:
    """``since`` as an ISO 8601 date(Time) prefix: index dates are compared as text, so anything else
    (``' OR '1'='1`` sorts before every date) would silently match everything."""
    if value is None or value == "":
        return None
    if _FHIR_DATE.fullmatch(value) is None:
        raise Problem("invalid_request", "since must be an ISO 8601 date, e.g. 2024-01-31")
    return value


def parse_purpose(value: str) -> int:
    try:
        mask = parse_purposes(value)
    except ValueError as exc:
        raise Problem("invalid_request", str(exc)) from None
    if mask & (mask - 1):
        raise Problem("invalid_request", "state exactly one purpose")
    return mask.bit_length() - 1


_UNCHANGED: dict[int | str, dict[str, Any]] = {
    200: {"model": Uploaded, "description": "nothing new: the gateway already holds every resource"}
}


@router.post(
    "/v1/records",
    status_code=201,
    responses={**_UNCHANGED, **problems(409, 413, 415, 422, 503, 507)},
    openapi_extra=_FHIR_BODY,
)
async def upload_records(
    request: Request,
    response: Response,
    c: ComponentsDep,
    caller: CallerDep,
    patient: Annotated[str, Query(description="the patient's address")],
) -> Uploaded:
    """Upload a FHIR R4 resource or Bundle for a patient: validated, grouped by category into records,
    encrypted, stored and registered on-chain in one transaction. Idempotent: what the gateway already
    holds is not stored again (``unchanged``; 200 when nothing is new), a changed record gets a new version
    (``amends``); a transaction entry's ``ifNoneExist`` (``identifier=system|value``) is honoured."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in FHIR_TYPES:
        raise Problem("unsupported_media_type", "send application/fhir+json", status=415)
    body = await read_body(request, c.settings.max_body_bytes)
    result = await run_in_threadpool(uploads.upload, c, provider=caller, patient=patient, body=body)
    if not result.records:
        response.status_code = 200
    return Uploaded(
        uploadId=result.upload_id,
        patient=result.patient,
        provider=result.provider,
        txHash=result.tx_hash,
        blockNumber=result.block_number,
        records=[
            UploadedRecord(
                recordId="0x" + r.record_id.hex(),
                category=c.category_keys.name_slot(result.patient, r.category),
                resources=r.resources,
                locator=r.locator,
                contentHash="0x" + r.content_hash.hex(),
                size=r.size,
                amends=None if r.previous is None else "0x" + r.previous.hex(),
                txHash=r.tx_hash or None,
            )
            for r in result.records
        ],
        unchanged=[
            UnchangedRecord(
                category=c.category_keys.name_slot(result.patient, u.category),
                recordIds=["0x" + i.hex() for i in u.record_ids],
            )
            for u in result.unchanged
        ],
        ignored=[IgnoredResource(resourceType=t, reason=why) for t, why in result.ignored],
    )


@router.get("/v1/records/{record_id}", response_model=Release, responses=problems(404, 410, 502, 503))
async def get_record(
    record_id: str,
    c: ComponentsDep,
    caller: CallerDep,
    purpose: Annotated[str, Query(description="why you read it, e.g. treatment, referral, emergency")],
) -> Response:
    """Release a record: consent checked on-chain, access ledgered before release, FHIR JSON encrypted to
    the caller's registered X25519 key (HPKE). A record another institution holds is released by its
    gateway (forwarded, ledgered there, sealed to the caller): ``503 holder_unavailable`` if it does not answer."""
    # the hot path: the body is the service's, serialised by orjson; ``Release`` is what the document says
    # of it (checked by tests/gateway/test_api.py and the schemathesis run), not run per request
    rid, pur = parse_record_id(record_id), parse_purpose(purpose)
    try:
        peer = forwarding.holder_elsewhere(c, rid)
        if peer is not None:
            body = await run_in_threadpool(
                forwarding.release_elsewhere, c, peer=peer, caller=caller, record_id=rid, purpose=pur
            )
            return Response(orjson.dumps(body), media_type="application/json")
        released = await releases.release_async(c, caller=caller, record_id=rid, purpose=pur)
    except (Problem, DomainError) as exc:
        c.metrics.denials.labels(reason=exc.code).inc()
        raise
    return Response(orjson.dumps(released.body), media_type="application/json")


@router.delete("/v1/records/{record_id}", responses=problems(404, 409, 410, 503))
def retract_record(record_id: str, c: ComponentsDep, caller: CallerDep) -> Retracted:
    """Erase a record (patient or uploading provider): its data key is destroyed and it is retracted on-chain."""
    tx = uploads.retract(c, caller=caller, record_id=parse_record_id(record_id))
    return Retracted(recordId=record_id, retracted=True, txHash=tx)


@router.post("/v1/patients/lookup", response_model=PatientFound, responses=problems(404, 502, 503))
async def lookup_patient(body: LookupIn, c: ComponentsDep, caller: CallerDep) -> Response:
    """Find a patient by an identifier (``system|value``; ``phone`` and a number): only with a current
    consent of hers for ``identifiers`` for that purpose, and ledgered as a release of her identifiers
    record (which the answer carries, sealed to the caller). ``404 patient_not_found`` alike for an unknown
    identifier and one the caller may not look up."""
    purpose = parse_purpose(body.purpose)
    found = await run_in_threadpool(
        lookup.lookup, c, caller=caller, system=body.system, value=body.value, purpose=purpose
    )
    out = {"patient": found.patient, "recordId": "0x" + found.record_id.hex(), "release": found.release.body}
    return Response(orjson.dumps(out), media_type="application/json")


@router.get("/v1/patients/{address}/records", responses=problems(400, 409, 503))
def discover(
    address: str,
    c: ComponentsDep,
    caller: CallerDep,
    category: Annotated[
        str | None, Query(description="e.g. lab-results,mental-health; slot-N: one of the patient's slots as is")
    ] = None,
    since: Annotated[str | None, Query(description="ISO date: resources dated on or after")] = None,
    code: Annotated[str | None, Query(description="a resource code, e.g. LOINC 4548-4")] = None,
    purpose: Annotated[str, Query()] = "treatment",
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> DiscoveredRecords:
    """Record metadata of a patient at every institution's gateway, only for categories the caller
    currently has consent for; each record names its holder, and gateways that did not answer are listed.
    Newest first by (registeredAt, recordId), a page at a time: ``cursor`` (and the ``next`` link) give
    the following page, absent on the last one."""
    c.policy.require_member(caller)
    before = page_key(cursor)
    query = discovery_query(c, address, purpose=purpose, category=category, since=since, code=code)
    found = discovery.network(c, caller=caller, query=query, before=before, limit=limit)
    again: dict[str, str | int] = {**query.filters, "purpose": PURPOSES[query.purpose].slug, "limit": limit}
    return discovered(c, found, query, page_links(f"/v1/patients/{query.patient}/records", again, found.next))


def discovery_query(
    c: Components, address: str, *, purpose: str, category: str | None, since: str | None, code: str | None
) -> discovery.Query:
    """The discovery request's parameters, checked (400 for a bad one); ``category`` names categories (or
    ``slot-N``), mapped to the patient's slots (409 ``category_key_needed`` for a blinded one without her key)."""
    if not is_address(address):
        raise Problem("invalid_request", "not an address")
    patient = to_checksum_address(address)
    wanted = None
    if category:
        try:
            mask = c.category_keys.parse(patient, category)
        except ValueError as exc:
            raise Problem("invalid_request", str(exc)) from None
        wanted = {s for s in range(SLOT_COUNT) if mask >> s & 1}
    return discovery.Query(patient, parse_purpose(purpose), wanted, code or None, parse_since(since))


def discovered(
    c: Components, found: discovery.Discovery, query: discovery.Query, links: dict[str, str | None]
) -> DiscoveredRecords:
    """The answer's document; a record a peer described wrongly is left out (and logged), not a 500."""
    records = []
    for r in found.records:
        try:
            records.append(DiscoveredRecord.model_validate(r))
        except ValidationError as exc:
            log.warning("a discovered record was malformed", extra={"holder": r.get("holder"), "error": str(exc)})
    return DiscoveredRecords(
        patient=query.patient,
        purpose=PURPOSES[query.purpose].slug,
        records=records,
        consentedCategories=[c.category_keys.name_slot(query.patient, k) for k in found.consented],
        unavailable=[UnavailableHolder.model_validate(u) for u in found.unavailable],
        **links,
    )
