//! Building a rollup: grouping a batch's rows by time unit and keys, and each group's
//! aggregates (counts, sums, extremes, the slowest sample, the latency histogram).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Float64Type, TimestampMicrosecondType, UInt16Type, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;

use super::{err, level_schema, levels, Hist, Level};
use crate::StoreError;
use apus_schema::Table;

/// One row's group key, compared by value without copying the strings.
struct RowKey<'a> {
    unit: i64,
    row: usize,
    cols: &'a [&'a StringArray],
}

impl Hash for RowKey<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.unit.hash(h);
        for c in self.cols {
            c.value(self.row).hash(h);
        }
    }
}

impl PartialEq for RowKey<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.unit == o.unit
            && self
                .cols
                .iter()
                .all(|c| c.value(self.row) == c.value(o.row))
    }
}
impl Eq for RowKey<'_> {}

/// Rows grouped by (time unit, keys): the group of each row, and each group's unit (its
/// index since the epoch) and first row.
struct Groups {
    of_row: Vec<u32>,
    unit: Vec<i64>,
    first_row: Vec<u32>,
}

fn group(batch: &RecordBatch, keys: &[&str], unit_us: i64) -> Result<Groups, StoreError> {
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
        unit: Vec::new(),
        first_row: Vec::new(),
    };
    for row in 0..batch.num_rows() {
        let unit = ts.value(row).div_euclid(unit_us);
        let next = g.unit.len() as u32;
        let id = *map
            .entry(RowKey {
                unit,
                row,
                cols: &cols,
            })
            .or_insert(next);
        if id == next {
            g.unit.push(unit);
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

/// `ts` (unit starts) and the key columns of each group.
fn key_columns(batch: &RecordBatch, level: Level, g: &Groups) -> Result<Vec<ArrayRef>, StoreError> {
    let idx = UInt32Array::from(g.first_row.clone());
    let keys = level.keys;
    let mut out: Vec<ArrayRef> = vec![Arc::new(
        TimestampMicrosecondArray::from(
            g.unit.iter().map(|u| u * level.unit_us).collect::<Vec<_>>(),
        )
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

/// The hourly rollup of `batch` (rows of `t`), or `None` if `t` has no rollup or `batch`
/// no rows.
pub fn build(t: Table, batch: &RecordBatch) -> Result<Option<RecordBatch>, StoreError> {
    match levels(t).first() {
        Some(l) => build_level(t, *l, batch),
        None => Ok(None),
    }
}

/// Rollup `level` of `batch` (rows of `t`), or `None` if `level` is not one of `t`'s or
/// `batch` has no rows.
pub fn build_level(
    t: Table,
    level: Level,
    batch: &RecordBatch,
) -> Result<Option<RecordBatch>, StoreError> {
    let Some(schema) = level_schema(t, level) else {
        return Ok(None);
    };
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let g = group(batch, level.keys, level.unit_us)?;
    let mut cols = key_columns(batch, level, &g)?;
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
    let n = g.unit.len();
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
    let n = g.unit.len();
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
