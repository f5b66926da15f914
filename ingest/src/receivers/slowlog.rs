//! The streaming slow-log receiver: the body is read chunk by chunk through the
//! incremental parser and written in batches, so a log of hundreds of MB never sits in
//! memory whole.

use axum::body::Body;
use futures::StreamExt;

use super::Dims;
use crate::metrics as m;
use crate::pipeline::Pipeline;
use crate::IngestError;
use apus_parse::fingerprint::{fingerprint, fingerprint_id};
use apus_parse::slowlog::{SlowEntry, SlowLogParser};
use apus_schema::time::now_us;
use apus_schema::{Micros, SlowSqlRecord};

/// A batch is written at this many entries...
const BATCH: usize = 8192;
/// ... or this many bytes of statements, whichever comes first: a batch of 8192 entries of
/// 1 MiB each would exceed the WAL's record limit and be refused after the batches before
/// it were stored (so a retry would duplicate them).
const BATCH_BYTES: usize = 16 << 20;

/// Map a parsed entry onto a `slow_sql` row.
pub fn to_row(e: SlowEntry, d: &Dims) -> SlowSqlRecord {
    let fp = fingerprint(&e.query);
    SlowSqlRecord {
        ts: Micros(if e.ts_us > 0 { e.ts_us } else { now_us() }),
        project: d.project.clone(),
        env: d.env.clone(),
        pool: d.pool.clone(),
        db: e.db,
        user: e.user,
        client: e.client,
        fingerprint_id: fingerprint_id(&fp),
        fingerprint: fp,
        sample: e.query,
        query_time: e.query_time,
        lock_time: e.lock_time,
        rows_sent: e.rows_sent,
        rows_examined: e.rows_examined,
    }
}

async fn flush(p: &Pipeline, d: &Dims, entries: &mut Vec<SlowEntry>) -> Result<usize, IngestError> {
    let (batch, d) = (std::mem::take(entries), d.clone());
    // Fingerprinting is CPU work: off the async threads.
    let rows: Vec<SlowSqlRecord> =
        tokio::task::spawn_blocking(move || batch.into_iter().map(|e| to_row(e, &d)).collect())
            .await
            .map_err(|e| IngestError::Store(e.to_string()))?;
    p.write(&rows).await?;
    Ok(rows.len())
}

/// Parse and store a streamed slow log; returns the number of entries stored.
pub async fn ingest_stream(p: &Pipeline, d: &Dims, body: Body) -> Result<usize, IngestError> {
    let mut parser = SlowLogParser::new();
    let mut entries = Vec::new();
    let mut stored = 0;
    let (mut bytes, mut counted) = (0usize, 0usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| IngestError::BadInput(format!("reading body: {e}")))?;
        metrics::counter!(m::BYTES, "receiver" => "slowlog").increment(chunk.len() as u64);
        parser.push(&chunk, &mut entries);
        bytes += entries[counted..]
            .iter()
            .map(|e| e.query.len() * 2 + 256)
            .sum::<usize>();
        counted = entries.len();
        if entries.len() >= BATCH || bytes >= BATCH_BYTES {
            stored += flush(p, d, &mut entries).await?;
            (bytes, counted) = (0, 0);
        }
    }
    parser.finish(&mut entries);
    stored += flush(p, d, &mut entries).await?;
    Ok(stored)
}
