//! Ingest tier: receivers, parsers, WAL, batching and sinks. It owns the table schemas: the
//! row types in [`schema`] are the single source of truth for the column names every other
//! crate writes and reads.

pub mod schema;
