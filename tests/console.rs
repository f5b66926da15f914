//! The web console in a real browser: Debian's chromium driven over WebDriver
//! (chromedriver + fantoccini) against `apus run` with data in every table. Every page
//! loads with data and without a script error; a rule flip made on the Release page
//! changes where a tenant's requests land; a rollback made there is in the changes list;
//! a silence made on the Alarms page mutes the alarm. Screenshots of every page land in
//! `target/tmp/console-screenshots/`.

mod common;

use std::time::Duration;

use common::alarms::{alarms_config, rule, traffic};
use common::browser::*;
use common::*;
use serde_json::{json, Value};

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
        // (It reads "Checking…" while the server's dry run is under way.)
        let err = shown_with(&browser, "#rules-error", "nowhere").await;
        assert!(err.contains("nowhere"), "{err}");
        fill(
            &browser,
            "#rules-editor",
            r#"[{"name": "beta", "pool": "gray", "tenants": ["acme"]}]"#,
        )
        .await;
        click(&browser, "#rules-preview").await;
        let diff = shown_with(&browser, "#rules-diff", "acme").await;
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

/// What release managers and viewers do on the console, each with their own token: a
/// viewer sees no button that changes anything; a release manager sees only the routes of
/// their scopes; a change to a protected env made on the page waits for an approval given
/// on the page by someone else, then routes; a config file is created and published from
/// the page and served to clients; a rollout is started and aborted from the page.
#[test]
fn release_managers_and_viewers_on_the_console() {
    let gray_port = free_port();
    let _gray = upstream(gray_port, "gray-1");
    let tokens = format!(
        "{TOKENS}\n[[tokens]]\nname = \"dave\"\ntoken = \"{STAGE_RM}\"\nrole = \"release_manager\"\nscopes = [\"shop/stage\"]\n"
    );
    let extra = format!(
        r#"[[gateway.pools]]
name = "gray"
servers = ["127.0.0.1:{gray_port}"]

[[gateway.routes]]
name = "web"
project = "shop"
env = "stage"
path_prefix = "/web"
stable_pool = "stable"
tenant_sources = [{{ header = "x-tenant-id" }}]

[gateway.approvals]
stage = 1
"#
    );
    let run = AllInOne::start(RunOpts {
        access_log: "in-process",
        tokens_file: &tokens,
        gateway_extra: &extra,
        ..Default::default()
    });
    let c = client();
    let admin_get = |path: &str| -> Value {
        c.get(format!("http://127.0.0.1:{}{path}", run.admin))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let lands = |path: &str, tenant: &str| get(&c, &run.url(path), &[("x-tenant-id", tenant)]).1;
    assert_eq!(lands("/web/x", "acme"), "stable-1");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let driver = Driver::start();
    let base = format!("http://127.0.0.1:{}", run.q);
    let range = "from=now-15m&to=now";

    // A viewer reads every release page but has nothing to click that changes anything.
    rt.block_on(async {
        let v = session_as(&driver, &base, VIEWER, "overview").await;
        for (page, forbidden) in [
            (
                "release/api",
                "#rules-apply, #rules-editor, [data-action=rollback]",
            ),
            ("routes", "[data-action=drain], [data-action=undrain]"),
            ("rollouts", "#rollout-start, #release-start"),
            ("config", "#new-config"),
            ("alarms", "#new-silence, [data-action=silence]"),
        ] {
            let name = format!("viewer-{}", page.replace('/', "-"));
            visit(&v, &base, &format!("{page}?{range}"), &name).await;
            assert!(
                !any(&v, forbidden).await,
                "a viewer sees {forbidden} on {page}"
            );
        }
        v.close().await.unwrap();
    });

    // An admin proposes a rule change to the protected env from the Release page.
    rt.block_on(async {
        let a = session_as(&driver, &base, ADMIN, "overview").await;
        visit(&a, &base, &format!("release/web?{range}"), "release-web").await;
        fill(
            &a,
            "#rules-editor",
            r#"[{"name": "beta", "pool": "gray", "tenants": ["acme"]}]"#,
        )
        .await;
        click(&a, "#rules-preview").await;
        shown_with(&a, "#rules-diff", "acme").await;
        fill(&a, "#rules-reason", "beta for acme on stage (console test)").await;
        click(&a, "#rules-apply").await;
        a.close().await.unwrap();
    });
    wait_until(
        "the change waits for approval",
        Duration::from_secs(10),
        || {
            admin_get("/admin/v1/pending")["pending"]
                .as_array()
                .is_some_and(|p| p.len() == 1)
        },
    );
    assert_eq!(
        lands("/web/x", "acme"),
        "stable-1",
        "applied before approval"
    );

    // The stage release manager sees only stage's route, and approves the change there.
    rt.block_on(async {
        let d = session_as(&driver, &base, STAGE_RM, "overview").await;
        visit(
            &d,
            &base,
            &format!("release/web?{range}"),
            "release-approve",
        )
        .await;
        let routes = d
            .execute(
                "return [...document.querySelectorAll('#release-route option')].map(o => o.value);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(routes, json!(["web"]), "a stage RM's routes");
        confirm(
            &d,
            "[data-action=approve]",
            "looked at the diff (console test)",
        )
        .await;
        d.close().await.unwrap();
    });
    wait_until(
        "acme on stage lands on gray",
        Duration::from_secs(10),
        || lands("/web/x", "acme") == "gray-1",
    );
    assert_eq!(lands("/x", "acme"), "stable-1", "prod's route is untouched");

    // A config file made and published from the Config page reaches its clients; a rollout
    // started from the Rollouts page is aborted from there.
    rt.block_on(async {
        let a = session_as(&driver, &base, ADMIN, "overview").await;
        visit(&a, &base, &format!("config?{range}"), "config-empty").await;
        click(&a, "#new-config").await;
        shown(&a, "dialog[open] #cfg-new-path").await;
        for (id, v) in [
            ("#cfg-new-project", "shop"),
            ("#cfg-new-env", "prod"),
            ("#cfg-new-pool", "stable"),
            ("#cfg-new-path", "application.yaml"),
            ("#cfg-new-content", "timeout_ms: 3000\nretries: 2\n"),
            ("#reason", "first config (console test)"),
        ] {
            fill(&a, id, v).await;
        }
        click(&a, "#dlgok").await;
        ready(&a, "config").await;
        confirm(&a, "[data-action=publish]", "publish it (console test)").await;
        ready(&a, "config").await;
        let t = text(&a).await;
        assert!(t.contains("application.yaml"), "{t}");

        visit(
            &a,
            &base,
            &format!("rollouts?route=api&{range}"),
            "rollouts-empty",
        )
        .await;
        click(&a, "#rollout-start").await;
        shown(&a, "dialog[open] #rollout-spec").await;
        fill(&a, "#reason", "canary api (console test)").await;
        click(&a, "#dlgok").await;
        shown(&a, "article.rollout [data-action=abort]").await;
        confirm(
            &a,
            "article.rollout [data-action=abort]",
            "stop it (console test)",
        )
        .await;
        a.close().await.unwrap();
    });
    let served: Value = c
        .get(format!(
            "http://127.0.0.1:{}/config/v1/shop/prod/stable/application.yaml",
            run.admin
        ))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        served["content"]
            .as_str()
            .is_some_and(|s| s.contains("timeout_ms: 3000")),
        "{served}"
    );
    wait_until("the rollout is aborted", Duration::from_secs(10), || {
        admin_get("/admin/v1/rollouts")["rollouts"]
            .as_object()
            .is_some_and(|r| {
                r.len() == 1
                    && r.values()
                        .all(|x| x["progress"].to_string().contains("\"aborted\""))
            })
    });
}

const STAGE_RM: &str = "rm-stage-token-0001";
