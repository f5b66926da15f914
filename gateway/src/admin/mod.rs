//! The admin API (release control) on its own listener, served by Pingora's own HTTP
//! server (no second HTTP stack in the gateway): list routes, pools, versions and pending
//! changes; replace a route's gray rules; roll back; approve; put servers on and off the
//! shelf. Every call but `/health` and `/metrics` needs a bearer token; every change needs
//! a role and scope that cover it, is validated before it is committed to the control
//! store, and is recorded with actor, time, reason and diff. Bodies are read (up to
//! [`MAX_BODY`]) before dispatch but parsed only after the token is checked.

mod config_client;
mod configs;
mod release;
mod rollouts;
mod serial;
mod servers;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics as m;
use crate::pools::Pool;
use crate::state::ReleaseState;
use crate::GatewayError;
use apus_auth::{Action, Principal, Tokens};
use servers::ServerOp;

/// Largest request body accepted (413 above it).
pub const MAX_BODY: usize = 1 << 20;

/// Renders the process's metrics in the Prometheus text format (the binary owns the
/// recorder; the gateway only serves what it renders).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub(crate) release: Arc<ReleaseState>,
    pub(crate) pools: Arc<HashMap<String, Arc<Pool>>>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) prometheus: Option<MetricsRender>,
    /// The control store in use, as configured (`local` or the etcd URL).
    pub(crate) control: String,
    /// Protected envs and the approvals a change there needs.
    pub(crate) approvals: Arc<BTreeMap<String, u32>>,
    /// Which servers may be added at runtime.
    pub(crate) upstreams: Arc<crate::config::UpstreamPolicy>,
    /// The deploy hooks a serial release may name.
    pub(crate) deploy_hooks: Arc<Vec<crate::config::DeployHook>>,
    /// The config center.
    pub(crate) config: Arc<crate::confcenter::ConfigCenter>,
    /// Longest a config long poll is held.
    pub(crate) config_poll: std::time::Duration,
}

/// A JSON answer, with the version it reflects as an `ETag` when it has one.
pub(super) struct Answer {
    etag: Option<u64>,
    body: Value,
}

impl Answer {
    pub(super) fn json(body: Value) -> Answer {
        Answer { etag: None, body }
    }
    pub(super) fn versioned(version: u64, body: Value) -> Answer {
        Answer {
            etag: Some(version),
            body,
        }
    }
}

pub(super) type ApiResult = Result<Answer, GatewayError>;

/// The answer to a change request: the change record, counted by kind and outcome.
pub(super) fn change_answer(
    kind: apus_schema::ChangeKind,
    r: Result<apus_schema::ChangeRecord, GatewayError>,
) -> ApiResult {
    count(kind.as_str(), &r);
    Ok(Answer::json(json!({ "change": r? })))
}

/// The caller, if its token may read or change release state (viewers, release managers,
/// admins; telemetry tokens may not).
pub(super) fn authenticate(
    headers: &HeaderMap,
    tokens: &Tokens,
) -> Result<Arc<Principal>, GatewayError> {
    let p = tokens.authenticate(headers).map_err(|e| {
        tracing::warn!(error = %e, "admin API: authentication failed");
        GatewayError::Unauthorized
    })?;
    p.check_role(Action::Read)
        .map_err(|e| GatewayError::Forbidden(e.to_string()))?;
    Ok(p)
}

/// A part of the release state in force, as `{"version": V, name: part}` with its ETag
/// (for any valid token).
pub(super) fn state_part(
    s: &AdminState,
    h: &HeaderMap,
    name: &str,
    part: impl Fn(&apus_control::ReleaseDoc) -> Value,
) -> ApiResult {
    authenticate(h, &s.tokens)?;
    let cur = s.release.load_full();
    Ok(Answer::versioned(
        cur.version,
        json!({ "version": cur.version, name: part(&cur.doc) }),
    ))
}

/// Whether `t` may change something in `project`/`env`.
pub(super) fn may_change(t: &Principal, project: &str, env: &str) -> Result<(), GatewayError> {
    t.check(Action::Change, project, env).map_err(|e| {
        // Denied attempts are audited with who tried, where.
        tracing::warn!(actor = %t.name, project, env, error = %e, "admin API: change denied");
        GatewayError::Forbidden(e.to_string())
    })
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

/// The version a change is based on: `If-Match` (an `ETag` from a GET) or the body's
/// `base_version`; both must agree when both are given.
pub(super) fn base_version(h: &HeaderMap, body: Option<u64>) -> Result<Option<u64>, GatewayError> {
    let header = match h.get(http::header::IF_MATCH) {
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

/// Parse a JSON body only after the caller is authenticated, with the reason on failure.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::BadRequest(format!("body: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Reason {
    #[serde(default)]
    pub(super) reason: String,
    #[serde(default)]
    pub(super) base_version: Option<u64>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = r.body().len().to_string().parse() {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    r
}

fn error_response(e: &GatewayError) -> Response<Vec<u8>> {
    let status = e.status();
    let mut r = respond(
        status,
        "application/json",
        json!({ "error": e.to_string() }).to_string().into_bytes(),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            "www-authenticate",
            http::HeaderValue::from_static("Bearer realm=\"apus-admin\""),
        );
    }
    r
}

fn answer_response(r: ApiResult) -> Response<Vec<u8>> {
    match r {
        Ok(a) => {
            let mut resp = respond(
                StatusCode::OK,
                "application/json",
                a.body.to_string().into_bytes(),
            );
            if let Some(v) = a.etag.and_then(|v| format!("\"{v}\"").parse().ok()) {
                resp.headers_mut().insert(http::header::ETAG, v);
            }
            resp
        }
        Err(e) => error_response(&e),
    }
}

/// Percent-decode one path segment (server addresses and route names).
fn decode(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request as the router sees it.
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    h: &'a HeaderMap,
    body: &'a [u8],
    peer: Option<std::net::IpAddr>,
}

/// Route one request to its handler.
async fn dispatch(s: &AdminState, req: Req<'_>) -> Response<Vec<u8>> {
    let Req {
        method,
        path,
        query,
        h,
        body,
        peer,
    } = req;
    let segs: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let path_and_query = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let r = match (method.as_str(), segs.as_slice()) {
        ("GET", ["config", "v1", "notifications"]) => {
            return config_client::notifications(s, h, &path_and_query, query, peer).await
        }
        ("GET", ["config", "v1", rest @ ..]) => {
            return config_client::client_get(s, h, rest, &path_and_query, query, peer).await
        }
        ("GET", ["admin", "v1", "config", "files"]) => configs::list(s, h, query).await,
        ("GET", ["admin", "v1", "config", "files", rest @ ..]) => configs::show(s, h, rest).await,
        ("PUT", ["admin", "v1", "config", "files", rest @ ..]) => {
            configs::save_draft(s, h, rest, query, body).await
        }
        ("GET", ["admin", "v1", "config", "diff"]) => configs::diff(s, h, query).await,
        ("GET", ["admin", "v1", "config", "tree", rest @ ..]) => configs::tree(s, h, rest).await,
        ("GET", ["admin", "v1", "config", "globals", project, env]) => {
            configs::globals(s, h, project, env, None).await
        }
        ("PUT", ["admin", "v1", "config", "globals", project, env]) => {
            configs::globals(s, h, project, env, Some(body)).await
        }
        (
            "POST",
            ["admin", "v1", "config", verb @ ("publish" | "rollback" | "gray" | "promote" | "abandon"), rest @ ..],
        ) => configs::act(s, h, verb, rest, body).await,
        ("GET", ["health"]) => return respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        ("GET", ["metrics"]) => {
            return match &s.prometheus {
                Some(p) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    p().into_bytes(),
                ),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"metrics recorder not installed\n".to_vec(),
                ),
            }
        }
        ("GET", ["admin", "v1", "routes"]) => release::list_routes(s, h).await,
        ("PUT", ["admin", "v1", "routes", route, "rules"]) => {
            release::set_rules(s, h, route, body).await
        }
        ("PATCH", ["admin", "v1", "routes", route, "rules", rule]) => {
            release::patch_rule(s, h, route, rule, body).await
        }
        ("POST", ["admin", "v1", "rollback"]) => release::rollback(s, h, body).await,
        ("GET", ["admin", "v1", "changes"]) => release::list_changes(s, h).await,
        ("GET", ["admin", "v1", "status"]) => release::status(s, h).await,
        ("GET", ["admin", "v1", "pending"]) => release::list_pending(s, h).await,
        ("POST", ["admin", "v1", "pending", id, verdict @ ("approve" | "reject")]) => {
            match id.parse() {
                Ok(id) => release::decide_pending(s, h, id, *verdict == "approve", body).await,
                Err(_) => Err(GatewayError::NotFound(format!("pending change #{id}"))),
            }
        }
        ("GET", ["admin", "v1", "rollouts"]) => rollouts::list(s, h).await,
        ("POST", ["admin", "v1", "rollouts"]) => rollouts::start(s, h, body).await,
        ("POST", ["admin", "v1", "rollouts", name, verb]) => {
            rollouts::steer(s, h, name, verb, body).await
        }
        ("GET", ["admin", "v1", "releases"]) => serial::list(s, h).await,
        ("POST", ["admin", "v1", "releases"]) => serial::start(s, h, body).await,
        ("POST", ["admin", "v1", "releases", pool, "abort"]) => {
            serial::abort(s, h, pool, body).await
        }
        ("GET", ["admin", "v1", "pools"]) => servers::list_pools(s, h).await,
        ("POST", ["admin", "v1", "pools", pool, "servers"]) => {
            servers::server_op(s, h, pool, None, ServerOp::Add, body).await
        }
        ("DELETE", ["admin", "v1", "pools", pool, "servers", addr]) => {
            servers::server_op(s, h, pool, Some(addr), ServerOp::Remove, body).await
        }
        ("POST", ["admin", "v1", "pools", pool, "servers", addr, "drain"]) => {
            servers::server_op(s, h, pool, Some(addr), ServerOp::Drain, body).await
        }
        ("POST", ["admin", "v1", "pools", pool, "servers", addr, "undrain"]) => {
            servers::server_op(s, h, pool, Some(addr), ServerOp::Undrain, body).await
        }
        _ => Err(GatewayError::NotFound(format!("{method} {path}"))),
    };
    answer_response(r)
}

/// The admin API as a Pingora HTTP app.
pub struct AdminApp(pub AdminState);

/// Largest body of a config-file upload (a 5 MB file, JSON-escaped).
pub const MAX_CONFIG_BODY: usize = 12 << 20;

/// Read the whole request body, refusing more than `max` bytes.
async fn read_body(session: &mut ServerSession, max: usize) -> Result<Vec<u8>, GatewayError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(GatewayError::TooLarge(format!(
                        "request body over {max} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(GatewayError::BadRequest(format!("request body: {e}"))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path, query, headers) = (
            req.method.clone(),
            req.uri.path().to_string(),
            req.uri.query().unwrap_or("").to_string(),
            req.headers.clone(),
        );
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let max = if path.starts_with("/admin/v1/config/") {
            // Who sends 12 MB must say who they are before it is read.
            if let Err(e) = authenticate(&headers, &self.0.tokens) {
                session.set_keepalive(None);
                return error_response(&e);
            }
            MAX_CONFIG_BODY
        } else {
            MAX_BODY
        };
        match read_body(session, max).await {
            Ok(body) => {
                let req = Req {
                    method: &method,
                    path: &path,
                    query: &query,
                    h: &headers,
                    body: &body,
                    peer,
                };
                dispatch(&self.0, req).await
            }
            Err(e) => {
                session.set_keepalive(None);
                error_response(&e)
            }
        }
    }
}

/// The admin listener as a Pingora service on `addr`. The address is checked (bound and
/// released) now, so a taken port fails start-up with its name instead of later.
pub fn service(addr: &str, state: AdminState) -> Result<Service<AdminApp>, GatewayError> {
    drop(
        std::net::TcpListener::bind(addr)
            .map_err(|e| GatewayError::Config(format!("admin_listen {addr}: {e}")))?,
    );
    let mut svc = Service::new("admin api".to_string(), AdminApp(state));
    svc.add_tcp(addr);
    Ok(svc)
}
