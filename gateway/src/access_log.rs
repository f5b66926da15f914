//! The access-log emitter: the proxy hands each [`AccessRecord`] to a bounded channel with
//! `try_send` (never blocking the request path); a dedicated writer thread drains it in
//! batches into an [`AccessLogSink`]. A full channel drops the record, counts it in
//! `apus_gateway_access_log_dropped_total` and logs (rate-limited) — never silently.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use apus_schema::AccessRecord;

use crate::config::AccessLogTarget;
use crate::metrics as m;
use crate::GatewayError;

/// Where access-log batches go.
pub trait AccessLogSink: Send + 'static {
    /// Write a batch; called from the writer thread only.
    fn write_batch(&mut self, batch: &[AccessRecord]) -> std::io::Result<()>;
}

/// JSON lines to any writer (stdout, a file).
pub struct JsonLinesSink<W: Write + Send + 'static>(pub BufWriter<W>);

impl<W: Write + Send + 'static> AccessLogSink for JsonLinesSink<W> {
    fn write_batch(&mut self, batch: &[AccessRecord]) -> std::io::Result<()> {
        for r in batch {
            serde_json::to_writer(&mut self.0, r)?;
            self.0.write_all(b"\n")?;
        }
        self.0.flush()
    }
}

/// Ships batches to an ingest node (`POST {base}/ingest/v1/access`, JSON lines), retrying
/// with backoff while the node is down or overloaded; a batch is dropped (and counted) only
/// after the retries are exhausted, so the writer thread — not the proxy — absorbs outages.
pub struct HttpSink {
    url: String,
    client: Poster,
}

impl HttpSink {
    /// A sink posting to the ingest node at `base` (`http://host:port`), presenting
    /// `token` (a `gateway` or `shipper` token of that node).
    pub fn new(base: &str, token: Option<String>) -> std::io::Result<Self> {
        Ok(HttpSink {
            url: format!("{}/ingest/v1/access", base.trim_end_matches('/')),
            client: Poster::new(token)?,
        })
    }
}

impl AccessLogSink for HttpSink {
    fn write_batch(&mut self, batch: &[AccessRecord]) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(batch.len() * 256);
        for r in batch {
            serde_json::to_writer(&mut body, r)?;
            body.push(b'\n');
        }
        self.client.post_with_retry(&self.url, body)
    }
}

/// A blocking POST client for one shipping thread: `apus_control::http` on a
/// current-thread runtime of its own, presenting the ingest token if one is set.
pub struct Poster {
    rt: tokio::runtime::Runtime,
    authorization: Option<String>,
}

impl Poster {
    /// A client for the calling thread, sending `Authorization: Bearer token`.
    pub fn new(token: Option<String>) -> std::io::Result<Poster> {
        Ok(Poster {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            authorization: token.map(|t| format!("Bearer {t}")),
        })
    }

    /// POST `body` (JSON lines), retrying 429/5xx/connection errors with exponential
    /// backoff (about 30 s in all).
    pub fn post_with_retry(&self, url: &str, body: Vec<u8>) -> std::io::Result<()> {
        let body = bytes::Bytes::from(body);
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..10 {
            let mut headers = vec![("content-type", "application/x-ndjson")];
            if let Some(a) = &self.authorization {
                headers.push(("authorization", a.as_str()));
            }
            let call =
                apus_control::http::post_with(url, &headers, body.clone(), Duration::from_secs(10));
            match self.rt.block_on(call) {
                Ok((st, _)) if (200..300).contains(&st) => return Ok(()),
                Ok((st, _)) if st == 429 || st >= 500 => last = format!("HTTP {st}"),
                Ok((st, answer)) => {
                    return Err(std::io::Error::other(format!(
                        "{url}: HTTP {st}: {}",
                        String::from_utf8_lossy(&answer)
                    )))
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(std::io::Error::other(format!(
            "{url}: gave up after retries: {last}"
        )))
    }
}

/// Ships single records (change events) to an ingest node as JSON lines from a background
/// thread, batching what queued up meanwhile, through the same [`Poster`] as the access
/// log; the caller never waits on the network. A full queue is logged, not hidden.
pub struct Shipper<T> {
    tx: SyncSender<T>,
    what: &'static str,
}

impl<T: serde::Serialize + Clone + Send + 'static> Shipper<T> {
    /// Start the shipping thread posting to `url` (presenting `token`), with a queue of
    /// `capacity` records.
    pub fn start(what: &'static str, url: String, token: Option<String>, capacity: usize) -> Self {
        let (tx, rx) = sync_channel::<T>(capacity.max(1));
        let spawned = std::thread::Builder::new()
            .name(format!("apus-ship-{what}"))
            .spawn(move || {
                let client = match Poster::new(token) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(what, error = %e, "no shipping runtime; records not shipped");
                        return;
                    }
                };
                while let Ok(first) = rx.recv() {
                    let mut body = Vec::new();
                    for r in std::iter::once(first).chain(rx.try_iter().take(999)) {
                        if serde_json::to_writer(&mut body, &r).is_ok() {
                            body.push(b'\n');
                        }
                    }
                    if let Err(e) = client.post_with_retry(&url, body) {
                        tracing::error!(what, error = %e, "records not delivered to ingest");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(what, error = %e, "could not start the shipping thread");
        }
        Shipper { tx, what }
    }

    /// Queue one record (never blocks).
    pub fn send_one(&self, rec: &T) {
        if self.tx.try_send(rec.clone()).is_err() {
            tracing::error!(what = self.what, "shipping queue full; record not shipped");
        }
    }
}

/// The proxy-side handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<AccessRecord>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// A handle that discards records (access logging off).
    pub fn off() -> Self {
        AccessLog {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Start a writer thread over `sink` with a channel of `capacity` records.
    pub fn start(sink: Box<dyn AccessLogSink>, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity.max(1));
        std::thread::Builder::new()
            .name("apus-access-log".into())
            .spawn(move || writer(rx, sink))
            .expect("spawn access-log writer thread");
        AccessLog {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Open the sink the config's `access_log` names (an ingest node is sent `token`).
    pub fn from_config(
        target: &AccessLogTarget,
        capacity: usize,
        token: Option<String>,
    ) -> Result<Self, GatewayError> {
        Ok(match target {
            AccessLogTarget::Off => Self::off(),
            AccessLogTarget::Ingest(url) => {
                Self::start(Box::new(HttpSink::new(url, token)?), capacity)
            }
            AccessLogTarget::Stdout => Self::start(
                Box::new(JsonLinesSink(BufWriter::new(std::io::stdout()))),
                capacity,
            ),
            AccessLogTarget::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Self::start(Box::new(JsonLinesSink(BufWriter::new(f))), capacity)
            }
            AccessLogTarget::InProcess => {
                return Err(GatewayError::Config(
                    "access_log = \"in-process\" needs the ingest tier in the same process \
                     (`apus run`)"
                        .into(),
                ))
            }
        })
    }

    /// Whether records are wanted at all (skip building them when off).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Hand a record over without blocking; count and log it if the channel is full.
    pub fn emit(&self, rec: AccessRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!(m::ACCESS_LOG_DROPPED).increment(1);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped_total = n + 1,
                        "access-log channel full, dropping records"
                    );
                }
            }
        }
    }
}

fn writer(rx: Receiver<AccessRecord>, mut sink: Box<dyn AccessLogSink>) {
    let mut batch = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if let Err(e) = sink.write_batch(&batch) {
            tracing::error!(error = %e, records = n, "access-log sink failed; batch lost");
            std::thread::sleep(Duration::from_millis(100));
        } else {
            metrics::counter!(m::ACCESS_LOG_WRITTEN).increment(n);
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::Mutex;
    use std::time::Instant;

    /// A sink the test holds shut: it reports entering `write_batch`, then waits for a
    /// release. Lets the test fill the channel deterministically instead of racing a timer.
    struct Gated {
        entered: Sender<usize>,
        release: Mutex<Receiver<()>>,
        written: Arc<AtomicU64>,
    }
    impl AccessLogSink for Gated {
        fn write_batch(&mut self, b: &[AccessRecord]) -> std::io::Result<()> {
            let _ = self.entered.send(b.len());
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            self.written.fetch_add(b.len() as u64, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn saturation_drops_are_counted_not_blocking() {
        let (entered_tx, entered_rx) = channel();
        let (release_tx, release_rx) = channel();
        let written = Arc::new(AtomicU64::new(0));
        let log = AccessLog::start(
            Box::new(Gated {
                entered: entered_tx,
                release: Mutex::new(release_rx),
                written: written.clone(),
            }),
            4,
        );
        // One record reaches the sink, which then holds the writer thread.
        log.emit(AccessRecord::default());
        let first = entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first, 1);
        // The channel takes exactly its capacity; everything else is dropped and counted,
        // and emitting never waits on the stuck sink.
        let t = Instant::now();
        for _ in 0..1000 {
            log.emit(AccessRecord::default());
        }
        assert!(t.elapsed() < Duration::from_secs(5), "emit must not block");
        assert_eq!(log.dropped.load(Ordering::SeqCst), 996);
        // Open the gate: the queued records are written, none lost beyond the counted drops.
        for _ in 0..8 {
            release_tx.send(()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while written.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(written.load(Ordering::SeqCst), 5);
    }
}
