"""The ledger's facts as FHIR R4: on-chain consents as ``Consent``, the gateway's ``CapabilityStatement``, and
searchset Bundles. (Accesses map through the auditor's one mapping, :mod:`node_client.audit.fhir`.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from node_client.audit.fhir import audit_event, event_ids, iso_time, pruned, purpose_concept
from node_client.audit.model import AccessRow
from node_client.vocabulary import CATEGORIES, PURPOSES, purposes_of

__all__ = [
    "CONSENT_NS",
    "ConsentFacts",
    "access_row",
    "audit_events",
    "bundle_entry",
    "capability_statement",
    "consent",
    "searchset",
    "streamed_collection",
]

#: uuid5(CONSENT_NS, consent id) names one on-chain consent in every Bundle
CONSENT_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hcl:consent")
ADDRESS = "urn:hcl:address"
CATEGORY_SYSTEM = "urn:hcl:category"
#: a blinded slot whose category the gateway cannot name (it lacks the patient's key): the slot number
SLOT_SYSTEM = "urn:hcl:category-slot"
SCOPE = {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
CATEGORY_BY_SLUG = {t.slug: t for t in CATEGORIES}
LOINC_CONSENT = {"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """One on-chain consent as the read model has it (addresses checksummed, the id as 0x-hex)."""

    consent_id: str
    patient: str
    grantee: str
    grantee_name: str
    #: the consent's slots named (``gateway.storage.category_keys``): a slug, or ``slot-N``
    categories: list[str]
    purposes: int
    valid_from: int
    valid_until: int
    revoked: bool
    granted_at: int | None
    tx_hash: str | None


def _address(address: str, display: str = "") -> dict[str, Any]:
    return {"identifier": {"system": ADDRESS, "value": address}, "display": display or address}


def consent(c: ConsentFacts, now: int) -> dict[str, Any]:
    """An R4 ``Consent``: inactive once revoked or expired, else active (one not yet valid says so by its
    ``provision.period``, as a directive in force whose permit starts later)."""
    status = "inactive" if c.revoked or now >= c.valid_until else "active"
    ids = [{"system": "urn:hcl:consent-id", "value": c.consent_id}]
    if c.tx_hash:
        ids.append({"system": "urn:hcl:tx-hash", "value": c.tx_hash})
    res = {
        "resourceType": "Consent",
        "id": str(uuid.uuid5(CONSENT_NS, c.consent_id.lower())),
        "identifier": ids,
        "status": status,
        "scope": {"coding": [SCOPE]},
        "category": [{"coding": [LOINC_CONSENT]}],
        "patient": _address(c.patient),
        "dateTime": iso_time(c.granted_at) if c.granted_at is not None else None,
        "performer": [_address(c.grantee, c.grantee_name)],
        "organization": [_address(c.grantee, c.grantee_name)],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": iso_time(c.valid_from), "end": iso_time(c.valid_until)},
            "actor": [
                {
                    "role": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
                        ]
                    },
                    "reference": _address(c.grantee, c.grantee_name),
                }
            ],
            "purpose": [purpose_concept(PURPOSES[int(p)].slug)["coding"][0] for p in purposes_of(c.purposes)],
            "class": [{k: v for k, v in _category(n).items() if k != "display"} for n in c.categories],
            "code": [{"coding": [_category(n)]} for n in c.categories],
        },
    }
    out: dict[str, Any] = pruned(res)
    return out


def _category(name: str) -> dict[str, str]:
    """A named slot as a coding: the category's, or a slot of the local system when it has no name here."""
    slot = name.removeprefix("slot-")
    if slot != name:
        return {"system": SLOT_SYSTEM, "code": slot, "display": f"Protected category {slot}"}
    return {"system": CATEGORY_SYSTEM, "code": name, "display": CATEGORY_BY_SLUG[name].en}


def searchset(
    resources: list[dict[str, Any]], *, total: int | None, self_url: str, next_url: str | None = None
) -> dict[str, Any]:
    """A searchset ``Bundle`` of ``resources`` (each with its ``urn:uuid:`` id), with ``total`` (when known)
    and links."""
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = [bundle_entry(r) | {"search": {"mode": "match"}} for r in resources]
    return bundle


def bundle_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """A Bundle entry of ``resource``, named by its ``urn:uuid:`` id."""
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def streamed_collection(pages: Iterable[list[dict[str, Any]]], timestamp: str) -> Iterator[bytes]:
    """A ``collection`` Bundle written as the pages of resources come, never whole in memory (an export of a
    long history); no ``entry`` when there is none (FHIR JSON has no empty arrays)."""
    head = orjson.dumps({"resourceType": "Bundle", "type": "collection", "timestamp": timestamp})
    yield head[:-1]
    first = True
    for page in pages:
        for resource in page:
            yield (b',"entry":[' if first else b",") + orjson.dumps(bundle_entry(resource))
            first = False
    yield b"}" if first else b"]}"


def _search(name: str, kind: str, doc: str) -> dict[str, str]:
    return {"name": name, "type": kind, "documentation": doc}


def capability_statement(base: str, date: str) -> dict[str, Any]:
    """What ``/fhir`` serves: read-only searches of Consent and AuditEvent by patient address, bearer auth."""
    patient = _search("patient", "token", "the patient's ledger address (0x…), as in urn:hcl:address")
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "HealthCode Ledger",
        "kind": "instance",
        "software": {"name": "HealthCode Ledger gateway"},
        "implementation": {"description": "HealthCode Ledger gateway FHIR read API", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "description": "`Authorization: Bearer` with the token of POST /v1/auth/challenge and /v1/auth/token"
                    " (a ledger key's signature); SMART on FHIR is not supported.",
                },
                "resource": [
                    {
                        "type": "Consent",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [patient],
                    },
                    {
                        "type": "AuditEvent",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            patient,
                            _search("_count", "number", "entries per page (the next link pages on)"),
                        ],
                    },
                ],
            }
        ],
    }


def access_row(e: dict[str, Any], patient: str) -> AccessRow:
    """An access-log entry (``gateway.services.access_history``) as the auditor's row: proven entries are
    ``ok``, an altered one an ``anomaly``, one not proven yet ``pending`` (its verification as the kind)."""
    verification = str(e.get("verification", ""))
    status = "ok" if e.get("verified") else "anomaly" if verification == "proof_mismatch" else "pending"
    ledger = e.get("ledger") or {}
    return AccessRow(
        source="strict" if ledger.get("mode") == "strict" else "journal",
        time=int(e["time"]),
        requester=e["requester"],
        requester_name=e.get("requesterName") or "",
        patient=patient,
        record_id=e["recordId"],
        category=e.get("category") or "",
        purpose=e["purpose"],
        consent_id=e["consentId"],
        emergency=bool(e["emergency"]),
        access_hash=e["accessId"],
        tx_hash=ledger.get("txHash"),
        entry_index=ledger.get("journalIndex"),
        gateway=e.get("holder"),
        gateway_name=e.get("holderName") or "",
        status=status,
        kinds=[] if status == "ok" else [verification],
    )


def audit_events(entries: list[dict[str, Any]], patient: str, observer: str) -> list[dict[str, Any]]:
    """The entries as ``AuditEvent`` resources, through the auditor's mapping (ids: uuid5 of the access hash)."""
    rows = [access_row(e, patient) for e in entries]
    return [audit_event(i, r, observer) for i, r in zip(event_ids(rows), rows, strict=True)]
