//! The control plane: release state (gray rules per route, pool membership and drains) as
//! a versioned, durable log of changes that every gateway node watches.
//!
//! Main types: [`ReleaseDoc`] (the whole release state at one version), [`Change`] (one
//! entry of the log: the state it produced and the audit record), [`Backend`] (where the
//! log lives: [`local::LocalLog`], an fsynced append-only file on `apus-wal` for a single
//! node, or [`etcd::EtcdLog`], etcd v3 through its JSON gateway for a fleet), and
//! [`ControlStore`], the handle nodes hold.
//!
//! Invariants: a change is durable before [`Backend::commit`] returns; versions grow by
//! one per change; a change based on a version other than the current one is refused
//! ([`ControlError::Conflict`], HTTP 409), so two writers can never lose an update.
//!
//! Must never depend on: the stores, the query tier, ingest, Pingora.

#![warn(clippy::print_stdout)]

pub mod etcd;
pub mod http;
pub mod local;
pub mod metrics;
mod model;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

pub use model::{Change, Pending, PoolState, ReleaseDoc};

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The change was based on a version that is no longer current.
    #[error("conflict: the change is based on version {base}, the current version is {current}")]
    Conflict { base: u64, current: u64 },
    /// The store cannot be reached (etcd down): writes are refused, reads serve the last
    /// good state.
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// The control URL or stored data is unusable.
    #[error("control store: {0}")]
    Invalid(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the change log lives.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The newest change, if any (an empty store has none).
    async fn head(&self) -> Result<Option<Arc<Change>>, ControlError>;
    /// Append `change` if its `base_version` is the current version (compare-and-swap);
    /// durable when this returns `Ok`.
    async fn commit(&self, change: Change) -> Result<(), ControlError>;
    /// The change that produced `version`.
    async fn get(&self, version: u64) -> Result<Option<Arc<Change>>, ControlError>;
    /// Up to `limit` newest changes, oldest first, without their states.
    async fn history(&self, limit: usize) -> Result<Vec<apus_schema::ChangeRecord>, ControlError>;
    /// The newest change known to this node, updated as changes land (from any node).
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Change>>>;
    /// Whether the store answered its last request (etcd); always true for the local log.
    fn connected(&self) -> bool;
    /// Store `data` under its SHA-256 (hex) and return that digest; durable when this
    /// returns, idempotent. Config-file contents live here, not inside the release state,
    /// so a 5 MB file costs one blob, not a copy per version.
    async fn put_blob(&self, data: bytes::Bytes) -> Result<String, ControlError>;
    /// The bytes stored under `digest` (`None` if there are none).
    async fn get_blob(&self, digest: &str) -> Result<Option<bytes::Bytes>, ControlError>;
    /// Take or keep the named lease for `holder` (a node's id) for `ttl`: true while
    /// `holder` holds it, so that exactly one node of a fleet does the named job (the
    /// rollout runner). Called again before `ttl` runs out, it renews; a holder that stops
    /// calling loses it after `ttl`. The local log has one node, which always holds it.
    async fn hold(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, ControlError> {
        Ok(true)
    }
}

/// Which backend a `--control` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlUrl {
    /// `local`: the embedded log under the data directory.
    Local,
    /// `etcd://HOST:PORT[,HOST:PORT]/PREFIX`.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

impl ControlUrl {
    /// Parse `local` or `etcd://HOST:PORT[,HOST:PORT]/PREFIX`.
    pub fn parse(s: &str) -> Result<Self, ControlError> {
        if s.is_empty() || s == "local" {
            return Ok(ControlUrl::Local);
        }
        let rest = s.strip_prefix("etcd://").ok_or_else(|| {
            ControlError::Invalid(format!(
                "control URL `{s}`: expected `local` or `etcd://HOST:PORT[,HOST:PORT]/PREFIX`"
            ))
        })?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "apus"));
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(ControlError::Invalid(format!(
                "control URL `{s}`: no etcd endpoint"
            )));
        }
        let prefix = prefix.trim_matches('/');
        Ok(ControlUrl::Etcd {
            endpoints,
            prefix: if prefix.is_empty() {
                "apus".into()
            } else {
                prefix.into()
            },
        })
    }
}

/// The SHA-256 of `data`, hex.
pub fn digest(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like a digest [`digest`] made (64 lowercase hex digits).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The largest blob stored.
pub const MAX_BLOB: usize = 8 << 20;

/// The handle a node holds: the backend, shared.
pub type ControlStore = Arc<dyn Backend>;

/// Open the control store named by `url`; `data_dir` holds the local log (and, for etcd,
/// the last good snapshot a node starts from when etcd is down). Must run inside a Tokio
/// runtime (the etcd watcher is spawned on it).
pub async fn open(url: &str, data_dir: &Path) -> Result<ControlStore, ControlError> {
    match ControlUrl::parse(url)? {
        ControlUrl::Local => Ok(Arc::new(local::LocalLog::open(&data_dir.join("control"))?)),
        ControlUrl::Etcd { endpoints, prefix } => Ok(Arc::new(
            etcd::EtcdLog::open(endpoints, prefix, &data_dir.join("control-cache")).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls() {
        assert_eq!(ControlUrl::parse("local").unwrap(), ControlUrl::Local);
        assert_eq!(
            ControlUrl::parse("etcd://127.0.0.1:2379,127.0.0.1:22379/shop").unwrap(),
            ControlUrl::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://127.0.0.1:22379".into()
                ],
                prefix: "shop".into()
            }
        );
        assert!(ControlUrl::parse("zk://x").is_err());
        assert!(ControlUrl::parse("etcd:///p").is_err());
    }
}
