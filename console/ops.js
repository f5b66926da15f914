// Operations pages: Alarms (active alarms, silences, rule switches, history) and Config
// (the config center's file library, a file's contents, drafts, releases, gray release,
// inheritance and global variables). Every server string goes through Apus.esc; buttons
// carry data-action attributes and are handled by one delegated listener per page.
"use strict";
(function () {
  const esc = Apus.esc;

  // ---- shared helpers ---------------------------------------------------------------------
  // A root node inside the page's element: render() moves el's children into the view, so
  // a listener must sit on a child to survive the move.
  function rootOf(el) {
    const root = document.createElement("div");
    root.className = "ops";
    el.appendChild(root);
    return root;
  }
  // One click listener for every [data-action] button under `root`.
  function actions(root, handlers) {
    root.addEventListener("click", (ev) => {
      const b = ev.target.closest("[data-action]");
      if (!b || !root.contains(b) || b.disabled) return;
      const f = handlers[b.dataset.action];
      if (!f) return;
      ev.preventDefault();
      Promise.resolve(f(b, ev)).catch((e) => Apus.toast(e.message || String(e), "bad"));
    });
  }
  // After a change: say so and show the new state.
  const done = (msg) => { Apus.toast(msg); Apus.render(); };
  const errBox = (e) => `<p class="err" role="alert">${esc(e && e.message || e)}</p>`;
  const card = (title, body, extra) => `<section class="card"${extra || ""}><h3>${title}</h3>${body}</section>`;
  // Settle a promise into {ok, v} or {err} (so one failing part does not fail the page).
  const settle = (p) => p.then((v) => ({ok: true, v}), (err) => ({ok: false, err}));
  const tabs = (label, list, cur, link) => `<nav class="tabs" aria-label="${esc(label)}">` + list.map(([id, text]) =>
    `<a href="${esc(link(id))}"${id === cur ? ' class="on" aria-current="page"' : ""}>${esc(text)}</a>`).join("") + "</nav>";
  const labelChips = (labels) => {
    const e = Object.entries(labels || {});
    e.sort((a, b) => (b[0] === "alertname") - (a[0] === "alertname") || a[0].localeCompare(b[0]));
    return e.map(([k, v]) => `<code class="lbl">${esc(k)}=${esc(v)}</code>`).join(" ");
  };
  const durUs = (us) => {
    if (us == null) return "";
    const s = Math.round(us / 1e6);
    if (s === 0) return "0s";
    if (s % 86400 === 0) return s / 86400 + "d";
    if (s % 3600 === 0) return s / 3600 + "h";
    if (s % 60 === 0) return s / 60 + "m";
    return s + "s";
  };
  const bytes = (n) => n == null ? "" : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;

  // ======================================================================================
  // Alarms
  // ======================================================================================
  const DURATIONS = [["15m", 15], ["30m", 30], ["1h", 60], ["2h", 120], ["4h", 240], ["8h", 480], ["12h", 720], ["24h", 1440], ["3d", 4320], ["7d", 10080]];
  const STATE_ORDER = {firing: 0, pending: 1, resolved: 2};

  // `name=value` as one line of the matcher textarea (quoted when it would not read back).
  const matcherLine = (name, value, op) => {
    const v = String(value ?? "");
    const quote = v !== v.trim() || /^["~]/.test(v) || /[\n\r]/.test(v);
    return `${name}${op || "="}${quote ? JSON.stringify(v) : v}`;
  };
  // The textarea back into Alertmanager's matchers.
  function parseMatchers(text) {
    const out = [];
    String(text).split("\n").forEach((line, i) => {
      const s = line.trim();
      if (!s || s.startsWith("#")) return;
      const m = s.match(/^([^=!~\s]+)\s*(=~|!~|!=|=)\s*(.*)$/);
      if (!m) throw new Error(`line ${i + 1}: “${s}” is not name=value, name!=value, name=~regex or name!~regex`);
      let v = m[3];
      if (v.length >= 2 && v[0] === "\"" && v[v.length - 1] === "\"") {
        try { v = JSON.parse(v); } catch (_) { throw new Error(`line ${i + 1}: bad quoted value ${v}`); }
      }
      out.push({name: m[1], value: v, isRegex: m[2].includes("~"), isEqual: m[2][0] !== "!"});
    });
    if (!out.length) throw new Error("a silence needs at least one matcher");
    return out;
  }
  const matcherText = (m) =>
    `${m.name}${m.isRegex ? (m.isEqual === false ? "!~" : "=~") : (m.isEqual === false ? "!=" : "=")}${JSON.stringify(String(m.value ?? ""))}`;
  // Whether matchers match a label set (as Alertmanager: absent = "", regexes anchored).
  function matches(ms, labels) {
    return ms.every((m) => {
      const v = labels && labels[m.name] != null ? String(labels[m.name]) : "";
      let hit;
      if (m.isRegex) { try { hit = new RegExp(`^(?:${m.value})$`).test(v); } catch (_) { return false; } } else hit = v === m.value;
      return m.isEqual === false ? !hit : hit;
    });
  }

  // The silence dialog: matchers prefilled, duration, comment.
  async function silenceDialog(lines, about, active) {
    const who = Apus.who ? Apus.who.name : "";
    const opts = DURATIONS.map(([t, m]) => `<option value="${m}"${m === 60 ? " selected" : ""}>${t}</option>`).join("");
    const id = await Apus.dialog({
      title: "New silence",
      html: `${about ? `<p>${about}</p>` : ""}
        <label for="silence-matchers">Matchers, one per line: <code>name=value</code>, <code>name!=value</code>, <code>name=~regex</code>, <code>name!~regex</code></label>
        <textarea id="silence-matchers" name="silence-matchers" rows="7" spellcheck="false" required>${esc(lines)}</textarea>
        <p class="muted" id="silence-preview" aria-live="polite"></p>
        <label for="silence-duration">Duration (starts now)</label>
        <select id="silence-duration" name="silence-duration">${opts}</select>
        <label for="silence-comment">Comment (why; a ticket)</label>
        <input id="silence-comment" name="silence-comment" type="text" required minlength="3" size="60" autocomplete="off">
        <p class="muted">Created by ${esc(who)}. A token bound to some projects needs exact <code>project=</code> and <code>env=</code> matchers.</p>`,
      submit: "Create silence",
      onSubmit: async () => {
        const ms = parseMatchers(Apus.$("silence-matchers").value);
        const comment = Apus.$("silence-comment").value.trim();
        if (!comment) throw new Error("a comment is required");
        const mins = Number(Apus.$("silence-duration").value) || 60;
        const now = Date.now();
        const r = await Apus.post("/api/v2/silences", {
          matchers: ms,
          startsAt: new Date(now).toISOString(),
          endsAt: new Date(now + mins * 60000).toISOString(),
          createdBy: who || "console",
          comment,
        });
        return r.silenceID || "created";
      },
    });
    if (id) done(`Silence ${id} created`);
  }
  // Live: how many active alarms the matchers would silence.
  function watchPreview(active) {
    const ta = Apus.$("silence-matchers"), out = Apus.$("silence-preview");
    if (!ta || !out) return;
    const upd = () => {
      try {
        const ms = parseMatchers(ta.value);
        const n = active.filter((a) => a.state !== "resolved" && matches(ms, a.labels)).length;
        out.textContent = `Matches ${n} of ${active.filter((a) => a.state !== "resolved").length} firing or pending alarm(s) now.`;
        out.className = "muted";
      } catch (e) { out.textContent = e.message; out.className = "bad"; }
    };
    ta.addEventListener("input", upd);
    upd();
  }

  function alarmsOff() {
    return card("Alarms are off", `<p>This query node evaluates no alarm rules. Turn them on with a directory of rule files in the config
      (<code>[query.alarms]</code> under <code>apus run</code>, <code>[alarms]</code> in <code>apus query --config</code>), then restart:</p>
      <pre>[query.alarms]
rules_dir = "alarms"   # every *.toml in it; relative to the config file</pre>
      <p class="muted">See the README section “Alarms” for rule kinds, receivers, routing and inhibition; check rule files with <code>apus rules check alarms/</code>.
      The history below is read from the <code>alarms</code> table and may still hold transitions.</p>`);
  }

  Apus.page("alarms", {
    title: "Alarms",
    group: "sre",
    render: async (el, route) => {
      const root = rootOf(el);
      const q = route.q, state = q.get("state") || "", rule = q.get("rule") || "";
      const data = await Apus.api("/api/v1/alarms?" + Apus.scope({state, rule}, ["project", "env"]));
      const on = !!data.evaluator, may = Apus.mayChange();
      const [rules, sw, sil] = on ? await Promise.all([
        settle(Apus.api("/api/v1/alarms/rules")),
        settle(Apus.api("/api/v1/alarms/switches")),
        settle(Apus.api("/api/v2/silences")),
      ]) : [null, null, null];
      const active = (data.active || []).slice().sort((a, b) =>
        (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || String(b.since).localeCompare(String(a.since)));
      const live = active.filter((a) => a.state === "firing" || a.state === "pending");
      const resolved = active.filter((a) => a.state === "resolved");
      const byFp = new Map(active.map((a) => [a.fingerprint, a]));
      const switches = sw && sw.ok ? (sw.v.switches || {}) : {};

      // ---- header and filters
      const stateOpts = [["", "any state"], ["firing", "firing"], ["pending", "pending"], ["resolved", "resolved"]]
        .map(([v, t]) => `<option value="${v}"${v === state ? " selected" : ""}>${t}</option>`).join("");
      let h = `<h2>Alarms</h2><div class="actions">
        <label for="alarm-state">State</label><select id="alarm-state">${stateOpts}</select>
        ${rule ? `<span>rule <code>${esc(rule)}</code> <a href="${esc(Apus.link("alarms", "", {rule: "", state}))}">clear</a></span>` : ""}
        ${on && may ? `<button type="button" id="new-silence" class="primary">New silence…</button>` : ""}
        <span class="muted">${on ? `${live.filter((a) => a.state === "firing").length} firing, ${live.filter((a) => a.state === "pending").length} pending` : "evaluator off"}</span>
      </div>`;
      if (!on) h += alarmsOff();

      // ---- firing and pending
      if (on) {
        const cols = ["state", "rule", "labels", "value", "since", "fired_at", "silenced", "summary"];
        if (may) cols.push("actions");
        const cell = {
          state: (v) => Apus.badge(v),
          rule: (v) => `<a href="${esc(Apus.link("alarms", "", {rule: v}))}">${esc(v)}</a>`,
          labels: (v) => labelChips(v),
          value: (v) => esc(Apus.fmt(v)),
          since: (v) => esc(Apus.time(v)),
          fired_at: (v) => esc(Apus.time(v)),
          silenced: (v) => v ? Apus.badge("silenced", "pending") : "",
          summary: (v, r) => esc((r.annotations || {}).summary || (r.annotations || {}).description || ""),
          actions: (v, r) => `<button type="button" data-action="silence" data-fingerprint="${esc(r.fingerprint)}">Silence…</button>`,
        };
        h += card(`Firing and pending <span class="muted">(${live.length})</span>`,
          Apus.table(live, cols, {cell, empty: "Nothing is firing or pending."}), ' id="alarms-active"');
        if (resolved.length) {
          h += `<details class="card"><summary>Recently resolved (${resolved.length})</summary>` +
            Apus.table(resolved, ["state", "rule", "labels", "value", "since", "resolved_at"], {cell}) + "</details>";
        }
      }

      // ---- rules and switches
      if (on) {
        let body;
        if (!rules.ok) body = errBox(rules.err);
        else {
          const rs = rules.v.rules || [];
          const envs = new Map();
          for (const r of rs) envs.set(`${r.rule.project}/${r.rule.env}`, [r.rule.project, r.rule.env]);
          for (const k of Object.keys(switches)) { const p = k.split("/"); if (p.length === 2) envs.set(k, p); }
          const swButton = (project, env, ruleName, isOn) => may
            ? `<button type="button" data-action="switch" data-project="${esc(project)}" data-env="${esc(env)}"${ruleName ? ` data-rule="${esc(ruleName)}"` : ""} data-enabled="${isOn ? "false" : "true"}"
                aria-label="${isOn ? "Switch off" : "Switch on"} alarms ${esc(ruleName ? `${project}/${env}/${ruleName}` : `${project}/${env}`)}">${isOn ? "Switch off" : "Switch on"}</button>` : "";
          body = "";
          if (rules.v.reload_error) body += `<p class="err" role="alert">Rule files not reloaded: ${esc(rules.v.reload_error)}</p>`;
          body += `<p class="muted">From <code>${esc(rules.v.dir)}</code>. Switching off resolves what fires; each switch is audited.</p>`;
          if (envs.size) {
            body += `<h3>Per project and env</h3>` + Apus.table([...envs.values()].map(([p, e]) => ({project: p, env: e, alarms: switches[`${p}/${e}`] !== false})),
              may ? ["project", "env", "alarms", "switch"] : ["project", "env", "alarms"], {cell: {
                alarms: (v) => v ? Apus.badge("on", "ok") : Apus.badge("off", "bad"),
                switch: (v, r) => swButton(r.project, r.env, null, r.alarms),
              }});
          }
          const rows = rs.map((r) => ({
            id: r.id, _r: r, kind: r.rule.kind, severity: r.rule.severity,
            condition: r.rule.condition ? `${r.rule.condition.relative ? "change " : ""}${r.rule.condition.op} ${r.rule.condition.relative ? r.rule.condition.threshold * 100 + "%" : r.rule.condition.threshold}` : "",
            window: durUs(r.rule.window_us), for: durUs(r.rule.for_us),
            health: r.health, last_evaluation: r.last_evaluation, firing: r.firing, pending: r.pending, enabled: r.enabled,
          }));
          const cols = ["id", "kind", "severity", "condition", "window", "for", "health", "last_evaluation", "firing", "pending", "enabled"];
          body += `<h3>Rules <span class="muted">(${rows.length})</span></h3>` + Apus.table(rows, cols, {
            empty: "No rules loaded.",
            cell: {
              id: (v) => `<a href="${esc(Apus.link("alarms", "", {rule: v}))}">${esc(v)}</a>`,
              health: (v, r) => Apus.badge(v, v === "ok" ? "ok" : v === "error" ? "bad" : "") + (r._r.error ? `<div class="bad">${esc(r._r.error)}</div>` : ""),
              last_evaluation: (v, r) => esc(Apus.time(v)) + (r._r.last_duration_ms != null ? ` <span class="muted">${esc(Apus.fmt(r._r.last_duration_ms))} ms</span>` : ""),
              firing: (v) => v ? `<span class="bad">${esc(v)}</span>` : "0",
              enabled: (v, r) => {
                const rr = r._r.rule, own = switches[r.id] !== false, envOn = switches[`${rr.project}/${rr.env}`] !== false;
                if (!rr.enabled) return Apus.badge("off", "bad") + ` <span class="muted">enabled = false in ${esc(rr.file)}</span>`;
                return (v ? Apus.badge("on", "ok") : Apus.badge("off", "bad")) +
                  (own && !envOn ? ` <span class="muted">(off for ${esc(rr.project)}/${esc(rr.env)})</span>` : "") +
                  " " + swButton(rr.project, rr.env, rr.name, own);
              },
            },
          });
        }
        h += card("Rules and switches", body, ' id="alarm-rules"');
      }

      // ---- silences
      if (on) {
        let body;
        if (!sil.ok) body = errBox(sil.err);
        else {
          const all = (sil.v || []).map((s) => Object.assign({}, s, {state: (s.status && s.status.state) || "", starts: s.startsAt, ends: s.endsAt, created_by: s.createdBy}));
          const rank = {active: 0, pending: 1, expired: 2};
          all.sort((a, b) => (rank[a.state] ?? 9) - (rank[b.state] ?? 9) || String(b.updatedAt || b.startsAt).localeCompare(String(a.updatedAt || a.startsAt)));
          const now = all.filter((s) => s.state !== "expired"), old = all.filter((s) => s.state === "expired");
          const cols = ["state", "matchers", "starts", "ends", "created_by", "comment", "id"];
          if (may) cols.push("actions");
          const cell = {
            state: (v) => Apus.badge(v),
            matchers: (v) => (v || []).map((m) => `<code class="lbl">${esc(matcherText(m))}</code>`).join(" "),
            starts: (v) => esc(Apus.time(v)),
            ends: (v) => esc(Apus.time(v)),
            id: (v) => `<code class="muted">${esc(v)}</code>`,
            actions: (v, r) => r.state === "expired" ? "" : `<button type="button" class="danger" data-action="expire" data-id="${esc(r.id)}">Expire</button>`,
          };
          body = Apus.table(now, cols, {cell, empty: "No active or pending silences."});
          if (old.length) body += `<details><summary>Expired (${old.length})</summary>${Apus.table(old.slice(0, 200), cols.filter((c) => c !== "actions"), {cell})}</details>`;
        }
        h += card("Silences", body, ' id="alarm-silences"');
      }

      // ---- history
      const hist = data.history || [];
      h += card(`History <span class="muted">(${hist.length}, ${esc(Apus.time(data.from))} – ${esc(Apus.time(data.to))})</span>`,
        Apus.table(hist, ["time", "rule", "state", "severity", "labels", "value", "since", "message"], {
          empty: "No alarm transitions in this range.",
          cell: {
            time: (v) => esc(Apus.time(v)),
            since: (v) => esc(Apus.time(v)),
            state: (v) => Apus.badge(v),
            rule: (v) => `<a href="${esc(Apus.link("alarms", "", {rule: v}))}">${esc(v)}</a>`,
            labels: (v) => labelChips(v),
            value: (v) => esc(Apus.fmt(v)),
            message: (v) => `<span class="long">${esc(v)}</span>`,
          },
        }), ' id="alarm-history"');
      root.innerHTML = h;

      // ---- handlers
      root.querySelector("#alarm-state").addEventListener("change", (ev) => Apus.set({state: ev.target.value}));
      const newSilence = root.querySelector("#new-silence");
      if (newSilence) newSilence.addEventListener("click", () => {
        const lines = ["project", "env"].filter((d) => q.get(d)).map((d) => matcherLine(d, q.get(d)));
        const p = silenceDialog(lines.join("\n") + (lines.length ? "\n" : ""), "", active);
        watchPreview(active);
        return p;
      });
      actions(root, {
        silence: (b) => {
          const a = byFp.get(b.dataset.fingerprint);
          if (!a) return;
          const ls = Object.entries(a.labels || {});
          const first = ["alertname", "project", "env"];
          ls.sort((x, y) => ((first.indexOf(x[0]) + 1 || 99) - (first.indexOf(y[0]) + 1 || 99)) || x[0].localeCompare(y[0]));
          const p = silenceDialog(ls.map(([k, v]) => matcherLine(k, v)).join("\n"),
            `Alarm <code>${esc(a.rule)}</code> ${Apus.badge(a.state)} since ${esc(Apus.time(a.since))}, fingerprint <code>${esc(a.fingerprint)}</code>.`, active);
          watchPreview(active);
          return p;
        },
        expire: async (b) => {
          const id = b.dataset.id;
          const s = sil && sil.ok ? (sil.v || []).find((x) => x.id === id) : null;
          const ok = await Apus.dialog({
            title: "Expire silence",
            html: `<p>Expire silence <code>${esc(id)}</code> now? Alarms it mutes notify again.</p>` +
              (s ? `<p>${(s.matchers || []).map((m) => `<code class="lbl">${esc(matcherText(m))}</code>`).join(" ")}</p><p class="muted">${esc(s.createdBy)}: ${esc(s.comment)}</p>` : ""),
            submit: "Expire",
            onSubmit: async () => { await Apus.api(`/api/v2/silence/${encodeURIComponent(id)}`, {method: "DELETE"}); return true; },
          });
          if (ok) done(`Silence ${id} expired`);
        },
        switch: async (b) => {
          const {project, env, rule: ruleName} = b.dataset, enabled = b.dataset.enabled === "true";
          const what = ruleName ? `${project}/${env}/${ruleName}` : `all alarms of ${project}/${env}`;
          const ok = await Apus.confirmChange(enabled ? "Switch alarms on" : "Switch alarms off",
            `<p>Switch <strong>${enabled ? "on" : "off"}</strong> <code>${esc(what)}</code>.${enabled ? "" : " What fires resolves."}</p>`,
            async (reason) => {
              const body = {project, env, enabled, comment: reason};
              if (ruleName) body.rule = ruleName;
              await Apus.post("/api/v1/alarms/switches", body);
              return true;
            });
          if (ok) done(`Alarms ${enabled ? "on" : "off"}: ${what}`);
        },
      });
    },
  });

  // ======================================================================================
  // Config center
  // ======================================================================================
  const FORMATS = ["properties", "yaml", "json", "xml", "text"];
  const keyPath = (key) => String(key).split("/").map(encodeURIComponent).join("/");
  const cfgApi = (what, key) => `/admin/v1/config/${what}/${keyPath(key)}`;
  const splitKey = (key) => {
    const p = String(key).split("/");
    return {project: p[0] || "", env: p[1] || "", pool: p[2] || "", path: p.slice(3).join("/")};
  };
  const formatOf = (path) => {
    const m = /\.([a-z]+)$/i.exec(path || "");
    const x = m ? m[1].toLowerCase() : "";
    return x === "yml" || x === "yaml" ? "yaml" : x === "json" ? "json" : x === "xml" ? "xml" : x === "properties" ? "properties" : "text";
  };
  const targetText = (t) => {
    if (!t) return "";
    const out = [];
    if (t.ips && t.ips.length) out.push(`IPs ${t.ips.join(", ")}`);
    if (t.labels && Object.keys(t.labels).length) out.push(`labels ${Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(", ")}`);
    if (t.percent != null) out.push(`${t.percent}% of instances`);
    return out.join("; ") || "(no target)";
  };
  const fileLink = (key, params) => Apus.link("config", key, params);
  // Lines of the server's diff ("  x", "- x", "+ x") as the console shows diffs.
  const serverDiff = (lines) => `<pre class="diff">${(lines || []).map((l) => {
    const c = l[0] === "+" ? "add" : l[0] === "-" ? "del" : "same";
    return `<span class="${c}">${esc(l)}</span>`;
  }).join("\n")}</pre>`;
  // Why the admin API is not there, said plainly.
  function noAdmin(e) {
    return card("No config center here", `<p class="err" role="alert">${esc(e.message)}</p>
      <p>The config pages reach the gateway's admin API through this query node (<code>/admin/v1/…</code>). <code>apus run</code> sets it up;
      a separate <code>apus query</code> needs <code>admin_url = "http://GATEWAY:9901"</code> in <code>[query]</code>. See the README section “Config center”.</p>`);
  }
  const isAdminMissing = (e) => e instanceof Apus.ApiError && (e.status === 502 || e.status === 503 ||
    (e.status === 404 && /admin API/.test(e.message)));
  // Unsaved editor text survives an auto-refresh of the same file.
  let editBuf = null;

  // `NAME=value` lines ⇄ an object.
  const varsText = (vars) => Object.entries(vars || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  function parseVars(text) {
    const out = {};
    String(text).split("\n").forEach((line, i) => {
      if (!line.trim() || line.trim().startsWith("#")) return;
      const at = line.indexOf("=");
      if (at < 1) throw new Error(`line ${i + 1}: expected NAME=value`);
      const k = line.slice(0, at).trim();
      if (k in out) throw new Error(`line ${i + 1}: ${k} given twice`);
      out[k] = line.slice(at + 1);
    });
    return out;
  }
  async function editGlobals(project, env) {
    let cur = {vars: {}, version: 0};
    if (project && env) {
      try { cur = await Apus.api(`/admin/v1/config/globals/${encodeURIComponent(project)}/${encodeURIComponent(env)}`); } catch (e) { if (!(e instanceof Apus.ApiError && e.status === 404)) throw e; }
    }
    const fixed = !!(project && env);
    const ok = await Apus.confirmChange("Edit global variables", `
      ${fixed ? `<p>Globals of <code>${esc(project)}/${esc(env)}</code> (version ${esc(cur.version)}). Files use them as <code>\${global.NAME}</code>; every file whose effective content changes is re-published (PV + 1).</p>` : `
      <label for="globals-project">Project</label><input id="globals-project" type="text" required value="${esc(Apus.route().q.get("project") || "")}">
      <label for="globals-env">Env</label><input id="globals-env" type="text" required value="${esc(Apus.route().q.get("env") || "")}">`}
      <label for="globals-vars">Variables, one <code>NAME=value</code> per line (the whole set: a removed line removes the variable)</label>
      <textarea id="globals-vars" rows="10" spellcheck="false">${esc(varsText(cur.vars))}</textarea>`,
    async (reason) => {
      const p = fixed ? project : Apus.$("globals-project").value.trim(), e = fixed ? env : Apus.$("globals-env").value.trim();
      if (!p || !e) throw new Error("project and env are required");
      const vars = parseVars(Apus.$("globals-vars").value);
      await Apus.post(`/admin/v1/config/globals/${encodeURIComponent(p)}/${encodeURIComponent(e)}`, {vars, reason}, "PUT");
      return `${p}/${e}`;
    });
    if (ok) done(`Globals of ${ok} saved`);
  }
  const globalsTable = (g) => Apus.table(Object.entries(g.vars || {}).map(([name, value]) => ({name, value})), ["name", "value"], {
    empty: "No global variables.",
    cell: {name: (v) => `<code>${esc(v)}</code>`, value: (v) => `<span class="long">${esc(v)}</span>`},
  });

  async function newFile(q) {
    const key = await Apus.confirmChange("New config file", `
      <div class="grid2 tight">
        <div><label for="cfg-new-project">Project</label><input id="cfg-new-project" type="text" required value="${esc(q.get("project") || "")}"></div>
        <div><label for="cfg-new-env">Env</label><input id="cfg-new-env" type="text" required value="${esc(q.get("env") || "")}"></div>
        <div><label for="cfg-new-pool">Pool</label><input id="cfg-new-pool" type="text" required value="${esc(q.get("pool") || "")}"></div>
        <div><label for="cfg-new-path">Path</label><input id="cfg-new-path" type="text" required placeholder="application.yaml"></div>
        <div><label for="cfg-new-format">Format</label><select id="cfg-new-format">${FORMATS.map((f) => `<option>${f}</option>`).join("")}</select></div>
        <div><label for="cfg-new-parent">Parent (optional, project/env/pool/path in this project or common)</label><input id="cfg-new-parent" type="text"></div>
      </div>
      <label for="cfg-new-content">Content (saved as a draft; publish it from the file's page)</label>
      <textarea id="cfg-new-content" rows="10" spellcheck="false"></textarea>`,
    async (reason) => {
      const v = (id) => Apus.$(id).value.trim();
      const k = [v("cfg-new-project"), v("cfg-new-env"), v("cfg-new-pool"), v("cfg-new-path").replace(/^\/+/, "")];
      if (k.some((x) => !x)) throw new Error("project, env, pool and path are required");
      const key = k.join("/"), body = {content: Apus.$("cfg-new-content").value, content_type: v("cfg-new-format"), reason};
      if (v("cfg-new-parent")) body.parent = v("cfg-new-parent");
      await Apus.post(cfgApi("files", key), body, "PUT");
      return key;
    });
    if (key) { Apus.toast(`Draft of ${key} saved`); Apus.go("config", key); }
  }
  // The format follows the path's extension until the user picks one.
  function wireNewFile() {
    const path = Apus.$("cfg-new-path"), fmt = Apus.$("cfg-new-format");
    if (!path || !fmt) return;
    let picked = false;
    fmt.addEventListener("change", () => { picked = true; });
    path.addEventListener("input", () => { if (!picked) fmt.value = formatOf(path.value); });
  }

  // ---- the library ------------------------------------------------------------------------
  async function library(root, route) {
    const q = route.q, tab = q.get("tab") || "files", find = (q.get("find") || "").toLowerCase();
    const p = new URLSearchParams();
    for (const d of ["project", "env", "pool"]) if (q.get(d)) p.set(d, q.get(d));
    let data;
    try { data = await Apus.api("/admin/v1/config/files" + (p.toString() ? "?" + p : "")); } catch (e) {
      if (isAdminMissing(e) || (e instanceof Apus.ApiError && e.status === 404)) { root.innerHTML = `<h2>Config</h2>` + noAdmin(e); return; }
      throw e;
    }
    const may = Apus.mayChange();
    const files = (data.files || []).map((f) => {
      const k = splitKey(f.key), c = f.current || {};
      return {key: f.key, path: k.path, project: k.project, env: k.env, pool: k.pool, format: f.content_type, parent: f.parent || "",
        fv: f.fv, pv: f.pv, release: c.id, status: "", author: c.author || (f.draft && f.draft.author) || "", time: c.ts || (f.draft && f.draft.ts), _f: f};
    }).filter((r) => !find || r.key.toLowerCase().includes(find));
    const filt = ["project", "env", "pool"].filter((d) => q.get(d)).map((d) => `${d}=${q.get(d)}`).join(", ");
    let h = `<h2>Config</h2>` + tabs("Config center", [["files", "Files"], ["globals", "Global variables"]], tab, (t) => Apus.link("config", "", {tab: t === "files" ? "" : t}));
    if (tab === "globals") {
      const pairs = new Map();
      for (const r of files) pairs.set(`${r.project}/${r.env}`, [r.project, r.env]);
      if (q.get("project") && q.get("env")) pairs.set(`${q.get("project")}/${q.get("env")}`, [q.get("project"), q.get("env")]);
      const list = [...pairs.values()].sort((a, b) => (a.join("/")).localeCompare(b.join("/"))).slice(0, 40);
      const got = await Promise.all(list.map(([pr, en]) => settle(Apus.api(`/admin/v1/config/globals/${encodeURIComponent(pr)}/${encodeURIComponent(en)}`))));
      h += `<div class="actions">${may ? `<button type="button" data-action="globals" class="primary">Edit globals of a project/env…</button>` : ""}
        <span class="muted">Files use <code>\${global.NAME}</code>; the project and env filters in the header narrow this list${pairs.size > 40 ? " (first 40 shown)" : ""}.</span></div>`;
      h += list.length ? `<div class="grid2">` + list.map(([pr, en], i) => card(`<code>${esc(pr)}/${esc(en)}</code>` + (got[i].ok ? ` <span class="muted">version ${esc(got[i].v.version)}</span>` : ""),
        (got[i].ok ? globalsTable(got[i].v) : errBox(got[i].err)) +
        (may ? `<div class="actions"><button type="button" data-action="globals" data-project="${esc(pr)}" data-env="${esc(en)}">Edit ${esc(pr)}/${esc(en)}…</button></div>` : ""))).join("") + `</div>`
        : `<p class="muted">No config files${filt ? ` for ${esc(filt)}` : ""}: set project and env in the header to see their globals.</p>`;
    } else {
      h += `<form class="toolbar" id="cfg-find" role="search"><label for="cfg-find-input">Path or key contains</label>
        <input id="cfg-find-input" type="search" value="${esc(q.get("find") || "")}"><button type="submit">Filter</button>
        ${may ? `<button type="button" id="new-config" class="primary">New file…</button>` : ""}</form>
        <p class="muted">${files.length} file(s)${filt ? ` in ${esc(filt)} (from the header's filters)` : ""}, state version ${esc(data.version)}.
        FV counts published edits of a file, PV re-publishes caused by its parent or a global.</p>`;
      h += Apus.table(files, ["path", "project", "env", "pool", "format", "parent", "fv", "pv", "release", "status", "author", "time"], {
        empty: filt || find ? "No config files match these filters." : "No config files yet.",
        cell: {
          path: (v, r) => `<a href="${esc(fileLink(r.key))}"><code>${esc(v)}</code></a>`,
          parent: (v) => v ? `<a href="${esc(fileLink(v))}"><code>${esc(v)}</code></a>` : "",
          fv: (v) => esc(v), pv: (v) => esc(v),
          release: (v) => v == null ? `<span class="muted">none</span>` : `#${esc(v)}`,
          status: (v, r) => [r._f.current ? Apus.badge("released", "ok") : Apus.badge("unreleased", "new"),
            r._f.draft ? Apus.badge("draft", "pending") : "", r._f.gray ? Apus.badge(`gray #${r._f.gray.release.id}`, "gray") : ""].join(" "),
          time: (v) => esc(Apus.time(v)),
        },
      });
    }
    root.innerHTML = h;
    const form = root.querySelector("#cfg-find");
    if (form) form.addEventListener("submit", (ev) => { ev.preventDefault(); Apus.set({find: root.querySelector("#cfg-find-input").value.trim()}); });
    const nb = root.querySelector("#new-config");
    if (nb) nb.addEventListener("click", () => { const p2 = newFile(q); wireNewFile(); return p2; });
    actions(root, {globals: (b) => editGlobals(b.dataset.project, b.dataset.env)});
  }

  // ---- one file ------------------------------------------------------------------------------
  function treeHtml(t, key) {
    const anc = (t.ancestors || []).slice().reverse();
    const node = (k, cls) => `<a href="${esc(fileLink(k))}"${cls ? ` class="${cls}"` : ""}><code>${esc(k)}</code></a>`;
    const desc = (obj) => {
      const e = Object.entries(obj || {});
      return e.length ? `<ul>${e.map(([k, sub]) => `<li>${node(k)}${desc(sub)}</li>`).join("")}</ul>` : "";
    };
    let inner = `<li><strong>${node(key)}</strong> <span class="muted">(this file)</span>${desc(t.descendants)}</li>`;
    for (let i = anc.length - 1; i >= 0; i--) inner = `<li>${node(anc[i])}<ul>${inner}</ul></li>`;
    const n = Object.keys(t.descendants || {}).length;
    return `<p class="muted">${anc.length ? `Inherits from ${anc.length} file(s), nearest last.` : "Inherits from no file."} ${n} file(s) inherit from it directly; publishing it re-publishes those whose effective content changes.</p>
      <ul class="tree">${inner}</ul>`;
  }

  async function fileView(root, route) {
    const key = route.arg, q = route.q, tab = q.get("tab") || "content";
    let f;
    try { f = await Apus.api(cfgApi("files", key)); } catch (e) {
      if (isAdminMissing(e)) { root.innerHTML = `<h2>Config</h2>` + noAdmin(e); return; }
      if (e instanceof Apus.ApiError && e.status === 404) {
        root.innerHTML = `<h2><a href="${esc(Apus.link("config"))}">Config</a> / <code>${esc(key)}</code></h2><p class="err" role="alert">${esc(e.message)}</p>
          <p><a href="${esc(Apus.link("config"))}">Back to the file library</a></p>`;
        return;
      }
      throw e;
    }
    const k = splitKey(key), may = Apus.mayChange() && !f.masked;
    const cur = f.current, draft = f.draft, gray = f.gray, rels = (f.releases || []).slice().reverse();
    let h = `<h2><a href="${esc(Apus.link("config"))}">Config</a> / <code>${esc(key)}</code> ${Apus.badge(f.content_type, "")}
      ${draft ? Apus.badge("draft", "pending") : ""} ${gray ? Apus.badge("gray", "gray") : ""}</h2>`;
    h += `<dl class="kv">
      <dt>project / env / pool</dt><dd><a href="${esc(Apus.link("config", "", {project: k.project, env: k.env, pool: k.pool}))}">${esc(k.project)} / ${esc(k.env)} / ${esc(k.pool)}</a></dd>
      <dt>path</dt><dd><code>${esc(k.path)}</code></dd>
      <dt>format</dt><dd>${esc(f.content_type)}</dd>
      <dt>parent</dt><dd>${f.parent ? `<a href="${esc(fileLink(f.parent))}"><code>${esc(f.parent)}</code></a>` : `<span class="muted">none</span>`}</dd>
      <dt>FV / PV</dt><dd>${esc(f.fv)} / ${esc(f.pv)}</dd>
      <dt>released</dt><dd>${cur ? `#${esc(cur.id)} ${Apus.badge(cur.kind, "")} by ${esc(cur.author)} at ${esc(Apus.time(cur.ts))}${cur.reason ? ` — ${esc(cur.reason)}` : ""} <span class="muted">(${esc(bytes(cur.size))}, key ${esc(cur.key)})</span>` : `<span class="muted">not yet released</span>`}</dd>
      <dt>draft</dt><dd>${draft ? `by ${esc(draft.author)} at ${esc(Apus.time(draft.ts))}, edited from FV ${esc(draft.base_fv)}${draft.base_fv !== f.fv ? ` <span class="bad">(the file is at FV ${esc(f.fv)} now: save it again)</span>` : ""}` : `<span class="muted">none</span>`}</dd>
      <dt>gray release</dt><dd>${gray ? `#${esc(gray.release.id)} by ${esc(gray.release.author)} at ${esc(Apus.time(gray.release.ts))} to <strong>${esc(targetText(gray.target))}</strong>${gray.release.reason ? ` — ${esc(gray.release.reason)}` : ""}` : `<span class="muted">none</span>`}</dd>
    </dl>`;
    if (f.masked) h += `<p class="muted">Sensitive values are shown as <code>****</code>: your token may only read this file.</p>`;
    if (may) {
      const b = [];
      if (draft && !gray) b.push(`<button type="button" class="primary" data-action="publish">Publish draft…</button>`,
        `<button type="button" data-action="gray">Gray release draft…</button>`);
      if (gray) b.push(`<button type="button" class="primary" data-action="promote">Promote gray…</button>`,
        `<button type="button" class="danger" data-action="abandon">Abandon gray…</button>`);
      if (cur && rels.length > 1 && !gray) b.push(`<button type="button" data-action="rollback">Roll back…</button>`);
      if (b.length) h += `<div class="actions" id="config-actions">${b.join("")}</div>`;
    } else if (!Apus.mayChange()) h += `<p class="muted">Read-only: your token may not change config files.</p>`;

    h += tabs("File", [["content", "Content"], ["releases", `Releases (${rels.length})`], ["tree", "Inheritance"], ["globals", "Globals"]], tab,
      (t) => fileLink(key, {tab: t === "content" ? "" : t}));

    if (tab === "releases") {
      const cols = ["id", "fv", "pv", "kind", "author", "reason", "time", "size", "actions"];
      h += Apus.table(rels, cols, {
        empty: "No releases yet.",
        cell: {
          id: (v) => `#${esc(v)}` + (cur && v === cur.id ? ` ${Apus.badge("current", "ok")}` : ""),
          fv: (v) => esc(v), pv: (v) => esc(v),
          kind: (v) => Apus.badge(v, ""),
          time: (v, r) => esc(Apus.time(r.ts)),
          size: (v) => esc(bytes(v)),
          reason: (v) => `<span class="long">${esc(v)}</span>`,
          actions: (v, r) => cur && r.id === cur.id ? "" :
            `<button type="button" data-action="compare" data-release="${esc(r.id)}">Diff with current</button>` +
            (may && !gray ? ` <button type="button" data-action="rollback" data-release="${esc(r.id)}">Roll back to #${esc(r.id)}…</button>` : ""),
        },
      });
      h += `<div id="config-compare"></div>`;
    } else if (tab === "tree") {
      const t = await settle(Apus.api(cfgApi("tree", key)));
      h += card("Inheritance", t.ok ? treeHtml(t.v, key) : errBox(t.err));
    } else if (tab === "globals") {
      const g = await settle(Apus.api(`/admin/v1/config/globals/${encodeURIComponent(k.project)}/${encodeURIComponent(k.env)}`));
      h += card(`Globals of <code>${esc(k.project)}/${esc(k.env)}</code>` + (g.ok ? ` <span class="muted">version ${esc(g.v.version)}</span>` : ""),
        `<p class="muted"><code>\${global.NAME}</code> in a file is replaced by the variable; changing one re-publishes every file whose effective content changes.</p>` +
        (g.ok ? globalsTable(g.v) : errBox(g.err)) +
        (Apus.mayChange() ? `<div class="actions"><button type="button" data-action="globals">Edit globals…</button></div>` : ""));
    } else {
      if (gray) {
        h += card(`Gray release #${esc(gray.release.id)} to ${esc(targetText(gray.target))}`,
          `<p class="muted">Effective content: released (−) against gray (+).</p>` + Apus.diff(f.effective || "", gray.effective || ""), ' id="config-gray"');
      }
      if (draft) {
        h += card(`Draft vs released <span class="muted">(own content; − released, + draft)</span>`,
          Apus.diff(f.content || "", draft.content || ""), ' id="config-draft-diff"');
      }
      h += `<div class="grid2">` + card(cur ? `Released #${esc(cur.id)} <span class="muted">(own content)</span>` : "Released",
        cur ? `<pre id="config-released">${esc(f.content)}</pre>` : `<p class="muted">Nothing released yet.</p>`);
      if (cur && (f.parent || f.effective !== f.content)) {
        h += card(`Effective <span class="muted">(parent merged, globals substituted: what clients get)</span>`, `<pre id="config-effective">${esc(f.effective)}</pre>`);
      } else if (draft) {
        h += card("Draft", `<pre id="config-draft">${esc(draft.content)}</pre>`);
      }
      h += `</div>`;
      if (may) {
        const buf = editBuf && editBuf.key === key && editBuf.fv === f.fv ? editBuf : null;
        const text = buf ? buf.text : draft ? draft.content : (f.content || "");
        const fmt = buf ? buf.format : f.content_type, parent = buf ? buf.parent : (f.parent || "");
        h += card("Edit", `<label for="config-editor">Content (${draft ? "starts from the draft" : "starts from the released content"}; saving replaces the draft)</label>
          <textarea id="config-editor" rows="18" spellcheck="false">${esc(text)}</textarea>
          <div class="actions">
            <label for="config-format">Format</label><select id="config-format">${FORMATS.map((x) => `<option${x === fmt ? " selected" : ""}>${x}</option>`).join("")}</select>
            <label for="config-parent">Parent</label><input id="config-parent" type="text" size="40" value="${esc(parent)}" placeholder="none">
            <button type="button" data-action="preview">Preview diff</button>
            <button type="button" class="primary" data-action="save-draft">Save draft…</button>
            ${buf ? `<span class="muted">unsaved edits kept</span>` : ""}
          </div><div id="config-preview"></div>`, ' id="config-edit"');
      }
    }
    root.innerHTML = h;

    // ---- handlers
    const ed = root.querySelector("#config-editor");
    if (ed) {
      const keep = () => { editBuf = {key, fv: f.fv, text: ed.value, format: root.querySelector("#config-format").value, parent: root.querySelector("#config-parent").value}; };
      ed.addEventListener("input", keep);
      root.querySelector("#config-format").addEventListener("change", keep);
      root.querySelector("#config-parent").addEventListener("input", keep);
    }
    const post = (verb, body) => Apus.post(cfgApi(verb, key), body);
    const say = (r, fallback) => (r && r.change && r.change.summary) || fallback;
    actions(root, {
      preview: () => {
        root.querySelector("#config-preview").innerHTML = `<p class="muted">Released (−) against the editor (+):</p>` + Apus.diff(f.content || "", ed.value);
      },
      "save-draft": async () => {
        const content = ed.value, content_type = root.querySelector("#config-format").value, parent = root.querySelector("#config-parent").value.trim();
        const r = await Apus.confirmChange("Save draft", `<p>Save a draft of <code>${esc(key)}</code> (${esc(bytes(content.length))}, ${esc(content_type)}), edited from FV ${esc(f.fv)}. Clients see it only once it is published.</p>` +
          Apus.diff(draft ? draft.content : (f.content || ""), content),
        async (reason) => {
          const body = {content, content_type, base_fv: f.fv, reason};
          if (parent !== (f.parent || "")) body.parent = parent || null;
          return await Apus.post(cfgApi("files", key), body, "PUT") || true;
        });
        if (r) { editBuf = null; done(say(r, "Draft saved")); }
      },
      publish: async () => {
        const r = await Apus.confirmChange("Publish draft", `<p>Publish the draft of <code>${esc(key)}</code> to every client as FV ${esc(f.fv + 1)}. Files inheriting from it are re-published when their effective content changes.</p>` +
          Apus.diff(f.content || "", draft.content || ""), async (reason) => await post("publish", {reason}) || true);
        if (r) done(say(r, "Published"));
      },
      gray: async () => {
        const r = await Apus.confirmChange("Gray release draft", `<p>Give the draft of <code>${esc(key)}</code> to some clients first (any criterion that matches), then promote or abandon it.</p>
          <label for="gray-ips">Client IPs or CIDRs (one per line)</label><textarea id="gray-ips" rows="3" spellcheck="false" placeholder="10.0.0.7&#10;10.1.0.0/16"></textarea>
          <label for="gray-labels">Client labels, all required (one <code>name=value</code> per line)</label><textarea id="gray-labels" rows="2" spellcheck="false" placeholder="zone=a"></textarea>
          <label for="gray-percent">Sticky percentage of instances (1–100, hashed on the instance ID)</label><input id="gray-percent" type="number" min="1" max="100" step="1">`,
        async (reason) => {
          const ips = Apus.$("gray-ips").value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
          const labels = parseVars(Apus.$("gray-labels").value);
          for (const x of Object.keys(labels)) labels[x] = labels[x].trim();
          const ps = Apus.$("gray-percent").value.trim();
          const target = {ips, labels};
          if (ps) {
            const n = Number(ps);
            if (!Number.isInteger(n) || n < 1 || n > 100) throw new Error("percent: a whole number from 1 to 100");
            target.percent = n;
          }
          if (!ips.length && !Object.keys(labels).length && !target.percent) throw new Error("give IPs, labels or a percentage");
          return await post("gray", {target, reason}) || true;
        });
        if (r) done(say(r, "Gray release made"));
      },
      promote: async () => {
        const r = await Apus.confirmChange("Promote gray release", `<p>Make gray release #${esc(gray.release.id)} of <code>${esc(key)}</code> everyone's (recomputed against today's parent and globals).</p>` +
          Apus.diff(f.effective || "", gray.effective || ""), async (reason) => await post("promote", {reason}) || true);
        if (r) done(say(r, "Gray release promoted"));
      },
      abandon: async () => {
        const r = await Apus.confirmChange("Abandon gray release", `<p>Drop gray release #${esc(gray.release.id)} (to ${esc(targetText(gray.target))}): its clients go back to release #${esc(cur ? cur.id : "")}.</p>`,
          async (reason) => await post("abandon", {reason}) || true);
        if (r) done(say(r, "Gray release abandoned"));
      },
      rollback: async (b) => {
        const pick = Number(b.dataset.release) || null;
        const older = rels.filter((x) => !cur || x.id !== cur.id);
        const opts = older.map((x) => `<option value="${esc(x.id)}"${x.id === pick ? " selected" : ""}>#${esc(x.id)} · FV ${esc(x.fv)} · ${esc(x.kind)} · ${esc(x.author)} · ${esc(Apus.time(x.ts))}${x.reason ? " · " + esc(x.reason) : ""}</option>`).join("");
        const r = await Apus.confirmChange("Roll back", `<p>Publish an earlier release's content of <code>${esc(key)}</code> again, as a new release (current: #${esc(cur ? cur.id : "")}).</p>
          <label for="rollback-release">Release to roll back to</label><select id="rollback-release">${opts}</select>`,
        async (reason) => {
          const release = Number(Apus.$("rollback-release").value);
          if (!release) throw new Error("choose a release");
          return await post("rollback", {release, reason}) || true;
        });
        if (r) done(say(r, "Rolled back"));
      },
      compare: async (b) => {
        const id = b.dataset.release, box = root.querySelector("#config-compare");
        box.innerHTML = `<p class="muted">Loading…</p>`;
        try {
          const d = await Apus.api(`/admin/v1/config/diff?a=${encodeURIComponent(`${key}@${id}`)}&b=${encodeURIComponent(key)}`);
          box.innerHTML = card(`Release #${esc(id)} (−) against current (+), effective content${d.masked ? " (masked)" : ""}`, serverDiff(d.diff));
        } catch (e) { box.innerHTML = errBox(e); }
      },
      globals: () => editGlobals(k.project, k.env),
    });
  }

  Apus.page("config", {
    title: "Config",
    group: "release",
    render: async (el, route) => {
      const root = rootOf(el);
      if (route.arg) await fileView(root, route); else await library(root, route);
    },
  });
})();
