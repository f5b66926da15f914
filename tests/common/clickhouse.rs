//! Helpers of the ClickHouse end-to-end tests (`tests/clickhouse*.rs`): temp dirs, posting
//! to an ingest node, waiting for rows to land.

use std::path::PathBuf;
use std::time::Duration;

use apus_schema::{AccessRecord, Micros};
use apus_testkit::ClickHouse;

use super::*;

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "apus-chi-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn access_lines(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            serde_json::to_string(&AccessRecord {
                ts: Micros(1_795_330_800_123_456 + i as i64 * 1000),
                request_id: format!("req-{i}"),
                project: "shop".into(),
                env: "prod".into(),
                route: "api".into(),
                pool: if i % 3 == 0 { "gray" } else { "stable" }.into(),
                tag: if i % 3 == 0 { "gray" } else { "stable" }.into(),
                tenant: format!("t{}", i % 7),
                status: if i % 10 == 0 { 500 } else { 200 },
                latency_us: 1000 + i as u64,
                ..Default::default()
            })
            .unwrap()
                + "\n"
        })
        .collect()
}

pub fn post(i: &Ingest, path: &str, body: String) -> u16 {
    client()
        .post(i.url(path))
        .body(body)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub fn wait_rows(ch: &ClickHouse, sql: &str, want: u64) {
    let mut last = 0;
    wait_until(
        &format!("{want} rows for {sql}"),
        Duration::from_secs(60),
        || {
            last = ch.try_count(sql).unwrap_or(0);
            last >= want
        },
    );
    assert_eq!(ch.count(sql), want, "{sql}");
}
