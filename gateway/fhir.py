"""FHIR in: validate an upload, give every resource a data category, group resources into records.

A hospital POSTs one FHIR R4 resource or Bundle (``application/fhir+json``) for one patient. This module
is the gate between that untrusted body and the ledger:

* :func:`parse` decodes and validates it. Cheap structural checks (size, nesting depth, entry count,
  JSON-level FHIR rules, known resource types, numbers that a double cannot hold) run *before* any model
  validation, because model validation is the expensive, recursive part and the body is hostile until
  proven otherwise. Every problem is reported with a FHIRPath-like location, not only the first one, so a
  sender can fix an upload in one round trip.
* :func:`category_of` decides which consent category governs a resource. The category is what the
  patient's consent is about, so the rules err on the protective side: a resource whose code marks it as
  mental-health, sexual/reproductive or genomic data goes to that sensitive category even when its
  resource type alone would suggest an ordinary one. "Its code" means any coding anywhere inside it (not
  only the primary code: also ``reasonCode``, extensions, Composition sections, ...), and "inside it"
  includes its ``contained`` resources and, for a document, every resource of the document at any depth:
  a record is released on one consent category, so that category must cover every byte of it. A record
  that would hold two sensitive categories is refused (no one consent covers both).
* :func:`group` turns an upload into records: one record = the resources of one category from one upload,
  as a FHIR ``collection`` Bundle, plus an off-chain index (type, code, date) for discovery. Resources
  that are not patient health data are reported back as ignored, never dropped silently.
* :func:`canonical_json` gives the bytes that are hashed and encrypted.

Validation uses the ``fhir.resources.R4B`` models, because fhir.resources 8 has no R4 package. R4B
(4.3.0) was limited to the medication-definition, evidence-based-medicine and subscription resources
plus technical corrections; the clinical resources a hospital sends are wire-compatible with R4, which
every valid sample in the test corpus (Synthea bundles and the official R4 examples) confirms. The one
difference that matters on input is the set of resource types: 18 R4 types (``MedicinalProduct*``,
``Substance{NucleicAcid,Polymer,Protein,ReferenceInformation,SourceMaterial,Specification}``,
``EffectEvidenceSynthesis``, ``RiskEvidenceSynthesis``) have no R4B model. None of them is patient data, so as a Bundle entry (or the
whole upload) they are accepted without model validation and then ignored with a reason; contained in
another resource they cannot be validated and are rejected. See :data:`R4_ONLY_RESOURCE_TYPES`.

What the models do not check (documented so nobody relies on it): terminology and required value-set
bindings (except ``Bundle.type``, which grouping depends on), FHIRPath invariants, reference targets,
base64 content, the XHTML of narratives (treat ``text.div`` as untrusted when rendering), and the JSON
type of primitives (fhir.resources accepts ``"true"`` for a boolean and ``"1.0"`` for a decimal; such
values are stored as sent). Duplicate JSON keys cannot be seen either: the JSON parser keeps the last one,
and that is what is stored, so there is no ambiguity downstream.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

import orjson
from pydantic import ValidationError

from node_client.vocabulary import CATEGORIES, Category

__all__ = [
    "BUNDLE_TYPES",
    "CATEGORY_BY_TYPE",
    "FHIR_VERSION",
    "MAX_ISSUES",
    "R4_ONLY_RESOURCE_TYPES",
    "SENSITIVE_CATEGORIES",
    "FhirIssue",
    "Grouping",
    "IndexEntry",
    "InvalidFhir",
    "RecordDraft",
    "canonical_json",
    "category_of",
    "group",
    "ignore_reason",
    "index_entry",
    "parse",
    "warm_up",
]

#: The FHIR release the gateway speaks on the wire (validation uses the wire-compatible R4B models).
FHIR_VERSION: Final = "R4"

#: At most this many issues are reported; the last one then says how many more there were. A hostile
#: or badly broken upload must not turn into a multi-megabyte error response.
MAX_ISSUES: Final = 100

#: ``Bundle.type`` codes of R4 (required binding). fhir.resources does not check bindings, but grouping
#: depends on the type (a ``document`` is kept whole), so an unknown type is rejected here.
BUNDLE_TYPES: Final = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    }
)

#: R4 (4.0.1) resource types that R4B (4.3.0) dropped, so no R4B model can validate them. All are
#: definitional/regulatory product data, never patient data: accepted unvalidated as a Bundle entry (or
#: as the whole upload) and reported as ignored by :func:`group`.
R4_ONLY_RESOURCE_TYPES: Final = frozenset(
    {
        "EffectEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "RiskEvidenceSynthesis",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
    }
)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FhirIssue:
    """One problem in an upload.

    ``path`` is FHIRPath-like (``Bundle.entry[3].resource.status``) so that the sender can find it in
    its own data; ``$`` is the document itself (e.g. when it is not JSON at all).
    """

    path: str
    message: str


class InvalidFhir(Exception):
    """The upload is not acceptable FHIR; ``issues`` lists every problem found (capped, see below).

    All issues are collected rather than only the first, so that a sender can fix a 300-resource bundle
    in one round trip. The list is capped at :data:`MAX_ISSUES` entries, the last of which then says how
    many more were found.
    """

    def __init__(self, issues: Iterable[FhirIssue]) -> None:
        self.issues: list[FhirIssue] = _cap(list(issues))
        first = self.issues[0] if self.issues else FhirIssue("$", "invalid")
        count = len(self.issues)
        super().__init__(f"{count} FHIR issue(s); first: {first.path}: {first.message}")


def _cap(issues: list[FhirIssue]) -> list[FhirIssue]:
    if len(issues) <= MAX_ISSUES:
        return issues
    more = len(issues) - (MAX_ISSUES - 1)
    return [*issues[: MAX_ISSUES - 1], FhirIssue("$", f"… and {more} more issue(s)")]


# --------------------------------------------------------------------------------------------------
# parse
# --------------------------------------------------------------------------------------------------

_BOM: Final = b"\xef\xbb\xbf"
_RESOURCE_TYPE_SHAPE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")
# A JSON number with 16+ characters may have more significant digits than a double keeps (15 are
# always safe). A number value follows ':', ',' or '['; the pattern does not know about strings, which is
# harmless (see _lossy_numbers), and anchoring on those characters keeps the scan cheap.
_LONG_NUMBER: Final = re.compile(rb"[:,\[]\s*(-?\d[\d.eE+-]{15,})")
_JSON_NUMBER: Final = re.compile(rb"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def parse(body: bytes, *, max_entries: int = 10_000, max_depth: int = 64) -> dict[str, Any]:
    """Decodes and validates one FHIR R4 resource or Bundle; returns the decoded JSON object.

    The original dict is returned, not a model: the gateway stores what the sender sent (canonicalized
    by :func:`canonical_json`), not fhir.resources' re-serialization of it.

    Order of checks, cheapest and most hostile-input-proof first:

    1. JSON decoding (orjson, which itself refuses nesting beyond 1024 levels without recursing). A
       leading UTF-8 byte-order mark is tolerated (some Windows senders add one; RFC 8259 allows
       ignoring it).
    2. The document must be an object; a Bundle may have at most ``max_entries`` entries (counted before
       anything else looks at them).
    3. One iterative (non-recursive) walk over the whole document: nesting at most ``max_depth`` levels,
       FHIR JSON rules the models do not enforce (no ``null`` outside arrays, no empty objects or
       arrays), every ``resourceType`` a known R4 resource type, ``Bundle.type`` a known code, entries of
       nested Bundles counted against ``max_entries`` too, and no number that would change when stored
       as a double (e.g. ``1234567890123456789.0123456789``): silently altering a clinical value is
       worse than refusing it. Trailing zeros (``1.50``) are not preserved; the value is.
    4. Model validation with the R4B model of each resource. Bundles are validated entry by entry, each
       entry's resource with its own model, so that issues carry the entry's path and every Bundle type
       works the same way.

    Raises :class:`InvalidFhir` listing the issues.
    """
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "depth" in message or "recursion" in message:
            message = f"nesting too deep, at most {max_depth} levels are accepted ({message})"
        raise InvalidFhir([FhirIssue("$", f"invalid JSON: {message}")]) from None
    if not isinstance(doc, dict):
        raise InvalidFhir([FhirIssue("$", f"a FHIR resource must be a JSON object, not {_json_kind(doc)}")])
    if doc.get("resourceType") == "Bundle":
        entries = doc.get("entry")
        if isinstance(entries, list) and len(entries) > max_entries:
            raise InvalidFhir([_too_many_entries("Bundle.entry", len(entries), max_entries)])
    if "resourceType" not in doc:
        raise InvalidFhir([FhirIssue("$.resourceType", "required: resourceType says what resource this is")])

    issues = _scan(doc, body, max_depth=max_depth, max_entries=max_entries)
    if issues:
        raise InvalidFhir(issues)
    issues = _validate_models(doc)
    if issues:
        raise InvalidFhir(issues)
    return doc


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def _too_many_entries(path: str, count: int, max_entries: int) -> FhirIssue:
    return FhirIssue(
        path, f"{count} entries (nested Bundles included); at most {max_entries} are accepted in one upload"
    )


class _TooManyEntries(Exception):
    def __init__(self, issue: FhirIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


# A path is built lazily as a linked list (parent, key or index), the root's segment being its name:
# most nodes never need theirs rendered.
_PathNode = tuple[Any, "str | int"]


def _render(node: _PathNode | None) -> str:
    parts: list[str] = []
    while node is not None:
        parent, segment = node
        if parent is None:
            parts.append(str(segment))
        elif isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append("." + segment)
        node = parent
    return "".join(reversed(parts))


def _scan(doc: dict[str, Any], body: bytes, *, max_depth: int, max_entries: int) -> list[FhirIssue]:
    """The pre-model walk (step 3 of :func:`parse`); iterative so that no input can exhaust the stack."""
    issues: list[FhirIssue] = []
    lossy = _lossy_numbers(body)
    root_type = doc.get("resourceType")
    root: _PathNode = (None, root_type if isinstance(root_type, str) and _is_name(root_type) else "$")
    entry_resources: set[int] = {id(doc)}  # where an R4-only type may stand (it is then ignored)
    entry_total = 0
    stack: list[tuple[Any, int, _PathNode]] = [(doc, 1, root)]
    try:
        while stack:
            value, depth, node = stack.pop()
            if depth > max_depth:
                issues.append(FhirIssue(_render(node), f"nesting deeper than {max_depth} levels"))
                continue
            if type(value) is dict:
                if not value:
                    issues.append(FhirIssue(_render(node), "empty object: FHIR JSON never has {}; omit it"))
                    continue
                if "resourceType" in value:
                    entry_total = _scan_resource(value, node, issues, entry_resources, entry_total, max_entries)
                children: list[tuple[Any, int, _PathNode]] = []
                for key, child in value.items():
                    kind = type(child)
                    if kind is dict or kind is list:
                        children.append((child, depth + 1, (node, key)))
                    elif child is None:
                        issues.append(FhirIssue(_render((node, key)), "null: FHIR JSON omits absent elements"))
                    elif kind is float and child in lossy:
                        issues.append(_lossy_issue((node, key), child))
                stack.extend(reversed(children))  # so that pop() visits in document order
            else:  # list
                if not value:
                    issues.append(FhirIssue(_render(node), "empty array: FHIR JSON never has []; omit it"))
                    continue
                children = []
                for i, child in enumerate(value):
                    kind = type(child)
                    if kind is dict or kind is list:
                        children.append((child, depth + 1, (node, i)))
                    elif kind is float and child in lossy:
                        issues.append(_lossy_issue((node, i), child))
                stack.extend(reversed(children))
    except _TooManyEntries as exc:
        return [exc.issue]
    return issues


def _scan_resource(
    value: dict[str, Any],
    node: _PathNode,
    issues: list[FhirIssue],
    entry_resources: set[int],
    entry_total: int,
    max_entries: int,
) -> int:
    """Checks one object that carries a ``resourceType``; returns the running count of Bundle entries."""
    rt = value["resourceType"]
    if not isinstance(rt, str) or not rt:
        issues.append(FhirIssue(_render((node, "resourceType")), "resourceType must be a non-empty string"))
        return entry_total
    if rt in R4_ONLY_RESOURCE_TYPES:
        if id(value) not in entry_resources:
            issues.append(
                FhirIssue(
                    _render((node, "resourceType")),
                    f"{rt} is an R4 type without an R4B model; it cannot be validated where it stands"
                    " (only as a Bundle entry, where it is ignored as not patient data)",
                )
            )
        return entry_total
    if not _is_resource_type(rt):
        issues.append(FhirIssue(_render((node, "resourceType")), f"unknown resource type {rt!r} (not FHIR R4)"))
        return entry_total
    if rt != "Bundle":
        return entry_total
    bundle_type = value.get("type")
    if isinstance(bundle_type, str) and bundle_type not in BUNDLE_TYPES:
        issues.append(
            FhirIssue(
                _render((node, "type")),
                f"{bundle_type!r} is not a Bundle type (one of {', '.join(sorted(BUNDLE_TYPES))})",
            )
        )
    entries = value.get("entry")
    if isinstance(entries, list):
        entry_total += len(entries)  # nested Bundles count too: the limit is on work, not on one list
        if entry_total > max_entries:
            raise _TooManyEntries(_too_many_entries(_render((node, "entry")), entry_total, max_entries))
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                entry_resources.add(id(entry["resource"]))
    return entry_total


def _lossy_numbers(body: bytes) -> frozenset[float]:
    """Values of JSON numbers in ``body`` that orjson cannot hold exactly (as floats, as parsed).

    A double keeps any decimal of up to 15 significant digits, so only long tokens are candidates. The
    regular expression does not know about strings; that is harmless, because the walk only flags a
    *number* node whose value equals one of these (a string never does).
    """
    lossy: set[float] = set()
    for match in _LONG_NUMBER.finditer(body):
        token = match.group(1)
        if _JSON_NUMBER.fullmatch(token) is None:
            continue
        try:
            value = orjson.loads(token)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, float) and Decimal(token.decode()) != Decimal(orjson.dumps(value).decode()):
            lossy.add(value)
    return frozenset(lossy)


def _lossy_issue(node: _PathNode, value: float) -> FhirIssue:
    return FhirIssue(
        _render(node),
        "number has more precision than can be stored exactly (IEEE-754 double);"
        f" it would become {orjson.dumps(value).decode()}. Send at most 15 significant digits.",
    )


def _is_name(value: str) -> bool:
    return _RESOURCE_TYPE_SHAPE.fullmatch(value) is not None


@functools.lru_cache(maxsize=512)
def _is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete R4B resource type (lazy: imports only that one model).

    The LRU bound keeps a stream of made-up names from growing the cache without limit.
    """
    return _is_name(name) and _model_class(name) is not None


def _model_class(name: str) -> type[Any] | None:
    from fhir.resources.R4B import get_fhir_model_class

    if name in ("Resource", "DomainResource"):  # abstract
        return None
    try:
        cls = get_fhir_model_class(name)
    except (ValueError, ImportError, AttributeError):
        return None
    if not cls.has_resource_base() or cls.get_resource_type() != name:  # a datatype or backbone element
        return None
    return cls


def _validate_models(doc: dict[str, Any]) -> list[FhirIssue]:
    """Step 4 of :func:`parse`: each resource against its own R4B model, Bundles entry by entry.

    A Bundle is validated as a shell (its entries without their resources), then each entry's resource
    separately with the model of its own type, prefixed with the entry's path. Nested Bundles are handled
    the same way, from an explicit work list rather than by recursion.
    """
    issues: list[FhirIssue] = []
    root_type = doc.get("resourceType")
    work: list[tuple[dict[str, Any], str]] = [(doc, root_type if isinstance(root_type, str) else "$")]
    while work:
        resource, path = work.pop()
        rt = resource.get("resourceType")
        if not isinstance(rt, str):
            issues.append(FhirIssue(f"{path}.resourceType", "required: resourceType says what resource this is"))
            continue
        if rt in R4_ONLY_RESOURCE_TYPES:
            continue  # see R4_ONLY_RESOURCE_TYPES: accepted unvalidated, ignored by group()
        cls = _model_class(rt)
        if cls is None:  # cannot happen after _scan; kept so that a caller skipping _scan is still safe
            issues.append(FhirIssue(f"{path}.resourceType", f"unknown resource type {rt!r} (not FHIR R4)"))
            continue
        entries = resource.get("entry") if rt == "Bundle" else None
        if not isinstance(entries, list):
            _validate_one(cls, resource, path, issues)
            continue
        shell_entries: list[Any] = []
        nested: list[tuple[dict[str, Any], str]] = []
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                nested.append((entry["resource"], f"{path}.entry[{i}].resource"))
                shell_entries.append({k: v for k, v in entry.items() if k != "resource"})
            else:
                shell_entries.append(entry)
        _validate_one(cls, {**resource, "entry": shell_entries}, path, issues)
        work.extend(reversed(nested))  # pop() then yields entries in document order
    return issues


def _validate_one(cls: type[Any], data: dict[str, Any], path: str, issues: list[FhirIssue]) -> None:
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            issues.append(FhirIssue(_join(path, error["loc"]), _describe(error)))
    except Exception as exc:  # noqa: BLE001 - a model blowing up on hostile input is a 422, not a 500
        issues.append(FhirIssue(path, f"could not be validated ({type(exc).__name__})"))


def _join(path: str, loc: tuple[int | str, ...]) -> str:
    parts = [path]
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item not in ("root", "__root__") and "[" not in item:  # pydantic-internal tags
            parts.append(f".{item}")
    return "".join(parts)


def _describe(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind == "missing" or kind.endswith(".missing"):
        return "required element is missing"
    if kind == "extra_forbidden":
        return "unknown element: not defined for this type in FHIR R4"
    if kind == "json_invalid":  # fhir.resources tries to read a string given for an object as JSON
        return "wrong JSON type: an object is expected here"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def warm_up(types: Iterable[str] = ()) -> None:
    """Imports the models of ``types`` (default: every type with a category, plus the usual companions
    in a patient bundle) and of every datatype they can contain, ahead of the first upload.

    fhir.resources imports each model module lazily on first use; in a fresh process the first
    Synthea-sized upload otherwise pays up to a second or two for that. Optional: call it at gateway start.
    """
    names = set(types) or {t for t, c in CATEGORY_BY_TYPE.items() if isinstance(c, Category)} | {
        "Bundle",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Location",
        "Claim",
        "ExplanationOfBenefit",
        "Provenance",
    }
    todo: list[Any] = [cls for name in sorted(names) if (cls := _model_class(name)) is not None]
    seen: set[Any] = set(todo)
    while todo:  # follow field types: Observation -> Quantity, Reference -> Identifier -> Period ...
        model = todo.pop()
        for field in model.model_fields.values():
            annotations = [field.annotation]
            while annotations:
                annotation = annotations.pop()
                annotations.extend(typing.get_args(annotation))
                loader = getattr(annotation, "get_model_klass", None)
                if loader is None:
                    continue
                try:
                    target = loader()
                except (ImportError, AttributeError, ValueError):
                    continue
                if target not in seen:
                    seen.add(target)
                    todo.append(target)


# --------------------------------------------------------------------------------------------------
# categories
# --------------------------------------------------------------------------------------------------

_DIRECTORY: Final = "directory data (who/where), not patient health data"
_FINANCIAL: Final = "billing/insurance data, not patient health data"
_METADATA: Final = "provenance/audit metadata about other resources, not patient health data"
_CONSENT: Final = "consent is governed on the ledger, not stored as a record"
_PROTOCOL: Final = "a message/protocol resource, not patient health data"
_QUESTIONNAIRE: Final = (
    "the data category of a QuestionnaireResponse cannot be told without its Questionnaire"
    " (it may be a mental-health instrument); send the results as coded Observations"
)

#: Resource type → data category, or → the reason why such a resource is not a record. The one table of
#: type-level decisions; :func:`category_of` refines a few types by code (see the rules below it).
#: Types absent from the table are not records either ("no data category is defined").
CATEGORY_BY_TYPE: Final[Mapping[str, Category | str]] = MappingProxyType(
    {
        # who the patient is
        "Patient": Category.DEMOGRAPHICS,
        "RelatedPerson": Category.DEMOGRAPHICS,  # the patient's contacts and relatives
        "Person": Category.DEMOGRAPHICS,
        "AllergyIntolerance": Category.ALLERGIES,
        "Medication": Category.MEDICATIONS,
        "MedicationRequest": Category.MEDICATIONS,
        "MedicationStatement": Category.MEDICATIONS,
        "MedicationAdministration": Category.MEDICATIONS,
        "MedicationDispense": Category.MEDICATIONS,
        "Condition": Category.CONDITIONS,  # refined by code: mental health, sexual/reproductive health
        "FamilyMemberHistory": Category.CONDITIONS,
        "AdverseEvent": Category.CONDITIONS,
        "Observation": Category.LAB_RESULTS,  # refined by category and code
        "DiagnosticReport": Category.LAB_RESULTS,  # refined by category and code
        "Specimen": Category.LAB_RESULTS,
        "ImagingStudy": Category.IMAGING,
        "Media": Category.IMAGING,  # R4 Media: clinical photos, scans, recordings
        # a DocumentReference is an encounter document (discharge summary, clinical note); Composition
        # is the head of a FHIR document
        "Encounter": Category.ENCOUNTERS,
        "EpisodeOfCare": Category.ENCOUNTERS,
        "Composition": Category.ENCOUNTERS,
        "DocumentReference": Category.ENCOUNTERS,
        "ClinicalImpression": Category.ENCOUNTERS,
        "Immunization": Category.IMMUNIZATIONS,
        "ImmunizationRecommendation": Category.IMMUNIZATIONS,
        "ImmunizationEvaluation": Category.IMMUNIZATIONS,
        # devices: wearables and their metrics produce vital-sign data
        "Device": Category.VITAL_SIGNS,
        "DeviceMetric": Category.VITAL_SIGNS,
        "Procedure": Category.PROCEDURES,
        "CarePlan": Category.CARE_PLANS,
        "Goal": Category.CARE_PLANS,
        "CareTeam": Category.CARE_PLANS,
        "ServiceRequest": Category.CARE_PLANS,
        "NutritionOrder": Category.CARE_PLANS,
        "DeviceRequest": Category.CARE_PLANS,
        "MolecularSequence": Category.GENOMICS,
        # not records
        "Organization": _DIRECTORY,
        "Practitioner": _DIRECTORY,
        "PractitionerRole": _DIRECTORY,
        "Location": _DIRECTORY,
        "HealthcareService": _DIRECTORY,
        "Endpoint": _DIRECTORY,
        "OrganizationAffiliation": _DIRECTORY,
        "Claim": _FINANCIAL,
        "ClaimResponse": _FINANCIAL,
        "ExplanationOfBenefit": _FINANCIAL,
        "Coverage": _FINANCIAL,
        "CoverageEligibilityRequest": _FINANCIAL,
        "CoverageEligibilityResponse": _FINANCIAL,
        "Account": _FINANCIAL,
        "ChargeItem": _FINANCIAL,
        "Invoice": _FINANCIAL,
        "PaymentNotice": _FINANCIAL,
        "PaymentReconciliation": _FINANCIAL,
        "Provenance": _METADATA,
        "AuditEvent": _METADATA,
        "Consent": _CONSENT,
        "MessageHeader": _PROTOCOL,
        "OperationOutcome": _PROTOCOL,
        "Parameters": _PROTOCOL,
        "QuestionnaireResponse": _QUESTIONNAIRE,
    }
)

# ---- code systems -------------------------------------------------------------------------------

_LOINC: Final = "http://loinc.org"
_SNOMED: Final = "http://snomed.info/sct"
_RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
_OBSERVATION_CATEGORY: Final = frozenset(
    {"http://terminology.hl7.org/CodeSystem/observation-category", "http://hl7.org/fhir/observation-category"}
)
_V2_0074: Final = frozenset({"http://terminology.hl7.org/CodeSystem/v2-0074", "http://hl7.org/fhir/v2/0074"})
_ICD10_OIDS: Final = frozenset({"urn:oid:2.16.840.1.113883.6.3", "urn:oid:2.16.840.1.113883.6.90"})


def _is_icd10(system: str) -> bool:
    """WHO ICD-10 and its national modifications (icd-10-cm, -de, -nl, ...); add local URIs here."""
    return system.startswith("http://hl7.org/fhir/sid/icd-10") or system in _ICD10_OIDS


# ---- the code-based rules ------------------------------------------------------------------------
# Sensitive categories win over the type's category: a contraceptive prescription is sexual/reproductive
# health data before it is a medication. The code sets are small and explicit (no terminology server, so
# no SNOMED subsumption): extend them, do not replace them with text matching ("respiratory depression" is
# not a mental-health finding). The rules look at every coding anywhere in a resource, its contained
# resources and a document's resources (see _sensitive_categories), not only the primary code: an
# Encounter whose reasonCode is a depression is mental-health data too.

_MENTAL_HEALTH_CODES: Final = frozenset(
    {
        # SNOMED CT: mental disorders and substance use disorders seen in practice and in Synthea
        (_SNOMED, "74732009"),  # Mental disorder
        (_SNOMED, "35489007"),  # Depressive disorder
        (_SNOMED, "370143000"),  # Major depressive disorder
        (_SNOMED, "36923009"),  # Major depression, single episode
        (_SNOMED, "197480006"),  # Anxiety disorder
        (_SNOMED, "48694002"),  # Anxiety
        (_SNOMED, "80583007"),  # Severe anxiety (panic)
        (_SNOMED, "47505003"),  # Posttraumatic stress disorder
        (_SNOMED, "58214004"),  # Schizophrenia
        (_SNOMED, "69322001"),  # Psychotic disorder
        (_SNOMED, "13746004"),  # Bipolar disorder
        (_SNOMED, "406506008"),  # Attention deficit hyperactivity disorder
        (_SNOMED, "192127007"),  # Child attention deficit disorder
        (_SNOMED, "225444004"),  # At risk for suicide
        (_SNOMED, "7200002"),  # Alcoholism
        (_SNOMED, "66590003"),  # Alcohol dependence
        (_SNOMED, "26416006"),  # Drug abuse
        (_SNOMED, "6525002"),  # Dependent drug abuse
        (_SNOMED, "5602001"),  # Opioid abuse
        # LOINC: mental-health and substance-use screening instruments (panels and total scores)
        (_LOINC, "44249-1"),  # PHQ-9 panel
        (_LOINC, "44261-6"),  # PHQ-9 total score
        (_LOINC, "89204-2"),  # PHQ-9 modified for teens, total score
        (_LOINC, "55757-9"),  # PHQ-2 panel
        (_LOINC, "55758-7"),  # PHQ-2 total score
        (_LOINC, "69737-5"),  # GAD-7 panel
        (_LOINC, "70274-6"),  # GAD-7 total score
        (_LOINC, "82667-7"),  # DAST-10 total score
        (_LOINC, "72109-2"),  # AUDIT-C panel
        (_LOINC, "75626-2"),  # AUDIT-C total score
    }
)

_SEXUAL_REPRODUCTIVE_CODES: Final = frozenset(
    {
        # SNOMED CT: pregnancy, contraception, sterilization, sexually transmitted infections
        (_SNOMED, "72892002"),  # Normal pregnancy
        (_SNOMED, "77386006"),  # Pregnant
        (_SNOMED, "47200007"),  # High risk pregnancy
        (_SNOMED, "19169002"),  # Miscarriage in first trimester
        (_SNOMED, "79586000"),  # Tubal pregnancy
        (_SNOMED, "398254007"),  # Pre-eclampsia
        (_SNOMED, "198992004"),  # Eclampsia in pregnancy
        (_SNOMED, "11687002"),  # Gestational diabetes mellitus
        (_SNOMED, "183996000"),  # Sterilization requested
        (_SNOMED, "267020005"),  # History of tubal ligation
        (_SNOMED, "287664005"),  # Ligation of bilateral fallopian tubes
        (_SNOMED, "22523008"),  # Vasectomy
        (_SNOMED, "268533009"),  # Sterilization education
        (_SNOMED, "65200003"),  # Insertion of intrauterine contraceptive device
        (_SNOMED, "169553002"),  # Insertion of subcutaneous contraceptive
        (_SNOMED, "15628003"),  # Gonorrhea
        (_SNOMED, "76272004"),  # Syphilis
        (_SNOMED, "33839006"),  # Genital herpes simplex
        (_SNOMED, "8098009"),  # Sexually transmitted infectious disease
        # LOINC: pregnancy status and tests, sexual orientation
        (_LOINC, "82810-3"),  # Pregnancy status
        (_LOINC, "11449-6"),  # Pregnancy status - Reported
        (_LOINC, "2106-3"),  # Choriogonadotropin (pregnancy test) [Presence] in Urine
        (_LOINC, "2118-8"),  # Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma
        (_LOINC, "19080-1"),  # Choriogonadotropin [Units/volume] in Serum or Plasma
        (_LOINC, "76690-7"),  # Sexual orientation
        # RxNorm: hormonal contraceptives (the set Synthea's contraceptive modules prescribe)
        (_RXNORM, "748962"),  # Camila 28 Day Pack
        (_RXNORM, "831533"),  # Errin 28 Day Pack
        (_RXNORM, "757594"),  # Jolivette 28 Day Pack
        (_RXNORM, "235389"),  # Mestranol / Norethynodrel
        (_RXNORM, "749882"),  # Norinyl 1+50 28 Day Pack
        (_RXNORM, "1359133"),  # Estrostep Fe 28 Day Pack
        (_RXNORM, "749785"),  # Ortho Tri-Cyclen 28 Day Pack
        (_RXNORM, "751905"),  # Trinessa 28 Day Pack
        (_RXNORM, "749762"),  # Seasonique 91 Day Pack
        (_RXNORM, "748856"),  # Yaz 28 Day Pack
        (_RXNORM, "978950"),  # Natazia 28 Day Pack
        (_RXNORM, "748879"),  # Levora 0.15/30 28 Day Pack
        (_RXNORM, "1366343"),  # Levonorgestrel 0.00354 MG/HR Drug Implant
        (_RXNORM, "389221"),  # Etonogestrel 68 MG Drug Implant
        (_RXNORM, "807283"),  # Mirena 52 MG Intrauterine System
        (_RXNORM, "1605257"),  # Liletta 52 MG Intrauterine System
        (_RXNORM, "1856546"),  # Kyleena 19.5 MG Intrauterine System
        (_RXNORM, "1000126"),  # medroxyprogesterone acetate 150 MG/ML Injection (Depo-Provera)
        (_RXNORM, "1534809"),  # ethinyl estradiol / norelgestromin transdermal system
        (_RXNORM, "1367439"),  # NuvaRing
    }
)

_GENOMICS_CODES: Final = frozenset(
    {
        (_LOINC, "51969-4"),  # Genetic analysis report
        (_LOINC, "55233-1"),  # Genetic analysis master panel
        (_LOINC, "81247-9"),  # Master HL7 genetic variant reporting panel
        (_LOINC, "69548-6"),  # Genetic variant assessment
        (_LOINC, "48018-6"),  # Gene studied [ID]
        (_LOINC, "81252-9"),  # Discrete genetic variant
    }
)


def _icd10_category(code: str) -> Category | None:
    """ICD-10 chapters: F = mental and behavioural disorders; O = pregnancy, childbirth and the
    puerperium, Z30-Z39 = reproduction (contraception, pregnancy supervision, delivery), A50-A64 =
    infections with a predominantly sexual mode of transmission, N96-N98 = infertility and its treatment."""
    code = code.strip().upper()
    if not code:
        return None
    letter, digits = code[0], code[1:3]
    if letter == "F":
        return Category.MENTAL_HEALTH
    if letter == "O":
        return Category.SEXUAL_REPRODUCTIVE_HEALTH
    if not digits.isdigit():
        return None
    number = int(digits)
    if (
        (letter == "Z" and 30 <= number <= 39)
        or (letter == "A" and 50 <= number <= 64)
        or (letter == "N" and 96 <= number <= 98)
    ):
        return Category.SEXUAL_REPRODUCTIVE_HEALTH
    return None


#: The sensitive categories of the vocabulary (genomics, mental health, sexual/reproductive health).
SENSITIVE_CATEGORIES: Final = frozenset(Category(t.bit) for t in CATEGORIES if t.sensitive)


def _coding_category(system: str, code: str) -> Category | None:
    """The sensitive category a single coding names, if any."""
    key = (system, code)
    if key in _MENTAL_HEALTH_CODES:
        return Category.MENTAL_HEALTH
    if key in _SEXUAL_REPRODUCTIVE_CODES:
        return Category.SEXUAL_REPRODUCTIVE_HEALTH
    if key in _GENOMICS_CODES:
        return Category.GENOMICS
    if _is_icd10(system):
        return _icd10_category(code)
    return None


def _sensitive_categories(resource: Mapping[str, Any]) -> frozenset[Category]:
    """Every sensitive category that ``resource`` holds data of, wherever it sits.

    One walk over the whole JSON tree (iterative: the body is hostile), so nothing nested escapes: every
    coding anywhere (primary code, ``reasonCode``, ``valueCodeableConcept``, components, extensions,
    Composition sections, ...) is looked up in the code rules, and every resource met on the way (the
    resource itself, its ``contained`` resources, a document's entries and Bundles nested in it at any
    depth) counts with its type-level category (:func:`_base_category`) when that is sensitive, e.g. a
    contained MolecularSequence or a genetics (``GE``) DiagnosticReport inside a document. Narrative
    (``text.div``, section text) is free text and is not classified; it travels with the codes it restates.
    """
    found: set[Category] = set()
    stack: list[object] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("resourceType"), str):
                base = _base_category(node)
                if base in SENSITIVE_CATEGORIES:
                    found.add(base)
            system, code = node.get("system"), node.get("code")
            if isinstance(system, str) and isinstance(code, str) and (category := _coding_category(system, code)):
                found.add(category)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return frozenset(found)


# ---- Observation and DiagnosticReport -----------------------------------------------------------

#: observation-category code → category, in precedence order (first present wins). ``survey``,
#: ``social-history`` and ``exam`` are things recorded at an encounter (smoking status, questionnaires,
#: examination findings), so ENCOUNTERS; survey instruments that screen mental health are caught by the
#: code rules first. ``activity`` is wearable territory (steps, sleep), so VITAL_SIGNS.
_OBSERVATION_CATEGORIES: Final[Mapping[str, Category]] = MappingProxyType(
    {
        "laboratory": Category.LAB_RESULTS,
        "imaging": Category.IMAGING,
        "vital-signs": Category.VITAL_SIGNS,
        "activity": Category.VITAL_SIGNS,
        "procedure": Category.PROCEDURES,
        "therapy": Category.PROCEDURES,
        "exam": Category.ENCOUNTERS,
        "survey": Category.ENCOUNTERS,
        "social-history": Category.ENCOUNTERS,
    }
)

#: LOINC codes of the FHIR R4 vital-signs profiles: an uncategorized Observation with one of these is a
#: vital sign.
_VITAL_SIGN_LOINC: Final = frozenset(
    {
        "85353-1",
        "9279-1",
        "8867-4",
        "2708-6",
        "59408-5",
        "8310-5",
        "8302-2",
        "8306-3",
        "9843-4",
        "29463-7",
        "39156-5",
        "85354-9",
        "8480-6",
        "8462-4",
        "8478-0",
    }
)

_DIAGNOSTIC_SERVICE_IMAGING: Final = frozenset({"RAD", "CT", "NMR", "NMS", "RUS", "VUS", "XRC", "RX", "OUS", "CUS"})
_LOINC_RADIOLOGY: Final = "LP29684-5"
_LOINC_PATHOLOGY: Final = "LP7839-6"
#: LOINC document types used as DiagnosticReport.category for clinical notes (US Core): a note about an
#: encounter, not a lab report.
_CLINICAL_NOTE_LOINC: Final = frozenset(
    {
        "11488-4",  # Consult note
        "18842-5",  # Discharge summary
        "28655-9",  # Physician attending discharge summary
        "11506-3",  # Progress note
        "34117-2",  # History and physical note
        "51847-2",  # Evaluation and plan note
        "34111-5",  # Emergency department note
        "28570-0",  # Procedure note
        "57133-1",  # Referral note
        "18761-7",  # Transfer summary note
        "34133-9",  # Summary of episode note
    }
)


def _codings(concept: object) -> list[Mapping[str, Any]]:
    """The codings of a CodeableConcept, a list of them, or a bare Coding."""
    if isinstance(concept, list):
        return [c for item in concept for c in _codings(item)]
    if not isinstance(concept, dict):
        return []
    coding = concept.get("coding")
    if isinstance(coding, list):
        return [c for c in coding if isinstance(c, dict)]
    if "code" in concept or "system" in concept:
        return [concept]
    return []


def _observation_category(resource: Mapping[str, Any]) -> Category:
    """By ``Observation.category``; uncategorized: a vital-sign LOINC code or a device (wearable) means
    VITAL_SIGNS, anything else LAB_RESULTS (most uncategorized observations are lab results)."""
    codes = {
        c.get("code")
        for c in _codings(resource.get("category"))
        if c.get("system") in _OBSERVATION_CATEGORY or c.get("system") is None
    }
    for code, category in _OBSERVATION_CATEGORIES.items():
        if code in codes:
            return category
    if any(c.get("system") == _LOINC and c.get("code") in _VITAL_SIGN_LOINC for c in _codings(resource.get("code"))):
        return Category.VITAL_SIGNS
    if resource.get("device"):
        return Category.VITAL_SIGNS
    return Category.LAB_RESULTS


def _diagnostic_report_category(resource: Mapping[str, Any]) -> Category:
    """By ``DiagnosticReport.category``: v2-0074 ``GE`` = genetics, radiology sections = imaging, LOINC
    radiology part = imaging, LOINC clinical-note types = encounter notes; otherwise (LAB, HM, CH, MB,
    pathology, ...) laboratory. Precedence genomics > imaging > notes > laboratory. A report that links
    imaging studies but has no telling category is imaging."""
    found: set[Category] = set()
    for coding in _codings(resource.get("category")):
        system, code = coding.get("system"), coding.get("code")
        if system in _V2_0074:
            if code == "GE":
                found.add(Category.GENOMICS)
            elif code in _DIAGNOSTIC_SERVICE_IMAGING:
                found.add(Category.IMAGING)
            else:
                found.add(Category.LAB_RESULTS)
        elif system == _LOINC:
            if code == _LOINC_RADIOLOGY:
                found.add(Category.IMAGING)
            elif code in _CLINICAL_NOTE_LOINC:
                found.add(Category.ENCOUNTERS)
            elif code == _LOINC_PATHOLOGY:
                found.add(Category.LAB_RESULTS)
    for category in (Category.GENOMICS, Category.IMAGING, Category.ENCOUNTERS, Category.LAB_RESULTS):
        if category in found:
            return category
    if resource.get("imagingStudy"):
        return Category.IMAGING
    return Category.LAB_RESULTS


_REFINE: Final[Mapping[str, Callable[[Mapping[str, Any]], Category]]] = MappingProxyType(
    {"Observation": _observation_category, "DiagnosticReport": _diagnostic_report_category}
)

_MEDICATION_TYPES: Final = frozenset(
    {"MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"}
)


def _base_category(resource: Mapping[str, Any]) -> Category | None:
    """The category by type alone (:data:`CATEGORY_BY_TYPE`) and the category-based refinements of
    Observation and DiagnosticReport; a document Bundle is ENCOUNTERS, any other Bundle None."""
    rt = resource.get("resourceType")
    if rt == "Bundle":
        return Category.ENCOUNTERS if resource.get("type") == "document" else None
    if not isinstance(rt, str):
        return None
    base = CATEGORY_BY_TYPE.get(rt)
    if not isinstance(base, Category):
        return None
    refine = _REFINE.get(rt)
    return refine(resource) if refine is not None else base


def category_of(resource: Mapping[str, Any]) -> Category | None:
    """The data category that governs ``resource``, or None if it is not a record (see :func:`ignore_reason`).

    Type and refinements first (:func:`_base_category`); then, winning over them, the one sensitive
    category the resource holds data of anywhere inside it (:func:`_sensitive_categories`: any coding,
    contained resources, a document's resources at any depth). A document Bundle is otherwise an
    encounter document (ENCOUNTERS); any other Bundle is a container, not a record (:func:`group`
    flattens it).

    Raises :class:`InvalidFhir` (at the resource type) if the resource holds data of two or more sensitive
    categories: its record could only be released on one category's consent, which would release the
    other's data without consent, so it is refused rather than filed under either.
    """
    base = _base_category(resource)
    if base is None:
        return None
    held = _sensitive_categories(resource)
    if len(held) > 1:
        names = " and ".join(CATEGORIES[c].slug for c in sorted(held))
        raise InvalidFhir(
            [
                FhirIssue(
                    str(resource.get("resourceType")),
                    f"holds {names} data: a record is released on the consent for one category, and no one category"
                    " covers them together; upload the data of each sensitive category separately",
                )
            ]
        )
    return next(iter(held), base)


def ignore_reason(resource: Mapping[str, Any]) -> str:
    """Why ``resource`` is not a record (for the upload's ``ignored`` list)."""
    rt = resource.get("resourceType")
    if rt == "Bundle":
        return f"a {resource.get('type')} Bundle is a container; its entries are grouped one by one"
    if rt in R4_ONLY_RESOURCE_TYPES:
        return "an R4 product/evidence definition (no R4B model), not patient health data"
    reason = CATEGORY_BY_TYPE.get(rt) if isinstance(rt, str) else None
    if isinstance(reason, str):
        return reason
    return f"no data category is defined for {rt}"


# --------------------------------------------------------------------------------------------------
# index
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# grouping
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordDraft:
    """One record before encryption: the resources of one category from one upload.

    ``bundle`` is a FHIR ``collection`` Bundle whose entries keep the sender's ``fullUrl`` when there was
    one, so that references inside the upload (``urn:uuid:...``) still resolve inside the record. The
    resource dicts are shared with the parsed upload, not copied.
    """

    category: Category
    bundle: dict[str, Any]
    index: tuple[IndexEntry, ...]


@dataclass(frozen=True, slots=True)
class Grouping:
    """The records of one upload (sorted by category bit) and what was not a record, with reasons."""

    records: tuple[RecordDraft, ...]
    ignored: tuple[tuple[str, str], ...]


def group(resource: dict[str, Any]) -> Grouping:
    """Splits a parsed upload into one record per data category.

    * A single resource becomes a one-entry record.
    * A Bundle of any type (transaction, batch, collection, searchset, history, message, ...) is
      flattened: each entry's resource goes to the record of its category. Nested non-document Bundles
      are flattened the same way.
    * A ``document`` Bundle, at the top or nested, is kept whole as one entry, filed as ENCOUNTERS unless
      it holds sensitive data, then under that sensitive category (:func:`category_of`). Whole rather than
      split by category because the Composition's narrative (``text``, ``section.text``) restates its
      entries in free text that no code rule can classify, and a document is an attested unit: only the
      whole document under the most sensitive category it holds guarantees that a consent for
      ``encounters`` never releases a byte of mental-health, sexual/reproductive or genomic data. Its
      resources are all indexed, under that same category.
    * A resource with ``contained`` resources is one entry, classified with everything it contains.
    * A resource holding two sensitive categories (itself, contained or within a document) makes the
      upload fail with :class:`InvalidFhir`, every such resource reported at its path.
    * An entry without a resource (e.g. a transaction DELETE) and every resource without a category are
      reported in ``ignored`` as (resource type, reason); nothing disappears silently. The invariant is
      ``sum(len(record entries)) + len(ignored) == number of entries`` (a document counting as one).
    """
    entries: dict[Category, list[dict[str, Any]]] = {}
    index: dict[Category, list[IndexEntry]] = {}
    ignored: list[tuple[str, str]] = []
    refused: list[FhirIssue] = []

    def add(category: Category, res: dict[str, Any], full_url: str | None, indexed: Iterable[IndexEntry]) -> None:
        entry: dict[str, Any] = {"resource": res} if full_url is None else {"fullUrl": full_url, "resource": res}
        entries.setdefault(category, []).append(entry)
        index.setdefault(category, []).extend(indexed)

    for res, full_url, where in _flatten(resource):
        if res is None:
            ignored.append(("BundleEntry", where))  # where = why: "Bundle.entry[2] has no resource (DELETE ...)"
            continue
        try:
            category = category_of(res)
        except InvalidFhir as exc:
            refused.extend(FhirIssue(where, issue.message) for issue in exc.issues)
            continue
        if category is None:
            ignored.append((str(res.get("resourceType")), ignore_reason(res)))
        elif res.get("resourceType") == "Bundle":  # a document, kept whole
            add(category, res, full_url, (index_entry(r, u) for r, u in _document_resources(res)))
        else:
            add(category, res, full_url, (index_entry(res, full_url),))

    if refused:
        raise InvalidFhir(refused)
    records = tuple(
        RecordDraft(
            category=category,
            bundle={"resourceType": "Bundle", "type": "collection", "entry": entries[category]},
            index=tuple(index[category]),
        )
        for category in sorted(entries)
    )
    return Grouping(records=records, ignored=tuple(ignored))


def _flatten(resource: dict[str, Any]) -> Iterator[tuple[dict[str, Any] | None, str | None, str]]:
    """Yields (resource, fullUrl, path) in document order, Bundles other than documents opened up,
    without recursion. An entry without a resource yields (None, None, why)."""
    stack: list[tuple[dict[str, Any] | None, str | None, str]] = [(resource, None, str(resource.get("resourceType")))]
    while stack:
        res, full_url, where = stack.pop()
        if res is None or res.get("resourceType") != "Bundle" or res.get("type") == "document":
            yield res, full_url, where
            continue
        children: list[tuple[dict[str, Any] | None, str | None, str]] = []
        for i, entry in enumerate(res.get("entry") or ()):
            path = f"{where}.entry[{i}]"
            if not isinstance(entry, dict):
                children.append((None, None, f"{path} is not an entry"))
                continue
            url = entry.get("fullUrl")
            child = entry.get("resource")
            if isinstance(child, dict):
                children.append((child, url if isinstance(url, str) else None, f"{path}.resource"))
            else:
                request = entry.get("request")
                what = (
                    " ".join(str(request[k]) for k in ("method", "url") if k in request)
                    if isinstance(request, dict)
                    else ""
                )
                children.append((None, None, f"{path} has no resource" + (f" ({what})" if what else "")))
        stack.extend(reversed(children))


def _document_resources(document: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], str | None]]:
    """All resources inside a document Bundle (and Bundles nested in it), for the index."""
    stack: list[Mapping[str, Any]] = [document]
    while stack:
        bundle = stack.pop()
        for entry in bundle.get("entry") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                continue
            res = entry["resource"]
            if res.get("resourceType") == "Bundle":
                stack.append(res)
            else:
                url = entry.get("fullUrl")
                yield res, url if isinstance(url, str) else None


# --------------------------------------------------------------------------------------------------
# canonical JSON
# --------------------------------------------------------------------------------------------------

_CANONICAL_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON bytes of ``obj``: sorted keys, no insignificant whitespace, UTF-8, no NaN.

    Used for hashing and encryption, so equal content must give equal bytes whatever the key order.
    Numbers use orjson's shortest round-trip form, so ``canonical_json(orjson.loads(canonical_json(x)))``
    equals ``canonical_json(x)``. This is not RFC 8785 (JCS): it is stable for this gateway (pinned
    orjson), which is what the hashes need. Only JSON data is accepted: NaN/Infinity (which orjson would
    silently write as ``null``) raise ValueError; datetimes, dataclasses, non-string keys, integers beyond
    64 bits and strings with lone surrogates raise TypeError rather than getting an implicit encoding.
    """
    out = orjson.dumps(obj, option=_CANONICAL_OPTIONS)
    if b"null" in out and _has_non_finite(obj):  # NaN/Infinity come out as null; real FHIR has no null
        raise ValueError("NaN and Infinity have no JSON representation")
    return out


def _has_non_finite(obj: object) -> bool:
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return False
