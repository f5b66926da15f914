//! The ClickHouse store read through the query tier, against real `clickhouse-server`
//! processes started by the tests: rankings over a 2-shard cluster and from the hourly
//! views, a server dying mid-query, users' SQL as a read-only user. (The write side —
//! every table, outages, crashes — is `tests/clickhouse.rs`.)

mod common;

use std::time::Duration;

use apus_schema::{AccessRecord, Micros};
use apus_testkit::ClickHouse;
use common::clickhouse::*;
use common::*;

#[test]
fn two_shard_cluster_rankings_and_search_span_both_nodes() {
    let (h1, t1, h2, t2) = (free_port(), free_port(), free_port(), free_port());
    let work = tmpdir("cluster");
    let remote = work.join("remote_servers.xml");
    std::fs::write(
        &remote,
        format!(
            "<remote_servers><apus2>\
             <shard><replica><host>127.0.0.1</host><port>{t1}</port></replica></shard>\
             <shard><replica><host>127.0.0.1</host><port>{t2}</port></replica></shard>\
             </apus2></remote_servers>"
        ),
    )
    .unwrap();
    let ch1 = ClickHouse::start_shard("s1", h1, t1, &remote);
    let ch2 = ClickHouse::start_shard("s2", h2, t2, &remote);
    // Two ingest nodes, each writing its own shard, both declaring the cluster.
    let node = |n: &str, ch: &ClickHouse| {
        let dir = work.join(n);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.with_extension("toml");
        std::fs::write(
            &cfg,
            format!(
                "store = \"{}\"\nclickhouse_cluster = \"apus2\"\n",
                ch.url("apus_c")
            ),
        )
        .unwrap();
        Ingest::start_with(&dir, free_port(), &["--config", cfg.to_str().unwrap()], &[])
    };
    let (i1, mut i2) = (node("n1", &ch1), node("n2", &ch2));
    assert_eq!(post(&i1, "/ingest/v1/access", access_lines(0, 300)), 200);
    assert_eq!(post(&i2, "/ingest/v1/access", access_lines(300, 200)), 200);
    let log = |m: &str| {
        format!("{{\"ts\":\"2026-11-22T07:00:00Z\",\"message\":\"{m}\",\"pool\":\"gray\"}}\n")
    };
    assert_eq!(
        post(
            &i1,
            "/ingest/v1/logs",
            log("checkout timeout on n1").repeat(3)
        ),
        200
    );
    assert_eq!(
        post(
            &i2,
            "/ingest/v1/logs",
            log("checkout timeout on n2").repeat(2)
        ),
        200
    );
    wait_rows(&ch1, "SELECT count() FROM apus_c.access_log", 300);
    wait_rows(&ch2, "SELECT count() FROM apus_c.access_log", 200);
    wait_rows(&ch1, "SELECT count() FROM apus_c.access_log_all", 500);

    // A query node over the cluster: the ranking covers both shards.
    let qport = free_port();
    let search_nodes = [i1.url(""), i2.url("")];
    let child = std::process::Command::new(BIN)
        .args([
            "query",
            "--store",
            &ch1.url("apus_c"),
            "--cluster",
            "--listen",
            &format!("127.0.0.1:{qport}"),
            "--search-node",
            &search_nodes[0],
            "--search-node",
            &search_nodes[1],
            "--tokens",
            tokens_file(&work.join("query")).to_str().unwrap(),
        ])
        .env("APUS_SEARCH_TOKEN", ADMIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.join("query.log")).unwrap())
        .spawn()
        .unwrap();
    let _q = Proc(child);
    let c = client();
    let get = |path: &str| {
        let r = c
            .get(format!("http://127.0.0.1:{qport}{path}"))
            .send()
            .ok()?;
        let st = r.status().as_u16();
        Some((st, r.json::<serde_json::Value>().ok()?))
    };
    wait_until("query node", Duration::from_secs(30), || {
        get("/api/v1/changes").is_some()
    });
    let (st, pools) =
        get("/api/v1/rank/pools?from=2026-11-22T06:00:00Z&to=2026-11-22T08:00:00Z").unwrap();
    assert_eq!(st, 200, "{pools}");
    let sum = |v: &serde_json::Value, col: &str| -> f64 {
        let rows = v["rows"].as_array().unwrap().iter();
        rows.map(|r| r[col].as_f64().unwrap()).sum()
    };
    assert_eq!(sum(&pools, "requests"), 500.0, "{pools}");
    // Time series, slow-SQL TOP N and root cause read the views through the shards too
    // (each shard merges its own states per key first): the SQL must run on 18.16 and
    // the counts must cover both shards.
    let (st, series) = get(
        "/api/v1/timeseries?from=2026-11-22T06:00:00Z&to=2026-11-22T08:00:00Z&metric=requests&by=tag&step=5m",
    )
    .unwrap();
    assert_eq!(st, 200, "{series}");
    assert_eq!(sum(&series, "value"), 500.0, "{series}");
    let (st, top) =
        get("/api/v1/slow-sql/top?from=2026-11-22T06:00:00Z&to=2026-11-22T08:00:00Z").unwrap();
    assert_eq!(st, 200, "{top}");
    let (st, rca) =
        get("/api/v1/rootcause?from=2026-11-22T07:00:00Z&to=2026-11-22T08:00:00Z").unwrap();
    assert_eq!(st, 200, "{rca}");
    let both = rca["current"]["requests"].as_f64().unwrap()
        + rca["baseline"]["requests"].as_f64().unwrap();
    assert_eq!(both, 500.0, "{rca}");
    // Search fans out to both ingest nodes and merges; it never answers from one alone.
    wait_until("both indexes committed", Duration::from_secs(20), || {
        get("/api/v1/logs/search?q=checkout&from=2026-11-22T06:00:00Z&to=2026-11-22T08:00:00Z")
            .is_some_and(|(_, b)| b["total"] == 5)
    });
    i2.proc.kill();
    let (st, body) =
        get("/api/v1/logs/search?q=checkout&from=2026-11-22T06:00:00Z&to=2026-11-22T08:00:00Z")
            .unwrap();
    assert_eq!(st, 502, "a node down fails the search: {body}");
    drop(i1);
}

/// The server dies while a query runs: the query API answers "unavailable" (502) with the
/// reason, at once, instead of hanging.
#[test]
fn clickhouse_dying_mid_query_is_a_clear_unavailable() {
    use apus_query::engine::Limits;
    use apus_query::{Engine, QueryError, Searcher};
    use apus_store::clickhouse::read::{ClickHouseBackend, ReadLimits};
    use apus_store::clickhouse::{ChClient, ChUrl};
    let mut ch = ClickHouse::start("midquery");
    let url = ChUrl::parse(&ch.url("default")).unwrap();
    let backend = ClickHouseBackend::new(ChClient::new(url), false, ReadLimits::default());
    let engine = Engine::with_backend(
        std::sync::Arc::new(backend),
        Searcher::Off,
        Limits::default(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    // A query that takes 3 s on the server.
    let task = rt.spawn(async move { engine.user_sql("SELECT sleep(3) AS s", 10).await });
    std::thread::sleep(Duration::from_millis(700));
    ch.down();
    let r = rt.block_on(task).unwrap();
    let Err(QueryError::Unavailable(why)) = r else {
        panic!("expected unavailable, got {r:?}")
    };
    assert!(why.contains("clickhouse"), "{why}");
    assert_eq!(QueryError::Unavailable(why).status().as_u16(), 502);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Users' SQL as a read-only ClickHouse user: the server itself refuses writes and any
/// attempt to lift the profile's limits, whatever gets past the syntax-tree check.
#[test]
fn users_sql_runs_as_a_read_only_clickhouse_user() {
    use apus_query::engine::Limits;
    use apus_query::{Engine, QueryError, Searcher};
    use apus_store::clickhouse::read::{ClickHouseBackend, ReadLimits};
    use apus_store::clickhouse::{ChClient, ChUrl};
    let ch = ClickHouse::start("reader");
    let admin = ChClient::new(ChUrl::parse(&ch.url("apus_r")).unwrap());
    apus_store::clickhouse::migrate(&admin, 0).unwrap();
    let reader_url = ch.url("apus_r").replace(
        "clickhouse://",
        "clickhouse://apus_reader:reader-test-password@",
    );
    let reader = ChClient::new(ChUrl::parse(&reader_url).unwrap());
    // The server's own refusals, asked directly (no Apus check in front).
    for (sql, why) in [
        (
            "CREATE TABLE apus_r.x (a UInt8) ENGINE = Memory",
            "readonly",
        ),
        ("SELECT 1 SETTINGS max_execution_time = 100000", "readonly"),
    ] {
        let e = reader.execute(sql).unwrap_err().to_string();
        assert!(e.to_lowercase().contains(why), "{sql}: {e}");
    }
    let backend = ClickHouseBackend::new(admin, false, ReadLimits::default()).with_reader(reader);
    let engine = Engine::with_backend(
        std::sync::Arc::new(backend),
        Searcher::Off,
        Limits::default(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = rt
        .block_on(engine.user_sql("SELECT count() AS n FROM access_log", 10))
        .unwrap();
    assert_eq!(a.rows[0]["n"], serde_json::json!(0), "{:?}", a.rows);
    let e = rt
        .block_on(engine.user_sql(
            "SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')",
            10,
        ))
        .unwrap_err();
    assert!(matches!(e, QueryError::BadRequest(_)), "{e}");
}

/// The rankings a ClickHouse store answers from its hourly views (`slow_sql_1h`,
/// `access_log_1h`: whole hours) plus raw rows (the window's partial edges) equal what the
/// raw rows give: counts, sums, min and max exactly, percentiles within the quantile
/// state's error.
#[test]
fn rankings_from_the_hourly_views_equal_raw_rows() {
    let ch = ClickHouse::start("views");
    let dir = tmpdir("views");
    let url = ch.url("apus_rt");
    let ing = Ingest::start_with(&dir, free_port(), &["--store", &url], &[]);
    // 600 requests 37 s apart from 07:00 (6 h 10 min), 90 slow statements 4 min apart.
    let base = 1_795_330_800i64; // 2026-11-22T07:00:00Z
    let access: String = (0..600)
        .map(|i: i64| {
            serde_json::to_string(&AccessRecord {
                ts: Micros((base + i * 37) * 1_000_000),
                request_id: format!("v-{i}"),
                project: "shop".into(),
                env: "prod".into(),
                route: "api".into(),
                pool: ["stable", "gray", "batch"][(i % 3) as usize].into(),
                tag: if i % 3 == 1 { "gray" } else { "stable" }.into(),
                status: if i % 11 == 0 { 503 } else { 200 },
                latency_us: 1000 + (i as u64 * 7919) % 90_000,
                ..Default::default()
            })
            .unwrap()
                + "\n"
        })
        .collect();
    assert_eq!(post(&ing, "/ingest/v1/access", access), 200);
    let slow: String = (0..90)
        .map(|i: i64| {
            let t = base + i * 240;
            format!(
                "# User@Host: app[app] @ web-1 [10.0.0.5]  Id: 12\n\
                 # Query_time: {}.{:06}  Lock_time: 0.000100 Rows_sent: 1  Rows_examined: {}\n\
                 use shop;\nSET timestamp={t};\nSELECT * FROM {} WHERE id = {i};\n",
                i % 4,
                (i * 104_729) % 1_000_000,
                100 + i,
                ["orders", "users", "items"][(i % 3) as usize]
            )
        })
        .collect();
    assert_eq!(
        post(
            &ing,
            "/ingest/v1/slowlog?project=shop&env=prod&pool=db",
            slow
        ),
        200
    );
    wait_rows(&ch, "SELECT count() FROM apus_rt.access_log", 600);
    wait_rows(&ch, "SELECT count() FROM apus_rt.slow_sql", 90);

    let work = dir.join("q");
    std::fs::create_dir_all(&work).unwrap();
    let qport = free_port();
    let child = std::process::Command::new(BIN)
        .args([
            "query",
            "--store",
            &url,
            "--listen",
            &format!("127.0.0.1:{qport}"),
        ])
        .args(["--tokens", tokens_file(&work).to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("query.log")).unwrap())
        .spawn()
        .unwrap();
    let _q = Proc(child);
    let c = client();
    let get = |path: &str| -> Option<serde_json::Value> {
        let r = c
            .get(format!("http://127.0.0.1:{qport}{path}"))
            .send()
            .ok()?;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().ok()
    };
    wait_until("query node", Duration::from_secs(30), || {
        c.get(format!("http://127.0.0.1:{qport}/health"))
            .send()
            .is_ok()
    });
    // 07:20:30 → 11:45:10: four whole hours from the views, two partial edges raw.
    let (from, to) = (base + 1230, base + 4 * 3600 + 2710);
    let window = format!("from={from}&to={to}");
    let raw = |sql: &str| ch.query(&format!("{sql} FORMAT TSV"));
    let cond = format!("ts >= toDateTime({from}) AND ts < toDateTime({to})");

    let pools = get(&format!("/api/v1/rank/pools?{window}")).unwrap();
    let want = raw(&format!(
        "SELECT pool, tag, count(), countIf(status >= 500), quantile(0.99)(latency_us) \
         FROM apus_rt.access_log WHERE {cond} GROUP BY pool, tag ORDER BY pool, tag"
    ));
    let mut got: Vec<(String, String, f64, f64, f64)> = pools["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pool"].as_str().unwrap().to_string(),
                r["tag"].as_str().unwrap().to_string(),
                r["requests"].as_f64().unwrap(),
                r["errors"].as_f64().unwrap(),
                r["p99_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let want: Vec<Vec<&str>> = want.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(got.len(), want.len(), "{pools} vs {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0.as_str(), g.1.as_str()), (w[0], w[1]));
        assert_eq!(g.2, w[2].parse::<f64>().unwrap(), "requests of {w:?}");
        assert_eq!(g.3, w[3].parse::<f64>().unwrap(), "errors of {w:?}");
        let p99 = w[4].parse::<f64>().unwrap() / 1000.0;
        assert!(
            (g.4 - p99).abs() <= p99 * 0.05 + 1.0,
            "p99 {} vs {p99} of {w:?}",
            g.4
        );
    }

    let top = get(&format!("/api/v1/slow-sql/top?{window}")).unwrap();
    let want = raw(&format!(
        "SELECT fingerprint_id, count(), round(sum(query_time), 6), min(query_time), \
         max(query_time), sum(rows_examined) FROM apus_rt.slow_sql WHERE {cond} \
         GROUP BY fingerprint_id ORDER BY fingerprint_id"
    ));
    let mut got: Vec<Vec<String>> = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            [
                "fingerprint_id",
                "calls",
                "total_s",
                "min_s",
                "max_s",
                "rows_examined_total",
            ]
            .iter()
            .map(|k| r[*k].as_str().map_or(r[*k].to_string(), String::from))
            .collect()
        })
        .collect();
    got.sort();
    let want: Vec<Vec<&str>> = want.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(got.len(), want.len(), "{top} vs {want:?}");
    assert_eq!(got.len(), 3, "{top}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[0], w[0]);
        for k in 1..6 {
            let (a, b) = (g[k].parse::<f64>().unwrap(), w[k].parse::<f64>().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "column {k}: {g:?} vs {w:?}"
            );
        }
    }
    // And the plan really reads the views: a whole-hour window has no raw part.
    assert!(ch.count("SELECT count() FROM apus_rt.slow_sql_1h") > 0);
    assert!(ch.count("SELECT count() FROM apus_rt.access_log_1h") > 0);

    // Time series: 15-minute steps from the per-minute view, 1-hour steps from the hourly
    // one, each with raw edges; the same buckets and counts as raw rows, p99 within the
    // t-digest's error.
    assert!(ch.count("SELECT count() FROM apus_rt.access_log_1m") > 0);
    for step in [900i64, 3600] {
        for metric in ["requests", "errors", "p99_ms"] {
            let series = get(&format!(
                "/api/v1/timeseries?{window}&metric={metric}&by=pool&step={step}s"
            ))
            .unwrap();
            let agg = match metric {
                "requests" => "toFloat64(count())",
                "errors" => "toFloat64(countIf(status >= 500))",
                _ => "quantileExact(0.99)(latency_us) / 1000.0",
            };
            let want = raw(&format!(
                "SELECT intDiv(toInt64(ts) * 1000000 + ts_us, {us}) * {us} AS b, pool, {agg} \
                 FROM apus_rt.access_log WHERE {cond} GROUP BY b, pool ORDER BY b, pool",
                us = step * 1_000_000
            ));
            let want: Vec<Vec<&str>> = want.lines().map(|l| l.split('\t').collect()).collect();
            let got: Vec<(i64, String, f64)> = series["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["ts_us"].as_i64().unwrap(),
                        r["series"].as_str().unwrap().to_string(),
                        r["value"].as_f64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                got.len(),
                want.len(),
                "{metric} by {step}s: {series} vs {want:?}"
            );
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.0.to_string(), g.1.as_str()), (w[0].to_string(), w[1]));
                let v = w[2].parse::<f64>().unwrap();
                let tol = if metric == "p99_ms" {
                    v * 0.05 + 1.0
                } else {
                    0.0
                };
                assert!((g.2 - v).abs() <= tol, "{metric} {step}s {g:?} vs {w:?}");
            }
        }
    }
}
