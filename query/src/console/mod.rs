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
use axum::http::{header, StatusCode};
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

fn file(name: &str) -> Response {
    let Some((name, ctype, embedded)) = FILES.iter().find(|(n, ..)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no console file `{name}`")})),
        )
            .into_response();
    };
    let body = live_dir()
        .and_then(|d| std::fs::read_to_string(d.join(name)).ok())
        .unwrap_or_else(|| (*embedded).to_string());
    (
        [
            (header::CONTENT_TYPE, *ctype),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
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
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/console/{name}",
            get(|Path(n): Path<String>| async move { file(&n) }),
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
