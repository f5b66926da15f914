//! Alarms against real peers: Apus forwarding to a real Prometheus Alertmanager 0.25
//! (Debian's `prometheus-alertmanager`) whose webhook payload reads the same as Apus's, and
//! a fleet of ingest nodes on a real ClickHouse with one query node evaluating.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::alarms::*;
use common::*;
use serde_json::Value;

/// A real Alertmanager 0.25 on a free port, its webhook pointed at `hook`.
struct Alertmanager {
    _proc: Proc,
    port: u16,
    _dir: TempDir,
}

impl Alertmanager {
    fn start(hook: &Hook) -> Alertmanager {
        let dir = TempDir::new("apus-am");
        let port = free_port();
        let cfg = format!(
            "route:\n  receiver: hook\n  group_by: [alertname, tenant]\n  group_wait: 0s\n  group_interval: 1s\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n",
            hook.url("/from-alertmanager")
        );
        std::fs::write(dir.path().join("am.yml"), cfg).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-alertmanager (apt-get install prometheus-alertmanager)");
        let am = Alertmanager {
            _proc: Proc(child),
            port,
            _dir: dir,
        };
        wait_until("alertmanager", Duration::from_secs(20), || {
            bare_client()
                .get(format!("http://127.0.0.1:{port}/-/ready"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        am
    }
}

#[test]
fn alertmanager_takes_forwarded_alerts_and_receivers_take_apus_payloads() {
    let hook = Hook::start();
    let am = Alertmanager::start(&hook);
    let extra = format!(
        "resend_delay = \"2s\"\n[[query.alarms.alertmanagers]]\nurl = \"http://127.0.0.1:{}\"",
        am.port
    );
    let cfg = alarms_config(&hook, &extra);
    let rules = rule("1m");
    let run = AllInOne::start(RunOpts {
        access_log: "in-process",
        config_token: true,
        query_extra: &cfg,
        files: &[("alarms/shop.toml", &rules)],
        ..Default::default()
    });
    traffic(&run, "am1", 500, 10);
    wait_until("both webhooks", Duration::from_secs(20), || {
        let r = hook.received();
        r.iter().any(|x| x.path == "/alert") && r.iter().any(|x| x.path == "/from-alertmanager")
    });
    let r = hook.received();
    let ours = r.iter().find(|x| x.path == "/alert").unwrap();
    let theirs = r.iter().find(|x| x.path == "/from-alertmanager").unwrap();
    // The same receiver code reads both, and they say the same thing.
    let (a, b) = (read_v4(&ours.body), read_v4(&theirs.body));
    assert_eq!(a, b, "apus: {}\nalertmanager: {}", ours.body, theirs.body);
    assert_eq!(a.1, [("firing".into(), "ApiErrors".into(), "am1".into())]);
    let theirs: Value = serde_json::from_str(&theirs.body).unwrap();
    assert!(theirs["alerts"][0]["generatorURL"]
        .as_str()
        .unwrap()
        .contains("/api/v1/rootcause"));
    // Alertmanager lists the alert as active.
    let listed: Value = bare_client()
        .get(format!("http://127.0.0.1:{}/api/v2/alerts", am.port))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed[0]["labels"]["tenant"], "am1", "{listed}");
    assert_eq!(listed[0]["status"]["state"], "active");
}

#[test]
fn a_fleet_on_clickhouse_alarms_once_over_every_ingest_node() {
    let ch = apus_testkit::ClickHouse::start("alarms");
    let url = ch.url("alarms");
    let hook = Hook::start();
    let dir = TempDir::new("apus-alarm-fleet");
    let (d1, d2) = (dir.path().join("i1"), dir.path().join("i2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let i1 = Ingest::start_with(&d1, free_port(), &["--store", &url], &[]);
    let i2 = Ingest::start_with(&d2, free_port(), &["--store", &url], &[]);
    // One query node evaluates the rules over what every ingest node wrote.
    let qdir = dir.path().join("q");
    std::fs::create_dir_all(qdir.join("alarms")).unwrap();
    std::fs::write(qdir.join("alarms/shop.toml"), rule("1m")).unwrap();
    let q = free_port();
    std::fs::write(
        qdir.join("q.toml"),
        format!(
            "listen = \"127.0.0.1:{q}\"\n[alarms]\nrules_dir = \"alarms\"\ninterval = \"500ms\"\n\
             [[alarms.receivers]]\nname = \"hook\"\nurl = \"{}\"\n\
             [alarms.route]\nreceiver = \"hook\"\ngroup_by = [\"alertname\", \"tenant\"]\ngroup_wait = \"100ms\"\n",
            hook.url("/alert")
        ),
    )
    .unwrap();
    let tokens = tokens_file(&qdir);
    let child = Command::new(BIN)
        .args(["query", "--config", "q.toml", "--store", &url, "--tokens"])
        .arg(&tokens)
        .current_dir(&qdir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("query.log")).unwrap())
        .spawn()
        .unwrap();
    let _query = Proc(child);
    wait_until("query node", Duration::from_secs(30), || {
        bare_client()
            .get(format!("http://127.0.0.1:{q}/health"))
            .send()
            .is_ok()
    });
    // 3 failed requests on each node: neither alone reaches min_requests = 5.
    let post = |i: &Ingest| {
        let r = client()
            .post(i.url("/ingest/v1/access"))
            .body(error_rows("fleet", 3))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    };
    post(&i1);
    post(&i2);
    let acked = Instant::now();
    wait_until("the fleet's alarm", Duration::from_secs(20), || {
        !pages(&hook, "fleet", "firing").is_empty()
    });
    let at = hook.received()[0].at;
    eprintln!(
        "fleet on clickhouse, event-to-webhook latency: {:?}",
        at.duration_since(acked)
    );
    std::thread::sleep(Duration::from_secs(3));
    let firing = pages(&hook, "fleet", "firing");
    assert_eq!(firing.len(), 1, "paged once, not once per node");
    assert_eq!(firing[0]["alerts"].as_array().unwrap().len(), 1);
    // The transition is in ClickHouse's alarms table.
    assert_eq!(
        ch.count("SELECT count() FROM alarms.alarms WHERE state = 'firing'"),
        1
    );
}
