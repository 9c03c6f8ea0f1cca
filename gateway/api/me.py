"""What a patient sees about themselves, derived from chain events (what an auditor would see)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from gateway.api.deps import CallerDep, ComponentsDep, CursorQuery, LimitQuery, SinceQuery, page_key, page_links
from gateway.api.schemas import (
    AccessEntry,
    AccessLog,
    ConsentEvent,
    EmergencyWindow,
    MyConsent,
    MyConsents,
    MyRecord,
    MyRecords,
    UnavailableHolder,
    problems,
)
from gateway.services import access_history
from gateway.storage import emergency_reasons, read_model
from gateway.storage.db import status_text
from gateway.wiring import Components
from node_client.contracts import ConsentStatus
from node_client.paging import encode_cursor
from node_client.vocabulary import PURPOSES, purposes_of

router = APIRouter(prefix="/v1/me", tags=["patients"])


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


@router.get("/records", responses=problems(400, 503))
def my_records(c: ComponentsDep, caller: CallerDep, cursor: CursorQuery = None, limit: LimitQuery = 50) -> MyRecords:
    """My records: category, provider, when registered, status. Newest first, a page at a time: ``cursor``
    (and the ``next`` link) give the following page, absent on the last one."""
    rows = read_model.records_page(c.db, caller, before=page_key(cursor), limit=limit + 1)
    following = (rows[limit - 1].time, rows[limit - 1].record_id) if len(rows) > limit else None
    return MyRecords(
        patient=caller,
        records=[
            MyRecord(
                recordId=_hex(r.record_id),
                category=c.category_keys.name_slot(caller, r.category),
                provider=r.provider,
                providerName=c.member_names.get(r.provider, ""),
                status=r.status,
                registeredAt=r.time,
                txHash=r.tx_hash,
            )
            for r in rows[:limit]
        ],
        **page_links("/v1/me/records", {"limit": limit}, following),
    )


@router.get("/consents", responses=problems(503))
def my_consents(c: ComponentsDep, caller: CallerDep) -> MyConsents:
    """My consents, one per institution, with their current state, and their history."""
    now = c.ledger.client.block_timestamp()
    current = read_model.consents_of(c.db, caller)
    history = read_model.consent_events_of(c.db, caller)

    def state(r: read_model.ChainConsent) -> str:
        if r.status != status_text(ConsentStatus.ACTIVE):
            return r.status
        if now >= r.valid_until:
            return "expired"
        return "active" if now >= r.valid_from else "not yet valid"

    return MyConsents(
        patient=caller,
        consents=[
            MyConsent(
                consentId=_hex(r.consent_id),
                grantee=r.grantee,
                granteeName=c.member_names.get(r.grantee, ""),
                state=state(r),
                categories=c.category_keys.name_slots(caller, r.categories),
                purposes=[PURPOSES[int(x)].slug for x in purposes_of(r.purposes)],
                validFrom=r.valid_from,
                validUntil=r.valid_until,
                signer=r.signer,
                txHash=r.tx_hash,
            )
            for r in current
        ],
        history=[
            ConsentEvent(
                consentId=_hex(h.consent_id),
                event=h.kind,
                grantee=h.grantee,
                signer=h.signer,
                time=h.time,
                txHash=h.tx_hash,
            )
            for h in history
        ],
    )


@router.get("/access-log", responses=problems(400, 503))
def my_access_log(
    c: ComponentsDep,
    caller: CallerDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
    since: SinceQuery = None,
) -> AccessLog:
    """Who read which of my records, when, why — at every institution's gateway; emergency accesses flagged;
    each entry checked against the chain here (``verified``, ``verification``). Newest first, a page at a
    time: ``cursor`` (and the ``next`` link) give the following page, absent on the last one. A polling
    client sends the ``latest`` of its previous answer as ``since`` (Unix seconds, inclusive) and gets only
    the entries of that second or later: it drops the accessIds it has already seen."""
    history = access_history.network_page(c, caller, before=page_key(cursor), limit=limit, since=since)
    reasons = emergency_reasons.of_patient(c.db, caller)
    emergencies = read_model.emergencies_of(c.db, caller)
    following = encode_cursor(*history.next) if history.next is not None else None
    query = {"cursor": following, "limit": limit} | ({"since": since} if since is not None else {})
    return AccessLog(
        patient=caller,
        accesses=[AccessEntry.model_validate(e) for e in history.entries],
        cursor=following,
        next=f"/v1/me/access-log?{urlencode(query)}" if following else None,
        latest=int(history.entries[0]["time"]) if history.entries and cursor is None else since,
        unavailable=[UnavailableHolder.model_validate(u) for u in history.unavailable],
        emergencyWindows=[
            EmergencyWindow(
                accessId=_hex(e.access_id),
                member=e.member,
                memberName=c.member_names.get(e.member, ""),
                categories=c.category_keys.name_slots(caller, e.categories),
                reason=reasons.get(e.access_id),
                openedAt=e.time,
                validUntil=e.valid_until,
                txHash=e.tx_hash,
            )
            for e in emergencies
        ],
    )


@router.get(
    "/access-events",
    responses={
        **problems(401, 503),
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string", "description": "`access` events, data: an access log entry (JSON)"}
                }
            },
            "description": "one `access` event per new access",
        },
    },
    response_class=StreamingResponse,
)
async def my_access_events(request: Request, c: ComponentsDep, caller: CallerDep) -> StreamingResponse:
    """New accesses of my records as they are ledgered (server-sent events): each an ``access`` event whose
    data is the entry as the access log shows it and whose ``id`` resumes the stream (``Last-Event-ID``).
    A comment every ``sse_heartbeat`` seconds keeps proxies from closing an idle stream."""
    return access_stream(request, c, caller)


def access_stream(request: Request, c: Components, patient: str) -> StreamingResponse:
    """The event stream of ``patient``'s new accesses (the API's and the portal's)."""
    assert c.events is not None
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() else None
    events = c.events.follow(patient, after=after, heartbeat=c.settings.sse_heartbeat)

    async def body() -> AsyncIterator[str]:
        yield ": stream open\n\n"
        async for e in events:
            if e is None:
                yield ": keep-alive\n\n"
            else:
                yield f"id: {e.seq}\nevent: access\ndata: {json.dumps(e.payload, separators=(',', ':'))}\n\n"

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
