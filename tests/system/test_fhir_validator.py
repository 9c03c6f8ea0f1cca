"""The HAPI FHIR validator tool itself (tools/fhir-validator): it must fail a broken file and pass an HL7 example,
or the conformance tests built on it prove nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.fhir_validator import FhirValidator
from tests.support.gateway_harness import SAMPLES

pytestmark = pytest.mark.fhir

#: LOINC cannot be checked offline (no terminology server): the one message an HL7 example may carry
UNKNOWN_SYSTEM = r"CodeSystem is unknown and can't be validated"


def test_an_hl7_example_passes(fhir_validator: FhirValidator) -> None:
    report = fhir_validator.validate(SAMPLES / "hl7-r4" / "Observation-f001.json")
    assert report.errors == ()
    assert all(w.matches(UNKNOWN_SYSTEM) for w in report.warnings), report.warnings


def test_a_broken_file_fails_with_its_location(fhir_validator: FhirValidator, tmp_path: Path) -> None:
    obs = orjson.loads((SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes())
    obs["status"] = "done-ish"  # not in the required ObservationStatus value set
    del obs["code"]  # Observation.code is 1..1
    report = fhir_validator.validate_json(obs, tmp_path / "broken.json")
    where = {e.location for e in report.errors}
    assert "Observation.status" in where and "Observation" in where, report.errors
    assert any("Observation.code: minimum required = 1" in e.message for e in report.errors)


def test_malformed_json_is_an_error_not_a_crash(fhir_validator: FhirValidator) -> None:
    report = fhir_validator.validate(SAMPLES / "invalid" / "fhir-test-cases" / "bad-json-close-1.json")
    assert len(report.errors) == 1 and "Unterminated object" in report.errors[0].message
    assert fhir_validator.validate(SAMPLES / "hl7-r4" / "Observation-f001.json").errors == ()  # still serving


def test_a_folder_is_summarized(fhir_validator: FhirValidator, tmp_path: Path) -> None:
    """The CLI's batch form (``fhir-validator PATH...``, what people and scripts use) prints this same summary;
    asked through the session's JVM here, not a second one."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient", "gender": "robot"}')
    shutil.copy(SAMPLES / "hl7-r4" / "Observation-f001.json", tmp_path)
    summary = fhir_validator.summarize(tmp_path)
    assert (summary["files"], summary["failed"]) == (2, 1)
    (failed,) = [r for r in summary["results"] if r["errors"]]
    assert failed["file"] == str(bad) and failed["errors"][0]["location"] == "Patient.gender"


def test_the_build_script_says_why_it_skips_without_java(tmp_path: Path) -> None:
    """A machine without Java or Maven gets a reason and exit 0 (tests then skip; CI requires the validator)."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "scripts").mkdir()
    shutil.copy(root / "scripts" / "build_fhir_validator", tmp_path / "scripts")
    shutil.copytree(root / "tools" / "fhir-validator" / "src", tmp_path / "tools" / "fhir-validator" / "src")
    shutil.copy(root / "tools" / "fhir-validator" / "pom.xml", tmp_path / "tools" / "fhir-validator")
    bin_ = tmp_path / "bin"  # the coreutils the script needs, and no java or mvn
    bin_.mkdir()
    for tool in ("bash", "cat", "find", "sort", "sha256sum", "cut", "dirname"):
        (bin_ / tool).symlink_to(shutil.which(tool) or tool)
    run = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "build_fhir_validator")],
        env={"PATH": str(bin_)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "skipped, java not found" in run.stderr
    assert not (tmp_path / ".hcl").exists()
