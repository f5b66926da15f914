//! The `query_scale` lines of the query bench: the same four questions (slow-SQL TOP 100,
//! pool ranking, a day of p99 by lane in 15-minute buckets, root cause over the last hour)
//! asked of the embedded store and of ClickHouse, same data, same run; and the TOP 100 and
//! pool ranking asked of ClickHouse by hand, as a user would write them over raw rows.

use std::sync::Arc;

use apus_query::engine::Limits;
use apus_query::params::Params;
use apus_query::{investigate, rank, series, Engine, Searcher};
use apus_schema::Table;
use apus_store::clickhouse::read::{ClickHouseBackend, ReadLimits};
use apus_store::clickhouse::{migrate, rowbinary, ChClient, ChUrl};
use apus_store::local::LocalStore;
use apus_store::read::local::LocalBackend;

use super::{time, SPAN, T_END};

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The four timings of one store, in ms (medians).
pub struct Scale {
    pub top100: f64,
    pub pools: f64,
    pub series: f64,
    pub rootcause: f64,
}

/// Time the four questions on `e`.
pub async fn measure(e: &Engine) -> Scale {
    let day = [("from", "now-24h")];
    let p = Params::parse(&pairs(&day), rank::SLOW_SQL_DIMS, &["limit"], T_END).unwrap();
    assert_eq!(rank::slow_sql_top(e, &p).await.unwrap().len(), 100);
    let top100 = time(5, || rank::slow_sql_top(e, &p)).await;
    let p = Params::parse(&pairs(&day), rank::ACCESS_DIMS, &["limit"], T_END).unwrap();
    let pools = time(5, || rank::rank(e, "pool", &p)).await;
    let opts = ["metric", "by", "step", "source"];
    let q = [
        ("from", "now-24h"),
        ("metric", "p99_ms"),
        ("by", "tag"),
        ("step", "15m"),
    ];
    let p = Params::parse(&pairs(&q), rank::ACCESS_DIMS, &opts, T_END).unwrap();
    assert!(!series::timeseries(e, &p).await.unwrap().is_empty());
    let series = time(5, || series::timeseries(e, &p)).await;
    let q = [("from", "now-1h")];
    let p = Params::parse(
        &pairs(&q),
        rank::ACCESS_DIMS,
        &["metric", "slow_ms", "baseline_from"],
        T_END,
    )
    .unwrap();
    let rootcause = time(3, || investigate::rootcause(e, &p)).await;
    Scale {
        top100,
        pools,
        series,
        rootcause,
    }
}

/// The `RESULT query_scale` line of one store.
pub fn line(store: &str, rows: usize, shards: usize, s: &Scale, extra: &str) {
    println!(
        "RESULT query_scale store={store} rows={rows} shards={shards} top100_ms={:.1} \
         pool_ranking_ms={:.1} timeseries_ms={:.1} rootcause_ms={:.1}{extra}",
        s.top100, s.pools, s.series, s.rootcause
    );
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The number `sql` answers (0 when it fails).
pub fn count(c: &ChClient, sql: &str) -> usize {
    c.execute(sql)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A ClickHouse engine over `url` holding the embedded store's `slow_sql` and `access_log`
/// (copied once: a table whose row count differs is truncated and loaded again).
pub async fn clickhouse(local: &Arc<LocalStore>, url: &str, rows: usize) -> (Engine, ChClient) {
    let u = ChUrl::parse(url).unwrap();
    let client = ChClient::new(u.clone());
    let db = u.database.clone();
    {
        let c = client.clone();
        blocking(move || migrate(&c, 0).unwrap()).await;
    }
    for t in [Table::SlowSql, Table::AccessLog] {
        let name = t.name();
        let (c, sql) = (client.clone(), format!("SELECT count() FROM {db}.{name}"));
        let have = blocking(move || count(&c, &sql)).await;
        if have == rows {
            continue;
        }
        let c = client.clone();
        let views: &[&str] = match t {
            Table::SlowSql => &["slow_sql_1h", "slow_sql_hourly"],
            _ => &["access_log_1h", "access_log_1m"],
        };
        let truncate = std::iter::once(name.to_string())
            .chain(views.iter().map(|v| format!("`.inner.{v}`")))
            .map(|t| format!("TRUNCATE TABLE IF EXISTS {db}.{t}"))
            .collect::<Vec<_>>();
        blocking(move || {
            for sql in truncate {
                let _ = c.execute(&sql);
            }
        })
        .await;
        let started = std::time::Instant::now();
        let batches = LocalBackend::new(local.clone(), 2 << 30)
            .batches(&format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        for (i, b) in batches.into_iter().enumerate() {
            let c = client.clone();
            blocking(move || {
                let mut body = Vec::new();
                rowbinary::encode(&b, "bench", i as u64 + 1, &mut body).unwrap();
                c.insert(t, body).unwrap();
            })
            .await;
        }
        let (c, optimize) = (client.clone(), format!("OPTIMIZE TABLE {db}.{name} FINAL"));
        blocking(move || c.execute(&optimize).ok()).await;
        eprintln!(
            "loaded {rows} rows of {name} into ClickHouse in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let engine = Engine::with_backend(
        Arc::new(ClickHouseBackend::new(
            client.clone(),
            false,
            ReadLimits::default(),
        )),
        Searcher::Off,
        Limits::default(),
    );
    (engine, client)
}

/// The TOP 100 and the pool ranking as a user would write them over raw rows (ms each;
/// tables named with `suffix`, `_all` on a cluster), and the data size on disk (MB) of the
/// database on `c`'s server.
pub async fn by_hand(c: &ChClient, suffix: &str) -> (f64, f64, f64) {
    let db = c.url.database.clone();
    let (from, to) = ((T_END - SPAN) / 1_000_000, T_END / 1_000_000);
    let window = format!("ts >= toDateTime({from}) AND ts < toDateTime({to})");
    let top = format!(
        "SELECT fingerprint_id, any(fingerprint), count() AS calls, sum(query_time) AS total, \
         avg(query_time), min(query_time), max(query_time), quantile(0.95)(query_time), \
         argMax(sample, query_time) FROM {db}.slow_sql{suffix} WHERE {window} \
         GROUP BY fingerprint_id ORDER BY total DESC LIMIT 100 FORMAT Null"
    );
    let pools = format!(
        "SELECT pool, tag, count(), countIf(status >= 500), quantile(0.5)(latency_us), \
         quantile(0.99)(latency_us) FROM {db}.access_log{suffix} WHERE {window} \
         GROUP BY pool, tag ORDER BY count() DESC FORMAT Null"
    );
    let run = |sql: String| {
        let c = c.clone();
        move || {
            let c = c.clone();
            let sql = sql.clone();
            async move { blocking(move || c.execute(&sql).unwrap()).await }
        }
    };
    let top_ms = time(5, run(top)).await;
    let pools_ms = time(5, run(pools)).await;
    (top_ms, pools_ms, data_mb(c).await)
}

/// The data size on disk (MB) of the database on `c`'s server (raw tables and views).
pub async fn data_mb(c: &ChClient) -> f64 {
    let db = c.url.database.clone();
    let size = format!(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND active \
         FORMAT TSV"
    );
    let c = c.clone();
    let bytes: f64 = blocking(move || c.execute(&size).unwrap())
        .await
        .trim()
        .parse()
        .unwrap_or(0.0);
    bytes / 1e6
}
