//! The gateway's configuration file (TOML): listeners, pools, routes with gray rules, and
//! admin tokens. Parsing is strict (`deny_unknown_fields`); [`GatewayConfig::validate`]
//! compiles the rules against the pools so a bad file is refused before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use apus_rules::{RouteSpec, RuleSet};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::GatewayError;

mod files;
pub use files::{file_loader, CachedFiles, MAX_TENANTS_FILE};

/// Top-level gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Public proxy listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin API listener (release control, `/metrics`); never the public one.
    #[serde(default = "default_admin")]
    pub admin_listen: String,
    /// Proxy worker threads (compare with nginx `worker_processes`).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Let proxy threads steal each other's tasks (one shared Tokio runtime) instead of
    /// one single-threaded runtime per thread (as nginx workers: cheaper per request).
    #[serde(default)]
    pub work_stealing: bool,
    /// Header carrying the lane tag to upstreams (and back to clients).
    #[serde(default = "default_tag_header")]
    pub tag_header: String,
    /// Key of the W3C baggage entry carrying the tag (`env=gray`).
    #[serde(default = "default_baggage_key")]
    pub baggage_key: String,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Where access-log records go: `stdout`, `off`, a file path, `http://host:port` of an
    /// ingest node, or (inside `apus run`) `in-process`.
    #[serde(default)]
    pub access_log: AccessLogTarget,
    /// Capacity of the access-log channel; records beyond it are dropped and counted.
    #[serde(default = "default_access_log_capacity")]
    pub access_log_capacity: usize,
    /// How many servers of a pool to try when connecting fails.
    #[serde(default = "default_max_tries")]
    pub max_tries: usize,
    /// Networks (CIDRs) servers added through the admin API must be in. Empty: anything but
    /// loopback, link-local and unspecified addresses when the proxy listens beyond
    /// loopback (so a release manager cannot put the query API or a metadata service
    /// behind the public listener).
    #[serde(default)]
    pub upstream_allow: Vec<String>,
    /// Upstream connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// An audit copy of every change made through this node (JSON lines); the history
    /// itself lives in the control store.
    #[serde(default)]
    pub history_file: Option<PathBuf>,
    /// Where the release state lives: `local` (an embedded log under the data dir, one
    /// node) or `etcd://HOST:PORT[,HOST:PORT]/PREFIX` (a fleet).
    #[serde(default = "default_control")]
    pub control: String,
    /// Protected environments: env name → approvals a change there needs from principals
    /// other than its author before it applies (e.g. `approvals = { prod = 1 }`).
    #[serde(default)]
    pub approvals: std::collections::BTreeMap<String, u32>,
    /// Base URL of an ingest node (`http://host:9200`) that receives change events when
    /// the gateway runs alone; inside `apus run` they go in-process.
    #[serde(default)]
    pub changes_url: Option<String>,
    /// Upstream pools.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Routes and their gray rules.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The token this node presents to the ingest node it ships access logs and change
    /// events to (a `gateway` token there). Default: `$APUS_INGEST_TOKEN`.
    #[serde(default)]
    pub ingest_token: Option<String>,
    /// Admin API tokens (see `apus_auth`): with none, the data directory's admin token.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Deploy hooks a serial pool release may name (set here, by the operator, so that an
    /// API caller can pick one but never run a command of its own).
    #[serde(default)]
    pub deploy_hooks: Vec<DeployHook>,
    /// Access keys of config clients (signed `/config/v1/…` requests).
    #[serde(default)]
    pub config_access_keys: Vec<crate::confcenter::AccessKey>,
    /// Keys whose values the config center masks for roles that may only read (a regex,
    /// case-insensitive).
    #[serde(default = "default_sensitive")]
    pub config_sensitive: String,
    /// Longest a config client's long poll is held, seconds (below common proxy timeouts).
    #[serde(default = "default_long_poll")]
    pub config_long_poll_secs: u64,
}

fn default_sensitive() -> String {
    "password|passwd|secret|token|credential|private[_.-]?key".into()
}

fn default_long_poll() -> u64 {
    30
}

/// A deploy hook: POST to `url`, or run `command` (argv, no shell). It is told the pool,
/// server and build (JSON body; `APUS_POOL`, `APUS_SERVER`, `APUS_BUILD` in the
/// environment) and must succeed (2xx, exit 0) within the release's `hook_timeout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployHook {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
}

/// An upstream pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Unique pool name (rules refer to it).
    pub name: String,
    /// Servers as `ip:port`.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Health check of the pool's servers.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// Longest wait for the next bytes of an upstream's response, ms (then 504): a hung
    /// build must not hold requests forever. 0 = no limit.
    #[serde(default = "default_io_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Longest wait to write the request to an upstream, ms (then 504). 0 = no limit.
    #[serde(default = "default_io_timeout_ms")]
    pub write_timeout_ms: u64,
}

fn default_io_timeout_ms() -> u64 {
    30_000
}

/// How a pool's servers are checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (service pools: GET `path` must answer 2xx) or `tcp` (caches, databases:
    /// the connection must open).
    #[serde(default = "default_hc_kind")]
    pub kind: HealthCheckKind,
    /// HTTP path to probe.
    #[serde(default = "default_hc_path")]
    pub path: String,
    /// Probe interval in milliseconds.
    #[serde(default = "default_hc_interval")]
    pub interval_ms: u64,
    /// Probe timeout in milliseconds.
    #[serde(default = "default_hc_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failures that take a server out of rotation.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: usize,
    /// Consecutive successes that bring it back.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: usize,
}

/// Health-check protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// HTTP GET, 2xx is healthy.
    Http,
    /// TCP connect.
    Tcp,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            kind: default_hc_kind(),
            path: default_hc_path(),
            interval_ms: default_hc_interval(),
            timeout_ms: default_hc_timeout(),
            unhealthy_threshold: default_threshold(),
            healthy_threshold: default_threshold(),
        }
    }
}

pub use apus_auth::{Role, TokenConfig};

fn default_control() -> String {
    "local".into()
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_threads() -> usize {
    2
}
fn default_tag_header() -> String {
    "x-env-tag".into()
}
fn default_baggage_key() -> String {
    "env".into()
}
fn default_access_log_capacity() -> usize {
    65_536
}
fn default_max_tries() -> usize {
    3
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_hc_kind() -> HealthCheckKind {
    HealthCheckKind::Http
}
fn default_hc_path() -> String {
    "/health".into()
}
fn default_hc_interval() -> u64 {
    1000
}
fn default_hc_timeout() -> u64 {
    500
}
fn default_threshold() -> usize {
    1
}

/// Where access-log records go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AccessLogTarget {
    /// Nowhere.
    Off,
    /// JSON lines on standard output.
    #[default]
    Stdout,
    /// JSON lines appended to a file.
    File(PathBuf),
    /// Shipped to an ingest node (`http://host:port`).
    Ingest(String),
    /// Handed to the ingest tier of the same process (`apus run` only).
    InProcess,
}

impl TryFrom<String> for AccessLogTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.trim() {
            "off" | "" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            "in-process" => AccessLogTarget::InProcess,
            u if u.starts_with("http://") || u.starts_with("https://") => {
                AccessLogTarget::Ingest(u.to_string())
            }
            u if u.contains("://") => {
                return Err(format!(
                    "access_log `{u}`: only http:// and https:// ingest URLs are supported"
                ))
            }
            path => AccessLogTarget::File(PathBuf::from(path)),
        })
    }
}

impl From<AccessLogTarget> for String {
    fn from(t: AccessLogTarget) -> String {
        match t {
            AccessLogTarget::Off => "off".into(),
            AccessLogTarget::Stdout => "stdout".into(),
            AccessLogTarget::File(p) => p.display().to_string(),
            AccessLogTarget::Ingest(u) => u,
            AccessLogTarget::InProcess => "in-process".into(),
        }
    }
}

/// Which servers the admin API may add to a pool.
#[derive(Debug, Clone, Default)]
pub struct UpstreamPolicy {
    allow: apus_rules::CidrSet,
    deny_local: bool,
}

impl UpstreamPolicy {
    /// The policy of `cfg` (its `upstream_allow` CIDRs, checked by `validate`).
    pub fn of(cfg: &GatewayConfig) -> UpstreamPolicy {
        let nets: Vec<IpNet> = cfg
            .upstream_allow
            .iter()
            .filter_map(|c| parse_net(c).ok())
            .collect();
        UpstreamPolicy {
            allow: apus_rules::CidrSet::new(&nets),
            deny_local: !apus_auth::is_loopback(&cfg.listen),
        }
    }

    /// Whether `addr` may be added at runtime; the reason when not.
    pub fn check(&self, addr: SocketAddr) -> Result<(), String> {
        let ip = addr.ip();
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("{ip} is not a server address"));
        }
        if !self.allow.is_empty() {
            return if self.allow.contains(ip) {
                Ok(())
            } else {
                Err(format!(
                    "{ip} is outside the gateway's upstream_allow networks"
                ))
            };
        }
        let link_local = match ip {
            std::net::IpAddr::V4(v4) => v4.is_link_local(),
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if self.deny_local && (ip.is_loopback() || link_local) {
            return Err(format!(
                "{ip} is loopback or link-local and the proxy listens beyond loopback; list \
                 it in upstream_allow to allow it"
            ));
        }
        Ok(())
    }
}

/// A CIDR, or a bare address as its /32 or /128 (`trusted_proxies`, `upstream_allow`).
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR or an address"))
}

impl GatewayConfig {
    /// The token to present to the ingest node: the config's, else `$APUS_INGEST_TOKEN`.
    pub fn ingest_token(&self) -> Option<String> {
        self.ingest_token
            .clone()
            .or_else(|| std::env::var("APUS_INGEST_TOKEN").ok())
            .filter(|t| !t.is_empty())
    }

    /// Parse TOML text (no validation beyond the shape).
    pub fn from_toml(s: &str) -> Result<Self, GatewayError> {
        toml::from_str(s).map_err(|e| GatewayError::Config(e.to_string()))
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<(Self, RuleSet), GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
        let cfg = Self::from_toml(&text)?;
        let rules = cfg.validate(path.parent())?;
        Ok((cfg, rules))
    }

    /// Names of the configured pools.
    pub fn pool_names(&self) -> Vec<&str> {
        self.pools.iter().map(|p| p.name.as_str()).collect()
    }

    /// Check everything that can be checked offline and compile the routes.
    pub fn validate(&self, base: Option<&Path>) -> Result<RuleSet, GatewayError> {
        let bad = |m: String| Err(GatewayError::Config(m));
        for (field, addr) in [
            ("listen", &self.listen),
            ("admin_listen", &self.admin_listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                return bad(format!("{field}: `{addr}` is not ip:port"));
            }
        }
        if self.listen == self.admin_listen {
            return bad("admin_listen must differ from listen".into());
        }
        if self.threads == 0 || self.max_tries == 0 {
            return bad("threads and max_tries must be at least 1".into());
        }
        if http::HeaderName::from_bytes(self.tag_header.as_bytes()).is_err() {
            return bad(format!(
                "tag_header: `{}` is not a header name",
                self.tag_header
            ));
        }
        for n in &self.upstream_allow {
            if let Err(e) = parse_net(n) {
                return bad(format!("upstream_allow: {e}"));
            }
        }
        for t in &self.trusted_proxies {
            if let Err(e) = parse_net(t) {
                return bad(format!("trusted_proxies: {e}"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.pools {
            if !names.insert(p.name.as_str()) {
                return bad(format!("pool `{}`: duplicate name", p.name));
            }
            for s in &p.servers {
                if s.parse::<SocketAddr>().is_err() {
                    return bad(format!("pool `{}`: server `{s}` is not ip:port", p.name));
                }
            }
            let hc = &p.health_check;
            if hc.interval_ms == 0 || hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                return bad(format!(
                    "pool `{}`: health_check interval and thresholds must be at least 1",
                    p.name
                ));
            }
        }
        let mut hooks = std::collections::HashSet::new();
        for h in &self.deploy_hooks {
            if !hooks.insert(h.name.as_str()) {
                return bad(format!("deploy hook `{}`: duplicate name", h.name));
            }
            match (&h.url, h.command.is_empty()) {
                (Some(u), true) if u.starts_with("http://") => {}
                (Some(u), true) => {
                    return bad(format!(
                        "deploy hook `{}`: url `{u}`: expected http://HOST:PORT/PATH",
                        h.name
                    ))
                }
                (None, false) => {}
                _ => {
                    return bad(format!(
                        "deploy hook `{}`: set exactly one of `url` and `command`",
                        h.name
                    ))
                }
            }
        }
        if let Err(e) = regex::Regex::new(&self.config_sensitive) {
            return bad(format!("config_sensitive: {e}"));
        }
        if !(1..=300).contains(&self.config_long_poll_secs) {
            return bad("config_long_poll_secs: between 1 and 300".into());
        }
        for k in &self.config_access_keys {
            if k.key.is_empty() || k.secret.len() < 16 {
                return bad(format!(
                    "config access key `{}`: a key and a secret of at least 16 characters",
                    k.key
                ));
            }
        }
        if let Err(e) = apus_auth::Tokens::new(&self.tokens) {
            return bad(e.to_string());
        }
        let loader = file_loader(base);
        Ok(RuleSet::compile(&self.routes, &self.pool_names(), &loader)?)
    }

    /// Trusted proxies as networks (validated by [`Self::validate`]).
    pub fn trusted_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|t| parse_net(t).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_targets_are_kinds() {
        let t = |s: &str| AccessLogTarget::try_from(s.to_string());
        assert_eq!(t("off").unwrap(), AccessLogTarget::Off);
        assert_eq!(t("stdout").unwrap(), AccessLogTarget::Stdout);
        assert_eq!(t("in-process").unwrap(), AccessLogTarget::InProcess);
        assert_eq!(
            t("http://ingest:9200").unwrap(),
            AccessLogTarget::Ingest("http://ingest:9200".into())
        );
        assert_eq!(
            t("/var/log/a.jsonl").unwrap(),
            AccessLogTarget::File("/var/log/a.jsonl".into())
        );
        assert!(t("kafka://broker").is_err());
        assert!(crate::AccessLog::from_config(&AccessLogTarget::InProcess, 8, None).is_err());
    }

    #[test]
    fn runtime_servers_are_checked_against_the_upstream_policy() {
        let mut cfg: GatewayConfig = GatewayConfig::from_toml("listen = \"0.0.0.0:8080\"").unwrap();
        let p = UpstreamPolicy::of(&cfg);
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(p.check(a("10.1.2.3:80")).is_ok());
        for bad in [
            "127.0.0.1:3000",
            "169.254.169.254:80",
            "[::1]:9901",
            "0.0.0.0:80",
        ] {
            assert!(p.check(a(bad)).is_err(), "{bad}");
        }
        cfg.listen = "127.0.0.1:8080".into();
        assert!(UpstreamPolicy::of(&cfg).check(a("127.0.0.1:3000")).is_ok());
        cfg.upstream_allow = vec!["10.0.0.0/8".into()];
        let p = UpstreamPolicy::of(&cfg);
        assert!(p.check(a("10.9.9.9:80")).is_ok());
        assert!(p.check(a("192.168.1.1:80")).is_err());
        assert!(p.check(a("127.0.0.1:80")).is_err());
    }
}
