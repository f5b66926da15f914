//! The store crate's error type. HTTP status mapping is the callers' (ingest, query).

/// Errors of the stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query or parameter is malformed (e.g. bad search syntax, unknown dimension).
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded store or ClickHouse failed.
    #[error("store: {0}")]
    Store(String),
    /// A store's server could not be reached (ClickHouse down, connection cut).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The Tantivy index failed.
    #[error("search: {0}")]
    Search(String),
}
