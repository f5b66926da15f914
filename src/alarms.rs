//! Wiring of the alarm evaluator into the long-running roles: where its rows go (the
//! in-process pipeline under `apus run`, ClickHouse under `apus query`), and the gateway's
//! upstream health fed into the `metrics` table so `unhealthy_upstreams` rules see it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apus_ingest::Pipeline;
use apus_query::alarm::{AlarmSettings, Record, Writer};
use apus_schema::{MetricRecord, Micros};

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

/// Parse `name{a="x",b="y"} value` lines of one metric out of Prometheus text.
fn samples(text: &str, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let mut m = HashMap::new();
        for kv in labels.split("\",") {
            if let Some((k, v)) = kv.split_once("=\"") {
                m.insert(k.trim().to_string(), v.trim_end_matches('"').to_string());
            }
        }
        out.push((m, v));
    }
    out
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
            let rows: Vec<MetricRecord> = samples(&render(), apus_query::signals::UPSTREAM_HEALTHY)
                .into_iter()
                .map(|(l, value)| {
                    let pool = l.get("pool").cloned().unwrap_or_default();
                    let (project, env) = pool_scope.get(&pool).cloned().unwrap_or_default();
                    let labels: std::collections::BTreeMap<&str, &str> =
                        l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    MetricRecord {
                        ts: Micros(ts),
                        name: apus_query::signals::UPSTREAM_HEALTHY.into(),
                        labels: serde_json::to_string(&labels).unwrap_or_default(),
                        value,
                        project,
                        env,
                        pool,
                        host: l.get("server").cloned().unwrap_or_default(),
                    }
                })
                .collect();
            if let Err(e) = pipeline.write(&rows).await {
                tracing::warn!(error = %e, "upstream health not stored");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lines_parse() {
        let t = "# TYPE apus_gateway_upstream_healthy gauge\n\
                 apus_gateway_upstream_healthy{pool=\"gray\",server=\"127.0.0.1:81\"} 0\n\
                 apus_gateway_upstream_healthy_x{pool=\"a\"} 1\n";
        let s = samples(t, "apus_gateway_upstream_healthy");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0["server"], "127.0.0.1:81");
        assert_eq!(s[0].1, 0.0);
    }
}
