"""The audit's outputs: ``report.json`` (machines), ``accesses.csv`` (spreadsheets), ``report.html`` (a person)
and ``audit-events.json`` (a FHIR R4 Bundle of AuditEvent)."""

from __future__ import annotations

import csv
import html
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from node_client.audit.model import AccessRow, AuditReport, detail_rows

__all__ = ["write_outputs"]

_CSV_FIELDS = [
    "time",
    "time_iso",
    "source",
    "status",
    "kinds",
    "requester",
    "requester_name",
    "patient",
    "record_id",
    "category",
    "purpose",
    "consent_id",
    "emergency",
    "access_hash",
    "block",
    "tx_hash",
    "entry_index",
    "anchored",
    "gateway",
    "gateway_name",
    "state_block",
]


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def write_outputs(report: AuditReport, folder: Path, *, detail: str = "all") -> dict[str, Path]:
    """Writes ``report.json`` (machine), ``accesses.csv`` (spreadsheets), ``report.html`` (a person)
    and ``audit-events.json`` (a FHIR R4 Bundle of AuditEvent) into ``folder``; returns the paths.

    ``detail="issues"`` lists per access only those that are not ``ok`` (anomalous, for review,
    pending) in the JSON, CSV and FHIR outputs; summaries and the HTML tables still count every
    access. It exists for ledgers of millions of accesses, whose full per-access outputs run to
    gigabytes (a FHIR AuditEvent is ~1.5 kB) and take minutes to write.
    """
    rows = detail_rows(report, detail)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "report.json",
        "csv": folder / "accesses.csv",
        "html": folder / "report.html",
        "fhir": folder / "audit-events.json",
    }
    paths["json"].write_bytes(orjson.dumps(report.to_json(detail), option=orjson.OPT_INDENT_2))
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for r in rows:
            d = r.to_json()
            d["kinds"] = ";".join(r.kinds)
            d["time_iso"] = _iso(r.time)
            w.writerow({k: d.get(k) for k in _CSV_FIELDS})
    paths["html"].write_text(_html(report), encoding="utf-8")
    paths["fhir"].write_bytes(orjson.dumps(_fhir_bundle(report, rows), option=orjson.OPT_INDENT_2))
    return paths


# ---------------------------------------------------------------------------------------- HTML

_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
    "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.9em}"
    ".error{background:#fde2e2}.review{background:#fff4d6}.ok{color:#176f2c}.bad{color:#b00020}"
    "code{font-size:.85em}</style></head><body>"
)


def _html(report: AuditReport) -> str:
    e = html.escape
    s = report.summary
    verdict = "CLEAN" if report.exit_code == 0 else "ANOMALIES FOUND"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>HealthCode Ledger audit</title>",
        _STYLE,
        "<h1>HealthCode Ledger audit</h1>",
        f"<p>Chain {report.chain_id}, blocks {report.from_block}–{report.to_block}, generated {e(report.generated_at)}.</p>",
        f"<h2 class='{'ok' if report.exit_code == 0 else 'bad'}'>{verdict}</h2>",
        "<table><tr><th>accesses</th><th>ok</th><th>review</th><th>anomalous</th><th>pending</th>"
        "<th>errors</th><th>journal entries</th><th>anchors</th></tr>",
        f"<tr><td>{s['accesses']}</td><td>{s['accesses_ok']}</td><td>{s['accesses_review']}</td>"
        f"<td>{s['accesses_anomalous']}</td><td>{s['accesses_pending']}</td><td>{s['errors']}</td>"
        f"<td>{s['journal_entries']}</td><td>{s['anchors']}</td></tr></table>",
        "<h2>Anomalies</h2>",
    ]
    parts += _html_anomalies(report)
    parts += _html_gateways(report)
    for title, key in (("Per institution", "requester"), ("Per patient", "patient")):
        parts += _html_groups(report, title, key)
    parts += _html_timeline(report)
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_anomalies(report: AuditReport) -> list[str]:
    e = html.escape
    if not report.anomalies:
        return ["<p class='ok'>None.</p>"]
    parts = ["<table><tr><th>severity</th><th>kind</th><th>message</th><th>evidence</th></tr>"]
    for a in sorted(report.anomalies, key=lambda a: a.severity != "error"):
        ev = "<br>".join(f"{e(str(k))}: <code>{e(str(v))}</code>" for k, v in a.evidence.items() if v is not None)
        parts.append(
            f"<tr class='{a.severity}'><td>{a.severity}</td><td>{e(a.kind)}</td><td>{e(a.message)}</td><td>{ev}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _html_gateways(report: AuditReport) -> list[str]:
    """Per gateway: whose journal was given (and how it was recognised), its anchors, its accesses."""
    e = html.escape
    by_gw: dict[str, dict[str, Any]] = report.summary.get("by_gateway") or {}
    if not by_gw:
        return []
    how = {j["gateway"]: j["matched_by"] for j in report.summary.get("journals") or [] if j.get("gateway")}
    parts = [
        "<h2>Per gateway</h2><table><tr><th>gateway</th><th>journal</th><th>anchors</th><th>strict</th>"
        "<th>journal entries</th><th>ok</th><th>review</th><th>anomalous</th><th>pending</th></tr>"
    ]
    for g, c in by_gw.items():
        label = (g or "(none)") + (f" ({c['name']})" if c.get("name") else "")
        journal = f"{c['journal_file']} ({how.get(g, '')})" if c.get("journal_file") else ""
        journal = journal or ("not given" if c["anchors"] else "")  # no anchors: a strict-mode gateway
        counts = "".join(
            f"<td>{c[k]}</td>" for k in ("anchors", "strict", "journal", "ok", "review", "anomaly", "pending")
        )
        parts.append(f"<tr><td>{e(label)}</td><td>{e(journal)}</td>{counts}</tr>")
    parts.append("</table>")
    return parts


def _html_groups(report: AuditReport, title: str, key: str) -> list[str]:
    """Accesses per institution (``key="requester"``) or per patient, by status."""
    e = html.escape
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for r in report.accesses:
        label = r.requester + (f" ({r.requester_name})" if key == "requester" and r.requester_name else "")
        groups[label if key == "requester" else r.patient][r.status] += 1
    parts = [
        f"<h2>{title}</h2><table><tr><th>{key}</th><th>accesses</th><th>ok</th><th>review</th>"
        "<th>anomalous</th><th>pending</th></tr>"
    ]
    for label, c in sorted(groups.items()):
        parts.append(
            f"<tr><td>{e(label)}</td><td>{sum(c.values())}</td><td>{c['ok']}</td><td>{c['review']}</td>"
            f"<td>{c['anomaly']}</td><td>{c['pending']}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _html_timeline(report: AuditReport) -> list[str]:
    by_hour: Counter[str] = Counter(_iso(r.time)[:13] for r in report.accesses)
    if not by_hour:
        return []
    top = max(by_hour.values())
    parts = ["<h2>Accesses over time (per hour)</h2><table>"]
    for hour, count in sorted(by_hour.items()):
        bar = "█" * max(1, round(40 * count / top))
        parts.append(f"<tr><td>{html.escape(hour)}:00Z</td><td>{count}</td><td>{bar}</td></tr>")
    parts.append("</table>")
    return parts


# ---------------------------------------------------------------------------------------- FHIR

#: the namespace of the AuditEvent ids: uuid5(namespace, access hash) names one access, on every rerun
_AUDIT_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hcl:audit-event")

#: the project's purposes in HL7 v3 PurposeOfUse (the extensible binding of AuditEvent.purposeOfEvent)
_V3_PURPOSE = {
    "treatment": ("TREAT", "treatment"),
    "emergency": ("ETREAT", "emergency treatment"),
    "referral": ("TREAT", "treatment"),  # referral and result recognition serve the patient's care
    "care-coordination": ("COC", "coordination of care"),
    "research": ("HRESCH", "healthcare research"),
    "payment": ("HPAYMT", "healthcare payment"),
    "public-health": ("PUBHLTH", "public health"),
}


def _event_ids(rows: list[AccessRow]) -> list[str]:
    """UUIDs that stay the same for the same accesses (derived from their hashes), so reruns give the same
    Bundle; a hash seen again (a replayed entry in a tampered journal) gets its occurrence number too."""
    seen: Counter[str] = Counter()
    ids = []
    for r in rows:
        key = r.access_hash or f"{r.source}:{r.tx_hash}:{r.entry_index}"
        seen[key] += 1
        ids.append(str(uuid.uuid5(_AUDIT_NS, key if seen[key] == 1 else f"{key}#{seen[key]}")))
    return ids


def _purpose(purpose: str) -> dict[str, Any]:
    """The local purpose code, and the v3 PurposeOfUse one beside it when there is one."""
    coding = [{"system": "urn:hcl:purpose", "code": purpose or "unknown"}]
    if v3 := _V3_PURPOSE.get(purpose):
        coding.insert(
            0, {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": v3[0], "display": v3[1]}
        )
    return {"coding": coding}


def _pruned(value: Any) -> Any:
    """``value`` without empty strings, objects or arrays (FHIR JSON forbids them), e.g. a tampered entry's
    unknown category."""
    if isinstance(value, dict):
        return {k: p for k, v in value.items() if (p := _pruned(v)) not in ("", {}, [], None)}
    if isinstance(value, list):
        return [p for v in value if (p := _pruned(v)) not in ("", {}, [], None)]
    return value


def _audit_event(event_id: str, r: AccessRow) -> dict[str, Any]:
    """One patient-read ``AuditEvent`` (IHE BALP style): outcome 0 = authorized, 4 = anomalous."""
    ev: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}],
        "action": "R",
        "recorded": _iso(r.time),
        "outcome": "4" if r.status == "anomaly" else "0",
        "purposeOfEvent": [_purpose(r.purpose)],
        "agent": [
            {
                "who": {
                    "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:ethereum:{r.requester}"},
                    "display": r.requester_name or r.requester,
                },
                "requestor": True,
            }
        ],
        "source": {
            "observer": {"display": "HealthCode Ledger auditor"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
        "entity": [
            {
                "what": {"identifier": {"value": f"urn:ethereum:{r.patient}"}},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
            },
            {"what": {"identifier": {"value": r.record_id}}, "description": r.category},
            {"what": {"identifier": {"value": r.consent_id}}, "description": "emergency" if r.emergency else "consent"},
        ],
    }
    if r.gateway:  # the gateway that ledgered the release (sent logAccess, or journaled it)
        who = {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:ethereum:{r.gateway}"}}
        ev["agent"].append({"who": {**who, "display": r.gateway_name or r.gateway}, "requestor": False})
    if r.kinds:
        ev["outcomeDesc"] = ", ".join(r.kinds)
    pruned: dict[str, Any] = _pruned(ev)
    return pruned


def _fhir_bundle(report: AuditReport, rows: Iterable[AccessRow]) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` (collection) of ``AuditEvent`` resources, one per access, with the consent as an
    entity."""
    rows = list(rows)
    items = [
        {"fullUrl": f"urn:uuid:{i}", "resource": _audit_event(i, r)}
        for i, r in zip(_event_ids(rows), rows, strict=True)
    ]
    return {"resourceType": "Bundle", "type": "collection", "timestamp": report.generated_at, "entry": items}
