//! Making a change: an edit of the state in force is validated and compiled, summarised
//! with its rule diff (or turned into a proposal waiting for approvals), committed to the
//! control store against the version it was based on, installed, audited and announced.

use std::io::Write;
use std::time::{Duration, Instant};

use apus_control::{Change, ControlError, Pending, ReleaseDoc};
use apus_rules::{GrayRuleSpec, RuleSet};
use apus_schema::time::now_us;
use apus_schema::{ChangeKind, ChangeRecord, Micros, Touched};

use super::{Current, ReleaseState, MAX_REASON};
use crate::metrics as m;
use crate::GatewayError;

/// What a change is, besides the new state: the audit fields an edit fills in.
pub struct Edit {
    /// The new release state.
    pub doc: ReleaseDoc,
    /// Change kind.
    pub kind: ChangeKind,
    /// Project and env of what changed (empty when it spans several).
    pub project: String,
    pub env: String,
    /// Route name, `*`, or `pool/addr`.
    pub scope: String,
    /// What changed, when the rule diff does not say it (server operations).
    pub summary: Option<String>,
    /// What it touched, when the rule diff does not say it.
    pub touched: Option<Touched>,
    /// Approvals the change needs before it applies (protected envs); 0 = none.
    pub approvals: u32,
    /// An admin's emergency bypass of the approvals (audited as such).
    pub emergency: bool,
    /// Said after the diff in the summary (e.g. who approved it).
    pub note: Option<String>,
}

impl Edit {
    /// An edit with no approval requirement and the summary taken from the rule diff.
    pub fn new(doc: ReleaseDoc, kind: ChangeKind, project: &str, env: &str, scope: &str) -> Edit {
        Edit {
            doc,
            kind,
            project: project.into(),
            env: env.into(),
            scope: scope.into(),
            summary: None,
            touched: None,
            approvals: 0,
            emergency: false,
            note: None,
        }
    }
}

/// The state at `cur` with `e` recorded as a proposal (id `version`) waiting for its
/// approvals; the rules in force stay as they are.
fn proposed_doc(cur: &Current, e: &Edit, version: u64, actor: &str, reason: &str) -> ReleaseDoc {
    let mut doc = (*cur.doc).clone();
    doc.pending.push(Pending {
        id: version,
        kind: e.kind,
        author: actor.into(),
        reason: reason.into(),
        project: e.project.clone(),
        env: e.env.clone(),
        scope: e.scope.clone(),
        ts: now_us(),
        required: e.approvals,
        approvals: Vec::new(),
        base_routes: cur.doc.routes.clone(),
        routes: e.doc.routes.clone(),
    });
    doc
}

impl ReleaseState {
    /// Wait (up to 1 s) until this node serves `version` or newer.
    async fn catch_up(&self, version: u64) {
        let start = Instant::now();
        while self.load().version < version && start.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Make a change: `edit` derives the new state from the current one; it is validated,
    /// committed to the control store against the version it was based on, installed, and
    /// announced. With `base` (the client's `If-Match` / `base_version`), a stale base is
    /// a conflict (409); without, the edit is re-applied to the newest state on conflict.
    pub async fn change(
        &self,
        base: Option<u64>,
        actor: &str,
        reason: &str,
        edit: impl Fn(&Current) -> Result<Edit, GatewayError>,
    ) -> Result<ChangeRecord, GatewayError> {
        let reason: String = reason.chars().take(MAX_REASON).collect();
        if let Some(b) = base {
            self.catch_up(b).await;
        }
        let _serial = self.change_lock.lock().await;
        // The audit copy must be writable before anything is committed: a change that
        // could not be audited is refused rather than made silently.
        let audit = match &self.history_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        GatewayError::Unavailable(format!(
                            "the history file {} cannot be written ({e}); change refused",
                            path.display()
                        ))
                    })?,
            ),
            None => None,
        };
        for _ in 0..8 {
            let cur = self.load_full();
            if let Some(b) = base {
                if b != cur.version {
                    return Err(GatewayError::Conflict(format!(
                        "the change is based on version {b}, the current version is {}",
                        cur.version
                    )));
                }
            }
            let (change, rules) = self.prepare(&cur, edit(&cur)?, actor, &reason)?;
            let rec = change.record.clone();
            // Held from the commit to the install: the watch sees the commit at once, and
            // would otherwise compile the same rules a second time, beside this install.
            let installing = self.install_lock.lock().await;
            match self.control.commit(change.clone()).await {
                Ok(()) => {
                    self.install_locked(&change, rules).await;
                    drop(installing);
                    self.announce(&rec, audit);
                    return Ok(rec);
                }
                Err(ControlError::Conflict { current, .. }) if base.is_none() => {
                    drop(installing);
                    self.catch_up(current).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(GatewayError::Conflict(
            "the release state kept changing underneath this change; retry".into(),
        ))
    }

    /// What `edit` would commit now, validated and with its rule diff, without committing
    /// it (the console's preview before a release manager applies a change).
    pub fn preview(
        &self,
        actor: &str,
        reason: &str,
        edit: impl Fn(&Current) -> Result<Edit, GatewayError>,
    ) -> Result<ChangeRecord, GatewayError> {
        let reason: String = reason.chars().take(MAX_REASON).collect();
        let cur = self.load_full();
        let (change, _) = self.prepare(&cur, edit(&cur)?, actor, &reason)?;
        Ok(change.record)
    }

    /// Turn an edit of `cur` into the change to commit and the rules it puts in force:
    /// validated (it must compile, even when it is only proposed), summarised with its
    /// rule diff, and — for a protected env without an emergency bypass — turned into a
    /// proposal that waits for approvals.
    fn prepare(
        &self,
        cur: &Current,
        e: Edit,
        actor: &str,
        reason: &str,
    ) -> Result<(Change, RuleSet), GatewayError> {
        let mut e = e;
        // Whatever made the edit (a PUT resending 10k CIDRs, a rollout step, a rollback),
        // lists equal to those in force are shared with them: the versions the control
        // log keeps hold one copy, and the compile sees them unchanged at a pointer.
        for r in &mut e.doc.routes {
            if let Some(o) = cur.doc.routes.iter().find(|o| o.name == r.name) {
                GrayRuleSpec::share_lists(&mut r.gray_rules, &o.gray_rules);
            }
        }
        let after = self.compile(&e.doc.routes)?;
        let diff = cur.rules.diff(&after);
        let diff = if diff.is_empty() {
            "no rule change".to_string()
        } else {
            diff.join("; ")
        };
        let version = cur.version + 1;
        let (doc, rules, kind, summary, touched) = if e.approvals > 0 && !e.emergency {
            let doc = proposed_doc(cur, &e, version, actor, reason);
            let summary = format!(
                "proposed change #{version} ({}), needs {} approval(s): {diff}; {reason}",
                e.kind, e.approvals
            );
            let rules = self.compile(&doc.routes)?;
            (
                doc,
                rules,
                ChangeKind::ChangeProposed.as_str().to_string(),
                summary,
                Touched::new(),
            )
        } else {
            let mut what = e.summary.clone().unwrap_or(diff);
            if let Some(n) = &e.note {
                what = format!("{what}; {n}");
            }
            let summary = if e.emergency && e.approvals > 0 {
                metrics::counter!(m::EMERGENCY_BYPASS).increment(1);
                format!(
                    "EMERGENCY, {} approval(s) bypassed: {what}; {reason}",
                    e.approvals
                )
            } else {
                format!("{what}; {reason}")
            };
            let touched = e.touched.clone().unwrap_or_else(|| {
                let diff = cur.rules.touched(&after);
                diff.iter().map(String::as_str).collect()
            });
            (e.doc, after, e.kind.as_str().to_string(), summary, touched)
        };
        let record = ChangeRecord {
            ts: Micros(now_us()),
            kind,
            actor: actor.into(),
            project: e.project,
            env: e.env,
            scope: e.scope,
            from_version: cur.version,
            to_version: version,
            summary,
            touched: touched.to_string(),
        };
        let change = Change {
            version,
            base_version: cur.version,
            record,
            state: doc,
        };
        Ok((change, rules))
    }

    fn announce(&self, rec: &ChangeRecord, audit: Option<std::fs::File>) {
        tracing::info!(kind = %rec.kind, actor = %rec.actor, scope = %rec.scope,
            from = rec.from_version, to = rec.to_version, summary = %rec.summary, "change applied");
        if let Some(mut f) = audit {
            let line = serde_json::to_string(rec).unwrap_or_default();
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.sync_data()) {
                // Opened a moment ago; the control store holds the change and its audit
                // fields either way.
                tracing::error!(error = %e, "could not append to the history file");
            }
        }
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(rec);
        }
    }
}
