//! `apus run` (gateway, ingest, query and console in one process) for end-to-end tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::*;

/// How to start an `apus run` under test.
#[derive(Default)]
pub struct RunOpts<'a> {
    /// `[gateway] access_log` (default `off`).
    pub access_log: &'a str,
    /// Put the [`ADMIN`] token in the config (else only `tokens_file`, or none at all).
    pub config_token: bool,
    /// A tokens file's text, passed with `--tokens` when not empty.
    pub tokens_file: &'a str,
    /// Environment of the process.
    pub env: &'a [(&'a str, &'a str)],
    /// Appended to the `[query]` section (e.g. `[query.alarms]` tables).
    pub query_extra: &'a str,
    /// Files written into the run's directory (beside the config) before it starts.
    pub files: &'a [(&'a str, &'a str)],
    /// Appended to the config after the route (e.g. more `[[gateway.pools]]`).
    pub gateway_extra: &'a str,
}

/// `apus run` (gateway, ingest, query) over one echo upstream, on free ports, with its
/// data, stdout and log in a temporary directory.
pub struct AllInOne {
    pub proc: Proc,
    pub upstream: Proc,
    pub port: u16,
    pub admin: u16,
    pub ing: u16,
    pub q: u16,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl AllInOne {
    /// Start it and wait until every listener answers `/health`.
    pub fn start(o: RunOpts) -> AllInOne {
        let (up, port, admin, ing, q) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let upstream = upstream(up, "stable-1");
        let dir = std::env::temp_dir().join(format!("apus-run-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = if o.config_token {
            format!("[[gateway.tokens]]\nname = \"alice\"\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n")
        } else {
            String::new()
        };
        let access_log = if o.access_log.is_empty() {
            "off"
        } else {
            o.access_log
        };
        let (query_extra, gateway_extra) = (o.query_extra, o.gateway_extra);
        for (name, text) in o.files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let cfg = format!(
            r#"
[ingest]
listen = "127.0.0.1:{ing}"
flush_interval_ms = 200

[query]
listen = "127.0.0.1:{q}"
{query_extra}

[gateway]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
access_log = "{access_log}"

[[gateway.pools]]
name = "stable"
servers = ["127.0.0.1:{up}"]

[[gateway.routes]]
name = "api"
project = "shop"
env = "prod"
stable_pool = "stable"
tenant_sources = [{{ header = "x-tenant-id" }}]

{gateway_extra}

{token}
"#
        );
        std::fs::write(dir.join("apus.toml"), cfg).unwrap();
        if !o.tokens_file.is_empty() {
            std::fs::write(dir.join("tokens.toml"), o.tokens_file).unwrap();
        }
        let env: Vec<(String, String)> = o
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = Self::spawn(&dir, &env, [admin, ing, q]);
        AllInOne {
            proc,
            upstream,
            port,
            admin,
            ing,
            q,
            dir,
            env,
        }
    }

    fn spawn(dir: &std::path::Path, env: &[(String, String)], ports: [u16; 3]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("apus.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"));
        if dir.join("tokens.toml").exists() {
            cmd.arg("--tokens").arg(dir.join("tokens.toml"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("run.log"))
            .unwrap();
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let proc = Proc(child);
        let c = bare_client();
        wait_until("apus run", Duration::from_secs(30), || {
            ports.iter().all(|p| {
                c.get(format!("http://127.0.0.1:{p}/health"))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            })
        });
        proc
    }

    /// Kill it (SIGKILL, no clean shutdown) and start it again on the same ports and data.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = Self::spawn(&self.dir, &self.env, [self.admin, self.ing, self.q]);
    }

    /// `http://127.0.0.1:{query port}{path}`.
    pub fn query_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.q)
    }

    /// `http://127.0.0.1:{proxy port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default()
    }

    /// Its data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}
