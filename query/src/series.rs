//! Time series in buckets: an access-log aggregate split by a dimension (from ClickHouse's
//! pre-aggregates when they can answer), slow-SQL and log-line aggregates, and metrics.

use apus_schema::Table;
use serde_json::Value;

use crate::engine::Engine;
use crate::params::Params;
use crate::rank::ERROR_LINES;
use crate::rollup;
use crate::QueryError;
use apus_store::read::json::{rfc3339, Row};
use apus_store::read::Dialect;

/// Parse a step like `60`, `30s`, `5m`, `1h` into seconds.
pub fn parse_step(s: &str) -> Result<i64, QueryError> {
    let bad = || QueryError::BadRequest(format!("bad step `{s}`: use e.g. 30s, 5m, 1h"));
    let (n, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: i64 = n.parse().map_err(|_| bad())?;
    if n <= 0 || n > 366 * 86_400 {
        return Err(bad());
    }
    Ok(n * mult)
}

/// A metric or access-log aggregate in time buckets: rows of `ts`, `series`, `value`.
///
/// `metric` is one of `requests`, `errors`, `error_rate`, `p50_ms`, `p99_ms`, `avg_ms`
/// (from access logs, split by `by`), or `metric:NAME` (the `metrics` table, averaged).
pub async fn timeseries(e: &Engine, p: &Params) -> Result<Vec<Row>, QueryError> {
    let d = e.dialect();
    let metric = p.opt("metric").unwrap_or("requests");
    let range_s = (p.to_us - p.from_us) / 1_000_000;
    let step = match p.opt("step") {
        Some(s) => parse_step(s)?,
        None => (range_s / 60).max(1),
    };
    if range_s / step > 5000 {
        return Err(QueryError::BadRequest(format!(
            "step {step}s gives more than 5000 buckets over this range; use a larger step"
        )));
    }
    let step_us = step * 1_000_000;
    let bucket = d.bucket(step_us);
    let source = p.opt("source").unwrap_or("access");
    // Slow SQL and log lines: an aggregate of the table per bucket and series.
    let other: Option<(String, &str, &[&str])> = match source {
        "slow_sql" => Some((
            match metric {
                "calls" => d.f64("count(*)"),
                "total_s" => "sum(query_time)".to_string(),
                "avg_s" => "avg(query_time)".to_string(),
                "max_s" => "max(query_time)".to_string(),
                "p95_s" => d.pct(0.95, "query_time"),
                "rows_examined" => d.f64("sum(rows_examined)"),
                m => {
                    return Err(QueryError::BadRequest(format!(
                        "unknown slow_sql metric `{m}`: use calls, total_s, avg_s, max_s, \
                         p95_s or rows_examined"
                    )))
                }
            },
            "slow_sql",
            &["none", "pool", "db", "user", "fingerprint_id"],
        )),
        "logs" => Some((
            match metric {
                "lines" => d.f64("count(*)"),
                "errors" => d.f64(&format!("sum(CASE WHEN {ERROR_LINES} THEN 1 ELSE 0 END)")),
                m => {
                    return Err(QueryError::BadRequest(format!(
                        "unknown logs metric `{m}`: use lines or errors"
                    )))
                }
            },
            "logs",
            &["none", "pool", "level", "tag", "template_id", "host"],
        )),
        _ => None,
    };
    let sql = if let Some((agg, table, bys)) = other {
        let by = p.choice("by", bys)?;
        let series = if by == "none" {
            d.lit(metric)
        } else {
            by.to_string()
        };
        format!(
            "SELECT {bucket} AS bucket, {series} AS series, {agg} AS value \
             FROM {t} WHERE {} GROUP BY bucket, series ORDER BY bucket, series",
            p.conditions(d, &[]),
            t = e.table(table),
        )
    } else if let Some(name) = metric.strip_prefix("metric:") {
        let by = p.choice("by", &["none", "pool", "host", "project", "env", "labels"])?;
        let series = if by == "none" {
            d.lit(name)
        } else {
            by.to_string()
        };
        format!(
            "SELECT {bucket} AS bucket, {series} AS series, avg(value) AS _a_value \
             FROM {t} WHERE {} AND name = {} GROUP BY bucket, series ORDER BY bucket, series",
            p.conditions(d, &[]),
            d.lit(name),
            t = e.table("metrics"),
        )
    } else {
        let errors = "sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END)";
        let agg = match metric {
            "requests" => d.f64("count(*)"),
            "errors" => d.f64(errors),
            "error_rate" => format!("{} / count(*)", d.f64(errors)),
            "p50_ms" => format!("{} / 1000.0", d.pct(0.5, "latency_us")),
            "p99_ms" => format!("{} / 1000.0", d.pct(0.99, "latency_us")),
            "avg_ms" => "avg(latency_us) / 1000.0".to_string(),
            m => {
                return Err(QueryError::BadRequest(format!(
                    "unknown metric `{m}`: use requests, errors, error_rate, p50_ms, p99_ms, \
                     avg_ms or metric:NAME"
                )))
            }
        };
        let by = p.choice(
            "by",
            &[
                "tag", "none", "pool", "route", "tenant", "upstream", "status",
            ],
        )?;
        let series = match by {
            "none" => d.lit(metric),
            "status" => d.status_class().to_string(),
            d => d.to_string(),
        };
        match ch_series_source(e, p, by, step) {
            Some((view, src)) => {
                // Merged states of whole minutes or hours, raw rows' states at the edges.
                let merged = match metric {
                    "requests" => "toFloat64(countMerge(requests))".to_string(),
                    "errors" => "toFloat64(countIfMerge(errors))".to_string(),
                    "error_rate" => {
                        "toFloat64(countIfMerge(errors)) / countMerge(requests)".to_string()
                    }
                    "p50_ms" => view.pct_ms(1),
                    "p99_ms" => view.pct_ms(2),
                    _ => "toFloat64(sumMerge(latency_sum_us)) / countMerge(requests) / 1000.0"
                        .to_string(),
                };
                format!(
                    "SELECT intDiv(toInt64(t) * 1000000, {step_us}) * {step_us} AS bucket, \
                     {series} AS series, {merged} AS value FROM {src} \
                     GROUP BY bucket, series ORDER BY bucket, series"
                )
            }
            None => match local_series_source(e, p, by, step, &series) {
                Some(src) => {
                    let sum = |c: &str| d.f64(&format!("sum({c})"));
                    let merged = match metric {
                        "requests" => sum("requests"),
                        "errors" => sum("errors"),
                        "error_rate" => format!("{} / sum(requests)", sum("errors")),
                        "p50_ms" => "hist_pct(hist, 0.5) / 1000.0".to_string(),
                        "p99_ms" => "hist_pct(hist, 0.99) / 1000.0".to_string(),
                        _ => format!("{} / sum(requests) / 1000.0", sum("latency_sum_us")),
                    };
                    format!(
                        "SELECT b AS bucket, series, {merged} AS value FROM {src} \
                         GROUP BY b, series ORDER BY bucket, series"
                    )
                }
                None => format!(
                    "SELECT {bucket} AS bucket, {series} AS series, {agg} AS value \
                     FROM {t} WHERE {} GROUP BY bucket, series ORDER BY bucket, series",
                    p.conditions(d, &[]),
                    t = e.table("access_log"),
                ),
            },
        }
    };
    let mut rows = e.rows(&sql).await?;
    for r in &mut rows {
        let b = r.remove("bucket").and_then(|v| v.as_i64()).unwrap_or(0);
        r.insert("ts".into(), Value::from(rfc3339(b)));
        r.insert("ts_us".into(), Value::from(b));
    }
    Ok(rows)
}

/// ClickHouse: the access-log rows of `p`'s window as states of a pre-aggregate (returned
/// with the subquery), with a time column `t`, when one can answer a time series by `by`
/// in buckets of `step` seconds: the per-minute lane view for whole-minute steps when `by`
/// and the filters are among its keys, else the hourly view for whole-hour steps.
fn ch_series_source(
    e: &Engine,
    p: &Params,
    by: &str,
    step: i64,
) -> Option<(rollup::ChView, String)> {
    use crate::rollup::ChView;
    if e.dialect() != Dialect::ClickHouse || !e.rollups() {
        return None;
    }
    let group: &[&str] = if by == "none" { &[] } else { &[by] };
    // The lane view when its keys do (fewest rows), else the hourly one.
    let (view, s) = [ChView::ACCESS_MINUTE, ChView::hourly(Table::AccessLog)]
        .into_iter()
        .filter(|v| (step * 1_000_000) % v.unit_us == 0)
        .find_map(|v| Some((v, v.split(p, group)?)))?;
    let g = if by == "none" {
        String::new()
    } else {
        format!("{by}, ")
    };
    let src = rollup::ch_view_source(
        |t| e.table(t),
        Table::AccessLog,
        view,
        p,
        &s,
        &format!(
            "{g}{} AS t, requests, errors, client_errors, latency_sum_us, latency",
            view.time
        ),
        &format!("{g}{} AS t, {}", view.trunc, view.states),
        &format!("{g}t"),
    );
    Some((view, src))
}

/// The embedded store: the access-log rows of `p`'s window as rollup rows with a bucket
/// `b` and a `series` column (as the subquery), when a rollup can answer a series by `by`
/// in buckets of `step` seconds: the per-minute lane rollup for whole-minute steps when
/// `by` and the filters are among its keys, else the hourly one for whole-hour steps.
fn local_series_source(
    e: &Engine,
    p: &Params,
    by: &str,
    step: i64,
    series: &str,
) -> Option<String> {
    use apus_store::rollup::{ACCESS_HOUR, ACCESS_MINUTE};
    if e.dialect() != Dialect::DataFusion || !e.rollups() {
        return None;
    }
    let group: &[&str] = if by == "none" { &[] } else { &[by] };
    let (level, s) = [ACCESS_MINUTE, ACCESS_HOUR]
        .into_iter()
        .filter(|l| (step * 1_000_000) % l.unit_us == 0)
        .find_map(|l| Some((l, rollup::split_level(l, p, group)?)))?;
    let d = Dialect::DataFusion;
    // A rollup row's `ts` is its unit's start, and a bucket holds whole units: bucketing
    // rollup rows and raw rows alike puts every row in its raw row's bucket.
    let b = d.bucket(step * 1_000_000);
    Some(rollup::source_at(
        level,
        Table::AccessLog,
        p,
        &s,
        &format!("{b} AS b, {series} AS series, requests, errors, latency_sum_us, hist"),
        &format!(
            "{b} AS b, {series} AS series, count(*) AS requests, \
             sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS errors, \
             sum(latency_us) AS latency_sum_us, hist_of({lat}) AS hist",
            lat = d.f64("latency_us"),
        ),
        "b, series",
    ))
}
