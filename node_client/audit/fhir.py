"""The one FHIR mapping of a ledgered access (``AuditEvent``) and of the project's purposes (v3 PurposeOfUse),
shared by the auditor's ``audit-events.json`` and the gateway's ``GET /fhir/AuditEvent``."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from node_client.audit.model import AccessRow

__all__ = ["AUDIT_NS", "V3_PURPOSE", "audit_event", "event_ids", "iso_time", "pruned", "purpose_concept"]


def iso_time(t: int) -> str:
    """Unix seconds as a FHIR instant (UTC)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


#: the namespace of the AuditEvent ids: uuid5(namespace, access hash) names one access, on every rerun
AUDIT_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hcl:audit-event")

#: the project's purposes in HL7 v3 PurposeOfUse (the extensible binding of AuditEvent.purposeOfEvent)
V3_PURPOSE = {
    "treatment": ("TREAT", "treatment"),
    "emergency": ("ETREAT", "emergency treatment"),
    "referral": ("TREAT", "treatment"),  # referral and result recognition serve the patient's care
    "care-coordination": ("COC", "coordination of care"),
    "research": ("HRESCH", "healthcare research"),
    "payment": ("HPAYMT", "healthcare payment"),
    "public-health": ("PUBHLTH", "public health"),
}


def event_ids(rows: list[AccessRow]) -> list[str]:
    """UUIDs that stay the same for the same accesses (derived from their hashes), so reruns give the same
    Bundle; a hash seen again (a replayed entry in a tampered journal) gets its occurrence number too."""
    seen: Counter[str] = Counter()
    ids = []
    for r in rows:
        key = r.access_hash or f"{r.source}:{r.tx_hash}:{r.entry_index}"
        seen[key] += 1
        ids.append(str(uuid.uuid5(AUDIT_NS, key if seen[key] == 1 else f"{key}#{seen[key]}")))
    return ids


def purpose_concept(purpose: str) -> dict[str, Any]:
    """The local purpose code, and the v3 PurposeOfUse one beside it when there is one."""
    coding = [{"system": "urn:hcl:purpose", "code": purpose or "unknown"}]
    if v3 := V3_PURPOSE.get(purpose):
        coding.insert(
            0, {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": v3[0], "display": v3[1]}
        )
    return {"coding": coding}


def pruned(value: Any) -> Any:
    """``value`` without empty strings, objects or arrays (FHIR JSON forbids them), e.g. a tampered entry's
    unknown category."""
    if isinstance(value, dict):
        return {k: p for k, v in value.items() if (p := pruned(v)) not in ("", {}, [], None)}
    if isinstance(value, list):
        return [p for v in value if (p := pruned(v)) not in ("", {}, [], None)]
    return value


def audit_event(event_id: str, r: AccessRow, observer: str = "HealthCode Ledger auditor") -> dict[str, Any]:
    """One patient-read ``AuditEvent`` (IHE BALP style): outcome 0 = authorized, 4 = anomalous; ``observer``
    names who reports it (the auditor, or a gateway)."""
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
        "recorded": iso_time(r.time),
        "outcome": "4" if r.status == "anomaly" else "0",
        "purposeOfEvent": [purpose_concept(r.purpose)],
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
            "observer": {"display": observer},
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
    out: dict[str, Any] = pruned(ev)
    return out
