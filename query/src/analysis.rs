//! Rollout analysis: one run compares the gray lane with stable on the same route over the
//! window, from the access log (counts, errors, p99 and latency samples), with the judges
//! of `apus_rules::rollout::judge`; a firing alarm on the route and gray tag fails it.

use apus_rules::alarm::Labels;
use apus_rules::rollout::judge::{self, Counts, Verdict};
use apus_rules::rollout::AnalysisSpec;
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
    Ok(judge::combine(&[
        judge::thresholds(gray, &spec.limits()),
        judge::errors(gray, stable, &spec.error_test()),
        judge::latency(&ms(gray_s), &ms(stable_s), &spec.latency_test()),
    ]))
}
