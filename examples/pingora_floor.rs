//! The Pingora floor: the thinnest `ProxyHttp` there is (one fixed upstream, no filters,
//! no routing, no tagging, no metrics), built with the same Pingora, allocator and profile
//! as `apus`. `benches/gateway_vs_nginx.sh` runs it beside nginx and `apus gateway` so the
//! gap between Apus and nginx splits into what Pingora itself costs and what Apus adds.
//!
//!   cargo build --release --example pingora_floor
//!   target/release/examples/pingora_floor 127.0.0.1:18082 127.0.0.1:18001 1
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::Opt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor(SocketAddr);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_floor LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("pingora_floor: UPSTREAM must be IP:PORT, got {upstream}");
        std::process::exit(2);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    // The same server settings as `apus gateway` with its default runtime.
    let conf = apus_gateway::server_conf(threads, false);
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Floor(upstream));
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
