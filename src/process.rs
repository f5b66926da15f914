//! What every long-running `apus` process sets up the same way (tracing, metrics, the
//! allocator's behaviour, tokens) and the gateway role, shared by the `apus` binary and the
//! slim `apus-gateway` (src/bin/apus-gateway.rs), which carries nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apus_gateway::admin::MetricsRender;

/// Process-wide settings made before anything else runs: transparent huge pages off, and
/// the gateway told how to hand freed memory back.
pub fn start() {
    disable_transparent_huge_pages();
    apus_gateway::on_release_freed_memory(mimalloc_collect);
}

pub fn init_tracing() {
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
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
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

/// `apus gateway` / `apus-gateway`: the gateway role alone.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Gateway config file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Data directory: the embedded control log (`--control local`) or the last
    /// snapshot of the etcd state.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// `local` or `etcd://HOST:PORT[,HOST:PORT]/PREFIX`; overrides the config's `control`.
    #[arg(long)]
    pub control: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

pub fn run_gateway(args: &GatewayArgs) -> Result<()> {
    purge_freed_memory_at_once();
    let (config, data_dir) = (args.config.as_path(), args.data_dir.as_path());
    let (mut cfg, rules) = apus_gateway::GatewayConfig::load(config)?;
    if let Some(c) = &args.control {
        cfg.control = c.clone();
    }
    let tokens = tokens(
        &args.auth,
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
        Some(render(install_metrics()?)),
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

/// mimalloc's option `purge_delay` (index 15 of `mi_option_e` in mimalloc.h, v2 and v3):
/// how many milliseconds a freed page waits before it is handed back to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A gateway hands freed pages back at once instead of after mimalloc's delay (1 s in v3,
/// and a purge that is due runs only when a thread next calls the allocator, so pages freed
/// by a burst stayed resident): 31 against 22 MB under a saturating load, and 24.7 (10 ms)
/// or 25.3 MB (100 ms) against 23.1 MB under the flips bench. The purge runs on the freeing
/// thread, proxy threads included. Its cost at saturation is within this host's noise: one
/// A/B of interleaved rounds had it ahead in 4 of 5, another behind in 4 of 4 (~4.6 % more
/// CPU per request); at ~3k rps CPU per request did not change. An operator who prefers the
/// last few percent to ~8 MB sets `MIMALLOC_PURGE_DELAY=1000` (mimalloc's default; its old
/// name `MIMALLOC_RESET_DELAY` and any case count too), which this then leaves alone.
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    let set_by_operator = std::env::vars_os().any(|(k, _)| {
        k.to_str().is_some_and(|k| {
            k.eq_ignore_ascii_case("MIMALLOC_PURGE_DELAY")
                || k.eq_ignore_ascii_case("MIMALLOC_RESET_DELAY")
        })
    });
    if set_by_operator {
        return;
    }
    // SAFETY: mi_option_set takes an option index and a value and only stores the value in
    // mimalloc's option table, which it reads on later purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
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

/// Authentication flags shared by every long-running command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// A tokens file (TOML, `[[tokens]]` with name, token, role, scopes), added to the
    /// config's tokens. With no token anywhere, the data dir's admin token is used (created
    /// and printed on first start).
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Turn authentication off. Allowed only when every listener is on loopback; warned
    /// about every minute.
    #[arg(long)]
    pub no_auth: bool,
}

/// Decide the tokens of this process and tell the operator how to get in.
pub fn tokens(
    args: &AuthArgs,
    mut configured: Vec<apus_auth::TokenConfig>,
    data_dir: &Path,
    listeners: &[&str],
    console: Option<&str>,
) -> Result<Arc<apus_auth::Tokens>> {
    if let Some(f) = &args.tokens {
        configured.extend(apus_auth::load_file(f)?);
    }
    let (tokens, origin) = apus_auth::resolve(configured, data_dir, args.no_auth, listeners)?;
    let console = console
        .map(|c| format!("\n  console: http://{c}/ (log in with the token)"))
        .unwrap_or_default();
    match origin {
        apus_auth::Origin::Configured => {
            tracing::info!(tokens = tokens.len(), "authentication: configured tokens")
        }
        apus_auth::Origin::Created { token, path } => println!(
            "apus: no token was configured, so an admin token was created and kept in {} \
             (mode 0600). It is shown once:\n  {token}{console}",
            path.display()
        ),
        apus_auth::Origin::Existing { path } => println!(
            "apus: using the admin token kept in {}{console}",
            path.display()
        ),
        apus_auth::Origin::Open => {
            std::thread::Builder::new()
                .name("apus-no-auth-warning".into())
                .spawn(|| loop {
                    tracing::warn!(
                        "authentication is OFF (--no-auth): anyone who reaches the listeners \
                         may read and change everything"
                    );
                    std::thread::sleep(Duration::from_secs(60));
                })?;
        }
    }
    Ok(Arc::new(tokens))
}

/// The Prometheus handle as the admin API's `/metrics` renderer.
pub fn render(h: metrics_exporter_prometheus::PrometheusHandle) -> MetricsRender {
    Arc::new(move || h.render())
}
