//! The on-disk layout of the embedded store and its Parquet I/O: partition directories
//! (`{YYYY-MM-DD}/{HH}`), file names carrying WAL sequence ranges, writing (atomic, sorted
//! by hour, pool, ts) and reading files, and DataFusion tables over an exact file list.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use super::HOUR_US;
use crate::StoreError;
use apus_schema::{FREE_TEXT_COLUMNS, UNIQUE_TEXT_COLUMNS};

pub(super) fn hour_dir(hour: i64) -> String {
    let (y, m, d) = apus_schema::time::civil_from_days(hour.div_euclid(24));
    format!("{y:04}-{m:02}-{d:02}/{:02}", hour.rem_euclid(24))
}

pub(super) fn parse_file_name(p: &Path) -> Option<(u64, u64)> {
    let stem = p.file_name()?.to_str()?.strip_suffix(".parquet")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

pub(super) fn hour_of(dir: &Path) -> Option<i64> {
    // .../YYYY-MM-DD/HH
    let hh: i64 = dir.file_name()?.to_str()?.parse().ok()?;
    let date = dir.parent()?.file_name()?.to_str()?;
    let mut it = date.split('-').map(|s| s.parse::<i64>().ok());
    let (y, m, d) = (it.next()??, it.next()??, it.next()??);
    let day =
        apus_schema::time::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?)?;
    Some(day * 24 + hh)
}

pub(super) fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), StoreError> {
    let tmp = path.with_extension("parquet.tmp");
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| StoreError::Store(e.to_string()))?,
        ))
        .set_max_row_group_row_count(Some(128 * 1024));
    for f in batch.schema().fields() {
        let col = ColumnPath::from(f.name().as_str());
        if FREE_TEXT_COLUMNS.contains(&f.name().as_str()) {
            // min/max of free text prunes nothing and costs a string compare per value.
            props = props.set_column_statistics_enabled(col.clone(), EnabledStatistics::None);
        }
        if UNIQUE_TEXT_COLUMNS.contains(&f.name().as_str()) {
            // A dictionary of values that never repeat is built only to be thrown away.
            props = props.set_column_dictionary_enabled(col, false);
        }
    }
    let props = props.build();
    let f = File::create(&tmp)?;
    let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props))
        .map_err(|e| StoreError::Store(e.to_string()))?;
    w.write(batch)
        .map_err(|e| StoreError::Store(e.to_string()))?;
    let f = w
        .into_inner()
        .map_err(|e| StoreError::Store(e.to_string()))?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

pub(super) fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
        .and_then(|b| b.build())
        .map_err(|e| StoreError::Store(e.to_string()))?;
    r.map(|b| b.map_err(|e| StoreError::Store(e.to_string())))
        .collect()
}

/// Sort a batch by (hour, pool, ts) and return it with the per-row hour.
pub(super) fn sort_for_layout(batch: &RecordBatch) -> Result<(RecordBatch, Vec<i64>), StoreError> {
    let ts = batch
        .column_by_name("ts")
        .ok_or_else(|| StoreError::Store("batch without ts".into()))?
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let hours: Int64Array = ts
        .iter()
        .map(|v| v.map(|t| t.div_euclid(HOUR_US)))
        .collect();
    let mut cols = vec![SortColumn {
        values: Arc::new(hours),
        options: None,
    }];
    if let Some(pool) = batch.column_by_name("pool") {
        cols.push(SortColumn {
            values: pool.clone(),
            options: None,
        });
    }
    cols.push(SortColumn {
        values: Arc::new(ts.clone()),
        options: None,
    });
    let idx = lexsort_to_indices(&cols, None).map_err(|e| StoreError::Store(e.to_string()))?;
    let sorted = take_record_batch(batch, &idx).map_err(|e| StoreError::Store(e.to_string()))?;
    let ts = sorted
        .column_by_name("ts")
        .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
        .ok_or_else(|| StoreError::Store("batch without ts".into()))?;
    let hours = (0..ts.len())
        .map(|i| ts.value(i).div_euclid(HOUR_US))
        .collect();
    Ok((sorted, hours))
}

/// A Parquet table over exactly `paths`.
pub(super) fn listing(
    paths: &[PathBuf],
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<Arc<ListingTable>, StoreError> {
    let urls = paths
        .iter()
        .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Store(e.to_string()))?;
    let opts =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let cfg = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(opts)
        .with_schema(schema);
    Ok(Arc::new(
        ListingTable::try_new(cfg).map_err(|e| StoreError::Store(e.to_string()))?,
    ))
}
