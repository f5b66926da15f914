//! One line of a slow log, classified and parsed on its own: `# key: value` headers
//! (`# Time:`, `# User@Host:`, the counters), the `use db;` and `SET timestamp=…;` lines the
//! server writes before a statement, and the banner a server writes when it (re)opens the log.
//! Pure functions over borrowed lines; how lines make up entries is the parent module's job.
//!
//! Times without a zone (MariaDB's and MySQL 5.5's `# Time: 240102  3:04:05`) are taken as
//! UTC: the log does not say which zone the server ran in.

/// What a `# ...` line says about the entry it belongs to.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Header<'a> {
    pub time_us: Option<i64>,
    pub user: Option<&'a str>,
    pub client: Option<&'a str>,
    pub db: Option<&'a str>,
    pub thread_id: Option<u64>,
    pub query_time: Option<f64>,
    pub lock_time: Option<f64>,
    pub rows_sent: Option<u64>,
    pub rows_examined: Option<u64>,
    pub rows_affected: Option<u64>,
    pub bytes_sent: Option<u64>,
}

/// Lines a server writes when it opens the log (start-up, `FLUSH LOGS`); not entries.
pub(crate) fn is_banner(line: &str) -> bool {
    if line.starts_with("Tcp port: ") {
        return true;
    }
    if line.ends_with("started with:") && line.contains(", Version: ") {
        return true;
    }
    let mut words = line.split_whitespace();
    line.starts_with("Time")
        && words.next() == Some("Time")
        && words.next() == Some("Id")
        && words.next() == Some("Command")
        && words.next() == Some("Argument")
        && words.next().is_none()
}

/// Parses a line starting with `#` (the caller checked). Unknown keys are ignored, so
/// Percona's and MariaDB's extra lines (`# Full_scan: No ...`, `# explain: ...`) parse to an
/// empty header.
pub(crate) fn parse_header(line: &str) -> Header<'_> {
    let body = line[1..].trim_ascii_start();
    let mut h = Header::default();
    if let Some(rest) = body.strip_prefix("Time:") {
        h.time_us = parse_time(rest.trim());
        return h;
    }
    if let Some(rest) = body.strip_prefix("User@Host:") {
        return parse_user_host(rest);
    }
    if body.starts_with("explain:") {
        // MariaDB's EXPLAIN rows (`log_slow_verbosity=explain`): many tokens, no header key.
        return h;
    }
    let mut tokens = body.split_ascii_whitespace().peekable();
    while let Some(tok) = tokens.next() {
        let Some(key) = tok.strip_suffix(':').filter(|k| !k.is_empty()) else {
            continue;
        };
        let value = match tokens.peek() {
            Some(v) if !v.ends_with(':') => tokens.next().unwrap_or(""),
            _ => "",
        };
        apply(&mut h, key, value);
    }
    h
}

fn apply<'a>(h: &mut Header<'a>, key: &str, value: &'a str) {
    match key {
        "Query_time" => h.query_time = value.parse().ok().filter(|v: &f64| v.is_finite()),
        "Lock_time" => h.lock_time = value.parse().ok().filter(|v: &f64| v.is_finite()),
        "Rows_sent" => h.rows_sent = value.parse().ok(),
        "Rows_examined" => h.rows_examined = value.parse().ok(),
        "Rows_affected" => h.rows_affected = value.parse().ok(),
        "Bytes_sent" => h.bytes_sent = value.parse().ok(),
        "Thread_id" | "Id" => h.thread_id = value.parse().ok(),
        "Schema" => h.db = Some(value),
        _ => {}
    }
}

/// `user[user] @ host [ip]  Id: 8` (MySQL) or `user[user] @ host [ip]` (MariaDB, Percona).
fn parse_user_host(rest: &str) -> Header<'_> {
    let mut h = Header::default();
    let (who, from) = rest.split_once('@').unwrap_or((rest, ""));
    let who = who.trim();
    let user = match (who.find('['), who.rfind(']')) {
        (Some(open), Some(close)) if close > open && close > open + 1 => &who[open + 1..close],
        (Some(open), _) => who[..open].trim(),
        _ => who,
    };
    h.user = Some(user);
    let from = from.trim_start();
    let host_end = from.find([' ', '[']).unwrap_or(from.len());
    let host = &from[..host_end];
    let after_host = &from[host_end..];
    let ip = match (after_host.find('['), after_host.find(']')) {
        (Some(open), Some(close)) if close > open => after_host[open + 1..close].trim(),
        _ => "",
    };
    h.client = Some(if host.is_empty() { ip } else { host });
    if let Some(pos) = after_host.find("Id:") {
        h.thread_id = after_host[pos + 3..]
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse().ok());
    }
    h
}

/// `2024-01-02T03:04:05.123456Z`, `...+08:00`, `2024-01-02 03:04:05`, or `240102  3:04:05`.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (date_end, year, month, day) = if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        (10, num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?)
    } else if b.len() >= 6 && b[..6].iter().all(u8::is_ascii_digit) {
        (6, 2000 + num(&b[0..2])?, num(&b[2..4])?, num(&b[4..6])?)
    } else {
        return None;
    };
    let rest = s.get(date_end..)?;
    let rest = rest.strip_prefix('T').unwrap_or(rest).trim_start();
    let clock_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(rest.len());
    let mut clock = rest[..clock_end].split(':');
    let (hour, minute, second) = (
        num(clock.next()?.as_bytes())?,
        num(clock.next()?.as_bytes())?,
        num(clock.next()?.as_bytes())?,
    );
    if clock.next().is_some()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &rest[clock_end..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        for (i, d) in frac.bytes().take(digits).enumerate() {
            if i < 6 {
                micros = micros * 10 + i64::from(d - b'0');
            }
        }
        micros *= 10i64.pow(6u32.saturating_sub(digits as u32));
        rest = &frac[digits..];
    }
    let offset_s = match rest.as_bytes().first() {
        Some(&sign @ (b'+' | b'-')) => {
            let z = &rest.as_bytes()[1..];
            let (h, m) = if z.len() >= 5 && z[2] == b':' {
                (num(&z[0..2])?, num(&z[3..5])?)
            } else if z.len() >= 4 {
                (num(&z[0..2])?, num(&z[2..4])?)
            } else {
                return None;
            };
            let off = h * 3600 + m * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => 0,
    };
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1_000_000 + micros)
}

fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 (the one civil-date routine lives in `crate::time`).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    apus_schema::time::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?)
}

/// `SET timestamp=N;`, possibly with `last_insert_id=` / `insert_id=` before it: the server's
/// own preamble, not part of the statement. `Some(None)` when it carries no timestamp.
pub(crate) fn parse_set_preamble(line: &str) -> Option<Option<i64>> {
    let body = line.trim_end().strip_suffix(';')?;
    let (set, assignments) = body.split_at_checked(4)?;
    if !set.eq_ignore_ascii_case("set ") {
        return None;
    }
    let mut ts = None;
    for part in assignments.split(',') {
        let (name, value) = part.split_once('=')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "timestamp" => {
                let secs: f64 = value.parse().ok().filter(|v: &f64| v.is_finite())?;
                ts = Some((secs * 1e6).round() as i64);
            }
            "insert_id" | "last_insert_id" => {
                value.parse::<u64>().ok()?;
            }
            _ => return None,
        }
    }
    Some(ts)
}

/// `use db;` → `db` (backquotes removed).
pub(crate) fn parse_use(line: &str) -> Option<String> {
    let body = line.trim_end().strip_suffix(';')?.trim_end();
    let (kw, name) = body.split_at_checked(4)?;
    if !kw.eq_ignore_ascii_case("use ") {
        return None;
    }
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if let Some(inner) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
        return Some(inner.replace("``", "`"));
    }
    (!name.contains(char::is_whitespace)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(
            parse_time("2024-01-02T03:04:05.123456Z"),
            Some(1_704_164_645_123_456)
        );
        assert_eq!(
            parse_time("2024-01-02T11:04:05.123456+08:00"),
            Some(1_704_164_645_123_456)
        );
        assert_eq!(parse_time("240102  3:04:05"), Some(1_704_164_645_000_000));
        assert_eq!(parse_time("240102 03:04:05"), Some(1_704_164_645_000_000));
        assert_eq!(
            parse_time("2024-01-02 03:04:05"),
            Some(1_704_164_645_000_000)
        );
        for bad in [
            "",
            "x",
            "2024-13-02T03:04:05Z",
            "240102",
            "240102 25:00:00",
            "2024-01-0é",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn user_host() {
        let h = parse_header("# User@Host: app[app_rw] @ web1 [10.0.0.5]  Id:    42");
        assert_eq!(
            (h.user, h.client, h.thread_id),
            (Some("app_rw"), Some("web1"), Some(42))
        );
        let h = parse_header("# User@Host: root[root] @ localhost []");
        assert_eq!((h.user, h.client), (Some("root"), Some("localhost")));
        let h = parse_header("# User@Host: sb[] @  [127.0.0.1]");
        assert_eq!((h.user, h.client), (Some("sb"), Some("127.0.0.1")));
        let _ = parse_header("# User@Host: @[");
        let _ = parse_header("# User@Host:");
    }

    #[test]
    fn key_values() {
        let h = parse_header("# Thread_id: 12  Schema:   QC_hit: No");
        assert_eq!((h.thread_id, h.db), (Some(12), Some("")));
        let h = parse_header(
            "# Query_time: 1.5  Lock_time: 0.25 Rows_sent: 3  Rows_examined: 40 Thread_id: 8 Errno: 0 Bytes_sent: 99",
        );
        assert_eq!(h.query_time, Some(1.5));
        assert_eq!(h.lock_time, Some(0.25));
        assert_eq!(
            (h.rows_sent, h.rows_examined, h.bytes_sent),
            (Some(3), Some(40), Some(99))
        );
        assert_eq!(
            parse_header("# explain: id\tselect_type\ttable"),
            Header::default()
        );
        assert_eq!(parse_header("#"), Header::default());
        assert_eq!(parse_header("# Query_time: NaN").query_time, None);
    }

    #[test]
    fn preamble_lines() {
        assert_eq!(
            parse_set_preamble("SET timestamp=1700000000;"),
            Some(Some(1_700_000_000_000_000))
        );
        assert_eq!(
            parse_set_preamble("SET last_insert_id=5,insert_id=6,timestamp=1700000000.25;"),
            Some(Some(1_700_000_000_250_000))
        );
        assert_eq!(parse_set_preamble("SET insert_id=6;"), Some(None));
        assert_eq!(parse_set_preamble("SET autocommit=0;"), None);
        assert_eq!(parse_set_preamble("SET timestamp=now();"), None);
        assert_eq!(parse_use("use `sb``x`;"), Some("sb`x".into()));
        assert_eq!(parse_use("USE shop;"), Some("shop".into()));
        assert_eq!(parse_use("use shop"), None);
        assert_eq!(parse_use("used x;"), None);
    }

    #[test]
    fn banners() {
        assert!(is_banner(
            "/usr/sbin/mysqld, Version: 8.0.35 (MySQL Community Server - GPL). started with:"
        ));
        assert!(is_banner(
            "Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock"
        ));
        assert!(is_banner("Time                 Id Command    Argument"));
        assert!(is_banner("Time\t\t    Id Command\tArgument"));
        assert!(!is_banner("Time is money;"));
    }
}
