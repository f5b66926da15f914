//! The admin API (release control) on its own listener: list routes, pools and versions;
//! replace a route's gray rules; roll back; put servers on and off the shelf. Every change
//! needs a bearer token whose role and scope cover it, is validated before it is applied,
//! and is recorded in the change history with actor, time, reason and diff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apus_rules::GrayRuleSpec;
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Role, TokenConfig};
use crate::metrics as m;
use crate::pools::Pool;
use crate::state::{Current, Edit, ReleaseState};
use crate::GatewayError;

/// Renders the process's metrics in the Prometheus text format (the binary owns the
/// recorder; the gateway only serves what it renders).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub(crate) release: Arc<ReleaseState>,
    pub(crate) pools: Arc<HashMap<String, Arc<Pool>>>,
    pub(crate) tokens: Arc<Vec<TokenConfig>>,
    pub(crate) prometheus: Option<MetricsRender>,
    /// The control store in use, as configured (`local` or the etcd URL).
    pub(crate) control: String,
    /// Protected envs and the approvals a change there needs.
    pub(crate) approvals: Arc<std::collections::BTreeMap<String, u32>>,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer realm=\"apus-admin\""),
            );
        }
        resp
    }
}

fn authenticate<'t>(
    headers: &HeaderMap,
    tokens: &'t [TokenConfig],
) -> Result<&'t TokenConfig, GatewayError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(GatewayError::Unauthorized)?;
    tokens
        .iter()
        .find(|t| constant_time_eq(t.token.as_bytes(), presented.trim().as_bytes()))
        .ok_or(GatewayError::Unauthorized)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `t` may change something in `project`/`env`.
fn may_change(t: &TokenConfig, project: &str, env: &str) -> Result<(), GatewayError> {
    match t.role {
        Role::Admin => Ok(()),
        Role::Viewer => Err(GatewayError::Forbidden(format!(
            "token `{}` is a viewer",
            t.name
        ))),
        Role::ReleaseManager => {
            let ok = t.scopes.iter().any(|s| match s.split_once('/') {
                Some((p, e)) => (p == "*" || p == project) && (e == "*" || e == env),
                None => s == "*" || s == env || s == project,
            });
            if ok {
                Ok(())
            } else {
                Err(GatewayError::Forbidden(format!(
                    "token `{}` may not change project `{project}` env `{env}`",
                    t.name
                )))
            }
        }
    }
}

fn count(kind: &'static str, r: &Result<impl Sized, GatewayError>) {
    let outcome = match r {
        Ok(_) => "ok",
        Err(e) => match e.status().as_u16() {
            401 | 403 => "denied",
            _ => "refused",
        },
    };
    metrics::counter!(m::ADMIN_CHANGES, "kind" => kind, "outcome" => outcome).increment(1);
}

type ApiResult = Result<Response, GatewayError>;

/// A JSON answer carrying the version it reflects as an `ETag`.
fn versioned(version: u64, body: Value) -> Response {
    let mut r = Json(body).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(axum::http::header::ETAG, v);
    }
    r
}

/// The version a change is based on: `If-Match` (an `ETag` from a GET) or the body's
/// `base_version`; both must agree when both are given.
fn base_version(h: &HeaderMap, body: Option<u64>) -> Result<Option<u64>, GatewayError> {
    let header = match h.get(axum::http::header::IF_MATCH) {
        None => None,
        Some(v) => {
            let t = v.to_str().unwrap_or("").trim();
            let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
            Some(t.parse::<u64>().map_err(|_| {
                GatewayError::BadRequest(format!("If-Match `{t}` is not a version"))
            })?)
        }
    };
    match (header, body) {
        (Some(a), Some(b)) if a != b => Err(GatewayError::BadRequest(format!(
            "If-Match says version {a}, base_version says {b}"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

async fn list_routes(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    let cur = s.release.load_full();
    let routes: Vec<_> = cur.rules.routes().collect();
    Ok(versioned(
        cur.version,
        json!({ "version": cur.version, "routes": routes }),
    ))
}

async fn list_pools(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    let mut pools: Vec<_> = s
        .pools
        .values()
        .map(|p| json!({ "name": p.name, "servers": p.status() }))
        .collect();
    pools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let v = s.release.load().version;
    Ok(versioned(v, json!({ "version": v, "pools": pools })))
}

async fn list_changes(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    let changes = s.release.changes().await?;
    let versions: Vec<u64> = changes.iter().map(|c| c.to_version).collect();
    let v = s.release.load().version;
    Ok(versioned(
        v,
        json!({ "version": v, "versions": versions, "changes": changes }),
    ))
}

async fn status(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    let v = s.release.load().version;
    Ok(versioned(
        v,
        json!({ "version": v, "control": s.control, "store_connected": s.release.store_connected() }),
    ))
}

/// Parse a JSON body only after the caller is authenticated, with the reason on failure.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::BadRequest(format!("body: {e}")))
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
}

/// Approvals a change to `env` needs, and whether `t` may bypass them.
fn approvals(
    s: &AdminState,
    t: &TokenConfig,
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

async fn set_rules(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path(route): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let r = async {
        let t = authenticate(&h, &s.tokens)?;
        let body: SetRules = parse_body(&body)?;
        let base = base_version(&h, body.base_version)?;
        let rules = body.rules.clone();
        s.release
            .change(base, &t.name, &body.reason, |cur| {
                let mut doc = (*cur.doc).clone();
                let r = doc
                    .routes
                    .iter_mut()
                    .find(|r| r.name == route)
                    .ok_or_else(|| GatewayError::NotFound(format!("route {route}")))?;
                may_change(t, &r.project, &r.env)?;
                r.gray_rules = rules.clone();
                let (project, env) = (r.project.clone(), r.env.clone());
                let mut e = Edit::new(doc, "gray_rules", &project, &env, &route);
                e.approvals = approvals(&s, t, &env, body.emergency)?;
                e.emergency = body.emergency;
                Ok(e)
            })
            .await
    }
    .await;
    count("gray_rules", &r);
    Ok(Json(json!({ "change": r? })).into_response())
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
}

async fn rollback(State(s): State<AdminState>, h: HeaderMap, body: axum::body::Bytes) -> ApiResult {
    let r = async {
        let t = authenticate(&h, &s.tokens)?;
        let body: Rollback = parse_body(&body)?;
        let base = base_version(&h, body.base_version)?;
        let target = s.release.snapshot(body.version).await?.state.routes.clone();
        let reason = format!("rollback to v{}: {}", body.version, body.reason);
        s.release
            .change(base, &t.name, &reason, |cur| {
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
                    needed = needed.max(approvals(&s, t, e, body.emergency)?);
                }
                let (project, env) = changed.first().cloned().unwrap_or_default();
                let mut doc = (*cur.doc).clone();
                doc.routes = target.clone();
                let mut e = Edit::new(doc, "rollback", &project, &env, "*");
                e.approvals = needed;
                e.emergency = body.emergency;
                Ok(e)
            })
            .await
    }
    .await;
    count("rollback", &r);
    Ok(Json(json!({ "change": r? })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddServer {
    addr: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    base_version: Option<u64>,
}

/// Whether `t` may change pool `pool` (in the state `cur`).
fn pool_scope(cur: &Current, t: &TokenConfig, pool: &str) -> Result<(), GatewayError> {
    if !cur.doc.pools.contains_key(pool) {
        return Err(GatewayError::NotFound(format!("pool {pool}")));
    }
    match t.role {
        Role::Admin => Ok(()),
        Role::Viewer => Err(GatewayError::Forbidden(format!(
            "token `{}` is a viewer",
            t.name
        ))),
        // A release manager may change a pool only if every route using it is in scope.
        Role::ReleaseManager => cur
            .rules
            .routes()
            .filter(|r| r.stable_pool == pool || r.gray_rules.iter().any(|g| g.pool == pool))
            .try_for_each(|r| may_change(t, &r.project, &r.env)),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ServerOp {
    Add,
    Drain,
    Undrain,
    Remove,
}

impl ServerOp {
    fn kind(self) -> &'static str {
        match self {
            ServerOp::Add => "server_add",
            ServerOp::Drain => "server_drain",
            ServerOp::Undrain => "server_undrain",
            ServerOp::Remove => "server_remove",
        }
    }
}

/// The edit of one server operation on the state `cur`.
fn server_edit(
    cur: &Current,
    t: &TokenConfig,
    op: ServerOp,
    pool: &str,
    addr: &str,
) -> Result<Edit, GatewayError> {
    pool_scope(cur, t, pool)?;
    let addr = Pool::canonical(addr)?;
    let mut doc = (*cur.doc).clone();
    let p = doc.pools.entry(pool.to_string()).or_default();
    let present = p.servers.contains(&addr);
    match op {
        ServerOp::Add if present => {
            return Err(GatewayError::BadRequest(format!(
                "server {addr} is already in pool {pool}"
            )))
        }
        ServerOp::Add => p.servers.push(addr.clone()),
        _ if !present => {
            return Err(GatewayError::NotFound(format!(
                "server {addr} in pool {pool}"
            )))
        }
        ServerOp::Drain => {
            p.drained.insert(addr.clone());
        }
        ServerOp::Undrain => {
            p.drained.remove(&addr);
        }
        ServerOp::Remove => {
            p.servers.retain(|s| *s != addr);
            p.drained.remove(&addr);
        }
    }
    let kind = op.kind();
    let mut e = Edit::new(doc, kind, "", "", &format!("{pool}/{addr}"));
    e.summary = Some(format!("{kind} {addr} in pool {pool}"));
    e.touched = Some(format!("pool:{pool} upstream:{addr}"));
    Ok(e)
}

async fn server_op(
    s: AdminState,
    h: HeaderMap,
    pool: String,
    addr: Option<String>,
    op: ServerOp,
    body: axum::body::Bytes,
) -> ApiResult {
    let r = async {
        let t = authenticate(&h, &s.tokens)?;
        let (addr, reason, base) = if op == ServerOp::Add {
            let b: AddServer = parse_body(&body)?;
            (b.addr, b.reason, b.base_version)
        } else {
            let b: Reason = if body.is_empty() {
                Reason::default()
            } else {
                parse_body(&body)?
            };
            (addr.unwrap_or_default(), b.reason, b.base_version)
        };
        let base = base_version(&h, base)?;
        s.release
            .change(base, &t.name, &reason, |cur| {
                server_edit(cur, t, op, &pool, &addr)
            })
            .await
    }
    .await;
    count(op.kind(), &r);
    Ok(Json(json!({ "change": r? })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    base_version: Option<u64>,
}

async fn add_server(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path(pool): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    server_op(s, h, pool, None, ServerOp::Add, body).await
}

async fn drain(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path((pool, addr)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    server_op(s, h, pool, Some(addr), ServerOp::Drain, body).await
}

async fn undrain(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path((pool, addr)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    server_op(s, h, pool, Some(addr), ServerOp::Undrain, body).await
}

async fn remove(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path((pool, addr)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    server_op(s, h, pool, Some(addr), ServerOp::Remove, body).await
}

async fn list_pending(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
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
    Ok(versioned(
        cur.version,
        json!({ "version": cur.version, "pending": pending }),
    ))
}

/// The edit of approving (`approve`) or rejecting pending change `id` by `t`.
fn decide(cur: &Current, t: &TokenConfig, id: u64, approve: bool) -> Result<Edit, GatewayError> {
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
        let mut e = Edit::new(doc, "change_rejected", &project, &env, &scope);
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
        let mut e = Edit::new(doc, "change_approved", &project, &env, &scope);
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
    let mut e = Edit::new(doc, &p.kind, &project, &env, &scope);
    e.note = Some(format!(
        "change #{id} proposed by {} ({}), approved by {}",
        p.author,
        p.reason,
        p.approvals.join(", ")
    ));
    Ok(e)
}

async fn decide_pending(
    s: AdminState,
    h: HeaderMap,
    id: u64,
    approve: bool,
    body: axum::body::Bytes,
) -> ApiResult {
    let kind = if approve {
        "change_approved"
    } else {
        "change_rejected"
    };
    let r = async {
        let t = authenticate(&h, &s.tokens)?;
        let b: Reason = if body.is_empty() {
            Reason::default()
        } else {
            parse_body(&body)?
        };
        let base = base_version(&h, b.base_version)?;
        s.release
            .change(base, &t.name, &b.reason, |cur| decide(cur, t, id, approve))
            .await
    }
    .await;
    count(kind, &r);
    Ok(Json(json!({ "change": r? })).into_response())
}

async fn approve(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> ApiResult {
    decide_pending(s, h, id, true, body).await
}

async fn reject(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> ApiResult {
    decide_pending(s, h, id, false, body).await
}

async fn prometheus(State(s): State<AdminState>) -> Response {
    match &s.prometheus {
        Some(p) => ([("content-type", "text/plain; version=0.0.4")], p()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(prometheus))
        .route("/admin/v1/routes", get(list_routes))
        .route("/admin/v1/routes/{route}/rules", put(set_rules))
        .route("/admin/v1/pools", get(list_pools))
        .route("/admin/v1/pools/{pool}/servers", post(add_server))
        .route(
            "/admin/v1/pools/{pool}/servers/{addr}",
            axum::routing::delete(remove),
        )
        .route("/admin/v1/pools/{pool}/servers/{addr}/drain", post(drain))
        .route(
            "/admin/v1/pools/{pool}/servers/{addr}/undrain",
            post(undrain),
        )
        .route("/admin/v1/changes", get(list_changes))
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/pending", get(list_pending))
        .route("/admin/v1/pending/{id}/approve", post(approve))
        .route("/admin/v1/pending/{id}/reject", post(reject))
        .route("/admin/v1/rollback", post(rollback))
        .with_state(state)
}

/// Runs the admin router on a listener bound before the server starts (so a taken port
/// fails start-up instead of being logged later).
pub struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    router: Router,
}

impl AdminService {
    /// Bind `addr` now; serve when Pingora starts background services.
    pub fn bind(addr: &str, router: Router) -> Result<Self, GatewayError> {
        let l = std::net::TcpListener::bind(addr)
            .map_err(|e| GatewayError::Config(format!("admin_listen {addr}: {e}")))?;
        l.set_nonblocking(true)?;
        Ok(AdminService {
            listener: Mutex::new(Some(l)),
            router,
        })
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let l = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener");
                return;
            }
        };
        tracing::info!(addr = ?l.local_addr().ok(), "admin API listening");
        let serve = axum::serve(l, self.router.clone()).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin API stopped");
        }
    }
}
