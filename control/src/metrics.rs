//! Every metric the control plane emits.

use metrics::{describe_counter, describe_gauge};

/// 1 while the store answers, 0 while a node serves its last good version without it.
pub const CONNECTED: &str = "apus_control_connected";
/// The newest version this node has seen in the store.
pub const STORE_VERSION: &str = "apus_control_store_version";
/// Commits, label: outcome (`ok`, `conflict`, `unavailable`).
pub const COMMITS: &str = "apus_control_commits_total";

/// Register descriptions with the installed recorder.
pub fn describe() {
    describe_gauge!(
        CONNECTED,
        "1 while the control store answers, 0 while it is away"
    );
    describe_gauge!(
        STORE_VERSION,
        "newest release version seen in the control store"
    );
    describe_counter!(COMMITS, "control-plane commits per outcome");
}
