//! Request parameters: a time range (`from`, `to`: `now`, `now-15m`, RFC 3339, or epoch
//! seconds/ms/µs) and exact-match dimension filters. Every name is checked against what the
//! endpoint accepts, so a typo is a 400 naming it instead of a silently unfiltered answer.

use std::collections::BTreeMap;

use apus_schema::time::parse_rfc3339;

use crate::QueryError;
use apus_store::read::dialect::Dialect;

/// The longest time range one request may cover.
pub const MAX_RANGE_US: i64 = 400 * 86_400 * 1_000_000;

/// Parsed and validated parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Range start, µs since the epoch (inclusive).
    pub from_us: i64,
    /// Range end, µs since the epoch (exclusive).
    pub to_us: i64,
    /// Dimension filters `(column, value)`, in a stable order.
    pub dims: Vec<(String, String)>,
    opts: BTreeMap<String, String>,
}

/// Parse a time expression relative to `now_us`.
pub fn parse_time(s: &str, now_us: i64) -> Result<i64, QueryError> {
    let t = s.trim();
    let bad = || {
        QueryError::BadRequest(format!(
            "bad time `{t}`: use now, now-15m (s|m|h|d|w), RFC 3339, or epoch seconds/ms/µs"
        ))
    };
    if t == "now" {
        return Ok(now_us);
    }
    if let Some(rest) = t.strip_prefix("now-") {
        // The unit is the last character, whatever its width (a byte split would panic
        // inside a multi-byte one: the `query` fuzz target found it).
        let cut = rest.char_indices().last().map_or(0, |(i, _)| i);
        let (n, unit) = rest.split_at(cut);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let mult: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let back = n
            .checked_mul(mult)
            .and_then(|v| v.checked_mul(1_000_000))
            .filter(|v| *v >= 0 && *v <= MAX_RANGE_US * 10)
            .ok_or_else(bad)?;
        return Ok(now_us.saturating_sub(back));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let v: i64 = t.parse().map_err(|_| bad())?;
        return Ok(if v < 100_000_000_000 {
            v * 1_000_000
        } else if v < 100_000_000_000_000 {
            v * 1_000
        } else {
            v
        });
    }
    parse_rfc3339(t).ok_or_else(bad)
}

/// Quote a string as a DataFusion SQL literal (a quote is doubled).
pub fn lit(s: &str) -> String {
    Dialect::DataFusion.lit(s)
}

impl Params {
    /// Parse `pairs` (the query string) for an endpoint that filters on `dims` and takes
    /// the options `opts`; `from`/`to` are always accepted (default: the last hour).
    pub fn parse(
        pairs: &[(String, String)],
        dims: &[&str],
        opts: &[&str],
        now_us: i64,
    ) -> Result<Params, QueryError> {
        let mut from = None;
        let mut to = None;
        let mut seen = BTreeMap::new();
        let mut dim_vals = Vec::new();
        let mut opt_vals = BTreeMap::new();
        for (k, v) in pairs {
            if seen.insert(k.as_str(), ()).is_some() {
                return Err(QueryError::BadRequest(format!(
                    "parameter `{k}` given more than once"
                )));
            }
            match k.as_str() {
                "from" => from = Some(parse_time(v, now_us)?),
                "to" => to = Some(parse_time(v, now_us)?),
                k if dims.contains(&k) => {
                    if v.is_empty() {
                        return Err(QueryError::BadRequest(format!(
                            "dimension `{k}` needs a value"
                        )));
                    }
                    dim_vals.push((k.to_string(), v.clone()));
                }
                k if opts.contains(&k) => {
                    opt_vals.insert(k.to_string(), v.clone());
                }
                k => {
                    let mut accepted: Vec<&str> = vec!["from", "to"];
                    accepted.extend(dims);
                    accepted.extend(opts);
                    return Err(QueryError::BadRequest(format!(
                        "unknown parameter or dimension `{k}`; this endpoint accepts: {}",
                        accepted.join(", ")
                    )));
                }
            }
        }
        let to_us = to.unwrap_or(now_us);
        let from_us = from.unwrap_or(to_us.saturating_sub(3_600_000_000));
        if from_us >= to_us {
            return Err(QueryError::BadRequest(format!(
                "bad time range: from ({from_us} µs) must be before to ({to_us} µs)"
            )));
        }
        // Checked: `from` in year 0 and `to` near i64::MAX would overflow.
        if to_us.checked_sub(from_us).is_none_or(|d| d > MAX_RANGE_US) {
            return Err(QueryError::BadRequest(
                "bad time range: at most 400 days per request".into(),
            ));
        }
        dim_vals.sort();
        Ok(Params {
            from_us,
            to_us,
            dims: dim_vals,
            opts: opt_vals,
        })
    }

    /// An option's raw value.
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.opts.get(k).map(String::as_str)
    }

    /// An unsigned option with a default and an upper bound (exceeding it is a 400).
    pub fn usize_opt(&self, k: &str, default: usize, max: usize) -> Result<usize, QueryError> {
        match self.opt(k) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 && n <= max => Ok(n),
                _ => Err(QueryError::BadRequest(format!(
                    "`{k}` must be an integer from 1 to {max}, got `{v}`"
                ))),
            },
        }
    }

    /// An option restricted to `allowed` values (first is the default).
    pub fn choice<'a>(&self, k: &str, allowed: &[&'a str]) -> Result<&'a str, QueryError> {
        match self.opt(k) {
            None => Ok(allowed[0]),
            Some(v) => allowed.iter().find(|a| **a == v).copied().ok_or_else(|| {
                QueryError::BadRequest(format!(
                    "`{k}` must be one of {}, got `{v}`",
                    allowed.join(", ")
                ))
            }),
        }
    }

    /// The same filters over another time range.
    pub fn with_range(&self, from_us: i64, to_us: i64) -> Params {
        Params {
            from_us,
            to_us,
            ..self.clone()
        }
    }

    /// `WHERE` conditions (without the keyword): the time range on `ts` and the dimension
    /// filters, skipping dimensions in `skip`.
    pub fn conditions(&self, d: Dialect, skip: &[&str]) -> String {
        let mut c = vec![d.time_range(self.from_us, self.to_us)];
        for (k, v) in &self.dims {
            if !skip.contains(&k.as_str()) {
                c.push(format!("{k} = {}", d.lit(v)));
            }
        }
        c.join(" AND ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_800_000_000_000;

    #[test]
    fn a_multibyte_unit_is_a_bad_time_not_a_panic() {
        assert!(parse_time("now-96\u{FFFD}", NOW).is_err());
        assert!(parse_time("now-\u{e9}", NOW).is_err());
        assert_eq!(parse_time("now-2m", NOW).unwrap(), NOW - 120_000_000);
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("now-15m", NOW).unwrap(), NOW - 900_000_000);
        assert_eq!(parse_time("now-2d", NOW).unwrap(), NOW - 172_800_000_000);
        assert_eq!(
            parse_time("2025-11-22T08:26:40Z", NOW).unwrap(),
            1_763_800_000_000_000
        );
        assert_eq!(parse_time("1763800000", NOW).unwrap(), NOW);
        assert_eq!(parse_time("1763800000000", NOW).unwrap(), NOW);
        for bad in ["yesterday", "now-5y", "now-m", "", "now-99999999999999d"] {
            assert!(parse_time(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn extreme_ranges_are_a_400_not_an_overflow() {
        let p = Params::parse(
            &pairs(&[
                ("from", "0000-01-01T00:00:00Z"),
                ("to", "9223372036854775807"),
            ]),
            &[],
            &[],
            NOW,
        );
        assert!(matches!(p, Err(QueryError::BadRequest(_))), "{p:?}");
    }

    #[test]
    fn validation() {
        let p = Params::parse(
            &pairs(&[("pool", "gray"), ("from", "now-2h"), ("limit", "5")]),
            &["pool", "tag"],
            &["limit"],
            NOW,
        )
        .unwrap();
        assert_eq!(p.to_us, NOW);
        assert_eq!(p.from_us, NOW - 7_200_000_000);
        assert_eq!(p.usize_opt("limit", 100, 1000).unwrap(), 5);
        assert!(p
            .conditions(Dialect::DataFusion, &[])
            .contains("pool = 'gray'"));
        let e = Params::parse(&pairs(&[("pol", "x")]), &["pool"], &[], NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown parameter or dimension `pol`"),
            "{e}"
        );
        let e =
            Params::parse(&pairs(&[("from", "now"), ("to", "now-1h")]), &[], &[], NOW).unwrap_err();
        assert!(e.to_string().contains("bad time range"), "{e}");
        let e = Params::parse(&pairs(&[("pool", "a"), ("pool", "b")]), &["pool"], &[], NOW)
            .unwrap_err();
        assert!(e.to_string().contains("more than once"), "{e}");
        let p = Params::parse(&pairs(&[("limit", "0")]), &[], &["limit"], NOW).unwrap();
        assert!(p.usize_opt("limit", 100, 1000).is_err());
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(lit("a'b"), "'a''b'");
        let p =
            Params::parse(&pairs(&[("tenant", "x' OR '1'='1")]), &["tenant"], &[], NOW).unwrap();
        assert!(p
            .conditions(Dialect::DataFusion, &[])
            .contains("tenant = 'x'' OR ''1''=''1'"));
        assert!(p
            .conditions(Dialect::ClickHouse, &[])
            .contains("tenant = 'x\\' OR \\'1\\'=\\'1'"));
    }
}
