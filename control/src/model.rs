//! The release state and the log entries that change it.

use std::collections::{BTreeMap, BTreeSet};

use apus_rules::RouteSpec;
use apus_schema::{ChangeKind, ChangeRecord};
use serde::{Deserialize, Serialize};

/// One pool's membership: its servers in order, and which of them are drained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolState {
    /// `ip:port` of every server, in order.
    pub servers: Vec<String>,
    /// Servers that take no new requests.
    #[serde(default)]
    pub drained: BTreeSet<String>,
}

/// The whole release state at one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDoc {
    /// Routes with their gray rules.
    pub routes: Vec<RouteSpec>,
    /// Pool membership and drains, by pool name.
    pub pools: BTreeMap<String, PoolState>,
    /// Changes to protected environments waiting for approvals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// Rollouts by name, running and finished: their plan, progress and what to restore.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollouts: BTreeMap<String, apus_rules::rollout::RolloutDoc>,
    /// Serial pool releases by pool, running and the last finished one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub serial: BTreeMap<String, apus_rules::rollout::SerialDoc>,
    /// Config files (metadata and releases; contents are blobs) and globals.
    #[serde(
        default,
        skip_serializing_if = "apus_rules::config::ConfigDoc::is_empty"
    )]
    pub config: apus_rules::config::ConfigDoc,
}

/// A change to a protected environment, proposed and waiting for approvals from
/// principals other than its author. It applies when the last approval arrives, provided
/// the routes are still those it was proposed against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Its id: the version at which it was proposed.
    pub id: u64,
    /// The change kind it will apply as (`gray_rules`, `rollback`).
    pub kind: ChangeKind,
    /// Who proposed it.
    pub author: String,
    /// The author's reason.
    pub reason: String,
    /// Project, env and scope of what it changes.
    pub project: String,
    pub env: String,
    pub scope: String,
    /// When it was proposed (µs since the epoch).
    pub ts: i64,
    /// Approvals needed.
    pub required: u32,
    /// Who approved it so far.
    pub approvals: Vec<String>,
    /// The routes in force when it was proposed.
    pub base_routes: Vec<RouteSpec>,
    /// The routes it puts in force.
    pub routes: Vec<RouteSpec>,
}

/// One entry of the change log: the state it produced and its audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The version this change produced (`base_version + 1`).
    pub version: u64,
    /// The version it was based on (0 for the seed).
    pub base_version: u64,
    /// The audit record (kind, actor, time, scope, summary with reason, touched).
    pub record: ChangeRecord,
    /// The release state at `version`.
    pub state: ReleaseDoc,
}
