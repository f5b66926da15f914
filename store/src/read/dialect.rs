//! The SQL the rankings need, in the two dialects the stores speak: DataFusion over the
//! embedded store (`ts` is `Timestamp(µs, UTC)`) and ClickHouse (`ts DateTime` + `ts_us
//! UInt32`, no window/CTE niceties on 18.16, `quantile`/`argMax`). Everything else in the
//! generated SQL is common ground: `CASE`, `count(*)`, `sum`, `avg`, `min`, `max`, aliases in
//! `GROUP BY`/`ORDER BY`.

/// A store's SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// DataFusion over Arrow/Parquet.
    DataFusion,
    /// ClickHouse (18.16 and later).
    ClickHouse,
}

impl Dialect {
    /// A string literal.
    pub fn lit(self, s: &str) -> String {
        match self {
            Dialect::DataFusion => format!("'{}'", s.replace('\'', "''")),
            Dialect::ClickHouse => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    /// `ts` as microseconds since the epoch (an integer).
    pub fn us(self) -> &'static str {
        match self {
            Dialect::DataFusion => "CAST(ts AS BIGINT)",
            Dialect::ClickHouse => "(toInt64(ts) * 1000000 + ts_us)",
        }
    }

    /// The start (µs since the epoch) of the `step_us`-wide time bucket holding `ts`.
    pub fn bucket(self, step_us: i64) -> String {
        match self {
            Dialect::DataFusion => format!("({} / {step_us}) * {step_us}", self.us()),
            Dialect::ClickHouse => format!("intDiv({}, {step_us}) * {step_us}", self.us()),
        }
    }

    /// `from_us <= ts < to_us`, index-friendly.
    pub fn time_range(self, from_us: i64, to_us: i64) -> String {
        match self {
            Dialect::DataFusion => format!(
                "ts >= to_timestamp_micros({from_us}) AND ts < to_timestamp_micros({to_us})"
            ),
            // The DateTime column (whole seconds) bounds the scan through the primary key;
            // a bound off the second also compares the row's microseconds. On a whole
            // second the DateTime column alone is exact, with no per-row arithmetic.
            Dialect::ClickHouse => {
                let (lo, hi) = (
                    from_us.div_euclid(1_000_000).max(0),
                    to_us.div_euclid(1_000_000).clamp(0, i64::from(u32::MAX)),
                );
                let us = self.us();
                let mut c = vec![format!("ts >= toDateTime({lo})")];
                if from_us.rem_euclid(1_000_000) != 0 {
                    c.push(format!("{us} >= {from_us}"));
                }
                if to_us.rem_euclid(1_000_000) == 0 {
                    c.push(format!("ts < toDateTime({hi})"));
                } else {
                    c.push(format!("ts <= toDateTime({hi}) AND {us} < {to_us}"));
                }
                c.join(" AND ")
            }
        }
    }

    /// `ts >= at_us`.
    pub fn since(self, at_us: i64) -> String {
        match self {
            Dialect::DataFusion => format!("ts >= to_timestamp_micros({at_us})"),
            // On a whole second the DateTime column alone decides (no per-row arithmetic).
            Dialect::ClickHouse if at_us.rem_euclid(1_000_000) == 0 => {
                format!("ts >= toDateTime({})", at_us.div_euclid(1_000_000))
            }
            Dialect::ClickHouse => format!("{} >= {at_us}", self.us()),
        }
    }

    /// The `q` quantile of `expr` (approximate).
    pub fn pct(self, q: f64, expr: &str) -> String {
        match self {
            Dialect::DataFusion => {
                format!("approx_percentile_cont({q}) WITHIN GROUP (ORDER BY {expr})")
            }
            Dialect::ClickHouse => format!("quantile({q})({expr})"),
        }
    }

    /// The `q` quantile of `expr` over the rows where `cond` holds.
    pub fn pct_if(self, q: f64, expr: &str, cond: &str) -> String {
        match self {
            Dialect::DataFusion => format!(
                "approx_percentile_cont({q}) WITHIN GROUP (ORDER BY CASE WHEN {cond} THEN {expr} END)"
            ),
            Dialect::ClickHouse => format!("quantileIf({q})({expr}, {cond})"),
        }
    }

    /// `val` of the row with the largest `by`.
    pub fn arg_max(self, val: &str, by: &str) -> String {
        match self {
            Dialect::DataFusion => format!("first_value({val} ORDER BY {by} DESC)"),
            Dialect::ClickHouse => format!("argMax({val}, {by})"),
        }
    }

    /// `expr` as a float.
    pub fn f64(self, expr: &str) -> String {
        match self {
            Dialect::DataFusion => format!("CAST({expr} AS DOUBLE)"),
            Dialect::ClickHouse => format!("toFloat64({expr})"),
        }
    }

    /// `status` as its class, e.g. `5xx`.
    pub fn status_class(self) -> &'static str {
        match self {
            Dialect::DataFusion => "CAST(status / 100 AS VARCHAR) || 'xx'",
            Dialect::ClickHouse => "concat(toString(intDiv(status, 100)), 'xx')",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_per_dialect() {
        assert_eq!(Dialect::DataFusion.lit("a'b\\"), "'a''b\\'");
        assert_eq!(Dialect::ClickHouse.lit("a'b\\"), "'a\\'b\\\\'");
        let us = "(toInt64(ts) * 1000000 + ts_us)";
        assert_eq!(
            Dialect::ClickHouse.time_range(1_500_000, 3_000_001),
            format!(
                "ts >= toDateTime(1) AND {us} >= 1500000 AND ts <= toDateTime(3) \
                 AND {us} < 3000001"
            )
        );
        // Whole seconds: the DateTime column alone.
        assert_eq!(
            Dialect::ClickHouse.time_range(1_000_000, 3_000_000),
            "ts >= toDateTime(1) AND ts < toDateTime(3)"
        );
    }
}
