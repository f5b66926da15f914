//! SQL over the embedded store: DataFusion over a fresh snapshot (in-memory batches plus
//! Parquet files, registered into a new context per query, so a query sees one consistent
//! set of rows), with one memory pool shared by every running query.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use super::{json, Answer, Dialect, Origin, SqlBackend};
use crate::local::LocalStore;
use crate::StoreError;

/// The largest answer to a user's SQL, in Arrow bytes (its JSON is of the same order).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The embedded store as a [`SqlBackend`].
pub struct LocalBackend {
    store: Arc<LocalStore>,
    runtime: Arc<RuntimeEnv>,
    rollups: bool,
}

impl LocalBackend {
    /// A backend over `store` whose running queries share `memory_bytes`.
    pub fn new(store: Arc<LocalStore>, memory_bytes: usize) -> LocalBackend {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_bytes)))
            .build_arc()
            .unwrap_or_else(|_| Arc::new(RuntimeEnv::default()));
        LocalBackend {
            store,
            runtime,
            rollups: true,
        }
    }

    /// This backend, not offering its rollups (rankings then scan raw rows; for
    /// comparisons and tests).
    pub fn without_rollups(mut self) -> LocalBackend {
        self.rollups = false;
        self
    }

    async fn context(&self) -> Result<SessionContext, StoreError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cfg = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(cfg, self.runtime.clone());
        self.store.register(&ctx).await?;
        Ok(ctx)
    }

    /// Run trusted SQL and collect the batches.
    pub async fn batches(&self, sql: &str) -> Result<Vec<RecordBatch>, StoreError> {
        let ctx = self.context().await?;
        let df = ctx
            .sql(sql)
            .await
            .map_err(|e| StoreError::Store(format!("{e} (in generated SQL: {sql})")))?;
        df.collect()
            .await
            .map_err(|e| StoreError::Store(e.to_string()))
    }
}

#[async_trait]
impl SqlBackend for LocalBackend {
    fn dialect(&self) -> Dialect {
        Dialect::DataFusion
    }

    fn local(&self) -> Option<&Arc<LocalStore>> {
        self.rollups.then_some(&self.store)
    }

    async fn run(&self, sql: &str, origin: Origin) -> Result<Answer, StoreError> {
        let Origin::User { max_rows } = origin else {
            return Ok(Answer {
                rows: json::rows(&self.batches(sql).await?),
                truncated: false,
            });
        };
        let ctx = self.context().await?;
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(sql, opts)
            .await
            .map_err(|e| StoreError::BadInput(format!("SQL: {e}")))?;
        let df = df
            .limit(0, Some(max_rows + 1))
            .map_err(|e| StoreError::BadInput(format!("SQL: {e}")))?;
        let batches = df
            .collect()
            .await
            .map_err(|e| StoreError::Store(e.to_string()))?;
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        if bytes > MAX_ANSWER_BYTES {
            return Err(StoreError::BadInput(format!(
                "SQL: the answer is larger than {} MiB; select fewer columns or rows",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        let mut rows = json::rows(&batches);
        let truncated = rows.len() > max_rows;
        rows.truncate(max_rows);
        Ok(Answer { rows, truncated })
    }
}
