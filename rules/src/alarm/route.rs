//! Alertmanager's routing tree, inhibition rules and silences, with its semantics.
//!
//! - A route matches an alert when its matchers do. The alert then goes down to the first
//!   matching child (and the next ones while a matched child says `continue`); if no child
//!   matches, the route itself takes it. Children inherit `receiver`, `group_by` and the
//!   timers they do not set.
//! - An inhibition rule mutes an alert matching `target_matchers` while an alert matching
//!   `source_matchers` fires with the same values of the `equal` labels.
//! - A silence mutes the alerts its matchers select between `starts_at` and `ends_at`.

use serde::{Deserialize, Serialize};

use super::duration::parse_duration;
use super::matcher::{all_match, parse_all, Matcher};
use super::Labels;

/// A route as written in the config.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub receiver: Option<String>,
    /// Labels that split alerts into notification groups; `["..."]` means every label.
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// A compiled route node.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree (`0`, `0.1`, ...): part of the group key.
    pub id: String,
    pub receiver: String,
    /// `None`: group by every label.
    pub group_by: Option<Vec<String>>,
    pub matchers: Vec<Matcher>,
    pub continue_: bool,
    pub group_wait_us: i64,
    pub group_interval_us: i64,
    pub repeat_interval_us: i64,
    pub routes: Vec<Route>,
}

/// Defaults of the root route. `group_wait` is 1 s, not Alertmanager's 30 s: Apus
/// evaluates as rows land, so the alerts of one incident arrive within about a second of
/// each other, and waiting longer only delays the first page.
pub const DEFAULT_GROUP_WAIT_US: i64 = 1_000_000;
pub const DEFAULT_GROUP_INTERVAL_US: i64 = 30_000_000;
pub const DEFAULT_REPEAT_INTERVAL_US: i64 = 4 * 3_600_000_000;

impl Route {
    /// Compile a route tree; `receivers` are the names that exist.
    pub fn compile(c: &RouteConfig, receivers: &[String]) -> Result<Route, String> {
        let root = Route {
            id: String::new(),
            receiver: String::new(),
            group_by: Some(vec!["alertname".into()]),
            matchers: Vec::new(),
            continue_: false,
            group_wait_us: DEFAULT_GROUP_WAIT_US,
            group_interval_us: DEFAULT_GROUP_INTERVAL_US,
            repeat_interval_us: DEFAULT_REPEAT_INTERVAL_US,
            routes: Vec::new(),
        };
        let r = Route::child(c, &root, "0".into(), receivers, 0)?;
        if r.receiver.is_empty() {
            return Err("route: the root route needs a `receiver`".into());
        }
        Ok(r)
    }

    fn child(
        c: &RouteConfig,
        parent: &Route,
        id: String,
        receivers: &[String],
        depth: usize,
    ) -> Result<Route, String> {
        if depth > 16 {
            return Err("route: nested more than 16 deep".into());
        }
        let dur = |v: &Option<String>, field: &str, inherit: i64| match v {
            None => Ok(inherit),
            Some(s) => parse_duration(s).map_err(|e| format!("route {id}: `{field}`: {e}")),
        };
        let receiver = c
            .receiver
            .clone()
            .unwrap_or_else(|| parent.receiver.clone());
        if !receiver.is_empty() && !receivers.contains(&receiver) {
            return Err(format!("route {id}: receiver `{receiver}` is not defined"));
        }
        let group_by = match &c.group_by {
            None => parent.group_by.clone(),
            Some(g) if g.iter().any(|l| l == "...") => None,
            Some(g) => Some(g.clone()),
        };
        let mut r = Route {
            receiver,
            group_by,
            matchers: parse_all(&c.matchers).map_err(|e| format!("route {id}: {e}"))?,
            continue_: c.continue_,
            group_wait_us: dur(&c.group_wait, "group_wait", parent.group_wait_us)?,
            group_interval_us: dur(
                &c.group_interval,
                "group_interval",
                parent.group_interval_us,
            )?,
            repeat_interval_us: dur(
                &c.repeat_interval,
                "repeat_interval",
                parent.repeat_interval_us,
            )?,
            routes: Vec::new(),
            id: id.clone(),
        };
        if r.group_interval_us <= 0 || r.repeat_interval_us <= 0 {
            return Err(format!(
                "route {id}: group_interval and repeat_interval must be > 0"
            ));
        }
        for (i, ch) in c.routes.iter().enumerate() {
            let child = Route::child(ch, &r, format!("{id}.{i}"), receivers, depth + 1)?;
            r.routes.push(child);
        }
        Ok(r)
    }

    /// The routes that take `labels` (Alertmanager's `Route.Match`).
    pub fn matching<'a>(&'a self, labels: &Labels) -> Vec<&'a Route> {
        if !all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for ch in &self.routes {
            let hit = ch.matching(labels);
            if !hit.is_empty() {
                out.extend(hit);
                if !ch.continue_ {
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// The group labels of `labels` under this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            None => labels.clone(),
            Some(g) => g
                .iter()
                .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        }
    }
}

/// An inhibition rule as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitConfig {
    #[serde(default)]
    pub source_matchers: Vec<String>,
    #[serde(default)]
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A compiled inhibition rule.
#[derive(Debug, Clone)]
pub struct Inhibit {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl Inhibit {
    pub fn compile(c: &InhibitConfig) -> Result<Inhibit, String> {
        Ok(Inhibit {
            source: parse_all(&c.source_matchers).map_err(|e| format!("inhibit_rules: {e}"))?,
            target: parse_all(&c.target_matchers).map_err(|e| format!("inhibit_rules: {e}"))?,
            equal: c.equal.clone(),
        })
    }

    /// Whether `target` is muted by one of the firing alerts. An alert that matches both
    /// sides does not inhibit itself (Alertmanager's rule).
    pub fn mutes<'a>(&self, target: &Labels, firing: impl Iterator<Item = &'a Labels>) -> bool {
        if !all_match(&self.target, target) {
            return false;
        }
        let both = all_match(&self.source, target);
        firing
            .filter(|s| all_match(&self.source, s))
            .filter(|s| !(both && *s == target))
            .any(|s| self.equal.iter().all(|k| s.get(k) == target.get(k)))
    }
}

/// A silence, in the shape of Alertmanager's `/api/v2/silences`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    #[serde(default)]
    pub id: String,
    pub matchers: Vec<Matcher>,
    /// RFC 3339.
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    #[serde(default)]
    pub updated_at: String,
}

/// A silence's state at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    /// Check a silence from the API and compile its regexes.
    pub fn validate(&mut self) -> Result<(i64, i64), String> {
        if self.matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        if self.matchers.len() > 64 {
            return Err("a silence holds at most 64 matchers".into());
        }
        if self.matchers.iter().all(|m| m.matches(&Labels::new())) {
            return Err(
                "the matchers would silence every alert (they all match an empty label set)".into(),
            );
        }
        for m in &mut self.matchers {
            m.compile()?;
        }
        if self.created_by.trim().is_empty() {
            return Err("`createdBy` is required".into());
        }
        if self.comment.trim().is_empty() {
            return Err("`comment` is required".into());
        }
        if self.comment.len() > 4096 || self.created_by.len() > 256 {
            return Err("`comment` or `createdBy` too long".into());
        }
        let s = super::parse_rfc3339(&self.starts_at).map_err(|e| format!("`startsAt`: {e}"))?;
        let e = super::parse_rfc3339(&self.ends_at).map_err(|e| format!("`endsAt`: {e}"))?;
        if e <= s {
            return Err("`endsAt` must be after `startsAt`".into());
        }
        Ok((s, e))
    }

    /// The state at `now`.
    pub fn state(&self, now: i64) -> SilenceState {
        let s = super::parse_rfc3339(&self.starts_at).unwrap_or(i64::MAX);
        let e = super::parse_rfc3339(&self.ends_at).unwrap_or(i64::MIN);
        if now >= e {
            SilenceState::Expired
        } else if now < s {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Whether the silence mutes `labels` at `now`.
    pub fn mutes(&self, labels: &Labels, now: i64) -> bool {
        self.state(now) == SilenceState::Active && all_match(&self.matchers, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tree() -> Route {
        let c: RouteConfig = toml::from_str(
            r#"
            receiver = "default"
            group_by = ["alertname"]
            [[routes]]
            matchers = ['severity="critical"']
            receiver = "pager"
            continue = true
            group_wait = "0s"
            [[routes]]
            matchers = ['project=~"shop|bank"']
            receiver = "team"
            group_by = ["..."]
              [[routes.routes]]
              matchers = ['env="dev"']
              receiver = "devnull"
            "#,
        )
        .unwrap();
        let names: Vec<String> = ["default", "pager", "team", "devnull"]
            .map(String::from)
            .into();
        Route::compile(&c, &names).unwrap()
    }

    #[test]
    fn routes_pick_children_continue_and_inherit() {
        let t = tree();
        let rx = |l: &Labels| -> Vec<String> {
            t.matching(l).iter().map(|r| r.receiver.clone()).collect()
        };
        assert_eq!(
            rx(&labels(&[("severity", "critical"), ("project", "shop")])),
            ["pager", "team"]
        );
        assert_eq!(
            rx(&labels(&[("project", "shop"), ("env", "dev")])),
            ["devnull"]
        );
        assert_eq!(rx(&labels(&[("project", "other")])), ["default"]);
        let pager = &t.matching(&labels(&[("severity", "critical")]))[0];
        assert_eq!(pager.group_wait_us, 0);
        assert_eq!(
            pager.group_interval_us, DEFAULT_GROUP_INTERVAL_US,
            "inherited"
        );
        let dev = &t.matching(&labels(&[("project", "bank"), ("env", "dev")]))[0];
        assert_eq!(dev.group_by, None, "`...` is inherited");
        let bad: RouteConfig = toml::from_str("receiver = \"nobody\"").unwrap();
        assert!(Route::compile(&bad, &[]).unwrap_err().contains("nobody"));
    }

    #[test]
    fn inhibition_needs_equal_labels_and_spares_itself() {
        let i = Inhibit::compile(&InhibitConfig {
            source_matchers: vec!["severity=\"critical\"".into()],
            target_matchers: vec!["severity=\"warning\"".into()],
            equal: vec!["pool".into()],
        })
        .unwrap();
        let crit = labels(&[("severity", "critical"), ("pool", "a")]);
        let warn_a = labels(&[("severity", "warning"), ("pool", "a")]);
        let warn_b = labels(&[("severity", "warning"), ("pool", "b")]);
        assert!(i.mutes(&warn_a, [&crit].into_iter()));
        assert!(!i.mutes(&warn_b, [&crit].into_iter()));
        assert!(!i.mutes(&crit, [&crit].into_iter()));
        let selfish = Inhibit::compile(&InhibitConfig {
            source_matchers: vec!["a=\"1\"".into()],
            target_matchers: vec!["a=\"1\"".into()],
            equal: vec![],
        })
        .unwrap();
        let one = labels(&[("a", "1")]);
        assert!(!selfish.mutes(&one, [&one].into_iter()));
    }

    #[test]
    fn silences_mute_inside_their_window_only() {
        let mut s = Silence {
            id: String::new(),
            matchers: vec![Matcher::parse("pool=\"gray\"").unwrap()],
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: "2026-01-01T01:00:00Z".into(),
            created_by: "sre".into(),
            comment: "deploy".into(),
            updated_at: String::new(),
        };
        let (start, end) = s.validate().unwrap();
        let l = labels(&[("pool", "gray")]);
        assert!(!s.mutes(&l, start - 1) && s.mutes(&l, start) && !s.mutes(&l, end));
        assert!(!s.mutes(&labels(&[("pool", "stable")]), start));
        s.matchers = vec![Matcher::parse("pool=~\".*\"").unwrap()];
        assert!(s.validate().is_err(), "a silence of everything is refused");
    }
}
