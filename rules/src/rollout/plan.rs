//! A rollout plan and its progression, as Argo Rollouts' canary steps and outcomes:
//!
//! - steps: set a percentage, set tenants, set CIDRs, pause for a duration, pause until a
//!   manual promote, run analysis (`count` passing intervals);
//! - analysis outcomes: pass → count towards the step; fail → count towards
//!   `failure_limit`, past it **abort** (roll back); inconclusive → pause and say why;
//! - manual promote, pause, resume and abort.
//!
//! [`Progress::handle`] is the whole state machine: it takes an [`Event`] and returns what
//! the runner must do ([`Action`]s); time is passed in.

use serde::{Deserialize, Serialize};

use super::judge::Verdict;
use crate::alarm::parse_duration;

/// One step of a plan, as written (`{ set_weight = 10 }`, `{ pause = "2m" }`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Send this sticky percentage of tenants to the gray pool.
    SetWeight(u8),
    /// Send these tenants to the gray pool.
    SetTenants(Vec<String>),
    /// Send these client networks to the gray pool.
    SetCidrs(Vec<String>),
    /// Wait this long (`"2m"`).
    Pause(String),
    /// Wait until someone promotes.
    PauseUntilPromote(bool),
    /// Run analysis until `count` intervals pass.
    Analysis { count: u32 },
}

impl Step {
    /// Whether applying the step changes the gray rule.
    pub fn changes_rule(&self) -> bool {
        matches!(
            self,
            Step::SetWeight(_) | Step::SetTenants(_) | Step::SetCidrs(_)
        )
    }
}

/// Check a plan's steps.
pub fn check_steps(steps: &[Step]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("a rollout needs at least one step".into());
    }
    if steps.len() > 100 {
        return Err("a rollout has at most 100 steps".into());
    }
    for (i, s) in steps.iter().enumerate() {
        let e = |m: String| format!("step {}: {m}", i + 1);
        match s {
            Step::SetWeight(w) if *w > 100 => return Err(e(format!("weight {w} > 100"))),
            Step::Pause(d) => {
                parse_duration(d).map_err(e)?;
            }
            Step::PauseUntilPromote(false) => {
                return Err(e("`pause_until_promote = false` is no step".into()))
            }
            Step::Analysis { count: 0 } => return Err(e("analysis `count` must be >= 1".into())),
            Step::SetTenants(t) if t.is_empty() => return Err(e("empty tenant list".into())),
            Step::SetCidrs(c) if c.is_empty() => return Err(e("empty CIDR list".into())),
            _ => {}
        }
    }
    Ok(())
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Working on step `step`.
    Progressing,
    /// Held: by a person, or because analysis could not decide.
    Paused { reason: String },
    /// Every step done.
    Succeeded,
    /// Rolled back.
    Aborted { reason: String },
}

/// A rollout's progress (kept in the control plane's store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Index of the current step.
    pub step: usize,
    #[serde(flatten)]
    pub phase: Phase,
    /// When the current step began (µs).
    pub step_started: i64,
    /// Passing analysis intervals in this step.
    pub passes: u32,
    /// Failed analysis intervals in this rollout.
    pub failures: u32,
    /// The last analysis verdict, with its reason.
    pub last_verdict: Option<Verdict>,
    /// Why the current step is held although it is done (a `confirm-promotion` webhook
    /// said no); cleared when the rollout moves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passes (the runner ticks).
    Tick,
    /// An analysis interval's combined verdict.
    Analysis(Verdict),
    /// A firing alarm on the rollout's route and gray tag (a failed check).
    Alarm(String),
    Promote,
    Pause(String),
    Resume,
    Abort(String),
    /// A gate holds the current step (the runner did not apply what would come next).
    Hold(String),
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply step `index` (a rule change, audited as `rollout_step`).
    Apply { index: usize, step: Step },
    /// Run an analysis interval now.
    Analyze,
    /// Roll the rule back to its pre-rollout version, as one change.
    Rollback { reason: String },
    /// The rollout is done.
    Complete,
    /// Tell people: the step is done but held (a gate said no).
    Held { reason: String },
    /// Tell people (webhook, log): the rollout paused and why.
    Paused { reason: String },
}

impl Progress {
    /// A new rollout at step 0 (the caller applies it with [`Progress::start`]'s action).
    pub fn start(steps: &[Step], now: i64) -> (Progress, Vec<Action>) {
        let mut p = Progress {
            step: 0,
            phase: Phase::Progressing,
            step_started: now,
            passes: 0,
            failures: 0,
            last_verdict: None,
            held: None,
        };
        let actions = p.enter(steps, now);
        (p, actions)
    }

    /// Whether the rollout is over.
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Succeeded | Phase::Aborted { .. })
    }

    /// Enter the current step: apply it if it changes the rule, and move through steps
    /// that complete at once.
    fn enter(&mut self, steps: &[Step], now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        self.held = None;
        loop {
            let Some(step) = steps.get(self.step) else {
                self.phase = Phase::Succeeded;
                out.push(Action::Complete);
                return out;
            };
            self.step_started = now;
            self.passes = 0;
            if step.changes_rule() {
                out.push(Action::Apply {
                    index: self.step,
                    step: step.clone(),
                });
                self.step += 1;
                continue;
            }
            if let Step::Analysis { .. } = step {
                out.push(Action::Analyze);
            }
            return out;
        }
    }

    /// Handle one event.
    pub fn handle(
        &mut self,
        steps: &[Step],
        failure_limit: u32,
        now: i64,
        ev: Event,
    ) -> Vec<Action> {
        if self.done() {
            return Vec::new();
        }
        match ev {
            Event::Abort(reason) => return self.abort(reason),
            Event::Hold(reason) => {
                if self.held.as_deref() == Some(reason.as_str()) {
                    return Vec::new();
                }
                self.held = Some(reason.clone());
                return vec![Action::Held { reason }];
            }
            Event::Pause(reason) => {
                self.phase = Phase::Paused {
                    reason: reason.clone(),
                };
                return vec![Action::Paused { reason }];
            }
            Event::Resume => {
                if matches!(self.phase, Phase::Paused { .. }) {
                    self.phase = Phase::Progressing;
                    self.step_started = now;
                }
                return Vec::new();
            }
            Event::Alarm(what) => {
                return self.failed(
                    steps,
                    failure_limit,
                    Verdict::Fail(format!("alarm firing: {what}")),
                )
            }
            _ => {}
        }
        let paused = matches!(self.phase, Phase::Paused { .. });
        let Some(step) = steps.get(self.step).cloned() else {
            return self.enter(steps, now);
        };
        match (ev, step) {
            (Event::Promote, _) => {
                // A promote resumes a paused rollout and finishes the current step.
                self.phase = Phase::Progressing;
                self.step += 1;
                self.enter(steps, now)
            }
            (_, _) if paused => Vec::new(),
            (Event::Tick, Step::Pause(d)) => {
                let us = parse_duration(&d).unwrap_or(0);
                if now - self.step_started >= us {
                    self.step += 1;
                    self.enter(steps, now)
                } else {
                    Vec::new()
                }
            }
            (Event::Analysis(v), Step::Analysis { count }) => {
                self.last_verdict = Some(v.clone());
                match v {
                    Verdict::Pass(_) => {
                        self.passes += 1;
                        if self.passes >= count {
                            self.step += 1;
                            self.enter(steps, now)
                        } else {
                            vec![Action::Analyze]
                        }
                    }
                    Verdict::Fail(_) => self.failed(steps, failure_limit, v),
                    Verdict::Inconclusive(r) => {
                        let reason = format!("analysis inconclusive: {r}");
                        self.phase = Phase::Paused {
                            reason: reason.clone(),
                        };
                        vec![Action::Paused { reason }]
                    }
                }
            }
            (Event::Tick, Step::Analysis { .. }) => vec![Action::Analyze],
            _ => Vec::new(),
        }
    }

    fn failed(&mut self, steps: &[Step], limit: u32, v: Verdict) -> Vec<Action> {
        self.failures += 1;
        self.last_verdict = Some(v.clone());
        if self.failures > limit {
            return self.abort(format!(
                "{} failed checks (failure_limit {limit}): {}",
                self.failures,
                v.reason()
            ));
        }
        // Below the limit: keep measuring.
        match steps.get(self.step) {
            Some(Step::Analysis { .. }) if !matches!(self.phase, Phase::Paused { .. }) => {
                vec![Action::Analyze]
            }
            _ => Vec::new(),
        }
    }

    fn abort(&mut self, reason: String) -> Vec<Action> {
        self.phase = Phase::Aborted {
            reason: reason.clone(),
        };
        vec![Action::Rollback { reason }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn plan() -> Vec<Step> {
        vec![
            Step::SetWeight(10),
            Step::Analysis { count: 2 },
            Step::SetWeight(50),
            Step::Pause("1m".into()),
            Step::SetWeight(100),
        ]
    }

    fn pass() -> Event {
        Event::Analysis(Verdict::Pass("ok".into()))
    }

    #[test]
    fn a_good_build_goes_10_50_100() {
        let steps = plan();
        check_steps(&steps).unwrap();
        let (mut p, a) = Progress::start(&steps, 0);
        assert_eq!(
            a,
            [
                Action::Apply {
                    index: 0,
                    step: Step::SetWeight(10)
                },
                Action::Analyze
            ]
        );
        assert_eq!(p.handle(&steps, 1, S, pass()), [Action::Analyze]);
        assert_eq!(
            p.handle(&steps, 1, 2 * S, pass()),
            [Action::Apply {
                index: 2,
                step: Step::SetWeight(50)
            }]
        );
        assert_eq!(p.step, 3, "now pausing");
        assert!(p.handle(&steps, 1, 30 * S, Event::Tick).is_empty());
        assert_eq!(
            p.handle(&steps, 1, 62 * S, Event::Tick),
            [
                Action::Apply {
                    index: 4,
                    step: Step::SetWeight(100)
                },
                Action::Complete
            ]
        );
        assert_eq!(p.phase, Phase::Succeeded);
        assert!(p.handle(&steps, 1, 70 * S, Event::Tick).is_empty());
    }

    #[test]
    fn failures_past_the_limit_roll_back() {
        let steps = plan();
        let (mut p, _) = Progress::start(&steps, 0);
        let fail = || Event::Analysis(Verdict::Fail("gray 40 % errors".into()));
        assert_eq!(p.handle(&steps, 1, S, fail()), [Action::Analyze]);
        let a = p.handle(&steps, 1, 2 * S, fail());
        assert!(
            matches!(&a[..], [Action::Rollback { reason }] if reason.contains("2 failed checks") && reason.contains("40 %")),
            "{a:?}"
        );
        assert!(matches!(p.phase, Phase::Aborted { .. }));
        // an alarm counts as a failed check
        let (mut p, _) = Progress::start(&steps, 0);
        let a = p.handle(&steps, 0, S, Event::Alarm("GrayWorseThanStable".into()));
        assert!(matches!(&a[..], [Action::Rollback { .. }]), "{a:?}");
    }

    #[test]
    fn inconclusive_pauses_and_people_steer() {
        let steps = vec![
            Step::SetWeight(10),
            Step::Analysis { count: 1 },
            Step::PauseUntilPromote(true),
            Step::SetWeight(100),
        ];
        let (mut p, _) = Progress::start(&steps, 0);
        let a = p.handle(
            &steps,
            1,
            S,
            Event::Analysis(Verdict::Inconclusive("12 gray requests".into())),
        );
        assert!(
            matches!(&a[..], [Action::Paused { reason }] if reason.contains("12 gray requests"))
        );
        assert!(p.handle(&steps, 1, 2 * S, Event::Tick).is_empty(), "paused");
        p.handle(&steps, 1, 3 * S, Event::Resume);
        assert_eq!(p.handle(&steps, 1, 4 * S, Event::Tick), [Action::Analyze]);
        p.handle(&steps, 1, 5 * S, pass());
        assert_eq!(p.step, 2, "waits for a promote");
        assert!(p.handle(&steps, 1, 99 * S, Event::Tick).is_empty());
        assert_eq!(
            p.handle(&steps, 1, 100 * S, Event::Promote),
            [
                Action::Apply {
                    index: 3,
                    step: Step::SetWeight(100)
                },
                Action::Complete
            ]
        );
        let (mut q, _) = Progress::start(&steps, 0);
        assert!(
            matches!(&q.handle(&steps, 1, S, Event::Abort("by hand".into()))[..], [Action::Rollback { reason }] if reason == "by hand")
        );
    }

    #[test]
    fn a_held_step_says_why_once_and_moving_on_clears_it() {
        let steps = vec![Step::SetWeight(50), Step::Analysis { count: 1 }];
        let (mut p, _) = Progress::start(&steps, 0);
        let hold = || Event::Hold("confirm-promotion `gate` answered 403".into());
        let a = p.handle(&steps, 1, S, hold());
        assert!(matches!(&a[..], [Action::Held { reason }] if reason.contains("403")));
        assert!(p.handle(&steps, 1, 2 * S, hold()).is_empty(), "said once");
        assert!(p.held.is_some());
        assert_eq!(p.handle(&steps, 1, 3 * S, pass()), [Action::Complete]);
        assert_eq!(p.held, None);
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("held"), "{json}");
    }

    #[test]
    fn bad_plans_are_refused() {
        for (steps, what) in [
            (vec![], "at least one"),
            (vec![Step::SetWeight(101)], "101"),
            (vec![Step::Pause("soon".into())], "step 1"),
            (vec![Step::Analysis { count: 0 }], "count"),
        ] {
            let e = check_steps(&steps).unwrap_err();
            assert!(e.contains(what), "{e}");
        }
        let parsed: Vec<Step> = toml::from_str::<std::collections::BTreeMap<String, Vec<Step>>>(
            "steps = [{ set_weight = 10 }, { pause = \"2m\" }, { analysis = { count = 3 } }, { pause_until_promote = true }]",
        )
        .unwrap()
        .remove("steps")
        .unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[2], Step::Analysis { count: 3 });
    }
}
