// The release pages: routes and pools (drain, undrain), the gray-rule editor with a
// validated preview and diff before anything is applied, versions and rollback, approvals,
// rollouts (steered, with live gray-vs-stable charts) and serial pool releases. They talk
// to the gateway's admin API at /admin/v1/… (same origin: the query listener passes it on
// with the caller's token). Every change asks a reason; buttons that change things show
// only when the token may change things (the admin API checks again, and scopes).
"use strict";
(function () {
  const esc = Apus.esc, enc = encodeURIComponent;
  const pretty = (v) => JSON.stringify(v, null, 2);
  const MIN_REASON = 3;

  // ---- the admin API --------------------------------------------------------------------
  // Why the release pages cannot work here (no admin API behind this query node, or it
  // does not answer, or the token may not read it): shown instead of the page.
  class NoAdmin extends Error {
    constructor(e) {
      super(e.message);
      this.status = e.status;
    }
    html() {
      const what = this.status === 404
        ? `This console reaches no gateway admin API, so the release pages cannot show or change
           anything. <code>apus run</code> connects it; a separate query node needs
           <code>admin_url</code> in its <code>[query]</code> config.`
        : this.status === 403
          ? "This token may not read the release state."
          : "The gateway's admin API did not answer. It may be restarting; try again in a moment.";
      return `<section class="card" id="admin-missing"><h3>Release control unavailable</h3>
        <p>${what}</p><p class="err" role="alert">${esc(this.message)} (HTTP ${esc(this.status)})</p></section>`;
    }
  }
  const unavailable = (e) => e instanceof Apus.ApiError && [403, 404, 502, 503, 504].includes(e.status);

  // GET several admin paths at once (`routes`, `pools`, …); no admin API → NoAdmin.
  async function admin(...paths) {
    try {
      return await Promise.all(paths.map((p) => Apus.api("/admin/v1/" + p)));
    } catch (e) {
      throw unavailable(e) ? new NoAdmin(e) : e;
    }
  }
  // A GET whose failure shows in its own card only (`{error}`), not instead of the page.
  const soft = (p) => Apus.api("/admin/v1/" + p).catch((e) => {
    if (e instanceof Apus.ApiError && e.status === 401) throw e;
    return {error: e.message};
  });

  // Register a release page; its body fills `el` (or throws NoAdmin).
  function page(id, title, body) {
    Apus.page(id, {
      title,
      group: "release",
      render: async (el, route) => {
        try {
          await body(el, route);
        } catch (e) {
          if (!(e instanceof NoAdmin)) throw e;
          el.innerHTML = `<h2>${esc(title)}</h2>${e.html()}`;
        }
      },
    });
  }

  // Fill `el` with one root element and route clicks on `[data-action]` inside it to
  // `actions[name](dataset, button)`. (The root moves into the page with its listener;
  // `el` itself does not.)
  function mount(el, html, actions) {
    el.innerHTML = `<div class="release">${html}</div>`;
    const root = el.firstElementChild;
    root.addEventListener("click", async (ev) => {
      const b = ev.target.closest("[data-action]");
      if (!b || !root.contains(b) || b.disabled || !actions[b.dataset.action]) return;
      ev.preventDefault();
      try {
        await actions[b.dataset.action](b.dataset, b);
      } catch (e) {
        if (e instanceof Apus.ApiError && e.status === 401) return Apus.render();
        Apus.toast(e.message, "bad");
      }
    });
    return root;
  }

  // After a change: say what it became and show the new state.
  async function done(rec, what) {
    const c = (rec && rec.change) || {};
    if (c.kind === "change_proposed") Apus.toast(`${what}: proposed as change #${c.to_version}, waiting for approval`);
    else Apus.toast(`${what}: now version ${c.to_version ?? "?"}`);
    await Apus.render();
  }

  const reasonField = (id) => `<label for="${id}">Reason (required, recorded in the audit trail)</label>
    <input id="${id}" name="reason" required minlength="${MIN_REASON}" size="60" autocomplete="off">`;

  // ---- reading rules ------------------------------------------------------------------
  const codes = (xs, max = 12) => xs.slice(0, max).map((x) => `<code>${esc(x)}</code>`).join(", ") +
    (xs.length > max ? ` <span class="muted">and ${xs.length - max} more</span>` : "");
  const matcher = (m) => `<code>${esc(m.name)}</code>` +
    (m.value != null ? ` = <code>${esc(m.value)}</code>` : "") +
    (m.regex != null ? ` matches <code>/${esc(m.regex)}/</code>` : "") +
    (m.value == null && m.regex == null ? " present" : "");

  // A gray rule's conditions in words (HTML).
  function conditions(g) {
    const c = [];
    if (g.tenants && g.tenants.length) c.push(`tenant is ${codes(g.tenants)}`);
    if (g.tenants_file) c.push(`tenant listed in <code>${esc(g.tenants_file)}</code>`);
    if (g.cidrs && g.cidrs.length) c.push(`client IP in ${codes(g.cidrs)}`);
    if (g.header) c.push(`header ${matcher(g.header)}`);
    if (g.cookie) c.push(`cookie ${matcher(g.cookie)}`);
    if (g.percent != null) c.push(`<b>${esc(g.percent)} %</b> of tenants (sticky; client IP without a tenant)`);
    return c.length ? c.join(" <b>and</b> ") : "<b>every request</b>";
  }

  function rulesTable(rules) {
    if (!rules || !rules.length) return `<p class="muted">No gray rules: every request goes to the stable pool.</p>`;
    const rows = rules.map((g, i) => `<tr data-rule="${esc(g.name)}"><td class="n">${i + 1}</td>
      <td><code>${esc(g.name)}</code></td><td>${esc(g.pool)}</td><td>${Apus.badge(g.tag || "gray", "gray")}</td>
      <td>${conditions(g)}</td></tr>`).join("");
    return `<div class="tablewrap"><table class="rules"><thead><tr><th scope="col">#</th><th scope="col">rule</th>
      <th scope="col">pool</th><th scope="col">tag</th><th scope="col">matches when</th></tr></thead>
      <tbody>${rows}</tbody></table></div>
      <p class="muted">The first matching rule wins; requests no rule claims go to the stable pool.</p>`;
  }

  function tenantSources(ts) {
    if (!ts || !ts.length) return `<span class="muted">none (tenant rules never match)</span>`;
    return ts.map((s) => {
      const [k, v] = Object.entries(s)[0] || ["?", ""];
      return k === "path_segment" ? `path segment ${esc(v)}` : `${esc(k)} <code>${esc(v)}</code>`;
    }).join(", ");
  }

  const routeWhere = (r) => `${r.host ? `<code>${esc(r.host)}</code>` : "any host"}, path <code>${esc(r.path_prefix || "/")}</code>…`;
  const scopeBadge = (r) => `<span class="badge" title="project/env">${esc(r.project)}/${esc(r.env)}</span>`;

  // A pool other than the route's stable pool to send gray traffic to (by name if possible).
  function grayPool(poolNames, stable) {
    const others = poolNames.filter((p) => p !== stable);
    return others.find((p) => /gray|grey|canary/i.test(p)) || others[0] || "gray";
  }

  // ---- 1. routes & pools ------------------------------------------------------------------
  page("routes", "Routes & pools", async (el) => {
    const [rs, ps] = await admin("routes", "pools");
    // Only the routes of the token's scopes, and the pools they use (a pool no route uses
    // is the admins' alone).
    const routes = Apus.mine(rs.routes), all = (Apus.who.scopes || []).includes("*/*");
    const pools = (ps.pools || []).filter((p) => all || routes.some((r) => r.stable_pool === p.name
      || (r.gray_rules || []).some((g) => g.pool === p.name)));
    const may = Apus.mayChange();
    const uses = (pool) => routes.flatMap((r) => [
      ...(r.stable_pool === pool ? [`${r.name} (stable)`] : []),
      ...(r.gray_rules || []).filter((g) => g.pool === pool).map((g) => `${r.name} (rule ${g.name})`),
    ]);

    const routeCards = routes.map((r) => `<article class="card" data-route="${esc(r.name)}">
      <h3>Route <code>${esc(r.name)}</code> ${scopeBadge(r)}</h3>
      <dl class="kv"><dt>serves</dt><dd>${routeWhere(r)}</dd>
        <dt>stable pool</dt><dd>${esc(r.stable_pool)}</dd>
        <dt>tenant ID from</dt><dd>${tenantSources(r.tenant_sources)}</dd></dl>
      ${rulesTable(r.gray_rules)}
      <div class="actions"><a href="${esc(Apus.link("release", r.name))}">${may ? "Edit gray rules" : "Gray rules and versions"}</a>
        <a href="${esc(Apus.link("rollouts", "", {route: r.name}))}">Rollouts</a></div>
    </article>`).join("");

    const poolCard = (p) => {
      const servers = p.servers || [];
      const extra = [...new Set(servers.flatMap((s) => Object.keys(s).filter((k) => k !== "addr" && k !== "state")))];
      const head = ["server", "state", ...extra.map((k) => k.replace(/_/g, " ")), ...(may ? ["actions"] : [])]
        .map((h) => `<th scope="col">${esc(h)}</th>`).join("");
      const rows = servers.map((s) => {
        const drained = s.state === "drained";
        const btn = !may ? "" : `<td>${drained
          ? `<button type="button" data-action="undrain" data-pool="${esc(p.name)}" data-server="${esc(s.addr)}">Undrain</button>`
          : `<button type="button" class="danger" data-action="drain" data-pool="${esc(p.name)}" data-server="${esc(s.addr)}">Drain</button>`}</td>`;
        return `<tr data-server="${esc(s.addr)}"><td><code>${esc(s.addr)}</code></td><td>${Apus.badge(s.state || "?")}</td>
          ${extra.map((k) => `<td class="n">${esc(Apus.fmt(s[k]))}</td>`).join("")}${btn}</tr>`;
      }).join("");
      const u = uses(p.name);
      return `<article class="card" data-pool="${esc(p.name)}"><h3>Pool <code>${esc(p.name)}</code>
        <span class="muted">${servers.filter((s) => s.state === "healthy").length}/${servers.length} healthy</span></h3>
        <p class="muted">Used by: ${u.length ? u.map(esc).join(", ") : "no route"}</p>
        ${servers.length ? `<div class="tablewrap"><table><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table></div>`
          : `<p class="muted">No servers.</p>`}</article>`;
    };

    const serverOp = async (d, op) => {
      const pool = pools.find((p) => p.name === d.pool) || {servers: []};
      const others = (pool.servers || []).filter((s) => s.addr !== d.server && s.state === "healthy").length;
      const what = op === "drain"
        ? `<p>Server <code>${esc(d.server)}</code> in pool <b>${esc(d.pool)}</b> gets no new requests; requests in flight finish.</p>
           ${others ? "" : `<p class="err">It is the last healthy server of pool ${esc(d.pool)}: requests for this pool will fail.</p>`}`
        : `<p>Server <code>${esc(d.server)}</code> in pool <b>${esc(d.pool)}</b> takes new requests again.</p>`;
      const rec = await Apus.confirmChange(`${op === "drain" ? "Drain" : "Undrain"} ${d.server}`, what,
        (reason) => Apus.post(`/admin/v1/pools/${enc(d.pool)}/servers/${enc(d.server)}/${op}`, {reason}));
      if (rec) await done(rec, `${d.server} ${op === "drain" ? "drained" : "undrained"}`);
    };

    mount(el, `<h2>Routes &amp; pools <span class="muted">version ${esc(rs.version)}</span></h2>
      <div class="grid2"><section aria-labelledby="routes-h"><h3 id="routes-h">Routes</h3>
        ${routeCards || `<p class="muted">No routes.</p>`}</section>
      <section aria-labelledby="pools-h"><h3 id="pools-h">Pools</h3>
        ${pools.map(poolCard).join("") || `<p class="muted">No pools.</p>`}</section></div>`, {
      drain: (d) => serverOp(d, "drain"),
      undrain: (d) => serverOp(d, "undrain"),
    });
  });

  // ---- 2. release: rules editor, versions, approvals --------------------------------------
  // Unsaved edits by route, so an auto-refresh (or a trip to another page) keeps them:
  // {base: rules text in force when editing began, text, reason, emergency, preview}.
  const drafts = new Map();

  function parseRules(text) {
    let v;
    try { v = JSON.parse(text); } catch (e) { throw new Error(`Not valid JSON: ${e.message}`); }
    if (v && !Array.isArray(v) && Array.isArray(v.rules)) v = v.rules;
    if (!Array.isArray(v)) throw new Error("The gray rules must be a JSON array of rules ([] for none).");
    v.forEach((g, i) => {
      if (!g || typeof g !== "object" || Array.isArray(g)) throw new Error(`Rule ${i + 1} is not a JSON object.`);
    });
    return v;
  }

  // A dry run's answer: what the change would be, and the rules' diff.
  function previewHtml(c, before, after) {
    const proposed = c.kind === "change_proposed";
    return `<div class="preview" id="rules-preview-result" data-kind="${esc(c.kind)}" data-to-version="${esc(c.to_version)}">
      <dl class="kv"><dt>would be</dt><dd>${Apus.badge(c.kind || "change", proposed ? "pending" : "ok")}
        version ${esc(c.from_version)} → <b>${esc(c.to_version)}</b></dd>
        <dt>summary</dt><dd id="rules-summary">${esc(c.summary)}</dd>
        ${c.touched ? `<dt>touches</dt><dd><code>${esc(c.touched)}</code></dd>` : ""}</dl>
      ${proposed ? `<p class="muted">This environment needs approval: Apply proposes the change, and it takes
        effect once approved (see Approvals waiting).</p>` : ""}
      ${before === after ? `<p class="muted">The rules are unchanged.</p>` : Apus.diff(before, after)}</div>`;
  }

  function rulesEditor(root, r, version) {
    const q = (id) => root.querySelector("#" + id);
    const ta = q("rules-editor"), prev = q("rules-preview"), apply = q("rules-apply"), reset = q("rules-reset");
    const reason = q("rules-reason"), err = q("rules-error"), diff = q("rules-diff"), emer = q("rules-emergency");
    const stale = q("rules-stale");
    const serverText = pretty(r.gray_rules || []);
    const path = `/admin/v1/routes/${enc(r.name)}/rules`;
    const draft = () => {
      if (!drafts.has(r.name)) drafts.set(r.name, {base: serverText, text: ta.value, reason: "", emergency: false, preview: null});
      return drafts.get(r.name);
    };
    const showErr = (m) => { err.textContent = m; err.hidden = false; };
    const hideErr = () => { err.textContent = ""; err.hidden = true; };
    const previewFits = () => {
      const p = (drafts.get(r.name) || {}).preview;
      return !!p && p.text === ta.value && p.emergency === !!(emer && emer.checked);
    };
    const sync = () => {
      const ok = previewFits();
      apply.disabled = !ok;
      if (!ok && diff.innerHTML && !diff.querySelector(".changed")) {
        diff.innerHTML = `<p class="muted changed">The rules changed since the preview: preview again before applying.</p>`;
      }
    };

    // Restore an unsaved edit.
    const d = drafts.get(r.name);
    if (d) {
      ta.value = d.text;
      reason.value = d.reason || "";
      if (emer) emer.checked = !!d.emergency;
      if (d.base !== serverText) stale.hidden = false;
      const p = d.preview;
      if (p && p.text === d.text && p.version === version && p.emergency === !!d.emergency) {
        diff.innerHTML = p.html;
        apply.disabled = false;
      } else d.preview = null;
    }

    ta.addEventListener("input", () => { draft().text = ta.value; sync(); });
    reason.addEventListener("input", () => { draft().reason = reason.value; });
    if (emer) emer.addEventListener("change", () => { draft().emergency = emer.checked; sync(); });

    reset.addEventListener("click", () => {
      drafts.delete(r.name);
      ta.value = serverText;
      if (emer) emer.checked = false;
      diff.innerHTML = "";
      stale.hidden = true;
      apply.disabled = true;
      hideErr();
      ta.focus();
    });

    const qt = q("rules-quick-tenant"), qp = q("rules-quick-pool");
    q("rules-quick-add").addEventListener("click", () => {
      const t = qt.value.trim();
      if (!t) { showErr("Type the tenant ID to send to the gray pool."); qt.focus(); return; }
      let rules;
      try { rules = parseRules(ta.value); } catch (e) { showErr(e.message); return; }
      const names = new Set(rules.map((g) => g.name));
      const clean = t.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 48);
      const base = /^tenant/i.test(clean) ? clean : `tenant-${clean}`;
      let name = base;
      for (let i = 2; names.has(name); i++) name = `${base}-${i}`;
      rules.unshift({name, pool: qp.value, tag: qp.value === r.stable_pool ? "stable" : "gray", tenants: [t]});
      ta.value = pretty(rules);
      draft().text = ta.value;
      hideErr();
      sync();
    });

    prev.addEventListener("click", async () => {
      hideErr();
      apply.disabled = true;
      const text = ta.value, emergency = !!(emer && emer.checked);
      let rules;
      try { rules = parseRules(text); } catch (e) { diff.innerHTML = ""; showErr(e.message); return; }
      prev.disabled = true;
      diff.innerHTML = `<p class="muted">Checking…</p>`;
      try {
        const body = {rules, reason: reason.value.trim(), dry_run: true};
        if (emergency) body.emergency = true;
        const c = (await Apus.post(path, body, "PUT")).change || {};
        const html = previewHtml(c, serverText, pretty(rules));
        const dd = draft();
        dd.text = text;
        dd.emergency = emergency;
        dd.preview = {text, emergency, rules, version: c.from_version ?? version, html};
        diff.innerHTML = html;
        sync();
      } catch (e) {
        if (e instanceof Apus.ApiError && e.status === 401) return Apus.render();
        diff.innerHTML = "";
        showErr(e.message);
      } finally {
        prev.disabled = false;
      }
    });

    apply.addEventListener("click", async () => {
      hideErr();
      const p = (drafts.get(r.name) || {}).preview;
      if (!previewFits()) { apply.disabled = true; showErr("Preview the rules as they are now before applying them."); return; }
      const why = reason.value.trim();
      if (why.length < MIN_REASON) { showErr(`Give a reason (at least ${MIN_REASON} characters): it is recorded with the change.`); reason.focus(); return; }
      apply.disabled = prev.disabled = true;
      try {
        const body = {rules: p.rules, reason: why, base_version: p.version};
        if (p.emergency) body.emergency = true;
        const rec = await Apus.post(path, body, "PUT");
        drafts.delete(r.name);
        await done(rec, `Gray rules of ${r.name}`);
      } catch (e) {
        if (e instanceof Apus.ApiError && e.status === 401) return Apus.render();
        if (e instanceof Apus.ApiError && e.status === 409) {
          draft().preview = null;
          diff.innerHTML = "";
          showErr(`${e.message} — the release state changed meanwhile: Reset to see the rules in force, or preview again.`);
        } else {
          showErr(e.message);
          apply.disabled = !previewFits();
        }
      } finally {
        prev.disabled = false;
      }
    });
  }

  // Routes by name as stable JSON, for diffs of whole states.
  const routesText = (routes) => pretty([...(routes || [])].sort((a, b) => String(a.name).localeCompare(String(b.name))));

  async function rollbackTo(v, current) {
    const isAdmin = Apus.who && Apus.who.role === "admin";
    let pre = null;
    const shown = Apus.dialog({
      title: `Roll back to version ${v}`,
      wide: true,
      html: `<p>Put the routes and gray rules of version <b>${esc(v)}</b> back in force, as a new version
        (pools, rollouts and pending changes stay as they are now; now: version ${esc(current)}).</p>
        <div id="rollback-preview" aria-live="polite"><p class="muted">Checking what the rollback would change…</p></div>
        ${isAdmin ? `<label><input type="checkbox" id="rollback-emergency" name="emergency"> Emergency: bypass the approvals a protected environment needs</label>` : ""}
        ${reasonField("reason")}`,
      submit: `Roll back to v${v}`,
      onSubmit: async (f) => {
        if (!pre) throw new Error("The rollback could not be checked; it cannot be applied.");
        const body = {version: Number(v), reason: f.reason.value.trim(), base_version: pre.from_version};
        if (f.emergency && f.emergency.checked) body.emergency = true;
        return Apus.post("/admin/v1/rollback", body);
      },
    });
    const ok = Apus.$("dlgok"), box = Apus.$("rollback-preview");
    ok.disabled = true;
    try {
      const r = await Apus.post("/admin/v1/rollback", {version: Number(v), reason: "", dry_run: true});
      pre = r.change || {};
      if (box.isConnected) {
        box.innerHTML = `<dl class="kv"><dt>would be</dt><dd>${Apus.badge(pre.kind || "rollback", pre.kind === "change_proposed" ? "pending" : "ok")}
          version ${esc(pre.from_version)} → <b>${esc(pre.to_version)}</b></dd>
          <dt>summary</dt><dd id="rollback-summary">${esc(pre.summary)}</dd>
          ${pre.touched ? `<dt>touches</dt><dd><code>${esc(pre.touched)}</code></dd>` : ""}</dl>
          ${pre.kind === "change_proposed" ? `<p class="muted">This needs approval: rolling back proposes it.</p>` : ""}`;
        ok.disabled = false;
      }
    } catch (e) {
      if (box.isConnected) box.innerHTML = `<p class="err" role="alert">${esc(e.message)}</p>`;
    }
    const rec = await shown;
    if (rec) await done(rec, `Rolled back to v${v}`);
  }

  page("release", "Release", async (el, route) => {
    const [st, rs, ps] = await admin("status", "routes", "pools");
    const [ch, pend] = await Promise.all([soft("changes"), soft("pending")]);
    const routes = Apus.mine(rs.routes), poolNames = (ps.pools || []).map((p) => p.name);
    const may = Apus.mayChange(), isAdmin = Apus.who && Apus.who.role === "admin";
    const version = st.version;
    const name = route.arg || (routes[0] && routes[0].name) || "";
    const r = routes.find((x) => x.name === name);

    // Status.
    const pendingN = (pend.pending || []).length;
    const status = `<section class="card" id="release-status"><dl class="kv">
      <dt>version in force</dt><dd id="release-version" data-version="${esc(version)}"><b>v${esc(version)}</b></dd>
      <dt>control store</dt><dd>${esc(st.control)} ${st.store_connected ? Apus.badge("connected", "ok") : Apus.badge("not connected", "bad")}</dd>
      ${pendingN ? `<dt>waiting</dt><dd>${Apus.badge(`${pendingN} change(s) waiting for approval`, "pending")} <span class="muted">(Approvals waiting, below)</span></dd>` : ""}</dl></section>`;

    // Rules of the chosen route.
    const picker = `<label for="release-route">Route</label> <select id="release-route">${routes.map((x) =>
      `<option value="${esc(x.name)}" ${x.name === name ? "selected" : ""}>${esc(x.name)} (${esc(x.project)}/${esc(x.env)})</option>`).join("")}</select>`;
    let rulesCard;
    if (!r) {
      rulesCard = `<section class="card" id="rules-card"><div class="actions">${picker}</div>
        <p class="err" role="alert">${routes.length ? `No route named ${esc(name)}.` : "No routes are configured."}</p></section>`;
    } else {
      const text = pretty(r.gray_rules || []);
      const lines = text.split("\n").length;
      const gp = grayPool(poolNames, r.stable_pool);
      const poolOpts = [gp, ...poolNames.filter((p) => p !== gp)].map((p) =>
        `<option value="${esc(p)}">${esc(p)}${p === r.stable_pool ? " (stable)" : ""}</option>`).join("");
      const edit = may ? `
        <h4>Change the rules</h4>
        <div class="actions quick"><label for="rules-quick-tenant">Send tenant</label>
          <input id="rules-quick-tenant" size="18" autocomplete="off" placeholder="tenant ID">
          <label for="rules-quick-pool">to pool</label> <select id="rules-quick-pool">${poolOpts}</select>
          <button type="button" id="rules-quick-add">Add as first rule</button></div>
        <label for="rules-editor">Gray rules of <code>${esc(r.name)}</code> as JSON: an array, first match wins. Fields:
          <code>name</code>, <code>pool</code>, <code>tag</code>, <code>tenants</code>, <code>cidrs</code>,
          <code>header</code>/<code>cookie</code> (<code>{"name", "value"|"regex"}</code>), <code>percent</code>.</label>
        <textarea id="rules-editor" rows="${Math.min(30, Math.max(6, lines + 2))}" spellcheck="false" autocomplete="off"
          aria-describedby="rules-stale">${esc(text)}</textarea>
        <p class="muted" id="rules-stale" hidden>The rules in force changed since you began this edit (it was kept):
          Reset to start from them.</p>
        <div class="actions"><button type="button" id="rules-preview" class="primary">Preview</button>
          <button type="button" id="rules-reset">Reset to the rules in force</button>
          ${isAdmin ? `<label><input type="checkbox" id="rules-emergency"> Emergency: bypass approvals</label>` : ""}</div>
        <p class="err" id="rules-error" role="alert" hidden></p>
        <div id="rules-diff" aria-live="polite"></div>
        <div class="actions apply"><label for="rules-reason">Reason (required, recorded in the audit trail)</label>
          <input id="rules-reason" name="reason" required minlength="${MIN_REASON}" size="50" autocomplete="off">
          <button type="button" id="rules-apply" class="primary" disabled>Apply</button></div>`
        : `<h4>As JSON</h4><pre id="rules-json">${esc(text)}</pre>
           <p class="muted">Read only: this token may not change releases.</p>`;
      rulesCard = `<section class="card" id="rules-card" data-route="${esc(r.name)}">
        <h3>Gray rules of route <code>${esc(r.name)}</code> ${scopeBadge(r)}</h3>
        <div class="actions">${picker}</div>
        <dl class="kv"><dt>serves</dt><dd>${routeWhere(r)}</dd><dt>stable pool</dt><dd>${esc(r.stable_pool)}</dd>
          <dt>tenant ID from</dt><dd>${tenantSources(r.tenant_sources)}</dd></dl>
        ${rulesTable(r.gray_rules)}${edit}</section>`;
    }

    // Versions.
    const all = route.q.get("versions") === "all";
    let versions;
    if (ch.error) versions = `<p class="err" role="alert">${esc(ch.error)}</p>`;
    else {
      const list = [...(ch.changes || [])].sort((a, b) => b.to_version - a.to_version);
      const shown = all ? list : list.slice(0, 30);
      const rows = shown.map((c) => {
        const v = c.to_version, cur = v === version;
        const btn = may && !cur ? `<button type="button" data-action="rollback" data-version="${esc(v)}">Roll back to v${esc(v)}</button>`
          : cur ? Apus.badge("in force", "ok") : "";
        return `<tr data-version="${esc(v)}"><td class="n"><b>v${esc(v)}</b></td><td>${Apus.badge(c.kind, c.kind === "rollback" ? "pending" : "")}</td>
          <td>${esc(c.actor)}</td><td>${esc(Apus.time(c.ts))}</td>
          <td><span class="long">${esc(c.summary)}</span></td><td>${btn}</td></tr>`;
      }).join("");
      versions = list.length ? `<div class="tablewrap"><table id="versions-table"><thead><tr><th scope="col">version</th>
        <th scope="col">kind</th><th scope="col">actor</th><th scope="col">time</th><th scope="col">summary</th>
        <th scope="col"><span class="muted">action</span></th></tr></thead><tbody>${rows}</tbody></table></div>
        ${list.length > shown.length ? `<p><a href="${esc(Apus.link("release", name, {versions: "all"}))}">Show all ${list.length} versions</a></p>` : ""}`
        : `<p class="muted">No changes recorded yet.</p>`;
    }

    // Approvals.
    let pending;
    if (pend.error) pending = `<p class="err" role="alert">${esc(pend.error)}</p>`;
    else if (!pendingN) pending = `<p class="muted">No change is waiting for approval.</p>`;
    else {
      const now = routesText(routes);
      pending = pend.pending.map((p) => `<article class="pending" data-id="${esc(p.id)}">
        <p><b>Change #${esc(p.id)}</b> ${Apus.badge(p.kind)} by <b>${esc(p.author)}</b>, ${esc(Apus.time(p.ts))},
          on ${esc(p.project)}/${esc(p.env)} <code>${esc(p.scope)}</code></p>
        <p>Reason: ${esc(p.reason) || `<span class="muted">none given</span>`}</p>
        <p>Approvals: ${esc((p.approvals || []).length)}/${esc(p.required)}${(p.approvals || []).length ? ` (${(p.approvals || []).map(esc).join(", ")})` : ""}</p>
        <details><summary>Routes it puts in force, against those in force now</summary>${Apus.diff(now, routesText(p.routes))}</details>
        ${may ? `<div class="actions"><button type="button" class="primary" data-action="approve" data-id="${esc(p.id)}">Approve #${esc(p.id)}</button>
          <button type="button" class="danger" data-action="reject" data-id="${esc(p.id)}">Reject #${esc(p.id)}</button></div>` : ""}
      </article>`).join("");
    }

    const decide = async (d, verdict) => {
      const p = (pend.pending || []).find((x) => String(x.id) === d.id) || {};
      const rec = await Apus.confirmChange(`${verdict === "approve" ? "Approve" : "Reject"} change #${d.id}`,
        `<p>${verdict === "approve" ? "Approve" : "Reject"} ${esc(p.kind)} change #${esc(d.id)} proposed by <b>${esc(p.author)}</b>: ${esc(p.reason)}</p>`,
        (reason) => Apus.post(`/admin/v1/pending/${enc(d.id)}/${verdict}`, {reason}));
      if (rec) await done(rec, `Change #${d.id} ${verdict === "approve" ? "approved" : "rejected"}`);
    };

    const root = mount(el, `<h2>Release</h2>${status}${rulesCard}
      <section class="card" id="versions"><h3>Versions</h3>${versions}</section>
      <section class="card" id="pending"><h3>Approvals waiting</h3>${pending}</section>`, {
      rollback: (d) => rollbackTo(d.version, version),
      approve: (d) => decide(d, "approve"),
      reject: (d) => decide(d, "reject"),
    });
    const sel = root.querySelector("#release-route");
    if (sel) sel.addEventListener("change", () => Apus.go("release", sel.value));
    if (r && may) rulesEditor(root, r, version);
  });

  // ---- 3. rollouts and serial releases ----------------------------------------------------
  const PHASE_KIND = {progressing: "progressing", running: "progressing", paused: "paused", succeeded: "ok", aborted: "aborted", failed: "failed"};
  const phaseBadge = (ph) => Apus.badge(ph || "?", PHASE_KIND[ph] || "");

  function describeStep(s) {
    const [k, v] = Object.entries(s || {})[0] || ["?", ""];
    switch (k) {
      case "set_weight": return `send ${esc(v)} % to gray`;
      case "set_tenants": return `send tenants ${codes(v || [], 6)} to gray`;
      case "set_cidrs": return `send clients in ${codes(v || [], 6)} to gray`;
      case "pause": return `wait ${esc(v)}`;
      case "pause_until_promote": return "wait for a promote";
      case "analysis": return `analysis: ${esc(v && v.count)} passing run(s)`;
      default: return `<code>${esc(JSON.stringify(s))}</code>`;
    }
  }

  function exampleRollout(routeName, pool, taken) {
    const base = String(routeName || "api").replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 50);
    let n = 2;
    while (taken.has(`${base}-v${n}`)) n++;
    return pretty({
      name: `${base}-v${n}`,
      route: routeName || "api",
      pool,
      tag: "gray",
      steps: [{set_weight: 10}, {analysis: {count: 3}}, {set_weight: 50}, {pause_until_promote: true}, {set_weight: 100}],
      analysis: {interval: "30s", window: "1m", failure_limit: 1, min_requests: 50, max_error_rate: 0.05},
    });
  }

  const STAGES = {drain: "drain", wait_idle: "wait for in-flight requests", deploy: "deploy", health: "health check", undrain: "undrain", settle: "settle"};

  // Time series of one metric on a route, by lane; an error becomes the chart's message.
  async function lanes(routeName, metric) {
    try {
      const r = await Apus.api(`/api/v1/timeseries?${Apus.scope({metric, by: "tag", route: routeName}, ["project", "env"])}`);
      return {series: Apus.seriesFrom(r.rows), window: Apus.window(r)};
    } catch (e) {
      if (e instanceof Apus.ApiError && e.status === 401) throw e;
      return {error: e.message};
    }
  }

  page("rollouts", "Rollouts", async (el, route) => {
    const [ro, rs, ps] = await admin("rollouts", "routes", "pools");
    const rel = await soft("releases");
    const may = Apus.mayChange();
    const routes = Apus.mine(rs.routes), poolNames = (ps.pools || []).map((p) => p.name);
    const sel = route.arg, onRoute = route.q.get("route") || "";
    const all = Object.entries(ro.rollouts || {}).map(([name, d]) => Object.assign({name}, d))
      .filter((x) => routes.some((r) => r.name === x.spec.route))
      .sort((a, b) => (a.progress.phase === "succeeded" || a.progress.phase === "aborted") - (b.progress.phase === "succeeded" || b.progress.phase === "aborted")
        || (b.progress.step_started || 0) - (a.progress.step_started || 0));
    const list = all.filter((x) => !onRoute || x.spec.route === onRoute || x.name === sel);
    const isDone = (x) => x.progress.phase === "succeeded" || x.progress.phase === "aborted";
    // Charts: the selected rollout, else the running ones (a few).
    const charted = sel ? list.filter((x) => x.name === sel) : list.filter((x) => !isDone(x)).slice(0, 4);

    // Chart data (and rollout steps as markers), fetched now, drawn once the page is laid out.
    const chartRoutes = [...new Set(charted.map((x) => x.spec.route))];
    const [data, steps] = await Promise.all([
      Promise.all(chartRoutes.map(async (rt) => [rt, await Promise.all([lanes(rt, "error_rate"), lanes(rt, "p99_ms")])])),
      chartRoutes.length ? Apus.api(`/api/v1/changes?${Apus.scope({kind: "rollout_step", limit: 1000}, ["project", "env"])}`)
        .then((r) => r.rows || []).catch((e) => { if (e instanceof Apus.ApiError && e.status === 401) throw e; return []; }) : [],
    ]);
    const byRoute = new Map(data);
    const markersOf = (rt) => steps.filter((c) => c.scope === rt)
      .map((c) => ({t: Date.parse(c.ts), label: String(c.summary || c.kind).slice(0, 140)}))
      .filter((m) => !isNaN(m.t));

    const card = (x) => {
      const p = x.progress, s = x.spec, n = (s.steps || []).length, ph = p.phase;
      const r = routes.find((y) => y.name === s.route);
      const rule = r && (r.gray_rules || []).find((g) => g.name === `rollout-${x.name}`);
      const at = Math.min(p.step, n);
      const verdict = p.last_verdict;
      const buttons = !may || isDone(x) ? "" : `<div class="actions">
        <button type="button" class="primary" data-action="promote" data-rollout="${esc(x.name)}">Promote</button>
        ${ph === "paused" ? `<button type="button" data-action="resume" data-rollout="${esc(x.name)}">Resume</button>`
          : `<button type="button" data-action="pause" data-rollout="${esc(x.name)}">Pause</button>`}
        <button type="button" class="danger" data-action="abort" data-rollout="${esc(x.name)}">Abort</button></div>`;
      const plan = (s.steps || []).map((st, i) => `<li class="${i === p.step && !isDone(x) ? "current" : i < p.step ? "past" : ""}"
        ${i === p.step && !isDone(x) ? 'aria-current="step"' : ""}>${describeStep(st)}</li>`).join("");
      const charts = charted.includes(x) ? `<div class="grid2">
          <figure><figcaption>Error rate by lane on route ${esc(s.route)}</figcaption><div class="rollout-chart" data-metric="error_rate"></div></figure>
          <figure><figcaption>p99 latency (ms) by lane on route ${esc(s.route)}</figcaption><div class="rollout-chart" data-metric="p99_ms"></div></figure></div>`
        : `<p><a href="${esc(Apus.link("rollouts", x.name))}">Chart gray against stable</a></p>`;
      return `<article class="card rollout" data-rollout="${esc(x.name)}" data-phase="${esc(ph)}">
        <h3>Rollout <a href="${esc(Apus.link("rollouts", x.name))}"><code>${esc(x.name)}</code></a> ${phaseBadge(ph)}
          <span class="muted">route <a href="${esc(Apus.link("release", s.route))}">${esc(s.route)}</a> → pool ${esc(s.pool)}, tag ${esc(s.tag)}</span></h3>
        <dl class="kv">
          <dt>step</dt><dd>${ph === "succeeded" ? `all ${esc(n)} done` : ph === "aborted" ? `stopped at ${esc(Math.min(at + 1, n))} of ${esc(n)}`
              : `${esc(at + 1)} of ${esc(n)}: ${describeStep(s.steps[p.step])}`}
            <progress max="${esc(n)}" value="${esc(ph === "succeeded" ? n : at)}" aria-label="steps done">${esc(at)}/${esc(n)}</progress></dd>
          <dt>gray gets now</dt><dd>${rule ? conditions(rule) : `<span class="muted">${ph === "aborted" ? "nothing (rolled back)" : "no rollout rule in force"}</span>`}</dd>
          ${p.reason ? `<dt>${ph === "aborted" ? "aborted because" : "paused because"}</dt><dd>${esc(p.reason)}</dd>` : ""}
          ${p.held ? `<dt>held</dt><dd>${Apus.badge("held")} ${esc(p.held)}</dd>` : ""}
          <dt>last analysis</dt><dd>${verdict ? `${Apus.badge(verdict.verdict, verdict.verdict === "pass" ? "ok" : verdict.verdict === "fail" ? "failed" : "pending")} ${esc(verdict.reason)}` : `<span class="muted">none yet</span>`}
            <span class="muted">· ${esc(p.passes)} pass(es) this step, ${esc(p.failures)}/${esc((s.analysis || {}).failure_limit ?? 1)} failures tolerated</span></dd>
          <dt>started by</dt><dd>${esc(x.started_by)} <span class="muted">· this step since ${esc(Apus.time(p.step_started))}</span></dd>
        </dl>
        <details><summary>Plan (${esc(n)} steps)</summary><ol class="plan">${plan}</ol></details>
        ${buttons}${charts}</article>`;
    };

    // Serial releases.
    let serial;
    if (rel.error) serial = `<p class="err" role="alert">${esc(rel.error)}</p>`;
    else {
      const rels = Object.entries(rel.releases || {});
      serial = rels.length ? rels.map(([pool, d]) => {
        const running = d.phase === "running";
        const rows = (d.servers || []).map((addr, i) => {
          let stage;
          if ((d.done || []).includes(addr)) stage = Apus.badge("done", "ok");
          else if (i === d.index && running) stage = `${Apus.badge(STAGES[d.stage] || d.stage, "progressing")} <span class="muted">since ${esc(Apus.time(d.stage_started))}</span>`;
          else if (i === d.index && d.phase === "failed") stage = `${Apus.badge("failed")} at ${esc(STAGES[d.at] || d.at)}: ${esc(d.reason)}`;
          else if (i === d.index && d.phase === "aborted") stage = `${Apus.badge("aborted")} before ${esc(STAGES[d.stage] || d.stage)}`;
          else stage = `<span class="muted">${running ? "waiting" : "not released"}</span>`;
          return `<tr data-server="${esc(addr)}"><td class="n">${i + 1}</td><td><code>${esc(addr)}</code></td><td>${stage}</td></tr>`;
        }).join("");
        return `<article class="card serial" data-pool="${esc(pool)}" data-phase="${esc(d.phase)}">
          <h3>Pool <code>${esc(pool)}</code>: build <code>${esc(d.spec && d.spec.build)}</code> ${phaseBadge(d.phase)}</h3>
          <p class="muted">hook ${esc(d.spec && d.spec.hook)} · started by ${esc(d.started_by)} · server ${esc(Math.min(d.index + 1, (d.servers || []).length))} of ${esc((d.servers || []).length)}
            ${d.phase === "aborted" ? ` · aborted: ${esc(d.reason)}` : ""}</p>
          <div class="tablewrap"><table><thead><tr><th scope="col">#</th><th scope="col">server</th><th scope="col">stage</th></tr></thead>
            <tbody>${rows}</tbody></table></div>
          ${may && running ? `<div class="actions"><button type="button" class="danger" data-action="release-abort" data-pool="${esc(pool)}">Abort release on ${esc(pool)}</button></div>` : ""}
        </article>`;
      }).join("") : `<p class="muted">No serial pool release yet.</p>`;
    }

    const steer = async (d, verb) => {
      const what = {
        promote: "Finish the current step now and go on to the next (a paused rollout resumes).",
        pause: "Hold the rollout at its current step; traffic stays as it is.",
        resume: "Go on from the current step.",
        abort: "Stop the rollout and put the route's gray rules back as they were before it, as one change.",
      }[verb];
      const rec = await Apus.confirmChange(`${verb[0].toUpperCase() + verb.slice(1)} rollout ${d.rollout}`, `<p>${esc(what)}</p>`,
        (reason) => Apus.post(`/admin/v1/rollouts/${enc(d.rollout)}/${verb}`, {reason}));
      if (rec) await done(rec, `Rollout ${d.rollout}: ${verb}`);
    };

    const startRollout = async () => {
      const rt = onRoute || (list[0] && list[0].spec.route) || (routes[0] && routes[0].name) || "api";
      const r = routes.find((y) => y.name === rt);
      const rec = await Apus.dialog({
        title: "Start a rollout",
        wide: true,
        html: `<label for="rollout-spec">Rollout spec (JSON). Steps: <code>{"set_weight": N}</code>, <code>{"set_tenants": [...]}</code>,
            <code>{"set_cidrs": [...]}</code>, <code>{"pause": "2m"}</code>, <code>{"pause_until_promote": true}</code>,
            <code>{"analysis": {"count": N}}</code>.</label>
          <textarea id="rollout-spec" name="spec" rows="18" spellcheck="false">${esc(exampleRollout(rt, grayPool(poolNames, r ? r.stable_pool : ""), new Set(all.map((x) => x.name))))}</textarea>
          ${reasonField("reason")}`,
        submit: "Start rollout",
        onSubmit: async (f) => {
          let spec;
          try { spec = JSON.parse(f.spec.value); } catch (e) { throw new Error(`The spec is not valid JSON: ${e.message}`); }
          if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw new Error("The spec must be a JSON object.");
          return Apus.post("/admin/v1/rollouts", {rollout: spec, reason: f.reason.value.trim()});
        },
      });
      if (rec) await done(rec, "Rollout started");
    };

    const startRelease = async () => {
      const pool = poolNames[0] || "stable";
      const rec = await Apus.dialog({
        title: "Start a serial pool release",
        wide: true,
        html: `<p class="muted">One server at a time: drain, wait for in-flight requests, run the deploy hook, health check,
            undrain, watch its errors while it settles; a failure stops the release.</p>
          <label for="release-spec">Release spec (JSON); <code>hook</code> names a <code>[[deploy_hooks]]</code> entry of the gateway config</label>
          <textarea id="release-spec" name="spec" rows="12" spellcheck="false">${esc(pretty({pool, build: "v2", hook: "deploy",
            drain_timeout: "30s", hook_timeout: "120s", health_timeout: "60s", settle: "10s", max_error_rate: 0.05}))}</textarea>
          ${reasonField("reason")}`,
        submit: "Start release",
        onSubmit: async (f) => {
          let spec;
          try { spec = JSON.parse(f.spec.value); } catch (e) { throw new Error(`The spec is not valid JSON: ${e.message}`); }
          if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw new Error("The spec must be a JSON object.");
          return Apus.post("/admin/v1/releases", {release: spec, reason: f.reason.value.trim()});
        },
      });
      if (rec) await done(rec, "Serial release started");
    };

    const filter = onRoute ? `<p class="muted">Rollouts on route <b>${esc(onRoute)}</b> ·
      <a href="${esc(Apus.link("rollouts", "", {route: ""}))}">all routes</a></p>` : "";
    const root = mount(el, `<h2>Rollouts <span class="muted">version ${esc(ro.version)}</span></h2>
      ${may ? `<div class="actions"><button type="button" class="primary" id="rollout-start" data-action="rollout-start">Start rollout…</button></div>` : ""}
      ${filter}
      ${sel && !list.some((x) => x.name === sel) ? `<p class="err" role="alert">No rollout named ${esc(sel)}.</p>` : ""}
      <section id="rollouts" aria-label="Rollouts">${list.map(card).join("") || `<p class="muted">No rollouts${onRoute ? " on this route" : ""} yet.</p>`}</section>
      <section class="card" id="releases"><h3>Serial pool releases</h3>
        ${may ? `<div class="actions"><button type="button" id="release-start" data-action="release-start">Start serial release…</button></div>` : ""}
        ${serial}</section>`, {
      promote: (d) => steer(d, "promote"),
      pause: (d) => steer(d, "pause"),
      resume: (d) => steer(d, "resume"),
      abort: (d) => steer(d, "abort"),
      "rollout-start": startRollout,
      "release-start": startRelease,
      "release-abort": async (d) => {
        const rec = await Apus.confirmChange(`Abort the release on pool ${d.pool}`,
          `<p>Stop the serial release on pool <b>${esc(d.pool)}</b> between stages. Servers already on the new build stay on it;
            a drained server may need an undrain (Routes &amp; pools).</p>`,
          (reason) => Apus.post(`/admin/v1/releases/${enc(d.pool)}/abort`, {reason}));
        if (rec) await done(rec, `Release on ${d.pool} aborted`);
      },
    });

    // Draw the charts once the page is laid out.
    for (const host of root.querySelectorAll(".rollout-chart")) {
      const art = host.closest("[data-rollout]");
      const x = charted.find((y) => y.name === art.dataset.rollout);
      const [err, p99] = byRoute.get(x.spec.route) || [];
      const d = host.dataset.metric === "error_rate" ? err : p99;
      Apus.later(() => {
        if (!d || d.error) { host.innerHTML = `<p class="muted">No chart: ${esc(d ? d.error : "no data")}</p>`; return; }
        Apus.chart(host, {
          series: d.series,
          unit: host.dataset.metric === "error_rate" ? "percent" : "ms",
          window: d.window,
          markers: markersOf(x.spec.route),
          onZoom: Apus.zoom,
          height: 200,
          title: `${host.dataset.metric === "error_rate" ? "error rate" : "p99 latency"} by lane, route ${x.spec.route}`,
        });
      });
    }
  });
})();
