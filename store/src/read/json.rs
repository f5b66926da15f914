//! Arrow batches to JSON rows: one object per row, column names as keys. Timestamps become
//! RFC 3339 strings (UTC), non-finite floats `null`; other types use Arrow's formatter.

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use datafusion::arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

/// A JSON row.
pub type Row = Map<String, Value>;

/// Format µs since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub use apus_schema::time::format_rfc3339 as rfc3339;

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn cell(col: &dyn Array, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    macro_rules! prim {
        ($t:ty) => {
            Value::from(col.as_any().downcast_ref::<$t>().map(|a| a.value(i)))
        };
    }
    match col.data_type() {
        DataType::Utf8 => Value::from(col.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Value::from(col.as_string::<i64>().value(i)),
        DataType::Utf8View => Value::from(col.as_string_view().value(i)),
        DataType::Boolean => prim!(BooleanArray),
        DataType::Int8 => prim!(Int8Array),
        DataType::Int16 => prim!(Int16Array),
        DataType::Int32 => prim!(Int32Array),
        DataType::Int64 => prim!(Int64Array),
        DataType::UInt8 => prim!(UInt8Array),
        DataType::UInt16 => prim!(UInt16Array),
        DataType::UInt32 => prim!(UInt32Array),
        DataType::UInt64 => prim!(UInt64Array),
        DataType::Float32 => col
            .as_any()
            .downcast_ref::<Float32Array>()
            .map_or(Value::Null, |a| float(f64::from(a.value(i)))),
        DataType::Float64 => col
            .as_any()
            .downcast_ref::<Float64Array>()
            .map_or(Value::Null, |a| float(a.value(i))),
        DataType::Timestamp(unit, _) => {
            let us = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(i) * 1_000_000,
                TimeUnit::Millisecond => {
                    col.as_primitive::<TimestampMillisecondType>().value(i) * 1_000
                }
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => {
                    col.as_primitive::<TimestampNanosecondType>().value(i) / 1_000
                }
            };
            Value::from(rfc3339(us))
        }
        _ => ArrayFormatter::try_new(col, &FormatOptions::default())
            .map(|f| Value::from(f.value(i).to_string()))
            .unwrap_or(Value::Null),
    }
}

/// All rows of `batches` as JSON objects.
pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let mut row = Map::with_capacity(b.num_columns());
            for (f, col) in schema.fields().iter().zip(b.columns()) {
                row.insert(f.name().clone(), cell(col.as_ref(), i));
            }
            out.push(row);
        }
    }
    out
}

/// Turn integer µs cells named in `keys` into RFC 3339 strings.
pub fn fix_times(rows: &mut [Row], keys: &[&str]) {
    for r in rows {
        for k in keys {
            if let Some(us) = r.get(*k).and_then(|v| v.as_i64()) {
                r.insert((*k).to_string(), Value::from(rfc3339(us)));
            }
        }
    }
}

/// Read a numeric cell of a JSON row (0 when missing or null).
pub fn num(r: &Row, k: &str) -> f64 {
    r.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Read a string cell of a JSON row ("" when missing).
pub fn text<'a>(r: &'a Row, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_763_800_000_123_456),
            "2025-11-22T08:26:40.123456Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
