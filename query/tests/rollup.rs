//! The rankings read from hourly rollups answer exactly what they answer from raw rows:
//! same groups, same counts and sums, percentiles within the histogram's 2% — over windows
//! with and without partial edge hours, with rows in Parquet, in memory and compacted, with
//! filters, and falling back to raw rows for dimensions a rollup does not keep.

use std::collections::HashMap;
use std::sync::Arc;

use apus_query::engine::Limits;
use apus_query::params::Params;
use apus_query::{rank, series, Engine, Searcher};
use apus_schema::{AccessRecord, Micros, Row, SlowSqlRecord, Table};
use apus_store::local::LocalStore;
use serde_json::Value;

const HOUR: i64 = 3_600_000_000;
/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200_000_000;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 6 hours of rows in 12 batches: the first 8 flushed (two per hour file, then compacted),
/// the rest left in memory.
fn store(dir: &std::path::Path) -> Arc<LocalStore> {
    let s = LocalStore::open(dir).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let per = 2_000;
    for b in 0..12i64 {
        let ts = |i: i64| Micros(T0 + b * HOUR / 2 + i * (HOUR / 2) / per);
        let slow: Vec<SlowSqlRecord> = (0..per)
            .map(|i| {
                let k = rng.below(30);
                SlowSqlRecord {
                    ts: ts(i),
                    project: "shop".into(),
                    env: "prod".into(),
                    pool: format!("pool-{}", k % 4),
                    db: format!("db{}", k % 3),
                    user: "app".into(),
                    client: format!("10.0.0.{}", rng.below(50)),
                    fingerprint_id: format!("fp{k:02}"),
                    fingerprint: format!("select * from t{k} where id = ?"),
                    sample: format!("select * from t{k} where id = {}", rng.below(1000)),
                    query_time: 0.01 + rng.below(5000) as f64 / 1000.0,
                    rows_examined: rng.below(10_000),
                    ..Default::default()
                }
            })
            .collect();
        let access: Vec<AccessRecord> = (0..per)
            .map(|i| {
                let gray = rng.below(5) == 0;
                AccessRecord {
                    ts: ts(i),
                    project: "shop".into(),
                    env: "prod".into(),
                    route: format!("route-{}", rng.below(4)),
                    pool: format!("pool-{}", rng.below(3)),
                    upstream: format!("10.1.0.{}:80", rng.below(4)),
                    tag: if gray { "gray" } else { "stable" }.into(),
                    tenant: format!("t{}", rng.below(40)),
                    method: "GET".into(),
                    host: "shop".into(),
                    status: [200, 200, 200, 404, 500, 503][rng.below(6) as usize],
                    latency_us: 500 + rng.below(100_000),
                    ..Default::default()
                }
            })
            .collect();
        let seq = b as u64 * 2;
        s.append(
            seq + 1,
            Table::SlowSql,
            SlowSqlRecord::to_batch(&slow).unwrap(),
        );
        s.append(
            seq + 2,
            Table::AccessLog,
            AccessRecord::to_batch(&access).unwrap(),
        );
        if b < 8 {
            s.flush(Table::SlowSql).unwrap();
            s.flush(Table::AccessLog).unwrap();
        }
        if b == 5 {
            // Hours 0 and 1 are closed by now: merge their files (and rollups).
            for t in [Table::SlowSql, Table::AccessLog] {
                assert!(s.compact(t, 2, T0 + 2 * HOUR + 1).unwrap() > 0);
            }
        }
    }
    Arc::new(s)
}

fn engines(s: &Arc<LocalStore>) -> (Engine, Engine) {
    let e = || Engine::new(s.clone(), Searcher::Off, Limits::default());
    let raw = apus_store::read::local::LocalBackend::new(s.clone(), 2 << 30).without_rollups();
    (
        e(),
        Engine::with_backend(Arc::new(raw), Searcher::Off, Limits::default()),
    )
}

fn params(from: i64, to: i64, dims: &[(&str, &str)], allowed: &[&str]) -> Params {
    let mut v = vec![
        ("from".to_string(), from.to_string()),
        ("to".to_string(), to.to_string()),
        ("limit".to_string(), "1000".to_string()),
    ];
    v.extend(dims.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    Params::parse(&v, allowed, &["limit", "order"], T0 + 7 * HOUR).unwrap()
}

fn close(a: &Value, b: &Value, rel: f64, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!(
        (x - y).abs() <= rel * y.abs().max(1e-9),
        "{what}: rollup {x} vs raw {y}"
    );
}

fn by_key(
    rows: Vec<serde_json::Map<String, Value>>,
    key: &[&str],
) -> HashMap<String, serde_json::Map<String, Value>> {
    rows.into_iter()
        .map(|r| {
            let k = key
                .iter()
                .map(|c| r[*c].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join("/");
            (k, r)
        })
        .collect()
}

/// The windows compared: whole hours only, partial edges on both sides, a window reaching
/// into the rows still in memory, and less than an hour (raw only).
const WINDOWS: [(i64, i64); 4] = [
    (T0, T0 + 6 * HOUR),
    (T0 + HOUR / 3, T0 + 5 * HOUR + HOUR / 7),
    (T0 + HOUR, T0 + 6 * HOUR + 5),
    (T0 + 10, T0 + HOUR - 10),
];

#[tokio::test]
async fn slow_sql_top_from_rollups_equals_raw() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (fast, raw) = engines(&s);
    for (from, to) in WINDOWS {
        for dims in [
            &[][..],
            &[("pool", "pool-1")][..],
            &[("client", "10.0.0.7")][..],
        ] {
            let p = params(from, to, dims, rank::SLOW_SQL_DIMS);
            let a = rank::slow_sql_top(&fast, &p).await.unwrap();
            let b = rank::slow_sql_top(&raw, &p).await.unwrap();
            assert!(!b.is_empty());
            assert_eq!(a.len(), b.len(), "{from} {to} {dims:?}");
            // Same order by total time (ties aside, totals differ in this data).
            let ids = |v: &[serde_json::Map<String, Value>]| {
                v.iter()
                    .map(|r| r["fingerprint_id"].clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b), "{from} {to} {dims:?}");
            let (a, b) = (
                by_key(a, &["fingerprint_id"]),
                by_key(b, &["fingerprint_id"]),
            );
            for (k, ra) in &a {
                let rb = &b[k];
                for exact in [
                    "calls",
                    "rows_examined_total",
                    "first_seen",
                    "last_seen",
                    "fingerprint",
                    "db",
                    "min_s",
                    "max_s",
                ] {
                    assert_eq!(ra[exact], rb[exact], "{k} {exact} {from} {to} {dims:?}");
                }
                // The sample is a query of the slowest call; calls tied for slowest may
                // give another of them.
                let table = ra["fingerprint"]
                    .as_str()
                    .unwrap()
                    .replace(" where id = ?", " where id = ");
                for r in [ra, rb] {
                    assert!(r["sample"].as_str().unwrap().starts_with(&table), "{k}");
                }
                for approx in ["total_s", "avg_s", "rows_examined_avg"] {
                    close(&ra[approx], &rb[approx], 1e-9, approx);
                }
                close(&ra["p95_s"], &rb["p95_s"], 0.05, "p95_s");
            }
        }
    }
}

#[tokio::test]
async fn rankings_from_rollups_equal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (fast, raw) = engines(&s);
    for (from, to) in WINDOWS {
        for (dim, dims) in [
            ("pool", &[][..]),
            ("route", &[("tag", "gray")][..]),
            ("upstream", &[("pool", "pool-2")][..]),
            ("tenant", &[][..]),
            ("pool", &[("tenant", "t3")][..]),
        ] {
            let p = params(from, to, dims, rank::ACCESS_DIMS);
            let a = rank::rank(&fast, dim, &p).await.unwrap();
            let b = rank::rank(&raw, dim, &p).await.unwrap();
            assert!(!b.is_empty());
            assert_eq!(a.len(), b.len());
            let (a, b) = (by_key(a, &[dim, "tag"]), by_key(b, &[dim, "tag"]));
            for (k, ra) in &a {
                let rb = &b[k];
                for exact in ["requests", "errors", "client_errors"] {
                    assert_eq!(ra[exact], rb[exact], "{k} {exact} {from} {to} {dims:?}");
                }
                close(&ra["avg_ms"], &rb["avg_ms"], 1e-9, "avg_ms");
                close(&ra["error_rate"], &rb["error_rate"], 1e-9, "error_rate");
                close(&ra["p50_ms"], &rb["p50_ms"], 0.05, "p50_ms");
                close(&ra["p99_ms"], &rb["p99_ms"], 0.05, "p99_ms");
            }
        }
    }
}

#[tokio::test]
async fn time_series_from_rollups_equal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (fast, raw) = engines(&s);
    let opts = ["limit", "order", "metric", "by", "step"];
    for (from, to) in WINDOWS {
        // Whole minutes (the lane rollup), whole hours (the hourly one, which has routes),
        // and a step neither divides (raw rows).
        for (step, by, dims) in [
            ("1m", "tag", &[][..]),
            ("5m", "pool", &[("tag", "gray")][..]),
            ("15m", "none", &[][..]),
            ("1h", "route", &[("pool", "pool-1")][..]),
            ("90s", "tag", &[][..]),
        ] {
            // Requests per bucket and series (the first metric asked).
            let mut sizes = HashMap::new();
            for metric in [
                "requests",
                "errors",
                "error_rate",
                "avg_ms",
                "p50_ms",
                "p99_ms",
            ] {
                let mut v = vec![
                    ("from".to_string(), from.to_string()),
                    ("to".to_string(), to.to_string()),
                    ("step".to_string(), step.to_string()),
                    ("by".to_string(), by.to_string()),
                    ("metric".to_string(), metric.to_string()),
                ];
                v.extend(dims.iter().map(|(a, b)| (a.to_string(), b.to_string())));
                let p = Params::parse(&v, rank::ACCESS_DIMS, &opts, T0 + 7 * HOUR).unwrap();
                let a = series::timeseries(&fast, &p).await.unwrap();
                let b = series::timeseries(&raw, &p).await.unwrap();
                let what = format!("{metric} by {by} step {step} {from} {to} {dims:?}");
                assert!(!b.is_empty(), "{what}");
                assert_eq!(a.len(), b.len(), "{what}");
                for (ra, rb) in a.iter().zip(&b) {
                    // (By `none` the series is the metric's name.)
                    let series = if by == "none" {
                        Value::Null
                    } else {
                        ra["series"].clone()
                    };
                    let key = (ra["ts_us"].to_string(), series.to_string());
                    assert_eq!((&ra["ts_us"], &ra["series"]), (&rb["ts_us"], &rb["series"]));
                    match metric {
                        "requests" | "errors" => assert_eq!(ra["value"], rb["value"], "{what}"),
                        // The sketch's 2%, and rank differences: the sketch reads the lower
                        // of two middle ranks, DataFusion interpolates between them. In a
                        // bucket of tens of rows two neighbours lie ~1/n of the range apart,
                        // so percentiles are compared where buckets hold hundreds.
                        "p50_ms" | "p99_ms" if sizes[&key] >= 200.0 => close(
                            &ra["value"],
                            &rb["value"],
                            0.05,
                            &format!("{what} at {key:?}"),
                        ),
                        "p50_ms" | "p99_ms" => {}
                        _ => close(&ra["value"], &rb["value"], 1e-9, &what),
                    }
                    if metric == "requests" {
                        sizes.insert(key, ra["value"].as_f64().unwrap());
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn rollups_survive_reopen_and_are_rebuilt_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.flush(Table::SlowSql).unwrap();
    s.flush(Table::AccessLog).unwrap();
    let p = params(T0, T0 + 6 * HOUR, &[], rank::ACCESS_DIMS);
    let before = rank::rank(&engines(&s).0, "pool", &p).await.unwrap();
    drop(s);
    // An older store: no rollups at all. Opening builds them again.
    std::fs::remove_dir_all(dir.path().join("access_log_1h")).unwrap();
    std::fs::remove_dir_all(dir.path().join("access_log_1m")).unwrap();
    let s = Arc::new(LocalStore::open(dir.path()).unwrap());
    for level in ["access_log_1h", "access_log_1m"] {
        let n = std::fs::read_dir(dir.path().join(level)).unwrap().count();
        assert!(n > 0, "{level} rebuilt on open");
    }
    let after = rank::rank(&engines(&s).0, "pool", &p).await.unwrap();
    assert_eq!(before, after);
    let total: f64 = after.iter().map(|r| r["requests"].as_f64().unwrap()).sum();
    assert_eq!(total, 24_000.0);
}
