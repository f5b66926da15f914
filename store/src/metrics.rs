//! Every metric the stores emit: names, labels and descriptions in one place. The names
//! keep their `apus_ingest_` / `apus_clickhouse_` prefixes from before the store had a
//! crate of its own, so dashboards and alerts built on them keep working.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Parquet files written, label: table.
pub const PARQUET_FILES: &str = "apus_ingest_parquet_files_total";
/// Rows held in memory awaiting Parquet.
pub const MEM_BYTES: &str = "apus_ingest_memory_bytes";
/// Tantivy commits.
pub const TANTIVY_COMMITS: &str = "apus_ingest_tantivy_commits_total";
/// ClickHouse insert failures (each retried).
pub const CH_ERRORS: &str = "apus_clickhouse_errors_total";
/// Rows inserted into ClickHouse, label: table.
pub const CH_ROWS: &str = "apus_clickhouse_rows_total";
/// Seconds per ClickHouse insert.
pub const CH_INSERT_SECONDS: &str = "apus_clickhouse_insert_seconds";
/// Bytes delivered to the ClickHouse sink and not yet inserted.
pub const CH_BACKLOG: &str = "apus_clickhouse_backlog_bytes";

/// Register descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(PARQUET_FILES, "parquet files written per table");
    describe_gauge!(MEM_BYTES, "bytes of rows held in memory awaiting Parquet");
    describe_counter!(TANTIVY_COMMITS, "tantivy index commits");
    describe_counter!(CH_ERRORS, "failed ClickHouse inserts (retried)");
    describe_counter!(CH_ROWS, "rows inserted into ClickHouse per table");
    describe_histogram!(CH_INSERT_SECONDS, "seconds per ClickHouse insert");
    describe_gauge!(
        CH_BACKLOG,
        "bytes delivered to the ClickHouse sink, not yet inserted"
    );
}
