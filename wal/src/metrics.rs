//! Every metric the WAL emits; each carries the label `log` (`ingest`, `control`).

use metrics::{describe_counter, describe_histogram};

/// WAL fsyncs (one per group commit).
pub const WAL_FSYNCS: &str = "apus_wal_fsyncs_total";
/// Appends per group commit.
pub const WAL_GROUP_SIZE: &str = "apus_wal_group_size";
/// Bytes cut from torn WAL tails at start-up.
pub const WAL_TRUNCATED_BYTES: &str = "apus_wal_truncated_bytes_total";

/// Register descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(WAL_FSYNCS, "WAL group commits (fsyncs) per log");
    describe_histogram!(WAL_GROUP_SIZE, "appends per WAL group commit per log");
    describe_counter!(
        WAL_TRUNCATED_BYTES,
        "bytes cut from torn WAL tails at start-up per log"
    );
}
