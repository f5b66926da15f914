//! Rollouts on the gateway: the runner ([`spawn`]) drives every running rollout of the release state through its
//! steps, as ordinary audited changes (`rollout_step`; abort is a `rollback` to the rules
//! before the rollout), with analysis from an [`Analyzer`] the binary wires to the query
//! tier's signals.
//!
//! Progress that changes the release (a step applied, a pause, an abort, the end) is
//! committed to the control store; the passing analysis runs of the current step are
//! counted in memory (a restart repeats the current step's analysis, never a step).
//! Several nodes may run the runner on one store: a change is committed only against the
//! progress it was computed from (step, phase, step start), so a step is applied once
//! however many nodes race for it.

pub mod hooks;
mod runner;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use apus_rules::rollout::{apply_step, Action, Event, Progress, Step, Verdict};
use apus_schema::time::now_us;
use apus_schema::{ChangeKind, ChangeRecord};
pub use runner::spawn;

use crate::state::{Edit, ReleaseState};
use crate::GatewayError;

/// What one analysis run asks: gray against stable on the route, over the window.
#[derive(Debug, Clone)]
pub struct AnalysisRequest {
    pub rollout: String,
    pub project: String,
    pub env: String,
    pub route: String,
    pub tag: String,
    pub stable_tag: String,
    /// The gray pool.
    pub pool: String,
    pub window_us: i64,
    pub spec: apus_rules::rollout::AnalysisSpec,
}

/// Answers analysis requests with a verdict (the binary wires it to the query tier).
pub type Analyzer = Arc<
    dyn Fn(AnalysisRequest) -> Pin<Box<dyn Future<Output = Result<Verdict, String>> + Send>>
        + Send
        + Sync,
>;

/// A step as people say it (`weight 10 %`).
pub fn describe(step: &Step) -> String {
    match step {
        Step::SetWeight(w) => format!("weight {w} %"),
        Step::SetTenants(t) => format!("tenants {}", t.join(",")),
        Step::SetCidrs(c) => format!("networks {}", c.join(",")),
        Step::Pause(d) => format!("pause {d}"),
        Step::PauseUntilPromote(_) => "pause until promoted".into(),
        Step::Analysis { count } => format!("analysis ×{count}"),
    }
}

/// What a committed move said, for its webhooks.
struct Said {
    spec: apus_rules::rollout::RolloutSpec,
    place: hooks::Place,
    progress: Progress,
    actions: Vec<Action>,
    note: String,
}

/// Apply `ev` to rollout `name` and commit what it changes. With `from`, the rollout must
/// still be at that progress (step, phase, step start) in the newest state, and its
/// counters are taken from it; `authz` checks the caller may change the route's project
/// and env. Returns `None` when the event changes nothing worth a version.
pub async fn act(
    release: &ReleaseState,
    name: &str,
    actor: &str,
    reason: &str,
    ev: Event,
    from: Option<&Progress>,
    authz: &(dyn Fn(&str, &str) -> Result<(), GatewayError> + Sync),
) -> Result<Option<ChangeRecord>, GatewayError> {
    let now = now_us();
    let said_last: std::sync::Mutex<Option<Said>> = Default::default();
    let rec = release
        .change(None, actor, reason, |cur| {
            let mut doc = (*cur.doc).clone();
            let r = doc
                .rollouts
                .get_mut(name)
                .ok_or_else(|| GatewayError::NotFound(format!("rollout {name}")))?;
            let mut p = match from {
                Some(f) => {
                    let same = r.progress.step == f.step
                        && r.progress.phase == f.phase
                        && r.progress.step_started == f.step_started;
                    if !same {
                        return Err(GatewayError::Conflict(format!(
                            "rollout {name} moved on meanwhile"
                        )));
                    }
                    f.clone()
                }
                None => r.progress.clone(),
            };
            if p.done() {
                return Err(GatewayError::Conflict(format!(
                    "rollout {name} is over ({:?})",
                    p.phase
                )));
            }
            let before = (p.step, p.phase.clone());
            let actions = p.handle(
                &r.spec.steps,
                r.spec.analysis.failure_limit,
                now,
                ev.clone(),
            );
            let spec = r.spec.clone();
            let base_rules = r.base_rules.clone();
            r.progress = p.clone();
            let route = doc
                .routes
                .iter_mut()
                .find(|x| x.name == spec.route)
                .ok_or_else(|| GatewayError::NotFound(format!("route {}", spec.route)))?;
            authz(&route.project, &route.env)?;
            let mut kind = ChangeKind::RolloutStep;
            let mut said = Vec::new();
            for a in &actions {
                match a {
                    Action::Apply { index, step } => {
                        apply_step(&spec, &mut route.gray_rules, step);
                        said.push(format!("step {}: {}", index + 1, describe(step)));
                    }
                    Action::Rollback { reason } => {
                        route.gray_rules = base_rules.clone();
                        kind = ChangeKind::Rollback;
                        said.push(format!("aborted and rolled back: {reason}"));
                    }
                    Action::Complete => said.push("completed".into()),
                    Action::Paused { reason } => said.push(format!("paused: {reason}")),
                    Action::Held { reason } => said.push(format!("held: {reason}")),
                    Action::Analyze => {}
                }
            }
            if said.is_empty() && (p.step, p.phase.clone()) != before {
                said.push(format!("{:?}", p.phase).to_lowercase());
            }
            if said.is_empty() {
                return Err(GatewayError::Conflict("nothing to change".into()));
            }
            let (project, env, scope) =
                (route.project.clone(), route.env.clone(), route.name.clone());
            let note = format!("rollout {name}: {}", said.join("; "));
            *said_last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Said {
                spec,
                place: hooks::Place {
                    project: project.clone(),
                    env: env.clone(),
                },
                progress: p,
                actions,
                note: note.clone(),
            });
            let mut e = Edit::new(doc, kind, &project, &env, &scope);
            e.note = Some(note);
            Ok(e)
        })
        .await;
    match rec {
        Ok(r) => {
            if let Some(s) = said_last.into_inner().unwrap_or_else(|p| p.into_inner()) {
                hooks::notify(
                    &s.spec,
                    &s.place,
                    &s.progress.phase,
                    s.progress.step,
                    &s.actions,
                    &s.note,
                );
            }
            Ok(Some(r))
        }
        Err(GatewayError::Conflict(m)) if m == "nothing to change" => Ok(None),
        Err(e) => Err(e),
    }
}
