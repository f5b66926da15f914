//! Config clients' API (`/config/v1/…`, a signed request or a bearer token that may
//! read): one file with 304 when unchanged, and long-polled change notifications.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use apus_rules::config::{Client, FileKey};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

use super::configs::{key_of, may_read, params, sees_secrets};
use super::{authenticate, error_response, respond, AdminState};
use crate::confcenter::{sign, ConfigCenter};
use crate::GatewayError;

/// Who a config client is: a signed request (a service: it gets its secrets), or a bearer
/// token that may read (it sees secrets only if it may change the project/env). Whether
/// the client may see sensitive values.
fn client_auth(
    s: &AdminState,
    h: &HeaderMap,
    path_and_query: &str,
    project: &str,
    env: &str,
) -> Result<bool, GatewayError> {
    let auth = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.is_some_and(|a| a.starts_with("Apus ")) {
        let ts = h.get("timestamp").and_then(|v| v.to_str().ok());
        let now = apus_schema::time::now_us() / 1000;
        return sign::verify(&s.config.keys, auth, ts, path_and_query, project, env, now)
            .map(|_| true)
            .map_err(|why| {
                metrics::counter!("apus_config_client_denied_total").increment(1);
                GatewayError::BadSignature(why)
            });
    }
    let t = authenticate(h, &s.tokens)?;
    may_read(&t, project, env)?;
    Ok(sees_secrets(&t, project, env))
}

fn client_of<'a>(p: &'a BTreeMap<String, String>, peer: Option<IpAddr>) -> Client<'a> {
    let labels = p
        .get("labels")
        .map(|l| {
            l.split([',', ';'])
                .filter_map(|kv| kv.split_once('=').or_else(|| kv.split_once(':')))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Client {
        ip: p.get("ip").and_then(|x| x.parse().ok()).or(peer),
        labels,
        instance: p.get("instance").map(String::as_str),
    }
}

/// `GET /config/v1/{project}/{env}/{pool}/{path}?release=KEY&ip=&labels=&instance=`.
pub(super) async fn client_get(
    s: &AdminState,
    h: &HeaderMap,
    segs: &[&str],
    path_and_query: &str,
    q: &str,
    peer: Option<IpAddr>,
) -> Response<Vec<u8>> {
    let r = async {
        let key = key_of(segs)?;
        let open = client_auth(s, h, path_and_query, &key.project, &key.env)?;
        let p = params(q);
        let cur = s.release.load_full();
        let doc = &cur.doc.config;
        let k = key.to_string();
        let (f, rel) = ConfigCenter::resolve(doc, &k, &client_of(&p, peer))
            .ok_or_else(|| GatewayError::NotFound(format!("config file {k} (no release)")))?;
        if p.get("release").is_some_and(|r| *r == rel.key()) {
            return Ok(None);
        }
        let mut content = s.config.text(&rel.effective).await?;
        if !open {
            content = s.config.mask(&content);
        }
        Ok(Some(json!({"project": key.project, "env": key.env, "pool": key.pool, "path": key.path,
            "release_key": rel.key(), "fv": rel.fv, "pv": rel.pv, "gray": f.gray.as_ref().is_some_and(|g| g.release.key() == rel.key()),
            "content_type": f.content_type, "content": content})))
    }
    .await;
    match r {
        Ok(None) => respond(StatusCode::NOT_MODIFIED, "application/json", Vec::new()),
        Ok(Some(v)) => respond(
            StatusCode::OK,
            "application/json",
            v.to_string().into_bytes(),
        ),
        Err(e) => error_response(&e),
    }
}

/// `GET /config/v1/notifications?project=&env=&pool=&watch=PATH@KEY,…&timeout=30`: held
/// until a watched file's release for this client differs from the key it sent (200 with
/// the paths and their new keys) or the timeout passes (304).
pub(super) async fn notifications(
    s: &AdminState,
    h: &HeaderMap,
    path_and_query: &str,
    q: &str,
    peer: Option<IpAddr>,
) -> Response<Vec<u8>> {
    let r = async {
        let p = params(q);
        let get = |k: &str| p.get(k).cloned().ok_or_else(|| GatewayError::BadRequest(format!("`{k}` is required")));
        let (project, env, pool) = (get("project")?, get("env")?, get("pool")?);
        for (what, v) in [("project", &project), ("env", &env), ("pool", &pool)] {
            if !apus_rules::config::segment_ok(v) {
                return Err(GatewayError::BadRequest(format!("{what} `{v}`: letters, digits, `-`, `_`, `.`")));
            }
        }
        client_auth(s, h, path_and_query, &project, &env)?;
        let mut watched: BTreeMap<String, String> = BTreeMap::new();
        for w in get("watch")?.split(',').filter(|w| !w.is_empty()).take(256) {
            let (path, key) = w.split_once('@').unwrap_or((w, ""));
            let k = FileKey::parse(&format!("{project}/{env}/{pool}/{path}")).map_err(GatewayError::BadRequest)?;
            watched.insert(k.to_string(), key.to_string());
        }
        let secs = p.get("timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(s.config_poll.as_secs());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs.clamp(1, s.config_poll.as_secs().max(1)));
        let client = client_of(&p, peer);
        let mut versions = s.release.versions();
        metrics::gauge!("apus_config_long_polls").increment(1.0);
        let out = loop {
            let cur = s.release.load_full();
        let doc = &cur.doc.config;
            let changed: Vec<Value> = watched
                .iter()
                .filter_map(|(k, have)| {
                    let now = ConfigCenter::resolve(doc, k, &client).map(|(_, r)| r.key()).unwrap_or_default();
                    (now != *have).then(|| json!({"path": k.splitn(4, '/').nth(3).unwrap_or(""), "release_key": now}))
                })
                .collect();
            if !changed.is_empty() {
                break Some(changed);
            }
            tokio::select! {
                r = versions.changed() => if r.is_err() { break None },
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };
        metrics::gauge!("apus_config_long_polls").decrement(1.0);
        Ok::<_, GatewayError>(out)
    }
    .await;
    match r {
        Ok(None) => respond(StatusCode::NOT_MODIFIED, "application/json", Vec::new()),
        Ok(Some(v)) => respond(
            StatusCode::OK,
            "application/json",
            json!({"changed": v}).to_string().into_bytes(),
        ),
        Err(e) => error_response(&e),
    }
}
