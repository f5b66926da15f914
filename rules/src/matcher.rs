//! Compilation of rule specs into a [`RuleSet`] and the per-request decision.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;

use crate::cidr::CidrSet;
use crate::hash::sticky_bucket;
use crate::model::{GrayRuleSpec, Matcher, RouteSpec};
use crate::tenant::{cookie_value, extract_tenant};
use crate::{RuleError, STABLE_TAG};

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

/// A rule's tenants: the set the proxy looks up, and the text it was built from (the inline
/// list is in the spec), so a later compile whose inputs are unchanged shares the set instead
/// of hashing 100k names again.
#[derive(Debug)]
struct Tenants {
    /// foldhash, seeded per process: the set is built from a release manager's list and only
    /// looked up with request values, so it needs speed, not SipHash's flood resistance.
    set: HashSet<Box<str>, foldhash::fast::RandomState>,
    /// The `tenants_file` text the set was built from.
    file_text: Option<String>,
}

#[derive(Debug)]
struct CompiledRule {
    pool: String,
    /// Shared with the previous rule set when the rule's tenants (inline and file) did not
    /// change; likewise the CIDR set when its list did not.
    tenants: Option<Arc<Tenants>>,
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

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn compile_test(
    route: &str,
    rule: &str,
    field: &'static str,
    m: &Matcher,
    lowercase_name: bool,
) -> Result<NamedTest, RuleError> {
    if m.name.trim().is_empty() {
        return Err(RuleError::invalid(
            route,
            Some(rule),
            field,
            "name is empty",
        ));
    }
    let test = match (&m.value, &m.regex) {
        (Some(v), None) => ValueTest::Exact(v.clone()),
        (None, Some(r)) => ValueTest::Regex(Regex::new(r).map_err(|e| {
            RuleError::invalid(route, Some(rule), field, format!("bad regex `{r}`: {e}"))
        })?),
        _ => {
            return Err(RuleError::invalid(
                route,
                Some(rule),
                field,
                "give exactly one of `value` or `regex`",
            ))
        }
    };
    let name = if lowercase_name {
        m.name.to_ascii_lowercase()
    } else {
        m.name.clone()
    };
    Ok(NamedTest { name, test })
}

fn parse_cidr(route: &str, rule: &str, s: &str) -> Result<IpNet, RuleError> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| RuleError::invalid(route, Some(rule), "cidrs", format!("bad CIDR `{s}`")))
}

/// The same rule (same route and rule name) in the rule set a compile replaces: its spec and
/// compiled form, whose tenant and CIDR sets are reused when their inputs are equal.
type Previous<'a> = Option<(&'a GrayRuleSpec, &'a CompiledRule)>;

fn compile_rule(
    route: &RouteSpec,
    r: &GrayRuleSpec,
    pools: &HashSet<&str>,
    loader: &dyn TenantLoader,
    prev: Previous<'_>,
) -> Result<CompiledRule, RuleError> {
    let rn = r.name.as_str();
    let rt = route.name.as_str();
    if !valid_token(rn) {
        return Err(RuleError::invalid(
            rt,
            Some(rn),
            "name",
            "must be 1-64 chars of [A-Za-z0-9._-]",
        ));
    }
    if !pools.contains(r.pool.as_str()) {
        return Err(RuleError::invalid(
            rt,
            Some(rn),
            "pool",
            format!("unknown pool `{}`", r.pool),
        ));
    }
    if !valid_token(&r.tag) {
        return Err(RuleError::invalid(
            rt,
            Some(rn),
            "tag",
            format!("tag `{}` must be 1-64 chars of [A-Za-z0-9._-]", r.tag),
        ));
    }
    if let Some(p) = r.percent {
        if !(0.0..=100.0).contains(&p) {
            return Err(RuleError::invalid(
                rt,
                Some(rn),
                "percent",
                format!("{p} is outside 0-100"),
            ));
        }
    }
    // The file is read on every compile (it may have changed on disk); the set is rebuilt
    // only when the file's text or the inline list differs from the previous compile's.
    let file_text = match &r.tenants_file {
        Some(path) => Some(loader.load(path).map_err(|reason| RuleError::TenantFile {
            route: rt.into(),
            rule: rn.into(),
            path: path.clone(),
            reason,
        })?),
        None => None,
    };
    let has_tenants = !r.tenants.is_empty() || r.tenants_file.is_some();
    let same_tenants = prev.and_then(|(ps, pc)| {
        let t = pc.tenants.as_ref()?;
        (ps.tenants == r.tenants && t.file_text == file_text).then(|| t.clone())
    });
    let tenants = match same_tenants {
        Some(t) => Some(t),
        None if has_tenants => Some(Arc::new(tenant_set(&r.tenants, file_text))),
        None => None,
    };
    let same_cidrs = prev.and_then(|(ps, pc)| {
        let c = pc.cidrs.as_ref()?;
        (ps.cidrs == r.cidrs).then(|| c.clone())
    });
    let cidrs = match same_cidrs {
        Some(c) => Some(c),
        None => {
            let nets = r
                .cidrs
                .iter()
                .map(|c| parse_cidr(rt, rn, c))
                .collect::<Result<Vec<_>, _>>()?;
            (!nets.is_empty()).then(|| Arc::new(CidrSet::new(&nets)))
        }
    };
    Ok(CompiledRule {
        pool: r.pool.clone(),
        tenants,
        cidrs,
        header: r
            .header
            .as_ref()
            .map(|m| compile_test(rt, rn, "header", m, true))
            .transpose()?,
        cookie: r
            .cookie
            .as_ref()
            .map(|m| compile_test(rt, rn, "cookie", m, false))
            .transpose()?,
        percent: r.percent,
    })
}

/// The set of `inline` tenants and the names in `file_text` (one per line; blank lines and
/// `#` comments skipped).
fn tenant_set(inline: &[String], file_text: Option<String>) -> Tenants {
    let file_lines = file_text.as_deref().map(|t| {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    });
    let mut set = HashSet::with_capacity_and_hasher(
        inline.len() + file_text.as_deref().map_or(0, |t| t.lines().count()),
        foldhash::fast::RandomState::default(),
    );
    set.extend(inline.iter().map(|t| t.trim().into()));
    if let Some(lines) = file_lines {
        set.extend(lines.map(Into::into));
    }
    Tenants { set, file_text }
}

impl RuleSet {
    /// Validate `routes` against the known `pools` and compile them. Nothing is partially
    /// applied: either every route compiles or the first error is returned.
    pub fn compile(
        routes: &[RouteSpec],
        pools: &[&str],
        loader: &dyn TenantLoader,
    ) -> Result<RuleSet, RuleError> {
        Self::compile_after(routes, pools, loader, None)
    }

    /// [`RuleSet::compile`], sharing with `prev` (the set this one replaces) the tenant and
    /// CIDR sets of every rule whose inputs are unchanged: a flip of one rule under a
    /// 100k-tenant rule does not rebuild the big set (tenants files are still read, and
    /// compared with the text the shared set was built from).
    pub fn compile_after(
        routes: &[RouteSpec],
        pools: &[&str],
        loader: &dyn TenantLoader,
        prev: Option<&RuleSet>,
    ) -> Result<RuleSet, RuleError> {
        let pool_set: HashSet<&str> = pools.iter().copied().collect();
        let mut seen_routes = HashSet::new();
        let mut compiled = Vec::with_capacity(routes.len());
        for route in routes {
            let rt = route.name.as_str();
            if !valid_token(rt) {
                return Err(RuleError::invalid(
                    rt,
                    None,
                    "name",
                    "must be 1-64 chars of [A-Za-z0-9._-]",
                ));
            }
            if !seen_routes.insert(rt) {
                return Err(RuleError::invalid(rt, None, "name", "duplicate route name"));
            }
            if !route.path_prefix.starts_with('/') {
                return Err(RuleError::invalid(
                    rt,
                    None,
                    "path_prefix",
                    "must start with `/`",
                ));
            }
            if !pool_set.contains(route.stable_pool.as_str()) {
                return Err(RuleError::invalid(
                    rt,
                    None,
                    "stable_pool",
                    format!("unknown pool `{}`", route.stable_pool),
                ));
            }
            let mut seen_rules = HashSet::new();
            let mut rules = Vec::with_capacity(route.gray_rules.len());
            for r in &route.gray_rules {
                if !seen_rules.insert(r.name.as_str()) {
                    return Err(RuleError::invalid(
                        rt,
                        Some(&r.name),
                        "name",
                        "duplicate rule name in route",
                    ));
                }
                let before = prev.and_then(|p| p.rule(rt, &r.name));
                rules.push(compile_rule(route, r, &pool_set, loader, before)?);
            }
            compiled.push(CompiledRoute {
                spec: route.clone(),
                rules,
            });
        }
        // Most specific first: a host beats no host, a longer prefix beats a shorter one.
        compiled.sort_by(|a, b| {
            b.spec
                .host
                .is_some()
                .cmp(&a.spec.host.is_some())
                .then(b.spec.path_prefix.len().cmp(&a.spec.path_prefix.len()))
        });
        Ok(RuleSet { routes: compiled })
    }

    /// Rule `rule` of route `route`: its spec and compiled form.
    fn rule(&self, route: &str, rule: &str) -> Previous<'_> {
        let r = self.routes.iter().find(|r| r.spec.name == route)?;
        let i = r.spec.gray_rules.iter().position(|g| g.name == rule)?;
        Some((&r.spec.gray_rules[i], r.rules.get(i)?))
    }

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

    /// A one-line summary per route of what differs between `self` (old) and `new`.
    pub fn diff(&self, new: &RuleSet) -> Vec<String> {
        let old: HashMap<&str, &RouteSpec> = self.routes().map(|r| (r.name.as_str(), r)).collect();
        let newm: HashMap<&str, &RouteSpec> = new.routes().map(|r| (r.name.as_str(), r)).collect();
        let mut out = Vec::new();
        for r in new.routes() {
            match old.get(r.name.as_str()) {
                None => out.push(format!("route {} added", r.name)),
                Some(o) if *o != r => out.push(diff_route(o, r)),
                _ => {}
            }
        }
        for r in self.routes() {
            if !newm.contains_key(r.name.as_str()) {
                out.push(format!("route {} removed", r.name));
            }
        }
        out
    }
}

/// Up to this many tenants of a rule are listed one by one in [`RuleSet::touched`].
const TOUCHED_TENANTS: usize = 50;

fn touched_rule(r: &GrayRuleSpec, out: &mut Vec<String>) {
    out.push(format!("pool:{}", r.pool));
    out.push(format!("tag:{}", r.tag));
    if r.tenants_file.is_some() || r.tenants.len() > TOUCHED_TENANTS {
        out.push("tenant:*".into());
    } else {
        out.extend(r.tenants.iter().map(|t| format!("tenant:{t}")));
    }
    if r.percent.is_some() && r.tenants.is_empty() && r.tenants_file.is_none() {
        out.push("tenant:*".into());
    }
}

impl RuleSet {
    /// The `dimension:value` items a change from `self` to `new` touches: each changed
    /// route, and for each added, removed or changed gray rule its pool, tag and tenants
    /// (old and new), plus the stable pool when it changed. Sorted, deduplicated.
    pub fn touched(&self, new: &RuleSet) -> Vec<String> {
        let old: HashMap<&str, &RouteSpec> = self.routes().map(|r| (r.name.as_str(), r)).collect();
        let newm: HashMap<&str, &RouteSpec> = new.routes().map(|r| (r.name.as_str(), r)).collect();
        let mut out = Vec::new();
        for name in old.keys().chain(newm.keys()) {
            let (o, n) = (old.get(name).copied(), newm.get(name).copied());
            if o == n {
                continue;
            }
            out.push(format!("route:{name}"));
            let stable = |r: Option<&RouteSpec>| r.map(|r| r.stable_pool.clone());
            if stable(o) != stable(n) {
                for p in [stable(o), stable(n)].into_iter().flatten() {
                    out.push(format!("pool:{p}"));
                }
            }
            fn rules(r: Option<&RouteSpec>) -> &[GrayRuleSpec] {
                r.map_or(&[][..], |r| &r.gray_rules[..])
            }
            for (a, b) in [(rules(o), rules(n)), (rules(n), rules(o))] {
                for r in a {
                    if b.iter().find(|x| x.name == r.name) != Some(r) {
                        touched_rule(r, &mut out);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn diff_route(old: &RouteSpec, new: &RouteSpec) -> String {
    let on: HashMap<&str, &GrayRuleSpec> = old
        .gray_rules
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();
    let nn: HashSet<&str> = new.gray_rules.iter().map(|r| r.name.as_str()).collect();
    let mut parts = Vec::new();
    for r in &new.gray_rules {
        match on.get(r.name.as_str()) {
            None => parts.push(format!("+{}", r.name)),
            Some(o) if *o != r => {
                let mut what = Vec::new();
                if o.pool != r.pool {
                    what.push(format!("pool {}→{}", o.pool, r.pool));
                }
                if o.percent != r.percent {
                    what.push(format!("percent {:?}→{:?}", o.percent, r.percent));
                }
                if o.tenants != r.tenants || o.tenants_file != r.tenants_file {
                    what.push("tenants".into());
                }
                if o.cidrs != r.cidrs {
                    what.push("cidrs".into());
                }
                if o.header != r.header || o.cookie != r.cookie {
                    what.push("header/cookie".into());
                }
                if o.tag != r.tag {
                    what.push(format!("tag {}→{}", o.tag, r.tag));
                }
                parts.push(format!("~{}({})", r.name, what.join(", ")));
            }
            _ => {}
        }
    }
    for r in &old.gray_rules {
        if !nn.contains(r.name.as_str()) {
            parts.push(format!("-{}", r.name));
        }
    }
    if old.stable_pool != new.stable_pool {
        parts.push(format!(
            "stable_pool {}→{}",
            old.stable_pool, new.stable_pool
        ));
    }
    if parts.is_empty() {
        parts.push("settings".into());
    }
    format!("route {}: {}", new.name, parts.join(" "))
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
        if !tenant.is_some_and(|t| set.set.contains(t)) {
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

#[cfg(test)]
mod tests;
