//! Reading ClickHouse: SQL over the HTTP interface with the server's own limits (time,
//! memory, result rows) set per request, the answer read in chunks up to a byte cap, and
//! `FORMAT JSON` rows turned into the same JSON rows the embedded store returns.

use std::time::Duration;

use async_trait::async_trait;

use super::ChClient;
use crate::read::{Answer, Dialect, Origin, Row, SqlBackend};
use crate::StoreError;

/// Limits a ClickHouse read runs under.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// `max_execution_time` of one query.
    pub timeout: Duration,
    /// `max_memory_usage` of one query, bytes.
    pub memory_bytes: usize,
    /// The largest answer read back, bytes; a larger one is refused, not buffered.
    pub answer_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            timeout: Duration::from_secs(20),
            memory_bytes: 2 << 30,
            answer_bytes: 64 << 20,
        }
    }
}

/// A ClickHouse server as a [`SqlBackend`].
pub struct ClickHouseBackend {
    client: ChClient,
    /// Users' SQL goes through this client when set: a read-only user whose settings
    /// profile (`readonly = 1`, limits) the server enforces, whatever the query says.
    reader: Option<ChClient>,
    cluster: bool,
    limits: ReadLimits,
}

impl ClickHouseBackend {
    /// A backend reading through `client`; with `cluster`, through the `{table}_all`
    /// Distributed tables that span the shards.
    pub fn new(client: ChClient, cluster: bool, limits: ReadLimits) -> ClickHouseBackend {
        ClickHouseBackend {
            client,
            reader: None,
            cluster,
            limits,
        }
    }

    /// Send users' SQL through `reader`: a user with `readonly = 1` and a settings profile
    /// holding the limits (the README shows one). With `readonly = 1` a query may not set
    /// settings, so none are sent: the profile's time, memory and row limits apply.
    pub fn with_reader(mut self, reader: ChClient) -> ClickHouseBackend {
        self.reader = Some(reader);
        self
    }
}

impl ChClient {
    fn reader(&self) -> &reqwest::Client {
        self.reads.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(super::REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default()
        })
    }

    /// POST `sql` with `params` (read-only settings and limits) and read the `FORMAT JSON`
    /// answer, at most `cap` bytes of it.
    pub async fn select(
        &self,
        sql: &str,
        params: &[(&str, String)],
        cap: usize,
        timeout: Duration,
    ) -> Result<Vec<Row>, (bool, String)> {
        let base = &self.url.base;
        let body = format!("{} FORMAT JSON", sql.trim().trim_end_matches(';'));
        let mut req = self.reader().post(base);
        if let Some((u, p)) = &self.url.user {
            req = req.basic_auth(u, Some(p));
        }
        let mut r = req
            .query(&[("database", self.url.database.as_str())])
            .query(params)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| (false, format!("clickhouse {base}: {e}")))?;
        let status = r.status();
        let mut buf = Vec::new();
        while let Some(chunk) = r
            .chunk()
            .await
            .map_err(|e| (false, format!("clickhouse {base}: {e}")))?
        {
            if buf.len() + chunk.len() > cap {
                return Err((
                    true,
                    format!(
                        "the answer is larger than {} MiB; add a LIMIT or narrow the query",
                        cap >> 20
                    ),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&buf);
            return Err((true, text.trim().chars().take(1000).collect()));
        }
        #[derive(serde::Deserialize)]
        struct Json {
            #[serde(default)]
            data: Vec<Row>,
        }
        serde_json::from_slice::<Json>(&buf)
            .map(|j| j.data)
            .map_err(|e| (false, format!("clickhouse answer: {e}")))
    }
}

#[async_trait]
impl SqlBackend for ClickHouseBackend {
    /// Its hourly views (migration 4, [`super::create_rollup_views`]).
    fn rollups(&self) -> bool {
        true
    }

    fn dialect(&self) -> Dialect {
        Dialect::ClickHouse
    }

    fn table(&self, t: &str) -> String {
        if self.cluster {
            format!("{t}_all")
        } else {
            t.to_string()
        }
    }

    async fn run(&self, sql: &str, origin: Origin) -> Result<Answer, StoreError> {
        let mut params: Vec<(&str, String)> = vec![
            ("readonly", "2".into()),
            ("output_format_json_quote_64bit_integers", "0".into()),
            ("output_format_json_quote_denormals", "0".into()),
            (
                "max_execution_time",
                self.limits.timeout.as_secs().to_string(),
            ),
            ("max_memory_usage", self.limits.memory_bytes.to_string()),
        ];
        if let Origin::User { max_rows } = origin {
            params.push(("max_result_rows", (max_rows + 1).to_string()));
            params.push(("result_overflow_mode", "break".into()));
        }
        let mut rows = match self
            .client
            // The server stops the query at `max_execution_time`; the client waits a little
            // longer so the server's own reason arrives rather than a client timeout.
            .select(
                sql,
                &params,
                self.limits.answer_bytes,
                self.limits.timeout + Duration::from_secs(5),
            )
            .await
        {
            Ok(rows) => rows,
            // The server answered with an error: the user's, or a bug in generated SQL.
            Err((true, msg)) => {
                return Err(match origin {
                    Origin::User { .. } => StoreError::BadInput(format!("SQL: {msg}")),
                    Origin::Generated => {
                        StoreError::Store(format!("clickhouse: {msg} (in generated SQL: {sql})"))
                    }
                })
            }
            Err((false, msg)) => return Err(StoreError::Unavailable(msg)),
        };
        let mut truncated = false;
        if let Origin::User { max_rows } = origin {
            truncated = rows.len() > max_rows;
            rows.truncate(max_rows);
        }
        Ok(Answer { rows, truncated })
    }
}
