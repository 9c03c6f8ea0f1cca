"""FHIR conformance, judged by the HAPI FHIR R4 validator: every FHIR resource the project emits validates.

What is emitted: the records a gateway releases (the shipped Synthea bundles and the HL7 R4 examples uploaded,
released through the real gateway and opened with the requester's key), the gateway's FHIR read API (``/fhir``:
CapabilityStatement, Consent and AuditEvent searchsets) and the auditor's AuditEvent Bundle, of a clean and of a
tampered journal. Zero errors, except the validator limits
in :data:`ALLOWED` and one sender's own defects (:data:`SENDER_DEFECTS`).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_client.audit import replay, write_outputs
from node_client.vocabulary import CATEGORIES, parse_categories, parse_purposes
from tests.support.fhir_validator import FhirValidator, Issue, Report
from tests.support.gateway_harness import (
    AUDITOR,
    CLINIC,
    HOSPITAL,
    SAMPLES,
    RunningGateway,
    dev,
    open_release,
    running_gateway,
)

pytestmark = [pytest.mark.fhir, pytest.mark.slow]

FHIR = {"Content-Type": "application/fhir+json"}
SYNTHEA = sorted((SAMPLES / "synthea").glob("*.json"))
#: the official R4 examples: single resources, collections, documents (kept whole), as hospitals send them
SYNTHEA_NAMES = tuple(p.stem for p in SYNTHEA)
HL7 = sorted(p for p in (SAMPLES / "hl7-r4").glob("*.json") if p.name != "package.json")

#: Validator errors that are limits of an offline validator, not defects of what we emit (message patterns).
ALLOWED = {
    # Synthea's resources claim US Core profiles (meta.profile); the US Core package is not on Maven Central, so
    # HAPI cannot load the profile. Validation against the base R4 definitions still runs and must pass.
    "profile not loadable": r"Profile reference '.*' has not been checked because it could not be found",
}


#: Defects of a sender's own document, released as sent: a document is an attested unit and is never rewritten.
#: (The validator flags the same two in the upload itself; the gateway's upload checks are structural.)
SENDER_DEFECTS = {
    "Bundle-father.": {
        "HL7 example: dosage unit 'tbl' is not UCUM": r"The unit 'tbl' is unknown",
        "HL7 example: requester Practitioner/example, whose entry has another server's fullUrl": (
            r"Can't find 'Practitioner/example' in the bundle"
        ),
    },
}

#: a literal RESTful reference, relative or absolute (R4 3.1.4.1): [base/]Type/id[/_history/vid], no search URL
LITERAL = re.compile(r"(https?://[^?#\s]+/)?[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?")

#: the verdict per kind of output, written to $HCL_FHIR_CONFORMANCE_OUT for docs/fhir.md (scripts/fhir_conformance)
VERDICT: dict[str, dict[str, Any]] = {}


def _allowed(report: Report) -> dict[str, str]:
    """The allow-list for this file: the validator's limits, and its sender's own defects if it has any."""
    name = Path(report.file).name
    return {**ALLOWED, **next((d for prefix, d in SENDER_DEFECTS.items() if name.startswith(prefix)), {})}


def _errors(report: Report) -> list[Issue]:
    return report.errors_except(_allowed(report).values())


def _tally(kind: str, path: Path, report: Report) -> None:
    """Adds one validated file to the verdict of its kind (files, resources, errors, allowed ones, warnings)."""
    doc = orjson.loads(path.read_bytes())
    row = VERDICT.setdefault(
        kind, {"files": 0, "resources": 0, "errors": 0, "allowed": Counter(), "warnings": Counter()}
    )
    row["files"] += 1
    row["resources"] += len(doc.get("entry") or ()) if doc.get("resourceType") == "Bundle" else 1
    row["errors"] += len(_errors(report))
    row["warnings"].update(w.id or w.message for w in report.warnings)
    for name, pattern in _allowed(report).items():
        row["allowed"][name] += sum(e.matches(pattern) for e in report.errors)


@pytest.fixture(scope="module", autouse=True)
def _write_verdict() -> Iterator[None]:
    yield
    if out := os.environ.get("HCL_FHIR_CONFORMANCE_OUT"):
        Path(out).write_bytes(orjson.dumps(VERDICT, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _skew(gw: RunningGateway) -> int:
    """How far the dev chain's clock runs ahead of wall time (Hardhat: +1 s per block in a burst)."""
    return max(0, math.ceil(gw.client.block_timestamp() - time.time())) + 1


def _grant_all(gw: RunningGateway, patient: int, grantee: str) -> None:
    now = gw.client.block_timestamp()
    every = gw.slots(dev(patient), parse_categories(t.slug for t in CATEGORIES))
    gw.ledger.consents.grant(dev(patient), grantee, every, parse_purposes("treatment"), now, now + 86_400)


def _wait_anchored(gw: RunningGateway, size: int) -> None:
    deadline = time.monotonic() + 30
    while not any(a["treeSize"] == size for a in gw.ledger.access.events(["AccessBatchAnchored"])):
        assert time.monotonic() < deadline, "no anchor of the whole journal"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path, list[Path]]]:
    """A batch-mode gateway after every Synthea bundle was uploaded and each record released once; yields the
    gateway, its journal export and the released records (as received, decrypted, one file each)."""
    tmp = tmp_path_factory.mktemp("conformance")
    out = tmp / "released"
    out.mkdir()
    with running_gateway(tmp, ledger_mode="batch") as gw:
        hospital, clinic = gw.login(dev(HOSPITAL)), gw.login(dev(CLINIC))
        files: list[Path] = []
        for n, sample in enumerate(SYNTHEA + HL7):
            patient = 10 + min(n, len(SYNTHEA))  # the HL7 examples all for one patient
            up = hospital.post(
                "/v1/records", params={"patient": dev(patient).address}, content=sample.read_bytes(), headers=FHIR
            )
            if sample in HL7 and up.status_code == 422 and "no patient health data" in up.text:
                continue  # an AuditEvent, a Consent ...: nothing to store, nothing released
            assert up.status_code == 201, up.text
            if n <= len(SYNTHEA):
                _grant_all(gw, patient, dev(CLINIC).address)
            for rec in up.json()["records"]:
                got = clinic.get(f"/v1/records/{rec['recordId']}", params={"purpose": "treatment"})
                assert got.status_code == 200, got.text
                path = out / f"{sample.stem}.{rec['category']}.json"
                path.write_bytes(open_release(got.json(), CLINIC, dev(CLINIC).address))
                files.append(path)
        _wait_anchored(gw, len(files))
        export = tmp / "journal.jsonl"
        assert gw.components.journal.export(export) == len(files)
        yield gw, export, files


def test_every_released_record_validates(released, fhir_validator: FhirValidator) -> None:
    _gw, _export, files = released
    assert len(files) >= 20
    failures = {}
    for f in files:
        report = fhir_validator.validate(f)
        _tally(f"released records ({'Synthea' if f.name.startswith(SYNTHEA_NAMES) else 'HL7 examples'})", f, report)
        failures[f.name] = _errors(report)
    assert {name: errs for name, errs in failures.items() if errs} == {}


def test_the_gateways_fhir_read_api_validates(released, fhir_validator: FhirValidator, tmp_path: Path) -> None:
    """``/fhir/metadata``, and per patient of the released records ``/fhir/Consent`` (as the patient) and
    ``/fhir/AuditEvent`` (as the auditor: batch-mode journal entries here)."""
    gw, _export, files = released
    auditor, events = gw.login(dev(AUDITOR)), 0
    answers = {"gateway /fhir/metadata": [gw.http().get("/fhir/metadata")]}
    for patient in range(10, 11 + len(SYNTHEA)):
        address = dev(patient).address
        answers.setdefault("gateway /fhir/Consent", []).append(
            gw.login(dev(patient)).get("/fhir/Consent", params={"patient": address})
        )
        answers.setdefault("gateway /fhir/AuditEvent", []).append(
            auditor.get("/fhir/AuditEvent", params={"patient": address, "_count": 200})
        )
    failures = {}
    for kind, responses in answers.items():
        for n, r in enumerate(responses):
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json"), r.text
            path = tmp_path / f"{kind.rsplit('/', 1)[-1]}-{n}.json"
            report = fhir_validator.validate_json(r.content, path)
            _tally(kind, path, report)
            failures[path.name] = _errors(report)
            events += len(r.json().get("entry") or ()) if kind.endswith("AuditEvent") else 0
    assert {name: errs for name, errs in failures.items() if errs} == {}
    assert events == len(files)  # every release, once


def test_the_patients_fhir_exports_validate(released, fhir_validator: FhirValidator, tmp_path: Path) -> None:
    """``/v1/me/exports/{access-log,consents}?format=fhir``: each patient's streamed collection Bundles of
    AuditEvent and Consent, through the same mappings as ``/fhir``."""
    gw, _export, files = released
    failures, events = {}, 0
    for patient in range(10, 11 + len(SYNTHEA)):
        me = gw.login(dev(patient))
        for what in ("access-log", "consents"):
            r = me.get(f"/v1/me/exports/{what}", params={"format": "fhir"})
            assert r.status_code == 200 and r.headers["content-type"] == "application/fhir+json", r.text
            path = tmp_path / f"{what}-{patient}.json"
            report = fhir_validator.validate_json(r.content, path)
            _tally(f"patient's FHIR export ({what})", path, report)
            failures[path.name] = _errors(report)
            events += len(r.json().get("entry") or ()) if what == "access-log" else 0
    assert {name: errs for name, errs in failures.items() if errs} == {}
    assert events == len(files)  # every release, once


def _audit_bundle(gw: RunningGateway, journal: Path, out: Path) -> dict[str, Any]:
    report = replay(gw.client, gw.manifest, journal=journal, clock_skew=_skew(gw))
    bundle: dict[str, Any] = orjson.loads(write_outputs(report, out)["fhir"].read_bytes())
    return bundle


def test_the_auditors_bundle_validates_and_is_the_same_on_a_rerun(
    released, fhir_validator: FhirValidator, tmp_path: Path
) -> None:
    gw, export, files = released
    bundle = _audit_bundle(gw, export, tmp_path / "a")
    assert len(bundle["entry"]) == len(files)
    report = fhir_validator.validate(tmp_path / "a" / "audit-events.json")
    _tally("auditor's AuditEvent Bundle (clean journal)", tmp_path / "a" / "audit-events.json", report)
    assert _errors(report) == []
    assert _audit_bundle(gw, export, tmp_path / "b")["entry"] == bundle["entry"]  # ids derive from access hashes
    purposes = bundle["entry"][0]["resource"]["purposeOfEvent"][0]["coding"]
    assert [c["code"] for c in purposes] == ["TREAT", "treatment"]


def _tampered(export: Path, path: Path) -> None:
    """The journal with one entry's record id and category forged: its access is of no known record."""
    lines = [orjson.loads(line) for line in export.read_bytes().splitlines() if line.strip()]
    lines[2]["record_id"] = "0x" + "ab" * 32
    lines[2]["category"] = 99
    lines.append(dict(lines[3]))  # a replayed entry: the same access hash twice
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in lines) + b"\n")


def test_the_auditors_bundle_of_a_tampered_journal_validates(
    released, fhir_validator: FhirValidator, tmp_path: Path
) -> None:
    gw, export, _ = released
    journal = tmp_path / "tampered.jsonl"
    _tampered(export, journal)
    bundle = _audit_bundle(gw, journal, tmp_path / "t")
    assert any(e["resource"]["outcome"] == "4" for e in bundle["entry"])  # the tampering was seen
    report = fhir_validator.validate(tmp_path / "t" / "audit-events.json")
    _tally("auditor's AuditEvent Bundle (tampered journal)", tmp_path / "t" / "audit-events.json", report)
    assert _errors(report) == []
    assert b'""' not in (tmp_path / "t" / "audit-events.json").read_bytes()
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)


def _references(value: Any) -> Iterator[str]:
    """Every ``reference`` string in a resource (iterative: a record may nest deeply)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            ref = v.get("reference")
            if isinstance(ref, str):
                yield ref
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def test_every_reference_in_a_released_record_resolves_inside_it(released) -> None:
    """HAPI says nothing about relative references it cannot resolve, so they are checked here (issue 16).

    Every reference of a record's resources points at an entry of that record (``urn:uuid:`` or the entry's
    ``fullUrl``) or at a contained resource (``#id``): the gateway copies in the minimal Patient and the
    directory resources a record needs and turns references to other categories' data into logical ones
    (``gateway/fhir/references.py``). A ``document`` is released as sent and its references are the sender's,
    literal (conditional ones are refused at upload) and judged by HAPI inside the document.
    """
    _gw, _export, files = released
    counts: Counter[str] = Counter()
    for f in files:
        bundle = orjson.loads(f.read_bytes())
        inside = {e.get("fullUrl") for e in bundle.get("entry") or ()}
        for entry in bundle.get("entry") or ():
            document = entry["resource"]["resourceType"] == "Bundle"
            for ref in _references(entry["resource"]):
                if document:
                    assert ref.startswith(("urn:uuid:", "#")) or LITERAL.fullmatch(ref), (f.name, ref)
                    counts["in a document, as sent"] += 1
                else:
                    assert ref in inside or ref.startswith("#"), (f.name, entry["resource"]["resourceType"], ref)
                    counts["in its record"] += 1
    assert counts["in its record"] > 0
    VERDICT.setdefault("references in released records", {}).update(counts)


def test_a_released_demographics_record_identifies_no_one(released) -> None:
    """Minimum necessary: names, identifiers, contact points and addresses only in the identifiers record."""
    _gw, _export, files = released
    identifying = {"name", "identifier", "telecom", "address", "photo", "contact"}
    seen = Counter()
    for f in files:
        category = f.name.rsplit(".", 2)[-2]
        for entry in orjson.loads(f.read_bytes())["entry"]:
            res = entry["resource"]
            if res["resourceType"] != "Patient":
                continue
            seen[category] += 1
            if category == "identifiers":
                assert {"name", "identifier"} <= set(res), f.name
            else:
                assert not identifying & set(res) and len(res.get("birthDate", "")) <= 4, (f.name, res)
    assert seen["identifiers"] >= len(SYNTHEA) and seen["demographics"] >= len(SYNTHEA)
