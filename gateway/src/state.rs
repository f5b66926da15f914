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

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apus_control::{Change, ControlError, ControlStore, Pending, PoolState, ReleaseDoc};
use apus_rules::{RouteSpec, RuleSet};
use apus_schema::time::now_us;
use apus_schema::{ChangeKind, ChangeRecord, Micros, Touched};
use arc_swap::ArcSwap;

use crate::config::file_loader;
use crate::metrics as m;
use crate::pools::Pool;
use crate::GatewayError;

/// How many changes `/admin/v1/changes` lists.
const HISTORY: usize = 1000;
/// Longest `reason` kept in a change record.
const MAX_REASON: usize = 1024;

/// The rule set in force and its version.
pub struct Current {
    /// Version number of the release state.
    pub version: u64,
    /// The compiled rules.
    pub rules: RuleSet,
    /// The release state they were compiled from.
    pub doc: Arc<ReleaseDoc>,
    /// Metric handles and header values per route and lane: `lanes[route][0]` is stable,
    /// `[i + 1]` rule `i`.
    lanes: Vec<Vec<Lane>>,
}

/// What the request path needs of a lane, built once per rule version: its metric handles
/// and the values of the headers that tag its requests.
pub struct Lane {
    pub metrics: m::LaneMetrics,
    /// The tag header's value.
    pub tag: http::HeaderValue,
    /// `baggage` for a request that brings none: `{baggage_key}={tag}`.
    pub baggage: http::HeaderValue,
}

impl Lane {
    fn new(route: &str, pool: &str, tag: &str, baggage_key: &str) -> Self {
        // Tags are validated names; a value that is not a header value still tags nothing
        // rather than failing every request of the lane.
        let value =
            |s: &str| http::HeaderValue::from_str(s).unwrap_or(http::HeaderValue::from_static(""));
        Lane {
            metrics: m::LaneMetrics::new(route, pool, tag),
            tag: value(tag),
            baggage: value(&format!("{baggage_key}={tag}")),
        }
    }
}

impl Current {
    /// Wrap a rule set, registering its lanes' metric handles and building their header
    /// values (`baggage_key` is the gateway's baggage member name).
    pub fn new(version: u64, rules: RuleSet, doc: Arc<ReleaseDoc>, baggage_key: &str) -> Self {
        let lanes = rules
            .routes()
            .map(|r| {
                std::iter::once(Lane::new(
                    &r.name,
                    &r.stable_pool,
                    apus_rules::STABLE_TAG,
                    baggage_key,
                ))
                .chain(
                    r.gray_rules
                        .iter()
                        .map(|g| Lane::new(&r.name, &g.pool, &g.tag, baggage_key)),
                )
                .collect()
            })
            .collect();
        Current {
            version,
            rules,
            doc,
            lanes,
        }
    }

    /// A decision's lane.
    pub fn lane(&self, d: apus_rules::Decision) -> &Lane {
        &self.lanes[d.route][d.rule.map_or(0, |i| i + 1)]
    }
}

/// A subscriber to the change feed.
pub type ChangeListener = Box<dyn Fn(&ChangeRecord) + Send>;

/// What a change is, besides the new state: the audit fields an edit fills in.
pub struct Edit {
    /// The new release state.
    pub doc: ReleaseDoc,
    /// Change kind.
    pub kind: ChangeKind,
    /// Project and env of what changed (empty when it spans several).
    pub project: String,
    pub env: String,
    /// Route name, `*`, or `pool/addr`.
    pub scope: String,
    /// What changed, when the rule diff does not say it (server operations).
    pub summary: Option<String>,
    /// What it touched, when the rule diff does not say it.
    pub touched: Option<Touched>,
    /// Approvals the change needs before it applies (protected envs); 0 = none.
    pub approvals: u32,
    /// An admin's emergency bypass of the approvals (audited as such).
    pub emergency: bool,
    /// Said after the diff in the summary (e.g. who approved it).
    pub note: Option<String>,
}

impl Edit {
    /// An edit with no approval requirement and the summary taken from the rule diff.
    pub fn new(doc: ReleaseDoc, kind: ChangeKind, project: &str, env: &str, scope: &str) -> Edit {
        Edit {
            doc,
            kind,
            project: project.into(),
            env: env.into(),
            scope: scope.into(),
            summary: None,
            touched: None,
            approvals: 0,
            emergency: false,
            note: None,
        }
    }
}

/// Shared release state of one gateway node.
pub struct ReleaseState {
    current: ArcSwap<Current>,
    pool_names: Vec<String>,
    pools: Arc<HashMap<String, Arc<Pool>>>,
    base_dir: Option<PathBuf>,
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

/// Values replaced but maybe still referenced elsewhere, kept until this holds the last
/// reference, so that the thread that frees them is the one that sweeps.
pub struct Retired<T>(Mutex<Vec<Arc<T>>>);

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Retired(Mutex::new(Vec::new()))
    }
}

impl<T> Retired<T> {
    /// Keep `old` until nobody else holds it (and free what nobody holds any more).
    pub fn retire(&self, old: Arc<T>) {
        self.sweep();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(old);
    }

    /// Free (here) what nobody else holds; returns how many are still held.
    pub fn sweep(&self) -> usize {
        let dead: Vec<Arc<T>> = {
            let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let (dead, live) = std::mem::take(&mut *r)
                .into_iter()
                .partition(|c| Arc::strong_count(c) == 1);
            *r = live;
            dead
        };
        drop(dead);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
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

/// The state at `cur` with `e` recorded as a proposal (id `version`) waiting for its
/// approvals; the rules in force stay as they are.
fn proposed_doc(cur: &Current, e: &Edit, version: u64, actor: &str, reason: &str) -> ReleaseDoc {
    let mut doc = (*cur.doc).clone();
    doc.pending.push(Pending {
        id: version,
        kind: e.kind,
        author: actor.into(),
        reason: reason.into(),
        project: e.project.clone(),
        env: e.env.clone(),
        scope: e.scope.clone(),
        ts: now_us(),
        required: e.approvals,
        approvals: Vec::new(),
        base_routes: cur.doc.routes.clone(),
        routes: e.doc.routes.clone(),
    });
    doc
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
        let loader = file_loader(base_dir);
        let rules = RuleSet::compile(&head.state.routes, &names, &loader).map_err(|e| {
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
            )),
            pool_names,
            pools,
            base_dir: base_dir.map(Path::to_path_buf),
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

    fn compile(&self, routes: &[RouteSpec]) -> Result<RuleSet, GatewayError> {
        let pools: Vec<&str> = self.pool_names.iter().map(String::as_str).collect();
        let loader = file_loader(self.base_dir.as_deref());
        Ok(RuleSet::compile(routes, &pools, &loader)?)
    }

    /// Wait (up to 1 s) until this node serves `version` or newer.
    async fn catch_up(&self, version: u64) {
        let start = Instant::now();
        while self.load().version < version && start.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Make a change: `edit` derives the new state from the current one; it is validated,
    /// committed to the control store against the version it was based on, installed, and
    /// announced. With `base` (the client's `If-Match` / `base_version`), a stale base is
    /// a conflict (409); without, the edit is re-applied to the newest state on conflict.
    pub async fn change(
        &self,
        base: Option<u64>,
        actor: &str,
        reason: &str,
        edit: impl Fn(&Current) -> Result<Edit, GatewayError>,
    ) -> Result<ChangeRecord, GatewayError> {
        let reason: String = reason.chars().take(MAX_REASON).collect();
        if let Some(b) = base {
            self.catch_up(b).await;
        }
        let _serial = self.change_lock.lock().await;
        // The audit copy must be writable before anything is committed: a change that
        // could not be audited is refused rather than made silently.
        let audit = match &self.history_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        GatewayError::Unavailable(format!(
                            "the history file {} cannot be written ({e}); change refused",
                            path.display()
                        ))
                    })?,
            ),
            None => None,
        };
        for _ in 0..8 {
            let cur = self.load_full();
            if let Some(b) = base {
                if b != cur.version {
                    return Err(GatewayError::Conflict(format!(
                        "the change is based on version {b}, the current version is {}",
                        cur.version
                    )));
                }
            }
            let (change, rules) = self.prepare(&cur, edit(&cur)?, actor, &reason)?;
            let rec = change.record.clone();
            // Held from the commit to the install: the watch sees the commit at once, and
            // would otherwise compile the same rules a second time, beside this install.
            let installing = self.install_lock.lock().await;
            match self.control.commit(change.clone()).await {
                Ok(()) => {
                    self.install_locked(&change, rules).await;
                    drop(installing);
                    self.announce(&rec, audit);
                    return Ok(rec);
                }
                Err(ControlError::Conflict { current, .. }) if base.is_none() => {
                    drop(installing);
                    self.catch_up(current).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(GatewayError::Conflict(
            "the release state kept changing underneath this change; retry".into(),
        ))
    }

    /// What `edit` would commit now, validated and with its rule diff, without committing
    /// it (the console's preview before a release manager applies a change).
    pub fn preview(
        &self,
        actor: &str,
        reason: &str,
        edit: impl Fn(&Current) -> Result<Edit, GatewayError>,
    ) -> Result<ChangeRecord, GatewayError> {
        let reason: String = reason.chars().take(MAX_REASON).collect();
        let cur = self.load_full();
        let (change, _) = self.prepare(&cur, edit(&cur)?, actor, &reason)?;
        Ok(change.record)
    }

    /// Turn an edit of `cur` into the change to commit and the rules it puts in force:
    /// validated (it must compile, even when it is only proposed), summarised with its
    /// rule diff, and — for a protected env without an emergency bypass — turned into a
    /// proposal that waits for approvals.
    fn prepare(
        &self,
        cur: &Current,
        e: Edit,
        actor: &str,
        reason: &str,
    ) -> Result<(Change, RuleSet), GatewayError> {
        let after = self.compile(&e.doc.routes)?;
        let diff = cur.rules.diff(&after);
        let diff = if diff.is_empty() {
            "no rule change".to_string()
        } else {
            diff.join("; ")
        };
        let version = cur.version + 1;
        let (doc, rules, kind, summary, touched) = if e.approvals > 0 && !e.emergency {
            let doc = proposed_doc(cur, &e, version, actor, reason);
            let summary = format!(
                "proposed change #{version} ({}), needs {} approval(s): {diff}; {reason}",
                e.kind, e.approvals
            );
            let rules = self.compile(&doc.routes)?;
            (
                doc,
                rules,
                ChangeKind::ChangeProposed.as_str().to_string(),
                summary,
                Touched::new(),
            )
        } else {
            let mut what = e.summary.clone().unwrap_or(diff);
            if let Some(n) = &e.note {
                what = format!("{what}; {n}");
            }
            let summary = if e.emergency && e.approvals > 0 {
                metrics::counter!(m::EMERGENCY_BYPASS).increment(1);
                format!(
                    "EMERGENCY, {} approval(s) bypassed: {what}; {reason}",
                    e.approvals
                )
            } else {
                format!("{what}; {reason}")
            };
            let touched = e.touched.clone().unwrap_or_else(|| {
                let diff = cur.rules.touched(&after);
                diff.iter().map(String::as_str).collect()
            });
            (e.doc, after, e.kind.as_str().to_string(), summary, touched)
        };
        let record = ChangeRecord {
            ts: Micros(now_us()),
            kind,
            actor: actor.into(),
            project: e.project,
            env: e.env,
            scope: e.scope,
            from_version: cur.version,
            to_version: version,
            summary,
            touched: touched.to_string(),
        };
        let change = Change {
            version,
            base_version: cur.version,
            record,
            state: doc,
        };
        Ok((change, rules))
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

    fn announce(&self, rec: &ChangeRecord, audit: Option<std::fs::File>) {
        tracing::info!(kind = %rec.kind, actor = %rec.actor, scope = %rec.scope,
            from = rec.from_version, to = rec.to_version, summary = %rec.summary, "change applied");
        if let Some(mut f) = audit {
            let line = serde_json::to_string(rec).unwrap_or_default();
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.sync_data()) {
                // Opened a moment ago; the control store holds the change and its audit
                // fields either way.
                tracing::error!(error = %e, "could not append to the history file");
            }
        }
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Retired;
    use std::sync::Arc;

    #[test]
    fn retired_values_are_freed_by_the_sweeper_not_by_their_last_user() {
        let r = Retired::default();
        let old = Arc::new(String::from("rule set v1"));
        let in_flight = old.clone();
        let watch = Arc::downgrade(&old);
        r.retire(old);
        assert_eq!(r.sweep(), 1, "a request still holds it");
        drop(in_flight);
        assert!(
            watch.upgrade().is_some(),
            "the request's drop did not free it"
        );
        assert_eq!(r.sweep(), 0);
        assert!(watch.upgrade().is_none(), "the sweep freed it");
    }
}
