//! Golden tests of the slow-log parser and the digest, one log per server flavour under
//! `tests/golden/slowlog/`: `NAME.log` is the input; `NAME.entries.json` the parsed entries
//! (not kept for the large real log); `NAME.digest.json` the digest rows; `NAME.pt.json` what
//! pt-query-digest makes of the same log (`scripts/pt-digest-summary NAME.log`), which our
//! digest must agree with fingerprint by fingerprint (calls, total time, checksum).
//!
//! `mariadb-sysbench.log` is a real MariaDB log (`scripts/gen-mariadb-slowlog OUT 0.2`); the
//! others are hand-written after MySQL 5.7, MySQL 8.0 (`log_slow_extra`), MariaDB
//! (`log_slow_verbosity=query_plan,explain`) and Percona Server (extended verbosity).
//!
//! `UPDATE_GOLDEN=1 cargo test -p apus-parse --test slowlog_golden` rewrites the `.entries`
//! and `.digest` files from the current code; review the diff before keeping it.

use std::path::{Path, PathBuf};

use apus_parse::digest::Digest;
use apus_parse::slowlog::{parse_str, SlowEntry, SlowLogParser};
use serde_json::Value;

const HAND_WRITTEN: [&str; 4] = ["mysql57", "mysql80", "mariadb", "percona"];
const REAL: &str = "mariadb-sysbench";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/slowlog")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Compares `got` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, got: &Value) {
    let path = dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(got).expect("serialize") + "\n";
        std::fs::write(&path, text).expect("write golden");
        return;
    }
    let want: Value = serde_json::from_str(&read(&path)).expect("golden is JSON");
    assert!(
        same(got, &want),
        "{name} differs from the golden file; got:\n{}",
        serde_json::to_string_pretty(got).unwrap_or_default()
    );
}

/// JSON equality, floats within 1e-12 relative (serde_json's default float parsing can be
/// one ulp off what it printed).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Parses in awkward chunk sizes, to exercise lines and characters split across pushes.
fn parse_chunked(bytes: &[u8], chunk: usize) -> Vec<SlowEntry> {
    let mut parser = SlowLogParser::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        parser.push(piece, &mut out);
    }
    parser.finish(&mut out);
    out
}

fn digest_of(entries: &[SlowEntry]) -> Value {
    let mut digest = Digest::new();
    for e in entries {
        digest.add(e);
    }
    serde_json::to_value(digest.rows(None)).expect("serialize rows")
}

/// Our rows against pt-query-digest's classes: same fingerprints, calls, totals, checksums.
fn check_against_pt(name: &str, rows: &Value) {
    let pt: Value = serde_json::from_str(&read(&dir().join(format!("{name}.pt.json")))).unwrap();
    let (rows, pt) = (rows.as_array().unwrap(), pt.as_array().unwrap());
    assert_eq!(rows.len(), pt.len(), "{name}: number of fingerprints");
    for class in pt {
        let fp = &class["fingerprint"];
        let row = rows
            .iter()
            .find(|r| r["fingerprint"] == *fp)
            .unwrap_or_else(|| panic!("{name}: pt-query-digest has {fp}, we do not"));
        assert_eq!(row["calls"], class["calls"], "{name}: calls of {fp}");
        let (ours, theirs) = (
            row["total_s"].as_f64().unwrap(),
            class["total_s"].as_f64().unwrap(),
        );
        assert!(
            (ours - theirs).abs() < 1e-5,
            "{name}: total of {fp}: {ours} vs {theirs}"
        );
        let checksum = class["checksum"].as_str().unwrap();
        assert_eq!(
            row["fingerprint_id"].as_str().unwrap(),
            &checksum[16..],
            "{name}: id of {fp}"
        );
    }
}

#[test]
fn hand_written_logs() {
    for name in HAND_WRITTEN {
        let log = read(&dir().join(format!("{name}.log")));
        let entries = parse_str(&log);
        for chunk in [1, 7, 4096] {
            assert_eq!(
                parse_chunked(log.as_bytes(), chunk),
                entries,
                "{name} in {chunk}-byte chunks"
            );
        }
        check_golden(
            &format!("{name}.entries.json"),
            &serde_json::to_value(&entries).unwrap(),
        );
        let rows = digest_of(&entries);
        check_golden(&format!("{name}.digest.json"), &rows);
        check_against_pt(name, &rows);
    }
}

#[test]
fn real_mariadb_sysbench_log() {
    let bytes = std::fs::read(dir().join(format!("{REAL}.log"))).expect("read log");
    let entries = parse_chunked(&bytes, 65_521);
    assert_eq!(entries, parse_chunked(&bytes, 3));
    let text = String::from_utf8_lossy(&bytes);
    let headers = text
        .lines()
        .filter(|l| l.starts_with("# Query_time:"))
        .count();
    assert_eq!(entries.len(), headers, "one entry per logged statement");
    assert!(entries
        .iter()
        .all(|e| e.ts_us > 0 && e.db == "sbtest" && e.user == "root"));
    let rows = digest_of(&entries);
    check_golden(&format!("{REAL}.digest.json"), &rows);
    check_against_pt(REAL, &rows);
}
