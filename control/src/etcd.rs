//! The etcd backend, for a fleet: the change log in etcd v3 (Debian's `etcd-server` 3.4)
//! through its JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`), the way APISIX
//! keeps its routes there.
//!
//! Layout under `PREFIX`: `PREFIX/release/head` holds the newest [`Change`] (with its
//! state); `PREFIX/release/changes/{version:020}` holds every change. A commit is one
//! transaction guarded by the `mod_revision` of `head` read when the base version was
//! checked, so of two writers on the same base exactly one wins. Every node watches `head`
//! and swaps in what it sees; while etcd is away a node serves its last good version,
//! refuses writes (503), and catches up when etcd returns. Each new head is also saved to
//! a local snapshot, so a node can start while etcd is down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::metrics as m;
use crate::{http, Backend, Change, ControlError};

/// Bytes per etcd key of a blob.
const BLOB_CHUNK: usize = 512 << 10;

/// A node's view of the change log in etcd.
pub struct EtcdLog {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    prefix: String,
    cache: PathBuf,
    tx: watch::Sender<Option<Arc<Change>>>,
    connected: AtomicBool,
    /// This node's etcd lease per held name (granted once, kept alive while held).
    leases: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// The key one past every key starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    if let Some(last) = b.last_mut() {
        *last += 1;
    }
    B64.encode(b)
}

/// etcd's JSON gateway encodes int64 fields as strings.
fn int(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn decode_value(kv: &Value) -> Result<Change, ControlError> {
    let raw = B64
        .decode(kv["value"].as_str().unwrap_or(""))
        .map_err(|e| ControlError::Invalid(format!("etcd value: {e}")))?;
    serde_json::from_slice(&raw).map_err(|e| ControlError::Invalid(format!("etcd change: {e}")))
}

impl Inner {
    fn head_key(&self) -> String {
        format!("{}/release/head", self.prefix)
    }
    fn change_key(&self, v: u64) -> String {
        format!("{}/release/changes/{v:020}", self.prefix)
    }

    fn set_connected(&self, up: bool) {
        if self.connected.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(endpoints = ?self.endpoints, "control store (etcd) reachable again");
            } else {
                tracing::error!(endpoints = ?self.endpoints, "control store (etcd) unreachable: serving the last good version, writes refused");
            }
        }
        ::metrics::gauge!(m::CONNECTED).set(if up { 1.0 } else { 0.0 });
    }

    /// POST a JSON body to the first endpoint that answers.
    async fn call(&self, path: &str, body: Value) -> Result<Value, ControlError> {
        let mut last = String::new();
        let body = Bytes::from(body.to_string());
        for ep in &self.endpoints {
            match http::post(
                &format!("{ep}{path}"),
                "application/json",
                body.clone(),
                Duration::from_secs(3),
            )
            .await
            {
                Ok((200, answer)) => {
                    self.set_connected(true);
                    return serde_json::from_slice(&answer)
                        .map_err(|e| ControlError::Unavailable(format!("etcd answer: {e}")));
                }
                Ok((st, answer)) => {
                    self.set_connected(true);
                    return Err(ControlError::Unavailable(format!(
                        "etcd {path}: {st}: {}",
                        String::from_utf8_lossy(&answer)
                    )));
                }
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        self.set_connected(false);
        Err(ControlError::Unavailable(format!(
            "etcd unreachable ({last})"
        )))
    }

    /// The head key's change and `mod_revision` (0 when absent), and the store revision.
    async fn read_head(&self) -> Result<(Option<Change>, u64, u64), ControlError> {
        let v = self
            .call("/v3/kv/range", json!({ "key": b64(&self.head_key()) }))
            .await?;
        let rev = int(&v["header"]["revision"]);
        match v["kvs"].as_array().and_then(|a| a.first()) {
            Some(kv) => Ok((Some(decode_value(kv)?), int(&kv["mod_revision"]), rev)),
            None => Ok((None, 0, rev)),
        }
    }

    /// Take a newer head: publish it to this node's subscribers and save the snapshot.
    fn adopt(&self, c: Change) {
        let newer = self
            .tx
            .borrow()
            .as_ref()
            .is_none_or(|h| c.version > h.version);
        if newer {
            ::metrics::gauge!(m::STORE_VERSION).set(c.version as f64);
            if let Err(e) = save_snapshot(&self.cache, &c) {
                tracing::warn!(error = %e, "could not save the control snapshot");
            }
            self.tx.send_replace(Some(Arc::new(c)));
        }
    }

    /// Watch `head` from `start` on; returns when the stream ends or fails.
    async fn watch_once(&self, start: u64) -> Result<u64, ControlError> {
        let mut last_rev = start.saturating_sub(1);
        let body =
            json!({ "create_request": { "key": b64(&self.head_key()), "start_revision": start } });
        let body = Bytes::from(body.to_string());
        let mut resp = None;
        for ep in &self.endpoints {
            let url = format!("{ep}/v3/watch");
            let call = http::send(
                "POST",
                &url,
                &[("content-type", "application/json")],
                body.clone(),
            );
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), call).await {
                if r.status().is_success() {
                    resp = Some(r.into_body());
                    break;
                }
            }
        }
        let mut resp =
            resp.ok_or_else(|| ControlError::Unavailable("etcd watch refused".into()))?;
        self.set_connected(true);
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = http::next_chunk(&mut resp)
            .await
            .map_err(|e| ControlError::Unavailable(format!("etcd watch: {e}")))?
        {
            buf.extend_from_slice(&chunk);
            // The gateway sends one JSON object per line.
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let res = &msg["result"];
                if res["canceled"].as_bool() == Some(true) {
                    return Err(ControlError::Unavailable(format!(
                        "etcd watch canceled: {}",
                        res["cancel_reason"]
                    )));
                }
                for ev in res["events"].as_array().into_iter().flatten() {
                    let kv = &ev["kv"];
                    last_rev = last_rev.max(int(&kv["mod_revision"]));
                    if ev["type"].as_str() == Some("DELETE") {
                        continue;
                    }
                    match decode_value(kv) {
                        Ok(c) => self.adopt(c),
                        Err(e) => tracing::error!(error = %e, "undecodable head in etcd ignored"),
                    }
                }
            }
            if buf.len() > (64 << 20) {
                return Err(ControlError::Invalid(
                    "etcd watch message over 64 MiB".into(),
                ));
            }
        }
        Ok(last_rev + 1)
    }
}

fn save_snapshot(dir: &Path, c: &Change) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let body = serde_json::to_vec(c).map_err(std::io::Error::other)?;
    apus_wal::write_atomic(&dir.join("head.json"), &body)
}

fn load_snapshot(dir: &Path) -> Option<Change> {
    let raw = std::fs::read(dir.join("head.json")).ok()?;
    serde_json::from_slice(&raw).ok()
}

impl EtcdLog {
    /// Connect, load the head (or the local snapshot if etcd is down), and start watching.
    pub async fn open(
        endpoints: Vec<String>,
        prefix: String,
        cache: &Path,
    ) -> Result<EtcdLog, ControlError> {
        crate::metrics::describe();
        let (tx, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            endpoints,
            prefix,
            cache: cache.to_path_buf(),
            tx,
            connected: AtomicBool::new(true),
            leases: Default::default(),
        });
        let start = match inner.read_head().await {
            Ok((head, _, rev)) => {
                if let Some(h) = head {
                    inner.adopt(h);
                }
                rev + 1
            }
            Err(ControlError::Unavailable(e)) => match load_snapshot(cache) {
                Some(snap) => {
                    tracing::warn!(error = %e, version = snap.version, "etcd unreachable at start: serving the last local snapshot");
                    inner.adopt(snap);
                    0
                }
                None => {
                    return Err(ControlError::Unavailable(format!(
                        "{e}; and no local snapshot in {} to start from",
                        cache.display()
                    )))
                }
            },
            Err(e) => return Err(e),
        };
        let w = inner.clone();
        tokio::spawn(async move { watcher(w, start).await });
        Ok(EtcdLog { inner })
    }
}

/// Watch forever: on a broken stream, back off, catch up by reading the head, re-watch.
async fn watcher(inner: Arc<Inner>, mut start: u64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if start == 0 {
            match inner.read_head().await {
                Ok((head, _, rev)) => {
                    if let Some(h) = head {
                        inner.adopt(h);
                    }
                    start = rev + 1;
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        match inner.watch_once(start).await {
            Ok(next) => {
                start = next;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::debug!(error = %e, "etcd watch ended");
                inner.set_connected(false);
                // Re-read the head before watching again: it may have moved meanwhile,
                // and the old revision may be compacted.
                start = 0;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[async_trait]
impl Backend for EtcdLog {
    async fn head(&self) -> Result<Option<Arc<Change>>, ControlError> {
        Ok(self.inner.tx.borrow().clone())
    }

    async fn commit(&self, change: Change) -> Result<(), ControlError> {
        let inner = &self.inner;
        let res = async {
            let (head, mod_rev, _) = inner.read_head().await?;
            let current = head.as_ref().map_or(0, |h| h.version);
            if change.base_version != current || change.version != current + 1 {
                return Err(ControlError::Conflict {
                    base: change.base_version,
                    current,
                });
            }
            let value = B64.encode(
                serde_json::to_vec(&change)
                    .map_err(|e| ControlError::Invalid(format!("encode change: {e}")))?,
            );
            let head_key = b64(&inner.head_key());
            let guard = if mod_rev == 0 {
                json!({ "key": head_key, "target": "CREATE", "result": "EQUAL", "create_revision": 0 })
            } else {
                json!({ "key": head_key, "target": "MOD", "result": "EQUAL", "mod_revision": mod_rev })
            };
            let txn = json!({
                "compare": [guard],
                "success": [
                    { "request_put": { "key": head_key, "value": value } },
                    { "request_put": { "key": b64(&inner.change_key(change.version)), "value": value } },
                ],
            });
            let v = inner.call("/v3/kv/txn", txn).await?;
            if v["succeeded"].as_bool() != Some(true) {
                let (head, _, _) = inner.read_head().await?;
                return Err(ControlError::Conflict {
                    base: change.base_version,
                    current: head.map_or(0, |h| h.version),
                });
            }
            Ok(())
        }
        .await;
        let outcome = match &res {
            Ok(()) => "ok",
            Err(ControlError::Conflict { .. }) => "conflict",
            Err(_) => "unavailable",
        };
        ::metrics::counter!(m::COMMITS, "outcome" => outcome).increment(1);
        res?;
        inner.adopt(change);
        Ok(())
    }

    async fn get(&self, version: u64) -> Result<Option<Arc<Change>>, ControlError> {
        let v = self
            .inner
            .call(
                "/v3/kv/range",
                json!({ "key": b64(&self.inner.change_key(version)) }),
            )
            .await?;
        match v["kvs"].as_array().and_then(|a| a.first()) {
            Some(kv) => Ok(Some(Arc::new(decode_value(kv)?))),
            None => Ok(None),
        }
    }

    async fn history(&self, limit: usize) -> Result<Vec<apus_schema::ChangeRecord>, ControlError> {
        let prefix = format!("{}/release/changes/", self.inner.prefix);
        let v = self
            .inner
            .call(
                "/v3/kv/range",
                json!({
                    "key": b64(&prefix),
                    "range_end": prefix_end(&prefix),
                    "limit": limit,
                    "sort_order": "DESCEND",
                    "sort_target": "KEY",
                }),
            )
            .await?;
        let mut out: Vec<apus_schema::ChangeRecord> = v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| decode_value(kv).ok())
            .map(|c| c.record)
            .collect();
        out.reverse();
        Ok(out)
    }

    fn subscribe(&self) -> watch::Receiver<Option<Arc<Change>>> {
        self.inner.tx.subscribe()
    }

    fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// `PREFIX/blobs/{digest}/{i:04}` hold 512 KiB chunks (etcd refuses requests over
    /// 1.5 MiB by default), written first; `PREFIX/blobs/{digest}` (the chunk count and
    /// length) last, so a blob is visible only once whole. Content-addressed, so a
    /// repeated or interrupted put is harmless.
    async fn put_blob(&self, data: Bytes) -> Result<String, ControlError> {
        if data.len() > crate::MAX_BLOB {
            return Err(ControlError::Invalid(format!(
                "blob of {} bytes, over {}",
                data.len(),
                crate::MAX_BLOB
            )));
        }
        let inner = &self.inner;
        let d = crate::digest(&data);
        let meta = format!("{}/blobs/{d}", inner.prefix);
        let have = inner
            .call(
                "/v3/kv/range",
                json!({ "key": b64(&meta), "count_only": true }),
            )
            .await?;
        if int(&have["count"]) > 0 {
            return Ok(d);
        }
        let chunks: Vec<&[u8]> = data.chunks(BLOB_CHUNK).collect();
        for (i, c) in chunks.iter().enumerate() {
            inner
                .call(
                    "/v3/kv/put",
                    json!({ "key": b64(&format!("{meta}/{i:04}")), "value": B64.encode(c) }),
                )
                .await?;
        }
        let m = json!({ "len": data.len(), "chunks": chunks.len() }).to_string();
        inner
            .call("/v3/kv/put", json!({ "key": b64(&meta), "value": b64(&m) }))
            .await?;
        Ok(d)
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<Bytes>, ControlError> {
        if !crate::is_digest(digest) {
            return Ok(None);
        }
        let inner = &self.inner;
        let meta = format!("{}/blobs/{digest}", inner.prefix);
        let v = inner
            .call("/v3/kv/range", json!({ "key": b64(&meta) }))
            .await?;
        let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        let m: Value = serde_json::from_slice(
            &B64.decode(kv["value"].as_str().unwrap_or(""))
                .map_err(|e| ControlError::Invalid(format!("blob meta: {e}")))?,
        )
        .map_err(|e| ControlError::Invalid(format!("blob meta: {e}")))?;
        let (len, n) = (int(&m["len"]) as usize, int(&m["chunks"]) as usize);
        if len > crate::MAX_BLOB {
            return Err(ControlError::Invalid(format!("blob {digest}: {len} bytes")));
        }
        let mut out = Vec::with_capacity(len);
        // Chunk by chunk: one range answer holding them all could pass etcd's reply limit.
        for i in 0..n {
            let v = inner
                .call(
                    "/v3/kv/range",
                    json!({ "key": b64(&format!("{meta}/{i:04}")) }),
                )
                .await?;
            let c = v["kvs"][0]["value"].as_str().unwrap_or("");
            out.extend(
                B64.decode(c)
                    .map_err(|e| ControlError::Invalid(format!("blob chunk: {e}")))?,
            );
        }
        if out.len() != len || crate::digest(&out) != digest {
            return Err(ControlError::Invalid(format!(
                "blob {digest} is damaged in etcd"
            )));
        }
        Ok(Some(Bytes::from(out)))
    }

    /// `PREFIX/leases/NAME` holds the holder's id under an etcd lease of `ttl`: created
    /// only when absent (a transaction on its `create_revision`), so one node holds it;
    /// the holder keeps its lease alive, and when it stops, etcd deletes the key after
    /// `ttl` and the next caller takes it.
    async fn hold(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, ControlError> {
        let inner = &self.inner;
        let key = b64(&format!("{}/leases/{name}", inner.prefix));
        let known = inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied();
        let mut lease = None;
        if let Some(id) = known {
            let v = inner
                .call("/v3/lease/keepalive", json!({ "ID": id.to_string() }))
                .await?;
            // An expired lease comes back without a TTL.
            if int(&v["result"]["TTL"]) > 0 {
                lease = Some(id);
            }
        }
        let id = match lease {
            Some(id) => id,
            None => {
                let v = inner
                    .call(
                        "/v3/lease/grant",
                        json!({ "TTL": ttl.as_secs().max(2).to_string() }),
                    )
                    .await?;
                let id = int(&v["ID"]);
                if id == 0 {
                    return Err(ControlError::Unavailable(format!(
                        "etcd granted no lease: {v}"
                    )));
                }
                inner
                    .leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), id);
                id
            }
        };
        let txn = json!({
            "compare": [{ "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0 }],
            "success": [{ "request_put": { "key": key, "value": b64(holder), "lease": id.to_string() } }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let v = inner.call("/v3/kv/txn", txn).await?;
        if v["succeeded"].as_bool() == Some(true) {
            return Ok(true);
        }
        let kv = &v["responses"][0]["response_range"]["kvs"][0];
        let value = B64
            .decode(kv["value"].as_str().unwrap_or(""))
            .unwrap_or_default();
        Ok(value == holder.as_bytes() && int(&kv["lease"]) == id)
    }
}
