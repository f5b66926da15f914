//! Config center handlers for release managers (bearer tokens, scoped): drafts, publish,
//! rollback, gray release, promote, abandon, globals, diffs, the dependency tree. The
//! clients' side is `config_client.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use apus_auth::{Action, Principal, Role};
use apus_rules::config::{ConfigDoc, FileKey, GrayTarget};
use apus_schema::ChangeKind;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{authenticate, change_answer, parse_body, AdminState, Answer, ApiResult};
use crate::confcenter::{self, ConfigCenter, DraftEdit, Op};
use crate::state::Current;
use crate::GatewayError;

/// Query parameters, decoded.
pub(super) fn params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                super::decode(&k.replace('+', " ")),
                super::decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

pub(super) fn key_of(segs: &[&str]) -> Result<FileKey, GatewayError> {
    FileKey::parse(&segs.join("/")).map_err(GatewayError::BadRequest)
}

pub(super) fn may_read(t: &Principal, project: &str, env: &str) -> Result<(), GatewayError> {
    t.check(Action::Read, project, env)
        .map_err(|e| GatewayError::Forbidden(e.to_string()))
}

/// Whether `t` sees sensitive values unmasked (those who may change the file).
pub(super) fn sees_secrets(t: &Principal, project: &str, env: &str) -> bool {
    t.role == Role::Admin || t.check(Action::Change, project, env).is_ok()
}

fn release_json(r: &apus_rules::config::Release) -> Value {
    json!({"id": r.id, "key": r.key(), "fv": r.fv, "pv": r.pv, "kind": r.kind, "size": r.size,
           "author": r.author, "reason": r.reason, "ts": r.ts, "effective": r.effective})
}

/// `GET /admin/v1/config/files?project=&env=`.
pub(super) async fn list(s: &AdminState, h: &HeaderMap, q: &str) -> ApiResult {
    let t = authenticate(h, &s.tokens)?;
    let p = params(q);
    let cur = s.release.load_full();
    let doc = &cur.doc.config;
    let files: Vec<Value> = doc
        .files
        .iter()
        .filter_map(|(k, f)| {
            let key = FileKey::parse(k).ok()?;
            let wanted = p.get("project").is_none_or(|x| *x == key.project)
                && p.get("env").is_none_or(|x| *x == key.env)
                && p.get("pool").is_none_or(|x| *x == key.pool);
            (wanted && may_read(&t, &key.project, &key.env).is_ok()).then(|| {
                json!({"key": k, "content_type": f.content_type, "parent": f.parent, "fv": f.fv,
                       "pv": f.pv, "current": f.current().map(release_json),
                       "draft": f.draft.as_ref().map(|d| json!({"author": d.author, "ts": d.ts, "size": d.size})),
                       "gray": f.gray.as_ref().map(|g| json!({"release": release_json(&g.release), "target": g.target}))})
            })
        })
        .collect();
    let v = s.release.load().version;
    Ok(Answer::versioned(v, json!({"version": v, "files": files})))
}

/// The caller, the file named by `segs` (which it may read) and the state holding it.
fn readable(
    s: &AdminState,
    h: &HeaderMap,
    segs: &[&str],
) -> Result<(Arc<Principal>, FileKey, Arc<Current>), GatewayError> {
    let t = authenticate(h, &s.tokens)?;
    let key = key_of(segs)?;
    may_read(&t, &key.project, &key.env)?;
    let cur = s.release.load_full();
    if !cur.doc.config.files.contains_key(&key.to_string()) {
        return Err(GatewayError::NotFound(format!("config file {key}")));
    }
    Ok((t, key, cur))
}

/// `GET /admin/v1/config/files/{key}`: the file, its current, draft and gray contents.
pub(super) async fn show(s: &AdminState, h: &HeaderMap, segs: &[&str]) -> ApiResult {
    let (t, key, cur) = readable(s, h, segs)?;
    let k = key.to_string();
    let f = &cur.doc.config.files[&k];
    let open = sees_secrets(&t, &key.project, &key.env);
    let text = |d: String| if open { d } else { s.config.mask(&d) };
    let mut out = json!({"key": k, "content_type": f.content_type, "parent": f.parent, "fv": f.fv,
        "pv": f.pv, "masked": !open, "releases": f.releases.iter().map(release_json).collect::<Vec<_>>()});
    if let Some(r) = f.current() {
        out["current"] = release_json(r);
        out["content"] = json!(text(s.config.text(&r.blob).await?));
        out["effective"] = json!(text(s.config.text(&r.effective).await?));
    }
    if let Some(d) = &f.draft {
        out["draft"] = json!({"author": d.author, "ts": d.ts, "base_fv": d.base_fv,
                              "content": text(s.config.text(&d.blob).await?)});
    }
    if let Some(g) = &f.gray {
        out["gray"] = json!({"release": release_json(&g.release), "target": g.target,
                             "effective": text(s.config.text(&g.release.effective).await?)});
    }
    Ok(Answer::json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftBody {
    content: String,
    #[serde(default)]
    content_type: Option<String>,
    /// `null` removes the parent; absent keeps it.
    #[serde(default, with = "double_option")]
    parent: Option<Option<String>>,
    #[serde(default)]
    base_fv: Option<u64>,
    #[serde(default)]
    reason: String,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// The text of a raw upload, or where it stops being UTF-8.
fn utf8(body: &[u8]) -> Result<String, GatewayError> {
    std::str::from_utf8(body).map(str::to_string).map_err(|e| {
        let ok = &body[..e.valid_up_to()];
        let line = ok.iter().filter(|b| **b == b'\n').count() + 1;
        let col = ok.len() - ok.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
        GatewayError::BadRequest(format!("content is not UTF-8 at line {line}, column {col}"))
    })
}

/// `PUT /admin/v1/config/files/{key}`: a JSON body `{content, content_type, parent,
/// base_fv, reason}`, or the raw content with `?content_type=…[&parent=…&base_fv=…]`.
pub(super) async fn save_draft(
    s: &AdminState,
    h: &HeaderMap,
    segs: &[&str],
    q: &str,
    body: &[u8],
) -> ApiResult {
    let r = async {
        let t = authenticate(h, &s.tokens)?;
        let key = key_of(segs)?;
        let p = params(q);
        let (edit, reason) = if let Some(ct) = p.get("content_type") {
            if body.len() > apus_rules::config::MAX_FILE {
                return Err(GatewayError::TooLarge(format!(
                    "config file of {} bytes, over {}",
                    body.len(),
                    apus_rules::config::MAX_FILE
                )));
            }
            let base_fv = match p.get("base_fv") {
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| GatewayError::BadRequest(format!("base_fv `{v}`")))?,
                ),
                None => None,
            };
            (
                DraftEdit {
                    content: utf8(body)?,
                    content_type: Some(confcenter::content_type(ct)?),
                    parent: p.get("parent").map(|x| (!x.is_empty()).then(|| x.clone())),
                    base_fv,
                },
                p.get("reason").cloned().unwrap_or_default(),
            )
        } else {
            let b: DraftBody = parse_body(body)?;
            let ct = b
                .content_type
                .as_deref()
                .map(confcenter::content_type)
                .transpose()?;
            (
                DraftEdit {
                    content: b.content,
                    content_type: ct,
                    parent: b.parent,
                    base_fv: b.base_fv,
                },
                b.reason,
            )
        };
        s.config.apply(&t, &key, Op::Draft(edit), &reason).await
    }
    .await;
    change_answer(ChangeKind::ConfigDraft, r)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    release: Option<u64>,
    #[serde(default)]
    target: Option<GrayTarget>,
}

/// `POST /admin/v1/config/{publish,rollback,gray,promote,abandon}/{key}`.
pub(super) async fn act(
    s: &AdminState,
    h: &HeaderMap,
    verb: &str,
    segs: &[&str],
    body: &[u8],
) -> ApiResult {
    let r = async {
        let t = authenticate(h, &s.tokens)?;
        let key = key_of(segs)?;
        let b: ActBody = if body.is_empty() {
            ActBody::default()
        } else {
            parse_body(body)?
        };
        let op = match verb {
            "publish" => Op::Publish,
            "rollback" => Op::Rollback {
                release: b.release.ok_or_else(|| {
                    GatewayError::BadRequest(
                        "`release` (the id to roll back to) is required".into(),
                    )
                })?,
            },
            "gray" => Op::Gray {
                target: b.target.ok_or_else(|| {
                    GatewayError::BadRequest("`target` ({ips, labels, percent}) is required".into())
                })?,
            },
            "promote" => Op::Promote,
            "abandon" => Op::Abandon,
            v => return Err(GatewayError::NotFound(format!("config action `{v}`"))),
        };
        s.config.apply(&t, &key, op, &b.reason).await
    }
    .await;
    change_answer(ChangeKind::ConfigRelease, r)
}

/// `GET /admin/v1/config/diff?a=KEY[@ID|@draft|@gray]&b=…` (a missing `@` is the current
/// release): a line diff of the effective contents (the draft's own content).
pub(super) async fn diff(s: &AdminState, h: &HeaderMap, q: &str) -> ApiResult {
    let t = authenticate(h, &s.tokens)?;
    let p = params(q);
    let cur = s.release.load_full();
    let doc = &cur.doc.config;
    let mut texts = Vec::new();
    let mut masked = false;
    for side in ["a", "b"] {
        let spec = p.get(side).ok_or_else(|| {
            GatewayError::BadRequest(format!("`{side}` (KEY[@ID|@draft|@gray]) is required"))
        })?;
        let (k, at) = spec.rsplit_once('@').unwrap_or((spec, ""));
        let key = FileKey::parse(k).map_err(GatewayError::BadRequest)?;
        may_read(&t, &key.project, &key.env)?;
        masked |= !sees_secrets(&t, &key.project, &key.env);
        texts.push(version_text(&s.config, doc, k, at).await?);
    }
    if masked {
        texts = texts.iter().map(|x| s.config.mask(x)).collect();
    }
    let lines = confcenter::diff(&texts[0], &texts[1], 5000);
    Ok(Answer::json(
        json!({"a": p["a"], "b": p["b"], "masked": masked, "diff": lines}),
    ))
}

async fn version_text(
    c: &ConfigCenter,
    doc: &ConfigDoc,
    k: &str,
    at: &str,
) -> Result<String, GatewayError> {
    let f = doc
        .files
        .get(k)
        .ok_or_else(|| GatewayError::NotFound(format!("config file {k}")))?;
    let missing = || GatewayError::NotFound(format!("{k}@{at}"));
    let digest = match at {
        "" => f
            .current()
            .map(|r| r.effective.clone())
            .ok_or_else(missing)?,
        "draft" => f
            .draft
            .as_ref()
            .map(|d| d.blob.clone())
            .ok_or_else(missing)?,
        "gray" => f
            .gray
            .as_ref()
            .map(|g| g.release.effective.clone())
            .ok_or_else(missing)?,
        n => {
            let id: u64 = n
                .parse()
                .map_err(|_| GatewayError::BadRequest(format!("`@{n}`: an id, draft or gray")))?;
            f.release(id)
                .map(|r| r.effective.clone())
                .ok_or_else(missing)?
        }
    };
    c.text(&digest).await
}

/// `GET /admin/v1/config/tree/{key}`: the files inheriting from it, nested.
pub(super) async fn tree(s: &AdminState, h: &HeaderMap, segs: &[&str]) -> ApiResult {
    let (_, key, cur) = readable(s, h, segs)?;
    let doc = &cur.doc.config;
    let k = key.to_string();
    let f = &doc.files[&k];
    let ancestors = doc
        .ancestors(&k, f.parent.as_deref())
        .map_err(GatewayError::BadRequest)?;
    Ok(Answer::json(
        json!({"key": k, "ancestors": ancestors, "descendants": doc.tree(&k)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalsBody {
    vars: BTreeMap<String, String>,
    #[serde(default)]
    reason: String,
}

/// `GET`/`PUT /admin/v1/config/globals/{project}/{env}`.
pub(super) async fn globals(
    s: &AdminState,
    h: &HeaderMap,
    project: &str,
    env: &str,
    body: Option<&[u8]>,
) -> ApiResult {
    let t = authenticate(h, &s.tokens)?;
    match body {
        None => {
            may_read(&t, project, env)?;
            let g = s
                .release
                .load()
                .doc
                .config
                .globals
                .get(&format!("{project}/{env}"))
                .cloned()
                .unwrap_or_default();
            let open = sees_secrets(&t, project, env);
            let vars: BTreeMap<String, String> = g
                .vars
                .into_iter()
                .map(|(k, v)| {
                    let hide = !open && s.config.sensitive.is_match(&k);
                    (k, if hide { "****".into() } else { v })
                })
                .collect();
            Ok(Answer::json(
                json!({"project": project, "env": env, "version": g.version, "vars": vars}),
            ))
        }
        Some(body) => {
            let r = async {
                let b: GlobalsBody = parse_body(body)?;
                s.config
                    .set_globals(&t, project, env, b.vars, &b.reason)
                    .await
            }
            .await;
            change_answer(ChangeKind::ConfigGlobals, r)
        }
    }
}
