//! The gateway's release state: the rule set in force (swapped atomically with `arc-swap`),
//! its version, the snapshots that rollbacks return to, and the change history.
//!
//! Invariants: versions only grow; a change is validated completely before the swap, so a
//! refused change leaves the old rules serving; requests that loaded the old `Arc<RuleSet>`
//! finish on it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use apus_rules::{GrayRuleSpec, RouteSpec, RuleSet};
use apus_schema::{ChangeRecord, Micros};
use arc_swap::ArcSwap;

use crate::config::file_loader;
use crate::metrics as m;
use crate::GatewayError;

/// How many rule versions are kept for rollback.
const KEEP_VERSIONS: usize = 1000;

/// The rule set in force and its version.
pub struct Current {
    /// Version number (starts at 1 with the config file's rules).
    pub version: u64,
    /// The compiled rules.
    pub rules: RuleSet,
    /// Metric handles per route and lane: `lanes[route][0]` is stable, `[i + 1]` rule `i`.
    lanes: Vec<Vec<m::LaneMetrics>>,
}

impl Current {
    /// Wrap a rule set, registering its lanes' metric handles.
    pub fn new(version: u64, rules: RuleSet) -> Self {
        let lanes = rules
            .routes()
            .map(|r| {
                std::iter::once(m::LaneMetrics::new(
                    &r.name,
                    &r.stable_pool,
                    apus_rules::STABLE_TAG,
                ))
                .chain(
                    r.gray_rules
                        .iter()
                        .map(|g| m::LaneMetrics::new(&r.name, &g.pool, &g.tag)),
                )
                .collect()
            })
            .collect();
        Current {
            version,
            rules,
            lanes,
        }
    }

    /// The metric handles of a decision's lane.
    pub fn lane(&self, d: apus_rules::Decision) -> &m::LaneMetrics {
        &self.lanes[d.route][d.rule.map_or(0, |i| i + 1)]
    }
}

struct History {
    snapshots: VecDeque<(u64, Vec<RouteSpec>)>,
    changes: Vec<ChangeRecord>,
    file: Option<PathBuf>,
}

/// A subscriber to the change feed.
pub type ChangeListener = Box<dyn Fn(&ChangeRecord) + Send>;

/// Shared release state.
pub struct ReleaseState {
    current: ArcSwap<Current>,
    pools: Vec<String>,
    base_dir: Option<PathBuf>,
    history: Mutex<History>,
    listeners: Mutex<Vec<ChangeListener>>,
}

/// Microseconds since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl ReleaseState {
    /// Start at version 1 with the config file's rules.
    pub fn new(
        rules: RuleSet,
        pools: Vec<String>,
        base_dir: Option<&Path>,
        history_file: Option<PathBuf>,
    ) -> Self {
        let routes: Vec<RouteSpec> = rules.routes().cloned().collect();
        metrics::gauge!(m::RULE_VERSION).set(1.0);
        ReleaseState {
            current: ArcSwap::from_pointee(Current::new(1, rules)),
            pools,
            base_dir: base_dir.map(Path::to_path_buf),
            history: Mutex::new(History {
                snapshots: VecDeque::from([(1, routes)]),
                changes: Vec::new(),
                file: history_file,
            }),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// The rules in force (one atomic load; keep the `Arc` for the whole request).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Current>> {
        self.current.load()
    }

    /// The rules in force as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// Call `f` for every future change (the pipeline's change feed).
    pub fn on_change(&self, f: ChangeListener) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Send every future change to an ingest node (`POST {base}/ingest/v1/changes`) from a
    /// background thread, so the admin API never waits on the network.
    pub fn ship_changes_to(&self, base: &str) {
        let url = format!("{}/ingest/v1/changes", base.trim_end_matches('/'));
        let (tx, rx) = std::sync::mpsc::sync_channel::<ChangeRecord>(10_000);
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while let Ok(rec) = rx.recv() {
                let body = serde_json::to_vec(&rec).unwrap_or_default();
                if let Err(e) = crate::access_log::post_with_retry(&client, &url, body) {
                    tracing::error!(error = %e, "change event not delivered to ingest");
                }
            }
        });
        self.on_change(Box::new(move |rec| {
            if tx.try_send(rec.clone()).is_err() {
                tracing::error!("change feed queue full; change event not shipped");
            }
        }));
    }

    /// Change history, oldest first.
    pub fn changes(&self) -> Vec<ChangeRecord> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .changes
            .clone()
    }

    /// Versions available for rollback.
    pub fn versions(&self) -> Vec<u64> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.snapshots.iter().map(|(v, _)| *v).collect()
    }

    fn compile(&self, routes: &[RouteSpec]) -> Result<RuleSet, GatewayError> {
        let pools: Vec<&str> = self.pools.iter().map(String::as_str).collect();
        let loader = file_loader(self.base_dir.as_deref());
        Ok(RuleSet::compile(routes, &pools, &loader)?)
    }

    /// Validate and swap in a whole new route list. Returns the change record.
    pub fn replace_routes(
        &self,
        routes: Vec<RouteSpec>,
        kind: &str,
        actor: &str,
        reason: &str,
        scope: (&str, &str, &str),
    ) -> Result<ChangeRecord, GatewayError> {
        let new_rules = self.compile(&routes)?;
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        let diff = old.rules.diff(&new_rules);
        let touched = old.rules.touched(&new_rules).join(" ");
        let version = old.version + 1;
        self.current
            .store(Arc::new(Current::new(version, new_rules)));
        metrics::gauge!(m::RULE_VERSION).set(version as f64);
        h.snapshots.push_back((version, routes));
        while h.snapshots.len() > KEEP_VERSIONS {
            h.snapshots.pop_front();
        }
        let summary = if diff.is_empty() {
            format!("no rule change; {reason}")
        } else {
            format!("{}; {reason}", diff.join("; "))
        };
        let (project, env, scope) = scope;
        let rec = ChangeRecord {
            ts: Micros(now_us()),
            kind: kind.into(),
            actor: actor.into(),
            project: project.into(),
            env: env.into(),
            scope: scope.into(),
            from_version: old.version,
            to_version: version,
            summary,
            touched,
        };
        self.record(&mut h, rec.clone());
        Ok(rec)
    }

    /// Replace one route's gray rules.
    pub fn set_route_rules(
        &self,
        route: &str,
        rules: Vec<GrayRuleSpec>,
        actor: &str,
        reason: &str,
    ) -> Result<ChangeRecord, GatewayError> {
        let cur = self.load_full();
        let mut routes: Vec<RouteSpec> = cur.rules.routes().cloned().collect();
        let r = routes
            .iter_mut()
            .find(|r| r.name == route)
            .ok_or_else(|| GatewayError::NotFound(format!("route {route}")))?;
        r.gray_rules = rules;
        let (p, e) = (r.project.clone(), r.env.clone());
        self.replace_routes(routes, "gray_rules", actor, reason, (&p, &e, route))
    }

    /// The route list of an earlier version.
    pub fn snapshot(&self, version: u64) -> Result<Vec<RouteSpec>, GatewayError> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.snapshots
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| GatewayError::NotFound(format!("rule version {version}")))
    }

    /// Record a change that is not a rule swap (server shelf operations).
    pub fn record_event(&self, rec: ChangeRecord) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        self.record(&mut h, rec);
    }

    fn record(&self, h: &mut History, rec: ChangeRecord) {
        tracing::info!(kind = %rec.kind, actor = %rec.actor, scope = %rec.scope,
            from = rec.from_version, to = rec.to_version, summary = %rec.summary, "change applied");
        if let Some(path) = &h.file {
            let line = serde_json::to_string(&rec).unwrap_or_default();
            let res = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = res {
                tracing::error!(error = %e, path = %path.display(), "could not persist change history");
            }
        }
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(&rec);
        }
        h.changes.push(rec);
    }
}
