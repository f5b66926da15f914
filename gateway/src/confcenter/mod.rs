//! The config center (model: `apus_rules::config`): files per project × env × pool with
//! drafts, immutable releases, inheritance, globals and gray releases, kept in the release
//! state (metadata) and the control store's blob area (contents), so configs and gray
//! rules share one history, one audit and one approval rule.
//!
//! Every operation reads what it needs first (blobs), computes the new effective contents
//! (the file's, and every descendant's that changes), stores them as blobs, and then
//! commits one change that re-checks nothing moved meanwhile (a moved draft, parent,
//! global or release is a 409).

mod globals;
mod ops;
pub mod sign;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use apus_rules::config::{Client, ConfigDoc, ConfigFile, ContentType, Release};
use bytes::Bytes;

use crate::state::ReleaseState;
use crate::GatewayError;

pub use ops::{DraftEdit, Op};
pub use sign::AccessKey;

/// Bytes of blobs kept in memory.
const CACHE_BYTES: usize = 64 << 20;

/// The config center of one node.
pub struct ConfigCenter {
    pub(crate) release: Arc<ReleaseState>,
    cache: Mutex<BlobCache>,
    /// Keys whose values viewers see masked.
    pub(crate) sensitive: regex::Regex,
    /// Signing keys of config clients.
    pub(crate) keys: Vec<AccessKey>,
    /// Protected envs (a publisher other than the draft's editor is required).
    pub(crate) protected: Vec<String>,
}

#[derive(Default)]
struct BlobCache {
    map: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl ConfigCenter {
    pub fn new(
        release: Arc<ReleaseState>,
        sensitive: &str,
        keys: Vec<AccessKey>,
        protected: Vec<String>,
    ) -> Result<ConfigCenter, GatewayError> {
        let sensitive = regex::Regex::new(&format!("(?i){sensitive}"))
            .map_err(|e| GatewayError::Config(format!("config_sensitive: {e}")))?;
        Ok(ConfigCenter {
            release,
            cache: Mutex::default(),
            sensitive,
            keys,
            protected,
        })
    }

    /// A blob's bytes (cached; blobs never change).
    pub async fn blob(&self, digest: &str) -> Result<Bytes, GatewayError> {
        if let Some(b) = self.lock().map.get(digest) {
            return Ok(b.clone());
        }
        let b = self
            .release
            .control()
            .get_blob(digest)
            .await?
            .ok_or_else(|| GatewayError::NotFound(format!("blob {digest}")))?;
        self.remember(digest, b.clone());
        Ok(b)
    }

    /// Store `text` as a blob; its digest.
    pub async fn put(&self, text: &str) -> Result<String, GatewayError> {
        let b = Bytes::from(text.to_string());
        let d = self.release.control().put_blob(b.clone()).await?;
        self.remember(&d, b);
        Ok(d)
    }

    pub(crate) async fn text(&self, digest: &str) -> Result<String, GatewayError> {
        let b = self.blob(digest).await?;
        String::from_utf8(b.to_vec())
            .map_err(|_| GatewayError::Config(format!("blob {digest} is not UTF-8")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BlobCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, digest: &str, b: Bytes) {
        if b.len() > CACHE_BYTES / 4 {
            return;
        }
        let mut c = self.lock();
        if c.map.contains_key(digest) {
            return;
        }
        c.bytes += b.len();
        c.map.insert(digest.to_string(), b);
        c.order.push_back(digest.to_string());
        while c.bytes > CACHE_BYTES {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(x) = c.map.remove(&old) {
                c.bytes -= x.len();
            }
        }
    }

    /// The release `client` gets of `key` (the gray one if it matches), with the file.
    pub fn resolve<'d>(
        doc: &'d ConfigDoc,
        key: &str,
        client: &Client<'_>,
    ) -> Option<(&'d ConfigFile, &'d Release)> {
        let f = doc.files.get(key)?;
        if let Some(g) = &f.gray {
            if g.target.matches(key, client) {
                return Some((f, &g.release));
            }
        }
        f.current().map(|r| (f, r))
    }

    /// `text` with the values of sensitive keys masked (for roles that may not see them).
    pub fn mask(&self, text: &str) -> String {
        let line_re = |l: &str| -> Option<usize> {
            // `key = v`, `key: v`, `"key": v` — the value starts after the separator.
            let t = l.trim_start();
            let sep = t.find(['=', ':'])?;
            let key = t[..sep].trim().trim_matches(['"', '\'']);
            (!key.is_empty() && self.sensitive.is_match(key)).then_some(l.len() - t.len() + sep + 1)
        };
        let mut out = String::with_capacity(text.len());
        for l in text.split_inclusive('\n') {
            match line_re(l) {
                Some(at) => {
                    out.push_str(&l[..at]);
                    out.push_str(" ****");
                    if l.ends_with('\n') {
                        out.push('\n');
                    }
                }
                None => out.push_str(l),
            }
        }
        out
    }

    /// Whether the env is protected.
    pub fn protected(&self, env: &str) -> bool {
        self.protected.iter().any(|e| e == env)
    }
}

/// What a client asked to be told about: path → the release key it has.
pub type Watched = BTreeMap<String, String>;

/// A line diff of two texts (`-`/`+`/` ` prefixed), with at most `max` lines out.
pub fn diff(a: &str, b: &str, max: usize) -> Vec<String> {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // LCS table over lines; files past 2,000 lines are compared as a whole block.
    if x.len() * y.len() > 4_000_000 {
        return vec![
            format!("- ({} lines)", x.len()),
            format!("+ ({} lines)", y.len()),
        ];
    }
    let mut t = vec![vec![0u32; y.len() + 1]; x.len() + 1];
    for i in (0..x.len()).rev() {
        for j in (0..y.len()).rev() {
            t[i][j] = if x[i] == y[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while (i < x.len() || j < y.len()) && out.len() < max {
        if i < x.len() && j < y.len() && x[i] == y[j] {
            out.push(format!("  {}", x[i]));
            i += 1;
            j += 1;
        } else if i < x.len() && (j == y.len() || t[i + 1][j] >= t[i][j + 1]) {
            out.push(format!("- {}", x[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", y[j]));
            j += 1;
        }
    }
    out
}

/// The type named by `s`.
pub fn content_type(s: &str) -> Result<ContentType, GatewayError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        GatewayError::BadRequest(format!(
            "content_type `{s}`: one of properties, json, yaml, xml, text"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_are_line_diffs() {
        let d = diff("a\nb\nc\n", "a\nB\nc\nd\n", 100);
        assert_eq!(d, ["  a", "- b", "+ B", "  c", "+ d"]);
    }
}
