//! End-to-end tests of the control plane: release state that survives a SIGKILL (embedded
//! log), optimistic concurrency, and a fleet of three gateways on a real etcd server that
//! converge on every change, keep serving through an etcd outage, and catch up after it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn config(stable: &[u16], gray: u16) -> String {
    format!("{}{ROUTE}", pools(stable, &[gray], 200))
}

fn admin(
    c: &reqwest::blocking::Client,
    gw: &Gateway,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let url = gw.admin_url(path);
    let req = match method {
        "PUT" => c.put(url),
        "POST" => c.post(url),
        "DELETE" => c.delete(url),
        _ => c.get(url),
    };
    let req = if method == "GET" {
        req
    } else {
        req.json(&body)
    };
    match req.bearer_auth(ADMIN).send() {
        Ok(r) => {
            let st = r.status().as_u16();
            (st, r.json().unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "error": e.to_string() })),
    }
}

fn flip(
    c: &reqwest::blocking::Client,
    gw: &Gateway,
    tenants: &[&str],
    base: Option<u64>,
) -> (u16, Value) {
    let mut body = json!({ "rules": [{ "name": "beta", "pool": "gray", "tenants": tenants }], "reason": "test" });
    if let Some(b) = base {
        body["base_version"] = json!(b);
    }
    admin(c, gw, "PUT", "/admin/v1/routes/api/rules", body)
}

fn version(c: &reqwest::blocking::Client, gw: &Gateway) -> u64 {
    admin(c, gw, "GET", "/admin/v1/status", Value::Null).1["version"]
        .as_u64()
        .unwrap_or(0)
}

fn lands(c: &reqwest::blocking::Client, gw: &Gateway, tenant: &str) -> String {
    get(c, &gw.url("/"), &[("x-tenant-id", tenant)]).1
}

#[test]
fn release_state_survives_sigkill_and_restart() {
    let (s1, s2, g1) = (free_port(), free_port(), free_port());
    let _ups = [
        upstream(s1, "stable-1"),
        upstream(s2, "stable-2"),
        upstream(g1, "gray-1"),
    ];
    let dir = TempDir::new("apus-control-restart");
    let (port, admin_port) = (free_port(), free_port());
    let cfg = config(&[s1, s2], g1);
    let c = client();
    {
        let gw = Gateway::start_in(&cfg, dir.path(), port, admin_port, &[]);
        assert_eq!(version(&c, &gw), 1, "an empty store is seeded as version 1");
        // v2: tenant zzz goes gray too.
        assert_eq!(flip(&c, &gw, &["acme", "zzz"], None).0, 200);
        // v3: drain stable-1.
        let (st, body) = admin(
            &c,
            &gw,
            "POST",
            &format!("/admin/v1/pools/stable/servers/127.0.0.1:{s1}/drain"),
            json!({ "reason": "deploy" }),
        );
        assert_eq!(st, 200, "{body}");
        // v4: a flip, then v5: roll back to v3's rules (zzz gray, drain kept).
        assert_eq!(flip(&c, &gw, &[], None).0, 200);
        let (st, body) = admin(
            &c,
            &gw,
            "POST",
            "/admin/v1/rollback",
            json!({ "version": 3, "reason": "undo" }),
        );
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["change"]["to_version"], 5);
        assert_eq!(lands(&c, &gw, "zzz"), "gray-1");
        for _ in 0..6 {
            assert_eq!(lands(&c, &gw, "nobody"), "stable-2", "stable-1 is drained");
        }
        let mut gw = gw;
        gw.proc.kill(); // SIGKILL: no chance to flush anything
    }
    let gw = Gateway::start_in(&cfg, dir.path(), port, admin_port, &[]);
    assert_eq!(version(&c, &gw), 5, "the same version after a restart");
    assert_eq!(
        lands(&c, &gw, "zzz"),
        "gray-1",
        "the same rules after a restart"
    );
    assert_eq!(lands(&c, &gw, "acme"), "gray-1");
    for _ in 0..6 {
        assert_eq!(
            lands(&c, &gw, "nobody"),
            "stable-2",
            "the drain survives the restart"
        );
    }
    let (_, pools) = admin(&c, &gw, "GET", "/admin/v1/pools", Value::Null);
    let drained: Vec<_> = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["servers"].as_array().unwrap().clone())
        .filter(|s| s["state"] == "drained")
        .map(|s| s["addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(drained, vec![format!("127.0.0.1:{s1}")]);
    // The next change gets the next version, and the history is all there.
    let (st, body) = flip(&c, &gw, &["acme"], None);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["change"]["from_version"], 5);
    assert_eq!(body["change"]["to_version"], 6);
    let (_, h) = admin(&c, &gw, "GET", "/admin/v1/changes", Value::Null);
    let kinds = change_kinds(&h);
    assert_eq!(
        kinds,
        [
            "seed",
            "gray_rules",
            "server_drain",
            "gray_rules",
            "rollback",
            "gray_rules"
        ]
    );
    assert_eq!(lands(&c, &gw, "zzz"), "stable-2");
}

#[test]
fn concurrent_changes_on_one_base_exactly_one_wins() {
    let (s1, g1) = (free_port(), free_port());
    let _ups = [upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let gw = Gateway::start(&config(&[s1], g1));
    let c = client();
    for round in 0..3u64 {
        let base = version(&c, &gw);
        let results: Vec<(u16, Value)> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..50)
                .map(|i| {
                    let (c, gw) = (&c, &gw);
                    sc.spawn(move || flip(c, gw, &[&format!("t-{round}-{i}")], Some(base)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
        let conflicts = results.iter().filter(|r| r.0 == 409).count();
        assert_eq!(ok.len(), 1, "exactly one change per base: {results:?}");
        assert_eq!(conflicts, 49, "{results:?}");
        assert!(results.iter().filter(|r| r.0 == 409).all(|r| r.1["error"]
            .as_str()
            .unwrap()
            .contains(&format!("based on version {base}"))));
        assert_eq!(version(&c, &gw), base + 1, "nothing lost, nothing doubled");
        // The winner's rule is what serves: exactly one of the 50 tenants is gray.
        let gray = (0..50)
            .filter(|i| lands(&c, &gw, &format!("t-{round}-{i}")) == "gray-1")
            .count();
        assert_eq!(gray, 1);
    }
    // Without a base, concurrent changes to the same state are applied one after another.
    let base = version(&c, &gw);
    std::thread::scope(|sc| {
        for i in 0..10 {
            let (c, gw) = (&c, &gw);
            sc.spawn(move || assert_eq!(flip(c, gw, &[&format!("u-{i}")], None).0, 200));
        }
    });
    assert_eq!(version(&c, &gw), base + 10);
    // If-Match works like base_version; a stale one is refused with the current version.
    let r = c
        .put(gw.admin_url("/admin/v1/routes/api/rules"))
        .bearer_auth(ADMIN)
        .header("if-match", "\"1\"")
        .json(&json!({ "rules": [], "reason": "stale" }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let etag = c
        .get(gw.admin_url("/admin/v1/routes"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(etag, format!("\"{}\"", base + 10));
}

/// Three gateway nodes on one etcd.
struct Fleet {
    _ups: Vec<Proc>,
    nodes: Vec<Gateway>,
    _dirs: Vec<TempDir>,
}

fn fleet(etcd: &Etcd, prefix: &str) -> Fleet {
    let (s1, g1) = (free_port(), free_port());
    let ups = vec![upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let cfg = config(&[s1], g1);
    let url = etcd.url(prefix);
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..3 {
        let d = TempDir::new(&format!("apus-fleet-{i}"));
        nodes.push(Gateway::start_in(
            &cfg,
            d.path(),
            free_port(),
            free_port(),
            &["--control", &url],
        ));
        dirs.push(d);
    }
    Fleet {
        _ups: ups,
        nodes,
        _dirs: dirs,
    }
}

#[test]
fn fleet_on_etcd_converges_and_rides_out_an_outage() {
    let etcd_dir = TempDir::new("apus-etcd");
    let mut etcd = Etcd::start(etcd_dir.path());
    let f = fleet(&etcd, "fleet-test");
    let c = client();
    for n in &f.nodes {
        assert_eq!(version(&c, n), 1, "all nodes share the one seed");
    }
    // Flips through each node in turn reach every node; measure how long that takes.
    let mut worst = Duration::ZERO;
    for i in 0..12 {
        let via = &f.nodes[i % 3];
        let tenant = format!("flip-{i}");
        let (st, body) = flip(&c, via, &[&tenant], None);
        assert_eq!(st, 200, "{body}");
        let done = Instant::now();
        let v = body["change"]["to_version"].as_u64().unwrap();
        for n in &f.nodes {
            wait_until("every node serves the flip", Duration::from_secs(2), || {
                lands(&c, n, &tenant) == "gray-1"
            });
        }
        worst = worst.max(done.elapsed());
        for n in &f.nodes {
            assert_eq!(version(&c, n), v);
        }
    }
    eprintln!("worst flip propagation to 3 nodes (probed serially): {worst:?}");
    assert!(
        worst < Duration::from_millis(1000),
        "propagation took {worst:?}"
    );

    // etcd goes away under load: no failed proxy request; writes refused with 503.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    std::thread::scope(|sc| {
        for n in &f.nodes {
            let (stop, ok, failed, c) = (stop.clone(), ok.clone(), failed.clone(), client());
            sc.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match c.get(n.url("/")).header("x-tenant-id", "flip-11").send() {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        etcd.stop();
        std::thread::sleep(Duration::from_millis(500));
        let (st, body) = flip(&c, &f.nodes[0], &["during-outage"], None);
        assert_eq!(st, 503, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("unavailable"),
            "{body}"
        );
        wait_until(
            "status says the store is away",
            Duration::from_secs(5),
            || {
                admin(&c, &f.nodes[1], "GET", "/admin/v1/status", Value::Null).1["store_connected"]
                    == false
            },
        );
        std::thread::sleep(Duration::from_millis(500));
        etcd.restart();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed proxy requests during the outage"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    // After etcd returns, a flip through another node reaches all three.
    let mut flipped = false;
    wait_until("writes accepted again", Duration::from_secs(10), || {
        flipped = flip(&c, &f.nodes[2], &["after-outage"], None).0 == 200;
        flipped
    });
    for n in &f.nodes {
        wait_until("every node catches up", Duration::from_secs(10), || {
            lands(&c, n, "after-outage") == "gray-1"
        });
        assert_eq!(
            admin(&c, n, "GET", "/admin/v1/status", Value::Null).1["store_connected"],
            true
        );
    }
    // Change events: one history, each change once.
    let (_, h) = admin(&c, &f.nodes[1], "GET", "/admin/v1/changes", Value::Null);
    let versions: Vec<u64> = h["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["to_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=14).collect::<Vec<_>>());
}

#[test]
fn etcd_down_at_start_uses_the_snapshot_or_fails_clearly() {
    let etcd_dir = TempDir::new("apus-etcd-start");
    let mut etcd = Etcd::start(etcd_dir.path());
    let (s1, g1) = (free_port(), free_port());
    let _ups = [upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let cfg = config(&[s1], g1);
    let url = etcd.url("start-test");
    let dir = TempDir::new("apus-etcd-node");
    let (port, admin_port) = (free_port(), free_port());
    let c = client();
    {
        let mut gw = Gateway::start_in(&cfg, dir.path(), port, admin_port, &["--control", &url]);
        assert_eq!(flip(&c, &gw, &["zzz"], None).0, 200);
        gw.proc.kill();
    }
    etcd.stop();
    // With its snapshot: starts and serves version 2.
    let gw = Gateway::start_in(&cfg, dir.path(), port, admin_port, &["--control", &url]);
    assert_eq!(version(&c, &gw), 2);
    assert_eq!(lands(&c, &gw, "zzz"), "gray-1");
    drop(gw);
    // Without one: exits with a clear message.
    let fresh = TempDir::new("apus-etcd-fresh");
    std::fs::write(fresh.path().join("gateway.toml"), format!("listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n{cfg}\n[[tokens]]\nname = \"a\"\ntoken = \"admin-token-x-0001\"\nrole = \"admin\"\n", free_port(), free_port())).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(fresh.path().join("gateway.toml"))
        .arg("--data-dir")
        .arg(fresh.path().join("data"))
        .args(["--control", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("etcd unreachable") && err.contains("no local snapshot"),
        "{err}"
    );
}

fn as_token(
    c: &reqwest::blocking::Client,
    gw: &Gateway,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let req = if path.ends_with("/rules") {
        c.put(gw.admin_url(path))
    } else {
        c.post(gw.admin_url(path))
    };
    let r = req.bearer_auth(token).json(&body).send().unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

fn pending_ids(c: &reqwest::blocking::Client, gw: &Gateway) -> Vec<u64> {
    admin(c, gw, "GET", "/admin/v1/pending", Value::Null).1["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn protected_env_changes_wait_for_approval() {
    let (s1, g1) = (free_port(), free_port());
    let _ups = [upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let gw = Gateway::start(&format!(
        "approvals = {{ prod = 1 }}\n{}",
        config(&[s1], g1)
    ));
    let c = client();
    let rules = |t: &str| json!({ "rules": [{ "name": "beta", "pool": "gray", "tenants": [t] }], "reason": "ramp" });
    let path = "/admin/v1/routes/api/rules";
    // A release manager's change to prod is proposed, not applied.
    let (st, body) = as_token(&c, &gw, RM_PROD, path, rules("zzz"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["change"]["kind"], "change_proposed");
    assert!(
        body["change"]["summary"]
            .as_str()
            .unwrap()
            .contains("needs 1 approval"),
        "{body}"
    );
    assert_eq!(lands(&c, &gw, "zzz"), "stable-1");
    let ids = pending_ids(&c, &gw);
    assert_eq!(ids.len(), 1);
    let approve = format!("/admin/v1/pending/{}/approve", ids[0]);
    // Not by its author, not by a viewer.
    assert_eq!(as_token(&c, &gw, RM_PROD, &approve, json!({})).0, 403);
    assert_eq!(as_token(&c, &gw, VIEWER, &approve, json!({})).0, 403);
    // Another principal approves: it applies, and the audit says who did what.
    let (st, body) = as_token(&c, &gw, ADMIN, &approve, json!({ "reason": "looks fine" }));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["change"]["kind"], "gray_rules");
    let summary = body["change"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("proposed by bob") && summary.contains("approved by alice"),
        "{summary}"
    );
    assert_eq!(lands(&c, &gw, "zzz"), "gray-1");
    assert!(pending_ids(&c, &gw).is_empty());
    // Rejected: nothing changes.
    as_token(&c, &gw, RM_PROD, path, rules("yyy"));
    let id = pending_ids(&c, &gw)[0];
    let (st, body) = as_token(
        &c,
        &gw,
        ADMIN,
        &format!("/admin/v1/pending/{id}/reject"),
        json!({"reason": "no"}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["change"]["kind"], "change_rejected");
    assert!(pending_ids(&c, &gw).is_empty());
    assert_eq!(lands(&c, &gw, "yyy"), "stable-1");
    // A stale proposal: the routes moved on (an admin's emergency change) before approval.
    as_token(&c, &gw, RM_PROD, path, rules("xxx"));
    let id = pending_ids(&c, &gw)[0];
    let mut emergency = rules("www");
    emergency["emergency"] = json!(true);
    assert_eq!(
        as_token(&c, &gw, RM_PROD, path, emergency.clone()).0,
        403,
        "bypass is for admins"
    );
    let (st, body) = as_token(&c, &gw, ADMIN, path, emergency);
    assert_eq!(st, 200, "{body}");
    assert!(
        body["change"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("EMERGENCY"),
        "{body}"
    );
    assert_eq!(lands(&c, &gw, "www"), "gray-1");
    let (st, body) = as_token(
        &c,
        &gw,
        ADMIN,
        &format!("/admin/v1/pending/{id}/approve"),
        json!({}),
    );
    assert_eq!(st, 409, "{body}");
    assert_eq!(lands(&c, &gw, "xxx"), "stable-1");
}

#[test]
fn rules_export_and_import_move_state() {
    let dir = TempDir::new("apus-rules-io");
    let data = dir.path().join("data");
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, config(&[7101], 7102)).unwrap();
    let apus = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = apus(&["rules", "import", cfg.to_str().unwrap(), "--reason", "seed"]);
    assert!(ok && out.contains("imported as version 1"), "{out}{err}");
    let (ok, exported, _) = apus(&["rules", "export"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["state"]["routes"][0]["name"], "api");
    assert_eq!(
        v["state"]["pools"]["stable"]["servers"][0],
        "127.0.0.1:7101"
    );
    // An edited export goes back in as the next version, guarded by its base.
    let mut state = v["state"].clone();
    state["pools"]["stable"]["drained"] = json!(["127.0.0.1:7101"]);
    let file = dir.path().join("state.json");
    std::fs::write(&file, state.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let (ok, _, err) = apus(&["rules", "import", f, "--base-version", "0"]);
    assert!(!ok && err.contains("conflict"), "{err}");
    let (ok, out, err) = apus(&["rules", "import", f, "--base-version", "1"]);
    assert!(ok && out.contains("version 2"), "{out}{err}");
    // Refused whole when it does not compile.
    state["routes"][0]["stable_pool"] = json!("nope");
    std::fs::write(&file, state.to_string()).unwrap();
    let (ok, _, err) = apus(&["rules", "import", f]);
    assert!(!ok && err.contains("unknown pool `nope`"), "{err}");
    let (_, exported, _) = apus(&["rules", "export"]);
    let v: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(
        v["state"]["pools"]["stable"]["drained"][0],
        "127.0.0.1:7101"
    );
    // A running gateway holds the embedded log: a second process is refused.
    let gw = Gateway::start_in(
        &config(&[7101], 7102),
        dir.path(),
        free_port(),
        free_port(),
        &[],
    );
    let (ok, _, err) = apus(&["rules", "export"]);
    assert!(!ok && err.contains("in use by another process"), "{err}");
    assert_eq!(
        version(&client(), &gw),
        2,
        "the gateway serves the imported state"
    );
}
