"""What a patient sees about themselves, derived from chain events (what an auditor would see)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter

from gateway.api.deps import CallerDep, ComponentsDep, CursorQuery, LimitQuery, page_key
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
from node_client.contracts import ConsentStatus
from node_client.paging import encode_cursor
from node_client.vocabulary import CATEGORIES, PURPOSES, categories_of, purposes_of

router = APIRouter(prefix="/v1/me", tags=["patients"])


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


@router.get("/records", responses=problems(503))
def my_records(c: ComponentsDep, caller: CallerDep) -> MyRecords:
    """My records: category, provider, when registered, status."""
    return MyRecords(
        patient=caller,
        records=[
            MyRecord(
                recordId=_hex(r.record_id),
                category=CATEGORIES[r.category].slug,
                provider=r.provider,
                providerName=c.member_names.get(r.provider, ""),
                status=r.status,
                registeredAt=r.time,
                txHash=r.tx_hash,
            )
            for r in read_model.records_of(c.db, caller)
        ],
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
                categories=[CATEGORIES[int(x)].slug for x in categories_of(r.categories)],
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
def my_access_log(c: ComponentsDep, caller: CallerDep, cursor: CursorQuery = None, limit: LimitQuery = 50) -> AccessLog:
    """Who read which of my records, when, why — at every institution's gateway; emergency accesses flagged;
    each entry checked against the chain here (``verified``, ``verification``). Newest first, a page at a
    time: ``cursor`` (and the ``next`` link) give the following page, absent on the last one."""
    history = access_history.network_page(c, caller, before=page_key(cursor), limit=limit)
    reasons = emergency_reasons.of_patient(c.db, caller)
    emergencies = read_model.emergencies_of(c.db, caller)
    following = encode_cursor(*history.next) if history.next is not None else None
    return AccessLog(
        patient=caller,
        accesses=[AccessEntry.model_validate(e) for e in history.entries],
        cursor=following,
        next=f"/v1/me/access-log?{urlencode({'cursor': following, 'limit': limit})}" if following else None,
        unavailable=[UnavailableHolder.model_validate(u) for u in history.unavailable],
        emergencyWindows=[
            EmergencyWindow(
                accessId=_hex(e.access_id),
                member=e.member,
                memberName=c.member_names.get(e.member, ""),
                categories=[CATEGORIES[int(x)].slug for x in categories_of(e.categories)],
                reason=reasons.get(e.access_id),
                openedAt=e.time,
                validUntil=e.valid_until,
                txHash=e.tx_hash,
            )
            for e in emergencies
        ],
    )
