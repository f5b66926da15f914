//! The embedded store: recent rows in memory as Arrow batches (queryable at once), flushed
//! to Parquet files partitioned by table and hour (`{table}/{YYYY-MM-DD}/{HH}/{min}-{max}.parquet`,
//! rows sorted by (pool, ts)), compacted and expired by age.
//!
//! Exactly-once with the WAL: every file name carries the WAL sequence range it holds, and
//! each table has a `_checkpoint` (the highest sequence number in its committed files),
//! written atomically after the files are renamed into place. On open, files beyond the
//! checkpoint (a flush cut short by a crash) are deleted; the WAL replays everything above
//! the checkpoint.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

mod files;
mod rollups;

use crate::metrics as m;
use crate::rollup;
use crate::StoreError;
use apus_schema::Table;
use files::{
    hour_dir, hour_of, listing, parse_file_name, read_parquet, sort_for_layout, write_parquet,
};

use apus_schema::time::HOUR_US;

#[derive(Debug, Clone)]
struct FileMeta {
    path: PathBuf,
    min_seq: u64,
    max_seq: u64,
    /// Hours since the epoch of the partition.
    hour: i64,
}

#[derive(Default)]
struct TableState {
    mem: Vec<(u64, RecordBatch)>,
    mem_bytes: usize,
    files: Vec<FileMeta>,
    checkpoint: u64,
    /// Files replaced by compaction or retention, deleted once no query can hold them.
    doomed: Vec<(Instant, PathBuf)>,
}

/// The embedded (Parquet + memory) store.
pub struct LocalStore {
    dir: PathBuf,
    tables: Mutex<HashMap<Table, TableState>>,
}

impl LocalStore {
    /// Open the store under `dir`, dropping files a crash left beyond a table's checkpoint.
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        let mut tables = HashMap::new();
        for t in Table::ALL {
            let tdir = dir.join(t.name());
            fs::create_dir_all(&tdir)?;
            let checkpoint = fs::read_to_string(tdir.join("_checkpoint"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0u64);
            let mut files = Vec::new();
            for day in fs::read_dir(&tdir)? {
                let day = day?.path();
                if !day.is_dir() {
                    continue;
                }
                for hour in fs::read_dir(&day)? {
                    let hour = hour?.path();
                    let Some(h) = hour_of(&hour) else { continue };
                    for f in fs::read_dir(&hour)? {
                        let p = f?.path();
                        match parse_file_name(&p) {
                            Some((a, b)) if b <= checkpoint => files.push(FileMeta {
                                path: p,
                                min_seq: a,
                                max_seq: b,
                                hour: h,
                            }),
                            _ => {
                                tracing::warn!(file = %p.display(), checkpoint, "removing uncommitted store file");
                                fs::remove_file(&p)?;
                            }
                        }
                    }
                }
            }
            // A compaction's inputs stay on disk for a grace period after the merged file
            // replaced them; a file whose sequence range lies inside another file's of
            // the same hour is such an input, and would count its rows twice.
            files.sort_by_key(|f| (f.hour, f.min_seq, std::cmp::Reverse(f.max_seq)));
            let mut reach: Option<(i64, u64)> = None;
            let mut live = Vec::with_capacity(files.len());
            for f in files {
                match reach {
                    Some((h, max)) if h == f.hour && f.max_seq <= max => {
                        tracing::info!(file = %f.path.display(), "removing file replaced by compaction");
                        fs::remove_file(&f.path)?;
                    }
                    _ => {
                        reach = Some((f.hour, f.max_seq));
                        live.push(f);
                    }
                }
            }
            let files = live;
            tables.insert(
                t,
                TableState {
                    files,
                    checkpoint,
                    ..Default::default()
                },
            );
        }
        let store = LocalStore {
            dir: dir.to_path_buf(),
            tables: Mutex::new(tables),
        };
        for t in Table::ALL {
            let files = store
                .lock()
                .get(&t)
                .map(|s| s.files.clone())
                .unwrap_or_default();
            store.repair_rollups(t, &files)?;
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Table, TableState>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest WAL sequence number committed to Parquet for `t`.
    pub fn checkpoint(&self, t: Table) -> u64 {
        self.lock().get(&t).map_or(0, |s| s.checkpoint)
    }

    /// Add a durable batch (called in WAL sequence order).
    pub fn append(&self, seq: u64, t: Table, batch: RecordBatch) {
        let mut g = self.lock();
        let s = g.entry(t).or_default();
        if seq <= s.checkpoint {
            return;
        }
        s.mem_bytes += batch.get_array_memory_size();
        s.mem.push((seq, batch));
        let total: usize = g.values().map(|s| s.mem_bytes).sum();
        metrics::gauge!(m::MEM_BYTES).set(total as f64);
    }

    /// Bytes held in memory across tables.
    pub fn mem_bytes(&self) -> usize {
        self.lock().values().map(|s| s.mem_bytes).sum()
    }

    /// Bytes held in memory for one table.
    pub fn table_mem_bytes(&self, t: Table) -> usize {
        self.lock().get(&t).map_or(0, |s| s.mem_bytes)
    }

    /// Lowest sequence number not yet in Parquet, over all tables.
    pub fn pending_min_seq(&self) -> Option<u64> {
        self.lock()
            .values()
            .filter_map(|s| s.mem.first().map(|(q, _)| *q))
            .min()
    }

    /// The rows of `t` right now: in-memory batches and committed files, as one consistent
    /// snapshot (no row in both).
    pub fn snapshot(&self, t: Table) -> (Vec<RecordBatch>, Vec<PathBuf>) {
        let (mem, files) = self.snapshot_meta(t);
        (mem, files.into_iter().map(|f| f.path).collect())
    }

    fn snapshot_meta(&self, t: Table) -> (Vec<RecordBatch>, Vec<FileMeta>) {
        let g = self.lock();
        g.get(&t).map_or_else(Default::default, |s| {
            (
                s.mem.iter().map(|(_, b)| b.clone()).collect(),
                s.files.clone(),
            )
        })
    }

    /// Write the in-memory rows of `t` to Parquet. Returns the number of rows written.
    pub fn flush(&self, t: Table) -> Result<usize, StoreError> {
        let taken: Vec<(u64, RecordBatch)> = {
            let g = self.lock();
            match g.get(&t) {
                Some(s) if !s.mem.is_empty() => s.mem.clone(),
                _ => return Ok(0),
            }
        };
        let (min_seq, max_seq) = (taken[0].0, taken[taken.len() - 1].0);
        let schema = t.schema();
        let all = concat_batches(&schema, taken.iter().map(|(_, b)| b))
            .map_err(|e| StoreError::Store(e.to_string()))?;
        let rows = all.num_rows();
        let (sorted, hours) = sort_for_layout(&all)?;
        let mut new_files = Vec::new();
        let mut start = 0;
        while start < hours.len() {
            let h = hours[start];
            let end = start + hours[start..].iter().take_while(|x| **x == h).count();
            let dir = self.dir.join(t.name()).join(hour_dir(h));
            fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{min_seq:020}-{max_seq:020}.parquet"));
            let meta = FileMeta {
                path,
                min_seq,
                max_seq,
                hour: h,
            };
            let slice = sorted.slice(start, end - start);
            // The rollups first: a committed raw file always has its companions.
            self.write_rollups(t, &meta, &slice, None)?;
            write_parquet(&meta.path, &slice)?;
            File::open(&dir)?.sync_all()?;
            new_files.push(meta);
            start = end;
        }
        let tdir = self.dir.join(t.name());
        apus_wal::write_atomic(&tdir.join("_checkpoint"), format!("{max_seq}\n").as_bytes())?;
        let mut g = self.lock();
        let s = g.entry(t).or_default();
        let n = taken.len();
        let freed: usize = s.mem[..n]
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum();
        s.mem.drain(..n);
        s.mem_bytes = s.mem_bytes.saturating_sub(freed);
        s.files.extend(new_files);
        s.checkpoint = max_seq;
        metrics::counter!(m::PARQUET_FILES, "table" => t.name()).increment(1);
        Ok(rows)
    }

    /// Merge the files of each closed hour of `t` that has at least `min_files` files.
    pub fn compact(&self, t: Table, min_files: usize, now_us: i64) -> Result<usize, StoreError> {
        let current_hour = now_us.div_euclid(HOUR_US);
        let groups: Vec<(i64, Vec<FileMeta>)> = {
            let g = self.lock();
            let Some(s) = g.get(&t) else { return Ok(0) };
            let mut by: HashMap<i64, Vec<FileMeta>> = HashMap::new();
            for f in &s.files {
                if f.hour < current_hour {
                    by.entry(f.hour).or_default().push(f.clone());
                }
            }
            by.into_iter()
                .filter(|(_, v)| v.len() >= min_files.max(2))
                .collect()
        };
        let mut merged = 0;
        for (hour, files) in groups {
            let mut batches = Vec::new();
            for f in &files {
                batches.extend(read_parquet(&f.path)?);
            }
            let all = concat_batches(&t.schema(), &batches)
                .map_err(|e| StoreError::Store(e.to_string()))?;
            let (sorted, _) = sort_for_layout(&all)?;
            let (lo, hi) = (
                files.iter().map(|f| f.min_seq).min().unwrap_or(0),
                files.iter().map(|f| f.max_seq).max().unwrap_or(0),
            );
            let dir = self.dir.join(t.name()).join(hour_dir(hour));
            let path = dir.join(format!("{lo:020}-{hi:020}.parquet"));
            // The merged name may equal one input's name: write beside, then swap.
            let staging = dir.join(format!("{lo:020}-{hi:020}.parquet.compact"));
            write_parquet(&staging.with_extension("cpq"), &sorted)?;
            let merged_meta = FileMeta {
                path: path.clone(),
                min_seq: lo,
                max_seq: hi,
                hour,
            };
            let rollups = self.write_rollups(t, &merged_meta, &sorted, Some("cpq"))?;
            let mut g = self.lock();
            let s = g.entry(t).or_default();
            s.files.retain(|f| !files.iter().any(|o| o.path == f.path));
            for f in &files {
                if f.path != path {
                    s.doomed.push((Instant::now(), f.path.clone()));
                    s.doomed.extend(
                        self.companions(t, f)
                            .into_iter()
                            .map(|(_, p)| (Instant::now(), p)),
                    );
                }
            }
            // The rollups first: a committed raw file always has its companions.
            for (staging, p) in rollups {
                fs::rename(staging, p)?;
            }
            fs::rename(staging.with_extension("cpq"), &path)?;
            s.files.push(merged_meta);
            s.files.sort_by_key(|f| (f.hour, f.min_seq));
            merged += files.len();
        }
        Ok(merged)
    }

    /// Drop partitions older than `days`, and delete files retired more than `grace` ago.
    pub fn expire(&self, days: u32, now_us: i64, grace: Duration) -> Result<usize, StoreError> {
        let cutoff = now_us.div_euclid(HOUR_US) - i64::from(days) * 24;
        let mut removed = 0;
        let mut g = self.lock();
        for (&t, s) in g.iter_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = s.files.drain(..).partition(|f| f.hour < cutoff);
            s.files = keep;
            removed += old.len();
            for f in old {
                s.doomed.extend(
                    self.companions(t, &f)
                        .into_iter()
                        .map(|(_, p)| (Instant::now(), p)),
                );
                s.doomed.push((Instant::now(), f.path));
            }
            let now = Instant::now();
            s.doomed.retain(|(at, p)| {
                if now.duration_since(*at) >= grace {
                    let _ = fs::remove_file(p);
                    if let Some(d) = p.parent() {
                        let _ = fs::remove_dir(d);
                    }
                    false
                } else {
                    true
                }
            });
        }
        Ok(removed)
    }

    /// Register every table in `ctx` as its in-memory rows (`{table}__mem`) plus its Parquet
    /// files; tables with rollups also get each rollup (`access_log_1h`, `access_log_1m`,
    /// `slow_sql_1h`), the rollups of exactly those files
    /// (rows still in memory are not in it); and the rollup functions `hist_of`/`hist_pct`.
    pub async fn register(&self, ctx: &SessionContext) -> Result<(), StoreError> {
        let e = |e: datafusion::error::DataFusionError| StoreError::Store(e.to_string());
        for f in rollup::udafs() {
            ctx.register_udaf(f);
        }
        for t in Table::ALL {
            let (mem, files) = self.snapshot_meta(t);
            let schema = t.schema();
            let mem_name = format!("{}__mem", t.name());
            let mem_table = MemTable::try_new(schema.clone(), vec![mem]).map_err(e)?;
            ctx.register_table(mem_name.as_str(), Arc::new(mem_table))
                .map_err(e)?;
            let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
            let sql = if files.is_empty() {
                format!("CREATE VIEW {} AS SELECT * FROM {mem_name}", t.name())
            } else {
                let file_name = format!("{}__files", t.name());
                ctx.register_table(file_name.as_str(), listing(&paths, schema)?)
                    .map_err(e)?;
                format!(
                    "CREATE VIEW {} AS SELECT * FROM {mem_name} UNION ALL SELECT * FROM {file_name}",
                    t.name()
                )
            };
            ctx.sql(&sql).await.map_err(e)?;
            for (i, level) in rollup::levels(t).iter().enumerate() {
                let Some(rs) = rollup::level_schema(t, *level) else {
                    continue;
                };
                let rpaths: Vec<PathBuf> = files
                    .iter()
                    .filter_map(|f| self.companions(t, f).into_iter().nth(i))
                    .map(|(_, p)| p)
                    .collect();
                let table: Arc<dyn datafusion::catalog::TableProvider> = if rpaths.is_empty() {
                    Arc::new(MemTable::try_new(rs, vec![vec![]]).map_err(e)?)
                } else {
                    listing(&rpaths, rs)?
                };
                ctx.register_table(level.name, table).map_err(e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_schema::{LogRecord, Micros, Row};
    use datafusion::arrow::array::AsArray;

    /// `SELECT count(*) FROM logs` over a fresh registration of `s`.
    async fn count_logs(s: &LocalStore) -> i64 {
        let ctx = SessionContext::new();
        s.register(&ctx).await.unwrap();
        let b = ctx
            .sql("SELECT count(*) FROM logs")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        b[0].column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0)
    }

    fn logs(n: usize, ts0: i64) -> RecordBatch {
        let rows: Vec<LogRecord> = (0..n)
            .map(|i| LogRecord {
                ts: Micros(ts0 + i as i64 * 1_000_000),
                pool: if i % 2 == 0 { "b".into() } else { "a".into() },
                message: format!("m{i}"),
                ..Default::default()
            })
            .collect();
        LogRecord::to_batch(&rows).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(hour_dir(0), "1970-01-01/00");
        let p = PathBuf::from("/x/2024-03-01/13");
        assert_eq!(hour_dir(hour_of(&p).unwrap()), "2024-03-01/13");
    }

    #[tokio::test]
    async fn flush_snapshot_reopen_and_query() {
        let d = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000_000_000i64 - 1_700_000_000_000_000 % HOUR_US + HOUR_US - 5_000_000;
        {
            let s = LocalStore::open(d.path()).unwrap();
            s.append(1, Table::Logs, logs(10, t0)); // spans two hours
            s.append(2, Table::Logs, logs(5, t0));
            assert_eq!(s.snapshot(Table::Logs).0.len(), 2);
            assert_eq!(s.flush(Table::Logs).unwrap(), 15);
            assert_eq!(s.checkpoint(Table::Logs), 2);
            let (mem, files) = s.snapshot(Table::Logs);
            assert!(mem.is_empty());
            assert_eq!(files.len(), 2, "one file per hour");
            s.append(3, Table::Logs, logs(1, t0));
            s.append(2, Table::Logs, logs(1, t0)); // at or below the checkpoint: ignored
            assert_eq!(s.pending_min_seq(), Some(3));
        }
        // A file beyond the checkpoint (crash mid-flush) is removed on open.
        let stray = d
            .path()
            .join("logs")
            .join(hour_dir(t0.div_euclid(HOUR_US)))
            .join(format!("{:020}-{:020}.parquet", 3, 3));
        fs::write(&stray, b"partial").unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        assert!(!stray.exists());
        s.append(3, Table::Logs, logs(1, t0));
        let ctx = SessionContext::new();
        s.register(&ctx).await.unwrap();
        let df = ctx
            .sql("SELECT count(*) AS n, count(DISTINCT pool) AS p FROM logs")
            .await
            .unwrap();
        let b = df.collect().await.unwrap();
        let n = b[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(n, 16);
        // Compaction of closed hours keeps every row.
        s.flush(Table::Logs).unwrap();
        // Hour H holds the files of seq 1-2 and 3; hour H+1 only the one of 1-2.
        let merged = s.compact(Table::Logs, 2, t0 + 10 * HOUR_US).unwrap();
        assert_eq!(merged, 2);
        assert_eq!(count_logs(&s).await, 16);
        // A restart before the replaced inputs are deleted must not count them again.
        drop(s);
        let s = LocalStore::open(d.path()).unwrap();
        assert_eq!(s.snapshot(Table::Logs).1.len(), 2);
        assert_eq!(count_logs(&s).await, 16);
        assert_eq!(s.expire(1, t0 + 100 * HOUR_US, Duration::ZERO).unwrap(), 2);
        assert!(s.snapshot(Table::Logs).1.is_empty());
    }
}
