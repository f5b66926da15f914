//! Rollouts end to end: `apus run` with a stable and a gray upstream, traffic through the
//! gateway, a rollout started through the admin API; a good gray build is promoted through
//! 10 → 50 → 100 %, a bad one is rolled back by analysis, and a restart resumes a rollout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn start(gray_args: &[&str]) -> (AllInOne, Proc) {
    let gray_port = free_port();
    let gray = upstream_with(gray_port, "gray-1", gray_args);
    let extra =
        format!("[[gateway.pools]]\nname = \"gray\"\nservers = [\"127.0.0.1:{gray_port}\"]\n");
    let run = AllInOne::start(RunOpts {
        access_log: "in-process",
        config_token: true,
        gateway_extra: &extra,
        ..Default::default()
    });
    (run, gray)
}

/// Requests through the gateway from 1,000 tenants until `stop`.
fn traffic(run: &AllInOne, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|k| {
            let (url, stop) = (run.url("/pay"), stop.clone());
            std::thread::spawn(move || {
                let c = bare_client();
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let _ = c
                        .get(&url)
                        .header("x-tenant-id", format!("t{}", i % 1000))
                        .send();
                    i += 2;
                    std::thread::sleep(Duration::from_millis(8));
                }
            })
        })
        .collect()
}

fn plan(name: &str) -> Value {
    json!({
        "rollout": {
            "name": name,
            "route": "api",
            "pool": "gray",
            "steps": [
                {"set_weight": 10}, {"analysis": {"count": 2}},
                {"set_weight": 50}, {"analysis": {"count": 1}},
                {"set_weight": 100}
            ],
            "analysis": {"interval": "2s", "window": "15s", "failure_limit": 0,
                         "min_requests": 20, "max_error_rate": 0.05,
                         "max_error_increase": 0.05, "alpha": 0.05}
        },
        "reason": "release v2"
    })
}

fn rollout(run: &AllInOne, name: &str) -> Value {
    let v: Value = client()
        .get(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["rollouts"][name].clone()
}

fn gray_rules(run: &AllInOne) -> Value {
    let v: Value = client()
        .get(format!("http://127.0.0.1:{}/admin/v1/routes", run.admin))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["routes"][0]["gray_rules"].clone()
}

fn change_kinds_of(run: &AllInOne) -> Vec<(String, String)> {
    let v: Value = client()
        .get(format!("http://127.0.0.1:{}/admin/v1/changes", run.admin))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["summary"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_good_build_is_promoted_10_50_100() {
    let (run, _gray) = start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let t = traffic(&run, stop.clone());
    let r = client()
        .post(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
        .json(&plan("v2"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(gray_rules(&run)[0]["percent"], 10.0);
    // a second rollout on the same route is refused while this one runs
    let again = client()
        .post(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
        .json(&plan("v3"))
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    wait_until("the rollout to succeed", Duration::from_secs(90), || {
        let r = rollout(&run, "v2");
        assert_ne!(r["progress"]["phase"], "aborted", "{r}");
        assert_ne!(r["progress"]["phase"], "paused", "{r}");
        r["progress"]["phase"] == "succeeded"
    });
    stop.store(true, Ordering::Relaxed);
    t.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(gray_rules(&run)[0]["percent"], 100.0);
    let steps: Vec<String> = change_kinds_of(&run)
        .into_iter()
        .filter(|(k, _)| k == "rollout_step")
        .map(|(_, s)| s)
        .collect();
    assert!(
        steps.iter().any(|s| s.contains("step 3: weight 50 %")),
        "{steps:?}"
    );
    assert!(steps.iter().any(|s| s.contains("completed")), "{steps:?}");
}

#[test]
fn a_slower_build_is_rolled_back_and_root_cause_names_the_step() {
    let (run, _gray) = start(&["--delay-ms", "200"]);
    let stop = Arc::new(AtomicBool::new(false));
    let t = traffic(&run, stop.clone());
    // A clean baseline first, so the onset stands out.
    std::thread::sleep(Duration::from_secs(10));
    let r = client()
        .post(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
        .json(&plan("slow"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_until("the rollback", Duration::from_secs(60), || {
        let r = rollout(&run, "slow");
        assert_ne!(r["progress"]["phase"], "succeeded", "{r}");
        assert_ne!(r["progress"]["phase"], "paused", "{r}");
        r["progress"]["phase"] == "aborted"
    });
    let r = rollout(&run, "slow");
    let reason = r["progress"]["reason"].as_str().unwrap();
    assert!(reason.contains("latency"), "{r}");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    t.into_iter().for_each(|h| h.join().unwrap());
    // Root cause: the rollout step that sent traffic to the slow build comes first.
    let rc: Value = client()
        .get(run.query_url("/api/v1/rootcause?from=now-2m&project=shop&metric=latency&slow_ms=100"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let first = &rc["rows"][0];
    assert_eq!(first["change_kind"], "rollout_step", "{rc:#}");
    assert!(
        first["summary"]
            .as_str()
            .unwrap()
            .contains("rollout slow started"),
        "{first}"
    );
    assert!(rc["onset"].is_string(), "{rc:#}");
}

fn hook(h: &Hook, name: &str, kind: &str) -> Value {
    json!({"name": name, "type": kind, "url": h.url(&format!("/{name}")), "timeout": "2s",
           "metadata": {"token": "s3cret"}})
}

fn bodies(h: &Hook, path: &str) -> Vec<Value> {
    h.received()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[test]
fn webhooks_gate_the_start_and_the_promotion_and_hear_every_step() {
    let (run, _gray) = start(&[]);
    let h = Hook::start();
    let stop = Arc::new(AtomicBool::new(false));
    let t = traffic(&run, stop.clone());
    let mut p = plan("hooked");
    p["rollout"]["steps"] =
        json!([{"set_weight": 10}, {"analysis": {"count": 1}}, {"set_weight": 100}]);
    p["rollout"]["webhooks"] = json!([
        hook(&h, "pre", "pre-rollout"),
        hook(&h, "check", "rollout"),
        hook(&h, "confirm", "confirm-promotion"),
        hook(&h, "events", "event"),
        hook(&h, "post", "post-rollout"),
    ]);
    let start_it = || {
        client()
            .post(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
            .json(&p)
            .send()
            .unwrap()
    };
    // The pre-rollout gate says no: nothing starts, and the answer says why.
    h.answer("/pre", 503);
    let r = start_it();
    assert_eq!(r.status().as_u16(), 409);
    let why = r.text().unwrap();
    assert!(
        why.contains("pre-rollout webhook `pre` answered 503"),
        "{why}"
    );
    assert!(rollout(&run, "hooked").is_null());
    assert!(gray_rules(&run).as_array().unwrap().is_empty());
    // It says yes; the confirm-promotion gate holds the last step until it says yes too.
    h.answer("/pre", 200);
    h.answer("/confirm", 403);
    let r = start_it();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    wait_until("the hold", Duration::from_secs(60), || {
        let r = rollout(&run, "hooked");
        assert_ne!(r["progress"]["phase"], "aborted", "{r}");
        r["progress"]["held"]
            .as_str()
            .is_some_and(|h| h.contains("confirm-promotion webhook `confirm` answered 403"))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(gray_rules(&run)[0]["percent"], 10.0, "held at 10 %");
    h.answer("/confirm", 200);
    wait_until("the promotion", Duration::from_secs(30), || {
        rollout(&run, "hooked")["progress"]["phase"] == "succeeded"
    });
    stop.store(true, Ordering::Relaxed);
    t.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(gray_rules(&run)[0]["percent"], 100.0);
    assert!(rollout(&run, "hooked")["progress"]["held"].is_null());
    // Flagger's body: name, namespace, phase, checksum, type, metadata.
    let pre = bodies(&h, "/pre");
    assert_eq!(pre.len(), 2, "{pre:?}");
    assert_eq!(pre[0]["name"], "hooked");
    assert_eq!(pre[0]["namespace"], "shop");
    assert_eq!(pre[0]["type"], "pre-rollout");
    assert_eq!(pre[0]["metadata"]["token"], "s3cret");
    assert_eq!(pre[0]["metadata"]["route"], "api");
    assert!(pre[0]["checksum"].as_str().is_some_and(|c| c.len() == 16));
    let checks = bodies(&h, "/check");
    assert!(
        !checks.is_empty()
            && checks
                .iter()
                .all(|b| b["type"] == "rollout" && b["phase"] == "Progressing")
    );
    let confirms = bodies(&h, "/confirm");
    assert!(confirms.len() >= 2 && confirms.iter().all(|b| b["phase"] == "WaitingPromotion"));
    wait_until("the notifications", Duration::from_secs(10), || {
        bodies(&h, "/post").len() == 1
    });
    assert_eq!(bodies(&h, "/post")[0]["phase"], "Succeeded");
    let events: Vec<String> = bodies(&h, "/events")
        .iter()
        .map(|b| b["metadata"]["eventMessage"].as_str().unwrap().to_string())
        .collect();
    for want in ["started", "held: confirm-promotion", "completed"] {
        assert!(
            events.iter().any(|e| e.contains(want)),
            "{want}: {events:?}"
        );
    }
}

#[test]
fn a_bad_build_is_rolled_back_by_analysis() {
    let (run, _gray) = start(&["--fail-tenant", "*"]);
    let before = gray_rules(&run);
    let h = Hook::start();
    let stop = Arc::new(AtomicBool::new(false));
    let t = traffic(&run, stop.clone());
    let mut p = plan("bad");
    p["rollout"]["webhooks"] = json!([hook(&h, "rb", "rollback")]);
    let r = client()
        .post(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
        .json(&p)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_until("the rollback", Duration::from_secs(60), || {
        rollout(&run, "bad")["progress"]["phase"] == "aborted"
    });
    stop.store(true, Ordering::Relaxed);
    t.into_iter().for_each(|h| h.join().unwrap());
    let r = rollout(&run, "bad");
    let reason = r["progress"]["reason"].as_str().unwrap();
    assert!(reason.contains("gray"), "{r}");
    assert_eq!(
        gray_rules(&run),
        before,
        "the rules before the rollout are back"
    );
    let kinds = change_kinds_of(&run);
    let last = kinds.last().unwrap();
    assert_eq!(last.0, "rollback", "{kinds:?}");
    assert!(last.1.contains("rollout bad: aborted"), "{kinds:?}");
    wait_until("the rollback hook", Duration::from_secs(10), || {
        !bodies(&h, "/rb").is_empty()
    });
    let b = &bodies(&h, "/rb")[0];
    assert_eq!(
        (&b["type"], &b["phase"]),
        (&json!("rollback"), &json!("Failed"))
    );
    assert!(
        b["metadata"]["eventMessage"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{b}"
    );
}

#[test]
fn people_steer_and_a_restart_resumes() {
    let (mut run, _gray) = start(&[]);
    let mut p = plan("held");
    p["rollout"]["steps"] =
        json!([{"set_weight": 10}, {"pause_until_promote": true}, {"set_weight": 30}]);
    let r = client()
        .post(format!("http://127.0.0.1:{}/admin/v1/rollouts", run.admin))
        .json(&p)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A viewer may not steer.
    let r = bare_client()
        .post(format!(
            "http://127.0.0.1:{}/admin/v1/rollouts/held/promote",
            run.admin
        ))
        .bearer_auth(VIEWER)
        .send()
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    run.restart();
    std::thread::sleep(Duration::from_secs(2));
    let r = rollout(&run, "held");
    assert_eq!(
        r["progress"]["step"], 1,
        "still waiting after a restart: {r}"
    );
    assert_eq!(gray_rules(&run)[0]["percent"], 10.0);
    let r = client()
        .post(format!(
            "http://127.0.0.1:{}/admin/v1/rollouts/held/promote",
            run.admin
        ))
        .json(&json!({"reason": "looks good"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(rollout(&run, "held")["progress"]["phase"], "succeeded");
    assert_eq!(gray_rules(&run)[0]["percent"], 30.0);
    // Over is over.
    let r = client()
        .post(format!(
            "http://127.0.0.1:{}/admin/v1/rollouts/held/abort",
            run.admin
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
}

/// What an upstream says it is (`--name`), straight from the server.
fn build_of(port: u16) -> String {
    let v: Value = bare_client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    v["upstream"].as_str().unwrap_or("down").to_string()
}

#[test]
fn a_serial_release_stops_at_the_server_whose_hook_fails() {
    let work = TempDir::new("apus-serial");
    let ports = [free_port(), free_port(), free_port()];
    let ups: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| upstream(*p, &format!("v1-{}", i + 1)))
        .collect();
    let dir = work.path().display().to_string();
    for (p, u) in ports.iter().zip(&ups) {
        std::fs::write(format!("{dir}/pid-{p}"), u.0.id().to_string()).unwrap();
    }
    // The deploy hook: restart the server on the new build; the second one fails.
    let script = format!(
        "#!/bin/sh\necho \"$APUS_SERVER $APUS_BUILD\" >> {dir}/deployed.log\n\
         case \"$APUS_SERVER\" in 127.0.0.1:{bad}) echo \"disk full on $APUS_SERVER\" >&2; exit 3;; esac\n\
         port=${{APUS_SERVER##*:}}\nkill $(cat {dir}/pid-$port)\nsleep 0.3\n\
         {BIN} upstream --listen \"$APUS_SERVER\" --name \"$APUS_BUILD\" >/dev/null 2>&1 &\n\
         echo $! > {dir}/new-$port\n",
        bad = ports[1]
    );
    std::fs::write(format!("{dir}/deploy.sh"), script).unwrap();
    let servers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let extra = format!(
        "[[gateway.pools]]\nname = \"web\"\nservers = [{}]\n\n\
         [[gateway.deploy_hooks]]\nname = \"deploy-web\"\ncommand = [\"/bin/sh\", \"{dir}/deploy.sh\"]\n",
        servers.join(", ")
    );
    let run = AllInOne::start(RunOpts {
        config_token: true,
        gateway_extra: &extra,
        ..Default::default()
    });
    let admin = |path: &str| format!("http://127.0.0.1:{}/admin/v1/{path}", run.admin);
    let start = |body: Value| client().post(admin("releases")).json(&body).send().unwrap();
    // A hook that is not in the config, and a server not in the pool, are refused.
    let r = start(json!({"release": {"pool": "web", "build": "v2", "hook": "rm -rf /"}}));
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("no deploy hook"));
    let r = start(
        json!({"release": {"pool": "web", "build": "v2", "hook": "deploy-web",
                                     "servers": ["127.0.0.1:1"]}}),
    );
    assert_eq!(r.status().as_u16(), 400);
    let r = start(
        json!({"release": {"pool": "web", "build": "v2", "hook": "deploy-web",
                                     "settle": "1s"}, "reason": "ship v2"}),
    );
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    let rel = || -> Value {
        client()
            .get(admin("releases"))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()["releases"]["web"]
            .clone()
    };
    let t0 = std::time::Instant::now();
    wait_until("the release to stop", Duration::from_secs(60), || {
        let r = rel();
        if t0.elapsed() > Duration::from_secs(50) {
            let log = run.log();
            panic!("{r}\n{}", &log[log.len().saturating_sub(4000)..]);
        }
        r["phase"] != "running"
    });
    let r = rel();
    assert_eq!(r["phase"], "failed", "{r}");
    assert_eq!(r["server"], format!("127.0.0.1:{}", ports[1]));
    assert_eq!(r["at"], "deploy");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("exited with 3") && reason.contains("disk full"),
        "{reason}"
    );
    assert_eq!(r["done"], json!([format!("127.0.0.1:{}", ports[0])]));
    // The first server runs the new build, the other two the old one; the failed one stays
    // drained and the third was never touched.
    assert_eq!(build_of(ports[0]), "v2");
    assert_eq!(build_of(ports[1]), "v1-2");
    assert_eq!(build_of(ports[2]), "v1-3");
    let log = std::fs::read_to_string(format!("{dir}/deployed.log")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    let pools: Value = client().get(admin("pools")).send().unwrap().json().unwrap();
    let web = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .unwrap();
    let state = |p: u16| {
        web["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["addr"] == format!("127.0.0.1:{p}"))
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(ports[1]), "drained");
    assert_eq!(state(ports[0]), "healthy");
    assert_eq!(state(ports[2]), "healthy");
    // Every stage is a change event.
    let kinds = change_kinds_of(&run);
    let s1 = format!("127.0.0.1:{}", ports[0]);
    let said: Vec<&String> = kinds
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.contains("pool web release"))
        .collect();
    for want in [
        format!("server 1/3 {s1}: drained"),
        format!("server 1/3 {s1}: v2 deployed"),
        format!("server 1/3 {s1}: passes its health check"),
        format!("server 1/3 {s1}: back in rotation"),
        format!("server 1/3 {s1}: settled"),
        "deploy failed".to_string(),
    ] {
        assert!(said.iter().any(|s| s.contains(&want)), "{want}: {said:#?}");
    }
    assert!(
        kinds
            .iter()
            .any(|(k, s)| k == "server_drain" && s.contains(&s1)),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|(k, s)| k == "server_undrain" && s.contains(&s1)),
        "{kinds:?}"
    );
    drop(run);
    if let Ok(pid) = std::fs::read_to_string(format!("{dir}/new-{}", ports[0])) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
}
