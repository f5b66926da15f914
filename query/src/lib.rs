//! Query tier: the read side of Apus. SREs' questions — slow-SQL TOP N, exception
//! rankings, pool/route/tenant rankings split by lane, time series, log search, read-only
//! SQL, the change timeline and root cause — answered from columnar scans (DataFusion over
//! the embedded store) and Tantivy, never from row-by-row code.
//!
//! Layers: [`params`] turns hostile query strings into a validated time range and
//! dimension filters; [`engine::Engine`] runs SQL against a fresh snapshot of the store
//! (memory batches + Parquet) and searches; [`rank`] builds the ranking queries;
//! [`rootcause`] holds the pure attribution algorithms and [`investigate`] feeds them;
//! [`api`] is the HTTP surface on the query listener (default `127.0.0.1:3000`);
//! [`signals`] answers the questions alarm rules (and rollout analysis) ask, and [`alarm`]
//! evaluates the rules as rows land and delivers notifications like Alertmanager.
//!
//! Must never depend on: `apus-ingest` (the write side), the gateway, the control plane;
//! it reads the stores through `apus-store` and the tables of `apus-schema`.

#![warn(clippy::print_stdout)]

pub mod alarm;
pub mod analysis;
pub mod api;
pub mod auth;
pub mod console;
pub mod engine;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod investigate;
pub mod params;
pub mod rank;
pub mod rollup;
pub mod rootcause;
pub mod series;
pub mod signals;
pub mod sqlcheck;

pub use engine::{Engine, QueryConfig, Searcher};
pub use error::QueryError;
