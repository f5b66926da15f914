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
    parts.extend(edges(d, t.name(), p, s, raw, group, ""));
    format!("({})", parts.join(" UNION ALL "))
}

/// The raw rows of the window's partial edges aggregated as `raw` (none when the window
/// is whole hours).
fn edges(
    d: Dialect,
    table: &str,
    p: &Params,
    s: &Split,
    raw: &str,
    group: &str,
    filter: &str,
) -> Option<String> {
    (!s.edges.is_empty()).then(|| {
        let cond = s
            .edges
            .iter()
            .map(|(a, b)| format!("({})", p.with_range(*a, *b).conditions(d, &[])))
            .collect::<Vec<_>>()
            .join(" OR ");
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" AND {filter}")
        };
        format!("SELECT {raw} FROM {table} WHERE ({cond}){filter} GROUP BY {group}")
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
    /// On a cluster, whether each shard merges its rows per key before sending them (see
    /// [`ch_view_source`]); off where the initiator merges costly states for a few keys
    /// only (the slow-SQL TOP N's percentiles).
    shard_merge: bool,
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
                Table::SlowSql => {
                    static SLOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                    SLOW.get_or_init(|| {
                        apus_store::clickhouse::slow_sql_states(Dialect::ClickHouse.us())
                    })
                }
                _ => "",
            },
            latency: ("quantilesTDigestMerge(0.5, 0.99)(latency)", " / 1000.0"),
            shard_merge: true,
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
        shard_merge: true,
    };

    /// The access log's per-minute layers view (route, pool, upstream and tag, the lane
    /// view's states; [`apus_store::clickhouse::create_root_cause_views`]).
    pub const ACCESS_LAYERS: ChView = ChView {
        name: apus_store::clickhouse::LAYERS_VIEW,
        keys: apus_store::clickhouse::LAYER_KEYS,
        ..ChView::ACCESS_MINUTE
    };
    /// The access log's per-minute tenant view (requests and 5xx only).
    pub const ACCESS_TENANTS: ChView = ChView {
        name: apus_store::clickhouse::TENANTS_VIEW,
        keys: apus_store::clickhouse::TENANT_KEYS,
        states: apus_store::clickhouse::TENANT_STATES,
        latency: ("", ""),
        ..ChView::ACCESS_MINUTE
    };
    /// The access log's hourly tenant view (requests and 5xx only).
    pub const ACCESS_TENANTS_HOUR: ChView = ChView {
        name: apus_store::clickhouse::TENANTS_HOUR_VIEW,
        time: "hour",
        trunc: "toStartOfHour(ts)",
        unit_us: HOUR_US,
        ..ChView::ACCESS_TENANTS
    };
    /// The slow-SQL per-minute fingerprint view (fingerprint, calls, total time).
    pub const SLOW_MINUTE: ChView = ChView {
        name: apus_store::clickhouse::SLOW_MINUTE_VIEW,
        keys: apus_store::clickhouse::SLOW_MINUTE_KEYS,
        states: apus_store::clickhouse::SLOW_MINUTE_STATES,
        latency: ("", ""),
        ..ChView::ACCESS_MINUTE
    };

    /// This view with its rows merged at the initiator only (see `shard_merge`).
    pub fn merged_at_initiator(self) -> ChView {
        ChView {
            shard_merge: false,
            ..self
        }
    }

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
    ch_view_source_where(table, t, view, p, s, rolled, raw, group, "")
}

/// [`ch_view_source`] of the rows meeting `filter` too (SQL over the view's keys; empty
/// for none).
#[allow(clippy::too_many_arguments)]
pub fn ch_view_source_where(
    table: impl Fn(&str) -> String,
    t: Table,
    view: ChView,
    p: &Params,
    s: &Split,
    rolled: &str,
    raw: &str,
    group: &str,
    filter: &str,
) -> String {
    let d = Dialect::ClickHouse;
    let (name, time) = (view.name, view.time);
    let mut cond = vec![format!(
        "{time} >= toDateTime({}) AND {time} < toDateTime({})",
        s.full.0.div_euclid(1_000_000),
        s.full.1.div_euclid(1_000_000)
    )];
    cond.extend(p.dims.iter().map(|(k, v)| format!("{k} = {}", d.lit(v))));
    if !filter.is_empty() {
        cond.push(filter.to_string());
    }
    let from = table(name);
    let mut parts = vec![if from == name || !view.shard_merge {
        format!("SELECT {rolled} FROM {from} WHERE {}", cond.join(" AND "))
    } else {
        // A cluster: each shard merges its own rows per key first, so states of keys, not
        // of rows, travel to the initiator (and both shards merge at once).
        let (cols, keys) = merged_on_shards(view.states, rolled);
        let by = if keys.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", keys.join(", "))
        };
        format!("SELECT {cols} FROM {from} WHERE {}{by}", cond.join(" AND "))
    }];
    parts.extend(edges(d, &table(t.name()), p, s, raw, group, filter));
    format!("({})", parts.join(" UNION ALL "))
}

/// Split `s` at its top-level commas (not those inside parentheses), trimmed.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.retain(|x| !x.is_empty());
    out
}

/// For each state column of a view (`states`: `fState(args) AS col` or
/// `fState(params)(args) AS col`, as in its definition), the expression merging a group's
/// states into one state: `fMergeState(col)` or `fMergeState(params)(col)`.
fn merge_state_exprs(states: &str) -> Vec<(&str, String)> {
    split_top(states)
        .into_iter()
        .filter_map(|item| {
            let (expr, col) = item.rsplit_once(" AS ")?;
            let at = expr.find("State(")?;
            let (name, rest) = (&expr[..at], &expr[at + "State".len()..]);
            // The first parenthesised group, and whether arguments follow it.
            let mut depth = 0;
            let end = rest.char_indices().find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i + 1)
            })?;
            let params = if rest[end..].starts_with('(') {
                &rest[..end]
            } else {
                ""
            };
            let col = col.trim();
            Some((col, format!("{name}MergeState{params}({col})")))
        })
        .collect()
}

/// The definition (`fState(…) AS col`) of state column `col` among a view's `states`.
pub fn state_of<'a>(states: &'a str, col: &str) -> Option<&'a str> {
    split_top(states).into_iter().find(|item| {
        item.rsplit_once(" AS ")
            .is_some_and(|(_, c)| c.trim() == col)
    })
}

/// The columns of `rolled` with each of the view's state columns merged per key, and the
/// keys (the other columns, by alias) to group by.
fn merged_on_shards(states: &str, rolled: &str) -> (String, Vec<String>) {
    let merges = merge_state_exprs(states);
    let (mut cols, mut keys) = (Vec::new(), Vec::new());
    for item in split_top(rolled) {
        match merges.iter().find(|(c, _)| *c == item) {
            Some((c, m)) => cols.push(format!("{m} AS {c}")),
            None => {
                cols.push(item.to_string());
                let alias = item.rsplit_once(" AS ").map_or(item, |(_, a)| a.trim());
                keys.push(alias.to_string());
            }
        }
    }
    (cols.join(", "), keys)
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
    fn cluster_views_merge_states_on_the_shards() {
        let m = merge_state_exprs(apus_store::clickhouse::MINUTE_STATES);
        let names: Vec<&str> = m.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            names,
            [
                "requests",
                "errors",
                "client_errors",
                "latency_sum_us",
                "latency"
            ]
        );
        assert_eq!(m[1].1, "countIfMergeState(errors)");
        assert_eq!(m[4].1, "quantilesTimingMergeState(0.5, 0.99)(latency)");
        assert_eq!(
            state_of(apus_store::clickhouse::MINUTE_STATES, "latency"),
            Some("quantilesTimingState(0.5, 0.99)(intDiv(latency_us, 1000)) AS latency")
        );
        let slow = merge_state_exprs(ChView::hourly(Table::SlowSql).states);
        assert!(slow.contains(&("sample", "argMaxMergeState(sample)".to_string())));
        assert!(slow.contains(&("p95", "quantileTDigestMergeState(0.95)(p95)".to_string())));
        assert!(slow.contains(&("first_us", "minMergeState(first_us)".to_string())));
        let (cols, keys) = merged_on_shards(
            apus_store::clickhouse::MINUTE_STATES,
            "pool, minute AS t, requests, latency",
        );
        assert_eq!(
            cols,
            "pool, minute AS t, countMergeState(requests) AS requests, \
             quantilesTimingMergeState(0.5, 0.99)(latency) AS latency"
        );
        assert_eq!(keys, ["pool", "t"]);
        // On one server the view's rows are read as they are.
        let base = 1_790_000_000 / 3600 * 3600 * 1_000_000;
        let p = params(base, base + 2 * H, &[]);
        let s = ChView::ACCESS_MINUTE.split(&p, &[]).unwrap();
        let one = |cluster: bool| {
            ch_view_source(
                |t| {
                    if cluster {
                        format!("{t}_all")
                    } else {
                        t.to_string()
                    }
                },
                Table::AccessLog,
                ChView::ACCESS_MINUTE,
                &p,
                &s,
                "tag, requests",
                "tag, countState() AS requests",
                "tag",
            )
        };
        assert!(one(false).contains("SELECT tag, requests FROM access_log_1m WHERE"));
        assert!(one(true).contains(
            "SELECT tag, countMergeState(requests) AS requests FROM access_log_1m_all WHERE"
        ));
        assert!(one(true).contains(") GROUP BY tag"), "{}", one(true));
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
        assert!(ch.contains("FROM access_log_all WHERE ((ts >= "), "{ch}");
    }
}
