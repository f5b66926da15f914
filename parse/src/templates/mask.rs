//! Masking: turns the variable parts of a log token (numbers, IPs, hex, UUIDs, paths, URLs,
//! durations, sizes, timestamps) into the wildcard [`WILDCARD`] before clustering.
//!
//! The masks are hand-written byte classifiers rather than regexes because they run once
//! per token on the ingest hot path. One generic configuration serves every log source; the
//! rules are:
//!
//! - A token is split into alphanumeric *segments* separated by punctuation. A segment that
//!   contains a digit becomes `<*>` when it starts with a digit (`42`, `0x1f`, `100ms`,
//!   `3GB`), has more digits than letters (`J12`, `e1000g0`), or is a hex run of
//!   six or more characters (`fabcde1`). Words that merely contain a digit (`ssh2`, `v2`,
//!   `Slf4jLogger`, `flush2DB`) are kept: they are usually part of the constant text.
//!   A sign directly before a masked segment is absorbed (`blk_-123` and `blk_123` both
//!   give `blk_<*>`).
//! - Once segments are masked, a token whose remaining text (ignoring leading/trailing
//!   brackets, quotes and sentence punctuation) has no letters collapses to a single `<*>`:
//!   `10.0.0.1:8080`, `2023-01-02T03:04:05.123Z`, `-1.5e3`, `::1` and the like. The same
//!   applies to the value after the first `=` (`rhost=10.0.0.1` gives `rhost=<*>`).
//! - IPv6 addresses (two or more `:` and only hex digits, `:` and `.`) and UUIDs collapse
//!   the same way.
//! - Absolute paths with at least two components (`/var/log/x.log`) and URLs
//!   (`scheme://…`) become `<*>` and `scheme://<*>`.
//!
//! Invariant: masking is a pure function of the token, so the same line always masks to
//! the same tokens on every node; that is what makes template ids stable.

use std::borrow::Cow;

/// The wildcard every mask produces, also used for generalised template positions.
pub const WILDCARD: &str = "<*>";

/// Masks every whitespace-separated token of `line` and joins them with single spaces.
///
/// Borrows `line` unchanged when no token needed masking.
pub fn mask(line: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    for (i, tok) in line.split_whitespace().enumerate() {
        let m = mask_token(tok);
        if out.is_none() && !is_unchanged(&m, tok) {
            // First change: copy the untouched prefix, normalising its whitespace too.
            let mut s = String::with_capacity(line.len());
            for (j, t) in line.split_whitespace().take(i).enumerate() {
                if j > 0 {
                    s.push(' ');
                }
                s.push_str(t);
            }
            out = Some(s);
        }
        if let Some(s) = out.as_mut() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&m);
        }
    }
    match out {
        Some(s) => Cow::Owned(s),
        None => Cow::Borrowed(line),
    }
}

/// True when `mask_token(tok)` returned `tok` itself (an owned result, or the static
/// wildcard, lives elsewhere).
fn is_unchanged(m: &str, tok: &str) -> bool {
    std::ptr::eq(m.as_ptr(), tok.as_ptr()) && m.len() == tok.len()
}

/// Masks one token (no whitespace inside). Borrows `tok` when nothing is variable (and the
/// static [`WILDCARD`] when all of it is).
pub fn mask_token(tok: &str) -> Cow<'_, str> {
    let b = tok.as_bytes();
    if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        // The commonest variable token, without the general path's allocations.
        return Cow::Borrowed(WILDCARD);
    }
    if let Some(m) = mask_path_or_url(tok) {
        return m;
    }
    if !b.iter().any(u8::is_ascii_digit) {
        if b.iter().any(u8::is_ascii_uppercase) {
            let (pre, core, suf) = split_affixes(tok);
            if is_calendar_word(core) {
                return Cow::Owned(format!("{pre}{WILDCARD}{suf}"));
            }
        }
        return Cow::Borrowed(tok);
    }
    let (pre, core, suf) = split_affixes(tok);
    if is_ipv6(core) || is_uuid(core) || is_bracketed_ipv6(pre, core) {
        return Cow::Owned(format!("{}{WILDCARD}{suf}", pre.trim_end_matches('[')));
    }
    let masked = mask_segments(core);
    let masked = collapse(&masked);
    if masked.as_ref() == WILDCARD && core.contains([']', ')', '}', '>']) {
        // The core closes a bracket its prefix opened (`[10.0.0.1]:80`): keep the pair
        // together rather than leave half of it in the constant text.
        return Cow::Borrowed(WILDCARD);
    }
    if masked.len() == core.len() && masked.as_ref() == core {
        return Cow::Borrowed(tok);
    }
    if pre.is_empty() && suf.is_empty() {
        return masked;
    }
    Cow::Owned(format!("{pre}{masked}{suf}"))
}

/// Day and month names (`Mon`, `Monday`, `JUN`, `July`): the words of a written date, a
/// variable like its digits (`connection from … at Mon Jun 20 03:40:59 2005`).
fn is_calendar_word(core: &str) -> bool {
    const NAMES: [&str; 40] = [
        "Mon",
        "Tue",
        "Tues",
        "Wed",
        "Thu",
        "Thur",
        "Thurs",
        "Fri",
        "Sat",
        "Sun",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Sept",
        "Oct",
        "Nov",
        "Dec",
        "January",
        "February",
        "March",
        "April",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let b = core.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_uppercase() {
        return false;
    }
    // `Jun`/`JUN` but not `jun` or `JuN`; `May` is left alone (also a common word).
    let upper = b.iter().all(u8::is_ascii_uppercase);
    let capital = b[1..].iter().all(u8::is_ascii_lowercase);
    (upper || capital) && NAMES.iter().any(|n| n.eq_ignore_ascii_case(core))
}

const OPENERS: &[u8] = b"([{<'\"";
const CLOSERS: &[u8] = b")]}>'\",;:.!?";

/// Splits off leading brackets/quotes and trailing brackets/quotes/punctuation, which are
/// part of the constant text (`[1.2.3.4]` keeps its brackets around `<*>`).
fn split_affixes(tok: &str) -> (&str, &str, &str) {
    let b = tok.as_bytes();
    let w = WILDCARD.as_bytes();
    let mut s = 0;
    while s < b.len() && OPENERS.contains(&b[s]) && !b[s..].starts_with(w) {
        s += 1;
    }
    let mut e = b.len();
    while e > s && CLOSERS.contains(&b[e - 1]) && !b[s..e].ends_with(w) {
        e -= 1;
    }
    // Only ASCII bytes were skipped, so these are char boundaries.
    (&tok[..s], &tok[s..e], &tok[e..])
}

/// Replaces the variable alphanumeric segments of `core` with the wildcard.
fn mask_segments(core: &str) -> Cow<'_, str> {
    let b = core.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `core` already accounted for in `out`
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if !segment_is_variable(&b[start..i]) {
            continue;
        }
        // Absorb a sign that directly precedes the segment and follows a separator or the
        // start, so `-5` and `5`, `blk_-1` and `blk_1` mask alike.
        let mut from = start;
        if from > copied
            && (b[from - 1] == b'-' || b[from - 1] == b'+')
            && (from == 1 || !b[from - 2].is_ascii_alphanumeric())
        {
            from -= 1;
        }
        let s = out.get_or_insert_with(|| String::with_capacity(core.len()));
        s.push_str(&core[copied..from]);
        s.push_str(WILDCARD);
        copied = i;
    }
    match out {
        Some(mut s) => {
            s.push_str(&core[copied..]);
            Cow::Owned(s)
        }
        None => Cow::Borrowed(core),
    }
}

fn segment_is_variable(seg: &[u8]) -> bool {
    let digits = seg.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    if seg[0].is_ascii_digit() || digits * 2 > seg.len() {
        return true;
    }
    seg.len() >= 6 && seg.iter().all(u8::is_ascii_hexdigit)
}

/// Collapses a masked core with no letters left outside wildcards into one wildcard; for
/// `key=value` tokens, applies the same to the value.
fn collapse<'a>(masked: &Cow<'a, str>) -> Cow<'a, str> {
    let s: &str = masked.as_ref();
    if !s.contains(WILDCARD) {
        return masked.clone();
    }
    if !has_letters_outside_wildcards(s) {
        return Cow::Borrowed(WILDCARD);
    }
    if let Some(eq) = s.find('=') {
        let (key, val) = (&s[..eq], &s[eq + 1..]);
        let (vp, vcore, vs) = split_affixes(val);
        if vcore.contains(WILDCARD) && vcore != WILDCARD && !has_letters_outside_wildcards(vcore) {
            return Cow::Owned(format!("{key}={vp}{WILDCARD}{vs}"));
        }
    }
    masked.clone()
}

fn has_letters_outside_wildcards(s: &str) -> bool {
    s.split(WILDCARD)
        .any(|part| part.bytes().any(|c| c.is_ascii_alphabetic() || c >= 0x80))
}

fn is_ipv6(core: &str) -> bool {
    let b = core.as_bytes();
    let colons = b.iter().filter(|&&c| c == b':').count();
    colons >= 2
        && b.len() >= 3
        && b.iter().any(u8::is_ascii_hexdigit)
        && b.iter()
            .all(|c| c.is_ascii_hexdigit() || *c == b':' || *c == b'.')
}

/// `[v6]:port` with the `[` already split off as a prefix.
fn is_bracketed_ipv6(pre: &str, core: &str) -> bool {
    if !pre.ends_with('[') {
        return false;
    }
    let Some((addr, rest)) = core.split_once(']') else {
        return false;
    };
    let port_ok = rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    port_ok && is_ipv6(addr)
}

/// `8-4-4-4-12` hex groups.
fn is_uuid(core: &str) -> bool {
    let b = core.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Absolute paths (`/a/b`, two or more components) and URLs (`scheme://rest`).
fn mask_path_or_url(tok: &str) -> Option<Cow<'_, str>> {
    let (pre, core, suf) = split_affixes(tok);
    if let Some(p) = core.contains(':').then(|| core.find("://")).flatten() {
        let scheme = &core[..p];
        if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'-' || c == b'.')
            && core.len() > p + 3
        {
            return Some(Cow::Owned(format!("{pre}{scheme}://{WILDCARD}{suf}")));
        }
        return None;
    }
    let b = core.as_bytes();
    if b.len() >= 4
        && b[0] == b'/'
        && b[1] != b'/'
        && b[1..].contains(&b'/')
        && b.iter().filter(|c| c.is_ascii_alphanumeric()).count() >= 2
    {
        return Some(Cow::Owned(format!("{pre}{WILDCARD}{suf}")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str) -> String {
        mask_token(t).into_owned()
    }

    #[test]
    fn day_and_month_names_are_masked() {
        assert_eq!(
            mask("at Mon Jun 20 03:40:59 2005"),
            "at <*> <*> <*> <*> <*>"
        );
        assert_eq!(mask_token("(Tuesday,"), "(<*>,");
        assert_eq!(mask_token("DEC"), "<*>");
        // Not a date word: lower case, mixed case, `May`, or just a word starting alike.
        for t in ["jun", "JuN", "May", "Monitor", "Sunday's", "Mark"] {
            assert_eq!(mask_token(t), t);
        }
    }

    #[test]
    fn numbers_and_units() {
        assert_eq!(m("42"), "<*>");
        assert_eq!(m("-1.5e3"), "<*>");
        assert_eq!(m("100ms"), "<*>");
        assert_eq!(m("3.5GB,"), "<*>,");
        assert_eq!(m("(TID"), "(TID");
        assert_eq!(m("12)."), "<*>).");
        assert_eq!(m("2023-01-02T03:04:05.123Z"), "<*>");
        assert_eq!(m("fabcde1"), "<*>");
        assert_eq!(m("J12-U11"), "<*>");
        assert_eq!(m("v2"), "v2");
    }

    #[test]
    fn network_and_ids() {
        assert_eq!(m("10.0.0.1:8080"), "<*>");
        assert_eq!(m("[173.234.31.186]"), "[<*>]");
        assert_eq!(m("/10.10.34.11:45307"), "<*>");
        assert_eq!(m("fe80::1"), "<*>");
        assert_eq!(m("[::1]:8080"), "<*>");
        assert_eq!(m("[fe80::1ff:fe23:4567:890a]:8080,"), "<*>,");
        assert_eq!(m("[10.0.0.1]:80"), "<*>");
        assert_eq!(m("2001:db8::ff00:42:8329"), "<*>");
        assert_eq!(m("123e4567-e89b-12d3-a456-426614174000"), "<*>");
        assert_eq!(m("0xdeadBEEF"), "<*>");
        assert_eq!(m("rhost=10.0.0.1"), "rhost=<*>");
        assert_eq!(m("uid=0"), "uid=<*>");
    }

    #[test]
    fn words_with_digits() {
        assert_eq!(m("blk_-6952295868487656571"), "blk_<*>");
        assert_eq!(m("blk_38865049064139660"), "blk_<*>");
        assert_eq!(
            m("appattempt_1445144423722_0020_000001"),
            "appattempt_<*>_<*>_<*>"
        );
        assert_eq!(m("ssh2"), "ssh2");
        assert_eq!(m("Slf4jLogger"), "Slf4jLogger");
        assert_eq!(m("onExtend:1514038530000"), "onExtend:<*>");
        assert_eq!(m("core.2275"), "core.<*>");
        assert_eq!(m("version=3.4.5--1,"), "version=<*>,");
        assert_eq!(m("<*>"), "<*>");
    }

    #[test]
    fn paths_and_urls() {
        assert_eq!(m("/etc/httpd/conf/workers2.properties"), "<*>");
        assert_eq!(m("hdfs://10.10.34.11:9000/pjhe/test"), "hdfs://<*>");
        assert_eq!(m("/"), "/");
        assert_eq!(m("and/or"), "and/or");
    }

    #[test]
    fn whole_line() {
        assert_eq!(mask("no  variables here"), "no  variables here");
        assert_eq!(
            mask("Invalid user  admin from 1.2.3.4"),
            "Invalid user admin from <*>"
        );
        assert!(matches!(mask("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for t in [
            "", "-", "+1", "=", "=5", "é1", "1é", "\u{0}", "://", "a://", "[]", "<*>",
        ] {
            let _ = mask_token(t);
            let _ = mask(t);
        }
    }
}
