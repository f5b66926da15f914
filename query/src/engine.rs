//! The engine: SQL over a fresh snapshot of the embedded store (in-memory batches plus
//! Parquet files, registered into a new DataFusion context per query so a query sees one
//! consistent set of rows), bounded in memory, time and concurrency; and log search, local
//! (this process's Tantivy index) or fanned out to the ingest nodes that hold the indexes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_ingest::search::{Hit, SearchIndex, SearchResult};
use apus_ingest::store::LocalStore;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tokio::sync::Semaphore;

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

/// The query engine over one store.
pub struct Engine {
    store: Arc<LocalStore>,
    searcher: Searcher,
    limits: Limits,
    runtime: Arc<RuntimeEnv>,
    slots: Semaphore,
    http: reqwest::Client,
}

impl Engine {
    /// An engine over the embedded store and a searcher.
    pub fn new(store: Arc<LocalStore>, searcher: Searcher, limits: Limits) -> Engine {
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
        }
    }

    /// The searcher this engine uses.
    pub fn searcher(&self) -> &Searcher {
        &self.searcher
    }

    async fn context(&self) -> Result<SessionContext, QueryError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cfg = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(cfg, self.runtime.clone());
        self.store.register(&ctx).await?;
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

    /// Run trusted SQL and return JSON rows.
    pub async fn rows(&self, sql: &str) -> Result<Vec<Row>, QueryError> {
        Ok(json::rows(&self.query(sql).await?))
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
