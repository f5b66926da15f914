//! Ingest tier: receivers, parsers, WAL, batching and sinks. It owns the table schemas: the
//! row types in [`schema`] are the single source of truth for the column names every other
//! crate writes and reads.
//!
//! Data flow: [`receivers`] parse hostile input into rows → [`pipeline::Pipeline::write`]
//! builds an Arrow batch, appends it to the [`wal`] (group commit, fsync) → the WAL writer
//! hands it to the sinks ([`store::LocalStore`] memory + Parquet, [`search::SearchIndex`])
//! → the client gets its 2xx. Parsers ([`slowlog`], [`fingerprint`], [`templates`]) are pure.

pub mod clickhouse;
pub mod collect;
pub mod digest;
mod error;
pub mod fingerprint;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metrics;
pub mod pipeline;
pub mod receivers;
pub mod rollup;
pub mod schema;
pub mod search;
pub mod sink;
pub mod slowlog;
pub mod store;
pub mod templates;
pub mod time;
pub mod wal;

pub use error::IngestError;
pub use pipeline::{IngestConfig, Pipeline};
