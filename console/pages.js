// The SREs' pages: dashboards (Overview is a dashboard file), slow SQL, exceptions, logs,
// changes, root cause and SQL. Every page reads its state from the URL.
"use strict";
(function () {
  const {esc, api, table, link} = Apus;

  // Which of the global filters each query endpoint takes.
  const DIMS = {"/api/v1/alarms": ["project", "env"], "/api/v1/changes": ["project", "env"]};
  const dimsOf = (path) => DIMS[path] || ["project", "env", "pool"];
  // A time as epoch ms, from epoch µs or RFC 3339.
  const toMs = (v) => typeof v === "number" ? v / 1000 : Date.parse(v);

  async function changeMarkers() {
    const r = await api("/api/v1/changes?" + Apus.scope({limit: 500}, ["project", "env"]));
    return r.rows.map((c) => ({
      t: toMs(c.ts),
      label: `${c.kind}: ${c.summary || ""}`.slice(0, 160),
      href: link("changes", "", {kind: c.kind}),
    }));
  }

  // Fetch one panel's data: {rows, window}.
  async function panelData(p) {
    if (p.sql) {
      if (!Apus.maySql()) throw new Error("this panel runs SQL, which needs a token that may read everything");
      const r = await Apus.post("/api/v1/sql", {sql: p.sql});
      return {rows: r.rows};
    }
    const r = await api(p.api + "?" + Apus.scope(p.params || {}, dimsOf(p.api)));
    const key = (p.options && p.options.rows) || "rows";
    return {rows: r[key] || [], window: Apus.window(r)};
  }

  function reduce(rows, y, how) {
    const v = rows.map((r) => Number(r[y]) || 0);
    if (how === "count") return rows.length;
    if (!v.length) return 0;
    if (how === "last") return v[v.length - 1];
    if (how === "max") return Math.max(...v);
    if (how === "avg") return v.reduce((a, b) => a + b, 0) / v.length;
    return v.reduce((a, b) => a + b, 0);
  }

  // Draw a panel into `host` (attached to the page).
  function draw(host, p, data, markers) {
    const o = p.options || {};
    if (p.type === "timeseries") {
      let series;
      if (p.sql) {
        const x = o.x || "ts", y = o.y || "value", s = o.series;
        series = Apus.seriesFrom(data.rows.map((r) => ({ts_us: (typeof r[x] === "number" ? r[x] : Date.parse(r[x]) * 1000), series: s ? r[s] : y, value: r[y]})));
      } else series = Apus.seriesFrom(data.rows);
      Apus.chart(host, {series, unit: o.unit, window: data.window, markers: o.markers === "changes" ? markers : [], onZoom: Apus.zoom, title: p.title});
    } else if (p.type === "bar") {
      const x = o.x || Object.keys(data.rows[0] || {})[0], y = o.y || "value";
      Apus.bars(host, data.rows.slice(0, o.limit || 30).map((r) => ({label: r[x], value: Number(r[y]) || 0, series: o.series ? r[o.series] : null})), {unit: o.unit});
    } else if (p.type === "stat") {
      host.innerHTML = `<div class="stat">${esc(Apus.fmt(reduce(data.rows, o.y || "value", o.reduce), o.unit))}</div>`;
    } else {
      host.innerHTML = table(data.rows, o.columns, {empty: o.empty, links: {
        pool: (r) => link("logs", "", {pool: r.pool}),
        route: (r) => link("release", r.route),
        rule: (r) => link("alarms", "", {rule: r.rule}),
        fingerprint: (r) => r.fingerprint_id && link("slowsql", r.fingerprint_id),
      }});
    }
  }

  // Render dashboard `d` into `el`: every panel's data is fetched in parallel; a panel
  // whose query fails shows its error, the others still draw.
  Apus.dashboard = async (el, d) => {
    const needMarkers = d.panels.some((p) => p.options && p.options.markers === "changes");
    const [markers, ...datas] = await Promise.all([
      needMarkers ? changeMarkers().catch(() => []) : [],
      ...d.panels.map((p) => panelData(p).catch((e) => ({error: e.message}))),
    ]);
    el.insertAdjacentHTML("beforeend", `<div class="panels">${d.panels.map((p, i) =>
      `<section class="panel ${p.type === "table" || (p.options && p.options.wide) ? "wide" : ""}" aria-label="${esc(p.title)}"><h3>${esc(p.title)}</h3><div id="panel-${i}"></div></section>`).join("")}</div>`);
    Apus.later(() => d.panels.forEach((p, i) => {
      const host = document.getElementById(`panel-${i}`);
      if (datas[i].error) host.innerHTML = `<p class="err">${esc(datas[i].error)}</p>`;
      else draw(host, p, datas[i], markers);
    }));
  };

  async function boardPage(el, name) {
    const d = await api("/api/v1/dashboards/" + encodeURIComponent(name));
    el.innerHTML = `<div class="toolbar"><h2>${esc(d.title)}</h2><span class="muted">${esc(d.description || "")}</span>
      <a href="${link("dashboards", name, {edit: 1})}">${Apus.mayChange() ? "Edit" : "Source"}</a></div>`;
    await Apus.dashboard(el, d);
  }

  Apus.page("overview", {title: "Overview", render: (el) => boardPage(el, "overview")});

  Apus.page("dashboards", {
    title: "Dashboards",
    async render(el, r) {
      if (r.arg && r.q.get("edit")) return editBoard(el, r.arg);
      if (r.arg) return boardPage(el, r.arg);
      const l = await api("/api/v1/dashboards");
      el.innerHTML = `<h2>Dashboards</h2><p class="muted">Files under <code>dashboards/</code> (built in) and the data dir's <code>dashboards/</code> (saved here); a saved file with a built-in's name replaces it.</p>
        ${table(l.rows, ["name", "title", "description", "panels", "builtin", "error"], {links: {name: (x) => link("dashboards", x.name), title: (x) => link("dashboards", x.name)}})}
        ${Apus.mayChange() ? `<div class="actions"><a href="${link("dashboards", "new-dashboard", {edit: 1})}">New dashboard</a></div>` : ""}`;
    },
  });

  async function editBoard(el, name) {
    let d;
    try { d = await api("/api/v1/dashboards/" + encodeURIComponent(name)); } catch (e) {
      if (e.status !== 404) throw e;
      d = {title: "New dashboard", description: "", panels: [{title: "Requests by lane", type: "timeseries", api: "/api/v1/timeseries", params: {metric: "requests", by: "tag"}, options: {markers: "changes"}}]};
    }
    delete d.name; delete d.builtin;
    el.innerHTML = `<h2>Dashboard <code>${esc(name)}</code></h2>
      <p class="muted">A dashboard is a list of panels; a panel is a query (<code>api</code> + <code>params</code>, or <code>sql</code>) and a <code>type</code>: timeseries, bar, table or stat, with <code>options</code>.</p>
      <label for="board-name">Save as</label> <input id="board-name" value="${esc(name)}" pattern="[a-z0-9_-]{1,64}">
      <label for="board-json" class="muted">JSON</label><textarea id="board-json" rows="24">${esc(JSON.stringify(d, null, 2))}</textarea>
      <p class="err" id="board-err" hidden></p>
      <div class="actions">${Apus.mayChange() ? `<button class="primary" id="board-save">Save</button>` : ""}<a href="${link("dashboards", name)}">View</a></div>`;
    const save = el.querySelector("#board-save");
    if (save) save.onclick = async () => {
      const err = document.getElementById("board-err");
      try {
        const n = document.getElementById("board-name").value.trim();
        let body;
        try { body = JSON.parse(document.getElementById("board-json").value); } catch (e) { throw new Error("JSON: " + e.message); }
        await Apus.post("/api/v1/dashboards/" + encodeURIComponent(n), body, "PUT");
        Apus.toast(`Saved dashboard ${n}`);
        Apus.go("dashboards", n);
      } catch (e) { err.hidden = false; err.textContent = e.message; }
    };
  }

  // ---- slow SQL ---------------------------------------------------------------------
  Apus.page("slowsql", {
    title: "Slow SQL",
    async render(el, r) {
      if (r.arg) return fingerprint(el, r);
      const order = r.q.get("order") || "total";
      const db = r.q.get("db") || "";
      const t = await api("/api/v1/slow-sql/top?" + Apus.scope({limit: 100, order, db}));
      el.innerHTML = `<div class="toolbar"><h2>Slow SQL TOP 100</h2>
        <label>order by <select id="ss-order">${["total", "avg", "max", "calls", "p95"].map((o) => `<option ${o === order ? "selected" : ""}>${o}</option>`).join("")}</select></label>
        <span class="muted">${t.count} fingerprints, ${t.took_ms.toFixed(0)} ms</span></div>
        ${table(t.rows, ["rank", "fingerprint", "calls", "total_s", "avg_s", "min_s", "max_s", "p95_s", "rows_examined_avg", "db", "last_seen", "sample"], {
          links: {fingerprint: (x) => link("slowsql", x.fingerprint_id), db: (x) => link("slowsql", "", {db: x.db})},
          units: {total_s: "s", avg_s: "s", min_s: "s", max_s: "s", p95_s: "s"},
        })}`;
      el.querySelector("#ss-order").onchange = (e) => Apus.set({order: e.target.value});
    },
  });

  async function fingerprint(el, r) {
    const id = r.arg;
    const sc = (extra) => Apus.scope(Object.assign({source: "slow_sql", fingerprint_id: id, by: "none"}, extra));
    const [calls, lat, p95, top] = await Promise.all([
      api("/api/v1/timeseries?" + sc({metric: "calls"})),
      api("/api/v1/timeseries?" + sc({metric: "avg_s"})),
      api("/api/v1/timeseries?" + sc({metric: "p95_s"})),
      api("/api/v1/slow-sql/top?" + Apus.scope({limit: 1000})),
    ]);
    const row = top.rows.find((x) => x.fingerprint_id === id) || {};
    el.innerHTML = `<p><a href="${link("slowsql")}">← Slow SQL TOP 100</a></p><h2>Fingerprint <code>${esc(id)}</code></h2>
      <pre>${esc(row.fingerprint || "(no calls in this range)")}</pre>
      <dl class="kv"><dt>calls</dt><dd>${esc(Apus.fmt(row.calls))}</dd><dt>total</dt><dd>${esc(Apus.fmt(row.total_s, "s"))}</dd>
      <dt>avg / p95 / max</dt><dd>${esc(Apus.fmt(row.avg_s, "s"))} / ${esc(Apus.fmt(row.p95_s, "s"))} / ${esc(Apus.fmt(row.max_s, "s"))}</dd>
      <dt>db</dt><dd>${esc(row.db)}</dd><dt>first / last seen</dt><dd>${esc(Apus.time(row.first_seen))} / ${esc(Apus.time(row.last_seen))}</dd></dl>
      <h3>Slowest sample</h3><pre>${esc(row.sample || "")}</pre>
      <div class="grid2"><section class="panel"><h3>Calls</h3><div id="fp-calls"></div></section>
      <section class="panel"><h3>Latency (avg and p95, s)</h3><div id="fp-lat"></div></section></div>`;
    Apus.later(() => {
      Apus.chart(document.getElementById("fp-calls"), {series: Apus.seriesFrom(calls.rows), window: Apus.window(calls), onZoom: Apus.zoom, bars: true, step: stepOf(calls.rows)});
      Apus.chart(document.getElementById("fp-lat"), {series: [...Apus.seriesFrom(lat.rows), ...Apus.seriesFrom(p95.rows)], unit: "s", window: Apus.window(lat), onZoom: Apus.zoom});
    });
  }
  const stepOf = (rows) => rows.length > 1 ? Math.abs(rows[1].ts_us - rows[0].ts_us) / 1000 || 60000 : 60000;

  // ---- exceptions -------------------------------------------------------------------
  Apus.page("exceptions", {
    title: "Exceptions",
    async render(el, r) {
      if (r.arg) return template(el, r);
      const lines = r.q.get("lines") || "errors";
      const t = await api("/api/v1/exceptions/top?" + Apus.scope({limit: 200, lines}));
      const pools = [...new Set(t.rows.map((x) => x.pool))];
      el.innerHTML = `<div class="toolbar"><h2>Exceptions by pool</h2>
        <label>lines <select id="ex-lines"><option value="errors" ${lines === "errors" ? "selected" : ""}>errors and exceptions</option><option value="all" ${lines === "all" ? "selected" : ""}>all</option></select></label>
        <span class="muted">against the previous window of the same length; <span class="badge new">new</span> never seen before, <span class="badge surge">surge</span> well above its usual rate</span></div>
        ${pools.length ? pools.map((p) => `<h3>Pool <a href="${link("exceptions", "", {pool: p})}">${esc(p || "(none)")}</a></h3>` + table(t.rows.filter((x) => x.pool === p), ["exception", "template", "count", "previous", "change", "flags", "last_seen", "sample"], {
          links: {template: (x) => link("exceptions", x.template_id, {pool: x.pool})},
          cell: {flags: (_, x) => (x.new ? Apus.badge("new") : "") + " " + (x.surge ? Apus.badge("surge") : "")},
        })).join("") : `<p class="muted">No error lines in this range.</p>`}`;
      el.querySelector("#ex-lines").onchange = (e) => Apus.set({lines: e.target.value});
    },
  });

  async function template(el, r) {
    const id = r.arg;
    const [ts, hits] = await Promise.all([
      api("/api/v1/timeseries?" + Apus.scope({source: "logs", metric: "lines", template_id: id, by: "pool"})),
      api("/api/v1/logs/search?" + Apus.scope({template_id: id, limit: 20})),
    ]);
    const first = hits.rows[0] || {};
    el.innerHTML = `<p><a href="${link("exceptions")}">← Exceptions</a></p><h2>Template <code>${esc(id)}</code></h2>
      <p>${first.exception ? `<b>${esc(first.exception)}</b> ` : ""}<span class="muted">${hits.total} lines in this range</span>
      · <a href="${link("logs", "", {template_id: id})}">search these lines</a></p>
      <section class="panel"><h3>Lines per bucket, by pool</h3><div id="tpl-chart"></div></section>
      <h3>Latest samples</h3>${logLines(hits.rows)}`;
    Apus.later(() => Apus.chart(document.getElementById("tpl-chart"), {series: Apus.seriesFrom(ts.rows), window: Apus.window(ts), onZoom: Apus.zoom}));
  }

  // Log lines, each linked to its request and template.
  function logLines(rows) {
    if (!rows.length) return `<p class="muted">No lines.</p>`;
    return rows.map((h) => `<div class="logline"><span class="meta">${esc(Apus.time(h.ts))}</span>
      <span class="lvl-${esc(h.level)}">${esc(h.level || "")}</span> <span class="meta">${esc(h.pool || "")}${h.tag && h.tag !== "stable" ? ` <span class="gray">${esc(h.tag)}</span>` : ""}${h.tenant ? ` tenant=${esc(h.tenant)}` : ""}</span>
      ${esc(h.message)}${h.exception ? ` <b>${esc(h.exception)}</b>` : ""}
      ${h.request_id ? ` <a class="meta" href="${link("logs", "", {request_id: h.request_id, q: "", offset: ""})}" title="every line of this request">req ${esc(h.request_id)}</a>` : ""}
      ${h.template_id ? ` <a class="meta" href="${link("exceptions", h.template_id)}" title="this line's template">tpl ${esc(h.template_id.slice(0, 8))}</a>` : ""}</div>`).join("");
  }

  // ---- logs -------------------------------------------------------------------------
  const LOG_FILTERS = ["level", "tenant", "tag", "request_id", "template_id", "host"];
  Apus.page("logs", {
    title: "Logs",
    async render(el, r) {
      const q = r.q.get("q") || "", offset = Number(r.q.get("offset") || 0), limit = 100;
      const f = {};
      for (const k of LOG_FILTERS) if (r.q.get(k)) f[k] = r.q.get(k);
      const [hits, hist] = await Promise.all([
        api("/api/v1/logs/search?" + Apus.scope(Object.assign({q, limit, offset}, f))),
        api("/api/v1/logs/histogram?" + Apus.scope(Object.assign({q}, f))),
      ]);
      el.innerHTML = `<form class="toolbar" id="logq" role="search"><label for="q" class="muted">Query</label>
        <input type="search" id="q" name="q" value="${esc(q)}" placeholder='e.g. timeout AND exception:SQLException'>
        <label>level <select id="level"><option value="">any</option>${["ERROR", "WARN", "INFO", "DEBUG"].map((l) => `<option ${f.level === l ? "selected" : ""}>${l}</option>`).join("")}</select></label>
        <label>tenant <input id="tenant" size="10" value="${esc(f.tenant || "")}"></label>
        <button class="primary">Search</button>
        <span class="muted">${hits.total.toLocaleString()} matches · ${hits.took_ms.toFixed(0)} ms</span></form>
        ${Object.keys(f).filter((k) => !["level", "tenant"].includes(k)).map((k) => `<span class="badge">${esc(k)}=${esc(f[k])} <a href="${link("logs", "", {[k]: ""})}" aria-label="remove filter ${esc(k)}">×</a></span>`).join(" ")}
        <section class="panel"><h3>Matches over time</h3><div id="log-hist"></div></section>
        <div id="log-lines">${logLines(hits.rows)}</div>
        <div class="actions">${offset > 0 ? `<a href="${link("logs", "", {offset: Math.max(0, offset - limit) || ""})}">← newer</a>` : ""}
        <span class="muted">${hits.total ? `${offset + 1}–${offset + hits.rows.length} of ${hits.total.toLocaleString()}` : ""}</span>
        ${hits.next_offset != null ? `<a href="${link("logs", "", {offset: hits.next_offset})}">older →</a>` : ""}</div>`;
      el.querySelector("#logq").onsubmit = (ev) => {
        ev.preventDefault();
        Apus.set({q: document.getElementById("q").value, level: document.getElementById("level").value, tenant: document.getElementById("tenant").value.trim(), offset: ""});
      };
      const pts = hist.counts.map((c, i) => [(hist.from_us + i * hist.step_us) / 1000, c]);
      Apus.later(() => Apus.chart(document.getElementById("log-hist"), {series: [{name: "matches", points: pts}], window: Apus.window(hist), bars: true, step: hist.step_us / 1000, height: 120, onZoom: Apus.zoom}));
    },
  });

  // ---- changes ----------------------------------------------------------------------
  // A change's summary holds its diff as `; `-separated parts (`+rule …`, `-rule …`).
  const diffOf = (s) => `<pre class="diff">${String(s || "").split("; ").map((l) => {
    const c = /^\s*\+/.test(l) ? "add" : /^\s*-/.test(l) ? "del" : "same";
    return `<span class="${c}">${esc(l)}</span>`;
  }).join("")}</pre>`;

  Apus.page("changes", {
    title: "Changes",
    async render(el, r) {
      const kind = r.q.get("kind") || "";
      const [c, req] = await Promise.all([
        api("/api/v1/changes?" + Apus.scope({limit: 1000, kind}, ["project", "env"])),
        api("/api/v1/timeseries?" + Apus.scope({metric: "requests", by: "tag"})),
      ]);
      const kinds = [...new Set(c.rows.map((x) => x.kind))].sort();
      el.innerHTML = `<div class="toolbar"><h2>Change timeline</h2><label>kind <select id="ch-kind"><option value="">any</option>${[...new Set([...kinds, kind].filter(Boolean))].map((k) => `<option ${k === kind ? "selected" : ""}>${esc(k)}</option>`).join("")}</select></label>
        <span class="muted">${c.rows.length} changes; markers on the traffic below</span></div>
        <section class="panel"><h3>Requests by lane, with the changes</h3><div id="ch-chart"></div></section>
        <h3>Changes, newest first</h3>
        <div id="ch-list">${c.rows.length ? c.rows.map((x) => `<details class="card"><summary><b>${esc(Apus.time(toMs(x.ts)))}</b> ${Apus.badge(x.kind, x.kind.includes("rollback") ? "bad" : "")} ${esc(x.actor)} · ${esc(x.project)}/${esc(x.env)} · ${esc(x.scope)} · v${esc(x.from_version)} → v${esc(x.to_version)}</summary>
          ${diffOf(x.summary)}${x.touched ? `<p class="muted">touched: ${esc(x.touched)}</p>` : ""}</details>`).join("") : `<p class="muted">No changes in this range.</p>`}</div>`;
      el.querySelector("#ch-kind").onchange = (e) => Apus.set({kind: e.target.value});
      const markers = c.rows.map((x) => ({t: toMs(x.ts), label: `${x.kind}: ${x.summary}`.slice(0, 160)}));
      Apus.later(() => Apus.chart(document.getElementById("ch-chart"), {series: Apus.seriesFrom(req.rows), window: Apus.window(req), markers, onZoom: Apus.zoom, height: 180}));
    },
  });

  // ---- root cause -------------------------------------------------------------------
  function evidenceLinks(s) {
    switch (s.kind) {
      case "change": return `<a href="${link("changes", "", {kind: s.change_kind})}">the change</a>`;
      case "template": return `<a href="${link("exceptions", s.template_id, {pool: s.pool})}">the template</a> · <a href="${link("logs", "", {template_id: s.template_id})}">its lines</a>`;
      case "slow_sql": return `<a href="${link("slowsql", s.fingerprint_id)}">the fingerprint</a>`;
      case "dimension": return (s.values || []).map((v) => `<a href="${link("logs", "", LOG_FILTERS.includes(s.dimension) || s.dimension === "pool" ? {[s.dimension]: v.value} : {})}">${esc(s.dimension)}=${esc(v.value)}</a>`).join(" · ");
      default: return "";
    }
  }
  Apus.page("rootcause", {
    title: "Root cause",
    async render(el) {
      const r = await api("/api/v1/rootcause?" + Apus.scope({}, ["project", "env", "pool"]));
      el.innerHTML = `<h2>Root cause</h2>
        <p>Onset: <b>${esc(r.onset ? Apus.time(r.onset) : "none detected")}</b>; ${esc(r.metric)} ${esc(Apus.fmt(r.baseline.rate, "percent"))} (baseline) → <span class="bad">${esc(Apus.fmt(r.current.rate, "percent"))}</span>
        <span class="muted">(${esc(Apus.fmt(r.current.bad))} of ${esc(Apus.fmt(r.current.requests))} requests; baseline ${esc(Apus.fmt(r.baseline.bad))} of ${esc(Apus.fmt(r.baseline.requests))})</span></p>
        <h3>Suspects</h3>
        ${r.rows.length ? r.rows.map((s) => `<div class="card suspect"><span class="score muted">score ${esc(Apus.fmt(s.score))}</span>
          <b>#${s.rank} ${esc(s.kind.replace("_", " "))}</b> ${s.change_kind ? Apus.badge(s.change_kind) : ""} ${s.new ? Apus.badge("new") : ""}
          <div>${esc(s.evidence)}</div>
          ${s.summary ? `<div class="muted">${esc(s.summary)}</div>` : ""}
          ${s.template || s.fingerprint ? `<pre>${esc(s.exception ? s.exception + ": " : "")}${esc(s.template || s.fingerprint)}</pre>` : ""}
          <div class="muted">evidence: ${evidenceLinks(s)}</div></div>`).join("") : `<p class="muted">No suspects: nothing changed enough in this range.</p>`}
        <h3>Layers (route → pool → upstream)</h3>
        ${table(r.layers, ["route", "pool", "upstream", "requests", "rate", "baseline_rate", "p99_ms", "baseline_p99_ms"], {
          units: {rate: "percent", baseline_rate: "percent"},
          links: {pool: (x) => link("logs", "", {pool: x.pool}), route: (x) => link("release", x.route)},
        })}`;
    },
  });

  // ---- SQL --------------------------------------------------------------------------
  Apus.page("sql", {
    title: "SQL",
    async render(el, r) {
      const sql = r.q.get("sql") || "SELECT pool, tag, count(*) AS requests, avg(latency_us) / 1000 AS avg_ms\nFROM access_log\nGROUP BY pool, tag\nORDER BY requests DESC";
      el.innerHTML = `<h2>SQL</h2><label for="sql-text" class="muted">Read-only SQL over access_log, logs, slow_sql, metrics, changes, alarms (${Apus.maySql() ? "your token may run it" : "needs a token that may read everything"})</label>
        <textarea id="sql-text" rows="7">${esc(sql)}</textarea>
        <div class="actions"><button class="primary" id="sql-run">Run</button><span id="sql-info" class="muted"></span></div>
        <div id="sql-chart"></div><div id="sql-out"></div>`;
      el.querySelector("#sql-run").onclick = () => Apus.set({sql: document.getElementById("sql-text").value});
      if (!r.q.get("sql")) return;
      try {
        const res = await Apus.post("/api/v1/sql", {sql});
        el.querySelector("#sql-info").textContent = `${res.count} rows${res.truncated ? " (truncated)" : ""}, ${res.took_ms.toFixed(1)} ms`;
        el.querySelector("#sql-out").innerHTML = table(res.rows);
        Apus.later(() => sqlChart(document.getElementById("sql-chart"), res.rows));
      } catch (e) {
        el.querySelector("#sql-out").innerHTML = `<p class="err" role="alert">${esc(e.message)}</p>`;
      }
    },
  });

  // A chart of a result: a time column and numbers → time series; a text and a number →
  // bars; otherwise none.
  function sqlChart(host, rows) {
    if (!rows.length) return;
    const cols = Object.keys(rows[0]);
    const num = cols.filter((c) => typeof rows[0][c] === "number");
    const time = cols.find((c) => typeof rows[0][c] === "string" && /^\d{4}-\d\d-\d\dT/.test(rows[0][c]));
    const text = cols.find((c) => typeof rows[0][c] === "string" && c !== time);
    if (time && num.length) {
      const series = num.map((c) => ({name: c, points: rows.map((x) => [Date.parse(x[time]), x[c]]).sort((a, b) => a[0] - b[0])}));
      Apus.chart(host, {series});
    } else if (text && num.length) {
      Apus.bars(host, rows.slice(0, 30).map((x) => ({label: x[text], value: x[num[0]]})));
    }
  }
})();
