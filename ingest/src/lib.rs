//! Ingest tier: HTTP receivers and their formats, and the pipeline that makes what they
//! accept durable and hands it to the stores. The `collect` file tailer ships to it.
//!
//! Data flow: [`receivers`] parse hostile input (with the pure parsers of `apus-parse`)
//! into rows of `apus-schema` → [`pipeline::Pipeline::write`] builds an Arrow batch and
//! appends it to the WAL (`apus-wal`: group commit, fsync) → the WAL writer hands it to the
//! sinks of `apus-store` (embedded memory + Parquet or ClickHouse, and Tantivy) → the
//! client gets its 2xx.
//!
//! Must never depend on: `apus-query` (the read side), the gateway, the control plane.

#![warn(clippy::print_stdout)]

pub mod collect;
pub mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metrics;
pub mod pipeline;
pub mod receivers;

pub use config::IngestConfig;
pub use error::IngestError;
pub use pipeline::Pipeline;
