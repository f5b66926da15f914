//! The incident's rows: an hour of traffic on route `api`; 16 minutes before the end a
//! gray rule flip sends tenant `acme` to pool `gray`, whose server answers 60 % of requests
//! with 500 and logs a new exception; a new slow query appears with it. Unrelated changes
//! (a billing release before, a server add and a drain after) surround the flip.

use apus_schema::{AccessRecord, ChangeRecord, LogRecord, Micros, Row, SlowSqlRecord, Table};
use datafusion::arrow::record_batch::RecordBatch;

/// 2026-11-22T08:00:00Z, the end of the analysed window.
pub const T0: i64 = 1_795_334_400_000_000;
pub const MIN: i64 = 60_000_000;
pub const FLIP: i64 = T0 - 16 * MIN;

pub fn access(t0: i64, t1: i64) -> Vec<AccessRecord> {
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

pub fn logs() -> Vec<LogRecord> {
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

pub fn slow() -> Vec<SlowSqlRecord> {
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

pub fn changes() -> Vec<ChangeRecord> {
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

/// The incident as batches in write order; the first holds the first 40 minutes of
/// access logs.
pub fn batches() -> Vec<(Table, RecordBatch)> {
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
