//! Step 1, the onset, and what ClickHouse's per-minute views answer for root cause (whole
//! minutes from a view, raw rows at the edges): from the lane view the onset series, the
//! span's first minute and the tag counts of both periods; from the tenant, layers and
//! slow-SQL views the tenant counts, the layers and the fingerprints of both periods.

use apus_schema::Table;
use apus_store::read::dialect::Dialect;
use apus_store::read::json::num;

use super::{Setup, Window};
use crate::engine::Engine;
use crate::params::Params;
use crate::rollup::{self, ChView};
use crate::rootcause::{onset, Bucket};
use crate::QueryError;

/// Requests and 5xx as the views' states over raw rows (the tenant views' whole
/// definition, and the first columns of every access-log view).
const COUNT_STATES: &str = apus_store::clickhouse::TENANT_STATES;

/// ClickHouse with the error rate: the per-minute lane view answers what needs only its
/// keys (the onset series, the span's extent, the tag counts), with raw rows for the
/// partial minutes at the edges; `None` elsewhere (the slow-request share needs each
/// request's latency against `slow_ms`, which the view does not keep).
pub(super) fn lane_view(e: &Engine, s: &Setup) -> Option<ChView> {
    (e.dialect() == Dialect::ClickHouse && e.rollups() && s.metric == "error_rate")
        .then_some(ChView::ACCESS_MINUTE)
}

/// The lane view's rows of `p`'s window as a subquery of `cols` (view columns, computed
/// over raw rows at the edges by `raw`, grouped by `group`), when the view can answer it.
fn lane_source(
    e: &Engine,
    view: ChView,
    p: &Params,
    cols: &str,
    raw: &str,
    group: &str,
) -> Option<String> {
    view_source(e, view, Table::AccessLog, p, (cols, raw, group), "")
}

/// [`lane_source`] for any view of `t`, of the rows meeting `filter` (SQL over the view's
/// keys, or empty); `q` is (view columns, their states over raw rows, raw grouping).
fn view_source(
    e: &Engine,
    view: ChView,
    t: Table,
    p: &Params,
    q: (&str, &str, &str),
    filter: &str,
) -> Option<String> {
    let split = view.split(p, &[])?;
    Some(rollup::ch_view_source_where(
        |t| e.table(t),
        t,
        view,
        p,
        &split,
        q.0,
        q.1,
        q.2,
        filter,
    ))
}

/// Raw rows' states of `p`'s window (`q` as for [`view_source`]) meeting `filter`.
fn raw_states(e: &Engine, t: Table, p: &Params, q: (&str, &str, &str), filter: &str) -> String {
    let (raw, group) = (q.1, q.2);
    let mut cond = p.conditions(Dialect::ClickHouse, &[]);
    if !filter.is_empty() {
        cond = format!("({cond}) AND {filter}");
    }
    format!(
        "(SELECT {raw} FROM {} WHERE {cond} GROUP BY {group})",
        e.table(t.name()),
    )
}

/// `p`'s window as `fine`'s states (whole minutes, raw edges), its whole hours from
/// `coarse` instead (an hourly view with the same state columns) when it has hours and
/// the filtered keys: a span of hours merges a row per hour and key, not per minute.
fn hours_then_minutes(
    e: &Engine,
    (coarse, fine, t): (Option<ChView>, ChView, Table),
    p: &Params,
    q: (&str, &str, &str),
    filter: &str,
) -> Option<String> {
    let Some((c, hours)) = coarse.and_then(|c| Some((c, c.split(p, &[])?))) else {
        return view_source(e, fine, t, p, q, filter);
    };
    let whole = rollup::Split {
        full: hours.full,
        edges: Vec::new(),
    };
    let mut parts = vec![rollup::ch_view_source_where(
        |x| e.table(x),
        t,
        c,
        p,
        &whole,
        q.0,
        q.1,
        q.2,
        filter,
    )];
    for (a, b) in hours.edges {
        let edge = p.with_range(a, b);
        parts.push(
            view_source(e, fine, t, &edge, q, filter)
                .unwrap_or_else(|| raw_states(e, t, &edge, q, filter)),
        );
    }
    let parts: Vec<String> = parts.iter().map(|x| format!("SELECT * FROM {x}")).collect();
    Some(format!("({})", parts.join(" UNION ALL ")))
}

/// Both periods of the span `sp` (the baseline `[base_from, start)`, the current period
/// `[start, to)`) as subqueries of `view`'s states (`q` as for [`view_source`]; whole
/// hours from `coarse` if given, see [`hours_then_minutes`]), of the rows meeting
/// `filter`, when the views answer at least one; a period they cannot answer (under a
/// minute) is raw rows' states.
fn periods(
    e: &Engine,
    views: (Option<ChView>, ChView, Table),
    sp: &Params,
    start: i64,
    q: (&str, &str, &str),
    filter: &str,
) -> Option<(String, String)> {
    let (base, cur) = (
        sp.with_range(sp.from_us, start),
        sp.with_range(start, sp.to_us),
    );
    let (b, c) = (
        hours_then_minutes(e, views, &base, q, filter),
        hours_then_minutes(e, views, &cur, q, filter),
    );
    if b.is_none() && c.is_none() {
        return None;
    }
    let t = views.2;
    Some((
        b.unwrap_or_else(|| raw_states(e, t, &base, q, filter)),
        c.unwrap_or_else(|| raw_states(e, t, &cur, q, filter)),
    ))
}

/// The onset series' bucket width for a span of `span_us`: 120 buckets, at least a second,
/// in whole minutes from a minute up (so the lane view's minutes fall in whole buckets,
/// and both stores bucket alike).
fn onset_step(span_us: i64) -> i64 {
    let step = (span_us / 120).max(1_000_000);
    if step >= 60_000_000 {
        (step + 59_999_999) / 60_000_000 * 60_000_000
    } else {
        step
    }
}

/// Step 1: the onset, in buckets over the part of the span that has data (a default "last
/// hour" over a service that started a minute ago must still get fine buckets).
pub(super) async fn find_onset(e: &Engine, p: &Params, s: &Setup) -> Result<Window, QueryError> {
    let d = e.dialect();
    let t_access = e.table("access_log");
    let view = lane_view(e, s);
    let minute = "toStartOfMinute(ts) AS minute";
    // The first minute with data (both stores floor it to the minute).
    let extent_sql = match view.and_then(|v| lane_source(e, v, &s.span, "minute", minute, "minute"))
    {
        Some(src) => format!("SELECT toInt64(min(minute)) * 1000000 AS lo FROM {src}"),
        None => format!(
            "SELECT {lo} AS lo FROM {t_access} WHERE {}",
            s.span.conditions(d, &[]),
            lo = match d {
                Dialect::ClickHouse => format!("intDiv(min({}), 60000000) * 60000000", d.us()),
                Dialect::DataFusion => format!("(min({}) / 60000000) * 60000000", d.us()),
            }
        ),
    };
    let extent = e.rows(&extent_sql).await?;
    let data_from = extent
        .first()
        .and_then(|r| r.get("lo"))
        .and_then(|v| v.as_i64())
        .unwrap_or(s.base_from)
        .max(s.base_from);
    let step_us = onset_step(p.to_us - data_from);
    let from_view = view.filter(|_| step_us % 60_000_000 == 0).and_then(|v| {
        lane_source(
            e,
            v,
            &s.span,
            "minute, requests, errors",
            &format!("{minute}, {COUNT_STATES}"),
            "minute",
        )
    });
    let series_sql = match from_view {
        Some(src) => format!(
            "SELECT intDiv(toInt64(minute) * 1000000, {step_us}) * {step_us} AS b, \
             sum(n) AS total, sum(e) AS bad FROM (SELECT minute, countMerge(requests) AS n, \
             countIfMerge(errors) AS e FROM {src} GROUP BY minute) GROUP BY b ORDER BY b"
        ),
        None => format!(
            "SELECT {b} AS b, count(*) AS total, \
             sum({bad}) AS bad FROM {t_access} WHERE {} GROUP BY b ORDER BY b",
            s.span.conditions(d, &[]),
            b = d.bucket(step_us),
            bad = s.bad,
        ),
    };
    let series = e.rows(&series_sql).await?;
    let buckets: Vec<Bucket> = series
        .iter()
        .map(|r| Bucket {
            ts: num(r, "b") as i64,
            total: num(r, "total"),
            bad: num(r, "bad"),
        })
        .collect();
    let detected = onset(&buckets);
    let start = detected.filter(|t| *t > s.base_from).unwrap_or(p.from_us);
    Ok(Window {
        detected,
        start,
        cur: d.since(start),
        step_us,
    })
}

/// The counts of `dim` (tag or tenant) in both periods from the lane or the tenant view
/// (each period its own whole minutes and raw edges), when one can answer them.
pub(super) fn dim_counts_from_view(e: &Engine, s: &Setup, w: &Window, dim: &str) -> Option<String> {
    lane_view(e, s)?;
    let (hours, view) = match dim {
        "tag" => (None, ChView::ACCESS_MINUTE),
        "tenant" => (Some(ChView::ACCESS_TENANTS_HOUR), ChView::ACCESS_TENANTS),
        _ => return None,
    };
    let raw = format!("{dim}, {COUNT_STATES}");
    let cols = format!("{dim}, requests, errors");
    let (base, cur) = periods(
        e,
        (hours, view, Table::AccessLog),
        &s.span,
        w.start,
        (&cols, &raw, dim),
        "",
    )?;
    Some(format!(
        "SELECT value, sum(bt) AS bt, sum(bb) AS bb, sum(ct) AS ct, sum(cb) AS cb \
         FROM {} GROUP BY value",
        period_counts(&format!("{dim} AS value"), "value", &base, &cur)
    ))
}

/// Requests and 5xx of the baseline (`bt`, `bb`) and the current period (`ct`, `cb`) per
/// `group` (selected as `keys`), one row per period and group, from two sources of count
/// states: a subquery for the caller to sum per group.
fn period_counts(keys: &str, group: &str, base: &str, cur: &str) -> String {
    format!(
        "(SELECT {keys}, countMerge(requests) AS bt, countIfMerge(errors) AS bb, \
         toUInt64(0) AS ct, toUInt64(0) AS cb FROM {base} GROUP BY {group} \
         UNION ALL \
         SELECT {keys}, toUInt64(0) AS bt, toUInt64(0) AS bb, countMerge(requests) AS ct, \
         countIfMerge(errors) AS cb FROM {cur} GROUP BY {group})"
    )
}

/// Step 5's layers from the layers view: requests and 5xx per (route, pool, upstream) in
/// both periods, in the raw query's columns (p99s apart: [`layer_p99_from_view`]).
pub(super) fn layers_from_view(e: &Engine, s: &Setup, w: &Window) -> Option<String> {
    lane_view(e, s)?;
    let g = "route, pool, upstream";
    let (base, cur) = periods(
        e,
        (
            Some(ChView::hourly(Table::AccessLog)),
            ChView::ACCESS_LAYERS,
            Table::AccessLog,
        ),
        &s.span,
        w.start,
        (
            &format!("{g}, requests, errors"),
            &format!("{g}, {COUNT_STATES}"),
            g,
        ),
        "",
    )?;
    Some(format!(
        "SELECT {g}, sum(ct) AS requests, sum(cb) AS bad, sum(bt) AS baseline_requests, \
         sum(bb) AS baseline_bad FROM {} GROUP BY {g}",
        period_counts(g, g, &base, &cur)
    ))
}

/// The p99 of both periods of the layers `keys` (route, pool, upstream) from the layers
/// view. Merging latency states is what costs, so only the layers a report shows are
/// merged (a two-hour span over 100M rows a day: ~0.2 s against ~0.5 s for all 6,000).
pub(super) fn layer_p99_from_view(
    e: &Engine,
    s: &Setup,
    w: &Window,
    keys: &[(&str, &str, &str)],
) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let view = ChView::ACCESS_LAYERS;
    let g = "route, pool, upstream";
    let d = Dialect::ClickHouse;
    let list: Vec<String> = keys
        .iter()
        .map(|(r, p, u)| format!("({}, {}, {})", d.lit(r), d.lit(p), d.lit(u)))
        .collect();
    let filter = format!("({g}) IN ({})", list.join(", "));
    let (base, cur) = periods(
        e,
        (None, view, Table::AccessLog),
        &s.span,
        w.start,
        (
            &format!("{g}, latency"),
            &format!("{g}, {}", rollup::state_of(view.states, "latency")?),
            g,
        ),
        &filter,
    )?;
    let p99 = view.pct_ms(2);
    Some(format!(
        "SELECT {g}, max(cp) AS p99_ms, max(bp) AS baseline_p99_ms FROM (\
         SELECT {g}, {p99} AS bp, toFloat64(0) AS cp FROM {base} GROUP BY {g} \
         UNION ALL \
         SELECT {g}, toFloat64(0) AS bp, {p99} AS cp FROM {cur} GROUP BY {g}\
         ) GROUP BY {g}"
    ))
}

/// Step 4's fingerprints from the slow-SQL view (any metric: calls are not judged good or
/// bad): calls in both periods and the current period's total time, scoped by `span`'s
/// filters on `allowed` dimensions only, in the raw query's columns.
pub(super) fn fingerprints_from_view(
    e: &Engine,
    s: &Setup,
    w: &Window,
    allowed: &[&str],
) -> Option<String> {
    if e.dialect() != Dialect::ClickHouse || !e.rollups() {
        return None;
    }
    let view = ChView::SLOW_MINUTE;
    let mut sp = s.span.clone();
    sp.dims.retain(|(k, _)| allowed.contains(&k.as_str()));
    let g = "fingerprint_id";
    let (base, cur) = periods(
        e,
        (Some(ChView::hourly(Table::SlowSql)), view, Table::SlowSql),
        &sp,
        w.start,
        (
            &format!("{g}, fingerprint, calls, total_s"),
            &format!("{g}, {}", view.states),
            g,
        ),
        "",
    )?;
    Some(format!(
        "SELECT {g}, any(fp) AS _a_fingerprint, sum(c) AS cur, sum(b) AS base, \
         sum(ct) AS cur_total_s FROM (\
         SELECT {g}, anyMerge(fingerprint) AS fp, toUInt64(0) AS c, countMerge(calls) AS b, \
         toFloat64(0) AS ct FROM {base} GROUP BY {g} \
         UNION ALL \
         SELECT {g}, anyMerge(fingerprint) AS fp, countMerge(calls) AS c, toUInt64(0) AS b, \
         sumMerge(total_s) AS ct FROM {cur} GROUP BY {g}\
         ) GROUP BY {g}"
    ))
}
