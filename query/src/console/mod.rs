//! The web console on the query listener: its static files, the dashboards it draws
//! (files, [`dashboards`]), who the caller is (`/api/v1/whoami`, so the page shows only the
//! buttons the token may use) and a pass-through to the gateway's admin API
//! ([`proxy`]), so release pages and dashboards share one origin and one token.
//!
//! The files under `console/` are embedded in the binary. A debug build reads them from
//! the source tree on every request instead (edit, reload, no rebuild), as does any build
//! given `APUS_CONSOLE_DIR`.

pub mod dashboards;
pub mod proxy;

use std::path::PathBuf;
use std::sync::Arc;

use apus_auth::{Action, Principal};
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router};
use serde_json::json;

/// `[query]` settings of the console.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// Base URL of the gateway's admin API (`http://127.0.0.1:9901`) the release pages
    /// reach through `/admin/v1/…`; none = the pages say there is no admin API.
    pub admin_url: Option<String>,
    /// Where user-made dashboards are kept (`DATA_DIR/dashboards` under `apus run`).
    pub dashboards_dir: Option<PathBuf>,
}

/// The console's files: name, content type, embedded text.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/chart.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/pages.js"),
    ),
    (
        "release.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/release.js"),
    ),
    (
        "ops.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/ops.js"),
    ),
];

/// Whether `path` is one of the console's static files (served without a token: they
/// hold no data).
pub fn is_static(path: &str) -> bool {
    path == "/"
        || path
            .strip_prefix("/console/")
            .is_some_and(|f| FILES.iter().any(|(n, ..)| *n == f))
}

/// The directory the files are read from at request time, when there is one.
fn live_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("APUS_CONSOLE_DIR") {
        return Some(PathBuf::from(d));
    }
    if cfg!(debug_assertions) {
        let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../console"));
        return d.is_dir().then_some(d);
    }
    None
}

/// A console file as served: its text, gzipped copy and entity tag.
struct Served {
    text: Vec<u8>,
    gzip: Vec<u8>,
    etag: String,
}

impl Served {
    fn new(text: Vec<u8>) -> Served {
        use std::hash::{Hash, Hasher};
        use std::io::Write;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = z
            .write_all(&text)
            .and_then(|_| z.finish())
            .unwrap_or_default();
        Served {
            etag: format!("\"{:016x}\"", h.finish()),
            text,
            gzip,
        }
    }
}

/// The embedded files, compressed once on first use.
fn embedded(i: usize) -> &'static Served {
    static CELLS: [std::sync::OnceLock<Served>; FILES.len()] =
        [const { std::sync::OnceLock::new() }; FILES.len()];
    CELLS[i].get_or_init(|| Served::new(FILES[i].2.as_bytes().to_vec()))
}

/// A console file, gzipped when the client takes gzip, `304` when its copy is current
/// (`ETag`), so a reload costs a few hundred bytes.
fn file(name: &str, req: &HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, ..)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no console file `{name}`")})),
        )
            .into_response();
    };
    let live = live_dir().and_then(|d| std::fs::read(d.join(name)).ok());
    let owned;
    let f = match live {
        Some(text) => {
            owned = Served::new(text);
            &owned
        }
        None => embedded(i),
    };
    let mut headers = HeaderMap::new();
    let static_hv = HeaderValue::from_static;
    headers.insert(header::CONTENT_TYPE, static_hv(FILES[i].1));
    headers.insert(header::CACHE_CONTROL, static_hv("no-cache"));
    headers.insert(header::VARY, static_hv("accept-encoding"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, static_hv("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        static_hv(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             frame-ancestors 'none'",
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&f.etag) {
        headers.insert(header::ETAG, v);
    }
    let current = req
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == f.etag || t.trim() == "*");
    if current {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let gzip = !f.gzip.is_empty()
        && req
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|e| {
                let mut parts = e.split(';');
                parts.next().is_some_and(|c| c.trim() == "gzip")
                    && !parts.any(|q| q.trim().replace(' ', "") == "q=0")
            });
    if gzip {
        headers.insert(header::CONTENT_ENCODING, static_hv("gzip"));
        (headers, f.gzip.clone()).into_response()
    } else {
        (headers, f.text.clone()).into_response()
    }
}

async fn whoami(Extension(p): Extension<Arc<Principal>>) -> Response {
    let scopes: Vec<String> = if p.covers_all() {
        vec!["*/*".to_string()]
    } else {
        p.scopes
            .iter()
            .map(|s| format!("{}/{}", s.project, s.env))
            .collect()
    };
    Json(json!({
        "name": p.name,
        "role": p.role,
        "scopes": scopes,
        "may_change": p.check_role(Action::Change).is_ok(),
        "may_sql": p.covers_all(),
    }))
    .into_response()
}

/// The console's routes (merged into the query API's router, behind its auth layer).
pub fn router(cfg: &ConsoleConfig) -> Router {
    let boards = Arc::new(dashboards::Dashboards::open(cfg.dashboards_dir.clone()));
    let admin = Arc::new(proxy::AdminProxy::new(cfg.admin_url.clone()));
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { file("index.html", &h) }),
        )
        .route(
            "/console/{name}",
            get(|Path(n): Path<String>, h: HeaderMap| async move { file(&n, &h) }),
        )
        .route("/api/v1/whoami", get(whoami))
        .merge(dashboards::router(boards))
        .merge(
            Router::new()
                .route("/admin/v1/{*rest}", any(proxy::forward))
                .layer(DefaultBodyLimit::max(proxy::MAX_BODY))
                .with_state(admin),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_console_files_are_public() {
        assert!(is_static("/") && is_static("/console/app.js"));
        for p in [
            "/console/",
            "/console/../api/v1/sql",
            "/console/x.js",
            "/api/v1/whoami",
        ] {
            assert!(!is_static(p), "{p}");
        }
    }

    #[test]
    fn files_are_gzipped_on_request_and_revalidated_by_etag() {
        let mut h = HeaderMap::new();
        let plain = file("app.js", &h);
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let etag = plain.headers()[header::ETAG].clone();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip"),
        );
        let z = file("app.js", &h);
        assert_eq!(z.headers()[header::CONTENT_ENCODING], "gzip");
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(file("app.js", &h)
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none());
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(file("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(file("nope.js", &h).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn every_file_is_embedded_and_the_page_loads_them_all() {
        let index = FILES[0].2;
        for (name, _, text) in FILES {
            assert!(!text.trim().is_empty(), "{name} is empty");
            if *name != "index.html" {
                assert!(index.contains(&format!("/console/{name}")), "{name}");
            }
        }
    }
}
