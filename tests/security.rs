//! Every listener of `apus run` checks tokens: the receivers (with Elasticsearch-style
//! Basic auth and per-row project/env scopes), the query API (scoped readers must filter
//! inside their scopes; raw SQL only as JSON and only for unscoped readers) and the admin
//! API. With no token configured, the first start creates an admin token (mode 0600) and
//! prints it once.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SHIPPER: &str = "filebeat-shop-token-1";
const SCOPED_VIEWER: &str = "viewer-shop-prod-token-1";

fn start(tokens_file: &str, config_token: bool, env: &[(&str, &str)]) -> AllInOne {
    AllInOne::start(RunOpts {
        config_token,
        tokens_file,
        env,
        ..Default::default()
    })
}

fn status(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.send().unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

#[test]
fn every_listener_checks_tokens_roles_and_scopes() {
    let tokens = format!(
        r#"
[[tokens]]
name = "filebeat"
token = "{SHIPPER}"
role = "shipper"
scopes = ["shop/*"]

[[tokens]]
name = "shop-sre"
token = "{SCOPED_VIEWER}"
role = "viewer"
scopes = ["shop/prod"]
"#
    );
    let r = start(&tokens, true, &[]);
    let bare = bare_client();
    let ing = |p: &str| format!("http://127.0.0.1:{}{p}", r.ing);
    let qu = |p: &str| format!("http://127.0.0.1:{}{p}", r.q);
    let line = |project: &str| {
        format!(r#"{{"message":"hello","level":"INFO","project":"{project}","env":"prod"}}"#)
    };

    // Ingest: no token, a wrong token, a reader's token.
    assert_eq!(
        status(bare.post(ing("/ingest/v1/logs")).body(line("shop"))).0,
        401
    );
    assert_eq!(
        status(
            bare.post(ing("/ingest/v1/logs"))
                .bearer_auth("not-a-token-at-all")
                .body(line("shop"))
        )
        .0,
        401
    );
    assert_eq!(
        status(
            bare.post(ing("/ingest/v1/logs"))
                .bearer_auth(SCOPED_VIEWER)
                .body(line("shop"))
        )
        .0,
        403
    );
    // A shipper with Elasticsearch-style Basic auth: its scope lands, another project's row
    // is refused with the reason and kept as a dead letter.
    let (st, body) = status(
        bare.post(ing("/ingest/v1/logs"))
            .basic_auth("filebeat", Some(SHIPPER))
            .body(format!("{}\n{}\n", line("shop"), line("bank"))),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(body["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("shop/*"));
    // Forged change events: shippers may not write the audit trail.
    let change = r#"{"ts":1,"kind":"gray_rules","actor":"mallory","project":"shop","env":"prod","scope":"api","from_version":1,"to_version":2,"summary":"forged","touched":""}"#;
    assert_eq!(
        status(
            bare.post(ing("/ingest/v1/changes"))
                .bearer_auth(SHIPPER)
                .body(change)
        )
        .0,
        403
    );
    // Health and metrics stay open.
    assert_eq!(status(bare.get(ing("/health"))).0, 200);

    // Query API: the page is public, the data is not.
    assert_eq!(bare.get(qu("/")).send().unwrap().status().as_u16(), 200);
    assert_eq!(status(bare.get(qu("/api/v1/rank/pools"))).0, 401);
    let viewer = |p: &str| status(bare.get(qu(p)).bearer_auth(SCOPED_VIEWER));
    assert_eq!(viewer("/api/v1/rank/pools").0, 403);
    assert_eq!(viewer("/api/v1/rank/pools?project=bank&env=prod").0, 403);
    let (st, body) = viewer("/api/v1/rank/pools?project=shop&env=prod");
    assert_eq!(st, 200, "{body}");
    let sql = |token: &str| {
        status(
            bare.post(qu("/api/v1/sql"))
                .bearer_auth(token)
                .json(&json!({"sql": "SELECT 1 AS one"})),
        )
    };
    assert_eq!(sql(SCOPED_VIEWER).0, 403);
    assert_eq!(sql(ADMIN).0, 200);
    // SQL that took the process down (repeat allocates outside the memory pool; a deep
    // expression exhausts a stack) or reaches out (table functions) is refused up front.
    let deep = format!("SELECT {}1", "1 + ".repeat(3000));
    for bad in [
        "SELECT length(repeat('x', 1000000000000)) AS n",
        "SELECT * FROM generate_series(1, 1000000000000)",
        "SELECT * FROM system.tables",
        deep.as_str(),
    ] {
        let (st, body) = status(
            bare.post(qu("/api/v1/sql"))
                .bearer_auth(ADMIN)
                .json(&json!({ "sql": bad })),
        );
        assert_eq!(st, 400, "{body}");
    }
    assert_eq!(status(bare.get(qu("/health"))).0, 200);
    // A text/plain POST (what any web page can send without a preflight) is refused.
    assert_eq!(
        status(
            bare.post(qu("/api/v1/sql"))
                .bearer_auth(ADMIN)
                .header("content-type", "text/plain")
                .body("SELECT 1")
        )
        .0,
        415
    );

    // Admin API: the shipper may not read release state.
    assert_eq!(
        status(
            bare.get(format!("http://127.0.0.1:{}/admin/v1/routes", r.admin))
                .bearer_auth(SHIPPER)
        )
        .0,
        403
    );
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[test]
fn first_start_creates_and_prints_an_admin_token() {
    let r = start("", false, &[]);
    let path = r.dir.join("data/auth/admin.token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    wait_until("token printed", Duration::from_secs(5), || {
        std::fs::read_to_string(r.dir.join("stdout")).is_ok_and(|s| s.contains(&token))
    });
    let bare = bare_client();
    let q = |t: Option<&str>| {
        let mut b = bare.get(format!("http://127.0.0.1:{}/api/v1/changes", r.q));
        if let Some(t) = t {
            b = b.bearer_auth(t);
        }
        status(b).0
    };
    assert_eq!(q(None), 401);
    assert_eq!(q(Some(&token)), 200);
    let _ = std::fs::remove_dir_all(&r.dir);
}

/// Slowloris (headers a byte at a time) and stalled bodies on the receivers: the server
/// closes them at its deadlines, and other clients keep their latency meanwhile.
#[test]
fn slow_clients_are_cut_off_and_others_keep_their_latency() {
    use std::io::{Read, Write};
    let r = start(
        "",
        true,
        &[
            ("APUS_HTTP_HEADER_TIMEOUT_MS", "1000"),
            ("APUS_HTTP_BODY_IDLE_MS", "1000"),
        ],
    );
    let addr = format!("127.0.0.1:{}", r.ing);
    // 50 connections that never finish their headers.
    let mut slow: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /ingest/v1/logs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // One that sends its headers, then stalls in the body.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /ingest/v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Length: 1000\r\n\r\n{{\"message\":"
    )
    .unwrap();
    // Meanwhile, a normal client is served promptly.
    let c = client();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let st = c
            .post(format!("http://{addr}/ingest/v1/logs"))
            .body("{\"message\":\"ok\"}\n")
            .send()
            .unwrap()
            .status();
        assert_eq!(st.as_u16(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    // The server has closed every slow connection: reads end (EOF or reset).
    for s in slow.iter_mut().chain(std::iter::once(&mut stalled)) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "connection still open: {e}"
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&r.dir);
}
