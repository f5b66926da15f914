//! Calling a rollout's webhooks (Flagger's types and body, see
//! `apus_rules::rollout::webhook`): gates are awaited and their answer decides; the
//! notifications (`event`, `rollback`, `post-rollout`) are sent in the background, each
//! retried a few times, and a failure is logged and counted, never fatal.

use std::time::Duration;

use apus_rules::rollout::webhook::{checksum, flagger_phase, payload, HookContext};
use apus_rules::rollout::{Action, HookType, Phase, RolloutSpec, WebhookSpec};
use bytes::Bytes;

/// Where the rollout runs: what hooks are told beside the spec.
#[derive(Debug, Clone, Default)]
pub struct Place {
    pub project: String,
    pub env: String,
}

fn context<'a>(
    spec: &'a RolloutSpec,
    place: &'a Place,
    step: usize,
    sum: &'a str,
    message: Option<&'a str>,
) -> HookContext<'a> {
    HookContext {
        rollout: &spec.name,
        project: &place.project,
        env: &place.env,
        route: &spec.route,
        pool: &spec.pool,
        tag: &spec.tag,
        step: step + 1,
        checksum: sum,
        message,
    }
}

/// POST one hook; `Err` says why it did not answer 2xx.
async fn call(hook: &WebhookSpec, body: &serde_json::Value) -> Result<(), String> {
    let timeout = Duration::from_micros(hook.timeout_us().max(1) as u64);
    let r = apus_control::http::post(
        &hook.url,
        "application/json",
        Bytes::from(body.to_string()),
        timeout,
    )
    .await;
    let outcome = match &r {
        Ok((s, _)) if (200..300).contains(s) => "ok",
        Ok(_) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("apus_rollout_webhooks_total", "type" => hook.kind.as_str(), "outcome" => outcome)
        .increment(1);
    match r {
        Ok((s, _)) if (200..300).contains(&s) => Ok(()),
        Ok((s, answer)) => {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            Err(format!(
                "{} webhook `{}` answered {s}{}",
                hook.kind.as_str(),
                hook.name,
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", text.trim())
                }
            ))
        }
        Err(e) => Err(format!(
            "{} webhook `{}` failed: {e}",
            hook.kind.as_str(),
            hook.name
        )),
    }
}

/// Run the gates of `kind` in order; the first that does not answer 2xx says no.
pub async fn gate(
    spec: &RolloutSpec,
    place: &Place,
    kind: HookType,
    phase: &Phase,
    step: usize,
) -> Result<(), String> {
    let sum = checksum(spec);
    let c = context(spec, place, step, &sum, None);
    for h in spec.webhooks.iter().filter(|h| h.kind == kind) {
        call(h, &payload(h, flagger_phase(phase, kind), &c)).await?;
    }
    Ok(())
}

/// After a committed move: tell the `event` hooks what happened, the `rollback` hooks of a
/// rollback, and the `post-rollout` hooks of the end. In the background.
pub fn notify(
    spec: &RolloutSpec,
    place: &Place,
    phase: &Phase,
    step: usize,
    actions: &[Action],
    message: &str,
) {
    let mut kinds = vec![HookType::Event];
    if actions.iter().any(|a| matches!(a, Action::Rollback { .. })) {
        kinds.push(HookType::Rollback);
    }
    if actions
        .iter()
        .any(|a| matches!(a, Action::Rollback { .. } | Action::Complete))
    {
        kinds.push(HookType::PostRollout);
    }
    let sum = checksum(spec);
    let c = context(spec, place, step, &sum, Some(message));
    let calls: Vec<(WebhookSpec, serde_json::Value)> = spec
        .webhooks
        .iter()
        .filter(|h| kinds.contains(&h.kind))
        .map(|h| (h.clone(), payload(h, flagger_phase(phase, h.kind), &c)))
        .collect();
    if calls.is_empty() {
        return;
    }
    let name = spec.name.clone();
    tokio::spawn(async move {
        for (h, body) in calls {
            let mut last = String::new();
            for attempt in 0..3u32 {
                match call(&h, &body).await {
                    Ok(()) => {
                        last.clear();
                        break;
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            if !last.is_empty() {
                tracing::warn!(rollout = %name, error = %last, "rollout notification not delivered");
            }
        }
    });
}
