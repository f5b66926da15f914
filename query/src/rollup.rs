//! Reading the embedded store's rollups (`slow_sql_1h`, `access_log_1h`, `access_log_1m`,
//! built by `apus_store::rollup` when rows reach Parquet) so a 24-hour ranking or chart
//! scans thousands of pre-aggregated rows instead of millions of raw ones, and ClickHouse's
//! views of the same names.
//!
//! A window `[from, to)` splits into the whole units (hours, or minutes for the lane
//! rollup) inside it, `[H1, H2)`, and the partial units at its edges. The answer is the union of three disjoint parts, grouped again:
//! rollup rows of the whole hours (committed files only), raw rows of the whole hours
//! still in memory (`{table}__mem`, not rolled up yet), and raw rows of the edges. Raw
//! parts are aggregated into the rollup's shape first (`hist_of` builds their latency
//! histograms), so one outer query merges everything (`hist_pct` reads the quantiles).
//! Filters or groups on columns a rollup does not keep (tenant, client) read raw rows.

use apus_schema::Table;
use apus_store::rollup;

use crate::params::Params;
use apus_store::read::dialect::Dialect;

use apus_schema::time::HOUR_US;

/// How a window splits into whole hours (read from rollups) and raw edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Whole hours `[H1, H2)`.
    pub full: (i64, i64),
    /// The partial hours before and after, non-empty ranges only.
    pub edges: Vec<(i64, i64)>,
}

/// The split of `p`'s window when `t`'s rollup can answer it: every filtered dimension and
/// every column in `group` is a rollup key, and the window holds at least one whole hour.
pub fn split(t: Table, p: &Params, group: &[&str]) -> Option<Split> {
    split_at(rollup::keys(t), p, group, HOUR_US)
}

/// [`split`] for a pre-aggregate with group keys `keys` at whole `unit_us` (an hour, or a
/// minute for ClickHouse's `access_log_1m`).
pub fn split_at(keys: &[&str], p: &Params, group: &[&str], unit_us: i64) -> Option<Split> {
    if keys.is_empty()
        || !p.dims.iter().all(|(k, _)| keys.contains(&k.as_str()))
        || !group.iter().all(|g| keys.contains(g))
    {
        return None;
    }
    let h1 = p.from_us.div_euclid(unit_us) * unit_us
        + if p.from_us.rem_euclid(unit_us) == 0 {
            0
        } else {
            unit_us
        };
    let h2 = p.to_us.div_euclid(unit_us) * unit_us;
    if h1 >= h2 {
        return None;
    }
    let edges = [(p.from_us, h1), (h2, p.to_us)]
        .into_iter()
        .filter(|(a, b)| a < b)
        .collect();
    Some(Split {
        full: (h1, h2),
        edges,
    })
}

/// The split of `p`'s window for the embedded rollup `level`, when it can answer it grouped
/// by `group`.
pub fn split_level(level: rollup::Level, p: &Params, group: &[&str]) -> Option<Split> {
    split_at(level.keys, p, group, level.unit_us)
}

/// The rows of `t` in `p`'s window in the shape of its hourly rollup, as a subquery:
/// `rolled` selects columns of rollup rows; `raw` aggregates raw rows into the same
/// columns (grouped by `group`).
pub fn source(t: Table, p: &Params, s: &Split, rolled: &str, raw: &str, group: &str) -> String {
    match rollup::levels(t).first() {
        Some(l) => source_at(*l, t, p, s, rolled, raw, group),
        None => String::new(),
    }
}

/// [`source`] from the embedded rollup `level` of `t`.
pub fn source_at(
    level: rollup::Level,
    t: Table,
    p: &Params,
    s: &Split,
    rolled: &str,
    raw: &str,
    group: &str,
) -> String {
    let d = Dialect::DataFusion;
    let name = level.name;
    let full = p.with_range(s.full.0, s.full.1);
    let mut parts = vec![
        format!(
            "SELECT {rolled} FROM {name} WHERE {}",
            full.conditions(d, &[])
        ),
        format!(
            "SELECT {raw} FROM {}__mem WHERE {} GROUP BY {group}",
            t.name(),
            full.conditions(d, &[])
        ),
    ];
    parts.extend(edges(d, t.name(), p, s, raw, group));
    format!("({})", parts.join(" UNION ALL "))
}

/// The raw rows of the window's partial edges aggregated as `raw` (none when the window
/// is whole hours).
fn edges(d: Dialect, table: &str, p: &Params, s: &Split, raw: &str, group: &str) -> Option<String> {
    (!s.edges.is_empty()).then(|| {
        let cond = s
            .edges
            .iter()
            .map(|(a, b)| format!("({})", p.with_range(*a, *b).conditions(d, &[])))
            .collect::<Vec<_>>()
            .join(" OR ");
        format!("SELECT {raw} FROM {table} WHERE {cond} GROUP BY {group}")
    })
}

/// A ClickHouse pre-aggregate: the view, its time column and unit, and its group keys.
#[derive(Debug, Clone, Copy)]
pub struct ChView {
    pub name: &'static str,
    pub time: &'static str,
    /// SQL truncating a raw row's `ts` to `time`.
    pub trunc: &'static str,
    pub unit_us: i64,
    pub keys: &'static [&'static str],
    /// The states of a row computed over raw rows (the view's own definition).
    pub states: &'static str,
    /// Merging `latency` into `[p50, p99]`, and the divisor to milliseconds.
    latency: (&'static str, &'static str),
}

impl ChView {
    /// `t`'s hourly view (`{table}_1h`, [`apus_store::clickhouse::create_rollup_views`]).
    pub fn hourly(t: Table) -> ChView {
        ChView {
            name: rollup::name(t).unwrap_or_default(),
            time: "hour",
            trunc: "toStartOfHour(ts)",
            unit_us: HOUR_US,
            keys: rollup::keys(t),
            states: match t {
                Table::AccessLog => apus_store::clickhouse::ACCESS_LOG_STATES,
                _ => "",
            },
            latency: ("quantilesTDigestMerge(0.5, 0.99)(latency)", " / 1000.0"),
        }
    }
    /// The access log's per-minute lane view
    /// ([`apus_store::clickhouse::create_minute_view`]).
    pub const ACCESS_MINUTE: ChView = ChView {
        name: apus_store::clickhouse::MINUTE_VIEW,
        time: "minute",
        trunc: "toStartOfMinute(ts)",
        unit_us: 60_000_000,
        keys: apus_store::clickhouse::MINUTE_KEYS,
        states: apus_store::clickhouse::MINUTE_STATES,
        latency: ("quantilesTimingMerge(0.5, 0.99)(latency)", ""),
    };

    /// The merged latency percentile `i` (1: p50, 2: p99) in milliseconds.
    pub fn pct_ms(&self, i: usize) -> String {
        format!("toFloat64({}[{i}]){}", self.latency.0, self.latency.1)
    }

    /// The split of `p`'s window for this view, when it can answer it grouped by `group`.
    pub fn split(&self, p: &Params, group: &[&str]) -> Option<Split> {
        split_at(self.keys, p, group, self.unit_us)
    }
}

/// ClickHouse: the rows of `t` in `p`'s window as aggregate states in the shape of `view`
/// (an hourly view of `apus_store::clickhouse::create_rollup_views`, or the lane view), as
/// a subquery. The view answers the whole units of `s` (it is written with every insert,
/// so nothing waits in memory); `raw` computes the same states over the raw rows of the
/// edges, grouped by `group`.
/// `table` names a table as the backend reads it (`…_all` on a cluster).
#[allow(clippy::too_many_arguments)]
pub fn ch_view_source(
    table: impl Fn(&str) -> String,
    t: Table,
    view: ChView,
    p: &Params,
    s: &Split,
    rolled: &str,
    raw: &str,
    group: &str,
) -> String {
    let d = Dialect::ClickHouse;
    let (name, time) = (view.name, view.time);
    let mut cond = vec![format!(
        "{time} >= toDateTime({}) AND {time} < toDateTime({})",
        s.full.0.div_euclid(1_000_000),
        s.full.1.div_euclid(1_000_000)
    )];
    cond.extend(p.dims.iter().map(|(k, v)| format!("{k} = {}", d.lit(v))));
    let mut parts = vec![format!(
        "SELECT {rolled} FROM {} WHERE {}",
        table(name),
        cond.join(" AND ")
    )];
    parts.extend(edges(d, &table(t.name()), p, s, raw, group));
    format!("({})", parts.join(" UNION ALL "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_US;

    fn params(from: i64, to: i64, dims: &[(&str, &str)]) -> Params {
        let mut v = vec![
            ("from".to_string(), from.to_string()),
            ("to".to_string(), to.to_string()),
        ];
        v.extend(dims.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        Params::parse(&v, &["pool", "tenant"], &[], 0).unwrap()
    }

    #[test]
    fn splits_whole_hours_from_edges() {
        let base = 1_790_000_000 / 3600 * 3600 * 1_000_000;
        let p = params(base + H / 2, base + 3 * H + 10, &[]);
        let s = split(Table::AccessLog, &p, &["pool"]).unwrap();
        assert_eq!(s.full, (base + H, base + 3 * H));
        assert_eq!(
            s.edges,
            vec![(base + H / 2, base + H), (base + 3 * H, base + 3 * H + 10)]
        );
        let exact = split(Table::AccessLog, &params(base, base + 24 * H, &[]), &[]).unwrap();
        assert!(exact.edges.is_empty());
        // Less than a whole hour, a tenant filter or group, or a table without rollup: raw.
        assert!(split(Table::AccessLog, &params(base + 1, base + H + 1, &[]), &[]).is_none());
        assert!(split(
            Table::AccessLog,
            &params(base, base + 2 * H, &[("tenant", "a")]),
            &[]
        )
        .is_none());
        assert!(split(Table::AccessLog, &p, &["tenant"]).is_none());
        assert!(split(Table::Logs, &p, &[]).is_none());
        let src = source(Table::AccessLog, &p, &s, "pool", "pool", "pool");
        assert_eq!(src.matches("UNION ALL").count(), 2);
        assert!(src.contains("FROM access_log_1h") && src.contains("FROM access_log__mem"));
        // ClickHouse: the view for the whole hours (by its `hour` key), raw rows for edges.
        let ch = ch_view_source(
            |t| format!("{t}_all"),
            Table::AccessLog,
            ChView::hourly(Table::AccessLog),
            &p,
            &s,
            "pool",
            "pool",
            "pool",
        );
        assert_eq!(ch.matches("UNION ALL").count(), 1);
        assert!(
            ch.contains("FROM access_log_1h_all WHERE hour >= toDateTime("),
            "{ch}"
        );
        assert!(ch.contains("FROM access_log_all WHERE (ts >= "), "{ch}");
    }
}
