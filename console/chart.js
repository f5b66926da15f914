// Charts, hand-written in SVG (no library: a time-series chart with a time axis, hover
// values, drag-to-zoom and change markers is a few hundred lines, and the console stays
// one request per file with no build step).
//
//   Apus.chart(el, {series: [{name, points: [[ms, value], …]}], unit, window: [fromMs, toMs],
//                   markers: [{t: ms, label, href}], height, onZoom(fromMs, toMs), bars})
//   Apus.seriesFrom(rows)   timeseries API rows ({ts_us, series, value}) → series
//   Apus.bars(el, [{label, value, series, href}], {unit})   a horizontal bar chart
"use strict";
(function () {
  const esc = Apus.esc;
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#c2410c", "#047857", "#b91c1c", "#7c3aed", "#0e7490", "#a16207", "#be185d"];
  // Stable lane colors: stable is blue, gray lanes warm.
  const colorOf = (name, i) => name === "stable" ? "#2563eb" : /^gray/.test(name) ? "#c2410c" : COLORS[i % COLORS.length];

  Apus.seriesFrom = (rows) => {
    const by = new Map();
    for (const r of rows || []) {
      const k = String(r.series ?? "");
      if (!by.has(k)) by.set(k, []);
      by.get(k).push([r.ts_us / 1000, typeof r.value === "number" ? r.value : Number(r.value) || 0]);
    }
    return [...by.entries()].sort((a, b) => a[0] === "stable" ? -1 : b[0] === "stable" ? 1 : a[0].localeCompare(b[0]))
      .map(([name, points]) => ({name, points: points.sort((a, b) => a[0] - b[0])}));
  };

  function niceStep(span, target) {
    const raw = span / Math.max(1, target), mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);
  function timeTicks(t0, t1, target) {
    const step = TIME_STEPS.find((s) => (t1 - t0) / s <= target) || 604800000;
    const off = new Date(t0).getTimezoneOffset() * 60000;
    const out = [];
    for (let t = Math.ceil((t0 - off) / step) * step + off; t <= t1; t += step) out.push(t);
    return {ticks: out, step};
  }
  const p2 = (n) => String(n).padStart(2, "0");
  function timeLabel(t, step) {
    const d = new Date(t);
    if (step >= 86400000) return `${d.getMonth() + 1}/${d.getDate()}`;
    if (step < 60000) return `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
    return `${p2(d.getHours())}:${p2(d.getMinutes())}`;
  }

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }

  Apus.chart = (host, o) => {
    const series = (o.series || []).filter((s) => s.points.length);
    host.classList.add("chart");
    host.innerHTML = "";
    if (!series.length) { host.innerHTML = `<p class="muted">No data in this range.</p>`; return; }
    const W = Math.max(320, host.clientWidth || host.parentNode && host.parentNode.clientWidth || 800), H = o.height || 220;
    const L = 56, R = 12, T = 10, B = 24;
    let x0, x1;
    if (o.window) [x0, x1] = o.window; else {
      x0 = Math.min(...series.map((s) => s.points[0][0]));
      x1 = Math.max(...series.map((s) => s.points[s.points.length - 1][0]));
    }
    if (x1 <= x0) x1 = x0 + 1000;
    const ymax0 = Math.max(...series.flatMap((s) => s.points.map((p) => p[1])), 0);
    const ystep = niceStep(ymax0 || 1, 4), ymax = Math.max(ystep, Math.ceil(ymax0 / ystep) * ystep);
    const X = (t) => L + (t - x0) / (x1 - x0) * (W - L - R);
    const Y = (v) => T + (1 - v / ymax) * (H - T - B);
    const svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": o.title || "time series chart"});
    // Grid and y axis.
    for (let v = 0; v <= ymax + 1e-9; v += ystep) {
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: "grid"}));
      svg.appendChild(el("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end", class: "axis"}, Apus.fmt(v, o.unit === "percent" ? "percent" : undefined)));
    }
    // Time axis.
    const {ticks, step} = timeTicks(x0, x1, Math.max(2, Math.floor((W - L - R) / 90)));
    for (const t of ticks) {
      svg.appendChild(el("line", {x1: X(t), x2: X(t), y1: H - B, y2: H - B + 4, class: "tick"}));
      svg.appendChild(el("text", {x: X(t), y: H - 6, "text-anchor": "middle", class: "axis"}, timeLabel(t, step)));
    }
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "base"}));
    // Markers (changes) under the lines.
    for (const m of o.markers || []) {
      if (m.t < x0 || m.t > x1) continue;
      const g = el("g", {class: "marker"});
      g.appendChild(el("line", {x1: X(m.t), x2: X(m.t), y1: T, y2: H - B}));
      g.appendChild(el("path", {d: `M${X(m.t) - 5},${T} L${X(m.t) + 5},${T} L${X(m.t)},${T + 7} Z`}));
      g.appendChild(el("title", {}, `${Apus.time(m.t)} ${m.label}`));
      if (m.href) {
        const a = el("a", {href: m.href});
        a.appendChild(g);
        svg.appendChild(a);
      } else svg.appendChild(g);
    }
    // Lines (or bars).
    series.forEach((s, i) => {
      const c = colorOf(s.name, i);
      if (o.bars) {
        const bw = Math.max(1, (X(x0 + (o.step || 60000)) - X(x0)) * 0.85);
        for (const [t, v] of s.points) svg.appendChild(el("rect", {x: X(t), y: Y(v), width: bw, height: Math.max(0, Y(0) - Y(v)), fill: c}));
      } else {
        const d = s.points.map((p, k) => `${k ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
        svg.appendChild(el("path", {d, fill: "none", stroke: c, "stroke-width": 2, class: "line"}));
        if (s.points.length === 1) svg.appendChild(el("circle", {cx: X(s.points[0][0]), cy: Y(s.points[0][1]), r: 3, fill: c}));
      }
    });
    // Hover and drag-to-zoom.
    const cross = el("line", {y1: T, y2: H - B, class: "cross", visibility: "hidden"});
    const sel = el("rect", {y: T, height: H - T - B, class: "sel", visibility: "hidden"});
    svg.appendChild(cross);
    svg.appendChild(sel);
    const overlay = el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, class: "overlay"});
    svg.appendChild(overlay);
    host.appendChild(svg);
    // The first chart with data drawn since the page loaded: what "time to first chart"
    // measures (benches/console_first_chart.sh reads it).
    if (!performance.getEntriesByName("apus-first-chart").length) performance.mark("apus-first-chart");
    const legend = document.createElement("div");
    legend.className = "legend";
    legend.innerHTML = series.map((s, i) => `<span><i style="background:${colorOf(s.name, i)}"></i>${esc(s.name)}</span>`).join("");
    host.appendChild(legend);
    const tip = document.createElement("div");
    tip.className = "tip";
    tip.hidden = true;
    host.appendChild(tip);
    const tOf = (ev) => {
      const r = svg.getBoundingClientRect();
      const px = (ev.clientX - r.left) * (W / r.width);
      return x0 + (Math.min(Math.max(px, L), W - R) - L) / (W - L - R) * (x1 - x0);
    };
    let drag = null;
    overlay.addEventListener("mousemove", (ev) => {
      const t = tOf(ev);
      // The nearest bucket of any series.
      let best = null;
      for (const s of series) for (const p of s.points) if (!best || Math.abs(p[0] - t) < Math.abs(best - t)) best = p[0];
      cross.setAttribute("x1", X(best)); cross.setAttribute("x2", X(best)); cross.setAttribute("visibility", "visible");
      const vals = series.map((s, i) => {
        const p = s.points.find((q) => q[0] === best);
        return p ? `<div><i style="background:${colorOf(s.name, i)}"></i>${esc(s.name)}: <b>${esc(Apus.fmt(p[1], o.unit))}</b></div>` : "";
      }).join("");
      const marks = (o.markers || []).filter((m) => Math.abs(X(m.t) - X(t)) < 6).map((m) => `<div class="mk">▼ ${esc(m.label)}</div>`).join("");
      tip.innerHTML = `<div class="muted">${esc(Apus.time(best))}</div>${vals}${marks}`;
      tip.hidden = false;
      const px = X(best) / W * svg.getBoundingClientRect().width;
      tip.style.left = Math.min(px + 12, host.clientWidth - 200) + "px";
      if (drag != null) {
        const a = Math.min(X(drag), X(t)), b = Math.max(X(drag), X(t));
        sel.setAttribute("x", a); sel.setAttribute("width", b - a); sel.setAttribute("visibility", "visible");
      }
    });
    overlay.addEventListener("mouseleave", () => { tip.hidden = true; cross.setAttribute("visibility", "hidden"); });
    overlay.addEventListener("mousedown", (ev) => { drag = tOf(ev); ev.preventDefault(); });
    overlay.addEventListener("mouseup", (ev) => {
      if (drag == null) return;
      const a = Math.min(drag, tOf(ev)), b = Math.max(drag, tOf(ev));
      drag = null;
      sel.setAttribute("visibility", "hidden");
      if (o.onZoom && X(b) - X(a) > 4) o.onZoom(a, b);
    });
    if (o.onZoom) host.title = "Drag across the chart to zoom in";
  };

  Apus.bars = (host, items, o) => {
    o = o || {};
    host.classList.add("chart");
    if (!items.length) { host.innerHTML = `<p class="muted">No data in this range.</p>`; return; }
    const max = Math.max(...items.map((i) => i.value), 1e-12);
    const names = [...new Set(items.map((i) => i.series).filter(Boolean))];
    host.innerHTML = `<div class="bars">${items.map((i) => {
      const c = i.series ? colorOf(i.series, names.indexOf(i.series)) : "#2563eb";
      const label = esc(String(i.label).slice(0, 80)) + (i.series ? ` <span class="muted">${esc(i.series)}</span>` : "");
      return `<div class="barrow"><span class="barlabel" title="${esc(i.label)}">${i.href ? `<a href="${esc(i.href)}">${label}</a>` : label}</span>
        <span class="bartrack"><span class="barfill" style="width:${(i.value / max * 100).toFixed(1)}%;background:${c}"></span></span>
        <span class="n">${esc(Apus.fmt(i.value, o.unit))}</span></div>`;
    }).join("")}</div>`;
  };
})();
