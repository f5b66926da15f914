//! The evaluator's loops: rule reloading, one task per rule, applying answers to the state
//! machines, restoring state after a restart, writing transitions, dispatching and
//! forwarding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use apus_rules::alarm::template::{format_value, plain, render};
use apus_rules::alarm::{
    fingerprint, fingerprint_merged, parse_rule_file, AlarmRule, Alert, Labels, State, Timing,
    Tracker,
};
use apus_schema::time::now_us;
use apus_schema::{AlarmRecord, Micros};
use apus_store::read::json::{num, text, Row};
use serde_json::json;

use super::{Active, Alarms, Inner, Record, Slot};
use crate::signals::Series;

/// Resolved alerts kept for the API (and the dispatcher's resolved notification).
const KEEP_RESOLVED_US: i64 = 15 * 60_000_000;

impl Inner {
    /// Whether a rule is switched on: its file, its project/env switch, its own switch.
    pub(super) fn enabled(&self, r: &AlarmRule) -> bool {
        r.enabled
            && self
                .switches
                .get(&format!("{}/{}", r.project, r.env))
                .copied()
                .unwrap_or(true)
            && self.switches.get(&r.id()).copied().unwrap_or(true)
    }
}

/// The labels every alert of `r` carries, before the series' own.
fn base_labels(r: &AlarmRule) -> Labels {
    let mut l = r.labels.clone();
    l.insert("alertname".into(), r.name.clone());
    l.insert("project".into(), r.project.clone());
    l.insert("env".into(), r.env.clone());
    l.insert("severity".into(), r.severity.clone());
    l
}

impl Alarms {
    /// Read every `*.toml` of the rules directory; on any error keep the old rules and
    /// return the error (file, rule, field).
    pub fn reload(self: &Arc<Self>) -> Result<bool, String> {
        let dir = &self.settings.rules_dir;
        let mut files: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => {
                let msg = format!("{}: {e}", dir.display());
                self.lock().reload_error = Some(msg.clone());
                return Err(msg);
            }
        };
        files.sort();
        let stamp: Vec<_> = files
            .iter()
            .filter_map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((p.clone(), m.modified().ok()?, m.len()))
            })
            .collect();
        if self.lock().stamp == stamp && !stamp.is_empty() {
            return Ok(false);
        }
        let mut taken = HashSet::new();
        let mut rules = Vec::new();
        let parsed: Result<(), String> = files.iter().try_for_each(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let meta = std::fs::metadata(p).map_err(|e| format!("{name}: {e}"))?;
            if meta.len() > 4 << 20 {
                return Err(format!("{name}: larger than 4 MiB"));
            }
            let text = std::fs::read_to_string(p).map_err(|e| format!("{name}: {e}"))?;
            rules.extend(parse_rule_file(&name, &text, &mut taken).map_err(|e| e.to_string())?);
            Ok(())
        });
        let mut g = self.lock();
        g.stamp = stamp;
        if let Err(e) = parsed {
            metrics::counter!("apus_alarm_reloads_total", "result" => "refused").increment(1);
            g.reload_error = Some(e.clone());
            return Err(e);
        }
        g.reload_error = None;
        let ids: HashSet<String> = rules.iter().map(|r| r.id()).collect();
        g.rules.retain(|id, _| ids.contains(id));
        for r in rules {
            let id = r.id();
            match g.rules.get_mut(&id) {
                Some(slot) => {
                    slot.key = super::groups::signal_key(&r);
                    slot.rule = Arc::new(r);
                }
                None => {
                    g.rules.insert(
                        id,
                        Slot {
                            key: super::groups::signal_key(&r),
                            rule: Arc::new(r),
                            series: HashMap::new(),
                            error: None,
                            last_eval_us: 0,
                            last_took_ms: 0.0,
                            evaluations: 0,
                        },
                    );
                }
            }
        }
        metrics::counter!("apus_alarm_reloads_total", "result" => "loaded").increment(1);
        metrics::gauge!("apus_alarm_rules").set(g.rules.len() as f64);
        Ok(true)
    }

    /// Apply one evaluation's answer to the rule's label sets; returns the rows to write.
    pub(super) fn apply(
        &self,
        id: &str,
        now: i64,
        took_ms: f64,
        answer: Result<Vec<Series>, String>,
    ) {
        let mut rows = Vec::new();
        let mut alerts = Vec::new();
        let mut g = self.lock();
        let enabled = g.rules.get(id).is_some_and(|s| g.enabled(&s.rule));
        let Some(slot) = g.rules.get_mut(id) else {
            return;
        };
        let rule = slot.rule.clone();
        slot.last_eval_us = now;
        slot.last_took_ms = took_ms;
        slot.evaluations += 1;
        let record = |a: &Active, state: &str, message: String| AlarmRecord {
            ts: Micros(now),
            project: rule.project.clone(),
            env: rule.env.clone(),
            rule: rule.id(),
            fingerprint: fingerprint(&a.labels),
            state: state.into(),
            severity: rule.severity.clone(),
            labels: serde_json::to_string(&a.labels).unwrap_or_default(),
            value: if a.tracker.value.is_finite() {
                a.tracker.value
            } else {
                0.0
            },
            since_us: a.tracker.active_since.max(0) as u64,
            message,
        };
        let series = match answer {
            Err(e) => {
                metrics::counter!("apus_alarm_rule_errors_total", "rule" => rule.id()).increment(1);
                if slot.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(rule = %rule.id(), error = %e, "alarm rule query failed");
                    let a = Active {
                        seen: 0,
                        labels: base_labels(&rule),
                        annotations: Labels::new(),
                        tracker: Tracker::default(),
                    };
                    rows.push(record(&a, "error", e.clone()));
                }
                slot.error = Some(e);
                drop(g);
                self.write(rows);
                return;
            }
            Ok(s) => s,
        };
        slot.error = None;
        let timing = Timing {
            for_us: rule.for_us,
            keep_firing_for_us: rule.keep_firing_for_us,
        };
        let base = base_labels(&rule);
        let gen = slot.evaluations;
        for s in series.iter().filter(|_| enabled) {
            let key = fingerprint_merged(&base, &s.labels);
            let holds = rule.condition.holds(s.value, s.previous);
            // Most label sets of most answers are healthy and unknown: nothing to keep.
            let a = match slot.series.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) if holds => {
                    let mut labels = base.clone();
                    labels.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                    v.insert(Active {
                        seen: gen,
                        labels,
                        annotations: Labels::new(),
                        tracker: Tracker::default(),
                    })
                }
                std::collections::hash_map::Entry::Vacant(_) => continue,
            };
            a.seen = gen;
            let step = a.tracker.step(now, holds, Some(s.value), timing);
            if a.tracker.state != State::Inactive || step.is_some() {
                let data = json!({"labels": &a.labels, "value": s.value, "evidence": &s.evidence});
                let mut ann: Labels = s.evidence.clone();
                for (k, t) in &rule.annotations {
                    ann.insert(k.clone(), render(t, &data, plain));
                }
                ann.entry("value".into())
                    .or_insert_with(|| format_value(s.value));
                ann.entry("condition".into())
                    .or_insert_with(|| rule.condition.to_string());
                a.annotations = ann;
            }
            if let Some(st) = step {
                let msg = a.annotations.get("summary").cloned().unwrap_or_else(|| {
                    format!(
                        "{} {} (value {})",
                        rule.name,
                        rule.condition,
                        format_value(s.value)
                    )
                });
                rows.push(record(a, st.name(), msg));
                if matches!(st, State::Firing | State::Resolved) {
                    alerts.push(self.alert(&rule, a, now));
                }
            }
        }
        for a in slot.series.values_mut().filter(|a| a.seen != gen) {
            let note = if enabled {
                "no longer in the answer"
            } else {
                "switched off"
            };
            let before = a.tracker.state;
            let st = if enabled {
                a.tracker.step(now, false, None, timing)
            } else if matches!(before, State::Firing | State::Pending) {
                // switched off: end the episode now, whatever keep_firing_for says
                let st = if before == State::Firing {
                    State::Resolved
                } else {
                    State::Inactive
                };
                a.tracker.state = st;
                a.tracker.resolved_at = now;
                Some(st)
            } else {
                None
            };
            if let Some(st) = st {
                rows.push(record(a, st.name(), format!("{}: {note}", rule.name)));
                if st == State::Resolved {
                    alerts.push(self.alert(&rule, a, now));
                }
            }
        }
        slot.series
            .retain(|_, a| !a.tracker.idle(now, KEEP_RESOLVED_US));
        let firing = g
            .rules
            .values()
            .flat_map(|s| s.series.values())
            .filter(|a| a.tracker.state == State::Firing)
            .count();
        metrics::gauge!("apus_alarm_firing").set(firing as f64);
        if let Some(d) = g.dispatcher.as_mut() {
            for a in &alerts {
                if !d.put(a.clone(), now) {
                    metrics::counter!("apus_alarm_groups_refused_total").increment(1);
                }
            }
        }
        drop(g);
        if !alerts.is_empty() {
            self.dispatch_wake.notify_one();
            self.deliver.forward(&alerts, now, self.resend_until(now));
        }
        self.write(rows);
    }

    fn resend_until(&self, now: i64) -> i64 {
        let d = self.settings.resend_delay.max(self.settings.interval);
        now + 4 * d.as_micros() as i64
    }

    /// The alert a label set makes, with its link to the root-cause view of its window.
    fn alert(&self, rule: &AlarmRule, a: &Active, now: i64) -> Alert {
        let resolved = a.tracker.state == State::Resolved;
        let from = a.tracker.active_since - rule.window_us;
        let to = if resolved { a.tracker.resolved_at } else { now };
        let mut q: Vec<(String, String)> = vec![
            ("from".into(), (from / 1000).to_string()),
            ("to".into(), (to.max(from + 1000) / 1000).to_string()),
        ];
        for k in ["project", "env", "pool", "route", "tag", "tenant"] {
            if let Some(v) = a.labels.get(k).filter(|v| !v.is_empty()) {
                q.push((k.into(), v.clone()));
            }
        }
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        Alert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.tracker.active_since,
            ends_at: if resolved { a.tracker.resolved_at } else { 0 },
            generator_url: format!("{}/api/v1/rootcause?{qs}", self.settings.external_url),
        }
    }

    /// Queue rows for the `alarms` table.
    fn write(&self, rows: Vec<AlarmRecord>) {
        if rows.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.try_send(rows) {
            let n = match &e {
                tokio::sync::mpsc::error::TrySendError::Full(r)
                | tokio::sync::mpsc::error::TrySendError::Closed(r) => r.len(),
            };
            metrics::counter!("apus_alarm_rows_dropped_total").increment(n as u64);
            tracing::error!(rows = n, "alarm history queue full: transitions not stored");
        }
    }
}

/// Write queued transitions, retrying (with backoff) until the store takes them.
pub(super) async fn write_loop(
    a: Arc<Alarms>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<AlarmRecord>>,
) {
    while let Some(mut rows) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            rows.extend(more);
            if rows.len() >= 10_000 {
                break;
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match (a.writer)(Record::Alarms(rows.clone())).await {
                Ok(()) => break,
                Err(e) => {
                    metrics::counter!("apus_alarm_write_retries_total").increment(1);
                    tracing::warn!(error = %e, rows = rows.len(), "alarm rows not stored yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Restore pending and firing label sets from the last 24 h of the `alarms` table, so
/// `for` does not start over and nothing fires twice. Returns how many were restored.
pub(super) async fn restore(a: &Arc<Alarms>) -> usize {
    let e = &a.engine;
    let d = e.dialect();
    let now = now_us();
    let sql = format!(
        "SELECT rule, fingerprint, state, labels, value, since_us, {us} AS at_us FROM {t} \
         WHERE {range} AND state <> 'error' ORDER BY at_us DESC LIMIT 200000",
        us = d.us(),
        t = e.table("alarms"),
        range = d.time_range(now - 86_400_000_000, now + 60_000_000),
    );
    let rows: Vec<Row> = match e.rows(&sql).await {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(error = %err, "alarm state not restored (alarms table unreadable)");
            return 0;
        }
    };
    let mut last: BTreeMap<(String, String), &Row> = BTreeMap::new();
    // newest first: the first row of each label set is its state
    for r in &rows {
        last.entry((
            text(r, "rule").to_string(),
            text(r, "fingerprint").to_string(),
        ))
        .or_insert(r);
    }
    let mut g = a.lock();
    let mut n = 0;
    let mut restored = Vec::new();
    for ((rule, fp), r) in last {
        let Some(state) = State::parse(text(r, "state")) else {
            continue;
        };
        if !matches!(state, State::Pending | State::Firing) {
            continue;
        }
        let Some(slot) = g.rules.get_mut(&rule) else {
            continue;
        };
        let labels: Labels = serde_json::from_str(text(r, "labels")).unwrap_or_default();
        if fingerprint(&labels) != fp {
            continue;
        }
        let Ok(fp) = u64::from_str_radix(&fp, 16) else {
            continue;
        };
        let tracker = Tracker::restore(
            state,
            num(r, "since_us") as i64,
            num(r, "at_us") as i64,
            num(r, "value"),
        );
        let active = Active {
            seen: 0,
            labels,
            annotations: Labels::new(),
            tracker,
        };
        if state == State::Firing {
            restored.push(a.alert(&slot.rule, &active, now));
        }
        slot.series.insert(fp, active);
        n += 1;
    }
    if let Some(d) = g.dispatcher.as_mut() {
        for al in restored {
            d.put_notified(al, now);
        }
    }
    n
}

/// Poll the rules directory every second; a changed directory is reloaded as a whole.
pub(super) async fn reload_loop(a: Arc<Alarms>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match a.reload() {
            Ok(true) => {
                tracing::info!(rules = a.lock().rules.len(), "alarm rules reloaded");
                super::groups::spawn_rule_tasks(&a);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "alarm rules refused; the old rules keep running")
            }
        }
    }
}

/// Flush notification groups when due.
pub(super) async fn dispatch_loop(a: Arc<Alarms>) {
    loop {
        let now = now_us();
        let (due, next) = {
            let mut g = a.lock();
            let silences = g.silences.clone();
            match g.dispatcher.as_mut() {
                Some(d) => (d.due(now, &silences), d.next_due()),
                None => return,
            }
        };
        for n in &due {
            a.deliver.notify(n, now);
        }
        let wait = next
            .map(|t| Duration::from_micros((t - now_us()).clamp(1_000, 1_000_000) as u64))
            .unwrap_or(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, a.dispatch_wake.notified()).await;
    }
}

/// Re-send every firing alert to the Alertmanagers each `resend_delay`, as Prometheus
/// does, so they keep them firing (and resolve them if Apus goes away).
pub(super) async fn forward_loop(a: Arc<Alarms>) {
    loop {
        tokio::time::sleep(a.settings.resend_delay).await;
        let now = now_us();
        let alerts: Vec<Alert> = {
            let g = a.lock();
            g.rules
                .values()
                .flat_map(|s| {
                    s.series
                        .values()
                        .filter(|x| x.tracker.state == State::Firing)
                        .map(|x| a.alert(&s.rule, x, now))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        a.deliver.forward(&alerts, now, a.resend_until(now));
    }
}
