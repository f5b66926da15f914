//! The checks behind the `cargo fuzz` targets in `fuzz/` (run by `scripts/fuzz`): each takes
//! arbitrary bytes, runs one hostile-input parser on them and asserts what must hold whatever
//! the input, panicking — which libFuzzer reports as a crash — when it does not. Built only
//! for this crate's unit tests (which replay the seed corpora in `fuzz/corpus`) and with the
//! `fuzzing` feature, which only the fuzz crate turns on: these panics never reach a server.

use serde_json::Value;

use crate::receivers::{
    bulk_actions, bulk_item, decode_remote_write, map_log, BulkOutcome, Dims, SharedMiner,
};
use apus_parse::slowlog::{SlowEntry, SlowLogParser, MAX_LINE};
use apus_parse::templates::MinerConfig;

/// The decompressed-size bound [`remote_write`] decodes with.
pub const REMOTE_WRITE_MAX_DECODED: usize = 1 << 20;

/// Slow-log parser: the first byte picks a chunk size (1 to 256 bytes), the rest is the log.
/// The log fed in chunks of that size gives the same entries as fed whole (boundaries fall
/// mid-line and mid-character), and no statement outgrows the line bound.
pub fn slowlog(data: &[u8]) {
    let Some((&k, log)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(k) + 1;
    let whole = feed(std::iter::once(log));
    let chunked = feed(log.chunks(chunk));
    assert_eq!(whole, chunked, "fed in chunks of {chunk} bytes");
    for e in &whole.0 {
        assert!(
            e.query.len() <= MAX_LINE,
            "statement of {} bytes",
            e.query.len()
        );
    }
}

/// Runs a slow-log parser over `chunks`: its entries, and whether it saw a slow log.
fn feed<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<SlowEntry>, bool) {
    let mut p = SlowLogParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out);
    }
    p.finish(&mut out);
    (out, p.saw_slow_log())
}

/// Elasticsearch `_bulk` body, through [`bulk_actions`] and then as the handler goes on: each
/// document through JSON and [`map_log`] (with its template miner), each action to a
/// [`bulk_item`]. Actions come in line order, at most one per non-blank line; documents
/// follow their `index` / `create` action; every refusal has a reason; every item is an
/// object keyed by its action, 201 exactly when nothing was refused.
pub fn bulk(data: &[u8]) {
    let non_blank = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    let miner = SharedMiner::new(MinerConfig::default());
    let mut actions = 0;
    let mut last_line = 0;
    for a in bulk_actions(data, "fuzz", |seq| format!("gen-{seq}")) {
        actions += 1;
        assert!(
            a.line > last_line,
            "action on line {} after {last_line}",
            a.line
        );
        last_line = a.line;
        let error = match a.outcome {
            BulkOutcome::Document { line, doc } => {
                assert!(a.action == "index" || a.action == "create", "{}", a.action);
                assert!(line > a.line, "document on line {line} for line {}", a.line);
                assert!(!doc.iter().all(u8::is_ascii_whitespace));
                last_line = line;
                let dims = Dims {
                    project: a.index.clone(),
                    ..Dims::default()
                };
                let res = map_log(doc, &dims, &miner);
                // The streaming reader accepts exactly the JSON objects serde_json reads
                // (and, of those, the ones with a message).
                match serde_json::from_slice::<Value>(doc) {
                    Ok(Value::Object(_)) => {}
                    Ok(_) | Err(_) => assert!(res.is_err(), "accepted non-object {doc:?}"),
                }
                if let Ok(row) = &res {
                    assert!(!row.template_id.is_empty());
                }
                res.err()
            }
            BulkOutcome::Rejected { reason, raw } => {
                assert!(!reason.is_empty());
                assert!(!raw.iter().all(u8::is_ascii_whitespace));
                Some(reason)
            }
        };
        let refused = error.is_some();
        let item = bulk_item(&a.action, &a.index, &a.id, error);
        let fields = item
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get(&a.action))
            .unwrap_or_else(|| panic!("item not keyed by `{}`: {item}", a.action));
        let want = if refused { 400 } else { 201 };
        assert_eq!(fields["status"], want, "{item}");
    }
    assert!(
        actions <= non_blank,
        "{actions} actions in {non_blank} lines"
    );
}

/// Prometheus remote_write body (a snappy block of a protobuf `WriteRequest`), decoded with
/// [`REMOTE_WRITE_MAX_DECODED`]: 413 exactly when the block declares more than that, 400 for
/// anything else refused; decoded, no more rows than the protobuf has room for (a sample
/// takes at least two bytes).
pub fn remote_write(body: &[u8]) {
    let declared = snap::raw::decompress_len(body).ok();
    let too_big = declared.is_some_and(|n| n > REMOTE_WRITE_MAX_DECODED);
    match decode_remote_write(body, REMOTE_WRITE_MAX_DECODED) {
        Ok(rows) => {
            let n = declared.unwrap_or_else(|| panic!("decoded what snappy cannot size"));
            assert!(!too_big, "decoded {n} bytes");
            assert!(rows.len() <= n / 2, "{} rows from {n} bytes", rows.len());
        }
        Err((413, e)) => assert!(
            too_big || e.contains("expand to more than"),
            "413 for {declared:?} bytes: {e}"
        ),
        Err((400, e)) => assert!(!too_big && !e.is_empty(), "400 for {declared:?}: {e}"),
        Err((status, e)) => panic!("status {status}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The seed corpus of a fuzz target, as (file name, bytes).
    fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{}: {} seeds", dir.display(), files.len());
        files
    }

    #[test]
    fn slowlog_seeds_are_logs_and_pass_at_every_chunk_size() {
        for (name, data) in corpus("slowlog") {
            let entries = apus_parse::slowlog::parse_str(&String::from_utf8_lossy(&data[1..]));
            assert!(entries.len() >= 2, "{name}: {entries:?}");
            let mut d = data.clone();
            for k in 0..=255 {
                d[0] = k;
                slowlog(&d);
            }
        }
        slowlog(b"");
        slowlog(b"\x00");
        slowlog(b"\x02# Query_time: 1\n\xff\xfe sel\xc3\xa9ct 1;\r\n# User@Host: a @ b\n");
    }

    #[test]
    fn bulk_seeds_pass() {
        for (name, data) in corpus("bulk") {
            assert!(
                bulk_actions(&data, "", |_| String::new()).count() >= 2,
                "{name}"
            );
            bulk(&data);
            // Every prefix: a body cut anywhere.
            for end in 0..data.len() {
                bulk(&data[..end]);
            }
        }
        bulk(b"");
        bulk(b"{\"update\":{}}\n{\"index\":{}}\n\xff\n{\"delete\":{}}\n\n[]\n");
    }

    #[test]
    fn remote_write_seeds_decode_sent_as_is_and_as_protobuf() {
        let compress = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();
        for (name, data) in corpus("remote_write") {
            // As the fuzz target does: the bytes as a body, and compressed, as a protobuf.
            remote_write(&data);
            remote_write(&compress(&data));
            let as_body = decode_remote_write(&data, REMOTE_WRITE_MAX_DECODED);
            let as_proto = decode_remote_write(&compress(&data), REMOTE_WRITE_MAX_DECODED);
            let rows = match (name.ends_with(".snappy"), as_body, as_proto) {
                (true, Ok(rows), _) | (false, _, Ok(rows)) => rows,
                (_, body, proto) => panic!("{name}: {body:?} / {proto:?}"),
            };
            assert!(!rows.is_empty(), "{name}");
        }
        remote_write(b"");
        remote_write(b"\xff\xff\xff\xff\x0f");
        // Declares 1 MiB + 1: refused before decompressing.
        remote_write(b"\x81\x80\x40\x00");
        assert_eq!(
            decode_remote_write(b"\x81\x80\x40\x00", REMOTE_WRITE_MAX_DECODED)
                .unwrap_err()
                .0,
            413
        );
        remote_write(&compress(&vec![0x0a; REMOTE_WRITE_MAX_DECODED + 1]));
    }
}
