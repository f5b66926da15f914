//! End-to-end test of `apus run`: gateway and ingest in one process; requests through the
//! gateway become `access_log` rows and an admin rule flip becomes a `changes` row.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn gateway_traffic_and_changes_flow_into_the_store() {
    let mut run = AllInOne::start(RunOpts {
        access_log: "in-process",
        config_token: true,
        ..Default::default()
    });
    let (port, admin, qport, data) = (run.port, run.admin, run.q, run.data());
    let c = client();
    for i in 0..20 {
        let (st, up, _, _) = get(
            &c,
            &format!("http://127.0.0.1:{port}/x"),
            &[("x-tenant-id", &format!("t{i}"))],
        );
        assert_eq!((st, up.as_str()), (200, "stable-1"));
    }
    let r = c
        .put(format!("http://127.0.0.1:{admin}/admin/v1/routes/api/rules"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"rules": [{"name": "ramp", "pool": "stable", "percent": 5}], "reason": "test flip"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Wait for the access-log writer and the change feed to hand over, and a flush.
    wait_until("parquet files", Duration::from_secs(10), || {
        std::fs::read_dir(data.join("store/access_log"))
            .map(|d| d.count() > 1)
            .unwrap_or(false)
    });
    std::thread::sleep(Duration::from_millis(500));

    // The query API of the same process answers from the same rows.
    let q = |path: &str| {
        let r = c
            .get(format!("http://127.0.0.1:{qport}{path}"))
            .send()
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json::<serde_json::Value>().unwrap())
    };
    let (st, pools) = q("/api/v1/rank/pools?from=now-10m");
    assert_eq!(st, 200, "{pools}");
    assert_eq!(pools["rows"][0]["pool"], "stable", "{pools}");
    assert_eq!(pools["rows"][0]["tag"], "stable", "{pools}");
    assert_eq!(pools["rows"][0]["requests"], 20, "{pools}");
    let (st, ch) = q("/api/v1/changes?from=now-10m&project=shop");
    assert_eq!(st, 200, "{ch}");
    assert_eq!(ch["rows"][0]["kind"], "gray_rules", "{ch}");
    let touched = ch["rows"][0]["touched"].as_str().unwrap();
    assert!(
        touched.contains("route:api") && touched.contains("pool:stable"),
        "{touched}"
    );
    let (st, rc) = q("/api/v1/rootcause?from=now-5m&project=shop");
    assert_eq!(st, 200, "{rc}");
    assert!(rc["rows"].is_array(), "{rc}");
    for (path, reason) in [
        (
            "/api/v1/rank/pools?tenannt=x",
            "unknown parameter or dimension `tenannt`",
        ),
        ("/api/v1/rank/nodes", "unknown ranking `nodes`"),
        ("/api/v1/slow-sql/top?from=now&to=now-1h", "bad time range"),
        (
            "/api/v1/slow-sql/top?from=yesterday",
            "bad time `yesterday`",
        ),
        ("/api/v1/slow-sql/top?order=speed", "`order` must be one of"),
        ("/api/v1/logs/search?q=message:(", "query"),
    ] {
        let (st, body) = q(path);
        assert_eq!(st, 400, "{path}: {body}");
        let e = body["error"].as_str().unwrap();
        assert!(e.contains(reason), "{path}: {e}");
    }
    let sql = |body: &str| {
        let r = c
            .post(format!("http://127.0.0.1:{qport}/api/v1/sql"))
            .json(&serde_json::json!({ "sql": body }))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().unwrap())
    };
    let (st, body) = sql("SELECT count(*) AS n FROM access_log");
    assert_eq!(
        (st, body["rows"][0]["n"].as_i64()),
        (200, Some(20)),
        "{body}"
    );
    let (st, body) = sql("DELETE FROM access_log");
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("only SELECT"),
        "{body}"
    );

    // The console's page itself is public (it holds no data); its pages are tested in a
    // real browser in tests/console.rs.
    let r = c.get(format!("http://127.0.0.1:{qport}/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().unwrap().contains("/console/app.js"));
    run.proc.kill();
    let d = DataDir::open(&data);
    assert_eq!(d.count("SELECT count(*) FROM access_log WHERE route = 'api' AND status = 200 AND tag = 'stable'"), 20);
    assert_eq!(d.count("SELECT count(DISTINCT tenant) FROM access_log"), 20);
    assert_eq!(d.count("SELECT count(*) FROM changes WHERE kind = 'gray_rules' AND actor = 'alice' AND to_version = 2"), 1);
}
