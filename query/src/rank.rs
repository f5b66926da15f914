//! The rankings and charts SREs open first, each one aggregate query over a column scan:
//! slow SQL TOP N by fingerprint, exception/log-template ranking per pool with the change
//! against the previous window, pool/route/tenant/upstream rankings split by lane (tag),
//! and the change timeline. Time series in buckets are [`crate::series`].

use std::collections::HashMap;

use apus_schema::Table;
use serde_json::json;

use crate::engine::Engine;
use crate::params::Params;
use crate::rollup;
use crate::rootcause::{ratio, surges, KeyCounts};
use crate::QueryError;
pub use apus_store::read::json::fix_times;
use apus_store::read::json::{num, text, Row};
use apus_store::read::Dialect;

/// Dimensions of the slow-SQL ranking.
pub const SLOW_SQL_DIMS: &[&str] = &["project", "env", "pool", "db", "user", "client"];
/// Dimensions of the exception ranking.
pub const LOG_DIMS: &[&str] = &["project", "env", "pool", "host", "level", "tenant", "tag"];
/// Dimensions of the access-log rankings and charts.
pub const ACCESS_DIMS: &[&str] = &[
    "project", "env", "route", "pool", "upstream", "tenant", "tag", "host", "method",
];
/// Dimensions of the metrics charts.
pub const METRIC_DIMS: &[&str] = &["project", "env", "pool", "host"];
/// Dimensions of the slow-SQL charts (`source=slow_sql`).
pub const SLOW_SQL_SERIES_DIMS: &[&str] = &[
    "project",
    "env",
    "pool",
    "db",
    "user",
    "client",
    "fingerprint_id",
];
/// Dimensions of the log-line charts (`source=logs`).
pub const LOG_SERIES_DIMS: &[&str] = &[
    "project",
    "env",
    "pool",
    "host",
    "level",
    "tenant",
    "tag",
    "template_id",
    "exception",
];
/// Dimensions of the change timeline.
pub const CHANGE_DIMS: &[&str] = &["project", "env", "kind", "actor"];

/// Condition selecting error-ish log lines (exceptions or error levels).
pub const ERROR_LINES: &str =
    "(exception <> '' OR upper(level) IN ('ERROR', 'FATAL', 'CRITICAL', 'SEVERE', 'EMERG', 'ALERT'))";

/// Slow SQL TOP N by fingerprint; the row fields are those of `apus slowlog digest
/// --format json` plus `first_seen`, `last_seen`, `rows_examined_total` and `db`.
pub async fn slow_sql_top(e: &Engine, p: &Params) -> Result<Vec<Row>, QueryError> {
    let d = e.dialect();
    let limit = p.usize_opt("limit", 100, 1000)?;
    let order = match p.choice("order", &["total", "avg", "max", "calls", "p95"])? {
        "total" => "total_s",
        "avg" => "avg_s",
        "max" => "max_s",
        "p95" => "p95_s",
        _ => "calls",
    };
    let split = e
        .rollups()
        .then(|| rollup::split(Table::SlowSql, p, &[]))
        .flatten();
    let us = d.us();
    let order_col = |o: &str| match o {
        "avg_s" | "p95_s" => o.to_string(),
        o => format!("_a_{o}"),
    };
    let sql = if let (Some(s), Dialect::ClickHouse) = (&split, d) {
        // The `slow_sql_1h` view's states for whole hours, raw rows' states at the edges.
        let src = rollup::ch_view_source(
            |t| e.table(t),
            Table::SlowSql,
            // The initiator merges the percentile states of the chosen fingerprints only;
            // merged on the shards, every fingerprint's would be (0.71 s against 0.93 s
            // over 100M rows on 2 shards).
            rollup::ChView::hourly(Table::SlowSql).merged_at_initiator(),
            p,
            s,
            "fingerprint_id, db, fingerprint, calls, total_s, min_s, max_s, \
             rows_examined_total, first_us, last_us, sample, p95",
            &format!(
                "fingerprint_id, any(db) AS db, {}",
                apus_store::clickhouse::slow_sql_states(us)
            ),
            "fingerprint_id",
        );
        // Merging percentile states is the costly part: unless the order is by p95, pick
        // the top `limit` fingerprints first from the cheap states, then merge only theirs.
        let top = if order == "p95_s" {
            String::new()
        } else {
            format!(
                "WHERE fingerprint_id IN (SELECT fingerprint_id FROM (SELECT fingerprint_id, \
                 countMerge(calls) AS _a_calls, sumMerge(total_s) AS _a_total_s, \
                 sumMerge(total_s) / countMerge(calls) AS avg_s, maxMerge(max_s) AS _a_max_s \
                 FROM {src} GROUP BY fingerprint_id ORDER BY {o} DESC, fingerprint_id \
                 LIMIT {limit})) ",
                o = order_col(order),
            )
        };
        format!(
            "SELECT fingerprint_id, anyMerge(fingerprint) AS _a_fingerprint, \
             countMerge(calls) AS _a_calls, sumMerge(total_s) AS _a_total_s, \
             sumMerge(total_s) / countMerge(calls) AS avg_s, minMerge(min_s) AS _a_min_s, \
             maxMerge(max_s) AS _a_max_s, quantileTDigestMerge(0.95)(p95) AS p95_s, \
             toFloat64(sumMerge(rows_examined_total)) / countMerge(calls) AS rows_examined_avg, \
             sumMerge(rows_examined_total) AS _a_rows_examined_total, \
             minMerge(first_us) AS first_seen, maxMerge(last_us) AS last_seen, \
             max(db) AS _a_db, argMaxMerge(sample) AS _a_sample FROM {src} {top}\
             GROUP BY fingerprint_id ORDER BY {o} DESC, fingerprint_id LIMIT {limit}",
            o = order_col(order),
        )
    } else if let Some(s) = split {
        let src = rollup::source(
            Table::SlowSql,
            p,
            &s,
            "fingerprint_id, fingerprint, calls, total_s, min_s, max_s, rows_examined_total, \
             first_us, last_us, db, sample, hist",
            &format!(
                "fingerprint_id, max(fingerprint) AS fingerprint, count(*) AS calls, \
                 sum(query_time) AS total_s, min(query_time) AS min_s, max(query_time) AS max_s, \
                 sum(rows_examined) AS rows_examined_total, min({us}) AS first_us, \
                 max({us}) AS last_us, max(db) AS db, {sample} AS sample, \
                 hist_of(query_time) AS hist",
                sample = d.arg_max("sample", "query_time"),
            ),
            "fingerprint_id",
        );
        format!(
            "SELECT fingerprint_id, max(fingerprint) AS _a_fingerprint, sum(calls) AS _a_calls, \
             sum(total_s) AS _a_total_s, sum(total_s) / sum(calls) AS avg_s, \
             min(min_s) AS _a_min_s, max(max_s) AS _a_max_s, hist_pct(hist, 0.95) AS p95_s, \
             {rx} / sum(calls) AS rows_examined_avg, \
             sum(rows_examined_total) AS _a_rows_examined_total, \
             min(first_us) AS first_seen, max(last_us) AS last_seen, max(db) AS _a_db, \
             {sample} AS _a_sample FROM {src} GROUP BY fingerprint_id \
             ORDER BY {order} DESC, fingerprint_id LIMIT {limit}",
            rx = d.f64("sum(rows_examined_total)"),
            sample = d.arg_max("sample", "max_s"),
            order = order_col(order),
        )
    } else {
        format!(
            "SELECT fingerprint_id, max(fingerprint) AS _a_fingerprint, count(*) AS calls, \
         sum(query_time) AS total_s, avg(query_time) AS avg_s, min(query_time) AS min_s, \
         max(query_time) AS max_s, {p95} AS p95_s, \
         avg(rows_examined) AS rows_examined_avg, sum(rows_examined) AS rows_examined_total, \
         min({us}) AS first_seen, max({us}) AS last_seen, max(db) AS _a_db, \
         {sample} AS _a_sample \
         FROM {t} WHERE {} GROUP BY fingerprint_id \
         ORDER BY {order} DESC, fingerprint_id LIMIT {limit}",
            p.conditions(d, &[]),
            p95 = d.pct(0.95, "query_time"),
            sample = d.arg_max("sample", "query_time"),
            t = e.table("slow_sql"),
        )
    };
    let mut rows = e.rows(&sql).await?;
    fix_times(&mut rows, &["first_seen", "last_seen"]);
    for (i, r) in rows.iter_mut().enumerate() {
        r.insert("rank".into(), json!(i + 1));
    }
    Ok(rows)
}

/// Exception / error-template ranking per pool over the window, each row compared with
/// the previous window of equal length: `previous`, `change`, `new` (absent before) and
/// `surge` (significantly more, see [`surges`]).
pub async fn exceptions_top(e: &Engine, p: &Params) -> Result<Vec<Row>, QueryError> {
    let d = e.dialect();
    let limit = p.usize_opt("limit", 100, 1000)?;
    let filter = match p.choice("lines", &["errors", "all"])? {
        "errors" => ERROR_LINES,
        _ => "1 = 1",
    };
    let us = d.us();
    let t = e.table("logs");
    let cur = format!(
        "SELECT pool, template_id, max(template) AS _a_template, max(exception) AS _a_exception, \
         count(*) AS count, min({us}) AS first_seen, max({us}) AS last_seen, \
         {sample} AS _a_sample \
         FROM {t} WHERE {} AND {filter} GROUP BY pool, template_id \
         ORDER BY count DESC, pool, template_id LIMIT {limit}",
        p.conditions(d, &[]),
        sample = d.arg_max("message", us),
    );
    let len = p.to_us - p.from_us;
    let prev = p.with_range(p.from_us - len, p.from_us);
    let before = format!(
        "SELECT pool, template_id, count(*) AS count FROM {t} WHERE {} AND {filter} \
         GROUP BY pool, template_id",
        prev.conditions(d, &[])
    );
    let (mut rows, old) = futures::future::try_join(e.rows(&cur), e.rows(&before)).await?;
    fix_times(&mut rows, &["first_seen", "last_seen"]);
    let prev_counts: HashMap<(String, String), f64> = old
        .iter()
        .map(|r| {
            (
                (
                    text(r, "pool").to_string(),
                    text(r, "template_id").to_string(),
                ),
                num(r, "count"),
            )
        })
        .collect();
    let keys: Vec<KeyCounts> = rows
        .iter()
        .map(|r| {
            let k = (
                text(r, "pool").to_string(),
                text(r, "template_id").to_string(),
            );
            KeyCounts {
                key: format!("{}\u{1f}{}", k.0, k.1),
                baseline: prev_counts.get(&k).copied().unwrap_or(0.0),
                current: num(r, "count"),
            }
        })
        .collect();
    let flagged: HashMap<String, (bool, f64)> = surges(
        &keys,
        crate::rootcause::Windows::equal(len as f64 / 1e6),
        3.0,
    )
    .into_iter()
    .map(|s| (s.key, (s.is_new, s.z)))
    .collect();
    for (r, k) in rows.iter_mut().zip(&keys) {
        let f = flagged.get(&k.key);
        r.insert("previous".into(), json!(k.baseline));
        r.insert("change".into(), json!(k.current - k.baseline));
        r.insert("new".into(), json!(f.is_some_and(|f| f.0)));
        r.insert("surge".into(), json!(f.is_some_and(|f| !f.0)));
        r.insert("z".into(), json!(f.map_or(0.0, |f| f.1)));
    }
    Ok(rows)
}

/// Which access-log column a ranking groups by.
pub fn rank_dimension(kind: &str) -> Result<&'static str, QueryError> {
    match kind {
        "pools" => Ok("pool"),
        "routes" => Ok("route"),
        "tenants" => Ok("tenant"),
        "upstreams" => Ok("upstream"),
        k => Err(QueryError::BadRequest(format!(
            "unknown ranking `{k}`: use pools, routes, tenants or upstreams"
        ))),
    }
}

/// Requests, errors (5xx), error rate and latency percentiles per value of `dim`, one row
/// per (value, tag) so gray and stable lanes sit side by side; values ordered by traffic
/// (or errors, error rate, worst p99), at most `limit` values.
pub async fn rank(e: &Engine, dim: &str, p: &Params) -> Result<Vec<Row>, QueryError> {
    let d = e.dialect();
    let limit = p.usize_opt("limit", 100, 10_000)?;
    let order = p.choice("order", &["requests", "errors", "error_rate", "p99_ms"])?;
    let (ch, split) = if d == Dialect::ClickHouse {
        // The lane view (per minute, by pool and tag) when it has `dim` and the filters,
        // else the hourly view.
        let views = [
            rollup::ChView::ACCESS_MINUTE,
            rollup::ChView::hourly(Table::AccessLog),
        ];
        let ch = e
            .rollups()
            .then(|| {
                views
                    .into_iter()
                    .find_map(|v| Some((v, v.split(p, &[dim])?)))
            })
            .flatten();
        (ch, None)
    } else {
        let split = e
            .rollups()
            .then(|| rollup::split(Table::AccessLog, p, &[dim]))
            .flatten();
        (None, split)
    };
    let sql = if let Some((view, s)) = &ch {
        // The view's states for whole minutes or hours, raw rows' states at the edges.
        let src = rollup::ch_view_source(
            |t| e.table(t),
            Table::AccessLog,
            *view,
            p,
            s,
            &format!("{dim}, tag, requests, errors, client_errors, latency_sum_us, latency"),
            &format!("{dim}, tag, {}", view.states),
            &format!("{dim}, tag"),
        );
        format!(
            "SELECT {dim}, tag, countMerge(requests) AS _a_requests, \
             countIfMerge(errors) AS _a_errors, countIfMerge(client_errors) AS _a_client_errors, \
             {} AS p50_ms, {} AS p99_ms, \
             toFloat64(sumMerge(latency_sum_us)) / countMerge(requests) / 1000.0 AS avg_ms \
             FROM {src} GROUP BY {dim}, tag",
            view.pct_ms(1),
            view.pct_ms(2),
        )
    } else if let Some(s) = split {
        let src = rollup::source(
            Table::AccessLog,
            p,
            &s,
            &format!("{dim}, tag, requests, errors, client_errors, latency_sum_us, hist"),
            &format!(
                "{dim}, tag, count(*) AS requests, \
                 sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS errors, \
                 sum(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END) AS client_errors, \
                 sum(latency_us) AS latency_sum_us, hist_of({lat}) AS hist",
                lat = d.f64("latency_us"),
            ),
            &format!("{dim}, tag"),
        );
        format!(
            "SELECT {dim}, tag, sum(requests) AS _a_requests, sum(errors) AS _a_errors, \
             sum(client_errors) AS _a_client_errors, hist_pct(hist, 0.5) / 1000.0 AS p50_ms, \
             hist_pct(hist, 0.99) / 1000.0 AS p99_ms, \
             {sum} / sum(requests) / 1000.0 AS avg_ms FROM {src} GROUP BY {dim}, tag",
            sum = d.f64("sum(latency_sum_us)"),
        )
    } else {
        format!(
            "SELECT {dim}, tag, count(*) AS requests, \
         sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS errors, \
         sum(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END) AS client_errors, \
         {p50} / 1000.0 AS p50_ms, {p99} / 1000.0 AS p99_ms, avg(latency_us) / 1000.0 AS avg_ms \
         FROM {t} WHERE {} GROUP BY {dim}, tag",
            p.conditions(d, &[]),
            p50 = d.pct(0.5, "latency_us"),
            p99 = d.pct(0.99, "latency_us"),
            t = e.table("access_log"),
        )
    };
    let mut rows = e.rows(&sql).await?;
    // Per value: totals for the order; lanes stay together.
    let mut totals: HashMap<String, (f64, f64, f64)> = HashMap::new();
    for r in &mut rows {
        let (req, err) = (num(r, "requests"), num(r, "errors"));
        r.insert("error_rate".into(), json!(ratio(err, req)));
        let t = totals.entry(text(r, dim).to_string()).or_default();
        t.0 += req;
        t.1 += err;
        t.2 = t.2.max(num(r, "p99_ms"));
    }
    let key = |v: &(f64, f64, f64)| match order {
        "errors" => v.1,
        "error_rate" => ratio(v.1, v.0),
        "p99_ms" => v.2,
        _ => v.0,
    };
    let mut values: Vec<(String, f64)> = totals.iter().map(|(k, v)| (k.clone(), key(v))).collect();
    values.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values.truncate(limit);
    let pos: HashMap<&str, usize> = values
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    let mut rows: Vec<(usize, Row)> = rows
        .into_iter()
        .filter_map(|r| pos.get(text(&r, dim)).map(|i| (*i, r)))
        .collect();
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| text(&a.1, "tag").cmp(text(&b.1, "tag")))
    });
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// The columns of the change timeline.
pub const CHANGE_COLUMNS: &str =
    "kind, actor, project, env, scope, from_version, to_version, summary, touched";

/// The change timeline, newest first.
pub async fn changes(e: &Engine, p: &Params) -> Result<Vec<Row>, QueryError> {
    let d = e.dialect();
    let limit = p.usize_opt("limit", 200, 10_000)?;
    let mut rows = e
        .rows(&format!(
            "SELECT {us} AS at_us, {CHANGE_COLUMNS} FROM {t} WHERE {} \
             ORDER BY at_us DESC LIMIT {limit}",
            p.conditions(d, &[]),
            us = d.us(),
            t = e.table("changes"),
        ))
        .await?;
    for r in &mut rows {
        if let Some(v) = r.remove("at_us") {
            r.insert("ts".into(), v);
        }
    }
    fix_times(&mut rows, &["ts"]);
    Ok(rows)
}
