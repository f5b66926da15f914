//! The tables of DESIGN.md §Tables, the single source of truth for their columns: one row
//! struct per table and its Arrow schema, generated from one column list, so the Parquet
//! layout, the ClickHouse DDL and the query layer's column names cannot drift apart. Also
//! the time helpers (µs since the epoch, RFC 3339) every crate shares.
//!
//! Must never depend on: any other Apus crate, DataFusion, IO. The gateway and `collect`
//! depend on this crate, so it stays small (serde and the Arrow array/schema crates).

#![warn(clippy::print_stdout)]

#[cfg(feature = "arrow")]
mod arrow;
mod change;
mod tables;
pub mod time;

pub use change::{ChangeKind, Touched};
pub use tables::*;
