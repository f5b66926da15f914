//! The Pingora `ProxyHttp` implementation: route once per request, keep the decision in
//! the context (so retries see the same one), tag the upstream request, retry connect
//! failures on another server of the same pool, and emit one access record per request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apus_rules::{CidrSet, Decision, Headers, RequestView};
use apus_schema::{AccessRecord, Micros};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::access_log::AccessLog;
use crate::metrics as m;
use crate::pools::Pool;
use crate::state::Lane;
use crate::state::{Current, ReleaseState};
use crate::tagging::{client_ip, forwarded_for, merge_baggage, valid_request_id, write_request_id};
use apus_schema::time::now_us;

/// Per-request state. The decision and the rule set it came from live here so that a
/// retry, the response and the access log all see one decision.
pub struct Ctx {
    start: Instant,
    /// The rules in force when the request came, and their decision: its lane (pool,
    /// metrics, tag values) is `rules.lane(decision)`.
    rules: Option<Arc<Current>>,
    decision: Option<Decision>,
    /// The tenant it was routed by (kept for the access log only).
    tenant: String,
    client: IpAddr,
    /// The request's ID, kept from the client when valid, as the header value both
    /// directions carry.
    request_id: HeaderValue,
    upstream: Option<SocketAddr>,
    /// The live counts of `upstream` (in flight until the request ends).
    server: Option<Arc<crate::pools::ServerStats>>,
    failed: Vec<SocketAddr>,
    upstream_start: Option<Instant>,
    upstream_latency: Option<Duration>,
    status: u16,
}

struct HeaderView<'a>(&'a HeaderMap);

impl Headers for HeaderView<'_> {
    #[inline]
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

// Header names as static text: given to Pingora's `insert_header` as an `http::HeaderName`,
// a name is matched against Pingora's table of standard names and copied into a fresh
// title-cased buffer on every call.
const X_REQUEST_ID: &str = "x-request-id";
const BAGGAGE: &str = "baggage";
// The same names parsed once, for lookups: a lookup by text parses the name every time.
const X_REQUEST_ID_NAME: HeaderName = HeaderName::from_static(X_REQUEST_ID);
const BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// A header's value as text (`None` if absent or not text).
fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The gateway proxy (cloned per proxy thread; the state it routes by is shared).
#[derive(Clone)]
pub struct GatewayProxy {
    pub(crate) state: Arc<ReleaseState>,
    pub(crate) trusted: CidrSet,
    /// The tag header's name, lower case (static: handing it to Pingora copies nothing and
    /// touches no reference count another thread shares).
    pub(crate) tag_header: &'static str,
    pub(crate) baggage_key: String,
    pub(crate) max_tries: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) access_log: AccessLog,
}

impl GatewayProxy {
    fn tag(ctx: &Ctx) -> &str {
        match (&ctx.rules, ctx.decision) {
            (Some(c), Some(d)) => c.rules.tag(d),
            _ => "",
        }
    }
    fn lane(ctx: &Ctx) -> Option<&Lane> {
        lane_of(&ctx.rules, ctx.decision)
    }
}

/// The lane of a decision (borrowing only the rules, so the rest of the context stays free).
fn lane_of(rules: &Option<Arc<Current>>, d: Option<Decision>) -> Option<&Lane> {
    match (rules, d) {
        (Some(c), Some(d)) => Some(c.lane(d)),
        _ => None,
    }
}

/// A lane's pool.
fn pool_of(rules: &Option<Arc<Current>>, d: Option<Decision>) -> Option<&Arc<Pool>> {
    lane_of(rules, d).and_then(|l| l.pool.as_ref())
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    /// No downstream modules: Pingora's default adds a disabled response-compression
    /// module, a boxed filter and context per request that do nothing here.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            rules: None,
            decision: None,
            tenant: String::new(),
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            request_id: HeaderValue::from_static(""),
            upstream: None,
            server: None,
            failed: Vec::new(),
            upstream_start: None,
            upstream_latency: None,
            status: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let cur = self.state.load_full();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let decided = {
            let req = session.req_header();
            let hv = HeaderView(&req.headers);
            let xff = if self.trusted.is_empty() {
                None
            } else {
                forwarded_for(
                    req.headers
                        .get_all("x-forwarded-for")
                        .iter()
                        .map(|v| v.as_bytes()),
                )
            };
            ctx.client = client_ip(peer, xff.as_deref(), &self.trusted);
            ctx.request_id = match req.headers.get(&X_REQUEST_ID_NAME) {
                Some(id) if id.to_str().is_ok_and(valid_request_id) => id.clone(),
                _ => {
                    let mut buf = [0u8; 32];
                    HeaderValue::from_str(write_request_id(&mut buf))
                        .unwrap_or(HeaderValue::from_static(""))
                }
            };
            let view = RequestView {
                host: header_text(&req.headers, &HOST).or_else(|| req.uri.host()),
                path: req.uri.path(),
                query: req.uri.query(),
                client_ip: ctx.client,
                headers: &hv,
            };
            // The tenant is kept for the access log only: no copy when it is off.
            let keep_tenant = self.access_log.is_on();
            cur.rules
                .decide(&view)
                .map(|(d, t)| (d, t.filter(|_| keep_tenant).map(str::to_string)))
        };
        let Some((d, tenant)) = decided else {
            ctx.status = 404;
            let body = format!("apus: no route for {}\n", session.req_header().uri.path());
            session
                .respond_error_with_body(404, Bytes::from(body))
                .await?;
            return Ok(true);
        };
        if let Some(t) = tenant {
            ctx.tenant = t;
        }
        ctx.decision = Some(d);
        ctx.rules = Some(cur);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = pool_of(&ctx.rules, ctx.decision)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "route has no pool"))?;
        let Some((addr, st)) = pool.select(&ctx.failed) else {
            metrics::counter!(m::NO_HEALTHY, "pool" => pool.name.clone()).increment(1);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("no healthy server in pool {}", pool.name),
            ));
        };
        ctx.upstream = Some(addr);
        st.begin();
        if let Some(old) = ctx.server.replace(st) {
            old.end(None);
        }
        ctx.upstream_start = Some(Instant::now());
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = pool.read_timeout;
        peer.options.write_timeout = pool.write_timeout;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(lane) = Self::lane(ctx) else {
            return Ok(());
        };
        upstream_request.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        upstream_request.insert_header(self.tag_header, lane.tag.clone())?;
        // The lane's prebuilt value, unless the client brought baggage to merge with.
        match session.req_header().headers.get(&BAGGAGE_NAME) {
            None => upstream_request.insert_header(BAGGAGE, lane.baggage.clone())?,
            Some(v) => {
                let existing = v.to_str().ok();
                let baggage = merge_baggage(existing, &self.baggage_key, Self::tag(ctx));
                upstream_request.insert_header(BAGGAGE, baggage)?
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_latency = ctx.upstream_start.map(|s| s.elapsed());
        ctx.status = upstream_response.status.as_u16();
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        if let Some(lane) = Self::lane(ctx) {
            upstream_response.insert_header(self.tag_header, lane.tag.clone())?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(a) = ctx.upstream.take() {
            ctx.failed.push(a);
        }
        if let Some(st) = ctx.server.take() {
            st.end(None);
        }
        if ctx.failed.len() < self.max_tries {
            if let Some(p) = pool_of(&ctx.rules, ctx.decision) {
                metrics::counter!(m::RETRIES, "pool" => p.name.clone()).increment(1);
            }
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            // A hung upstream: it counts as an error of its lane in the access log.
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if matches!(e.esource(), ErrorSource::Upstream) =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        ctx.status = code;
        if code > 0 {
            let reason = e
                .context
                .as_ref()
                .map(|c| c.as_str().to_string())
                .unwrap_or_else(|| e.etype().as_str().to_string());
            let body = Bytes::from(format!("apus: {reason}\n"));
            if let Err(err) = session.respond_error_with_body(code, body).await {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // Passive health: a live request that timed out on its upstream counts against it.
        if let (Some(pool), Some(addr)) = (pool_of(&ctx.rules, ctx.decision), ctx.upstream) {
            let timed_out = e.is_some_and(|e| {
                matches!(
                    e.etype(),
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout
                ) && matches!(e.esource(), ErrorSource::Upstream)
            });
            pool.report(addr, timed_out);
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        if let Some(st) = ctx.server.take() {
            st.end(Some(status));
        }
        let latency = ctx.start.elapsed();
        let (route, pool, tag, project, env) = match (&ctx.rules, ctx.decision) {
            (Some(c), Some(d)) => {
                let r = c.rules.route(d);
                (
                    r.name.as_str(),
                    c.rules.pool(d),
                    c.rules.tag(d),
                    r.project.as_str(),
                    r.env.as_str(),
                )
            }
            _ => ("", "", "", "", ""),
        };
        if let (Some(c), Some(d)) = (&ctx.rules, ctx.decision) {
            c.lane(d).metrics.record(status, latency.as_secs_f64());
        }
        if !self.access_log.is_on() {
            return;
        }
        let req = session.req_header();
        let host = header_text(&req.headers, &HOST)
            .or_else(|| req.uri.host())
            .unwrap_or("");
        self.access_log.emit(AccessRecord {
            // When it began: now less its latency (one clock read, and only when logging).
            ts: Micros(now_us() - latency.as_micros() as i64),
            request_id: ctx.request_id.to_str().unwrap_or("").to_string(),
            project: project.to_string(),
            env: env.to_string(),
            route: route.to_string(),
            pool: pool.to_string(),
            upstream: ctx.upstream.map(|a| a.to_string()).unwrap_or_default(),
            tag: tag.to_string(),
            tenant: std::mem::take(&mut ctx.tenant),
            client_ip: ctx.client.to_string(),
            method: req.method.as_str().to_string(),
            host: host.to_string(),
            path: req.uri.path().to_string(),
            status,
            latency_us: latency.as_micros() as u64,
            upstream_latency_us: ctx.upstream_latency.map_or(0, |d| d.as_micros() as u64),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
        });
    }
}
