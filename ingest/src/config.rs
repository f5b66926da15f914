//! `[ingest]` configuration: one struct per component (receivers, WAL, embedded store,
//! ClickHouse sink), each handed only to the component it configures. The file format stays
//! flat and strict (unknown keys are refused): [`IngestConfig`] is read through
//! [`IngestFile`], the keys as a user writes them.

use std::path::PathBuf;

use serde::Deserialize;

use apus_store::StoreUrl;

/// What the HTTP receivers accept before the pipeline sees a request.
#[derive(Debug, Clone)]
pub struct ReceiverLimits {
    /// Request body limit (413 above it); the slow-log receiver streams and is exempt.
    pub max_body_bytes: usize,
    /// Request bytes each receiver holds in flight at once; past it, 429.
    pub max_inflight_bytes: usize,
    /// Refuse writes (429) while the sinks hold more than this many bytes unflushed.
    pub max_backlog_bytes: usize,
    /// Seconds clients are told to wait in `Retry-After`.
    pub retry_after_s: u64,
}

/// The write-ahead log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Appends waiting for a group commit before 429.
    pub queue: usize,
}

/// The embedded store's flushing, compaction and retention.
#[derive(Debug, Clone)]
pub struct LocalStoreConfig {
    /// Flush a table's memory to Parquet at least this often (ms).
    pub flush_interval_ms: u64,
    /// ... or when a table holds this many bytes in memory.
    pub flush_bytes: usize,
    /// Merge a closed hour's files once it has this many.
    pub compact_min_files: usize,
}

/// The ClickHouse sink's batching and cluster.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// Insert when this many rows wait...
    pub batch_rows: usize,
    /// ... or when the oldest waiting row is this old (ms).
    pub batch_ms: u64,
    /// `remote_servers` name: also create `{table}_all` Distributed tables.
    pub cluster: String,
}

/// Ingest configuration, by component.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "IngestFile")]
pub struct IngestConfig {
    /// Listener of the HTTP receivers.
    pub listen: String,
    /// Root of the WAL, store and search index.
    pub data_dir: PathBuf,
    /// `local` (the embedded store under `data_dir`) or `clickhouse://HOST:PORT/DATABASE`.
    pub store: StoreUrl,
    /// Days of data kept (Parquet partitions, ClickHouse day partitions).
    pub retention_days: u32,
    /// The receivers.
    pub receivers: ReceiverLimits,
    /// The write-ahead log.
    pub wal: WalConfig,
    /// The embedded store.
    pub local: LocalStoreConfig,
    /// The ClickHouse sink (with `store = "clickhouse://…"`).
    pub clickhouse: ClickHouseConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestFile::default().into()
    }
}

/// `[ingest]` as written: flat keys, every one optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestFile {
    listen: String,
    data_dir: PathBuf,
    wal_queue: usize,
    flush_interval_ms: u64,
    flush_bytes: usize,
    max_memory_bytes: usize,
    max_body_bytes: usize,
    max_inflight_bytes: usize,
    retention_days: u32,
    compact_min_files: usize,
    retry_after_s: u64,
    store: StoreUrl,
    clickhouse_batch_rows: usize,
    clickhouse_batch_ms: u64,
    clickhouse_cluster: String,
}

impl Default for IngestFile {
    fn default() -> Self {
        IngestFile {
            listen: "127.0.0.1:9200".into(),
            data_dir: PathBuf::from("data"),
            wal_queue: 4096,
            flush_interval_ms: 10_000,
            flush_bytes: 64 << 20,
            max_memory_bytes: 1 << 30,
            max_body_bytes: 32 << 20,
            max_inflight_bytes: 128 << 20,
            retention_days: 7,
            compact_min_files: 6,
            retry_after_s: 1,
            store: StoreUrl::Local,
            clickhouse_batch_rows: 200_000,
            clickhouse_batch_ms: 1000,
            clickhouse_cluster: String::new(),
        }
    }
}

impl From<IngestFile> for IngestConfig {
    fn from(f: IngestFile) -> Self {
        IngestConfig {
            listen: f.listen,
            data_dir: f.data_dir,
            store: f.store,
            retention_days: f.retention_days,
            receivers: ReceiverLimits {
                max_body_bytes: f.max_body_bytes,
                max_inflight_bytes: f.max_inflight_bytes,
                max_backlog_bytes: f.max_memory_bytes,
                retry_after_s: f.retry_after_s,
            },
            wal: WalConfig { queue: f.wal_queue },
            local: LocalStoreConfig {
                flush_interval_ms: f.flush_interval_ms,
                flush_bytes: f.flush_bytes,
                compact_min_files: f.compact_min_files,
            },
            clickhouse: ClickHouseConfig {
                batch_rows: f.clickhouse_batch_rows,
                batch_ms: f.clickhouse_batch_ms,
                cluster: f.clickhouse_cluster,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys_land_in_their_component_and_typos_are_refused() {
        let c: IngestConfig =
            toml::from_str("flush_interval_ms = 200\nmax_inflight_bytes = 4194304\nwal_queue = 7")
                .unwrap();
        assert_eq!(c.local.flush_interval_ms, 200);
        assert_eq!(c.receivers.max_inflight_bytes, 4 << 20);
        assert_eq!(c.wal.queue, 7);
        assert_eq!(c.clickhouse.batch_rows, 200_000);
        let e = toml::from_str::<IngestConfig>("flush_intervall_ms = 1").unwrap_err();
        assert!(e.to_string().contains("flush_intervall_ms"), "{e}");
        assert!(toml::from_str::<IngestConfig>("store = \"mysql://x\"").is_err());
    }
}
