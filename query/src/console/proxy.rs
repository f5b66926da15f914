//! `/admin/v1/…` on the query listener, passed to the gateway's admin API, so the console's
//! release, pool and config pages are served from the same origin as its dashboards (no
//! CORS to open) with the same token. The admin API authenticates and audits every call
//! itself; this only forwards the method, path, query, body and the headers the admin API
//! reads, and answers 502 with the reason when the admin API cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::QueryError;

/// Largest body passed on (the config center's file limit, with room for JSON escaping).
pub const MAX_BODY: usize = 12 << 20;

/// Request headers the admin API reads.
static PASS_UP: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::IF_MATCH,
];
/// Response headers passed back.
static PASS_DOWN: [HeaderName; 3] = [header::CONTENT_TYPE, header::ETAG, header::RETRY_AFTER];

/// The admin API this node passes `/admin/v1/…` to.
pub struct AdminProxy {
    base: Option<String>,
    http: reqwest::Client,
}

impl AdminProxy {
    /// `base` as `http://host:port` (a bare `host:port` is taken as http).
    pub fn new(base: Option<String>) -> AdminProxy {
        let base = base.map(|b| {
            let b = b.trim_end_matches('/').to_string();
            if b.starts_with("http://") || b.starts_with("https://") {
                b
            } else {
                format!("http://{b}")
            }
        });
        AdminProxy {
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// Forward one request.
pub async fn forward(State(p): State<Arc<AdminProxy>>, req: Request) -> Response {
    let Some(base) = &p.base else {
        return QueryError::NotFound(
            "this query node reaches no admin API: set [query] admin_url (apus run sets it)".into(),
        )
        .into_response();
    };
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({
                    "error": format!("body larger than {} MiB", MAX_BODY >> 20)
                })),
            )
                .into_response()
        }
    };
    let path_q = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let method = match parts.method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE => parts.method.clone(),
        m => {
            return QueryError::BadRequest(format!("method {m} is not passed to the admin API"))
                .into_response()
        }
    };
    let mut up = p.http.request(method, format!("{base}{path_q}"));
    for h in &PASS_UP {
        if let Some(v) = parts.headers.get(h) {
            up = up.header(h.clone(), v.clone());
        }
    }
    let res = match up.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return QueryError::Unavailable(format!("the admin API at {base}: {e}")).into_response()
        }
    };
    let status = res.status();
    let mut headers = HeaderMap::new();
    for h in &PASS_DOWN {
        if let Some(v) = res.headers().get(h) {
            headers.insert(h.clone(), v.clone());
        }
    }
    let mut res = res;
    let mut out = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(c)) if out.len() + c.len() <= MAX_ANSWER => out.extend_from_slice(&c),
            Ok(Some(_)) => {
                return QueryError::Unavailable(format!(
                    "the admin API's answer is larger than {} MiB",
                    MAX_ANSWER >> 20
                ))
                .into_response()
            }
            Ok(None) => return (status, headers, out).into_response(),
            Err(e) => {
                return QueryError::Unavailable(format!("the admin API at {base}: {e}"))
                    .into_response()
            }
        }
    }
}

/// Largest answer passed back (a config file and its metadata).
const MAX_ANSWER: usize = 32 << 20;
