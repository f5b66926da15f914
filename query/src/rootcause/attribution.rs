//! **Where**: Adtributor over the dimensions of a rate change (see the module doc of
//! [`crate::rootcause`] for the formulas).

use std::collections::BTreeMap;

use serde::Serialize;

use super::*;

/// Counts of one dimension value in the baseline window and the anomalous (current) window.
#[derive(Debug, Clone, PartialEq)]
pub struct DimCounts {
    /// Dimension name, e.g. `"tag"`, `"tenant"`, `"pool"`, `"route"`, `"upstream"`.
    pub dimension: String,
    /// Dimension value, e.g. `"gray"`, `"acme"`.
    pub value: String,
    /// Requests in the baseline window.
    pub baseline_total: f64,
    /// Errors (or slow requests) in the baseline window.
    pub baseline_bad: f64,
    /// Requests in the current window.
    pub current_total: f64,
    /// Errors (or slow requests) in the current window.
    pub current_bad: f64,
}

/// One element (dimension value) chosen by [`adtributor`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueSuspect {
    /// Dimension value.
    pub value: String,
    /// Share of the overall rate change explained (Adtributor EP for derived measures).
    pub explanatory_power: f64,
    /// Jensen–Shannon surprise (sum over the `bad` and `total` measures).
    pub surprise: f64,
    /// `baseline_bad / baseline_total` (0 if no traffic).
    pub baseline_rate: f64,
    /// `current_bad / current_total` (0 if no traffic).
    pub current_rate: f64,
    /// Errors in the current window.
    pub current_bad: f64,
    /// Requests in the current window.
    pub current_total: f64,
}

/// A dimension that explains the change, with its chosen values.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DimensionSuspect {
    /// Dimension name.
    pub dimension: String,
    /// Sum of the chosen values' surprise.
    pub surprise: f64,
    /// Sum of the chosen values' EP.
    pub explanatory_power: f64,
    /// Chosen elements, by surprise descending.
    pub values: Vec<ValueSuspect>,
}

/// Thresholds of [`adtributor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdtributorParams {
    /// Minimum EP of a single element to be kept (paper: 0.1).
    pub t_eep: f64,
    /// Cumulative EP a dimension must reach (paper: 0.67).
    pub t_ep: f64,
    /// Maximum number of dimensions returned (paper: 3).
    pub max_dimensions: usize,
    /// Minimum total surprise of a dimension (extension; 0 disables). Default 0.005, roughly a
    /// value with 25% of the traffic holding 36% of the errors.
    pub min_surprise: f64,
}

impl Default for AdtributorParams {
    fn default() -> Self {
        let (t_eep, t_ep, max_dimensions, min_surprise) = (0.1, 0.67, 3, 5e-3);
        Self {
            t_eep,
            t_ep,
            max_dimensions,
            min_surprise,
        }
    }
}

/// Jensen–Shannon surprise term of one element (natural log, `0·ln 0 = 0`).
fn js(p: f64, q: f64) -> f64 {
    let m = p + q;
    if m <= EPS {
        return 0.0;
    }
    let term = |x: f64| if x > EPS { x * (2.0 * x / m).ln() } else { 0.0 };
    finite(0.5 * (term(p) + term(q))).max(0.0)
}

/// Adtributor for the derived measure rate = bad/total. Baseline counts are the "forecast"
/// (scale the baseline window to the current window's overall total so windows of different
/// traffic volume compare), current counts are the "actual". Per dimension: sort elements by
/// surprise, keep those with EP > t_eep until cumulative EP > t_ep; a dimension qualifies only
/// if its cumulative EP reaches t_ep. Rank dimensions by surprise (desc), return at most
/// max_dimensions. If the overall rate did not change (|delta| tiny), return empty.
///
/// Rows with the same dimension and value are summed. Totals are computed per dimension, so
/// each dimension should partition the same traffic.
pub fn adtributor(rows: &[DimCounts], p: &AdtributorParams) -> Vec<DimensionSuspect> {
    // dimension -> value -> [baseline_total, baseline_bad, current_total, current_bad]
    let mut dims: BTreeMap<&str, BTreeMap<&str, [f64; 4]>> = BTreeMap::new();
    for r in rows {
        let c = dims.entry(&r.dimension).or_default();
        let c = c.entry(&r.value).or_default();
        let add = [
            r.baseline_total,
            r.baseline_bad,
            r.current_total,
            r.current_bad,
        ];
        c.iter_mut().zip(add).for_each(|(c, a)| *c += count(a));
    }
    let mut out = Vec::new();
    for (dim, values) in dims {
        let sum = |k: usize| values.values().map(|c| c[k]).sum::<f64>();
        let (bt, bb, ct, cb) = (sum(0), sum(1), sum(2), sum(3));
        if bt <= EPS || ct <= EPS {
            continue;
        }
        let scale = ct / bt;
        let (f1, f2) = (bb * scale, bt * scale); // F(m1), F(m2)
        let delta = cb / ct - bb / bt; // A(f) - F(f)
        if !delta.is_finite() || delta.abs() < MIN_RATE_DELTA {
            continue;
        }
        let mut elems: Vec<ValueSuspect> = values
            .iter()
            .map(|(value, c)| {
                let (d1, d2) = (c[3] - c[1] * scale, c[2] - c[0] * scale);
                let den = f2 * (f2 + d2);
                let ep = ratio(d1 * f2 - d2 * f1, den) / delta;
                let surprise = js(ratio(c[1], bb), ratio(c[3], cb)) + js(c[0] / bt, c[2] / ct);
                ValueSuspect {
                    value: (*value).to_string(),
                    explanatory_power: finite(ep),
                    surprise: finite(surprise),
                    baseline_rate: ratio(c[1], c[0]),
                    current_rate: ratio(c[3], c[2]),
                    current_bad: c[3],
                    current_total: c[2],
                }
            })
            .collect();
        elems.sort_by(|a, b| (b.surprise.total_cmp(&a.surprise)).then(a.value.cmp(&b.value)));
        let (mut chosen, mut cum) = (Vec::new(), 0.0);
        for e in elems {
            if e.explanatory_power > p.t_eep {
                cum += e.explanatory_power;
                chosen.push(e);
                if cum > p.t_ep {
                    break;
                }
            }
        }
        let surprise: f64 = chosen.iter().map(|e| e.surprise).sum();
        if chosen.is_empty() || cum < p.t_ep || surprise < p.min_surprise {
            continue;
        }
        out.push(DimensionSuspect {
            dimension: dim.to_string(),
            surprise: finite(surprise),
            explanatory_power: finite(cum),
            values: chosen,
        });
    }
    out.sort_by(|a, b| {
        b.surprise
            .total_cmp(&a.surprise)
            .then_with(|| b.explanatory_power.total_cmp(&a.explanatory_power))
            .then_with(|| a.dimension.cmp(&b.dimension))
    });
    out.truncate(p.max_dimensions);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootcause::no_nan;

    const PLAIN: AdtributorParams = AdtributorParams {
        t_eep: 0.1,
        t_ep: 0.67,
        max_dimensions: 3,
        min_surprise: 0.0,
    };

    fn dc(d: &str, v: &str, bt: f64, bb: f64, ct: f64, cb: f64) -> DimCounts {
        let (dimension, value) = (d.to_string(), v.to_string());
        let (baseline_total, baseline_bad, current_total, current_bad) = (bt, bb, ct, cb);
        DimCounts {
            dimension,
            value,
            baseline_total,
            baseline_bad,
            current_total,
            current_bad,
        }
    }

    /// Acme on gray goes from 1% to 60% errors, the rest stays at 1%; the current window has
    /// twice the traffic. Routes carry equal traffic and the current errors spread over them
    /// with a little noise. Duplicate rows are summed by `adtributor`.
    fn incident() -> Vec<DimCounts> {
        let mut rows = Vec::new();
        let tenants = [("acme", 0.3), ("beta", 0.4), ("gamma", 0.3)];
        let cells = tenants.map(|t| [("gray", 0.2), ("stable", 0.8)].map(|g| (t, g)));
        for ((tenant, share), (tag, tag_share)) in cells.into_iter().flatten() {
            let bt = 10_000.0 * share * tag_share;
            let rate = [0.01, 0.6][usize::from((tenant, tag) == ("acme", "gray"))];
            let (bb, ct, cb) = (0.01 * bt, 2.0 * bt, 2.0 * bt * rate);
            rows.push(dc("tenant", tenant, bt, bb, ct, cb));
            rows.push(dc("tag", tag, bt, bb, ct, cb));
            for (route, noise) in [("a", 0.22), ("b", 0.29), ("c", 0.25), ("d", 0.24)] {
                rows.push(dc("route", route, bt / 4.0, bb / 4.0, ct / 4.0, cb * noise));
            }
        }
        rows
    }

    #[test]
    fn adtributor_finds_gray_acme() {
        let res = adtributor(&incident(), &AdtributorParams::default());
        let (top, v) = (&res[0], &res[0].values[0]);
        assert!(
            ["tag", "tenant"].contains(&top.dimension.as_str()),
            "{res:?}"
        );
        assert!(["gray", "acme"].contains(&v.value.as_str()) && top.values.len() == 1);
        assert!(v.explanatory_power > 0.5 && no_nan(&res), "{res:?}");
        let share = if v.value == "gray" { 0.3 } else { 0.2 }; // acme-gray share of v
        assert!((v.current_rate - (0.6 * share + 0.01 * (1.0 - share))).abs() < 1e-9);
    }

    #[test]
    fn evenly_spread_dimension_not_chosen() {
        let res = adtributor(&incident(), &AdtributorParams::default());
        assert!(res.iter().all(|d| d.dimension != "route"), "{res:?}");
        let res = adtributor(&incident(), &PLAIN); // without the surprise floor: ranked last
        let last = res.last().unwrap();
        assert!(last.dimension == "route" && last.surprise < 5e-3, "{res:?}");
    }

    #[test]
    fn derived_ep_matches_hand_computation() {
        // mix shift: x always fails half the time, traffic moves from y to x
        let x = dc("pool", "x", 100.0, 50.0, 500.0, 250.0);
        let res = adtributor(&[x, dc("pool", "y", 900.0, 0.0, 500.0, 0.0)], &PLAIN);
        let v = &res[0].values; // by surprise, descending: x moved further
        assert!(
            v[0].value == "x" && v[0].surprise >= v[1].surprise,
            "{res:?}"
        );
        assert!(v[0].surprise > 0.05); // from the traffic shift alone: x has all errors throughout
                                       // x: (200·1000 − 400·50) / (1000·1400) / 0.2; y: (0 + 400·50) / (1000·600) / 0.2
        assert!((v[0].explanatory_power - 0.9 / 1.4).abs() < 1e-9, "{res:?}");
        assert!((v[1].explanatory_power - 1.0 / 6.0).abs() < 1e-9, "{res:?}");
    }

    #[test]
    fn adtributor_is_succinct() {
        // a explains 70% (> t_ep), so b (30%) is not needed
        let pools = [("a", 710.0), ("b", 310.0), ("c", 10.0), ("d", 10.0)];
        let mut rows = pools
            .map(|(v, cb)| dc("pool", v, 1e3, 10.0, 1e3, cb))
            .to_vec();
        // twenty routes with 5% each: no element reaches t_eep, so the dimension fails t_ep
        rows.extend((0..20).map(|i| dc("route", &format!("r{i}"), 200.0, 2.0, 200.0, 51.0)));
        let res = adtributor(&rows, &PLAIN);
        assert!(res.len() == 1 && res[0].values.len() == 1, "{res:?}");
        assert!((res[0].values[0].explanatory_power - 0.7).abs() < 1e-9);
    }

    #[test]
    fn adtributor_unchanged_rate_is_empty() {
        let gray = dc("tag", "gray", 100.0, 1.0, 300.0, 3.0);
        let rows = [gray, dc("tag", "stable", 900.0, 9.0, 2700.0, 27.0)];
        assert!(adtributor(&rows, &PLAIN).is_empty() && adtributor(&[], &PLAIN).is_empty());
    }

    #[test]
    fn zero_traffic_no_nan() {
        let rows = [
            dc("tag", "gray", 0.0, 0.0, 100.0, 90.0),
            dc("tag", "stable", 1000.0, 0.0, 900.0, 0.0),
            dc("tag", "dead", 0.0, 0.0, 0.0, 0.0),
            dc("tag", "junk", f64::NAN, f64::INFINITY, -3.0, f64::NAN),
            dc("zone", "z1", 0.0, 0.0, 0.0, 0.0),
            dc("pool", "p", 0.0, 0.0, 50.0, 10.0),
        ];
        let res = adtributor(&rows, &PLAIN);
        assert!(no_nan(&res) && res[0].values[0].value == "gray", "{res:?}");
    }
}
