//! Timestamp parsing for receivers: RFC 3339 / ISO 8601 strings and epoch numbers, to
//! microseconds since the Unix epoch, and back (civil dates, RFC 3339 formatting).

use std::time::{SystemTime, UNIX_EPOCH};

/// One hour in µs (the partition and rollup unit).
pub const HOUR_US: i64 = 3_600_000_000;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since the epoch → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Format µs since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub fn format_rfc3339(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        us.rem_euclid(1_000_000)
    )
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
    let days = days_from_civil(y, mo as u32, d as u32);
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
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(epoch_to_us(1_700_000_000.5), Some(1_700_000_000_500_000));
        assert_eq!(
            epoch_to_us(1_700_000_000_000.0),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(epoch_to_us(f64::NAN), None);
    }
}
