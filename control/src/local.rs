//! The embedded backend: the change log in an fsynced, checksummed append-only file
//! (`apus-wal`, the same log ingest uses), for a single node. On open every valid entry is
//! replayed and a torn tail is cut off with a warning, as the WAL does.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use apus_wal::{Consumer, Wal, WalError};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{watch, Mutex};

use crate::metrics as m;
use crate::{Backend, Change, ControlError};

/// Record kind of a change entry in the log.
const KIND_CHANGE: u8 = 1;
/// Full states kept in memory for rollback, at most this many...
const KEEP_STATES: usize = 1000;
/// ... and at most this many bytes of them (JSON size; the newest is always kept): 1000
/// states of a route set with large tenant lists would otherwise take gigabytes.
const KEEP_STATE_BYTES: usize = 64 << 20;
/// Audit records kept in memory (the history API's window); all stay in the log on disk
/// and in the `changes` table.
const KEEP_RECORDS: usize = 100_000;

struct Nothing;
impl Consumer<()> for Nothing {
    fn durable(&self, _: u64, _: u8, _: &Bytes, _: Option<()>) {}
}

/// What is kept in memory: every audit record, and the newest changes with their states.
#[derive(Default)]
struct Entries {
    records: VecDeque<apus_schema::ChangeRecord>,
    recent: VecDeque<Arc<Change>>,
    /// JSON bytes of each state in `recent`, and their sum.
    sizes: VecDeque<usize>,
    state_bytes: usize,
}

impl Entries {
    /// Keep `c`, whose encoding in the log takes `size` bytes (what its state costs
    /// against the byte budget; measured there rather than by encoding it again).
    fn push(&mut self, c: Arc<Change>, size: usize) {
        self.records.push_back(c.record.clone());
        if self.records.len() > KEEP_RECORDS {
            self.records.pop_front();
        }
        self.recent.push_back(c);
        self.sizes.push_back(size);
        self.state_bytes += size;
        while self.recent.len() > 1
            && (self.recent.len() > KEEP_STATES || self.state_bytes > KEEP_STATE_BYTES)
        {
            self.recent.pop_front();
            self.state_bytes -= self.sizes.pop_front().unwrap_or(0);
        }
    }
    fn version(&self) -> u64 {
        self.recent.back().map_or(0, |c| c.version)
    }
}

/// The local change log.
pub struct LocalLog {
    /// Held (an exclusive lock on `LOCK`) while open: one process per log.
    _lock: std::fs::File,
    /// `blobs/{digest}`: config-file contents, fsynced before a change names them.
    blobs: std::path::PathBuf,
    wal: Wal<()>,
    entries: Mutex<Entries>,
    tx: watch::Sender<Option<Arc<Change>>>,
}

impl LocalLog {
    /// Open (creating) the log in `dir` and replay it.
    pub fn open(dir: &Path) -> Result<LocalLog, ControlError> {
        crate::metrics::describe();
        std::fs::create_dir_all(dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(ControlError::Invalid(format!(
                "the control log in {} is in use by another process (a running gateway?)",
                dir.display()
            )));
        }
        let mut entries = Entries::default();
        let mut bad = 0usize;
        let (wal, report) = Wal::open(
            "control",
            dir,
            256,
            |_| 0,
            |seq, kind, payload| {
                if kind != KIND_CHANGE {
                    bad += 1;
                    return;
                }
                match serde_json::from_slice::<Change>(&payload) {
                    Ok(c) if c.version == entries.version() + 1 => {
                        entries.push(Arc::new(c), payload.len())
                    }
                    Ok(c) => {
                        tracing::error!(
                            seq,
                            version = c.version,
                            "control log entry out of sequence skipped"
                        );
                        bad += 1;
                    }
                    Err(e) => {
                        tracing::error!(seq, error = %e, "undecodable control log entry skipped");
                        bad += 1;
                    }
                }
            },
            Arc::new(Nothing),
        )
        .map_err(wal_err)?;
        if report.truncated_bytes > 0 {
            tracing::warn!(bytes = report.truncated_bytes, dir = %dir.display(), "torn control log tail cut off");
        }
        let n = entries.records.len();
        let head = entries.recent.back().cloned();
        tracing::info!(
            changes = n,
            skipped = bad,
            version = head.as_ref().map_or(0, |h| h.version),
            "control log opened"
        );
        ::metrics::gauge!(m::CONNECTED).set(1.0);
        ::metrics::gauge!(m::STORE_VERSION).set(head.as_ref().map_or(0, |h| h.version) as f64);
        let (tx, _) = watch::channel(head);
        let blobs = dir.join("blobs");
        std::fs::create_dir_all(&blobs)?;
        Ok(LocalLog {
            _lock: lock,
            blobs,
            wal,
            entries: Mutex::new(entries),
            tx,
        })
    }
}

fn wal_err(e: WalError) -> ControlError {
    match e {
        WalError::Io(e) => ControlError::Io(e),
        e => ControlError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl Backend for LocalLog {
    async fn head(&self) -> Result<Option<Arc<Change>>, ControlError> {
        Ok(self.entries.lock().await.recent.back().cloned())
    }

    async fn commit(&self, change: Change) -> Result<(), ControlError> {
        // The lock is held across the fsync: commits are serialised, so the version check
        // and the append are one step.
        let mut entries = self.entries.lock().await;
        let current = entries.version();
        if change.base_version != current || change.version != current + 1 {
            ::metrics::counter!(m::COMMITS, "outcome" => "conflict").increment(1);
            return Err(ControlError::Conflict {
                base: change.base_version,
                current,
            });
        }
        let payload = serde_json::to_vec(&change)
            .map_err(|e| ControlError::Invalid(format!("encode change: {e}")))?;
        let size = payload.len();
        self.wal
            .append(KIND_CHANGE, Bytes::from(payload), None)
            .await
            .map_err(wal_err)?;
        let change = Arc::new(change);
        entries.push(change.clone(), size);
        ::metrics::counter!(m::COMMITS, "outcome" => "ok").increment(1);
        ::metrics::gauge!(m::STORE_VERSION).set(change.version as f64);
        self.tx.send_replace(Some(change));
        Ok(())
    }

    async fn get(&self, version: u64) -> Result<Option<Arc<Change>>, ControlError> {
        let entries = self.entries.lock().await;
        let first = entries.recent.front().map_or(1, |c| c.version);
        Ok(version
            .checked_sub(first)
            .and_then(|i| entries.recent.get(i as usize))
            .filter(|c| c.version == version)
            .cloned())
    }

    async fn history(&self, limit: usize) -> Result<Vec<apus_schema::ChangeRecord>, ControlError> {
        let entries = self.entries.lock().await;
        let skip = entries.records.len().saturating_sub(limit);
        Ok(entries.records.iter().skip(skip).cloned().collect())
    }

    fn subscribe(&self) -> watch::Receiver<Option<Arc<Change>>> {
        self.tx.subscribe()
    }

    fn connected(&self) -> bool {
        true
    }

    async fn put_blob(&self, data: bytes::Bytes) -> Result<String, ControlError> {
        if data.len() > crate::MAX_BLOB {
            return Err(ControlError::Invalid(format!(
                "blob of {} bytes, over {}",
                data.len(),
                crate::MAX_BLOB
            )));
        }
        let d = crate::digest(&data);
        let path = self.blobs.join(&d);
        if !path.exists() {
            tokio::task::spawn_blocking(move || apus_wal::write_atomic(&path, &data))
                .await
                .map_err(|e| ControlError::Invalid(format!("blob write task: {e}")))??;
        }
        Ok(d)
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<bytes::Bytes>, ControlError> {
        if !crate::is_digest(digest) {
            return Ok(None);
        }
        match tokio::fs::read(self.blobs.join(digest)).await {
            Ok(b) => Ok(Some(bytes::Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_states_are_bounded_by_bytes() {
        let mut e = Entries::default();
        // ~1 MiB states (a pool of 40k servers): 64 fit the byte budget, not 1000.
        let mut doc = crate::ReleaseDoc::default();
        doc.pools.insert(
            "big".into(),
            crate::model::PoolState {
                servers: (0..40_000)
                    .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
                    .collect(),
                ..Default::default()
            },
        );
        for v in 1..=200u64 {
            let c = Change {
                version: v,
                base_version: v - 1,
                record: apus_schema::ChangeRecord::default(),
                state: doc.clone(),
            };
            let size = serde_json::to_vec(&c).unwrap().len();
            e.push(Arc::new(c), size);
        }
        assert!(e.recent.len() < 100, "{}", e.recent.len());
        assert!(e.state_bytes <= KEEP_STATE_BYTES);
        assert_eq!(e.version(), 200);
        assert_eq!(e.records.len(), 200);
    }
    use apus_schema::ChangeRecord;

    fn change(version: u64, tag: &str) -> Change {
        let mut state = crate::ReleaseDoc::default();
        state.pools.insert(
            "p".into(),
            crate::PoolState {
                servers: vec![format!("127.0.0.1:{version}")],
                drained: Default::default(),
            },
        );
        Change {
            version,
            base_version: version - 1,
            record: ChangeRecord {
                kind: tag.into(),
                to_version: version,
                ..Default::default()
            },
            state,
        }
    }

    #[tokio::test]
    async fn commits_conflicts_replay_and_lock() {
        let d = tempfile::tempdir().unwrap();
        {
            let log = LocalLog::open(d.path()).unwrap();
            assert!(log.head().await.unwrap().is_none());
            let mut rx = log.subscribe();
            log.commit(change(1, "seed")).await.unwrap();
            log.commit(change(2, "a")).await.unwrap();
            assert!(rx.has_changed().unwrap());
            assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, 2);
            // Stale base: refused, nothing written.
            match log.commit(change(2, "b")).await {
                Err(ControlError::Conflict {
                    base: 1,
                    current: 2,
                }) => {}
                other => panic!("{other:?}"),
            }
            // A second process may not open the same log.
            assert!(matches!(
                LocalLog::open(d.path()),
                Err(ControlError::Invalid(m)) if m.contains("in use")
            ));
            log.commit(change(3, "c")).await.unwrap();
        }
        // Tear the tail: garbage after the last record is cut off on open.
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "wal"))
            .unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut f, &[9, 9, 9]).unwrap();
        drop(f);
        let log = LocalLog::open(d.path()).unwrap();
        let head = log.head().await.unwrap().unwrap();
        assert_eq!(head.version, 3);
        assert_eq!(head.state.pools["p"].servers, ["127.0.0.1:3"]);
        assert_eq!(log.get(2).await.unwrap().unwrap().record.kind, "a");
        assert!(log.get(9).await.unwrap().is_none());
        let kinds: Vec<_> = log
            .history(10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(kinds, ["seed", "a", "c"]);
        log.commit(change(4, "d")).await.unwrap();
        assert_eq!(log.history(2).await.unwrap().len(), 2);
    }
}
