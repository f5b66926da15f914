//! Rollups: the rankings SREs open first (slow SQL TOP N, pool/route/upstream rankings)
//! read one pre-aggregated row per hour and group instead of every raw row, and the
//! console's charts one row per minute and lane.
//!
//! The embedded store builds them when it writes Parquet: each raw file
//! `{table}/{day}/{HH}/{min}-{max}.parquet` has a companion per [`Level`] of its table,
//! `{level}/{day}/{HH}/{min}-{max}.parquet`, holding the same rows grouped by the level's
//! time unit and keys, with counts, sums, extremes and a latency [`Hist`]:
//! - `slow_sql_1h` and `access_log_1h`: per hour, by the low-cardinality [`keys`] of the
//!   table;
//! - `access_log_1m`: per minute, by project, env, pool and tag only ([`MINUTE_KEYS`], the
//!   same keys as ClickHouse's lane view of that name), for time series and onsets.
//!
//! Compaction and retention treat a raw file and its companions as one. High-cardinality
//! columns (tenant, client, request id) are not keys: queries that filter or group on them
//! read raw rows. Rows still in memory are not rolled up; the query tier reads them raw
//! (see `apus_query::rollup`).

mod build;
pub mod hist;

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use build::{build, build_level};
pub use hist::{udafs, Hist};

use crate::StoreError;
use apus_schema::Table;

use apus_schema::time::HOUR_US;

/// Group keys of the `slow_sql` rollup (besides the hour).
pub const SLOW_SQL_KEYS: &[&str] = &["project", "env", "pool", "db", "user", "fingerprint_id"];
/// Group keys of the `access_log` rollup (besides the hour).
pub const ACCESS_KEYS: &[&str] = &[
    "project", "env", "route", "pool", "upstream", "tag", "host", "method",
];

/// Group keys of the per-minute lane rollup of `access_log` (besides the minute): the keys
/// of the console's charts and of root cause's onset.
pub const MINUTE_KEYS: &[&str] = &["project", "env", "pool", "tag"];

/// One pre-aggregate of a table: its name, its time unit and its group keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub name: &'static str,
    pub unit_us: i64,
    pub keys: &'static [&'static str],
}

/// `slow_sql_1h`.
pub const SLOW_SQL_HOUR: Level = Level {
    name: "slow_sql_1h",
    unit_us: HOUR_US,
    keys: SLOW_SQL_KEYS,
};
/// `access_log_1h`.
pub const ACCESS_HOUR: Level = Level {
    name: "access_log_1h",
    unit_us: HOUR_US,
    keys: ACCESS_KEYS,
};
/// `access_log_1m`, the lane rollup.
pub const ACCESS_MINUTE: Level = Level {
    name: "access_log_1m",
    unit_us: 60_000_000,
    keys: MINUTE_KEYS,
};

/// Every rollup of `t` (none for tables without).
pub fn levels(t: Table) -> &'static [Level] {
    match t {
        Table::SlowSql => &[SLOW_SQL_HOUR],
        Table::AccessLog => &[ACCESS_HOUR, ACCESS_MINUTE],
        _ => &[],
    }
}

/// The hourly rollup table of `t`, if `t` has one.
pub fn name(t: Table) -> Option<&'static str> {
    match t {
        Table::SlowSql => Some("slow_sql_1h"),
        Table::AccessLog => Some("access_log_1h"),
        _ => None,
    }
}

/// The group keys of `t`'s hourly rollup (empty when it has none).
pub fn keys(t: Table) -> &'static [&'static str] {
    match t {
        Table::SlowSql => SLOW_SQL_KEYS,
        Table::AccessLog => ACCESS_KEYS,
        _ => &[],
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Store(format!("rollup: {e}"))
}

/// The aggregate columns of the slow-SQL rollup, after `ts` and [`SLOW_SQL_KEYS`].
const SLOW_SQL_AGGS: [(&str, DataType); 10] = [
    ("fingerprint", DataType::Utf8),
    ("calls", DataType::Int64),
    ("total_s", DataType::Float64),
    ("min_s", DataType::Float64),
    ("max_s", DataType::Float64),
    ("rows_examined_total", DataType::UInt64),
    ("first_us", DataType::Int64),
    ("last_us", DataType::Int64),
    ("sample", DataType::Utf8),
    ("hist", DataType::Binary),
];

/// The aggregate columns of the access-log rollup, after `ts` and [`ACCESS_KEYS`].
const ACCESS_AGGS: [(&str, DataType); 5] = [
    ("requests", DataType::Int64),
    ("errors", DataType::Int64),
    ("client_errors", DataType::Int64),
    ("latency_sum_us", DataType::UInt64),
    ("hist", DataType::Binary),
];

/// The schema of `t`'s hourly rollup: `ts` (the hour), the keys, then the aggregates.
pub fn schema(t: Table) -> Option<SchemaRef> {
    levels(t).first().and_then(|l| level_schema(t, *l))
}

/// The schema of rollup `level` of `t`: `ts` (the unit's start), the keys, then the
/// aggregates of `t`'s rollups.
pub fn level_schema(t: Table, level: Level) -> Option<SchemaRef> {
    static SLOW: OnceLock<SchemaRef> = OnceLock::new();
    static ACCESS: OnceLock<SchemaRef> = OnceLock::new();
    static MINUTE: OnceLock<SchemaRef> = OnceLock::new();
    let (cell, aggs): (_, &[(&str, DataType)]) = match (t, level.name) {
        (Table::SlowSql, "slow_sql_1h") => (&SLOW, &SLOW_SQL_AGGS),
        (Table::AccessLog, "access_log_1h") => (&ACCESS, &ACCESS_AGGS),
        (Table::AccessLog, "access_log_1m") => (&MINUTE, &ACCESS_AGGS),
        _ => return None,
    };
    let make = || {
        let mut f = vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )];
        f.extend(
            level
                .keys
                .iter()
                .map(|k| Field::new(*k, DataType::Utf8, false)),
        );
        f.extend(aggs.iter().map(|(n, d)| Field::new(*n, d.clone(), false)));
        Arc::new(Schema::new(f))
    };
    Some(cell.get_or_init(make).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_schema::{AccessRecord, Micros, Row, SlowSqlRecord};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, TimestampMicrosecondType};

    #[test]
    fn slow_sql_rollup_groups_by_hour_and_keys() {
        let rec = |ts: i64, fp: &str, q: f64, sample: &str| SlowSqlRecord {
            ts: Micros(ts),
            pool: "p".into(),
            fingerprint_id: fp.into(),
            fingerprint: format!("select {fp}"),
            sample: sample.into(),
            query_time: q,
            rows_examined: 10,
            ..Default::default()
        };
        let b = SlowSqlRecord::to_batch(&[
            rec(10, "a", 1.0, "a1"),
            rec(20, "a", 3.0, "a3"),
            rec(30, "b", 2.0, "b2"),
            rec(HOUR_US + 5, "a", 5.0, "a5"),
        ])
        .unwrap();
        let r = build(Table::SlowSql, &b).unwrap().unwrap();
        assert_eq!(r.schema(), schema(Table::SlowSql).unwrap());
        assert_eq!(r.num_rows(), 3);
        let calls = r
            .column_by_name("calls")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let sample = r.column_by_name("sample").unwrap().as_string::<i32>();
        let total = r
            .column_by_name("total_s")
            .unwrap()
            .as_primitive::<Float64Type>();
        let first = r
            .column_by_name("first_us")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(
            (
                calls.value(0),
                sample.value(0),
                total.value(0),
                first.value(0)
            ),
            (2, "a3", 4.0, 10)
        );
        assert_eq!((calls.value(1), sample.value(1)), (1, "b2"));
        assert_eq!((calls.value(2), sample.value(2)), (1, "a5"));
        let mut h = Hist::default();
        h.merge_bytes(
            r.column_by_name("hist")
                .unwrap()
                .as_binary::<i32>()
                .value(0),
        )
        .unwrap();
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn access_rollup_counts_errors() {
        let rec = |status: u16, lat: u64, tag: &str| AccessRecord {
            ts: Micros(1),
            pool: "p".into(),
            tag: tag.into(),
            status,
            latency_us: lat,
            ..Default::default()
        };
        let b = AccessRecord::to_batch(&[
            rec(200, 100, "stable"),
            rec(503, 300, "stable"),
            rec(404, 200, "stable"),
            rec(200, 50, "gray"),
        ])
        .unwrap();
        let r = build(Table::AccessLog, &b).unwrap().unwrap();
        assert_eq!(r.num_rows(), 2);
        let i64s = |c: &str| {
            r.column_by_name(c)
                .unwrap()
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(i64s("requests"), vec![3, 1]);
        assert_eq!(i64s("errors"), vec![1, 0]);
        assert_eq!(i64s("client_errors"), vec![1, 0]);
        assert!(build(Table::Logs, &b).unwrap().is_none());
    }

    #[test]
    fn minute_rollup_groups_by_minute_and_lane_only() {
        let rec = |ts: i64, route: &str, tag: &str, status: u16| AccessRecord {
            ts: Micros(ts),
            pool: "p".into(),
            route: route.into(),
            tag: tag.into(),
            status,
            latency_us: 1000,
            ..Default::default()
        };
        let b = AccessRecord::to_batch(&[
            rec(0, "a", "stable", 200),
            rec(59_999_999, "b", "stable", 500),
            rec(60_000_000, "a", "stable", 200),
            rec(10, "a", "gray", 200),
        ])
        .unwrap();
        let r = build_level(Table::AccessLog, ACCESS_MINUTE, &b)
            .unwrap()
            .unwrap();
        assert_eq!(
            r.schema(),
            level_schema(Table::AccessLog, ACCESS_MINUTE).unwrap()
        );
        assert!(r.column_by_name("route").is_none());
        let ts = r
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let tag = r.column_by_name("tag").unwrap().as_string::<i32>();
        let rows: Vec<(i64, &str, i64, i64)> = (0..r.num_rows())
            .map(|i| {
                let n = |c: &str| {
                    r.column_by_name(c)
                        .unwrap()
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(i)
                };
                (ts.value(i), tag.value(i), n("requests"), n("errors"))
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, "stable", 2, 1),
                (60_000_000, "stable", 1, 0),
                (0, "gray", 1, 0)
            ]
        );
        assert!(build_level(Table::SlowSql, ACCESS_MINUTE, &b)
            .unwrap()
            .is_none());
        assert_eq!(levels(Table::AccessLog), &[ACCESS_HOUR, ACCESS_MINUTE]);
    }
}
