//! Full-text search over log messages with Tantivy: one long-lived writer on its own
//! thread, committing at least every second; fast fields for ts, pool, level, template_id
//! and the other dimensions. The commit payload is the highest WAL sequence number indexed,
//! so after a crash the WAL replays exactly what the index is missing.
//!
//! The index stores the message, exception and dimensions of each line (enough to show a
//! hit), not the whole row: `attrs` and the template text stay in the table.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{Index, IndexReader, Order, ReloadPolicy, TantivyDocument, Term};

use crate::metrics as m;
use crate::StoreError;

/// The dimension fields a search can filter on.
pub const DIMENSIONS: [&str; 9] = [
    "project",
    "env",
    "pool",
    "host",
    "level",
    "template_id",
    "request_id",
    "tenant",
    "tag",
];

struct Fields {
    ts: Field,
    message: Field,
    exception: Field,
    dims: Vec<(&'static str, Field)>,
}

/// A search hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub ts: i64,
    pub message: String,
    pub exception: String,
    #[serde(flatten)]
    pub dims: std::collections::BTreeMap<String, String>,
}

/// Most buckets of a search histogram.
pub const MAX_BUCKETS: usize = 2000;

/// The bucket count of a histogram over `[from_us, to_us)` in `step_us` steps, checked.
pub fn histogram_buckets(from_us: i64, to_us: i64, step_us: i64) -> Result<usize, StoreError> {
    if step_us <= 0 || to_us <= from_us {
        return Err(StoreError::BadInput(
            "a histogram needs from < to and a positive step".into(),
        ));
    }
    // Both positive here.
    let n = ((to_us - from_us) as u64).div_ceil(step_us as u64);
    if n > MAX_BUCKETS as u64 {
        return Err(StoreError::BadInput(format!(
            "step gives {n} buckets over this range, more than {MAX_BUCKETS}; use a larger step"
        )));
    }
    Ok(n as usize)
}

/// Search results, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub total: usize,
    pub rows: Vec<Hit>,
}

/// The log search index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Arc<Fields>,
    tx: SyncSender<(u64, RecordBatch)>,
    committed: Arc<AtomicU64>,
    /// Highest `logs` sequence handed to the indexer.
    sent: AtomicU64,
}

/// The index schema. Dimensions are exact-match terms, stored for hits; the
/// low-cardinality ones are also fast fields (columnar, for sorting and aggregation).
/// `request_id` is unique per line, so a fast-field dictionary of it would cost a
/// dictionary entry per document for nothing: it is a term only.
fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_i64_field("ts", INDEXED | FAST | STORED);
    b.add_text_field("message", TEXT | STORED);
    b.add_text_field("exception", TEXT | STORED);
    for d in DIMENSIONS {
        if d == "request_id" {
            b.add_text_field(d, STRING | STORED);
        } else {
            b.add_text_field(d, STRING | FAST | STORED);
        }
    }
    b.build()
}

/// The fields of an index's schema (one this build created, or an older one found on disk).
fn fields(schema: &Schema) -> Result<Fields, StoreError> {
    let get = |name: &str| {
        schema
            .get_field(name)
            .map_err(|e| StoreError::Search(format!("index schema: {e}")))
    };
    Ok(Fields {
        ts: get("ts")?,
        message: get("message")?,
        exception: get("exception")?,
        dims: DIMENSIONS
            .iter()
            .map(|d| Ok((*d, get(d)?)))
            .collect::<Result<_, StoreError>>()?,
    })
}

impl SearchIndex {
    /// Open or create the index in `dir` and start its writer thread.
    pub fn open(dir: &Path) -> Result<SearchIndex, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mmap = MmapDirectory::open(dir).map_err(|e| StoreError::Search(e.to_string()))?;
        // An index written by an earlier build keeps its own schema: the field names are
        // what the code relies on, not every field option.
        let index = if Index::exists(&mmap).unwrap_or(false) {
            Index::open(mmap)
        } else {
            Index::create(mmap, schema(), tantivy::IndexSettings::default())
        }
        .map_err(|e| StoreError::Search(e.to_string()))?;
        let fields = fields(&index.schema())?;
        let committed = index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0u64);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(|e: tantivy::TantivyError| StoreError::Search(e.to_string()))?;
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, 64 << 20)
            .map_err(|e| StoreError::Search(e.to_string()))?;
        let fields = Arc::new(fields);
        let committed = Arc::new(AtomicU64::new(committed));
        let (tx, rx) = sync_channel::<(u64, RecordBatch)>(1024);
        let (f2, c2) = (fields.clone(), committed.clone());
        std::thread::Builder::new()
            .name("apus-tantivy".into())
            .spawn(move || {
                let mut pending: u64 = 0;
                let mut last = Instant::now();
                loop {
                    let msg = rx.recv_timeout(Duration::from_millis(200));
                    let disconnected = matches!(msg, Err(RecvTimeoutError::Disconnected));
                    if let Ok((seq, batch)) = msg {
                        if seq > c2.load(Ordering::Relaxed) {
                            add_batch(&writer, &f2, &batch);
                            pending = pending.max(seq);
                        }
                    }
                    if pending > 0 && (last.elapsed() >= Duration::from_secs(1) || disconnected) {
                        let res = writer.prepare_commit().and_then(|mut p| {
                            p.set_payload(&pending.to_string());
                            p.commit()
                        });
                        match res {
                            Ok(_) => {
                                c2.store(pending, Ordering::Relaxed);
                                metrics::counter!(m::TANTIVY_COMMITS).increment(1);
                                pending = 0;
                            }
                            Err(e) => tracing::error!(error = %e, "tantivy commit failed"),
                        }
                        last = Instant::now();
                    }
                    if last.elapsed() >= Duration::from_secs(1) {
                        last = Instant::now();
                    }
                    if disconnected {
                        break;
                    }
                }
            })?;
        Ok(SearchIndex {
            index,
            reader,
            fields,
            tx,
            committed,
            sent: AtomicU64::new(0),
        })
    }

    /// Highest WAL sequence number whose lines are committed in the index.
    pub fn checkpoint(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Queue a `logs` batch for indexing (blocks when the indexer is behind: backpressure
    /// flows up to the WAL queue and from there to HTTP 429).
    pub fn index(&self, seq: u64, batch: RecordBatch) {
        if self.tx.send((seq, batch)).is_err() {
            tracing::error!("tantivy writer thread is gone");
        }
        self.sent.fetch_max(seq, Ordering::Relaxed);
    }

    /// Highest `logs` sequence handed to the indexer (committed or not).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Search `q` (Tantivy query syntax over message and exception; empty = everything)
    /// with exact dimension filters and a ts range in µs, newest first.
    pub fn search(
        &self,
        q: &str,
        filters: &[(String, String)],
        from_us: Option<i64>,
        to_us: Option<i64>,
        limit: usize,
        offset: usize,
    ) -> Result<SearchResult, StoreError> {
        let query = self.query(q, filters, from_us, to_us)?;
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(limit.clamp(1, 10_000))
            .and_offset(offset)
            .order_by_fast_field::<i64>("ts", Order::Desc);
        let (total, docs) = searcher
            .search(&query, &(Count, top))
            .map_err(|e| StoreError::Search(e.to_string()))?;
        self.hits(&searcher, total, docs)
    }

    /// How many lines match, per `step_us` bucket of `[from_us, to_us)` (at most
    /// [`MAX_BUCKETS`]): the histogram over a search.
    pub fn histogram(
        &self,
        q: &str,
        filters: &[(String, String)],
        from_us: i64,
        to_us: i64,
        step_us: i64,
    ) -> Result<Vec<u64>, StoreError> {
        let buckets = histogram_buckets(from_us, to_us, step_us)?;
        let query = self.query(q, filters, Some(from_us), Some(to_us))?;
        let c = tantivy::collector::HistogramCollector::new::<i64>(
            "ts".to_string(),
            from_us,
            step_us as u64,
            buckets,
        );
        self.reader
            .searcher()
            .search(&query, &c)
            .map_err(|e| StoreError::Search(e.to_string()))
    }

    fn query(
        &self,
        q: &str,
        filters: &[(String, String)],
        from_us: Option<i64>,
        to_us: Option<i64>,
    ) -> Result<Box<dyn Query>, StoreError> {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !q.trim().is_empty() {
            let qp = QueryParser::for_index(&self.index, vec![f.message, f.exception]);
            let parsed = qp
                .parse_query(q)
                .map_err(|e| StoreError::BadInput(format!("query: {e}")))?;
            clauses.push((Occur::Must, parsed));
        }
        for (k, v) in filters {
            let field = f
                .dims
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, f)| *f)
                .ok_or_else(|| StoreError::BadInput(format!("unknown dimension `{k}`")))?;
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(field, v),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if from_us.is_some() || to_us.is_some() {
            let lo = from_us.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_i64(f.ts, v))
            });
            let hi = to_us.map_or(Bound::Unbounded, |v| {
                Bound::Excluded(Term::from_field_i64(f.ts, v))
            });
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        let query: Box<dyn Query> = if clauses.is_empty() {
            Box::new(tantivy::query::AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        Ok(query)
    }

    fn hits(
        &self,
        searcher: &tantivy::Searcher,
        total: usize,
        docs: Vec<(Option<i64>, tantivy::DocAddress)>,
    ) -> Result<SearchResult, StoreError> {
        let f = &self.fields;
        let mut rows = Vec::with_capacity(docs.len());
        for (_, addr) in docs {
            let d: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| StoreError::Search(e.to_string()))?;
            let text = |field: Field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            rows.push(Hit {
                ts: d.get_first(f.ts).and_then(|v| v.as_i64()).unwrap_or(0),
                message: text(f.message),
                exception: text(f.exception),
                dims: f
                    .dims
                    .iter()
                    .map(|(n, fl)| (n.to_string(), text(*fl)))
                    .filter(|(_, v)| !v.is_empty())
                    .collect(),
            });
        }
        Ok(SearchResult { total, rows })
    }

    /// Make the latest commit visible to searches now (tests, after a flush).
    pub fn refresh(&self) -> Result<(), StoreError> {
        self.reader
            .reload()
            .map_err(|e| StoreError::Search(e.to_string()))
    }
}

fn add_batch(writer: &tantivy::IndexWriter<TantivyDocument>, f: &Fields, batch: &RecordBatch) {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_string::<i32>().clone())
    };
    let Some(ts) = batch
        .column_by_name("ts")
        .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
    else {
        return;
    };
    let message = col("message");
    let exception = col("exception");
    let dims: Vec<_> = f.dims.iter().map(|(n, fl)| (*fl, col(n))).collect();
    for i in 0..batch.num_rows() {
        let mut d = TantivyDocument::default();
        d.add_i64(f.ts, ts.value(i));
        if let Some(m) = &message {
            d.add_text(f.message, m.value(i));
        }
        if let Some(e) = &exception {
            if !e.value(i).is_empty() {
                d.add_text(f.exception, e.value(i));
            }
        }
        for (fl, c) in &dims {
            if let Some(c) = c {
                if !c.is_null(i) && !c.value(i).is_empty() {
                    d.add_text(*fl, c.value(i));
                }
            }
        }
        if let Err(e) = writer.add_document(d) {
            tracing::error!(error = %e, "tantivy add_document failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apus_schema::{LogRecord, Micros, Row};

    #[test]
    fn index_commit_search_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let rows: Vec<LogRecord> = (0..50)
            .map(|i| LogRecord {
                ts: Micros(1_000_000 * i),
                pool: if i % 5 == 0 {
                    "gray".into()
                } else {
                    "stable".into()
                },
                level: if i % 5 == 0 {
                    "ERROR".into()
                } else {
                    "INFO".into()
                },
                message: if i % 5 == 0 {
                    format!("payment {i} failed: timeout")
                } else {
                    format!("order {i} created")
                },
                exception: if i == 10 {
                    "java.net.SocketTimeoutException".into()
                } else {
                    String::new()
                },
                ..Default::default()
            })
            .collect();
        {
            let idx = SearchIndex::open(d.path()).unwrap();
            idx.index(7, LogRecord::to_batch(&rows).unwrap());
            let start = Instant::now();
            while idx.checkpoint() < 7 {
                assert!(start.elapsed() < Duration::from_secs(10), "no commit");
                std::thread::sleep(Duration::from_millis(50));
            }
            idx.refresh().unwrap();
            let r = idx
                .search("payment AND failed", &[], None, None, 3, 0)
                .unwrap();
            assert_eq!(r.total, 10);
            assert_eq!(r.rows.len(), 3);
            assert_eq!(r.rows[0].ts, 45_000_000, "newest first");
            assert_eq!(r.rows[0].dims["pool"], "gray");
            let r = idx
                .search(
                    "",
                    &[("level".into(), "INFO".into())],
                    Some(10_000_000),
                    Some(20_000_000),
                    100,
                    0,
                )
                .unwrap();
            assert_eq!(r.total, 8);
            let r = idx
                .search("SocketTimeoutException", &[], None, None, 10, 0)
                .unwrap();
            assert_eq!(r.total, 1);
            assert!(matches!(
                idx.search("", &[("nope".into(), "x".into())], None, None, 1, 0),
                Err(StoreError::BadInput(_))
            ));
            assert!(matches!(
                idx.search("message:(unclosed", &[], None, None, 1, 0),
                Err(StoreError::BadInput(_))
            ));
            // Page two.
            let r = idx.search("failed", &[], None, None, 3, 3).unwrap();
            assert_eq!(r.rows[0].ts, 30_000_000);
        }
        // The commit payload survives a reopen: it is the WAL checkpoint of the index.
        std::thread::sleep(Duration::from_millis(300));
        let idx = SearchIndex::open(d.path()).unwrap();
        assert_eq!(idx.checkpoint(), 7);
    }
}
