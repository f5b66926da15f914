//! The engine: SQL over a fresh snapshot of the embedded store (in-memory batches plus
//! Parquet files, registered into a new DataFusion context per query so a query sees one
//! consistent set of rows), bounded in memory, time and concurrency; and log search, local
//! (this process's Tantivy index) or fanned out to the ingest nodes that hold the indexes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_store::local::LocalStore;
use apus_store::search::{Hit, SearchIndex, SearchResult};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tokio::sync::Semaphore;

use crate::dialect::Dialect;
use crate::json::{self, Row};
use crate::QueryError;

/// Where log searches go.
#[derive(Clone)]
pub enum Searcher {
    /// This process's index (`apus run`, or an ingest node answering its part).
    Local(Arc<SearchIndex>),
    /// Fan out to these ingest nodes (`http://host:port`) and merge by time.
    Remote(Vec<String>),
    /// No search configured.
    Off,
}

/// `[query]` configuration.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Query API and dashboards listener.
    pub listen: String,
    /// Ingest nodes (`http://host:port`) to fan log searches out to; empty = this
    /// process's own index (`apus run`).
    pub search_nodes: Vec<String>,
    /// Wall-clock limit of one query, seconds.
    pub timeout_secs: u64,
    /// Memory all running queries may use together, MiB.
    pub memory_mb: usize,
    /// Queries running at once.
    pub concurrency: usize,
    /// Read through the `{table}_all` Distributed tables of a ClickHouse cluster.
    pub cluster: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let l = Limits::default();
        QueryConfig {
            listen: "127.0.0.1:3000".into(),
            search_nodes: Vec::new(),
            timeout_secs: l.timeout.as_secs(),
            memory_mb: l.memory_bytes >> 20,
            concurrency: l.concurrency,
            cluster: false,
        }
    }
}

impl QueryConfig {
    /// The engine limits this config asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            memory_bytes: self.memory_mb.max(64) << 20,
            concurrency: self.concurrency.max(1),
        }
    }
}

/// Resource limits of the engine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock limit of one query.
    pub timeout: Duration,
    /// Memory all running queries may use together.
    pub memory_bytes: usize,
    /// Queries running at once; more wait briefly, then get 429.
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(20),
            memory_bytes: 2 << 30,
            concurrency: 4,
        }
    }
}

/// Which store answers SQL.
#[derive(Clone)]
pub enum Store {
    /// The embedded store of this process (memory batches + Parquet, via DataFusion).
    Local(Arc<LocalStore>),
    /// A ClickHouse server (`base` = its HTTP interface); with `cluster`, queries read the
    /// `{table}_all` Distributed tables that span the shards.
    ClickHouse {
        /// `http://host:port`.
        base: String,
        /// Database.
        database: String,
        /// Read through the Distributed `{table}_all` tables.
        cluster: bool,
    },
}

/// The query engine over one store.
pub struct Engine {
    store: Store,
    searcher: Searcher,
    limits: Limits,
    runtime: Arc<RuntimeEnv>,
    slots: Semaphore,
    http: reqwest::Client,
    rollups: bool,
}

impl Engine {
    /// An engine over the embedded store and a searcher.
    pub fn new(store: Arc<LocalStore>, searcher: Searcher, limits: Limits) -> Engine {
        Self::with_store(Store::Local(store), searcher, limits)
    }

    /// An engine over any store.
    pub fn with_store(store: Store, searcher: Searcher, limits: Limits) -> Engine {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_bytes)))
            .build_arc()
            .unwrap_or_else(|_| Arc::new(RuntimeEnv::default()));
        Engine {
            store,
            searcher,
            slots: Semaphore::new(limits.concurrency.max(1)),
            limits,
            runtime,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            rollups: true,
        }
    }

    /// This engine, answering rankings from raw rows only (for comparisons and tests).
    pub fn without_rollups(mut self) -> Engine {
        self.rollups = false;
        self
    }

    /// Whether rankings may read the embedded store's hourly rollups.
    pub fn rollups(&self) -> bool {
        self.rollups && matches!(self.store, Store::Local(_))
    }

    /// The searcher this engine uses.
    pub fn searcher(&self) -> &Searcher {
        &self.searcher
    }

    /// The SQL dialect of the store.
    pub fn dialect(&self) -> Dialect {
        match self.store {
            Store::Local(_) => Dialect::DataFusion,
            Store::ClickHouse { .. } => Dialect::ClickHouse,
        }
    }

    /// The name to read table `t` by.
    pub fn table(&self, t: &str) -> String {
        match &self.store {
            Store::ClickHouse { cluster: true, .. } => format!("{t}_all"),
            _ => t.to_string(),
        }
    }

    /// POST `sql` to ClickHouse (read-only, with row/time limits) and return its rows.
    async fn clickhouse_rows(
        &self,
        sql: &str,
        max_rows: Option<usize>,
        user: bool,
    ) -> Result<(Vec<Row>, bool), QueryError> {
        let Store::ClickHouse { base, database, .. } = &self.store else {
            return Err(QueryError::Engine("not a ClickHouse store".into()));
        };
        let mut params: Vec<(&str, String)> = vec![
            ("database", database.clone()),
            ("readonly", "2".into()),
            ("output_format_json_quote_64bit_integers", "0".into()),
            ("output_format_json_quote_denormals", "0".into()),
            (
                "max_execution_time",
                self.limits.timeout.as_secs().to_string(),
            ),
            ("max_memory_usage", self.limits.memory_bytes.to_string()),
        ];
        if let Some(n) = max_rows {
            params.push(("max_result_rows", (n + 1).to_string()));
            params.push(("result_overflow_mode", "break".into()));
        }
        let body = format!("{} FORMAT JSON", sql.trim().trim_end_matches(';'));
        let r = self
            .http
            .post(base)
            .query(&params)
            .body(body)
            .send()
            .await
            .map_err(|e| QueryError::Unavailable(format!("clickhouse {base}: {e}")))?;
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| QueryError::Unavailable(format!("clickhouse {base}: {e}")))?;
        if !status.is_success() {
            let msg = text.trim().chars().take(1000).collect::<String>();
            return Err(if user {
                QueryError::BadRequest(format!("SQL: {msg}"))
            } else {
                QueryError::Engine(format!("clickhouse: {msg} (in generated SQL: {sql})"))
            });
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| QueryError::Engine(format!("clickhouse answer: {e}")))?;
        let mut rows: Vec<Row> = v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_object().cloned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let truncated = max_rows.is_some_and(|n| rows.len() > n);
        if let Some(n) = max_rows {
            rows.truncate(n);
        }
        Ok((rows, truncated))
    }

    async fn context(&self) -> Result<SessionContext, QueryError> {
        let Store::Local(store) = &self.store else {
            return Err(QueryError::Engine("not the embedded store".into()));
        };
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cfg = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(cfg, self.runtime.clone());
        store.register(&ctx).await?;
        Ok(ctx)
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let _slot = tokio::time::timeout(Duration::from_secs(2), self.slots.acquire())
            .await
            .map_err(|_| QueryError::Overloaded(1))?
            .map_err(|_| QueryError::Engine("engine closed".into()))?;
        let started = Instant::now();
        let r = tokio::time::timeout(self.limits.timeout, f)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout.as_secs()))?;
        metrics::histogram!("apus_query_seconds").record(started.elapsed().as_secs_f64());
        r
    }

    /// Run trusted SQL (built by this crate) and collect the batches.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        self.bounded(async {
            let ctx = self.context().await?;
            let df = ctx
                .sql(sql)
                .await
                .map_err(|e| QueryError::Engine(format!("{e} (in generated SQL: {sql})")))?;
            Ok(df.collect().await?)
        })
        .await
    }

    /// Run trusted SQL (built by this crate, in [`Engine::dialect`]) and return JSON rows.
    ///
    /// An alias `_a_NAME` comes back as `NAME`: generated SQL names aggregates that way when
    /// NAME is also a column, because ClickHouse lets an alias shadow a column everywhere
    /// in the query (`max(db) AS db` would break `WHERE db = …`).
    pub async fn rows(&self, sql: &str) -> Result<Vec<Row>, QueryError> {
        let mut rows = match self.store {
            Store::Local(_) => json::rows(&self.query(sql).await?),
            Store::ClickHouse { .. } => {
                self.bounded(async { Ok(self.clickhouse_rows(sql, None, false).await?.0) })
                    .await?
            }
        };
        if rows
            .first()
            .is_some_and(|r| r.keys().any(|k| k.starts_with("_a_")))
        {
            for r in &mut rows {
                *r = std::mem::take(r)
                    .into_iter()
                    .map(|(k, v)| match k.strip_prefix("_a_") {
                        Some(n) => (n.to_string(), v),
                        None => (k, v),
                    })
                    .collect();
            }
        }
        Ok(rows)
    }

    /// [`Engine::rows`] taking the SQL by value (for joining several futures).
    pub async fn rows_owned(&self, sql: String) -> Result<Vec<Row>, QueryError> {
        self.rows(&sql).await
    }

    /// Run an SRE's SQL: one `SELECT` (or `WITH … SELECT`, `EXPLAIN` of one) only; at most
    /// `max_rows` rows are returned and `truncated` says whether there were more.
    pub async fn user_sql(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<(Vec<Row>, bool), QueryError> {
        check_read_only(sql)?;
        if let Store::ClickHouse { .. } = self.store {
            return self
                .bounded(self.clickhouse_rows(sql, Some(max_rows), true))
                .await;
        }
        self.bounded(async {
            let ctx = self.context().await?;
            let opts = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df = ctx
                .sql_with_options(sql, opts)
                .await
                .map_err(|e| QueryError::BadRequest(format!("SQL: {e}")))?;
            let df = df.limit(0, Some(max_rows + 1))?;
            let mut rows = json::rows(&df.collect().await?);
            let truncated = rows.len() > max_rows;
            rows.truncate(max_rows);
            Ok((rows, truncated))
        })
        .await
    }

    /// Search logs: Tantivy syntax in `q`, exact dimension filters, a time range, newest
    /// first. Remote searchers ask every node for `offset + limit` hits and merge by time,
    /// so a page is exact across nodes; a node that does not answer fails the search
    /// (never a silently partial answer).
    pub async fn search(
        &self,
        q: &str,
        filters: &[(String, String)],
        from_us: i64,
        to_us: i64,
        limit: usize,
        offset: usize,
    ) -> Result<SearchResult, QueryError> {
        match &self.searcher {
            Searcher::Local(idx) => {
                let idx = idx.clone();
                let (q, filters) = (q.to_string(), filters.to_vec());
                tokio::task::spawn_blocking(move || {
                    idx.search(&q, &filters, Some(from_us), Some(to_us), limit, offset)
                })
                .await
                .map_err(|e| QueryError::Engine(e.to_string()))?
                .map_err(QueryError::from)
            }
            Searcher::Remote(nodes) => {
                let mut params: Vec<(String, String)> = vec![
                    ("q".into(), q.to_string()),
                    ("from".into(), from_us.to_string()),
                    ("to".into(), to_us.to_string()),
                    ("limit".into(), (offset + limit).to_string()),
                ];
                params.extend(filters.iter().cloned());
                let calls = nodes.iter().map(|n| {
                    let url = format!("{}/api/v1/logs/search", n.trim_end_matches('/'));
                    let req = self.http.get(&url).query(&params);
                    async move {
                        let r = req
                            .send()
                            .await
                            .map_err(|e| QueryError::Unavailable(format!("{url}: {e}")))?;
                        let status = r.status();
                        let body: serde_json::Value = r
                            .json()
                            .await
                            .map_err(|e| QueryError::Unavailable(format!("{url}: {e}")))?;
                        if status.is_client_error() {
                            return Err(QueryError::BadRequest(
                                body["error"].as_str().unwrap_or("bad search").to_string(),
                            ));
                        }
                        if !status.is_success() {
                            return Err(QueryError::Unavailable(format!("{url}: {status}")));
                        }
                        Ok::<_, QueryError>(body)
                    }
                });
                let answers = futures::future::join_all(calls).await;
                let mut total = 0usize;
                let mut hits: Vec<Hit> = Vec::new();
                for a in answers {
                    let body = a?;
                    total += body["total"].as_u64().unwrap_or(0) as usize;
                    for h in body["rows"].as_array().into_iter().flatten() {
                        hits.push(hit_from_json(h));
                    }
                }
                hits.sort_by_key(|h| std::cmp::Reverse(h.ts));
                let rows = hits.into_iter().skip(offset).take(limit).collect();
                Ok(SearchResult { total, rows })
            }
            Searcher::Off => Err(QueryError::BadRequest(
                "log search is not configured on this node".into(),
            )),
        }
    }
}

fn hit_from_json(h: &serde_json::Value) -> Hit {
    let mut dims = std::collections::BTreeMap::new();
    let mut ts = 0;
    let (mut message, mut exception) = (String::new(), String::new());
    if let Some(o) = h.as_object() {
        for (k, v) in o {
            match k.as_str() {
                "ts" => ts = v.as_i64().unwrap_or(0),
                "time" => {}
                "message" => message = v.as_str().unwrap_or("").to_string(),
                "exception" => exception = v.as_str().unwrap_or("").to_string(),
                k => {
                    if let Some(s) = v.as_str() {
                        dims.insert(k.to_string(), s.to_string());
                    }
                }
            }
        }
    }
    Hit {
        ts,
        message,
        exception,
        dims,
    }
}

/// Reject anything but one read-only query, with the reason.
pub fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let stmts = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| QueryError::BadRequest(format!("SQL: {e}")))?;
    match stmts.as_slice() {
        [] => Err(QueryError::BadRequest("SQL: empty statement".into())),
        [Statement::Query(_)] => Ok(()),
        [Statement::Explain { statement, .. }] if matches!(**statement, Statement::Query(_)) => {
            Ok(())
        }
        [s] => Err(QueryError::BadRequest(format!(
            "SQL: only SELECT queries are allowed here, not `{}`",
            s.to_string()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ))),
        _ => Err(QueryError::BadRequest(
            "SQL: one statement per request".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_sql() {
        assert!(check_read_only("SELECT 1").is_ok());
        assert!(check_read_only("with a as (select 1) select * from a").is_ok());
        for bad in [
            "DROP TABLE logs",
            "INSERT INTO logs VALUES (1)",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "SELECT 1; SELECT 2",
            "",
            "SELEC 1",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let e = check_read_only(bad).unwrap_err();
            assert!(matches!(e, QueryError::BadRequest(_)), "{bad}: {e}");
        }
    }
}
