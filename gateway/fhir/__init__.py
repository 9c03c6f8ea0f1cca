"""FHIR in: validate an upload, give every resource a data category, group resources into records.

A hospital POSTs one FHIR R4 resource or Bundle (``application/fhir+json``) for one patient. This package
is the gate between that untrusted body and the ledger, one module per step:

* :mod:`~gateway.fhir.validation`: :func:`parse` decodes and validates it, cheap structural checks before
  the expensive model validation, every problem (:mod:`~gateway.fhir.issues`) at its FHIRPath-like location;
* :mod:`~gateway.fhir.categories`: :func:`category_of` decides which consent category governs a resource,
  erring on the protective side (a sensitive code anywhere inside a resource wins over its type);
* :mod:`~gateway.fhir.records`: :func:`group` turns an upload into records, one per category, each with
  its discovery index (:mod:`~gateway.fhir.index`); what is not patient health data is reported as ignored;
  a Patient is split into minimal demographics and identifiers (:mod:`~gateway.fhir.patient`), and each
  record is made to stand alone (:mod:`~gateway.fhir.references`: every reference resolves inside it);
* :mod:`~gateway.fhir.canonical`: :func:`canonical_json` gives the bytes that are hashed and encrypted.

The names below are the package's public surface; import them from here.
"""

from __future__ import annotations

from gateway.fhir.canonical import canonical_json
from gateway.fhir.categories import CATEGORY_BY_TYPE, SENSITIVE_CATEGORIES, category_of, sensitive_categories
from gateway.fhir.index import IndexEntry, index_entry
from gateway.fhir.issues import MAX_ISSUES, FhirIssue, InvalidFhir
from gateway.fhir.records import Grouping, RecordDraft, group, ignore_reason
from gateway.fhir.references import COPYABLE
from gateway.fhir.validation import BUNDLE_TYPES, FHIR_VERSION, R4_ONLY_RESOURCE_TYPES, parse, warm_up

__all__ = [
    "BUNDLE_TYPES",
    "CATEGORY_BY_TYPE",
    "COPYABLE",
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
    "sensitive_categories",
    "warm_up",
]
