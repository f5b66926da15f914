//! The ClickHouse sink: takes durable batches from the WAL in sequence order, groups them
//! (size and time limits), inserts each table's share as one RowBinary `INSERT`, retries
//! with backoff for as long as the server is away, and only then advances its checkpoint
//! — so the WAL keeps every batch until ClickHouse has acknowledged it.
//!
//! **No duplicates after a crash between insert and checkpoint.** Every row carries the
//! writing node's id (`_node`, fixed per data directory) and the WAL sequence of its batch
//! (`_seq`). Batches of one table are inserted in sequence order, each in one `INSERT` (one
//! block: batches stay below `max_insert_block_size`), so `max(_seq)` per table and node
//! is a high-water mark of what the server holds. Before its first insert the sink reads
//! those marks and skips replayed batches at or below them. This needs nothing 18.16
//! lacks (no insert deduplication window, no ReplacingMergeTree merge timing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use super::{migrate_cluster, rowbinary, ChClient};
use crate::metrics as m;
use crate::StoreError;
use apus_schema::Table;

/// Batching limits of the sink.
#[derive(Debug, Clone)]
pub struct SinkLimits {
    /// Insert when this many rows are waiting...
    pub batch_rows: usize,
    /// ... or when the oldest waiting row is this old.
    pub batch_age: Duration,
    /// Retention (days) for the DDL's TTL in the modern profile.
    pub retention_days: u32,
    /// Cluster name (`remote_servers`) for the `_all` Distributed tables; empty = none.
    pub cluster: String,
}

impl Default for SinkLimits {
    fn default() -> Self {
        SinkLimits {
            batch_rows: 200_000,
            batch_age: Duration::from_millis(1000),
            retention_days: 7,
            cluster: String::new(),
        }
    }
}

struct Shared {
    committed: AtomicU64,
    received: AtomicU64,
    backlog: AtomicUsize,
    connected: AtomicBool,
}

/// Handle to the sink thread.
pub struct ClickHouseSink {
    tx: Sender<(u64, Table, RecordBatch)>,
    shared: Arc<Shared>,
    client: ChClient,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn write_atomically(p: &Path, text: &str) -> std::io::Result<()> {
    apus_wal::write_atomic(p, text.as_bytes())
}

/// This data directory's node id (created on first start).
pub fn node_id(dir: &Path) -> Result<String, StoreError> {
    let p = dir.join("node_id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    std::fs::create_dir_all(dir)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&apus_schema::time::now_us().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(dir.to_string_lossy().as_bytes());
    let id = format!(
        "{}-{:08x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into()),
        h.finalize()
    );
    write_atomically(&p, &id)?;
    Ok(id)
}

impl ClickHouseSink {
    /// Start the sink thread; `dir` holds its checkpoint and the node id.
    pub fn start(
        client: ChClient,
        dir: &Path,
        limits: SinkLimits,
    ) -> Result<ClickHouseSink, StoreError> {
        std::fs::create_dir_all(dir)?;
        let node = node_id(dir)?;
        let ckpt_path = dir.join("_checkpoint");
        let committed = read_u64(&ckpt_path).unwrap_or(0);
        let shared = Arc::new(Shared {
            committed: AtomicU64::new(committed),
            received: AtomicU64::new(committed),
            backlog: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
        });
        let (tx, rx) = channel();
        let worker = Worker {
            client: client.clone(),
            node,
            limits,
            shared: shared.clone(),
            ckpt_path,
            high_water: None,
        };
        std::thread::Builder::new()
            .name("apus-clickhouse".into())
            .spawn(move || worker.run(rx))?;
        Ok(ClickHouseSink { tx, shared, client })
    }

    /// The client this sink writes with.
    pub fn client(&self) -> &ChClient {
        &self.client
    }

    /// Every sequence number at or below this is in ClickHouse.
    pub fn checkpoint(&self) -> u64 {
        self.shared.committed.load(Ordering::Acquire)
    }

    /// The WAL may drop records up to this (given the pipeline's last sequence).
    pub fn safe_upto(&self, last: u64) -> u64 {
        let c = self.checkpoint();
        if c >= self.shared.received.load(Ordering::Acquire) {
            last
        } else {
            c
        }
    }

    /// Bytes of batches waiting for ClickHouse.
    pub fn backlog_bytes(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Whether the last insert or probe reached the server.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Hand over a durable batch (never blocks).
    pub fn deliver(&self, seq: u64, t: Table, b: RecordBatch) {
        if seq <= self.checkpoint() {
            return;
        }
        self.shared
            .backlog
            .fetch_add(b.get_array_memory_size(), Ordering::Relaxed);
        self.shared.received.fetch_max(seq, Ordering::AcqRel);
        if self.tx.send((seq, t, b)).is_err() {
            tracing::error!(
                seq,
                "clickhouse sink thread is gone; batch stays in the WAL"
            );
        }
    }
}

struct Worker {
    client: ChClient,
    node: String,
    limits: SinkLimits,
    shared: Arc<Shared>,
    ckpt_path: PathBuf,
    high_water: Option<BTreeMap<Table, u64>>,
}

impl Worker {
    fn run(mut self, rx: Receiver<(u64, Table, RecordBatch)>) {
        let mut pending: Vec<(u64, Table, RecordBatch)> = Vec::new();
        let mut rows = 0usize;
        let mut oldest: Option<Instant> = None;
        loop {
            let wait = oldest.map_or(Duration::from_secs(3600), |t| {
                self.limits.batch_age.saturating_sub(t.elapsed())
            });
            match rx.recv_timeout(wait) {
                Ok(item) => {
                    rows += item.2.num_rows();
                    oldest.get_or_insert_with(Instant::now);
                    pending.push(item);
                    if rows < self.limits.batch_rows {
                        continue;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if !pending.is_empty() {
                        self.flush(std::mem::take(&mut pending));
                    }
                    return;
                }
            }
            if !pending.is_empty() {
                self.flush(std::mem::take(&mut pending));
            }
            rows = 0;
            oldest = None;
        }
    }

    /// Retry `f` with backoff until it succeeds (the server may be down for minutes).
    fn retry<T>(&self, what: &str, mut f: impl FnMut() -> Result<T, StoreError>) -> T {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u64;
        loop {
            match f() {
                Ok(v) => {
                    self.shared.connected.store(true, Ordering::Relaxed);
                    return v;
                }
                Err(e) => {
                    self.shared.connected.store(false, Ordering::Relaxed);
                    metrics::counter!(m::CH_ERRORS).increment(1);
                    if attempt.is_power_of_two() {
                        tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                    }
                    attempt += 1;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn high_water(&mut self) -> BTreeMap<Table, u64> {
        if let Some(h) = &self.high_water {
            return h.clone();
        }
        let retention = self.limits.retention_days;
        self.retry("clickhouse schema migration", || {
            migrate_cluster(&self.client, retention, &self.limits.cluster)
        });
        let db = self.client.url.database.clone();
        let node = self.node.replace('\'', "''");
        let mut h = BTreeMap::new();
        for t in Table::ALL {
            let sql = format!(
                "SELECT max(_seq) FROM {db}.{} WHERE _node = '{node}' FORMAT TSV",
                t.name()
            );
            let v = self.retry("clickhouse high-water probe", || self.client.execute(&sql));
            h.insert(t, v.trim().parse().unwrap_or(0));
        }
        tracing::info!(?h, node = %self.node, "clickhouse sink high-water marks");
        self.high_water = Some(h.clone());
        h
    }

    fn flush(&mut self, batch: Vec<(u64, Table, RecordBatch)>) {
        let mut hw = self.high_water();
        let max_seq = batch.iter().map(|b| b.0).max().unwrap_or(0);
        let bytes: usize = batch.iter().map(|b| b.2.get_array_memory_size()).sum();
        let mut by_table: BTreeMap<Table, Vec<(u64, RecordBatch)>> = BTreeMap::new();
        for (seq, t, b) in batch {
            if seq > hw.get(&t).copied().unwrap_or(0) {
                by_table.entry(t).or_default().push((seq, b));
            }
        }
        for (t, items) in by_table {
            let mut body = Vec::new();
            let mut n = 0;
            for (seq, b) in &items {
                if let Err(e) = rowbinary::encode(b, &self.node, *seq, &mut body) {
                    tracing::error!(error = %e, seq, "batch cannot be encoded for clickhouse");
                }
                n += b.num_rows();
            }
            let started = Instant::now();
            let body = bytes::Bytes::from(body);
            self.retry("clickhouse insert", || self.client.insert(t, body.clone()));
            metrics::counter!(m::CH_ROWS, "table" => t.name()).increment(n as u64);
            metrics::histogram!(m::CH_INSERT_SECONDS).record(started.elapsed().as_secs_f64());
            let top = items.last().map_or(0, |i| i.0);
            hw.insert(t, top);
        }
        self.high_water = Some(hw);
        if std::env::var_os("APUS_FAILPOINT_CRASH_AFTER_CLICKHOUSE_INSERT").is_some() {
            // Fault injection for the duplicate test: die after the server acknowledged
            // the insert but before the checkpoint moves.
            tracing::error!("failpoint: aborting after clickhouse insert, before checkpoint");
            std::process::abort();
        }
        self.shared.committed.fetch_max(max_seq, Ordering::AcqRel);
        self.shared.backlog.fetch_sub(
            bytes.min(self.shared.backlog.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        metrics::gauge!(m::CH_BACKLOG).set(self.shared.backlog.load(Ordering::Relaxed) as f64);
        if let Err(e) = write_atomically(&self.ckpt_path, &max_seq.to_string()) {
            tracing::error!(error = %e, "clickhouse checkpoint not written");
        }
    }
}
