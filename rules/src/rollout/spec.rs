//! A rollout as a release manager writes it, and as the control plane keeps it:
//!
//! ```json
//! {"name": "checkout-v2", "route": "api", "pool": "gray", "tag": "gray",
//!  "steps": [{"set_weight": 10}, {"analysis": {"count": 3}}, {"set_weight": 50},
//!            {"pause": "1m"}, {"set_weight": 100}],
//!  "analysis": {"interval": "30s", "window": "1m", "failure_limit": 1,
//!               "min_requests": 50, "max_error_rate": 0.05}}
//! ```
//!
//! The rollout owns one gray rule on its route, `rollout-NAME`: each step that sets a
//! weight, tenants or CIDRs replaces that rule's condition. Abort puts the route's gray
//! rules back as they were before the rollout, as one change.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::judge::{ErrorTest, LatencyTest, Limits};
use super::plan::{check_steps, Progress, Step};
use super::webhook::{check_hooks, WebhookSpec};
use crate::alarm::parse_duration;
use crate::GrayRuleSpec;

fn gray() -> String {
    "gray".into()
}

/// How analysis judges an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    /// Time between analysis runs.
    pub interval: String,
    /// The window each run looks back over.
    pub window: String,
    /// Failed runs tolerated; one more aborts.
    pub failure_limit: u32,
    /// Least gray requests for a verdict.
    pub min_requests: u64,
    /// Flagger-style fixed limits on gray.
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<f64>,
    /// Gray's error rate may exceed stable's by this (absolute).
    pub max_error_increase: f64,
    /// Gray's latency may shift by this share of stable's median (or `max_shift_ms`).
    pub max_latency_shift_ratio: f64,
    pub max_shift_ms: f64,
    /// Significance level of the statistical judges.
    pub alpha: f64,
    /// Fail on error-log templates seen in gray in the window and in no other lane over
    /// `baseline` (at least `novelty_min_count` lines).
    pub new_templates: bool,
    /// Fail on slow-SQL fingerprints from the gray pool in the window and from no other
    /// pool over `baseline`.
    pub new_fingerprints: bool,
    /// How far back "seen before" looks.
    pub baseline: String,
    /// Lines (or slow queries) a novelty needs before it counts.
    pub novelty_min_count: u64,
    /// The SRE's own checks: SQL over the store, as in the alarm rules.
    pub metrics: Vec<UserMetric>,
}

/// A user metric of the analysis: `sql` returns one row with a `value` column; `$window`
/// is replaced by the window's time condition and `$tag`, `$stable_tag`, `$route`,
/// `$project`, `$env` by quoted literals. No row is no data (inconclusive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserMetric {
    pub name: String,
    pub sql: String,
    /// The value must be at least / at most this.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: "30s".into(),
            window: "1m".into(),
            failure_limit: 1,
            min_requests: 50,
            max_error_rate: None,
            max_p99_ms: None,
            max_error_increase: 0.01,
            max_latency_shift_ratio: 0.1,
            max_shift_ms: 5.0,
            alpha: 0.01,
            new_templates: true,
            new_fingerprints: true,
            baseline: "1h".into(),
            novelty_min_count: 3,
            metrics: Vec::new(),
        }
    }
}

impl AnalysisSpec {
    pub fn interval_us(&self) -> i64 {
        parse_duration(&self.interval).unwrap_or(30_000_000)
    }
    pub fn window_us(&self) -> i64 {
        parse_duration(&self.window).unwrap_or(60_000_000)
    }
    pub fn baseline_us(&self) -> i64 {
        parse_duration(&self.baseline).unwrap_or(3_600_000_000)
    }
    pub fn limits(&self) -> Limits {
        Limits {
            min_requests: self.min_requests,
            max_error_rate: self.max_error_rate,
            max_p99_ms: self.max_p99_ms,
        }
    }
    pub fn error_test(&self) -> ErrorTest {
        ErrorTest {
            alpha: self.alpha,
            max_increase: self.max_error_increase,
        }
    }
    pub fn latency_test(&self) -> LatencyTest {
        LatencyTest {
            min_samples: (self.min_requests as usize).clamp(10, 1000),
            alpha: self.alpha,
            max_shift_ratio: self.max_latency_shift_ratio,
            max_shift_ms: self.max_shift_ms,
        }
    }
}

/// A rollout as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub name: String,
    /// The route it releases on.
    pub route: String,
    /// The gray pool and tag of its rule.
    #[serde(default = "gray")]
    pub pool: String,
    #[serde(default = "gray")]
    pub tag: String,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Flagger's webhooks (see [`super::webhook`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,
}

impl RolloutSpec {
    /// Check everything that does not need the release state.
    pub fn check(&self) -> Result<(), String> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !ok(&self.name) {
            return Err(format!(
                "rollout name `{}`: 1 to 64 of letters, digits, `-`, `_`, `.`",
                self.name
            ));
        }
        check_steps(&self.steps)?;
        let a = &self.analysis;
        for (f, v) in [
            ("interval", &a.interval),
            ("window", &a.window),
            ("baseline", &a.baseline),
        ] {
            let us = parse_duration(v).map_err(|e| format!("analysis.{f}: {e}"))?;
            if us < 1_000_000 {
                return Err(format!("analysis.{f}: at least 1s"));
            }
        }
        if !(a.alpha > 0.0 && a.alpha < 0.5) {
            return Err("analysis.alpha: between 0 and 0.5".into());
        }
        if !(0.0..=1.0).contains(&a.max_error_increase) {
            return Err("analysis.max_error_increase: between 0 and 1".into());
        }
        if a.metrics.len() > 16 {
            return Err("analysis.metrics: at most 16".into());
        }
        for m in &a.metrics {
            if m.name.is_empty() || m.sql.trim().is_empty() || m.sql.len() > 16_384 {
                return Err(format!(
                    "analysis.metrics `{}`: a name and SQL (at most 16 KiB) are required",
                    m.name
                ));
            }
            if m.min.is_none() && m.max.is_none() {
                return Err(format!("analysis.metrics `{}`: set `min` or `max`", m.name));
            }
        }
        check_hooks(&self.webhooks)?;
        Ok(())
    }

    /// The name of the gray rule the rollout owns.
    pub fn rule_name(&self) -> String {
        format!("rollout-{}", self.name)
    }

    /// The gray rule a step puts in force (`None` for steps that change no rule).
    pub fn rule_for(&self, step: &Step) -> Option<GrayRuleSpec> {
        let mut r = GrayRuleSpec {
            name: self.rule_name(),
            pool: self.pool.clone(),
            tag: self.tag.clone(),
            tenants: Default::default(),
            tenants_file: None,
            cidrs: Default::default(),
            header: None,
            cookie: None,
            percent: None,
        };
        match step {
            Step::SetWeight(w) => r.percent = Some(f64::from(*w)),
            Step::SetTenants(t) => r.tenants = Arc::new(t.clone()),
            Step::SetCidrs(c) => r.cidrs = Arc::new(c.clone()),
            _ => return None,
        }
        Some(r)
    }
}

/// A rollout in the release state: what was asked, where it is, and what to go back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutDoc {
    pub spec: RolloutSpec,
    pub progress: Progress,
    /// The route's gray rules before the rollout (what abort restores).
    pub base_rules: Vec<GrayRuleSpec>,
    /// Who started it.
    pub started_by: String,
}

/// Put `step`'s rule on `rules` (replacing the rollout's own rule, placed first so it
/// takes the traffic it claims).
pub fn apply_step(spec: &RolloutSpec, rules: &mut Vec<GrayRuleSpec>, step: &Step) {
    if let Some(r) = spec.rule_for(step) {
        rules.retain(|g| g.name != r.name);
        rules.insert(0, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_check_and_make_rules() {
        let s: RolloutSpec = serde_json::from_str(
            r#"{"name":"v2","route":"api","steps":[{"set_weight":10},{"analysis":{"count":2}},
                {"set_tenants":["acme"]},{"set_weight":100}],
                "analysis":{"interval":"5s","window":"30s","max_error_rate":0.05}}"#,
        )
        .unwrap();
        s.check().unwrap();
        assert_eq!(s.analysis.interval_us(), 5_000_000);
        let mut rules = vec![s.rule_for(&Step::SetTenants(vec!["x".into()])).unwrap()];
        apply_step(&s, &mut rules, &Step::SetWeight(10));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].percent, Some(10.0));
        assert!(rules[0].tenants.is_empty());
        let mut bad = s.clone();
        bad.name = "a b".into();
        assert!(bad.check().is_err());
        bad = s.clone();
        bad.analysis.interval = "10ms".into();
        assert!(bad.check().unwrap_err().contains("interval"));
        assert!(serde_json::from_str::<RolloutSpec>(
            r#"{"name":"x","route":"r","steps":[],"bogus":1}"#
        )
        .is_err());
    }
}
