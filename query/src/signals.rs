//! The signals alarms (and rollout analysis) ask of the store, answered once here: per
//! label set, the value of an alarm rule's query over its window, and over the window
//! before it where the rule compares the two.
//!
//! Each built-in kind is one aggregate query over one table (both windows in one scan
//! when the previous one is needed); a `sql` rule runs the SRE's query through the same
//! read-only check as `POST /api/v1/sql`.

use std::collections::{BTreeMap, HashMap};

use apus_rules::alarm::{AlarmRule, Kind, Labels};
use apus_store::read::dialect::Dialect;
use apus_store::read::json::{num, Row};
use serde_json::Value;

use crate::engine::Engine;
use crate::rank::ERROR_LINES;
use crate::rootcause::{surged_rows, Windows};
use crate::QueryError;

/// One label set's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The dimension values that name the label set.
    pub labels: Labels,
    pub value: f64,
    /// The value over the previous window (where the rule needs it).
    pub previous: Option<f64>,
    /// Extra numbers and text for annotations (`{{ $labels.x }}` sees labels, these are
    /// added to the alert's annotations as evidence).
    pub evidence: Labels,
}

/// The gateway's per-server health gauge (1 healthy, 0 held out), as scraped into the
/// `metrics` table.
pub const UPSTREAM_HEALTHY: &str = "apus_gateway_upstream_healthy";

/// A request the gateway counts as failed: a 5xx (or no answer at all).
const BAD: &str = "(status >= 500 OR status = 0)";

/// Most label sets one rule may produce per evaluation (a signal shared by several rules
/// may produce this many per rule).
pub const MAX_SERIES: usize = 10_000;

fn text(r: &Row, k: &str) -> String {
    match r.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn scope(d: Dialect, rule: &AlarmRule, from_us: i64, to_us: i64, skip: &[&str]) -> String {
    let mut c = vec![d.time_range(from_us, to_us)];
    if !skip.contains(&"project") {
        c.push(format!("project = {}", d.lit(&rule.project)));
        c.push(format!("env = {}", d.lit(&rule.env)));
    }
    for (k, v) in &rule.filter {
        c.push(format!("{k} = {}", d.lit(v)));
    }
    c.join(" AND ")
}

fn labels_of(r: &Row, dims: &[String]) -> Labels {
    dims.iter().map(|k| (k.clone(), text(r, k))).collect()
}

fn group_clause(dims: &[String]) -> (String, String) {
    if dims.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!("{}, ", dims.join(", ")),
            format!(" GROUP BY {}", dims.join(", ")),
        )
    }
}

/// Evaluate `rule` at `now_us`: its window is `[now - window, now)`; at most `max_series`
/// label sets come back.
pub async fn evaluate(
    e: &Engine,
    rule: &AlarmRule,
    now_us: i64,
    max_series: usize,
) -> Result<Vec<Series>, QueryError> {
    let mut out = match rule.kind {
        Kind::ErrorRate | Kind::P99Latency | Kind::NoRequests => traffic(e, rule, now_us).await?,
        Kind::GrayRegression => gray_regression(e, rule, now_us).await?,
        Kind::ExceptionTemplate | Kind::SlowSqlFingerprint => novelties(e, rule, now_us).await?,
        Kind::UnhealthyUpstreams => unhealthy(e, rule, now_us).await?,
        Kind::Sql => user_sql(e, rule, now_us).await?,
    };
    if out.len() > max_series {
        metrics::counter!("apus_alarm_series_truncated_total").increment(1);
        out.truncate(max_series);
    }
    Ok(out)
}

/// Error rate, p99 and request counts per label set, over one window (or two).
async fn traffic(e: &Engine, rule: &AlarmRule, now: i64) -> Result<Vec<Series>, QueryError> {
    let d = e.dialect();
    let w = rule.window_us;
    let two = rule.condition.relative || rule.kind == Kind::NoRequests;
    let from = if two { now - 2 * w } else { now - w };
    let cur = d.since(now - w);
    let (sel, group) = group_clause(&rule.group_by);
    // Percentiles are the expensive part of the scan: only the p99 kind computes them.
    let p99 = if rule.kind == Kind::P99Latency {
        format!(
            ", {} / 1000.0 AS p99_ms, {} / 1000.0 AS pp99_ms",
            d.pct_if(0.99, "latency_us", &cur),
            d.pct_if(0.99, "latency_us", &format!("NOT ({cur})"))
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {sel}sum(CASE WHEN {cur} THEN 1 ELSE 0 END) AS n, \
         sum(CASE WHEN {cur} AND {BAD} THEN 1 ELSE 0 END) AS bad, \
         sum(CASE WHEN {cur} THEN 0 ELSE 1 END) AS pn, \
         sum(CASE WHEN NOT ({cur}) AND {BAD} THEN 1 ELSE 0 END) AS pbad{p99} \
         FROM {t} WHERE {w}{group}",
        t = e.table("access_log"),
        w = scope(d, rule, from, now, &[]),
    );
    let rows = e.rows(&sql).await?;
    let min = rule.min_requests as f64;
    let mut out = Vec::new();
    for r in &rows {
        let (n, pn) = (num(r, "n"), num(r, "pn"));
        let (value, previous) = match rule.kind {
            Kind::ErrorRate => {
                if n < min.max(1.0) {
                    continue;
                }
                (
                    num(r, "bad") / n,
                    (pn >= min.max(1.0)).then(|| num(r, "pbad") / pn),
                )
            }
            Kind::P99Latency => {
                if n < min.max(1.0) {
                    continue;
                }
                (
                    num(r, "p99_ms"),
                    (pn >= min.max(1.0)).then(|| num(r, "pp99_ms")),
                )
            }
            _ => {
                // dropping to zero: only label sets that had traffic before count
                if pn < min.max(1.0) {
                    continue;
                }
                (n, Some(pn))
            }
        };
        let evidence = [
            ("requests".to_string(), n.to_string()),
            ("errors".to_string(), num(r, "bad").to_string()),
            ("previous_requests".to_string(), pn.to_string()),
        ]
        .into();
        out.push(Series {
            labels: labels_of(r, &rule.group_by),
            value,
            previous: if two { previous } else { None },
            evidence,
        });
    }
    Ok(out)
}

/// The gray lane against stable on the same route (and `group_by` dimensions).
async fn gray_regression(
    e: &Engine,
    rule: &AlarmRule,
    now: i64,
) -> Result<Vec<Series>, QueryError> {
    let d = e.dialect();
    let mut dims: Vec<String> = vec!["route".into()];
    dims.extend(
        rule.group_by
            .iter()
            .filter(|g| *g != "route" && *g != "tag")
            .cloned(),
    );
    let (gray, stable) = (
        format!("tag = {}", d.lit(&rule.gray_tag)),
        format!("tag = {}", d.lit(&rule.stable_tag)),
    );
    let (sel, group) = group_clause(&dims);
    let sql = format!(
        "SELECT {sel}sum(CASE WHEN {gray} THEN 1 ELSE 0 END) AS gn, \
         sum(CASE WHEN {gray} AND {BAD} THEN 1 ELSE 0 END) AS gbad, \
         sum(CASE WHEN {stable} THEN 1 ELSE 0 END) AS sn, \
         sum(CASE WHEN {stable} AND {BAD} THEN 1 ELSE 0 END) AS sbad, \
         {gp99} / 1000.0 AS gp99_ms, {sp99} / 1000.0 AS sp99_ms \
         FROM {t} WHERE {w} AND ({gray} OR {stable}){group}",
        gp99 = d.pct_if(0.99, "latency_us", &gray),
        sp99 = d.pct_if(0.99, "latency_us", &stable),
        t = e.table("access_log"),
        w = scope(d, rule, now - rule.window_us, now, &[]),
    );
    let min = (rule.min_requests as f64).max(1.0);
    let mut out = Vec::new();
    for r in e.rows(&sql).await? {
        let (gn, sn) = (num(&r, "gn"), num(&r, "sn"));
        if gn < min || sn < min {
            continue;
        }
        let (grate, srate) = (num(&r, "gbad") / gn, num(&r, "sbad") / sn);
        let (gp, sp) = (num(&r, "gp99_ms"), num(&r, "sp99_ms"));
        let value = if rule.metric == "p99" {
            if sp <= 0.0 {
                continue;
            }
            gp / sp
        } else {
            grate - srate
        };
        let f = |v: f64| apus_rules::alarm::template::format_value(v);
        let evidence = [
            ("gray_requests", f(gn)),
            ("stable_requests", f(sn)),
            ("gray_error_rate", f(grate)),
            ("stable_error_rate", f(srate)),
            ("gray_p99_ms", f(gp)),
            ("stable_p99_ms", f(sp)),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        out.push(Series {
            labels: labels_of(&r, &dims),
            value,
            previous: None,
            evidence,
        });
    }
    Ok(out)
}

/// New or surging exception templates / slow-SQL fingerprints: the value is the count in
/// the window, and only keys that are new or surged (against the previous window of the
/// same length) are returned.
async fn novelties(e: &Engine, rule: &AlarmRule, now: i64) -> Result<Vec<Series>, QueryError> {
    let d = e.dialect();
    let w = rule.window_us;
    let cur = d.since(now - w);
    let (table, key, text_col, extra) = if rule.kind == Kind::ExceptionTemplate {
        (
            "logs",
            "template_id",
            "template",
            format!(" AND {ERROR_LINES}"),
        )
    } else {
        ("slow_sql", "fingerprint_id", "fingerprint", String::new())
    };
    let mut dims = rule.group_by.clone();
    dims.retain(|g| g != key);
    let (sel, _) = group_clause(&dims);
    let group = format!(" GROUP BY {sel}{key}");
    let sql = format!(
        "SELECT {sel}{key}, max({text_col}) AS _a_{text_col}, \
         sum(CASE WHEN {cur} THEN 1 ELSE 0 END) AS cur, \
         sum(CASE WHEN {cur} THEN 0 ELSE 1 END) AS base \
         FROM {t} WHERE {w}{extra}{group}",
        t = e.table(table),
        w = scope(d, rule, now - 2 * w, now, &[]),
    );
    let rows = e.rows(&sql).await?;
    let key_of = |r: &Row| {
        let mut k: Vec<String> = dims.iter().map(|g| text(r, g)).collect();
        k.push(text(r, key));
        k.join("\u{1f}")
    };
    let what = if rule.kind == Kind::ExceptionTemplate {
        "exception template"
    } else {
        "slow query"
    };
    let flagged = surged_rows(
        &rows,
        Windows::equal(w as f64 / 1e6),
        rule.min_requests.max(1) as f64,
        key_of,
    );
    Ok(flagged
        .into_iter()
        .map(|(r, s)| {
            let mut labels = labels_of(r, &dims);
            labels.insert(key.to_string(), text(r, key));
            let f = apus_rules::alarm::template::format_value;
            let evidence: BTreeMap<String, String> = [
                (text_col, text(r, text_col)),
                ("surge", s.describe(what)),
                ("new", s.is_new.to_string()),
                ("ratio", f(s.ratio)),
                ("current_per_min", f(s.current_per_min)),
                ("baseline_per_min", f(s.baseline_per_min)),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into();
            Series {
                labels,
                value: s.current,
                previous: Some(s.baseline),
                evidence,
            }
        })
        .collect())
}

/// Servers whose last health sample in the window says 0.
async fn unhealthy(e: &Engine, rule: &AlarmRule, now: i64) -> Result<Vec<Series>, QueryError> {
    let d = e.dialect();
    // `server` is a label inside the metric's labels JSON; pool is a column.
    let server = match d {
        Dialect::DataFusion => "regexp_replace(labels, '^.*\"server\":\"([^\"]*)\".*$', '\\1')",
        Dialect::ClickHouse => "visitParamExtractString(labels, 'server')",
    };
    let mut c = vec![
        d.time_range(now - rule.window_us, now),
        format!("name = {}", d.lit(UPSTREAM_HEALTHY)),
        format!("project = {}", d.lit(&rule.project)),
        format!("env = {}", d.lit(&rule.env)),
    ];
    for (k, v) in &rule.filter {
        if k == "server" {
            c.push(format!("{server} = {}", d.lit(v)));
        } else {
            c.push(format!("{k} = {}", d.lit(v)));
        }
    }
    let sql = format!(
        "SELECT pool, {server} AS server, {last} AS healthy FROM {t} WHERE {} \
         GROUP BY pool, {server}",
        c.join(" AND "),
        last = d.arg_max("value", d.us()),
        t = e.table("metrics"),
    );
    let rows = e.rows(&sql).await?;
    // Series per group_by (pool and/or server): the number of servers held out.
    let mut agg: BTreeMap<Labels, (f64, Vec<String>)> = BTreeMap::new();
    for r in &rows {
        if num(r, "healthy") >= 1.0 {
            continue;
        }
        let labels = labels_of(r, &rule.group_by);
        let entry = agg.entry(labels).or_default();
        entry.0 += 1.0;
        entry
            .1
            .push(format!("{}/{}", text(r, "pool"), text(r, "server")));
    }
    Ok(agg
        .into_iter()
        .map(|(labels, (n, servers))| Series {
            labels,
            value: n,
            previous: None,
            evidence: [("servers".to_string(), servers.join(", "))].into(),
        })
        .collect())
}

/// An SRE's SQL: `$window` becomes the time condition; every column but `value` is a label.
async fn user_sql(e: &Engine, rule: &AlarmRule, now: i64) -> Result<Vec<Series>, QueryError> {
    let d = e.dialect();
    let w = rule.window_us;
    let run = |from: i64, to: i64| {
        let sql = rule
            .sql
            .replace("$window", &format!("({})", d.time_range(from, to)));
        async move { e.user_sql(&sql, MAX_SERIES).await }
    };
    let to_series = |rows: Vec<Row>| -> Result<Vec<(Labels, f64)>, QueryError> {
        rows.into_iter()
            .map(|r| {
                let v = r.get("value").ok_or_else(|| {
                    QueryError::BadRequest("the rule's SQL returns no `value` column".into())
                })?;
                let value = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(f64::NAN);
                let labels = r
                    .iter()
                    .filter(|(k, _)| *k != "value")
                    .map(|(k, _)| (k.clone(), text(&r, k)))
                    .collect();
                Ok((labels, value))
            })
            .collect()
    };
    let cur = to_series(run(now - w, now).await?.rows)?;
    let prev: HashMap<Labels, f64> = if rule.condition.relative {
        to_series(run(now - 2 * w, now - w).await?.rows)?
            .into_iter()
            .collect()
    } else {
        HashMap::new()
    };
    Ok(cur
        .into_iter()
        .map(|(labels, value)| Series {
            previous: prev.get(&labels).copied(),
            labels,
            value,
            evidence: Labels::new(),
        })
        .collect())
}
