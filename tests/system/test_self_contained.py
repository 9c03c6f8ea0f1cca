"""The repository stands alone: a plain ``git clone`` with nothing beside it runs the demo and the tests.

Nothing in the project may read the reference folder that developers happen to have next to the checkout
(the sibling folder named in :data:`OUTSIDE`); what the project needs from it is copied in with its
provenance (``samples/fhir/``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "fhir"

#: ways a file could reach outside the checkout for the reference folder
OUTSIDE = re.compile(r"\.\./shared|[\"']shared[\"']|shared/(fhir-samples|notes|hooks)")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_file_reads_the_folder_beside_the_checkout() -> None:
    offenders = []
    for path in _tracked():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)
        ]
    assert offenders == []


def test_every_shipped_sample_has_its_provenance() -> None:
    """Each FHIR file in samples/fhir/ is named in SOURCES.md (where it comes from, its licence)."""
    sources = (SAMPLES / "SOURCES.md").read_text(encoding="utf-8")
    files = [p for p in SAMPLES.rglob("*.json")]
    assert len(files) >= 50
    assert [p.relative_to(SAMPLES) for p in files if p.name not in sources] == []


def test_the_demo_patients_are_shipped() -> None:
    from demo.scenario import DEFAULT_SAMPLES, PATIENTS

    assert DEFAULT_SAMPLES == SAMPLES
    for patient in PATIENTS:
        bundle = orjson.loads((SAMPLES / "synthea" / patient.bundle).read_bytes())
        assert bundle["resourceType"] == "Bundle" and bundle["entry"]
