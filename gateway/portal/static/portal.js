// HealthCode Ledger portal script. What needs the user's key happens here, inside the page:
// keystore decryption, sign-in (EIP-4361), consent signing (EIP-712), transaction signing, and opening
// HPKE releases. The key is held in memory only: it never leaves the page and is gone on reload.
// Everything that changes state goes through the gateway's /v1 API with a bearer token.
(() => {
  "use strict";
  const V = window.hclVendor;
  if (!V) { document.body.dataset.error = "vendor"; return; }
  const E = V.ethers;
  const M = JSON.parse(document.getElementById("hcl-messages").textContent);
  const t = (k) => M[k] || k;
  const state = { signer: null, address: null, token: null, x25519: null, stream: null, events: null, categoryKey: null };
  const $ = (sel, root = document) => root.querySelector(sel);
  // each role page (patient, hospital, auditor) has its own session: it signs in and out as itself
  const PAGE = document.body.dataset.page;

  // ------------------------------------------------------------------ HTTP
  class ProblemError extends Error {
    constructor(problem, status) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.problem = problem || {}; this.status = status;
    }
  }
  async function parse(resp) {
    const type = resp.headers.get("content-type") || "";
    const body = type.includes("json") ? await resp.json() : await resp.text();
    if (!resp.ok) throw new ProblemError(typeof body === "object" ? body : { title: body }, resp.status);
    return body;
  }
  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (state.token) headers["Authorization"] = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return parse(resp);
  }
  async function portal(method, path, body, { form = false } = {}) {
    const headers = { "X-HCL-Portal": "1" };
    if (body !== undefined && !form) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : (form ? body : JSON.stringify(body)),
    });
    return parse(resp);
  }
  function describe(err) {
    if (err instanceof ProblemError) {
      const p = err.problem;
      const title = (p.code && M[`problem_${p.code}`]) || p.title || t("error");
      return p.detail && p.detail !== title ? `${title}${t("colon")}${p.detail}` : title;
    }
    return err && err.message ? err.message : String(err);
  }
  function showError(scope, err) {
    const el = scope && (scope.matches && scope.matches(".error") ? scope : $(".error", scope));
    const text = typeof err === "string" ? err : describe(err);
    if (el) { el.textContent = text; el.hidden = false; }
    if (err instanceof ProblemError && err.problem.code) el && (el.dataset.code = err.problem.code);
    toast(text, true, !el); // an .error paragraph is role=alert: it is read out itself
  }
  function clearError(scope) {
    const el = scope && $(".error", scope);
    if (el) { el.hidden = true; el.textContent = ""; delete el.dataset.code; }
  }
  // results and errors are read out by a polite live region that is always in the page (a region shown
  // at the moment it is filled is often not announced); the toast is only its visual echo
  function announce(text) {
    const el = $("#announcer");
    if (!el) return;
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 50);
  }
  function toast(text, bad = false, spoken = true) {
    const el = $("#toast");
    el.textContent = text; el.hidden = false; el.className = bad ? "bad" : "ok";
    if (spoken) announce(text);
  }
  function hideToast() {
    $("#toast").hidden = true;
  }
  const isBusy = (button) => !!button && button.getAttribute("aria-disabled") === "true";
  // aria-disabled, not disabled: a disabled button drops the keyboard focus to <body>
  async function busy(button, fn) {
    const old = button ? button.textContent : null;
    if (button) { button.setAttribute("aria-disabled", "true"); button.setAttribute("aria-busy", "true"); }
    try { return await fn(); } finally {
      if (button) { button.removeAttribute("aria-disabled"); button.removeAttribute("aria-busy"); button.textContent = old; }
    }
  }
  // where the keyboard focus goes after an action: the result's heading it returned, else the control
  // itself while it is still shown, else the heading of the section it was in (now re-rendered)
  function focusAfter(target, button, sectionId) {
    const shown = (el) => el && el.isConnected && el.getClientRects().length > 0;
    const active = document.activeElement;
    const lost = !active || active === document.body || !shown(active);
    if (!lost && !(target && active === button)) return; // the user has moved on: leave the focus there
    const heading = sectionId && $(`#${sectionId} h2, #${sectionId} [tabindex="-1"]`);
    const el = [target, button, heading, $("#key-status"), $("main h1")].find(shown);
    if (!el || el === document.activeElement) return;
    if (!el.matches("a, button, input, select, textarea, [tabindex]")) el.setAttribute("tabindex", "-1");
    el.focus({ preventScroll: target == null });
  }

  // ------------------------------------------------------------------ key and sign-in
  function keyStatus() {
    const el = $("#key-status");
    if (!el) return;
    if (state.signer) {
      el.dataset.state = "unlocked";
      el.textContent = `${t("unlocked")}: ${state.address}`;
      const form = $("#unlock-form"); if (form) form.hidden = true;
    } else { el.dataset.state = "locked"; el.textContent = t("locked"); }
  }
  async function signIn() {
    const status = $("#key-status");
    if (status) status.textContent = t("signing_in");
    const ch = await api("POST", "/v1/auth/challenge", { address: state.address });
    const signature = await state.signer.signMessage(ch.message);
    const tok = await api("POST", "/v1/auth/token", { message: ch.message, signature });
    state.token = tok.token;
    const who = await portal("POST", "/portal/session", { token: tok.token, page: PAGE });
    showWho(who);
    keyStatus();
    if (PAGE === "patient" && !(who.roles || []).length) {
      // a patient's sign-in hands her category key to this gateway (an institution's key names no records);
      // a failure is shown, but she stays signed in
      try { await handOverCategoryKey(); } catch (err) { showError(null, err); }
    }
    await refresh();
    follow();
  }

  // the patient's signed CategoryKeyRequest (node_client/blinding.py): this gateway derives her key from it to
  // name her records' slots; kept in the page to go into the health codes she makes (so the institution's
  // gateway learns it too). Already held there: a 200, nothing to say.
  async function handOverCategoryKey() {
    const req = await api("GET", `/v1/category-keys/request?${new URLSearchParams({ patient: state.address })}`);
    const { EIP712Domain, ...types } = req.typedData.types;
    const signature = await state.signer.signTypedData(req.typedData.domain, types, req.typedData.message);
    state.categoryKey = signature;
    await api("POST", "/v1/category-keys", { patient: state.address, signature });
  }

  // ------------------------------------------------------------------ live access timeline (patient page)
  // The gateway pushes each new access of the signed-in patient (server-sent events on the page's own
  // cookie); the entry is then fetched rendered as the timeline renders it, put on top and announced:
  // politely, or at once for an emergency.
  function follow() {
    if (PAGE !== "patient" || state.events || !window.EventSource) return;
    const es = new EventSource("/portal/patient/access-events");
    state.events = es;
    es.addEventListener("open", () => { const p = $("#live-following"); if (p) p.hidden = false; });
    es.addEventListener("access", (e) => { arrived(JSON.parse(e.data)).catch(() => {}); });
  }
  async function arrived(access) {
    const id = `li[data-access-id="${access.accessId}"]`;
    if (!$("#timeline ol.timeline") || $(id)) return;
    const q = new URLSearchParams({ since: access.time });
    const resp = await fetch(`/portal/patient/access-log?${q}`, { credentials: "same-origin" });
    if (!resp.ok) return;
    const box = document.createElement("div");
    box.innerHTML = await resp.text();
    const item = $(id, box);
    const list = $("#timeline ol.timeline");
    if (!item || !list || $(id)) return;
    item.classList.add("new");
    const badge = document.createElement("span");
    badge.className = "badge new"; badge.textContent = t("live_new_badge");
    item.prepend(badge);
    list.prepend(item);
    const none = $("#no-accesses"); if (none) none.remove();
    const who = $(".who", item).textContent.trim();
    const what = $(".what", item).textContent.trim() || t("live_record");
    const text = t(access.emergency ? "live_new_emergency" : "live_new_access").replace("{who}", who).replace("{what}", what);
    const region = $(access.emergency ? "#live-assertive" : "#live-polite");
    if (region) { region.textContent = ""; setTimeout(() => { region.textContent = text; }, 100); }
  }
  function showWho(who) { // the header says who this page now acts as
    const box = $("#who");
    if (!box) return;
    const short = (a) => `${a.slice(0, 8)}…${a.slice(-6)}`;
    $("#viewer-name", box).textContent = who.name || short(who.address);
    const addr = $("#viewer-address", box);
    addr.textContent = short(who.address); addr.title = who.address;
    box.hidden = false;
  }
  async function readJsonFile(input) {
    const file = input && input.files && input.files[0];
    return file ? file.text() : null;
  }
  async function unlock(form) {
    clearError(form);
    const json = await readJsonFile($("#keystore", form));
    if (!json) return showError(form, t("choose_keystore"));
    const progress = $("#unlock-progress", form);
    const status = $("#key-status");
    if (status) status.textContent = t("unlocking");
    progress.hidden = false; progress.value = 0;
    let wallet;
    try {
      wallet = await E.Wallet.fromEncryptedJson(json, $("#password", form).value, (p) => { progress.value = Math.round(p * 100); });
    } catch (err) {
      progress.hidden = true; keyStatus();
      return showError(form, t("wrong_password"));
    }
    progress.hidden = true;
    const enc = $("#enckey", form);
    if (enc && enc.files && enc.files[0]) {
      try { state.x25519 = JSON.parse(await enc.files[0].text()); } catch (err) { return showError(form, t("need_enc_key")); }
    }
    state.signer = wallet; state.address = wallet.address;
    $("#password", form).value = "";
    await signIn();
    return $("#key-status");
  }
  async function useWallet() {
    const provider = new E.BrowserProvider(window.ethereum);
    state.signer = await provider.getSigner();
    state.address = await state.signer.getAddress();
    state.injected = true;
    await signIn();
    return $("#key-status");
  }
  function requireKey() {
    if (state.signer && state.token) return;
    const panel = $("#unlock"); if (panel) { panel.scrollIntoView({ behavior: "smooth" }); const pw = $("#keystore"); pw && pw.focus(); }
    throw new Error(t("unlock_first"));
  }
  async function refresh() {
    const box = $("#sections");
    if (!box || !box.dataset.src) return;
    const html = await fetch(box.dataset.src, { credentials: "same-origin" });
    if (html.status === 401) { box.innerHTML = `<p class="muted">${t("session_expired")}</p>`; return; }
    if (!html.ok && html.status !== 403) throw new ProblemError(await html.json().catch(() => ({})), html.status);
    box.innerHTML = await html.text();
    wire(box);
  }

  // ------------------------------------------------------------------ signing helpers
  async function signTyped(draft) {
    const { EIP712Domain, ...types } = draft.typedData.types;
    const signature = await state.signer.signTypedData(draft.typedData.domain, types, draft.typedData.message);
    return { type: draft.type, message: draft.message, signer: state.address, signature };
  }
  async function signAndRelay(fn, args) {
    const d = await api("POST", "/v1/transactions/draft", { function: fn, args });
    const tx = d.transaction;
    const fields = {
      to: tx.to, data: tx.data, nonce: tx.nonce, gasLimit: tx.gas, chainId: tx.chainId, value: 0,
      type: tx.type,
    };
    if (tx.type === 2) { fields.maxFeePerGas = tx.maxFeePerGas; fields.maxPriorityFeePerGas = tx.maxPriorityFeePerGas; }
    else fields.gasPrice = tx.gasPrice;
    if (state.injected) { // a browser wallet sends it itself (it will not sign without sending)
      const sent = await state.signer.sendTransaction(fields);
      await sent.wait();
      return { txHash: sent.hash };
    }
    return state.signer.signTransaction(fields);
  }
  function checkedValues(form, name) {
    return [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
  }
  const b64 = (s) => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));

  // ------------------------------------------------------------------ patient
  const actions = {};
  actions["create-code"] = async (form) => {
    requireKey();
    const categories = checkedValues(form, "categories");
    const purposes = checkedValues(form, "purposes");
    if (!categories.length) throw new Error(t("pick_category"));
    if (!purposes.length) throw new Error(t("pick_purpose"));
    const ward = form.patient ? form.patient.value : ""; // a guardian's code for her ward
    const draft = await portal("POST", "/portal/patient/draft", {
      kind: "grant", grantee: form.grantee.value, categories, purposes, patient: ward || undefined,
      validDays: Number(form.validDays.value), deadlineHours: Number(form.deadlineHours.value),
    });
    const signed = await signTyped(draft);
    // the code carries her key (a ward's: the gateway adds the one it holds for her)
    if (state.categoryKey && !ward) signed.categoryKey = state.categoryKey;
    const html = await portal("POST", "/portal/patient/health-code", signed);
    const out = $("#code-result"); out.innerHTML = html; out.scrollIntoView({ behavior: "smooth" });
    return $("#health-code h3", out);
  };
  actions["revoke"] = async (button) => {
    requireKey();
    if (!window.confirm(t("confirm_revoke"))) return;
    const draft = await portal("POST", "/portal/patient/draft", {
      kind: "revoke", grantee: button.dataset.grantee, patient: button.dataset.patient, // a ward's, by her guardian
    });
    const signed = await signTyped(draft);
    await api("POST", `/v1/consents/${button.dataset.consentId}/revoke`, signed);
    toast(t("revoked_ok"));
    await refresh();
  };
  // an auditor's review of an emergency access: the page checks the note's hash in the gateway's draft
  // (node_client/reviews.py note_hash) before signing, so the signature covers the note the auditor wrote
  const REVIEW_NOTE_TAG = "hcl/emergency-review-note/v1\0";
  actions["review-emergency"] = async (form) => {
    requireKey();
    const accessId = form.dataset.accessId, note = form.note.value, verdict = form.verdict.value;
    const draft = await api("POST", "/v1/emergency-reviews/draft", { accessId, verdict, note });
    const noteHash = E.sha256(E.concat([E.toUtf8Bytes(REVIEW_NOTE_TAG), E.toUtf8Bytes(note)]));
    const m = draft.message;
    if (m.noteHash !== noteHash || m.accessId !== accessId || m.verdict !== verdict || m.reviewer !== state.address) {
      throw new Error(t("review_hash_mismatch"));
    }
    const signed = await signTyped(draft);
    await api("POST", "/v1/emergency-reviews", { message: m, note, signature: signed.signature });
    toast(t("review_saved"));
    await refresh();
    return $(`[id="review-${accessId}"] .review`) || $("#unreviewed");
  };
  async function relayed(fn, args) {
    const raw = await signAndRelay(fn, args);
    const result = typeof raw === "string" ? await api("POST", "/v1/transactions", { signedTransaction: raw }) : raw;
    toast(`${t("tx_sent")}: ${result.txHash}`);
    await refresh();
  }
  actions["add-guardian"] = async (form) => {
    requireKey();
    const validUntil = Math.floor(Date.now() / 1000) + Number(form.days.value) * 86400;
    await relayed("setGuardian", { guardian: form.guardian.value.trim(), validUntil });
  };
  actions["remove-guardian"] = async (button) => { requireKey(); await relayed("removeGuardian", { guardian: button.dataset.guardian }); };
  actions["opt-out"] = async (button) => { requireKey(); await relayed("setEmergencyOptOut", { optedOut: button.dataset.value === "true" }); };

  // ------------------------------------------------------------------ hospital
  actions["preview"] = async (form) => {
    const data = new FormData();
    const file = form.picture.files[0];
    if (file) data.append("picture", file);
    data.append("text", form.text.value);
    const html = await portal("POST", "/portal/hospital/preview", data, { form: true });
    const out = $("#preview"); out.innerHTML = html;
  };
  actions["submit-code"] = async (button) => {
    requireKey();
    const { payload, consentId } = JSON.parse($("#code-payload").textContent);
    const result = payload.type === "ConsentGrant"
      ? await api("POST", "/v1/consents", payload)
      : await api("POST", `/v1/consents/${consentId}/revoke`, payload);
    const out = $("#preview");
    out.innerHTML = `<p class="verdict ok" id="submitted">${t("submitted_ok")}: <a href="/portal/tx/${result.txHash}">${result.txHash}</a></p>`;
    const patient = $("#patient"); if (patient) patient.value = payload.message.patient;
    toast(t("submitted_ok"));
    return $("#submitted");
  };
  // find a patient by an ID (POST /v1/patients/lookup: the ID stays out of URLs); her address fills the forms
  actions["lookup-patient"] = async (form) => {
    requireKey();
    const found = $("#lookup-found"); found.hidden = true;
    const purpose = $("#purpose") ? $("#purpose").value : "treatment";
    const result = await api("POST", "/v1/patients/lookup",
      { system: form.system.value.trim(), value: form.value.value.trim(), purpose });
    ["#patient", "#up-patient", "#bg-patient"].forEach((sel) => { const input = $(sel); if (input) input.value = result.patient; });
    found.textContent = `${t("lookup_found")}${t("colon")}${result.patient}`; found.hidden = false;
    form.value.value = "";
    toast(t("lookup_found"));
    return $("#patient");
  };
  actions["find-records"] = async (form) => {
    const q = new URLSearchParams({ patient: form.patient.value.trim(), purpose: form.purpose.value });
    const resp = await fetch(`/portal/hospital/records?${q}`, { credentials: "same-origin" });
    if (!resp.ok) throw new ProblemError(await resp.json(), resp.status);
    $("#records-list").innerHTML = await resp.text();
    $("#record-view").innerHTML = "";
  };
  // the upload API the CLI uses (POST /v1/records), its answer shown as given: the records made, or the
  // problem with every FHIR issue at its path
  function el(tag, text, attrs = {}) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }
  // a category as the API names it: a slug, or "slot-N" for a slot this gateway cannot name (no key)
  function categoryLabel(labels, name) {
    const slot = /^slot-(\d+)$/.exec(name);
    return labels[name] || (slot ? t("slot_n").replace("{n}", slot[1]) : name);
  }
  function uploaded(result) {
    const labels = JSON.parse($("#category-labels").textContent);
    const box = el("div", undefined, { class: "upload-result", id: "upload-done" });
    const h = el("h3", t("uploaded_title").replace("{n}", result.records.length), { tabindex: "-1" });
    const list = el("ul");
    result.records.forEach((r) => {
      const li = el("li", undefined, { "data-category": r.category });
      li.append(el("strong", categoryLabel(labels, r.category)), ` · ${t("upload_resources").replace("{n}", r.resources)} · `,
        el("code", r.recordId));
      if (r.amends) li.append(` · ${t("uploaded_amends")} `, el("code", r.amends));
      list.append(li);
    });
    box.append(h, list);
    if (result.txHash) {
      const tx = el("p", `${t("uploaded_ledger")}: `);
      tx.append(el("a", result.txHash, { href: `/portal/tx/${result.txHash}` }));
      box.append(tx);
    }
    if (result.unchanged && result.unchanged.length) {
      box.append(el("p", t("uploaded_unchanged").replace("{n}", result.unchanged.length), { id: "upload-unchanged" }));
    }
    if (result.ignored.length) {
      const ignored = el("ul");
      result.ignored.forEach((i) => ignored.append(el("li", `${i.resourceType}: ${i.reason}`)));
      box.append(el("h4", t("uploaded_ignored")), ignored);
    }
    return box;
  }
  function uploadProblem(err) {
    const p = err.problem;
    const box = el("div", undefined, { class: "upload-result problem", id: "upload-problem", role: "alert", "data-code": p.code || "" });
    box.append(el("h3", (p.code && M[`problem_${p.code}`]) || p.title || t("error"), { tabindex: "-1" }));
    const issues = p.issues || p.errors || [];
    // the count in the page's language; each issue as the API gives it (the validator's English, marked
    // as English so a screen reader reads it so), at the path the sender can find in its own file
    if (issues.length) box.append(el("p", t("upload_issue_count").replace("{n}", issues.length), { id: "upload-issue-count" }));
    else if (p.detail) box.append(el("p", p.detail));
    if (issues.length) {
      const list = el("ul", undefined, { "aria-label": t("upload_problems") });
      issues.forEach((i) => {
        const li = el("li"); li.append(el("code", i.path), ": ", el("span", i.message, { lang: "en" })); list.append(li);
      });
      box.append(list);
    }
    return box;
  }
  actions["upload-bundle"] = async (form) => {
    requireKey();
    const body = await readJsonFile(form.bundle);
    if (body === null) throw new Error(t("choose_fhir_file"));
    const q = new URLSearchParams({ patient: form.patient.value.trim() });
    const resp = await fetch(`/v1/records?${q}`, {
      method: "POST", body,
      headers: { "Authorization": `Bearer ${state.token}`, "Content-Type": "application/fhir+json", "Accept": "application/json" },
    });
    const out = $("#upload-result");
    out.innerHTML = "";
    try { out.append(uploaded(await parse(resp))); } catch (err) {
      if (!(err instanceof ProblemError)) throw err;
      out.append(uploadProblem(err));
    }
    return $("h3", out);
  };
  actions["older-accesses"] = async (button) => {
    const q = new URLSearchParams({ cursor: button.dataset.cursor });
    const resp = await fetch(`/portal/patient/access-log?${q}`, { credentials: "same-origin" });
    if (!resp.ok) throw new ProblemError(await resp.json(), resp.status);
    const page = document.createElement("div");
    page.innerHTML = await resp.text();
    $("#timeline ol.timeline").append(...page.querySelectorAll("ol.timeline > li"));
    const more = $("button[data-action=older-accesses]", page);
    if (more) button.replaceWith(more); else button.remove();
    return more;
  };
  // a list's next page (rendered rows and the next "more" button, from the page's own route): the rows join
  // the table, the new button replaces the pressed one; returns the new button, or null on the last page
  async function appendPage(button, url, tbody) {
    const resp = await fetch(url, { credentials: "same-origin" });
    if (!resp.ok) throw new ProblemError(await resp.json(), resp.status);
    const page = document.createElement("div");
    page.innerHTML = await resp.text();
    const rows = [...page.querySelectorAll("tbody > tr")];
    $(tbody).append(...rows);
    const more = $(`button[data-action=${button.dataset.action}]`, page);
    if (more) button.replaceWith(more); else button.remove();
    return { more, rows };
  }
  // focus then moves to the new "more" button, else to the first new row's "open" (the hospital's) or to
  // the list's heading (the patient's): never to <body>
  actions["more-records"] = async (button) => {
    const q = new URLSearchParams({ patient: button.dataset.patient, purpose: button.dataset.purpose, cursor: button.dataset.cursor });
    const { more, rows } = await appendPage(button, `/portal/hospital/records?${q}`, "#records-found tbody");
    return more || (rows.length ? $("button", rows[0]) : null);
  };
  actions["more-my-records"] = async (button) => {
    const q = new URLSearchParams({ cursor: button.dataset.cursor });
    const { more } = await appendPage(button, `/portal/patient/records?${q}`, "#records tbody");
    return more || $("#records-title");
  };
  async function openRelease(body, recordId) {
    if (body.resource) return body.resource;
    if (!state.x25519) throw new Error(t("need_enc_key"));
    const suite = new V.hpke.CipherSuite({
      kem: new V.hpke.DhkemX25519HkdfSha256(), kdf: new V.hpke.HkdfSha256(), aead: new V.hpke.Aes256Gcm(),
    });
    const jwk = { kty: state.x25519.kty, crv: state.x25519.crv, x: state.x25519.x, d: state.x25519.d };
    const key = await suite.kem.importKey("jwk", jwk, false);
    const aad = new Uint8Array([...E.getBytes(recordId), ...E.getBytes(state.address)]);
    const recipient = await suite.createRecipientContext({
      recipientKey: key, enc: b64(body.encryption.enc), info: new TextEncoder().encode(body.encryption.info),
    });
    const plain = await recipient.open(b64(body.encryption.ciphertext), aad);
    return JSON.parse(new TextDecoder().decode(plain));
  }
  // the opened record in the page's language (record_view.js lays it out): FHIR type names from the
  // catalog, dates as its readers write them
  const typeName = (rt) => M[`fhir_${rt}`] || rt;
  function localDate(value) {
    if (!value) return "";
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return value;
    const dateOnly = /^\d{4}(-\d{2}(-\d{2})?)?$/.test(value);
    const opts = dateOnly ? { dateStyle: "long", timeZone: "UTC" } : { dateStyle: "long", timeStyle: "short" };
    return new Intl.DateTimeFormat(document.documentElement.lang || undefined, opts).format(d);
  }
  actions["open-record"] = async (button) => {
    requireKey();
    const id = button.dataset.recordId;
    const body = await api("GET", `/v1/records/${id}?purpose=${encodeURIComponent(button.dataset.purpose)}`);
    const fhir = await openRelease(body, id);
    const view = $("#record-view");
    view.innerHTML = "";
    delete view.dataset.ready;
    const h = document.createElement("h3"); h.textContent = `${t("decrypted_record")} ${id.slice(0, 10)}…`;
    const proof = document.createElement("p");
    proof.className = "muted";
    const l = body.ledger || {};
    proof.textContent = `${t("proof")}: ${l.txHash || `${t("journal_entry")} #${l.journalIndex}`}`;
    const details = document.createElement("details");
    const summary = document.createElement("summary"); summary.textContent = t("raw_fhir");
    const pre = document.createElement("pre"); pre.textContent = JSON.stringify(fhir, null, 2);
    details.append(summary, pre);
    view.append(h, window.hclRecord.render(fhir, { t, date: localDate, typeName }), proof, details);
    view.dataset.ready = "1";
    view.scrollIntoView({ behavior: "smooth" });
    return h;
  };
  actions["break-glass"] = async (form) => {
    requireKey();
    const reason = form.reason.value.trim();
    if (reason.length < 3) throw new Error(t("reason_required"));
    const mask = [...form.querySelectorAll('input[name="categories"]:checked')].reduce((m, i) => m | (1 << Number(i.dataset.bit)), 0);
    // a salted commitment (node_client/commitments.py): no guess of the wording confirms it from the chain
    const salt = E.hexlify(E.randomBytes(32));
    const reasonHash = E.sha256(E.concat([E.toUtf8Bytes("hcl/emergency-reason/v1\0"), salt, E.toUtf8Bytes(reason)]));
    const args = { patient: form.patient.value.trim(), categories: mask, reasonHash };
    const raw = await signAndRelay("emergencyAccess", args);
    if (typeof raw !== "string") throw new Error("a browser wallet cannot relay break-glass; use a keystore");
    const result = await api("POST", "/v1/emergency-access", { signedTransaction: raw, reason, salt });
    const until = new Date(result.validUntil * 1000).toLocaleString();
    $("#break-glass-result").innerHTML = "";
    const p = document.createElement("p"); p.className = "verdict ok"; p.id = "window-open";
    p.textContent = `${t("window_open")} ${until}`;
    $("#break-glass-result").appendChild(p);
    const patient = $("#patient"); if (patient) patient.value = args.patient;
  };

  // ------------------------------------------------------------------ camera (where available)
  actions["camera"] = async (button) => {
    const box = $(".camera"); const video = $("#camera-video");
    if (state.stream) { state.stream.getTracks().forEach((tr) => tr.stop()); state.stream = null; box.hidden = true; button.textContent = t("use_camera"); return; }
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = state.stream; box.hidden = false; await video.play();
    button.textContent = t("stop_camera");
    const canvas = document.createElement("canvas");
    const tick = async () => {
      if (!state.stream) return;
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((ok) => canvas.toBlob(ok, "image/png"));
      const data = new FormData(); data.append("picture", blob, "frame.png");
      try {
        $("#preview").innerHTML = await portal("POST", "/portal/hospital/preview", data, { form: true });
        actions["camera"](button); // found one: stop
      } catch (err) { setTimeout(tick, 700); }
    };
    setTimeout(tick, 700);
  };

  actions["sign-out"] = async () => {
    if (state.events) { state.events.close(); state.events = null; }
    await portal("POST", "/portal/logout", { page: PAGE });
    state.signer = null; state.token = null; state.x25519 = null; state.categoryKey = null;
    window.location.reload();
  };
  actions["unlock"] = unlock;
  actions["use-wallet"] = useWallet;

  // ------------------------------------------------------------------ wiring
  async function run(name, el, scope) {
    const button = el.tagName === "FORM" ? $("button[type=submit]", el) : el;
    if (isBusy(button)) return; // still working on the last press
    clearError(scope);
    const section = el.closest("section[id]");
    let target = null;
    try { target = await busy(button, () => actions[name](el)); } catch (err) { showError(scope, err); }
    focusAfter(target instanceof Element ? target : null, button, section && section.id);
  }
  function wire(root) {
    if (window.ethereum) { const w = $("#wallet-button"); if (w) w.hidden = false; }
    if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) { const c = $("#camera-button", root); if (c) c.hidden = false; }
  }
  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-action]");
    if (!form) return;
    e.preventDefault();
    run(form.dataset.action, form, form);
  });
  document.addEventListener("click", (e) => {
    const el = e.target.closest("button[data-action]");
    if (!el || el.type === "submit") return;
    e.preventDefault();
    run(el.dataset.action, el, el.closest(".preview, section, form") || el.parentElement);
  });
  // a chosen picture of a code is previewed at once (no second press of "preview")
  document.addEventListener("change", (e) => {
    if (e.target.id === "picture" && e.target.files.length) e.target.form.requestSubmit();
  });
  $("#toast").addEventListener("click", hideToast);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideToast(); });
  wire(document);
  keyStatus();
  document.body.dataset.ready = "1";
})();
