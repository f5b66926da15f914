//! MySQL / MariaDB / Percona Server slow query log parsing, streaming: bytes go in in chunks
//! of any size (a boundary may fall mid-line or mid-UTF-8 character) and [`SlowEntry`]s come
//! out as soon as the next entry's first header shows the previous one is complete.
//!
//! An entry is a run of `# ...` header lines (`# Time:`, `# User@Host:`, `# Thread_id:` /
//! `# Schema:`, `# Query_time:`, `# Rows_affected:`, and any extra `# key: value` lines, which
//! are ignored), then optionally `use db;` and `SET timestamp=N;`, then the statement (one or
//! more lines) or `# administrator command: X;`. Server banners (`... started with:`,
//! `Tcp port:`, `Time Id Command Argument`) are skipped wherever they appear. An entry
//! without `# Time:` inherits the last one seen, as MariaDB writes only one per second;
//! `SET timestamp` (when present) wins, as it is zone-free. Likewise an entry without
//! `use db;` (or a `Schema:` header) is in the database of the last `use`, which the server
//! writes only on change.
//!
//! A statement with no header before it (the head of a log cut mid-entry) is skipped.
//!
//! Invariants: never panics on any bytes; memory is bounded — a line is kept up to
//! [`MAX_LINE`] bytes and a statement up to [`MAX_QUERY`] bytes (both cut at a character
//! boundary, the rest dropped); invalid UTF-8 becomes U+FFFD.

mod header;

use header::{is_banner, parse_header, parse_set_preamble, parse_use, Header};

/// Longest statement kept; longer ones are cut at a character boundary.
pub const MAX_QUERY: usize = 1 << 20;
/// Longest line kept (a statement line can be as long as a statement).
pub const MAX_LINE: usize = MAX_QUERY + 1024;

/// One slow-log entry.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlowEntry {
    /// When the statement ran, µs since the epoch (UTC); 0 if the log never said.
    pub ts_us: i64,
    pub user: String,
    /// Host name, or the IP when the host is empty.
    pub client: String,
    pub db: String,
    pub thread_id: u64,
    /// Seconds.
    pub query_time: f64,
    /// Seconds.
    pub lock_time: f64,
    pub rows_sent: u64,
    pub rows_examined: u64,
    pub rows_affected: u64,
    pub bytes_sent: u64,
    /// The statement without the trailing `;` (as pt-query-digest keeps it), lines joined by
    /// `\n`; `administrator command: Quit` for administrator commands.
    pub query: String,
}

/// Incremental slow-log parser; see the module doc.
#[derive(Debug, Default)]
pub struct SlowLogParser {
    /// The unfinished last line of the bytes pushed so far (at most [`MAX_LINE`] bytes).
    partial: Vec<u8>,
    /// The current line outgrew [`MAX_LINE`]: drop bytes until its newline.
    skipping_rest_of_line: bool,
    /// The last `# Time:` seen, for entries that have none.
    last_time_us: i64,
    /// The last `use db;` seen: the server writes one only when the database differs from
    /// the previous entry's (whichever thread), so entries without one are in this database.
    last_use_db: String,
    /// A banner or header line was seen: the input looks like a slow log.
    saw_slow_log: bool,
    cur: Builder,
}

/// The entry being assembled.
#[derive(Debug, Default)]
struct Builder {
    entry: SlowEntry,
    /// A `# User@Host:` (or any counter line) was seen: the entry has started.
    has_header: bool,
    has_user_host: bool,
    has_query: bool,
    /// A `Schema:` header named the database (MariaDB, Percona): no inheriting then.
    has_schema: bool,
    /// The statement's last line ended with `;`, so a `#` line now starts the next entry
    /// rather than continuing a statement with a comment line.
    query_complete: bool,
    /// `use db;` seen before the statement; it is the statement if no other comes.
    use_line: Option<String>,
    set_ts_us: Option<i64>,
}

impl SlowLogParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; appends every entry they complete to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SlowEntry>) {
        let mut rest = chunk;
        if !self.partial.is_empty() || self.skipping_rest_of_line {
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.keep_partial(rest);
                return;
            };
            self.keep_partial(&rest[..nl]);
            rest = &rest[nl + 1..];
            let line = std::mem::take(&mut self.partial);
            self.skipping_rest_of_line = false;
            self.line(&line, out);
            self.partial = line;
            self.partial.clear();
        }
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            rest = &rest[nl + 1..];
            if line.len() > MAX_LINE {
                self.line(&line[..MAX_LINE], out);
            } else {
                self.line(line, out);
            }
        }
        self.keep_partial(rest);
    }

    /// Whether any line so far was slow-log syntax (a banner or a `# key: value` header);
    /// tells an empty log from a file that is not a slow log at all.
    pub fn saw_slow_log(&self) -> bool {
        self.saw_slow_log
    }

    /// Ends the input: the last line (even without a newline) and the last entry come out.
    pub fn finish(&mut self, out: &mut Vec<SlowEntry>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
        self.skipping_rest_of_line = false;
        self.flush(out);
    }

    fn keep_partial(&mut self, bytes: &[u8]) {
        if self.skipping_rest_of_line {
            return;
        }
        let room = MAX_LINE - self.partial.len();
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.skipping_rest_of_line = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn line(&mut self, raw: &[u8], out: &mut Vec<SlowEntry>) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match std::str::from_utf8(raw) {
            Ok(line) => self.text_line(line, out),
            Err(_) => self.text_line(&String::from_utf8_lossy(raw), out),
        }
    }

    fn text_line(&mut self, line: &str, out: &mut Vec<SlowEntry>) {
        if is_banner(line) {
            // A new server process (or reopened log) starts over with no current database;
            // the entry before the banner is complete and still in the old one.
            if self.cur.has_query {
                self.flush(out);
            }
            self.last_use_db.clear();
            self.saw_slow_log = true;
            return;
        }
        if line.starts_with('#') {
            self.hash_line(line, out);
        } else if self.cur.has_query {
            self.append_query_line(line);
        } else if let Some(db) = parse_use(line) {
            self.cur.use_line = Some(line.trim_end().trim_end_matches(';').to_string());
            self.last_use_db.clone_from(&db);
            self.cur.entry.db = db;
        } else if let Some(ts) = parse_set_preamble(line) {
            if ts.is_some() {
                self.cur.set_ts_us = ts;
            }
        } else if !line.trim().is_empty() {
            self.append_query_line(line);
        }
    }

    fn hash_line(&mut self, line: &str, out: &mut Vec<SlowEntry>) {
        if let Some(cmd) = line.strip_prefix("# administrator command:") {
            if self.cur.has_query {
                self.flush(out);
            }
            let cmd = cmd.trim().trim_end_matches(';').trim_end();
            let mut query = String::with_capacity(23 + cmd.len());
            query.push_str("administrator command: ");
            push_capped(&mut query, cmd);
            self.cur.entry.query = query;
            self.cur.has_query = true;
            self.cur.query_complete = true;
            self.saw_slow_log = true;
            return;
        }
        let h = parse_header(line);
        if self.cur.has_query
            && !self.cur.query_complete
            && !starts_entry(line)
            && h == Header::default()
        {
            // A comment line inside a multi-line statement.
            self.append_query_line(line);
            return;
        }
        let user_host = h.user.is_some();
        if self.cur.has_query
            || self.cur.use_line.is_some()
            || self.cur.set_ts_us.is_some()
            || (user_host && self.cur.has_user_host)
        {
            self.flush(out);
        }
        if let Some(t) = h.time_us {
            self.last_time_us = t;
        }
        if user_host {
            self.cur.has_user_host = true;
        }
        if h != Header::default() {
            self.cur.has_header = true;
            self.saw_slow_log = true;
        }
        if h.db.is_some() {
            self.cur.has_schema = true;
        }
        apply_header(&mut self.cur.entry, h);
    }

    fn append_query_line(&mut self, line: &str) {
        let q = &mut self.cur.entry.query;
        if self.cur.has_query {
            if q.len() < MAX_QUERY {
                q.push('\n');
            }
        } else {
            self.cur.has_query = true;
        }
        push_capped(q, line);
        let line = line.trim_end();
        if !line.is_empty() {
            self.cur.query_complete = line.ends_with(';');
        }
    }

    /// Emits the entry being built (if it has a statement) and starts the next one.
    fn flush(&mut self, out: &mut Vec<SlowEntry>) {
        let cur = std::mem::take(&mut self.cur);
        if !cur.has_header {
            // Statements before the first header: a log cut mid-entry, or not a slow log.
            return;
        }
        let inherits_db = !cur.has_schema && cur.use_line.is_none();
        let mut entry = cur.entry;
        if cur.has_query {
            trim_statement(&mut entry.query);
        } else if let Some(use_line) = cur.use_line {
            entry.query = use_line;
        } else {
            return;
        }
        entry.ts_us = cur.set_ts_us.unwrap_or(self.last_time_us);
        if inherits_db {
            entry.db.clone_from(&self.last_use_db);
        }
        out.push(entry);
    }
}

/// Header lines that begin an entry even after an unterminated statement (as do lines with
/// a known `key: value`).
fn starts_entry(line: &str) -> bool {
    line.starts_with("# Time:") || line.starts_with("# User@Host:")
}

fn apply_header(e: &mut SlowEntry, h: Header<'_>) {
    if let Some(v) = h.user {
        e.user = v.to_string();
    }
    if let Some(v) = h.client {
        e.client = v.to_string();
    }
    if let Some(v) = h.db {
        e.db = v.to_string();
    }
    if let Some(v) = h.thread_id {
        e.thread_id = v;
    }
    if let Some(v) = h.query_time {
        e.query_time = v;
    }
    if let Some(v) = h.lock_time {
        e.lock_time = v;
    }
    if let Some(v) = h.rows_sent {
        e.rows_sent = v;
    }
    if let Some(v) = h.rows_examined {
        e.rows_examined = v;
    }
    if let Some(v) = h.rows_affected {
        e.rows_affected = v;
    }
    if let Some(v) = h.bytes_sent {
        e.bytes_sent = v;
    }
}

/// Appends as much of `s` as fits under [`MAX_QUERY`], cut at a character boundary.
fn push_capped(q: &mut String, s: &str) {
    let room = MAX_QUERY.saturating_sub(q.len());
    if s.len() <= room {
        q.push_str(s);
    } else {
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        q.push_str(&s[..end]);
    }
}

/// Trailing blank lines and the statement's final `;` go, as pt-query-digest drops them.
fn trim_statement(q: &mut String) {
    let keep = q.trim_end_matches(['\n', '\r', ' ', '\t']).len();
    q.truncate(keep);
    if q.ends_with(';') {
        q.pop();
    }
}

/// Parses a whole log held in memory.
pub fn parse_str(s: &str) -> Vec<SlowEntry> {
    let mut parser = SlowLogParser::new();
    let mut out = Vec::new();
    parser.push(s.as_bytes(), &mut out);
    parser.finish(&mut out);
    out
}

#[cfg(test)]
mod tests;
