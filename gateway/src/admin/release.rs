//! Release handlers: routes and their gray rules, rollback, change history, status, and
//! the approvals of changes to protected environments.

use apus_rules::{Entries, GrayRuleSpec};
use apus_schema::{ChangeKind, ChangeRecord};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    authenticate, base_version, change_answer, may_change, parse_body, AdminState, Answer,
    ApiResult, Reason,
};
use crate::state::{Current, Edit};
use crate::GatewayError;
use apus_auth::{Principal, Role};

pub(super) async fn list_routes(s: &AdminState, h: &HeaderMap) -> ApiResult {
    authenticate(h, &s.tokens)?;
    let cur = s.release.load_full();
    let routes: Vec<_> = cur.rules.routes().collect();
    Ok(Answer::versioned(
        cur.version,
        json!({ "version": cur.version, "routes": routes }),
    ))
}

pub(super) async fn list_changes(s: &AdminState, h: &HeaderMap) -> ApiResult {
    authenticate(h, &s.tokens)?;
    let changes = s.release.changes().await?;
    let versions: Vec<u64> = changes.iter().map(|c| c.to_version).collect();
    let v = s.release.load().version;
    Ok(Answer::versioned(
        v,
        json!({ "version": v, "versions": versions, "changes": changes }),
    ))
}

pub(super) async fn status(s: &AdminState, h: &HeaderMap) -> ApiResult {
    authenticate(h, &s.tokens)?;
    let v = s.release.load().version;
    Ok(Answer::versioned(
        v,
        json!({ "version": v, "control": s.control, "store_connected": s.release.store_connected() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRules {
    rules: Vec<GrayRuleSpec>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    base_version: Option<u64>,
    /// An admin's emergency bypass of a protected env's approvals.
    #[serde(default)]
    emergency: bool,
    /// Validate and answer the change it would be, without making it.
    #[serde(default)]
    dry_run: bool,
}

/// Approvals a change to `env` needs, and whether `t` may bypass them.
fn approvals(
    s: &AdminState,
    t: &Principal,
    env: &str,
    emergency: bool,
) -> Result<u32, GatewayError> {
    if emergency && t.role != Role::Admin {
        return Err(GatewayError::Forbidden(format!(
            "token `{}` may not bypass approvals (admins only)",
            t.name
        )));
    }
    Ok(s.approvals.get(env).copied().unwrap_or(0))
}

pub(super) async fn set_rules(
    s: &AdminState,
    h: &HeaderMap,
    route: &str,
    body: &[u8],
) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let body: SetRules = parse_body(body)?;
        let how = How::new(
            h,
            body.base_version,
            &body.reason,
            body.emergency,
            body.dry_run,
        )?;
        change_rules(s, t, route, how, |old| {
            // A tenants file is named in the config, never through the API: a rule may
            // keep one its route already uses, not point at a new path.
            for g in &body.rules {
                if let Some(f) = &g.tenants_file {
                    if !old.iter().any(|o| o.tenants_file.as_ref() == Some(f)) {
                        return Err(GatewayError::BadRequest(format!(
                            "rule `{}`: tenants_file `{f}` can be set only in the config \
                             file, not through the API (list tenants in `tenants` instead)",
                            g.name
                        )));
                    }
                }
            }
            Ok(body.rules.clone())
        })
        .await
    }
    .await;
    rules_answer(r)
}

/// Entries to add to and remove from one gray rule's inline tenant and CIDR lists.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRule {
    #[serde(default)]
    add_tenants: Vec<String>,
    #[serde(default)]
    remove_tenants: Vec<String>,
    #[serde(default)]
    add_cidrs: Vec<String>,
    #[serde(default)]
    remove_cidrs: Vec<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    base_version: Option<u64>,
    #[serde(default)]
    emergency: bool,
    #[serde(default)]
    dry_run: bool,
}

/// Move single tenants or CIDRs into or out of one rule without resending the route's
/// rules (what HAProxy's `add map`/`del map` does, but validated, durable and audited;
/// [`GrayRuleSpec::edit_entries`] says how entries compare). A call that changes nothing
/// is refused (400), so a retry never makes an empty version.
pub(super) async fn patch_rule(
    s: &AdminState,
    h: &HeaderMap,
    route: &str,
    rule: &str,
    body: &[u8],
) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let body: PatchRule = parse_body(body)?;
        let how = How::new(
            h,
            body.base_version,
            &body.reason,
            body.emergency,
            body.dry_run,
        )?;
        change_rules(s, t, route, how, |old| {
            let mut rules = old.to_vec();
            let r = rules
                .iter_mut()
                .find(|r| r.name == rule)
                .ok_or_else(|| GatewayError::NotFound(format!("rule {rule} of route {route}")))?;
            let tenants = Entries {
                add: &body.add_tenants,
                remove: &body.remove_tenants,
            };
            let cidrs = Entries {
                add: &body.add_cidrs,
                remove: &body.remove_cidrs,
            };
            let changed = r
                .edit_entries(tenants, cidrs)
                .map_err(|e| GatewayError::BadRequest(format!("rule `{rule}`: {e}")))?;
            if !changed {
                return Err(GatewayError::BadRequest(format!(
                    "rule `{rule}`: nothing to change (every entry to add is listed already, \
                     none to remove is)"
                )));
            }
            Ok(rules)
        })
        .await
    }
    .await;
    rules_answer(r)
}

/// How a rule change is made: the version it is based on, why, and whether it bypasses
/// approvals or only previews.
struct How<'a> {
    base: Option<u64>,
    reason: &'a str,
    emergency: bool,
    dry_run: bool,
}

impl<'a> How<'a> {
    fn new(
        h: &HeaderMap,
        base: Option<u64>,
        reason: &'a str,
        emergency: bool,
        dry_run: bool,
    ) -> Result<How<'a>, GatewayError> {
        Ok(How {
            base: base_version(h, base)?,
            reason,
            emergency,
            dry_run,
        })
    }
}

/// Change `route`'s gray rules to what `update` makes of the current ones, as `t`.
async fn change_rules(
    s: &AdminState,
    t: &Principal,
    route: &str,
    how: How<'_>,
    update: impl Fn(&[GrayRuleSpec]) -> Result<Vec<GrayRuleSpec>, GatewayError>,
) -> Result<Result<ChangeRecord, Result<ChangeRecord, GatewayError>>, GatewayError> {
    let edit = |cur: &Current| -> Result<Edit, GatewayError> {
        let mut doc = (*cur.doc).clone();
        let r = doc
            .routes
            .iter_mut()
            .find(|r| r.name == route)
            .ok_or_else(|| GatewayError::NotFound(format!("route {route}")))?;
        may_change(t, &r.project, &r.env)?;
        r.gray_rules = update(&r.gray_rules)?;
        let (project, env) = (r.project.clone(), r.env.clone());
        let mut e = Edit::new(doc, ChangeKind::GrayRules, &project, &env, route);
        e.approvals = approvals(s, t, &env, how.emergency)?;
        e.emergency = how.emergency;
        Ok(e)
    };
    if how.dry_run {
        return Ok(Err(s.release.preview(&t.name, how.reason, edit)));
    }
    s.release
        .change(how.base, &t.name, how.reason, edit)
        .await
        .map(Ok)
}

fn rules_answer(
    r: Result<Result<ChangeRecord, Result<ChangeRecord, GatewayError>>, GatewayError>,
) -> ApiResult {
    match r {
        Ok(Ok(rec)) => change_answer(ChangeKind::GrayRules, Ok(rec)),
        Ok(Err(preview)) => preview_answer(preview),
        Err(e) => change_answer(ChangeKind::GrayRules, Err(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    base_version: Option<u64>,
    #[serde(default)]
    emergency: bool,
    #[serde(default)]
    dry_run: bool,
}

/// The answer to a `dry_run`: the change record it would commit.
fn preview_answer(r: Result<apus_schema::ChangeRecord, GatewayError>) -> ApiResult {
    Ok(Answer::json(json!({ "dry_run": true, "change": r? })))
}

pub(super) async fn rollback(s: &AdminState, h: &HeaderMap, body: &[u8]) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let body: Rollback = parse_body(body)?;
        let base = base_version(h, body.base_version)?;
        let target = s.release.snapshot(body.version).await?.state.routes.clone();
        let reason = format!("rollback to v{}: {}", body.version, body.reason);
        let edit = |cur: &Current| -> Result<Edit, GatewayError> {
            // Every route the rollback touches must be in the token's scope.
            let changed: Vec<(String, String)> = cur
                .doc
                .routes
                .iter()
                .filter(|r| !target.iter().any(|t| t == *r))
                .chain(target.iter())
                .map(|r| (r.project.clone(), r.env.clone()))
                .collect();
            let mut needed = 0;
            for (p, e) in &changed {
                may_change(t, p, e)?;
                needed = needed.max(approvals(s, t, e, body.emergency)?);
            }
            let (project, env) = changed.first().cloned().unwrap_or_default();
            let mut doc = (*cur.doc).clone();
            doc.routes = target.clone();
            let mut e = Edit::new(doc, ChangeKind::Rollback, &project, &env, "*");
            e.approvals = needed;
            e.emergency = body.emergency;
            Ok(e)
        };
        if body.dry_run {
            return Ok(Err(s.release.preview(&t.name, &reason, edit)));
        }
        s.release.change(base, &t.name, &reason, edit).await.map(Ok)
    }
    .await;
    match r {
        Ok(Ok(rec)) => change_answer(ChangeKind::Rollback, Ok(rec)),
        Ok(Err(preview)) => preview_answer(preview),
        Err(e) => change_answer(ChangeKind::Rollback, Err(e)),
    }
}

pub(super) async fn list_pending(s: &AdminState, h: &HeaderMap) -> ApiResult {
    authenticate(h, &s.tokens)?;
    let cur = s.release.load_full();
    let pending: Vec<Value> = cur
        .doc
        .pending
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "kind": p.kind, "author": p.author, "reason": p.reason,
                "project": p.project, "env": p.env, "scope": p.scope, "ts": p.ts,
                "required": p.required, "approvals": p.approvals, "routes": p.routes,
            })
        })
        .collect();
    Ok(Answer::versioned(
        cur.version,
        json!({ "version": cur.version, "pending": pending }),
    ))
}

/// The edit of approving (`approve`) or rejecting pending change `id` by `t`.
fn decide(cur: &Current, t: &Principal, id: u64, approve: bool) -> Result<Edit, GatewayError> {
    let mut doc = (*cur.doc).clone();
    let i = doc
        .pending
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(|| GatewayError::NotFound(format!("pending change #{id}")))?;
    let p = &mut doc.pending[i];
    may_change(t, &p.project, &p.env)?;
    let (project, env, scope) = (p.project.clone(), p.env.clone(), p.scope.clone());
    if !approve {
        let what = format!("change #{id} proposed by {} rejected", p.author);
        doc.pending.remove(i);
        let mut e = Edit::new(doc, ChangeKind::ChangeRejected, &project, &env, &scope);
        e.summary = Some(what);
        return Ok(e);
    }
    if p.author == t.name {
        return Err(GatewayError::Forbidden(format!(
            "`{}` proposed change #{id} and may not approve it",
            t.name
        )));
    }
    if p.approvals.contains(&t.name) {
        return Err(GatewayError::BadRequest(format!(
            "`{}` already approved change #{id}",
            t.name
        )));
    }
    p.approvals.push(t.name.clone());
    if (p.approvals.len() as u32) < p.required {
        let what = format!(
            "approval {}/{} of change #{id} by {}",
            p.approvals.len(),
            p.required,
            t.name
        );
        let mut e = Edit::new(doc, ChangeKind::ChangeApproved, &project, &env, &scope);
        e.summary = Some(what);
        return Ok(e);
    }
    if cur.doc.routes != p.base_routes {
        return Err(GatewayError::Conflict(format!(
            "the routes changed since change #{id} was proposed; propose it again"
        )));
    }
    let p = doc.pending.remove(i);
    doc.routes = p.routes;
    let mut e = Edit::new(doc, p.kind, &project, &env, &scope);
    e.note = Some(format!(
        "change #{id} proposed by {} ({}), approved by {}",
        p.author,
        p.reason,
        p.approvals.join(", ")
    ));
    Ok(e)
}

pub(super) async fn decide_pending(
    s: &AdminState,
    h: &HeaderMap,
    id: u64,
    approve: bool,
    body: &[u8],
) -> ApiResult {
    let kind = if approve {
        ChangeKind::ChangeApproved
    } else {
        ChangeKind::ChangeRejected
    };
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let b: Reason = if body.is_empty() {
            Reason::default()
        } else {
            parse_body(body)?
        };
        let base = base_version(h, b.base_version)?;
        s.release
            .change(base, &t.name, &b.reason, |cur| decide(cur, t, id, approve))
            .await
    }
    .await;
    change_answer(kind, r)
}
