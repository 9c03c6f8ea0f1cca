"""gateway.fhir: validation, categories, grouping into records, the discovery index, canonical JSON.

Pure tests (no chain). They run on real FHIR written by others, from ``samples/fhir`` in the
repository (see its SOURCES.md): Synthea R4 patient bundles, the official HL7 R4 examples, and bad
inputs from the HL7 validator's and Microsoft FHIR server's test suites. These files exist in CI too;
nothing is skipped.
"""

from __future__ import annotations

import collections
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import fhir
from gateway.fhir import (
    COPYABLE,
    MAX_ISSUES,
    R4_ONLY_RESOURCE_TYPES,
    FhirIssue,
    IndexEntry,
    InvalidFhir,
    canonical_json,
    category_of,
    group,
    index_entry,
    parse,
    sensitive_categories,
    validation,
)
from node_client.vocabulary import Category

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "fhir"
SYNTHEA = SAMPLES / "synthea"
HL7 = SAMPLES / "hl7-r4"
INVALID = SAMPLES / "invalid"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SRH = Category.SEXUAL_REPRODUCTIVE_HEALTH


def bundle_of(*resources: dict[str, Any], bundle_type: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": [{"resource": r} for r in resources]}


def load(path: Path) -> dict[str, Any]:
    return parse(path.read_bytes())


def issues_of(body: bytes, **kwargs: Any) -> list[FhirIssue]:
    with pytest.raises(InvalidFhir) as caught:
        parse(body, **kwargs)
    assert caught.value.issues, "InvalidFhir must carry issues"
    return caught.value.issues


def paths(body: bytes, **kwargs: Any) -> list[str]:
    return [i.path for i in issues_of(body, **kwargs)]


def entry_count(resource: dict[str, Any]) -> int:
    """Entries as group() counts them: nested non-document Bundles opened up, a document counting one."""
    if resource.get("resourceType") != "Bundle" or resource.get("type") == "document":
        return 1
    total = 0
    for entry in resource.get("entry", ()):
        inner = entry.get("resource")
        total += entry_count(inner) if isinstance(inner, dict) else 1
    return total


def check_grouping(doc: dict[str, Any]) -> fhir.Grouping:
    """The invariants every grouping must satisfy."""
    grouping = group(doc)
    categories = [r.category for r in grouping.records]
    assert categories == sorted(set(categories)), "one record per category, sorted by category bit"
    for record in grouping.records:
        assert record.bundle["resourceType"] == "Bundle" and record.bundle["type"] == "collection"
        assert set(record.bundle) == {"resourceType", "type", "entry"}
        assert record.bundle["entry"], "no empty records"
        own, copies = record.bundle["entry"][: record.own], record.bundle["entry"][record.own :]
        for entry in record.bundle["entry"]:
            assert set(entry) <= {"fullUrl", "resource"}
        for entry in own:  # a Patient's identifying half is the IDENTIFIERS record's
            patient = entry["resource"]["resourceType"] == "Patient" and record.category is Category.IDENTIFIERS
            assert category_of(entry["resource"]) == (Category.DEMOGRAPHICS if patient else record.category)
        check_stands_alone(record.category, record.bundle, copies)
        assert len(record.index) >= record.own
        # what gets hashed and encrypted is valid FHIR again
        assert parse(canonical_json(record.bundle)) == orjson.loads(canonical_json(record.bundle))
    for resource_type, reason in grouping.ignored:
        assert resource_type and reason, "ignored resources carry a type and a reason"
    # a Patient is one entry of DEMOGRAPHICS (its identifying half in IDENTIFIERS) and, when part of it is
    # not stored, also one line of ignored
    stored = sum(r.own for r in grouping.records if r.category is not Category.IDENTIFIERS)
    split = sum(1 for t, why in grouping.ignored if t == "Patient" and why.startswith("not stored:"))
    assert stored + len(grouping.ignored) - split == entry_count(doc), "no resource may be lost"
    return grouping


def references_of(value: Any) -> Iterator[str]:
    """Every ``reference`` string in a resource or Bundle."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(ref := v.get("reference"), str):
                yield ref
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def check_stands_alone(category: Category, bundle: dict[str, Any], copies: list[dict[str, Any]]) -> None:
    """Every reference of a record (outside its documents, which are kept as sent) resolves inside it; copies
    are only the minimal Patient and directory/medication resources; nothing identifies the patient outside
    IDENTIFIERS."""
    inside = {e["fullUrl"] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Bundle":
            continue
        for ref in references_of(res):
            assert ref in inside or ref.startswith("#"), (category, res["resourceType"], ref)
        if res["resourceType"] == "Patient" and category is not Category.IDENTIFIERS:
            assert not set(res) & {"name", "identifier", "telecom", "address", "photo", "contact", "text"}, res
            assert len(res.get("birthDate", "")) <= 4
    for entry in copies:
        res = entry["resource"]
        assert res["resourceType"] == "Patient" or res["resourceType"] in COPYABLE
        assert not (sensitive_categories(res) - {category}), "no other sensitive data copied in"


# --------------------------------------------------------------------------------------------------
# Synthea bundles
# --------------------------------------------------------------------------------------------------

#: file → (Bundle.type, entries, record categories, ignored resource types). Pinned from the files so a
#: change in the rules shows up as a diff here.
SYNTHEA_EXPECTED: dict[str, tuple[str, int, dict[Category, int], dict[str, int]]] = {
    "patient-1-Emmie273_Kovacek682.json": (
        "transaction",
        295,
        {
            Category.DEMOGRAPHICS: 1,
            Category.ALLERGIES: 6,
            Category.MEDICATIONS: 3,
            Category.CONDITIONS: 9,
            Category.LAB_RESULTS: 47,  # 43 laboratory Observations + 4 lab DiagnosticReports
            Category.ENCOUNTERS: 46,  # 33 Encounters + 13 smoking-status surveys
            Category.IMMUNIZATIONS: 16,
            Category.VITAL_SIGNS: 67,
            Category.PROCEDURES: 11,
            Category.CARE_PLANS: 8,  # 3 CarePlans + 5 Goals
            Category.SEXUAL_REPRODUCTIVE_HEALTH: 3,  # NuvaRing, Trinessa, Seasonique prescriptions
            Category.IDENTIFIERS: 1,  # the Patient's names, SSN, MRN, licence, address, phone
        },
        {"Patient": 1, "Organization": 3, "Practitioner": 3, "Claim": 39, "ExplanationOfBenefit": 33},
    ),
    "patient-2-7b4cf3d5.json": (
        "transaction",
        137,
        {
            Category.DEMOGRAPHICS: 1,
            Category.CONDITIONS: 6,
            Category.LAB_RESULTS: 57,
            Category.ENCOUNTERS: 27,  # 8 Encounters + 8 DocumentReferences + 8 note reports + 3 surveys
            Category.IMMUNIZATIONS: 4,
            Category.VITAL_SIGNS: 17,
            Category.PROCEDURES: 9,
            Category.CARE_PLANS: 7,
            Category.IDENTIFIERS: 1,
        },
        {"Patient": 1, "Location": 2, "Organization": 2, "Practitioner": 2, "PractitionerRole": 2, "Provenance": 1},
    ),
    "patient-3-cc3bf71c.json": (
        "transaction",
        192,
        {
            Category.DEMOGRAPHICS: 1,
            Category.MEDICATIONS: 1,
            Category.CONDITIONS: 4,
            Category.LAB_RESULTS: 24,
            Category.ENCOUNTERS: 56,
            Category.IMMUNIZATIONS: 21,
            Category.VITAL_SIGNS: 70,
            Category.PROCEDURES: 6,
            Category.IDENTIFIERS: 1,
        },
        {"Patient": 1, "Location": 2, "Organization": 2, "Practitioner": 2, "PractitionerRole": 2, "Provenance": 1},
    ),
    "edge-batch-Roland928_Nienow652.json": (
        "batch",
        61,
        {Category.DEMOGRAPHICS: 1, Category.ENCOUNTERS: 13, Category.IMMUNIZATIONS: 19, Category.IDENTIFIERS: 1},
        {"Patient": 1, "Organization": 1, "Practitioner": 1, "Claim": 13, "ExplanationOfBenefit": 13},
    ),
}


def test_every_synthea_file_is_covered() -> None:
    assert sorted(p.name for p in SYNTHEA.glob("*.json")) == sorted(SYNTHEA_EXPECTED)


@pytest.mark.parametrize("name", sorted(SYNTHEA_EXPECTED))
def test_synthea_bundle_validates_and_groups(name: str) -> None:
    body = (SYNTHEA / name).read_bytes()
    bundle_type, entries, expected_records, expected_ignored = SYNTHEA_EXPECTED[name]
    parse(body)  # the first call in a process also imports the models it needs

    started = time.perf_counter()
    doc = parse(body)
    parsed = time.perf_counter()
    grouping = group(doc)
    done = time.perf_counter()
    assert check_grouping(doc) == grouping

    records = {r.category: r.own for r in grouping.records}
    ignored = dict(collections.Counter(t for t, _ in grouping.ignored))
    print(
        f"\n{name}: {bundle_type}, {entries} entries; parse {1000 * (parsed - started):.0f} ms,"
        f" group {1000 * (done - parsed):.1f} ms; {len(records)} records"
        f" {[(c.name.lower(), n) for c, n in records.items()]}; ignored {ignored}"
    )
    assert doc["type"] == bundle_type and len(doc["entry"]) == entries
    assert records == expected_records
    assert ignored == expected_ignored
    # generous: ~0.1-0.4 s on a loaded 2-core box; catches an accidental quadratic, not noise
    assert done - started < 3.0
    # fullUrls are kept, so the urn:uuid references inside the upload still resolve inside a record
    kept = {e["fullUrl"] for r in grouping.records for e in r.bundle["entry"]}
    assert kept <= {e["fullUrl"] for e in doc["entry"]} and all(u.startswith("urn:uuid:") for u in kept)


def test_synthea_patient_1_is_about_a_dozen_records() -> None:
    grouping = group(load(SYNTHEA / "patient-1-Emmie273_Kovacek682.json"))
    assert 10 <= len(grouping.records) <= 14


def test_the_edge_batch_bundle_groups_like_a_transaction() -> None:
    doc = load(SYNTHEA / "edge-batch-Roland928_Nienow652.json")
    assert doc["type"] == "batch"
    as_transaction = group({**doc, "type": "transaction"})
    as_batch = group(doc)
    assert as_batch == as_transaction


@pytest.mark.parametrize("name", ["patient-1-Emmie273_Kovacek682.json", "patient-2-7b4cf3d5.json"])
def test_hba1c_is_discoverable_by_loinc_code(name: str) -> None:
    """A clinic looks for the hospital's recent HbA1c (LOINC 4548-4) in the off-chain index."""
    grouping = group(load(SYNTHEA / name))
    hits = [(r.category, e) for r in grouping.records for e in r.index if e.code == "4548-4"]
    assert hits, "the Synthea file has HbA1c Observations"
    for category, entry in hits:
        assert category is Category.LAB_RESULTS
        assert entry.resource_type == "Observation"
        assert entry.code_system == LOINC
        assert entry.display and "A1c" in entry.display
        assert entry.date and entry.date[:4].isdigit() and entry.date[4] == "-"
        assert entry.resource_id
    latest = max(e.date for _, e in hits if e.date)
    print(f"\n{name}: {len(hits)} HbA1c results, latest {latest}")


def test_synthea_contraceptive_prescriptions_are_sexual_reproductive_health() -> None:
    grouping = group(load(SYNTHEA / "patient-1-Emmie273_Kovacek682.json"))
    srh = next(r for r in grouping.records if r.category is Category.SEXUAL_REPRODUCTIVE_HEALTH)
    assert {e.display for e in srh.index} == {
        "NuvaRing 0.12/0.015 MG per 24HR 21 Day Vaginal Ring",
        "Trinessa 28 Day Pack",
        "Seasonique 91 Day Pack",
    }
    meds = next(r for r in grouping.records if r.category is Category.MEDICATIONS)
    assert all(e.code_system == RXNORM for e in meds.index)


# --------------------------------------------------------------------------------------------------
# HL7 R4 examples
# --------------------------------------------------------------------------------------------------

#: file → the categories of its records (a single resource gives one record); an empty set means the
#: resource is not a record and is reported as ignored.
HL7_EXPECTED: dict[str, set[Category]] = {
    "Observation-f001.json": {Category.LAB_RESULTS},  # no category; LOINC glucose
    "Observation-f005.json": {Category.LAB_RESULTS},  # no category; LOINC haemoglobin
    "Immunization-example.json": {Category.IMMUNIZATIONS},
    "ImagingStudy-example.json": {Category.IMAGING},
    "ImagingStudy-example-xr.json": {Category.IMAGING},
    "Composition-example.json": {Category.ENCOUNTERS},
    "Composition-example-mixed.json": {Category.ENCOUNTERS},  # discharge summary
    "Condition-example.json": {Category.CONDITIONS},
    "Condition-f201.json": {Category.CONDITIONS},
    "AllergyIntolerance-example.json": {Category.ALLERGIES},
    "AllergyIntolerance-medication.json": {Category.ALLERGIES},
    "MedicationRequest-medrx002.json": {Category.MEDICATIONS},
    "MedicationRequest-medrx0302.json": {Category.MEDICATIONS},
    "Patient-example.json": {Category.DEMOGRAPHICS, Category.IDENTIFIERS},
    "Patient-f001.json": {Category.DEMOGRAPHICS, Category.IDENTIFIERS},
    "Bundle-father.json": {Category.ENCOUNTERS},  # a document: kept whole
    "Bundle-lipids.json": {Category.LAB_RESULTS},  # DiagnosticReport (HM) + 4 uncategorized LOINC results
    "Bundle-f001.json": {Category.LAB_RESULTS, Category.CARE_PLANS},  # DiagnosticReport + ServiceRequest
    "AuditEvent-example.json": set(),
    "AuditEvent-example-disclosure.json": set(),
    "AuditEvent-example-rest.json": set(),
    "Provenance-example.json": set(),
    "Provenance-consent-signature.json": set(),
    "Provenance-signature.json": set(),
}
HL7_EXPECTED.update({p.name: set() for p in (HL7 / "consent").glob("*.json")})  # consent lives on the ledger


def test_every_hl7_example_is_covered() -> None:
    names = {p.name for p in HL7.rglob("*.json")} - {"package.json"}
    assert names == set(HL7_EXPECTED)


@pytest.mark.parametrize("name", sorted(HL7_EXPECTED))
def test_hl7_example_maps_to_its_category(name: str) -> None:
    path = next(HL7.rglob(name))
    grouping = check_grouping(load(path))
    assert {r.category for r in grouping.records} == HL7_EXPECTED[name]
    if not HL7_EXPECTED[name]:
        ((resource_type, reason),) = grouping.ignored
        assert resource_type == orjson.loads(path.read_bytes())["resourceType"]
        assert "not patient health data" in reason or "ledger" in reason


def test_document_bundle_is_one_encounter_record_indexed_resource_by_resource() -> None:
    doc = load(HL7 / "Bundle-father.json")
    (record,) = group(doc).records
    assert record.category is Category.ENCOUNTERS
    assert [e["resource"] for e in record.bundle["entry"]] == [doc]  # the document itself, untouched
    types = [e.resource_type for e in record.index]
    assert types == [
        "Composition",
        "Practitioner",
        "Patient",
        "Encounter",
        "Observation",
        "MedicationRequest",
        "MedicationStatement",
        "AllergyIntolerance",
    ]
    composition = record.index[0]
    assert (composition.code_system, composition.code) == (LOINC, "28655-9")
    assert composition.date == "2013-02-01T12:30:02Z"


def test_lipid_panel_is_one_lab_record_with_fullurls() -> None:
    doc = load(HL7 / "Bundle-lipids.json")
    (record,) = group(doc).records
    assert [e["fullUrl"] for e in record.bundle["entry"]] == [e["fullUrl"] for e in doc["entry"]]
    assert [e.code for e in record.index] == ["24331-1", "35200-5", "35217-9", "2085-9", "13457-7"]


def test_medication_from_a_contained_resource_is_indexed() -> None:
    (record,) = group(load(HL7 / "MedicationRequest-medrx0302.json")).records
    (entry,) = record.index
    assert entry.resource_type == "MedicationRequest"
    assert (entry.code_system, entry.code) == (SNOMED, "324252006")  # the contained Medication's code
    assert entry.date == "2015-01-15"


# --------------------------------------------------------------------------------------------------
# Bad inputs from the HL7 validator and Microsoft FHIR server test suites
# --------------------------------------------------------------------------------------------------

#: file → the issue paths if rejected, or None if the R4B models (plus our checks) accept it. Every
#: accepted file says why, because each was written as a negative test by someone.
INVALID_EXPECTED: dict[str, list[str] | None] = {
    # malformed JSON (']' where '}' belongs): the parser's message, at the document
    "fhir-test-cases/bad-json-close-1.json": ["$"],
    # ACCEPTED: base64 content is not checked by fhir.resources (nor by us), and the HL7 validator's
    # error is about the '!' inside Attachment.data. It is a Parameters resource, so group() ignores it
    # anyway; nothing of it would be stored.
    "fhir-test-cases/base64-ws-r4-bad-char.json": None,
    # REJECTED, but not for the validator's reason: the relative fullUrls ('Patient/1') it complains
    # about are not checked (fhir.resources has no Bundle invariants); RelatedPerson.patient is 1..1 in
    # R4, and the models do check that.
    "fhir-test-cases/bundle-duplicate-id.json": ["Bundle.entry[1].resource.patient"],
    # ACCEPTED: the validator's expected outcomes are valid OperationOutcomes (CRLF line ends); they are
    # protocol resources, ignored by group()
    "fhir-test-cases/expected-outcomes/R4.bad-json-close-base.json": None,
    "fhir-test-cases/expected-outcomes/R4.base64-ws-bad-char-base.json": None,
    "fhir-test-cases/expected-outcomes/R4.bundle-duplicate-id-base.json": None,
    # Bundle.type outside its required value set: checked by us (grouping depends on it)
    "microsoft-fhir-server/Bundle-InvalidBundleType.json": ["Bundle.type"],
    # "Patientt?identifier=12345" is a conditional reference (a search URL, here to an unknown type): only a
    # server processing the transaction resolves one, a stored record would keep it dangling (issue 20)
    "microsoft-fhir-server/Bundle-TransactionWithInvalidResourceType.json": [
        "Bundle.entry[0].resource.subject.reference"
    ],
    # ACCEPTED: valid R4 (a DELETE entry without a resource); the entry is reported as ignored
    "microsoft-fhir-server/Bundle-TransactionWithResourcelessEntry.json": None,
    # Observation.text is a string, not a Narrative, and '_text' is not an element of Observation
    "microsoft-fhir-server/InvalidObservation.json": ["Observation.text", "Observation._text"],
    # 29 significant digits cannot be stored exactly as a double: refused rather than altered
    "microsoft-fhir-server/ObservationWithInvalidDecimalSpecification.json": ["Observation.valueQuantity.value"],
    # resourceType ""
    "microsoft-fhir-server/PatientMissingResourceType.json": ["$.resourceType"],
    # 'name1' is not an element of Patient (so its 'use1' is never reached); the malformed
    # identifier.system URI 'http:/example.org/fhir/ids' is not detected by the models
    "microsoft-fhir-server/PatientWithUnknownElements.json": ["Patient.name1"],
}


def test_every_invalid_file_is_covered() -> None:
    names = {p.relative_to(INVALID).as_posix() for p in INVALID.rglob("*.json")}
    assert names == set(INVALID_EXPECTED)


@pytest.mark.parametrize("name", sorted(INVALID_EXPECTED))
def test_invalid_sample_outcome_is_pinned(name: str) -> None:
    body = (INVALID / name).read_bytes()
    expected = INVALID_EXPECTED[name]
    if expected is None:
        check_grouping(parse(body))
    else:
        issues = issues_of(body)
        assert [i.path for i in issues] == expected
        assert all(i.message for i in issues)


def test_resourceless_transaction_entry_is_reported_as_ignored() -> None:
    doc = load(INVALID / "microsoft-fhir-server/Bundle-TransactionWithResourcelessEntry.json")
    grouping = check_grouping(doc)
    assert [r.category for r in grouping.records] == [Category.DEMOGRAPHICS, Category.IDENTIFIERS]
    assert grouping.ignored[0][0] == "Patient" and grouping.ignored[0][1].startswith("not stored: managingOrganization")
    assert grouping.ignored[1:] == (
        ("Organization", fhir.CATEGORY_BY_TYPE["Organization"]),
        ("BundleEntry", "Bundle.entry[2] has no resource (DELETE Patient/does-not-exist)"),
    )


# --------------------------------------------------------------------------------------------------
# hostile and malformed input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b'{"resourceType": "Patient",}', "invalid JSON"),
        (b"\xff\xfe{}", "invalid JSON"),
        (b"NaN", "invalid JSON"),
        (b'{"resourceType":"Observation","valueQuantity":{"value":1e400}}', "invalid JSON"),
        (b"[]", "not an array"),
        (b'"Patient"', "not a string"),
        (b"42", "not a number"),
        (b"null", "not null"),
        (b'{"id": "x"}', "resourceType"),
    ],
)
def test_malformed_json_is_an_issue_at_the_document(body: bytes, fragment: str) -> None:
    (issue,) = issues_of(body)
    assert issue.path in ("$", "$.resourceType")
    assert fragment in issue.message


def test_a_byte_order_mark_is_tolerated() -> None:
    assert parse(b'\xef\xbb\xbf{"resourceType": "Patient"}') == {"resourceType": "Patient"}


@pytest.mark.parametrize("wrap", [b"%s", b'{"resourceType": "Patient", "extension": %s}'])
def test_depth_bomb_is_rejected_quickly_without_recursion(wrap: bytes) -> None:
    bomb = wrap % (b"[" * 10_000 + b"]" * 10_000)
    started = time.perf_counter()
    (issue,) = issues_of(bomb)
    assert time.perf_counter() - started < 1.0
    assert issue.path == "$" and "nesting too deep" in issue.message


def test_nesting_within_the_parser_limit_is_checked_by_the_walk() -> None:
    body = b'{"resourceType": "Patient", "extension": ' + b"[" * 100 + b"]" * 100 + b"}"
    (issue,) = issues_of(body)
    assert issue.path.startswith("Patient.extension[0][0]") and "deeper than 64" in issue.message
    nested = orjson.dumps({"resourceType": "Patient", "name": [{"given": ["a"]}]})
    assert parse(nested, max_depth=4)
    assert paths(nested, max_depth=3) == ["Patient.name[0].given"]


def test_a_huge_bundle_is_rejected_by_count_before_validation() -> None:
    entry = b'{"resource": {"resourceType": "Patient", "unknownElement": true}}'
    body = b'{"resourceType": "Bundle", "type": "collection", "entry": [' + b",".join([entry] * 100_000) + b"]}"
    started = time.perf_counter()
    (issue,) = issues_of(body)
    assert time.perf_counter() - started < 2.0  # orjson decoding is most of it; no model ran
    assert issue.path == "Bundle.entry" and "100000 entries" in issue.message


def test_nested_bundles_count_against_the_entry_limit() -> None:
    inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}] * 6}
    outer = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}] * 2})
    assert parse(outer, max_entries=14)
    assert paths(outer, max_entries=13) == ["Bundle.entry[1].resource.entry"]


@pytest.mark.parametrize(
    "text",
    [
        "\u202eevil\u202c",  # right-to-left override
        "שלום עולם",  # RTL script
        "zero\u200bwidth\u200d\ufeff",  # zero-width space/joiner, BOM inside a string
        "👩‍⚕️ 🇨🇳 😀",  # emoji, ZWJ sequence, flag
        "e\u0301\u0301\u0301",  # stacked combining marks
        "张三",
        "tab\tnew\nline",
        "nul\u0000byte",  # FHIR says SHOULD NOT; the models accept it, so do we
    ],
)
def test_unicode_strings_are_accepted_and_survive_canonicalization(text: str) -> None:
    doc = {"resourceType": "Patient", "name": [{"text": text}]}
    parsed = parse(orjson.dumps(doc))
    assert parsed == doc
    assert orjson.loads(canonical_json(parsed))["name"][0]["text"] == text
    if all(ord(c) >= 0x20 for c in text):  # JSON escapes control characters; everything else is raw UTF-8
        assert text.encode() in canonical_json(parsed)


@pytest.mark.parametrize(
    "escaped",
    [rb"\ud800", rb"\udfff", rb"x\ud800y", rb"\ud800\u0041", rb"\udc00\ud800"],
)
def test_lone_surrogate_escapes_are_a_clean_issue(escaped: bytes) -> None:
    body = b'{"resourceType": "Patient", "name": [{"text": "' + escaped + b'"}]}'
    (issue,) = issues_of(body)
    assert issue.path == "$" and "surrogate" in issue.message


def test_a_surrogate_pair_escape_is_an_ordinary_character() -> None:
    doc = parse(rb'{"resourceType": "Patient", "name": [{"text": "\ud83d\ude00"}]}')
    assert doc["name"][0]["text"] == "😀"


def test_fhir_json_rules_the_models_do_not_check() -> None:
    body = orjson.dumps({"resourceType": "Patient", "active": None, "name": [], "contact": [{}]})
    assert [(i.path, i.message.split(":")[0]) for i in issues_of(body)] == [
        ("Patient.active", "null"),
        ("Patient.name", "empty array"),
        ("Patient.contact[0]", "empty object"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "Foo",
        "CodeableConcept",
        "BundleEntry",
        "Resource",
        "DomainResource",
        "patient",
        "__class__",
        "Patient; DROP",
        "P" * 200,
    ],
)
def test_unknown_resource_types_are_issues_everywhere(name: str) -> None:
    top = orjson.dumps({"resourceType": name})
    assert paths(top)[0].endswith(".resourceType")
    in_entry = orjson.dumps(bundle_of({"resourceType": name}))
    assert paths(in_entry) == ["Bundle.entry[0].resource.resourceType"]
    contained = orjson.dumps({"resourceType": "Patient", "contained": [{"resourceType": name}]})
    assert paths(contained) == ["Patient.contained[0].resourceType"]


def test_every_issue_is_reported_with_its_entry_path() -> None:
    body = orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "birthDate": "1970-13-01"}},
                {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Observation", "code": {"text": "x"}}},
                {
                    "fullUrl": "urn:uuid:3",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "x"},
                        "valueQuantity": {"value": "abc"},
                    },
                },
                {"fullUrl": "urn:uuid:4", "resource": {"resourceType": "Patient", "name": [{"given": [1]}]}},
            ],
        }
    )
    issues = issues_of(body)
    assert [i.path for i in issues] == [
        "Bundle.entry[0].resource.birthDate",
        "Bundle.entry[1].resource.status",
        "Bundle.entry[2].resource.valueQuantity.value",
        "Bundle.entry[3].resource.name[0].given[0]",
    ]
    assert issues[1].message == "required element is missing"


@pytest.mark.parametrize("bundle_type", sorted(fhir.BUNDLE_TYPES))
def test_every_bundle_type_is_validated_entry_by_entry(bundle_type: str) -> None:
    bad = {"resourceType": "Bundle", "type": bundle_type, "entry": [{"resource": {"resourceType": "Patient", "x": 1}}]}
    assert paths(orjson.dumps(bad)) == ["Bundle.entry[0].resource.x"]
    good = {**bad, "entry": [{"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Patient"}}]}
    assert parse(orjson.dumps(good)) == good


def test_bundle_level_errors_keep_bundle_paths() -> None:
    bundle = bundle_of({"resourceType": "Patient"})
    bundle["entry"][0]["fullUrl"] = 3
    body = orjson.dumps(bundle)
    assert paths(body) == ["Bundle.entry[0].fullUrl"]
    assert paths(orjson.dumps({"resourceType": "Bundle"})) == ["Bundle.type"]


def test_issues_are_capped() -> None:
    entries = [{"resource": {"resourceType": "Patient", "bogus": i}} for i in range(150)]
    issues = issues_of(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    assert len(issues) == MAX_ISSUES
    assert issues[-2].path == f"Bundle.entry[{MAX_ISSUES - 2}].resource.bogus"
    assert issues[-1] == FhirIssue("$", "… and 51 more issue(s)")


def test_invalid_fhir_carries_its_issues() -> None:
    exc = InvalidFhir([FhirIssue("Patient.x", "unknown element")])
    assert exc.issues == [FhirIssue("Patient.x", "unknown element")]
    assert "Patient.x" in str(exc)


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        (b"0.1", True),
        (b"1.50", True),  # value kept; the trailing zero is not
        (b"-70.97897077353436", True),  # 16 digits that a double holds exactly (Synthea)
        (b"449.66400000000004", True),  # 17 digits, exact
        (b"0.30000000000000004", True),
        (b"9007199254740993", True),  # an integer: orjson keeps 64-bit integers exactly
        (b"18446744073709551615", True),
        (b"18446744073709551616", False),  # beyond 64 bits: would become a float
        (b"0.12345678901234567890", False),
        (b"1234567890123456789.0123456789", False),
    ],
)
def test_numbers_that_a_double_would_alter_are_refused(number: bytes, ok: bool) -> None:
    body = b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": %s}}'
    if ok:
        parse(body % number)
    else:
        assert paths(body % number) == ["Observation.valueQuantity.value"]


def test_long_digit_strings_are_not_numbers() -> None:
    body = b'{"resourceType": "Patient", "identifier": [{"value": "1234567890123456789.0123456789"}]}'
    assert parse(body)["identifier"][0]["value"] == "1234567890123456789.0123456789"


def test_r4_only_types_are_accepted_as_entries_and_ignored() -> None:
    product = {"resourceType": "MedicinalProduct", "id": "p"}
    bundle = bundle_of({"resourceType": "Patient"}, product)
    grouping = check_grouping(parse(orjson.dumps(bundle)))
    assert [r.category for r in grouping.records] == [Category.DEMOGRAPHICS]
    assert grouping.ignored[0][0] == "MedicinalProduct" and "R4B" in grouping.ignored[0][1]
    assert group(parse(orjson.dumps(product))).ignored[0][0] == "MedicinalProduct"
    contained = orjson.dumps({"resourceType": "Patient", "contained": [product]})
    assert paths(contained) == ["Patient.contained[0].resourceType"]


@pytest.mark.parametrize(
    "path",
    sorted([*SYNTHEA.glob("*.json"), *(p for p in HL7.rglob("*.json") if p.name != "package.json")]),
    ids=lambda p: p.name,
)
def test_r4_samples_validate_against_the_r4b_models_as_they_are(path: Path) -> None:
    """The R4B-for-R4 claim on its own, without our pre-checks: the models accept every valid R4 sample."""
    from fhir.resources.R4B import get_fhir_model_class

    doc = orjson.loads(path.read_bytes())
    get_fhir_model_class(doc["resourceType"]).model_validate(doc)


def test_r4_only_types_really_have_no_r4b_model() -> None:
    """The R4/R4B claim, checked against the installed models."""
    for name in R4_ONLY_RESOURCE_TYPES:
        assert not validation._is_resource_type(name), name
    for name in ("Patient", "Observation", "Bundle", "Composition", "MolecularSequence", "Media", "DeviceMetric"):
        assert validation._is_resource_type(name), name


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "resourceType",
                        "id",
                        "entry",
                        "resource",
                        "name",
                        "code",
                        "status",
                        "type",
                        "value",
                        "contained",
                        "text",
                        "fullUrl",
                    ]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=25,
    ),
    st.sampled_from(["Patient", "Observation", "Bundle", "Condition", "Foo", "MedicinalProduct"]),
)
def test_parse_only_ever_raises_invalid_fhir(value: object, resource_type: str) -> None:
    doc: dict[str, Any] = {"resourceType": resource_type}
    doc.update(value if isinstance(value, dict) else {"x": value})
    try:
        parsed = parse(orjson.dumps(doc))
    except InvalidFhir as exc:
        assert exc.issues and all(isinstance(i.path, str) and i.message for i in exc.issues)
    else:
        check_grouping(parsed)


# --------------------------------------------------------------------------------------------------
# categories
# --------------------------------------------------------------------------------------------------


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]}


def obs(cat: str | None, system: str = LOINC, code: str = "15074-8", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": concept(system, code)}
    if cat:
        resource["category"] = [concept(OBS_CAT, cat)]
    return resource | extra


def report(*categories: tuple[str, str], code: str = "58410-2", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "DiagnosticReport", "status": "final", "code": concept(LOINC, code)}
    if categories:
        resource["category"] = [concept(s, c) for s, c in categories]
    return resource | extra


CATEGORY_CASES: list[tuple[str, dict[str, Any], Category | None]] = [
    ("patient", {"resourceType": "Patient"}, Category.DEMOGRAPHICS),
    ("allergy", {"resourceType": "AllergyIntolerance"}, Category.ALLERGIES),
    *[
        (t.lower(), {"resourceType": t}, Category.MEDICATIONS)
        for t in (
            "Medication",
            "MedicationRequest",
            "MedicationStatement",
            "MedicationAdministration",
            "MedicationDispense",
        )
    ],
    ("condition", {"resourceType": "Condition", "code": concept(SNOMED, "44054006")}, Category.CONDITIONS),
    ("condition icd-10 J45", {"resourceType": "Condition", "code": concept(ICD10, "J45.9")}, Category.CONDITIONS),
    ("depression icd-10", {"resourceType": "Condition", "code": concept(ICD10, "F32.9")}, Category.MENTAL_HEALTH),
    (
        "alcohol icd-10-cm",
        {"resourceType": "Condition", "code": concept("http://hl7.org/fhir/sid/icd-10-cm", "F10.20")},
        Category.MENTAL_HEALTH,
    ),
    ("depression snomed", {"resourceType": "Condition", "code": concept(SNOMED, "370143000")}, Category.MENTAL_HEALTH),
    (
        "second coding decides",
        {
            "resourceType": "Condition",
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}, {"system": ICD10, "code": "F41.1"}]},
        },
        Category.MENTAL_HEALTH,
    ),
    ("pregnancy snomed", {"resourceType": "Condition", "code": concept(SNOMED, "72892002")}, SRH),
    ("delivery icd-10 O80", {"resourceType": "Condition", "code": concept(ICD10, "O80")}, SRH),
    ("pregnancy supervision Z34", {"resourceType": "Condition", "code": concept(ICD10, "Z34.00")}, SRH),
    ("chlamydia A56", {"resourceType": "Condition", "code": concept(ICD10, "A56.0")}, SRH),
    ("infertility N97", {"resourceType": "Condition", "code": concept(ICD10, "N97.9")}, SRH),
    ("Z23 is not reproductive", {"resourceType": "Condition", "code": concept(ICD10, "Z23")}, Category.CONDITIONS),
    ("laboratory", obs("laboratory"), Category.LAB_RESULTS),
    ("vital-signs", obs("vital-signs", code="8867-4"), Category.VITAL_SIGNS),
    ("imaging", obs("imaging"), Category.IMAGING),
    ("activity (wearable)", obs("activity", code="55423-8"), Category.VITAL_SIGNS),
    ("procedure", obs("procedure"), Category.PROCEDURES),
    ("survey", obs("survey", code="72166-2"), Category.ENCOUNTERS),
    ("social-history", obs("social-history", code="72166-2"), Category.ENCOUNTERS),
    ("exam", obs("exam"), Category.ENCOUNTERS),
    (
        "STU3 category system",
        obs(None, category=[concept("http://hl7.org/fhir/observation-category", "vital-signs")]),
        Category.VITAL_SIGNS,
    ),
    ("no category, lab LOINC", obs(None), Category.LAB_RESULTS),
    ("no category, vital-sign LOINC", obs(None, code="8867-4"), Category.VITAL_SIGNS),
    (
        "no category, wearable device",
        obs(None, "http://example.org/steps", "steps", device={"reference": "Device/w"}),
        Category.VITAL_SIGNS,
    ),
    ("no category, local code", obs(None, "http://example.org/codes", "x"), Category.LAB_RESULTS),
    ("PHQ-9 survey", obs("survey", code="44261-6"), Category.MENTAL_HEALTH),
    ("GAD-7 survey", obs("survey", code="70274-6"), Category.MENTAL_HEALTH),
    ("pregnancy test", obs("laboratory", code="2106-3"), SRH),
    ("sexual orientation", obs("social-history", code="76690-7"), SRH),
    ("genetic variant", obs("laboratory", code="69548-6"), Category.GENOMICS),
    ("report LAB", report((V2_0074, "LAB")), Category.LAB_RESULTS),
    ("report HM", report((V2_0074, "HM")), Category.LAB_RESULTS),
    ("report RAD", report((V2_0074, "RAD")), Category.IMAGING),
    ("report CT", report((V2_0074, "CT")), Category.IMAGING),
    ("report GE", report((V2_0074, "GE")), Category.GENOMICS),
    ("report GE wins over LAB", report((V2_0074, "LAB"), (V2_0074, "GE")), Category.GENOMICS),
    ("report LOINC radiology", report((LOINC, "LP29684-5")), Category.IMAGING),
    ("report LOINC pathology", report((LOINC, "LP7839-6")), Category.LAB_RESULTS),
    ("report clinical note", report((LOINC, "34117-2"), (LOINC, "51847-2"), code="34117-2"), Category.ENCOUNTERS),
    ("report no category", report(), Category.LAB_RESULTS),
    ("report with imaging study", report(imagingStudy=[{"reference": "ImagingStudy/1"}]), Category.IMAGING),
    ("report genetics code", report(code="51969-4"), Category.GENOMICS),
    ("imaging study", {"resourceType": "ImagingStudy"}, Category.IMAGING),
    *[
        (t.lower(), {"resourceType": t}, Category.ENCOUNTERS)
        for t in ("Encounter", "Composition", "DocumentReference", "ClinicalImpression")
    ],
    ("immunization", {"resourceType": "Immunization"}, Category.IMMUNIZATIONS),
    ("procedure resource", {"resourceType": "Procedure", "code": concept(SNOMED, "430193006")}, Category.PROCEDURES),
    ("vasectomy", {"resourceType": "Procedure", "code": concept(SNOMED, "22523008")}, SRH),
    *[
        (t.lower(), {"resourceType": t}, Category.CARE_PLANS)
        for t in ("CarePlan", "Goal", "CareTeam", "ServiceRequest")
    ],
    ("molecular sequence", {"resourceType": "MolecularSequence"}, Category.GENOMICS),
    ("device", {"resourceType": "Device"}, Category.VITAL_SIGNS),
    ("device metric", {"resourceType": "DeviceMetric"}, Category.VITAL_SIGNS),
    (
        "contraceptive prescription",
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": concept(RXNORM, "1367439")},
        SRH,
    ),
    (
        "contained contraceptive",
        {
            "resourceType": "MedicationRequest",
            "medicationReference": {"reference": "#m"},
            "contained": [{"resourceType": "Medication", "id": "m", "code": concept(RXNORM, "807283")}],
        },
        SRH,
    ),
    (
        "ordinary prescription",
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": concept(RXNORM, "313782")},
        Category.MEDICATIONS,
    ),
    ("document bundle", {"resourceType": "Bundle", "type": "document"}, Category.ENCOUNTERS),
    ("collection bundle", {"resourceType": "Bundle", "type": "collection"}, None),
    *[
        (t.lower(), {"resourceType": t}, None)
        for t in (
            "Organization",
            "Practitioner",
            "PractitionerRole",
            "Location",
            "Provenance",
            "Claim",
            "ExplanationOfBenefit",
            "Coverage",
            "AuditEvent",
            "Consent",
            "QuestionnaireResponse",
            "Basic",
            "MedicinalProduct",
        )
    ],
    ("no resourceType", {"id": "x"}, None),
]


@pytest.mark.parametrize(("resource", "expected"), [c[1:] for c in CATEGORY_CASES], ids=[c[0] for c in CATEGORY_CASES])
def test_category_of(resource: dict[str, Any], expected: Category | None) -> None:
    assert category_of(resource) == expected


def test_every_not_a_record_has_a_reason() -> None:
    for resource_type in ("Organization", "Claim", "Provenance", "Consent", "QuestionnaireResponse", "Basic"):
        reason = fhir.ignore_reason({"resourceType": resource_type})
        assert reason and (resource_type in reason or "not" in reason)


# --------------------------------------------------------------------------------------------------
# grouping and the index
# --------------------------------------------------------------------------------------------------


def test_a_single_resource_is_a_one_entry_record() -> None:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01"}
    (record,) = check_grouping(patient).records
    (entry,) = record.bundle["entry"]
    assert entry["resource"] == {**patient, "birthDate": "1970"}  # demographics keep the birth year only
    # R4 wants a fullUrl on every entry of a collection: one derived from the upload, the same on a retry
    assert uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:")).version == 5
    assert check_grouping(dict(patient)).records[0].bundle["entry"][0]["fullUrl"] == entry["fullUrl"]
    assert record.index == (IndexEntry("Patient", "p", None, None, None, "1970"),)


def test_nested_bundles_are_flattened_and_nested_documents_kept_whole() -> None:
    document = orjson.loads((HL7 / "Bundle-father.json").read_bytes())
    lipids = orjson.loads((HL7 / "Bundle-lipids.json").read_bytes())
    outer = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:doc", "resource": document},
            {"fullUrl": "urn:uuid:set", "resource": lipids},
            {"fullUrl": "urn:uuid:org", "resource": {"resourceType": "Organization", "name": "H"}},
        ],
    }
    grouping = check_grouping(parse(orjson.dumps(outer)))
    by_category = {r.category: r for r in grouping.records}
    assert set(by_category) == {Category.LAB_RESULTS, Category.ENCOUNTERS}
    assert by_category[Category.ENCOUNTERS].bundle["entry"] == [{"fullUrl": "urn:uuid:doc", "resource": document}]
    assert len(by_category[Category.LAB_RESULTS].bundle["entry"]) == 5
    assert [t for t, _ in grouping.ignored] == ["Organization"]


def test_grouping_preserves_order_within_a_record_and_sorts_records() -> None:
    entries = [
        {"fullUrl": f"urn:uuid:{i}", "resource": r}
        for i, r in enumerate(
            [
                obs("vital-signs", code="8867-4"),
                {"resourceType": "Patient"},
                obs("laboratory"),
                obs("vital-signs", code="8310-5"),
            ]
        )
    ]
    grouping = check_grouping({"resourceType": "Bundle", "type": "collection", "entry": entries})
    assert [r.category for r in grouping.records] == [Category.DEMOGRAPHICS, Category.LAB_RESULTS, Category.VITAL_SIGNS]
    assert [e["fullUrl"] for e in grouping.records[2].bundle["entry"]] == ["urn:uuid:0", "urn:uuid:3"]


INDEX_CASES: list[tuple[dict[str, Any], tuple[str | None, str | None, str | None, str | None]]] = [
    # resource → (system, code, display, date)
    (
        {
            "resourceType": "Observation",
            "code": concept(LOINC, "4548-4", "Hemoglobin A1c"),
            "effectivePeriod": {"start": "2020-01-02"},
            "issued": "2020-01-03T00:00:00Z",
        },
        (LOINC, "4548-4", "Hemoglobin A1c", "2020-01-02"),
    ),
    (
        {"resourceType": "DiagnosticReport", "code": {"text": "CBC"}, "issued": "2020-01-03T00:00:00Z"},
        (None, None, "CBC", "2020-01-03T00:00:00Z"),
    ),
    (
        {"resourceType": "Condition", "code": concept(SNOMED, "1"), "onsetDateTime": "2001", "recordedDate": "2002"},
        (SNOMED, "1", None, "2001"),
    ),
    ({"resourceType": "Condition", "code": concept(SNOMED, "1"), "recordedDate": "2002"}, (SNOMED, "1", None, "2002")),
    (
        {
            "resourceType": "Immunization",
            "vaccineCode": concept("http://hl7.org/fhir/sid/cvx", "140"),
            "occurrenceDateTime": "2015-05-01",
            "recorded": "2015-06-01",
        },
        ("http://hl7.org/fhir/sid/cvx", "140", None, "2015-05-01"),
    ),
    (
        {
            "resourceType": "MedicationRequest",
            "medicationCodeableConcept": concept(RXNORM, "313782", "Acetaminophen"),
            "authoredOn": "2019-02-03",
        },
        (RXNORM, "313782", "Acetaminophen", "2019-02-03"),
    ),
    (
        {
            "resourceType": "Procedure",
            "code": concept(SNOMED, "2"),
            "performedPeriod": {"start": "2018-01-01T10:00:00Z"},
        },
        (SNOMED, "2", None, "2018-01-01T10:00:00Z"),
    ),
    (
        {
            "resourceType": "Encounter",
            "type": [concept(SNOMED, "185349003", "Check up")],
            "period": {"start": "2017-01-01"},
            "class": {"system": "x", "code": "AMB"},
        },
        (SNOMED, "185349003", "Check up", "2017-01-01"),
    ),
    ({"resourceType": "Encounter", "class": {"system": "x", "code": "AMB"}}, ("x", "AMB", None, None)),
    (
        {"resourceType": "DocumentReference", "type": concept(LOINC, "18842-5"), "date": "2016-01-01T00:00:00Z"},
        (LOINC, "18842-5", None, "2016-01-01T00:00:00Z"),
    ),
    (
        {
            "resourceType": "ImagingStudy",
            "modality": [{"system": DCM, "code": "CT"}],
            "started": "2011-01-01T11:01:20+03:00",
        },
        (DCM, "CT", None, "2011-01-01T11:01:20+03:00"),
    ),
    (
        {"resourceType": "Goal", "description": {"text": "HbA1c < 7"}, "startDate": "2014-09-01"},
        (None, None, "HbA1c < 7", "2014-09-01"),
    ),
    (
        {
            "resourceType": "CarePlan",
            "category": [concept(SNOMED, "698360004")],
            "period": {"start": "2014"},
            "created": "2013",
        },
        (SNOMED, "698360004", None, "2014"),
    ),
    (
        {
            "resourceType": "AllergyIntolerance",
            "code": concept(SNOMED, "3"),
            "recordedDate": "2014-10-09T14:58:00+11:00",
        },
        (SNOMED, "3", None, "2014-10-09T14:58:00+11:00"),
    ),
    ({"resourceType": "Patient", "birthDate": "1974-12-25"}, (None, None, None, "1974-12-25")),
    (
        {
            "resourceType": "Composition",
            "type": concept(LOINC, "11488-4", "Consult note"),
            "date": "2012-01-04T09:10:14Z",
        },
        (LOINC, "11488-4", "Consult note", "2012-01-04T09:10:14Z"),
    ),
    ({"resourceType": "MolecularSequence", "type": "dna"}, (None, None, None, None)),
]


@pytest.mark.parametrize(("resource", "expected"), INDEX_CASES, ids=[c[0]["resourceType"] for c in INDEX_CASES])
def test_index_entry(resource: dict[str, Any], expected: tuple[str | None, ...]) -> None:
    entry = index_entry(resource)
    assert (entry.code_system, entry.code, entry.display, entry.date) == expected
    assert entry.resource_type == resource["resourceType"]


def test_index_resource_id_falls_back_to_the_full_url() -> None:
    assert index_entry({"resourceType": "Patient", "id": "p"}, "urn:uuid:x").resource_id == "p"
    assert index_entry({"resourceType": "Patient"}, "urn:uuid:x").resource_id == "urn:uuid:x"
    assert index_entry({"resourceType": "Patient"}).resource_id is None


# --------------------------------------------------------------------------------------------------
# sensitive data nested anywhere: documents, contained resources, nested Bundles (security review,
# finding 1: a discharge-summary document holding a depression diagnosis was filed as `encounters`)
# --------------------------------------------------------------------------------------------------

MDD_CODE, PHQ9_CODE = "370143000", "44261-6"
FATHER_PATIENT = {"reference": "http://fhir.healthintersections.com.au/open/Patient/d1"}


def mdd_condition(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "code": {
            "coding": [{"system": SNOMED, "code": MDD_CODE, "display": "Major depressive disorder"}],
            "text": "Major depressive disorder",
        },
        "subject": FATHER_PATIENT,
        "onsetDateTime": "2012-11-01",
    } | extra


def phq9_observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [concept(OBS_CAT, "survey")],
        "code": {
            "coding": [{"system": LOINC, "code": PHQ9_CODE, "display": "PHQ-9 total score"}],
            "text": "PHQ-9 total score",
        },
        "subject": FATHER_PATIENT,
        "effectiveDateTime": "2013-02-01",
        "valueQuantity": {"value": 23, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
    } | extra


def father_with_depression() -> dict[str, Any]:
    """The spec's discharge-summary document (Bundle-father.json) plus what the reviewer added: a Condition
    "Major depressive disorder" (SNOMED 370143000) and a PHQ-9 total score of 23 (LOINC 44261-6), as document
    entries referenced from a new Composition section whose narrative restates them."""
    doc = orjson.loads((HL7 / "Bundle-father.json").read_bytes())
    doc["entry"] += [
        {"fullUrl": "urn:uuid:0b9b4c0e-5a55-4b0f-9a53-6a1f3a0e7d01", "resource": mdd_condition()},
        {"fullUrl": "urn:uuid:0b9b4c0e-5a55-4b0f-9a53-6a1f3a0e7d02", "resource": phq9_observation()},
    ]
    doc["entry"][0]["resource"]["section"].append(
        {
            "title": "Mental status",
            "code": concept(LOINC, "10190-7", "Mental status Narrative"),
            "text": {
                "status": "additional",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">Major depressive disorder;'
                " PHQ-9 total score 23 (severe).</div>",
            },
            "entry": [{"reference": e["fullUrl"]} for e in doc["entry"][-2:]],
        }
    )
    return parse(orjson.dumps(doc))


def sensitive_codes_outside(grouping: fhir.Grouping, *codes: str) -> list[tuple[Category, str]]:
    """(record category, code) for every record of a non-sensitive category whose bytes or index hold ``codes``."""
    sensitive = {Category.MENTAL_HEALTH, Category.SEXUAL_REPRODUCTIVE_HEALTH, Category.GENOMICS}
    found = []
    for record in grouping.records:
        if record.category in sensitive:
            continue
        text = canonical_json(record.bundle).decode()
        found += [(record.category, c) for c in codes if f'"{c}"' in text or any(e.code == c for e in record.index)]
    return found


def test_the_same_condition_alone_is_mental_health() -> None:
    (record,) = check_grouping(parse(orjson.dumps(mdd_condition()))).records
    assert record.category is Category.MENTAL_HEALTH


def test_a_discharge_summary_holding_mental_health_data_is_a_mental_health_record() -> None:
    """The reviewer's case: an `encounters` consent must not release a depression diagnosis or a PHQ-9."""
    doc = father_with_depression()
    grouping = check_grouping(doc)
    (record,) = grouping.records
    assert record.category is Category.MENTAL_HEALTH
    assert [e["resource"] for e in record.bundle["entry"]] == [doc]  # still the whole, attested document
    assert {(e.resource_type, e.code) for e in record.index} >= {("Condition", MDD_CODE), ("Observation", PHQ9_CODE)}
    assert sensitive_codes_outside(grouping, MDD_CODE, PHQ9_CODE) == []


def test_the_unmodified_discharge_summary_stays_an_encounter_record() -> None:
    (record,) = group(load(HL7 / "Bundle-father.json")).records
    assert record.category is Category.ENCOUNTERS


@pytest.mark.parametrize("where", ["entry", "unreferenced entry", "nested collection", "nested document"])
def test_a_document_is_filed_by_what_it_holds_at_any_depth(where: str) -> None:
    doc = orjson.loads((HL7 / "Bundle-father.json").read_bytes())
    if where == "entry":
        doc["entry"].append({"fullUrl": "urn:uuid:a", "resource": phq9_observation()})
        doc["entry"][0]["resource"]["section"][0]["entry"].append({"reference": "urn:uuid:a"})
    elif where == "unreferenced entry":
        doc["entry"].append({"fullUrl": "urn:uuid:a", "resource": phq9_observation()})
    elif where == "nested collection":
        doc["entry"].append({"fullUrl": "urn:uuid:b", "resource": bundle_of(obs("laboratory"), phq9_observation())})
    else:
        inner = orjson.loads((HL7 / "Bundle-father.json").read_bytes())
        inner["entry"].append({"fullUrl": "urn:uuid:a", "resource": phq9_observation()})
        doc["entry"].append({"fullUrl": "urn:uuid:c", "resource": inner})
    grouping = check_grouping(parse(orjson.dumps(doc)))
    assert [r.category for r in grouping.records] == [Category.MENTAL_HEALTH]
    assert PHQ9_CODE in {e.code for e in grouping.records[0].index}


def test_a_sensitive_document_nested_in_a_transaction_is_filed_by_its_content() -> None:
    """Nested Bundles: the outer transaction is split as always; the document inside it is classified whole."""
    synthea = load(SYNTHEA / "patient-2-7b4cf3d5.json")
    plain = {r.category: r.own for r in group(synthea).records}
    synthea["entry"].append(
        {
            "fullUrl": "urn:uuid:0b9b4c0e-5a55-4b0f-9a53-6a1f3a0e7d09",
            "resource": father_with_depression(),
            "request": {"method": "POST", "url": "Bundle"},
        }
    )
    grouping = check_grouping(parse(orjson.dumps(synthea)))
    records = {r.category: r.own for r in grouping.records}
    assert records == plain | {Category.MENTAL_HEALTH: 1}
    assert sensitive_codes_outside(grouping, MDD_CODE, PHQ9_CODE) == []


CONTAINED_CASES: list[tuple[str, dict[str, Any], Category]] = [
    (
        "encounter with a contained depression diagnosis",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "IMP"},
            "contained": [mdd_condition(id="dx")],
            "reasonReference": [{"reference": "#dx"}],
        },
        Category.MENTAL_HEALTH,
    ),
    (
        "lab report with a contained PHQ-9",
        report((V2_0074, "LAB"), contained=[phq9_observation(id="q")], result=[{"reference": "#q"}]),
        Category.MENTAL_HEALTH,
    ),
    (
        "procedure with a contained pregnancy",
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": concept(SNOMED, "430193006"),
            "subject": FATHER_PATIENT,
            "contained": [
                {"resourceType": "Condition", "id": "p", "subject": FATHER_PATIENT, "code": concept(SNOMED, "72892002")}
            ],
            "reasonReference": [{"reference": "#p"}],
        },
        SRH,
    ),
    (
        "medication request with a contained ordinary medication",
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": FATHER_PATIENT,
            "medicationReference": {"reference": "#m"},
            "contained": [{"resourceType": "Medication", "id": "m", "code": concept(RXNORM, "313782")}],
        },
        Category.MEDICATIONS,
    ),
]


@pytest.mark.parametrize(
    ("resource", "expected"), [c[1:] for c in CONTAINED_CASES], ids=[c[0] for c in CONTAINED_CASES]
)
def test_contained_resources_are_classified(resource: dict[str, Any], expected: Category) -> None:
    (record,) = check_grouping(parse(orjson.dumps(resource))).records
    assert record.category is expected


def test_a_synthea_encounter_with_a_contained_depression_diagnosis_leaves_the_encounters_record() -> None:
    synthea = load(SYNTHEA / "patient-1-Emmie273_Kovacek682.json")
    plain = {r.category: r.own for r in group(synthea).records}
    encounter = next(e["resource"] for e in synthea["entry"] if e["resource"]["resourceType"] == "Encounter")
    encounter["contained"] = [mdd_condition(id="dx", subject=encounter["subject"])]
    encounter["reasonReference"] = [{"reference": "#dx"}]
    grouping = check_grouping(parse(orjson.dumps(synthea)))
    records = {r.category: r.own for r in grouping.records}
    assert records == plain | {Category.ENCOUNTERS: plain[Category.ENCOUNTERS] - 1, Category.MENTAL_HEALTH: 1}
    assert sensitive_codes_outside(grouping, MDD_CODE) == []


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ("reasonCode", [{"coding": [{"system": SNOMED, "code": MDD_CODE}]}]),
        ("extension", [{"url": "http://example.org/reason", "valueCoding": {"system": ICD10, "code": "F33.1"}}]),
    ],
)
def test_a_sensitive_code_anywhere_in_a_resource_counts(element: str, value: object) -> None:
    """Not only the primary code: an encounter *for* depression is mental-health data."""
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, element: value}
    assert category_of(encounter) is Category.MENTAL_HEALTH


@pytest.mark.parametrize(
    "resource",
    [
        {
            "resourceType": "Condition",
            "subject": FATHER_PATIENT,
            "code": {"coding": [{"system": ICD10, "code": "F53"}, {"system": ICD10, "code": "O90.6"}]},
        },  # postpartum depression, twice coded
        {
            "resourceType": "Bundle",
            "type": "document",
            "entry": [
                {"fullUrl": "urn:uuid:a", "resource": mdd_condition()},
                {
                    "fullUrl": "urn:uuid:b",
                    "resource": {
                        "resourceType": "Condition",
                        "subject": FATHER_PATIENT,
                        "code": concept(SNOMED, "72892002"),
                    },
                },
            ],
        },
    ],
    ids=["condition", "document"],
)
def test_a_record_holding_two_sensitive_categories_is_refused(resource: dict[str, Any]) -> None:
    """A record has one category and one consent must cover all of it; no single sensitive category covers two."""
    doc = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:x",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            },
        ],
    }
    with pytest.raises(InvalidFhir) as caught:
        group(parse(orjson.dumps(doc)))
    (issue,) = caught.value.issues
    assert issue.path == "Bundle.entry[1].resource"
    assert "mental-health" in issue.message and "sexual-reproductive-health" in issue.message
    with pytest.raises(InvalidFhir) as alone:  # uploaded on its own
        group(parse(orjson.dumps(resource)))
    assert [i.path for i in alone.value.issues] == [resource["resourceType"]]


# --------------------------------------------------------------------------------------------------
# canonical JSON
# --------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_canonical_json_is_a_fixed_point(value: object) -> None:
    once = canonical_json(value)
    assert canonical_json(orjson.loads(once)) == once


def reorder(value: object) -> object:
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


@given(json_values)
def test_canonical_json_ignores_key_order(value: object) -> None:
    assert canonical_json(reorder(value)) == canonical_json(value)


def test_canonical_json_format() -> None:
    assert canonical_json({"b": [1, 2.5, None, True], "a": {"d": "é", "c": "😀"}}) == (
        '{"a":{"c":"😀","d":"é"},"b":[1,2.5,null,true]}'.encode()
    )
    doc = load(SYNTHEA / "patient-2-7b4cf3d5.json")
    assert canonical_json(doc) == canonical_json(orjson.loads(orjson.dumps(doc)))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_refuses_nan_and_infinity(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"value": [bad]})
    assert canonical_json({"value": "null"}) == b'{"value":"null"}'


@pytest.mark.parametrize(
    "bad",
    [
        {1: "non-string key"},
        {"x": 2**64},
        {"x": "\ud800"},
        {"when": __import__("datetime").datetime(2020, 1, 1)},
        {"x": object()},
    ],
)
def test_canonical_json_accepts_only_json_data(bad: object) -> None:
    with pytest.raises(TypeError):
        canonical_json(bad)
