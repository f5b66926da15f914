//! The HTTP receivers on the ingest listener (default `127.0.0.1:9200`):
//!
//! | path | input | table |
//! |---|---|---|
//! | `POST /ingest/v1/logs` | JSON lines | `logs` |
//! | `POST /_bulk`, `POST /{index}/_bulk` | Elasticsearch bulk API | `logs` |
//! | `POST /ingest/v1/slowlog` | raw MySQL/MariaDB slow log, streamed | `slow_sql` |
//! | `POST /api/v1/write` | Prometheus remote_write | `metrics` |
//! | `POST /ingest/v1/metrics` | Prometheus text format | `metrics` |
//! | `POST /ingest/v1/access`, `/ingest/v1/changes` | JSON lines of the row types | `access_log`, `changes` |
//!
//! Hostile input: a malformed record is rejected with its reason, counted, and kept in
//! `dead_letter` with the raw input, while the rest of the batch lands; bodies over the
//! limit get 413; overload gets 429 with `Retry-After`. Every 2xx means durable.

mod auth;
mod budget;
mod bulk;
mod fields;
mod logs;
mod prom;
mod slowlog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use bulk::{bulk_actions, bulk_item, BulkAction, BulkOutcome};
pub use logs::{map_log, parse_log, Dims, ParsedLog, SharedMiner};
pub use prom::{decode_remote_write, parse_text_line, Label, Sample, TimeSeries, WriteRequest};

use crate::metrics as m;
use crate::pipeline::Pipeline;
use crate::IngestError;
use apus_auth::{Principal, Tokens};
use apus_parse::templates::MinerConfig;
use apus_schema::time::now_us;
use apus_schema::{AccessRecord, ChangeRecord, DeadLetterRecord, Micros, Row};

/// Renders the process's Prometheus metrics (installed by the binary).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared receiver state.
#[derive(Clone)]
pub struct Receivers {
    pipeline: Arc<Pipeline>,
    miner: Arc<SharedMiner>,
    render: Option<MetricsRender>,
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "ingest request failed");
        }
        let retry = match &self {
            IngestError::Overloaded(_, secs) => Some((*secs).max(1)),
            _ if status == StatusCode::INSUFFICIENT_STORAGE => Some(5),
            _ => None,
        };
        let mut r = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let Some(secs) = retry {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        r
    }
}

const MAX_RAW: usize = 64 * 1024;
const MAX_REPORTED: usize = 100;
/// Dead-letter records kept per request; the rest are summarised in one more record, so a
/// body of garbage cannot multiply into millions of rows.
pub const MAX_DEAD_LETTERS: usize = 1000;

fn truncate(s: &str) -> String {
    if s.len() <= MAX_RAW {
        return s.to_string();
    }
    let mut end = MAX_RAW;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Rejected records of one request.
#[derive(Default)]
pub(crate) struct Rejects {
    rows: Vec<DeadLetterRecord>,
    report: Vec<Value>,
    /// Rejected past [`MAX_DEAD_LETTERS`]: counted, summarised in one record.
    more: usize,
    more_source: String,
}

impl Rejects {
    fn add(&mut self, source: &str, line: usize, reason: String, raw: &str) {
        if self.report.len() < MAX_REPORTED {
            self.report.push(json!({ "line": line, "reason": reason }));
        }
        if self.rows.len() >= MAX_DEAD_LETTERS {
            self.more += 1;
            self.more_source = source.into();
            return;
        }
        self.rows.push(DeadLetterRecord {
            ts: Micros(now_us()),
            source: source.into(),
            reason,
            raw: truncate(raw),
        });
    }

    /// How many records were refused.
    fn count(&self) -> usize {
        self.rows.len() + self.more
    }

    async fn store(&mut self, p: &Pipeline, source: &'static str) -> Result<(), IngestError> {
        if self.count() > 0 {
            metrics::counter!(m::REJECTED, "receiver" => source).increment(self.count() as u64);
        }
        if self.more > 0 {
            self.rows.push(DeadLetterRecord {
                ts: Micros(now_us()),
                source: std::mem::take(&mut self.more_source),
                reason: format!(
                    "{} more records of this request were refused; the first {MAX_DEAD_LETTERS} \
                     are kept with their reasons",
                    self.more
                ),
                raw: String::new(),
            });
        }
        if !self.rows.is_empty() {
            p.write(&self.rows).await?;
        }
        Ok(())
    }

    /// 200 when anything landed (or nothing was sent), 400 when every record was refused.
    fn response(self, accepted: usize) -> Response {
        let rejected = self.count();
        let status = if accepted == 0 && rejected > 0 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        (
            status,
            Json(json!({ "accepted": accepted, "rejected": rejected, "errors": self.report })),
        )
            .into_response()
    }
}

fn dims(q: &HashMap<String, String>, h: &HeaderMap) -> Dims {
    let get = |k: &str| {
        q.get(k)
            .cloned()
            .or_else(|| {
                h.get(format!("x-apus-{k}"))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    Dims {
        project: get("project"),
        env: get("env"),
        pool: get("pool"),
        host: get("host"),
    }
}

fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
}

async fn post_logs(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, IngestError> {
    s.pipeline.admit()?;
    metrics::counter!(m::BYTES, "receiver" => "logs").increment(body.len() as u64);
    let d = dims(&q, &h);
    let miner = s.miner.clone();
    let (rows, mut rejects) = tokio::task::spawn_blocking(move || {
        let mut parsed = Vec::new();
        let mut rej = Rejects::default();
        for (n, line) in lines(&body) {
            // The raw text is only copied for lines that are rejected.
            match parse_log(line, &d) {
                Ok(r) => parsed.push(r),
                Err(e) => rej.add("logs", n, e, &String::from_utf8_lossy(line)),
            }
        }
        (miner.template(parsed), rej)
    })
    .await
    .map_err(|e| IngestError::Store(e.to_string()))?;
    let rows = auth::in_scope(&who, rows, &mut rejects, "logs");
    s.pipeline.write(&rows).await?;
    rejects.store(&s.pipeline, "logs").await?;
    Ok(rejects.response(rows.len()))
}

/// Elasticsearch bulk API: `index` and `create` actions, ES-shaped per-item results.
async fn post_bulk(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    index: Option<Path<String>>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, IngestError> {
    s.pipeline.admit()?;
    let start = Instant::now();
    metrics::counter!(m::BYTES, "receiver" => "bulk").increment(body.len() as u64);
    let mut d = dims(&q, &h);
    let default_index = index.map(|p| p.0).unwrap_or_default();
    if d.project.is_empty() {
        d.project = default_index.clone();
    }
    let miner = s.miner.clone();
    let (rows, rej, items) = tokio::task::spawn_blocking(move || {
        let mut parsed = Vec::new();
        let mut rej = Rejects::default();
        let mut items = Vec::new();
        let gen_id = |seq: u64| format!("{:x}-{seq}", now_us());
        for a in bulk_actions(&body, &default_index, gen_id) {
            let error = match a.outcome {
                BulkOutcome::Rejected { reason, raw } => {
                    rej.add(
                        "bulk",
                        a.line,
                        reason.clone(),
                        &String::from_utf8_lossy(raw),
                    );
                    Some(reason)
                }
                BulkOutcome::Document { line, doc } => {
                    let mut dd = d.clone();
                    if dd.project.is_empty() {
                        dd.project = a.index.clone();
                    }
                    match parse_log(doc, &dd) {
                        Ok(r) => {
                            parsed.push(r);
                            None
                        }
                        Err(reason) => {
                            rej.add("bulk", line, reason.clone(), &String::from_utf8_lossy(doc));
                            Some(reason)
                        }
                    }
                }
            };
            items.push(bulk_item(&a.action, &a.index, &a.id, error));
        }
        (miner.template(parsed), rej, items)
    })
    .await
    .map_err(|e| IngestError::Store(e.to_string()))?;
    let (rows, mut rej) = (rows, rej);
    let rows = auth::in_scope(&who, rows, &mut rej, "bulk");
    s.pipeline.write(&rows).await?;
    rej.store(&s.pipeline, "bulk").await?;
    let body = json!({ "took": start.elapsed().as_millis() as u64, "errors": rej.count() > 0, "items": items });
    Ok(([("x-elastic-product", "Elasticsearch")], Json(body)).into_response())
}

/// JSON lines of a row type (from remote gateways: access logs and changes), parsed on a
/// blocking thread.
async fn post_rows<R>(
    s: &Receivers,
    who: &Principal,
    source: &'static str,
    body: Bytes,
) -> Result<Response, IngestError>
where
    R: Row + DeserializeOwned + apus_schema::Scoped + serde::Serialize,
{
    s.pipeline.admit()?;
    metrics::counter!(m::BYTES, "receiver" => source).increment(body.len() as u64);
    let (rows, mut rej) = tokio::task::spawn_blocking(move || {
        let mut rows: Vec<R> = Vec::new();
        let mut rej = Rejects::default();
        for (n, line) in lines(&body) {
            match serde_json::from_slice::<R>(line) {
                Ok(r) => rows.push(r),
                Err(e) => rej.add(
                    source,
                    n,
                    format!("invalid record: {e}"),
                    &String::from_utf8_lossy(line),
                ),
            }
        }
        (rows, rej)
    })
    .await
    .map_err(|e| IngestError::Store(e.to_string()))?;
    let rows = auth::in_scope(who, rows, &mut rej, source);
    s.pipeline.write(&rows).await?;
    rej.store(&s.pipeline, source).await?;
    Ok(rej.response(rows.len()))
}

async fn post_access(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    body: Bytes,
) -> Result<Response, IngestError> {
    post_rows::<AccessRecord>(&s, &who, "access", body).await
}

async fn post_changes(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    body: Bytes,
) -> Result<Response, IngestError> {
    post_rows::<ChangeRecord>(&s, &who, "changes", body).await
}

async fn post_metrics_text(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    body: Bytes,
) -> Result<Response, IngestError> {
    s.pipeline.admit()?;
    metrics::counter!(m::BYTES, "receiver" => "metrics").increment(body.len() as u64);
    let (rows, mut rej) = tokio::task::spawn_blocking(move || {
        let text = String::from_utf8_lossy(&body);
        let now = now_us();
        let mut rows = Vec::new();
        let mut rej = Rejects::default();
        for (n, line) in text.lines().enumerate() {
            match parse_text_line(line, now) {
                None => {}
                Some(Ok(r)) => rows.push(r),
                Some(Err(e)) => rej.add("metrics", n + 1, e, line),
            }
        }
        (rows, rej)
    })
    .await
    .map_err(|e| IngestError::Store(e.to_string()))?;
    let rows = auth::in_scope(&who, rows, &mut rej, "metrics");
    s.pipeline.write(&rows).await?;
    rej.store(&s.pipeline, "metrics").await?;
    Ok(rej.response(rows.len()))
}

async fn post_remote_write(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    body: Bytes,
) -> Result<Response, IngestError> {
    s.pipeline.admit()?;
    metrics::counter!(m::BYTES, "receiver" => "remote_write").increment(body.len() as u64);
    let max_decoded = s.pipeline.cfg.receivers.max_body_bytes * 8;
    let b = body.clone();
    let decoded = tokio::task::spawn_blocking(move || decode_remote_write(&b, max_decoded))
        .await
        .map_err(|e| IngestError::Store(e.to_string()))?;
    match decoded {
        Ok(rows) => {
            let mut rej = Rejects::default();
            let rows = auth::in_scope(&who, rows, &mut rej, "remote_write");
            s.pipeline.write(&rows).await?;
            rej.store(&s.pipeline, "remote_write").await?;
            if rows.is_empty() && rej.count() > 0 {
                return Err(IngestError::Forbidden(format!(
                    "every series is outside token `{}`'s scopes ({})",
                    who.name,
                    who.scope_list()
                )));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err((413, e)) => Err(IngestError::TooLarge(e)),
        Err((_, e)) => {
            let mut rej = Rejects::default();
            rej.add(
                "remote_write",
                0,
                e.clone(),
                &format!("<{} bytes of snappy protobuf>", body.len()),
            );
            rej.store(&s.pipeline, "remote_write").await?;
            Err(IngestError::BadInput(e))
        }
    }
}

async fn post_slowlog(
    State(s): State<Receivers>,
    Extension(who): Extension<Arc<Principal>>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    s.pipeline.admit()?;
    let d = dims(&q, &h);
    // Every entry of a slow log takes its project and env from the request.
    who.check(apus_auth::Action::Ingest, &d.project, &d.env)
        .map_err(|e| IngestError::Forbidden(e.to_string()))?;
    let n = slowlog::ingest_stream(&s.pipeline, &d, body).await?;
    Ok(Json(json!({ "accepted": n, "rejected": 0, "errors": [] })).into_response())
}

async fn es_root() -> Response {
    (
        [("x-elastic-product", "Elasticsearch")],
        Json(json!({
            "name": "apus", "cluster_name": "apus", "cluster_uuid": "apus",
            "version": { "number": "8.11.0", "build_flavor": "default", "lucene_version": "9.8.0",
                         "minimum_wire_compatibility_version": "7.17.0", "minimum_index_compatibility_version": "7.0.0" },
            "tagline": "You Know, for Search"
        })),
    )
        .into_response()
}

async fn render_metrics(State(s): State<Receivers>) -> Response {
    match &s.render {
        Some(r) => ([("content-type", "text/plain; version=0.0.4")], r()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

/// The receivers' router; every path but `/health` and `/metrics` checks `tokens`.
pub fn router(
    pipeline: Arc<Pipeline>,
    render: Option<MetricsRender>,
    tokens: Arc<Tokens>,
) -> Router {
    let limit = pipeline.cfg.receivers.max_body_bytes;
    let (inflight, retry_after_s) = (
        pipeline.cfg.receivers.max_inflight_bytes,
        pipeline.cfg.receivers.retry_after_s,
    );
    let state = Receivers {
        pipeline,
        miner: Arc::new(SharedMiner::new(MinerConfig::default())),
        render,
    };
    Router::new()
        .route(
            "/",
            get(es_root).head(|| async { [("x-elastic-product", "Elasticsearch")] }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .route("/ingest/v1/logs", post(post_logs))
        .route("/_bulk", post(post_bulk))
        .route("/{index}/_bulk", post(post_bulk))
        .route("/api/v1/write", post(post_remote_write))
        .route("/ingest/v1/metrics", post(post_metrics_text))
        .route("/ingest/v1/access", post(post_access))
        .route("/ingest/v1/changes", post(post_changes))
        .route(
            "/ingest/v1/slowlog",
            post(post_slowlog).layer(DefaultBodyLimit::disable()),
        )
        .layer(DefaultBodyLimit::max(limit))
        // Inner to the token check: an unauthenticated request takes no budget.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(budget::Budgets::new(inflight, retry_after_s)),
            budget::admit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::authorize,
        ))
        .with_state(state)
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn dead_letters_are_capped_per_request() {
        // A body of garbage lines must not become millions of dead-letter rows.
        let mut r = Rejects::default();
        for i in 0..50_000 {
            r.add("logs", i, "invalid JSON".into(), "{");
        }
        assert_eq!(r.rows.len(), MAX_DEAD_LETTERS);
        assert_eq!(r.count(), 50_000);
        assert_eq!(r.report.len(), MAX_REPORTED);
        let resp = r.response(0);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn overload_tells_the_configured_wait() {
        let r = IngestError::Overloaded("full".into(), 7).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "7");
        let r = IngestError::BadInput("x".into()).into_response();
        assert!(r.headers().get("retry-after").is_none());
    }
}
