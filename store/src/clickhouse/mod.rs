//! ClickHouse, the scale-out store: the same tables as the embedded store, as MergeTree
//! tables partitioned by day, written by [`sink::ClickHouseSink`] and read by the query
//! tier. Talks to the server over its HTTP interface (`clickhouse://HOST:PORT/DB` names the
//! HTTP port), so it works with Debian's 18.16 as with current servers.
//!
//! DDL comes from the Arrow schemas of [`crate::schema`] in one of two profiles chosen by
//! probing `SELECT version()`:
//! - **legacy** (< 20.1, e.g. 18.16): `ts DateTime` + `ts_us UInt32` (no DateTime64),
//!   plain `String`s (LowCardinality is experimental there), no codecs, skip indexes or TTL
//!   — retention drops old partitions on a schedule instead.
//! - **modern** (≥ 20.1): the same columns with `LowCardinality` dimensions, `Delta`/`ZSTD`
//!   codecs, `tokenbf_v1`/`bloom_filter` skip indexes and a TTL.
//!
//! Both profiles share the column layout, so the query layer has one dialect. Migrations
//! are numbered, recorded in `_apus_migrations`, and idempotent (`IF NOT EXISTS`).

pub mod read;
pub mod rowbinary;
pub mod sink;
mod views;

pub use views::*;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;

use crate::StoreError;
use apus_schema::Table;

/// Where the ClickHouse server is, and as whom to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ChUrl {
    /// `http://host:port` of the HTTP interface.
    pub base: String,
    /// Database holding the tables.
    pub database: String,
    /// User and password (HTTP basic auth); none = the server's `default` user.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for ChUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChUrl")
            .field("base", &self.base)
            .field("database", &self.database)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl ChUrl {
    /// Parse `clickhouse://[USER[:PASSWORD]@]HOST:PORT/DATABASE` (PORT = the HTTP port,
    /// default 8123; DATABASE default `apus`).
    pub fn parse(url: &str) -> Result<ChUrl, StoreError> {
        let shown = match url.split_once('@') {
            Some((_, rest)) => format!("clickhouse://…@{rest}"),
            None => url.to_string(),
        };
        let bad = |why: &str| StoreError::BadInput(format!("store URL `{shown}`: {why}"));
        let rest = url
            .strip_prefix("clickhouse://")
            .ok_or_else(|| bad("expected clickhouse://HOST:PORT/DATABASE"))?;
        let (user, rest) = match rest.split_once('@') {
            Some((cred, rest)) => {
                let (u, p) = cred.split_once(':').unwrap_or((cred, ""));
                if u.is_empty() {
                    return Err(bad("empty user name"));
                }
                (Some((u.to_string(), p.to_string())), rest)
            }
            None => (None, rest),
        };
        let (hostport, db) = rest.split_once('/').unwrap_or((rest, "apus"));
        let db = if db.is_empty() { "apus" } else { db };
        if hostport.is_empty() {
            return Err(bad("missing host"));
        }
        if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad("database name must be [A-Za-z0-9_]"));
        }
        let hostport = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:8123")
        };
        Ok(ChUrl {
            base: format!("http://{hostport}"),
            database: db.to_string(),
            user,
        })
    }
}

/// The one client of a ClickHouse server's HTTP interface, for writes (blocking: the sink
/// runs on its own thread) and reads (async: the query tier). Each transport is made on
/// first use, so a reader never starts the blocking client's thread and a writer never
/// needs a runtime.
#[derive(Clone)]
pub struct ChClient {
    /// Server and database.
    pub url: ChUrl,
    blocking: Arc<OnceLock<reqwest::blocking::Client>>,
    pub(crate) reads: Arc<OnceLock<reqwest::Client>>,
}

/// How long one request may take end to end (a query's own limit is shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl ChClient {
    /// A client for `url`.
    pub fn new(url: ChUrl) -> ChClient {
        ChClient {
            url,
            blocking: Arc::default(),
            reads: Arc::default(),
        }
    }

    fn http(&self) -> &reqwest::blocking::Client {
        self.blocking.get_or_init(|| {
            reqwest::blocking::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default()
        })
    }

    /// A POST to the server, as the URL's user.
    fn post(&self) -> reqwest::blocking::RequestBuilder {
        let b = self.http().post(&self.url.base);
        match &self.url.user {
            Some((u, p)) => b.basic_auth(u, Some(p)),
            None => b,
        }
    }

    /// Run one statement; returns the response body.
    pub fn execute(&self, sql: &str) -> Result<String, StoreError> {
        let r = self
            .post()
            .body(sql.to_string())
            .send()
            .map_err(|e| StoreError::Store(format!("clickhouse {}: {e}", self.url.base)))?;
        let ok = r.status().is_success();
        let body = r
            .text()
            .map_err(|e| StoreError::Store(format!("clickhouse: {e}")))?;
        if ok {
            Ok(body)
        } else {
            Err(StoreError::Store(format!(
                "clickhouse: {}",
                body.trim().chars().take(2000).collect::<String>()
            )))
        }
    }

    /// Insert a RowBinary body into `table` (columns as [`columns`] lists them).
    pub fn insert(&self, t: Table, body: impl Into<bytes::Bytes>) -> Result<(), StoreError> {
        let q = format!(
            "INSERT INTO {}.{} ({}) FORMAT RowBinary",
            self.url.database,
            t.name(),
            columns(t).join(", ")
        );
        let r = self
            .post()
            .query(&[("query", q)])
            .body(body.into())
            .send()
            .map_err(|e| StoreError::Store(format!("clickhouse {}: {e}", self.url.base)))?;
        if r.status().is_success() {
            Ok(())
        } else {
            let body = r.text().unwrap_or_default();
            Err(StoreError::Store(format!(
                "clickhouse insert into {}: {}",
                t.name(),
                body.trim().chars().take(2000).collect::<String>()
            )))
        }
    }

    /// `(major, minor)` of the server.
    pub fn version(&self) -> Result<(u32, u32), StoreError> {
        let v = self.execute("SELECT version()")?;
        let mut it = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
    }
}

/// Which DDL a server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// 18.x/19.x: no DateTime64, codecs, skip indexes, TTL.
    Legacy,
    /// 20.1 and later.
    Modern,
}

impl Profile {
    /// The profile for a server version.
    pub fn for_version(major: u32, _minor: u32) -> Profile {
        if major >= 20 {
            Profile::Modern
        } else {
            Profile::Legacy
        }
    }
}

/// The low-cardinality dimension columns (LowCardinality in the modern profile).
const DIMENSIONS: &[&str] = &[
    "project", "env", "pool", "route", "tag", "method", "level", "kind", "source", "db", "user",
    "state", "host",
];

/// The sort key of each table: the dimensions rankings filter on, then time.
pub fn order_by(t: Table) -> &'static str {
    match t {
        Table::AccessLog | Table::Logs => "project, env, pool, ts",
        Table::SlowSql => "project, env, pool, fingerprint_id, ts",
        Table::Metrics => "name, project, env, ts",
        Table::Changes => "project, env, ts",
        Table::Alarms => "rule, ts",
        Table::DeadLetter => "source, ts",
    }
}

/// The insert column list of a table: the schema's columns (`ts` as `ts, ts_us`) plus
/// `_node, _seq`.
pub fn columns(t: Table) -> Vec<String> {
    let mut out = Vec::new();
    for f in t.schema().fields() {
        out.push(f.name().clone());
        if matches!(f.data_type(), DataType::Timestamp(_, _)) {
            out.push(format!("{}_us", f.name()));
        }
    }
    out.push("_node".into());
    out.push("_seq".into());
    out
}

/// `CREATE TABLE IF NOT EXISTS` of one table in a profile.
pub fn create_table(db: &str, t: Table, p: Profile, retention_days: u32) -> String {
    let mut cols = Vec::new();
    for f in t.schema().fields() {
        let name = f.name().as_str();
        let ty = match f.data_type() {
            DataType::Timestamp(_, _) => {
                let codec = if p == Profile::Modern {
                    " CODEC(DoubleDelta, ZSTD)"
                } else {
                    ""
                };
                cols.push(format!("{name} DateTime{codec}"));
                cols.push(format!("{name}_us UInt32"));
                continue;
            }
            DataType::UInt16 => "UInt16",
            DataType::UInt64 => "UInt64",
            DataType::Int64 => "Int64",
            DataType::Float64 => "Float64",
            _ if p == Profile::Modern && DIMENSIONS.contains(&name) => "LowCardinality(String)",
            _ if p == Profile::Modern => "String CODEC(ZSTD(3))",
            _ => "String",
        };
        cols.push(format!("{name} {ty}"));
    }
    cols.push("_node String".into());
    cols.push("_seq UInt64".into());
    if p == Profile::Modern {
        match t {
            Table::Logs => {
                cols.push(
                    "INDEX message_tokens message TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 4"
                        .into(),
                );
                cols.push(
                    "INDEX request_id_bf request_id TYPE bloom_filter(0.01) GRANULARITY 4".into(),
                );
            }
            Table::AccessLog => cols.push(
                "INDEX request_id_bf request_id TYPE bloom_filter(0.01) GRANULARITY 4".into(),
            ),
            _ => {}
        }
    }
    let ttl = if p == Profile::Modern && retention_days > 0 {
        format!(" TTL ts + INTERVAL {retention_days} DAY")
    } else {
        String::new()
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{} ({}) ENGINE = MergeTree() PARTITION BY toDate(ts) \
         ORDER BY ({}){ttl}",
        t.name(),
        cols.join(", "),
        order_by(t)
    )
}

/// The numbered migrations of a profile: each a list of idempotent statements.
pub fn migrations(db: &str, p: Profile, retention_days: u32) -> Vec<(u32, Vec<String>)> {
    vec![
        (
            1,
            Table::ALL
                .iter()
                .map(|t| create_table(db, *t, p, retention_days))
                .collect(),
        ),
        (2, vec![create_slow_sql_hourly(db)]),
        // The alarms table gained its project, env, fingerprint, severity and since
        // columns before anything wrote it: recreated, never altered.
        (
            3,
            vec![
                format!("DROP TABLE IF EXISTS {db}.alarms_all"),
                format!("DROP TABLE IF EXISTS {db}.alarms"),
                create_table(db, Table::Alarms, p, retention_days),
            ],
        ),
        (4, create_rollup_views(db)),
        (5, vec![create_minute_view(db)]),
        (6, create_root_cause_views(db)),
    ]
}

/// The Distributed table `{t}_all` over `{t}` on every shard of `cluster` (rows are
/// written to each node's local tables; reads through `_all` span the cluster).
pub fn create_distributed(db: &str, t: &str, cluster: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{t}_all AS {db}.{t} \
         ENGINE = Distributed({cluster}, {db}, {t}, rand())"
    )
}

/// [`migrate`], then (with a cluster name) the `_all` Distributed tables.
pub fn migrate_cluster(
    c: &ChClient,
    retention_days: u32,
    cluster: &str,
) -> Result<Profile, StoreError> {
    let p = migrate(c, retention_days)?;
    if !cluster.is_empty() {
        if !cluster
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(StoreError::BadInput(format!(
                "cluster name `{cluster}` must be [A-Za-z0-9_]"
            )));
        }
        let db = &c.url.database;
        for t in Table::ALL {
            c.execute(&create_distributed(db, t.name(), cluster))?;
        }
        for view in [
            "slow_sql_hourly",
            "slow_sql_1h",
            "access_log_1h",
            MINUTE_VIEW,
            LAYERS_VIEW,
            TENANTS_VIEW,
            TENANTS_HOUR_VIEW,
            SLOW_MINUTE_VIEW,
        ] {
            c.execute(&create_distributed(db, view, cluster))?;
        }
    }
    Ok(p)
}

/// Create the database and bring its schema up to date; returns the profile used.
pub fn migrate(c: &ChClient, retention_days: u32) -> Result<Profile, StoreError> {
    let (major, minor) = c.version()?;
    let p = Profile::for_version(major, minor);
    let db = &c.url.database;
    c.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))?;
    c.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}._apus_migrations (version UInt32, profile String, \
         applied DateTime) ENGINE = TinyLog"
    ))?;
    let done = c.execute(&format!(
        "SELECT version FROM {db}._apus_migrations FORMAT TSV"
    ))?;
    let done: Vec<u32> = done.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for (v, stmts) in migrations(db, p, retention_days) {
        if done.contains(&v) {
            continue;
        }
        for s in stmts {
            c.execute(&s)?;
        }
        c.execute(&format!(
            "INSERT INTO {db}._apus_migrations VALUES ({v}, '{}', now())",
            if p == Profile::Legacy {
                "legacy"
            } else {
                "modern"
            }
        ))?;
        tracing::info!(version = v, profile = ?p, database = %db, "clickhouse migration applied");
    }
    Ok(p)
}

/// Drop the day partitions older than `days` (18.16 has no TTL); returns how many.
pub fn expire(c: &ChClient, days: u32, now_us: i64) -> Result<usize, StoreError> {
    if days == 0 {
        return Ok(0);
    }
    let db = &c.url.database;
    let cutoff_day = now_us.div_euclid(86_400_000_000) - i64::from(days);
    let parts = c.execute(&format!(
        "SELECT DISTINCT table, partition FROM system.parts WHERE database = '{db}' \
         AND active FORMAT TSV"
    ))?;
    let mut dropped = 0;
    for line in parts.lines() {
        let Some((table, part)) = line.split_once('\t') else {
            continue;
        };
        let Some(day) = apus_schema::time::parse_rfc3339(&format!("{part}T00:00:00Z")) else {
            continue;
        };
        // A materialized view's rows live in `.inner.{view}`; the view takes the ALTER.
        let table = table.strip_prefix(".inner.").unwrap_or(table);
        if day.div_euclid(86_400_000_000) < cutoff_day
            && !table.starts_with('.')
            && table
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            c.execute(&format!("ALTER TABLE {db}.{table} DROP PARTITION '{part}'"))?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ChUrl::parse("clickhouse://127.0.0.1:18123/obs").unwrap();
        assert_eq!(u.base, "http://127.0.0.1:18123");
        assert_eq!(u.database, "obs");
        assert_eq!(
            ChUrl::parse("clickhouse://ch").unwrap().base,
            "http://ch:8123"
        );
        assert_eq!(ChUrl::parse("clickhouse://ch/").unwrap().database, "apus");
        assert!(ChUrl::parse("http://ch").is_err());
        assert!(ChUrl::parse("clickhouse://ch/a;drop").is_err());
        let r = ChUrl::parse("clickhouse://reader:s3cret@ch:8123/apus").unwrap();
        assert_eq!(r.user, Some(("reader".into(), "s3cret".into())));
        assert_eq!(r.base, "http://ch:8123");
        assert!(!format!("{r:?}").contains("s3cret"));
        let e = ChUrl::parse("http://reader:s3cret@ch")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn ddl_profiles() {
        let legacy = create_table("apus", Table::Logs, Profile::Legacy, 7);
        assert!(legacy.contains("ts DateTime, ts_us UInt32"), "{legacy}");
        assert!(legacy.contains("PARTITION BY toDate(ts)"));
        for absent in ["CODEC", "INDEX", "TTL", "LowCardinality", "DateTime64"] {
            assert!(!legacy.contains(absent), "{absent} in {legacy}");
        }
        let modern = create_table("apus", Table::Logs, Profile::Modern, 7);
        for present in [
            "CODEC(",
            "tokenbf_v1",
            "TTL ts + INTERVAL 7 DAY",
            "LowCardinality",
        ] {
            assert!(modern.contains(present), "{present} not in {modern}");
        }
        assert_eq!(Profile::for_version(18, 16), Profile::Legacy);
        assert_eq!(Profile::for_version(24, 3), Profile::Modern);
        let cols = columns(Table::AccessLog);
        assert_eq!(&cols[..2], &["ts", "ts_us"]);
        assert_eq!(&cols[cols.len() - 2..], &["_node", "_seq"]);
    }
}
