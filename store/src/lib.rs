//! Where rows live. [`sink::StoreSink`] is the one interface between a write-ahead log and
//! a store; its implementations are the embedded store ([`local::LocalStore`]: memory +
//! Parquet + DataFusion, with hourly [`rollup`]s), ClickHouse ([`clickhouse`]: one client
//! for reads and writes, DDL per server version, migrations, RowBinary) and the Tantivy
//! full-text index ([`search::SearchIndex`]). On the read side, [`read::SqlBackend`] is the
//! one trait the query tier runs SQL through, implemented by both stores.
//!
//! Rows arrive as Arrow batches of the tables in `apus-schema`; nothing here parses input.
//! Must never depend on: `apus-ingest` (receivers), `apus-query`, the gateway or the
//! control plane.

#![warn(clippy::print_stdout)]

pub mod clickhouse;
mod error;
pub mod local;
pub mod metrics;
pub mod read;
pub mod rollup;
pub mod search;
pub mod sink;

pub use error::StoreError;

/// Which store rows go to: `local` (the embedded store under the data directory) or
/// `clickhouse://HOST:PORT/DATABASE`. Checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum StoreUrl {
    /// The embedded store.
    #[default]
    Local,
    /// A ClickHouse server.
    ClickHouse(clickhouse::ChUrl),
}

impl StoreUrl {
    /// Parse `local` (or empty) or `clickhouse://HOST:PORT/DATABASE`.
    pub fn parse(s: &str) -> Result<StoreUrl, StoreError> {
        match s.trim() {
            "" | "local" => Ok(StoreUrl::Local),
            s => clickhouse::ChUrl::parse(s).map(StoreUrl::ClickHouse),
        }
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StoreUrl::parse(&s)
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}
