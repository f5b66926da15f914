//! Who may read what through the query API. Every path but the dashboards' page, `/health`
//! and `/metrics` needs a token whose role may read (viewer, release manager, admin). A
//! token bound to some projects or environments must name them: each request's `project`
//! and `env` filters must fall inside one of its scopes (dimension filters are exact
//! matches, so the filter is the whole answer's scope), and raw SQL, which no filter can
//! bound, needs a token that covers everything.

use std::sync::Arc;

use apus_auth::{Action, AuthError, Principal, Tokens};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Paths anyone may fetch: the dashboards' page (it holds no data and asks for a token),
/// health and metrics.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/metrics") || crate::console::is_static(path)
}

/// The middleware: authenticate, check the role and the scope of the filters.
pub async fn authorize(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    if let Err(e) = same_origin(req.headers()) {
        return deny(&e, req.uri().path());
    }
    // The admin API behind `/admin/v1/…` checks the token, role and scope of every call
    // itself (and audits changes); a token is passed on, never granted here.
    if req.uri().path().starts_with("/admin/") {
        return next.run(req).await;
    }
    let principal = match tokens.authenticate(req.headers()) {
        Ok(p) => p,
        Err(e) => return deny(&e, req.uri().path()),
    };
    // Changes through the alarm API check the scope of what they change (the body's
    // project and env) in their handlers.
    let self_scoped = (req.method() != axum::http::Method::GET
        && (req.uri().path() == "/api/v1/alarms/switches"
            || req.uri().path().starts_with("/api/v2/silence")))
        || req.uri().path() == "/api/v1/whoami"
        || req.uri().path().starts_with("/api/v1/dashboards");
    let checked = if self_scoped {
        principal.check_role(Action::Read)
    } else {
        check(&principal, req.uri().path(), req.uri().query())
    };
    if let Err(e) = checked {
        return deny(&e, req.uri().path());
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// A browser's request from another site's page carries that site's `Origin`: refused, so
/// only the console served here (and non-browser clients, which send none) get answers.
pub fn same_origin(h: &axum::http::HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = h.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "cross-origin request from `{origin}` refused"
        )))
    }
}

/// Whether `p` may make this request.
pub fn check(p: &Principal, path: &str, query: Option<&str>) -> Result<(), AuthError> {
    p.check_role(Action::Read)?;
    if p.covers_all() {
        return Ok(());
    }
    if path == "/api/v1/sql" {
        return Err(AuthError::Forbidden(format!(
            "token `{}` is bound to {}; raw SQL needs a token that may read everything",
            p.name,
            p.scope_list()
        )));
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (project, env) = (value("project"), value("env"));
    let ok = p.scopes.iter().any(|s| {
        (s.project == "*" || project == Some(s.project.as_str()))
            && (s.env == "*" || env == Some(s.env.as_str()))
    });
    if ok {
        Ok(())
    } else {
        Err(AuthError::Forbidden(format!(
            "token `{}` may read only {}: add project= and env= filters inside them",
            p.name,
            p.scope_list()
        )))
    }
}

fn deny(e: &AuthError, path: &str) -> Response {
    metrics::counter!("apus_query_denied_total").increment(1);
    tracing::warn!(error = %e, path, "query API: request denied");
    let status = e.status();
    let mut r = (status, Json(json!({ "error": e.to_string() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"apus\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_auth::{Role, TokenConfig};

    fn principal(scopes: &[&str]) -> Principal {
        let t = Tokens::new(&[TokenConfig {
            name: "v".into(),
            token: "viewer-token-00001".into(),
            role: Role::Viewer,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }])
        .unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "authorization",
            "Bearer viewer-token-00001".parse().unwrap(),
        );
        (*t.authenticate(&h).unwrap()).clone()
    }

    #[test]
    fn other_sites_pages_are_refused() {
        let h = |origin: Option<&str>| {
            let mut h = axum::http::HeaderMap::new();
            h.insert("host", "127.0.0.1:3000".parse().unwrap());
            if let Some(o) = origin {
                h.insert("origin", o.parse().unwrap());
            }
            same_origin(&h)
        };
        assert!(h(None).is_ok());
        assert!(h(Some("http://127.0.0.1:3000")).is_ok());
        assert!(h(Some("https://evil.example")).is_err());
        assert!(h(Some("null")).is_err());
    }

    #[test]
    fn scoped_readers_must_filter_inside_their_scope() {
        let p = principal(&["shop/prod"]);
        assert!(check(&p, "/api/v1/rank/pool", Some("project=shop&env=prod")).is_ok());
        for q in [None, Some("project=shop"), Some("project=bank&env=prod")] {
            assert!(check(&p, "/api/v1/rank/pool", q).is_err(), "{q:?}");
        }
        assert!(check(&p, "/api/v1/sql", None).is_err());
        let any_env = principal(&["shop/*"]);
        assert!(check(&any_env, "/api/v1/logs/search", Some("project=shop")).is_ok());
        let all = principal(&[]);
        assert!(check(&all, "/api/v1/sql", None).is_ok());
    }
}
