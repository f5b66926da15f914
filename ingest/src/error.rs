//! The ingest crate's error type and its one mapping to HTTP status codes.

use axum::http::StatusCode;

use apus_store::StoreError;
use apus_wal::WalError;

/// Errors of the ingest tier.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request or a record is malformed.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The caller's token may not write this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The body exceeds the configured limit.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// Memory or queues are full; retry after the given seconds (`Retry-After`).
    #[error("overloaded: {0}")]
    Overloaded(String, u64),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal: {0}")]
    Wal(#[source] WalError),
    #[error("store: {0}")]
    Store(String),
    #[error("search: {0}")]
    Search(String),
}

impl From<WalError> for IngestError {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Full => IngestError::Overloaded("write-ahead log queue is full".into(), 1),
            WalError::TooLarge(n) => IngestError::TooLarge(format!("a batch of {n} bytes")),
            e => IngestError::Wal(e),
        }
    }
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadInput(s) => IngestError::BadInput(s),
            StoreError::Io(e) => IngestError::Io(e),
            StoreError::Store(s) | StoreError::Unavailable(s) => IngestError::Store(s),
            StoreError::Search(s) => IngestError::Search(s),
        }
    }
}

impl IngestError {
    /// The HTTP status this error maps to (the only place that decides it).
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::BadInput(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::Overloaded(..) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Wal(WalError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
            // The disk is full: nothing was acknowledged; retry when space returns.
            IngestError::Wal(WalError::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
