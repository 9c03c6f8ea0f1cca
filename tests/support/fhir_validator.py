"""The HAPI FHIR R4 validator (``tools/fhir-validator``) as a session fixture: one JVM for the whole test session.

Use (``tests/conftest.py`` registers this module's fixture for every test directory)::

    def test_x(fhir_validator, tmp_path):
        report = fhir_validator.validate_json(bundle, tmp_path / "bundle.json")
        assert report.errors == []

The jar is built and cached by ``scripts/build_fhir_validator`` (run here if needed: a stamp check when cached).
Without Java or Maven tests using the fixture are skipped with the reason, unless
``HCL_REQUIRE_FHIR_VALIDATOR=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

__all__ = ["FhirValidator", "Issue", "Report", "fhir_validator", "start_fhir_validator"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = REPO_ROOT / "scripts" / "build_fhir_validator"


@dataclass(frozen=True)
class Issue:
    """One validator message: where (FHIRPath), what, and HAPI's message id (stable across wording changes)."""

    location: str
    message: str
    id: str | None = None
    line: int | None = None

    def matches(self, pattern: str) -> bool:
        return re.search(pattern, self.message) is not None


@dataclass(frozen=True)
class Report:
    """The validator's verdict on one file."""

    file: str
    errors: tuple[Issue, ...]
    warnings: tuple[Issue, ...]

    def errors_except(self, allowed: Iterable[str]) -> list[Issue]:
        """The errors that match none of the ``allowed`` message patterns (an allow-list of validator limits)."""
        patterns = tuple(allowed)
        return [e for e in self.errors if not any(e.matches(p) for p in patterns)]


def _issues(items: list[dict[str, Any]]) -> tuple[Issue, ...]:
    return tuple(Issue(i["location"] or "", i["message"] or "", i.get("id"), i.get("line")) for i in items)


class FhirValidator:
    """A running ``fhir-validator --serve``: a path a line in, a JSON verdict a line out."""

    def __init__(self, jar: Path, log: Path) -> None:
        java = shutil.which("java") or "java"
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [java, "-Xmx1g", "-jar", str(jar), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        ready = self._read()
        if ready != {"ready": True}:
            self.close()
            raise RuntimeError(f"fhir-validator did not start: {ready!r} (log: {log})")

    def _read(self) -> Any:
        out: IO[bytes] = self._proc.stdout  # type: ignore[assignment]
        line = out.readline()
        if not line:
            raise RuntimeError(f"fhir-validator exited (code {self._proc.poll()})")
        return orjson.loads(line)

    def _ask(self, path: Path) -> Any:
        stdin: IO[bytes] = self._proc.stdin  # type: ignore[assignment]
        stdin.write(str(path.resolve()).encode() + b"\n")
        stdin.flush()
        return self._read()

    def validate(self, path: Path) -> Report:
        d = self._ask(path)
        return Report(d["file"], _issues(d["errors"]), _issues(d["warnings"]))

    def summarize(self, folder: Path) -> dict[str, Any]:
        """The CLI's summary of every ``*.json`` under ``folder`` (files, failed, errors, warnings, results)."""
        summary: dict[str, Any] = self._ask(folder)
        return summary

    def validate_json(self, resource: Any, path: Path) -> Report:
        """Writes ``resource`` (a dict, or JSON bytes) to ``path`` and validates it."""
        path.write_bytes(resource if isinstance(resource, bytes) else orjson.dumps(resource))
        return self.validate(path)

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def find_jar() -> tuple[Path | None, str]:
    """The validator jar (``$HCL_FHIR_VALIDATOR_JAR``, else built by the script), or None and why not."""
    if env := os.environ.get("HCL_FHIR_VALIDATOR_JAR"):
        return Path(env), ""
    if shutil.which("java") is None:
        return None, "no java on PATH (the HAPI FHIR validator needs Java 17+)"
    done = subprocess.run([str(BUILD), "--print-jar"], capture_output=True, text=True, timeout=900)
    jar = done.stdout.strip()
    if done.returncode != 0 or not jar:
        return None, f"scripts/build_fhir_validator did not build the jar: {done.stderr.strip()[-500:]}"
    return Path(jar), ""


def start_fhir_validator(log: Path) -> FhirValidator:
    """A validator, or a skip with the reason (a failure under ``HCL_REQUIRE_FHIR_VALIDATOR=1``)."""
    jar, why = find_jar()
    if jar is not None:
        try:
            return FhirValidator(jar, log)
        except (OSError, RuntimeError) as exc:
            why = str(exc)
    if os.environ.get("HCL_REQUIRE_FHIR_VALIDATOR", "") not in ("", "0"):
        pytest.fail(f"FHIR validator required (HCL_REQUIRE_FHIR_VALIDATOR) but unavailable: {why}", pytrace=False)
    pytest.skip(f"FHIR validator unavailable: {why}")


@pytest.fixture(scope="session")
def fhir_validator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirValidator]:
    """One validator JVM (~5 s to start) shared by the whole session."""
    validator = start_fhir_validator(tmp_path_factory.mktemp("fhir-validator") / "validator.log")
    try:
        yield validator
    finally:
        validator.close()
