"""A patient's exports of what ``/v1/me`` shows her: her access history and her consents as CSV (for a
spreadsheet), printable HTML (for paper) and FHIR R4 (for her doctor's system), in her language.

The access history can be millions of entries long, so every export is streamed: the history is read a page
at a time (``access_history.network_page``, as ``/v1/me/access-log`` pages it) and written as it is read.
The first page is read before the response starts, so a refusal (catching up, chain down) is still a problem.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from gateway.api.deps import PAGE_LIMIT_MAX, CallerDep, ComponentsDep
from gateway.api.fhir import _RESOURCE, FHIR_JSON, consent_facts
from gateway.api.me import my_consents
from gateway.api.schemas import MyConsents, problems
from gateway.fhir import ledger as fhir_ledger
from gateway.services import access_history
from gateway.wiring import Components
from node_client.audit.html_report import ReportLanguage

__all__ = ["ExportLanguage", "access_log", "consents", "router"]

router = APIRouter(prefix="/v1/me/exports", tags=["patients"])

Format = Literal["csv", "html", "fhir"]
FormatQuery = Annotated[Format, Query(alias="format", description="csv (UTF-8 with BOM), html (printable) or fhir")]
LangQuery = Annotated[Literal["en", "zh-CN"], Query(description="the language of headers, labels and names")]
#: entries read per page of the history (each page is one read of every source, as /v1/me/access-log's)
PAGE_SIZE = PAGE_LIMIT_MAX
MEDIA = {"csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8", "fhir": FHIR_JSON}
SUFFIX = {"csv": "csv", "html": "html", "fhir": "fhir.json"}
_FILE = {"type": "string", "format": "binary"}
_FILES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file (Content-Disposition: attachment), streamed",
        "content": {
            MEDIA["csv"]: {"schema": _FILE},
            MEDIA["html"]: {"schema": _FILE},
            FHIR_JSON: {"schema": _RESOURCE},
        },
    }
}

#: key → (English, 中文): the exports' own words; the rest are the audit report's (ReportLanguage)
TEXT: dict[str, tuple[str, str]] = {
    "title_access-log": ("My access history", "我的病历访问记录"),
    "title_consents": ("My consents", "我的授权"),
    "consent_history": ("Consent history", "授权历史"),
    "col_time": ("Time", "时间"),
    "col_requester": ("Institution that read it", "访问机构"),
    "col_requester_address": ("Its address", "访问机构地址"),
    "col_category": ("Category", "数据类别"),
    "col_purpose": ("Purpose", "用途"),
    "col_emergency": ("Emergency", "紧急访问"),
    "col_reason": ("Emergency reason", "紧急访问理由"),
    "col_holder": ("Institution holding the record", "保存病历的机构"),
    "col_record": ("Record ID", "病历 ID"),
    "col_consent": ("Consent ID", "授权 ID"),
    "col_access": ("Access ID", "访问 ID"),
    "col_ledger": ("Ledger proof", "账本凭证"),
    "col_verification": ("Checked against the ledger", "账本核验"),
    "col_grantee": ("Institution granted", "被授权机构"),
    "col_grantee_address": ("Its address", "被授权机构地址"),
    "col_state": ("State", "状态"),
    "col_categories": ("Categories", "数据类别"),
    "col_purposes": ("Purposes", "用途"),
    "col_valid_from": ("Valid from", "生效时间"),
    "col_valid_until": ("Valid until", "有效期至"),
    "col_signer": ("Signed by", "签署人"),
    "col_tx": ("Transaction", "交易"),
    "col_event": ("Event", "事件"),
    "state_active": ("active", "有效"),
    "state_expired": ("expired", "已过期"),
    "state_not yet valid": ("not yet valid", "尚未生效"),
    "state_revoked": ("revoked", "已撤销"),
    "event_granted": ("granted", "授权"),
    "event_revoked": ("revoked", "撤销"),
    "check_chain_event": ("on the chain", "已上链"),
    "check_anchored_root": ("anchored on the chain", "已锚定上链"),
    "check_not_anchored_yet": ("not anchored yet", "尚未锚定"),
    "check_root_not_on_chain": ("unproven", "未能证实"),
    "check_proof_mismatch": ("altered", "已被篡改"),
    "journal_entry": ("journal entry #{n}", "日志条目 #{n}"),
    "for_patient": ("Patient: {patient}", "患者：{patient}"),
    # a blinded slot this gateway cannot name (no category key of the patient): the portal's words
    "slot_n": ("Protected category {n}", "受保护类别 {n}"),
}


@dataclass(frozen=True)
class ExportLanguage(ReportLanguage):
    """The audit report's language helpers (names, labels, local times) with the exports' words."""

    def t(self, key: str, **values: Any) -> str:
        if key not in TEXT:
            return super().t(key, **values)
        text = TEXT[key][1 if self.lang == "zh" else 0]
        return text.format(**values) if values else text

    def label(self, prefix: str, value: str) -> str:
        return self.t(f"{prefix}_{value}") if f"{prefix}_{value}" in TEXT else value

    def iso(self, ts: int) -> str:
        """ISO 8601 with the display time zone's offset (what a spreadsheet and a reader both take)."""
        return datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(self.tz)).isoformat(timespec="seconds")

    def category(self, value: Any) -> str:
        """The category's name, or for ``slot-N`` (a blinded slot not named here) "Protected category N"."""
        slot = str(value).removeprefix("slot-")
        return self.t("slot_n", n=slot) if slot != str(value) else super().category(value)

    def joined(self, values: Iterable[str], of: Callable[[str], str]) -> str:
        return ("、" if self.lang == "zh" else ", ").join(of(v) for v in values)


def _language(c: Components, lang: str) -> ExportLanguage:
    names = c.member_names.in_language(lang)
    return ExportLanguage("zh" if lang == "zh-CN" else "en", c.settings.display_timezone, names)


def _name(rl: ExportLanguage, address: str | None, fallback: str = "") -> str:
    return (rl.names.get(address) or fallback) if address else ""


# ---------------------------------------------------------------- the routes


def _response(body: Iterator[bytes], what: str, fmt: Format, patient: str) -> StreamingResponse:
    day = datetime.now(UTC).strftime("%Y%m%d")
    filename = f"{what}-{patient[:10].lower()}-{day}.{SUFFIX[fmt]}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
    return StreamingResponse(body, media_type=MEDIA[fmt], headers=headers)


@router.get("/access-log", responses=_FILES | problems(400, 503), response_class=StreamingResponse)
def access_log(
    c: ComponentsDep, caller: CallerDep, fmt: FormatQuery = "csv", lang: LangQuery = "en"
) -> StreamingResponse:
    """My whole access history (newest first), streamed as CSV, printable HTML or a FHIR Bundle of AuditEvent."""
    rl = _language(c, lang)
    pages = _pages(c, caller)
    if fmt == "csv":
        body = _csv(_access_header(rl), (_access_row(rl, e) for page in pages for e in page))
    elif fmt == "html":
        body = _access_html(rl, caller, pages)
    else:
        observer = f"HealthCode Ledger gateway {c.gateway_account.address}"
        events = (fhir_ledger.audit_events(page, caller, observer) for page in pages)
        body = fhir_ledger.streamed_collection(events, datetime.now(UTC).isoformat(timespec="seconds"))
    return _response(body, "access-log", fmt, caller)


@router.get("/consents", responses=_FILES | problems(400, 503), response_class=StreamingResponse)
def consents(
    c: ComponentsDep, caller: CallerDep, fmt: FormatQuery = "csv", lang: LangQuery = "en"
) -> StreamingResponse:
    """My consents with their state (and, in HTML, their history) as CSV, printable HTML or a FHIR Bundle of
    Consent."""
    rl = _language(c, lang)
    mine = my_consents(c, caller)
    if fmt == "csv":
        body = _csv(_consent_header(rl), (_consent_row(rl, x) for x in mine.consents))
    elif fmt == "html":
        body = _consent_html(rl, mine)
    else:
        now = c.ledger.client.block_timestamp()
        resources = [fhir_ledger.consent(f, now) for f in consent_facts(c, caller)]
        body = fhir_ledger.streamed_collection([resources], datetime.now(UTC).isoformat(timespec="seconds"))
    return _response(body, "consents", fmt, caller)


def _pages(c: Components, patient: str) -> Iterator[list[dict[str, Any]]]:
    """The history a page at a time; the first read now (its refusal is the answer), the rest as it streams."""
    first = access_history.network_page(c, patient, before=None, limit=PAGE_SIZE)

    def following(page: access_history.History) -> Iterator[list[dict[str, Any]]]:
        while True:
            yield page.entries
            if page.next is None:
                return
            page = access_history.network_page(c, patient, before=page.next, limit=PAGE_SIZE)

    return following(first)


# ---------------------------------------------------------------- CSV


def _csv(header: list[str], rows: Iterable[list[str]]) -> Iterator[bytes]:
    """UTF-8 with a byte-order mark (so Excel reads Chinese right), a line at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield "\ufeff".encode() + buffer.getvalue().encode()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        yield buffer.getvalue().encode()


ACCESS_COLUMNS = (
    *("time", "requester", "requester_address", "category", "purpose", "emergency", "reason"),
    *("holder", "record", "consent", "access", "ledger", "verification"),
)


def _access_header(rl: ExportLanguage) -> list[str]:
    return [rl.t(f"col_{k}") for k in ACCESS_COLUMNS]


def _ledger(rl: ExportLanguage, e: dict[str, Any]) -> str:
    ledger = e.get("ledger") or {}
    if ledger.get("txHash"):
        return str(ledger["txHash"])
    return rl.t("journal_entry", n=ledger["journalIndex"]) if ledger.get("journalIndex") is not None else ""


def _access_row(rl: ExportLanguage, e: dict[str, Any]) -> list[str]:
    return [
        rl.iso(int(e["time"])),
        _name(rl, e["requester"], e.get("requesterName") or ""),
        e["requester"],
        rl.category(e["category"]) if e.get("category") else "",
        rl.purpose(e["purpose"]),
        rl.t("yes" if e["emergency"] else "no"),
        e.get("emergencyReason") or "",
        _name(rl, e.get("holder"), e.get("holderName") or ""),
        e["recordId"],
        e["consentId"],
        e["accessId"],
        _ledger(rl, e),
        rl.label("check", str(e.get("verification") or "")),
    ]


CONSENT_COLUMNS = (
    *("grantee", "grantee_address", "state", "categories", "purposes", "valid_from", "valid_until"),
    *("signer", "consent", "tx"),
)


def _consent_header(rl: ExportLanguage) -> list[str]:
    return [rl.t(f"col_{k}") for k in CONSENT_COLUMNS]


def _consent_row(rl: ExportLanguage, x: Any) -> list[str]:
    return [
        _name(rl, x.grantee, x.granteeName),
        x.grantee,
        rl.label("state", x.state),
        rl.joined(x.categories, rl.category),
        rl.joined(x.purposes, rl.purpose),
        rl.iso(x.validFrom),
        rl.iso(x.validUntil),
        x.signer,
        x.consentId,
        x.txHash,
    ]


# ---------------------------------------------------------------- printable HTML

#: one page per section on paper; long ids wrap instead of widening the table
_STYLE = (
    "<style>body{font-family:system-ui,'Noto Sans CJK SC','PingFang SC',sans-serif;margin:2em;color:#111}"
    "table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border:1px solid #999;padding:.3em .5em;"
    "text-align:left;vertical-align:top;font-size:.85em}td.id{font-family:monospace;word-break:break-all;"
    "font-size:.75em}thead{display:table-header-group}tr{break-inside:avoid}.emergency{background:#fde2e2}"
    "@media print{body{margin:0}section{break-after:page}section:last-of-type{break-after:auto}"
    "@page{size:A4 landscape;margin:12mm}}</style>"
)


def _page_head(rl: ExportLanguage, title: str, patient: str) -> str:
    when = rl.when(int(datetime.now(UTC).timestamp()))
    return (
        f"<!doctype html><html lang='{'zh-CN' if rl.lang == 'zh' else 'en'}'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{_STYLE}</head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(rl.t('for_patient', patient=patient))}</p>"
        f"<p>{html.escape(rl.t('generated', when=when, tz=rl.tz))}</p>"
    )


def _table_head(rl: ExportLanguage, columns: Iterable[str]) -> str:
    return "<table><thead><tr>" + "".join(f"<th scope='col'>{rl.t('col_' + k)}</th>" for k in columns) + "</tr></thead>"


def _cells(values: list[str], ids: frozenset[int]) -> str:
    return "".join(
        f"<td class='id'>{html.escape(v)}</td>" if i in ids else f"<td>{html.escape(v)}</td>"
        for i, v in enumerate(values)
    )


def _access_html(rl: ExportLanguage, patient: str, pages: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    title = rl.t("title_access-log")
    yield (_page_head(rl, title, patient) + f"<section><h2>{html.escape(title)}</h2>").encode()
    yield _table_head(rl, ACCESS_COLUMNS).encode() + b"<tbody>"
    ids = frozenset({2, 8, 9, 10, 11})
    for page in pages:
        rows = (  # on paper the time as people write it; the CSV keeps ISO 8601 for spreadsheets
            f"<tr{' class=emergency' if e['emergency'] else ''}>"
            f"{_cells([rl.when(int(e['time'])), *_access_row(rl, e)[1:]], ids)}</tr>"
            for e in page
        )
        yield "".join(rows).encode()
    yield b"</tbody></table></section></body></html>"


def _consent_html(rl: ExportLanguage, mine: MyConsents) -> Iterator[bytes]:
    title = rl.t("title_consents")
    yield (_page_head(rl, title, mine.patient) + f"<section><h2>{html.escape(title)}</h2>").encode()
    rows = "".join(f"<tr>{_cells(_consent_row(rl, x), frozenset({1, 7, 8, 9}))}</tr>" for x in mine.consents)
    yield (_table_head(rl, CONSENT_COLUMNS) + f"<tbody>{rows}</tbody></table></section>").encode()
    history = rl.t("consent_history")
    yield (
        f"<section><h2>{html.escape(history)}</h2>".encode()
        + _table_head(rl, ("time", "event", "grantee", "signer", "consent", "tx")).encode()
    )
    rows = "".join(
        "<tr>"
        + _cells(
            [rl.when(h.time), rl.label("event", h.event), rl.member(h.grantee), h.signer, h.consentId, h.txHash],
            frozenset({3, 4, 5}),
        )
        + "</tr>"
        for h in reversed(mine.history)
    )
    yield f"<tbody>{rows}</tbody></table></section></body></html>".encode()
