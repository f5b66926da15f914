//! The tables of DESIGN.md §Tables: one row struct per table and its Arrow schema, both
//! generated from one column list by [`define_table!`], so the Parquet layout, the
//! ClickHouse DDL and the query layer's column names cannot drift apart.
//!
//! Timestamps are microseconds since the Unix epoch (UTC) in the row structs and Arrow
//! `Timestamp(Microsecond, "UTC")` in batches.

#[cfg(feature = "arrow")]
use std::sync::Arc;

#[cfg(feature = "arrow")]
use crate::arrow::{arrow_type, Column};
#[cfg(feature = "arrow")]
use arrow_array::RecordBatch;
#[cfg(feature = "arrow")]
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// A timestamp column value (µs since the epoch, UTC).
pub type Ts = i64;

/// Wrapper so `i64` columns can be either plain Int64 or timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(pub i64);

/// Columns (of any table) holding free text or ids with no order: no query prunes them by
/// range, so the Parquet writer keeps no min/max statistics for them.
pub const FREE_TEXT_COLUMNS: [&str; 11] = [
    "message",
    "template",
    "attrs",
    "request_id",
    "sample",
    "fingerprint",
    "summary",
    "touched",
    "raw",
    "reason",
    "labels",
];

/// Of those, the ones whose values (almost) never repeat: written without a dictionary.
pub const UNIQUE_TEXT_COLUMNS: [&str; 4] = ["message", "attrs", "request_id", "raw"];

/// A table row type.
pub trait Row: Sized + Send + 'static {
    /// Table name.
    const TABLE: Table;
    /// The Arrow schema (cached).
    #[cfg(feature = "arrow")]
    fn schema() -> SchemaRef;
    /// Build a batch from rows.
    #[cfg(feature = "arrow")]
    fn to_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError>;
}

macro_rules! define_table {
    ($(#[$m:meta])* $name:ident, $table:expr, { $($(#[$fm:meta])* $field:ident : $ty:ty),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)+
        }

        impl Row for $name {
            const TABLE: Table = $table;
            #[cfg(feature = "arrow")]
            fn schema() -> SchemaRef {
                static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
                S.get_or_init(|| {
                    Arc::new(Schema::new(vec![
                        $(Field::new(stringify!($field), arrow_type::<$ty>(), false),)+
                    ]))
                })
                .clone()
            }
            #[cfg(feature = "arrow")]
            fn to_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
                $(let mut $field = <$ty as Column>::builder(rows.len());)+
                for r in rows {
                    $(<$ty as Column>::append(&mut $field, &r.$field);)+
                }
                RecordBatch::try_new(Self::schema(), vec![$(<$ty as Column>::finish($field),)+])
            }
        }
    };
}

/// The tables Apus stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    AccessLog,
    Logs,
    SlowSql,
    Metrics,
    Changes,
    Alarms,
    DeadLetter,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [
        Table::AccessLog,
        Table::Logs,
        Table::SlowSql,
        Table::Metrics,
        Table::Changes,
        Table::Alarms,
        Table::DeadLetter,
    ];

    /// The table's name in SQL and on disk.
    pub fn name(self) -> &'static str {
        match self {
            Table::AccessLog => "access_log",
            Table::Logs => "logs",
            Table::SlowSql => "slow_sql",
            Table::Metrics => "metrics",
            Table::Changes => "changes",
            Table::Alarms => "alarms",
            Table::DeadLetter => "dead_letter",
        }
    }

    /// Stable one-byte code used in the WAL.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`Table::code`].
    pub fn from_code(c: u8) -> Option<Table> {
        Table::ALL.get(c as usize).copied()
    }

    /// The Arrow schema of the table.
    #[cfg(feature = "arrow")]
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::AccessLog => AccessRecord::schema(),
            Table::Logs => LogRecord::schema(),
            Table::SlowSql => SlowSqlRecord::schema(),
            Table::Metrics => MetricRecord::schema(),
            Table::Changes => ChangeRecord::schema(),
            Table::Alarms => AlarmRecord::schema(),
            Table::DeadLetter => DeadLetterRecord::schema(),
        }
    }
}

define_table!(
    /// One request through the gateway (`access_log`).
    AccessRecord, Table::AccessLog, {
    /// Request start.
    ts: Micros,
    request_id: String,
    project: String,
    env: String,
    route: String,
    pool: String,
    /// `ip:port` of the upstream server that answered, empty if none.
    upstream: String,
    /// Lane tag: `stable`, `gray`, ...
    tag: String,
    tenant: String,
    client_ip: String,
    method: String,
    host: String,
    path: String,
    status: u16,
    latency_us: u64,
    upstream_latency_us: u64,
    bytes_in: u64,
    bytes_out: u64,
});

define_table!(
    /// An application log line (`logs`).
    LogRecord, Table::Logs, {
    ts: Micros,
    project: String,
    env: String,
    pool: String,
    host: String,
    level: String,
    logger: String,
    message: String,
    /// Stable id of the line's template (hex), see `templates`.
    template_id: String,
    template: String,
    /// Exception class when the line carries a stack trace.
    exception: String,
    request_id: String,
    tenant: String,
    tag: String,
    /// Fields not mapped to a column, as a JSON object.
    attrs: String,
});

define_table!(
    /// A slow-log entry (`slow_sql`).
    SlowSqlRecord, Table::SlowSql, {
    ts: Micros,
    project: String,
    env: String,
    pool: String,
    db: String,
    user: String,
    client: String,
    fingerprint_id: String,
    fingerprint: String,
    sample: String,
    query_time: f64,
    lock_time: f64,
    rows_sent: u64,
    rows_examined: u64,
});

define_table!(
    /// A metric sample (`metrics`).
    MetricRecord, Table::Metrics, {
    ts: Micros,
    name: String,
    /// All labels as a JSON object with sorted keys.
    labels: String,
    value: f64,
    project: String,
    env: String,
    pool: String,
    host: String,
});

define_table!(
    /// A change: gray flip, config release, rollout step, rollback, server on/off the
    /// shelf (`changes`).
    ChangeRecord, Table::Changes, {
    ts: Micros,
    /// `gray_rules`, `rollback`, `server_add`, `server_drain`, ...
    kind: String,
    actor: String,
    project: String,
    env: String,
    /// What it touched: a route, `pool/server`, ...
    scope: String,
    from_version: u64,
    to_version: u64,
    summary: String,
    /// What the change touched, as space-separated `dimension:value` items (`route:api
    /// pool:gray tag:gray tenant:acme`; `tenant:*` = a sticky percentage over all tenants).
    /// Root cause matches these against the dimensions that explain an anomaly.
    touched: String,
});

define_table!(
    /// An alarm state change (`alarms`): one row per transition of one label set
    /// (`pending`, `firing`, `resolved`, `inactive`), plus `error` rows when a rule's query
    /// fails. The last row of each (rule, fingerprint) is what a restart restores.
    AlarmRecord, Table::Alarms, {
    ts: Micros,
    project: String,
    env: String,
    /// `project/env/name` of the rule.
    rule: String,
    /// Identity of the label set (16 hex digits, the webhook's `fingerprint`).
    fingerprint: String,
    state: String,
    severity: String,
    /// All labels as a JSON object with sorted keys.
    labels: String,
    value: f64,
    /// When the episode began (pending or firing since), µs since the epoch.
    since_us: u64,
    /// The rendered summary (or the error's reason).
    message: String,
});

define_table!(
    /// Input that could not be ingested, kept with its reason (`dead_letter`).
    DeadLetterRecord, Table::DeadLetter, {
    ts: Micros,
    /// Receiver: `logs`, `bulk`, `slowlog`, `remote_write`, `metrics`.
    source: String,
    reason: String,
    /// The raw input (truncated to 64 KiB).
    raw: String,
});

#[cfg(all(test, feature = "arrow"))]
mod tests {
    use super::*;
    use arrow_schema::{DataType, TimeUnit};

    #[test]
    fn text_column_lists_name_real_string_columns() {
        for c in FREE_TEXT_COLUMNS.iter().chain(&UNIQUE_TEXT_COLUMNS) {
            let found = Table::ALL.iter().any(|t| {
                t.schema()
                    .field_with_name(c)
                    .is_ok_and(|f| f.data_type() == &DataType::Utf8)
            });
            assert!(found, "`{c}` is no string column of any table");
        }
        assert!(UNIQUE_TEXT_COLUMNS
            .iter()
            .all(|c| FREE_TEXT_COLUMNS.contains(c)));
    }

    #[test]
    fn batches_follow_the_schema() {
        let rows = vec![
            AccessRecord {
                ts: Micros(1_700_000_000_000_000),
                route: "api".into(),
                status: 200,
                ..Default::default()
            };
            3
        ];
        let b = AccessRecord::to_batch(&rows).unwrap();
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.schema().field(0).name(), "ts");
        assert!(matches!(
            b.schema().field(0).data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(_))
        ));
        assert_eq!(b.schema().index_of("status").unwrap(), 13);
        for t in Table::ALL {
            assert_eq!(Table::from_code(t.code()), Some(t));
            assert!(t.schema().field_with_name("ts").is_ok(), "{}", t.name());
        }
    }
}

/// A row that belongs to one project and environment: what a token's `project/env` scope
/// is checked against when the row is written.
pub trait Scoped {
    /// `(project, env)` of the row.
    fn project_env(&self) -> (&str, &str);
}

macro_rules! scoped {
    ($($t:ty),+) => {
        $(impl Scoped for $t {
            fn project_env(&self) -> (&str, &str) {
                (&self.project, &self.env)
            }
        })+
    };
}

scoped!(
    AccessRecord,
    LogRecord,
    SlowSqlRecord,
    MetricRecord,
    ChangeRecord,
    AlarmRecord
);
