//! The `apus` binary: command-line parsing and wiring only. Each role lives in its crate.

mod alarms;
mod config_cmd;
mod demo;
mod logs_cmd;
mod process;
mod rules_cmd;
mod run;
mod serve;
mod slowlog_cmd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use process::{init_tracing, install_metrics};

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
    Gateway(process::GatewayArgs),
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

fn run_collect(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("{}", config.display()))?;
    let cfg: apus_ingest::collect::CollectConfig =
        toml::from_str(&text).with_context(|| format!("{}", config.display()))?;
    Ok(apus_ingest::collect::run(cfg, None)?)
}

fn main() -> Result<()> {
    process::start();
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
        Cmd::Gateway(args) => {
            init_tracing();
            process::run_gateway(&args)
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
