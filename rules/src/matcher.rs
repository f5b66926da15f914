//! Compilation of rule specs into a [`RuleSet`] and the per-request decision.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;

use crate::cidr::CidrSet;
use crate::hash::sticky_bucket;
use crate::model::RouteSpec;
use crate::tenant::{cookie_value, extract_tenant};
use crate::STABLE_TAG;

/// Read access to request headers by (case-insensitive) name.
pub trait Headers {
    /// First value of header `name`, if present and valid UTF-8.
    fn get(&self, name: &str) -> Option<&str>;
}

/// Headers as a list of `(name, value)` pairs (tools, benches, fuzzing).
pub struct HeaderList<'a>(pub &'a [(&'a str, &'a str)]);

impl Headers for HeaderList<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Loads the text of a tenants file; the rules crate itself does no IO.
pub trait TenantLoader {
    /// The file's contents, or a reason it could not be read.
    fn load(&self, path: &str) -> Result<String, String>;
    /// The same, shared: a loader that hands out the very text it gave before (the file
    /// did not change) lets a compile see that at a pointer comparison.
    fn load_shared(&self, path: &str) -> Result<Arc<str>, String> {
        self.load(path).map(Arc::from)
    }
}

impl<F: Fn(&str) -> Result<String, String>> TenantLoader for F {
    fn load(&self, path: &str) -> Result<String, String> {
        self(path)
    }
}

/// What the matcher needs to know about a request, all borrowed.
pub struct RequestView<'a> {
    /// `Host` (or `:authority`), port allowed.
    pub host: Option<&'a str>,
    /// Path without the query string.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// The client address (already resolved through trusted proxies).
    pub client_ip: IpAddr,
    /// Request headers.
    pub headers: &'a dyn Headers,
}

/// The routing decision for one request: indices into the [`RuleSet`] that made it, so it
/// is `Copy` and can be kept for retries alongside the `Arc<RuleSet>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the route.
    pub route: usize,
    /// Index of the gray rule that matched; `None` = stable.
    pub rule: Option<usize>,
}

#[derive(Debug)]
enum ValueTest {
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
struct NamedTest {
    name: String,
    test: ValueTest,
}

impl NamedTest {
    #[inline]
    fn matches(&self, v: Option<&str>) -> bool {
        match (v, &self.test) {
            (None, _) => false,
            (Some(v), ValueTest::Exact(e)) => v == e,
            (Some(v), ValueTest::Regex(r)) => r.is_match(v),
        }
    }
}

#[derive(Debug)]
struct CompiledRule {
    pool: String,
    /// Shared with the previous rule set when the rule's tenants (inline and file text) did
    /// not change, so an unchanged 100k-name set is not hashed again; likewise the CIDR set
    /// when its list did not.
    tenants: Option<Arc<TenantSet>>,
    cidrs: Option<Arc<CidrSet>>,
    header: Option<NamedTest>,
    cookie: Option<NamedTest>,
    percent: Option<f64>,
}

#[derive(Debug)]
struct CompiledRoute {
    spec: RouteSpec,
    rules: Vec<CompiledRule>,
}

/// A compiled, validated, immutable set of routes. Swap whole sets; never mutate one.
#[derive(Debug)]
pub struct RuleSet {
    routes: Vec<CompiledRoute>,
}

/// A fixed stack buffer for formatting an IP address without touching the heap.
struct StackBuf {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl RuleSet {
    /// The route specs, in match order.
    pub fn routes(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().map(|r| &r.spec)
    }

    /// The spec of the route a decision names.
    pub fn route(&self, d: Decision) -> &RouteSpec {
        &self.routes[d.route].spec
    }

    /// The pool a decision sends the request to.
    pub fn pool(&self, d: Decision) -> &str {
        let r = &self.routes[d.route];
        match d.rule {
            Some(i) => &r.rules[i].pool,
            None => &r.spec.stable_pool,
        }
    }

    /// The tag of a decision (`stable` when no rule matched).
    pub fn tag(&self, d: Decision) -> &str {
        match d.rule {
            Some(i) => &self.routes[d.route].spec.gray_rules[i].tag,
            None => STABLE_TAG,
        }
    }

    /// The name of the matched rule, if any.
    pub fn rule_name(&self, d: Decision) -> Option<&str> {
        d.rule
            .map(|i| self.routes[d.route].spec.gray_rules[i].name.as_str())
    }

    /// Route the request and return the decision plus the tenant ID found (borrowed from the
    /// request). `None` when no route covers the request. No heap allocation.
    pub fn decide<'a>(&self, req: &RequestView<'a>) -> Option<(Decision, Option<&'a str>)> {
        let host = req.host.map(strip_port);
        let (ri, route) = self.routes.iter().enumerate().find(|(_, r)| {
            r.spec
                .host
                .as_deref()
                .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                && req.path.starts_with(r.spec.path_prefix.as_str())
        })?;
        let tenant = extract_tenant(&route.spec.tenant_sources, req.path, req.query, req.headers);
        let rule = route.rules.iter().enumerate().find_map(|(i, r)| {
            rule_matches(&route.spec.gray_rules[i].name, r, req, tenant).then_some(i)
        });
        Some((Decision { route: ri, rule }, tenant))
    }
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        // [v6]:port
        return h.split(']').next().map(|s| &s[1..]).unwrap_or(h);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

#[inline]
fn rule_matches(name: &str, r: &CompiledRule, req: &RequestView<'_>, tenant: Option<&str>) -> bool {
    if let Some(set) = &r.tenants {
        if !tenant.is_some_and(|t| set.contains(t)) {
            return false;
        }
    }
    if let Some(c) = &r.cidrs {
        if !c.contains(req.client_ip) {
            return false;
        }
    }
    if let Some(h) = &r.header {
        if !h.matches(req.headers.get(&h.name)) {
            return false;
        }
    }
    if let Some(c) = &r.cookie {
        let v = req
            .headers
            .get("cookie")
            .and_then(|cv| cookie_value(cv, &c.name));
        if !c.matches(v) {
            return false;
        }
    }
    if let Some(p) = r.percent {
        let bucket = match tenant {
            Some(t) => sticky_bucket(name, t.as_bytes()),
            None => {
                let mut b = StackBuf {
                    buf: [0; 64],
                    len: 0,
                };
                // An IP address always fits in 64 bytes.
                let _ = write!(b, "{}", req.client_ip);
                sticky_bucket(name, &b.buf[..b.len])
            }
        };
        if f64::from(bucket) > p {
            return false;
        }
    }
    true
}

mod compile;
mod diff;
mod tenant_set;

use tenant_set::TenantSet;

#[cfg(test)]
mod tests;
