//! Prometheus-style durations: `500ms`, `30s`, `1m30s`, `2h`, `1d`, `0s`.

/// Parse a duration into microseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    if t.is_empty() {
        return Err("empty duration; write e.g. `30s`, `1m`, `1h30m`".into());
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(format!(
                "`{s}`: expected a number then a unit (ms, s, m, h, d)"
            ));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: bad number"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1_000, 2)
        } else {
            match rest.bytes().next() {
                Some(b's') => (1_000_000, 1),
                Some(b'm') => (60_000_000, 1),
                Some(b'h') => (3_600_000_000, 1),
                Some(b'd') => (86_400_000_000, 1),
                _ => return Err(format!("`{s}`: unit must be ms, s, m, h or d")),
            }
        };
        rest = &rest[len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= 366 * 86_400_000_000)
            .ok_or_else(|| format!("`{s}`: longer than a year"))?;
    }
    Ok(total)
}

/// Format microseconds the way [`parse_duration`] reads them (`1m30s`, `250ms`).
pub fn format_duration(us: i64) -> String {
    if us <= 0 {
        return "0s".into();
    }
    let ms = us / 1_000;
    if ms % 1_000 != 0 {
        return format!("{ms}ms");
    }
    let mut s = ms / 1_000;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (s, us) in [
            ("0s", 0),
            ("0", 0),
            ("250ms", 250_000),
            ("1m30s", 90_000_000),
            ("2h", 7_200_000_000),
            ("1d", 86_400_000_000),
        ] {
            assert_eq!(parse_duration(s), Ok(us), "{s}");
        }
        assert_eq!(format_duration(90_000_000), "1m30s");
        assert_eq!(format_duration(250_000), "250ms");
        for bad in ["", "s", "5", "5x", "-1s", "1.5s", "9999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
