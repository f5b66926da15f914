// The console's core: routing (the URL holds the page and every filter, so a link can be
// shared), the token, API calls, the page registry and shared widgets (tables, dialogs,
// toasts). Pages register themselves from pages.js, release.js and ops.js.
"use strict";

const Apus = (window.Apus = {});
Apus.errors = [];
window.addEventListener("error", (e) => Apus.errors.push(String(e.message || e)));
window.addEventListener("unhandledrejection", (e) => Apus.errors.push(String(e.reason && e.reason.message || e.reason)));

const $ = (id) => document.getElementById(id);
Apus.$ = $;
Apus.esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c]));
const esc = Apus.esc;

Apus.fmt = (v, unit) => {
  if (v == null || v === "") return "";
  if (typeof v !== "number") return String(v);
  if (unit === "percent") return (v * 100).toFixed(v < 0.001 && v > 0 ? 3 : 2) + " %";
  const a = Math.abs(v);
  let s;
  if (Number.isInteger(v)) s = v.toLocaleString("en-US");
  else if (a >= 1000) s = Math.round(v).toLocaleString("en-US");
  else if (a >= 10) s = v.toFixed(1);
  else if (a >= 0.01) s = v.toFixed(3);
  else if (a === 0) s = "0";
  else s = v.toPrecision(2);
  return unit && unit !== "req" && unit !== "calls" ? `${s} ${unit}` : s;
};

// Times as the user reads them: local, to the second.
Apus.time = (v) => {
  if (v == null || v === "") return "";
  const d = typeof v === "number" ? new Date(v > 1e14 ? v / 1000 : v) : new Date(v);
  if (isNaN(d)) return String(v);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
};

// ---- the URL ---------------------------------------------------------------------------
// `#/page/arg?from=now-15m&to=now&project=shop&…`: page, optional argument, parameters.
const GLOBAL = ["from", "to", "project", "env", "pool"];
Apus.route = () => {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, qs] = [h.split("?")[0], h.includes("?") ? h.slice(h.indexOf("?") + 1) : ""];
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return {page: parts[0] || "overview", arg: parts.slice(1).join("/"), q: new URLSearchParams(qs)};
};
Apus.link = (page, arg, params, keep = true) => {
  const cur = Apus.route().q, q = new URLSearchParams();
  if (keep) for (const k of GLOBAL) if (cur.get(k)) q.set(k, cur.get(k));
  for (const [k, v] of Object.entries(params || {})) {
    if (v === "" || v == null) q.delete(k); else q.set(k, v);
  }
  const a = arg ? "/" + String(arg).split("/").map(encodeURIComponent).join("/") : "";
  const s = q.toString();
  return `#/${page}${a}${s ? "?" + s : ""}`;
};
Apus.go = (page, arg, params, opts) => {
  const h = Apus.link(page, arg, params);
  if (opts && opts.replace) history.replaceState(null, "", h), render();
  else if (location.hash === h) render(); else location.hash = h;
};
// Set parameters of the current page (a filter, a tab, a page of results).
Apus.set = (params, opts) => { const r = Apus.route(); Apus.go(r.page, r.arg, params, opts); };

// The query string of the time range and the filters (only `dims` of them), plus `extra`.
Apus.scope = (extra, dims) => {
  const q = Apus.route().q, p = new URLSearchParams();
  p.set("from", q.get("from") || "now-15m");
  p.set("to", q.get("to") || "now");
  for (const d of dims || ["project", "env", "pool"]) if (q.get(d)) p.set(d, q.get(d));
  for (const [k, v] of Object.entries(extra || {})) if (v !== "" && v != null) p.set(k, v);
  return p.toString();
};
// The window in epoch milliseconds (for charts and zoom).
Apus.window = (resp) => {
  const f = resp && resp.from ? Date.parse(resp.from) : NaN, t = resp && resp.to ? Date.parse(resp.to) : NaN;
  return isNaN(f) || isNaN(t) ? null : [f, t];
};
Apus.zoom = (from, to) => Apus.set({from: new Date(from).toISOString(), to: new Date(to).toISOString()});

// ---- the token and the API ----------------------------------------------------------
// The token lives in this tab's session storage only, never in a URL the server sees. A
// link may carry it once in the fragment (`…&token=…`, never sent to the server); it is
// moved to session storage and wiped from the address bar at once.
(function takeTokenFromFragment() {
  const m = location.hash.match(/[?&#]token=([^&]*)/);
  if (!m) return;
  sessionStorage.apusToken = decodeURIComponent(m[1]);
  history.replaceState(null, "", location.pathname + location.hash.replace(/[?&]?token=[^&]*/, ""));
})();

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
Apus.ApiError = ApiError;

Apus.api = async (path, opts) => {
  opts = Object.assign({}, opts || {});
  opts.headers = Object.assign({}, opts.headers || {});
  if (sessionStorage.apusToken) opts.headers["authorization"] = "Bearer " + sessionStorage.apusToken;
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["content-type"] = "application/json";
    delete opts.json;
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let body;
  try { body = text ? JSON.parse(text) : {}; } catch (_) { body = {text}; }
  if (!r.ok) throw new ApiError(r.status, (body && body.error) || r.statusText || `HTTP ${r.status}`);
  return body;
};
Apus.post = (path, json, method) => Apus.api(path, {method: method || "POST", json});

// ---- pages ------------------------------------------------------------------------------
Apus.pages = {};
Apus.order = [];
// `group`: "sre" or "release" (nav sections); `hidden`: reachable by link only.
Apus.page = (id, def) => { Apus.pages[id] = def; if (!def.hidden) Apus.order.push(id); };

Apus.who = null;
Apus.mayChange = () => !!(Apus.who && Apus.who.may_change);
Apus.maySql = () => !!(Apus.who && Apus.who.may_sql);
// Whether the token's scopes (`project/env`, `*` for any) hold `project`/`env`.
Apus.inScope = (project, env) => !!(Apus.who && (Apus.who.scopes || []).some((s) => {
  const [p, e] = String(s).split("/");
  return (p === "*" || p === project) && (e === "*" || e === env);
}));
// The routes a token's scopes hold: a release manager sees only theirs.
Apus.mine = (routes) => (routes || []).filter((r) => Apus.inScope(r.project, r.env));

function nav(cur) {
  const group = (g, label) => {
    const items = Apus.order.filter((id) => (Apus.pages[id].group || "sre") === g);
    if (!items.length) return "";
    return `<span class="navgroup">${esc(label)}</span>` + items.map((id) =>
      `<a href="${Apus.link(id)}" class="${id === cur ? "on" : ""}" ${id === cur ? 'aria-current="page"' : ""}>${esc(Apus.pages[id].title)}</a>`).join("");
  };
  $("nav").innerHTML = group("sre", "Observe") + group("release", "Release");
}

function syncFilters(q) {
  for (const k of GLOBAL) $(k).value = q.get(k) || (k === "from" ? "now-15m" : k === "to" ? "now" : "");
  const f = $("from").value, t = $("to").value;
  const opt = [...$("range").options].find((o) => o.value === f);
  $("range").value = t === "now" && opt ? f : "custom";
}

function showWho() {
  const w = Apus.who;
  $("who").innerHTML = w ? `<span title="scopes: ${esc(w.scopes.join(", "))}">${esc(w.name)} · ${esc(w.role.replace("_", " "))}</span> <button type="button" id="logout">Log out</button>` : "";
  if (w) $("logout").onclick = () => { delete sessionStorage.apusToken; Apus.who = null; render(); };
}

function login(el, why) {
  el.innerHTML = `<section class="login"><h2>Log in</h2><form id="loginf"><label for="token">API token</label>
    <input id="token" type="password" autocomplete="current-password" size="48" required>
    <button>Log in</button></form><p class="muted">${esc(why)}. <code>apus run</code> prints a link with the admin token at start; the token is kept in this tab only.</p></section>`;
  $("token").focus();
  $("loginf").onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.apusToken = $("token").value.trim();
    render();
  };
  el.dataset.ready = "login";
}

// Work that needs the page laid out (charts measure their width): run once the rendered
// page is in the document.
const later = [];
Apus.later = (f) => later.push(f);

let seq = 0, timer = null;
async function render() {
  const my = ++seq, r = Apus.route(), el = $("view");
  syncFilters(r.q);
  const id = Apus.pages[r.page] ? r.page : "overview";
  nav(id);
  document.title = `${Apus.pages[id] ? Apus.pages[id].title : "Apus"} · Apus console`;
  delete el.dataset.ready;
  later.length = 0;
  if (!el.dataset.page || el.dataset.page !== id + "/" + r.arg) el.innerHTML = "<p class='muted'>Loading…</p>";
  el.dataset.page = id + "/" + r.arg;
  try {
    if (!Apus.who) {
      Apus.who = await Apus.api("/api/v1/whoami");
      showWho();
      // A token bound to some projects and envs reads only inside them: start inside
      // the first one rather than with a refused, unfiltered page.
      const w = Apus.who, sc = w.scopes[0];
      if (!w.scopes.includes("*/*") && sc && !r.q.get("project")) {
        const [p, e] = sc.split("/");
        const fix = {project: p === "*" ? "" : p, env: e === "*" ? "" : e};
        if (fix.project || fix.env) return Apus.set(fix, {replace: true});
      }
    }
    const page = Apus.pages[id];
    const fresh = document.createElement("div");
    await page.render(fresh, r);
    if (my !== seq) return; // a newer navigation won
    el.replaceChildren(...fresh.childNodes);
    for (const f of later.splice(0)) f();
    if (page.after) page.after(el, r);
    el.dataset.ready = id;
  } catch (e) {
    if (my !== seq) return;
    if (e instanceof ApiError && e.status === 401) {
      Apus.who = null; showWho();
      return login(el, sessionStorage.apusToken ? "That token was refused" : "This console needs a token");
    }
    el.innerHTML = `<p class="err" role="alert">${esc(e.message)}</p>`;
    el.dataset.ready = "error";
    Apus.errors.push(`${id}: ${e.message}`);
  }
  clearTimeout(timer);
  const every = Number($("auto").value);
  if (every > 0) timer = setTimeout(() => { if (!document.querySelector("dialog[open]")) render(); }, every * 1000);
}
Apus.render = render;

// ---- widgets ----------------------------------------------------------------------------
// A table. `opts.links[col](row)` makes a cell a link; `opts.cell[col](v, row)` renders
// it (HTML); `opts.units[col]` formats numbers.
Apus.table = (rows, cols, opts) => {
  opts = opts || {};
  if (!rows || !rows.length) return `<p class="muted">${esc(opts.empty || "No rows in this range.")}</p>`;
  cols = cols || Object.keys(rows[0]);
  const head = cols.map((c) => `<th scope="col">${esc(c.replace(/_/g, " "))}</th>`).join("");
  const body = rows.map((r) => "<tr>" + cols.map((c) => {
    const v = r[c];
    let inner, cls = "";
    if (opts.cell && opts.cell[c]) inner = opts.cell[c](v, r);
    else if (typeof v === "number") { inner = esc(Apus.fmt(v, opts.units && opts.units[c])); cls = "n"; }
    else if (c === "tag" && v && v !== "stable") { inner = esc(v); cls = "gray"; }
    else if (typeof v === "boolean") { inner = v ? "yes" : ""; cls = v ? "bad" : ""; }
    else if (v && typeof v === "object") inner = `<code>${esc(Object.entries(v).map(([k, x]) => `${k}=${typeof x === "object" ? JSON.stringify(x) : x}`).join(" "))}</code>`;
    else if (/(^|_)(ts|time|seen|since|at)$/.test(c) && v) inner = esc(Apus.time(v));
    else inner = `<span class="${String(v ?? "").length > 60 ? "long" : ""}">${esc(v)}</span>`;
    if (opts.links && opts.links[c] && v !== "" && v != null) {
      const href = opts.links[c](r);
      if (href) inner = `<a href="${esc(href)}">${inner}</a>`;
    }
    return `<td class="${cls}">${inner}</td>`;
  }).join("") + "</tr>").join("");
  return `<div class="tablewrap"><table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
};

Apus.toast = (msg, kind) => {
  const t = $("toast");
  t.textContent = msg;
  t.className = "show " + (kind || "");
  clearTimeout(Apus.toast.t);
  Apus.toast.t = setTimeout(() => { t.className = ""; }, 4000);
};

// A modal form. `html` is the form's body; `onSubmit(form)` may throw an Error whose
// message is shown inside the dialog (the dialog stays open); it resolves with what
// onSubmit returned, or null when cancelled.
Apus.dialog = ({title, html, submit, onSubmit, wide}) => new Promise((resolve) => {
  const d = $("dlg");
  d.className = wide ? "wide" : "";
  d.innerHTML = `<form method="dialog" id="dlgform"><h2>${esc(title)}</h2>${html}
    <p class="err" id="dlgerr" role="alert" hidden></p>
    <div class="actions"><button type="button" id="dlgcancel">Cancel</button>
    <button type="submit" id="dlgok" class="primary">${esc(submit || "OK")}</button></div></form>`;
  const close = (v) => { d.close(); resolve(v); };
  $("dlgcancel").onclick = () => close(null);
  d.oncancel = (e) => { e.preventDefault(); close(null); };
  $("dlgform").onsubmit = async (ev) => {
    ev.preventDefault();
    $("dlgok").disabled = true;
    try { close(onSubmit ? await onSubmit($("dlgform")) : true); } catch (e) {
      $("dlgerr").hidden = false;
      $("dlgerr").textContent = e.message;
    } finally { $("dlgok").disabled = false; }
  };
  d.showModal();
  const first = d.querySelector("input, textarea, select");
  if (first) first.focus();
});

// Ask for a reason (required for every change) and confirm.
Apus.confirmChange = (title, what, act) => Apus.dialog({
  title,
  html: `<div class="what">${what}</div><label for="reason">Reason (required, recorded in the audit trail)</label>
    <input id="reason" name="reason" required minlength="3" size="60">`,
  submit: "Apply",
  onSubmit: async (f) => act(f.reason.value.trim()),
});

// A line-by-line diff of two texts (LCS on lines; fine for config-sized inputs).
Apus.diff = (a, b) => {
  const x = String(a ?? "").split("\n"), y = String(b ?? "").split("\n");
  if (x.length * y.length > 4e6) return `<pre class="diff"><span class="del">(too large to diff here)</span></pre>`;
  const n = x.length, m = y.length, L = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(`<span class="same">  ${esc(x[i])}</span>`); i++; j++; }
    else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) { out.push(`<span class="add">+ ${esc(y[j])}</span>`); j++; }
    else { out.push(`<span class="del">- ${esc(x[i])}</span>`); i++; }
  }
  return `<pre class="diff">${out.join("")}</pre>`;
};

// A status word as a badge.
Apus.badge = (s, kind) => `<span class="badge ${esc(kind || String(s).toLowerCase())}">${esc(s)}</span>`;

// ---- start --------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("filters").onsubmit = (ev) => {
    ev.preventDefault();
    const p = {};
    for (const k of GLOBAL) p[k] = $(k).value.trim();
    Apus.set(p);
  };
  $("range").onchange = () => {
    if ($("range").value === "custom") { $("from").focus(); return; }
    Apus.set({from: $("range").value, to: "now"});
  };
  $("auto").onchange = render;
  window.addEventListener("hashchange", render);
  render();
});
