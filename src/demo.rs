//! `apus demo` and `apus upstream`: a self-contained demonstration — echo upstreams for a
//! stable and a gray pool, a gateway in front of them with an example rule set, and a
//! traffic generator that shows where each kind of request lands.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// An upstream that answers every path with JSON naming itself and echoing the lane
/// headers the gateway set; `GET /health` answers `ok`.
pub async fn serve_echo(addr: SocketAddr, name: String) -> Result<()> {
    async fn echo(State(name): State<String>, req: Request) -> Json<Value> {
        let h = |k: &str| {
            req.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Json(json!({
            "upstream": name,
            "path": req.uri().path(),
            "x-env-tag": h("x-env-tag"),
            "baggage": h("baggage"),
            "x-request-id": h("x-request-id"),
            "x-tenant-id": h("x-tenant-id"),
        }))
    }
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .fallback(echo)
        .with_state(name);
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    axum::serve(l, app).await?;
    Ok(())
}

const DEMO_CONFIG: &str = r#"
[ingest]
listen = "127.0.0.1:9200"

[gateway]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9901"
access_log = "in-process"

[[gateway.pools]]
name = "stable"
servers = ["127.0.0.1:7001", "127.0.0.1:7002"]
health_check = { kind = "http", path = "/health", interval_ms = 1000 }

[[gateway.pools]]
name = "gray"
servers = ["127.0.0.1:7003"]
health_check = { kind = "http", path = "/health", interval_ms = 1000 }

[[gateway.routes]]
name = "api"
path_prefix = "/api"
project = "shop"
env = "prod"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }, { query = "orgId" }, { cookie = "tenant" }]

[[gateway.routes.gray_rules]]
name = "beta-tenants"
pool = "gray"
tenants = ["acme", "globex"]

[[gateway.routes.gray_rules]]
name = "office-network"
pool = "gray"
cidrs = ["10.0.0.0/8", "fd00::/8"]

[[gateway.routes.gray_rules]]
name = "ramp"
pool = "gray"
percent = 10

[[gateway.tokens]]
name = "demo-admin"
token = "demo-admin-token"
role = "admin"
"#;

/// Run the demo: upstreams, `apus run` (gateway + ingest), traffic. Stops after `seconds`
/// if given.
pub fn run(
    seconds: Option<u64>,
    data_dir: std::path::PathBuf,
    prom: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("apus-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("apus.toml");
    std::fs::write(&cfg_path, DEMO_CONFIG)?;
    let rt = tokio::runtime::Runtime::new()?;
    for (port, name) in [(7001, "stable-1"), (7002, "stable-2"), (7003, "gray-1")] {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        rt.spawn(async move {
            if let Err(e) = serve_echo(addr, name.into()).await {
                tracing::error!(error = %e, "demo upstream failed");
            }
        });
    }
    std::thread::spawn(move || {
        let _rt = rt; // keeps the upstreams alive
        traffic(seconds);
    });
    println!("demo: gateway on http://127.0.0.1:8080, admin on http://127.0.0.1:9901 (token demo-admin-token)");
    println!("demo: config written to {}", cfg_path.display());
    super::run::run(&cfg_path, Some(data_dir), None, prom)
}

fn traffic(seconds: Option<u64>) {
    let client = reqwest::blocking::Client::new();
    std::thread::sleep(Duration::from_secs(2));
    let start = std::time::Instant::now();
    let mut round = 0u64;
    loop {
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for i in 0..200 {
            let tenant = match i % 4 {
                0 => "acme".to_string(),
                _ => format!("tenant-{}", round * 200 + i),
            };
            let r = client
                .get(format!("http://127.0.0.1:8080/api/orders?orgId={tenant}"))
                .send()
                .and_then(|r| r.json::<Value>());
            let key = match r {
                Ok(v) => format!(
                    "{} ({})",
                    v["upstream"].as_str().unwrap_or("?"),
                    v["x-env-tag"].as_str().unwrap_or("?")
                ),
                Err(e) => format!("error: {e}"),
            };
            *counts.entry(key).or_default() += 1;
        }
        println!("demo traffic round {round}: {counts:?}");
        let logs: String = (0..50)
            .map(|i| {
                let (pool, level, msg) = if i % 10 == 0 {
                    ("gray", "ERROR", format!("payment {i} failed: timeout after 3000 ms"))
                } else {
                    ("stable", "INFO", format!("order {} created for tenant-{i}", round * 50 + i))
                };
                format!("{}\n", json!({"message": msg, "level": level, "pool": pool, "project": "shop", "env": "prod", "host": "demo"}))
            })
            .collect();
        if let Err(e) = client
            .post("http://127.0.0.1:9200/ingest/v1/logs")
            .body(logs)
            .send()
        {
            println!("demo: posting app logs failed: {e}");
        }
        round += 1;
        if seconds.is_some_and(|s| start.elapsed() >= Duration::from_secs(s)) {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}
