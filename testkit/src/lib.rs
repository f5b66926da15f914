//! Dev-only test helpers shared by the integration tests of every crate: free loopback
//! ports, process guards that kill on drop, wait-until, and harnesses for the real servers
//! the tests start (ClickHouse, etcd), and a webhook receiver.
//!
//! Must never be a normal (non-dev) dependency of any crate.

#![warn(clippy::print_stdout)]
mod clickhouse;
mod etcd;
mod hook;

pub use clickhouse::ClickHouse;
pub use etcd::Etcd;
pub use hook::{Hook, Received};

use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
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

/// A minimal blocking HTTP/1.0 POST to 127.0.0.1:`port` (HTTP/1.0, so the answer is never
/// chunked: the harnesses' probes and queries); the body of a 200 answer, or `None`.
pub fn http_post(port: u16, path: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, rest) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| rest.to_string())
}
