//! The golden incident in each store: the embedded store (memory + Parquet) and a real
//! ClickHouse server, both with the same Tantivy index for search.

pub mod data;

use std::sync::Arc;

use apus_query::engine::Limits;
use apus_query::{Engine, Searcher};
use apus_schema::{LogRecord, Row, Table};
use apus_store::local::LocalStore;
use apus_store::search::SearchIndex;

use data::{batches, logs};

/// An engine over the incident, and what must live as long as it.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub engine: Engine,
    _ch: Option<ClickHouse>,
}

/// A throwaway ClickHouse server (`scripts/clickhouse-start`).
struct ClickHouse {
    pid: u32,
    http: u16,
    dir: tempfile::TempDir,
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .status();
        let _ = &self.dir;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_clickhouse() -> ClickHouse {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse-start");
    let out = std::process::Command::new(script)
        .arg(dir.path())
        .arg(http.to_string())
        .arg(tcp.to_string())
        .output()
        .expect("scripts/clickhouse-start (needs clickhouse-server: scripts/setup)");
    assert!(
        out.status.success(),
        "clickhouse-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ClickHouse {
        pid: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        http,
        dir,
    }
}

fn index(dir: &std::path::Path) -> Arc<SearchIndex> {
    let search = Arc::new(SearchIndex::open(&dir.join("search")).unwrap());
    let lb = LogRecord::to_batch(&logs()).unwrap();
    search.index(1, lb);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while search.checkpoint() < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    search.refresh().unwrap();
    search
}

/// The same incident in a real ClickHouse server, read through the ClickHouse backend.
pub fn clickhouse_fixture() -> Fixture {
    use apus_store::clickhouse::{migrate, rowbinary, ChClient, ChUrl};
    let ch = start_clickhouse();
    let url = ChUrl::parse(&format!("clickhouse://127.0.0.1:{}/golden", ch.http)).unwrap();
    let client = ChClient::new(url.clone());
    migrate(&client, 0).unwrap();
    for (seq, (t, b)) in batches().into_iter().enumerate() {
        let mut body = Vec::new();
        rowbinary::encode(&b, "test", seq as u64 + 1, &mut body).unwrap();
        client.insert(t, body).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let search = index(dir.path());
    let backend = apus_store::clickhouse::read::ClickHouseBackend::new(
        client,
        false,
        apus_store::clickhouse::read::ReadLimits::default(),
    );
    let engine = Engine::with_backend(
        Arc::new(backend),
        Searcher::Local(search),
        Limits::default(),
    );
    Fixture {
        _dir: dir,
        engine,
        _ch: Some(ch),
    }
}

/// The incident in the embedded store: the first 40 minutes of access logs flushed to
/// Parquet, the rest in memory, so every query reads both.
pub fn embedded_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
    for (seq, (t, b)) in batches().into_iter().enumerate() {
        store.append(seq as u64 + 1, t, b);
        if seq == 0 {
            store.flush(Table::AccessLog).unwrap();
        }
    }
    let search = index(dir.path());
    let engine = Engine::new(store, Searcher::Local(search), Limits::default());
    Fixture {
        _dir: dir,
        engine,
        _ch: None,
    }
}
