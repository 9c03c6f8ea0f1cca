"""Records: an upload grouped into one record per data category (:func:`group`).

One record = the resources of one category from one upload, as a FHIR ``collection`` Bundle, plus an off-chain
index (type, code, date) for discovery. Resources that are not patient health data are reported back as
ignored, never dropped silently.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.fhir.canonical import canonical_json
from gateway.fhir.categories import CATEGORY_BY_TYPE, category_of
from gateway.fhir.identity import identity
from gateway.fhir.index import IndexEntry, index_entry
from gateway.fhir.issues import FhirIssue, InvalidFhir
from gateway.fhir.patient import identifying_patient, minimal_patient, unstored_elements
from gateway.fhir.references import Target, Targets, self_contained
from gateway.fhir.validation import R4_ONLY_RESOURCE_TYPES
from node_client.vocabulary import Category

__all__ = ["Grouping", "RecordDraft", "group", "ignore_reason"]


@dataclass(frozen=True, slots=True)
class RecordDraft:
    """One record before encryption: the resources of one category from one upload.

    ``bundle`` is a FHIR ``collection`` Bundle whose entries keep the sender's ``fullUrl`` when there was
    one; an entry sent without one gets a ``urn:uuid:`` derived from the upload (R4 requires it in a
    collection). Its first ``own`` entries are the category's data; the entries after them are copies of
    what their references need (:func:`~gateway.fhir.references.self_contained`: the minimal Patient,
    Practitioners, Organizations, Locations, Medications), so that every reference resolves inside the record.
    ``resources`` are the own entries' (identity, SHA-256 of the canonical JSON as stored): what an upload
    of the same resources is recognised by (:mod:`~gateway.fhir.identity`).
    """

    category: Category
    bundle: dict[str, Any]
    index: tuple[IndexEntry, ...]
    own: int
    resources: tuple[tuple[str, bytes], ...] = ()


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
      reported in ``ignored`` as (resource type, reason); nothing disappears silently.
    * A Patient is split (:mod:`~gateway.fhir.patient`): its minimal form (sex, birth year, languages) is the
      DEMOGRAPHICS record's, its names, identifiers, contact points and addresses the IDENTIFIERS record's;
      what neither keeps is reported in ``ignored``. The invariant is ``sum(own entries of every record but
      IDENTIFIERS) + len(ignored) == number of entries + Patients with unstored elements`` (a document
      counting as one).
    * Each record then stands alone (:func:`~gateway.fhir.references.self_contained`): what its references
      need is copied in when it is not another category's data, and other references become logical ones.
    """
    entries: dict[Category, list[dict[str, Any]]] = {}
    identities: dict[Category, list[str]] = {}
    index: dict[Category, list[IndexEntry]] = {}
    ignored: list[tuple[str, str]] = []
    refused: list[FhirIssue] = []
    targets = Targets()

    def add(category: Category, res: dict[str, Any], url: str, indexed: Iterable[IndexEntry], sent: Any = None) -> None:
        entries.setdefault(category, []).append({"fullUrl": url, "resource": res})
        identities.setdefault(category, []).append(identity(res if sent is None else sent, url))
        index.setdefault(category, []).extend(indexed)

    for res, full_url, where in _flatten(resource):
        if res is None:
            ignored.append(("BundleEntry", where))  # where = why: "Bundle.entry[2] has no resource (DELETE ...)"
            continue
        url = full_url or _local_full_url(res, where)
        try:
            category = category_of(res)
        except InvalidFhir as exc:
            refused.extend(FhirIssue(where, issue.message) for issue in exc.issues)
            continue
        if res.get("resourceType") == "Patient" and category in (Category.DEMOGRAPHICS, Category.IDENTIFIERS):
            minimal = minimal_patient(res)
            targets.add(Target(url, minimal))
            add(Category.DEMOGRAPHICS, minimal, url, (index_entry(minimal, full_url),), res)
            if (identifying := identifying_patient(res)) is not None:
                add(Category.IDENTIFIERS, identifying, url, (index_entry(identifying, full_url),), res)
            if (unstored := unstored_elements(res)) is not None:
                ignored.append(("Patient", unstored))
            continue
        targets.add(Target(url, res))
        if category is None:
            ignored.append((str(res.get("resourceType")), ignore_reason(res)))
        elif res.get("resourceType") == "Bundle":  # a document, kept whole
            add(category, res, url, (index_entry(r, u) for r, u in _document_resources(res)))
        else:
            add(category, res, url, (index_entry(res, full_url),))

    if refused:
        raise InvalidFhir(refused)
    records = tuple(
        _draft(category, self_contained(category, own, targets), tuple(index[category]), identities[category])
        for category, own in sorted(entries.items())
    )
    return Grouping(records=records, ignored=tuple(ignored))


def _draft(
    category: Category, entries: list[dict[str, Any]], index: tuple[IndexEntry, ...], ids: list[str]
) -> RecordDraft:
    """The record of ``category``: its own entries (one per identity, first) hashed as they are stored."""
    hashes = tuple(
        (i, hashlib.sha256(canonical_json(e["resource"])).digest()) for i, e in zip(ids, entries, strict=False)
    )
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    return RecordDraft(category=category, bundle=bundle, index=index, own=len(ids), resources=hashes)


#: the namespace of the fullUrls given to entries sent without one (a single resource, a transaction's POST)
_FULL_URL_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hcl:record-entry")


def _local_full_url(resource: Mapping[str, Any], where: str) -> str:
    """A ``urn:uuid:`` for an entry sent without a ``fullUrl`` (a collection Bundle's entries must have one):
    derived from the resource's type, id and place in the upload, so the same upload gives the same record."""
    key = f"{where}|{resource.get('resourceType')}/{resource.get('id', '')}"
    return f"urn:uuid:{uuid.uuid5(_FULL_URL_NS, key)}"


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
