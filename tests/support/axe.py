"""axe-core in the browser tests: every portal page and state is checked against WCAG 2.1 A and AA.

The portal's Content-Security-Policy allows no inline or foreign script, so axe is not added with a
<script> tag: its source (node_modules/axe-core, pinned in package.json) is evaluated by the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE_JS = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
#: WCAG 2.1 level A and AA only (axe's best-practice rules are advice, not the standard we claim)
TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
RUN = """tags => axe.run(document, {
  runOnly: { type: "tag", values: tags }, resultTypes: ["violations"],
}).then(r => r.violations.map(v => ({
  id: v.id, impact: v.impact, help: v.help,
  nodes: v.nodes.map(n => ({ target: n.target.join(" "), summary: n.failureSummary || "" })),
})))"""


def violations(page: Any) -> list[dict[str, Any]]:
    """axe's WCAG 2.1 A/AA violations on ``page`` as it is now (axe is evaluated in it once per document)."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(RUN, list(TAGS))
    return found


def describe(found: list[dict[str, Any]]) -> str:
    """One line per failing element: rule, impact, where, and axe's summary of how to fix it."""
    lines = []
    for v in found:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    {node['target']}: {summary}")
    return "\n".join(lines)


def assert_accessible(page: Any, where: str) -> None:
    """Fails with a readable list when axe finds any WCAG 2.1 A/AA violation on ``page``."""
    found = violations(page)
    assert not found, f"axe: {len(found)} WCAG 2.1 A/AA violation(s) on {where} ({page.url}):\n{describe(found)}"
