//! Rollout webhooks, as Flagger's: where they fire, what they mean, and the body they get.
//!
//! | type | when | a non-2xx answer |
//! |---|---|---|
//! | `pre-rollout` | before the first step shifts traffic | refuses the start |
//! | `rollout` | before each analysis run | is a failed check |
//! | `confirm-promotion` | before the last step completes the rollout | holds the step (retried each interval) |
//! | `rollback` | once the rollback is in force | is logged |
//! | `post-rollout` | once the rollout ends, either way | is logged |
//! | `event` | every step, pause, hold and outcome | is logged |
//!
//! The body is Flagger's `CanaryWebhookPayload`: `name`, `namespace` (the route's
//! project), `phase`, `checksum` (of the rollout spec), `type` and `metadata` (the hook's
//! own metadata plus `env`, `route`, `pool`, `tag`, `step` and, for `event`, `eventMessage`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alarm::parse_duration;

/// When a hook fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    PreRollout,
    Rollout,
    ConfirmPromotion,
    Rollback,
    PostRollout,
    Event,
}

impl HookType {
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::Rollback => "rollback",
            HookType::PostRollout => "post-rollout",
            HookType::Event => "event",
        }
    }
    /// Whether the hook's answer decides anything (the others are notifications).
    pub fn gates(self) -> bool {
        matches!(
            self,
            HookType::PreRollout | HookType::Rollout | HookType::ConfirmPromotion
        )
    }
}

fn ten_seconds() -> String {
    "10s".into()
}

/// One webhook of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HookType,
    /// `http://host:port/path`.
    pub url: String,
    #[serde(default = "ten_seconds")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl WebhookSpec {
    pub fn check(&self) -> Result<(), String> {
        let e = |m: String| format!("webhook `{}`: {m}", self.name);
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(e("name: 1 to 64 characters".into()));
        }
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            e(format!(
                "url `{}`: expected http://HOST:PORT/PATH",
                self.url
            ))
        })?;
        if rest.is_empty() || rest.starts_with('/') || self.url.len() > 2048 {
            return Err(e(format!("url `{}`: no host", self.url)));
        }
        let t = parse_duration(&self.timeout).map_err(|m| e(format!("timeout: {m}")))?;
        if !(1_000..=300_000_000).contains(&t) {
            return Err(e("timeout: between 1ms and 5m".into()));
        }
        if self.metadata.len() > 64 {
            return Err(e("at most 64 metadata entries".into()));
        }
        Ok(())
    }
    pub fn timeout_us(&self) -> i64 {
        parse_duration(&self.timeout).unwrap_or(10_000_000)
    }
}

/// Check a rollout's hooks: each valid, names unique.
pub fn check_hooks(hooks: &[WebhookSpec]) -> Result<(), String> {
    if hooks.len() > 32 {
        return Err("a rollout has at most 32 webhooks".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for h in hooks {
        h.check()?;
        if !seen.insert(&h.name) {
            return Err(format!("webhook `{}` named twice", h.name));
        }
    }
    Ok(())
}

/// Flagger's canary phases, as its webhooks report them.
pub fn flagger_phase(p: &super::Phase, kind: HookType) -> &'static str {
    use super::Phase;
    match (kind, p) {
        (HookType::PreRollout, _) => "Initialized",
        (HookType::ConfirmPromotion, _) => "WaitingPromotion",
        (_, Phase::Progressing) => "Progressing",
        (_, Phase::Paused { .. }) => "Waiting",
        (_, Phase::Succeeded) => "Succeeded",
        (_, Phase::Aborted { .. }) => "Failed",
    }
}

/// What a hook is told, beside its own metadata.
#[derive(Debug, Clone, Default)]
pub struct HookContext<'a> {
    pub rollout: &'a str,
    pub project: &'a str,
    pub env: &'a str,
    pub route: &'a str,
    pub pool: &'a str,
    pub tag: &'a str,
    /// 1-based step number.
    pub step: usize,
    /// The spec's checksum ([`checksum`]).
    pub checksum: &'a str,
    /// For `event` hooks: what happened.
    pub message: Option<&'a str>,
}

/// The body of one call.
pub fn payload(hook: &WebhookSpec, phase: &str, c: &HookContext<'_>) -> serde_json::Value {
    let mut md: BTreeMap<String, String> = hook.metadata.clone();
    for (k, v) in [
        ("env", c.env),
        ("route", c.route),
        ("pool", c.pool),
        ("tag", c.tag),
    ] {
        md.insert(k.into(), v.into());
    }
    md.insert("step".into(), c.step.to_string());
    if let Some(m) = c.message {
        md.insert("eventMessage".into(), m.into());
        md.insert("eventType".into(), "Normal".into());
    }
    serde_json::json!({
        "name": c.rollout,
        "namespace": c.project,
        "phase": phase,
        "checksum": c.checksum,
        "type": hook.kind.as_str(),
        "metadata": md,
    })
}

/// A short stable checksum of anything serialisable (FNV-1a over its JSON), as Flagger's
/// spec checksum: it changes when the rollout's spec changes.
pub fn checksum<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(kind: HookType) -> WebhookSpec {
        WebhookSpec {
            name: "gate".into(),
            kind,
            url: "http://127.0.0.1:9/hook".into(),
            timeout: "2s".into(),
            metadata: BTreeMap::from([("token".into(), "t1".into())]),
        }
    }

    #[test]
    fn hooks_parse_check_and_have_flaggers_body() {
        let h: WebhookSpec = serde_json::from_str(
            r#"{"name":"load","type":"confirm-promotion","url":"http://gate:8080/x"}"#,
        )
        .unwrap();
        assert_eq!(h.kind, HookType::ConfirmPromotion);
        assert_eq!(h.timeout_us(), 10_000_000);
        h.check().unwrap();
        assert!(serde_json::from_str::<WebhookSpec>(
            r#"{"name":"x","type":"pre-flight","url":"http://a/"}"#
        )
        .is_err());
        for (url, why) in [("https://a/x", "expected"), ("http:///x", "no host")] {
            let mut bad = hook(HookType::Rollout);
            bad.url = url.into();
            assert!(bad.check().unwrap_err().contains(why), "{url}");
        }
        let mut slow = hook(HookType::Rollout);
        slow.timeout = "1h".into();
        assert!(slow.check().is_err());
        assert!(
            check_hooks(&[hook(HookType::Rollout), hook(HookType::Event)])
                .unwrap_err()
                .contains("twice")
        );

        let c = HookContext {
            rollout: "pricing-v2",
            project: "shop",
            env: "prod",
            route: "api",
            pool: "gray",
            tag: "gray",
            step: 3,
            checksum: "abc",
            message: Some("step 3: weight 50 %"),
        };
        let b = payload(
            &hook(HookType::Event),
            flagger_phase(&super::super::Phase::Progressing, HookType::Event),
            &c,
        );
        assert_eq!(b["name"], "pricing-v2");
        assert_eq!(b["namespace"], "shop");
        assert_eq!(b["phase"], "Progressing");
        assert_eq!(b["type"], "event");
        assert_eq!(b["checksum"], "abc");
        assert_eq!(b["metadata"]["token"], "t1");
        assert_eq!(b["metadata"]["route"], "api");
        assert_eq!(b["metadata"]["step"], "3");
        assert_eq!(b["metadata"]["eventMessage"], "step 3: weight 50 %");
        assert_eq!(checksum(&"a"), checksum(&"a"));
        assert_ne!(checksum(&"a"), checksum(&"b"));
    }
}
