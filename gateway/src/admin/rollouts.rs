//! Rollout handlers: start a rollout, list them, and steer one (promote, pause, resume,
//! abort). Each is an audited change of the release state.

use apus_rules::rollout::{apply_step, Event, HookType, Phase, Progress, RolloutDoc, RolloutSpec};
use apus_schema::time::now_us;
use apus_schema::ChangeKind;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{authenticate, change_answer, may_change, parse_body, AdminState, ApiResult, Reason};
use crate::rollout::hooks::{self, Place};
use crate::state::Edit;
use crate::GatewayError;

pub(super) async fn list(s: &AdminState, h: &HeaderMap) -> ApiResult {
    super::state_part(s, h, "rollouts", |d| json!(d.rollouts))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    rollout: RolloutSpec,
    #[serde(default)]
    reason: String,
}

pub(super) async fn start(s: &AdminState, h: &HeaderMap, body: &[u8]) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let b: Start = parse_body(body)?;
        b.rollout.check().map_err(GatewayError::BadRequest)?;
        let spec = b.rollout;
        // Flagger's pre-rollout gates answer before any traffic moves; a no refuses the
        // start (nothing is committed).
        let place = {
            let cur = s.release.load();
            let route = cur
                .doc
                .routes
                .iter()
                .find(|r| r.name == spec.route)
                .ok_or_else(|| GatewayError::NotFound(format!("route {}", spec.route)))?;
            may_change(t, &route.project, &route.env)?;
            Place {
                project: route.project.clone(),
                env: route.env.clone(),
            }
        };
        if spec.webhooks.iter().any(|h| h.kind == HookType::PreRollout) {
            hooks::gate(&spec, &place, HookType::PreRollout, &Phase::Progressing, 0)
                .await
                .map_err(|why| GatewayError::Conflict(format!("rollout not started: {why}")))?;
        }
        let rec = s
            .release
            .change(None, &t.name, &b.reason, |cur| {
                let mut doc = (*cur.doc).clone();
                if let Some(old) = doc.rollouts.get(&spec.name) {
                    if !old.progress.done() {
                        return Err(GatewayError::Conflict(format!(
                            "rollout {} is running",
                            spec.name
                        )));
                    }
                }
                if let Some((n, _)) = doc
                    .rollouts
                    .iter()
                    .find(|(_, r)| r.spec.route == spec.route && !r.progress.done())
                {
                    return Err(GatewayError::Conflict(format!(
                        "rollout {n} is running on route {}",
                        spec.route
                    )));
                }
                if !doc.pools.contains_key(&spec.pool) {
                    return Err(GatewayError::BadRequest(format!("no pool `{}`", spec.pool)));
                }
                let route = doc
                    .routes
                    .iter_mut()
                    .find(|r| r.name == spec.route)
                    .ok_or_else(|| GatewayError::NotFound(format!("route {}", spec.route)))?;
                may_change(t, &route.project, &route.env)?;
                let base_rules = route.gray_rules.clone();
                let (progress, actions) = Progress::start(&spec.steps, now_us());
                let mut said = Vec::new();
                for a in &actions {
                    if let apus_rules::rollout::Action::Apply { index, step } = a {
                        apply_step(&spec, &mut route.gray_rules, step);
                        said.push(format!(
                            "step {}: {}",
                            index + 1,
                            crate::rollout::describe(step)
                        ));
                    }
                }
                let (project, env, scope) =
                    (route.project.clone(), route.env.clone(), route.name.clone());
                doc.rollouts.insert(
                    spec.name.clone(),
                    RolloutDoc {
                        spec: spec.clone(),
                        progress,
                        base_rules,
                        started_by: t.name.clone(),
                    },
                );
                let mut e = Edit::new(doc, ChangeKind::RolloutStep, &project, &env, &scope);
                e.note = Some(format!(
                    "rollout {} started; {}",
                    spec.name,
                    said.join("; ")
                ));
                Ok(e)
            })
            .await?;
        if let Some(r) = s.release.load().doc.rollouts.get(&spec.name) {
            hooks::notify(
                &spec,
                &place,
                &r.progress.phase,
                r.progress.step,
                &[],
                &format!("rollout {} started by {}", spec.name, t.name),
            );
        }
        Ok(rec)
    }
    .await;
    change_answer(ChangeKind::RolloutStep, r)
}

pub(super) async fn steer(
    s: &AdminState,
    h: &HeaderMap,
    name: &str,
    verb: &str,
    body: &[u8],
) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let b: Reason = if body.is_empty() {
            Reason::default()
        } else {
            parse_body(body)?
        };
        let why = if b.reason.is_empty() {
            format!("{verb} by {}", t.name)
        } else {
            b.reason.clone()
        };
        let ev = match verb {
            "promote" => Event::Promote,
            "pause" => Event::Pause(why.clone()),
            "resume" => Event::Resume,
            "abort" => Event::Abort(why.clone()),
            v => return Err(GatewayError::NotFound(format!("rollout action `{v}`"))),
        };
        crate::rollout::act(&s.release, name, &t.name, &b.reason, ev, None, &|p, e| {
            may_change(t, p, e)
        })
        .await?
        .ok_or_else(|| GatewayError::Conflict(format!("`{verb}` changes nothing now")))
    }
    .await;
    change_answer(ChangeKind::RolloutStep, r)
}
