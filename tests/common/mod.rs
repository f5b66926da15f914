//! Shared harness for end-to-end tests: real `apus` processes on loopback ports.
#![allow(dead_code)]

pub mod alarms;
pub mod all_in_one;
pub mod browser;
pub mod clickhouse;

#[allow(unused_imports)]
pub use all_in_one::{AllInOne, RunOpts};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_apus");
/// The slim gateway-only binary (`apus-gateway`: `apus gateway` without the other roles).
pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_apus-gateway");

#[allow(unused_imports)]
pub use apus_testkit::{free_port, wait_until, Etcd, Hook, Proc, TempDir};

/// Start an echo upstream named `name` on `port`, and wait until it answers.
pub fn upstream(port: u16, name: &str) -> Proc {
    upstream_with(port, name, &[])
}

/// [`upstream`] with extra arguments (e.g. `--fail-tenant '*'`: a bad build).
pub fn upstream_with(port: u16, name: &str, extra: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args([
            "upstream",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--name",
            name,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn upstream");
    let p = Proc(child);
    let c = client();
    wait_until(&format!("upstream {name}"), Duration::from_secs(10), || {
        c.get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .is_ok()
    });
    p
}

/// A client presenting the admin token (every listener checks tokens).
pub fn client() -> reqwest::blocking::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN}").parse().unwrap(),
    );
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(h)
        .build()
        .unwrap()
}

/// A client with no credentials.
pub fn bare_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The test tokens as a tokens file next to `dir` (for `--tokens`).
pub fn tokens_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.with_extension("tokens.toml");
    std::fs::write(&path, TOKENS).unwrap();
    path
}

/// A running gateway with its ports and working directory.
pub struct Gateway {
    pub proc: Proc,
    pub port: u16,
    pub admin: u16,
    pub dir: PathBuf,
}

impl Gateway {
    /// Start `apus gateway` with `body` (pools, routes, tokens) appended to the listener
    /// settings; waits until the proxy and admin ports answer.
    pub fn start(body: &str) -> Gateway {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("apus-test-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(body, &dir, port, free_port(), &[])
    }

    /// Start in `dir` (config, log, data dir `dir/data`) on the given ports, with extra
    /// arguments (e.g. `--control etcd://…`); the same `dir` again is a restart.
    pub fn start_in(
        body: &str,
        dir: &std::path::Path,
        port: u16,
        admin: u16,
        extra: &[&str],
    ) -> Gateway {
        Self::start_cmd(
            Command::new(BIN).arg("gateway"),
            body,
            dir,
            port,
            admin,
            extra,
        )
    }

    /// The same as [`Self::start`], run by the slim `apus-gateway` binary.
    pub fn start_slim(body: &str) -> Gateway {
        let (port, admin) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("apus-test-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_cmd(&mut Command::new(GATEWAY_BIN), body, &dir, port, admin, &[])
    }

    fn start_cmd(
        cmd: &mut Command,
        body: &str,
        dir: &std::path::Path,
        port: u16,
        admin: u16,
        extra: &[&str],
    ) -> Gateway {
        let dir = dir.to_path_buf();
        let cfg = format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\naccess_log = \"{}\"\ntrusted_proxies = [\"127.0.0.1\"]\n{body}\n{TOKENS}",
            dir.join("access.jsonl").display()
        );
        let path = dir.join("gateway.toml");
        std::fs::write(&path, cfg).unwrap();
        let data = dir.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .unwrap();
        let child = cmd
            .args(["--config", path.to_str().unwrap()])
            .env("APUS_INGEST_TOKEN", ADMIN)
            .args(["--data-dir", data.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gateway");
        let g = Gateway {
            proc: Proc(child),
            port,
            admin,
            dir,
        };
        let c = client();
        wait_until("gateway admin", Duration::from_secs(20), || {
            c.get(g.admin_url("/health")).send().is_ok()
        });
        wait_until("gateway proxy", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        g
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

pub const ADMIN: &str = "test-admin-token";
pub const RM_PROD: &str = "rm-prod-token-0001";
pub const VIEWER: &str = "viewer-token-00001";

pub const TOKENS: &str = r#"
[[tokens]]
name = "alice"
token = "test-admin-token"
role = "admin"

[[tokens]]
name = "bob"
token = "rm-prod-token-0001"
role = "release_manager"
scopes = ["shop/prod"]

[[tokens]]
name = "carol"
token = "viewer-token-00001"
role = "viewer"
"#;

/// GET through the gateway; returns (status, upstream name, tag header, json body).
pub fn get(
    c: &reqwest::blocking::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String, serde_json::Value) {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().expect("request");
    let status = r.status().as_u16();
    let tag = r
        .headers()
        .get("x-env-tag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    let up = v["upstream"].as_str().unwrap_or("").to_string();
    (status, up, tag, v)
}

/// A running `apus ingest` on a free port over `data_dir`.
pub struct Ingest {
    pub proc: Proc,
    pub port: u16,
}

impl Ingest {
    pub fn start(data_dir: &std::path::Path) -> Ingest {
        Self::start_on(data_dir, free_port())
    }

    pub fn start_on(data_dir: &std::path::Path, port: u16) -> Ingest {
        Self::start_with(data_dir, port, &[], &[])
    }

    /// Start with extra arguments (e.g. `--store URL`) and environment variables.
    pub fn start_with(
        data_dir: &std::path::Path,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Ingest {
        let child = Command::new(BIN)
            .args([
                "ingest",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tokens",
            ])
            .arg(tokens_file(data_dir))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data_dir.with_extension("log"))
                    .unwrap(),
            )
            .spawn()
            .expect("spawn ingest");
        let i = Ingest {
            proc: Proc(child),
            port,
        };
        let c = client();
        wait_until("ingest", Duration::from_secs(30), || {
            c.get(i.url("/health")).send().is_ok()
        });
        i
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A data directory opened as a restart would (WAL replay included), for SQL over it.
pub struct DataDir {
    rt: tokio::runtime::Runtime,
    ctx: datafusion::prelude::SessionContext,
    _pipeline: std::sync::Arc<apus_ingest::Pipeline>,
}

impl DataDir {
    pub fn open(data_dir: &std::path::Path) -> DataDir {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ctx, p) = rt.block_on(async {
            let cfg = apus_ingest::IngestConfig {
                data_dir: data_dir.to_path_buf(),
                ..Default::default()
            };
            let p = apus_ingest::Pipeline::open(cfg).unwrap();
            let ctx = datafusion::prelude::SessionContext::new();
            p.store().register(&ctx).await.unwrap();
            (ctx, p)
        });
        DataDir {
            rt,
            ctx,
            _pipeline: p,
        }
    }

    pub fn sql(&self, sql: &str) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
        self.rt
            .block_on(async { self.ctx.sql(sql).await.unwrap().collect().await.unwrap() })
    }

    pub fn count(&self, sql: &str) -> i64 {
        scalar_i64(&self.sql(sql))
    }
}

/// First column of the first row as i64.
pub fn scalar_i64(b: &[datafusion::arrow::record_batch::RecordBatch]) -> i64 {
    use datafusion::arrow::array::AsArray;
    b[0].column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(0)
}

/// The `[[pools]]` of a test gateway: `stable` (HTTP health checks) and `gray` (TCP).
pub fn pools(stable: &[u16], gray: &[u16], interval_ms: u64) -> String {
    let list = |ps: &[u16]| {
        ps.iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[[pools]]
name = "stable"
servers = [{}]
health_check = {{ kind = "http", path = "/health", interval_ms = {interval_ms}, timeout_ms = 300 }}

[[pools]]
name = "gray"
servers = [{}]
health_check = {{ kind = "tcp", interval_ms = {interval_ms}, timeout_ms = 300 }}
"#,
        list(stable),
        list(gray)
    )
}

/// The kinds of the changes in a `/admin/v1/changes` answer, oldest first.
pub fn change_kinds(v: &serde_json::Value) -> Vec<String> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Route `api` of project `shop`, env `prod`: tenant `acme` and the `10.0.0.0/8` office
/// network go gray.
pub const ROUTE: &str = r#"
[[routes]]
name = "api"
path_prefix = "/"
project = "shop"
env = "prod"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }, { query = "orgId" }]

[[routes.gray_rules]]
name = "beta"
pool = "gray"
tenants = ["acme"]

[[routes.gray_rules]]
name = "office"
pool = "gray"
tag = "office"
cidrs = ["10.0.0.0/8"]
"#;

/// `PUT` a route's gray rules as `token`; the status and the JSON answer.
pub fn set_rules(
    c: &reqwest::blocking::Client,
    gw: &Gateway,
    token: &str,
    rules: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c
        .put(gw.admin_url("/admin/v1/routes/api/rules"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "rules": rules, "reason": "test" }))
        .send()
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(serde_json::json!(null)))
}

/// A gateway with one stable (`stable-1` on `s1`) and one gray (`gray-1` on `g1`) echo
/// upstream, and `extra_route` (e.g. [`ROUTE`]) after the pools.
pub struct Setup {
    pub _ups: Vec<Proc>,
    pub gw: Gateway,
    pub s1: u16,
    pub g1: u16,
}

pub fn setup(extra_route: &str) -> Setup {
    let (s1, g1) = (free_port(), free_port());
    let ups = vec![upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let gw = Gateway::start(&format!("{}{}", pools(&[s1], &[g1], 200), extra_route));
    Setup {
        _ups: ups,
        gw,
        s1,
        g1,
    }
}
