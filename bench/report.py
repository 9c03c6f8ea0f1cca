"""``./scripts/bench report``: the measured tables of ``bench/results/*.json`` as Markdown.

``docs/performance.md`` carries the output between its ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` markers (``--write`` replaces them), so the document always shows numbers a run
of the suite produced, with the commit and machine they came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n >> 10} KB"


def _ceiling(r: dict[str, Any]) -> str:
    """The bare app's figures for the run's (size, clients) and the gateway's ratio to them (bench/ceiling.py)."""
    if r.get("ceiling_releases_per_s") is None:
        return "- | - | - |"
    ratio = f"{r['ratio_to_ceiling']:.3f}" if r.get("ratio_to_ceiling") is not None else "-"
    return f"{r['ceiling_releases_per_s']:,.0f} | {r['ceiling_p99_ms']:.1f} | {ratio} |"


def _env(d: dict[str, Any]) -> str:
    return f"commit `{d.get('commit')}`, {d.get('cpu_count')} CPUs, Python {d.get('python')}"


def markdown() -> str:
    out: list[str] = []
    out += _releases()
    up = _load("upload")
    if up:
        out += [
            f"### Uploads (`bench/results/upload.json`; {_env(up)})",
            "",
            "| uploads | concurrency | records | resources | records/s | resources/s | p50 ms | p99 ms | errors "
            "| transactions | uploads/transaction | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {up['uploads']} | {up['concurrency']} | {up['records']:,} | {up['resources']:,} | {up['records_per_s']:,.0f} | "
            f"{up['resources_per_s']:,.0f} | {up['p50_ms']:.0f} | {up['p99_ms']:.0f} | {up['errors']} | "
            f"{up.get('registration_transactions', '-')} | {up.get('uploads_per_transaction', '-')} | {up['peak_rss_mb']:.0f} |",
            "",
            f"Goal: ≥ {up['goals']['records_per_s']:.0f} records/s.",
            "",
        ]
    con = _load("consent")
    if con:
        d, rev = con["decision"], con["revocation"]
        out += [
            f"### Consent decisions (`bench/results/consent.json`; {_env(con)})",
            "",
            "| decision from | n | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            f"| read model (synced) | {d['cache']['n']:,} | {d['cache']['p50_ms']} | {d['cache']['p95_ms']} | {d['cache']['p99_ms']} |",
            f"| `ConsentRegistry.check` by `eth_call` | {d['eth_call']['n']:,} | {d['eth_call']['p50_ms']} | "
            f"{d['eth_call']['p95_ms']} | {d['eth_call']['p99_ms']} |",
            "",
            f"Revocation mined → first refusal: median {rev['delay_ms_median']} ms, max {rev['delay_ms_max']} ms over "
            f"{len(rev['trials'])} trials (releases in that window: "
            f"{', '.join(str(t['releases_after_mined']) for t in rev['trials'])}). Goal: cache p99 ≤ "
            f"{con['goals']['cache_p99_ms']} ms.",
            "",
        ]
    aud = _load("audit")
    if aud:
        out += [
            f"### Audit replay (`bench/results/audit.json`; {_env(aud)})",
            "",
            f"{aud['accesses']:,} accesses replayed end to end in {aud['seconds']:.1f} s "
            f"({aud['accesses_per_s']:,.0f}/s; verify phase {aud.get('accesses_per_s_verify') or 0:,.0f}/s).",
            "",
        ]
    net = _load("network")
    if net:
        n, g = net["network"], net["grants"]
        out += [
            f"### Consortium network (`bench/results/network.json`; {_env(net)})",
            "",
            f"{n['validators']} geth {n['geth']} Clique validators on this machine, {n['block_period_s']} s blocks "
            f"(measured {n['block_interval_s']} s), {n['confirmations']} confirmations, block gas limit "
            f"{n['block_gas_limit']:,}; created and deployed in {n['setup_seconds']:.0f} s.",
            "",
            "| grants at once | patients | grants/s | blocks (grants each) | inclusion p50 / p95 / max ms"
            f" | {g['confirmations']} confirmations p50 ms | gas/grant | gas bound |",
            "|---:|---:|---:|---|---:|---:|---:|---:|",
            f"| {g['grants']} | {g['patients']} | {g['grants_per_s']:.1f} | {g['blocks']} "
            f"({', '.join(map(str, g['per_block']))}) | {g['inclusion']['p50_ms']:.0f} / {g['inclusion']['p95_ms']:.0f}"
            f" / {g['inclusion']['max_ms']:.0f} | {g['confirmed']['p50_ms']:.0f} | {g['gas_per_grant']:,} | "
            f"{g['gas_bound_grants_per_block']:,}/block |",
            "",
            "| mode | size | clients | releases/s | p50 ms | p99 ms | errors | released | ledgered"
            " | longest wait for anchor | gas bound |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in net["runs"]:
            anchored = f"{r['anchor_delay_s']} s" if r.get("anchor_delay_s") is not None else "-"
            bound = f"{r['gas_bound_releases_per_s']:,.0f}/s" if r.get("gas_bound_releases_per_s") else "-"
            out.append(
                f"| {r['mode']} | {_size(r['size'])} | {r['clients']} | {r['releases_per_s']:,.1f} | "
                f"{r['p50_ms']:,.0f} | {r['p99_ms']:,.0f} | {r['errors']} | {r['released']:,} | {r['ledgered']:,} | "
                f"{anchored} | {bound} |"
            )
        ref = net.get("hardhat_reference")
        if ref:
            out += [
                "",
                f"Hardhat, same size (`bench/results/release.json`, commit `{ref['commit']}`, not this run): "
                + ", ".join(f"{r['mode']} × {r['clients']} {r['releases_per_s']:,.0f}/s" for r in ref["runs"])
                + ".",
            ]
        out.append("")
    out += _federation()
    out += _growth()
    return "\n".join(out).rstrip() + "\n"


def _releases() -> list[str]:
    rel = _load("release")
    if not rel:
        return []
    out: list[str] = []
    g = rel["goals"]
    out += [
        f"### Releases (`bench/results/release.json`; {_env(rel)})",
        "",
        "| mode | store | size | clients | releases/s | p50 ms | p95 ms | p99 ms | errors | released | ledgered"
        " | longest wait for anchor | ledger gas/access | entries/tx | peak RSS MB | ceiling/s | ceiling p99 ms | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rel["runs"]:
        anchored = f"{r['anchor_delay_s']} s" if r.get("anchor_delay_s") is not None else "-"
        gas = r.get("anchor_gas_per_access", r.get("gas_per_access", "-"))
        out.append(
            f"| {r['mode']} | {r['store']} | {_size(r['size'])} | {r['clients']} | {r['releases_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['released']:,} | "
            f"{r['ledgered']:,} | {anchored} | {gas} | {r.get('entries_per_tx', '-')} | {r['peak_rss_mb']:.0f} | "
            + _ceiling(r)
        )
    later = sorted({(r["mode"], r["commit"]) for r in rel["runs"] if r.get("commit")})
    if later:
        out += [""] + [f"{mode} runs: commit `{c}` (`./scripts/bench release --mode {mode}`)." for mode, c in later]
    out += [
        "",
        f"Goals (batch, 10 KB, 64 clients, local): ≥ {g['releases_per_s']:,.0f}/s, p99 ≤ {g['p99_ms']:.0f} ms, "
        f"anchored ≤ {g['anchor_s']:.0f} s, ≤ {g['gas_per_access']:.0f} gas/access, peak RSS ≤ {g['peak_rss_mb']:.0f} MB.",
        "",
        "ceiling: a bare FastAPI app with the gateway's server settings returning a body of the record's size, "
        "under the same load in the same run (`bench/ceiling.py`); ratio: releases/s ÷ ceiling/s. ledger gas/access: "
        "the anchors' (batch) or the `logAccessBatch` transactions' (strict) gas per release; entries/tx: releases "
        "per strict transaction (group commit).",
        "",
    ]
    return out


def _federation() -> list[str]:
    fed = _load("federation")
    if not fed:
        return []
    n, setup = fed["network"], fed["setup"]
    out = [
        f"### Three institutions' gateways (`bench/results/federation.json`; {_env(fed)})",
        "",
        f"{n['validators']} geth {n['geth']} Clique validators and a gateway per institution (batch, local store) on "
        f"this machine, {n['block_period_s']} s blocks; {setup['patients']} patients with a {_size(fed['size'])} record "
        "at each gateway; K clients spread over the three gateways, each signed in at its own institution's. "
        "local: every release asks the holder; cross: the reader's own gateway, which forwards it to the holder.",
        "",
        "| mode | clients | releases/s | p50 ms | p95 ms | p99 ms | errors | released | ledgered | forwarded"
        " | gateways' CPU ms/release |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in fed["runs"]:
        out.append(
            f"| {r['mode']} | {r['clients']} | {r['releases_per_s']:,.1f} | {r['p50_ms']:,.1f} | {r['p95_ms']:,.1f} | "
            f"{r['p99_ms']:,.1f} | {r['errors']} | {r['released']:,} | {r['ledgered']:,} | {r['forwarded']:,} | "
            f"{r['cpu']['gateways_ms_per_release']:.1f} |"
        )
    if fed.get("notes"):
        out += ["", fed["notes"]]
    return out + [""]


def _growth() -> list[str]:
    """Cost as history grows (``./scripts/bench growth``): the plot, then a table per part."""
    data = _load("growth")
    if not data:
        return []
    out = ["### Growth (`bench/results/growth.json`, plotted by `./scripts/bench growth --plot`)", ""]
    out += ["![growth curves: start-up, RSS and first pages vs history](growth.svg)", ""]
    return (
        out
        + _growth_journal(data.get("journal"))
        + _growth_records(data.get("records"))
        + _growth_catchup(data.get("catchup"))
    )


def _growth_env(part: dict[str, Any]) -> str:
    """The run's commit and machine, and how busy the machine was (the load average over its last 5 min)."""
    load = part.get("load_average")
    return _env(part["environment"]) + (f", load {load[1]:.1f} at its end" if load else "")


def _growth_journal(part: dict[str, Any] | None) -> list[str]:
    if not part:
        return []
    g = part["goals"]
    out = [
        f"A whole gateway on a journal of N entries ({_growth_env(part)}): seconds to `/healthz` 200 and "
        "peak RSS of each start, the peak after the pages, one patient's first access-log page and an "
        "inclusion proof (p50 ms).",
        "",
        "| entries | journal MB | /healthz s | peak RSS MB | RSS after pages MB | access-log page ms | proof ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in part["points"]:
        starts = " / ".join(f"{s['healthz_s']:.1f}" for s in p["starts"])
        rss = " / ".join(f"{s['peak_rss_mb']:.0f}" for s in p["starts"])
        out.append(
            f"| {p['entries']:,} | {p['journal_mb']:,.0f} | {starts} | {rss} | {p['peak_rss_after_mb']:.0f} | "
            f"{p['access_log_ms']:.1f} | {p['proof_ms']:.1f} |"
        )
    return out + [
        "",
        f"Goals: at {g['at_entries']:,} entries start-up ≤ {g['healthz_s']} s and RSS ≤ {g['peak_rss_mb']} MB; "
        f"the first access-log page ≤ {g['access_log_ms']} ms at any size.",
        "",
    ]


def _growth_records(part: dict[str, Any] | None) -> list[str]:
    if not part:
        return []
    g = part["goals"]
    out = [
        f"A patient's records among the gateway's ({_growth_env(part)}): first pages, p50 ms.",
        "",
        f"| records | gateway-wide rows | discovery `code={part['code']}` | discovery, a rare code | discovery "
        "| `/v1/me/records` |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in part["points"]:
        out.append(
            f"| {p['records']:,} | {p['gateway_rows']:,} | {p['discovery_code_ms']:.1f} | "
            f"{p['discovery_rare_ms']:.1f} | {p['discovery_ms']:.1f} | {p['me_records_ms']:.1f} |"
        )
    return out + [
        "",
        f"Goal: discovery with `code=` ≤ {g['discovery_code_ms']} ms for {g['at_records']:,} records among "
        f"{g['at_rows']:,} rows.",
        "",
    ]


def _growth_catchup(part: dict[str, Any] | None) -> list[str]:
    if not part:
        return []
    g = part["goals"]
    out = [
        f"Catch-up of a fresh read model from the deployment block ({_growth_env(part)}); a fresh "
        "gateway's first `/healthz` and read model caught up.",
        "",
        "| grants (blocks) | code | catch-up s | events/s | catch-up peak MB | first /healthz s | gateway caught up s "
        "| gateway peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shown = None
    for p in part["points"]:
        grants = "" if p["consents"] == shown else f"{p['consents']:,} ({p['blocks']:,})"
        shown = p["consents"]
        out.append(
            f"| {grants} | {p['code']} | {p['seconds']:.2f} | {p['events_per_s']:,} | {p['peak_rss_mb']:.0f} | "
            f"{p['first_healthz_s']:.1f} | {p['gateway_caught_up_s']:.1f} | {p['gateway_peak_rss_mb']:.0f} |"
        )
    return out + [
        "",
        f"Goals: ≥ {g['events_per_s']:,} events/s, ≤ {g['peak_rss_mb']} MB, `/healthz` within "
        f"{g['first_healthz_s']} s of start.",
        "",
    ]


def write() -> Path:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + markdown() + text[end:])
    return DOC
