"""Records that stand alone: every ``reference`` left in a record resolves inside that record.

A record is released on its own consent, so a reference into another record (or to something never stored)
would dangle for its reader, or, if the target were copied in, release another category's data without its
consent. :func:`self_contained` rewrites one record's resources so that neither happens:

* a target among the record's own entries: the reference points at that entry's ``fullUrl``;
* a target that is not patient health data of its own (:data:`COPYABLE`: who and where, Practitioner,
  PractitionerRole, Organization, Location, ...; a Medication, the product a prescription names) and the
  Patient (as :func:`~gateway.fhir.patient.minimal_patient`, never its identifiers): copied into the record as
  an entry with its upload ``fullUrl``, its own references rewritten the same way. Not copied when its codes
  name a sensitive category other than the record's (a Medication that is a contraceptive stays out of a
  ``medications`` record: the code rules of :mod:`~gateway.fhir.categories` decide);
* anything else (another category's clinical data, e.g. an Observation's ``encounter``; a Claim or
  Provenance the upload never stores; a target not in the upload): a *logical* reference, ``reference``
  dropped, ``type`` and the sender's ``display`` kept, and an ``identifier`` naming the target (its upload
  ``fullUrl``, R4's ``urn:ietf:rfc:3986`` system for an absolute URI) so that a reader granted both records
  can still join them.

A reference to the Patient (or a RelatedPerson or Person) loses its ``display``: senders put the patient's
name there, and a name is the ``identifiers`` category's, not the record's.

Copies are entries of the record's Bundle rather than ``contained`` resources: a contained resource may
only be referenced from its one container (R4 dom-3), and the Patient or a Practitioner is shared by every
resource of the record. A ``document`` Bundle is an attested unit and is left exactly as sent; its references
resolve inside the document. Contained references (``#id``) resolve inside their resource and are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.fhir.categories import CATEGORY_BY_TYPE, sensitive_categories
from node_client.vocabulary import Category

__all__ = ["COPYABLE", "Target", "Targets", "self_contained"]

#: Resource types copied into a record that refers to them: directory data (who/where) and Medication.
COPYABLE: Final = frozenset(
    {t for t, c in CATEGORY_BY_TYPE.items() if c == CATEGORY_BY_TYPE["Organization"]} | {"Medication"}
)

_URI: Final = "urn:ietf:rfc:3986"
#: whose ``display`` on a reference is a person's name, released only under ``identifiers``
_IDENTIFYING_TYPES: Final = frozenset({"Patient", "RelatedPerson", "Person"})
#: a literal ``[base/]Type/id[/_history/vid]`` reference; group 1 is the type
_TYPE_ID: Final = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?")


@dataclass(frozen=True, slots=True)
class Target:
    """A resource of the upload as a reference to it sees it: the form a record may carry (the minimal
    Patient for a Patient) and the entry's ``fullUrl``."""

    full_url: str
    resource: Mapping[str, Any]


@dataclass(slots=True)
class Targets:
    """Every resource of an upload (records or not), by ``fullUrl`` and by ``Type/id`` when that is unique."""

    by_url: dict[str, Target] = field(default_factory=dict)
    by_id: dict[str, Target | None] = field(default_factory=dict)  # None: two resources share Type/id

    def add(self, target: Target) -> None:
        self.by_url.setdefault(target.full_url, target)
        rt, rid = target.resource.get("resourceType"), target.resource.get("id")
        if isinstance(rt, str) and isinstance(rid, str):
            key = f"{rt}/{rid}"
            self.by_id[key] = None if key in self.by_id else target

    def find(self, reference: str) -> Target | None:
        """The target of a literal reference: exact ``fullUrl``, else a relative ``Type/id`` (history dropped)."""
        if (found := self.by_url.get(reference)) is not None:
            return found
        if "://" in reference or reference.startswith("urn:"):
            return None
        return self.by_id.get(reference.split("/_history/", 1)[0])


def self_contained(category: Category, entries: Iterable[dict[str, Any]], targets: Targets) -> list[dict[str, Any]]:
    """The record's entries with every reference resolving inside it, copies appended after its own entries.

    The resources are new dicts; the upload's are not changed (one resource may be copied into many records).
    """
    queue = list(entries)
    inside = {e["fullUrl"] for e in queue}

    def resolve(reference: str) -> tuple[Target | None, bool]:
        """The target and whether the record holds it (copying it in if it may)."""
        target = targets.find(reference)
        if target is None or target.full_url in inside:
            return target, target is not None
        if not _copyable(target.resource, category):
            return target, False
        inside.add(target.full_url)
        queue.append({"fullUrl": target.full_url, "resource": target.resource})
        return target, True

    out: list[dict[str, Any]] = []
    for entry in queue:  # grows while copies are found
        res = entry["resource"]
        if res.get("resourceType") != "Bundle":  # a document stays as sent
            res = _rewritten(res, resolve)
        out.append({"fullUrl": entry["fullUrl"], "resource": res})
    return out


def _copyable(resource: Mapping[str, Any], category: Category) -> bool:
    rt = resource.get("resourceType")
    if rt != "Patient" and rt not in COPYABLE:
        return False
    return sensitive_categories(resource) <= {category}


def _rewritten(value: Any, resolve: Callable[[str], tuple[Target | None, bool]]) -> Any:
    """A copy of ``value`` with its References rewritten (recursion is bounded: parse caps nesting at 64)."""
    if isinstance(value, list):
        return [_rewritten(v, resolve) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _rewritten(v, resolve) for k, v in value.items()}
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        target, here = resolve(ref)
        if here and target is not None:
            out["reference"] = target.full_url
        else:
            del out["reference"]
            out.update(_logical(value, ref, target))
        if target is not None and target.resource.get("resourceType") in _IDENTIFYING_TYPES:
            out.pop("display", None)  # "Mr. Abraham100 Jacobs452": a name is the identifiers category's
        elif out.get("type") in _IDENTIFYING_TYPES:
            out.pop("display", None)
    return out


def _logical(reference: Mapping[str, Any], ref: str, target: Target | None) -> dict[str, Any]:
    """``type`` and ``identifier`` of a logical reference to what ``ref`` named (the sender's own kept)."""
    out: dict[str, Any] = {}
    if "type" not in reference:
        if target is not None:
            out["type"] = target.resource["resourceType"]
        elif (literal := _TYPE_ID.fullmatch(ref)) is not None:
            out["type"] = literal[1]
    if "identifier" not in reference:
        url = target.full_url if target is not None else ref
        out["identifier"] = {"system": _URI, "value": url} if ":" in url else {"value": url}
    return out
