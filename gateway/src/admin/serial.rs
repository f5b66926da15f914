//! Serial pool release handlers: start one, list them, abort one. Each is an audited
//! change; the stages are driven by `crate::serial` on the runner's node.

use apus_rules::rollout::{SerialDoc, SerialPhase, SerialSpec};
use apus_schema::time::now_us;
use apus_schema::ChangeKind;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::servers::pool_scope;
use super::{authenticate, change_answer, parse_body, AdminState, ApiResult, Reason};
use crate::pools::Pool;
use crate::state::Edit;
use crate::GatewayError;

pub(super) async fn list(s: &AdminState, h: &HeaderMap) -> ApiResult {
    super::state_part(s, h, "releases", |d| json!(d.serial))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    release: SerialSpec,
    #[serde(default)]
    reason: String,
}

pub(super) async fn start(s: &AdminState, h: &HeaderMap, body: &[u8]) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let b: Start = parse_body(body)?;
        let spec = b.release;
        spec.check().map_err(GatewayError::BadRequest)?;
        if !s.deploy_hooks.iter().any(|h| h.name == spec.hook) {
            return Err(GatewayError::BadRequest(format!(
                "no deploy hook `{}` in the gateway config (`[[deploy_hooks]]`)",
                spec.hook
            )));
        }
        let servers = spec
            .servers
            .iter()
            .map(|a| Pool::canonical(a))
            .collect::<Result<Vec<_>, _>>()?;
        s.release
            .change(None, &t.name, &b.reason, |cur| {
                pool_scope(cur, t, &spec.pool)?;
                let mut doc = (*cur.doc).clone();
                if doc.serial.get(&spec.pool).is_some_and(SerialDoc::running) {
                    return Err(GatewayError::Conflict(format!(
                        "a release is running on pool {}",
                        spec.pool
                    )));
                }
                let members = doc
                    .pools
                    .get(&spec.pool)
                    .map(|p| p.servers.clone())
                    .unwrap_or_default();
                let order = if servers.is_empty() {
                    members.clone()
                } else {
                    servers.clone()
                };
                if let Some(x) = order.iter().find(|a| !members.contains(a)) {
                    return Err(GatewayError::BadRequest(format!(
                        "server {x} is not in pool {}",
                        spec.pool
                    )));
                }
                if order.is_empty() {
                    return Err(GatewayError::BadRequest(format!(
                        "pool {} has no server",
                        spec.pool
                    )));
                }
                let note = format!(
                    "pool {} release of {} started over {} server(s): {}",
                    spec.pool,
                    spec.build,
                    order.len(),
                    order.join(", ")
                );
                doc.serial.insert(
                    spec.pool.clone(),
                    SerialDoc::new(spec.clone(), order, &t.name, now_us()),
                );
                let mut e = Edit::new(doc, ChangeKind::PoolRelease, "", "", &spec.pool);
                e.summary = Some(note);
                let mut touched = apus_schema::Touched::new();
                touched.add("pool", &spec.pool);
                e.touched = Some(touched);
                Ok(e)
            })
            .await
    }
    .await;
    change_answer(ChangeKind::PoolRelease, r)
}

pub(super) async fn abort(s: &AdminState, h: &HeaderMap, pool: &str, body: &[u8]) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let b: Reason = if body.is_empty() {
            Reason::default()
        } else {
            parse_body(body)?
        };
        let why = if b.reason.is_empty() {
            format!("aborted by {}", t.name)
        } else {
            b.reason.clone()
        };
        s.release
            .change(None, &t.name, &b.reason, |cur| {
                pool_scope(cur, t, pool)?;
                let mut doc = (*cur.doc).clone();
                let d = doc
                    .serial
                    .get_mut(pool)
                    .filter(|d| d.running())
                    .ok_or_else(|| {
                        GatewayError::Conflict(format!("no release is running on pool {pool}"))
                    })?;
                d.phase = SerialPhase::Aborted {
                    reason: why.clone(),
                };
                let note = format!(
                    "pool {pool} release of {} aborted at server {}/{} ({}): {why}",
                    d.spec.build,
                    d.index + 1,
                    d.servers.len(),
                    d.stage.as_str()
                );
                let mut e = Edit::new(doc, ChangeKind::PoolRelease, "", "", pool);
                e.summary = Some(note);
                Ok(e)
            })
            .await
    }
    .await;
    change_answer(ChangeKind::PoolRelease, r)
}
