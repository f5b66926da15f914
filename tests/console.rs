//! The web console in a real browser: Debian's chromium driven over WebDriver
//! (chromedriver + fantoccini) against `apus run` with data in every table. Every page
//! loads with data and without a script error; a rule flip made on the Release page
//! changes where a tenant's requests land; a rollback made there is in the changes list;
//! a silence made on the Alarms page mutes the alarm. Screenshots of every page land in
//! `target/tmp/console-screenshots/`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::alarms::{alarms_config, rule, traffic};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// chromedriver on a free port, killed on drop.
struct Driver {
    _proc: Proc,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup installs chromium-driver)");
        let c = bare_client();
        wait_until("chromedriver", Duration::from_secs(20), || {
            c.get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        Driver {
            _proc: Proc(child),
            port,
        }
    }

    async fn session(&self, width: u32, height: u32) -> Client {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    format!("--window-size={width},{height}"),
                ],
            }
        });
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

fn shots_dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Wait until page `page` (the hash's first part) says it is rendered (`main[data-ready]`),
/// and return what it says (`page`, `error`, `login`).
async fn ready(c: &Client, page: &str) -> String {
    let start = Instant::now();
    let js = "const m = document.getElementById('view'); \
              return m ? [(m.dataset.page || '').split('/')[0], m.dataset.ready || ''] : ['', ''];";
    loop {
        let v = c.execute(js, vec![]).await.unwrap();
        let (p, r) = (
            v[0].as_str().unwrap_or("").to_string(),
            v[1].as_str().unwrap_or("").to_string(),
        );
        if (p == page || r == "login") && !r.is_empty() {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{page}: the page never finished rendering (at {p}: {r})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Script errors the page recorded (uncaught errors, rejected promises, failed API calls).
async fn errors(c: &Client) -> Vec<String> {
    let v = c.execute("return Apus.errors;", vec![]).await.unwrap();
    serde_json::from_value(v).unwrap_or_default()
}

async fn text(c: &Client) -> String {
    c.find(Locator::Id("view"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Open a page, wait for it, check it has no error, screenshot it; its text.
async fn visit(c: &Client, base: &str, hash: &str, name: &str) -> String {
    c.goto(&format!("{base}/#/{hash}")).await.unwrap();
    // A hash change within the same document does not reload: render runs on hashchange.
    let page = hash.split(['/', '?']).next().unwrap();
    let got = ready(c, page).await;
    let t = text(c).await;
    assert_eq!(got, page, "{name}: {t}");
    let errs = errors(c).await;
    assert!(errs.is_empty(), "{name}: script errors {errs:?}");
    let banners = c.find_all(Locator::Css("#view .err")).await.unwrap();
    let mut shown = Vec::new();
    for b in banners {
        if b.is_displayed().await.unwrap_or(false) {
            shown.push(b.text().await.unwrap_or_default());
        }
    }
    assert!(shown.is_empty(), "{name}: error banners {shown:?}");
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
    t
}

async fn click(c: &Client, css: &str) {
    let start = Instant::now();
    loop {
        match c.find(Locator::Css(css)).await {
            Ok(e) => {
                e.click().await.unwrap();
                return;
            }
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no `{css}`: {e}"),
        }
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Wait until an element matching `css` is displayed; its text.
async fn shown(c: &Client, css: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.is_displayed().await.unwrap_or(false) {
                return e.text().await.unwrap_or_default();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "`{css}` never shown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn slowlog_now() -> String {
    let now = apus_schema::time::now_us();
    let mut s = String::new();
    for (i, (q, t)) in [
        (
            "SELECT * FROM orders WHERE tenant_id = 42 AND status = 'open'",
            1.5,
        ),
        (
            "SELECT * FROM orders WHERE tenant_id = 7 AND status = 'paid'",
            0.7,
        ),
        ("UPDATE stock SET qty = qty - 1 WHERE sku = 'A-1'", 2.5),
    ]
    .iter()
    .enumerate()
    {
        let ts = apus_schema::time::format_rfc3339(now - 60_000_000 + i as i64 * 1_000_000);
        s += &format!(
            "# Time: {ts}\n# User@Host: app[app] @ web-1 [10.0.0.5]  Id:    12\n\
             # Query_time: {t:.6}  Lock_time: 0.000100 Rows_sent: 1  Rows_examined: 100000\n\
             use shop;\nSET timestamp={};\n{q};\n",
            (now / 1_000_000) - 60 + i as i64
        );
    }
    s
}

fn app_logs() -> String {
    let mut out = String::new();
    for i in 0..12 {
        out += &json!({
            "message": format!("payment {i} failed: timeout after 3000 ms"),
            "level": "error", "pool": "stable", "tenant": "initech",
            "exception": "java.net.SocketTimeoutException",
            "request_id": format!("req-{i}"),
        })
        .to_string();
        out.push('\n');
        out += &json!({"message": format!("order {i} placed"), "level": "info", "pool": "stable",
                       "tenant": "acme", "request_id": format!("req-{i}")})
        .to_string();
        out.push('\n');
    }
    out
}

#[test]
fn console_pages_work_in_a_real_browser() {
    let gray_port = free_port();
    let _gray = upstream(gray_port, "gray-1");
    let hook = Hook::start();
    let cfg = alarms_config(&hook, "");
    let rules = rule("30s");
    let gray_pool =
        format!("[[gateway.pools]]\nname = \"gray\"\nservers = [\"127.0.0.1:{gray_port}\"]\n");
    let run = AllInOne::start(RunOpts {
        access_log: "in-process",
        config_token: true,
        query_extra: &cfg,
        files: &[("alarms/shop.toml", &rules)],
        gateway_extra: &gray_pool,
        ..Default::default()
    });
    let c = client();
    // Data in every table: traffic (some failing), application logs, a slow log.
    traffic(&run, "acme", 200, 30);
    traffic(&run, "initech", 500, 20);
    let ing = |path: &str, body: String| {
        let r = c
            .post(format!("http://127.0.0.1:{}{path}", run.ing))
            .bearer_auth(ADMIN)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}: {}", r.text().unwrap());
    };
    ing("/ingest/v1/logs?project=shop&env=prod", app_logs());
    ing(
        "/ingest/v1/slowlog?project=shop&env=prod&pool=stable",
        slowlog_now(),
    );
    let q = |path: &str| -> Value {
        c.get(run.query_url(path))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    wait_until("rows queryable", Duration::from_secs(15), || {
        q("/api/v1/slow-sql/top?from=now-10m")["rows"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
            && q("/api/v1/logs/search?from=now-10m&q=timeout")["total"]
                .as_u64()
                .is_some_and(|n| n > 0)
    });
    wait_until("the alarm fires", Duration::from_secs(15), || {
        q("/api/v1/alarms?state=firing")["active"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", run.q);
    let browser = rt.block_on(driver.session(1280, 800));

    // Without a token the console asks for one.
    rt.block_on(async {
        browser.goto(&format!("{base}/#/overview")).await.unwrap();
        assert_eq!(ready(&browser, "overview").await, "login");
        fill(&browser, "#token", ADMIN).await;
        click(&browser, "#loginf button").await;
        assert_eq!(ready(&browser, "overview").await, "overview");
    });

    // Every page, with data, without errors.
    let range = "from=now-15m&to=now";
    let pages: &[(&str, &str, &[&str])] = &[
        ("overview", "overview", &["Requests by lane", "Pools, gray beside stable"]),
        ("dashboards", "dashboards", &["overview", "traffic", "database"]),
        ("dashboards/database", "dashboard-database", &["Slow statements"]),
        ("slowsql", "slowsql", &["SELECT * FROM orders", "UPDATE stock"]),
        ("exceptions", "exceptions", &["SocketTimeoutException"]),
        ("logs?q=timeout", "logs", &["payment", "req-"]),
        ("changes", "changes", &["Change timeline"]),
        ("rootcause", "rootcause", &["Suspects", "Layers"]),
        ("sql?sql=SELECT%20tenant%2C%20count(*)%20AS%20n%20FROM%20access_log%20GROUP%20BY%20tenant", "sql", &["initech", "acme"]),
        ("routes", "routes", &["api", "gray"]),
        ("release/api", "release", &["api"]),
        ("rollouts", "rollouts", &["Rollouts"]),
        ("alarms", "alarms", &["ApiErrors", "firing"]),
        ("config", "config", &["Config"]),
    ];
    for (hash, name, expect) in pages {
        let sep = if hash.contains('?') { '&' } else { '?' };
        let t = rt.block_on(visit(&browser, &base, &format!("{hash}{sep}{range}"), name));
        for e in *expect {
            assert!(t.contains(e), "{name}: no `{e}` in {t}");
        }
    }
    // A slow-SQL fingerprint's and a template's detail pages, reached by clicking.
    rt.block_on(async {
        browser
            .goto(&format!("{base}/#/slowsql?{range}"))
            .await
            .unwrap();
        ready(&browser, "slowsql").await;
        click(&browser, "#view table tbody tr td a[href*='slowsql/']").await;
        shown(&browser, "#fp-calls svg").await;
        let t = text(&browser).await;
        assert!(t.contains("Slowest sample") && t.contains("Calls"), "{t}");
        assert!(errors(&browser).await.is_empty());
        let png = browser.screenshot().await.unwrap();
        std::fs::write(shots_dir().join("slowsql-detail.png"), png).unwrap();
    });

    // A rule flip from the Release page: acme's requests go to the gray pool.
    let lands = |tenant: &str| get(&c, &run.url("/x"), &[("x-tenant-id", tenant)]).1;
    assert_eq!(lands("acme"), "stable-1");
    rt.block_on(async {
        browser
            .goto(&format!("{base}/#/release/api?{range}"))
            .await
            .unwrap();
        ready(&browser, "release").await;
        // An invalid rule is refused inline, naming the problem, and cannot be applied.
        fill(
            &browser,
            "#rules-editor",
            r#"[{"name": "beta", "pool": "nowhere", "tenants": ["acme"]}]"#,
        )
        .await;
        click(&browser, "#rules-preview").await;
        let err = shown(&browser, "#rules-error").await;
        assert!(err.contains("nowhere"), "{err}");
        fill(
            &browser,
            "#rules-editor",
            r#"[{"name": "beta", "pool": "gray", "tenants": ["acme"]}]"#,
        )
        .await;
        click(&browser, "#rules-preview").await;
        let diff = shown(&browser, "#rules-diff").await;
        assert!(diff.contains("acme"), "{diff}");
        fill(&browser, "#rules-reason", "beta for acme (console test)").await;
        click(&browser, "#rules-apply").await;
    });
    wait_until("acme lands on gray", Duration::from_secs(10), || {
        lands("acme") == "gray-1"
    });
    assert_eq!(lands("initech"), "stable-1");

    // A rollback from the page (to version 1) is in the changes list.
    rt.block_on(async {
        browser
            .goto(&format!("{base}/#/release/api?{range}"))
            .await
            .unwrap();
        ready(&browser, "release").await;
        click(&browser, "[data-action=rollback][data-version='1']").await;
        // The dialog shows what the rollback would change (a dry run) before it is applied.
        let what = shown(&browser, "#rollback-summary").await;
        assert!(!what.is_empty());
        fill(&browser, "#reason", "undo the beta (console test)").await;
        click(&browser, "#dlgok").await;
    });
    wait_until("acme back on stable", Duration::from_secs(10), || {
        lands("acme") == "stable-1"
    });
    wait_until(
        "the rollback is a change row",
        Duration::from_secs(10),
        || {
            q("/api/v1/changes?from=now-15m&kind=rollback")["rows"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );
    let t = rt.block_on(visit(
        &browser,
        &base,
        &format!("changes?{range}"),
        "changes-after",
    ));
    assert!(t.contains("rollback"), "{t}");

    // A silence made on the Alarms page mutes the firing alarm.
    rt.block_on(async {
        browser
            .goto(&format!("{base}/#/alarms?{range}"))
            .await
            .unwrap();
        ready(&browser, "alarms").await;
        click(&browser, "[data-action=silence]").await;
        shown(&browser, "dialog[open]").await;
        fill(
            &browser,
            "#silence-comment",
            "known: initech's outage (console test)",
        )
        .await;
        click(&browser, "#dlgok").await;
    });
    wait_until("the alarm is silenced", Duration::from_secs(10), || {
        q("/api/v2/silences").as_array().is_some_and(|s| {
            s.iter()
                .any(|x| x["comment"].as_str().unwrap_or("").contains("console test"))
        }) && q("/api/v1/alarms?state=firing")["active"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["silenced"] == true))
    });
    rt.block_on(async {
        let t = visit(
            &browser,
            &base,
            &format!("alarms?{range}"),
            "alarms-silenced",
        )
        .await;
        assert!(t.contains("console test"), "{t}");
    });

    // A phone-width window renders the same pages.
    rt.block_on(async {
        browser.close().await.unwrap();
        let phone = driver.session(390, 844).await;
        phone
            .goto(&format!("{base}/#/overview?{range}&token={ADMIN}"))
            .await
            .unwrap();
        assert_eq!(ready(&phone, "overview").await, "overview");
        assert!(errors(&phone).await.is_empty());
        let png = phone.screenshot().await.unwrap();
        std::fs::write(shots_dir().join("overview-phone.png"), png).unwrap();
        phone.close().await.unwrap();
    });
}
