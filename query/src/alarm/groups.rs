//! Signal groups: rules asking the same question of the same window share one scan, and
//! each group runs on a task of its own (woken as rows land, at most `interval` apart, its
//! query under `rule_timeout`), so a slow group delays only its own rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_rules::alarm::AlarmRule;
use apus_schema::time::now_us;
use serde_json::json;

use super::{Alarms, Slot};
use crate::signals::{self, Series};

/// Least time between two evaluations of one group.
const MIN_GAP: Duration = Duration::from_millis(100);

/// Rules asking the same question of the same window share one scan: the key is what
/// the query depends on (kind, scope, window, parameters, and the union of `group_by` and
/// filter dimensions); thresholds and filter values are applied per rule afterwards.
pub(super) fn signal_key(r: &AlarmRule) -> String {
    let mut dims: Vec<&str> = r
        .group_by
        .iter()
        .chain(r.filter.keys())
        .map(String::as_str)
        .collect();
    dims.sort_unstable();
    dims.dedup();
    serde_json::to_string(&json!([
        r.kind,
        r.project,
        r.env,
        r.window_us,
        r.min_requests,
        r.condition.relative,
        r.metric,
        r.gray_tag,
        r.stable_tag,
        r.sql,
        dims,
    ]))
    .unwrap_or_default()
}

/// The one query a group of rules with the same [`signal_key`] runs: filters every member
/// shares stay filters, the others become `group_by` dimensions.
pub(super) fn shared_rule(members: &[Arc<AlarmRule>]) -> AlarmRule {
    let mut r = (*members[0]).clone();
    r.filter
        .retain(|k, v| members.iter().all(|m| m.filter.get(k) == Some(v)));
    let mut dims: Vec<String> = members
        .iter()
        .flat_map(|m| m.group_by.iter().chain(m.filter.keys()))
        .filter(|k| !r.filter.contains_key(*k))
        .cloned()
        .collect();
    dims.sort_unstable();
    dims.dedup();
    r.group_by = dims;
    r
}

/// A member rule's share of the group's answer: the series its filters select, without
/// the dimensions only the group added.
pub(super) fn member_series(shared: &AlarmRule, rule: &AlarmRule, all: &[Series]) -> Vec<Series> {
    let extra: Vec<&String> = shared
        .group_by
        .iter()
        .filter(|g| !rule.group_by.contains(g))
        .filter(|g| !(rule.kind == apus_rules::alarm::Kind::GrayRegression && *g == "route"))
        .collect();
    let wanted: Vec<(&String, &String)> = rule
        .filter
        .iter()
        .filter(|(k, _)| !shared.filter.contains_key(*k))
        .collect();
    all.iter()
        .filter(|s| wanted.iter().all(|(k, v)| s.labels.get(*k) == Some(*v)))
        .map(|s| {
            let mut s = s.clone();
            for k in &extra {
                s.labels.remove(*k);
            }
            s
        })
        .collect()
}

/// Start a task for every signal group that has none (and stop those that are gone).
pub(super) fn spawn_rule_tasks(a: &Arc<Alarms>) {
    let mut g = a.lock();
    let mut keys: Vec<String> = g.rules.values().map(|s| s.key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    g.tasks.retain(|k, t| {
        let keep = keys.contains(k) && !t.is_finished();
        if !keep {
            t.abort();
        }
        keep
    });
    for k in keys {
        if let std::collections::hash_map::Entry::Vacant(v) = g.tasks.entry(k) {
            let t = tokio::spawn(group_task(a.clone(), v.key().clone()));
            v.insert(t);
        }
    }
    metrics::gauge!("apus_alarm_signal_groups").set(g.tasks.len() as f64);
}

/// One signal group: wait for rows to land (or `interval`), run the shared query within
/// `rule_timeout`, apply each member rule's share.
async fn group_task(a: Arc<Alarms>, key: String) {
    let mut landed = a.landed.clone();
    loop {
        let (members, disabled): (Vec<Arc<AlarmRule>>, Vec<String>) = {
            let g = a.lock();
            let all: Vec<&Slot> = g.rules.values().filter(|s| s.key == key).collect();
            if all.is_empty() {
                return;
            }
            (
                all.iter()
                    .filter(|s| g.enabled(&s.rule))
                    .map(|s| s.rule.clone())
                    .collect(),
                all.iter()
                    .filter(|s| !g.enabled(&s.rule))
                    .map(|s| s.rule.id())
                    .collect(),
            )
        };
        let started = Instant::now();
        let now = now_us();
        // A switched-off rule is not queried; its empty answer ends what it had firing.
        for id in &disabled {
            a.apply(id, now, 0.0, Ok(Vec::new()));
        }
        if !members.is_empty() {
            let shared = shared_rule(&members);
            let answer = {
                let _slot = a.slots.acquire().await;
                match tokio::time::timeout(
                    a.settings.rule_timeout,
                    signals::evaluate(
                        &a.engine,
                        &shared,
                        now,
                        (signals::MAX_SERIES * members.len()).min(1_000_000),
                    ),
                )
                .await
                {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "query took longer than {:?}",
                        a.settings.rule_timeout
                    )),
                }
            };
            let took = started.elapsed();
            metrics::histogram!("apus_alarm_eval_seconds").record(took.as_secs_f64());
            let ms = took.as_secs_f64() * 1000.0;
            for m in &members {
                let share = answer
                    .as_ref()
                    .map(|all| member_series(&shared, m, all))
                    .map_err(Clone::clone);
                a.apply(&m.id(), now, ms, share);
            }
        }
        tokio::time::sleep(MIN_GAP.saturating_sub(started.elapsed())).await;
        let _ = tokio::time::timeout(a.settings.interval, landed.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_rules::alarm::{parse_rule_file, Labels};
    use std::collections::HashSet;

    fn rules(text: &str) -> Vec<Arc<AlarmRule>> {
        parse_rule_file("t.toml", text, &mut HashSet::new())
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn series(route: &str, tenant: &str, v: f64) -> Series {
        Series {
            labels: [("route", route), ("tenant", tenant)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: v,
            previous: None,
            evidence: Labels::new(),
        }
    }

    #[test]
    fn rules_with_one_question_share_one_scan() {
        let rs = rules(
            r#"
            [[rule]]
            name = "a"
            project = "p"
            env = "e"
            kind = "error_rate"
            filter = { route = "r1" }
            group_by = ["tenant"]
            condition = "> 0.1"
            [[rule]]
            name = "b"
            project = "p"
            env = "e"
            kind = "error_rate"
            filter = { route = "r2" }
            group_by = ["tenant"]
            condition = "> 0.9"
            [[rule]]
            name = "c"
            project = "p"
            env = "e"
            kind = "error_rate"
            group_by = ["route", "tenant"]
            condition = "> 0.5"
            [[rule]]
            name = "d"
            project = "p"
            env = "e"
            kind = "p99_latency"
            group_by = ["route", "tenant"]
            condition = "> 0.5"
            "#,
        );
        let keys: Vec<String> = rs.iter().map(|r| signal_key(r)).collect();
        assert!(keys[0] == keys[1] && keys[1] == keys[2] && keys[2] != keys[3]);
        let shared = shared_rule(&rs[..3]);
        assert!(shared.filter.is_empty());
        assert_eq!(shared.group_by, ["route", "tenant"]);
        let all = [
            series("r1", "x", 1.0),
            series("r2", "x", 0.5),
            series("r2", "y", 0.2),
        ];
        let a = member_series(&shared, &rs[0], &all);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].labels,
            [("tenant".to_string(), "x".to_string())].into()
        );
        assert_eq!(member_series(&shared, &rs[1], &all).len(), 2);
        let c = member_series(&shared, &rs[2], &all);
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|s| s.labels.contains_key("route")));
        // alone, a rule keeps its filter in the query
        let alone = shared_rule(&rs[..1]);
        assert_eq!(alone.filter.get("route").map(String::as_str), Some("r1"));
        assert_eq!(alone.group_by, ["tenant"]);
    }
}
