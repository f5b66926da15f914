//! `[alarms]` of the query tier's config (`[query.alarms]` under `apus run`): where the
//! rule files are, the receivers, the routing tree, inhibition rules, and the external
//! Alertmanagers to forward to.
//!
//! ```toml
//! [query.alarms]
//! rules_dir = "alarms"                 # *.toml rule files, relative to the config file
//! external_url = "http://apus.example:3000"
//!
//! [[query.alarms.receivers]]
//! name = "ops"
//! url = "http://hooks.example/alertmanager"   # Alertmanager's webhook payload (v4)
//!
//! [[query.alarms.receivers]]
//! name = "dingtalk"
//! url = "https://oapi.dingtalk.com/robot/send?access_token=…"
//! body = '{"msgtype":"text","text":{"content":"{{ .status }}: {{ .alertsText }}"}}'
//!
//! [query.alarms.route]
//! receiver = "ops"
//! group_by = ["alertname", "project", "env"]
//! [[query.alarms.route.routes]]
//! matchers = ['severity="critical"']
//! receiver = "dingtalk"
//!
//! [[query.alarms.inhibit_rules]]
//! source_matchers = ['severity="critical"']
//! target_matchers = ['severity="warning"']
//! equal = ["project", "env", "pool"]
//!
//! [[query.alarms.alertmanagers]]
//! url = "http://127.0.0.1:9093"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use apus_rules::alarm::{parse_duration, Inhibit, InhibitConfig, Route, RouteConfig};
use serde::Deserialize;

/// The alarm section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// Directory of rule files; none = alarms off.
    pub rules_dir: Option<PathBuf>,
    /// Base of the links in notifications (`generatorURL`, `externalURL`); default
    /// `http://` + the query listener.
    pub external_url: Option<String>,
    /// Longest time between two evaluations of a rule when no rows land (default `1s`).
    pub interval: Option<String>,
    /// Longest one rule's query may run (default `5s`).
    pub rule_timeout: Option<String>,
    /// Rule queries running at once (default 4).
    pub concurrency: Option<usize>,
    pub receivers: Vec<ReceiverConfig>,
    pub route: Option<RouteConfig>,
    pub inhibit_rules: Vec<InhibitConfig>,
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// How often firing alerts are re-sent to the Alertmanagers (default `1m`, as
    /// Prometheus' `--rules.alert.resend-delay`).
    pub resend_delay: Option<String>,
    /// A receiver told of every change (gray flip, rollout step, rollback, drain, alarm
    /// switch, silence): who changed what, why, and a link to the timeline.
    pub changes_receiver: Option<String>,
}

/// One receiver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    /// Where to `POST`.
    pub url: String,
    /// A body template (DingTalk, Feishu, Slack); default: Alertmanager's webhook payload.
    pub body: Option<String>,
    /// Content type of a templated body (default `application/json`).
    pub content_type: Option<String>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<String>,
    /// Tell the receiver when alerts resolve (default true).
    pub send_resolved: Option<bool>,
}

/// An Alertmanager to forward alerts to (`POST /api/v2/alerts`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct AlarmSettings {
    pub rules_dir: PathBuf,
    pub external_url: String,
    pub interval: Duration,
    pub rule_timeout: Duration,
    pub concurrency: usize,
    pub receivers: Vec<ReceiverConfig>,
    /// `None`: no receiver, alarms are evaluated and stored only.
    pub route: Option<Route>,
    pub inhibit: Vec<Inhibit>,
    pub alertmanagers: Vec<String>,
    pub resend_delay: Duration,
    pub changes_receiver: Option<String>,
}

fn dur(v: &Option<String>, field: &str, default_ms: u64) -> Result<Duration, String> {
    match v {
        None => Ok(Duration::from_millis(default_ms)),
        Some(s) => parse_duration(s)
            .map(|us| Duration::from_micros(us.max(0) as u64))
            .map_err(|e| format!("alarms.{field}: {e}")),
    }
}

fn url_ok(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && u.len() <= 2048
}

impl AlarmConfig {
    /// Check the section; `base` resolves a relative `rules_dir`, `listen` gives the
    /// default external URL. `None` when no rules directory is set.
    pub fn settings(
        &self,
        base: Option<&std::path::Path>,
        listen: &str,
    ) -> Result<Option<AlarmSettings>, String> {
        let Some(dir) = &self.rules_dir else {
            return Ok(None);
        };
        let rules_dir = match base {
            Some(b) if dir.is_relative() => b.join(dir),
            _ => dir.clone(),
        };
        let mut names: Vec<String> = Vec::new();
        for r in &self.receivers {
            if r.name.is_empty() || names.contains(&r.name) {
                return Err(format!(
                    "alarms.receivers: name `{}` empty or repeated",
                    r.name
                ));
            }
            if !url_ok(&r.url) {
                return Err(format!(
                    "alarms.receivers `{}`: `url` must be http(s)://…",
                    r.name
                ));
            }
            if let Some(b) = &r.body {
                apus_rules::alarm::template::check(b)
                    .map_err(|e| format!("alarms.receivers `{}`: body: {e}", r.name))?;
            }
            names.push(r.name.clone());
        }
        let route = match (&self.route, names.first()) {
            (Some(rc), _) => Some(Route::compile(rc, &names).map_err(|e| format!("alarms.{e}"))?),
            (None, Some(first)) => Some(
                Route::compile(
                    &RouteConfig {
                        receiver: Some(first.clone()),
                        ..Default::default()
                    },
                    &names,
                )
                .map_err(|e| format!("alarms.{e}"))?,
            ),
            (None, None) => None,
        };
        let inhibit = self
            .inhibit_rules
            .iter()
            .map(Inhibit::compile)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("alarms.{e}"))?;
        if let Some(c) = &self.changes_receiver {
            if !names.contains(c) {
                return Err(format!("alarms.changes_receiver: no receiver `{c}`"));
            }
        }
        for a in &self.alertmanagers {
            if !url_ok(&a.url) {
                return Err(format!(
                    "alarms.alertmanagers: `{}` must be http(s)://…",
                    a.url
                ));
            }
        }
        Ok(Some(AlarmSettings {
            rules_dir,
            external_url: self
                .external_url
                .clone()
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_string(),
            interval: dur(&self.interval, "interval", 1000)?.max(Duration::from_millis(50)),
            rule_timeout: dur(&self.rule_timeout, "rule_timeout", 5000)?
                .max(Duration::from_millis(100)),
            concurrency: self.concurrency.unwrap_or(4).clamp(1, 64),
            receivers: self.receivers.clone(),
            route,
            inhibit,
            alertmanagers: self
                .alertmanagers
                .iter()
                .map(|a| a.url.trim_end_matches('/').to_string())
                .collect(),
            resend_delay: dur(&self.resend_delay, "resend_delay", 60_000)?
                .max(Duration::from_secs(1)),
            changes_receiver: self.changes_receiver.clone(),
        }))
    }
}

/// Receivers by name.
pub fn receivers_by_name(s: &AlarmSettings) -> BTreeMap<String, ReceiverConfig> {
    s.receivers
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect()
}
