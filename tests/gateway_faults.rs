//! The gateway under faults, end to end with real `apus gateway` and `apus upstream`
//! processes: a hung gray build (504 at the pool's read timeout, then ejected and
//! readmitted), servers outside `upstream_allow`, and a change that cannot be audited.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// A gateway over a stable and a gray upstream with [`ROUTE`]: `top` goes before the pools
/// (top-level keys), `pools` may edit the pools' TOML.
fn start(top: &str, pools_edit: impl FnOnce(String) -> String) -> (Gateway, [Proc; 2]) {
    let (s1, g1) = (free_port(), free_port());
    let ups = [upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let cfg = pools_edit(pools(&[s1], &[g1], 200));
    (Gateway::start(&format!("{top}{cfg}{ROUTE}")), ups)
}

#[test]
fn a_hung_gray_build_times_out_with_504_instead_of_holding_requests() {
    // The gray pool answers reads within 300 ms or the request gets a 504.
    let (gw, _ups) = start("", |p| {
        p.replace(
            "name = \"gray\"\n",
            "name = \"gray\"\nread_timeout_ms = 300\n",
        )
    });
    let c = client();
    let t = std::time::Instant::now();
    let r = c
        .get(gw.url("/orders?sleep_ms=5000"))
        .header("x-tenant-id", "acme")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 504);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The stable pool keeps the default (30 s) and answers the slow request.
    let (st, up, _, _) = get(
        &c,
        &gw.url("/orders?sleep_ms=600"),
        &[("x-tenant-id", "zzz")],
    );
    assert_eq!((st, up.as_str()), (200, "stable-1"));
}

#[test]
fn runtime_servers_must_be_in_the_upstream_allow_list() {
    let (gw, _ups) = start("upstream_allow = [\"10.0.0.0/8\"]\n", |p| p);
    let c = client();
    // The query API on loopback is not a server a pool may get.
    let r = c
        .post(gw.admin_url("/admin/v1/pools/stable/servers"))
        .json(&json!({"addr": "127.0.0.1:3000"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().unwrap().contains("upstream_allow"));
    let r = c
        .post(gw.admin_url("/admin/v1/pools/stable/servers"))
        .json(&json!({"addr": "10.1.2.3:8080"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn a_change_that_cannot_be_audited_is_refused() {
    let (gw, _ups) = start(
        "history_file = \"/nonexistent-apus-dir/history.jsonl\"\n",
        |p| p,
    );
    let c = client();
    let (st, body) = set_rules(&c, &gw, ADMIN, json!([]));
    assert_eq!(st, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("history file"));
    // Nothing changed: acme still lands on gray.
    let (_, up, _, _) = get(&c, &gw.url("/"), &[("x-tenant-id", "acme")]);
    assert_eq!(up, "gray-1");
}

#[test]
fn a_gray_server_that_keeps_timing_out_is_ejected_then_readmitted() {
    // The gray server answers its TCP health check but hangs on slow requests.
    let (gw, _ups) = start("", |p| {
        p.replace(
            "name = \"gray\"\n",
            "name = \"gray\"\nread_timeout_ms = 300\n",
        )
        .replace(
            "kind = \"tcp\", interval_ms = 200,",
            "kind = \"tcp\", unhealthy_threshold = 2, interval_ms = 200,",
        )
    });
    let c = client();
    let acme = |path: &str| {
        c.get(gw.url(path))
            .header("x-tenant-id", "acme")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Two consecutive timeouts (the pool's unhealthy threshold here)...
    assert_eq!(acme("/orders?sleep_ms=5000"), 504);
    assert_eq!(acme("/orders?sleep_ms=5000"), 504);
    // ...eject it (recorded when each request is logged, just after its answer)...
    let ejected = || {
        c.get(gw.admin_url("/admin/v1/pools"))
            .send()
            .ok()
            .and_then(|r| r.text().ok())
            .is_some_and(|t| t.contains("ejected"))
    };
    wait_until("gray ejected", Duration::from_millis(900), ejected);
    // ...and a gray request is refused at once instead of waiting out a timeout.
    let t = std::time::Instant::now();
    assert_eq!(acme("/orders"), 503);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // After the health check's recovery time (200 ms x 2, at least 1 s) it is back.
    wait_until("gray readmitted", Duration::from_secs(5), || {
        acme("/orders") == 200
    });
}
