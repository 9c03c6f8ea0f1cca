"""Slither on the contracts: no high- or medium-impact finding that docs/security.md does not explain.

``scripts/slither`` installs slither into its own virtualenv (it needs web3 < 8; the project has web3 8)
and analyses the Hardhat build. Each accepted finding is named here by (detector, function) and has a
paragraph in docs/security.md under "Static analysis"; a new finding, or one whose function moved,
fails the test until it is fixed or explained.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # slither on the Hardhat build (~20 s)

ROOT = Path(__file__).resolve().parents[2]

#: (detector, function) of every accepted high/medium finding; each is explained in docs/security.md.
ACCEPTED = {
    ("incorrect-equality", "MemberRegistry.isActive(address,uint16)"),
    ("incorrect-equality", "MemberRegistry.activeRoles(address)"),
    ("unused-return", "ConsentRegistry._checkSignature(address,bytes32,bytes)"),
}


def _function(result: dict) -> str:
    for element in result["elements"]:
        if element["type"] == "function":
            parent = element["type_specific_fields"]["parent"]["name"]
            return f"{parent}.{element['type_specific_fields']['signature']}"
    return result["description"].split(" ", 1)[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("npx") is None:
        pytest.skip("slither analyses the Hardhat build, which needs node/npx")
    out = tmp_path_factory.mktemp("slither") / "slither.json"
    run = subprocess.run(
        [str(ROOT / "scripts" / "slither"), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), f"slither did not run (exit {run.returncode}):\n{run.stderr[-4000:]}"
    data = json.loads(out.read_text())
    assert data["success"], data.get("error")
    return data


def test_slither_analyses_every_contract(report: dict) -> None:
    analysed = {
        e["source_mapping"]["filename_relative"]
        for r in report["results"]["detectors"]
        for e in r["elements"]
        if "source_mapping" in e
    }
    assert analysed, "no finding at all: is slither analysing the contracts?"
    assert all(not p.startswith("contracts/mocks") for p in analysed)


def test_no_unexplained_high_or_medium_finding(report: dict) -> None:
    serious = [r for r in report["results"]["detectors"] if r["impact"] in ("High", "Medium")]
    found = {(r["check"], _function(r)) for r in serious}
    unexplained = sorted(found - ACCEPTED)
    assert not unexplained, "new slither findings (fix, or explain in docs/security.md and ACCEPTED):\n" + "\n".join(
        f"{check} in {fn}: {next(r['description'] for r in serious if (r['check'], _function(r)) == (check, fn))}"
        for check, fn in unexplained
    )
    assert all(r["impact"] != "High" for r in serious)


def test_every_accepted_finding_is_explained_in_the_threat_model() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    for check, fn in ACCEPTED:
        assert f"`{check}`" in doc and fn.split("(")[0] in doc, (check, fn)
