//! The Apus gateway: a Pingora proxy that routes each request to a stable or gray pool by
//! the gray rules of its route, tags it (`x-request-id`, the tag header, W3C `baggage`),
//! health-checks pools, and exposes release control on a separate admin listener.
//!
//! Main types: [`GatewayProxy`] (the `ProxyHttp` impl), [`ReleaseState`] (rules in force,
//! versions, change history), [`Pool`] (a load balancer with health checks and runtime
//! shelf operations). [`build`] wires them into a Pingora `Server`. Release state lives in
//! the control plane (`apus-control`): the gateway loads it, watches it and writes through
//! it.
//!
//! Must never depend on: the stores, ingest, the query tier (the proxy never waits on
//! analytics, and its build carries no DataFusion, Tantivy or Parquet).

#![warn(clippy::print_stdout)]

pub mod access_log;
pub mod admin;
pub mod confcenter;
pub mod config;
mod error;
pub mod metrics;
pub mod pools;
mod proxy;
pub mod rollout;
mod serial;
pub mod state;
pub mod tagging;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apus_rules::{CidrSet, RuleSet};
use pingora::listeners::TcpSocketOptions;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

pub use access_log::{AccessLog, AccessLogSink};
pub use config::GatewayConfig;
pub use error::GatewayError;
pub use pools::Pool;
pub use proxy::GatewayProxy;
pub use state::ReleaseState;

/// What hands the memory a replaced rule set freed back to the OS: the process's
/// allocator, set by the binary (the gateway library does not choose one). An allocator
/// that keeps freed pages for reuse (mimalloc) keeps them in the heap of the thread that
/// freed them until that thread allocates again, and the threads that compile and free
/// rule sets then sit idle until the next change: a 100k-tenant compile's scratch stayed
/// resident between flips.
static RELEASE_FREED_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Set what [`release_freed_memory`] calls (once per process; later calls are ignored).
pub fn on_release_freed_memory(f: fn()) {
    let _ = RELEASE_FREED_MEMORY.set(f);
}

/// Hand what this thread freed back to the OS, if the binary said how.
pub fn release_freed_memory() {
    if let Some(f) = RELEASE_FREED_MEMORY.get() {
        f()
    }
}

/// A gateway ready to run, with handles to its shared state.
pub struct Gateway {
    /// The Pingora server with the proxy, health checks and admin services added.
    pub server: Server,
    /// Release state (for wiring the change feed).
    pub release: Arc<ReleaseState>,
    /// The runtime of the control-store client and its watch (lives as long as the
    /// gateway).
    pub control_runtime: tokio::runtime::Runtime,
    /// The deploy hooks serial releases may name.
    deploy_hooks: Arc<Vec<config::DeployHook>>,
}

impl Gateway {
    /// Run the rollout runner on this node (every 500 ms), with analysis from `analyzer`
    /// (without one, analysis steps pause, saying why); it also drives serial pool
    /// releases.
    pub fn start_rollouts(&self, analyzer: Option<rollout::Analyzer>) {
        rollout::spawn(
            self.control_runtime.handle(),
            self.release.clone(),
            analyzer,
            std::time::Duration::from_millis(500),
            self.deploy_hooks.clone(),
        );
    }
}

/// The Pingora server settings of the gateway: `threads` proxy threads, one single-threaded
/// runtime each unless `work_stealing`, and a quick exit on SIGTERM (no grace period).
pub fn server_conf(threads: usize, work_stealing: bool) -> ServerConf {
    ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}

/// Add the proxy to `server`: with several threads and no work stealing, one service per
/// thread (each its own single-threaded runtime and upstream connection pool), all
/// listening on `listen` with `SO_REUSEPORT`, so the kernel spreads connections and a
/// request, its upstream connection and that connection's idle watcher stay on one thread
/// (one shared service makes Pingora spawn each idle watcher on a random thread: a
/// cross-thread wake-up per request, and a race in which a reused connection is still
/// held by its watcher, logged as "failed to acquire reusable stream"). Otherwise one
/// service with `threads` threads.
pub fn add_proxy_services<P>(
    server: &mut Server,
    proxy: P,
    listen: &str,
    threads: usize,
    work_stealing: bool,
) -> Result<(), GatewayError>
where
    P: pingora::proxy::ProxyHttp + Clone + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let addr = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if threads > 1 && !work_stealing && a.port() != 0 => a,
        _ => {
            let mut svc = http_proxy_service_with_name(&server.configuration, proxy, "apus proxy");
            svc.add_tcp(listen);
            server.add_service(svc);
            return Ok(());
        }
    };
    // SO_REUSEPORT would let this process share the port with another one that set it
    // too (a second gateway): bind once without it first, so a taken port is an error.
    std::net::TcpListener::bind(addr)
        .map_err(|e| GatewayError::Config(format!("listen {listen}: {e}")))?;
    for i in 0..threads {
        let mut svc = http_proxy_service_with_name(
            &server.configuration,
            proxy.clone(),
            &format!("apus proxy {i}"),
        );
        let mut opt = TcpSocketOptions::default();
        opt.so_reuseport = Some(true);
        svc.add_tcp_with_settings(&reuseport_key(addr, i), opt);
        svc.threads = Some(1);
        server.add_service(svc);
    }
    Ok(())
}

/// The listen address of proxy service `i`: `addr` with `i` leading zeros on its port.
/// Pingora keeps one table of listening sockets keyed by the address as written (it hands
/// them to the next process on a graceful upgrade) and gives a service whose address is
/// already in it that same socket: every service would accept from one socket (woken
/// together, connections piling on whichever thread wins) instead of each from its own
/// `SO_REUSEPORT` socket, which the kernel balances. The zeros make each service's key its
/// own; the address they parse to is the same.
fn reuseport_key(addr: std::net::SocketAddr, i: usize) -> String {
    let ip = match addr {
        std::net::SocketAddr::V4(a) => a.ip().to_string(),
        std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("{ip}:{}{}", "0".repeat(i), addr.port())
}

/// Build the Pingora server for `cfg` (already validated into `rules`, which seed an empty
/// control store). `data_dir` holds the embedded control log (or etcd's local snapshot).
pub fn build(
    cfg: &GatewayConfig,
    rules: RuleSet,
    base_dir: Option<&Path>,
    data_dir: &Path,
    access_log: AccessLog,
    prometheus: Option<admin::MetricsRender>,
    tokens: apus_auth::Tokens,
) -> Result<Gateway, GatewayError> {
    metrics::describe();
    let conf = server_conf(cfg.threads, cfg.work_stealing);
    let mut server =
        Server::new_with_opt_and_conf(None::<pingora::server::configuration::Opt>, conf);
    server.bootstrap();

    let mut pools = HashMap::new();
    for p in &cfg.pools {
        let (pool, hc) = Pool::new(p)?;
        pools.insert(p.name.clone(), pool);
        server.add_service(hc);
    }
    let pools = Arc::new(pools);
    let control_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("apus-control")
        .enable_all()
        .build()?;
    control_runtime.block_on(async {
        for p in pools.values() {
            p.apply().await?;
        }
        Ok::<_, GatewayError>(())
    })?;
    let control = control_runtime.block_on(apus_control::open(&cfg.control, data_dir))?;
    let seed = state::seed_doc(rules.routes().cloned().collect(), &cfg.pools);
    let release = control_runtime.block_on(ReleaseState::open(
        seed,
        pools.clone(),
        base_dir,
        control,
        cfg.history_file.clone(),
        &cfg.baggage_key,
    ))?;
    control_runtime.spawn(release.clone().follow());
    control_runtime.spawn(release.clone().sweep_every(Duration::from_secs(1)));
    let tag_header = http::HeaderName::from_bytes(cfg.tag_header.as_bytes())
        .map_err(|e| GatewayError::Config(format!("tag_header: {e}")))?;
    // Once per process: the name lives as long as the gateway.
    let tag_header: &'static str = Box::leak(tag_header.as_str().into());
    let proxy = GatewayProxy {
        state: release.clone(),
        trusted: CidrSet::new(&cfg.trusted_nets()),
        tag_header,
        baggage_key: cfg.baggage_key.clone(),
        max_tries: cfg.max_tries,
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        access_log,
    };
    add_proxy_services(
        &mut server,
        proxy,
        &cfg.listen,
        cfg.threads,
        cfg.work_stealing,
    )?;

    let deploy_hooks = Arc::new(cfg.deploy_hooks.clone());
    let config_center = Arc::new(confcenter::ConfigCenter::new(
        release.clone(),
        &cfg.config_sensitive,
        cfg.config_access_keys.clone(),
        cfg.approvals.keys().cloned().collect(),
    )?);
    let admin = admin::service(
        &cfg.admin_listen,
        admin::AdminState {
            release: release.clone(),
            pools,
            tokens: Arc::new(tokens),
            prometheus,
            control: cfg.control.clone(),
            approvals: Arc::new(cfg.approvals.clone()),
            upstreams: Arc::new(config::UpstreamPolicy::of(cfg)),
            deploy_hooks: deploy_hooks.clone(),
            config: config_center,
            config_poll: Duration::from_secs(cfg.config_long_poll_secs),
        },
    )?;
    server.add_service(admin);
    if let Some(url) = &cfg.changes_url {
        release.ship_changes_to(url, cfg.ingest_token());
    }
    Ok(Gateway {
        server,
        release,
        control_runtime,
        deploy_hooks,
    })
}
