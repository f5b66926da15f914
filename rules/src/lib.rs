//! Pure gray-release logic: the gray-rule model, its parser and validator, and the matcher
//! the gateway runs on every request; and the alarm model ([`alarm`]): rule files, the
//! per-label-set state machine and Alertmanager-style routing, grouping, silences and
//! inhibition.
//!
//! The main type is [`RuleSet`], a compiled, immutable set of routes built from
//! [`RouteSpec`]s by [`RuleSet::compile`]. Invariants it keeps:
//! - every pool a rule names exists (checked at compile time, never at match time);
//! - matching ([`RuleSet::decide`]) borrows the request, allocates nothing on the heap and
//!   does no IO; it is deterministic for the same request and rule set;
//! - sticky percentages use `murmur3_32("{rule}:{key}", 0) % 100 + 1 <= percent`, so raising
//!   a percentage only ever adds keys to the gray side.
//!
//! This crate depends on nothing else of Apus and does no IO: loading tenant files is the
//! caller's job (see [`TenantLoader`]).

#![warn(clippy::print_stdout)]

pub mod alarm;
mod cidr;
pub mod config;
mod error;
mod hash;
mod matcher;
mod model;
mod patch;
pub mod rollout;
mod tenant;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use cidr::CidrSet;
pub use error::RuleError;
pub use hash::{murmur3_32, sticky_bucket, Murmur3};
pub use matcher::{Decision, HeaderList, Headers, RequestView, RuleSet, TenantLoader};
pub use model::{GrayRuleSpec, Matcher, RouteSpec, RulesFile, TenantSource};
pub use patch::Entries;
pub use tenant::extract_tenant;

/// The tag given to requests that no gray rule claims.
pub const STABLE_TAG: &str = "stable";
