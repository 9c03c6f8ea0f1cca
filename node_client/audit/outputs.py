"""The audit's outputs: ``report.json`` (machines), ``accesses.csv`` (spreadsheets), ``report.html`` (a person)
and ``audit-events.json`` (a FHIR R4 Bundle of AuditEvent)."""

from __future__ import annotations

import csv
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from node_client.audit.html_report import ReportLanguage, render
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


def write_outputs(
    report: AuditReport, folder: Path, *, detail: str = "all", language: ReportLanguage | None = None
) -> dict[str, Path]:
    """Writes ``report.json`` (machine), ``accesses.csv`` (spreadsheets), ``report.html`` (a person, in
    ``language``: English by default) and ``audit-events.json`` (a FHIR R4 Bundle of AuditEvent) into
    ``folder``; returns the paths.

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
    paths["html"].write_text(render(report, language or ReportLanguage()), encoding="utf-8")
    paths["fhir"].write_bytes(orjson.dumps(_fhir_bundle(report, rows), option=orjson.OPT_INDENT_2))
    return paths


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
