//! Notification groups and their timers, as Alertmanager's dispatcher keeps them:
//!
//! - an alert joins one group per route that takes it, keyed by the route and the
//!   route's `group_by` labels;
//! - a new group is flushed after `group_wait`, then looked at every `group_interval`;
//!   a flush sends when a firing alert is new to the receiver or a notified one resolved,
//!   or, with nothing new, when `repeat_interval` has passed since the last send;
//! - silenced and inhibited alerts are left out of what is sent; resolved alerts leave the
//!   group once flushed.
//!
//! Pure: the caller passes the time and sends what [`Dispatcher::due`] returns.

use std::collections::{BTreeMap, BTreeSet};

use super::route::{Inhibit, Route, Silence};
use super::{Alert, Labels};

/// What one flush sends to one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// Firing alerts first, then resolved ones; each with its `ends_at` set if resolved.
    pub alerts: Vec<Alert>,
}

impl Notification {
    /// `firing` if any alert fires, else `resolved`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.alerts.iter().any(|a| !a.resolved(now)) {
            "firing"
        } else {
            "resolved"
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    receiver: String,
    labels: Labels,
    group_interval_us: i64,
    repeat_interval_us: i64,
    alerts: BTreeMap<String, Alert>,
    next_flush: i64,
    last_sent_at: Option<i64>,
    /// Firing alerts the receiver has been told about.
    notified: BTreeSet<String>,
}

/// The dispatcher: routing tree, inhibition rules and the groups.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    route: Route,
    inhibit: Vec<Inhibit>,
    groups: BTreeMap<String, Group>,
}

/// Most groups kept; past this, new groups are refused (and counted by the caller).
pub const MAX_GROUPS: usize = 100_000;

fn label_text(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

impl Dispatcher {
    pub fn new(route: Route, inhibit: Vec<Inhibit>) -> Dispatcher {
        Dispatcher {
            route,
            inhibit,
            groups: BTreeMap::new(),
        }
    }

    /// Swap the routing config, keeping the groups whose keys still exist.
    pub fn reconfigure(&mut self, route: Route, inhibit: Vec<Inhibit>) {
        self.route = route;
        self.inhibit = inhibit;
    }

    /// Add or update an alert (a new `starts_at` for the same fingerprint replaces it).
    /// Returns false if the group limit refused it.
    pub fn put(&mut self, alert: Alert, now: i64) -> bool {
        self.put_with(alert, now, false)
    }

    /// Put an alert the receivers were already told about (restored after a restart):
    /// it is not sent again as new, only when it resolves or repeats.
    pub fn put_notified(&mut self, alert: Alert, now: i64) -> bool {
        self.put_with(alert, now, true)
    }

    fn put_with(&mut self, alert: Alert, now: i64, notified: bool) -> bool {
        let fp = alert.fingerprint();
        let mut ok = true;
        for r in self.route.matching(&alert.labels) {
            let labels = r.group_labels(&alert.labels);
            let key = format!("{{{}}}:{}", r.id, label_text(&labels));
            if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
                ok = false;
                continue;
            }
            let g = self.groups.entry(key).or_insert_with(|| Group {
                receiver: r.receiver.clone(),
                labels,
                group_interval_us: r.group_interval_us,
                repeat_interval_us: r.repeat_interval_us,
                alerts: BTreeMap::new(),
                next_flush: now + r.group_wait_us,
                last_sent_at: None,
                notified: BTreeSet::new(),
            });
            if notified {
                g.notified.insert(fp.clone());
                g.last_sent_at.get_or_insert(now);
            }
            g.alerts.insert(fp.clone(), alert.clone());
        }
        ok
    }

    /// When the next group is due (for the caller's sleep).
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// How many groups exist.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Whether `labels` is muted by a silence or an inhibition rule at `now`.
    pub fn muted(&self, labels: &Labels, silences: &[Silence], now: i64) -> bool {
        if silences.iter().any(|s| s.mutes(labels, now)) {
            return true;
        }
        if self.inhibit.is_empty() {
            return false;
        }
        let mut firing: BTreeMap<String, &Labels> = BTreeMap::new();
        for g in self.groups.values() {
            for (fp, a) in &g.alerts {
                if !a.resolved(now) {
                    firing.insert(fp.clone(), &a.labels);
                }
            }
        }
        self.inhibit
            .iter()
            .any(|i| i.mutes(labels, firing.values().copied()))
    }

    /// Flush every group that is due at `now`; returns what to send.
    pub fn due(&mut self, now: i64, silences: &[Silence]) -> Vec<Notification> {
        let keys: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let muted: BTreeSet<String> = self.groups[&key]
                .alerts
                .iter()
                .filter(|(_, a)| !a.resolved(now) && self.muted(&a.labels, silences, now))
                .map(|(fp, _)| fp.clone())
                .collect();
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            let firing: Vec<&Alert> = g
                .alerts
                .iter()
                .filter(|(fp, a)| !a.resolved(now) && !muted.contains(*fp))
                .map(|(_, a)| a)
                .collect();
            let resolved: Vec<&Alert> = g
                .alerts
                .iter()
                .filter(|(fp, a)| a.resolved(now) && g.notified.contains(*fp))
                .map(|(_, a)| a)
                .collect();
            let new_firing = firing
                .iter()
                .any(|a| !g.notified.contains(&a.fingerprint()));
            let repeat = !firing.is_empty()
                && g.last_sent_at
                    .is_some_and(|t| now - t >= g.repeat_interval_us);
            if new_firing || !resolved.is_empty() || repeat {
                let alerts: Vec<Alert> = firing
                    .iter()
                    .chain(&resolved)
                    .map(|a| (*a).clone())
                    .collect();
                out.push(Notification {
                    receiver: g.receiver.clone(),
                    group_key: key.clone(),
                    group_labels: g.labels.clone(),
                    alerts,
                });
                g.last_sent_at = Some(now);
                g.notified = firing.iter().map(|a| a.fingerprint()).collect();
            }
            g.alerts.retain(|_, a| !a.resolved(now));
            let notified = std::mem::take(&mut g.notified);
            g.notified = notified
                .into_iter()
                .filter(|fp| g.alerts.contains_key(fp))
                .collect();
            g.next_flush = now + g.group_interval_us;
            if g.alerts.is_empty() {
                self.groups.remove(&key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::matcher::Matcher;
    use crate::alarm::route::RouteConfig;

    const S: i64 = 1_000_000;

    fn alert(name: &str, pool: &str, starts: i64) -> Alert {
        Alert {
            labels: [("alertname", name), ("pool", pool)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Labels::new(),
            starts_at: starts,
            ends_at: 0,
            generator_url: String::new(),
        }
    }

    fn dispatcher(extra: &str) -> Dispatcher {
        let c: RouteConfig = toml::from_str(&format!(
            "receiver = \"r\"\ngroup_by = [\"alertname\"]\ngroup_wait = \"1s\"\n\
             group_interval = \"10s\"\nrepeat_interval = \"1m\"\n{extra}"
        ))
        .unwrap();
        Dispatcher::new(Route::compile(&c, &["r".into()]).unwrap(), Vec::new())
    }

    #[test]
    fn group_wait_then_group_interval_then_repeat() {
        let mut d = dispatcher("");
        d.put(alert("E", "a", 0), 0);
        assert!(d.due(0, &[]).is_empty(), "waits group_wait");
        d.put(alert("E", "b", 0), S / 2);
        let n = d.due(S, &[]);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].alerts.len(), 2, "both alerts in one group");
        assert_eq!(n[0].status(S), "firing");
        // a third alert waits for the group interval
        d.put(alert("E", "c", 2 * S), 2 * S);
        assert!(d.due(5 * S, &[]).is_empty());
        assert_eq!(d.due(11 * S, &[])[0].alerts.len(), 3);
        // nothing new: silent until repeat_interval
        assert!(d.due(21 * S, &[]).is_empty());
        assert_eq!(d.due(71 * S, &[]).len(), 1, "repeat");
        // resolved: sent once, then the group is gone
        for p in ["a", "b", "c"] {
            let mut a = alert("E", p, 0);
            a.ends_at = 75 * S;
            d.put(a, 75 * S);
        }
        let n = d.due(81 * S, &[]);
        assert_eq!(n[0].status(81 * S), "resolved");
        assert_eq!(d.group_count(), 0);
    }

    #[test]
    fn silenced_and_inhibited_alerts_are_not_sent() {
        let mut d = dispatcher("");
        let sil = Silence {
            id: "1".into(),
            matchers: vec![Matcher::parse("pool=\"a\"").unwrap()],
            starts_at: "1970-01-01T00:00:00Z".into(),
            ends_at: "2100-01-01T00:00:00Z".into(),
            created_by: "x".into(),
            comment: "y".into(),
            updated_at: String::new(),
        };
        d.put(alert("E", "a", 0), 0);
        assert!(d.due(S, std::slice::from_ref(&sil)).is_empty());
        // a resolved alert never notified as firing is not sent either
        let mut a = alert("E", "a", 0);
        a.ends_at = 2 * S;
        d.put(a, 2 * S);
        assert!(d.due(11 * S, &[sil]).is_empty());

        let c: RouteConfig =
            toml::from_str("receiver = \"r\"\ngroup_by = [\"...\"]\ngroup_wait = \"0s\"").unwrap();
        let inhibit = crate::alarm::route::Inhibit::compile(&crate::alarm::route::InhibitConfig {
            source_matchers: vec!["alertname=\"Down\"".into()],
            target_matchers: vec!["alertname=\"Slow\"".into()],
            equal: vec!["pool".into()],
        })
        .unwrap();
        let mut d = Dispatcher::new(Route::compile(&c, &["r".into()]).unwrap(), vec![inhibit]);
        d.put(alert("Down", "a", 0), 0);
        d.put(alert("Slow", "a", 0), 0);
        d.put(alert("Slow", "b", 0), 0);
        let sent: Vec<String> = d
            .due(0, &[])
            .iter()
            .flat_map(|n| {
                n.alerts
                    .iter()
                    .map(|a| format!("{}/{}", a.labels["alertname"], a.labels["pool"]))
            })
            .collect();
        assert_eq!(sent, ["Down/a", "Slow/b"]);
    }
}
