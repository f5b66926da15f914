//! The rule model as written in TOML (and JSON through the admin API): routes, their
//! tenant sources and their ordered gray rules. These are the *specs*; [`crate::RuleSet`]
//! is what they compile to.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A file holding only routes (the `[[routes]]` part of a gateway config).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// The routes, matched most specific first (host before no host, longer prefix first).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// A route: which requests it covers, where they go by default, and its gray rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique route name; used in metrics, access logs and the admin API.
    pub name: String,
    /// Host the route serves (exact, case-insensitive, port ignored); none = any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix the route serves; default `/`.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Project the route belongs to (scopes release-manager tokens and telemetry).
    #[serde(default = "default_project")]
    pub project: String,
    /// Environment the route belongs to, e.g. `prod`.
    #[serde(default = "default_env")]
    pub env: String,
    /// Pool for requests no gray rule claims.
    pub stable_pool: String,
    /// Where to find the tenant ID, tried in order; the first present wins.
    #[serde(default)]
    pub tenant_sources: Vec<TenantSource>,
    /// Gray rules in priority order; the first that matches wins.
    #[serde(default)]
    pub gray_rules: Vec<GrayRuleSpec>,
}

fn default_prefix() -> String {
    "/".into()
}
fn default_project() -> String {
    "default".into()
}
fn default_env() -> String {
    "prod".into()
}

/// One place a tenant ID can come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TenantSource {
    /// A request header, e.g. `x-tenant-id`.
    Header(String),
    /// A query parameter, e.g. `orgId` in `/req?orgId=42`.
    Query(String),
    /// A cookie name.
    Cookie(String),
    /// A 0-based path segment index: `/t/acme/orders` has `acme` at index 1.
    PathSegment(usize),
}

/// A value test on a header or cookie: exact value or a regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Header or cookie name (headers are case-insensitive).
    pub name: String,
    /// Exact value to compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Regular expression the value must match (unanchored unless it anchors itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A gray rule: every condition present must hold (AND); absent conditions are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrayRuleSpec {
    /// Unique name within the route; also the salt of the sticky percentage.
    pub name: String,
    /// Pool that matching requests go to.
    pub pool: String,
    /// Tag put on matching requests (tag header and baggage); default `gray`.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Tenant IDs this rule claims. Shared: copies of the release state (one per
    /// version kept, one per edit) share the list instead of copying it.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub tenants: Arc<Vec<String>>,
    /// A file with more tenant IDs, one per line (`#` comments allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants_file: Option<String>,
    /// Client IP ranges (IPv4/IPv6 CIDR, or single addresses); shared like `tenants`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub cidrs: Arc<Vec<String>>,
    /// Header condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Matcher>,
    /// Cookie condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<Matcher>,
    /// Sticky percentage 0–100 of keys (tenant ID, else client IP) this rule claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

fn is_empty(v: &Arc<Vec<String>>) -> bool {
    v.is_empty()
}

fn default_tag() -> String {
    "gray".into()
}

impl RulesFile {
    /// Parse a TOML rules file (syntax only; [`crate::RuleSet::compile`] validates).
    pub fn from_toml(s: &str) -> Result<Self, crate::RuleError> {
        Ok(toml::from_str(s)?)
    }
}

impl GrayRuleSpec {
    /// Share the tenant and CIDR lists of the rule of the same name in `old` where they
    /// are equal, so that a change sent whole through the API (10k CIDRs resent to move
    /// one tenant) keeps one copy of each list across the versions kept, and recompiling
    /// sees at a pointer comparison that they did not change.
    pub fn share_lists(rules: &mut [GrayRuleSpec], old: &[GrayRuleSpec]) {
        for r in rules {
            let Some(o) = old.iter().find(|o| o.name == r.name) else {
                continue;
            };
            if !Arc::ptr_eq(&r.tenants, &o.tenants) && r.tenants == o.tenants {
                r.tenants = o.tenants.clone();
            }
            if !Arc::ptr_eq(&r.cidrs, &o.cidrs) && r.cidrs == o.cidrs {
                r.cidrs = o.cidrs.clone();
            }
        }
    }
}
