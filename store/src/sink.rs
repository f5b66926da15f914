//! The one interface between the WAL and a store: the embedded store
//! ([`crate::local::LocalStore`], memory + Parquet) and ClickHouse
//! ([`crate::clickhouse::sink::ClickHouseSink`]) both implement it, so the pipeline's
//! durability rules (replay from the store's checkpoint, trim the WAL only below what the
//! store has committed, refuse writes while its backlog is over budget) are written once.
//! The Tantivy index is a sink too, so the pipeline treats its sinks alike.

use datafusion::arrow::record_batch::RecordBatch;

use crate::clickhouse::sink::ClickHouseSink;
use apus_schema::Table;

/// A store fed by the WAL, in sequence order.
pub trait StoreSink: Send + Sync {
    /// Take a durable batch (never blocks the WAL writer).
    fn deliver(&self, seq: u64, t: Table, batch: RecordBatch);
    /// The highest sequence of `t` the store has committed (the WAL replays above it).
    fn committed(&self, t: Table) -> u64;
    /// The WAL may drop records up to this, given the last sequence written.
    fn safe_upto(&self, last: u64) -> u64;
    /// Bytes delivered but not yet committed (admission control: 429 above the budget).
    fn backlog_bytes(&self) -> usize;
}

impl StoreSink for crate::local::LocalStore {
    fn deliver(&self, seq: u64, t: Table, batch: RecordBatch) {
        self.append(seq, t, batch);
    }
    fn committed(&self, t: Table) -> u64 {
        self.checkpoint(t)
    }
    fn safe_upto(&self, last: u64) -> u64 {
        self.pending_min_seq().map_or(last, |s| s - 1)
    }
    fn backlog_bytes(&self) -> usize {
        self.mem_bytes()
    }
}

/// Tantivy indexes the `logs` table beside either store: it is fed and checkpointed like
/// them, so the WAL replays and keeps what it has not committed.
impl StoreSink for crate::search::SearchIndex {
    fn deliver(&self, seq: u64, t: Table, batch: RecordBatch) {
        if t == Table::Logs && seq > self.checkpoint() {
            self.index(seq, batch);
        }
    }
    fn committed(&self, t: Table) -> u64 {
        match t {
            Table::Logs => self.checkpoint(),
            // Nothing to replay for tables it does not index.
            _ => u64::MAX,
        }
    }
    fn safe_upto(&self, last: u64) -> u64 {
        let ck = self.checkpoint();
        if self.sent() > ck {
            ck
        } else {
            last
        }
    }
    fn backlog_bytes(&self) -> usize {
        0
    }
}

impl StoreSink for crate::clickhouse::sink::ClickHouseSink {
    fn deliver(&self, seq: u64, t: Table, batch: RecordBatch) {
        ClickHouseSink::deliver(self, seq, t, batch);
    }
    fn committed(&self, _t: Table) -> u64 {
        self.checkpoint()
    }
    fn safe_upto(&self, last: u64) -> u64 {
        ClickHouseSink::safe_upto(self, last)
    }
    fn backlog_bytes(&self) -> usize {
        ClickHouseSink::backlog_bytes(self)
    }
}
