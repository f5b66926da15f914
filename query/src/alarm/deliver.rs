//! Delivery: one worker and one bounded queue per receiver (a receiver that is down never
//! blocks the others), retries with exponential backoff, and counters of what was sent,
//! retried and given up on.

use std::collections::BTreeMap;
use std::time::Duration;

use apus_rules::alarm::template::{json_escape, render};
use apus_rules::alarm::{payload, Alert, Notification};
use tokio::sync::mpsc;

use super::config::ReceiverConfig;

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub url: String,
    pub body: String,
    pub content_type: String,
    pub bearer: Option<String>,
}

/// Notifications queued per receiver before new ones are refused (and counted).
const QUEUE: usize = 256;
/// Attempts per notification: 1 + retries at 0.5, 1, 2, 4, 8 s.
const ATTEMPTS: u32 = 6;

/// The senders of every receiver and Alertmanager.
pub struct Deliverer {
    receivers: BTreeMap<String, (ReceiverConfig, mpsc::Sender<Outgoing>)>,
    alertmanagers: Vec<(String, mpsc::Sender<Outgoing>)>,
    external_url: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

fn spawn_worker(name: String, kind: &'static str) -> mpsc::Sender<Outgoing> {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(QUEUE);
    let http = client();
    tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=ATTEMPTS {
                let mut req = http
                    .post(&o.url)
                    .header("content-type", &o.content_type)
                    .header("user-agent", "apus-alarms")
                    .body(o.body.clone());
                if let Some(b) = &o.bearer {
                    req = req.bearer_auth(b);
                }
                let result = match req.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => {
                        metrics::counter!("apus_alarm_notifications_total", "receiver" => name.clone(), "kind" => kind, "result" => "sent").increment(1);
                        break;
                    }
                    Err(e) if attempt == ATTEMPTS => {
                        metrics::counter!("apus_alarm_notifications_total", "receiver" => name.clone(), "kind" => kind, "result" => "failed").increment(1);
                        tracing::error!(receiver = %name, error = %e, attempts = attempt, "alarm notification given up");
                    }
                    Err(e) => {
                        metrics::counter!("apus_alarm_notifications_total", "receiver" => name.clone(), "kind" => kind, "result" => "retried").increment(1);
                        tracing::warn!(receiver = %name, error = %e, attempt, "alarm notification failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(8));
                    }
                }
            }
        }
    });
    tx
}

fn enqueue(tx: &mpsc::Sender<Outgoing>, name: &str, o: Outgoing) {
    if tx.try_send(o).is_err() {
        metrics::counter!("apus_alarm_notifications_total", "receiver" => name.to_string(), "kind" => "queue", "result" => "dropped").increment(1);
        tracing::error!(receiver = %name, "alarm notification queue full: notification dropped");
    }
}

impl Deliverer {
    /// Start the workers (on the current runtime).
    pub fn start(
        receivers: &[ReceiverConfig],
        alertmanagers: &[String],
        external_url: &str,
    ) -> Deliverer {
        Deliverer {
            receivers: receivers
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        (r.clone(), spawn_worker(r.name.clone(), "receiver")),
                    )
                })
                .collect(),
            alertmanagers: alertmanagers
                .iter()
                .map(|u| (u.clone(), spawn_worker(u.clone(), "alertmanager")))
                .collect(),
            external_url: external_url.to_string(),
        }
    }

    /// The request a notification makes of its receiver (`None` if the receiver does not
    /// want it, e.g. a resolved-only notification with `send_resolved = false`).
    pub fn render(
        r: &ReceiverConfig,
        n: &Notification,
        external_url: &str,
        now: i64,
    ) -> Option<Outgoing> {
        let mut n = n.clone();
        if r.send_resolved == Some(false) {
            n.alerts.retain(|a| !a.resolved(now));
            if n.alerts.is_empty() {
                return None;
            }
        }
        let (body, content_type) = match &r.body {
            None => (
                payload::webhook_v4(&n, external_url, now).to_string(),
                "application/json".to_string(),
            ),
            Some(t) => {
                let ct = r
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".into());
                let escape = if ct.contains("json") {
                    json_escape
                } else {
                    apus_rules::alarm::template::plain
                };
                (
                    render(t, &payload::template_data(&n, external_url, now), escape),
                    ct,
                )
            }
        };
        Some(Outgoing {
            url: r.url.clone(),
            body,
            content_type,
            bearer: r.bearer_token.clone(),
        })
    }

    /// Queue a notification for its receiver.
    pub fn notify(&self, n: &Notification, now: i64) {
        let Some((r, tx)) = self.receivers.get(&n.receiver) else {
            tracing::error!(receiver = %n.receiver, "notification for an unknown receiver");
            return;
        };
        if let Some(o) = Deliverer::render(r, n, &self.external_url, now) {
            enqueue(tx, &r.name, o);
        }
    }

    /// Forward alerts to every Alertmanager (`POST /api/v2/alerts`).
    pub fn forward(&self, alerts: &[Alert], now: i64, resend_until: i64) {
        if alerts.is_empty() {
            return;
        }
        let body = payload::am_alerts(alerts, now, resend_until).to_string();
        for (url, tx) in &self.alertmanagers {
            enqueue(
                tx,
                url,
                Outgoing {
                    url: format!("{url}/api/v2/alerts"),
                    body: body.clone(),
                    content_type: "application/json".into(),
                    bearer: None,
                },
            );
        }
    }

    /// Whether any Alertmanager is configured.
    pub fn forwards(&self) -> bool {
        !self.alertmanagers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(resolved: bool) -> Notification {
        Notification {
            receiver: "ding".into(),
            group_key: "{0}:{}".into(),
            group_labels: Default::default(),
            alerts: vec![Alert {
                labels: [("alertname".to_string(), "Errors".to_string())].into(),
                annotations: [("summary".to_string(), "pool \"gray\" fails".to_string())].into(),
                starts_at: 1_000_000,
                ends_at: if resolved { 2_000_000 } else { 0 },
                generator_url: String::new(),
            }],
        }
    }

    #[test]
    fn templated_bodies_are_escaped_for_their_content_type() {
        let r = ReceiverConfig {
            name: "ding".into(),
            url: "http://x/robot".into(),
            body: Some(
                r#"{"msgtype":"text","text":{"content":"{{ .status }}: {{ .alertsText }}"}}"#
                    .into(),
            ),
            ..Default::default()
        };
        let o = Deliverer::render(&r, &notification(false), "http://apus", 5_000_000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&o.body).expect("still JSON");
        assert_eq!(v["text"]["content"], "firing: [FIRING] pool \"gray\" fails");
        assert_eq!(o.content_type, "application/json");
        // the default body is Alertmanager's payload
        let plain = ReceiverConfig {
            body: None,
            ..r.clone()
        };
        let o = Deliverer::render(&plain, &notification(false), "http://apus", 5_000_000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&o.body).unwrap();
        assert_eq!(v["version"], "4");
        // send_resolved = false drops a resolved-only notification
        let quiet = ReceiverConfig {
            send_resolved: Some(false),
            ..r
        };
        assert!(Deliverer::render(&quiet, &notification(true), "", 5_000_000).is_none());
    }
}
