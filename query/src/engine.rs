//! The engine: SQL through the store's [`SqlBackend`] (the embedded store or ClickHouse),
//! bounded in time and concurrency here and in memory by the backend; and log search, local
//! (this process's Tantivy index) or fanned out to the ingest nodes that hold the indexes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_store::local::LocalStore;
use apus_store::read::local::LocalBackend;
use apus_store::read::{Answer, Origin, SqlBackend};
use apus_store::search::{Hit, SearchIndex, SearchResult};
use tokio::sync::Semaphore;

use crate::QueryError;
use apus_store::read::dialect::Dialect;
use apus_store::read::json::Row;

/// Where log searches go.
#[derive(Clone)]
pub enum Searcher {
    /// This process's index (`apus run`, or an ingest node answering its part).
    Local(Arc<SearchIndex>),
    /// Fan out to these ingest nodes (`http://host:port`), presenting `token` (a reader
    /// token of theirs), and merge by time.
    Remote {
        /// `http://host:port` of each node.
        nodes: Vec<String>,
        /// Bearer token for the nodes.
        token: Option<String>,
    },
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
    /// The token presented to `search_nodes`. Default: `$APUS_SEARCH_TOKEN`.
    pub search_token: Option<String>,
    /// `clickhouse://USER:PASSWORD@HOST:PORT/DB` of a read-only ClickHouse user (its
    /// profile: `readonly = 1` and the limits) that users' SQL runs as; the ingest store's
    /// user still runs the generated queries.
    pub clickhouse_reader: Option<String>,
    /// Alarm rules, receivers and routing (`[query.alarms]`); off without `rules_dir`.
    pub alarms: crate::alarm::AlarmConfig,
    /// The gateway admin API the console's release pages reach through `/admin/v1/…`
    /// (`http://host:port`); `apus run` sets its own.
    pub admin_url: Option<String>,
    /// Where saved dashboards are kept; `apus run` defaults to `DATA_DIR/dashboards`.
    pub dashboards_dir: Option<std::path::PathBuf>,
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
            search_token: None,
            clickhouse_reader: None,
            alarms: Default::default(),
            admin_url: None,
            dashboards_dir: None,
        }
    }
}

impl QueryConfig {
    /// The searcher this config asks for: remote nodes, or `local` when none are named.
    pub fn searcher(&self, local: Searcher) -> Searcher {
        if self.search_nodes.is_empty() {
            return local;
        }
        Searcher::Remote {
            nodes: self.search_nodes.clone(),
            token: self
                .search_token
                .clone()
                .or_else(|| std::env::var("APUS_SEARCH_TOKEN").ok())
                .filter(|t| !t.is_empty()),
        }
    }

    /// The console's settings.
    pub fn console(&self) -> crate::console::ConsoleConfig {
        crate::console::ConsoleConfig {
            admin_url: self.admin_url.clone(),
            dashboards_dir: self.dashboards_dir.clone(),
        }
    }

    /// The engine limits this config asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            memory_bytes: self.memory_mb.max(64) << 20,
            concurrency: self.concurrency.max(1),
        }
    }

    /// The limits a ClickHouse backend runs reads under.
    pub fn read_limits(&self) -> apus_store::clickhouse::read::ReadLimits {
        let l = self.limits();
        apus_store::clickhouse::read::ReadLimits {
            timeout: l.timeout,
            memory_bytes: l.memory_bytes,
            ..Default::default()
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
    backend: Arc<dyn SqlBackend>,
    searcher: Searcher,
    limits: Limits,
    slots: Semaphore,
    http: reqwest::Client,
}

impl Engine {
    /// An engine over the embedded store and a searcher.
    pub fn new(store: Arc<LocalStore>, searcher: Searcher, limits: Limits) -> Engine {
        let backend = LocalBackend::new(store, limits.memory_bytes);
        Self::with_backend(Arc::new(backend), searcher, limits)
    }

    /// An engine over any store.
    pub fn with_backend(
        backend: Arc<dyn SqlBackend>,
        searcher: Searcher,
        limits: Limits,
    ) -> Engine {
        Engine {
            backend,
            searcher,
            slots: Semaphore::new(limits.concurrency.max(1)),
            limits,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Whether rankings may read the store's hourly rollups (the embedded store's files or
    /// ClickHouse's views; [`Engine::dialect`] says which SQL reads them).
    pub fn rollups(&self) -> bool {
        self.backend.rollups()
    }

    /// The searcher this engine uses.
    pub fn searcher(&self) -> &Searcher {
        &self.searcher
    }

    /// The SQL dialect of the store.
    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// The name to read table `t` by.
    pub fn table(&self, t: &str) -> String {
        self.backend.table(t)
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

    /// Run trusted SQL (built by this crate, in [`Engine::dialect`]) and return JSON rows.
    ///
    /// An alias `_a_NAME` comes back as `NAME`: generated SQL names aggregates that way when
    /// NAME is also a column, because ClickHouse lets an alias shadow a column everywhere
    /// in the query (`max(db) AS db` would break `WHERE db = …`).
    pub async fn rows(&self, sql: &str) -> Result<Vec<Row>, QueryError> {
        let started = std::time::Instant::now();
        let mut rows = self
            .bounded(async { Ok(self.backend.run(sql, Origin::Generated).await?.rows) })
            .await?;
        // Each generated statement and its time, for `RUST_LOG=apus_query=debug`.
        tracing::debug!(
            ms = started.elapsed().as_secs_f64() * 1000.0,
            rows = rows.len(),
            sql,
            "generated query"
        );
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
    ///
    /// The SQL is checked on its syntax tree first ([`crate::sqlcheck`]), then runs on a
    /// runtime of its own (threads with large stacks), so a heavy query neither starves
    /// ingest and the gateway's shipping nor overflows a shared worker's stack; a query
    /// past the time limit is cancelled.
    pub async fn user_sql(&self, sql: &str, max_rows: usize) -> Result<Answer, QueryError> {
        crate::sqlcheck::check(sql, self.dialect())?;
        let (backend, sql) = (self.backend.clone(), sql.to_string());
        let task = user_runtime()?
            .spawn(async move { backend.run(&sql, Origin::User { max_rows }).await });
        let abort = task.abort_handle();
        let r = self
            .bounded(async {
                task.await
                    .map_err(|e| QueryError::Engine(format!("query task: {e}")))?
                    .map_err(QueryError::from)
            })
            .await;
        abort.abort();
        r
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
        // Searches take a query slot and obey the time limit like SQL does.
        self.bounded(async {
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
                Searcher::Remote { nodes, token } => {
                    let mut params: Vec<(String, String)> = vec![
                        ("q".into(), q.to_string()),
                        ("from".into(), from_us.to_string()),
                        ("to".into(), to_us.to_string()),
                        ("limit".into(), (offset + limit).to_string()),
                    ];
                    params.extend(filters.iter().cloned());
                    let answers = self
                        .ask_nodes(nodes, token.as_deref(), "/api/v1/logs/search", &params)
                        .await;
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
        })
        .await
    }
}

impl Engine {
    /// GET `path` with `params` on every search node at once: each node's JSON answer, a
    /// node's 4xx as a bad request (its reason), anything else as unavailable.
    async fn ask_nodes(
        &self,
        nodes: &[String],
        token: Option<&str>,
        path: &str,
        params: &[(String, String)],
    ) -> Vec<Result<serde_json::Value, QueryError>> {
        let calls = nodes.iter().map(|n| {
            let url = format!("{}{path}", n.trim_end_matches('/'));
            let mut req = self.http.get(&url).query(params);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
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
                Ok(body)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Matching lines per `step_us` bucket of `[from_us, to_us)`, on this node's index or
    /// summed over the search nodes (a node that does not answer fails it, as a search).
    pub async fn search_histogram(
        &self,
        q: &str,
        filters: &[(String, String)],
        (from_us, to_us, step_us): (i64, i64, i64),
    ) -> Result<Vec<u64>, QueryError> {
        let buckets = apus_store::search::histogram_buckets(from_us, to_us, step_us)?;
        self.bounded(async {
            match &self.searcher {
                Searcher::Local(idx) => {
                    let idx = idx.clone();
                    let (q, filters) = (q.to_string(), filters.to_vec());
                    tokio::task::spawn_blocking(move || {
                        idx.histogram(&q, &filters, from_us, to_us, step_us)
                    })
                    .await
                    .map_err(|e| QueryError::Engine(e.to_string()))?
                    .map_err(QueryError::from)
                }
                Searcher::Remote { nodes, token } => {
                    let mut params: Vec<(String, String)> = vec![
                        ("q".into(), q.to_string()),
                        ("from".into(), from_us.to_string()),
                        ("to".into(), to_us.to_string()),
                        ("step".into(), format!("{}s", step_us / 1_000_000)),
                    ];
                    params.extend(filters.iter().cloned());
                    let mut sum = vec![0u64; buckets];
                    let answers = self
                        .ask_nodes(nodes, token.as_deref(), "/api/v1/logs/histogram", &params)
                        .await;
                    for a in answers {
                        let body = a?;
                        for (i, c) in body["counts"].as_array().into_iter().flatten().enumerate() {
                            if let Some(slot) = sum.get_mut(i) {
                                *slot += c.as_u64().unwrap_or(0);
                            }
                        }
                    }
                    Ok(sum)
                }
                Searcher::Off => Err(QueryError::BadRequest(
                    "log search is not configured on this node".into(),
                )),
            }
        })
        .await
    }
}

/// The runtime users' SQL runs on: two threads with 64 MiB stacks, made on first use and
/// kept for the process (never dropped inside another runtime).
fn user_runtime() -> Result<&'static tokio::runtime::Handle, QueryError> {
    static RT: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("apus-user-sql")
            .thread_stack_size(64 << 20)
            .enable_all()
            .build()
            .ok()
    })
    .as_ref()
    .map(tokio::runtime::Runtime::handle)
    .ok_or_else(|| QueryError::Engine("could not start the user SQL runtime".into()))
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
