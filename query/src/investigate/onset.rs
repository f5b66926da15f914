//! Step 1, the onset, and what ClickHouse's per-minute lane view answers for root cause:
//! the onset series, the span's first minute and the tag counts of both periods (whole
//! minutes from the view, raw rows at the edges).

use apus_schema::Table;
use apus_store::read::dialect::Dialect;
use apus_store::read::json::num;

use super::{Setup, Window};
use crate::engine::Engine;
use crate::params::Params;
use crate::rollup::{self, ChView};
use crate::rootcause::{onset, Bucket};
use crate::QueryError;

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
    let split = view.split(p, &[])?;
    Some(rollup::ch_view_source(
        |t| e.table(t),
        Table::AccessLog,
        view,
        p,
        &split,
        cols,
        raw,
        group,
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
            &format!("{minute}, countState() AS requests, countIfState(status >= 500) AS errors"),
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

/// The tag counts of both periods from the lane view (each period its own whole minutes
/// and raw edges), when it can answer both.
pub(super) fn tag_counts_from_view(e: &Engine, s: &Setup, w: &Window) -> Option<String> {
    let view = lane_view(e, s)?;
    let raw = "tag, countState() AS requests, countIfState(status >= 500) AS errors";
    let cols = "tag, requests, errors";
    let base = lane_source(
        e,
        view,
        &s.span.with_range(s.base_from, w.start),
        cols,
        raw,
        "tag",
    )?;
    let cur = lane_source(
        e,
        view,
        &s.span.with_range(w.start, s.span.to_us),
        cols,
        raw,
        "tag",
    )?;
    Some(format!(
        "SELECT value, sum(bt) AS bt, sum(bb) AS bb, sum(ct) AS ct, sum(cb) AS cb FROM (\
         SELECT tag AS value, countMerge(requests) AS bt, countIfMerge(errors) AS bb, \
         toUInt64(0) AS ct, toUInt64(0) AS cb FROM {base} GROUP BY value \
         UNION ALL \
         SELECT tag AS value, toUInt64(0) AS bt, toUInt64(0) AS bb, \
         countMerge(requests) AS ct, countIfMerge(errors) AS cb FROM {cur} GROUP BY value\
         ) GROUP BY value"
    ))
}
