//! Wiring of the alarm evaluator into the long-running roles: where its rows go (the
//! in-process pipeline under `apus run`, ClickHouse under `apus query`), and the gateway's
//! upstream health fed into the `metrics` table so `unhealthy_upstreams` rules see it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apus_ingest::Pipeline;
use apus_query::alarm::{AlarmSettings, Record, Writer};
use apus_schema::MetricRecord;

/// What the query tier needs to run the evaluator.
pub struct AlarmWiring {
    pub settings: AlarmSettings,
    pub writer: Writer,
    pub landed: tokio::sync::watch::Receiver<u64>,
    pub state_dir: PathBuf,
}

/// Rows go through the pipeline's WAL, like every other row.
pub fn pipeline_writer(p: Arc<Pipeline>) -> Writer {
    Arc::new(move |rec| {
        let p = p.clone();
        Box::pin(async move {
            let r = match rec {
                Record::Alarms(rows) => p.write(&rows).await,
                Record::Change(c) => p.write(&[c]).await,
            };
            r.map(|_| ()).map_err(|e| e.to_string())
        })
    })
}

/// Rows go straight to ClickHouse (a query node has no WAL of its own; failures are
/// retried by the evaluator).
pub fn clickhouse_writer(client: apus_store::clickhouse::ChClient) -> Writer {
    let client = Arc::new(client);
    Arc::new(move |rec| {
        let client = client.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                use apus_schema::Row;
                let (table, batch) = match rec {
                    Record::Alarms(rows) => (
                        apus_schema::Table::Alarms,
                        apus_schema::AlarmRecord::to_batch(&rows),
                    ),
                    Record::Change(c) => (
                        apus_schema::Table::Changes,
                        apus_schema::ChangeRecord::to_batch(&[c]),
                    ),
                };
                let batch = batch.map_err(|e| e.to_string())?;
                let mut body = Vec::new();
                let seq = apus_schema::time::now_us() as u64;
                apus_store::clickhouse::rowbinary::encode(&batch, "query", seq, &mut body)
                    .map_err(|e| e.to_string())?;
                client.insert(table, body).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    })
}

/// Every `every`, write the gateway's upstream health gauges into the `metrics` table
/// (with the project and env of the routes using each pool), as a Prometheus scrape of
/// the admin `/metrics` would.
pub fn feed_health(
    rt: &tokio::runtime::Handle,
    pipeline: Arc<Pipeline>,
    render: apus_ingest::receivers::MetricsRender,
    pool_scope: HashMap<String, (String, String)>,
    every: Duration,
) {
    rt.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let ts = apus_schema::time::now_us();
            let name = apus_query::signals::UPSTREAM_HEALTHY;
            // The same parser as `POST /ingest/v1/metrics` (labels JSON, pool lifted).
            let rows: Vec<MetricRecord> = render()
                .lines()
                .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
                .filter_map(|l| apus_ingest::receivers::parse_text_line(l, ts)?.ok())
                .map(|mut r| {
                    if let Some((project, env)) = pool_scope.get(&r.pool) {
                        (r.project, r.env) = (project.clone(), env.clone());
                    }
                    r
                })
                .collect();
            if let Err(e) = pipeline.write(&rows).await {
                tracing::warn!(error = %e, "upstream health not stored");
            }
        }
    });
}
