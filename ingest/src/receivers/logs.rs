//! Application logs: JSON-lines (`/ingest/v1/logs`) and the Elasticsearch bulk API
//! (`/_bulk`), both mapped onto the `logs` table by [`map_log`]. Known fields become
//! columns; the rest are kept as a JSON `attrs` object. Every line gets a template.

use serde_json::{Map, Value};

use crate::schema::{LogRecord, Micros};
use crate::templates::{exception_template, TemplateMiner};
use crate::time::{epoch_to_us, now_us, parse_rfc3339};

/// Dimension defaults from the request (query parameters or `x-apus-*` headers).
#[derive(Debug, Clone, Default)]
pub struct Dims {
    pub project: String,
    pub env: String,
    pub pool: String,
    pub host: String,
}

/// Look a possibly dotted key up in nested objects or as a literal dotted key.
fn lookup<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(key) {
        return Some(v);
    }
    let (head, rest) = key.split_once('.')?;
    lookup(obj.get(head)?.as_object()?, rest)
}

fn take_str(obj: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    for k in keys {
        if let Some(v) = lookup(obj, k) {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            remove(obj, k);
            return Some(s);
        }
    }
    None
}

fn remove(obj: &mut Map<String, Value>, key: &str) {
    if obj.remove(key).is_some() {
        return;
    }
    if let Some((head, rest)) = key.split_once('.') {
        if let Some(Value::Object(inner)) = obj.get_mut(head) {
            remove(inner, rest);
            if inner.is_empty() {
                obj.remove(head);
            }
        }
    }
}

fn timestamp(obj: &mut Map<String, Value>) -> Result<i64, String> {
    for k in ["@timestamp", "timestamp", "ts", "time"] {
        if let Some(v) = obj.get(k) {
            let us = match v {
                Value::String(s) => {
                    parse_rfc3339(s).or_else(|| s.parse::<f64>().ok().and_then(epoch_to_us))
                }
                Value::Number(n) => n.as_f64().and_then(epoch_to_us),
                _ => None,
            }
            .ok_or_else(|| format!("field `{k}`: unreadable timestamp {v}"))?;
            obj.remove(k);
            return Ok(us);
        }
    }
    Ok(now_us())
}

/// Map one JSON log object onto a `logs` row.
pub fn map_log(v: Value, d: &Dims, miner: &mut TemplateMiner) -> Result<LogRecord, String> {
    let Value::Object(mut obj) = v else {
        return Err("a log record must be a JSON object".into());
    };
    let message = take_str(&mut obj, &["message", "msg", "log", "@message", "text"])
        .ok_or("no `message` (or `msg`, `log`) string field")?;
    let ts = timestamp(&mut obj)?;
    let level = take_str(
        &mut obj,
        &["level", "log.level", "severity", "lvl", "loglevel"],
    )
    .unwrap_or_default();
    let logger = take_str(
        &mut obj,
        &["logger", "log.logger", "logger_name", "loggerName"],
    )
    .unwrap_or_default();
    let host =
        take_str(&mut obj, &["host.name", "host", "hostname"]).unwrap_or_else(|| d.host.clone());
    let project = take_str(&mut obj, &["project", "service.name", "app"])
        .unwrap_or_else(|| d.project.clone());
    let env = take_str(&mut obj, &["env", "environment", "service.environment"])
        .unwrap_or_else(|| d.env.clone());
    let pool = take_str(&mut obj, &["pool"]).unwrap_or_else(|| d.pool.clone());
    let request_id = take_str(
        &mut obj,
        &[
            "request_id",
            "x-request-id",
            "requestId",
            "trace.id",
            "trace_id",
        ],
    )
    .unwrap_or_default();
    let tenant = take_str(&mut obj, &["tenant", "tenant_id", "tenantId"]).unwrap_or_default();
    let tag = take_str(&mut obj, &["tag", "env_tag", "lane"]).unwrap_or_default();
    let stack = take_str(
        &mut obj,
        &[
            "exception",
            "stack_trace",
            "error.stack_trace",
            "stacktrace",
            "exc_info",
        ],
    );
    let first_line = message.lines().next().unwrap_or("");
    let m = miner.add(first_line);
    let exception = stack
        .as_deref()
        .or_else(|| message.contains("\n\tat ").then_some(message.as_str()))
        .and_then(|s| exception_template(s, miner))
        .map(|(class, _)| class)
        .unwrap_or_default();
    let attrs = if obj.is_empty() {
        String::new()
    } else {
        Value::Object(obj).to_string()
    };
    Ok(LogRecord {
        ts: Micros(ts),
        project,
        env,
        pool,
        host,
        level: level.to_ascii_uppercase(),
        logger,
        message: match stack {
            Some(s) => format!("{message}\n{s}"),
            None => message,
        },
        template_id: format!("{:016x}", m.template_id),
        template: m.template.to_string(),
        exception,
        request_id,
        tenant,
        tag,
        attrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::MinerConfig;
    use serde_json::json;

    #[test]
    fn maps_known_fields_and_keeps_the_rest() {
        let mut m = TemplateMiner::new(MinerConfig::default());
        let d = Dims {
            project: "shop".into(),
            env: "prod".into(),
            pool: "gray".into(),
            host: "h0".into(),
        };
        let r = map_log(
            json!({"@timestamp": "2024-01-02T03:04:05Z", "log": {"level": "warn", "logger": "app.Db"},
                   "message": "user 42 logged in", "host": {"name": "web-1"}, "user": "x", "request_id": "r1"}),
            &d,
            &mut m,
        )
        .unwrap();
        assert_eq!(r.ts, Micros(1_704_164_645_000_000));
        assert_eq!(
            (r.level.as_str(), r.logger.as_str(), r.host.as_str()),
            ("WARN", "app.Db", "web-1")
        );
        assert_eq!(
            (r.project.as_str(), r.pool.as_str(), r.request_id.as_str()),
            ("shop", "gray", "r1")
        );
        assert_eq!(r.attrs, r#"{"user":"x"}"#);
        assert_eq!(r.template_id.len(), 16);
        let r2 = map_log(
            json!({"msg": "user 7 logged in", "ts": 1704164645}),
            &d,
            &mut m,
        )
        .unwrap();
        assert_eq!(r2.template_id, r.template_id, "same template");
        let e = map_log(json!({"message": "boom", "exception": "java.lang.IllegalStateException: bad state 7\n\tat a.B.c(B.java:1)"}), &d, &mut m).unwrap();
        assert_eq!(e.exception, "java.lang.IllegalStateException");
        assert!(map_log(json!({"nomessage": 1}), &d, &mut m)
            .unwrap_err()
            .contains("no `message`"));
        assert!(map_log(json!([1, 2]), &d, &mut m).is_err());
        assert!(
            map_log(json!({"message": "x", "ts": "garbage"}), &d, &mut m)
                .unwrap_err()
                .contains("unreadable timestamp")
        );
    }
}
