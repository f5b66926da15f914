//! Upstream pools: a Pingora [`LoadBalancer`] per pool with active health checks, plus the
//! runtime shelf operations (自动上下架): add, drain, undrain, remove servers without a
//! restart.
//!
//! Invariants: a server added at runtime is *pending* and takes no traffic until its first
//! passing health check; a drained server takes no new requests (in-flight ones finish);
//! a removed server leaves the balancer's membership.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::RequestHeader;
use pingora::services::background::{background_service, GenBackgroundService};
use serde::Serialize;

use crate::config::{HealthCheckKind, PoolConfig};

mod rotation;
use crate::metrics as m;
use crate::GatewayError;
use rotation::{Rotation, Slot};

type PendingSet = ArcSwap<HashSet<SocketAddr>>;

/// Service discovery whose membership the admin API edits.
struct Membership(Arc<ArcSwap<BTreeSet<Backend>>>);

#[async_trait]
impl ServiceDiscovery for Membership {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.load()), HashMap::new()))
    }
}

/// Wraps the real check: a pending server is admitted on its first pass, and health flips
/// are exported as a gauge.
struct AdmittingCheck {
    inner: Box<dyn HealthCheck + Send + Sync>,
    pending: Arc<PendingSet>,
    pool: String,
    book: Arc<HealthBook>,
    /// The pool checked, whose rotation an admission or a health flip changes (set once
    /// the pool exists; weak: the pool owns the check).
    owner: Arc<std::sync::OnceLock<std::sync::Weak<Pool>>>,
}

impl AdmittingCheck {
    fn refresh_rotation(&self) {
        if let Some(p) = self.owner.get().and_then(std::sync::Weak::upgrade) {
            p.refresh_rotation();
        }
    }
}

/// What the health check said of each server, whether it is drained or not (the load
/// balancer's readiness also counts drains).
#[derive(Default)]
struct HealthBook {
    /// Servers the check has flipped to unhealthy.
    down: std::sync::Mutex<HashSet<SocketAddr>>,
    /// When each server last passed a check.
    last_pass: std::sync::Mutex<HashMap<SocketAddr, std::time::Instant>>,
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    b.addr.as_inet().copied()
}

#[async_trait]
impl HealthCheck for AdmittingCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let r = self.inner.check(target).await;
        if r.is_ok() {
            if let Some(a) = inet(target) {
                self.book
                    .last_pass
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(a, std::time::Instant::now());
                if self.pending.load().contains(&a) {
                    self.pending.rcu(|p| {
                        let mut p = HashSet::clone(p);
                        p.remove(&a);
                        p
                    });
                    self.refresh_rotation();
                    tracing::info!(pool = %self.pool, server = %a, "server passed its first check, admitted");
                }
            }
        }
        r
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(a) = inet(target) {
            let mut down = self.book.down.lock().unwrap_or_else(|p| p.into_inner());
            if healthy {
                down.remove(&a);
            } else {
                down.insert(a);
            }
        }
        // Pingora stored the new health before this call.
        self.refresh_rotation();
        let server = target.addr.to_string();
        metrics::gauge!(m::UPSTREAM_HEALTHY, "pool" => self.pool.clone(), "server" => server.clone())
            .set(if healthy { 1.0 } else { 0.0 });
        tracing::warn!(pool = %self.pool, server, healthy, "upstream health changed");
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// A server's state as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub addr: String,
    /// `healthy`, `unhealthy`, `pending` (awaiting first passing check), `drained`, or
    /// `ejected` (timed out on live requests; back after a while).
    pub state: &'static str,
}

/// One server's live counts on this node: what a serial release waits on (in-flight
/// requests of a drained server) and watches (its errors while it settles).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub inflight: std::sync::atomic::AtomicI64,
    pub requests: std::sync::atomic::AtomicU64,
    pub errors: std::sync::atomic::AtomicU64,
}

impl ServerStats {
    /// A request picked this server.
    #[inline]
    pub fn begin(&self) {
        self.inflight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// The request ended (`answered`: with `status`, else it never reached the server).
    #[inline]
    pub fn end(&self, answered: Option<u16>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.inflight.fetch_sub(1, Relaxed);
        if let Some(status) = answered {
            self.requests.fetch_add(1, Relaxed);
            if status >= 500 || status == 0 {
                self.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One upstream pool.
pub struct Pool {
    /// Pool name.
    pub name: String,
    lb: Arc<LoadBalancer<RoundRobin>>,
    members: Arc<ArcSwap<BTreeSet<Backend>>>,
    pending: Arc<PendingSet>,
    /// Drained servers: excluded at selection (as well as disabled in the load balancer,
    /// whose backends a later update may rebuild).
    drained: ArcSwap<HashSet<SocketAddr>>,
    /// Serialises membership updates (Pingora requires updates not to overlap).
    update_lock: tokio::sync::Mutex<()>,
    /// Passive health: live requests that timed out, per server, since its last success.
    timeouts: std::sync::Mutex<HashMap<SocketAddr, usize>>,
    /// Entries in `timeouts` (read without the lock on every answered request).
    timeouts_open: std::sync::atomic::AtomicUsize,
    /// Servers ejected by passive health, until when.
    ejected: ArcSwap<HashMap<SocketAddr, std::time::Instant>>,
    /// Consecutive timeouts that eject a server (the health check's unhealthy threshold).
    eject_after: usize,
    /// How long an ejected server sits out.
    eject_for: Duration,
    /// Live counts per server (the rotation carries them to the request path).
    stats: ArcSwap<HashMap<SocketAddr, Arc<ServerStats>>>,
    /// The servers requests go to now, with their counts (rebuilt on every change).
    rotation: Rotation,
    /// The health check's verdicts, drains aside.
    book: Arc<HealthBook>,
    /// How long the health check takes to call a server healthy (interval × threshold).
    check_period: Duration,
    /// Upstream read timeout (per read, not the whole response); `None` = none.
    pub read_timeout: Option<std::time::Duration>,
    /// Upstream write timeout; `None` = none.
    pub write_timeout: Option<std::time::Duration>,
}

impl Pool {
    /// Build a pool and the background service that health-checks it.
    pub fn new(
        cfg: &PoolConfig,
    ) -> Result<(Arc<Pool>, GenBackgroundService<LoadBalancer<RoundRobin>>), GatewayError> {
        let mut set = BTreeSet::new();
        for s in &cfg.servers {
            set.insert(
                Backend::new(s)
                    .map_err(|e| GatewayError::Config(format!("pool `{}`: {e}", cfg.name)))?,
            );
        }
        let members = Arc::new(ArcSwap::from_pointee(set));
        let pending: Arc<PendingSet> = Arc::new(ArcSwap::from_pointee(HashSet::new()));
        let hc = &cfg.health_check;
        let timeout = Duration::from_millis(hc.timeout_ms);
        let inner: Box<dyn HealthCheck + Send + Sync> = match hc.kind {
            HealthCheckKind::Tcp => {
                let mut c = TcpHealthCheck::new();
                c.consecutive_success = hc.healthy_threshold;
                c.consecutive_failure = hc.unhealthy_threshold;
                c.peer_template.options.connection_timeout = Some(timeout);
                c
            }
            HealthCheckKind::Http => {
                let mut c = HttpHealthCheck::new("localhost", false);
                c.consecutive_success = hc.healthy_threshold;
                c.consecutive_failure = hc.unhealthy_threshold;
                c.peer_template.options.connection_timeout = Some(timeout);
                c.peer_template.options.read_timeout = Some(timeout);
                let mut req =
                    RequestHeader::build("GET", hc.path.as_bytes(), None).map_err(|e| {
                        GatewayError::Config(format!("pool `{}`: health path: {e}", cfg.name))
                    })?;
                req.insert_header("Host", "localhost")
                    .and_then(|_| req.insert_header("User-Agent", "apus-health-check"))
                    .map_err(|e| GatewayError::Config(e.to_string()))?;
                c.req = req;
                Box::new(c)
            }
        };
        let backends = Backends::new(Box::new(Membership(members.clone())));
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        let book = Arc::new(HealthBook::default());
        let owner = Arc::new(std::sync::OnceLock::new());
        lb.set_health_check(Box::new(AdmittingCheck {
            inner,
            pending: pending.clone(),
            pool: cfg.name.clone(),
            book: book.clone(),
            owner: owner.clone(),
        }));
        lb.health_check_frequency = Some(Duration::from_millis(hc.interval_ms));
        lb.parallel_health_check = true;
        // Membership changes come from the admin API, which calls `update` itself.
        lb.update_frequency = None;
        for s in &cfg.servers {
            metrics::gauge!(m::UPSTREAM_HEALTHY, "pool" => cfg.name.clone(), "server" => s.clone())
                .set(1.0);
        }
        let bg = background_service(&format!("health check {}", cfg.name), lb);
        let pool = Arc::new(Pool {
            name: cfg.name.clone(),
            lb: bg.task(),
            members,
            pending,
            drained: ArcSwap::from_pointee(HashSet::new()),
            update_lock: tokio::sync::Mutex::new(()),
            timeouts: std::sync::Mutex::default(),
            timeouts_open: std::sync::atomic::AtomicUsize::new(0),
            ejected: ArcSwap::default(),
            eject_after: hc.unhealthy_threshold.max(1),
            stats: ArcSwap::default(),
            rotation: Rotation::default(),
            book,
            check_period: Duration::from_millis(hc.interval_ms * hc.healthy_threshold as u64),
            // As long as the active check takes to call a server healthy again, at least 1 s.
            eject_for: Duration::from_millis(
                (hc.interval_ms * hc.healthy_threshold as u64).max(1000),
            ),
            read_timeout: (cfg.read_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(cfg.read_timeout_ms)),
            write_timeout: (cfg.write_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(cfg.write_timeout_ms)),
        });
        let _ = owner.set(Arc::downgrade(&pool));
        Ok((pool, bg))
    }

    /// Pick a ready server (healthy, admitted, not drained, not ejected), round robin,
    /// skipping `exclude`; with its live counts.
    #[inline]
    pub fn select(&self, exclude: &[SocketAddr]) -> Option<(SocketAddr, Arc<ServerStats>)> {
        let ejected = self.ejected.load();
        let now = (!ejected.is_empty()).then(std::time::Instant::now);
        self.rotation.pick(|a| {
            !exclude.contains(&a) && now.is_none_or(|n| ejected.get(&a).is_none_or(|t| n >= *t))
        })
    }

    /// Rebuild the rotation from the membership, the health check's verdicts, admissions
    /// and drains: every change to one of them calls this.
    fn refresh_rotation(&self) {
        self.rotation.rebuild(|| {
            let pending = self.pending.load();
            let drained = self.drained.load();
            let backends = self.lb.backends();
            self.members
                .load()
                .iter()
                .filter(|b| backends.ready(b))
                .filter_map(inet)
                .filter(|a| !pending.contains(a) && !drained.contains(a))
                .map(|addr| Slot {
                    addr,
                    stats: self.stats_of(addr),
                })
                .collect()
        });
    }

    /// Passive health: a live request to `addr` timed out (`timed_out`) or was answered.
    /// At the health check's unhealthy threshold of consecutive timeouts the server sits
    /// out for as long as the check needs to call it healthy again, so a hung build stops
    /// taking requests even when it still answers the check's probe.
    pub fn report(&self, addr: SocketAddr, timed_out: bool) {
        use std::sync::atomic::Ordering;
        if !timed_out {
            // The common case takes no lock: nothing has timed out lately.
            if self.timeouts_open.load(Ordering::Relaxed) > 0 {
                let mut t = self.timeouts.lock().unwrap_or_else(|p| p.into_inner());
                t.remove(&addr);
                self.timeouts_open.store(t.len(), Ordering::Relaxed);
            }
            return;
        }
        let eject = {
            let mut t = self.timeouts.lock().unwrap_or_else(|p| p.into_inner());
            let n = t.entry(addr).or_insert(0);
            *n += 1;
            let eject = *n >= self.eject_after;
            if eject {
                t.remove(&addr);
            }
            self.timeouts_open.store(t.len(), Ordering::Relaxed);
            eject
        };
        if eject {
            let now = std::time::Instant::now();
            let mut map: HashMap<SocketAddr, std::time::Instant> = self
                .ejected
                .load()
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(a, u)| (*a, *u))
                .collect();
            map.insert(addr, now + self.eject_for);
            self.ejected.store(Arc::new(map));
            metrics::counter!(m::EJECTED, "pool" => self.name.clone(), "server" => addr.to_string())
                .increment(1);
            tracing::warn!(pool = %self.name, server = %addr, for_ms = self.eject_for.as_millis() as u64,
                "server ejected after consecutive upstream timeouts");
        }
    }

    /// The live counts of `addr` (created on first use).
    #[inline]
    pub fn stats_of(&self, addr: SocketAddr) -> Arc<ServerStats> {
        if let Some(s) = self.stats.load().get(&addr) {
            return s.clone();
        }
        let mut out = None;
        self.stats.rcu(|m| {
            let mut m = HashMap::clone(m);
            out = Some(m.entry(addr).or_default().clone());
            m
        });
        out.unwrap_or_default()
    }

    /// How long the health check needs to call a server healthy.
    pub fn check_period(&self) -> Duration {
        self.check_period
    }

    /// Whether the health check calls `addr` healthy now (drained or not) and it passed a
    /// check after `since`; `None` if it is not in the pool.
    pub fn passes_check(&self, addr: SocketAddr, since: std::time::Instant) -> Option<bool> {
        if !self.members.load().iter().any(|b| inet(b) == Some(addr)) {
            return None;
        }
        let pending = self.pending.load().contains(&addr);
        let down = self
            .book
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr);
        let fresh = self
            .book
            .last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .is_some_and(|t| *t >= since);
        Some(!pending && !down && fresh)
    }

    /// The pool's servers and their states.
    pub fn status(&self) -> Vec<ServerStatus> {
        let pending = self.pending.load();
        let drained = self.drained.load();
        self.members
            .load()
            .iter()
            .map(|b| {
                let a = inet(b);
                let ejected = self.ejected.load();
                let now = std::time::Instant::now();
                let state = if a.is_some_and(|a| drained.contains(&a)) {
                    "drained"
                } else if a.is_some_and(|a| ejected.get(&a).is_some_and(|t| *t > now)) {
                    "ejected"
                } else if a.is_some_and(|a| pending.contains(&a)) {
                    "pending"
                } else if self.lb.backends().ready(b) {
                    "healthy"
                } else {
                    "unhealthy"
                };
                ServerStatus {
                    addr: b.addr.to_string(),
                    state,
                }
            })
            .collect()
    }

    fn parse(&self, addr: &str) -> Result<(SocketAddr, Backend), GatewayError> {
        let a: SocketAddr = addr
            .parse()
            .map_err(|_| GatewayError::BadRequest(format!("`{addr}` is not ip:port")))?;
        Ok((
            a,
            Backend::new(&a.to_string()).map_err(|e| GatewayError::BadRequest(e.to_string()))?,
        ))
    }

    fn find(&self, addr: &str) -> Result<(SocketAddr, Backend), GatewayError> {
        let (a, b) = self.parse(addr)?;
        if !self.members.load().contains(&b) {
            return Err(GatewayError::NotFound(format!(
                "server {a} in pool {}",
                self.name
            )));
        }
        Ok((a, b))
    }

    /// Rebuild the load balancer's backends from the membership (also done once before
    /// the proxy starts, so the first requests find the servers).
    pub async fn apply(&self) -> Result<(), GatewayError> {
        let _g = self.update_lock.lock().await;
        let r = self
            .lb
            .update()
            .await
            .map_err(|e| GatewayError::Proxy(e.to_string()));
        self.refresh_rotation();
        r
    }

    /// Put a server on the shelf; it takes traffic after its first passing check.
    pub async fn add(&self, addr: &str) -> Result<(), GatewayError> {
        let (a, b) = self.parse(addr)?;
        if self.members.load().contains(&b) {
            return Err(GatewayError::BadRequest(format!(
                "server {a} is already in pool {}",
                self.name
            )));
        }
        self.pending.rcu(|p| {
            let mut p = HashSet::clone(p);
            p.insert(a);
            p
        });
        self.members.rcu(|m| {
            let mut m = BTreeSet::clone(m);
            m.insert(b.clone());
            m
        });
        self.apply().await
    }

    /// Stop sending new requests to a server (or resume with `drain = false`).
    pub fn set_drained(&self, addr: &str, drain: bool) -> Result<(), GatewayError> {
        let (a, b) = self.find(addr)?;
        self.lb.backends().set_enable(&b, !drain);
        self.drained.rcu(|d| {
            let mut d = HashSet::clone(d);
            if drain {
                d.insert(a);
            } else {
                d.remove(&a);
            }
            d
        });
        self.refresh_rotation();
        Ok(())
    }

    /// Take a server off the shelf entirely.
    pub async fn remove(&self, addr: &str) -> Result<(), GatewayError> {
        let (a, b) = self.find(addr)?;
        self.members.rcu(|m| {
            let mut m = BTreeSet::clone(m);
            m.remove(&b);
            m
        });
        self.drained.rcu(|d| {
            let mut d = HashSet::clone(d);
            d.remove(&a);
            d
        });
        self.apply().await
    }

    /// Bring the pool to `want`: add and remove servers, set drains. Servers added here
    /// take traffic after their first passing check, as through [`Pool::add`].
    pub async fn reconcile(&self, want: &apus_control::PoolState) -> Result<(), GatewayError> {
        let have: Vec<String> = self
            .members
            .load()
            .iter()
            .filter_map(inet)
            .map(|a| a.to_string())
            .collect();
        for s in &want.servers {
            if !have.contains(s) {
                self.add(s).await?;
            }
        }
        for s in &have {
            if !want.servers.contains(s) {
                self.remove(s).await?;
            }
        }
        let drained = self.drained.load_full();
        for s in &want.servers {
            let (a, _) = self.parse(s)?;
            let should = want.drained.contains(s);
            if should != drained.contains(&a) {
                self.set_drained(s, should)?;
            }
        }
        Ok(())
    }

    /// Check `addr` as a server address (`ip:port`), in its canonical form.
    pub fn canonical(addr: &str) -> Result<String, GatewayError> {
        addr.parse::<SocketAddr>()
            .map(|a| a.to_string())
            .map_err(|_| GatewayError::BadRequest(format!("`{addr}` is not ip:port")))
    }
}
