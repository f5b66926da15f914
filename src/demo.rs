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
/// headers the gateway set; `GET /health` answers `ok`; `?status=N` answers status N and
/// `?sleep_ms=N` answers late. With `fail_tenant`, requests of
/// that tenant (`orgId=` query or `x-tenant-id` header; `*` for all) get a 500 — the
/// demo's "bug in the gray build"; with `delay_ms`, every answer but `/health` is that late
/// (a slower build).
pub async fn serve_echo(
    addr: SocketAddr,
    name: String,
    fail_tenant: Option<String>,
    delay_ms: u64,
) -> Result<()> {
    async fn echo(
        State((name, fail, delay)): State<(String, Option<String>, u64)>,
        req: Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let query = req.uri().query().unwrap_or("");
        // `sleep_ms=N` answers after N ms (at most 60 s): a hung build, for timeout tests.
        if let Some(ms) = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("sleep_ms="))
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
        // `status=N` answers with that status: a failing build, for alarm tests.
        if let Some(code) = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("status="))
            .and_then(|v| v.parse::<u16>().ok())
            .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
        {
            return (
                code,
                Json(json!({"upstream": name, "status": code.as_u16()})),
            )
                .into_response();
        }
        if let Some(t) = &fail {
            let header_tenant = req
                .headers()
                .get("x-tenant-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if t == "*"
                || header_tenant == t
                || query.split('&').any(|kv| kv == format!("orgId={t}"))
            {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"upstream": name, "error": format!("missing pricing config for tenant {t}")})),
                )
                    .into_response();
            }
        }
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
        .into_response()
    }
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .fallback(echo)
        .with_state((name, fail_tenant, delay_ms.min(60_000)));
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    axum::serve(l, app).await?;
    Ok(())
}

const DEMO_CONFIG: &str = r#"
[ingest]
listen = "127.0.0.1:9200"

[query.alarms]
rules_dir = "alarms"
interval = "1s"

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

/// The demo's alarm rules: the gray lane failing more than stable on the same route (the
/// signal rollouts act on), and exception templates that are new or surging.
const DEMO_ALARMS: &str = r#"
[[rule]]
name = "GrayWorseThanStable"
project = "shop"
env = "prod"
severity = "critical"
kind = "gray_regression"
metric = "error_rate"
window = "1m"
min_requests = 20
condition = "> 0.1"
annotations = { summary = "gray's error rate on route {{ $labels.route }} is {{ $value }} above stable's (gray {{ $evidence.gray_error_rate }} of {{ $evidence.gray_requests }}, stable {{ $evidence.stable_error_rate }} of {{ $evidence.stable_requests }} requests)" }

[[rule]]
name = "NewException"
project = "shop"
env = "prod"
severity = "warning"
kind = "exception_template"
group_by = ["pool"]
window = "1m"
min_requests = 5
"#;

/// The tenant the demo's incident is about.
const INCIDENT_TENANT: &str = "initech";
/// The traffic round at which the demo flips a gray rule that breaks that tenant.
const INCIDENT_ROUND: u64 = 8;

/// The demo's release: a rollout that first sends tenant initech to the gray build (which
/// fails for it), then would ramp to 30 % and 100 % if analysis passed.
fn incident_rollout() -> Value {
    json!({
        "reason": "demo: pricing v2 for initech first",
        "rollout": {
            "name": "pricing-v2",
            "route": "api",
            "pool": "gray",
            "steps": [
                {"set_tenants": [INCIDENT_TENANT]},
                {"analysis": {"count": 3}},
                {"set_weight": 30},
                {"analysis": {"count": 3}},
                {"set_weight": 100}
            ],
            "analysis": {"interval": "5s", "window": "30s", "failure_limit": 1,
                         "min_requests": 20, "max_error_rate": 0.05,
                         "max_error_increase": 0.02, "alpha": 0.05}
        }
    })
}

/// Run the demo: upstreams, `apus run` (gateway + ingest), traffic. Stops after `seconds`
/// if given.
pub fn run(
    seconds: Option<u64>,
    data_dir: std::path::PathBuf,
    auth: &super::run::AuthArgs,
    prom: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("apus-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("apus.toml");
    // A fresh admin token per demo, for every listener; the traffic generator uses it too.
    let token = apus_auth::new_token();
    std::fs::write(&cfg_path, DEMO_CONFIG.replace("demo-admin-token", &token))?;
    std::fs::create_dir_all(dir.join("alarms"))?;
    std::fs::write(dir.join("alarms/demo.toml"), DEMO_ALARMS)?;
    // Each demo tells the same story from the config's rules: the release state of an
    // earlier demo run is discarded (the analytics data is kept).
    let control = data_dir.join("control");
    if control.exists() {
        std::fs::remove_dir_all(&control)?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    for (port, name) in [(7001, "stable-1"), (7002, "stable-2"), (7003, "gray-1")] {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        rt.spawn(async move {
            let fail = (name == "gray-1").then(|| INCIDENT_TENANT.to_string());
            if let Err(e) = serve_echo(addr, name.into(), fail, 0).await {
                tracing::error!(error = %e, "demo upstream failed");
            }
        });
    }
    let t = token.clone();
    std::thread::spawn(move || {
        let _rt = rt; // keeps the upstreams alive
        traffic(seconds, &t);
    });
    println!("demo: gateway on http://127.0.0.1:8080, admin on http://127.0.0.1:9901");
    println!("demo: console on http://127.0.0.1:3000/ ; log in with the demo's admin token:");
    println!("  {token}");
    println!(
        "demo: or open http://127.0.0.1:3000/#/overview?token={token} (the fragment is not \
         sent to the server; the page keeps the token in the tab and wipes it from the URL)"
    );
    println!("demo: config written to {}", cfg_path.display());
    super::run::run(&cfg_path, Some(data_dir), None, None, auth, prom)
}

fn traffic(seconds: Option<u64>, token: &str) {
    let mut auth = reqwest::header::HeaderMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        auth.insert(reqwest::header::AUTHORIZATION, v);
    }
    let client = reqwest::blocking::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    let start = std::time::Instant::now();
    let mut round = 0u64;
    let mut told = std::collections::BTreeSet::new();
    let mut rollout_seen = String::new();
    loop {
        println!("demo traffic round {round}: {:?}", requests(&client, round));
        if round == INCIDENT_ROUND {
            release_incident_rule(&client);
        }
        if round > INCIDENT_ROUND {
            // the failing build logs until the rollback takes it out of initech's path
            if !rollout_seen.starts_with("aborted") {
                incident_signals(&client, round);
            }
            firing_alarms(&client, &mut told);
            rollout_progress(&client, &mut rollout_seen);
        }
        app_logs(&client, round);
        round += 1;
        if seconds.is_some_and(|s| start.elapsed() >= Duration::from_secs(s)) {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// 200 requests through the gateway; where they landed (upstream and lane).
fn requests(
    client: &reqwest::blocking::Client,
    round: u64,
) -> std::collections::BTreeMap<String, u32> {
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..200 {
        let tenant = match i % 4 {
            0 => "acme".to_string(),
            1 => INCIDENT_TENANT.to_string(),
            _ => format!("tenant-{}", round * 200 + i),
        };
        let r = client
            .get(format!("http://127.0.0.1:8080/api/orders?orgId={tenant}"))
            .send();
        // The lane from the tag the gateway put on the response; a failed answer says its
        // status (a 500 from the gray build is the incident, not a mystery lane).
        let key = match r {
            Ok(r) => {
                let status = r.status();
                let tag = r
                    .headers()
                    .get("x-env-tag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("untagged")
                    .to_string();
                let v = r.json::<Value>().unwrap_or_default();
                let upstream = v["upstream"].as_str().unwrap_or("gateway");
                if status.is_success() {
                    format!("{upstream} ({tag})")
                } else {
                    format!("{upstream} ({tag}) answered {}", status.as_u16())
                }
            }
            Err(e) => format!("error: {e}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The release manager starts the rollout.
fn release_incident_rule(client: &reqwest::blocking::Client) {
    let r = client
        .post("http://127.0.0.1:9901/admin/v1/rollouts")
        .json(&incident_rollout())
        .send();
    match r {
        Ok(r) if r.status().is_success() => println!(
            "demo: rollout pricing-v2 started: step 1 sends tenant {INCIDENT_TENANT} to the \
             gray build, whose pricing fails for it; analysis runs every 5 s \
             (curl -H \"Authorization: Bearer $T\" http://127.0.0.1:9901/admin/v1/rollouts)"
        ),
        Ok(r) => println!("demo: rollout refused: {}", r.status()),
        Err(e) => println!("demo: rollout failed to start: {e}"),
    }
}

/// Print the rollout's phase when it changes.
fn rollout_progress(client: &reqwest::blocking::Client, last: &mut String) {
    let Ok(v) = client
        .get("http://127.0.0.1:9901/admin/v1/rollouts")
        .send()
        .and_then(|r| r.json::<Value>())
    else {
        return;
    };
    let p = &v["rollouts"]["pricing-v2"]["progress"];
    let now = format!(
        "{} at step {}",
        p["phase"].as_str().unwrap_or("?"),
        p["step"].as_u64().unwrap_or(0) + 1
    );
    if *last != now {
        let why = p["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!("demo: ROLLOUT pricing-v2 {now}{why}");
        if p["phase"] == "aborted" {
            println!(
                "demo: the rollback is in force; see the root cause at \
                 http://127.0.0.1:3000/#/rootcause?from=now-5m"
            );
        }
        *last = now;
    }
}

/// Print each alarm the first time it fires.
fn firing_alarms(
    client: &reqwest::blocking::Client,
    told: &mut std::collections::BTreeSet<String>,
) {
    let Ok(v) = client
        .get("http://127.0.0.1:3000/api/v1/alarms?project=shop&env=prod&state=firing&from=now-5m")
        .send()
        .and_then(|r| r.json::<Value>())
    else {
        return;
    };
    for a in v["active"].as_array().into_iter().flatten() {
        let fp = a["fingerprint"].as_str().unwrap_or("").to_string();
        if told.insert(fp) {
            println!(
                "demo: ALARM firing {} {}: {}",
                a["labels"]["alertname"].as_str().unwrap_or("?"),
                a["labels"]["severity"].as_str().unwrap_or(""),
                a["annotations"]["summary"]
                    .as_str()
                    .or(a["annotations"]["surge"].as_str())
                    .unwrap_or("")
            );
        }
    }
}

/// What the failing gray build logs after the release: a new exception and a slow query.
fn incident_signals(client: &reqwest::blocking::Client, round: u64) {
    let now = apus_schema::time::now_us() / 1_000_000;
    let errors: String = (0..5)
        .map(|i| format!("{}\n", json!({
            "message": format!("pricing lookup failed for tenant {INCIDENT_TENANT} (sku {})", round * 5 + i),
            "exception": "java.lang.IllegalStateException: missing pricing config\n\tat shop.Pricing.lookup(Pricing.java:42)",
            "level": "ERROR", "pool": "gray", "project": "shop", "env": "prod",
            "host": "demo", "tenant": INCIDENT_TENANT, "tag": "gray"})))
        .collect();
    let iso = apus_store::read::json::rfc3339(now * 1_000_000);
    let slow = format!(
        "# Time: {iso}\n# User@Host: app[app] @ gray-1 [10.0.0.9]  Id: 7\n\
         # Query_time: 2.{round:03}  Lock_time: 0.000100 Rows_sent: 1  Rows_examined: 250000\n\
         use shop;\nSET timestamp={now};\n\
         SELECT * FROM price_overrides WHERE tenant = 'initech' AND sku LIKE '%{round}%';\n"
    );
    let _ = client
        .post("http://127.0.0.1:9200/ingest/v1/logs")
        .body(errors)
        .send();
    let _ = client
        .post("http://127.0.0.1:9200/ingest/v1/slowlog?project=shop&env=prod&pool=gray")
        .body(slow)
        .send();
}

/// Ordinary application logs of both pools.
fn app_logs(client: &reqwest::blocking::Client, round: u64) {
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
}
