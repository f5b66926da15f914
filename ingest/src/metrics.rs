//! Every metric the ingest tier emits: names, labels and descriptions in one place.

use metrics::describe_counter;

/// Rows accepted, label: table.
pub const ROWS: &str = "apus_ingest_rows_total";
/// Request bytes received, label: receiver.
pub const BYTES: &str = "apus_ingest_bytes_total";
/// Records rejected into the dead-letter table, labels: receiver.
pub const REJECTED: &str = "apus_ingest_rejected_total";
/// Requests refused for overload (429), label: reason.
pub const THROTTLED: &str = "apus_ingest_throttled_total";
/// Requests refused for their credentials (401/403).
pub const DENIED: &str = "apus_ingest_denied_total";

/// Register descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(ROWS, "rows accepted (durable) per table");
    describe_counter!(DENIED, "requests refused for their credentials (401/403)");
    describe_counter!(BYTES, "request body bytes received per receiver");
    describe_counter!(
        REJECTED,
        "malformed records sent to the dead-letter table per receiver"
    );
    describe_counter!(THROTTLED, "requests refused with 429 per reason");
    apus_wal::metrics::describe();
    apus_store::metrics::describe();
}
