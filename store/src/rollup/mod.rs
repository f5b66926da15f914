//! Hourly rollups: the rankings SREs open first (slow SQL TOP N, pool/route/upstream
//! rankings) read one pre-aggregated row per hour and group instead of every raw row.
//!
//! The embedded store builds them when it writes Parquet: each raw file
//! `{table}/{day}/{HH}/{min}-{max}.parquet` has a companion `{table}_1h/{day}/{HH}/{min}-{max}.parquet`
//! holding the same rows grouped by hour and the low-cardinality [`keys`] of the table, with
//! counts, sums, extremes and a latency [`Hist`]. Compaction and retention treat the pair as
//! one. High-cardinality columns (tenant, client, request id) are not keys: queries that filter
//! or group on them read raw rows. Rows still in memory are not rolled up; the query tier
//! reads them raw (see `apus_query::rollup`).

pub mod hist;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::TimestampMicrosecondArray;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Float64Array, Int64Array, StringArray, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    UInt16Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;

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

/// The rollup table of `t`, if `t` has one.
pub fn name(t: Table) -> Option<&'static str> {
    match t {
        Table::SlowSql => Some("slow_sql_1h"),
        Table::AccessLog => Some("access_log_1h"),
        _ => None,
    }
}

/// The group keys of `t`'s rollup (empty when it has none).
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

/// The schema of `t`'s rollup: `ts` (the hour), the keys, then the aggregates.
pub fn schema(t: Table) -> Option<SchemaRef> {
    static SLOW: OnceLock<SchemaRef> = OnceLock::new();
    static ACCESS: OnceLock<SchemaRef> = OnceLock::new();
    let (cell, keys, aggs): (_, &[&str], &[(&str, DataType)]) = match t {
        Table::SlowSql => (&SLOW, SLOW_SQL_KEYS, &SLOW_SQL_AGGS),
        Table::AccessLog => (&ACCESS, ACCESS_KEYS, &ACCESS_AGGS),
        _ => return None,
    };
    let make = || {
        let mut f = vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )];
        f.extend(keys.iter().map(|k| Field::new(*k, DataType::Utf8, false)));
        f.extend(aggs.iter().map(|(n, d)| Field::new(*n, d.clone(), false)));
        Arc::new(Schema::new(f))
    };
    Some(cell.get_or_init(make).clone())
}

/// One row's group key, compared by value without copying the strings.
struct RowKey<'a> {
    hour: i64,
    row: usize,
    cols: &'a [&'a StringArray],
}

impl Hash for RowKey<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.hour.hash(h);
        for c in self.cols {
            c.value(self.row).hash(h);
        }
    }
}

impl PartialEq for RowKey<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.hour == o.hour
            && self
                .cols
                .iter()
                .all(|c| c.value(self.row) == c.value(o.row))
    }
}
impl Eq for RowKey<'_> {}

/// Rows grouped by (hour, keys): the group of each row, and each group's hour and first row.
struct Groups {
    of_row: Vec<u32>,
    hour: Vec<i64>,
    first_row: Vec<u32>,
}

fn group(batch: &RecordBatch, keys: &[&str]) -> Result<Groups, StoreError> {
    let ts = column(batch, "ts")?.as_primitive::<TimestampMicrosecondType>();
    let cols: Vec<&StringArray> = keys
        .iter()
        .map(|k| {
            column(batch, k)?
                .as_string_opt::<i32>()
                .ok_or_else(|| err(format!("column {k} is not text")))
        })
        .collect::<Result<_, _>>()?;
    let mut map: HashMap<RowKey<'_>, u32, ahash::RandomState> =
        HashMap::with_hasher(ahash::RandomState::new());
    let mut g = Groups {
        of_row: Vec::with_capacity(batch.num_rows()),
        hour: Vec::new(),
        first_row: Vec::new(),
    };
    for row in 0..batch.num_rows() {
        let hour = ts.value(row).div_euclid(HOUR_US);
        let next = g.hour.len() as u32;
        let id = *map
            .entry(RowKey {
                hour,
                row,
                cols: &cols,
            })
            .or_insert(next);
        if id == next {
            g.hour.push(hour);
            g.first_row.push(row as u32);
        }
        g.of_row.push(id);
    }
    Ok(g)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, StoreError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| err(format!("batch without column {name}")))
}

/// `ts` (hour starts) and the key columns of each group.
fn key_columns(
    batch: &RecordBatch,
    keys: &[&str],
    g: &Groups,
) -> Result<Vec<ArrayRef>, StoreError> {
    let idx = UInt32Array::from(g.first_row.clone());
    let mut out: Vec<ArrayRef> = vec![Arc::new(
        TimestampMicrosecondArray::from(g.hour.iter().map(|h| h * HOUR_US).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )];
    for k in keys {
        out.push(take(column(batch, k)?, &idx, None).map_err(err)?);
    }
    Ok(out)
}

fn hists(h: Vec<Hist>) -> ArrayRef {
    let mut b = BinaryBuilder::with_capacity(h.len(), h.len() * 64);
    let mut buf = Vec::new();
    for x in h {
        buf.clear();
        x.encode(&mut buf);
        b.append_value(&buf);
    }
    Arc::new(b.finish())
}

/// The rollup of `batch` (rows of `t`), or `None` if `t` has no rollup or `batch` no rows.
pub fn build(t: Table, batch: &RecordBatch) -> Result<Option<RecordBatch>, StoreError> {
    let Some(schema) = schema(t) else {
        return Ok(None);
    };
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let keys = keys(t);
    let g = group(batch, keys)?;
    let mut cols = key_columns(batch, keys, &g)?;
    cols.extend(match t {
        Table::SlowSql => slow_sql_aggregates(batch, &g)?,
        Table::AccessLog => access_log_aggregates(batch, &g)?,
        _ => return Ok(None),
    });
    RecordBatch::try_new(schema, cols).map(Some).map_err(err)
}

/// Per group of a slow-SQL batch: fingerprint, calls, total/min/max time, rows examined,
/// first/last seen, the slowest sample, and the latency histogram.
fn slow_sql_aggregates(batch: &RecordBatch, g: &Groups) -> Result<Vec<ArrayRef>, StoreError> {
    let n = g.hour.len();
    let qt = column(batch, "query_time")?.as_primitive::<Float64Type>();
    let rx = column(batch, "rows_examined")?.as_primitive::<UInt64Type>();
    let ts = column(batch, "ts")?.as_primitive::<TimestampMicrosecondType>();
    let (mut calls, mut total, mut rows) = (vec![0i64; n], vec![0f64; n], vec![0u64; n]);
    let (mut min, mut max) = (vec![f64::INFINITY; n], vec![f64::NEG_INFINITY; n]);
    let (mut first, mut last) = (vec![i64::MAX; n], vec![i64::MIN; n]);
    let mut sample = g.first_row.clone();
    let mut hist = vec![Hist::default(); n];
    for (row, &gid) in g.of_row.iter().enumerate() {
        let i = gid as usize;
        let (q, at) = (qt.value(row), ts.value(row));
        calls[i] += 1;
        total[i] += q;
        rows[i] = rows[i].saturating_add(rx.value(row));
        min[i] = min[i].min(q);
        if q > max[i] {
            max[i] = q;
            sample[i] = row as u32;
        }
        first[i] = first[i].min(at);
        last[i] = last[i].max(at);
        hist[i].add(q);
    }
    let fp = take(
        column(batch, "fingerprint")?,
        &UInt32Array::from(g.first_row.clone()),
        None,
    )
    .map_err(err)?;
    let sample = take(column(batch, "sample")?, &UInt32Array::from(sample), None).map_err(err)?;
    Ok(vec![
        fp,
        Arc::new(Int64Array::from(calls)) as ArrayRef,
        Arc::new(Float64Array::from(total)),
        Arc::new(Float64Array::from(min)),
        Arc::new(Float64Array::from(max)),
        Arc::new(UInt64Array::from(rows)),
        Arc::new(Int64Array::from(first)),
        Arc::new(Int64Array::from(last)),
        sample,
        hists(hist),
    ])
}

/// Per group of an access-log batch: requests, 5xx, 4xx, latency sum and histogram.
fn access_log_aggregates(batch: &RecordBatch, g: &Groups) -> Result<Vec<ArrayRef>, StoreError> {
    let n = g.hour.len();
    let lat = column(batch, "latency_us")?.as_primitive::<UInt64Type>();
    let status = column(batch, "status")?.as_primitive::<UInt16Type>();
    let (mut req, mut e5, mut e4) = (vec![0i64; n], vec![0i64; n], vec![0i64; n]);
    let mut sum = vec![0u64; n];
    let mut hist = vec![Hist::default(); n];
    for (row, &gid) in g.of_row.iter().enumerate() {
        let i = gid as usize;
        let (l, s) = (lat.value(row), status.value(row));
        req[i] += 1;
        e5[i] += i64::from(s >= 500);
        e4[i] += i64::from((400..500).contains(&s));
        sum[i] = sum[i].saturating_add(l);
        hist[i].add(l as f64);
    }
    Ok(vec![
        Arc::new(Int64Array::from(req)) as ArrayRef,
        Arc::new(Int64Array::from(e5)),
        Arc::new(Int64Array::from(e4)),
        Arc::new(UInt64Array::from(sum)),
        hists(hist),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_schema::{AccessRecord, Micros, Row, SlowSqlRecord};

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
}
