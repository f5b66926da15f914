//! `apus ingest --store clickhouse://…` against a real ClickHouse server (Debian's
//! `clickhouse-server`, 18.16 on these machines), started by `scripts/clickhouse-start` on
//! loopback with its data in a temporary directory: DDL on a fresh database, every table
//! written and read back, an outage of the server while data keeps arriving, and a crash
//! between an acknowledged insert and the checkpoint without duplicates.

mod common;

use std::time::Duration;

use apus_testkit::ClickHouse;
use common::clickhouse::*;
use common::*;

const SLOWLOG: &str = "# Time: 2026-11-22T07:00:00.250000Z
# User@Host: app[app] @ web-1 [10.0.0.5]  Id:    12
# Query_time: 1.500000  Lock_time: 0.000100 Rows_sent: 1  Rows_examined: 100000
use shop;
SET timestamp=1795330800;
SELECT * FROM orders WHERE tenant_id = 42;
";

#[test]
fn every_table_round_trips_through_a_fresh_database() {
    let ch = ClickHouse::start("rt");
    let dir = tmpdir("rt");
    let url = ch.url("apus_rt");
    let ing = Ingest::start_with(&dir, free_port(), &["--store", &url], &[]);
    assert_eq!(post(&ing, "/ingest/v1/access", access_lines(0, 300)), 200);
    let logs = r#"{"ts":"2026-11-22T07:00:00.5Z","message":"payment 42 failed: timeout","level":"ERROR","pool":"gray","project":"shop"}
{"ts":"2026-11-22T07:00:01Z","message":"order 7 placed","level":"INFO","pool":"stable","project":"shop"}
"#;
    assert_eq!(post(&ing, "/ingest/v1/logs", logs.into()), 200);
    assert_eq!(post(&ing, "/ingest/v1/slowlog", SLOWLOG.into()), 200);
    assert_eq!(
        post(
            &ing,
            "/ingest/v1/metrics",
            "http_requests_total{pool=\"gray\",code=\"500\"} 17 1795330800000\n".into()
        ),
        200
    );
    let change = r#"{"ts":1795330800000000,"kind":"gray_rules","actor":"alice","project":"shop","env":"prod","scope":"api","from_version":1,"to_version":2,"summary":"+beta","touched":"route:api tag:gray"}"#;
    assert_eq!(post(&ing, "/ingest/v1/changes", change.into()), 200);
    assert_eq!(post(&ing, "/ingest/v1/logs", "not json\n".into()), 400);

    wait_rows(&ch, "SELECT count() FROM apus_rt.access_log", 300);
    wait_rows(&ch, "SELECT count() FROM apus_rt.logs", 2);
    wait_rows(&ch, "SELECT count() FROM apus_rt.slow_sql", 1);
    wait_rows(&ch, "SELECT count() FROM apus_rt.metrics", 1);
    wait_rows(&ch, "SELECT count() FROM apus_rt.changes", 1);
    wait_rows(&ch, "SELECT count() FROM apus_rt.dead_letter", 1);
    // Values survive the trip, including sub-second time (DateTime + ts_us on 18.16).
    assert_eq!(
        ch.query(
            "SELECT toUnixTimestamp(ts), ts_us, pool, status, latency_us FROM apus_rt.access_log \
             WHERE request_id = 'req-10' FORMAT TSV"
        ),
        "1795330800\t133456\tstable\t500\t1010"
    );
    assert_eq!(
        ch.query(
            "SELECT level, pool, template != '' FROM apus_rt.logs WHERE ts_us = 500000 FORMAT TSV"
        ),
        "ERROR\tgray\t1"
    );
    assert_eq!(
        ch.query(
            "SELECT db, query_time, rows_examined, fingerprint FROM apus_rt.slow_sql FORMAT TSV"
        ),
        "shop\t1.5\t100000\tselect * from orders where tenant_id = ?"
    );
    assert_eq!(
        ch.query("SELECT name, value, pool FROM apus_rt.metrics FORMAT TSV"),
        "http_requests_total\t17\tgray"
    );
    assert_eq!(
        ch.query("SELECT kind, touched FROM apus_rt.changes FORMAT TSV"),
        "gray_rules\troute:api tag:gray"
    );
    // The pre-aggregate follows the inserts.
    assert_eq!(
        ch.query(
            "SELECT countMerge(calls), sumMerge(total_s) FROM apus_rt.slow_sql_hourly FORMAT TSV"
        ),
        "1\t1.5"
    );
    // Schema: legacy profile on 18.16, day partitions, migrations recorded once each, and a
    // restart (migrations run again) changes nothing.
    let version = ch.query("SELECT version()");
    let ddl = ch.query("SHOW CREATE TABLE apus_rt.access_log");
    assert!(ddl.contains("PARTITION BY toDate(ts)"), "{ddl}");
    if version.starts_with("18.") || version.starts_with("19.") {
        assert!(
            ddl.contains("ts_us UInt32") && !ddl.contains("CODEC"),
            "{ddl}"
        );
    }
    drop(ing);
    let ing = Ingest::start_with(&dir, free_port(), &["--store", &url], &[]);
    assert_eq!(post(&ing, "/ingest/v1/access", access_lines(300, 10)), 200);
    wait_rows(&ch, "SELECT count() FROM apus_rt.access_log", 310);
    assert_eq!(
        ch.query("SELECT groupArray(version) FROM (SELECT version FROM apus_rt._apus_migrations ORDER BY version)"),
        "[1,2,3,4,5,6]"
    );
    // Retention drops day partitions (no TTL on 18.16): everything here is from a fixed
    // day in 2026, far older than 1 day relative to a clock set 400 days ahead.
    let c =
        apus_store::clickhouse::ChClient::new(apus_store::clickhouse::ChUrl::parse(&url).unwrap());
    let dropped =
        apus_store::clickhouse::expire(&c, 1, 1_795_330_800_000_000 + 400 * 86_400_000_000)
            .unwrap();
    assert!(dropped >= 5, "dropped {dropped}");
    assert_eq!(ch.count("SELECT count() FROM apus_rt.access_log"), 0);
}

#[test]
fn server_outage_loses_nothing() {
    let mut ch = ClickHouse::start("outage");
    let dir = tmpdir("outage");
    let url = ch.url("apus_out");
    let ing = Ingest::start_with(&dir, free_port(), &["--store", &url], &[]);
    assert_eq!(post(&ing, "/ingest/v1/access", access_lines(0, 1000)), 200);
    wait_rows(&ch, "SELECT count() FROM apus_out.access_log", 1000);
    // The server goes away; clients keep getting 200 (durable in the WAL) and keep sending.
    ch.down();
    let mut acked = 1000;
    for k in 0..20 {
        let st = post(&ing, "/ingest/v1/access", access_lines(1000 + k * 100, 100));
        assert_eq!(st, 200, "batch {k} during the outage");
        acked += 100;
        std::thread::sleep(Duration::from_millis(150));
    }
    // A restart of the ingest node during the outage must not lose the backlog either.
    drop(ing);
    let ing = Ingest::start_with(&dir, free_port(), &["--store", &url], &[]);
    assert_eq!(
        post(&ing, "/ingest/v1/access", access_lines(3000, 100)),
        200
    );
    acked += 100;
    ch.up();
    wait_rows(&ch, "SELECT count() FROM apus_out.access_log", acked);
    assert_eq!(
        ch.count("SELECT uniqExact(request_id) FROM apus_out.access_log"),
        acked,
        "no duplicates"
    );
    drop(ing);
}

#[test]
fn crash_between_insert_and_checkpoint_does_not_duplicate() {
    let ch = ClickHouse::start("crash");
    let dir = tmpdir("crash");
    let url = ch.url("apus_crash");
    // This process aborts right after ClickHouse acknowledges its first insert, before the
    // sink's checkpoint moves: on restart the WAL replays that batch.
    let mut ing = Ingest::start_with(
        &dir,
        free_port(),
        &["--store", &url],
        &[("APUS_FAILPOINT_CRASH_AFTER_CLICKHOUSE_INSERT", "1")],
    );
    assert_eq!(post(&ing, "/ingest/v1/access", access_lines(0, 500)), 200);
    wait_until(
        "the failpoint to abort ingest",
        Duration::from_secs(30),
        || matches!(ing.proc.0.try_wait(), Ok(Some(_))),
    );
    assert_eq!(ch.count("SELECT count() FROM apus_crash.access_log"), 500);
    let ckpt = std::fs::read_to_string(dir.join("clickhouse/_checkpoint")).unwrap_or_default();
    assert!(
        ckpt.trim().is_empty() || ckpt.trim() == "0",
        "checkpoint moved: {ckpt}"
    );
    let ing = Ingest::start_with(&dir, free_port(), &["--store", &url], &[]);
    assert_eq!(post(&ing, "/ingest/v1/access", access_lines(500, 500)), 200);
    wait_rows(&ch, "SELECT count() FROM apus_crash.access_log", 1000);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ch.count("SELECT count() FROM apus_crash.access_log"), 1000);
    assert_eq!(
        ch.count("SELECT uniqExact(request_id) FROM apus_crash.access_log"),
        1000
    );
    drop(ing);
}
