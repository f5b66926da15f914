//! The alarm evaluator: rule files from a directory (hot-reloaded), each rule evaluated
//! as rows land (woken by the store, at most `interval` apart), the state machine per
//! label set, every transition written to the `alarms` table, and delivery through the
//! routing tree, silences and inhibition to webhooks and Alertmanagers.
//!
//! **Evaluation strategy.** Each rule re-queries its short window on every wake-up rather
//! than keeping incremental state: the window is in memory (embedded store) or in one
//! partition (ClickHouse), the query is one aggregate scan, and the answer is then exactly
//! what the dashboards and root cause show for the same window. Each rule runs on a task
//! of its own with a time limit, so a slow rule delays only itself; a semaphore bounds the
//! rule queries in flight.
//!
//! **One evaluator per fleet.** The evaluator runs in the query tier, which reads the
//! whole store (every ingest node's rows in ClickHouse), so each alarm is evaluated once
//! over all nodes. Run it on one query node (`[alarms]` set there only).

pub mod api;
pub mod config;
pub mod deliver;
mod eval;
mod groups;
mod persist;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use apus_rules::alarm::{AlarmRule, Dispatcher, Labels, Silence, Tracker};
use apus_schema::{AlarmRecord, ChangeRecord};
use futures::future::BoxFuture;
use tokio::sync::{watch, Notify, Semaphore};

use crate::engine::Engine;
pub use config::{AlarmConfig, AlarmSettings};
use deliver::Deliverer;

/// Rows the evaluator writes: alarm transitions, and the audit rows of its API's changes.
pub enum Record {
    Alarms(Vec<AlarmRecord>),
    Change(ChangeRecord),
}

/// Writes rows durably (the ingest pipeline's WAL under `apus run`, ClickHouse under
/// `apus query`); an `Err` is retried by the caller.
pub type Writer = Arc<dyn Fn(Record) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One label set of one rule.
#[derive(Debug, Clone)]
struct Active {
    /// The evaluation that last saw the label set in an answer.
    seen: u64,
    labels: Labels,
    annotations: Labels,
    tracker: Tracker,
}

/// One rule and its label sets.
#[derive(Debug)]
struct Slot {
    rule: Arc<AlarmRule>,
    /// The rule's signal group ([`groups::signal_key`]), set when the rule is loaded.
    key: String,
    /// By fingerprint.
    series: HashMap<u64, Active>,
    error: Option<String>,
    last_eval_us: i64,
    last_took_ms: f64,
    evaluations: u64,
}

#[derive(Default)]
struct Inner {
    rules: BTreeMap<String, Slot>,
    /// Why the last reload was refused (the old rules kept running).
    reload_error: Option<String>,
    /// (path, modified, len) of the files last loaded.
    stamp: Vec<(PathBuf, std::time::SystemTime, u64)>,
    /// `project/env` and `project/env/rule` → on/off.
    switches: BTreeMap<String, bool>,
    silences: Vec<Silence>,
    dispatcher: Option<Dispatcher>,
    /// Tasks of the rules, by rule id.
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// The evaluator, shared by its tasks and the API.
pub struct Alarms {
    engine: Arc<Engine>,
    settings: AlarmSettings,
    state_dir: PathBuf,
    writer: Writer,
    inner: Mutex<Inner>,
    landed: watch::Receiver<u64>,
    slots: Semaphore,
    deliver: Deliverer,
    dispatch_wake: Notify,
    outbox: tokio::sync::mpsc::Sender<Vec<AlarmRecord>>,
}

impl Alarms {
    /// Tell the `changes_receiver` (if configured) of a change: who changed what, why, and
    /// a link to the change timeline around it. Sent at once, not grouped.
    pub fn announce(&self, rec: &ChangeRecord) {
        let Some(receiver) = &self.settings.changes_receiver else {
            return;
        };
        let ts = rec.ts.0;
        let labels: Labels = [
            ("alertname", "change"),
            ("kind", rec.kind.as_str()),
            ("actor", rec.actor.as_str()),
            ("project", rec.project.as_str()),
            ("env", rec.env.as_str()),
            ("scope", rec.scope.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let q = serde_urlencoded::to_string([
            ("from", ((ts - 900_000_000) / 1000).to_string()),
            ("to", ((ts + 900_000_000) / 1000).to_string()),
            ("project", rec.project.clone()),
            ("env", rec.env.clone()),
        ])
        .unwrap_or_default();
        let link = format!("{}/api/v1/changes?{q}", self.settings.external_url);
        let summary = format!(
            "{} by {} on {}/{} {}: {}",
            rec.kind, rec.actor, rec.project, rec.env, rec.scope, rec.summary
        );
        let n = apus_rules::alarm::Notification {
            receiver: receiver.clone(),
            group_key: format!("{{changes}}:{{version=\"{}\"}}", rec.to_version),
            group_labels: [("alertname".to_string(), "change".to_string())].into(),
            alerts: vec![apus_rules::alarm::Alert {
                labels,
                annotations: [
                    ("summary".to_string(), summary),
                    ("timeline".to_string(), link.clone()),
                    ("touched".to_string(), rec.touched.clone()),
                ]
                .into(),
                starts_at: ts,
                ends_at: 0,
                generator_url: link,
            }],
        };
        self.deliver.notify(&n, apus_schema::time::now_us());
    }

    /// The labels of every alert firing now (rollout analysis fails on those of its route).
    pub fn firing(&self) -> Vec<Labels> {
        let g = self.lock();
        g.rules
            .values()
            .flat_map(|s| s.series.values())
            .filter(|a| a.tracker.state == apus_rules::alarm::State::Firing)
            .map(|a| a.labels.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start the evaluator on the current runtime: load switches and silences from
    /// `state_dir`, restore pending and firing state from the `alarms` table, load the
    /// rules, then evaluate and deliver until the process ends.
    pub async fn start(
        engine: Arc<Engine>,
        settings: AlarmSettings,
        state_dir: PathBuf,
        writer: Writer,
        landed: watch::Receiver<u64>,
    ) -> Result<Arc<Alarms>, String> {
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| format!("alarm state dir {}: {e}", state_dir.display()))?;
        let (switches, silences) = persist::load(&state_dir)?;
        let deliver = Deliverer::start(
            &settings.receivers,
            &settings.alertmanagers,
            &settings.external_url,
        );
        let (outbox, rx) = tokio::sync::mpsc::channel(4096);
        let a = Arc::new(Alarms {
            engine,
            slots: Semaphore::new(settings.concurrency),
            settings,
            state_dir,
            writer,
            inner: Mutex::new(Inner {
                switches,
                silences,
                ..Default::default()
            }),
            landed,
            deliver,
            dispatch_wake: Notify::new(),
            outbox,
        });
        {
            let mut g = a.lock();
            g.dispatcher = a
                .settings
                .route
                .clone()
                .map(|r| Dispatcher::new(r, a.settings.inhibit.clone()));
        }
        tokio::spawn(eval::write_loop(a.clone(), rx));
        if let Err(e) = a.reload() {
            tracing::error!(error = %e, "alarm rules refused");
        }
        let restored = eval::restore(&a).await;
        tracing::info!(
            rules = a.lock().rules.len(),
            restored,
            dir = %a.settings.rules_dir.display(),
            "alarm evaluator started"
        );
        groups::spawn_rule_tasks(&a);
        tokio::spawn(eval::reload_loop(a.clone()));
        tokio::spawn(eval::dispatch_loop(a.clone()));
        if a.deliver.forwards() {
            tokio::spawn(eval::forward_loop(a.clone()));
        }
        Ok(a)
    }
}
