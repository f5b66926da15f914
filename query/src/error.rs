//! The query tier's error type and its one mapping to HTTP status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Errors of the query tier.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed: unknown parameter or dimension, bad time range, bad SQL.
    #[error("{0}")]
    BadRequest(String),
    /// The query ran longer than its time limit.
    #[error("query exceeded its time limit of {0} s; narrow the time range or add filters")]
    Timeout(u64),
    /// The engine failed on a valid request.
    #[error("query failed: {0}")]
    Engine(String),
    /// Too many queries are running; retry after the given seconds.
    #[error("overloaded: too many queries running, retry in {0} s")]
    Overloaded(u64),
    /// A store or search node could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The token may not make this change.
    #[error("{0}")]
    Forbidden(String),
    /// No such object (silence, rule).
    #[error("{0}")]
    NotFound(String),
    /// The change could not be made durable or audited; nothing was changed.
    #[error("not applied: {0}")]
    NotApplied(String),
}

impl QueryError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
            QueryError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            QueryError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            QueryError::Forbidden(_) => StatusCode::FORBIDDEN,
            QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::NotApplied(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Engine(e.to_string())
    }
}

impl From<apus_store::StoreError> for QueryError {
    fn from(e: apus_store::StoreError) -> Self {
        match e {
            apus_store::StoreError::BadInput(m) => QueryError::BadRequest(m),
            apus_store::StoreError::Unavailable(m) => QueryError::Unavailable(m),
            e => QueryError::Engine(e.to_string()),
        }
    }
}

impl From<apus_auth::AuthError> for QueryError {
    fn from(e: apus_auth::AuthError) -> Self {
        QueryError::Forbidden(e.to_string())
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "query failed");
        }
        let mut r = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let QueryError::Overloaded(secs) = self {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}
