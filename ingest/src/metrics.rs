//! Every metric the ingest tier emits: names, labels and descriptions in one place.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Rows accepted, label: table.
pub const ROWS: &str = "apus_ingest_rows_total";
/// Request bytes received, label: receiver.
pub const BYTES: &str = "apus_ingest_bytes_total";
/// Records rejected into the dead-letter table, labels: receiver.
pub const REJECTED: &str = "apus_ingest_rejected_total";
/// Requests refused for overload (429), label: reason.
pub const THROTTLED: &str = "apus_ingest_throttled_total";
/// WAL fsyncs (one per group commit).
pub const WAL_FSYNCS: &str = "apus_ingest_wal_fsyncs_total";
/// Appends per group commit.
pub const WAL_GROUP_SIZE: &str = "apus_ingest_wal_group_size";
/// Bytes cut from torn WAL tails at start-up.
pub const WAL_TRUNCATED_BYTES: &str = "apus_ingest_wal_truncated_bytes_total";
/// Parquet files written, label: table.
pub const PARQUET_FILES: &str = "apus_ingest_parquet_files_total";
/// Rows held in memory awaiting Parquet.
pub const MEM_BYTES: &str = "apus_ingest_memory_bytes";
/// Tantivy commits.
pub const TANTIVY_COMMITS: &str = "apus_ingest_tantivy_commits_total";

/// Register descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(ROWS, "rows accepted (durable) per table");
    describe_counter!(BYTES, "request body bytes received per receiver");
    describe_counter!(
        REJECTED,
        "malformed records sent to the dead-letter table per receiver"
    );
    describe_counter!(THROTTLED, "requests refused with 429 per reason");
    describe_counter!(WAL_FSYNCS, "WAL group commits (fsyncs)");
    describe_histogram!(WAL_GROUP_SIZE, "appends per WAL group commit");
    describe_counter!(
        WAL_TRUNCATED_BYTES,
        "bytes cut from torn WAL tails at start-up"
    );
    describe_counter!(PARQUET_FILES, "parquet files written per table");
    describe_gauge!(MEM_BYTES, "bytes of rows held in memory awaiting Parquet");
    describe_counter!(TANTIVY_COMMITS, "tantivy index commits");
}
