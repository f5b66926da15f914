//! Where rows live. [`sink::StoreSink`] is the one interface between a write-ahead log and
//! a store; its implementations are the embedded store ([`local::LocalStore`]: memory +
//! Parquet + DataFusion, with hourly [`rollup`]s), ClickHouse ([`clickhouse`]: one client
//! for reads and writes, DDL per server version, migrations, RowBinary) and the Tantivy
//! full-text index ([`search::SearchIndex`]).
//!
//! Rows arrive as Arrow batches of the tables in `apus-schema`; nothing here parses input.
//! Must never depend on: `apus-ingest` (receivers), `apus-query`, the gateway or the
//! control plane.

#![warn(clippy::print_stdout)]

pub mod clickhouse;
mod error;
pub mod local;
pub mod metrics;
pub mod rollup;
pub mod search;
pub mod sink;

pub use error::StoreError;
