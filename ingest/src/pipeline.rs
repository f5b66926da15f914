//! The ingest pipeline: rows → Arrow batch → WAL (durable) → sinks (embedded store,
//! Tantivy), plus the maintenance loop that flushes, compacts, expires and trims the WAL.
//!
//! Invariants: a write returns only after its batch is fsynced in the WAL and handed to
//! the sinks; the WAL keeps every record some sink has not committed; memory is bounded
//! (`max_memory_bytes`) and a full pipeline answers [`IngestError::Overloaded`] (429).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::config::IngestConfig;
use crate::metrics as m;
use crate::IngestError;
use apus_schema::time::now_us;
use apus_schema::{Row, Table};
use apus_store::clickhouse::sink::{ClickHouseSink, SinkLimits};
use apus_store::clickhouse::ChClient;
use apus_store::local::LocalStore;
use apus_store::search::SearchIndex;
use apus_store::sink::StoreSink;
use apus_store::StoreUrl;
use apus_wal::{Consumer, Wal};

/// Encode a batch as an Arrow IPC stream (the WAL payload).
pub fn encode(batch: &RecordBatch) -> Result<Bytes, IngestError> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2 + 256);
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())
            .map_err(|e| IngestError::Store(e.to_string()))?;
        w.write(batch)
            .map_err(|e| IngestError::Store(e.to_string()))?;
        w.finish().map_err(|e| IngestError::Store(e.to_string()))?;
    }
    Ok(Bytes::from(buf))
}

/// Decode a WAL payload.
pub fn decode(payload: &Bytes) -> Result<Vec<RecordBatch>, IngestError> {
    let r = StreamReader::try_new(Cursor::new(payload.as_ref()), None)
        .map_err(|e| IngestError::Store(e.to_string()))?;
    r.collect::<Result<Vec<_>, _>>()
        .map_err(|e| IngestError::Store(e.to_string()))
}

struct Fanout {
    /// Where rows go: the store (embedded, or ClickHouse with `store = clickhouse://…`)
    /// first, then the search index.
    sinks: Vec<Arc<dyn StoreSink>>,
    /// The store among the sinks (admission control counts its backlog).
    sink: Arc<dyn StoreSink>,
    /// The ClickHouse sink, when that is the store (retention, status).
    clickhouse: Option<Arc<ClickHouseSink>>,
    /// Bumped after each delivered batch: what the alarm evaluator waits on, so rules see
    /// rows as they land instead of on a coarse timer.
    landed: tokio::sync::watch::Sender<u64>,
}

impl Fanout {
    fn deliver_batch(&self, seq: u64, table: Table, b: RecordBatch) {
        for s in &self.sinks {
            s.deliver(seq, table, b.clone());
        }
        self.landed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The WAL replays above the lowest checkpoint of any sink.
    fn committed(&self, t: Table) -> u64 {
        self.sinks.iter().map(|s| s.committed(t)).min().unwrap_or(0)
    }

    /// The WAL may drop what every sink has committed.
    fn safe_upto(&self, last: u64) -> u64 {
        self.sinks
            .iter()
            .map(|s| s.safe_upto(last))
            .min()
            .unwrap_or(last)
    }

    /// Replay path: the payload must be decoded.
    fn deliver(&self, seq: u64, table: Table, payload: &Bytes) {
        match decode(payload) {
            Ok(batches) => batches
                .into_iter()
                .for_each(|b| self.deliver_batch(seq, table, b)),
            Err(e) => tracing::error!(seq, error = %e, "undecodable WAL record skipped"),
        }
    }
}

impl Consumer<RecordBatch> for Fanout {
    fn durable(&self, seq: u64, kind: u8, payload: &Bytes, batch: Option<RecordBatch>) {
        let Some(table) = Table::from_code(kind) else {
            tracing::error!(seq, kind, "WAL record of an unknown table skipped");
            return;
        };
        match batch {
            Some(b) => self.deliver_batch(seq, table, b),
            None => self.deliver(seq, table, payload),
        }
    }
}

/// The running pipeline. Cheap to share behind an `Arc`.
pub struct Pipeline {
    /// Configuration in force.
    pub cfg: IngestConfig,
    wal: Wal<RecordBatch>,
    store: Arc<LocalStore>,
    search: Arc<SearchIndex>,
    fanout: Arc<Fanout>,
    last_seq: AtomicU64,
    /// When each table was last flushed (also serialises maintenance passes).
    maintenance: Mutex<HashMap<Table, Instant>>,
}

impl Pipeline {
    /// Open the data directory: store, search index, then the WAL (replaying what the sinks
    /// have not committed).
    pub fn open(cfg: IngestConfig) -> Result<Arc<Pipeline>, IngestError> {
        crate::metrics::describe();
        let dir = cfg.data_dir.clone();
        let store = Arc::new(LocalStore::open(&dir.join("store"))?);
        let search = Arc::new(SearchIndex::open(&dir.join("search"))?);
        let clickhouse = if let StoreUrl::ClickHouse(url) = &cfg.store {
            let url = url.clone();
            tracing::info!(server = %url.base, database = %url.database, "store: clickhouse");
            Some(Arc::new(ClickHouseSink::start(
                ChClient::new(url),
                &dir.join("clickhouse"),
                SinkLimits {
                    batch_rows: cfg.clickhouse.batch_rows.max(1),
                    batch_age: Duration::from_millis(cfg.clickhouse.batch_ms.max(10)),
                    retention_days: cfg.retention_days,
                    cluster: cfg.clickhouse.cluster.clone(),
                },
            )?))
        } else {
            None
        };
        let sink: Arc<dyn StoreSink> = match &clickhouse {
            Some(ch) => ch.clone(),
            None => store.clone(),
        };
        let fanout = Arc::new(Fanout {
            sinks: vec![sink.clone(), search.clone()],
            sink: sink.clone(),
            clickhouse: clickhouse.clone(),
            landed: tokio::sync::watch::channel(0).0,
        });
        let (s2, f2) = (fanout.clone(), fanout.clone());
        let (wal, report) = Wal::open(
            "ingest",
            &dir.join("wal"),
            cfg.wal.queue,
            |kind| match Table::from_code(kind) {
                Some(t) => s2.committed(t),
                // Unknown kinds are skipped with an error when delivered.
                None => 0,
            },
            |seq, kind, p| match Table::from_code(kind) {
                Some(t) => f2.deliver(seq, t, &p),
                None => tracing::error!(seq, kind, "WAL record of an unknown table skipped"),
            },
            fanout.clone(),
        )?;
        tracing::info!(
            records = report.records,
            last_seq = report.last_seq,
            truncated = report.truncated_bytes,
            "WAL opened"
        );
        Ok(Arc::new(Pipeline {
            cfg,
            wal,
            store,
            search,
            fanout,
            last_seq: AtomicU64::new(report.last_seq),
            maintenance: Mutex::new(HashMap::new()),
        }))
    }

    /// The embedded store.
    pub fn store(&self) -> &Arc<LocalStore> {
        &self.store
    }

    /// The ClickHouse sink, when the store is ClickHouse.
    pub fn clickhouse(&self) -> Option<&Arc<ClickHouseSink>> {
        self.fanout.clickhouse.as_ref()
    }

    /// A receiver that changes each time rows land in the store (queryable from then on).
    pub fn landed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.fanout.landed.subscribe()
    }

    /// The log search index.
    pub fn search(&self) -> &Arc<SearchIndex> {
        &self.search
    }

    /// Data directory.
    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// Refuse new work while memory is over budget.
    pub fn admit(&self) -> Result<(), IngestError> {
        let used = self.fanout.sink.backlog_bytes();
        if used > self.cfg.receivers.max_backlog_bytes {
            metrics::counter!(m::THROTTLED, "reason" => "memory").increment(1);
            return Err(IngestError::Overloaded(
                format!(
                    "{used} bytes awaiting flush (limit {})",
                    self.cfg.receivers.max_backlog_bytes
                ),
                self.cfg.receivers.retry_after_s,
            ));
        }
        Ok(())
    }

    /// Durably write `rows`; returns the WAL sequence number.
    pub async fn write<R: Row>(&self, rows: &[R]) -> Result<u64, IngestError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.admit()?;
        let batch = R::to_batch(rows).map_err(|e| IngestError::Store(e.to_string()))?;
        self.write_batch(R::TABLE, &batch).await
    }

    /// Durably write a ready batch of `table`.
    pub async fn write_batch(&self, table: Table, batch: &RecordBatch) -> Result<u64, IngestError> {
        let payload = encode(batch)?;
        let seq = self
            .wal
            .append(table.code(), payload, Some(batch.clone()))
            .await
            .map_err(|e| match e {
                apus_wal::WalError::Full => {
                    metrics::counter!(m::THROTTLED, "reason" => "wal_queue").increment(1);
                    IngestError::Overloaded(
                        "write-ahead log queue is full".into(),
                        self.cfg.receivers.retry_after_s,
                    )
                }
                e => e.into(),
            })?;
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
        metrics::counter!(m::ROWS, "table" => table.name()).increment(batch.num_rows() as u64);
        Ok(seq)
    }

    /// One maintenance pass: flush due tables, trim the WAL; with `deep`, also compact and
    /// expire. `force` flushes every table regardless of size.
    pub fn maintain(&self, force: bool, deep: bool) -> Result<(), IngestError> {
        let mut last_flush = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let interval = Duration::from_millis(self.cfg.local.flush_interval_ms);
        for t in Table::ALL {
            let bytes = self.store.table_mem_bytes(t);
            let due = last_flush.get(&t).is_none_or(|at| at.elapsed() >= interval);
            if bytes > 0 && (force || due || bytes >= self.cfg.local.flush_bytes) {
                self.store.flush(t)?;
                last_flush.insert(t, Instant::now());
            }
        }
        if deep {
            for t in Table::ALL {
                self.store
                    .compact(t, self.cfg.local.compact_min_files, now_us())?;
            }
            self.store
                .expire(self.cfg.retention_days, now_us(), Duration::from_secs(60))?;
            if let Some(ch) = &self.fanout.clickhouse {
                match apus_store::clickhouse::expire(ch.client(), self.cfg.retention_days, now_us())
                {
                    Ok(n) if n > 0 => tracing::info!(partitions = n, "clickhouse retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "clickhouse retention failed"),
                }
            }
        }
        let last = self.last_seq.load(Ordering::Relaxed);
        self.wal.remove_upto(self.fanout.safe_upto(last))?;
        Ok(())
    }

    /// Run maintenance forever on the current Tokio runtime.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let p = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(
                p.cfg.local.flush_interval_ms.clamp(100, 1000),
            ));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                let p2 = p.clone();
                let deep = n.is_multiple_of(300);
                match tokio::task::spawn_blocking(move || p2.maintain(false, deep)).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "maintenance failed"),
                    Err(e) => tracing::error!(error = %e, "maintenance panicked"),
                    Ok(Ok(())) => {}
                }
            }
        });
    }
}
