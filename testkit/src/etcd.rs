//! A real etcd server for the control plane's fleet tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_post, wait_until, Proc};

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
