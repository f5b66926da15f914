//! Timestamp parsing for receivers: RFC 3339 / ISO 8601 strings and epoch numbers, to
//! microseconds since the Unix epoch, and back (civil dates, RFC 3339 formatting).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, NaiveDate};

/// One hour in µs (the partition and rollup unit).
pub const HOUR_US: i64 = 3_600_000_000;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date; `None` for a date that does not exist
/// (month 13, February 30).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?;
    Some(i64::from(date.num_days_from_ce()) - i64::from(EPOCH_DAYS_FROM_CE))
}

/// Days since the epoch → (year, month, day), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let date = i32::try_from(days + i64::from(EPOCH_DAYS_FROM_CE))
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or_default();
    (i64::from(date.year()), date.month(), date.day())
}

/// `NaiveDate::from_ymd(1970, 1, 1).num_days_from_ce()`.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Format µs since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub fn format_rfc3339(us: i64) -> String {
    match DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => String::from("invalid-time"),
    }
}

fn num(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0i64, |a, b| a * 10 + i64::from(b - b'0')))
}

/// Parse `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM|±HHMM]` (no zone = UTC).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, se) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_us = 0i64;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &b[start..i];
        let mut v = 0i64;
        for k in 0..6 {
            v = v * 10 + digits.get(k).map_or(0, |c| i64::from(c - b'0'));
        }
        frac_us = v;
    }
    let mut offset_s = 0i64;
    if i < b.len() {
        match b[i] {
            b'Z' | b'z' => i += 1,
            b'+' | b'-' => {
                let sign = if b[i] == b'-' { -1 } else { 1 };
                let rest: Vec<u8> = b[i + 1..].iter().copied().filter(|c| *c != b':').collect();
                if rest.len() != 4 {
                    return None;
                }
                offset_s = sign * (num(&rest[0..2])? * 3600 + num(&rest[2..4])? * 60);
                i = b.len();
            }
            _ => return None,
        }
    }
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32)?;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_s) * 1_000_000 + frac_us)
}

/// Epoch number in s, ms, µs or ns (told apart by magnitude) to µs.
pub fn epoch_to_us(v: f64) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some(if v < 1e11 {
        (v * 1e6) as i64
    } else if v < 1e14 {
        (v * 1e3) as i64
    } else if v < 1e17 {
        v as i64
    } else {
        (v / 1e3) as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.123456Z"),
            Some(1_704_164_645_123_456)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02 03:04:05"),
            Some(1_704_164_645_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T05:04:05+02:00"),
            Some(1_704_164_645_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.5-0100"),
            Some(1_704_168_245_500_000)
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00Q",
            "yesterday",
            "2024-01-01T00:00:00+1",
            "2023-02-29T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(epoch_to_us(1_700_000_000.5), Some(1_700_000_000_500_000));
        assert_eq!(
            epoch_to_us(1_700_000_000_000.0),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(epoch_to_us(f64::NAN), None);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(days_from_civil(2024, 1, 1), Some(19_723));
        assert_eq!(days_from_civil(1969, 12, 31), Some(-1));
        assert_eq!(
            format_rfc3339(1_704_164_645_123_456),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }
}
