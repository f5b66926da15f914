//! The Pingora floor of `examples/pingora_floor.rs` (`tuned`: one service per thread, each
//! on its own `SO_REUSEPORT` socket, no downstream modules), standalone so that
//! benches/gateway_pgo.sh can build it with and without profile-guided optimisation.
//!
//!   pgo_floor LISTEN UPSTREAM [THREADS]
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::listeners::TcpSocketOptions;
use pingora::prelude::*;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::{Opt, ServerConf};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Floor(SocketAddr);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}
    fn init_downstream_modules(&self, _: &mut pingora::modules::http::HttpModules) {}
    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(Ok(upstream))) = (
        a.first().and_then(|l| l.parse::<SocketAddr>().ok()),
        a.get(1).map(|u| u.parse::<SocketAddr>()),
    ) else {
        eprintln!("usage: pgo_floor LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let threads: usize = a.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    // As apus_gateway::server_conf and add_proxy_services set them up.
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    for i in 0..threads {
        let mut svc = http_proxy_service_with_name(&server.configuration, Floor(upstream), "floor");
        let mut opt = TcpSocketOptions::default();
        opt.so_reuseport = Some(true);
        // Leading zeros on the port: one socket per service (see apus_gateway::reuseport_key).
        let ip = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let addr = format!("{ip}:{}{}", "0".repeat(i), listen.port());
        svc.add_tcp_with_settings(&addr, opt);
        svc.threads = Some(1);
        server.add_service(svc);
    }
    server.run_forever();
}
