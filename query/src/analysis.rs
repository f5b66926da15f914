//! Rollout analysis: one run compares the gray lane with stable on the same route over the
//! window, from the access log (counts, errors, p99 and latency samples), with the judges
//! of `apus_rules::rollout::judge`; error-log templates and slow-SQL fingerprints seen
//! only on the gray side, and the SRE's own SQL metrics; a firing alarm on the route and
//! gray tag fails it.

use apus_rules::alarm::Labels;
use apus_rules::rollout::judge::{self, Counts, Verdict};
use apus_rules::rollout::{AnalysisSpec, UserMetric};
use apus_schema::time::now_us;
use apus_store::read::json::{num, text};

use crate::engine::Engine;
use crate::QueryError;

/// Latency samples read per lane.
const SAMPLES: usize = 1000;

/// What to compare.
#[derive(Debug, Clone)]
pub struct Lanes<'a> {
    pub project: &'a str,
    pub env: &'a str,
    pub route: &'a str,
    pub tag: &'a str,
    pub stable_tag: &'a str,
    /// The gray pool (slow SQL carries a pool, not a tag).
    pub pool: &'a str,
    pub window_us: i64,
}

/// One analysis run. `firing` holds the labels of the alarms firing now.
pub async fn verdict(
    e: &Engine,
    l: &Lanes<'_>,
    spec: &AnalysisSpec,
    firing: &[Labels],
) -> Result<Verdict, QueryError> {
    let hit = firing.iter().find(|a| {
        let is = |k: &str, v: &str| a.get(k).is_none_or(|x| x == v);
        is("project", l.project)
            && is("env", l.env)
            && a.get("route").is_some_and(|r| r == l.route)
            && is("tag", l.tag)
    });
    if let Some(a) = hit {
        return Ok(Verdict::Fail(format!(
            "alarm {} firing on route {}",
            a.get("alertname").map(String::as_str).unwrap_or("?"),
            l.route
        )));
    }
    let d = e.dialect();
    let now = now_us();
    let scope = format!(
        "{} AND project = {} AND env = {} AND route = {}",
        d.time_range(now - l.window_us, now),
        d.lit(l.project),
        d.lit(l.env),
        d.lit(l.route)
    );
    let t = e.table("access_log");
    let counts_sql = format!(
        "SELECT tag, count(*) AS n, sum(CASE WHEN status >= 500 OR status = 0 THEN 1 ELSE 0 END) \
         AS bad, {p99} / 1000.0 AS p99_ms FROM {t} WHERE {scope} AND tag IN ({}, {}) GROUP BY tag",
        d.lit(l.tag),
        d.lit(l.stable_tag),
        p99 = d.pct(0.99, "latency_us"),
    );
    let sample_sql = |tag: &str| {
        format!(
            "SELECT latency_us FROM {t} WHERE {scope} AND tag = {} ORDER BY ts DESC LIMIT {SAMPLES}",
            d.lit(tag)
        )
    };
    let (rows, gray_s, stable_s) = futures::future::try_join3(
        e.rows_owned(counts_sql),
        e.rows_owned(sample_sql(l.tag)),
        e.rows_owned(sample_sql(l.stable_tag)),
    )
    .await?;
    let lane = |tag: &str| {
        rows.iter()
            .find(|r| text(r, "tag") == tag)
            .map(|r| Counts {
                requests: num(r, "n") as u64,
                errors: num(r, "bad") as u64,
                p99_ms: num(r, "p99_ms"),
            })
            .unwrap_or(Counts {
                requests: 0,
                errors: 0,
                p99_ms: 0.0,
            })
    };
    let (gray, stable) = (lane(l.tag), lane(l.stable_tag));
    let ms = |rows: Vec<apus_store::read::json::Row>| -> Vec<f64> {
        rows.iter().map(|r| num(r, "latency_us") / 1000.0).collect()
    };
    let mut vs = vec![
        judge::thresholds(gray, &spec.limits()),
        judge::errors(gray, stable, &spec.error_test()),
        judge::latency(&ms(gray_s), &ms(stable_s), &spec.latency_test()),
    ];
    if spec.new_templates {
        vs.push(novelties(e, l, spec, Novelty::Templates, now).await?);
    }
    if spec.new_fingerprints {
        vs.push(novelties(e, l, spec, Novelty::Fingerprints, now).await?);
    }
    for m in &spec.metrics {
        vs.push(user_metric(e, l, m, now).await);
    }
    Ok(judge::combine(&vs))
}

#[derive(Clone, Copy, PartialEq)]
enum Novelty {
    /// Error-log templates of the gray lane (`logs.tag`).
    Templates,
    /// Slow-SQL fingerprints of the gray pool (`slow_sql.pool`).
    Fingerprints,
}

/// Keys seen on the gray side in the window and on no other side over the baseline.
async fn novelties(
    e: &Engine,
    l: &Lanes<'_>,
    spec: &AnalysisSpec,
    what: Novelty,
    now: i64,
) -> Result<Verdict, QueryError> {
    let d = e.dialect();
    let (table, key, text_col, side, extra, name) = match what {
        Novelty::Templates => (
            "logs",
            "template_id",
            "template",
            format!("tag = {}", d.lit(l.tag)),
            format!(" AND {}", crate::rank::ERROR_LINES),
            "exception template",
        ),
        Novelty::Fingerprints => (
            "slow_sql",
            "fingerprint_id",
            "fingerprint",
            format!("pool = {}", d.lit(l.pool)),
            String::new(),
            "slow-SQL fingerprint",
        ),
    };
    let cur = d.since(now - l.window_us);
    let from = now - spec.baseline_us().max(l.window_us);
    let sql = format!(
        "SELECT {key}, max({text_col}) AS _a_{text_col}, \
         sum(CASE WHEN {side} AND {cur} THEN 1 ELSE 0 END) AS g, \
         sum(CASE WHEN {side} THEN 0 ELSE 1 END) AS other \
         FROM {t} WHERE {range} AND project = {p} AND env = {env}{extra} \
         GROUP BY {key} ORDER BY g DESC LIMIT 1000",
        t = e.table(table),
        range = d.time_range(from, now),
        p = d.lit(l.project),
        env = d.lit(l.env),
    );
    let rows = e.rows_owned(sql).await?;
    let min = spec.novelty_min_count.max(1) as f64;
    let new: Vec<String> = rows
        .iter()
        .filter(|r| num(r, "g") >= min && num(r, "other") == 0.0)
        .map(|r| {
            let mut t = text(r, text_col).to_string();
            if t.len() > 120 {
                let mut cut = 120;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
                t.push('…');
            }
            format!("`{t}` ×{}", num(r, "g"))
        })
        .collect();
    Ok(if new.is_empty() {
        Verdict::Pass(format!("no new {name} in {}", l.tag))
    } else {
        Verdict::Fail(format!(
            "{} new {name}{} only in {}: {}",
            new.len(),
            if new.len() == 1 { "" } else { "s" },
            l.tag,
            new.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// One user metric: its SQL's `value` against its bounds.
async fn user_metric(e: &Engine, l: &Lanes<'_>, m: &UserMetric, now: i64) -> Verdict {
    let d = e.dialect();
    let sql = m
        .sql
        .replace(
            "$window",
            &format!("({})", d.time_range(now - l.window_us, now)),
        )
        .replace("$stable_tag", &d.lit(l.stable_tag))
        .replace("$tag", &d.lit(l.tag))
        .replace("$route", &d.lit(l.route))
        .replace("$project", &d.lit(l.project))
        .replace("$env", &d.lit(l.env));
    let rows = match e.user_sql(&sql, 10).await {
        Ok(a) => a.rows,
        Err(err) => return Verdict::Inconclusive(format!("metric {}: {err}", m.name)),
    };
    let Some(v) = rows.first().and_then(|r| r.get("value")).and_then(|v| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }) else {
        return Verdict::Inconclusive(format!("metric {}: no value", m.name));
    };
    let f = apus_rules::alarm::template::format_value;
    if let Some(min) = m.min.filter(|min| v < *min) {
        return Verdict::Fail(format!("metric {} = {} < {}", m.name, f(v), f(min)));
    }
    if let Some(max) = m.max.filter(|max| v > *max) {
        return Verdict::Fail(format!("metric {} = {} > {}", m.name, f(v), f(max)));
    }
    Verdict::Pass(format!("metric {} = {}", m.name, f(v)))
}
