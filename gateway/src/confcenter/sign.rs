//! Signed config-client requests, as Apollo's: `Authorization: Apus KEY:SIGNATURE` with
//! `SIGNATURE = base64(HMAC-SHA256(secret, timestamp + "\n" + path_and_query))` and the
//! `Timestamp` header in milliseconds since the epoch, within ±60 s of this node's clock.
//! The signature covers the path and query, so it cannot be replayed on another file.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// Largest clock difference accepted.
pub const MAX_SKEW_MS: i64 = 60_000;

/// A client access key, bound to one project and env (`*` for any).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub key: String,
    pub secret: String,
    pub project: String,
    pub env: String,
}

impl AccessKey {
    pub fn covers(&self, project: &str, env: &str) -> bool {
        (self.project == "*" || self.project == project) && (self.env == "*" || self.env == env)
    }
}

fn mac(secret: &str, ts: &str, path_and_query: &str) -> Hmac<sha2::Sha256> {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    m.update(ts.as_bytes());
    m.update(b"\n");
    m.update(path_and_query.as_bytes());
    m
}

/// The signature a client sends (for clients and tests).
pub fn signature(secret: &str, ts_ms: i64, path_and_query: &str) -> String {
    B64.encode(
        mac(secret, &ts_ms.to_string(), path_and_query)
            .finalize()
            .into_bytes(),
    )
}

/// Check a request: the key it names, which must cover `project`/`env`. `Err` says why
/// (the answer is 401 either way).
pub fn verify<'k>(
    keys: &'k [AccessKey],
    authorization: Option<&str>,
    timestamp: Option<&str>,
    path_and_query: &str,
    project: &str,
    env: &str,
    now_ms: i64,
) -> Result<&'k AccessKey, String> {
    let auth = authorization.ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("Apus ")
        .ok_or("Authorization: expected `Apus KEY:SIGNATURE`")?;
    let (id, sig) = rest
        .split_once(':')
        .ok_or("Authorization: expected `Apus KEY:SIGNATURE`")?;
    let ts = timestamp.ok_or("no Timestamp header")?;
    let ts_ms: i64 = ts
        .trim()
        .parse()
        .map_err(|_| "Timestamp: not milliseconds")?;
    let off = now_ms.abs_diff(ts_ms);
    if off > MAX_SKEW_MS as u64 {
        return Err(format!(
            "Timestamp is {} s off this server's clock (at most 60 s)",
            off / 1000
        ));
    }
    let key = keys
        .iter()
        .find(|k| k.key == id)
        .ok_or_else(|| format!("unknown access key `{id}`"))?;
    let raw = B64
        .decode(sig.trim())
        .map_err(|_| "signature: not base64")?;
    mac(&key.secret, ts.trim(), path_and_query)
        .verify_slice(&raw)
        .map_err(|_| "signature does not match".to_string())?;
    if !key.covers(project, env) {
        return Err(format!(
            "access key `{id}` is for {}/{}, not {project}/{env}",
            key.project, key.env
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_key_time_and_path() {
        let keys = vec![AccessKey {
            key: "web".into(),
            secret: "s3cret".into(),
            project: "shop".into(),
            env: "prod".into(),
        }];
        let p = "/config/v1/shop/prod/web/app.properties?release=1";
        let now = 1_800_000_000_000;
        let sig = signature("s3cret", now, p);
        let auth = format!("Apus web:{sig}");
        let ts = now.to_string();
        let ok = |a: &str, t: &str, path: &str, at: i64| {
            verify(&keys, Some(a), Some(t), path, "shop", "prod", at)
        };
        assert!(ok(&auth, &ts, p, now + 59_000).is_ok());
        assert!(ok(&auth, &ts, p, now + 61_000).unwrap_err().contains("off"));
        assert!(
            ok(&auth, &ts, "/config/v1/shop/prod/web/db.properties", now)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(ok(&auth, &(now + 1).to_string(), p, now).is_err());
        assert!(ok(&auth, &i64::MIN.to_string(), p, now).is_err());
        assert!(ok("Apus nope:AAAA", &ts, p, now)
            .unwrap_err()
            .contains("unknown"));
        assert!(ok("Bearer x", &ts, p, now).is_err());
        assert!(
            verify(&keys, Some(&auth), Some(&ts), p, "bank", "prod", now)
                .unwrap_err()
                .contains("not bank/prod")
        );
    }
}
