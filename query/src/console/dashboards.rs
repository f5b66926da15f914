//! Dashboards as files. A dashboard is a JSON document: a title and a list of panels, each
//! a query (a GET of the query API with its parameters, or SQL) and a visualization
//! (`timeseries`, `bar`, `table`, `stat`) with its options. The built-in ones
//! (`dashboards/*.json` in the source tree, the Overview among them) are embedded; the
//! user's live in `dashboards_dir`, are re-read whenever a file there changes, and shadow a
//! built-in of the same name. Saving one (`PUT /api/v1/dashboards/{name}`) needs a token
//! that may change things, writes the file atomically and appends an audit line
//! (`audit.jsonl` beside it: who, when, which, the content's digest).
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/dashboards` | `rows`: name, title, panels, builtin, error (a file that does not validate) |
//! | `GET /api/v1/dashboards/{name}` | the dashboard |
//! | `PUT /api/v1/dashboards/{name}` | validate and save (400 with the reason; 413 over 256 KiB) |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use apus_auth::{Action, Principal};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::QueryError;

/// Largest dashboard file.
pub const MAX_BYTES: usize = 256 * 1024;
/// Most panels on one dashboard.
pub const MAX_PANELS: usize = 64;
/// Most user dashboards kept.
pub const MAX_FILES: usize = 500;

const BUILTIN: &[(&str, &str)] = &[
    (
        "overview",
        include_str!("../../../dashboards/overview.json"),
    ),
    ("traffic", include_str!("../../../dashboards/traffic.json")),
    (
        "database",
        include_str!("../../../dashboards/database.json"),
    ),
];

/// Visualizations a panel may use.
pub const KINDS: &[&str] = &["timeseries", "bar", "table", "stat"];

/// A dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub panels: Vec<Panel>,
}

/// One panel: a query and how to draw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A GET path of the query API (`/api/v1/timeseries`)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// …with these parameters (the page adds the time range and filters)…
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// …or SQL (needs a token that may read everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Visualization options: `columns`, `x`, `y`, `series`, `unit`, `markers`, `width`.
    #[serde(default)]
    pub options: BTreeMap<String, Value>,
}

impl Dashboard {
    /// Parse and check a dashboard file.
    pub fn parse(text: &[u8]) -> Result<Dashboard, String> {
        if text.len() > MAX_BYTES {
            return Err(format!("larger than {} KiB", MAX_BYTES / 1024));
        }
        let d: Dashboard = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        d.validate()?;
        Ok(d)
    }

    fn validate(&self) -> Result<(), String> {
        if self.title.trim().is_empty() || self.title.len() > 200 {
            return Err("`title` must be 1 to 200 bytes".into());
        }
        if self.panels.len() > MAX_PANELS {
            return Err(format!("at most {MAX_PANELS} panels"));
        }
        for (i, p) in self.panels.iter().enumerate() {
            let at = |m: String| format!("panel {} (`{}`): {m}", i + 1, p.title);
            if !KINDS.contains(&p.kind.as_str()) {
                return Err(at(format!(
                    "unknown type `{}`: use {}",
                    p.kind,
                    KINDS.join(", ")
                )));
            }
            match (&p.api, &p.sql) {
                (Some(api), None) => {
                    let ok = api.starts_with("/api/v1/")
                        && !api.contains("..")
                        && api.len() <= 200
                        && api
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b));
                    if !ok {
                        return Err(at(format!(
                            "`api` must be a path of the query API like /api/v1/timeseries, \
                             got `{api}`"
                        )));
                    }
                }
                (None, Some(sql)) => {
                    if sql.trim().is_empty() || sql.len() > crate::api::MAX_SQL_BYTES {
                        return Err(at("`sql` must be 1 byte to 64 KiB".into()));
                    }
                    if !p.params.is_empty() {
                        return Err(at("`params` go with `api`, not `sql`".into()));
                    }
                }
                _ => return Err(at("give exactly one of `api` and `sql`".into())),
            }
            if p.params.len() > 32 || p.params.iter().any(|(k, v)| k.len() > 64 || v.len() > 1024) {
                return Err(at("too many or too long `params`".into()));
            }
        }
        Ok(())
    }
}

/// A valid dashboard name: 1–64 of `[a-z0-9_-]`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

type Stamp = Vec<(String, SystemTime, u64)>;

/// A file as loaded: the dashboard, or why it is not one.
type Loaded = BTreeMap<String, Result<Dashboard, String>>;

/// The dashboards: built-ins plus the directory's files, reloaded when it changes.
pub struct Dashboards {
    dir: Option<PathBuf>,
    cache: Mutex<(Stamp, Arc<Loaded>)>,
}

impl Dashboards {
    /// Open (and load once, logging files that do not validate).
    pub fn open(dir: Option<PathBuf>) -> Dashboards {
        let d = Dashboards {
            dir,
            cache: Mutex::new((Vec::new(), Arc::new(BTreeMap::new()))),
        };
        for (name, r) in d.user().iter() {
            if let Err(e) = r {
                tracing::warn!(dashboard = %name, error = %e, "dashboard file does not validate");
            }
        }
        d
    }

    fn stamp(&self) -> Stamp {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Stamp = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                let m = e.metadata().ok()?;
                (m.is_file() && valid_name(&name)).then(|| {
                    (
                        name,
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                    )
                })
            })
            .take(MAX_FILES)
            .collect();
        out.sort();
        out
    }

    /// The directory's dashboards, re-read when a file was added, removed or changed.
    fn user(&self) -> Arc<Loaded> {
        let now = self.stamp();
        let mut g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != now || (g.1.is_empty() && !now.is_empty()) {
            let dir = self.dir.as_ref();
            let loaded: Loaded = now
                .iter()
                .map(|(name, _, len)| {
                    let r = if *len as usize > MAX_BYTES {
                        Err(format!("larger than {} KiB", MAX_BYTES / 1024))
                    } else {
                        dir.map(|d| d.join(format!("{name}.json")))
                            .ok_or_else(|| "no dashboards directory".to_string())
                            .and_then(|p| std::fs::read(p).map_err(|e| e.to_string()))
                            .and_then(|t| Dashboard::parse(&t))
                    };
                    (name.clone(), r)
                })
                .collect();
            *g = (now, Arc::new(loaded));
        }
        g.1.clone()
    }

    /// Every dashboard by name (a user file shadows a built-in).
    pub fn all(&self) -> BTreeMap<String, (bool, Result<Dashboard, String>)> {
        // The built-ins are parsed once (they are compiled in).
        static PARSED: std::sync::OnceLock<Vec<(String, Result<Dashboard, String>)>> =
            std::sync::OnceLock::new();
        let builtins = PARSED.get_or_init(|| {
            BUILTIN
                .iter()
                .map(|(n, t)| (n.to_string(), Dashboard::parse(t.as_bytes())))
                .collect()
        });
        let mut out: BTreeMap<_, _> = builtins
            .iter()
            .map(|(n, r)| (n.clone(), (true, r.clone())))
            .collect();
        for (n, r) in self.user().iter() {
            out.insert(n.clone(), (false, r.clone()));
        }
        out
    }

    /// Save `d` as `name`, audited as `actor`.
    pub fn save(&self, name: &str, d: &Dashboard, actor: &str) -> Result<(), QueryError> {
        let dir = self.dir.as_ref().ok_or_else(|| {
            QueryError::NotApplied(
                "this node keeps no dashboards directory ([query] dashboards_dir)".into(),
            )
        })?;
        std::fs::create_dir_all(dir)
            .map_err(|e| QueryError::NotApplied(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{name}.json"));
        if !path.exists() && self.stamp().len() >= MAX_FILES {
            return Err(QueryError::BadRequest(format!(
                "at most {MAX_FILES} dashboards are kept; delete one first"
            )));
        }
        let text = serde_json::to_vec_pretty(d).map_err(|e| QueryError::Engine(e.to_string()))?;
        // The audit line first: a save that could not be audited is not made.
        let line = json!({
            "ts": apus_store::read::json::rfc3339(apus_schema::time::now_us()),
            "actor": actor,
            "dashboard": name,
            "bytes": text.len(),
            "digest": format!("{:016x}", fnv(&text)),
        });
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("audit.jsonl"))
                .map_err(|e| QueryError::NotApplied(format!("audit: {e}")))?;
            writeln!(f, "{line}")
                .and_then(|_| f.sync_data())
                .map_err(|e| QueryError::NotApplied(format!("audit: {e}")))?;
        }
        apus_wal::write_atomic(&path, &text)
            .map_err(|e| QueryError::NotApplied(format!("{}: {e}", path.display())))?;
        tracing::info!(dashboard = name, actor, "dashboard saved");
        Ok(())
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x100000001b3)
    })
}

async fn list(State(b): State<Arc<Dashboards>>) -> Response {
    let rows: Vec<Value> = b
        .all()
        .into_iter()
        .map(|(name, (builtin, r))| match r {
            Ok(d) => json!({"name": name, "title": d.title, "description": d.description,
                            "panels": d.panels.len(), "builtin": builtin}),
            Err(e) => json!({"name": name, "builtin": builtin, "error": e}),
        })
        .collect();
    Json(json!({"count": rows.len(), "rows": rows})).into_response()
}

async fn show(State(b): State<Arc<Dashboards>>, Path(name): Path<String>) -> Response {
    match b.all().remove(&name) {
        Some((builtin, Ok(d))) => {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["name"] = json!(name);
            v["builtin"] = json!(builtin);
            Json(v).into_response()
        }
        Some((_, Err(e))) => {
            QueryError::BadRequest(format!("dashboard `{name}` does not validate: {e}"))
                .into_response()
        }
        None => QueryError::NotFound(format!("no dashboard `{name}`")).into_response(),
    }
}

async fn save(
    State(b): State<Arc<Dashboards>>,
    Extension(p): Extension<Arc<Principal>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    match save_checked(&b, &p, &name, &body) {
        Ok(()) => Json(json!({ "saved": name })).into_response(),
        Err(e) => e.into_response(),
    }
}

fn save_checked(b: &Dashboards, p: &Principal, name: &str, body: &[u8]) -> Result<(), QueryError> {
    p.check_role(Action::Change)?;
    if !valid_name(name) {
        return Err(QueryError::BadRequest(format!(
            "dashboard name `{name}`: use 1 to 64 of a-z, 0-9, - and _"
        )));
    }
    let d =
        Dashboard::parse(body).map_err(|e| QueryError::BadRequest(format!("dashboard: {e}")))?;
    b.save(name, &d, &p.name)
}

/// The dashboards' routes.
pub fn router(b: Arc<Dashboards>) -> Router {
    Router::new()
        .route("/api/v1/dashboards", get(list))
        .route("/api/v1/dashboards/{name}", get(show).put(save))
        .layer(DefaultBodyLimit::max(MAX_BYTES))
        .with_state(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_validate() {
        for (n, t) in BUILTIN {
            Dashboard::parse(t.as_bytes()).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let bad = [
            (
                r#"{"title":"x","panels":[{"title":"p","type":"pie","api":"/api/v1/timeseries"}]}"#,
                "unknown type",
            ),
            (
                r#"{"title":"x","panels":[{"title":"p","type":"table","api":"http://evil/"}]}"#,
                "path of the query API",
            ),
            (
                r#"{"title":"x","panels":[{"title":"p","type":"table","api":"/api/v1/../admin"}]}"#,
                "path of the query API",
            ),
            (
                r#"{"title":"x","panels":[{"title":"p","type":"table"}]}"#,
                "exactly one",
            ),
            (r#"{"title":"","panels":[]}"#, "title"),
            (r#"{"title":"x","panels":[],"extra":1}"#, "unknown field"),
        ];
        for (t, why) in bad {
            let e = Dashboard::parse(t.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
        assert!(!valid_name("../x") && !valid_name("") && valid_name("my-board_2"));
    }

    #[test]
    fn saved_files_shadow_builtins_and_reload_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let b = Dashboards::open(Some(dir.path().to_path_buf()));
        assert!(b.all()["overview"].0, "built-in first");
        let d = Dashboard::parse(br#"{"title":"Mine","panels":[]}"#).unwrap();
        b.save("overview", &d, "alice").unwrap();
        let (builtin, r) = b.all().remove("overview").unwrap();
        assert!(!builtin);
        assert_eq!(r.unwrap().title, "Mine");
        // An edit on disk is seen without a restart; a broken file is reported, not fatal.
        std::fs::write(dir.path().join("other.json"), b"{not json").unwrap();
        assert!(b.all()["other"].1.is_err());
        let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert!(audit.contains("\"actor\":\"alice\"") && audit.contains("overview"));
    }
}
