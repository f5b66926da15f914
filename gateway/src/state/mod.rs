//! The gateway's view of the release state: the rule set in force (swapped atomically with
//! `arc-swap`) and its version, kept equal to the head of the control plane's change log.
//!
//! Every change goes through the control store first (durable, compare-and-swap on the
//! version it was based on) and is then installed here; changes made through other nodes
//! arrive through the store's watch and are installed the same way. On start the node
//! loads the newest state from the store; the config file only seeds an empty store.
//!
//! Invariants: versions only grow; a change is validated completely (it must compile)
//! before it is committed, so a refused change leaves the old rules serving; requests that
//! loaded the old `Arc<Current>` finish on it; a node that cannot reach the store keeps
//! serving its last good version.
//!
//! The request path's part is [`current`]; making a change, [`change`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apus_control::{Change, ControlError, ControlStore, PoolState, ReleaseDoc};
use apus_rules::{RouteSpec, RuleSet};
use apus_schema::time::now_us;
use apus_schema::{ChangeKind, ChangeRecord, Micros};
use arc_swap::ArcSwap;

use crate::config::CachedFiles;
use crate::metrics as m;
use crate::pools::Pool;
use crate::GatewayError;

mod change;
pub use change::Edit;
mod current;
pub use current::{Current, Lane, Retired};

/// How many changes `/admin/v1/changes` lists.
const HISTORY: usize = 1000;
/// Longest `reason` kept in a change record.
const MAX_REASON: usize = 1024;

/// A subscriber to the change feed.
pub type ChangeListener = Box<dyn Fn(&ChangeRecord) + Send>;

/// Shared release state of one gateway node.
pub struct ReleaseState {
    current: ArcSwap<Current>,
    pool_names: Vec<String>,
    pools: Arc<HashMap<String, Arc<Pool>>>,
    /// Tenants files, read again only when they change on disk.
    files: CachedFiles,
    control: ControlStore,
    history_file: Option<PathBuf>,
    /// The baggage member name the proxy sets (its lanes' values are built with it).
    baggage_key: String,
    listeners: Mutex<Vec<ChangeListener>>,
    /// Serialises installs (rule swap + pool reconciliation) from the API and the watch.
    install_lock: tokio::sync::Mutex<()>,
    /// Serialises this node's changes (read, edit, commit), so they conflict only with
    /// other nodes' (etcd) and never starve each other.
    change_lock: tokio::sync::Mutex<()>,
    /// The version installed, for whoever waits on the next one (config long polls).
    installed: tokio::sync::watch::Sender<u64>,
    /// Rule sets replaced but maybe still held by requests in flight. Held here so that
    /// the last reference, and freeing a rule set of 100k tenants, is never dropped on a
    /// proxy thread at the end of a request: [`Self::sweep_retired`] frees them.
    retired: Retired<Current>,
}

impl From<ControlError> for GatewayError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Conflict { .. } => GatewayError::Conflict(e.to_string()),
            ControlError::Unavailable(_) => GatewayError::Unavailable(e.to_string()),
            e => GatewayError::Config(e.to_string()),
        }
    }
}

/// The seed state from the config file: its routes, and each pool's servers.
pub fn seed_doc(routes: Vec<RouteSpec>, pools: &[crate::config::PoolConfig]) -> ReleaseDoc {
    ReleaseDoc {
        routes,
        pools: pools
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    PoolState {
                        servers: p.servers.clone(),
                        drained: Default::default(),
                    },
                )
            })
            .collect(),
        pending: Vec::new(),
        rollouts: Default::default(),
        serial: Default::default(),
        config: Default::default(),
    }
}

impl ReleaseState {
    /// Load the newest state from `control` (seeding an empty store with `seed` as version
    /// 1), compile it, and bring the pools to its membership.
    pub async fn open(
        seed: ReleaseDoc,
        pools: Arc<HashMap<String, Arc<Pool>>>,
        base_dir: Option<&Path>,
        control: ControlStore,
        history_file: Option<PathBuf>,
        baggage_key: &str,
    ) -> Result<Arc<ReleaseState>, GatewayError> {
        let mut pool_names: Vec<String> = pools.keys().cloned().collect();
        pool_names.sort();
        let head = match control.head().await? {
            Some(h) => h,
            None => {
                let rec = ChangeRecord {
                    ts: Micros(now_us()),
                    kind: ChangeKind::Seed.as_str().into(),
                    actor: "config".into(),
                    scope: "*".into(),
                    from_version: 0,
                    to_version: 1,
                    summary: "initial release state from the config file".into(),
                    ..Default::default()
                };
                let c = Change {
                    version: 1,
                    base_version: 0,
                    record: rec,
                    state: seed,
                };
                match control.commit(c.clone()).await {
                    Ok(()) => Arc::new(c),
                    // Another node seeded it first: take theirs.
                    Err(ControlError::Conflict { .. }) => {
                        control.head().await?.ok_or_else(|| {
                            GatewayError::Config("control store: seeded but empty".into())
                        })?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let names: Vec<&str> = pool_names.iter().map(String::as_str).collect();
        let files = CachedFiles::new(base_dir);
        let rules = RuleSet::compile(&head.state.routes, &names, &files).map_err(|e| {
            GatewayError::Config(format!(
                "the release state at version {} does not compile against this config: {e}",
                head.version
            ))
        })?;
        metrics::gauge!(m::RULE_VERSION).set(head.version as f64);
        let doc = Arc::new(head.state.clone());
        let state = Arc::new(ReleaseState {
            current: ArcSwap::from_pointee(Current::new(
                head.version,
                rules,
                doc.clone(),
                baggage_key,
                &pools,
            )),
            pool_names,
            pools,
            files,
            control,
            history_file,
            baggage_key: baggage_key.to_string(),
            listeners: Mutex::new(Vec::new()),
            install_lock: tokio::sync::Mutex::new(()),
            change_lock: tokio::sync::Mutex::new(()),
            installed: tokio::sync::watch::Sender::new(head.version),
            retired: Retired::default(),
        });
        state.reconcile_pools(&doc).await;
        tracing::info!(version = head.version, "release state loaded");
        Ok(state)
    }

    /// Free the replaced rule sets no request holds any more (here, not on a proxy
    /// thread). Runs at each install and every second ([`Self::sweep_every`]).
    pub fn sweep_retired(&self) {
        self.retired.sweep();
    }

    /// Sweep the retired rule sets every `every`, for as long as the process runs.
    pub async fn sweep_every(self: Arc<Self>, every: Duration) {
        let mut t = tokio::time::interval(every);
        loop {
            t.tick().await;
            self.sweep_retired();
        }
    }

    /// Install every newer version the store reports, for as long as the process runs.
    pub async fn follow(self: Arc<Self>) {
        let mut rx = self.control.subscribe();
        loop {
            let latest = rx.borrow_and_update().clone();
            if let Some(c) = latest {
                if let Err(e) = self.install(&c).await {
                    tracing::error!(version = c.version, error = %e, "release state from the control store not installed; serving the last good version");
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The rules in force (one atomic load; keep the `Arc` for the whole request).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Current>> {
        self.current.load()
    }

    /// The rules in force as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// Whether the control store answered its last request.
    /// The installed version, changing as new versions are installed (from this node or
    /// from the control store's watch).
    pub fn versions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// The pools of this node.
    pub fn pools(&self) -> &Arc<HashMap<String, Arc<Pool>>> {
        &self.pools
    }

    /// The control store this node commits to (for leases).
    pub fn control(&self) -> &ControlStore {
        &self.control
    }

    pub fn store_connected(&self) -> bool {
        self.control.connected()
    }

    /// Call `f` for every future change made through this node (the change feed: each
    /// change reaches the pipeline once, from the node that made it).
    pub fn on_change(&self, f: ChangeListener) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Send every future change made through this node to an ingest node
    /// (`POST {base}/ingest/v1/changes`) from a background thread.
    pub fn ship_changes_to(&self, base: &str, token: Option<String>) {
        let shipper = crate::access_log::Shipper::start(
            "changes",
            format!("{}/ingest/v1/changes", base.trim_end_matches('/')),
            token,
            10_000,
        );
        self.on_change(Box::new(move |rec| shipper.send_one(rec)));
    }

    /// Change history, oldest first.
    pub async fn changes(&self) -> Result<Vec<ChangeRecord>, GatewayError> {
        Ok(self.control.history(HISTORY).await?)
    }

    /// The release state of an earlier version.
    pub async fn snapshot(&self, version: u64) -> Result<Arc<Change>, GatewayError> {
        self.control.get(version).await?.ok_or_else(|| {
            GatewayError::NotFound(format!("rule version {version} (not kept for rollback)"))
        })
    }

    /// Compile `routes`, sharing unchanged tenant and CIDR sets with the rules in force
    /// (a flip does not rebuild a 100k-tenant set on the cores the proxy runs on).
    fn compile(&self, routes: &[RouteSpec]) -> Result<RuleSet, GatewayError> {
        let pools: Vec<&str> = self.pool_names.iter().map(String::as_str).collect();
        let cur = self.load();
        let rules = RuleSet::compile_after(routes, &pools, &self.files, Some(&cur.rules));
        // The compile's scratch was freed on this thread, which may sit idle until the next
        // change: hand it back now (before any await moves the caller to another thread).
        crate::release_freed_memory();
        Ok(rules?)
    }

    /// Install a change seen in the store (from any node) if it is newer than ours.
    async fn install(&self, c: &Change) -> Result<(), GatewayError> {
        let _g = self.install_lock.lock().await;
        if c.version <= self.load().version {
            return Ok(());
        }
        let rules = self.compile(&c.state.routes)?;
        self.install_locked(c, rules).await;
        Ok(())
    }

    /// Put `rules` in force for change `c` (the caller holds `install_lock`).
    async fn install_locked(&self, c: &Change, rules: RuleSet) {
        if c.version <= self.load().version {
            return;
        }
        let doc = Arc::new(c.state.clone());
        let old = self.current.swap(Arc::new(Current::new(
            c.version,
            rules,
            doc.clone(),
            &self.baggage_key,
            &self.pools,
        )));
        self.retired.retire(old);
        metrics::gauge!(m::RULE_VERSION).set(c.version as f64);
        self.installed.send_replace(c.version);
        tracing::info!(version = c.version, kind = %c.record.kind, actor = %c.record.actor, "release state installed");
        self.reconcile_pools(&doc).await;
    }

    /// Bring each pool's servers and drains to what `doc` says.
    async fn reconcile_pools(&self, doc: &ReleaseDoc) {
        for (name, want) in &doc.pools {
            match self.pools.get(name) {
                Some(p) => {
                    if let Err(e) = p.reconcile(want).await {
                        tracing::error!(pool = %name, error = %e, "pool membership not applied");
                    }
                }
                None => {
                    tracing::warn!(pool = %name, "the release state names a pool this node's config lacks")
                }
            }
        }
    }
}
