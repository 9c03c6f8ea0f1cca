"""The discovery index: what the gateway may know about a resource without decrypting its record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from gateway.fhir.categories import _MEDICATION_TYPES, _codings

__all__ = ["IndexEntry", "index_entry"]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the gateway may know about a resource without decrypting its record, for discovery.

    Kept off-chain next to the record so that, e.g., a clinic can find a hospital's recent HbA1c
    (LOINC 4548-4) and then request that record under the patient's consent.

    ``resource_id`` is ``Resource.id``, or the entry's ``fullUrl`` when the resource has none (transaction
    bundles often identify resources only by a ``urn:uuid``). ``code*``/``display`` come from the first
    coding of the resource's primary code; ``date`` is its clinically relevant date exactly as sent
    (an ISO 8601 date or dateTime, possibly partial such as ``2013-04``; not converted to UTC).
    """

    resource_type: str
    resource_id: str | None
    code_system: str | None
    code: str | None
    display: str | None
    date: str | None


#: Elements holding a resource's primary code, by type (default: ``code``). A bare Coding (Encounter.class,
#: ImagingStudy.modality) is accepted as well as a CodeableConcept or a list of them.
_CODE_ELEMENTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "Immunization": ("vaccineCode",),
        "MedicationRequest": ("medicationCodeableConcept",),
        "MedicationStatement": ("medicationCodeableConcept",),
        "MedicationAdministration": ("medicationCodeableConcept",),
        "MedicationDispense": ("medicationCodeableConcept",),
        "Encounter": ("type", "serviceType", "class"),
        "EpisodeOfCare": ("type",),
        "DocumentReference": ("type",),
        "Composition": ("type",),
        "ImagingStudy": ("procedureCode", "modality"),
        "Goal": ("description",),
        "CarePlan": ("category",),
        "CareTeam": ("category",),
        "Device": ("type",),
        "DeviceMetric": ("type",),
        "Specimen": ("type",),
        "FamilyMemberHistory": ("relationship",),
        "RelatedPerson": ("relationship",),
        "Patient": (),
        "Person": (),
        "MolecularSequence": (),
    }
)

#: Where the clinically relevant date is, in order of preference; the first string found wins. One list
#: serves every type because a type only has the elements that make sense for it (effective* before
#: issued for results, onset before recordedDate for conditions, period.start for encounters, ...).
_DATE_PATHS: Final[tuple[tuple[str, ...], ...]] = (
    ("effectiveDateTime",),
    ("effectiveInstant",),
    ("effectivePeriod", "start"),
    ("occurrenceDateTime",),
    ("occurrencePeriod", "start"),
    ("performedDateTime",),
    ("performedPeriod", "start"),
    ("onsetDateTime",),
    ("onsetPeriod", "start"),
    ("started",),
    ("period", "start"),
    ("context", "period", "start"),
    ("authoredOn",),
    ("whenHandedOver",),
    ("collection", "collectedDateTime"),
    ("createdDateTime",),
    ("issued",),
    ("recordedDate",),
    ("recorded",),
    ("dateAsserted",),
    ("date",),
    ("startDate",),
    ("created",),
    ("timestamp",),
    ("birthDate",),
)


def _primary_concept(resource: Mapping[str, Any]) -> object:
    rt = resource.get("resourceType")
    elements = _CODE_ELEMENTS.get(rt, ("code",)) if isinstance(rt, str) else ("code",)
    for element in elements:
        value = resource.get(element)
        if value:
            return value
    if rt in _MEDICATION_TYPES:
        return _contained_medication_code(resource)
    return None


def _contained_medication_code(resource: Mapping[str, Any]) -> object:
    """``medicationReference: {"reference": "#med"}`` → the code of the contained Medication ``med``."""
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or not target.startswith("#"):
        return None
    for contained in resource.get("contained") or ():
        if isinstance(contained, dict) and contained.get("id") == target[1:]:
            return contained.get("code")
    return None


def _first_coding(concept: object) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) of the first coding; display falls back to the concept's text."""
    first = concept[0] if isinstance(concept, list) and concept else concept
    text = first.get("text") if isinstance(first, dict) else None
    codings = _codings(first)
    if not codings:
        return None, None, text if isinstance(text, str) else None
    coding = codings[0]
    system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
    if not isinstance(display, str):
        display = text
    return (
        system if isinstance(system, str) else None,
        code if isinstance(code, str) else None,
        display if isinstance(display, str) else None,
    )


def _date_of(resource: Mapping[str, Any]) -> str | None:
    for path in _DATE_PATHS:
        value: object = resource
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                break
        if isinstance(value, str):
            return value
    return None


def index_entry(resource: Mapping[str, Any], full_url: str | None = None) -> IndexEntry:
    """The :class:`IndexEntry` of one resource."""
    rt = resource.get("resourceType")
    rid = resource.get("id")
    system, code, display = _first_coding(_primary_concept(resource))
    return IndexEntry(
        resource_type=rt if isinstance(rt, str) else "",
        resource_id=rid if isinstance(rid, str) else full_url,
        code_system=system,
        code=code,
        display=display,
        date=_date_of(resource),
    )
