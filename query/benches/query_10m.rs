//! The query tier at 10M rows per table on the embedded store (Parquet through DataFusion,
//! Tantivy for search): slow-SQL TOP 100, pool ranking, and log search versus the same
//! search as a `LIKE` scan. Data is generated once into `$APUS_BENCH_DIR` (default
//! `/tmp/apus-bench/query-10m`) and reused by later runs.
//!
//!   cargo bench -p apus-query --bench query_10m            # ROWS=10000000 by default
//!
//! Prints one line per measurement, a `RESULT query_scale store=embedded …` line and, with
//! `CLICKHOUSE_URL=clickhouse://host:port/db` (loaded from the same data once), a
//! `RESULT query_scale store=clickhouse …` line with the same questions asked by hand over
//! raw rows beside it; ends with `RESULT query_10m …` (medians). With
//! `CLICKHOUSE_SHARDS` and `CLICKHOUSE_CLUSTER`, only a ClickHouse cluster's line, its data
//! made by the servers themselves (`query_10m/cluster.rs`, `benches/query_cluster.sh`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_query::engine::Limits;
use apus_query::params::Params;
use apus_query::{rank, Engine, Searcher};
use apus_schema::{AccessRecord, LogRecord, Micros, Row, SlowSqlRecord, Table};
use apus_store::local::LocalStore;
use apus_store::search::SearchIndex;

#[path = "query_10m/scale.rs"]
mod scale;

#[path = "query_10m/cluster.rs"]
mod cluster;

/// 2026-11-01T00:00:00Z: data covers the 24 hours before it.
const T_END: i64 = 1_793_491_200_000_000;
const SPAN: i64 = 24 * 3_600_000_000;
const CHUNK: usize = 500_000;

/// xorshift64*: deterministic data without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Skewed pick in 0..n: small values far more often (like real top-N data).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        self.below(a + 1)
    }
}

const WORDS: [&str; 16] = [
    "timeout",
    "refused",
    "reset",
    "checkout",
    "inventory",
    "payment",
    "cache",
    "retry",
    "deadlock",
    "throttled",
    "auth",
    "session",
    "upstream",
    "quota",
    "schema",
    "replica",
];

/// Generate the data set; returns the open store and index (an index has one writer per
/// directory, so the caller must reuse these rather than open them again).
fn generate(dir: &Path, rows: usize) -> (LocalStore, SearchIndex) {
    let store = LocalStore::open(&dir.join("store")).unwrap();
    let search = SearchIndex::open(&dir.join("search")).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let step = SPAN / rows as i64;
    let mut seq = 0u64;
    let started = Instant::now();
    for chunk in 0..rows.div_ceil(CHUNK) {
        let lo = chunk * CHUNK;
        let n = CHUNK.min(rows - lo);
        let ts = |i: usize| Micros(T_END - SPAN + (lo + i) as i64 * step);
        let slow: Vec<SlowSqlRecord> = (0..n)
            .map(|i| {
                let k = rng.skewed(2000);
                SlowSqlRecord {
                    ts: ts(i),
                    project: "shop".into(),
                    env: "prod".into(),
                    pool: format!("pool-{}", k % 20),
                    db: format!("db{}", k % 8),
                    user: "app".into(),
                    client: format!("10.0.{}.{}", k % 200, rng.below(250)),
                    fingerprint_id: format!("{:016x}", k.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    fingerprint: format!(
                        "select * from orders_{k} where customer_id = ? and status in(?+)"
                    ),
                    sample: format!(
                        "SELECT * FROM orders_{k} WHERE customer_id = {} AND status IN (1, 2)",
                        rng.below(1_000_000)
                    ),
                    query_time: 0.1 + rng.below(10_000) as f64 / 1000.0,
                    lock_time: 0.0,
                    rows_sent: rng.below(100),
                    rows_examined: rng.below(100_000),
                }
            })
            .collect();
        let access: Vec<AccessRecord> = (0..n)
            .map(|i| {
                let pool = rng.skewed(20);
                let gray = rng.below(10) == 0;
                AccessRecord {
                    ts: ts(i),
                    request_id: format!("{:032x}", rng.next()),
                    project: "shop".into(),
                    env: "prod".into(),
                    route: format!("route-{}", rng.skewed(50)),
                    pool: format!("pool-{pool}{}", if gray { "-gray" } else { "" }),
                    upstream: format!("10.1.{pool}.{}:8080", rng.below(3)),
                    tag: if gray { "gray" } else { "stable" }.into(),
                    tenant: format!("tenant-{}", rng.skewed(10_000)),
                    client_ip: format!("10.9.{}.{}", rng.below(250), rng.below(250)),
                    method: "GET".into(),
                    host: "shop.example".into(),
                    path: "/api/orders".into(),
                    status: if rng.below(100) == 0 { 500 } else { 200 },
                    latency_us: 1000 + rng.below(200_000),
                    upstream_latency_us: 900 + rng.below(190_000),
                    bytes_in: 300,
                    bytes_out: 1000 + rng.below(20_000),
                }
            })
            .collect();
        let logs: Vec<LogRecord> = (0..n)
            .map(|i| {
                let w = WORDS[rng.skewed(WORDS.len() as u64) as usize];
                let rare = rng.below(100_000);
                let error = rng.below(20) == 0;
                LogRecord {
                    ts: ts(i),
                    project: "shop".into(),
                    env: "prod".into(),
                    pool: format!("pool-{}", rng.skewed(20)),
                    host: format!("host-{}", rng.below(40)),
                    level: if error { "ERROR" } else { "INFO" }.into(),
                    logger: "app".into(),
                    message: format!(
                        "request {} {w} after {} ms code{rare} tenant-{}",
                        rng.below(10_000_000),
                        rng.below(5000),
                        rng.skewed(10_000)
                    ),
                    template_id: format!(
                        "{:016x}",
                        WORDS.iter().position(|x| *x == w).unwrap_or(0)
                    ),
                    template: format!("request <*> {w} after <*> ms <*> <*>"),
                    ..Default::default()
                }
            })
            .collect();
        for (t, b) in [
            (Table::SlowSql, SlowSqlRecord::to_batch(&slow).unwrap()),
            (Table::AccessLog, AccessRecord::to_batch(&access).unwrap()),
        ] {
            seq += 1;
            store.append(seq, t, b);
            store.flush(t).unwrap();
        }
        seq += 1;
        let lb = LogRecord::to_batch(&logs).unwrap();
        store.append(seq, Table::Logs, lb.clone());
        store.flush(Table::Logs).unwrap();
        search.index(seq, lb);
        eprintln!(
            "generated {} rows per table ({:.0} s)",
            lo + n,
            started.elapsed().as_secs_f64()
        );
    }
    while search.checkpoint() < seq {
        std::thread::sleep(Duration::from_millis(200));
    }
    search.refresh().unwrap();
    std::fs::write(dir.join("_complete"), rows.to_string()).unwrap();
    (store, search)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f().await);
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(v)
}

/// The `query_scale` line of ClickHouse at `url` (loaded from `store` once).
async fn clickhouse_scale(store: &Arc<LocalStore>, url: &str, rows: usize) {
    let (ch, client) = scale::clickhouse(store, url, rows).await;
    let s = scale::measure(&ch).await;
    let (hand_top, hand_pools, mb) = scale::by_hand(&client, "").await;
    scale::line(
        "clickhouse",
        rows,
        1,
        &s,
        &format!(
            " hand_top100_ms={hand_top:.1} hand_pool_ranking_ms={hand_pools:.1} data_mb={mb:.0}"
        ),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, as a smoke test on a small data set in a temporary directory.
    let bench = std::env::args().any(|a| a == "--bench");
    // `RUST_LOG=apus_query=debug` prints every generated statement with its time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rows: usize = match std::env::var("ROWS").ok().and_then(|v| v.parse().ok()) {
        Some(n) if bench => n,
        _ if bench => 10_000_000,
        _ => 20_000,
    };
    // A ClickHouse cluster only: its data is made by the servers, no embedded store.
    if let (true, Ok(urls), Ok(name)) = (
        bench,
        std::env::var("CLICKHOUSE_SHARDS"),
        std::env::var("CLICKHOUSE_CLUSTER"),
    ) {
        let urls: Vec<String> = urls.split(',').map(str::to_string).collect();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(cluster::cluster_scale(&urls, &name, rows));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var("APUS_BENCH_DIR") {
        Ok(d) if bench => std::path::PathBuf::from(d),
        _ if bench => format!("/tmp/apus-bench/query-{rows}").into(),
        _ => tmp.path().to_path_buf(),
    };
    let done = std::fs::read_to_string(dir.join("_complete")).ok();
    let (store, search) = if done.as_deref() != Some(&rows.to_string()) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        generate(&dir, rows)
    } else {
        (
            LocalStore::open(&dir.join("store")).unwrap(),
            SearchIndex::open(&dir.join("search")).unwrap(),
        )
    };
    let (store, search) = (Arc::new(store), Arc::new(search));
    let engine = Engine::new(store.clone(), Searcher::Local(search), Limits::default());
    // The same rankings from raw rows only, for the README's before/after.
    let raw = Engine::with_backend(
        Arc::new(
            apus_store::read::local::LocalBackend::new(store.clone(), 2 << 30).without_rollups(),
        ),
        Searcher::Off,
        Limits::default(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Experiment mode: `APUS_SQL='q1;;q2'` times each query on the data set and exits.
    if let Ok(sqls) = std::env::var("APUS_SQL") {
        rt.block_on(async {
            for sql in sqls.split(";;").filter(|q| !q.trim().is_empty()) {
                let n = engine.rows(sql).await.map(|r| r.len());
                let ms = time(3, || engine.rows(sql)).await;
                println!("{ms:>9.1} ms  rows={n:?}  {}", sql.trim());
            }
        });
        return;
    }
    // `APUS_BENCH_ONLY=clickhouse`: load and ask ClickHouse only (the embedded figures
    // need an optimised build; ClickHouse's do not).
    if let (Ok(url), Ok("clickhouse")) = (
        std::env::var("CLICKHOUSE_URL"),
        std::env::var("APUS_BENCH_ONLY").as_deref(),
    ) {
        rt.block_on(clickhouse_scale(&store, &url, rows));
        return;
    }
    rt.block_on(async {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        let all = [("from", "now-24h")];
        let p = Params::parse(&pairs(&all), rank::SLOW_SQL_DIMS, &["limit"], T_END).unwrap();
        let n = engine
            .rows("SELECT count(*) AS n FROM slow_sql")
            .await
            .unwrap();
        eprintln!("rows: {}", n[0]["n"]);
        let top = rank::slow_sql_top(&engine, &p).await.unwrap();
        assert_eq!(top.len(), 100);
        let slow_ms = time(5, || rank::slow_sql_top(&engine, &p)).await;
        println!("slow_sql_top100 median_ms={slow_ms:.1}");
        let slow_raw_ms = time(3, || rank::slow_sql_top(&raw, &p)).await;
        println!("slow_sql_top100 raw rows only median_ms={slow_raw_ms:.1}");

        let p = Params::parse(&pairs(&all), rank::ACCESS_DIMS, &["limit"], T_END).unwrap();
        let pools = rank::rank(&engine, "pool", &p).await.unwrap();
        assert!(pools.len() >= 20);
        let rank_ms = time(5, || rank::rank(&engine, "pool", &p)).await;
        println!("pool_ranking median_ms={rank_ms:.1}");
        let rank_raw_ms = time(3, || rank::rank(&raw, "pool", &p)).await;
        println!("pool_ranking raw rows only median_ms={rank_raw_ms:.1}");

        // Search: terms of different selectivity, newest 50 hits; the same as a LIKE scan.
        let terms = ["code4242", "deadlock", "replica", "code777 OR code778", "timeout"];
        let (from, to) = (T_END - SPAN, T_END);
        let mut search_ms = Vec::new();
        for q in terms {
            let r = engine.search(q, &[], from, to, 50, 0).await.unwrap();
            let ms = time(7, || engine.search(q, &[], from, to, 50, 0)).await;
            println!("search q={q:?} hits={} median_ms={ms:.2}", r.total);
            search_ms.push(ms);
        }
        let mut like_ms = Vec::new();
        for q in ["code4242", "deadlock"] {
            let sql = format!(
                "SELECT ts, message FROM logs WHERE message LIKE '%{q} %' ORDER BY ts DESC LIMIT 50"
            );
            let ms = time(3, || engine.rows(&sql)).await;
            println!("like_scan q={q:?} median_ms={ms:.1}");
            like_ms.push(ms);
        }
        let search_p50 = median(search_ms.clone());
        let like_p50 = median(like_ms);
        // The same questions of both stores (ClickHouse when a server is given).
        let emb = scale::measure(&engine).await;
        scale::line("embedded", rows, 1, &emb, "");
        if let Ok(url) = std::env::var("CLICKHOUSE_URL") {
            clickhouse_scale(&store, &url, rows).await;
        }
        println!(
            "RESULT query_10m rows={rows} slow_sql_top100_ms={slow_ms:.1} pool_ranking_ms={rank_ms:.1} \
             raw_slow_sql_top100_ms={slow_raw_ms:.1} raw_pool_ranking_ms={rank_raw_ms:.1} \
             search_p50_ms={search_p50:.2} like_scan_ms={like_p50:.1} search_vs_like={:.0}x",
            like_p50 / search_p50.max(0.001)
        );
    });
}
