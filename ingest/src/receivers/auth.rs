//! Who may write what through the receivers. Every path but `/health` and `/metrics` needs
//! a token (shippers send `Authorization: Basic` or `ApiKey` as Elasticsearch clients do,
//! Prometheus' `remote_write` `authorization` or `basic_auth`, gateways `Bearer`):
//! - telemetry needs a `shipper`, `gateway` or `admin` token;
//! - change events (`/ingest/v1/changes`: the audit trail root cause trusts) need a
//!   `gateway` or `admin` token;
//! - each row must fall inside the token's `project/env` scopes; a row outside them is
//!   refused with the reason and kept in `dead_letter`, as any malformed row is.
//!
//! The token is checked before the body is read.

use std::sync::Arc;

use apus_auth::{Action, AuthError, Principal, Tokens};
use apus_schema::Scoped;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Rejects;
use crate::metrics as m;

/// The middleware: authenticate and check the role for the path.
pub async fn authorize(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(req).await;
    }
    let action = if path == "/ingest/v1/changes" {
        Action::WriteChanges
    } else {
        Action::Ingest
    };
    let principal = match tokens
        .authenticate(req.headers())
        .and_then(|p| p.check_role(action).map(|()| p))
    {
        Ok(p) => p,
        Err(e) => return deny(&e, path),
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Keep the rows `p` may write; refuse the others into `rej` with the reason.
pub fn in_scope<R: Scoped + serde::Serialize>(
    p: &Principal,
    rows: Vec<R>,
    rej: &mut Rejects,
    source: &str,
) -> Vec<R> {
    if p.covers_all() {
        return rows;
    }
    let mut kept = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        let (project, env) = r.project_env();
        match p.check(Action::Ingest, project, env) {
            Ok(()) => kept.push(r),
            Err(e) => {
                let raw = serde_json::to_string(&r).unwrap_or_default();
                rej.add(source, i + 1, e.to_string(), &raw);
            }
        }
    }
    kept
}

fn deny(e: &AuthError, path: &str) -> Response {
    metrics::counter!(m::DENIED).increment(1);
    tracing::warn!(error = %e, path, "ingest: request denied");
    let status = e.status();
    let mut r = (status, Json(json!({ "error": e.to_string() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        // Elasticsearch clients retry with Basic credentials on this challenge.
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"apus\", Bearer realm=\"apus\""),
        );
    }
    r
}
