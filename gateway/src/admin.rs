//! The admin API (release control) on its own listener: list routes, pools and versions;
//! replace a route's gray rules; roll back; put servers on and off the shelf. Every change
//! needs a bearer token whose role and scope cover it, is validated before it is applied,
//! and is recorded in the change history with actor, time, reason and diff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apus_rules::GrayRuleSpec;
use apus_schema::{ChangeRecord, Micros};
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Role, TokenConfig};
use crate::metrics as m;
use crate::pools::Pool;
use crate::state::{now_us, ReleaseState};
use crate::GatewayError;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub(crate) release: Arc<ReleaseState>,
    pub(crate) pools: Arc<HashMap<String, Arc<Pool>>>,
    pub(crate) tokens: Arc<Vec<TokenConfig>>,
    pub(crate) prometheus: Option<PrometheusHandle>,
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

type ApiResult = Result<Json<Value>, GatewayError>;

async fn list_routes(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    let cur = s.release.load_full();
    let routes: Vec<_> = cur.rules.routes().collect();
    Ok(Json(json!({ "version": cur.version, "routes": routes })))
}

async fn list_pools(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    let mut pools: Vec<_> = s
        .pools
        .values()
        .map(|p| json!({ "name": p.name, "servers": p.status() }))
        .collect();
    pools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "pools": pools })))
}

async fn list_changes(State(s): State<AdminState>, h: HeaderMap) -> ApiResult {
    authenticate(&h, &s.tokens)?;
    Ok(Json(json!({
        "version": s.release.load().version,
        "versions": s.release.versions(),
        "changes": s.release.changes(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRules {
    rules: Vec<GrayRuleSpec>,
    #[serde(default)]
    reason: String,
}

async fn set_rules(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path(route): Path<String>,
    Json(body): Json<SetRules>,
) -> ApiResult {
    let r = (|| {
        let t = authenticate(&h, &s.tokens)?;
        let cur = s.release.load_full();
        let spec = cur
            .rules
            .routes()
            .find(|r| r.name == route)
            .ok_or_else(|| GatewayError::NotFound(format!("route {route}")))?;
        may_change(t, &spec.project, &spec.env)?;
        s.release
            .set_route_rules(&route, body.rules, &t.name, &body.reason)
    })();
    count("gray_rules", &r);
    Ok(Json(json!({ "change": r? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: u64,
    #[serde(default)]
    reason: String,
}

async fn rollback(
    State(s): State<AdminState>,
    h: HeaderMap,
    Json(body): Json<Rollback>,
) -> ApiResult {
    let r = (|| {
        let t = authenticate(&h, &s.tokens)?;
        let target = s.release.snapshot(body.version)?;
        let cur = s.release.load_full();
        // Every route the rollback touches must be in the token's scope.
        let changed: Vec<_> = cur
            .rules
            .routes()
            .filter(|r| !target.iter().any(|t| t == *r))
            .map(|r| (r.project.clone(), r.env.clone(), r.name.clone()))
            .chain(
                target
                    .iter()
                    .map(|r| (r.project.clone(), r.env.clone(), r.name.clone())),
            )
            .collect();
        for (p, e, _) in &changed {
            may_change(t, p, e)?;
        }
        let (p, e) = changed
            .first()
            .map(|(p, e, _)| (p.clone(), e.clone()))
            .unwrap_or_default();
        let reason = format!("rollback to v{}: {}", body.version, body.reason);
        s.release
            .replace_routes(target, "rollback", &t.name, &reason, (&p, &e, "*"))
    })();
    count("rollback", &r);
    Ok(Json(json!({ "change": r? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddServer {
    addr: String,
    #[serde(default)]
    reason: String,
}

fn pool_scope<'p>(
    s: &'p AdminState,
    t: &TokenConfig,
    pool: &str,
) -> Result<&'p Arc<Pool>, GatewayError> {
    let p = s
        .pools
        .get(pool)
        .ok_or_else(|| GatewayError::NotFound(format!("pool {pool}")))?;
    if t.role != Role::Admin {
        // A release manager may change a pool only if every route using it is in scope.
        let cur = s.release.load_full();
        let mut users = cur
            .rules
            .routes()
            .filter(|r| r.stable_pool == pool || r.gray_rules.iter().any(|g| g.pool == pool));
        if t.role == Role::Viewer {
            return Err(GatewayError::Forbidden(format!(
                "token `{}` is a viewer",
                t.name
            )));
        }
        users.try_for_each(|r| may_change(t, &r.project, &r.env))?;
    }
    Ok(p)
}

fn server_change(
    s: &AdminState,
    kind: &str,
    actor: &str,
    pool: &str,
    addr: &str,
    reason: &str,
) -> ChangeRecord {
    let v = s.release.load().version;
    let rec = ChangeRecord {
        ts: Micros(now_us()),
        kind: kind.into(),
        actor: actor.into(),
        project: String::new(),
        env: String::new(),
        scope: format!("{pool}/{addr}"),
        from_version: v,
        to_version: v,
        summary: format!("{kind} {addr} in pool {pool}; {reason}"),
        touched: format!("pool:{pool} upstream:{addr}"),
    };
    s.release.record_event(rec.clone());
    rec
}

async fn add_server(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path(pool): Path<String>,
    Json(body): Json<AddServer>,
) -> ApiResult {
    let r = async {
        let t = authenticate(&h, &s.tokens)?;
        let p = pool_scope(&s, t, &pool)?;
        p.add(&body.addr).await?;
        Ok::<_, GatewayError>(server_change(
            &s,
            "server_add",
            &t.name,
            &pool,
            &body.addr,
            &body.reason,
        ))
    }
    .await;
    count("server_add", &r);
    Ok(Json(json!({ "change": r? })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
}

async fn server_op(
    s: AdminState,
    h: HeaderMap,
    pool: String,
    addr: String,
    op: &'static str,
    reason: String,
) -> ApiResult {
    let r = async {
        let t = authenticate(&h, &s.tokens)?;
        let p = pool_scope(&s, t, &pool)?;
        match op {
            "server_drain" => p.set_drained(&addr, true)?,
            "server_undrain" => p.set_drained(&addr, false)?,
            _ => p.remove(&addr).await?,
        }
        Ok::<_, GatewayError>(server_change(&s, op, &t.name, &pool, &addr, &reason))
    }
    .await;
    count(op, &r);
    Ok(Json(json!({ "change": r? })))
}

fn reason_of(body: Option<Json<Reason>>) -> String {
    body.map(|b| b.0.reason).unwrap_or_default()
}

async fn drain(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path((pool, addr)): Path<(String, String)>,
    body: Option<Json<Reason>>,
) -> ApiResult {
    server_op(s, h, pool, addr, "server_drain", reason_of(body)).await
}

async fn undrain(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path((pool, addr)): Path<(String, String)>,
    body: Option<Json<Reason>>,
) -> ApiResult {
    server_op(s, h, pool, addr, "server_undrain", reason_of(body)).await
}

async fn remove(
    State(s): State<AdminState>,
    h: HeaderMap,
    Path((pool, addr)): Path<(String, String)>,
) -> ApiResult {
    server_op(s, h, pool, addr, "server_remove", String::new()).await
}

async fn prometheus(State(s): State<AdminState>) -> Response {
    match &s.prometheus {
        Some(p) => ([("content-type", "text/plain; version=0.0.4")], p.render()).into_response(),
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
