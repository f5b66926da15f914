//! The rollout runner: drives every running rollout of the release state through its
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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apus_rules::rollout::{apply_step, Action, Event, Progress, Step, Verdict};
use apus_schema::time::now_us;
use apus_schema::{ChangeKind, ChangeRecord};

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
            let mut e = Edit::new(doc, kind, &project, &env, &scope);
            e.note = Some(format!("rollout {name}: {}", said.join("; ")));
            Ok(e)
        })
        .await;
    match rec {
        Ok(r) => Ok(Some(r)),
        Err(GatewayError::Conflict(m)) if m == "nothing to change" => Ok(None),
        Err(e) => Err(e),
    }
}

/// Counters of the current step kept in memory.
#[derive(Debug, Default)]
struct Mem {
    key: (usize, i64),
    passes: u32,
    failures: u32,
    last_analysis: i64,
}

/// Drive every running rollout, every `tick`, until the process ends.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    release: Arc<ReleaseState>,
    analyzer: Option<Analyzer>,
    tick: Duration,
) {
    rt.spawn(async move {
        let mut mem: HashMap<String, Mem> = HashMap::new();
        loop {
            tokio::time::sleep(tick).await;
            let cur = release.load_full();
            for (name, r) in cur.doc.rollouts.iter().filter(|(_, r)| !r.progress.done()) {
                let now = now_us();
                let mut p = r.progress.clone();
                let m = mem.entry(name.clone()).or_default();
                if m.key != (p.step, p.step_started) {
                    *m = Mem {
                        key: (p.step, p.step_started),
                        passes: 0,
                        failures: p.failures,
                        // the first analysis of a step waits one interval for traffic
                        last_analysis: p.step_started,
                    };
                }
                p.passes = m.passes;
                p.failures = p.failures.max(m.failures);
                let from = p.clone();
                let steps = &r.spec.steps;
                let limit = r.spec.analysis.failure_limit;
                let mut ev = Event::Tick;
                let analyzing = matches!(steps.get(p.step), Some(Step::Analysis { .. }))
                    && p.phase == apus_rules::rollout::Phase::Progressing;
                if analyzing && now - m.last_analysis >= r.spec.analysis.interval_us() {
                    m.last_analysis = now;
                    let route = cur.doc.routes.iter().find(|x| x.name == r.spec.route);
                    let req = AnalysisRequest {
                        rollout: name.clone(),
                        project: route.map(|x| x.project.clone()).unwrap_or_default(),
                        env: route.map(|x| x.env.clone()).unwrap_or_default(),
                        route: r.spec.route.clone(),
                        tag: r.spec.tag.clone(),
                        stable_tag: apus_rules::STABLE_TAG.into(),
                        window_us: r.spec.analysis.window_us(),
                        spec: r.spec.analysis.clone(),
                    };
                    let v = match &analyzer {
                        Some(a) => a(req).await.unwrap_or_else(|e| {
                            Verdict::Inconclusive(format!("analysis failed: {e}"))
                        }),
                        None => Verdict::Inconclusive(
                            "no analysis source on this node (run the rollout under `apus run`)"
                                .into(),
                        ),
                    };
                    tracing::info!(rollout = %name, verdict = ?v, "rollout analysis");
                    metrics::counter!("apus_rollout_analyses_total", "verdict" => match &v {
                        Verdict::Pass(_) => "pass",
                        Verdict::Fail(_) => "fail",
                        Verdict::Inconclusive(_) => "inconclusive",
                    })
                    .increment(1);
                    ev = Event::Analysis(v);
                }
                // Dry run: only what moves the rollout is committed.
                let mut dry = p.clone();
                let actions = dry.handle(steps, limit, now, ev.clone());
                m.passes = dry.passes;
                m.failures = dry.failures;
                let moves = actions.iter().any(|a| !matches!(a, Action::Analyze))
                    || dry.step != p.step
                    || dry.phase != p.phase;
                if !moves {
                    continue;
                }
                let actor = format!("rollout:{name}");
                match act(&release, name, &actor, "rollout runner", ev, Some(&from), &|_, _| Ok(())).await {
                    Ok(Some(rec)) => tracing::info!(rollout = %name, summary = %rec.summary, "rollout moved"),
                    Ok(None) => {}
                    Err(GatewayError::Conflict(m)) => tracing::debug!(rollout = %name, %m, "rollout: another runner was first"),
                    Err(e) => tracing::warn!(rollout = %name, error = %e, "rollout step not applied; retrying"),
                }
            }
        }
    });
}
