"""The audit's outputs: ``report.json`` (machines), ``accesses.csv`` (spreadsheets), ``report.html`` (a person)
and ``audit-events.json`` (a FHIR R4 Bundle of AuditEvent)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from node_client.audit.fhir import audit_event, event_ids
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


def _fhir_bundle(report: AuditReport, rows: Iterable[AccessRow]) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` (collection) of ``AuditEvent`` resources, one per access, with the consent as an
    entity."""
    rows = list(rows)
    items = [
        {"fullUrl": f"urn:uuid:{i}", "resource": audit_event(i, r)} for i, r in zip(event_ids(rows), rows, strict=True)
    ]
    return {"resourceType": "Bundle", "type": "collection", "timestamp": report.generated_at, "entry": items}
