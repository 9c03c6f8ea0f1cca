"""The growth curves (``bench/results/growth.json``) as one SVG for docs/performance.md.

``./scripts/bench growth --plot`` redraws it from the result file; a full growth run draws it at its end.
Matplotlib is the ``bench`` extra (``pip install -c constraints.txt -e '.[bench]'``; ``./scripts/bench``
installs it): imported here only, so the benchmarks themselves run without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["growth_svg"]


def growth_svg(data: dict[str, Any], out: Path) -> Path:
    """Six panels, one per measure, each with its goal as a dashed line; parts missing from ``data`` are
    left out. Written without dates or random ids, so an unchanged result gives an unchanged file."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "hcl-growth", "svg.fonttype": "none", "font.size": 9})
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), layout="constrained")
    _journal(axes[0], data.get("journal"))
    _records(axes[1][0], data.get("records"))
    _catchup(axes[1][1:], data.get("catchup"))
    for ax in axes.flat:
        ax.set_ylim(bottom=0)  # after the lines: the top still fits them and the goal
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out


def _panel(ax: Any, title: str, xlabel: str, ylabel: str, goal: float | None, *, logx: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_formatter(lambda v, _: f"{v / 1000:g}k")
    if goal is not None:
        ax.axhline(goal, color="tab:red", linestyle="--", linewidth=1, label=f"goal {goal:g}")
    ax.grid(True, which="major", alpha=0.3)


def _journal(axes: Any, part: dict[str, Any] | None) -> None:
    if not part:
        return
    pts, goals = part["points"], part["goals"]
    x = [p["size"] for p in pts]
    _panel(axes[0], "Gateway start-up to /healthz 200", "journal entries", "seconds", goals["healthz_s"])
    axes[0].plot(x, [p["healthz_s"] for p in pts], "o-", label="slowest start")
    if all(len(p["starts"]) > 1 for p in pts):
        axes[0].plot(x, [p["starts"][-1]["healthz_s"] for p in pts], "s--", label="restart")
    _panel(axes[1], "Gateway peak RSS", "journal entries", "MB", goals["peak_rss_mb"])
    axes[1].plot(x, [p["peak_rss_mb"] for p in pts], "o-", label="after start")
    axes[1].plot(x, [p["peak_rss_after_mb"] for p in pts], "s--", label="after the pages")
    _panel(axes[2], "First page, one patient", "journal entries", "ms (p50)", goals["access_log_ms"])
    axes[2].plot(x, [p["access_log_ms"] for p in pts], "o-", label="/v1/me/access-log")
    axes[2].plot(x, [p["proof_ms"] for p in pts], "s--", label="inclusion proof")
    for ax in axes:
        ax.legend(fontsize=8)


def _records(ax: Any, part: dict[str, Any] | None) -> None:
    if not part:
        return
    pts = part["points"]
    x = [p["records"] for p in pts]
    _panel(ax, "Records, first page", "the patient's records", "ms (p50)", part["goals"]["discovery_code_ms"])
    ax.plot(x, [p["discovery_code_ms"] for p in pts], "o-", label=f"discovery, code={part['code']}")
    if all("discovery_rare_ms" in p for p in pts):
        ax.plot(x, [p["discovery_rare_ms"] for p in pts], "v-.", label="discovery, a rare code")
    ax.plot(x, [p["discovery_ms"] for p in pts], "s--", label="discovery")
    ax.plot(x, [p["me_records_ms"] for p in pts], "^:", label="/v1/me/records")
    ax.legend(fontsize=8)


def _catchup(axes: Any, part: dict[str, Any] | None) -> None:
    if not part:
        return
    goals = part["goals"]
    _panel(axes[0], "Catch-up from the deployment block", "events", "events/s", goals["events_per_s"], logx=False)
    _panel(axes[1], "Fresh gateway, first /healthz", "events", "seconds", goals["first_healthz_s"], logx=False)
    for code in dict.fromkeys(p["code"] for p in part["points"]):
        pts = [p for p in part["points"] if p["code"] == code]
        x = [p["events"] for p in pts]
        axes[0].plot(x, [p["events_per_s"] for p in pts], "o-", label=code)
        axes[1].plot(x, [p["first_healthz_s"] for p in pts], "o-", label=code)
    for ax in axes:
        ax.legend(fontsize=8)
