//! Row types of the tables in DESIGN.md §Tables. Field names are column names; timestamps
//! are microseconds since the Unix epoch (UTC).

use serde::{Deserialize, Serialize};

/// One request through the gateway (`access_log` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// Request start, µs since the epoch.
    pub ts: i64,
    pub request_id: String,
    pub project: String,
    pub env: String,
    pub route: String,
    pub pool: String,
    /// `ip:port` of the upstream server that answered, empty if none.
    pub upstream: String,
    /// Lane tag: `stable`, `gray`, ...
    pub tag: String,
    pub tenant: String,
    pub client_ip: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub latency_us: u64,
    pub upstream_latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One change: gray flip, config release, rollout step, rollback, server on/off the shelf
/// (`changes` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// When it took effect, µs since the epoch.
    pub ts: i64,
    /// `gray_rules`, `rollback`, `server_add`, `server_drain`, `server_undrain`,
    /// `server_remove`, ...
    pub kind: String,
    /// Who made it (token name).
    pub actor: String,
    pub project: String,
    pub env: String,
    /// What it touched: a route or pool name, or `route/rule`.
    pub scope: String,
    pub from_version: u64,
    pub to_version: u64,
    /// Human summary: the diff and the reason.
    pub summary: String,
}
