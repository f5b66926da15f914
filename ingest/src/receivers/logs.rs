//! Application logs: JSON-lines (`/ingest/v1/logs`) and the Elasticsearch bulk API
//! (`/_bulk`), both mapped onto the `logs` table in two steps: [`parse_log`] reads one
//! JSON object into a row (known fields become columns; the rest are kept as a JSON
//! `attrs` object), then [`SharedMiner::template`] gives every row its template.
//!
//! The split is for speed on many cores: parsing (and tokenizing for the miner) needs no
//! shared state, so concurrent requests parse in parallel, and the shared
//! [`TemplateMiner`] is locked once per request, for the tree walk alone.
//!
//! Parsing streams over the object's entries ([`super::fields`]) instead of building a
//! `serde_json::Value` map first.

use std::sync::Mutex;

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::fields::{FieldsSeed, Scalar, Target};
use apus_parse::templates::{exception_template, tokenize, MinerConfig, TemplateMiner};
use apus_schema::time::{epoch_to_us, now_us, parse_rfc3339};
use apus_schema::{LogRecord, Micros};

/// Dimension defaults from the request (query parameters or `x-apus-*` headers).
#[derive(Debug, Clone, Default)]
pub struct Dims {
    pub project: String,
    pub env: String,
    pub pool: String,
    pub host: String,
}

fn timestamp(v: Scalar<'_>) -> Result<i64, String> {
    let us = match &v {
        Scalar::Str(s) => parse_rfc3339(s).or_else(|| s.parse::<f64>().ok().and_then(epoch_to_us)),
        Scalar::Num(n) => n.as_f64().and_then(epoch_to_us),
        _ => None,
    };
    us.ok_or_else(|| format!("unreadable timestamp {}", v.into_value()))
}

/// One log object read into a `logs` row, before templating.
#[derive(Debug)]
pub struct ParsedLog {
    row: LogRecord,
    /// Where the text to look for an exception in starts in `row.message`, if anywhere.
    exception_at: Option<usize>,
}

/// Read one JSON log object into a row (everything but its template and exception).
pub fn parse_log(json: &[u8], d: &Dims) -> Result<ParsedLog, String> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("a log record must be a JSON object".into());
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut f = FieldsSeed
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|()| f))
        .map_err(|e| format!("invalid JSON: {e}"))?;
    let message = f
        .text(Target::Message)
        .ok_or("no `message` (or `msg`, `log`) string field")?;
    let ts = match f.take(Target::Ts) {
        Some((k, v)) => timestamp(v).map_err(|e| format!("field `{k}`: {e}"))?,
        None => now_us(),
    };
    let mut level = f.text(Target::Level).unwrap_or_default();
    level.make_ascii_uppercase();
    let logger = f.text(Target::Logger).unwrap_or_default();
    let host = f.text(Target::Host).unwrap_or_else(|| d.host.clone());
    let project = f.text(Target::Project).unwrap_or_else(|| d.project.clone());
    let env = f.text(Target::Env).unwrap_or_else(|| d.env.clone());
    let pool = f.text(Target::Pool).unwrap_or_else(|| d.pool.clone());
    let request_id = f.text(Target::RequestId).unwrap_or_default();
    let tenant = f.text(Target::Tenant).unwrap_or_default();
    let tag = f.text(Target::Tag).unwrap_or_default();
    let stack = f.text(Target::Stack);
    let attrs = if f.rest.is_empty() {
        String::new()
    } else {
        Value::Object(f.rest).to_string()
    };
    let (message, exception_at) = match stack {
        Some(s) => {
            let at = message.len() + 1;
            (format!("{message}\n{s}"), Some(at))
        }
        None => {
            let at = message.contains("\n\tat ").then_some(0);
            (message, at)
        }
    };
    Ok(ParsedLog {
        row: LogRecord {
            ts: Micros(ts),
            project,
            env,
            pool,
            host,
            level,
            logger,
            message,
            template_id: String::new(),
            template: String::new(),
            exception: String::new(),
            request_id,
            tenant,
            tag,
            attrs,
        },
        exception_at,
    })
}

/// The template miner shared by the receivers. Lines are tokenized and masked before its
/// lock is taken (that needs only `max_tokens`), and the lock is held once per request.
pub struct SharedMiner {
    max_tokens: usize,
    miner: Mutex<TemplateMiner>,
}

impl SharedMiner {
    pub fn new(cfg: MinerConfig) -> SharedMiner {
        let miner = TemplateMiner::new(cfg);
        SharedMiner {
            max_tokens: miner.config().max_tokens,
            miner: Mutex::new(miner),
        }
    }

    /// Give parsed rows their template (and, where a stack trace is, their exception).
    pub fn template(&self, parsed: Vec<ParsedLog>) -> Vec<LogRecord> {
        let tokens: Vec<_> = parsed
            .iter()
            .map(|p| tokenize(self.max_tokens, p.row.message.lines().next().unwrap_or("")))
            .collect();
        let mut miner = self.miner.lock().unwrap_or_else(|p| p.into_inner());
        let found: Vec<_> = parsed
            .iter()
            .zip(&tokens)
            .map(|(p, t)| {
                let m = miner.add_tokens(t);
                let exception = p
                    .exception_at
                    .and_then(|at| exception_template(&p.row.message[at..], &mut miner))
                    .map(|(class, _)| class)
                    .unwrap_or_default();
                (m, exception)
            })
            .collect();
        drop(miner);
        drop(tokens);
        parsed
            .into_iter()
            .zip(found)
            .map(|(p, (m, exception))| LogRecord {
                template_id: format!("{:016x}", m.template_id),
                template: m.template.to_string(),
                exception,
                ..p.row
            })
            .collect()
    }
}

/// Map one JSON log object onto a templated `logs` row ([`parse_log`], then
/// [`SharedMiner::template`]).
pub fn map_log(json: &[u8], d: &Dims, miner: &SharedMiner) -> Result<LogRecord, String> {
    let p = parse_log(json, d)?;
    Ok(miner.template(vec![p]).remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dims() -> Dims {
        Dims {
            project: "shop".into(),
            env: "prod".into(),
            pool: "gray".into(),
            host: "h0".into(),
        }
    }

    fn map(v: Value, m: &SharedMiner) -> Result<LogRecord, String> {
        map_log(v.to_string().as_bytes(), &dims(), m)
    }

    #[test]
    fn maps_known_fields_and_keeps_the_rest() {
        let m = SharedMiner::new(MinerConfig::default());
        let r = map(
            json!({"@timestamp": "2024-01-02T03:04:05Z", "log": {"level": "warn", "logger": "app.Db"},
                   "message": "user 42 logged in", "host": {"name": "web-1"}, "user": "x", "request_id": "r1"}),
            &m,
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
        let r2 = map(json!({"msg": "user 7 logged in", "ts": 1704164645}), &m).unwrap();
        assert_eq!(r2.template_id, r.template_id, "same template");
        let e = map(json!({"message": "boom", "exception": "java.lang.IllegalStateException: bad state 7\n\tat a.B.c(B.java:1)"}), &m).unwrap();
        assert_eq!(e.exception, "java.lang.IllegalStateException");
        assert_eq!(
            e.message,
            "boom\njava.lang.IllegalStateException: bad state 7\n\tat a.B.c(B.java:1)"
        );
        let inline = map(
            json!({"message": "failed\njava.io.IOException: gone\n\tat a.B.c(B.java:1)"}),
            &m,
        )
        .unwrap();
        assert_eq!(inline.exception, "java.io.IOException");
        assert!(map(json!({"nomessage": 1}), &m)
            .unwrap_err()
            .contains("no `message`"));
        assert!(map(json!([1, 2]), &m)
            .unwrap_err()
            .contains("must be a JSON object"));
        assert!(map(json!({"message": "x", "ts": "garbage"}), &m)
            .unwrap_err()
            .contains("field `ts`: unreadable timestamp"));
        assert!(map(json!({"message": "x", "time": {"a": 1}}), &m)
            .unwrap_err()
            .contains("field `time`: unreadable timestamp"));
        for bad in [
            &b"{\"message\": \"x\""[..],
            b"{\"message\": \"x\"} trailing",
            b"",
        ] {
            assert!(map_log(bad, &dims(), &m).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alias_precedence_across_top_level_dotted_and_nested_keys() {
        let m = SharedMiner::new(MinerConfig::default());
        // `level` beats a nested `log.level`, which beats `severity`; losers stay in attrs.
        let r = map(
            json!({"msg": "a", "severity": "info", "log": {"level": "warn"}, "message": "b"}),
            &m,
        )
        .unwrap();
        assert_eq!((r.message.as_str(), r.level.as_str()), ("b", "WARN"));
        assert_eq!(r.attrs, r#"{"msg":"a","severity":"info"}"#);
        // A literal dotted key counts as the alias too; numbers and booleans become text.
        let r = map(
            json!({"text": "t", "log.level": 3, "tenant": 42, "tag": true, "pool": null}),
            &m,
        )
        .unwrap();
        assert_eq!(
            (
                r.message.as_str(),
                r.level.as_str(),
                r.tenant.as_str(),
                r.tag.as_str()
            ),
            ("t", "3", "42", "true")
        );
        assert_eq!(
            (r.pool.as_str(), r.attrs.as_str()),
            ("gray", r#"{"pool":null}"#)
        );
        // An object under a message alias is not the message: it stays in attrs.
        let r = map(json!({"log": {"file": "x.log"}, "message": "m"}), &m).unwrap();
        assert_eq!(r.attrs, r#"{"log":{"file":"x.log"}}"#);
        // `host.name` (nested) beats `host`; emptied parents disappear.
        let r = map(
            json!({"message": "m", "hostname": "h2", "host": {"name": "h1"}}),
            &m,
        )
        .unwrap();
        assert_eq!(
            (r.host.as_str(), r.attrs.as_str()),
            ("h1", r#"{"hostname":"h2"}"#)
        );
        // Escaped strings and keys are decoded.
        let r = map_log(
            br#"{"mess\u0061ge": "caf\u00e9 \"x\"", "level": "error"}"#,
            &dims(),
            &m,
        )
        .unwrap();
        assert_eq!(
            (r.message.as_str(), r.level.as_str()),
            ("café \"x\"", "ERROR")
        );
        // A repeated key: the last value wins, as in a JSON map.
        let r = map_log(br#"{"message": "a", "message": "b"}"#, &dims(), &m).unwrap();
        assert_eq!((r.message.as_str(), r.attrs.as_str()), ("b", ""));
    }
}
