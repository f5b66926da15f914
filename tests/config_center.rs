//! The config center end to end: a real gateway (embedded log, and a fleet store on a real
//! etcd), release managers' API, signed clients, and `apus config watch` processes that
//! follow gray releases, promotions, rollbacks and a server restart.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY: &str = "web-key";
const SECRET: &str = "0123456789abcdef-web-secret";

fn body() -> String {
    format!(
        r#"config_long_poll_secs = 5

[approvals]
staging = 1

[[config_access_keys]]
key = "{KEY}"
secret = "{SECRET}"
project = "shop"
env = "prod"

[[tokens]]
name = "dave"
token = "rm-staging-token-01"
role = "release_manager"
scopes = ["shop/staging"]

[[pools]]
name = "stable"
servers = ["127.0.0.1:{}"]

[[routes]]
name = "api"
project = "shop"
env = "prod"
stable_pool = "stable"
"#,
        free_port()
    )
}

struct Api<'a> {
    gw: &'a Gateway,
    c: reqwest::blocking::Client,
}

impl Api<'_> {
    fn send(&self, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = self.gw.admin_url(path);
        let rb = match method {
            "PUT" => self.c.put(url),
            "POST" => self.c.post(url),
            _ => self.c.get(url),
        }
        .bearer_auth(token);
        let rb = match body {
            Some(b) => rb.json(&b),
            None => rb,
        };
        let r = rb.send().unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    }
    fn draft(&self, key: &str, body: Value) -> (u16, Value) {
        self.send(
            "PUT",
            ADMIN,
            &format!("/admin/v1/config/files/{key}"),
            Some(body),
        )
    }
    fn act(&self, token: &str, verb: &str, key: &str, body: Value) -> (u16, Value) {
        self.send(
            "POST",
            token,
            &format!("/admin/v1/config/{verb}/{key}"),
            Some(body),
        )
    }
    fn release(&self, key: &str, content: &str, ct: &str) {
        let (st, v) = self.draft(key, json!({"content": content, "content_type": ct}));
        assert_eq!(st, 200, "{v}");
        let (st, v) = self.act(ADMIN, "publish", key, json!({"reason": "test"}));
        assert_eq!(st, 200, "{v}");
    }
    fn show(&self, token: &str, key: &str) -> Value {
        let (st, v) = self.send("GET", token, &format!("/admin/v1/config/files/{key}"), None);
        assert_eq!(st, 200, "{v}");
        v
    }
    /// A signed client GET (`skew_ms` moves its clock; `sign_path` signs another path).
    fn client(&self, path_and_query: &str, skew_ms: i64, sign_path: Option<&str>) -> (u16, Value) {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + skew_ms;
        let sig = apus_gateway::confcenter::sign::signature(
            SECRET,
            ts,
            sign_path.unwrap_or(path_and_query),
        );
        let r = self
            .c
            .get(self.gw.admin_url(path_and_query))
            .header("authorization", format!("Apus {KEY}:{sig}"))
            .header("timestamp", ts.to_string())
            .send()
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    }
}

#[test]
fn files_inherit_publish_roll_back_and_refuse_bad_input() {
    let gw = Gateway::start(&body());
    let api = Api {
        gw: &gw,
        c: bare_client(),
    };
    let base = "common/prod/all/base.properties";
    let app = "shop/prod/web/app.properties";
    // An unknown global is refused, naming it; once defined, the file publishes.
    let (st, v) = api.draft(base, json!({"content": "db.host = a\ndb.port = 3306\ntimeout = ${global.timeout}\n", "content_type": "properties"}));
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("global.timeout"),
        "{v}"
    );
    let (st, v) = api.send(
        "PUT",
        ADMIN,
        "/admin/v1/config/globals/common/prod",
        Some(json!({"vars": {"timeout": "5s"}})),
    );
    assert_eq!(st, 200, "{v}");
    api.release(
        base,
        "db.host = a\ndb.port = 3306\ntimeout = ${global.timeout}\n",
        "properties",
    );
    let (st, v) = api.draft(app, json!({"content": "db.host = b\ndb.password = hunter2\n", "content_type": "properties", "parent": base}));
    assert_eq!(st, 200, "{v}");
    let (st, _) = api.act(ADMIN, "publish", app, json!({"reason": "first"}));
    assert_eq!(st, 200);
    // A signed client gets the effective content, then 304 with its release key.
    let path = format!("/config/v1/{app}");
    let (st, v) = api.client(&path, 0, None);
    assert_eq!(st, 200, "{v}");
    let content = v["content"].as_str().unwrap();
    assert_eq!(
        content,
        "db.host=b\ndb.port=3306\ntimeout=5s\ndb.password=hunter2\n"
    );
    let k1 = v["release_key"].as_str().unwrap().to_string();
    assert_eq!((v["fv"].as_u64(), v["pv"].as_u64()), (Some(1), Some(0)));
    let (st, _) = api.client(&format!("{path}?release={k1}"), 0, None);
    assert_eq!(st, 304);
    // Signatures: skewed, for another path, unknown key, other project → 401.
    assert_eq!(api.client(&path, -120_000, None).0, 401);
    assert_eq!(
        api.client(&path, 0, Some("/config/v1/shop/prod/web/other.properties"))
            .0,
        401
    );
    let (st, v) = api.client("/config/v1/bank/prod/web/app.properties", 0, None);
    assert_eq!(st, 401, "{v}");
    assert_eq!(
        bare_client()
            .get(gw.admin_url(&path))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    // A viewer sees secrets masked, through the client API too; the admin does not.
    let r = bare_client()
        .get(gw.admin_url(&path))
        .bearer_auth(VIEWER)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    assert!(!text.contains("hunter2") && text.contains("****"), "{text}");
    let shown = api.show(VIEWER, app);
    assert!(
        shown["effective"]
            .as_str()
            .unwrap()
            .contains("db.password = ****")
            || shown["effective"]
                .as_str()
                .unwrap()
                .contains("db.password= ****"),
        "{shown}"
    );
    assert!(!shown.to_string().contains("hunter2"), "{shown}");
    assert!(api.show(ADMIN, app).to_string().contains("hunter2"));
    // Editing the parent re-publishes the child (PV + 1) and reaches its clients.
    api.release(
        base,
        "db.host = a\ndb.port = 3307\ntimeout = ${global.timeout}\n",
        "properties",
    );
    let shown = api.show(ADMIN, app);
    assert_eq!(
        (shown["fv"].as_u64(), shown["pv"].as_u64()),
        (Some(1), Some(1)),
        "{shown}"
    );
    assert_eq!(shown["current"]["kind"], "republish");
    let (st, v) = api.client(&format!("{path}?release={k1}"), 0, None);
    assert_eq!(st, 200);
    assert!(v["content"].as_str().unwrap().contains("db.port=3307"));
    // A global change re-publishes too.
    let (st, v) = api.send(
        "PUT",
        ADMIN,
        "/admin/v1/config/globals/common/prod",
        Some(json!({"vars": {"timeout": "9s"}})),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("2 file(s) re-published")
            || api.show(ADMIN, app)["pv"] == 2,
        "{v}"
    );
    assert!(api.client(&path, 0, None).1["content"]
        .as_str()
        .unwrap()
        .contains("timeout=9s"));
    let (st, v) = api.send("GET", ADMIN, &format!("/admin/v1/config/tree/{base}"), None);
    assert_eq!(st, 200);
    assert!(v["descendants"][app].is_object(), "{v}");
    // Bad input: invalid JSON (line and column), unknown parent, a cycle, too large, not UTF-8.
    let (st, v) = api.draft(
        "shop/prod/web/x.json",
        json!({"content": "{\n  \"a\": }\n", "content_type": "json"}),
    );
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("line 2"), "{v}");
    let (st, v) = api.draft("shop/prod/web/y.properties", json!({"content": "a=1", "content_type": "properties", "parent": "shop/prod/web/nope.properties"}));
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("unknown parent"),
        "{v}"
    );
    api.release("shop/prod/web/a.properties", "a=1\n", "properties");
    let (st, _) = api.draft("shop/prod/web/b.properties", json!({"content": "b=1", "content_type": "properties", "parent": "shop/prod/web/a.properties"}));
    assert_eq!(st, 200);
    api.act(ADMIN, "publish", "shop/prod/web/b.properties", json!({}));
    let (st, v) = api.draft(
        "shop/prod/web/a.properties",
        json!({"content": "a=2", "parent": "shop/prod/web/b.properties"}),
    );
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("cycle"), "{v}");
    let big = vec![b'x'; 6 << 20];
    let r = bare_client()
        .put(gw.admin_url("/admin/v1/config/files/shop/prod/web/big.txt?content_type=text"))
        .bearer_auth(ADMIN)
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let r = bare_client()
        .put(gw.admin_url("/admin/v1/config/files/shop/prod/web/bin.txt?content_type=text"))
        .bearer_auth(ADMIN)
        .body(b"ok\nbad \xff here".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("line 2, column 5"));
    // A stale edit conflicts with the current FV.
    let (st, v) = api.draft(app, json!({"content": "x=1", "base_fv": 0}));
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("FV 1"), "{v}");
    // A draft made before the file moved on is not published over it.
    assert_eq!(
        api.draft(app, json!({"content": "db.host = stale\n"})).0,
        200
    );
    let (st, v) = api.act(ADMIN, "rollback", app, json!({"release": 1}));
    assert_eq!(st, 200, "{v}");
    let (st, v) = api.act(ADMIN, "publish", app, json!({}));
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("save it again"),
        "{v}"
    );
    // Diff and rollback.
    let (st, v) = api.send(
        "GET",
        ADMIN,
        &format!("/admin/v1/config/diff?a={app}@1&b={app}"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["diff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "- db.port=3306"),
        "{v}"
    );
    assert!(
        v["diff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "+ db.port=3307"),
        "{v}"
    );
    api.release(app, "db.host = c\n", "properties");
    let (st, v) = api.act(
        ADMIN,
        "rollback",
        app,
        json!({"release": 1, "reason": "c was wrong"}),
    );
    assert_eq!(st, 200, "{v}");
    let v = api.client(&path, 0, None).1;
    assert!(v["content"].as_str().unwrap().contains("db.host=b"), "{v}");
    assert_eq!(v["fv"], 4);
    // A protected env needs a publisher other than the editor.
    let st_key = "shop/staging/web/a.txt";
    assert_eq!(
        api.draft(st_key, json!({"content": "v1", "content_type": "text"}))
            .0,
        200
    );
    let (st, v) = api.act(ADMIN, "publish", st_key, json!({}));
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("protected"), "{v}");
    assert_eq!(
        api.act("rm-staging-token-01", "publish", st_key, json!({}))
            .0,
        200
    );
    // Every change is audited in the change log.
    let (_, ch) = api.send("GET", ADMIN, "/admin/v1/changes", None);
    let kinds: Vec<&str> = ch["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    for k in ["config_draft", "config_release", "config_globals"] {
        assert!(kinds.contains(&k), "{k}: {kinds:?}");
    }
}

/// One `apus config watch` process.
struct Watcher {
    child: Child,
    dir: std::path::PathBuf,
}

impl Watcher {
    fn start(admin: u16, dir: &std::path::Path, labels: &str) -> Watcher {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("watch.log")).unwrap();
        let child = Command::new(BIN)
            .args([
                "config",
                "watch",
                "--server",
                &format!("http://127.0.0.1:{admin}"),
            ])
            .args(["--project", "shop", "--env", "prod", "--pool", "web"])
            .args([
                "--file",
                "app.properties",
                "--labels",
                labels,
                "--poll-secs",
                "5",
            ])
            .args(["--key", KEY])
            .arg("--dir")
            .arg(dir.join("conf"))
            .arg("--reload")
            .arg(format!("echo reload >> {}", dir.join("reloads").display()))
            .env("APUS_CONFIG_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Watcher {
            child,
            dir: dir.to_path_buf(),
        }
    }
    fn content(&self) -> String {
        std::fs::read_to_string(self.dir.join("conf/app.properties")).unwrap_or_default()
    }
    fn reloads(&self) -> usize {
        std::fs::read_to_string(self.dir.join("reloads"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn both(a: &Watcher, b: &Watcher, want: &str) {
    let t0 = Instant::now();
    while !(a.content().contains(want) && b.content().contains(want)) {
        if t0.elapsed() > Duration::from_secs(20) {
            let log =
                |w: &Watcher| std::fs::read_to_string(w.dir.join("watch.log")).unwrap_or_default();
            panic!(
                "both clients at {want}: A has {:?}, B has {:?}\nA: {}\nB: {}",
                a.content(),
                b.content(),
                log(a),
                log(b)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_reloads(a: &Watcher, b: &Watcher, want: (usize, usize)) {
    let t0 = Instant::now();
    while (a.reloads(), b.reloads()) != want {
        if t0.elapsed() > Duration::from_secs(10) {
            panic!(
                "reloads: want {want:?}, have {:?}",
                (a.reloads(), b.reloads())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_clients_follow_gray_promote_rollback_and_a_restart_on_etcd() {
    let etcd_dir = TempDir::new("apus-etcd-config");
    let etcd = Etcd::start(etcd_dir.path());
    let dir = TempDir::new("apus-config-watch");
    let (port, admin) = (free_port(), free_port());
    let url = etcd.url("config-test");
    let cfg = body();
    std::fs::create_dir_all(dir.path().join("gw")).unwrap();
    let mut gw = Gateway::start_in(
        &cfg,
        &dir.path().join("gw"),
        port,
        admin,
        &["--control", &url],
    );
    let key = "shop/prod/web/app.properties";
    {
        let api = Api {
            gw: &gw,
            c: bare_client(),
        };
        api.release(key, "color = blue\n", "properties");
    }
    let a = Watcher::start(admin, &dir.path().join("a"), "zone=a");
    let b = Watcher::start(admin, &dir.path().join("b"), "zone=b");
    both(&a, &b, "blue");
    // The client writes the file, then runs the reload command: wait for the command.
    wait_reloads(&a, &b, (1, 1));
    let api = Api {
        gw: &gw,
        c: bare_client(),
    };
    // A gray release to zone=a reaches only A, quickly (long poll).
    assert_eq!(api.draft(key, json!({"content": "color = green\n"})).0, 200);
    let t0 = Instant::now();
    let (st, v) = api.act(
        ADMIN,
        "gray",
        key,
        json!({"target": {"labels": {"zone": "a"}}, "reason": "try green"}),
    );
    assert_eq!(st, 200, "{v}");
    wait_until("A on the gray release", Duration::from_secs(10), || {
        a.content().contains("green")
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "notified in {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(b.content().contains("blue"), "B is not in the gray set");
    // Promote reaches both; rollback reaches both.
    assert_eq!(api.act(ADMIN, "promote", key, json!({})).0, 200);
    both(&a, &b, "green");
    assert_eq!(
        api.act(ADMIN, "rollback", key, json!({"release": 1})).0,
        200
    );
    both(&a, &b, "blue");
    // Each saw blue, green, blue once: the promoted release is the gray one A already had.
    wait_reloads(&a, &b, (3, 3));
    std::thread::sleep(Duration::from_millis(500));
    let reloads = (a.reloads(), b.reloads());
    assert_eq!(reloads, (3, 3), "no extra reload after the last change");
    // The server goes away: the clients keep their files and reload nothing.
    gw.proc.0.kill().unwrap();
    let _ = gw.proc.0.wait();
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.content().contains("blue") && b.content().contains("blue"));
    assert_eq!((a.reloads(), b.reloads()), reloads);
    // Back, on the same etcd: a release made now reaches both.
    gw = Gateway::start_in(
        &cfg,
        &dir.path().join("gw"),
        port,
        admin,
        &["--control", &url],
    );
    let api = Api {
        gw: &gw,
        c: bare_client(),
    };
    api.release(key, "color = red\n", "properties");
    both(&a, &b, "red");
}
