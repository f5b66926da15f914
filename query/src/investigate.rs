//! Root cause for a window and a scope: the queries that feed [`crate::rootcause`] and the
//! assembly of their answers into one ranked list of suspects, each with its evidence.
//!
//! 1. The analysed span is the baseline (default: the window of equal length before `from`)
//!    plus the window. The onset is found in the span's time series of the chosen measure
//!    (error rate, or the share of requests slower than `slow_ms`); the anomalous period is
//!    [onset, to), the baseline everything before it.
//! 2. Per dimension (tag, tenant, pool, route, upstream) the bad/total counts of both
//!    periods go to Adtributor: which values explain the change, with what surprise.
//! 3. Changes (gray flips, releases, rollout steps, server changes) in the lookback before
//!    the onset are ranked by time proximity and by overlap of what they touched with the
//!    explaining dimension values.
//! 4. Exception templates and slow-SQL fingerprints that are new or surged.
//! 5. The route → pool → upstream layers with their error rate and p99 in both periods.

use serde_json::Value;

use crate::engine::Engine;
use crate::params::Params;
use crate::rank::ERROR_LINES;
use crate::rootcause::{
    adtributor, rank_changes_with_grace, ratio, AdtributorParams, Change, ChangeSuspect, DimCounts,
    DimensionSuspect,
};
use crate::QueryError;
use apus_store::read::dialect::Dialect;

mod onset;
mod report;

use apus_store::read::json::{num, rfc3339, text, Row};
use onset::{
    dim_counts_from_view, find_onset, fingerprints_from_view, layer_p99_from_view, layers_from_view,
};
use report::{change_suspect, suspect_list};
pub use report::{Period, Ranked, RootCause, Suspect};

/// Scope dimensions root cause accepts.
pub const RCA_DIMS: &[&str] = &[
    "project", "env", "route", "pool", "upstream", "tenant", "tag",
];
/// Options root cause accepts.
pub const RCA_OPTS: &[&str] = &["metric", "slow_ms", "baseline_from", "lookback"];

/// The dimensions whose values Adtributor weighs.
const EXPLAIN: &[&str] = &["tag", "tenant", "pool", "route", "upstream"];

/// The layers a report shows (worst change of rate first).
const SHOWN_LAYERS: usize = 50;

/// Change suspects scoring at least this go before the other kinds of suspects.
const CHANGE_FIRST: f64 = 0.2;

/// What the analysis measures and against which baseline.
struct Setup {
    metric: &'static str,
    /// SQL: 1 for a bad request (5xx, or slower than `slow_ms`), else 0.
    bad: String,
    /// Start of the baseline.
    base_from: i64,
    /// The whole analysed span: baseline + window.
    span: Params,
}

/// The anomalous period found in the span.
struct Window {
    /// The onset the series showed, if any.
    detected: Option<i64>,
    /// Start of the anomalous period (the onset, or `from`).
    start: i64,
    /// SQL: the row is in the anomalous period.
    cur: String,
    /// Bucket width of the onset series.
    step_us: i64,
}

/// Requests and bad requests of the baseline and the anomalous period.
#[derive(Default)]
struct Totals {
    bt: f64,
    bb: f64,
    ct: f64,
    cb: f64,
}

/// Run the root-cause analysis for `p`: one function per step (see the module doc).
pub async fn rootcause(e: &Engine, p: &Params) -> Result<RootCause, QueryError> {
    let started = std::time::Instant::now();
    let setup = setup(p)?;
    let w = find_onset(e, p, &setup).await?;
    // The layers query's counts per (route, pool, upstream) also give those dimensions'
    // counts, so steps 2, 4 and 5 are one round of concurrent queries.
    let ((explained, totals, layers), (templates, fingerprints)) =
        futures::future::try_join(explain(e, p, &setup, &w), novelties(e, &setup, &w)).await?;
    let suspects: Vec<(String, f64)> = explained
        .iter()
        .flat_map(|d| {
            d.values
                .iter()
                .map(move |v| (format!("{}:{}", d.dimension, v.value), v.explanatory_power))
        })
        .collect();
    let ranked_changes = changes_before(e, p, &setup, &w, &suspects).await?;
    let rows = suspect_list(&ranked_changes, &explained, &templates, &fingerprints);
    let (Totals { bt, bb, ct, cb }, start) = (totals, w.start);
    Ok(RootCause {
        rows,
        metric: setup.metric,
        onset: w.detected.map(rfc3339),
        from: rfc3339(p.from_us),
        to: rfc3339(p.to_us),
        current: Period {
            from: rfc3339(start),
            to: rfc3339(p.to_us),
            requests: ct,
            bad: cb,
            rate: ratio(cb, ct),
        },
        baseline: Period {
            from: rfc3339(setup.base_from),
            to: rfc3339(start),
            requests: bt,
            bad: bb,
            rate: ratio(bb, bt),
        },
        dimensions: explained,
        changes: ranked_changes.iter().map(change_suspect).collect(),
        templates: templates.into_iter().map(|t| t.0).collect(),
        slow_sql: fingerprints.into_iter().map(|t| t.0).collect(),
        layers: layers.into_iter().take(SHOWN_LAYERS).collect(),
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The options: measure, slow threshold, baseline.
fn setup(p: &Params) -> Result<Setup, QueryError> {
    let metric = p.choice("metric", &["error_rate", "latency"])?;
    let slow_ms = match p.opt("slow_ms") {
        None => 1000.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| QueryError::BadRequest(format!("bad slow_ms `{v}`")))?,
    };
    let base_from = match p.opt("baseline_from") {
        Some(v) => crate::params::parse_time(v, apus_schema::time::now_us())?,
        None => p.from_us - (p.to_us - p.from_us),
    };
    if base_from >= p.from_us {
        return Err(QueryError::BadRequest(
            "baseline_from must be before from".into(),
        ));
    }
    let (metric, bad) = match metric {
        "error_rate" => (
            "error_rate",
            "CASE WHEN status >= 500 THEN 1 ELSE 0 END".to_string(),
        ),
        _ => (
            "latency",
            format!(
                "CASE WHEN latency_us > {} THEN 1 ELSE 0 END",
                (slow_ms * 1000.0) as i64
            ),
        ),
    };
    Ok(Setup {
        metric,
        bad,
        base_from,
        span: p.with_range(base_from, p.to_us),
    })
}

/// The dimensions whose counts come from the layers query's rows (summed per value).
const LAYER_DIMS: &[&str] = &["pool", "route", "upstream"];

/// Step 2: per dimension, the bad/total counts of both periods, weighed by Adtributor; and
/// step 5's layers, whose rows give the pool, route and upstream counts (tag and tenant
/// have their own queries).
async fn explain(
    e: &Engine,
    p: &Params,
    s: &Setup,
    w: &Window,
) -> Result<(Vec<DimensionSuspect>, Totals, Vec<Row>), QueryError> {
    let d = e.dialect();
    let t_access = e.table("access_log");
    let (cur, bad) = (&w.cur, &s.bad);
    let dims: Vec<&str> = EXPLAIN
        .iter()
        .copied()
        .filter(|d| !p.dims.iter().any(|(k, _)| k == d))
        .collect();
    let own: Vec<&str> = dims
        .iter()
        .copied()
        .filter(|d| !LAYER_DIMS.contains(d))
        .collect();
    let dim_queries = own.iter().map(|dim| {
        if let Some(sql) = dim_counts_from_view(e, s, w, dim) {
            return e.rows_owned(sql);
        }
        e.rows_owned(format!(
            "SELECT {dim} AS value, sum(CASE WHEN {cur} THEN 0 ELSE 1 END) AS bt, \
             sum(CASE WHEN {cur} THEN 0 ELSE {bad} END) AS bb, \
             sum(CASE WHEN {cur} THEN 1 ELSE 0 END) AS ct, \
             sum(CASE WHEN {cur} THEN {bad} ELSE 0 END) AS cb \
             FROM {t_access} WHERE {} GROUP BY value",
            s.span.conditions(d, &[])
        ))
    });
    let (own_rows, layers) =
        futures::future::try_join(futures::future::try_join_all(dim_queries), layers(e, s, w))
            .await?;
    let mut t = Totals::default();
    for r in &layers {
        t.bt += num(r, "baseline_requests");
        t.bb += num(r, "baseline_bad");
        t.ct += num(r, "requests");
        t.cb += num(r, "bad");
    }
    let mut counts = Vec::new();
    for dim in &dims {
        let values: Vec<DimCounts> = match own.iter().position(|o| o == dim) {
            Some(i) => own_rows[i]
                .iter()
                .map(|r| DimCounts {
                    dimension: dim.to_string(),
                    value: text(r, "value").to_string(),
                    baseline_total: num(r, "bt"),
                    baseline_bad: num(r, "bb"),
                    current_total: num(r, "ct"),
                    current_bad: num(r, "cb"),
                })
                .collect(),
            None => per_value(&layers, dim),
        };
        // A dimension with one value cannot discriminate (it "explains" everything).
        if values.len() >= 2 {
            counts.extend(values);
        }
    }
    // Every qualifying dimension is reported (ranked by surprise): tag, pool and upstream
    // often move together with the tenant a rule sends, and an SRE wants to see all four.
    let explained = adtributor(
        &counts,
        &AdtributorParams {
            max_dimensions: EXPLAIN.len(),
            ..AdtributorParams::default()
        },
    );
    Ok((explained, t, layers))
}

/// The layers' counts summed per value of `dim` (one of [`LAYER_DIMS`]), in value order.
fn per_value(layers: &[Row], dim: &str) -> Vec<DimCounts> {
    let mut by: std::collections::BTreeMap<&str, [f64; 4]> = std::collections::BTreeMap::new();
    for r in layers {
        let c = by.entry(text(r, dim)).or_default();
        c[0] += num(r, "baseline_requests");
        c[1] += num(r, "baseline_bad");
        c[2] += num(r, "requests");
        c[3] += num(r, "bad");
    }
    by.into_iter()
        .map(|(v, c)| DimCounts {
            dimension: dim.to_string(),
            value: v.to_string(),
            baseline_total: c[0],
            baseline_bad: c[1],
            current_total: c[2],
            current_bad: c[3],
        })
        .collect()
}

/// Step 3: changes in the lookback before the onset, ranked by time proximity and by overlap
/// of what they touched with the explaining values.
async fn changes_before(
    e: &Engine,
    p: &Params,
    s: &Setup,
    w: &Window,
    suspects: &[(String, f64)],
) -> Result<Vec<ChangeSuspect>, QueryError> {
    let d = e.dialect();
    let t_changes = e.table("changes");
    let lookback_us = match p.opt("lookback") {
        Some(v) => crate::series::parse_step(v)? * 1_000_000,
        None => (w.start - s.base_from).max(3_600_000_000),
    };
    let mut change_scope = vec![d.time_range(w.start - lookback_us, p.to_us + 1)];
    for (k, v) in &p.dims {
        if k == "project" || k == "env" {
            change_scope.push(format!("({k} = {} OR {k} = '')", d.lit(v)));
        }
    }
    let change_rows = e
        .rows(&format!(
            "SELECT {} AS at_us, {} FROM {t_changes} WHERE {} ORDER BY at_us",
            d.us(),
            crate::rank::CHANGE_COLUMNS,
            change_scope.join(" AND ")
        ))
        .await?;
    let changes: Vec<Change> = change_rows
        .iter()
        .map(|r| Change {
            id: format!(
                "{}:{}:v{}",
                text(r, "kind"),
                text(r, "scope"),
                num(r, "to_version")
            ),
            ts: num(r, "at_us") as i64,
            kind: text(r, "kind").to_string(),
            touched: apus_schema::Touched::parse(text(r, "touched")),
            summary: text(r, "summary").to_string(),
        })
        .collect();
    let half_life = (lookback_us / 4).max(60_000_000);
    Ok(rank_changes_with_grace(
        &changes, w.start, suspects, half_life, w.step_us,
    ))
}

type Surged = Vec<(Row, crate::rootcause::Surge)>;

/// Step 4: exception templates and slow-SQL fingerprints that are new or surged.
async fn novelties(e: &Engine, s: &Setup, w: &Window) -> Result<(Surged, Surged), QueryError> {
    let d = e.dialect();
    let (t_logs, t_slow) = (e.table("logs"), e.table("slow_sql"));
    let (cur, span) = (&w.cur, &s.span);
    let windows = crate::rootcause::Windows {
        current_s: (span.to_us - w.start) as f64 / 1e6,
        baseline_s: (w.start - s.base_from).max(1) as f64 / 1e6,
    };
    let log_scope = scoped(d, span, &["project", "env", "pool", "tenant", "tag"]);
    let tpl_sql = format!(
        "SELECT pool, template_id, {any}(template) AS _a_template, {any}(exception) AS _a_exception, \
         {sample} AS _a_sample, \
         sum(CASE WHEN {cur} THEN 1 ELSE 0 END) AS cur, \
         sum(CASE WHEN {cur} THEN 0 ELSE 1 END) AS base \
         FROM {t_logs} WHERE {log_scope} AND {ERROR_LINES} GROUP BY pool, template_id",
        sample = d.arg_max("message", d.us()),
        any = any(d),
    );
    let sql_dims = ["project", "env", "pool"];
    let sql_scope = scoped(d, span, &sql_dims);
    let fp_sql = fingerprints_from_view(e, s, w, &sql_dims).unwrap_or_else(|| {
        format!(
            "SELECT fingerprint_id, {any}(fingerprint) AS _a_fingerprint, \
         sum(CASE WHEN {cur} THEN 1 ELSE 0 END) AS cur, \
         sum(CASE WHEN {cur} THEN 0 ELSE 1 END) AS base, \
         sum(CASE WHEN {cur} THEN query_time ELSE 0 END) AS cur_total_s \
         FROM {t_slow} WHERE {sql_scope} GROUP BY fingerprint_id",
            any = any(d),
        )
    });
    let (tpl_rows, fp_rows) =
        futures::future::try_join(e.rows_owned(tpl_sql), e.rows_owned(fp_sql)).await?;
    let templates = surged(&tpl_rows, windows, |r| {
        format!("{}\u{1f}{}", text(r, "pool"), text(r, "template_id"))
    });
    let fingerprints = surged(&fp_rows, windows, |r| text(r, "fingerprint_id").to_string());
    Ok((templates, fingerprints))
}

/// Step 5: the route → pool → upstream layers with their requests, bad requests and p99 in
/// both periods, worst change of rate first.
async fn layers(e: &Engine, s: &Setup, w: &Window) -> Result<Vec<Row>, QueryError> {
    let d = e.dialect();
    let t_access = e.table("access_log");
    let (cur, bad, span) = (&w.cur, &s.bad, &s.span);
    let from_view = layers_from_view(e, s, w);
    let from_view_used = from_view.is_some();
    let layer_sql = from_view.unwrap_or_else(|| {
        format!(
            "SELECT route, pool, upstream, sum(CASE WHEN {cur} THEN 1 ELSE 0 END) AS requests, \
         sum(CASE WHEN {cur} THEN {bad} ELSE 0 END) AS bad, \
         sum(CASE WHEN {cur} THEN 0 ELSE 1 END) AS baseline_requests, \
         sum(CASE WHEN {cur} THEN 0 ELSE {bad} END) AS baseline_bad, \
         {p99} / 1000.0 AS p99_ms, {bp99} / 1000.0 AS baseline_p99_ms \
         FROM {t_access} WHERE {} GROUP BY route, pool, upstream",
            span.conditions(d, &[]),
            p99 = latency_p99_if(d, cur),
            bp99 = latency_p99_if(d, &format!("NOT ({cur})")),
        )
    });
    let mut layers: Vec<Row> = e
        .rows_owned(layer_sql)
        .await?
        .into_iter()
        .map(|mut r| {
            let cur_rate = ratio(num(&r, "bad"), num(&r, "requests"));
            let base_rate = ratio(num(&r, "baseline_bad"), num(&r, "baseline_requests"));
            r.insert("rate".into(), Value::from(cur_rate));
            r.insert("baseline_rate".into(), Value::from(base_rate));
            r
        })
        .collect();
    layers.sort_by(|a, b| {
        (num(b, "rate") - num(b, "baseline_rate"))
            .total_cmp(&(num(a, "rate") - num(a, "baseline_rate")))
    });
    if from_view_used {
        // The view's counts came first; the p99s of the layers shown, now.
        let shown = &layers[..layers.len().min(SHOWN_LAYERS)];
        let keys: Vec<(&str, &str, &str)> = shown
            .iter()
            .map(|r| (text(r, "route"), text(r, "pool"), text(r, "upstream")))
            .collect();
        if let Some(sql) = layer_p99_from_view(e, s, w, &keys) {
            let key = |r: &Row| ["route", "pool", "upstream"].map(|c| text(r, c).to_string());
            let p99: std::collections::HashMap<[String; 3], (Value, Value)> = e
                .rows(&sql)
                .await?
                .into_iter()
                .map(|r| {
                    let v = (r["p99_ms"].clone(), r["baseline_p99_ms"].clone());
                    (key(&r), v)
                })
                .collect();
            for r in layers.iter_mut().take(SHOWN_LAYERS) {
                let (c, b) = p99
                    .get(&key(r))
                    .cloned()
                    .unwrap_or((Value::from(0.0), Value::from(0.0)));
                r.insert("p99_ms".into(), c);
                r.insert("baseline_p99_ms".into(), b);
            }
        }
    }
    Ok(layers)
}

/// Any one value of a text column within a group (ClickHouse's `any` reads no more than it
/// must; DataFusion has `max`).
fn any(d: Dialect) -> &'static str {
    match d {
        Dialect::ClickHouse => "any",
        Dialect::DataFusion => "max",
    }
}

/// p99 of `latency_us` (µs) over the rows meeting `cond`. ClickHouse: `quantileTimingIf`
/// over milliseconds (exact to 1 ms below 1 s, the lane view's precision), several times
/// faster per group than `quantileIf`'s reservoir.
fn latency_p99_if(d: Dialect, cond: &str) -> String {
    match d {
        Dialect::ClickHouse => {
            format!("(quantileTimingIf(0.99)(intDiv(latency_us, 1000), {cond}) * 1000.0)")
        }
        Dialect::DataFusion => d.pct_if(0.99, "latency_us", cond),
    }
}

fn scoped(d: apus_store::read::dialect::Dialect, span: &Params, allowed: &[&str]) -> String {
    let skip: Vec<&str> = span
        .dims
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !allowed.contains(k))
        .collect();
    span.conditions(d, &skip)
}

fn surged(
    rows: &[Row],
    windows: crate::rootcause::Windows,
    key: impl Fn(&Row) -> String,
) -> Surged {
    crate::rootcause::surged_rows(rows, windows, 3.0, key)
        .into_iter()
        .take(20)
        .map(|(r, s)| (r.clone(), s))
        .collect()
}
