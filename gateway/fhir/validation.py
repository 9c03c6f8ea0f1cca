"""Validation: an upload decoded and checked before anything else looks at it (:func:`parse`).

Cheap structural checks (size, nesting depth, entry count, JSON-level FHIR rules, known resource types,
numbers that a double cannot hold) run *before* any model validation, because model validation is the
expensive, recursive part and the body is hostile until proven otherwise. Every problem is reported with a
FHIRPath-like location, not only the first one, so a sender can fix an upload in one round trip.

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
import re
import typing
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

import orjson
from pydantic import ValidationError

from gateway.fhir.categories import CATEGORY_BY_TYPE
from gateway.fhir.issues import FhirIssue, InvalidFhir
from node_client.vocabulary import Category

__all__ = ["BUNDLE_TYPES", "FHIR_VERSION", "R4_ONLY_RESOURCE_TYPES", "parse", "warm_up"]

#: The FHIR release the gateway speaks on the wire (validation uses the wire-compatible R4B models).
FHIR_VERSION: Final = "R4"

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


#: why a search URL in a reference is refused: only a FHIR server processing a transaction resolves one
_CONDITIONAL: Final = (
    "a conditional reference (search URL) only means something to a server that resolves it while processing"
    " a transaction; stored records keep references as sent, so send a literal reference"
    " (urn:uuid:... to an entry of the upload, or Type/id)"
)

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
       arrays), no conditional reference (``Patient?identifier=...``: a search URL, meaningless once
       stored), every ``resourceType`` a known R4 resource type, ``Bundle.type`` a known code, entries of
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
                    elif key == "reference" and kind is str and "?" in child:
                        issues.append(FhirIssue(_render((node, key)), _CONDITIONAL))
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
