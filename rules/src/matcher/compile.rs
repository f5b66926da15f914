//! Compiling rule specs into a [`RuleSet`]: validation with the route, rule and field of
//! each error, and the tenant and CIDR sets (shared with the rule set a compile replaces
//! when their inputs did not change).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;

use super::{CompiledRoute, CompiledRule, NamedTest, RuleSet, TenantLoader, TenantSet, ValueTest};
use crate::cidr::CidrSet;
use crate::model::{GrayRuleSpec, Matcher, RouteSpec};
use crate::RuleError;

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
    // The file is loaded on every compile (it may have changed on disk; a caching loader
    // reads it only then); the set is rebuilt only when the file's text or the inline list
    // differs from the previous compile's.
    let file_text = match &r.tenants_file {
        Some(path) => Some(
            loader
                .load_shared(path)
                .map_err(|reason| RuleError::TenantFile {
                    route: rt.into(),
                    rule: rn.into(),
                    path: path.clone(),
                    reason,
                })?,
        ),
        None => None,
    };
    let has_tenants = !r.tenants.is_empty() || r.tenants_file.is_some();
    let same_tenants = prev.and_then(|(ps, pc)| {
        let t = pc.tenants.as_ref()?;
        let same_file = match (t.file(), &file_text) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (a, b) => a.is_none() && b.is_none(),
        };
        (ps.tenants == r.tenants && same_file).then(|| t.clone())
    });
    let tenants = match same_tenants {
        Some(t) => Some(t),
        None if has_tenants => Some(Arc::new(
            TenantSet::new(&r.tenants, file_text.as_ref())
                .map_err(|reason| RuleError::invalid(rt, Some(rn), "tenants", reason))?,
        )),
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
}
