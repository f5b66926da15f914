//! The gateway's error type and its one mapping to HTTP status codes.

use http::StatusCode;

/// Errors of the gateway crate.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// A rule set failed validation.
    #[error("invalid rules: {0}")]
    Rules(#[from] apus_rules::RuleError),
    /// A request to the admin API was malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No or unknown bearer token.
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// The token's role or scope does not cover the change.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An IO failure (history file, access log).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Pingora refused something.
    #[error("proxy: {0}")]
    Proxy(String),
    /// A request body over the limit.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// The change was based on a stale version.
    #[error("{0}")]
    Conflict(String),
    /// A config client's signed request did not check out.
    #[error("unauthorized: {0}")]
    BadSignature(String),
    /// The control store cannot be reached: writes are refused.
    #[error("{0}")]
    Unavailable(String),
}

impl GatewayError {
    /// The HTTP status this error maps to (the only place that decides it).
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Config(_) | GatewayError::Rules(_) | GatewayError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::Unauthorized | GatewayError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Io(_) | GatewayError::Proxy(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
