//! Golden tests of the query tier on a fixed synthetic incident: an hour of traffic on
//! route `api`; 16 minutes before the end a gray rule flip sends tenant `acme` to pool
//! `gray`, whose server answers 60 % of requests with 500 and logs a new exception; a new
//! slow query appears with it. Rankings and root cause must name exactly that.

use std::sync::Arc;

use apus_ingest::schema::{
    AccessRecord, ChangeRecord, LogRecord, Micros, Row, SlowSqlRecord, Table,
};
use apus_ingest::search::SearchIndex;
use apus_ingest::store::LocalStore;
use apus_query::engine::Limits;
use apus_query::engine::Store;
use apus_query::params::Params;
use apus_query::{investigate, rank, Engine, QueryError, Searcher};
use serde_json::Value;

/// 2026-11-22T08:00:00Z, the end of the analysed window.
const T0: i64 = 1_795_334_400_000_000;
const MIN: i64 = 60_000_000;
const FLIP: i64 = T0 - 16 * MIN;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    _ch: Option<ClickHouse>,
}

/// A throwaway ClickHouse server (`scripts/clickhouse-start`).
struct ClickHouse {
    pid: u32,
    http: u16,
    dir: tempfile::TempDir,
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .status();
        let _ = &self.dir;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_clickhouse() -> ClickHouse {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse-start");
    let out = std::process::Command::new(script)
        .arg(dir.path())
        .arg(http.to_string())
        .arg(tcp.to_string())
        .output()
        .expect("scripts/clickhouse-start (needs clickhouse-server: scripts/setup)");
    assert!(
        out.status.success(),
        "clickhouse-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ClickHouse {
        pid: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        http,
        dir,
    }
}

fn batches() -> Vec<(Table, datafusion::arrow::record_batch::RecordBatch)> {
    vec![
        (
            Table::AccessLog,
            AccessRecord::to_batch(&access(T0 - 60 * MIN, T0 - 20 * MIN)).unwrap(),
        ),
        (
            Table::AccessLog,
            AccessRecord::to_batch(&access(T0 - 20 * MIN, T0)).unwrap(),
        ),
        (Table::Logs, LogRecord::to_batch(&logs()).unwrap()),
        (Table::SlowSql, SlowSqlRecord::to_batch(&slow()).unwrap()),
        (Table::Changes, ChangeRecord::to_batch(&changes()).unwrap()),
    ]
}

fn index(dir: &std::path::Path) -> Arc<SearchIndex> {
    let search = Arc::new(SearchIndex::open(&dir.join("search")).unwrap());
    let lb = LogRecord::to_batch(&logs()).unwrap();
    search.index(1, lb);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while search.checkpoint() < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    search.refresh().unwrap();
    search
}

/// The same incident in a real ClickHouse server, read through the ClickHouse backend.
fn clickhouse_fixture() -> Fixture {
    use apus_ingest::clickhouse::{migrate, rowbinary, ChClient, ChUrl};
    let ch = start_clickhouse();
    let url = ChUrl::parse(&format!("clickhouse://127.0.0.1:{}/golden", ch.http)).unwrap();
    let client = ChClient::new(url.clone());
    migrate(&client, 0).unwrap();
    for (seq, (t, b)) in batches().into_iter().enumerate() {
        let mut body = Vec::new();
        rowbinary::encode(&b, "test", seq as u64 + 1, &mut body).unwrap();
        client.insert(t, body).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let search = index(dir.path());
    let engine = Engine::with_store(
        Store::ClickHouse {
            base: url.base,
            database: url.database,
            cluster: false,
        },
        Searcher::Local(search),
        Limits::default(),
    );
    Fixture {
        _dir: dir,
        engine,
        _ch: Some(ch),
    }
}

fn access(t0: i64, t1: i64) -> Vec<AccessRecord> {
    let mut rows = Vec::new();
    let mut i: u64 = 0;
    let mut ts = t0;
    while ts < t1 {
        let tick = ((ts - T0) / 2_000_000).unsigned_abs();
        for (k, tenant) in ["t1", "t2", "t3", "t4", "acme"].into_iter().enumerate() {
            i += 1;
            let gray = tenant == "acme" && ts >= FLIP;
            let (pool, tag, upstream) = if gray {
                ("gray", "gray", "127.0.0.1:7003")
            } else if i.is_multiple_of(2) {
                ("stable", "stable", "127.0.0.1:7001")
            } else {
                ("stable", "stable", "127.0.0.1:7002")
            };
            let status = if gray {
                if tick % 5 < 3 {
                    500
                } else {
                    200
                }
            } else if (tick + k as u64 * 13).is_multiple_of(100) {
                500
            } else {
                200
            };
            rows.push(AccessRecord {
                ts: Micros(ts),
                request_id: format!("r{i}"),
                project: "shop".into(),
                env: "prod".into(),
                route: "api".into(),
                pool: pool.into(),
                upstream: upstream.into(),
                tag: tag.into(),
                tenant: tenant.into(),
                method: "GET".into(),
                path: "/api/orders".into(),
                status,
                latency_us: if gray {
                    80_000
                } else {
                    20_000 + (i % 10) * 1000
                },
                ..Default::default()
            });
        }
        ts += 2_000_000;
    }
    rows
}

fn logs() -> Vec<LogRecord> {
    let mut rows = Vec::new();
    let mut ts = T0 - 60 * MIN;
    let mut i = 0;
    while ts < T0 {
        i += 1;
        if i % 6 == 0 {
            rows.push(LogRecord {
                ts: Micros(ts),
                project: "shop".into(),
                env: "prod".into(),
                pool: "stable".into(),
                level: "ERROR".into(),
                message: format!("db timeout after {} ms", 1000 + i),
                template_id: "00000000000000aa".into(),
                template: "db timeout after <*> ms".into(),
                ..Default::default()
            });
        }
        rows.push(LogRecord {
            ts: Micros(ts),
            project: "shop".into(),
            env: "prod".into(),
            pool: "stable".into(),
            level: "INFO".into(),
            message: format!("order {i} placed"),
            template_id: "00000000000000bb".into(),
            template: "order <*> placed".into(),
            ..Default::default()
        });
        if ts >= FLIP + MIN {
            rows.push(LogRecord {
                ts: Micros(ts),
                project: "shop".into(),
                env: "prod".into(),
                pool: "gray".into(),
                level: "ERROR".into(),
                message: format!("missing config key pricing.v2.rate-{i}"),
                template_id: "00000000000000cc".into(),
                template: "missing config key <*>".into(),
                exception: "java.lang.IllegalStateException".into(),
                tenant: "acme".into(),
                tag: "gray".into(),
                ..Default::default()
            });
        }
        ts += 10_000_000;
    }
    rows
}

fn slow() -> Vec<SlowSqlRecord> {
    let mut rows = Vec::new();
    let mut ts = T0 - 60 * MIN;
    let mut i = 0u64;
    while ts < T0 {
        i += 1;
        rows.push(SlowSqlRecord {
            ts: Micros(ts),
            project: "shop".into(),
            env: "prod".into(),
            pool: "stable".into(),
            db: "shop".into(),
            fingerprint_id: "F1".into(),
            fingerprint: "select * from orders where id = ?".into(),
            sample: format!("SELECT * FROM orders WHERE id = {i}"),
            query_time: 1.0 + (i % 3) as f64,
            rows_examined: 100,
            ..Default::default()
        });
        if ts >= FLIP {
            rows.push(SlowSqlRecord {
                ts: Micros(ts),
                project: "shop".into(),
                env: "prod".into(),
                pool: "gray".into(),
                db: "shop".into(),
                fingerprint_id: "F2".into(),
                fingerprint: "select * from prices where sku in(?+)".into(),
                sample: format!("SELECT * FROM prices WHERE sku IN ({i}, {})", i + 1),
                query_time: 0.5,
                rows_examined: 50_000,
                ..Default::default()
            });
        }
        ts += 30_000_000;
    }
    rows
}

fn changes() -> Vec<ChangeRecord> {
    let c = |ts: i64, kind: &str, scope: &str, touched: &str, summary: &str| ChangeRecord {
        ts: Micros(ts),
        kind: kind.into(),
        actor: "alice".into(),
        project: "shop".into(),
        env: "prod".into(),
        scope: scope.into(),
        from_version: 1,
        to_version: 2,
        summary: summary.into(),
        touched: touched.into(),
    };
    vec![
        c(
            T0 - 45 * MIN,
            "config_release",
            "billing",
            "route:billing pool:billing",
            "billing timeout 2s→3s",
        ),
        c(
            FLIP,
            "gray_rules",
            "api",
            "pool:gray route:api tag:gray tenant:acme",
            "route api: +acme-beta",
        ),
        c(
            T0 - 20 * MIN,
            "server_add",
            "stable/127.0.0.1:7004",
            "pool:stable upstream:127.0.0.1:7004",
            "server_add 127.0.0.1:7004 in pool stable",
        ),
        c(
            T0 - 5 * MIN,
            "server_drain",
            "stable/127.0.0.1:7002",
            "pool:stable upstream:127.0.0.1:7002",
            "drain 127.0.0.1:7002",
        ),
    ]
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
    let search = Arc::new(SearchIndex::open(&dir.path().join("search")).unwrap());
    let mut seq = 0;
    let mut put = |t: Table, b| {
        seq += 1;
        store.append(seq, t, b);
        seq
    };
    // The first 40 minutes of access logs go to Parquet, the rest stays in memory, so
    // every query reads both.
    put(
        Table::AccessLog,
        AccessRecord::to_batch(&access(T0 - 60 * MIN, T0 - 20 * MIN)).unwrap(),
    );
    store.flush(Table::AccessLog).unwrap();
    put(
        Table::AccessLog,
        AccessRecord::to_batch(&access(T0 - 20 * MIN, T0)).unwrap(),
    );
    let lb = LogRecord::to_batch(&logs()).unwrap();
    let s = put(Table::Logs, lb.clone());
    search.index(s, lb);
    put(Table::SlowSql, SlowSqlRecord::to_batch(&slow()).unwrap());
    put(Table::Changes, ChangeRecord::to_batch(&changes()).unwrap());
    // Wait for the index's timed commit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while search.checkpoint() < s && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    search.refresh().unwrap();
    let engine = Engine::new(store, Searcher::Local(search), Limits::default());
    Fixture {
        _dir: dir,
        engine,
        _ch: None,
    }
}

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
    let f = fixture();
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
    let ts = rank::timeseries(e, &p).await.unwrap();
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
    let rc = investigate::rootcause(e, &p).await.unwrap();
    let rows = rc["rows"].as_array().unwrap();
    let first = &rows[0];
    assert_eq!(first["kind"], "change", "{first}");
    assert_eq!(first["change_kind"], "gray_rules", "{first}");
    assert!(
        first["evidence"].as_str().unwrap().contains("before"),
        "{first}"
    );
    let onset = rc["onset"].as_str().unwrap();
    let onset_us = apus_ingest::time::parse_rfc3339(onset).unwrap();
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
    let (rows, truncated) = e
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
