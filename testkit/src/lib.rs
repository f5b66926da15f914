//! Dev-only test helpers shared by the integration tests of every crate: free loopback
//! ports, process guards that kill on drop, wait-until, and harnesses for the real servers
//! the tests start (ClickHouse, etcd).
//!
//! Must never be a normal (non-dev) dependency of any crate.

#![warn(clippy::print_stdout)]
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Kill and reap now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `f` every 20 ms until it holds; panic naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A temporary directory removed when dropped (kept when `APUS_KEEP_TEST_DIRS` is set).
pub struct TempDir(Option<tempfile::TempDir>);

impl TempDir {
    /// A new directory under the system temp dir, named with `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        let d = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create a temp dir");
        TempDir(Some(d))
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map(|d| d.path())
            .expect("temp dir present until drop")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("APUS_KEEP_TEST_DIRS").is_some() {
            if let Some(d) = self.0.take() {
                let _kept = d.keep();
            }
        }
    }
}

/// A real etcd server (Debian's `etcd-server`) on free loopback ports with its data in a
/// directory of its own; killed when dropped, restartable on the same data and port.
pub struct Etcd {
    proc: Option<Proc>,
    /// Client port.
    pub port: u16,
    peer: u16,
    dir: PathBuf,
}

impl Etcd {
    /// Start etcd with its data under `dir` and wait until it answers.
    pub fn start(dir: &Path) -> Etcd {
        let mut e = Etcd {
            proc: None,
            port: free_port(),
            peer: free_port(),
            dir: dir.to_path_buf(),
        };
        e.restart();
        e
    }

    /// The `--control` URL for this server with `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.port)
    }

    /// Kill it (SIGKILL): the outage a crash causes.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Start it again on the same data and ports, and wait until it answers.
    pub fn restart(&mut self) {
        let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("etcd is not installed (scripts/setup installs etcd-server)");
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(bin)
            .args(["--name", "apus-test"])
            .arg("--data-dir")
            .arg(self.dir.join("etcd-data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("apus-test={peer}")])
            .args(["--log-level", "warn"])
            .env("ETCD_UNSUPPORTED_ARCH", "arm64")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.proc = Some(Proc(child));
        let port = self.port;
        wait_until("etcd to answer", Duration::from_secs(20), || {
            http_post(port, "/v3/kv/range", r#"{"key":"AA=="}"#)
                .is_some_and(|s| s.contains("header"))
        });
    }
}

/// A minimal blocking HTTP/1.1 POST to 127.0.0.1:`port` (for health probes in harnesses);
/// the body of a 200 answer, or `None`.
pub fn http_post(port: u16, path: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, rest) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| rest.to_string())
}
