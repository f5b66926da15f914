//! End-to-end tests of `apus ingest`: real process, every receiver format, rows read back
//! through DataFusion from the data directory, and SIGKILL durability.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use datafusion::arrow::array::AsArray;
use prost::Message;
use serde_json::{json, Value};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "apus-ingest-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SLOWLOG: &str =
    "/usr/sbin/mysqld, Version: 8.0.35 (MySQL Community Server - GPL). started with:
Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock
Time                 Id Command    Argument
# Time: 2024-01-02T03:04:05.123456Z
# User@Host: app[app] @ web-1 [10.0.0.5]  Id:    12
# Query_time: 1.500000  Lock_time: 0.000100 Rows_sent: 1  Rows_examined: 100000
use shop;
SET timestamp=1704164645;
SELECT * FROM orders WHERE tenant_id = 42 AND status = 'open';
# Time: 2024-01-02T03:04:06.000000Z
# User@Host: app[app] @ web-2 [10.0.0.6]  Id:    13
# Query_time: 0.700000  Lock_time: 0.000000 Rows_sent: 1  Rows_examined: 50000
SET timestamp=1704164646;
SELECT * FROM orders WHERE tenant_id = 7 AND status = 'paid';
";

#[test]
fn every_receiver_lands_rows_and_rejects_bad_input() {
    let dir = tmpdir("formats");
    let ing = Ingest::start(&dir);
    let c = client();
    // JSON lines: 3 good, 1 invalid JSON, 1 without a message.
    let body = "{\"message\":\"user 1 logged in\",\"level\":\"info\",\"pool\":\"stable\"}\n\
                {\"msg\":\"user 2 logged in\",\"ts\":\"2024-01-02T03:04:05Z\"}\n\
                {not json\n\
                {\"level\":\"warn\"}\n\
                {\"log\":\"disk 93% full\"}\n";
    let r = c
        .post(ing.url("/ingest/v1/logs?project=shop&env=prod"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
    assert_eq!(v["errors"][0]["line"], 3);
    assert!(
        v["errors"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("no `message`"),
        "{v}"
    );
    // All bad: 400.
    let r = c
        .post(ing.url("/ingest/v1/logs"))
        .body("[1]\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Elasticsearch bulk.
    let bulk = "{\"index\":{\"_index\":\"shop-logs\"}}\n{\"message\":\"payment failed\",\"log.level\":\"error\"}\n\
                {\"create\":{\"_id\":\"x1\"}}\n{\"message\":\"payment ok\"}\n\
                {\"index\":{}}\n{\"nomessage\":true}\n\
                {\"delete\":{\"_id\":\"x1\"}}\n";
    let r = c
        .post(ing.url("/shop-logs/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-elastic-product"], "Elasticsearch");
    let v: Value = r.json().unwrap();
    assert_eq!(v["errors"], true);
    let statuses: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i.as_object().unwrap().values().next().unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses, [201, 201, 400, 400], "{v}");
    assert_eq!(v["items"][1]["create"]["_id"], "x1");
    // Slow log (streamed).
    let r = c
        .post(ing.url("/ingest/v1/slowlog?pool=db-main"))
        .body(SLOWLOG)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["accepted"], 2);
    // Prometheus remote_write and text format.
    let req = apus_ingest::receivers::WriteRequest {
        timeseries: vec![apus_ingest::receivers::TimeSeries {
            labels: vec![
                apus_ingest::receivers::Label {
                    name: "__name__".into(),
                    value: "node_load1".into(),
                },
                apus_ingest::receivers::Label {
                    name: "pool".into(),
                    value: "gray".into(),
                },
            ],
            samples: vec![
                apus_ingest::receivers::Sample {
                    value: 0.5,
                    timestamp: 1_700_000_000_000,
                },
                apus_ingest::receivers::Sample {
                    value: 0.7,
                    timestamp: 1_700_000_015_000,
                },
            ],
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let r = c
        .post(ing.url("/api/v1/write"))
        .header("content-encoding", "snappy")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = c
        .post(ing.url("/api/v1/write"))
        .body("not snappy")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .post(ing.url("/ingest/v1/metrics"))
        .body("# TYPE up gauge\nup{host=\"h1\"} 1\nbad line here\n")
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["accepted"], 1);
    // Access logs from a remote gateway.
    let rec = json!({"ts": 1700000000000000i64, "request_id": "r1", "project": "shop", "env": "prod", "route": "api", "pool": "gray",
        "upstream": "127.0.0.1:1", "tag": "gray", "tenant": "acme", "client_ip": "1.2.3.4", "method": "GET", "host": "h", "path": "/",
        "status": 200, "latency_us": 10, "upstream_latency_us": 5, "bytes_in": 0, "bytes_out": 10});
    let r = c
        .post(ing.url("/ingest/v1/access"))
        .body(format!("{rec}\n"))
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["accepted"], 1);
    // Oversized body: 413. On its own client: the server answers before reading the body
    // and closes the connection, which a pooled client could otherwise try to reuse.
    let r = client()
        .post(ing.url("/ingest/v1/logs"))
        .body(vec![b' '; 33 << 20])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // ES handshake.
    let v: Value = c.get(ing.url("/")).send().unwrap().json().unwrap();
    assert!(v["version"]["number"].as_str().unwrap().starts_with('8'));

    drop(ing);
    let data = DataDir::open(&dir);
    let n = |sql: &str| data.count(sql);
    assert_eq!(n("SELECT count(*) FROM logs"), 5);
    assert_eq!(
        n("SELECT count(*) FROM logs WHERE project = 'shop-logs' AND level = 'ERROR'"),
        1
    );
    assert_eq!(
        n("SELECT count(DISTINCT template_id) FROM logs WHERE message LIKE 'user % logged in'"),
        1
    );
    assert_eq!(
        n("SELECT count(*) FROM slow_sql WHERE pool = 'db-main' AND db = 'shop'"),
        2
    );
    assert_eq!(n("SELECT count(DISTINCT fingerprint_id) FROM slow_sql"), 1);
    assert_eq!(
        n("SELECT count(*) FROM metrics WHERE name = 'node_load1' AND pool = 'gray'"),
        2
    );
    assert_eq!(n("SELECT count(*) FROM metrics WHERE name = 'up'"), 1);
    assert_eq!(
        n("SELECT count(*) FROM access_log WHERE tenant = 'acme'"),
        1
    );
    // 2 from logs, 1 all-bad, 2 from bulk, 1 remote_write, 1 metrics line.
    assert_eq!(n("SELECT count(*) FROM dead_letter"), 7);
    let b = data.sql("SELECT raw FROM dead_letter WHERE source = 'logs' ORDER BY raw LIMIT 1");
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "[1]");
}

#[test]
fn sigkill_loses_no_acknowledged_record() {
    let dir = tmpdir("kill");
    let port = free_port();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let post_loop =
        |acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>, prefix: &'static str| {
            std::thread::spawn(move || {
                let c = client();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..20).map(|j| format!("{prefix}-{i}-{j}")).collect();
                    let body: String = ids
                        .iter()
                        .map(|id| format!("{{\"message\":\"{id}\"}}\n"))
                        .collect();
                    if let Ok(r) = c
                        .post(format!("http://127.0.0.1:{port}/ingest/v1/logs"))
                        .body(body)
                        .send()
                    {
                        if r.status().is_success() {
                            acked.lock().unwrap().extend(ids);
                        }
                    }
                    i += 1;
                }
            })
        };
    let mut ing = Ingest::start_on(&dir, port);
    let t = post_loop(acked.clone(), stop.clone(), "a");
    std::thread::sleep(Duration::from_millis(1500));
    ing.proc.0.kill().unwrap(); // SIGKILL, mid-stream
    let _ = ing.proc.0.wait();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let before = acked.lock().unwrap().len();
    assert!(
        before > 100,
        "only {before} records acknowledged before the kill"
    );
    // Restart on the same data dir and keep writing.
    let ing = Ingest::start_on(&dir, port);
    let stop2 = Arc::new(AtomicBool::new(false));
    let t = post_loop(acked.clone(), stop2.clone(), "b");
    std::thread::sleep(Duration::from_millis(700));
    stop2.store(true, Ordering::Relaxed);
    t.join().unwrap();
    drop(ing);

    let b = DataDir::open(&dir).sql("SELECT message, count(*) AS n FROM logs GROUP BY message");
    let mut seen = HashSet::new();
    for batch in &b {
        let (m, n) = (
            batch.column(0).as_string::<i32>(),
            batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
        );
        for i in 0..batch.num_rows() {
            assert_eq!(n.value(i), 1, "{} stored {} times", m.value(i), n.value(i));
            seen.insert(m.value(i).to_string());
        }
    }
    let acked = acked.lock().unwrap();
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !seen.contains(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?} (of {})",
        acked.len()
    );
}

#[test]
fn collector_follows_rotation_keeps_traces_whole_and_resumes_after_kill() {
    let dir = tmpdir("collect");
    let ing = Ingest::start(&dir.join("data"));
    let log = dir.join("app.log");
    let append = |s: &str| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(s.as_bytes())
            .unwrap();
    };
    let cfg = dir.join("collect.toml");
    std::fs::write(
        &cfg,
        format!(
            "ingest_url = \"{}\"\nstate_file = \"{}\"\npoll_ms = 50\n[[files]]\npath = \"{}\"\nkind = \"logs\"\nproject = \"shop\"\npool = \"gray\"\n",
            ing.url(""),
            dir.join("state.json").display(),
            log.display()
        ),
    )
    .unwrap();
    let start = || {
        Proc(
            std::process::Command::new(BIN)
                .args(["collect", "--config", cfg.to_str().unwrap()])
                .env("APUS_INGEST_TOKEN", ADMIN)
                .stderr(std::fs::File::create(dir.join("collect.log")).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let count = |c: &reqwest::blocking::Client| -> u64 {
        // Ask the node how many log rows it took, via its own metrics.
        let m = c.get(ing.url("/metrics")).send().unwrap().text().unwrap();
        m.lines()
            .find(|l| l.starts_with("apus_ingest_rows_total{table=\"logs\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let c = client();
    append("line 1\nline 2\nERROR payment failed\njava.lang.IllegalStateException: bad 7\n\tat a.B.c(B.java:1)\nCaused by: java.io.IOException: eof\n\t... 3 more\nline 3\n");
    let mut col = start();
    // line 1, line 2, the ERROR line, the trace (one event), line 3.
    wait_until("first 5 events", Duration::from_secs(10), || count(&c) >= 5);
    // Rotate: more lines land in the old file first, then a new file appears.
    append("line 4 (old file)\n");
    std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    append("line 5 (new file)\nline 6\n");
    wait_until("rotation followed", Duration::from_secs(10), || {
        count(&c) >= 8
    });
    std::thread::sleep(Duration::from_millis(300));
    col.kill();
    append("line 7 (while down)\n");
    let _col = start();
    wait_until("resumed", Duration::from_secs(10), || count(&c) >= 9);
    std::thread::sleep(Duration::from_millis(500));
    drop(_col);
    drop(ing);
    let d = DataDir::open(&dir.join("data"));
    assert_eq!(
        d.count("SELECT count(*) FROM logs"),
        9,
        "each event exactly once"
    );
    assert_eq!(d.count("SELECT count(DISTINCT message) FROM logs"), 9);
    assert_eq!(d.count("SELECT count(*) FROM logs WHERE exception = 'java.lang.IllegalStateException' AND pool = 'gray'"), 1);
}

/// 16 clients posting 1 MB bodies as fast as they can for 30 s against receivers allowed 4 MiB in
/// flight and 256 MiB of backlog not yet in the store: the excess gets 429 with
/// `Retry-After`, memory stays bounded, and the node answers normally as soon as the load
/// stops. (With the default 1 GiB backlog the bound is the backlog: RSS reached 1.8 GB in
/// a debug build on a fast run.)
#[test]
fn overload_gets_429_with_retry_after_bounded_memory_and_recovery() {
    let dir = tmpdir("overload");
    let cfg = dir.with_extension("toml");
    std::fs::write(
        &cfg,
        "max_inflight_bytes = 4194304\nmax_memory_bytes = 268435456\n",
    )
    .unwrap();
    let ing = Ingest::start_with(&dir, free_port(), &["--config", cfg.to_str().unwrap()], &[]);
    let pid = ing.proc.0.id();
    let rss_mb = move || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
            / 1024
    };
    let line = format!(
        "{{\"message\":\"checkout {} failed for order\",\"level\":\"ERROR\",\"project\":\"shop\"}}\n",
        "x".repeat(150)
    );
    let body = line.repeat((1 << 20) / line.len());
    let url = ing.url("/ingest/v1/logs");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let start_rss = rss_mb();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (stop, counts, body, url) =
                (stop.clone(), counts.clone(), body.clone(), url.clone());
            std::thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(r) = c.post(&url).body(body.clone()).send() else {
                        continue;
                    };
                    let mut k = counts.lock().unwrap();
                    match r.status().as_u16() {
                        200 => k.0 += 1,
                        429 => {
                            assert!(r.headers().contains_key("retry-after"));
                            k.1 += 1;
                        }
                        _ => k.2 += 1,
                    }
                }
            })
        })
        .collect();
    let mut max_rss = 0;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        max_rss = max_rss.max(rss_mb());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let (ok, throttled, other) = *counts.lock().unwrap();
    eprintln!(
        "overload: {ok} × 200, {throttled} × 429, {other} other in 30 s; RSS {start_rss} MB → max {max_rss} MB"
    );
    assert!(ok > 0 && throttled > 0, "{ok} ok, {throttled} throttled");
    assert_eq!(other, 0);
    assert!(max_rss < 1536, "RSS reached {max_rss} MB");
    // Recovery: once the backlog drains into the store, requests are served again.
    let t = std::time::Instant::now();
    wait_until("served after the load", Duration::from_secs(30), || {
        client()
            .post(&url)
            .body("{\"message\":\"after\"}\n")
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    });
    eprintln!(
        "overload: served again {:.1} s after the load stopped",
        t.elapsed().as_secs_f64()
    );
}

/// The data directory on a 48 MiB tmpfs that fills up: ingest refuses with 507 (and
/// `Retry-After`) instead of acknowledging what it could not fsync; when space returns it
/// accepts again, and after a restart every acknowledged record is there.
#[test]
fn disk_full_refuses_without_losing_anything_acknowledged() {
    let base = tmpdir("diskfull");
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // CI runs as root and mounts; elsewhere say why nothing was checked.
        assert_ne!(
            current_uid(),
            0,
            "root could not mount a tmpfs for the disk-full test"
        );
        eprintln!("disk-full test skipped: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Unmount(mnt.clone());
    // Space to give back later.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 16 << 20]).unwrap();
    let data = mnt.join("data");
    let port = free_port();
    let mut ing = Ingest::start_with(&data, port, &[], &[]);
    let c = client();
    let post = |from: usize, n: usize| -> reqwest::blocking::Response {
        let body: String = (from..from + n)
            .map(|i| format!("{{\"message\":\"record m{i} {}\"}}\n", "p".repeat(200)))
            .collect();
        c.post(ing.url("/ingest/v1/logs"))
            .body(body)
            .send()
            .unwrap()
    };
    let mut acked = 0usize;
    let mut refused = None;
    for round in 0..400 {
        let r = post(round * 1000, 1000);
        match r.status().as_u16() {
            200 => acked = round * 1000 + 1000,
            st => {
                refused = Some((st, r.headers().contains_key("retry-after")));
                break;
            }
        }
    }
    let (st, retry) = refused.expect("the 48 MiB disk never filled");
    assert!(st == 507 || st == 429 || st == 503, "refused with {st}");
    assert!(retry, "no Retry-After on {st}");
    // Space returns: accepted again.
    std::fs::remove_file(&filler).unwrap();
    let next = acked;
    let mut accepted_again = false;
    for i in 0..50 {
        if post(next + i * 10, 10).status().as_u16() == 200 {
            accepted_again = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(accepted_again, "not accepting after space returned");
    // Every acknowledged record survives a restart.
    ing.proc.kill();
    let d = DataDir::open(&data);
    let n = d.count(&format!(
        "SELECT count(DISTINCT message) FROM logs WHERE message LIKE 'record m%' \
         AND CAST(split_part(split_part(message, ' ', 2), 'm', 2) AS BIGINT) < {acked}"
    ));
    assert_eq!(
        n as usize, acked,
        "acknowledged records missing after disk full"
    );
    eprintln!("disk full: {acked} records acknowledged before {st}; all present after restart");
}

fn current_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
