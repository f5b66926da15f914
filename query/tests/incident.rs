//! Golden tests of the query tier on a fixed synthetic incident (see `golden/data.rs`):
//! rankings and root cause must name exactly the gray rule flip, the tenant and lane it
//! broke, and the exception and slow query it brought — on both stores.

mod golden;

use apus_query::params::Params;
use apus_query::{investigate, rank, series, Engine, QueryError};
use golden::data::{FLIP, MIN, T0};
use golden::{clickhouse_fixture, embedded_fixture};
use serde_json::Value;

fn params(q: &[(&str, &str)], dims: &[&str], opts: &[&str]) -> Result<Params, QueryError> {
    let pairs: Vec<(String, String)> = q
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    Params::parse(&pairs, dims, opts, T0)
}

const LAST_30M: &[(&str, &str)] = &[("from", "now-30m"), ("to", "now")];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn golden_incident_on_the_embedded_store() {
    let f = embedded_fixture();
    runtime().block_on(rankings_and_root_cause_of_a_gray_flip(&f.engine));
}

#[test]
fn golden_incident_on_clickhouse() {
    let f = clickhouse_fixture();
    runtime().block_on(rankings_and_root_cause_of_a_gray_flip(&f.engine));
}

async fn rankings_and_root_cause_of_a_gray_flip(e: &Engine) {
    // Pool ranking: gray sits beside stable with its own error rate and latency.
    let p = params(LAST_30M, rank::ACCESS_DIMS, &["limit", "order"]).unwrap();
    let pools = rank::rank(e, "pool", &p).await.unwrap();
    let lanes: Vec<(String, String)> = pools
        .iter()
        .map(|r| {
            (
                r["pool"].as_str().unwrap().into(),
                r["tag"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        lanes,
        vec![
            ("stable".into(), "stable".into()),
            ("gray".into(), "gray".into())
        ]
    );
    let gray = &pools[1];
    assert_eq!(gray["requests"], 480, "{gray:?}");
    let rate = gray["error_rate"].as_f64().unwrap();
    assert!((rate - 0.6).abs() < 0.01, "gray error rate {rate}");
    assert!(
        (gray["p99_ms"].as_f64().unwrap() - 80.0).abs() < 1.0,
        "{gray:?}"
    );
    assert!(pools[0]["error_rate"].as_f64().unwrap() < 0.02);

    // Ordering by error rate puts gray first.
    let p = params(
        &[("from", "now-30m"), ("order", "error_rate")],
        rank::ACCESS_DIMS,
        &["limit", "order"],
    )
    .unwrap();
    let by_rate = rank::rank(e, "pool", &p).await.unwrap();
    assert_eq!(by_rate[0]["pool"], "gray");

    // Slow SQL TOP: F1 leads by total time; F2 (new) follows; digest field names.
    let p = params(LAST_30M, rank::SLOW_SQL_DIMS, &["limit", "order"]).unwrap();
    let top = rank::slow_sql_top(e, &p).await.unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["fingerprint_id"], "F1");
    assert_eq!(top[0]["rank"], 1);
    assert_eq!(top[0]["calls"], 60);
    assert!(
        (top[0]["total_s"].as_f64().unwrap() - 120.0).abs() < 1e-9,
        "{:?}",
        top[0]
    );
    assert_eq!(top[0]["min_s"], 1.0);
    assert_eq!(top[0]["max_s"], 3.0);
    assert!(top[0]["sample"]
        .as_str()
        .unwrap()
        .starts_with("SELECT * FROM orders"));
    for k in [
        "avg_s",
        "p95_s",
        "rows_examined_avg",
        "first_seen",
        "last_seen",
    ] {
        assert!(top[0].contains_key(k), "missing {k}");
    }
    assert_eq!(top[1]["fingerprint_id"], "F2");
    let p = params(
        &[("from", "now-30m"), ("order", "calls"), ("pool", "gray")],
        rank::SLOW_SQL_DIMS,
        &["limit", "order"],
    )
    .unwrap();
    let gray_sql = rank::slow_sql_top(e, &p).await.unwrap();
    assert_eq!(gray_sql.len(), 1);
    assert_eq!(gray_sql[0]["calls"], 32);

    // Exceptions: the new gray exception is flagged new, the steady timeout is not.
    let p = params(LAST_30M, rank::LOG_DIMS, &["limit", "lines"]).unwrap();
    let ex = rank::exceptions_top(e, &p).await.unwrap();
    let new: Vec<&str> = ex
        .iter()
        .filter(|r| r["new"] == true)
        .map(|r| r["template"].as_str().unwrap())
        .collect();
    assert_eq!(new, vec!["missing config key <*>"], "{ex:?}");
    let steady = ex
        .iter()
        .find(|r| r["template_id"] == "00000000000000aa")
        .unwrap();
    assert_eq!(steady["new"], false);
    assert_eq!(steady["surge"], false);
    assert!(
        ex.iter().all(|r| r["template_id"] != "00000000000000bb"),
        "INFO lines excluded"
    );

    // Time series of the error rate by lane.
    let p = params(
        &[
            ("from", "now-30m"),
            ("metric", "error_rate"),
            ("step", "5m"),
        ],
        rank::ACCESS_DIMS,
        &["metric", "step", "by"],
    )
    .unwrap();
    let ts = series::timeseries(e, &p).await.unwrap();
    assert!(ts.iter().any(|r| r["series"] == "gray"));
    assert!(ts.iter().all(|r| r["ts"].as_str().unwrap().ends_with('Z')));

    // Change timeline.
    let p = params(&[("from", "now-1h")], rank::CHANGE_DIMS, &["limit"]).unwrap();
    let ch = rank::changes(e, &p).await.unwrap();
    assert_eq!(ch.len(), 4);
    assert_eq!(ch[0]["kind"], "server_drain", "newest first");

    // Root cause.
    let p = params(
        &[("from", "now-30m"), ("project", "shop")],
        investigate::RCA_DIMS,
        investigate::RCA_OPTS,
    )
    .unwrap();
    let rc = serde_json::to_value(investigate::rootcause(e, &p).await.unwrap()).unwrap();
    let rows = rc["rows"].as_array().unwrap();
    let first = &rows[0];
    assert_eq!(first["kind"], "change", "{first}");
    assert_eq!(first["change_kind"], "gray_rules", "{first}");
    assert!(
        first["evidence"].as_str().unwrap().contains("before"),
        "{first}"
    );
    let onset = rc["onset"].as_str().unwrap();
    let onset_us = apus_schema::time::parse_rfc3339(onset).unwrap();
    assert!(
        (FLIP - 2 * MIN..=FLIP + 2 * MIN).contains(&onset_us),
        "onset {onset}"
    );
    let dims: Vec<(String, Vec<String>)> = rc["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["dimension"].as_str().unwrap().to_string(),
                d["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["value"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert!(
        dims.contains(&("tag".into(), vec!["gray".into()])),
        "{dims:?}"
    );
    assert!(
        dims.contains(&("tenant".into(), vec!["acme".into()])),
        "{dims:?}"
    );
    let tpl = rows
        .iter()
        .find(|r| r["kind"] == "template")
        .expect("the new exception template is a suspect");
    assert_eq!(tpl["template"], "missing config key <*>");
    assert_eq!(tpl["new"], true);
    let sql = rows
        .iter()
        .find(|r| r["kind"] == "slow_sql")
        .expect("new slow SQL");
    assert_eq!(sql["fingerprint_id"], "F2");
    // The unrelated billing release and the later drain rank below the flip.
    let order: Vec<&str> = rows
        .iter()
        .filter(|r| r["kind"] == "change")
        .map(|r| r["change_kind"].as_str().unwrap())
        .collect();
    assert_eq!(order[0], "gray_rules", "{order:?}");
    let layers = rc["layers"].as_array().unwrap();
    assert_eq!(layers[0]["pool"], "gray", "worst layer first: {layers:?}");
    assert_eq!(layers[0]["upstream"], "127.0.0.1:7003");

    // Log search: the exception is found, newest first, with paging.
    let r = e
        .search(
            "config",
            &[("pool".into(), "gray".into())],
            T0 - 60 * MIN,
            T0,
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(r.total, 90);
    assert_eq!(r.rows.len(), 10);
    assert!(r.rows.windows(2).all(|w| w[0].ts >= w[1].ts));
    let page2 = e
        .search(
            "config",
            &[("pool".into(), "gray".into())],
            T0 - 60 * MIN,
            T0,
            10,
            10,
        )
        .await
        .unwrap();
    assert!(page2.rows[0].ts <= r.rows[9].ts);

    // Read-only SQL.
    let apus_store::read::Answer { rows, truncated } = e
        .user_sql(
            "SELECT tenant, count(*) AS n FROM access_log GROUP BY tenant",
            3,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(truncated);
    for bad in ["DROP VIEW logs", "SELECT * FROM nope", "SELECT 1; SELECT 2"] {
        let err = e.user_sql(bad, 10).await.unwrap_err();
        assert!(matches!(err, QueryError::BadRequest(_)), "{bad}: {err}");
    }
}

#[test]
fn bad_parameters_are_rejected_with_the_reason() {
    let e = params(&[("tenannt", "x")], rank::ACCESS_DIMS, &["limit"]).unwrap_err();
    assert!(e.to_string().contains("`tenannt`"), "{e}");
    let e = params(&[("from", "tomorrow")], rank::ACCESS_DIMS, &[]).unwrap_err();
    assert!(e.to_string().contains("bad time"), "{e}");
    let v: Value = serde_json::json!(e.to_string());
    assert!(v.is_string());
}

/// Root cause asks ClickHouse's per-minute views for the onset series, the extent, the tag
/// and tenant counts, the layers and the slow-SQL fingerprints (raw rows at the edges),
/// and the embedded store raw rows: both must find the same onset, the same counts, the
/// same layers (p99 within the two stores' quantile precision) and the same new or surged
/// fingerprints, for a window on whole minutes and one that is not.
#[test]
fn root_cause_agrees_on_both_stores() {
    let (emb, ch) = (embedded_fixture(), clickhouse_fixture());
    let rt = runtime();
    for (from, to) in [("now-30m", "now"), ("now-1777s", "now-17s")] {
        let p = params(
            &[("from", from), ("to", to), ("project", "shop")],
            investigate::RCA_DIMS,
            investigate::RCA_OPTS,
        )
        .unwrap();
        let run = |e: &Engine| {
            let v =
                serde_json::to_value(rt.block_on(investigate::rootcause(e, &p)).unwrap()).unwrap();
            let dims: Vec<(Value, Vec<(Value, String)>)> = v["dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let vals = d["values"].as_array().unwrap().iter();
                    (
                        d["dimension"].clone(),
                        vals.map(|x| {
                            (
                                x["value"].clone(),
                                format!("{:.6}", x["explanatory_power"].as_f64().unwrap_or(-1.0)),
                            )
                        })
                        .collect(),
                    )
                })
                .collect();
            let mut layers: Vec<(String, Vec<Value>, f64)> = v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let key = ["route", "pool", "upstream"].map(|k| l[k].as_str().unwrap());
                    let counts = ["requests", "bad", "baseline_requests", "baseline_bad"]
                        .map(|k| Value::from(l[k].as_f64().unwrap()));
                    (
                        key.join("/"),
                        counts.to_vec(),
                        l["p99_ms"].as_f64().unwrap(),
                    )
                })
                .collect();
            layers.sort_by(|a, b| a.0.cmp(&b.0));
            let slow: Vec<Value> = v["slow_sql"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    serde_json::json!([
                        f["fingerprint_id"],
                        f["fingerprint"],
                        f["cur"],
                        f["base"],
                        format!("{:.3}", f["cur_total_s"].as_f64().unwrap())
                    ])
                })
                .collect();
            (
                (
                    v["onset"].clone(),
                    v["current"].clone(),
                    v["baseline"].clone(),
                    dims,
                ),
                layers,
                slow,
            )
        };
        let (a, b) = (run(&emb.engine), run(&ch.engine));
        assert!(
            !a.0 .3.is_empty(),
            "{from}..{to}: no dimension explains anything: {a:?}"
        );
        assert_eq!(a.0, b.0, "{from}..{to}: embedded vs ClickHouse");
        assert!(!a.2.is_empty(), "{from}..{to}: no new or surged SQL");
        assert_eq!(a.2, b.2, "{from}..{to}: slow SQL, embedded vs ClickHouse");
        assert!(a.1.len() >= 2, "{from}..{to}: layers {:?}", a.1);
        assert_eq!(a.1.len(), b.1.len(), "{from}..{to}: layers");
        for (x, y) in a.1.iter().zip(&b.1) {
            assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{from}..{to}: layer counts");
            // DataFusion's t-digest against quantileTiming's whole milliseconds.
            assert!(
                (x.2 - y.2).abs() <= 0.05 * x.2.max(y.2) + 1.0,
                "{from}..{to}: layer {} p99 {} vs {}",
                x.0,
                x.2,
                y.2
            );
        }
    }
}
