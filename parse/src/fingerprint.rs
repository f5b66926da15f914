//! SQL fingerprints: the abstracted form of a statement that groups similar queries, as
//! Percona's `pt-fingerprint` / `pt-query-digest` define it (literals become `?`, `IN()` and
//! `VALUES()` lists collapse to `(?+)`, comments go, whitespace collapses, ASCII lowercase,
//! `LIMIT` and `USE` abstracted, repeated `UNION`s folded, `ASC` after `ORDER BY` dropped).
//!
//! Clean-room: written from the tool's documentation and from comparing outputs with the real
//! `pt-fingerprint` 3.2.1 on the corpus in `tests/golden/fingerprint/` (the golden test checks
//! every query). Its quirks are kept on purpose, so that our fingerprints and checksums join
//! with pt-query-digest reports: numbers embedded in names fold (`sbtest1` → `sbtest?`), a
//! `-` or `+` counts as a number (`a - 1` → `a ? ?`), `"` strings are replaced before `'`
//! strings, and only ASCII letters are lowercased.
//!
//! Invariants: never panics; the output is valid UTF-8 whenever the input is (every edit
//! happens at ASCII bytes); time is linear in the input except for the `UNION` fold, whose
//! work is capped by [`UNION_BUDGET`].
//!
//! The transform is a fixed sequence of byte passes, each a hand-written scanner (no regex
//! engine), alternating between two buffers.

mod passes;

use passes::{
    collapse_lists, collapse_unions, collapse_whitespace_lowercase, fold_prefixed_placeholders,
    is_use_statement, normalize_limit, remove_escaped_quotes, replace_double_quoted, replace_null,
    replace_numbers, replace_single_quoted, strip_block_comments, strip_line_comments,
    strip_order_by_asc,
};

/// Byte comparisons the `UNION` fold may spend on one statement before giving up and leaving
/// the rest as it is; only hostile inputs (thousands of `select` and `union`) reach it.
pub const UNION_BUDGET: usize = 1 << 22;

/// The fingerprint of one SQL statement.
pub fn fingerprint(sql: &str) -> String {
    let b = sql.as_bytes();
    if b.starts_with(b"SELECT /*!40001 SQL_NO_CACHE */ * FROM `") {
        return "mysqldump".to_string();
    }
    if has_toolkit_comment(b) {
        return "percona-toolkit".to_string();
    }
    if b.starts_with(b"administrator command: ") {
        return sql.to_string();
    }
    if let Some((start, end)) = call_prefix(b) {
        return sql[start..end].to_ascii_lowercase();
    }

    let mut cur = match insert_prefix_len(b) {
        Some(n) => b[..n].to_vec(),
        None => b.to_vec(),
    };
    let mut next = Vec::with_capacity(cur.len());
    let mut pass = |f: fn(&[u8], &mut Vec<u8>), cur: &mut Vec<u8>| {
        next.clear();
        f(cur, &mut next);
        std::mem::swap(cur, &mut next);
    };
    pass(strip_block_comments, &mut cur);
    pass(strip_line_comments, &mut cur);
    if is_use_statement(&cur) {
        // The tool's substitution stops before a final newline, which it then keeps.
        return if cur.ends_with(b"\n") {
            "use ?\n"
        } else {
            "use ?"
        }
        .to_string();
    }
    pass(remove_escaped_quotes, &mut cur);
    pass(replace_double_quoted, &mut cur);
    pass(replace_single_quoted, &mut cur);
    pass(replace_numbers, &mut cur);
    pass(fold_prefixed_placeholders, &mut cur);
    pass(collapse_whitespace_lowercase, &mut cur);
    pass(replace_null, &mut cur);
    pass(collapse_lists, &mut cur);
    if contains(&cur, b"union") {
        pass(collapse_unions, &mut cur);
    }
    pass(normalize_limit, &mut cur);
    pass(strip_order_by_asc, &mut cur);
    String::from_utf8(cur).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The id of a fingerprint: the last 16 hex digits (lowercase) of the MD5 of its text — the
/// same value pt-query-digest prints (uppercase) as the query's checksum.
pub fn fingerprint_id(fp: &str) -> String {
    use md5::Digest as _;
    let digest = md5::Md5::digest(fp.as_bytes());
    let mut s = String::with_capacity(16);
    for byte in &digest[8..] {
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 15)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Perl's `\s` on bytes.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Perl's `\w` on bytes (non-ASCII bytes are not word characters).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `\b` before position `i`, for a match that starts with a word character.
fn boundary_before(b: &[u8], i: usize) -> bool {
    i == 0 || !is_word(b[i - 1])
}

fn starts_with_ci(b: &[u8], at: usize, pat: &[u8]) -> bool {
    b.len() >= at + pat.len() && b[at..at + pat.len()].eq_ignore_ascii_case(pat)
}

fn contains(b: &[u8], pat: &[u8]) -> bool {
    b.windows(pat.len()).any(|w| w == pat)
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    i
}

/// pt-table-checksum and friends tag their queries with `/*db.tbl:N/M*/`.
fn has_toolkit_comment(b: &[u8]) -> bool {
    let word_run = |mut i: usize| {
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let mut from = 0;
    while let Some(off) = b[from..].windows(2).position(|w| w == b"/*") {
        let start = from + off;
        from = start + 1;
        let Some(i) = word_run(start + 2) else {
            continue;
        };
        if b.get(i) != Some(&b'.') {
            continue;
        }
        let Some(i) = word_run(i + 1) else { continue };
        let tail = &b[i..];
        if tail.len() >= 6
            && tail[0] == b':'
            && tail[1].is_ascii_digit()
            && tail[2] == b'/'
            && tail[3].is_ascii_digit()
            && &tail[4..6] == b"*/"
        {
            return true;
        }
    }
    false
}

/// `CALL proc(...)` fingerprints as `call proc`: the byte range of `call   proc`.
fn call_prefix(b: &[u8]) -> Option<(usize, usize)> {
    let start = skip_spaces(b, 0);
    if !starts_with_ci(b, start, b"call") {
        return None;
    }
    let name = skip_spaces(b, start + 4);
    if name == start + 4 {
        return None;
    }
    let mut end = name;
    while end < b.len() && !is_space(b[end]) {
        end += 1;
    }
    // The name runs to the last `(` of the unbroken word, and is not empty.
    let paren = name + 1 + b.get(name + 1..end)?.iter().rposition(|&c| c == b'(')?;
    Some((start, paren))
}

/// Multi-row `INSERT|REPLACE [IGNORE] INTO ... VALUES (...), (...)` is cut after the first
/// row before anything else (dropping any `ON DUPLICATE KEY UPDATE` tail, as the tool does).
fn insert_prefix_len(b: &[u8]) -> Option<usize> {
    let mut i = if starts_with_ci(b, 0, b"insert") {
        6
    } else if starts_with_ci(b, 0, b"replace") {
        7
    } else {
        return None;
    };
    if starts_with_ci(b, i, b" ignore") {
        i += 7;
    }
    let after_ws = skip_spaces(b, i);
    if after_ws == i || !starts_with_ci(b, after_ws, b"into") {
        return None;
    }
    // At least one byte between INTO and VALUES; only the first VALUES followed by `(` can
    // matter, since any later one has fewer closing parentheses after it.
    let mut v = after_ws + 5;
    let paren = loop {
        if v + 6 > b.len() {
            return None;
        }
        if starts_with_ci(b, v, b"values") {
            let p = skip_spaces(b, v + 6);
            if b.get(p) == Some(&b'(') {
                break p;
            }
        }
        v += 1;
    };
    let mut c = paren + 1;
    while c < b.len() {
        if b[c] == b')' {
            let comma = skip_spaces(b, c + 1);
            if b.get(comma) == Some(&b',') && b.get(skip_spaces(b, comma + 1)) == Some(&b'(') {
                return Some(c + 1);
            }
        }
        c += 1;
    }
    None
}

#[cfg(test)]
mod tests;
