//! Alarms, pure: the rule files SREs write ([`rule`]), the state machine of each label set
//! ([`state`]), the templates of annotations and bodies ([`template`]), and delivery with
//! Alertmanager's semantics: matchers, the routing tree, inhibition and silences
//! ([`route`]), notification groups and their timers ([`dispatch`]), and the wire formats
//! ([`payload`]). The query tier evaluates the rules and does the IO.

use std::collections::BTreeMap;

pub mod dispatch;
pub mod duration;
pub mod matcher;
pub mod payload;
pub mod route;
pub mod rule;
pub mod state;
pub mod template;

pub use dispatch::{Dispatcher, Notification};
pub use duration::{format_duration, parse_duration};
pub use matcher::Matcher;
pub use route::{Inhibit, InhibitConfig, Route, RouteConfig, Silence, SilenceState};
pub use rule::{parse_rule_file, AlarmRule, Condition, Kind, RuleFileError};
pub use state::{State, Timing, Tracker};

/// Label names to values, sorted (so equal sets print and hash alike).
pub type Labels = BTreeMap<String, String>;

/// An alert as delivery sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    /// µs since the epoch.
    pub starts_at: i64,
    /// 0 while firing; the resolve time once resolved.
    pub ends_at: i64,
    /// Where a person goes to look: the root-cause view of the alert's window and labels.
    pub generator_url: String,
}

impl Alert {
    /// Identity of the label set (16 hex digits).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.labels)
    }

    /// Whether the alert has resolved by `now`.
    pub fn resolved(&self, now: i64) -> bool {
        self.ends_at > 0 && self.ends_at <= now
    }
}

/// FNV-1a over `name\xffvalue\xff…` of the sorted labels, as 16 hex digits (the role of
/// Alertmanager's fingerprint: the same labels give the same id on every node).
pub fn fingerprint(labels: &Labels) -> String {
    format!("{:016x}", fingerprint_merged(labels, &Labels::new()))
}

/// The fingerprint (as a number) of `base` overlaid with `extra` (`extra` wins on equal
/// names), without building the merged set: the evaluator looks up every label set of
/// every answer by it.
pub fn fingerprint_merged(base: &Labels, extra: &Labels) -> u64 {
    use std::cmp::Ordering;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |k: &str, v: &str| {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let (mut a, mut b) = (base.iter().peekable(), extra.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                Ordering::Less => a.next(),
                Ordering::Greater => b.next(),
                Ordering::Equal => {
                    a.next();
                    b.next()
                }
            },
        };
        if let Some((k, v)) = next {
            feed(k, v);
        }
    }
    h
}

/// µs since the epoch as RFC 3339 (UTC, millisecond precision when not whole seconds).
pub fn rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let nanos = (us.rem_euclid(1_000_000) * 1_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) if nanos == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00Z".into(),
    }
}

/// RFC 3339 to µs since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_and_times() {
        let a: Labels = [("a".to_string(), "1".to_string())].into();
        let b: Labels = [("a".to_string(), "11".to_string())].into();
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        // overlaying equals merging
        let base: Labels = [("a", "0"), ("c", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let extra: Labels = [("a", "1"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut merged = base.clone();
        merged.extend(extra.clone());
        assert_eq!(
            format!("{:016x}", fingerprint_merged(&base, &extra)),
            fingerprint(&merged)
        );
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:00.001Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Ok(1_700_000_000_000_000)
        );
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
