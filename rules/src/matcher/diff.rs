//! What a change of rules changes: the one-line summary per route ([`RuleSet::diff`]) and
//! the `dimension:value` items it touches ([`RuleSet::touched`]), for the change's audit
//! record and root cause.

use std::collections::{HashMap, HashSet};

use super::RuleSet;
use crate::model::{GrayRuleSpec, RouteSpec};

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
