"""``report.html``: the audit for a person, in English or Simplified Chinese.

A plain verdict comes first ("every access in blocks A–B of the consortium ledger is consented and
ledgered; verified"), then the findings and the accesses per institution with institutions' names in the
report's language, category and purpose labels and local times; the technical detail (chain, gateways,
raw evidence) is folded into a <details> below it.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from node_client.audit.judge import slot_slug
from node_client.audit.model import AuditReport
from node_client.vocabulary import CATEGORIES, PURPOSES

__all__ = ["LANGS", "ReportLanguage", "member_names", "render"]

LANGS = ("en", "zh")
DEFAULT_TZ = "Asia/Shanghai"  # the gateway's default display time zone (HCL_DISPLAY_TIMEZONE)

#: key → (English, 中文)
TEXT: dict[str, tuple[str, str]] = {
    "title": ("HealthCode Ledger audit", "健康码链审计报告"),
    "clean": ("CLEAN", "无异常"),
    "anomalies_found": ("ANOMALIES FOUND", "发现异常"),
    "verdict_clean": (
        "All {n} accesses in blocks {a}–{b} of the consortium ledger were consented and ledgered; verified.",
        "联盟链第 {a}–{b} 号区块中的全部 {n} 次访问均有授权并已上链记录；已验证。",
    ),
    "verdict_bad": (
        "Of {n} accesses in blocks {a}–{b} of the consortium ledger, {bad} are anomalous and {errors} "
        "finding(s) are errors: see below.",
        "联盟链第 {a}–{b} 号区块中的 {n} 次访问里有 {bad} 次异常，{errors} 项错误：详见下文。",
    ),
    "verdict_review": (
        "{review} emergency access(es) are listed for review.",
        "另有 {review} 次紧急访问需要复核。",
    ),
    "generated": ("Generated {when}; times are in {tz}.", "生成于 {when}；时间均为 {tz} 时区。"),
    "accesses": ("accesses", "访问次数"),
    "ok": ("ok", "正常"),
    "review": ("review", "待复核"),
    "anomalous": ("anomalous", "异常"),
    "pending": ("pending", "待锚定"),
    "errors": ("errors", "错误"),
    "journal_entries": ("journal entries", "日志条目"),
    "anchors": ("anchors", "锚定"),
    "findings": ("Anomalies", "异常与复核项"),
    "none": ("None.", "无。"),
    "severity": ("severity", "级别"),
    "kind": ("kind", "类型"),
    "message": ("message", "说明"),
    "evidence": ("evidence", "证据"),
    "sev_error": ("error", "错误"),
    "sev_review": ("review", "复核"),
    "per_institution": ("Per institution", "按机构"),
    "per_patient": ("Per patient", "按患者"),
    "institution": ("institution", "机构"),
    "patient": ("patient", "患者"),
    "timeline": ("Accesses over time (per hour)", "访问时间分布（每小时）"),
    "technical": ("Technical detail", "技术细节"),
    "chain": (
        "Chain {chain}, blocks {a}–{b}, generated {when}.",
        "链 ID {chain}，区块 {a}–{b}，生成于 {when}。",
    ),
    "per_gateway": ("Per gateway", "按网关"),
    "gateway": ("gateway", "网关"),
    "journal": ("journal", "日志"),
    "strict": ("strict", "直接上链"),
    "not_given": ("not given", "未提供"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "ev_requester": ("institution", "访问机构"),
    "ev_patient": ("patient", "患者"),
    "ev_purpose": ("purpose", "用途"),
    "ev_category": ("category", "类别"),
    "ev_gateway": ("gateway", "网关"),
    "ev_emergency": ("emergency", "紧急访问"),
}


@dataclass(frozen=True)
class ReportLanguage:
    """The report's language, its time zone and the institutions' names in that language."""

    lang: str = "en"
    tz: str = DEFAULT_TZ
    names: Mapping[str, str] = field(default_factory=dict)

    def t(self, key: str, **values: Any) -> str:
        text = TEXT[key][1 if self.lang == "zh" else 0]
        return text.format(**values) if values else text

    def when(self, ts: int) -> str:
        """A Unix time (seconds, or milliseconds as journals keep them) in the report's time zone."""
        ts = ts // 1000 if ts > 10**11 else ts
        return datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(self.tz)).strftime("%Y-%m-%d %H:%M:%S %Z")

    def member(self, address: str, fallback: str = "") -> str:
        name = self.names.get(address) or fallback
        return f"{name} ({address})" if name else address

    def purpose(self, value: Any) -> str:
        term = next((p for p in PURPOSES if value in (p.bit, p.slug)), None)
        return (term.zh if self.lang == "zh" else term.en) if term else str(value)

    def category(self, value: Any) -> str:
        """A slot (number) or its slug: emergency-safe ones by category, the others as protected slots."""
        name = slot_slug(value) if isinstance(value, int) else str(value)
        if name.startswith("slot-") and name[5:].isdigit():
            return f"受保护类别 {name[5:]}" if self.lang == "zh" else f"slot {name[5:]}"
        term = next((c for c in CATEGORIES if name == c.slug), None)
        return (term.zh if self.lang == "zh" else term.en) if term else name


def member_names(members: Iterable[Mapping[str, Any]], lang: str) -> dict[str, str]:
    """address → the name a reader of ``lang`` knows (``name_zh`` in Chinese), else ``name``."""
    key = "name_zh" if lang == "zh" else "name_en"
    return {str(m["address"]): str(m.get(key) or m.get("name") or "") for m in members}


def render(report: AuditReport, rl: ReportLanguage) -> str:
    """The whole page: verdict, summary, findings, per institution and patient, timeline, then the detail."""
    s = report.summary
    clean = report.exit_code == 0
    parts = [
        f"<!doctype html><html lang='{'zh-CN' if rl.lang == 'zh' else 'en'}'><head><meta charset='utf-8'>",
        f"<title>{rl.t('title')}</title>",
        _STYLE,
        f"<h1>{rl.t('title')}</h1>",
        f"<h2 class='{'ok' if clean else 'bad'}' id='verdict'>{rl.t('clean' if clean else 'anomalies_found')}</h2>",
        f"<p class='verdict'>{html.escape(_verdict(report, rl))}</p>",
        f"<p>{html.escape(rl.t('generated', when=_generated(report, rl), tz=rl.tz))}</p>",
        _summary_table(s, rl),
        f"<h2>{rl.t('findings')}</h2>",
        *_findings(report, rl),
        *_groups(report, rl, "per_institution", "requester"),
        *_groups(report, rl, "per_patient", "patient"),
        *_timeline(report, rl),
        *_technical(report, rl),
        "</body></html>",
    ]
    return "\n".join(parts)


_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
    "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.9em}"
    ".error{background:#fde2e2}.review{background:#fff4d6}.ok{color:#176f2c}.bad{color:#b00020}"
    "p.verdict{font-size:1.1em;font-weight:600}code{font-size:.85em}</style></head><body>"
)


def _verdict(report: AuditReport, rl: ReportLanguage) -> str:
    s, span = report.summary, {"a": report.from_block, "b": report.to_block}
    if report.exit_code == 0:
        text = rl.t("verdict_clean", n=s["accesses"], **span)
    else:
        text = rl.t("verdict_bad", n=s["accesses"], bad=s["accesses_anomalous"], errors=s["errors"], **span)
    return text + (" " + rl.t("verdict_review", review=s["accesses_review"]) if s["accesses_review"] else "")


def _generated(report: AuditReport, rl: ReportLanguage) -> str:
    try:
        return rl.when(int(datetime.fromisoformat(report.generated_at).timestamp()))
    except ValueError:
        return report.generated_at


def _summary_table(s: Mapping[str, Any], rl: ReportLanguage) -> str:
    keys = ("accesses", "accesses_ok", "accesses_review", "accesses_anomalous", "accesses_pending", "errors")
    labels = ("accesses", "ok", "review", "anomalous", "pending", "errors", "journal_entries", "anchors")
    values = [s[k] for k in keys] + [s["journal_entries"], s["anchors"]]
    head = "".join(f"<th scope='col'>{rl.t(k)}</th>" for k in labels)
    return f"<table><tr>{head}</tr><tr>{''.join(f'<td>{v}</td>' for v in values)}</tr></table>"


def _evidence(evidence: Mapping[str, Any], rl: ReportLanguage) -> str:
    """The evidence a person reads: names, labels and local times; the rest stays in the technical detail."""
    e, out = html.escape, []
    for k in ("requester", "patient", "gateway"):
        if isinstance(evidence.get(k), str):
            out.append(f"{rl.t('ev_' + k)}: {e(rl.member(evidence[k], str(evidence.get(k + '_name') or '')))}")
    if evidence.get("purpose") is not None:
        out.append(f"{rl.t('ev_purpose')}: {e(rl.purpose(evidence['purpose']))}")
    if evidence.get("category") is not None:
        out.append(f"{rl.t('ev_category')}: {e(rl.category(evidence['category']))}")
    for k, v in evidence.items():
        if (k == "time" or k.endswith(("_at", "_until")) or k.startswith("valid_")) and isinstance(v, int) and v > 0:
            out.append(f"{e(k)}: {e(rl.when(v))}")
    return "<br>".join(out)


def _findings(report: AuditReport, rl: ReportLanguage) -> list[str]:
    if not report.anomalies:
        return [f"<p class='ok'>{rl.t('none')}</p>"]
    head = "".join(f"<th scope='col'>{rl.t(k)}</th>" for k in ("severity", "kind", "message", "evidence"))
    parts = [f"<table><tr>{head}</tr>"]
    for a in sorted(report.anomalies, key=lambda a: a.severity != "error"):
        sev = rl.t(f"sev_{a.severity}") if f"sev_{a.severity}" in TEXT else a.severity
        parts.append(
            f"<tr class='{a.severity}'><td>{html.escape(sev)}</td><td>{html.escape(a.kind)}</td>"
            f"<td>{html.escape(a.message)}</td><td>{_evidence(a.evidence, rl)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _groups(report: AuditReport, rl: ReportLanguage, title: str, key: str) -> list[str]:
    """Accesses per institution (``key="requester"``, by name) or per patient, by status."""
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for r in report.accesses:
        label = rl.member(r.requester, r.requester_name) if key == "requester" else r.patient
        groups[label][r.status] += 1
    who = rl.t("institution" if key == "requester" else "patient")
    cols = "".join(f"<th scope='col'>{rl.t(k)}</th>" for k in ("accesses", "ok", "review", "anomalous", "pending"))
    parts = [f"<h2>{rl.t(title)}</h2><table><tr><th scope='col'>{who}</th>{cols}</tr>"]
    for label, c in sorted(groups.items()):
        counts = [sum(c.values()), c["ok"], c["review"], c["anomaly"], c["pending"]]
        parts.append(f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{n}</td>' for n in counts)}</tr>")
    parts.append("</table>")
    return parts


def _timeline(report: AuditReport, rl: ReportLanguage) -> list[str]:
    by_hour: Counter[str] = Counter(rl.when(r.time)[:13] + rl.when(r.time)[19:] for r in report.accesses)
    if not by_hour:
        return []
    top = max(by_hour.values())
    parts = [f"<h2>{rl.t('timeline')}</h2><table>"]
    for hour, count in sorted(by_hour.items()):
        bar = "█" * max(1, round(40 * count / top))
        parts.append(
            f"<tr><td>{html.escape(hour[:13])}:00{html.escape(hour[13:])}</td><td>{count}</td><td>{bar}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _technical(report: AuditReport, rl: ReportLanguage) -> list[str]:
    """Folded: the chain and blocks, the per-gateway table and every finding's raw evidence."""
    e = html.escape
    chain = rl.t("chain", chain=report.chain_id, a=report.from_block, b=report.to_block, when=e(report.generated_at))
    parts = [f"<details id='technical'><summary>{rl.t('technical')}</summary><p>{chain}</p>"]
    parts += _gateways(report, rl)
    for a in report.anomalies:
        raw = "<br>".join(f"{e(str(k))}: <code>{e(str(v))}</code>" for k, v in a.evidence.items() if v is not None)
        parts.append(f"<p><strong>{e(a.kind)}</strong><br>{raw}</p>")
    parts.append("</details>")
    return parts


def _gateways(report: AuditReport, rl: ReportLanguage) -> list[str]:
    """Per gateway: whose journal was given (and how it was recognised), its anchors, its accesses."""
    by_gw: dict[str, dict[str, Any]] = report.summary.get("by_gateway") or {}
    if not by_gw:
        return []
    how = {j["gateway"]: j["matched_by"] for j in report.summary.get("journals") or [] if j.get("gateway")}
    keys = ("gateway", "journal", "anchors", "strict", "journal_entries", "ok", "review", "anomalous", "pending")
    parts = [f"<h2>{rl.t('per_gateway')}</h2><table><tr>{''.join(f'<th>{rl.t(k)}</th>' for k in keys)}</tr>"]
    for g, c in by_gw.items():
        label = rl.member(g, str(c.get("name") or "")) if g else "(none)"
        journal = f"{c['journal_file']} ({how.get(g, '')})" if c.get("journal_file") else ""
        journal = journal or (rl.t("not_given") if c["anchors"] else "")  # no anchors: a strict-mode gateway
        counts = "".join(
            f"<td>{c[k]}</td>" for k in ("anchors", "strict", "journal", "ok", "review", "anomaly", "pending")
        )
        parts.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(journal)}</td>{counts}</tr>")
    parts.append("</table>")
    return parts
