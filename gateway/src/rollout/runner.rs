//! The loop that drives running rollouts: every tick, on the node that holds the
//! `rollouts` lease of the control store (etcd; the single node of the embedded log), it
//! runs due analysis (after the `rollout` webhooks), asks the `confirm-promotion` gates
//! before a step would complete the rollout, and commits what moves a rollout; it also
//! keeps one task per running serial pool release (`crate::serial`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apus_rules::rollout::{Action, Event, HookType, Phase, Progress, RolloutDoc, Step, Verdict};
use apus_schema::time::now_us;

use super::hooks::{self, Place};
use super::{act, AnalysisRequest, Analyzer};
use crate::state::ReleaseState;
use crate::GatewayError;

/// How long a runner's lease lasts without renewal: the longest a dead node's rollouts
/// wait for another node to take over.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(2);

/// Counters of the current step kept in memory.
#[derive(Debug, Default)]
struct Mem {
    key: (usize, i64),
    passes: u32,
    failures: u32,
    last_analysis: i64,
    /// When a held step's gate may be asked again.
    next_gate: i64,
}

/// Keep renewing the runner's lease on its own task (so a long webhook or deploy hook
/// never lets it lapse unnoticed); `held` says whether this node holds it now.
fn keep_lease(rt: &tokio::runtime::Handle, release: Arc<ReleaseState>) -> Arc<AtomicBool> {
    let held = Arc::new(AtomicBool::new(false));
    let h = held.clone();
    let me = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    rt.spawn(async move {
        loop {
            let now = match release.control().hold("rollouts", &me, LEASE_TTL).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "rollout lease not renewed");
                    false
                }
            };
            if h.swap(now, Ordering::SeqCst) != now {
                tracing::info!(node = %me, held = now, "rollout runner lease");
                metrics::gauge!("apus_rollout_runner_leader").set(if now { 1.0 } else { 0.0 });
            }
            tokio::time::sleep(LEASE_RENEW).await;
        }
    });
    held
}

/// Drive every running rollout, every `tick`, until the process ends.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    release: Arc<ReleaseState>,
    analyzer: Option<Analyzer>,
    tick: Duration,
    deploy_hooks: Arc<Vec<crate::config::DeployHook>>,
) {
    let held = keep_lease(rt, release.clone());
    rt.spawn(async move {
        let mut mem: HashMap<String, Mem> = HashMap::new();
        let mut serial: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            tokio::time::sleep(tick).await;
            let cur = release.load_full();
            serial.retain(|_, t| !t.is_finished());
            if cur.doc.rollouts.values().all(|r| r.progress.done())
                && !cur.doc.serial.values().any(|d| d.running())
            {
                continue;
            }
            if !held.load(Ordering::SeqCst) {
                // Another node drives them; its in-memory counts are its own.
                mem.clear();
                serial.drain().for_each(|(_, t)| t.abort());
                continue;
            }
            for (pool, _) in cur.doc.serial.iter().filter(|(_, d)| d.running()) {
                if !serial.contains_key(pool) {
                    let t = tokio::spawn(crate::serial::run(
                        release.clone(),
                        pool.clone(),
                        deploy_hooks.clone(),
                        held.clone(),
                    ));
                    serial.insert(pool.clone(), t);
                }
            }
            for (name, r) in cur.doc.rollouts.iter().filter(|(_, r)| !r.progress.done()) {
                let m = mem.entry(name.clone()).or_default();
                let route = cur.doc.routes.iter().find(|x| x.name == r.spec.route);
                let place = Place {
                    project: route.map(|x| x.project.clone()).unwrap_or_default(),
                    env: route.map(|x| x.env.clone()).unwrap_or_default(),
                };
                drive(&release, name, r, m, &place, analyzer.as_ref()).await;
            }
        }
    });
}

/// One tick of one rollout.
async fn drive(
    release: &ReleaseState,
    name: &str,
    r: &RolloutDoc,
    m: &mut Mem,
    place: &Place,
    analyzer: Option<&Analyzer>,
) {
    let now = now_us();
    let mut p = r.progress.clone();
    if m.key != (p.step, p.step_started) {
        *m = Mem {
            key: (p.step, p.step_started),
            passes: 0,
            failures: p.failures,
            // the first analysis of a step waits one interval for traffic
            last_analysis: p.step_started,
            next_gate: 0,
        };
    }
    p.passes = m.passes;
    p.failures = p.failures.max(m.failures);
    let from = p.clone();
    let steps = &r.spec.steps;
    let limit = r.spec.analysis.failure_limit;
    let mut ev = Event::Tick;
    let analyzing =
        matches!(steps.get(p.step), Some(Step::Analysis { .. })) && p.phase == Phase::Progressing;
    if analyzing && now - m.last_analysis >= r.spec.analysis.interval_us() {
        m.last_analysis = now;
        let v = analyze(r, name, place, &p, analyzer).await;
        // Too little data before one whole window of the step has passed is not yet a
        // reason to pause: the step's traffic is still filling the window.
        let young = now - p.step_started < r.spec.analysis.window_us();
        ev = match v {
            Verdict::Inconclusive(_) if young => Event::Tick,
            v => Event::Analysis(v),
        };
    }
    // Dry run: only what moves the rollout is committed.
    let mut dry = p.clone();
    let mut actions = dry.handle(steps, limit, now, ev.clone());
    if actions.contains(&Action::Complete) {
        // Flagger's confirm-promotion: the last step waits for every gate's 2xx.
        if now < m.next_gate {
            return;
        }
        let gate = hooks::gate(&r.spec, place, HookType::ConfirmPromotion, &p.phase, p.step).await;
        if let Err(why) = gate {
            m.next_gate = now + r.spec.analysis.interval_us().min(10_000_000);
            ev = Event::Hold(why);
            dry = p.clone();
            actions = dry.handle(steps, limit, now, ev.clone());
        }
    }
    m.passes = dry.passes;
    m.failures = dry.failures;
    let moves = actions.iter().any(|a| !matches!(a, Action::Analyze))
        || dry.step != p.step
        || dry.phase != p.phase;
    if !moves {
        return;
    }
    let actor = format!("rollout:{name}");
    match act(
        release,
        name,
        &actor,
        "rollout runner",
        ev,
        Some(&from),
        &|_, _| Ok(()),
    )
    .await
    {
        Ok(Some(rec)) => tracing::info!(rollout = %name, summary = %rec.summary, "rollout moved"),
        Ok(None) => {}
        Err(GatewayError::Conflict(m)) => {
            tracing::debug!(rollout = %name, %m, "rollout: another runner was first")
        }
        Err(e) => tracing::warn!(rollout = %name, error = %e, "rollout step not applied; retrying"),
    }
}

/// One analysis run: the `rollout` webhooks first (a non-2xx is a failed check), then the
/// analyzer's verdict.
async fn analyze(
    r: &RolloutDoc,
    name: &str,
    place: &Place,
    p: &Progress,
    analyzer: Option<&Analyzer>,
) -> Verdict {
    let v = if let Err(why) = hooks::gate(&r.spec, place, HookType::Rollout, &p.phase, p.step).await
    {
        Verdict::Fail(why)
    } else {
        let req = AnalysisRequest {
            rollout: name.to_string(),
            project: place.project.clone(),
            env: place.env.clone(),
            route: r.spec.route.clone(),
            tag: r.spec.tag.clone(),
            stable_tag: apus_rules::STABLE_TAG.into(),
            pool: r.spec.pool.clone(),
            window_us: r.spec.analysis.window_us(),
            spec: r.spec.analysis.clone(),
        };
        match analyzer {
            Some(a) => a(req)
                .await
                .unwrap_or_else(|e| Verdict::Inconclusive(format!("analysis failed: {e}"))),
            None => Verdict::Inconclusive(
                "no analysis source on this node (run the rollout under `apus run`)".into(),
            ),
        }
    };
    tracing::info!(rollout = %name, verdict = ?v, "rollout analysis");
    metrics::counter!("apus_rollout_analyses_total", "verdict" => match &v {
        Verdict::Pass(_) => "pass",
        Verdict::Fail(_) => "fail",
        Verdict::Inconclusive(_) => "inconclusive",
    })
    .increment(1);
    v
}
