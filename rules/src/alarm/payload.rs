//! What goes over the wire: Alertmanager's webhook payload (version 4), so any receiver
//! written for Alertmanager takes Apus's notifications unchanged, and the body of
//! Alertmanager's `POST /api/v2/alerts`, for forwarding to an external Alertmanager.

use serde_json::{json, Map, Value};

use super::dispatch::Notification;
use super::{rfc3339, Alert, Labels};

/// `endsAt` of a firing alert in the webhook payload (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn common(maps: &[&Labels]) -> Labels {
    let Some((first, rest)) = maps.split_first() else {
        return Labels::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn alert_json(a: &Alert, now: i64) -> Value {
    let resolved = a.resolved(now);
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at),
        "endsAt": if resolved { rfc3339(a.ends_at) } else { ZERO_TIME.to_string() },
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint(),
    })
}

/// The webhook payload of a notification.
pub fn webhook_v4(n: &Notification, external_url: &str, now: i64) -> Value {
    let labels: Vec<&Labels> = n.alerts.iter().map(|a| &a.labels).collect();
    let annotations: Vec<&Labels> = n.alerts.iter().map(|a| &a.annotations).collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status(now),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(&labels),
        "commonAnnotations": common(&annotations),
        "externalURL": external_url,
        "alerts": n.alerts.iter().map(|a| alert_json(a, now)).collect::<Vec<_>>(),
    })
}

/// The webhook payload plus `alertsText` (one line per alert), the data a receiver's
/// body template is rendered against.
pub fn template_data(n: &Notification, external_url: &str, now: i64) -> Value {
    let mut v = webhook_v4(n, external_url, now);
    let lines: Vec<String> = n
        .alerts
        .iter()
        .map(|a| {
            let what = a
                .annotations
                .get("summary")
                .cloned()
                .unwrap_or_else(|| a.labels.get("alertname").cloned().unwrap_or_default());
            let state = if a.resolved(now) {
                "RESOLVED"
            } else {
                "FIRING"
            };
            format!("[{state}] {what}")
        })
        .collect();
    if let Value::Object(m) = &mut v {
        m.insert("alertsText".into(), Value::from(lines.join("\n")));
    }
    v
}

/// The body of `POST /api/v2/alerts` for these alerts. Firing alerts carry an `endsAt` of
/// `resend_until` (as Prometheus sets it) so the Alertmanager resolves them by itself if
/// Apus stops resending.
pub fn am_alerts(alerts: &[Alert], now: i64, resend_until: i64) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("labels".into(), json!(a.labels));
                m.insert("annotations".into(), json!(a.annotations));
                m.insert("startsAt".into(), json!(rfc3339(a.starts_at)));
                let end = if a.resolved(now) {
                    a.ends_at
                } else {
                    resend_until
                };
                m.insert("endsAt".into(), json!(rfc3339(end)));
                m.insert("generatorURL".into(), json!(a.generator_url));
                Value::Object(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_payload_has_alertmanagers_shape() {
        let mk = |pool: &str, ends: i64| Alert {
            labels: [("alertname", "E"), ("pool", pool), ("severity", "critical")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), "boom".to_string())].into(),
            starts_at: 1_700_000_000_000_000,
            ends_at: ends,
            generator_url: "http://x/rootcause".into(),
        };
        let n = Notification {
            receiver: "ops".into(),
            group_key: "{0}:{alertname=\"E\"}".into(),
            group_labels: [("alertname".to_string(), "E".to_string())].into(),
            alerts: vec![mk("a", 0), mk("b", 1_700_000_060_000_000)],
        };
        let v = webhook_v4(&n, "http://apus:3000", 1_700_000_100_000_000);
        for k in [
            "version",
            "groupKey",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["commonLabels"]["severity"], "critical");
        assert!(v["commonLabels"].get("pool").is_none());
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_eq!(v["alerts"][0]["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
        let am = am_alerts(&n.alerts, 1_700_000_100_000_000, 1_700_000_160_000_000);
        assert_eq!(am[0]["endsAt"], "2023-11-14T22:16:00Z");
        assert!(template_data(&n, "", 1_700_000_100_000_000)["alertsText"]
            .as_str()
            .unwrap()
            .contains("[RESOLVED] boom"));
    }
}
