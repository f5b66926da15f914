//! The `apus` binary: command-line parsing and wiring only. Each role lives in its crate.

mod alarms;
mod config_cmd;
mod demo;
mod logs_cmd;
mod rules_cmd;
mod run;
mod serve;
mod slowlog_cmd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "apus",
    version,
    about = "Gray-release gateway and observability pipeline"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// All in one: gateway + ingest (embedded store) in one process.
    Run {
        /// `apus run` config (TOML with `[gateway]` and `[ingest]` sections).
        #[arg(long)]
        config: PathBuf,
        /// Data directory (WAL, Parquet store, search index); overrides `[ingest] data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// `local` (embedded store, default) or `clickhouse://HOST:HTTP_PORT/DATABASE`;
        /// overrides `[ingest] store`.
        #[arg(long)]
        store: Option<String>,
        /// Where the release state lives: `local` (the embedded log under the data dir) or
        /// `etcd://HOST:PORT[,HOST:PORT]/PREFIX`; overrides `[gateway] control`.
        #[arg(long)]
        control: Option<String>,
        #[command(flatten)]
        auth: run::AuthArgs,
    },
    /// Run a query node alone: the query API and dashboards over a ClickHouse store, log
    /// search fanned out to the ingest nodes.
    Query {
        /// Query config (TOML, the `[query]` fields at top level).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `clickhouse://HOST:HTTP_PORT/DATABASE`.
        #[arg(long)]
        store: String,
        /// Listener, e.g. 127.0.0.1:3000; overrides the config.
        #[arg(long)]
        listen: Option<String>,
        /// An ingest node to search (`http://host:9200`); repeat for each node.
        #[arg(long = "search-node")]
        search_nodes: Vec<String>,
        /// Read the `{table}_all` Distributed tables of a ClickHouse cluster.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        auth: run::AuthArgs,
    },
    /// Tail files (application logs, slow logs) and ship them to an ingest node.
    Collect {
        /// Collector config (TOML): `ingest_url`, `state_file`, `[[files]]`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the ingest tier alone (HTTP receivers, WAL, embedded store, search index).
    Ingest {
        /// Ingest config (TOML, the `[ingest]` fields at top level).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory; overrides the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listener, e.g. 127.0.0.1:9200; overrides the config.
        #[arg(long)]
        listen: Option<String>,
        /// `local` (embedded store, default) or `clickhouse://HOST:HTTP_PORT/DATABASE`.
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        auth: run::AuthArgs,
    },
    /// Run the gateway alone (proxy + admin API).
    Gateway {
        /// Gateway config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Data directory: the embedded control log (`--control local`) or the last
        /// snapshot of the etcd state.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// `local` or `etcd://HOST:PORT[,HOST:PORT]/PREFIX`; overrides the config's `control`.
        #[arg(long)]
        control: Option<String>,
        #[command(flatten)]
        auth: run::AuthArgs,
    },
    /// Start demo upstreams (stable and gray), a gateway in front of them and demo traffic.
    Demo {
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
        /// Data directory of the embedded store.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[command(flatten)]
        auth: run::AuthArgs,
    },
    /// A tiny echo upstream (for demos and tests): answers JSON naming itself and echoing
    /// the lane headers; `GET /health` answers `ok`.
    Upstream {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Name it reports.
        #[arg(long)]
        name: String,
        /// Answer 500 to this tenant (`orgId=` or `x-tenant-id`; `*` = everyone): a bad
        /// build, for rollout tests.
        #[arg(long)]
        fail_tenant: Option<String>,
        /// Answer every request (but `/health`) this many ms late: a slower build.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Config-center clients.
    Config {
        #[command(subcommand)]
        cmd: config_cmd::ConfigCmd,
    },
    /// Rule files.
    Rules {
        #[command(subcommand)]
        cmd: rules_cmd::RulesCmd,
    },
    /// Log files offline.
    Logs {
        #[command(subcommand)]
        cmd: logs_cmd::LogsCmd,
    },
    /// Slow query logs offline.
    Slowlog {
        #[command(subcommand)]
        cmd: slowlog_cmd::SlowlogCmd,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("APUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Install the Prometheus recorder. Latency metrics (`*_seconds`) are histograms with
/// fixed buckets; an upkeep thread drains recorded samples every few seconds so memory
/// stays bounded whether or not anyone scrapes `/metrics`.
fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .context("histogram buckets")?
        .install_recorder()
        .context("install metrics recorder")?;
    let h = handle.clone();
    std::thread::Builder::new()
        .name("apus-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            h.run_upkeep();
        })?;
    Ok(handle)
}

fn run_gateway(
    config: &Path,
    data_dir: &Path,
    control: Option<String>,
    auth: &run::AuthArgs,
) -> Result<()> {
    let (mut cfg, rules) = apus_gateway::GatewayConfig::load(config)?;
    if let Some(c) = control {
        cfg.control = c;
    }
    let tokens = run::tokens(
        auth,
        cfg.tokens.clone(),
        data_dir,
        &[&cfg.admin_listen],
        None,
    )?;
    let access_log = apus_gateway::AccessLog::from_config(
        &cfg.access_log,
        cfg.access_log_capacity,
        cfg.ingest_token(),
    )?;
    let gw = apus_gateway::build(
        &cfg,
        rules,
        config.parent(),
        data_dir,
        access_log,
        Some(run::render(install_metrics()?)),
        (*tokens).clone(),
    )?;
    // A gateway alone has no store to analyze: analysis steps pause and say so.
    gw.start_rollouts(None);
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, "gateway starting");
    // Startup's scratch (parsing the config, the first compile) was freed on this thread,
    // which now only waits for signals.
    apus_gateway::release_freed_memory();
    gw.server.run_forever()
}

fn run_collect(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("{}", config.display()))?;
    let cfg: apus_ingest::collect::CollectConfig =
        toml::from_str(&text).with_context(|| format!("{}", config.display()))?;
    Ok(apus_ingest::collect::run(cfg, None)?)
}

/// Turn transparent huge pages off for this process, as Redis does (`disable-thp`):
/// mimalloc asks for them on its arenas (`MADV_HUGEPAGE`), and a gateway node's sparse heap
/// then holds whole 2 MiB pages: 68 MB resident instead of 41 under the flips bench.
/// `APUS_ALLOW_THP=1` keeps them (a query node scanning large batches may prefer them).
#[allow(unsafe_code)]
fn disable_transparent_huge_pages() {
    if std::env::var_os("APUS_ALLOW_THP").is_some_and(|v| v == "1") {
        return;
    }
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only and changes a
    // flag of this process; it touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        // Old kernels lack it: huge pages stay, nothing else changes.
        eprintln!(
            "apus: could not turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Return the pages this thread's mimalloc heap holds free to the OS (`mi_collect(true)`):
/// what the gateway calls after a rule change and before it starts serving, since the
/// threads that compile and free rule sets then sit idle (see
/// `apus_gateway::release_freed_memory`).
#[allow(unsafe_code)]
fn mimalloc_collect() {
    // SAFETY: mi_collect takes a flag and works on mimalloc's own state (this thread's heap
    // and the process's arenas); it may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> Result<()> {
    disable_transparent_huge_pages();
    apus_gateway::on_release_freed_memory(mimalloc_collect);
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            config,
            data_dir,
            store,
            control,
            auth,
        } => {
            init_tracing();
            run::run(&config, data_dir, store, control, &auth, install_metrics()?)
        }
        Cmd::Query {
            config,
            store,
            listen,
            search_nodes,
            cluster,
            auth,
        } => {
            init_tracing();
            run::query(
                config.as_deref(),
                &store,
                listen,
                search_nodes,
                cluster,
                (&auth, Path::new("data")),
                install_metrics()?,
            )
        }
        Cmd::Ingest {
            config,
            data_dir,
            listen,
            store,
            auth,
        } => {
            init_tracing();
            run::ingest(
                config.as_deref(),
                data_dir,
                listen,
                store,
                &auth,
                install_metrics()?,
            )
        }
        Cmd::Collect { config } => {
            init_tracing();
            run_collect(&config)
        }
        Cmd::Gateway {
            config,
            data_dir,
            control,
            auth,
        } => {
            init_tracing();
            run_gateway(&config, &data_dir, control, &auth)
        }
        Cmd::Demo {
            seconds,
            data_dir,
            auth,
        } => {
            init_tracing();
            demo::run(seconds, data_dir, &auth, install_metrics()?)
        }
        Cmd::Upstream {
            listen,
            name,
            fail_tenant,
            delay_ms,
        } => tokio::runtime::Runtime::new()?.block_on(demo::serve_echo(
            listen,
            name,
            fail_tenant,
            delay_ms,
        )),
        Cmd::Logs { cmd } => logs_cmd::run(cmd),
        Cmd::Slowlog { cmd } => slowlog_cmd::run(cmd),
        Cmd::Rules { cmd } => rules_cmd::run(cmd),
        Cmd::Config { cmd } => config_cmd::run(cmd),
    }
}
