//! `apus-gateway`: the gateway role alone (proxy + admin API), for the nodes of a fleet.
//! The same flags and behaviour as `apus gateway`, in a binary that carries the gateway and
//! nothing else: no store, ingest, query or console code (DataFusion, Tantivy, Parquet), so
//! a node ships and maps a tenth of the all-in-one binary.

#[allow(dead_code)] // `apus` uses the rest of the shared setup
#[path = "../process.rs"]
mod process;

use clap::Parser;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "apus-gateway",
    version,
    about = "The Apus gateway alone (proxy + admin API): the same as `apus gateway`"
)]
struct Cli {
    #[command(flatten)]
    args: process::GatewayArgs,
}

fn main() -> anyhow::Result<()> {
    process::start();
    let cli = Cli::parse();
    process::init_tracing();
    process::run_gateway(&cli.args)
}
