//! End-to-end tests of `apus gateway`: real gateway process, real upstream processes on
//! loopback, real HTTP.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn gray_tenant_lands_on_gray_pool_with_tags() {
    let s = setup(ROUTE);
    let c = client();
    let (st, up, tag, body) = get(
        &c,
        &s.gw.url("/orders"),
        &[("x-tenant-id", "acme"), ("baggage", "userId=7,env=old")],
    );
    assert_eq!((st, up.as_str(), tag.as_str()), (200, "gray-1", "gray"));
    assert_eq!(body["x-env-tag"], "gray");
    assert_eq!(
        body["baggage"], "userId=7,env=gray",
        "baggage merged, old env replaced"
    );
    let rid = body["x-request-id"].as_str().unwrap();
    assert_eq!(rid.len(), 32, "a request id is generated: {rid}");
    // Query-parameter tenant source.
    let (_, up, _, _) = get(&c, &s.gw.url("/req?orgId=acme"), &[]);
    assert_eq!(up, "gray-1");
    // A valid incoming request id is kept; an invalid one is replaced.
    let (_, _, _, body) = get(&c, &s.gw.url("/x"), &[("x-request-id", "abc-123")]);
    assert_eq!(body["x-request-id"], "abc-123");
    let (_, _, _, body) = get(&c, &s.gw.url("/x"), &[("x-request-id", "bad id!")]);
    assert_ne!(body["x-request-id"], "bad id!");
    // Other tenants stay stable.
    let (st, up, tag, body) = get(&c, &s.gw.url("/orders"), &[("x-tenant-id", "initech")]);
    assert_eq!((st, up.as_str(), tag.as_str()), (200, "stable-1", "stable"));
    assert_eq!(body["baggage"], "env=stable");
    // The access log has one record per request with the design's columns.
    wait_until("access log", Duration::from_secs(5), || {
        std::fs::read_to_string(s.gw.dir.join("access.jsonl"))
            .map(|t| t.lines().count() >= 5)
            .unwrap_or(false)
    });
    let log = std::fs::read_to_string(s.gw.dir.join("access.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["pool"], "gray");
    assert_eq!(first["tag"], "gray");
    assert_eq!(first["route"], "api");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], format!("127.0.0.1:{}", s.g1));
    for col in [
        "ts",
        "request_id",
        "project",
        "env",
        "client_ip",
        "method",
        "host",
        "path",
        "latency_us",
        "upstream_latency_us",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(first.get(col).is_some(), "column {col} missing");
    }
}

#[test]
fn cidr_client_lands_on_gray_pool() {
    let s = setup(ROUTE);
    let c = client();
    // The test client's peer (127.0.0.1) is a trusted proxy, so X-Forwarded-For counts.
    let (_, up, tag, _) = get(&c, &s.gw.url("/"), &[("x-forwarded-for", "10.20.30.40")]);
    assert_eq!((up.as_str(), tag.as_str()), ("gray-1", "office"));
    let (_, up, _, _) = get(&c, &s.gw.url("/"), &[("x-forwarded-for", "11.20.30.40")]);
    assert_eq!(up, "stable-1");
    // A forged hop left of an untrusted address is ignored.
    let (_, up, _, _) = get(
        &c,
        &s.gw.url("/"),
        &[("x-forwarded-for", "10.0.0.1, 11.1.1.1")],
    );
    assert_eq!(up, "stable-1");
}

fn gray_tenants(c: &reqwest::blocking::Client, gw: &Gateway, n: usize) -> Vec<bool> {
    let workers = 8;
    let out = Arc::new(std::sync::Mutex::new(vec![false; n]));
    std::thread::scope(|sc| {
        for w in 0..workers {
            let out = out.clone();
            let c = c.clone();
            sc.spawn(move || {
                for i in (w..n).step_by(workers) {
                    let t = format!("tenant-{i}");
                    let (st, up, _, _) = get(&c, &gw.url("/p"), &[("x-tenant-id", &t)]);
                    assert_eq!(st, 200);
                    out.lock().unwrap()[i] = up == "gray-1";
                }
            });
        }
    });
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

#[test]
fn sticky_percentage_is_accurate_and_raise_only_adds() {
    let s = setup(ROUTE);
    let c = client();
    let ramp = |p: u32| json!([{ "name": "ramp", "pool": "gray", "percent": p }]);
    assert_eq!(set_rules(&c, &s.gw, ADMIN, ramp(10)).0, 200);
    let at10 = gray_tenants(&c, &s.gw, 10_000);
    assert_eq!(set_rules(&c, &s.gw, ADMIN, ramp(20)).0, 200);
    let at20 = gray_tenants(&c, &s.gw, 10_000);
    let n10 = at10.iter().filter(|g| **g).count();
    let n20 = at20.iter().filter(|g| **g).count();
    assert!((800..=1200).contains(&n10), "10% target gave {n10}/10000");
    assert!((1800..=2200).contains(&n20), "20% target gave {n20}/10000");
    let left = at10.iter().zip(&at20).filter(|(a, b)| **a && !**b).count();
    assert_eq!(left, 0, "{left} tenants left the gray pool on a raise");
}

#[test]
fn killed_upstream_leaves_rotation_and_returns() {
    let (s1, s2, g1) = (free_port(), free_port(), free_port());
    let mut a = upstream(s1, "stable-1");
    let _b = upstream(s2, "stable-2");
    let _g = upstream(g1, "gray-1");
    let gw = Gateway::start(&format!("{}{ROUTE}", pools(&[s1, s2], &[g1], 200)));
    let c = client();
    let seen = |n: usize| {
        let mut v = std::collections::HashSet::new();
        for _ in 0..n {
            let (st, up, _, _) = get(&c, &gw.url("/"), &[]);
            assert_eq!(st, 200, "a request failed");
            v.insert(up);
        }
        v
    };
    assert_eq!(seen(10).len(), 2);
    a.kill();
    // Right after the kill, connect failures are retried on the other server.
    assert!(!seen(20).contains("stable-1"));
    let state = |c: &reqwest::blocking::Client| -> String {
        let v: serde_json::Value = c
            .get(gw.admin_url("/admin/v1/pools"))
            .bearer_auth(VIEWER)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "stable")
            .unwrap()["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["addr"] == format!("127.0.0.1:{s1}"))
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_until(
        "killed server marked unhealthy",
        Duration::from_secs(5),
        || state(&c) == "unhealthy",
    );
    // Out of rotation now: no request tries it first and retries on the other.
    let retries = || -> String {
        let body = c
            .get(gw.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        body.lines()
            .find(|l| l.starts_with("apus_gateway_upstream_retries_total{pool=\"stable\"}"))
            .unwrap_or("none")
            .to_string()
    };
    let before = retries();
    assert!(!seen(20).contains("stable-1"));
    assert_eq!(
        retries(),
        before,
        "requests still tried the unhealthy server"
    );
    let _a2 = upstream(s1, "stable-1");
    wait_until("restarted server healthy", Duration::from_secs(5), || {
        state(&c) == "healthy"
    });
    assert!(
        seen(10).contains("stable-1"),
        "restarted server back in rotation"
    );
}

#[test]
fn no_healthy_server_gives_503_with_reason() {
    let s1 = free_port();
    let g1 = free_port();
    let mut a = upstream(s1, "stable-1");
    let gw = Gateway::start(&format!("{}{ROUTE}", pools(&[s1], &[g1], 200)));
    a.kill();
    let c = client();
    let r = c.get(gw.url("/")).send().unwrap();
    let st = r.status().as_u16();
    let body = r.text().unwrap();
    assert!(st == 502 || st == 503, "{st}");
    wait_until("pool marked down", Duration::from_secs(5), || {
        let r = c.get(gw.url("/")).send().unwrap();
        r.status().as_u16() == 503
    });
    let body2 = c.get(gw.url("/")).send().unwrap().text().unwrap();
    assert!(
        body2.contains("no healthy server in pool stable"),
        "{body} / {body2}"
    );
    // No route for a path: 404 with the reason.
}

#[test]
fn rule_flips_under_load_fail_no_request() {
    let s = setup(ROUTE);
    let c = client();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    std::thread::scope(|sc| {
        for w in 0..4 {
            let (stop, ok, failed, c) = (stop.clone(), ok.clone(), failed.clone(), c.clone());
            let gw = &s.gw;
            sc.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = format!("t-{w}-{i}");
                    i += 1;
                    match c.get(gw.url("/load")).header("x-tenant-id", t).send() {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        for flip in 0..100u32 {
            let rules = json!([{ "name": "ramp", "pool": if flip % 2 == 0 { "gray" } else { "stable" }, "percent": flip % 100 }]);
            let (st, body) = set_rules(&c, &s.gw, RM_PROD, rules);
            assert_eq!(st, 200, "{body}");
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    let v: serde_json::Value = c
        .get(s.gw.admin_url("/admin/v1/changes"))
        .bearer_auth(VIEWER)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["version"], 101);
    // The history starts with the seed (version 1, from the config file), then the flips.
    assert_eq!(v["changes"].as_array().unwrap().len(), 101);
    assert_eq!(v["changes"][0]["kind"], "seed");
    assert_eq!(v["changes"][1]["actor"], "bob");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during flips"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    // Each of the two proxy threads accepts from its own SO_REUSEPORT socket (which the
    // kernel balances), not both from one shared socket.
    assert_eq!(
        listening_sockets(s.gw.port),
        2,
        "one listener per proxy thread"
    );
    // Upstream connections were reused across requests on both proxy threads without the
    // race in which a pooled connection is still held by its idle watcher on another
    // thread (one proxy service per thread keeps the watcher on the request's thread).
    let log = s.gw.log();
    assert!(
        !log.contains("failed to acquire reusable stream"),
        "{}",
        log.lines()
            .filter(|l| l.contains("reusable"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Listening TCP sockets (IPv4) on `port`, from /proc/net/tcp.
fn listening_sockets(port: u16) -> usize {
    let local = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

#[test]
fn servers_go_on_and_off_the_shelf_at_runtime() {
    let s = setup(ROUTE);
    let c = client();
    let s2 = free_port();
    let post = |path: &str, body: serde_json::Value| {
        c.post(s.gw.admin_url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Added but not listening: stays pending, takes no traffic.
    assert_eq!(
        post(
            "/admin/v1/pools/stable/servers",
            json!({"addr": format!("127.0.0.1:{s2}")})
        ),
        200
    );
    assert_eq!(
        post(
            "/admin/v1/pools/stable/servers",
            json!({"addr": "not-an-addr"})
        ),
        400
    );
    for _ in 0..20 {
        let (st, up, _, _) = get(&c, &s.gw.url("/"), &[]);
        assert_eq!((st, up.as_str()), (200, "stable-1"));
    }
    let _u2 = upstream(s2, "stable-2");
    wait_until(
        "new server admitted after its first passing check",
        Duration::from_secs(5),
        || (0..4).any(|_| get(&c, &s.gw.url("/"), &[]).1 == "stable-2"),
    );
    // Drain the original: no new requests go there.
    assert_eq!(
        post(
            &format!("/admin/v1/pools/stable/servers/127.0.0.1:{}/drain", s.s1),
            json!({"reason": "deploy"})
        ),
        200
    );
    for _ in 0..10 {
        assert_eq!(get(&c, &s.gw.url("/"), &[]).1, "stable-2");
    }
    assert_eq!(
        post(
            &format!("/admin/v1/pools/stable/servers/127.0.0.1:{}/undrain", s.s1),
            json!({})
        ),
        200
    );
    // Remove the new one: traffic returns to the original only.
    let r = c
        .delete(s.gw.admin_url(&format!("/admin/v1/pools/stable/servers/127.0.0.1:{s2}")))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for _ in 0..10 {
        assert_eq!(get(&c, &s.gw.url("/"), &[]).1, "stable-1");
    }
    let v: serde_json::Value = c
        .get(s.gw.admin_url("/admin/v1/changes"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kinds = change_kinds(&v);
    assert_eq!(
        kinds,
        [
            "seed",
            "server_add",
            "server_drain",
            "server_undrain",
            "server_remove"
        ]
    );
}

#[test]
fn metrics_endpoint_exports_prometheus_text() {
    let s = setup(ROUTE);
    let c = client();
    get(&c, &s.gw.url("/"), &[("x-tenant-id", "acme")]);
    let want =
        "apus_gateway_requests_total{route=\"api\",pool=\"gray\",tag=\"gray\",status=\"2xx\"} 1";
    let scrape = || {
        c.get(s.gw.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    // The request is counted in the logging phase, just after the response went out.
    wait_until("request counted", Duration::from_secs(5), || {
        scrape().contains(want)
    });
    let body = scrape();
    assert!(body.contains("apus_gateway_requests_total{route=\"api\",pool=\"gray\",tag=\"gray\",status=\"2xx\"} 1"), "{body}");
    assert!(body.contains("apus_gateway_rule_version 1"), "{body}");
    assert!(
        body.contains("apus_gateway_request_duration_seconds"),
        "{body}"
    );
    let _ = s.s1;
}

#[test]
fn rules_check_command() {
    let dir = std::env::temp_dir().join(format!("apus-rules-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, format!("{}{ROUTE}", pools(&[7001], &[7002], 1000))).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["rules", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 gray rules"));
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{}{}",
            pools(&[7001], &[7002], 1000),
            ROUTE.replace("10.0.0.0/8", "10.0.0.0/40")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["rules", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route `api` rule `office`: field `cidrs`: bad CIDR `10.0.0.0/40`"),
        "{err}"
    );
}
