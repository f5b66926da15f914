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

const BATCH: usize = 8192;

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
    let rows: Vec<SlowSqlRecord> = entries.drain(..).map(|e| to_row(e, d)).collect();
    p.write(&rows).await?;
    Ok(rows.len())
}

/// Parse and store a streamed slow log; returns the number of entries stored.
pub async fn ingest_stream(p: &Pipeline, d: &Dims, body: Body) -> Result<usize, IngestError> {
    let mut parser = SlowLogParser::new();
    let mut entries = Vec::new();
    let mut stored = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| IngestError::BadInput(format!("reading body: {e}")))?;
        metrics::counter!(m::BYTES, "receiver" => "slowlog").increment(chunk.len() as u64);
        parser.push(&chunk, &mut entries);
        if entries.len() >= BATCH {
            stored += flush(p, d, &mut entries).await?;
        }
    }
    parser.finish(&mut entries);
    stored += flush(p, d, &mut entries).await?;
    Ok(stored)
}
