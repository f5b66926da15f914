//! Golden test: our fingerprints against the real `pt-fingerprint` 3.2.1 outputs committed in
//! `tests/golden/fingerprint/expected.txt` (regenerate with `scripts/gen-fingerprint-golden`).
//! Every query must match, except those listed in `known_differences.txt` (one query index per
//! line, 1-based, `#` comments allowed) — which must still differ, so the list stays honest.

use std::collections::BTreeSet;
use std::path::PathBuf;

use apus_parse::fingerprint::{fingerprint, fingerprint_id};

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/fingerprint")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Queries are separated by lines holding exactly `%%`; the final newline is not content.
fn queries() -> Vec<String> {
    let text = golden("queries.txt");
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split("\n%%\n").map(str::to_string).collect()
}

fn known_differences() -> BTreeSet<usize> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/fingerprint/known_differences.txt");
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeSet::new();
    };
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .expect("known_differences.txt: a 1-based query index per line")
        })
        .collect()
}

#[test]
fn fingerprints_match_pt_fingerprint() {
    let queries = queries();
    let expected = golden("expected.txt");
    let expected: Vec<&str> = expected.lines().collect();
    assert!(queries.len() >= 150, "corpus too small: {}", queries.len());
    assert_eq!(
        queries.len(),
        expected.len(),
        "queries.txt and expected.txt disagree in length"
    );
    let allowed = known_differences();
    let mut mismatches = Vec::new();
    let mut stale = Vec::new();
    for (i, (q, want)) in queries.iter().zip(&expected).enumerate() {
        let got = fingerprint(q);
        let n = i + 1;
        match (got == *want, allowed.contains(&n)) {
            (false, false) => {
                mismatches.push(format!("#{n}: {q:?}\n   pt:  {want:?}\n   ours: {got:?}"))
            }
            (true, true) => stale.push(n),
            _ => {}
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} fingerprints differ from pt-fingerprint:\n{}",
        mismatches.len(),
        queries.len(),
        mismatches.join("\n")
    );
    assert!(
        stale.is_empty(),
        "listed as known differences but now identical: {stale:?}"
    );
}

#[test]
fn ids_are_stable_lowercase_hex() {
    for q in queries() {
        let id = fingerprint_id(&fingerprint(&q));
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
    }
    // pt-query-digest prints the checksum of `select c from sbtest? where id=?` as
    // the upper-case form of this id.
    assert_eq!(
        fingerprint_id("select c from sbtest? where id=?"),
        fingerprint_id(&fingerprint("SELECT c FROM sbtest1 WHERE id=5016"))
    );
}
