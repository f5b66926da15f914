//! The `query_scale` line of a 2-shard ClickHouse cluster at 100M rows: the data is made by
//! each server itself (`INSERT … SELECT … FROM numbers()`, the same distributions as
//! [`super::generate`]: skewed fingerprints, pools, routes and tenants, 10 % gray, 1 % 500s),
//! half the rows on each shard, so no 100M-row embedded store has to be built first.
//!
//!   CLICKHOUSE_SHARDS=clickhouse://127.0.0.1:H1/db,clickhouse://127.0.0.1:H2/db \
//!   CLICKHOUSE_CLUSTER=apus2 ROWS=100000000 cargo bench -p apus-query --bench query_10m
//!
//! (`benches/query_cluster.sh` starts the two servers and runs this.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_query::engine::Limits;
use apus_query::{Engine, Searcher};
use apus_store::clickhouse::read::{ClickHouseBackend, ReadLimits};
use apus_store::clickhouse::{migrate_cluster, ChClient, ChUrl};

use super::scale::{self, count};
use super::{SPAN, T_END};

/// `skewed(n)` of the generator over two hashes of the row: small values far more often.
fn skewed(n: u64, a: &str, b: &str) -> String {
    format!("(intHash64(n * 16 + {b}) % ((intHash64(n * 16 + {a}) % {n}) + 1))")
}

/// The row's `k`-th uniform value below `n`.
fn below(n: u64, k: u32) -> String {
    format!("(intHash64(n * 16 + {k}) % {n})")
}

/// Rows per INSERT (one statement must finish within the client's request timeout).
const CHUNK_ROWS: usize = 2_000_000;

/// Rows `[lo, lo + len)` of shard `s` of `shards` (global row numbers `n ≡ s mod shards`),
/// `rows` in all, spread evenly over the bench's day: the SELECT feeding `table`.
fn rows_sql(table: &str, rows: usize, s: usize, shards: usize, lo: usize, len: usize) -> String {
    let t0 = T_END - SPAN;
    let base = format!(
        "SELECT (number + {lo}) * {shards} + {s} AS n, {t0} + intDiv(n * {SPAN}, {rows}) AS t_us \
         FROM numbers({len})"
    );
    let time = "toDateTime(intDiv(t_us, 1000000)) AS ts, toUInt32(t_us % 1000000) AS ts_us";
    match table {
        "slow_sql" => {
            let k = skewed(2000, "1", "2");
            format!(
                "SELECT {time}, 'shop', 'prod', concat('pool-', toString(k % 20)), \
                 concat('db', toString(k % 8)), 'app', \
                 concat('10.0.', toString(k % 200), '.', toString({c})), \
                 lower(hex(k * 11400714819323198485)), \
                 concat('select * from orders_', toString(k), \
                   ' where customer_id = ? and status in(?+)'), \
                 concat('SELECT * FROM orders_', toString(k), ' WHERE customer_id = ', \
                   toString({cust}), ' AND status IN (1, 2)'), \
                 0.1 + {qt} / 1000.0, 0.0, {sent}, {examined}, 'bench', toUInt64(0) \
                 FROM (SELECT n, t_us, {k} AS k FROM ({base}))",
                c = below(250, 3),
                cust = below(1_000_000, 4),
                qt = below(10_000, 5),
                sent = below(100, 6),
                examined = below(100_000, 7),
            )
        }
        _ => {
            format!(
                "SELECT {time}, lower(hex(intHash64(n * 16 + 8))), 'shop', 'prod', \
                 concat('route-', toString({route})), \
                 concat('pool-', toString(p), if(g, '-gray', '')), \
                 concat('10.1.', toString(p), '.', toString({up}), ':8080'), \
                 if(g, 'gray', 'stable'), concat('tenant-', toString({tenant})), \
                 concat('10.9.', toString({c1}), '.', toString({c2})), 'GET', 'shop.example', \
                 '/api/orders', toUInt16(if({err} = 0, 500, 200)), \
                 toUInt64(1000 + {lat}), toUInt64(900 + {ulat}), toUInt64(300), \
                 toUInt64(1000 + {out}), 'bench', toUInt64(0) \
                 FROM (SELECT n, t_us, {p} AS p, {g} = 0 AS g FROM ({base}))",
                p = skewed(20, "1", "2"),
                g = below(10, 3),
                route = skewed(50, "4", "5"),
                up = below(3, 6),
                tenant = skewed(10_000, "7", "9"),
                c1 = below(250, 10),
                c2 = below(250, 11),
                err = below(100, 12),
                lat = below(200_000, 13),
                ulat = below(190_000, 14),
                out = below(20_000, 15),
            )
        }
    }
}

/// Make `rows` rows of both tables across `shards` (once: a cluster already holding them is
/// reused), wait for background merges, and print the cluster's `query_scale` line.
pub async fn cluster_scale(urls: &[String], cluster: &str, rows: usize) {
    let clients: Vec<ChClient> = urls
        .iter()
        .map(|u| ChClient::new(ChUrl::parse(u).expect("CLICKHOUSE_SHARDS: clickhouse:// URLs")))
        .collect();
    let shards = clients.len();
    let db = clients[0].url.database.clone();
    let gen_clients = clients.clone();
    let cluster_name = cluster.to_string();
    tokio::task::spawn_blocking(move || {
        let clients = gen_clients;
        for c in &clients {
            migrate_cluster(c, 0, &cluster_name).unwrap();
        }
        for table in ["slow_sql", "access_log"] {
            let have: usize = clients
                .iter()
                .map(|c| count(c, &format!("SELECT count() FROM {db}.{table}")))
                .sum();
            if have == rows {
                continue;
            }
            let started = Instant::now();
            let views: &[&str] = match table {
                "slow_sql" => &["slow_sql_1h", "slow_sql_hourly"],
                _ => &["access_log_1h", "access_log_1m"],
            };
            // One shard at a time: the two servers share this machine's cores.
            for (s, c) in clients.iter().enumerate() {
                for t in std::iter::once(table.to_string())
                    .chain(views.iter().map(|v| format!("`.inner.{v}`")))
                {
                    let _ = c.execute(&format!("TRUNCATE TABLE IF EXISTS {db}.{t}"));
                }
                let per_shard = rows / shards;
                for lo in (0..per_shard).step_by(CHUNK_ROWS) {
                    let len = CHUNK_ROWS.min(per_shard - lo);
                    c.execute(&format!(
                        "INSERT INTO {db}.{table} {}",
                        rows_sql(table, rows, s, shards, lo, len)
                    ))
                    .unwrap();
                }
            }
            eprintln!(
                "made {rows} rows of {table} on {shards} shards in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        // Let the parts merge as they would on a server that has been ingesting for a day.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(900)
            && clients.iter().any(|c| {
                count(
                    c,
                    &format!("SELECT count() FROM system.merges WHERE database = '{db}'"),
                ) > 0
            })
        {
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!(
            "merges settled after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    })
    .await
    .unwrap();
    let engine = Engine::with_backend(
        Arc::new(ClickHouseBackend::new(
            clients[0].clone(),
            true,
            ReadLimits::default(),
        )),
        Searcher::Off,
        Limits::default(),
    );
    let s = scale::measure(&engine).await;
    let (hand_top, hand_pools, _) = scale::by_hand(&clients[0], "_all").await;
    let mut mb = 0.0;
    for c in &clients {
        mb += scale::data_mb(c).await;
    }
    scale::line(
        "clickhouse",
        rows,
        shards,
        &s,
        &format!(
            " hand_top100_ms={hand_top:.1} hand_pool_ranking_ms={hand_pools:.1} data_mb={mb:.0}"
        ),
    );
}
