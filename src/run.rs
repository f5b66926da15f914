//! Wiring of the long-running roles: `apus ingest` alone, and `apus run` (gateway +
//! ingest in one process, the gateway's access log and change feed going in-process).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apus_gateway::{AccessLog, AccessLogSink, GatewayConfig};
use apus_ingest::receivers::MetricsRender;
use apus_ingest::{IngestConfig, IngestError, Pipeline};
use apus_query::{Engine, QueryConfig, Searcher};
use apus_schema::AccessRecord;
use apus_store::clickhouse::read::ClickHouseBackend;
use apus_store::read::local::LocalBackend;
use apus_store::read::SqlBackend;
use apus_store::StoreUrl;
use serde::Deserialize;

use crate::alarms::AlarmWiring;
pub use crate::process::{render, tokens, AuthArgs};

/// A `landed` receiver that never changes (a process with no ingest of its own).
fn never_landed() -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0);
    // Kept alive for the process's life so the receiver waits instead of erroring.
    std::mem::forget(tx);
    rx
}

/// `apus run` configuration: `[gateway]` and `[ingest]` sections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The gateway (listeners, pools, routes, tokens).
    pub gateway: GatewayConfig,
    /// The ingest tier (listener, data dir, limits).
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The query API and dashboards (listener, limits).
    #[serde(default)]
    pub query: QueryConfig,
}

/// A multi-threaded runtime for one role.
fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Bind `listen` (failing the start if it is taken) and serve `app` on `rt`.
fn serve(
    rt: &tokio::runtime::Runtime,
    what: &'static str,
    listen: &str,
    app: axum::Router,
) -> Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("{what} listen {listen}"))?;
    listener.set_nonblocking(true)?;
    let _guard = rt.enter();
    let l = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(addr = ?l.local_addr().ok(), "{what} listening");
    rt.spawn(crate::serve::serve(
        l,
        app,
        what,
        crate::serve::HttpLimits::from_env(),
    ));
    Ok(())
}

/// Start the ingest tier on its own runtime: open the data dir (replaying the WAL), start
/// maintenance and the HTTP receivers.
pub fn start_ingest(
    cfg: IngestConfig,
    render: Option<MetricsRender>,
    tokens: Arc<apus_auth::Tokens>,
) -> Result<(tokio::runtime::Runtime, Arc<Pipeline>)> {
    let rt = runtime("apus-ingest")?;
    let listen = cfg.listen.clone();
    let pipeline = Pipeline::open(cfg).context("open ingest data dir")?;
    tracing::info!(data_dir = %pipeline.data_dir().display(), "ingest data dir open");
    {
        let _guard = rt.enter();
        pipeline.spawn_maintenance();
    }
    // An ingest node also answers searches of its own index, so query nodes can fan out
    // to it.
    let engine = Arc::new(Engine::new(
        pipeline.store().clone(),
        Searcher::Local(pipeline.search().clone()),
        QueryConfig::default().limits(),
    ));
    let app = apus_ingest::receivers::router(pipeline.clone(), render, tokens.clone())
        .merge(apus_query::api::search_router(engine, tokens));
    serve(&rt, "ingest", &listen, app)?;
    Ok((rt, pipeline))
}

/// The query engine's store for an ingest `store` setting: the pipeline's embedded store,
/// or the ClickHouse server it writes to (through the same client type the sink uses).
fn query_store(
    store: &StoreUrl,
    pipeline: Option<&Arc<Pipeline>>,
    cfg: &QueryConfig,
) -> Result<Arc<dyn SqlBackend>> {
    if let StoreUrl::ClickHouse(u) = store {
        let client = apus_store::clickhouse::ChClient::new(u.clone());
        let mut backend = ClickHouseBackend::new(client, cfg.cluster, cfg.read_limits());
        if let Some(r) = &cfg.clickhouse_reader {
            let url = apus_store::clickhouse::ChUrl::parse(r)?;
            backend = backend.with_reader(apus_store::clickhouse::ChClient::new(url));
        }
        return Ok(Arc::new(backend));
    }
    match pipeline {
        Some(p) => Ok(Arc::new(LocalBackend::new(
            p.store().clone(),
            cfg.limits().memory_bytes,
        ))),
        None => anyhow::bail!(
            "a query node alone needs --store clickhouse://HOST:PORT/DB; the embedded store \
             is queried inside `apus run`"
        ),
    }
}

/// Start the query API and dashboards on `rt`, and the alarm evaluator if configured.
pub fn start_query(
    rt: &tokio::runtime::Runtime,
    cfg: &QueryConfig,
    (store, searcher): (Arc<dyn SqlBackend>, Searcher),
    render: Option<MetricsRender>,
    tokens: Arc<apus_auth::Tokens>,
    alarms: Option<AlarmWiring>,
) -> Result<(Arc<Engine>, Option<Arc<apus_query::alarm::Alarms>>)> {
    let engine = Arc::new(Engine::with_backend(store, searcher, cfg.limits()));
    let alarms = match alarms {
        Some(w) => Some(
            rt.block_on(apus_query::alarm::Alarms::start(
                engine.clone(),
                w.settings,
                w.state_dir,
                w.writer,
                w.landed,
            ))
            .map_err(|e| anyhow::anyhow!("alarms: {e}"))?,
        ),
        None => None,
    };
    serve(
        rt,
        "query API and dashboards",
        &cfg.listen,
        apus_query::api::router(
            engine.clone(),
            render,
            tokens,
            alarms.clone(),
            &cfg.console(),
        ),
    )?;
    Ok((engine, alarms))
}

/// Rollout analysis for the gateway's runner: the query tier's verdict on gray against
/// stable, run on the query runtime.
fn analyzer(
    engine: Arc<Engine>,
    alarms: Option<Arc<apus_query::alarm::Alarms>>,
    rt: tokio::runtime::Handle,
) -> apus_gateway::rollout::Analyzer {
    Arc::new(move |req: apus_gateway::rollout::AnalysisRequest| {
        let (engine, alarms, rt) = (engine.clone(), alarms.clone(), rt.clone());
        Box::pin(async move {
            let task = rt.spawn(async move {
                let firing = alarms.map(|a| a.firing()).unwrap_or_default();
                let lanes = apus_query::analysis::Lanes {
                    project: &req.project,
                    env: &req.env,
                    route: &req.route,
                    tag: &req.tag,
                    stable_tag: &req.stable_tag,
                    pool: &req.pool,
                    window_us: req.window_us,
                };
                apus_query::analysis::verdict(&engine, &lanes, &req.spec, &firing)
                    .await
                    .map_err(|e| e.to_string())
            });
            task.await.map_err(|e| e.to_string())?
        })
    })
}

/// `apus query`: a query node over ClickHouse.
pub fn query(
    config: Option<&Path>,
    store: &str,
    listen: Option<String>,
    search_nodes: Vec<String>,
    cluster: bool,
    (auth, data_dir): (&AuthArgs, &Path),
    prom: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<()> {
    let mut cfg: QueryConfig = match config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p)?)
            .with_context(|| format!("{}", p.display()))?,
        None => QueryConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if !search_nodes.is_empty() {
        cfg.search_nodes = search_nodes;
    }
    cfg.cluster |= cluster;
    let store_url = StoreUrl::parse(store)?;
    let store = query_store(&store_url, None, &cfg)?;
    let alarm_settings = cfg
        .alarms
        .settings(config.and_then(Path::parent), &cfg.listen)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let searcher = cfg.searcher(Searcher::Off);
    let tokens = tokens(
        auth,
        Vec::new(),
        data_dir,
        &[&cfg.listen],
        Some(&cfg.listen),
    )?;
    let rt = runtime("apus-query")?;
    let alarms = match (alarm_settings, &store_url) {
        (None, _) => None,
        (Some(settings), StoreUrl::ClickHouse(u)) => Some(AlarmWiring {
            settings,
            writer: crate::alarms::clickhouse_writer(apus_store::clickhouse::ChClient::new(
                u.clone(),
            )),
            // No rows land in this process: rules are evaluated every `interval`.
            landed: never_landed(),
            state_dir: data_dir.join("alarms"),
        }),
        (Some(_), _) => anyhow::bail!("alarms on a query node need --store clickhouse://…"),
    };
    let _ = start_query(
        &rt,
        &cfg,
        (store, searcher),
        Some(render(prom)),
        tokens,
        alarms,
    )?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    Ok(())
}

/// Hands the gateway's access-log batches to the in-process pipeline, waiting out
/// overload (429) instead of dropping.
struct InProcessSink {
    pipeline: Arc<Pipeline>,
    rt: tokio::runtime::Handle,
}

impl AccessLogSink for InProcessSink {
    fn write_batch(&mut self, batch: &[AccessRecord]) -> std::io::Result<()> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..40 {
            match self.rt.block_on(self.pipeline.write(batch)) {
                Ok(_) => return Ok(()),
                Err(IngestError::Overloaded(..)) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        Err(std::io::Error::other("ingest overloaded for too long"))
    }
}

/// `apus ingest`.
pub fn ingest(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    store: Option<String>,
    auth: &AuthArgs,
    prom: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<()> {
    let mut cfg: IngestConfig = match config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p)?)
            .with_context(|| format!("{}", p.display()))?,
        None => IngestConfig::default(),
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(s) = store {
        cfg.store = StoreUrl::parse(&s)?;
    }
    let tokens = tokens(auth, Vec::new(), &cfg.data_dir, &[&cfg.listen], None)?;
    let (rt, _p) = start_ingest(cfg, Some(render(prom)), tokens)?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    Ok(())
}

/// `apus run`: gateway + ingest in one process.
pub fn run(
    config: &Path,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    control: Option<String>,
    auth: &AuthArgs,
    prom: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("{}", config.display()))?;
    let mut cfg: RunConfig =
        toml::from_str(&text).with_context(|| format!("{}", config.display()))?;
    if let Some(d) = data_dir {
        cfg.ingest.data_dir = d;
    }
    if let Some(s) = store {
        cfg.ingest.store = StoreUrl::parse(&s)?;
    }
    if let Some(c) = control {
        cfg.gateway.control = c;
    }
    let rules = cfg.gateway.validate(config.parent())?;
    let alarm_settings = cfg
        .query
        .alarms
        .settings(config.parent(), &cfg.query.listen)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let data_dir = cfg.ingest.data_dir.clone();
    let store_url = cfg.ingest.store.clone();
    // The console reaches this process's admin API, and keeps saved dashboards in the
    // data dir, unless the config says otherwise.
    cfg.query
        .admin_url
        .get_or_insert_with(|| format!("http://{}", cfg.gateway.admin_listen));
    cfg.query
        .dashboards_dir
        .get_or_insert_with(|| data_dir.join("dashboards"));
    // One set of tokens for the admin API, the receivers and the query API.
    let tokens = tokens(
        auth,
        cfg.gateway.tokens.clone(),
        &data_dir,
        &[
            &cfg.gateway.admin_listen,
            &cfg.ingest.listen,
            &cfg.query.listen,
        ],
        Some(&cfg.query.listen),
    )?;
    let (rt, pipeline) = start_ingest(cfg.ingest, Some(render(prom.clone())), tokens.clone())?;
    let searcher = cfg
        .query
        .searcher(Searcher::Local(pipeline.search().clone()));
    let qstore = query_store(&store_url, Some(&pipeline), &cfg.query)?;
    let alarms = alarm_settings.map(|settings| AlarmWiring {
        settings,
        writer: crate::alarms::pipeline_writer(pipeline.clone()),
        landed: pipeline.landed(),
        state_dir: data_dir.join("alarms"),
    });
    if alarms.is_some() {
        // The gateway's upstream health, into the metrics table for `unhealthy_upstreams`.
        let mut scope = std::collections::HashMap::new();
        for r in &cfg.gateway.routes {
            let pools = std::iter::once(&r.stable_pool).chain(r.gray_rules.iter().map(|g| &g.pool));
            for p in pools {
                scope
                    .entry(p.clone())
                    .or_insert_with(|| (r.project.clone(), r.env.clone()));
            }
        }
        crate::alarms::feed_health(
            rt.handle(),
            pipeline.clone(),
            render(prom.clone()),
            scope,
            Duration::from_secs(2),
        );
    }
    let (engine, alarms) = start_query(
        &rt,
        &cfg.query,
        (qstore, searcher),
        Some(render(prom.clone())),
        tokens.clone(),
        alarms,
    )?;
    // `apus run` hands the access log to its own ingest tier, unless it is off.
    let access_log = if cfg.gateway.access_log == apus_gateway::config::AccessLogTarget::Off {
        AccessLog::off()
    } else {
        AccessLog::start(
            Box::new(InProcessSink {
                pipeline: pipeline.clone(),
                rt: rt.handle().clone(),
            }),
            cfg.gateway.access_log_capacity,
        )
    };
    let gw = apus_gateway::build(
        &cfg.gateway,
        rules,
        config.parent(),
        &data_dir,
        access_log,
        Some(render(prom)),
        (*tokens).clone(),
    )?;
    gw.start_rollouts(Some(analyzer(engine, alarms.clone(), rt.handle().clone())));
    let (p, h) = (pipeline.clone(), rt.handle().clone());
    gw.release.on_change(Box::new(move |rec| {
        if let Some(a) = &alarms {
            let _guard = h.enter();
            a.announce(rec);
        }
        let (p, rec) = (p.clone(), rec.clone());
        h.spawn(async move {
            if let Err(e) = p.write(&[rec]).await {
                tracing::error!(error = %e, "change event not stored");
            }
        });
    }));
    tracing::info!(listen = %cfg.gateway.listen, admin = %cfg.gateway.admin_listen, "apus run: gateway starting");
    let _keep = rt;
    // Startup's scratch (parsing the config, the first compile) was freed on this thread,
    // which now only waits for signals.
    apus_gateway::release_freed_memory();
    gw.server.run_forever()
}
