// The opened record as a clinician reads it: results grouped by code, newest first, rounded to a sensible
// precision with their units and range flags, a small trend plot for repeated numeric results, the
// medications as a table, everything else as a list, and the raw FHIR JSON one click away.
// Pure DOM building on the decrypted FHIR, which never leaves the page (window.hclRecord, used by portal.js).
(() => {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------------ numbers and units
  // decimals by UCUM unit where a lab reports a fixed precision; anything else: three significant digits
  const DECIMALS = {
    "%": 1, "kg": 1, "cm": 1, "kg/m2": 1, "Cel": 1, "mm[Hg]": 0, "/min": 0, "mmol/L": 1, "g/dL": 1,
    "fL": 1, "pg": 1, "10*3/uL": 1, "10*6/uL": 2, "{score}": 0, "mg/dL": null,
  };
  // UCUM codes as people write them
  const UNIT_TEXT = {
    "Cel": "°C", "mm[Hg]": "mmHg", "kg/m2": "kg/m²", "10*3/uL": "×10³/µL", "10*6/uL": "×10⁶/µL",
    "10*9/L": "×10⁹/L", "10*12/L": "×10¹²/L", "{score}": "", "/min": "/min", "uL": "µL", "ug": "µg",
  };
  function decimalsFor(value, unit) {
    const fixed = DECIMALS[unit];
    if (fixed !== undefined && fixed !== null) return fixed;
    if (value === 0) return 0;
    return Math.max(0, 2 - Math.floor(Math.log10(Math.abs(value)))); // 3 significant digits
  }
  // never more decimals than the source gave: 6 stays "6", 6.036967906106147 % becomes "6.0"
  function round(value, unit) {
    const given = (String(value).split(".")[1] || "").length;
    return value.toFixed(Math.min(decimalsFor(value, unit), given));
  }
  const unitText = (q) => {
    const code = q.code || q.unit || "";
    return code in UNIT_TEXT ? UNIT_TEXT[code] : (q.unit || q.code || "");
  };
  const quantity = (q) => `${round(q.value, q.code || q.unit)}${unitText(q) ? ` ${unitText(q)}` : ""}`;

  // ------------------------------------------------------------------ FHIR reading
  const textOf = (cc) => (cc && (cc.text || (cc.coding && cc.coding[0] && (cc.coding[0].display || cc.coding[0].code)))) || "";
  const keyOf = (cc) => {
    const c = cc && cc.coding && cc.coding[0];
    return c ? `${c.system || ""}|${c.code}` : `text|${textOf(cc)}`;
  };
  const whenOf = (r) => r.effectiveDateTime || (r.effectivePeriod && r.effectivePeriod.start) || r.issued
    || r.recordedDate || r.authoredOn || r.occurrenceDateTime || r.onsetDateTime || r.performedDateTime
    || (r.performedPeriod && r.performedPeriod.start) || (r.period && r.period.start) || r.date || "";
  const newestFirst = (a, b) => String(b.when).localeCompare(String(a.when));
  function valueText(r) {
    if (r.valueQuantity && typeof r.valueQuantity.value === "number") return quantity(r.valueQuantity);
    if (r.valueCodeableConcept) return textOf(r.valueCodeableConcept);
    if (r.valueString !== undefined) return String(r.valueString);
    if (r.valueBoolean !== undefined || r.valueInteger !== undefined) return String(r.valueBoolean ?? r.valueInteger);
    if (r.component) return r.component.map((c) => `${textOf(c.code)} ${valueText(c)}`).join(" · ");
    return "";
  }
  // H/L from the data: its interpretation code if it has one, else its reference range
  function flagOf(r) {
    const code = r.interpretation && r.interpretation[0] && r.interpretation[0].coding && r.interpretation[0].coding[0];
    if (code && /^(H|HH|HU|L|LL|LU|A|AA)$/.test(code.code)) return code.code;
    const range = r.referenceRange && r.referenceRange[0];
    const v = r.valueQuantity && r.valueQuantity.value;
    if (!range || typeof v !== "number") return "";
    if (range.high && typeof range.high.value === "number" && v > range.high.value) return "H";
    if (range.low && typeof range.low.value === "number" && v < range.low.value) return "L";
    return "";
  }
  function rangeText(r) {
    const range = r.referenceRange && r.referenceRange[0];
    if (!range) return "";
    if (range.text) return range.text;
    const lo = range.low && range.low.value, hi = range.high && range.high.value;
    const unit = (range.high || range.low) ? unitText(range.high || range.low) : "";
    if (lo !== undefined && hi !== undefined) return `${lo}–${hi}${unit ? ` ${unit}` : ""}`;
    return lo !== undefined ? `≥ ${lo}` : hi !== undefined ? `≤ ${hi}` : "";
  }
  // Observations grouped by code, each group newest first, the groups by their latest result
  function groupResults(resources) {
    const groups = new Map();
    for (const r of resources.filter((x) => x.resourceType === "Observation")) {
      const key = keyOf(r.code);
      if (!groups.has(key)) groups.set(key, { key, name: textOf(r.code), code: key.split("|")[1], items: [] });
      groups.get(key).items.push({ r, when: whenOf(r) });
    }
    const list = [...groups.values()];
    list.forEach((g) => g.items.sort(newestFirst));
    return list.sort((a, b) => newestFirst(a.items[0], b.items[0]));
  }
  const numeric = (g) => g.items.filter((i) => i.r.valueQuantity && typeof i.r.valueQuantity.value === "number");

  // ------------------------------------------------------------------ DOM
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }
  function svgEl(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }
  function table(id, caption, headers, rows) {
    const head = el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)));
    const body = el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c, i) =>
      el("td", { "data-label": headers[i] }, c)))));
    return el("table", { id, class: "record-table" }, el("caption", {}, caption), el("thead", {}, head), body);
  }
  // a sparkline of a group's numeric values, oldest to newest, its points and range in words for readers
  function trend(g, ctx) {
    const points = numeric(g).slice().reverse();
    const w = 160, h = 40, pad = 5;
    const values = points.map((p) => p.r.valueQuantity.value);
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const xy = points.map((p, i) => [pad + (i * (w - 2 * pad)) / (points.length - 1),
      h - pad - ((p.r.valueQuantity.value - lo) * (h - 2 * pad)) / span]);
    const unit = points[0].r.valueQuantity;
    const label = `${ctx.t("trend_of")} ${g.name}: ${points.map((p) =>
      `${quantity(p.r.valueQuantity)} (${ctx.date(p.when)})`).join(", ")}`;
    const svg = svgEl("svg", { class: "trend", role: "img", "aria-label": label, viewBox: `0 0 ${w} ${h}`, width: w, height: h, "data-points": points.length });
    const title = svgEl("title"); title.textContent = label;
    svg.append(title, svgEl("polyline", { points: xy.map((p) => p.join(",")).join(" "), fill: "none" }));
    xy.forEach(([x, y], i) => svg.append(svgEl("circle", { cx: x, cy: y, r: i === xy.length - 1 ? 3.5 : 2.5 })));
    svg.dataset.unit = unitText(unit);
    return svg;
  }
  function flagBadge(flag, t) {
    if (!flag) return "";
    const high = flag.startsWith("H"), low = flag.startsWith("L");
    const name = high ? t("flag_high") : low ? t("flag_low") : t("flag_abnormal");
    return el("abbr", { class: `flag flag-${high ? "high" : low ? "low" : "abnormal"}`, title: name, "aria-label": name }, flag);
  }
  function resultsTable(groups, ctx) {
    const { t } = ctx;
    const rows = groups.map((g) => {
      const latest = g.items[0];
      const earlier = g.items.slice(1, 4).map((i) => `${valueText(i.r)} (${ctx.date(i.when)})`).join("; ");
      const value = el("span", { class: "value" }, valueText(latest.r));
      const history = numeric(g).length >= 2 ? trend(g, ctx) : el("span", { class: "muted" }, earlier || "–");
      return [el("span", {}, g.name, el("small", { class: "muted code" }, ` ${g.code || ""}`)),
        el("span", {}, value, " ", flagBadge(flagOf(latest.r), t)), rangeText(latest.r) || "–",
        el("time", { datetime: latest.when }, ctx.date(latest.when)), history];
    });
    const headers = [t("result_test"), t("result_latest"), t("result_range"), t("result_date"), t("result_trend")];
    const tab = table("record-results", t("results_title"), headers, rows);
    [...tab.tBodies[0].rows].forEach((tr, i) => { tr.dataset.code = groups[i].code || ""; tr.dataset.count = groups[i].items.length; });
    return tab;
  }

  // ------------------------------------------------------------------ medications
  function dosageText(r, t) {
    const d = r.dosageInstruction && r.dosageInstruction[0] || r.dosage && r.dosage[0];
    if (!d) return "–";
    if (d.text) return d.text;
    const dose = d.doseAndRate && d.doseAndRate[0] && d.doseAndRate[0].doseQuantity;
    const rep = d.timing && d.timing.repeat;
    const parts = [dose ? quantity(dose) : "", rep && rep.frequency ? `${rep.frequency}× / ${rep.period || 1} ${rep.periodUnit || ""}` : ""];
    if (d.asNeededBoolean) parts.push(t("as_needed"));
    return parts.filter(Boolean).join(", ") || "–";
  }
  const MED_TYPES = ["MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration"];
  function medicationsTable(meds, ctx) {
    const { t } = ctx;
    const rows = meds.map(({ r, when }) => {
      const period = r.dispenseRequest && r.dispenseRequest.validityPeriod || r.effectivePeriod || {};
      const until = period.end ? ` → ${ctx.date(period.end)}` : "";
      return [textOf(r.medicationCodeableConcept) || (r.medicationReference && r.medicationReference.display) || "–",
        el("span", { class: `status status-${r.status}` }, t(`med_status_${r.status}`) === `med_status_${r.status}` ? r.status || "–" : t(`med_status_${r.status}`)),
        dosageText(r, t), `${ctx.date(when)}${until}`];
    });
    return table("record-medications", t("medications_title"),
      [t("med_name"), t("med_status"), t("med_dosage"), t("med_dates")], rows);
  }

  // what a listed resource is: its code, else its name (directory resources), else for a Patient what the
  // record holds of her (sex, birth year); nothing rather than an empty label
  function describe(r, ctx) {
    const cc = r.code || r.vaccineCode || (r.type && r.type[0]) || null;
    if (textOf(cc)) return textOf(cc);
    const name = Array.isArray(r.name) ? r.name[0] : r.name;
    if (typeof name === "string") return name;
    if (name && (name.text || name.family)) return name.text || [name.family, ...(name.given || [])].join(" ");
    if (r.resourceType === "Patient") {
      return [r.gender && ctx.t(`gender_${r.gender}`), r.birthDate && r.birthDate.slice(0, 4)].filter(Boolean).join(" · ");
    }
    return "";
  }

  // ------------------------------------------------------------------ the whole view
  function render(fhir, ctx) {
    const list = fhir.resourceType === "Bundle" ? (fhir.entry || []).map((e) => e.resource).filter(Boolean) : [fhir];
    const out = document.createDocumentFragment();
    const groups = groupResults(list);
    if (groups.length) out.append(resultsTable(groups, ctx));
    const meds = list.filter((r) => MED_TYPES.includes(r.resourceType)).map((r) => ({ r, when: whenOf(r) })).sort(newestFirst);
    if (meds.length) out.append(medicationsTable(meds, ctx));
    const others = list.filter((r) => r.resourceType !== "Observation" && !MED_TYPES.includes(r.resourceType))
      .map((r) => ({ r, when: whenOf(r) })).sort(newestFirst);
    if (others.length) {
      out.append(el("h4", { id: "record-other-title" }, ctx.t("record_other")));
      out.append(el("ul", { id: "record-resources", "aria-labelledby": "record-other-title" }, ...others.map(({ r, when }) => {
        const what = describe(r, ctx);
        return el("li", {}, `${ctx.typeName(r.resourceType)}${what ? `${ctx.t("colon")}${what}` : ""}${when ? ` (${ctx.date(when)})` : ""}`);
      })));
    }
    return out;
  }

  window.hclRecord = { render, round, unitText, flagOf, groupResults };
})();
