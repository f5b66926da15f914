//! The write-ahead log: append-only, checksummed segments with group commit. Ingest's WAL
//! and the control plane's embedded log are both this crate; it knows nothing of what the
//! records mean: a record is a kind byte and an opaque payload, and an appender may attach
//! a decoded form of it (`T`) that the [`Consumer`] gets without decoding again.
//!
//! Record layout: `[len u32 LE][crc32 u32 LE][seq u64 LE][kind u8][payload]`, where `len`
//! counts `seq + kind + payload` and the CRC covers the same bytes. One writer thread owns
//! the active segment: it takes every append waiting in its bounded queue, writes them,
//! `fdatasync`s once, hands the records to the [`Consumer`] in sequence order, and only then
//! acknowledges them — so an acknowledged append is on disk and already visible to the
//! consumer. A full queue is refused at once ([`WalError::Full`]), which receivers turn
//! into HTTP 429. On open, a torn or corrupt tail is detected, reported and cut off; the
//! valid records before it are kept.
//!
//! Must never depend on: any other Apus crate (it is below all of them), Arrow, async
//! runtimes beyond a oneshot channel.

#![warn(clippy::print_stdout)]

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;

pub mod metrics;
use crate::metrics as m;

/// Replace `path` with `bytes` durably: write a temporary file beside it, fsync it, rename
/// it over `path`, fsync the directory. A crash leaves the old or the new content, never
/// a torn mix. (State files: collector offsets, store checkpoints, the etcd snapshot.)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

const HEADER: usize = 8;
const SEG_BYTES: u64 = 64 << 20;
/// Largest record accepted (a receiver batch is much smaller).
pub const MAX_RECORD: usize = 256 << 20;

/// WAL errors.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal io: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal queue full")]
    Full,
    #[error("wal writer stopped")]
    Stopped,
    #[error("wal record of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Receives durable records in sequence order, on the writer thread.
pub trait Consumer<T>: Send + Sync + 'static {
    /// Called once per record after it was fsynced, in increasing `seq`. `item` is the
    /// decoded form the appender attached (so the consumer need not decode the payload
    /// again).
    fn durable(&self, seq: u64, kind: u8, payload: &Bytes, item: Option<T>);
}

struct Append<T> {
    kind: u8,
    payload: Bytes,
    item: Option<T>,
    done: oneshot::Sender<Result<u64, (std::io::ErrorKind, String)>>,
}

/// Handle to the WAL: cheap to clone. `T` is the decoded form appenders may attach.
pub struct Wal<T = ()> {
    tx: SyncSender<Append<T>>,
    dir: Arc<PathBuf>,
    segments: Arc<Mutex<Vec<(u64, PathBuf)>>>,
    log: &'static str,
}

impl<T> Clone for Wal<T> {
    fn clone(&self) -> Self {
        Wal {
            tx: self.tx.clone(),
            dir: self.dir.clone(),
            segments: self.segments.clone(),
            log: self.log,
        }
    }
}

/// What opening found.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// Valid records present.
    pub records: u64,
    /// Bytes cut from torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Last sequence number found (0 if none).
    pub last_seq: u64,
}

fn seg_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "wal") {
            if let Some(n) = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
            {
                v.push((n, p));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Read the valid records of one segment; returns them and the valid length.
fn read_segment(path: &Path, mut f: impl FnMut(u64, u8, Bytes)) -> std::io::Result<(u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let data = Bytes::from(data);
    let mut off = 0usize;
    while off + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
        let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap_or([0; 4]));
        if !(9..=MAX_RECORD).contains(&len) || off + HEADER + len > data.len() {
            break;
        }
        let body = &data[off + HEADER..off + HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or([0; 8]));
        f(
            seq,
            body[8],
            data.slice(off + HEADER + 9..off + HEADER + len),
        );
        off += HEADER + len;
    }
    Ok((off as u64, data.len() as u64))
}

impl<T: Send + 'static> Wal<T> {
    /// Open (creating) the WAL in `dir`, replay every valid record with `seq > after(kind)`
    /// into `replay`, cut torn tails, and start the writer thread feeding `consumer`. `log`
    /// names this log in metrics and log lines (`ingest`, `control`).
    pub fn open(
        log: &'static str,
        dir: &Path,
        queue: usize,
        after: impl Fn(u8) -> u64,
        mut replay: impl FnMut(u64, u8, Bytes),
        consumer: Arc<dyn Consumer<T>>,
    ) -> Result<(Wal<T>, OpenReport), WalError> {
        fs::create_dir_all(dir)?;
        let mut report = OpenReport::default();
        let segs = list_segments(dir)?;
        for (_, path) in &segs {
            let (valid, total) = read_segment(path, |seq, kind, payload| {
                report.records += 1;
                report.last_seq = report.last_seq.max(seq);
                if seq > after(kind) {
                    replay(seq, kind, payload);
                }
            })?;
            if valid < total {
                tracing::warn!(log, segment = %path.display(), valid, total, "torn or corrupt WAL tail cut off");
                ::metrics::counter!(m::WAL_TRUNCATED_BYTES, "log" => log).increment(total - valid);
                report.truncated_bytes += total - valid;
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
        }
        let next = report.last_seq + 1;
        let path = dir.join(seg_name(next));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        File::open(dir)?.sync_all()?;
        let mut all = segs;
        if !all.iter().any(|(n, _)| *n == next) {
            all.push((next, path));
        }
        let segments = Arc::new(Mutex::new(all));
        let (tx, rx) = sync_channel(queue.max(1));
        let seg2 = segments.clone();
        let dir2 = dir.to_path_buf();
        std::thread::Builder::new()
            .name("apus-wal".into())
            .spawn(move || writer(log, rx, file, next, dir2, seg2, consumer))?;
        Ok((
            Wal {
                tx,
                dir: Arc::new(dir.to_path_buf()),
                segments,
                log,
            },
            report,
        ))
    }

    /// Append a record; resolves with its sequence number once it is durable. `item`, if
    /// given, is the decoded payload, handed to the consumer as is.
    pub async fn append(&self, kind: u8, payload: Bytes, item: Option<T>) -> Result<u64, WalError> {
        if payload.len() + 9 > MAX_RECORD {
            return Err(WalError::TooLarge(payload.len()));
        }
        let (done, rx) = oneshot::channel();
        match self.tx.try_send(Append {
            kind,
            payload,
            item,
            done,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(WalError::Full),
            Err(TrySendError::Disconnected(_)) => return Err(WalError::Stopped),
        }
        match rx.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err((kind, e))) => Err(WalError::Io(std::io::Error::new(kind, e))),
            Err(_) => Err(WalError::Stopped),
        }
    }

    /// Delete whole segments whose records all have `seq <= upto` (never the active one).
    pub fn remove_upto(&self, upto: u64) -> std::io::Result<usize> {
        let mut segs = self.segments.lock().unwrap_or_else(|p| p.into_inner());
        let mut removed = 0;
        // Segment i holds seqs [first_i, first_{i+1}); the last one is active.
        while segs.len() > 1 && segs[1].0 <= upto + 1 {
            let (_, p) = segs.remove(0);
            fs::remove_file(&p)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Encode and write one group of records (not yet flushed or synced), numbering them from
/// `next` and counting their bytes into `size`.
fn write_group<T>(
    out: &mut BufWriter<File>,
    batch: &[Append<T>],
    next: &mut u64,
    size: &mut u64,
) -> std::io::Result<()> {
    for a in batch {
        let mut head = [0u8; HEADER + 9];
        let len = (a.payload.len() + 9) as u32;
        head[HEADER..HEADER + 8].copy_from_slice(&next.to_le_bytes());
        head[HEADER + 8] = a.kind;
        let mut h = crc32fast::Hasher::new();
        h.update(&head[HEADER..]);
        h.update(&a.payload);
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..8].copy_from_slice(&h.finalize().to_le_bytes());
        out.write_all(&head)?;
        out.write_all(&a.payload)?;
        *size += (HEADER + len as usize) as u64;
        *next += 1;
    }
    Ok(())
}

fn writer<T: Send + 'static>(
    log: &'static str,
    rx: Receiver<Append<T>>,
    file: File,
    mut next: u64,
    dir: PathBuf,
    segments: Arc<Mutex<Vec<(u64, PathBuf)>>>,
    consumer: Arc<dyn Consumer<T>>,
) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut batch: Vec<Append<T>> = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let (first_seq, good_size) = (next, size);
        let res = write_group(&mut out, &batch, &mut next, &mut size)
            .and_then(|_| out.flush())
            .and_then(|_| out.get_ref().sync_data());
        ::metrics::counter!(m::WAL_FSYNCS, "log" => log).increment(1);
        ::metrics::histogram!(m::WAL_GROUP_SIZE, "log" => log).record(batch.len() as f64);
        match res {
            Ok(()) => {
                for (i, a) in batch.drain(..).enumerate() {
                    let seq = first_seq + i as u64;
                    consumer.durable(seq, a.kind, &a.payload, a.item);
                    let _ = a.done.send(Ok(seq));
                }
            }
            Err(e) => {
                // Disk full or failing: nothing of this group is acknowledged. Its bytes are
                // dropped from the buffer and cut from the segment, so the next group is
                // written right after the last durable record; otherwise leftovers of this
                // group would sit before later, acknowledged records and a replay would stop
                // at them (losing what came after).
                tracing::error!(log, error = %e, "WAL write failed; this group is refused");
                for a in batch.drain(..) {
                    let _ = a.done.send(Err((e.kind(), e.to_string())));
                }
                next = first_seq;
                size = good_size;
                let (f, _unwritten) = out.into_parts();
                if let Err(e) = f.set_len(good_size) {
                    tracing::error!(log, error = %e, "could not cut the failed group from the WAL");
                    // Start a fresh segment rather than append after a partial record.
                    size = SEG_BYTES;
                }
                out = BufWriter::with_capacity(1 << 20, f);
            }
        }
        if size >= SEG_BYTES {
            let path = dir.join(seg_name(next));
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    let _ = File::open(&dir).and_then(|d| d.sync_all());
                    out = BufWriter::with_capacity(1 << 20, f);
                    size = 0;
                    segments
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((next, path));
                }
                Err(e) => tracing::error!(error = %e, "could not roll WAL segment"),
            }
        }
    }
    let _ = out.flush();
    let _ = out.get_mut().seek(SeekFrom::End(0));
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGS: u8 = 1;
    const METRICS: u8 = 3;

    struct Collect(Mutex<Vec<(u64, u8, Bytes)>>);
    impl Consumer<()> for Collect {
        fn durable(&self, seq: u64, t: u8, p: &Bytes, _: Option<()>) {
            self.0.lock().unwrap().push((seq, t, p.clone()));
        }
    }

    type Opened = (Wal, OpenReport, Vec<(u64, u8, Bytes)>, Arc<Collect>);

    fn open(dir: &Path, after: u64) -> Opened {
        let c = Arc::new(Collect(Mutex::new(Vec::new())));
        let mut replayed = Vec::new();
        let (w, r) = Wal::open(
            "test",
            dir,
            64,
            |_| after,
            |s, t, p| replayed.push((s, t, p)),
            c.clone(),
        )
        .unwrap();
        (w, r, replayed, c)
    }

    #[tokio::test]
    async fn append_replay_and_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let (w, r, rep, c) = open(d.path(), 0);
            assert_eq!((r.records, rep.len()), (0, 0));
            for i in 0..10u8 {
                let s = w
                    .append(LOGS, Bytes::from(vec![i; 100]), None)
                    .await
                    .unwrap();
                assert_eq!(s, i as u64 + 1);
            }
            assert_eq!(
                c.0.lock().unwrap().len(),
                10,
                "consumer saw every durable record"
            );
        }
        // Tear the tail: append garbage to the segment.
        let seg = list_segments(d.path()).unwrap()[0].1.clone();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
        drop(f);
        let (w, r, rep, _) = open(d.path(), 4);
        assert_eq!(r.records, 10);
        assert_eq!(r.truncated_bytes, 7);
        assert_eq!(
            rep.iter().map(|x| x.0).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
        assert_eq!(rep[0].2, Bytes::from(vec![4u8; 100]));
        // New appends continue the sequence in a new segment.
        assert_eq!(
            w.append(METRICS, Bytes::from_static(b"x"), None)
                .await
                .unwrap(),
            11
        );
        assert_eq!(w.segment_count(), 2);
        assert_eq!(w.remove_upto(10).unwrap(), 1);
        assert_eq!(w.segment_count(), 1);
    }

    #[tokio::test]
    async fn corrupt_record_stops_replay_there() {
        let d = tempfile::tempdir().unwrap();
        {
            let (w, ..) = open(d.path(), 0);
            for _ in 0..3 {
                w.append(LOGS, Bytes::from(vec![7u8; 50]), None)
                    .await
                    .unwrap();
            }
        }
        let seg = list_segments(d.path()).unwrap()[0].1.clone();
        let mut data = fs::read(&seg).unwrap();
        let second = HEADER + 9 + 50;
        data[second + HEADER + 20] ^= 0xff; // flip a payload byte of record 2
        fs::write(&seg, &data).unwrap();
        let (_, r, rep, _) = open(d.path(), 0);
        assert_eq!(rep.len(), 1);
        assert_eq!(r.truncated_bytes as usize, 2 * (HEADER + 9 + 50));
    }
}
