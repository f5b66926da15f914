//! A real ClickHouse server (Debian's `clickhouse-server`, 18.16 here), started by
//! `scripts/clickhouse-start` on free loopback ports with its data in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, http_post};

/// A ClickHouse server process on free loopback ports.
pub struct ClickHouse {
    dir: PathBuf,
    /// HTTP port.
    pub http: u16,
    /// Native-protocol port.
    pub tcp: u16,
    pid: Option<u32>,
    remote: Option<PathBuf>,
}

impl ClickHouse {
    /// Start a server named `name` (its data in a temp dir) and wait until it answers.
    pub fn start(name: &str) -> ClickHouse {
        let dir = std::env::temp_dir().join(format!(
            "apus-ch-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut ch = ClickHouse {
            dir,
            http: free_port(),
            tcp: free_port(),
            pid: None,
            remote: None,
        };
        ch.up();
        ch
    }

    /// A server that is one shard of the cluster `apus2` described by `remote` (XML).
    pub fn start_shard(name: &str, http: u16, tcp: u16, remote: &Path) -> ClickHouse {
        let mut ch = ClickHouse {
            dir: std::env::temp_dir().join(format!(
                "apus-ch-{name}-{}-{}",
                std::process::id(),
                free_port()
            )),
            http,
            tcp,
            pid: None,
            remote: Some(remote.to_path_buf()),
        };
        ch.up();
        ch
    }

    /// Start (again) on the same data and ports.
    pub fn up(&mut self) {
        let script = repo_script("clickhouse-start");
        let out = Command::new(script)
            .arg(&self.dir)
            .arg(self.http.to_string())
            .arg(self.tcp.to_string())
            .args(self.remote.iter())
            .output()
            .expect("run scripts/clickhouse-start (needs clickhouse-server: scripts/setup)");
        assert!(
            out.status.success(),
            "clickhouse-server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.pid = Some(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap());
    }

    /// Kill it (SIGKILL) and wait until it is gone.
    pub fn down(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The `--store` URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("clickhouse://127.0.0.1:{}/{db}", self.http)
    }

    /// Run `sql`; its answer, trimmed (panics unless the server says 200).
    pub fn query(&self, sql: &str) -> String {
        http_post(self.http, "/", sql)
            .unwrap_or_else(|| panic!("{sql}: no 200 answer"))
            .trim()
            .to_string()
    }

    /// A count, or None while the table does not exist yet (or the server is down).
    pub fn try_count(&self, sql: &str) -> Option<u64> {
        http_post(self.http, "/", sql)?.trim().parse().ok()
    }

    /// A count (panics when there is none).
    pub fn count(&self, sql: &str) -> u64 {
        self.query(sql).parse().unwrap_or_else(|_| panic!("{sql}"))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `scripts/NAME` of the checkout under test, found from the running test's package dir
/// (cargo sets `CARGO_MANIFEST_DIR` for it) rather than the path this crate was compiled
/// at: a shared target dir may hold a build of testkit made from another checkout.
fn repo_script(name: &str) -> std::path::PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let here = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    here.iter()
        .flat_map(|d| d.ancestors())
        .chain(compiled.ancestors())
        .map(|d| d.join("scripts").join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| compiled.join("scripts").join(name))
}
