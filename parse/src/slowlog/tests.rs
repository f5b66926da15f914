//! Unit tests of the slow-log parser (the golden files under `tests/golden/slowlog` cover
//! whole logs of each server flavour).

use super::*;

const MYSQL57: &str =
    "/usr/sbin/mysqld, Version: 5.7.44-log (MySQL Community Server (GPL)). started with:
Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock
Time                 Id Command    Argument
# Time: 2024-01-02T03:04:05.123456Z
# User@Host: app[app] @ web1 [10.0.0.5]  Id:    42
# Query_time: 1.500000  Lock_time: 0.000100 Rows_sent: 1  Rows_examined: 1000
use shop;
SET timestamp=1704164645;
SELECT *
FROM orders
-- by customer
# still the statement
WHERE customer_id = 7;
# Time: 2024-01-02T03:04:06.000001Z
# User@Host: app[app] @ web1 [10.0.0.5]  Id:    42
# Query_time: 0.000010  Lock_time: 0.000000 Rows_sent: 0  Rows_examined: 0
SET timestamp=1704164646;
# administrator command: Quit;
";

#[test]
fn mysql57_entries() {
    let e = parse_str(MYSQL57);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].ts_us, 1_704_164_645_000_000);
    assert_eq!((e[0].user.as_str(), e[0].client.as_str()), ("app", "web1"));
    assert_eq!((e[0].db.as_str(), e[0].thread_id), ("shop", 42));
    assert_eq!((e[0].query_time, e[0].lock_time), (1.5, 0.0001));
    assert_eq!((e[0].rows_sent, e[0].rows_examined), (1, 1000));
    assert_eq!(
        e[0].query,
        "SELECT *\nFROM orders\n-- by customer\n# still the statement\nWHERE customer_id = 7"
    );
    assert_eq!(e[1].query, "administrator command: Quit");
    // No `use` line: still in the database of the last one.
    assert_eq!(e[1].db, "shop");
}

#[test]
fn mariadb_inherits_time_and_skips_explain() {
    let log = "# Time: 240102  3:04:05
# User@Host: sb[sb] @ localhost []
# Thread_id: 8  Schema: sbtest  QC_hit: No
# Query_time: 0.000237  Lock_time: 0.000046  Rows_sent: 1  Rows_examined: 1
# Rows_affected: 0  Bytes_sent: 190
#
# explain: id\tselect_type\ttable
# explain: 1\tSIMPLE\tsbtest1
#
SELECT c FROM sbtest1 WHERE id=4985;
# User@Host: sb[sb] @ localhost []
# Thread_id: 9  Schema: sbtest  QC_hit: No
# Query_time: 0.000003  Lock_time: 0.000000  Rows_sent: 0  Rows_examined: 0
# Rows_affected: 0  Bytes_sent: 11
COMMIT;
";
    let e = parse_str(log);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].ts_us, 1_704_164_645_000_000);
    assert_eq!(e[1].ts_us, e[0].ts_us);
    assert_eq!((e[0].bytes_sent, e[1].thread_id), (190, 9));
    assert_eq!(e[0].query, "SELECT c FROM sbtest1 WHERE id=4985");
    assert_eq!(e[1].query, "COMMIT");
}

#[test]
fn any_chunking_gives_the_same_entries() {
    let log = format!("{MYSQL57}# User@Host: ü[ü] @ hôst []\n# Query_time: 2\nSELECT 'héllo ✓';\n");
    let whole = parse_str(&log);
    assert_eq!(whole.len(), 3);
    assert_eq!(whole[2].query, "SELECT 'héllo ✓'");
    let bytes = log.as_bytes();
    for split in 0..bytes.len() {
        let mut p = SlowLogParser::new();
        let mut out = Vec::new();
        p.push(&bytes[..split], &mut out);
        p.push(&bytes[split..], &mut out);
        p.finish(&mut out);
        assert_eq!(out, whole, "split at {split}");
    }
    let mut p = SlowLogParser::new();
    let mut out = Vec::new();
    for b in bytes {
        p.push(std::slice::from_ref(b), &mut out);
    }
    p.finish(&mut out);
    assert_eq!(out, whole);
}

#[test]
fn banner_mid_log_and_missing_final_newline() {
    let log =
        "# Time: 2024-01-02T03:04:05Z\n# User@Host: a[a] @ h []\n# Query_time: 1\nselect 1;\n\
/usr/sbin/mysqld, Version: 8.0.35 (MySQL Community Server - GPL). started with:\n\
Tcp port: 3306  Unix socket: /tmp/x.sock\nTime                 Id Command    Argument\n\
# User@Host: b[b] @ h []\n# Query_time: 2\nselect 2";
    let e = parse_str(log);
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].query.as_str(), e[1].query.as_str()),
        ("select 1", "select 2")
    );
    assert_eq!(e[1].user, "b");
}

#[test]
fn header_after_complete_statement_starts_an_entry() {
    let log = "# Query_time: 1\nselect 1;\n\n# Query_time: 2\n\nselect 2;\n";
    let e = parse_str(log);
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].query_time, e[1].query_time), (1.0, 2.0));
    assert_eq!(
        e[1].query, "select 2",
        "blank lines before a statement are not part of it"
    );
}

#[test]
fn huge_lines_and_statements_are_capped() {
    let mut p = SlowLogParser::new();
    let mut out = Vec::new();
    p.push(b"# Query_time: 1\nselect '", &mut out);
    let block = vec![b'x'; 1 << 16];
    for _ in 0..40 {
        p.push(&block, &mut out);
        assert!(p.partial.len() <= MAX_LINE);
    }
    p.push(b"';\nselect 'more';\n", &mut out);
    for _ in 0..40 {
        p.push(&block, &mut out);
        p.push(b"\n", &mut out);
    }
    p.push(b"# Query_time: 2\nselect 2;\n", &mut out);
    p.finish(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].query.len(), MAX_QUERY);
    assert!(out[0].query.starts_with("select 'xxx"));
    assert_eq!(out[1].query, "select 2");
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::new();
    let pieces: [&[u8]; 12] = [
        b"# Time: ",
        b"# User@Host: ",
        b"@ [",
        b"]",
        b"\n",
        b";",
        b"SET timestamp=",
        b"use ",
        b"# administrator command: ",
        b"\xff\xfe",
        b"# Query_time: 1e309 ",
        b"\xe2\x9c",
    ];
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        bytes.extend_from_slice(pieces[(seed % 12) as usize]);
        bytes.push((seed >> 32) as u8);
    }
    let mut p = SlowLogParser::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(777) {
        p.push(chunk, &mut out);
    }
    p.finish(&mut out);
    assert!(out
        .iter()
        .all(|e| e.query.len() <= MAX_QUERY && e.query_time.is_finite()));
}

#[test]
fn use_alone_is_the_statement() {
    let e = parse_str(
        "# Query_time: 1\nuse `a``b`;\n# Query_time: 2\nSET timestamp=5;\nSET NAMES utf8;\n",
    );
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].query.as_str(), e[0].db.as_str()),
        ("use `a``b`", "a`b")
    );
    assert_eq!(
        (e[1].query.as_str(), e[1].ts_us),
        ("SET NAMES utf8", 5_000_000)
    );
}

#[test]
fn statements_without_headers_are_skipped() {
    let mut p = SlowLogParser::new();
    let mut out = Vec::new();
    p.push(b"ERE id = 5;\nnot a log\n", &mut out);
    p.finish(&mut out);
    assert!(out.is_empty() && !p.saw_slow_log());
    let e = parse_str("tail of a cut entry;\n# Time: 240102  3:04:05\nselect 1;\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].query, "select 1");
    let mut p = SlowLogParser::new();
    p.push(b"Tcp port: 0  Unix socket: /tmp/s\n", &mut out);
    assert!(p.saw_slow_log());
}
