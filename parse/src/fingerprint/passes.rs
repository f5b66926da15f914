//! The byte passes of the fingerprint, in the order [`super::fingerprint`] runs them: each
//! reads one buffer and writes the next, mirroring one of the tool's rewrite steps with a
//! single left-to-right scan (rescanning nothing it has replaced, as a global substitution
//! does not).

use super::{boundary_before, is_space, is_word, skip_spaces, starts_with_ci, UNION_BUDGET};

/// `/* ... */` comments go; `/*! ... */` version comments (and `/**/`) stay.
pub(super) fn strip_block_comments(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') && i + 2 < b.len() && b[i + 2] != b'!' {
            match b[i + 3..].windows(2).position(|w| w == b"*/") {
                Some(off) => {
                    i += 3 + off + 2;
                    continue;
                }
                // No closer after this opener means none after any later one either.
                None => break,
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out.extend_from_slice(&b[i..]);
}

/// `-- ...` and `# ...` to the end of the line go, unless a quote follows on that line.
pub(super) fn strip_line_comments(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        let marker = match b[i] {
            b'#' => 1,
            b'-' if b.get(i + 1) == Some(&b'-') => 2,
            _ => 0,
        };
        if marker == 0 {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let mut e = i + marker;
        while e < b.len() && !matches!(b[e], b'\'' | b'"' | b'\r' | b'\n') {
            e += 1;
        }
        if e == b.len() || matches!(b[e], b'\r' | b'\n') {
            i = e;
        } else {
            // A quote ends the line's comment candidate: every marker up to it fails alike.
            out.extend_from_slice(&b[i..e]);
            i = e;
        }
    }
}

/// `use <db>` alone (no leading space, one space, a single word).
pub(super) fn is_use_statement(b: &[u8]) -> bool {
    if !starts_with_ci(b, 0, b"use ") {
        return false;
    }
    let rest = b[4..].strip_suffix(b"\n").unwrap_or(&b[4..]);
    !rest.is_empty() && !rest.iter().any(|&c| is_space(c))
}

/// `\'` and `\"` vanish before strings are matched (so `'a\\'` runs on to the next quote).
pub(super) fn remove_escaped_quotes(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && matches!(b.get(i + 1), Some(b'\'' | b'"')) {
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
}

fn replace_quoted(b: &[u8], q: u8, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] == q {
            match b[i + 1..].iter().position(|&c| c == q) {
                Some(off) => {
                    out.push(b'?');
                    i += off + 2;
                    continue;
                }
                None => break,
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out.extend_from_slice(&b[i..]);
}

pub(super) fn replace_double_quoted(b: &[u8], out: &mut Vec<u8>) {
    replace_quoted(b, b'"', out);
}

pub(super) fn replace_single_quoted(b: &[u8], out: &mut Vec<u8>) {
    replace_quoted(b, b'\'', out);
}

/// A run starting with a digit, `+` or `-` and going on through digits, `a-f`, `.`, `x`, `+`
/// and `-` is one number — case-sensitive, since it runs before lowercasing.
pub(super) fn replace_numbers(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() || b[i] == b'+' || b[i] == b'-' {
            i += 1;
            while i < b.len()
                && matches!(b[i], b'0'..=b'9' | b'a'..=b'f' | b'.' | b'x' | b'+' | b'-')
            {
                i += 1;
            }
            out.push(b'?');
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
}

/// `x?`, `b?` (hex and bit literals), `.?`, `+?`, `-?` become `?`.
pub(super) fn fold_prefixed_placeholders(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'x' | b'b' | b'.' | b'+' | b'-') && b.get(i + 1) == Some(&b'?') {
            out.push(b'?');
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
}

/// Leading whitespace goes, one trailing newline goes, runs of space/tab/newline/CR/FF
/// become one space, ASCII letters are lowercased.
pub(super) fn collapse_whitespace_lowercase(b: &[u8], out: &mut Vec<u8>) {
    let start = skip_spaces(b, 0);
    let mut body = &b[start..];
    if let Some(stripped) = body.strip_suffix(b"\n") {
        body = stripped;
    }
    let mut in_run = false;
    for &c in body {
        if matches!(c, b' ' | b'\n' | b'\t' | b'\r' | 0x0c) {
            if !in_run {
                out.push(b' ');
            }
            in_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_run = false;
        }
    }
}

pub(super) fn replace_null(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'n'
            && b[i..].starts_with(b"null")
            && boundary_before(b, i)
            && b.get(i + 4).is_none_or(|&c| !is_word(c))
        {
            out.push(b'?');
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
}

/// `in (?, ?)`, `values (?), (?)`, `value(?)` → `in(?+)`, `values(?+)`, `value(?+)` when
/// the lists hold nothing but placeholders, spaces and commas.
pub(super) fn collapse_lists(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        let kw = if !matches!(b[i], b'i' | b'v') || !boundary_before(b, i) {
            0
        } else if b[i..].starts_with(b"in") {
            2
        } else if b[i..].starts_with(b"values") {
            6
        } else if b[i..].starts_with(b"value") {
            5
        } else {
            0
        };
        if kw > 0 {
            let end = list_run_end(b, i + kw);
            if end > i + kw {
                out.extend_from_slice(&b[i..i + kw]);
                out.extend_from_slice(b"(?+)");
                i = end;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
}

/// End of the longest run of `[\s,]*\([\s?,]*\)` groups starting at `p` (`p` if none).
fn list_run_end(b: &[u8], mut p: usize) -> usize {
    loop {
        let mut q = p;
        while q < b.len() && (is_space(b[q]) || b[q] == b',') {
            q += 1;
        }
        if b.get(q) != Some(&b'(') {
            return p;
        }
        q += 1;
        while q < b.len() && (is_space(b[q]) || b[q] == b'?' || b[q] == b',') {
            q += 1;
        }
        if b.get(q) != Some(&b')') {
            return p;
        }
        p = q + 1;
    }
}

/// `select X union select X union all select X` → `select X /*repeat union all*/`: the
/// shortest `select ...` (within one line) that is repeated verbatim after each `union`.
pub(super) fn collapse_unions(b: &[u8], out: &mut Vec<u8>) {
    let mut budget = UNION_BUDGET;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b's'
            && b[i..].starts_with(b"select")
            && b.get(i + 6).is_some_and(|&c| is_space(c))
            && boundary_before(b, i)
        {
            if let Some((group_end, end, union)) = find_union_repeat(b, i, &mut budget) {
                out.extend_from_slice(&b[i..group_end]);
                out.extend_from_slice(b" /*repeat");
                out.extend_from_slice(union);
                out.extend_from_slice(b"*/");
                i = end;
                continue;
            }
            if budget == 0 {
                break;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out.extend_from_slice(&b[i..]);
}

/// For a `select` at `start`: (end of the repeated select, end of the repeats, the last
/// `\sunion[\sall]` text).
fn find_union_repeat<'a>(
    b: &'a [u8],
    start: usize,
    budget: &mut usize,
) -> Option<(usize, usize, &'a [u8])> {
    let body = start + 7;
    let mut e = body;
    while e < b.len() {
        if e > body && b[e - 1] == b'\n' {
            return None;
        }
        *budget = budget.checked_sub(1)?;
        if is_space(b[e]) && b[e + 1..].starts_with(b"union") {
            let group = &b[start..e];
            let (mut pos, mut last) = (e, None);
            while let Some((next, union)) = union_repeat_at(b, pos, group, budget) {
                pos = next;
                last = Some(union);
            }
            if let Some(union) = last {
                return Some((e, pos, union));
            }
        }
        e += 1;
    }
    None
}

fn union_repeat_at<'a>(
    b: &'a [u8],
    pos: usize,
    group: &[u8],
    budget: &mut usize,
) -> Option<(usize, &'a [u8])> {
    if !(b.get(pos).is_some_and(|&c| is_space(c)) && b[pos + 1..].starts_with(b"union")) {
        return None;
    }
    let union_end = pos + 6;
    let repeats_at = |at: usize, budget: &mut usize| {
        *budget = budget.saturating_sub(group.len());
        b.get(at).is_some_and(|&c| is_space(c)) && b[at + 1..].starts_with(group)
    };
    let all =
        b.get(union_end).is_some_and(|&c| is_space(c)) && b[union_end + 1..].starts_with(b"all");
    if all && repeats_at(union_end + 4, budget) {
        return Some((union_end + 5 + group.len(), &b[pos..union_end + 4]));
    }
    if repeats_at(union_end, budget) {
        return Some((union_end + 1 + group.len(), &b[pos..union_end]));
    }
    None
}

/// The first `limit ?`, `limit ?, ?`, `limit ?,?` or `limit ? offset ?` → `limit ?`.
pub(super) fn normalize_limit(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'l' && b[i..].starts_with(b"limit ?") && boundary_before(b, i) {
            let mut end = i + 7;
            let rest = &b[end..];
            if rest.starts_with(b", ?") {
                end += 3;
            } else if rest.starts_with(b",?") {
                end += 2;
            } else if rest.starts_with(b" offset ?") {
                end += 9;
            }
            out.extend_from_slice(b"limit ?");
            out.extend_from_slice(&b[end..]);
            return;
        }
        out.push(b[i]);
        i += 1;
    }
}

/// After the first `order by `, each following `<something> asc` (contiguous, as the
/// tool's anchored global substitution goes) loses its ` asc` — even when `asc` only starts
/// a word.
pub(super) fn strip_order_by_asc(b: &[u8], out: &mut Vec<u8>) {
    let Some(start) = (0..b.len())
        .find(|&i| starts_with_ci(b, i, b"order by ") && boundary_before(b, i))
        .map(|i| i + 9)
    else {
        out.extend_from_slice(b);
        return;
    };
    out.extend_from_slice(&b[..start]);
    let mut p = start;
    while let Some((keep_end, resume)) = next_asc(b, p) {
        out.extend_from_slice(&b[p..keep_end]);
        p = resume;
    }
    out.extend_from_slice(&b[p..]);
}

/// `(.+?)\s+asc` anchored at `p`: (end of the kept text, end of `asc`).
fn next_asc(b: &[u8], p: usize) -> Option<(usize, usize)> {
    if p >= b.len() || b[p] == b'\n' {
        return None;
    }
    let mut x = p + 1;
    while x < b.len() {
        if is_space(b[x]) {
            let r = skip_spaces(b, x);
            if starts_with_ci(b, r, b"asc") {
                return Some((x, r + 3));
            }
            if b[x..r].contains(&b'\n') {
                return None;
            }
            x = r;
        } else {
            x += 1;
        }
    }
    None
}
