//! Helpers of the alarm tests (`tests/alarms.rs`, `tests/alarm_peers.rs`): rule files,
//! the `[query.alarms]` config, traffic, and reading webhook payloads.

use serde_json::Value;

use super::{bare_client, client, AllInOne, Hook};

/// An error-rate rule per pool and tenant over a short window.
pub fn rule(window: &str) -> String {
    format!(
        r#"
[[rule]]
name = "ApiErrors"
project = "shop"
env = "prod"
severity = "critical"
kind = "error_rate"
group_by = ["pool", "tenant"]
window = "{window}"
min_requests = 5
condition = "> 0.5"
labels = {{ team = "payments" }}
annotations = {{ summary = "{{{{ $labels.pool }}}} fails {{{{ $value }}}} of the requests of {{{{ $labels.tenant }}}}" }}
"#
    )
}

pub fn alarms_config(hook: &Hook, extra: &str) -> String {
    format!(
        r#"
[query.alarms]
rules_dir = "alarms"
interval = "500ms"
{extra}

[[query.alarms.receivers]]
name = "hook"
url = "{}"

[query.alarms.route]
receiver = "hook"
group_by = ["alertname", "pool", "tenant"]
group_wait = "100ms"
group_interval = "1s"
"#,
        hook.url("/alert")
    )
}

/// Requests through the gateway for `tenant`, answered with `status`.
pub fn traffic(run: &AllInOne, tenant: &str, status: u16, n: usize) {
    let c = bare_client();
    for _ in 0..n {
        let r = c
            .get(run.url(&format!("/pay?status={status}")))
            .header("x-tenant-id", tenant)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
    }
}

/// What any Alertmanager webhook receiver reads of a payload: (status, alerts as
/// (status, alertname, tenant)). Both Apus's and Alertmanager's payloads go through it.
pub fn read_v4(body: &str) -> (String, Vec<(String, String, String)>) {
    let v: Value = serde_json::from_str(body).expect("webhook body is JSON");
    assert_eq!(v["version"], "4", "{v}");
    for k in [
        "groupKey",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ] {
        assert!(v.get(k).is_some(), "payload lacks `{k}`: {v}");
    }
    let alerts = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            for k in [
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "generatorURL",
                "fingerprint",
            ] {
                assert!(a.get(k).is_some(), "alert lacks `{k}`: {a}");
            }
            (
                a["status"].as_str().unwrap().to_string(),
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["labels"]["tenant"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (v["status"].as_str().unwrap().to_string(), alerts)
}

/// Payloads received for `tenant` with overall `status`.
pub fn pages(hook: &Hook, tenant: &str, status: &str) -> Vec<Value> {
    hook.received()
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|v| v["status"] == status && v["groupLabels"]["tenant"] == tenant)
        .collect()
}

pub fn get_json(url: &str) -> Value {
    client().get(url).send().unwrap().json().unwrap()
}

/// Access-log rows for `tenant` answered 500, now, as JSON lines.
pub fn error_rows(tenant: &str, n: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    (0..n)
        .map(|i| {
            serde_json::to_string(&apus_schema::AccessRecord {
                ts: apus_schema::Micros(now + i as i64),
                project: "shop".into(),
                env: "prod".into(),
                route: "api".into(),
                pool: "stable".into(),
                tag: "stable".into(),
                tenant: tenant.into(),
                status: 500,
                latency_us: 1000,
                ..Default::default()
            })
            .unwrap()
                + "\n"
        })
        .collect()
}
