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
    client: reqwest::blocking::Client,
}

impl HttpSink {
    /// A sink posting to the ingest node at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        HttpSink {
            url: format!("{}/ingest/v1/access", base.trim_end_matches('/')),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }
}

impl AccessLogSink for HttpSink {
    fn write_batch(&mut self, batch: &[AccessRecord]) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(batch.len() * 256);
        for r in batch {
            serde_json::to_writer(&mut body, r)?;
            body.push(b'\n');
        }
        post_with_retry(&self.client, &self.url, body)
    }
}

/// POST `body`, retrying 429/5xx/connection errors with exponential backoff (about 30 s).
pub fn post_with_retry(
    client: &reqwest::blocking::Client,
    url: &str,
    body: Vec<u8>,
) -> std::io::Result<()> {
    let mut delay = Duration::from_millis(100);
    let mut last = String::new();
    for _ in 0..10 {
        match client.post(url).body(body.clone()).send() {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                last = format!("{}", r.status())
            }
            Ok(r) => return Err(std::io::Error::other(format!("{url}: {}", r.status()))),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Err(std::io::Error::other(format!(
        "{url}: gave up after retries: {last}"
    )))
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

    /// Open the sink named by the config's `access_log` value.
    pub fn from_config(target: &str, capacity: usize) -> Result<Self, GatewayError> {
        Ok(match target {
            "off" | "" => Self::off(),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Self::start(Box::new(HttpSink::new(url)), capacity)
            }
            "stdout" => Self::start(
                Box::new(JsonLinesSink(BufWriter::new(std::io::stdout()))),
                capacity,
            ),
            path => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Self::start(Box::new(JsonLinesSink(BufWriter::new(f))), capacity)
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
