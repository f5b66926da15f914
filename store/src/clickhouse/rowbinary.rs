//! Arrow batches to ClickHouse `RowBinary`: the compact row format every server version
//! understands. A `Timestamp(µs)` column becomes two columns, `DateTime` seconds and the
//! `UInt32` microsecond remainder (18.16 has no DateTime64); strings are LEB128 length +
//! bytes; numbers little-endian. Two trailing columns name the writing node and the WAL
//! sequence of the batch, which is how replays are recognised (see the sink).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimestampMicrosecondType, UInt16Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;

use crate::StoreError;

use apus_parse::sketch::put_varint as varint;

fn string(out: &mut Vec<u8>, s: &[u8]) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Append every row of `batch` to `out` as RowBinary, followed by `node` and `seq`.
pub fn encode(
    batch: &RecordBatch,
    node: &str,
    seq: u64,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let cols = batch.columns();
    for c in cols {
        if c.null_count() > 0 {
            return Err(StoreError::Store(
                "null values cannot be written to ClickHouse".into(),
            ));
        }
        match c.data_type() {
            DataType::Utf8
            | DataType::UInt16
            | DataType::UInt64
            | DataType::Int64
            | DataType::Float64
            | DataType::Timestamp(_, _) => {}
            t => {
                return Err(StoreError::Store(format!(
                    "column type {t} has no ClickHouse mapping"
                )))
            }
        }
    }
    for i in 0..batch.num_rows() {
        for c in cols {
            match c.data_type() {
                DataType::Utf8 => string(out, c.as_string::<i32>().value(i).as_bytes()),
                DataType::UInt16 => {
                    out.extend_from_slice(&c.as_primitive::<UInt16Type>().value(i).to_le_bytes())
                }
                DataType::UInt64 => {
                    out.extend_from_slice(&c.as_primitive::<UInt64Type>().value(i).to_le_bytes())
                }
                DataType::Int64 => {
                    out.extend_from_slice(&c.as_primitive::<Int64Type>().value(i).to_le_bytes())
                }
                DataType::Float64 => {
                    out.extend_from_slice(&c.as_primitive::<Float64Type>().value(i).to_le_bytes())
                }
                _ => {
                    let us = c.as_primitive::<TimestampMicrosecondType>().value(i);
                    let secs = us.div_euclid(1_000_000).clamp(0, i64::from(u32::MAX)) as u32;
                    let frac = us.rem_euclid(1_000_000) as u32;
                    out.extend_from_slice(&secs.to_le_bytes());
                    out.extend_from_slice(&frac.to_le_bytes());
                }
            }
        }
        string(out, node.as_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_schema::{ChangeRecord, Micros, Row};

    #[test]
    fn varints_and_layout() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let b = ChangeRecord::to_batch(&[ChangeRecord {
            ts: Micros(1_500_000),
            kind: "k".into(),
            from_version: 7,
            ..Default::default()
        }])
        .unwrap();
        let mut out = Vec::new();
        encode(&b, "n", 9, &mut out).unwrap();
        // ts seconds 1, µs 500000, "k", then 4 empty strings, versions, 2 empty strings.
        assert_eq!(&out[..8], &[1, 0, 0, 0, 0x20, 0xa1, 0x07, 0]);
        assert_eq!(&out[8..10], &[1, b'k']);
        assert_eq!(&out[10..14], &[0, 0, 0, 0]);
        assert_eq!(&out[14..22], &7u64.to_le_bytes());
        assert_eq!(out.len(), 8 + 2 + 4 + 16 + 1 + 1 + 2 + 8);
        assert_eq!(&out[out.len() - 10..], &[1, b'n', 9, 0, 0, 0, 0, 0, 0, 0]);
    }
}
