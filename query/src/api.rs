//! The query API on the query listener (default `127.0.0.1:3000`). Every answer is a JSON
//! object with a `rows` array plus the time range and `took_ms`; every bad parameter is a
//! 400 naming it; overload is a 429 with `Retry-After`.
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/slow-sql/top` | slow SQL TOP N by fingerprint |
//! | `GET /api/v1/exceptions/top` | exception templates per pool vs the previous window |
//! | `GET /api/v1/rank/{pools,routes,tenants,upstreams}` | traffic, errors, latency by lane |
//! | `GET /api/v1/timeseries` | an aggregate in time buckets |
//! | `GET /api/v1/logs/search` | Tantivy search, newest first, paged |
//! | `GET /api/v1/logs/histogram` | a search's hits per time bucket |
//! | `POST /api/v1/sql` | read-only SQL |
//! | `GET /api/v1/changes` | the change timeline |
//! | `GET /api/v1/rootcause` | ranked suspects with evidence |
//! | `/api/v1/alarms…`, `/api/v2/silences` | alarms, rules, switches, silences ([`crate::alarm::api`]) |

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::params::Params;
use crate::{investigate, rank, series, QueryError};
use apus_store::read::json::{rfc3339, Row};

/// Renders the process's Prometheus metrics.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Largest SQL request body.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Api {
    engine: Arc<Engine>,
    render: Option<MetricsRender>,
}

type ApiResult = Result<Response, QueryError>;

/// A hostile query string as pairs (a 400 naming the problem).
pub(crate) fn pairs(q: Option<String>) -> Result<Vec<(String, String)>, QueryError> {
    match q {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str(&q)
            .map_err(|e| QueryError::BadRequest(format!("query string: {e}"))),
    }
}

fn params(q: Option<String>, dims: &[&str], opts: &[&str]) -> Result<Params, QueryError> {
    Params::parse(&pairs(q)?, dims, opts, apus_schema::time::now_us())
}

/// A page of ranking rows over a window.
#[derive(Serialize)]
struct Page {
    rows: Vec<Row>,
    count: usize,
    from: String,
    to: String,
    took_ms: f64,
}

/// The deepest hit a search page may reach (`offset + limit`).
pub const MAX_RESULT_WINDOW: usize = 10_000;

/// A page of log search hits.
#[derive(Serialize)]
struct SearchPage {
    rows: Vec<Value>,
    total: usize,
    limit: usize,
    offset: usize,
    next_offset: Option<usize>,
    from: String,
    to: String,
    took_ms: f64,
}

/// The answer to a user's SQL.
#[derive(Serialize)]
struct SqlAnswer {
    rows: Vec<Row>,
    count: usize,
    truncated: bool,
    limit: usize,
    took_ms: f64,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn page(p: &Params, rows: Vec<Row>, started: Instant) -> Response {
    Json(Page {
        count: rows.len(),
        rows,
        from: rfc3339(p.from_us),
        to: rfc3339(p.to_us),
        took_ms: ms_since(started),
    })
    .into_response()
}

/// The query API router (plus the console at `/`, its files under `/console/`, the
/// admin API passed through at `/admin/v1/…`, and `/metrics`).
pub fn router(
    engine: Arc<Engine>,
    render: Option<MetricsRender>,
    tokens: Arc<apus_auth::Tokens>,
    alarms: Option<Arc<crate::alarm::Alarms>>,
    console: &crate::console::ConsoleConfig,
) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/api/v1/slow-sql/top", get(slow_sql_top))
        .route("/api/v1/exceptions/top", get(exceptions_top))
        .route("/api/v1/rank/{kind}", get(rank_by))
        .route("/api/v1/timeseries", get(timeseries))
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/rootcause", get(rootcause))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(Api {
            engine: engine.clone(),
            render,
        })
        .merge(crate::alarm::api::router(engine, alarms))
        .merge(crate::console::router(console))
        .layer(DefaultBodyLimit::max(MAX_SQL_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            crate::auth::authorize,
        ))
}

/// Only the search endpoint: what an ingest node serves so query nodes can fan out to it.
pub fn search_router(engine: Arc<Engine>, tokens: Arc<apus_auth::Tokens>) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            crate::auth::authorize,
        ))
        .with_state(Api {
            engine,
            render: None,
        })
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint; see /api/v1/…"})),
    )
        .into_response()
}

async fn metrics_text(State(a): State<Api>) -> Response {
    match &a.render {
        Some(r) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], r()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn slow_sql_top(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let t = Instant::now();
    let p = params(q, rank::SLOW_SQL_DIMS, &["limit", "order"])?;
    Ok(page(&p, rank::slow_sql_top(&a.engine, &p).await?, t))
}

async fn exceptions_top(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let t = Instant::now();
    let p = params(q, rank::LOG_DIMS, &["limit", "lines"])?;
    Ok(page(&p, rank::exceptions_top(&a.engine, &p).await?, t))
}

async fn rank_by(
    State(a): State<Api>,
    Path(kind): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let t = Instant::now();
    let dim = rank::rank_dimension(&kind)?;
    let p = params(q, rank::ACCESS_DIMS, &["limit", "order"])?;
    Ok(page(&p, rank::rank(&a.engine, dim, &p).await?, t))
}

async fn timeseries(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let t = Instant::now();
    let raw = pairs(q)?;
    let is_metric = raw
        .iter()
        .any(|(k, v)| k == "metric" && v.starts_with("metric:"));
    let source = raw
        .iter()
        .find(|(k, _)| k == "source")
        .map(|(_, v)| v.as_str());
    let dims = match source {
        None | Some("access") if is_metric => rank::METRIC_DIMS,
        None | Some("access") => rank::ACCESS_DIMS,
        Some("slow_sql") => rank::SLOW_SQL_SERIES_DIMS,
        Some("logs") => rank::LOG_SERIES_DIMS,
        Some(s) => {
            return Err(QueryError::BadRequest(format!(
                "unknown source `{s}`: use access, slow_sql or logs"
            )))
        }
    };
    let p = Params::parse(
        &raw,
        dims,
        &["metric", "step", "by", "source"],
        apus_schema::time::now_us(),
    )?;
    Ok(page(&p, series::timeseries(&a.engine, &p).await?, t))
}

/// `GET /api/v1/logs/histogram?q=…&step=1m`: hits of a search per bucket, oldest first.
async fn histogram(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let t = Instant::now();
    let p = params(q, &apus_store::search::DIMENSIONS, &["q", "step"])?;
    let range_s = ((p.to_us - p.from_us) / 1_000_000).max(1);
    let step_s = match p.opt("step") {
        Some(s) => series::parse_step(s)?,
        None => (range_s / 60).max(1),
    };
    let step_us = step_s * 1_000_000;
    let counts = a
        .engine
        .search_histogram(
            p.opt("q").unwrap_or(""),
            &p.dims,
            (p.from_us, p.to_us, step_us),
        )
        .await?;
    let total: u64 = counts.iter().sum();
    Ok(Json(json!({
        "from": rfc3339(p.from_us),
        "to": rfc3339(p.to_us),
        "from_us": p.from_us,
        "step_us": step_us,
        "counts": counts,
        "total": total,
        "took_ms": ms_since(t),
    }))
    .into_response())
}

async fn search(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let t = Instant::now();
    let p = params(
        q,
        &apus_store::search::DIMENSIONS,
        &["q", "limit", "offset"],
    )?;
    // As Elasticsearch's `max_result_window`: a page ends within the first 10 000 hits.
    // A query node fanning out asks each node for `offset + limit` hits, so the same
    // window holds on every node and paging works to its end, local or remote.
    let limit = p.usize_opt("limit", 50, MAX_RESULT_WINDOW)?;
    let offset = match p.opt("offset") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|o| o + limit <= MAX_RESULT_WINDOW)
            .ok_or_else(|| {
                QueryError::BadRequest(format!(
                    "`offset` + `limit` must be at most {MAX_RESULT_WINDOW}, got `{v}` + {limit}; \
                     narrow the time range or the query"
                ))
            })?,
    };
    let r = a
        .engine
        .search(
            p.opt("q").unwrap_or(""),
            &p.dims,
            p.from_us,
            p.to_us,
            limit,
            offset,
        )
        .await?;
    let n = r.rows.len();
    let rows: Vec<Value> = r
        .rows
        .into_iter()
        .map(|h| {
            let mut v = serde_json::to_value(&h).unwrap_or(Value::Null);
            v["time"] = Value::from(rfc3339(h.ts));
            v
        })
        .collect();
    Ok(Json(SearchPage {
        rows,
        total: r.total,
        limit,
        offset,
        next_offset: (offset + n < r.total).then_some(offset + n),
        from: rfc3339(p.from_us),
        to: rfc3339(p.to_us),
        took_ms: ms_since(t),
    })
    .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    limit: Option<usize>,
}

async fn sql(State(a): State<Api>, h: HeaderMap, body: Bytes) -> ApiResult {
    let t = Instant::now();
    let is_json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // JSON only: a form or text/plain POST is what a hostile web page can send without a
    // CORS preflight.
    if !is_json {
        return Ok((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({"error": "send {\"sql\": \"SELECT …\"} as application/json"})),
        )
            .into_response());
    }
    let req = serde_json::from_slice::<SqlBody>(&body)
        .map_err(|e| QueryError::BadRequest(format!("body: {e}")))?;
    let limit = req.limit.unwrap_or(1000);
    if limit == 0 || limit > 100_000 {
        return Err(QueryError::BadRequest(format!(
            "`limit` must be 1 to 100000, got {limit}"
        )));
    }
    let apus_store::read::Answer { rows, truncated } = a.engine.user_sql(&req.sql, limit).await?;
    Ok(Json(SqlAnswer {
        count: rows.len(),
        rows,
        truncated,
        limit,
        took_ms: ms_since(t),
    })
    .into_response())
}

async fn changes(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let t = Instant::now();
    let p = params(q, rank::CHANGE_DIMS, &["limit"])?;
    Ok(page(&p, rank::changes(&a.engine, &p).await?, t))
}

async fn rootcause(State(a): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let p = params(q, investigate::RCA_DIMS, investigate::RCA_OPTS)?;
    Ok(Json(investigate::rootcause(&a.engine, &p).await?).into_response())
}
