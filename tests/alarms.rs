//! Alarms end to end on one `apus run`: rule files, errors injected through the gateway, a
//! real webhook receiver, restarts, silences, switches, change announcements. The peers
//! (a real Alertmanager, a ClickHouse fleet) are in `tests/alarm_peers.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::alarms::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn an_error_burst_fires_pages_and_resolves_with_history() {
    let hook = Hook::start();
    let cfg = alarms_config(&hook, "");
    let rules = rule("3s");
    // A rule whose query fails is marked `error`; it does not stop the others.
    let broken = "[[rule]]\nname = \"BadSql\"\nproject = \"shop\"\nenv = \"prod\"\nkind = \"sql\"\n\
                  condition = \"> 1\"\nsql = \"SELECT pool, no_such_column AS value FROM access_log WHERE $window GROUP BY pool\"\n";
    let run = AllInOne::start(RunOpts {
        access_log: "in-process",
        config_token: true,
        query_extra: &cfg,
        files: &[("alarms/shop.toml", &rules), ("alarms/broken.toml", broken)],
        ..Default::default()
    });
    traffic(&run, "acme", 200, 20);
    std::thread::sleep(Duration::from_secs(1));
    assert!(hook.received().is_empty(), "healthy traffic pages no one");

    traffic(&run, "acme", 500, 30);
    let acked = Instant::now();
    wait_until("the firing webhook", Duration::from_secs(10), || {
        !pages(&hook, "acme", "firing").is_empty()
    });
    let page = &pages(&hook, "acme", "firing")[0];
    let latency = hook.received()[0].at.duration_since(acked);
    eprintln!("event-to-webhook latency: {latency:?}");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    let (st, alerts) = read_v4(&page.to_string());
    assert_eq!(st, "firing");
    assert_eq!(
        alerts,
        [("firing".into(), "ApiErrors".into(), "acme".into())]
    );
    let a = &page["alerts"][0];
    assert_eq!(a["labels"]["pool"], "stable");
    assert_eq!(a["labels"]["team"], "payments");
    assert_eq!(a["labels"]["severity"], "critical");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("stable fails"),
        "{a}"
    );
    assert!(
        a["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/api/v1/rootcause?from="),
        "{a}"
    );
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");

    // Recovery: good traffic until the 3 s window holds no errors.
    let until = Instant::now() + Duration::from_secs(15);
    while pages(&hook, "acme", "resolved").is_empty() && Instant::now() < until {
        traffic(&run, "acme", 200, 5);
        std::thread::sleep(Duration::from_millis(100));
    }
    let resolved = pages(&hook, "acme", "resolved");
    assert_eq!(resolved.len(), 1, "{:?}", hook.received());
    assert_ne!(resolved[0]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    // The history, through the API and in the alarms table.
    let h = get_json(&run.query_url("/api/v1/alarms?project=shop&env=prod&from=now-10m"));
    let states: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rule"] == "shop/prod/ApiErrors")
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["resolved", "firing"], "newest first: {h}");
    let rules = get_json(&run.query_url("/api/v1/alarms/rules"));
    assert_eq!(rules["rules"][0]["health"], "ok", "{rules}");
    assert_eq!(rules["rules"][1]["id"], "shop/prod/BadSql", "{rules}");
    assert_eq!(rules["rules"][1]["health"], "error", "{rules}");
    assert!(
        rules["rules"][1]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_column"),
        "{rules}"
    );
    let rows = client()
        .post(run.query_url("/api/v1/sql"))
        .json(&json!({"sql": "SELECT state, labels, since_us FROM alarms WHERE state <> 'error' ORDER BY ts"}))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(rows["count"], 2, "{rows}");
    assert!(rows["rows"][0]["labels"]
        .as_str()
        .unwrap()
        .contains("\"tenant\":\"acme\""));
}

#[test]
fn restarts_silences_switches_and_bad_rule_files() {
    let hook = Hook::start();
    let cfg = alarms_config(&hook, "changes_receiver = \"hook\"");
    let rules = rule("1m");
    let mut run = AllInOne::start(RunOpts {
        access_log: "in-process",
        tokens_file: TOKENS,
        query_extra: &cfg,
        files: &[("alarms/shop.toml", &rules)],
        ..Default::default()
    });
    traffic(&run, "t1", 500, 10);
    wait_until("t1 firing", Duration::from_secs(10), || {
        !pages(&hook, "t1", "firing").is_empty()
    });

    // A kill -9 and a restart: still firing, `since` kept, no second page.
    let before = get_json(&run.query_url("/api/v1/alarms?state=firing"));
    run.restart();
    std::thread::sleep(Duration::from_secs(3));
    let after = get_json(&run.query_url("/api/v1/alarms?state=firing"));
    assert_eq!(after["active"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after["active"][0]["since"], before["active"][0]["since"]);
    assert_eq!(
        pages(&hook, "t1", "firing").len(),
        1,
        "paged twice after a restart"
    );

    // A bad rule file is refused whole, naming the file, rule and field; the old rules
    // keep running.
    let bad = "[[rule]]\nname = \"Oops\"\nproject = \"shop\"\nenv = \"prod\"\nkind = \"error_rate\"\ncondition = \"about 5\"\n";
    std::fs::write(run.dir.join("alarms/bad.toml"), bad).unwrap();
    wait_until("the reload error", Duration::from_secs(10), || {
        get_json(&run.query_url("/api/v1/alarms/rules"))["reload_error"]
            .as_str()
            .is_some_and(|e| {
                e.contains("bad.toml") && e.contains("Oops") && e.contains("condition")
            })
    });
    let r = get_json(&run.query_url("/api/v1/alarms/rules"));
    assert_eq!(r["rules"].as_array().unwrap().len(), 1, "{r}");
    std::fs::remove_file(run.dir.join("alarms/bad.toml")).unwrap();

    // A silence mutes tenant t2's group; t3's still pages.
    let c = client();
    let now = chrono_like_now();
    let silence = json!({
        "matchers": [
            {"name": "project", "value": "shop", "isRegex": false, "isEqual": true},
            {"name": "env", "value": "prod", "isRegex": false, "isEqual": true},
            {"name": "tenant", "value": "t2", "isRegex": false, "isEqual": true}
        ],
        "startsAt": now.0, "endsAt": now.1, "createdBy": "sre", "comment": "known issue"
    });
    let v = client()
        .post(run.query_url("/api/v2/silences"))
        .bearer_auth(VIEWER)
        .json(&silence)
        .send()
        .unwrap();
    assert_eq!(v.status().as_u16(), 403, "a viewer may not silence");
    let v: Value = c
        .post(run.query_url("/api/v2/silences"))
        .bearer_auth(RM_PROD)
        .json(&silence)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["silenceID"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let list = get_json(&run.query_url("/api/v2/silences"));
    assert_eq!(list[0]["status"]["state"], "active", "{list}");
    traffic(&run, "t2", 500, 10);
    traffic(&run, "t3", 500, 10);
    wait_until("t3 firing", Duration::from_secs(10), || {
        !pages(&hook, "t3", "firing").is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pages(&hook, "t2", "firing").is_empty(),
        "silenced group paged"
    );
    let active = get_json(&run.query_url("/api/v1/alarms?state=firing"));
    assert!(
        active["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["tenant"] == "t2" && a["silenced"] == true),
        "{active}"
    );

    // Switching shop/prod off resolves what fires; both changes are audited.
    let r = c
        .post(run.query_url("/api/v1/alarms/switches"))
        .json(
            &json!({"project": "shop", "env": "prod", "enabled": false, "comment": "maintenance"}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_until("t1 resolved by the switch", Duration::from_secs(10), || {
        !pages(&hook, "t1", "resolved").is_empty()
    });
    let expired = c
        .delete(run.query_url(&format!("/api/v2/silence/{id}")))
        .send()
        .unwrap();
    assert_eq!(expired.status().as_u16(), 200);
    wait_until("the audit rows", Duration::from_secs(10), || {
        let ch = get_json(&run.query_url("/api/v1/changes?project=shop&env=prod&from=now-1h"));
        let kinds: Vec<String> = ch["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r["kind"].as_str().unwrap(),
                    r["actor"].as_str().unwrap()
                )
            })
            .collect();
        ["silence:bob", "alarm_switch:alice", "silence_expire:alice"]
            .iter()
            .all(|k| kinds.iter().any(|x| x == k))
    });
    // Every change is announced to the changes receiver: these, and a gray flip.
    let r = client()
        .put(format!("http://127.0.0.1:{}/admin/v1/routes/api/rules", run.admin))
        .json(&json!({"rules": [{"name": "beta", "pool": "stable", "tenants": ["acme"]}], "reason": "beta for acme"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_until("the change announcements", Duration::from_secs(10), || {
        let told: Vec<String> = hook
            .received()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
            .filter(|v| v["groupLabels"]["alertname"] == "change")
            .map(|v| {
                let a = &v["alerts"][0];
                format!(
                    "{}:{}",
                    a["labels"]["kind"].as_str().unwrap(),
                    a["labels"]["actor"].as_str().unwrap()
                )
            })
            .collect();
        ["silence:bob", "alarm_switch:alice", "gray_rules:alice"]
            .iter()
            .all(|k| told.iter().any(|x| x == k))
    });
    let flip = hook
        .received()
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .find(|v| v["alerts"][0]["labels"]["kind"] == "gray_rules")
        .unwrap();
    let a = &flip["alerts"][0];
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("beta for acme"),
        "{a}"
    );
    assert!(
        a["annotations"]["timeline"]
            .as_str()
            .unwrap()
            .contains("/api/v1/changes?from="),
        "{a}"
    );
}

/// `startsAt` now-1m and `endsAt` now+1h, RFC 3339.
fn chrono_like_now() -> (String, String) {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let f = |t: i64| {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    (f(s - 60), f(s + 3600))
}
