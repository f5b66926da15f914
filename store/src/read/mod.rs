//! The read side of the stores, behind one trait: [`SqlBackend`] runs SQL against a store
//! and returns JSON rows. Two implementations: [`local::LocalBackend`] (DataFusion over a
//! fresh snapshot of the embedded store) and [`crate::clickhouse::read::ClickHouseBackend`]
//! (the same client the ClickHouse sink writes with). The query tier builds SQL in the
//! backend's [`dialect::Dialect`] and never matches on which store it has.

pub mod dialect;
pub mod json;
pub mod local;

use std::sync::Arc;

use async_trait::async_trait;

use crate::local::LocalStore;
use crate::StoreError;
pub use dialect::Dialect;
pub use json::Row;

/// Who wrote the SQL, which decides how it is checked and how its errors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Built by the query tier from validated parameters; an error is the tier's bug.
    Generated,
    /// Typed by a user: read-only statements only, at most `max_rows` rows back, and an
    /// error is the user's (a 400 with the store's reason).
    User {
        /// Rows returned at most; the answer says whether there were more.
        max_rows: usize,
    },
}

/// Rows of an answer and whether a row cap cut it.
#[derive(Debug, Default)]
pub struct Answer {
    /// The rows, column names as keys.
    pub rows: Vec<Row>,
    /// True when the store had more rows than the cap.
    pub truncated: bool,
}

/// A store that answers SQL.
#[async_trait]
pub trait SqlBackend: Send + Sync {
    /// The SQL dialect the store speaks.
    fn dialect(&self) -> Dialect;

    /// The name to read table `t` by (a cluster reads through `{t}_all`).
    fn table(&self, t: &str) -> String {
        t.to_string()
    }

    /// The embedded store, when this backend reads one (its hourly rollups answer
    /// rankings without scanning raw rows).
    fn local(&self) -> Option<&Arc<LocalStore>> {
        None
    }

    /// Whether the store keeps the hourly rollups (`slow_sql_1h`, `access_log_1h`, keyed by
    /// `crate::rollup::keys`) that rankings read for the whole hours of a window.
    fn rollups(&self) -> bool {
        self.local().is_some()
    }

    /// Run one statement. Time limits are the caller's; memory and answer-size limits are
    /// the backend's.
    async fn run(&self, sql: &str, origin: Origin) -> Result<Answer, StoreError>;
}
