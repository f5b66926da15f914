//! `apus collect`: a small file tailer that ships application logs and slow logs to an
//! ingest node.
//!
//! Per file it keeps `(device, inode, offset)` in a state file, replaced atomically after
//! every acknowledged batch, so a restart resumes where the last acknowledged batch ended:
//! nothing is skipped, and at most the one batch in flight at a crash is sent again.
//! Rotation (rename + new file) is detected by inode: the old file is read to its end
//! before switching; a truncated file is read again from the start. Only complete lines
//! are shipped. For `logs`, a multi-line Java stack trace (`\tat …`, `Caused by: …`,
//! `... N more`, other indented lines) stays one event with the line before it; for
//! `slowlog`, text is shipped up to the last entry boundary so entries are never split.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::IngestError;

/// Collector configuration (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Base URL of the ingest node.
    #[serde(default = "default_url")]
    pub ingest_url: String,
    /// The token presented to the ingest node (a `shipper` token there). Default:
    /// `$APUS_INGEST_TOKEN`.
    #[serde(default)]
    pub token: Option<String>,
    /// Where offsets are checkpointed.
    pub state_file: PathBuf,
    /// Poll interval in milliseconds.
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Most bytes read from one file per batch.
    #[serde(default = "default_batch")]
    pub batch_bytes: usize,
    /// Files to tail.
    pub files: Vec<FileSpec>,
}

/// One tailed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path of the (current) file.
    pub path: PathBuf,
    /// What the file holds (default `logs`).
    #[serde(default)]
    pub kind: FileKind,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub env: String,
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub host: String,
}

fn default_url() -> String {
    "http://127.0.0.1:9200".into()
}
fn default_poll() -> u64 {
    500
}
fn default_batch() -> usize {
    4 << 20
}
/// What a tailed file holds; an unknown kind is refused when the config is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Application logs: one event per line, Java stack traces joined to their line.
    #[default]
    Logs,
    /// A MySQL/MariaDB slow query log, shipped up to the last complete entry.
    Slowlog,
}

/// Checkpointed position of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

/// Whether a line continues the previous event (Java stack traces and indented lines).
pub fn is_continuation(line: &str) -> bool {
    let t = line.trim_start();
    line.starts_with([' ', '\t']) && !t.is_empty()
        || t.starts_with("at ") && line.starts_with(char::is_whitespace)
        || t.starts_with("Caused by:")
        || t.starts_with("Suppressed:")
        || (t.starts_with("... ") && t.ends_with(" more"))
}

/// Group complete lines into events. Returns the events and how many bytes of `text` they
/// cover; the last event is held back (it may continue in the next read) unless `idle`.
pub fn log_events(text: &str, idle: bool) -> (Vec<String>, usize) {
    let mut events: Vec<(String, usize)> = Vec::new(); // (event, end offset)
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let end = pos + line.len();
        pos = end;
        if !line.ends_with('\n') {
            break; // partial line: not yet
        }
        let l = line.trim_end_matches(['\n', '\r']);
        match events.last_mut() {
            Some((e, e_end)) if is_continuation(l) => {
                e.push('\n');
                e.push_str(l);
                *e_end = end;
            }
            _ if l.trim().is_empty() => {
                if let Some((_, e_end)) = events.last_mut() {
                    *e_end = end;
                }
            }
            _ => events.push((l.to_string(), end)),
        }
    }
    if !idle && !events.is_empty() {
        events.pop();
    }
    let covered = events.last().map_or(0, |(_, e)| *e);
    (events.into_iter().map(|(e, _)| e).collect(), covered)
}

/// How many bytes of slow-log `text` end at a complete entry (before the last `# Time:`
/// or `# User@Host:` header that starts an entry), or all complete lines when `idle`.
pub fn slowlog_cut(text: &str, idle: bool) -> usize {
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if idle {
        return complete;
    }
    let mut cut = 0;
    let mut pos = 0;
    let mut prev_header = false;
    for line in text[..complete].split_inclusive('\n') {
        let header = line.starts_with("# Time:") || line.starts_with("# User@Host:");
        if header && !prev_header {
            cut = pos;
        }
        prev_header = header;
        pos += line.len();
    }
    cut
}

struct Tail {
    spec: FileSpec,
    pos: Position,
    idle_polls: u32,
    /// The open file being read; kept across a rotation until its end is shipped.
    file: Option<File>,
}

fn load_state(path: &Path) -> HashMap<String, Position> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn save_state(path: &Path, tails: &[Tail]) -> Result<(), IngestError> {
    let map: HashMap<String, Position> = tails
        .iter()
        .map(|t| (t.spec.path.display().to_string(), t.pos))
        .collect();
    let body = serde_json::to_vec(&map).map_err(|e| IngestError::Store(e.to_string()))?;
    Ok(apus_wal::write_atomic(path, &body)?)
}

fn post(client: &reqwest::blocking::Client, url: &str, body: Vec<u8>) -> Result<(), IngestError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.post(url).body(body.clone()).send() {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                tracing::warn!(status = %r.status(), "ingest busy, retrying")
            }
            Ok(r) => {
                // The node refused the batch (its dead-letter table has it): move on.
                tracing::error!(status = %r.status(), url, "ingest refused a batch");
                return Ok(());
            }
            Err(e) => tracing::warn!(error = %e, "ingest unreachable, retrying"),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Open (or keep) the file at the checkpointed inode; follow rotation and truncation.
fn reopen(t: &mut Tail) -> Result<bool, IngestError> {
    let Ok(meta) = std::fs::metadata(&t.spec.path) else {
        return Ok(t.file.is_some());
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    match &t.file {
        Some(f) if (t.pos.dev, t.pos.ino) == (dev, ino) => {
            if f.metadata()?.len() < t.pos.offset {
                tracing::warn!(path = %t.spec.path.display(), "file truncated, reading from the start");
                t.pos.offset = 0;
            }
        }
        Some(_) if t.idle_polls < 2 => {} // rotated: drain the old file first
        _ => {
            if (t.pos.dev, t.pos.ino) != (dev, ino) {
                if t.pos.ino != 0 {
                    tracing::info!(path = %t.spec.path.display(), "file rotated, following the new one");
                }
                t.pos = Position {
                    dev,
                    ino,
                    offset: 0,
                };
            }
            t.file = Some(File::open(&t.spec.path)?);
            t.idle_polls = 0;
        }
    }
    Ok(true)
}

/// Read what is new in one file; ship it; returns whether anything was shipped.
fn step(
    t: &mut Tail,
    cfg: &CollectConfig,
    client: &reqwest::blocking::Client,
) -> Result<bool, IngestError> {
    if !reopen(t)? {
        return Ok(false);
    }
    let Some(f) = t.file.as_mut() else {
        return Ok(false);
    };
    f.seek(SeekFrom::Start(t.pos.offset))?;
    let mut buf = Vec::new();
    f.take(cfg.batch_bytes as u64).read_to_end(&mut buf)?;
    if buf.is_empty() {
        t.idle_polls += 1;
        if t.idle_polls >= 2 {
            // Maybe rotated: let `reopen` switch once the old file is drained.
            let rotated = std::fs::metadata(&t.spec.path)
                .is_ok_and(|m| (m.dev(), m.ino()) != (t.pos.dev, t.pos.ino));
            if rotated {
                t.file = None;
            }
        }
        return Ok(false);
    }
    let text = String::from_utf8_lossy(&buf);
    let idle = t.idle_polls >= 1;
    let q = format!(
        "project={}&env={}&pool={}&host={}",
        t.spec.project, t.spec.env, t.spec.pool, t.spec.host
    );
    let base = cfg.ingest_url.trim_end_matches('/');
    let covered = if t.spec.kind == FileKind::Slowlog {
        let n = slowlog_cut(&text, idle);
        if n > 0 {
            post(
                client,
                &format!("{base}/ingest/v1/slowlog?{q}"),
                text[..n].as_bytes().to_vec(),
            )?;
        }
        n
    } else {
        let (events, n) = log_events(&text, idle);
        if !events.is_empty() {
            let mut body = Vec::new();
            for e in &events {
                serde_json::to_writer(&mut body, &serde_json::json!({ "message": e }))
                    .map_err(|e| IngestError::Store(e.to_string()))?;
                body.push(b'\n');
            }
            post(client, &format!("{base}/ingest/v1/logs?{q}"), body)?;
        }
        n
    };
    if covered == 0 {
        t.idle_polls += 1;
        return Ok(false);
    }
    // `covered` counts bytes of the lossy text; the offset must count bytes of the file.
    t.pos.offset += raw_offset(&text, covered, &buf) as u64;
    t.idle_polls = 0;
    Ok(true)
}

/// The file offset (in `raw`) of `covered` bytes of `text`, its lossy UTF-8 reading. Both
/// cut after a newline, and a newline byte maps to itself (a replacement character never
/// swallows one), so the k-th newline of one is the k-th of the other; invalid bytes,
/// which become 3-byte replacement characters, no longer shift the offset.
fn raw_offset(text: &str, covered: usize, raw: &[u8]) -> usize {
    if text.len() == raw.len() {
        return covered;
    }
    let lines = text.as_bytes()[..covered]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    if lines == 0 {
        return 0;
    }
    nth_newline(raw, lines).map_or(0, |i| i + 1)
}

fn nth_newline(raw: &[u8], n: usize) -> Option<usize> {
    raw.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map(|(i, _)| i)
}

/// Tail the configured files forever (or `rounds` polls, for tests).
pub fn run(cfg: CollectConfig, rounds: Option<u64>) -> Result<(), IngestError> {
    let state = load_state(&cfg.state_file);
    let mut tails: Vec<Tail> = cfg
        .files
        .iter()
        .map(|s| Tail {
            pos: state
                .get(&s.path.display().to_string())
                .copied()
                .unwrap_or_default(),
            spec: s.clone(),
            idle_polls: 0,
            file: None,
        })
        .collect();
    let mut headers = reqwest::header::HeaderMap::new();
    let token = cfg
        .token
        .clone()
        .or_else(|| std::env::var("APUS_INGEST_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| IngestError::BadInput("collect: token is not a valid header".into()))?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .map_err(|e| IngestError::Store(e.to_string()))?;
    let mut n = 0;
    loop {
        let mut moved = false;
        for t in &mut tails {
            match step(t, &cfg, &client) {
                Ok(m) => moved |= m,
                Err(e) => tracing::error!(path = %t.spec.path.display(), error = %e, "tail failed"),
            }
        }
        if moved {
            save_state(&cfg.state_file, &tails)?;
        } else {
            std::thread::sleep(Duration::from_millis(cfg.poll_ms));
        }
        n += 1;
        if rounds.is_some_and(|r| n >= r) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_file_bytes_not_replacement_characters() {
        let raw = b"caf\xe9 ok\nline two\npartial";
        let text = String::from_utf8_lossy(raw);
        let (events, covered) = log_events(&text, false);
        assert_eq!(events, vec!["caf\u{fffd} ok"]);
        // The lossy text is 2 bytes longer; the offset must land after the file's first
        // newline, not 2 bytes into the second line.
        assert_eq!(raw_offset(&text, covered, raw), 8);
        assert_eq!(&raw[8..12], b"line");
        assert_eq!(raw_offset("a\n", 2, b"a\n"), 2);
    }

    #[test]
    fn stack_traces_stay_one_event() {
        let text = "INFO start\nERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\nCaused by: java.io.IOException: y\n\t... 3 more\nINFO next\nINFO partial";
        let (ev, n) = log_events(text, false);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(ev[2], "java.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\nCaused by: java.io.IOException: y\n\t... 3 more");
        assert_eq!(
            &text[n..],
            "INFO next\nINFO partial",
            "last complete event held back"
        );
        let (ev, n) = log_events("INFO a\nINFO b\n", true);
        assert_eq!((ev.len(), n), (2, 14));
    }

    #[test]
    fn file_kinds_are_checked_when_read() {
        let f: FileSpec = serde_json::from_str(r#"{"path": "/var/log/a.log"}"#).unwrap();
        assert_eq!(f.kind, FileKind::Logs);
        let f: FileSpec = serde_json::from_str(r#"{"path": "/s.log", "kind": "slowlog"}"#).unwrap();
        assert_eq!(f.kind, FileKind::Slowlog);
        let e = serde_json::from_str::<FileSpec>(r#"{"path": "/s.log", "kind": "slow_log"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `slow_log`"), "{e}");
    }

    #[test]
    fn slowlog_is_cut_at_entry_boundaries() {
        let t = "# Time: 1\n# User@Host: a\n# Query_time: 1\nselect 1;\n# Time: 2\n# User@Host: b\nselect";
        let n = slowlog_cut(t, false);
        assert_eq!(
            &t[..n],
            "# Time: 1\n# User@Host: a\n# Query_time: 1\nselect 1;\n"
        );
        assert_eq!(slowlog_cut(t, true), t.rfind('\n').unwrap() + 1);
    }
}
