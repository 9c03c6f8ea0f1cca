"""The portal: server-rendered pages for patients, institutions and auditors (Jinja2, zh-CN and en).

Pages read the same data as the JSON API (the ``/v1/me`` and discovery functions are called directly)
and are rendered on the server; a small script (``static/portal.js``) does what needs the user's key —
sign-in, EIP-712 consent signing, transaction signing, opening HPKE releases — inside the page.
Everything that changes state goes through the ``/v1`` API with a bearer token, exactly as any client.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from hexbytes import HexBytes
from pydantic import BaseModel, Field

from gateway.api import exports, me
from gateway.api.consents import _signed
from gateway.api.deps import ComponentsDep, SinceQuery
from gateway.api.models import SignedGrantIn
from gateway.api.records import discover
from gateway.portal import i18n, proof
from gateway.portal.session import (
    ROLE_PAGES,
    RolePage,
    Viewer,
    active_roles,
    clear,
    require_portal_post,
    require_viewer,
    store,
    viewer,
)
from gateway.problems import Problem
from gateway.storage import emergency_reasons, emergency_reviews, read_model
from gateway.wiring import Components
from node_client import healthcode as hc
from node_client._exceptions import ChainUnavailable
from node_client.reviews import StoredReview
from node_client.signing import REVIEW_VERDICTS, ConsentGrant
from node_client.vocabulary import CATEGORIES, PROVIDER_ROLES, PURPOSES, Role, roles_of

__all__ = ["STATIC_DIR", "router", "templates"]

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
#: served at ``/static`` (by :func:`gateway.app.create_app`): the portal's script and styles, and in ``vendor/``
#: what is bundled or copied from npm at install (ethers and HPKE for the portal, Swagger UI and ReDoc for /docs)
STATIC_DIR = HERE / "static"
router = APIRouter(include_in_schema=False)

MAX_PICTURE_BYTES = 10 * 1024 * 1024
log = logging.getLogger("hcl.gateway.portal")

#: Content-Security-Policy of every portal page: nothing from anywhere but the gateway itself.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def _formatter(c: Components) -> Callable[[int | float | None], str]:
    zone = ZoneInfo(c.settings.display_timezone)

    def dt(ts: int | float | None) -> str:
        if not ts:
            return "-"
        return datetime.fromtimestamp(int(ts), UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    return dt


def _short(a: str) -> str:
    return f"{a[:8]}…{a[-6:]}" if a and len(a) > 16 else a


def _render(
    request: Request, c: Components, name: str, status: int = 200, *, viewer: Viewer | None = None, **ctx: Any
) -> HTMLResponse:
    """A page or fragment; ``viewer`` is who the page acts as (shown in the header), never guessed."""
    lang = i18n.negotiate(request)
    v = viewer
    short = _short
    response = templates.TemplateResponse(
        request,
        name,
        {
            "lang": lang,
            "t": i18n.translator(lang),
            "js_messages": i18n.js_messages(lang),
            "dt": _formatter(c),
            "viewer": v,
            "viewer_name": c.member_names.name(v.address, lang) if v else "",
            "short": short,
            # an institution as this page's reader names it (name_zh / name_en), else its shortened address
            "member": lambda a: (c.member_names.name(a, lang) or short(a)) if a else "",
            "term": lambda t: t.zh if lang == "zh-CN" else t.en,
            # a category as the API names a patient's slot (slug, or "slot-N" without her key), labelled
            "category": i18n.category_term,
            "fhir_type": lambda rt: i18n.translator(lang)(f"fhir_{rt}") if rt in i18n.FHIR_TYPES else rt,
            "dev": c.ledger.dev,
            **ctx,
        },
        status_code=status,
    )
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, samesite="lax", path="/")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- pages


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/portal", status_code=303)


@router.get("/portal", response_class=HTMLResponse)
def index(request: Request, c: ComponentsDep) -> HTMLResponse:
    return _render(request, c, "index.html", page="index")


def _allowed(page: str, v: Viewer) -> bool:
    return {"patient": True, "hospital": v.is_provider, "auditor": v.is_auditor}[page]


def not_found(request: Request, c: Components) -> HTMLResponse:
    """The portal's own 404: a page in the reader's language rather than an API error."""
    return _render(request, c, "not_found.html", status=404, page="not-found")


@router.get("/portal/{page}", response_class=HTMLResponse)
def role_page(page: str, request: Request, c: ComponentsDep) -> HTMLResponse:
    """A role's page: the unlock panel, and its sections when a viewer allowed to see them is signed in
    *on this page* (each role page has its own session)."""
    if page not in ROLE_PAGES:
        return not_found(request, c)
    v = viewer(request, c, page)
    forbidden = v is not None and not _allowed(page, v)
    ctx = PAGE_DATA[page](c, v, i18n.negotiate(request)) if v is not None and not forbidden else {}
    return _render(request, c, "role_page.html", page=page, viewer=v, forbidden=forbidden, **ctx)


@router.get("/portal/{page}/sections", response_class=HTMLResponse)
def role_sections(page: str, request: Request, c: ComponentsDep) -> HTMLResponse:
    """The page's sections alone, for the script to swap in after sign-in or a change (no reload, so an
    unlocked key stays in the page)."""
    if page not in ROLE_PAGES:
        return not_found(request, c)
    v = require_viewer(request, c, page)
    if not _allowed(page, v):
        return _render(request, c, "forbidden.html", status=403, page=page, viewer=v)
    return _render(
        request, c, f"{page}_sections.html", page=page, viewer=v, **PAGE_DATA[page](c, v, i18n.negotiate(request))
    )


# ---------------------------------------------------------------- page data


def _providers(c: Components, lang: str) -> list[dict[str, Any]]:
    return [
        {
            "address": m.address,
            "name": c.member_names.name(m.address, lang) or m.address,
            "roles": roles_of(m.roles),
        }
        for m in read_model.active_members(c.db)
        if m.roles & int(PROVIDER_ROLES)
    ]


def _patient(c: Components, v: Viewer, lang: str) -> dict[str, Any]:
    c.indexer.require_complete()
    mine = me.my_records(c, v.address, limit=c.settings.portal_page_size)  # newest first; "more" pages on
    now = int(time.time())
    guardians = [
        {"address": g.guardian, "validUntil": g.valid_until, "current": g.valid_until > now}
        for g in read_model.guardians_of(c.db, v.address)
    ]
    wards = [  # her current wards: their consents (revocable) and latest accesses, and codes made for them
        {
            "address": w.patient,
            "consents": me.my_consents(c, w.patient).consents,
            "access": me.my_access_log(c, w.patient, limit=10),
        }
        for w in read_model.wards_of(c.db, v.address)
        if w.valid_until > now
    ]
    consents = me.my_consents(c, v.address)
    return {
        "mine": mine,
        "purpose_of": {t.slug: t for t in PURPOSES},
        "categories": CATEGORIES,
        "purposes": PURPOSES,
        "providers": _providers(c, lang),
        "consents": consents.consents,
        "access": me.my_access_log(c, v.address),
        "guardians": guardians,
        "wards": wards,
        "opted_out": read_model.opted_out(c.db, v.address),
    }


def _hospital(c: Components, v: Viewer, lang: str) -> dict[str, Any]:
    return {
        "category_labels": {t.slug: t.zh if lang == "zh-CN" else t.en for t in CATEGORIES},
        "emergency_categories": [t for t in CATEGORIES if t.emergency_safe],
        "can_break_glass": bool(v.roles & int(Role.EMERGENCY)),
        "purposes": PURPOSES,
    }


def _report_dir(c: Components) -> Path:
    return c.settings.audit_reports_dir or c.settings.data_dir / "audit"


def _reports(c: Components) -> list[dict[str, Any]]:
    import orjson

    base = _report_dir(c)
    out = []
    if base.is_dir():
        for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            if (d / "report.html").is_file():
                verdict = None
                try:
                    data = orjson.loads((d / "report.json").read_bytes())
                    verdict = data.get("verdict") or data.get("summary", {}).get("verdict")
                except Exception:  # noqa: BLE001 - a report being written, or another tool's: list it anyway
                    pass
                out.append({"name": d.name, "verdict": verdict, "time": int(d.stat().st_mtime)})
    return out


def _review_view(r: StoredReview, anchored: int) -> dict[str, Any]:
    """A kept review as the auditor page shows it; ``anchored``: its root is on chain."""
    m = r.review
    return {
        "verdict": m.verdict,
        "note": r.note,
        "reviewer": m.reviewer,
        "time": m.reviewed_at,
        "anchored": r.idx < anchored,
    }


def _auditor(c: Components, v: Viewer, lang: str) -> dict[str, Any]:
    c.indexer.require_complete()
    per_member: Counter[str] = Counter(read_model.access_counts(c.db))
    journal_size = c.journal.size if c.journal is not None else 0
    if c.journal_index is not None:
        per_member.update(c.journal_index.requester_counts())
    reasons = emergency_reasons.every(c.db)
    reviewed = emergency_reviews.reviewed(c.db)
    anchored = max((a[0] for a in emergency_reviews.anchors(c.db)), default=0)
    emergencies = [
        {
            "accessId": "0x" + e.access_id.hex(),
            "patient": e.patient,
            "member": e.member,
            "memberName": c.member_names.name(e.member, lang),
            "time": e.time,
            "validUntil": e.valid_until,
            "reason": reasons.get(e.access_id),
            "txHash": e.tx_hash,
            "categories": [i18n.category_term(n) for n in c.category_keys.name_slots(e.patient, e.categories)],
            "reviews": [_review_view(r, anchored) for r in reviewed.get(e.access_id, [])],
            "mine": any(r.review.reviewer.lower() == v.address.lower() for r in reviewed.get(e.access_id, [])),
        }
        for e in read_model.emergencies(c.db)
    ]
    totals = read_model.counts(c.db)
    return {
        "stats": {
            "members": totals.active_members,
            "consents_count": totals.consents_granted,
            "records_count": totals.records,
            "strict_accesses": totals.accesses,
            "journal_entries": journal_size,
            "anchors": totals.anchors,
        },
        "emergencies": emergencies,
        "unreviewed": sum(1 for e in emergencies if not e["reviews"]),
        "verdicts": REVIEW_VERDICTS,
        "can_review": bool(v.roles & int(Role.AUDITOR)),
        "per_member": [
            {"address": a, "name": c.member_names.name(a, lang), "count": n} for a, n in per_member.most_common()
        ],
        "reports": _reports(c),
        "reports_dir": _report_dir(c),
    }


#: what each role page shows (computed only for a viewer allowed to see it)
PAGE_DATA: dict[str, Callable[[Components, Viewer, str], dict[str, Any]]] = {
    "patient": _patient,
    "hospital": _hospital,
    "auditor": _auditor,
}


# ---------------------------------------------------------------- session


class SessionIn(BaseModel):
    token: str = Field(max_length=1024)
    page: RolePage


class LogoutIn(BaseModel):
    page: RolePage


@router.post("/portal/session")
def open_session(body: SessionIn, request: Request, c: ComponentsDep) -> JSONResponse:
    """Keeps a bearer token (from ``/v1/auth/token``) in the HttpOnly cookie of the page that signed in."""
    require_portal_post(request)
    address = c.auth.verify(body.token)
    v = Viewer(address, active_roles(c, address))
    response = JSONResponse(
        {
            "address": address,
            "name": c.member_names.name(address, i18n.negotiate(request)),
            "page": body.page,
            "roles": roles_of(v.roles),
            "home": v.home,
        }
    )
    store(response, request, body.page, body.token, c.settings.token_ttl)
    return response


@router.post("/portal/logout")
def close_session(body: LogoutIn, request: Request) -> Response:
    """Signs one page out; the other role pages keep their own sessions."""
    require_portal_post(request)
    response = JSONResponse({"signedOut": True, "page": body.page})
    clear(response, body.page)
    return response


# ---------------------------------------------------------------- patient helpers


class DraftIn(BaseModel):
    """What the patient (or her guardian, naming her as ``patient``) picked in the health-code form."""

    kind: str = Field("grant", pattern="^(grant|revoke)$")
    patient: str | None = Field(None, max_length=64)
    grantee: str = Field(max_length=64)
    categories: list[str] = Field(default_factory=list, max_length=32)
    purposes: list[str] = Field(default_factory=list, max_length=16)
    validDays: int = Field(30, ge=1, le=3650)
    deadlineHours: int = Field(24, ge=1, le=24 * 30)


@router.post("/portal/patient/draft")
def draft(body: DraftIn, request: Request, c: ComponentsDep) -> dict[str, Any]:
    """The EIP-712 typed data of the patient's grant (or revoke), with the pair's current nonce: hers, or her
    ward's when a guardian names the ward as ``patient`` (a current guardian: the chain says, AccessPolicy.speaks_for).

    The page signs exactly this with the signer's key; the gateway never sees the key.
    """
    from node_client.signing import ConsentRevoke, typed_data
    from node_client.vocabulary import parse_categories, parse_purposes

    require_portal_post(request)
    v = require_viewer(request, c, "patient")
    if not is_address(body.grantee) or (body.patient is not None and not is_address(body.patient)):
        raise Problem("invalid_request", "grantee or patient is not an address")
    grantee = to_checksum_address(body.grantee)
    patient = to_checksum_address(body.patient or v.address)
    if not c.policy.speaks_for(v.address, patient):
        raise Problem("not_patient", "only the patient or her current guardian signs her consents")
    try:
        # the chain's clock only moves when a block is mined: an idle dev chain's last block can be minutes old
        now = max(c.ledger.client.block_timestamp(), int(time.time()))
        deadline = now + body.deadlineHours * 3600
        message: ConsentGrant | ConsentRevoke
        if body.kind == "revoke":
            message = c.ledger.consents.build_revoke(patient, grantee, deadline=deadline)
        else:
            try:
                cats = parse_categories(",".join(body.categories))
                purps = parse_purposes(",".join(body.purposes))
            except ValueError as exc:
                raise Problem("invalid_request", str(exc)) from None
            if not cats or not purps:
                raise Problem("invalid_request", "pick at least one category and one purpose")
            # the chain keeps the patient's slots: her key is needed (she handed it over at sign-in)
            slots = c.category_keys.require(patient).slots(cats)
            message = c.ledger.consents.build_grant(
                patient, grantee, slots, purps, now, now + body.validDays * 86400, deadline=deadline
            )
        domain = c.ledger.consents.domain()
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    typed = typed_data(domain, message)
    return {"typedData": typed, "type": message.primary_type, "message": typed["message"]}


@router.post("/portal/patient/health-code", response_class=HTMLResponse)
def make_code(body: SignedGrantIn, request: Request, c: ComponentsDep) -> HTMLResponse:
    """The health code of a grant the patient just signed in the page: QR on screen, PNG and SVG."""
    require_portal_post(request)
    v = require_viewer(request, c, "patient")
    signed = _signed(c, body)  # checked against the contract's domain, which it has read
    domain = c.ledger.consents.domain()
    key = _carried_key(c, v, body)
    text = hc.encode(signed, domain, category_key=key)
    code = hc.qr(text)
    names = c.member_names.in_language(i18n.negotiate(request))
    summary = hc.summary(signed, domain, category_key=key, members=names)
    return _render(
        request,
        c,
        "code_ready.html",
        viewer=v,
        text=text,
        version=code.version,
        svg_uri=code.svg_data_uri(scale=6, border=4, title="Health code / 健康码"),
        png_uri=code.png_data_uri(scale=8, border=4),
        summary=summary,
    )


def _carried_key(c: Components, v: Viewer, body: SignedGrantIn) -> bytes | None:
    """The patient's category-key signature her code carries: hers from her sign-in, sent with the grant
    (checked and kept here); in a code her current guardian signs, the one this gateway holds for her."""
    patient = body.message.patient
    if body.signer.lower() != patient.lower():
        guardian = body.signer.lower() == v.address.lower() and c.policy.speaks_for(v.address, patient)
        return c.category_keys.signature(patient) if guardian else None
    if body.categoryKey is None:
        return None
    key = bytes.fromhex(body.categoryKey[2:])
    c.category_keys.learn(patient, key)
    return key


# ---------------------------------------------------------------- hospital helpers


def _code_problem(request: Request, exc: hc.HealthCodeError) -> Problem:
    """A code that cannot be read, said in the page's language (the English detail stays in the log)."""
    log.info("health code refused: %s", exc)
    t = i18n.translator(i18n.negotiate(request))
    reason = f"hc_{exc.kind}" if f"hc_{exc.kind}" in i18n.MESSAGES else "hc_other"
    return Problem("invalid_request", f"{t('hc_invalid')}{t('colon')}{t(reason)}")


@router.post("/portal/hospital/preview", response_class=HTMLResponse)
async def preview(
    request: Request,
    c: ComponentsDep,
    picture: Annotated[UploadFile | None, File()] = None,
    text: Annotated[str, Form(max_length=4096)] = "",
) -> HTMLResponse:
    """What a scanned or pasted health code says, checked against the ledger, before submitting."""
    require_portal_post(request)
    v = require_viewer(request, c, "hospital")
    code_text = text.strip()
    if picture is not None and picture.filename:
        data = await picture.read(MAX_PICTURE_BYTES + 1)
        if len(data) > MAX_PICTURE_BYTES:
            raise Problem("payload_too_large", f"pictures up to {MAX_PICTURE_BYTES} bytes")
        try:
            code_text = hc.read_image(data)
        except hc.HealthCodeError as exc:
            raise _code_problem(request, exc) from None
    if not code_text:
        raise Problem("invalid_request", i18n.translator(i18n.negotiate(request))("hc_missing"))
    try:
        code = hc.decode(code_text)
        signed, domain, carried = code.signed, code.domain, code.category_key
        names = c.member_names.in_language(i18n.negotiate(request))
        summary = hc.summary(signed, domain, category_key=code.category_key, ledger=c.ledger, members=names)
    except hc.HealthCodeError as exc:
        raise _code_problem(request, exc) from None
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    if carried is not None:
        c.category_keys.learn(summary.patient, carried)  # shown to this institution: the patient hands it over
    mask = signed.message.categories if isinstance(signed.message, ConsentGrant) else 0
    payload = signed.as_dict()
    consent_id = None
    if summary.kind == "revoke" and summary.ledger_matches:
        try:
            consent_id = "0x" + c.ledger.consents.consent_of(summary.patient, summary.grantee).consent_id.hex()
        except ChainUnavailable as exc:
            raise Problem("chain_unavailable", str(exc)) from exc
    return _render(
        request,
        c,
        "code_preview.html",
        viewer=v,
        summary=summary,
        payload={"payload": payload, "consentId": consent_id},
        for_me=summary.grantee == v.address,
        categories=[i18n.category_term(n) for n in c.category_keys.name_slots(summary.patient, mask)],
        term=lambda tv: tv.zh if i18n.negotiate(request) == "zh-CN" else tv.en,
    )


@router.get("/portal/patient/access-log", response_class=HTMLResponse)
def patient_access_page(
    request: Request, c: ComponentsDep, cursor: str | None = None, since: SinceQuery = None
) -> HTMLResponse:
    """The timeline's next page (the button under it asks for it), or what came ``since`` (a live event
    asks for its entry, rendered as the timeline renders it): one page, never the whole history."""
    v = require_viewer(request, c, "patient")
    return _render(
        request,
        c,
        "access_page.html",
        viewer=v,
        access=me.my_access_log(c, v.address, cursor=cursor, since=since),
        purpose_of={t.slug: t for t in PURPOSES},
    )


@router.get("/portal/patient/exports/{what}")
def patient_export(
    what: Literal["access-log", "consents"], request: Request, c: ComponentsDep, fmt: exports.FormatQuery = "csv"
) -> StreamingResponse:
    """The patient's download links: the ``/v1/me/exports`` files of the signed-in patient, in the page's language."""
    v = require_viewer(request, c, "patient")
    c.indexer.require_complete()
    export = exports.access_log if what == "access-log" else exports.consents
    return export(c, v.address, fmt, "en" if i18n.negotiate(request) == "en" else "zh-CN")


@router.get("/portal/patient/access-events", include_in_schema=False)
async def patient_access_events(request: Request, c: ComponentsDep) -> StreamingResponse:
    """The patient page's live timeline: ``GET /v1/me/access-events`` for the signed-in patient's cookie
    (an ``EventSource`` cannot send a bearer token)."""
    v = require_viewer(request, c, "patient")
    return me.access_stream(request, c, v.address)


@router.get("/portal/patient/records", response_class=HTMLResponse)
def patient_records(request: Request, c: ComponentsDep, cursor: str) -> HTMLResponse:
    """The next page of the signed-in patient's records, as rows (the "more records" button asks for it)."""
    v = require_viewer(request, c, "patient")
    c.indexer.require_complete()
    mine = me.my_records(c, v.address, cursor=cursor, limit=c.settings.portal_page_size)
    return _render(request, c, "patient_records_more.html", viewer=v, mine=mine)


@router.get("/portal/hospital/records", response_class=HTMLResponse)
def hospital_records(
    request: Request, c: ComponentsDep, patient: str, purpose: str = "treatment", cursor: str | None = None
) -> HTMLResponse:
    """The patient's records this institution may read now (the discovery API, as a table): the first page,
    or with ``cursor`` the following one's rows (the "more records" button under the table asks for it)."""
    v = require_viewer(request, c, "hospital")
    found = discover(patient, c, v.address, purpose=purpose, cursor=cursor, limit=c.settings.portal_page_size)
    template = "hospital_records_more.html" if cursor else "hospital_records.html"
    return _render(request, c, template, viewer=v, found=found)


# ---------------------------------------------------------------- ledger links and reports


@router.get("/portal/tx/{tx_hash}", response_class=HTMLResponse)
def transaction(tx_hash: str, request: Request, c: ComponentsDep) -> HTMLResponse:
    """One ledger transaction, decoded: what a patient's "ledger proof" link opens."""
    raw = tx_hash.removeprefix("0x")
    if len(raw) != 64 or any(ch not in "0123456789abcdefABCDEF" for ch in raw):
        raise Problem("invalid_request", "a transaction hash is 32 bytes of hex")
    client = c.ledger.client
    try:
        receipt = client.rpc(lambda: client.w3.eth.get_transaction_receipt(HexBytes("0x" + raw)))
    except ChainUnavailable as exc:
        raise Problem("chain_unavailable", str(exc)) from exc
    except Exception:  # noqa: BLE001 - an unknown transaction is a 404 page, whatever the node says
        receipt = None
    if receipt is None:
        return _render(request, c, "tx.html", status=404, tx_hash="0x" + raw, receipt=None, events=[])
    events = []
    for contract in (c.ledger.members, c.ledger.consents, c.ledger.records, c.ledger.access):
        for log in receipt["logs"]:
            if to_checksum_address(log["address"]) != contract.address:
                continue
            for ev in contract.contract.all_events():
                try:
                    decoded = ev.process_log(log)
                except Exception:  # noqa: BLE001 - a log this contract cannot decode is skipped
                    continue
                events.append(
                    {
                        "contract": type(contract).__name__,
                        "event": decoded["event"],
                        "args": {k: _show(v) for k, v in decoded["args"].items()},
                        "raw": dict(decoded["args"]),
                    }
                )
                break
    block = client.rpc(lambda: client.w3.eth.get_block(receipt["blockNumber"]))
    lang = i18n.negotiate(request)
    t, dt = i18n.translator(lang), _formatter(c)
    for e in events:
        e["facts"] = proof.facts(c, e["raw"], lang, t, dt)
    verified, sentence = proof.verdict(receipt, events, t)
    return _render(
        request,
        c,
        "tx.html",
        tx_hash="0x" + raw,
        receipt=receipt,
        events=events,
        block_time=int(block["timestamp"]),
        sender=receipt["from"],
        verified=verified,
        verdict=sentence,
    )


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)


@router.get("/portal/reports/{name}/{filename}")
def report_file(name: str, filename: str, request: Request, c: ComponentsDep) -> FileResponse:
    """A file of an ``hcl audit replay`` output folder (auditors and regulators only, signed in on the
    auditor page)."""
    v = require_viewer(request, c, "auditor")
    if not v.is_auditor:
        raise Problem("wrong_role", "audit reports are for auditors and regulators")
    base = _report_dir(c).resolve()
    path = (base / name / filename).resolve()
    if path.parent.parent != base or not path.is_file() or filename.startswith("."):
        raise Problem("not_found", "no such report file")
    return FileResponse(path)


@router.get("/portal/{rest:path}", response_class=HTMLResponse)
def portal_not_found(rest: str, request: Request, c: ComponentsDep) -> HTMLResponse:
    """Any other portal address: the localized 404 page (declared last, so every real route wins)."""
    return not_found(request, c)
