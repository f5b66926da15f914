//! The Pingora floor: the thinnest `ProxyHttp` there is (one fixed upstream, no filters,
//! no routing, no tagging, no metrics), built with the same Pingora, allocator and profile
//! as `apus`. `benches/gateway_peers.sh` runs it beside nginx, the other peers and
//! `apus gateway`, so the gap between Apus and a peer splits into what Pingora itself costs
//! and what Apus adds.
//!
//!   cargo build --release --example pingora_floor
//!   target/release/examples/pingora_floor 127.0.0.1:18082 127.0.0.1:18001 1 [tuned|plain|tagged]
//!
//! `tuned` (the default) turns the Pingora knobs `apus gateway` turns: one service per
//! thread on `SO_REUSEPORT`, no downstream modules. `plain` is Pingora's defaults.
//! `tagged` is `tuned` plus the five headers Apus sets (a fresh `x-request-id`, the tag and
//! `baggage` upstream; the tag and `x-request-id` on the response), inserted through
//! Pingora's header API as Apus inserts them: what any Pingora gateway that tags its
//! requests pays before it routes anything.
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::Opt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Floor {
    upstream: SocketAddr,
    /// Pingora's defaults (`plain`) or the knobs `apus gateway` turns (`tuned`).
    tuned: bool,
    /// Set the five tagging headers (`tagged`).
    tagged: bool,
}

const TAG: http::HeaderValue = http::HeaderValue::from_static("stable");
const BAGGAGE: http::HeaderValue = http::HeaderValue::from_static("env=stable");

#[async_trait]
impl ProxyHttp for Floor {
    /// The request's ID (when tagged).
    type CTX = Option<http::HeaderValue>;
    fn new_ctx(&self) -> Self::CTX {
        None
    }
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        if !self.tuned {
            // Pingora's default: a disabled response-compression module.
            modules.add_module(
                pingora::modules::http::compression::ResponseCompressionBuilder::enable(0),
            );
        }
    }
    async fn upstream_peer(&self, _: &mut Session, _: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        req: &mut RequestHeader,
        id: &mut Self::CTX,
    ) -> Result<()> {
        if self.tagged {
            let mut buf = [0u8; 32];
            let v = http::HeaderValue::from_str(apus_gateway::tagging::write_request_id(&mut buf))
                .unwrap_or(http::HeaderValue::from_static(""));
            req.insert_header("x-request-id", v.clone())?;
            req.insert_header("x-env-tag", TAG)?;
            req.insert_header("baggage", BAGGAGE)?;
            *id = Some(v);
        }
        Ok(())
    }
    async fn response_filter(
        &self,
        _: &mut Session,
        resp: &mut ResponseHeader,
        id: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(v) = id.take() {
            resp.insert_header("x-request-id", v)?;
            resp.insert_header("x-env-tag", TAG)?;
        }
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_floor LISTEN UPSTREAM [THREADS] [tuned|plain]");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("pingora_floor: UPSTREAM must be IP:PORT, got {upstream}");
        std::process::exit(2);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let mode = args.next();
    let tuned = mode.as_deref() != Some("plain");
    let tagged = mode.as_deref() == Some("tagged");
    let floor = Floor {
        upstream,
        tuned,
        tagged,
    };
    // The same server settings as `apus gateway` with its default runtime.
    let conf = apus_gateway::server_conf(threads, false);
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    if tuned {
        // Listening as `apus gateway` does: one service per thread on SO_REUSEPORT.
        if let Err(e) =
            apus_gateway::add_proxy_services(&mut server, floor, &listen, threads, false)
        {
            eprintln!("pingora_floor: {e}");
            std::process::exit(2);
        }
    } else {
        // Pingora's default: one service, `threads` threads.
        let mut svc = http_proxy_service(&server.configuration, floor);
        svc.add_tcp(&listen);
        server.add_service(svc);
    }
    server.run_forever();
}
