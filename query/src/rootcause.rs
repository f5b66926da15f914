//! Root cause analysis: *why* did the error rate (or slow-request rate) change, and *which
//! change* caused it. All functions are pure; no output ever holds NaN or infinity (non-finite
//! or negative counts count as 0, every division is guarded).
//!
//! 1. **Where** — [`adtributor`] follows Adtributor (Bhagwan et al., "Adtributor: Revenue
//!    Debugging in Advertising Systems", NSDI 2014) for the *derived* measure `rate = bad/total`.
//!    The forecast `F` is the baseline window scaled by `s = ΣA(total) / ΣF(total)` (the rate
//!    is unchanged by scaling), the actual `A` is the current window. With `m1 = bad`,
//!    `m2 = total`, `d1 = A_ij(m1) - F_ij(m1)` and `d2 = A_ij(m2) - F_ij(m2)`, the overall rate
//!    if *only* element `ij` moved to its actual value changes by
//!    `(F(m1)+d1)/(F(m2)+d2) - F(m1)/F(m2) = (d1·F(m2) - d2·F(m1)) / (F(m2)·(F(m2)+d2))`,
//!    the paper's derived-measure formula; EP is that divided by the overall change
//!    `A(m1)/A(m2) - F(m1)/F(m2)` (a share of the rate change; for ratios EPs need not sum to 1).
//!    Surprise of a derived measure is, as in the paper, the sum of its fundamental measures'
//!    Jensen–Shannon surprises: `S_ij = JS(bad) + JS(total)`, `p = F_ij/F`, `q = A_ij/A`,
//!    `JS = ½(p·ln(2p/(p+q)) + q·ln(2q/(p+q)))`. Per dimension, elements are taken by
//!    descending surprise, those with `EP > t_eep` kept until the cumulative EP exceeds `t_ep`;
//!    a dimension must reach `t_ep`. Extension: dimensions with total surprise below
//!    `min_surprise` (errors spread like the traffic: no *where*) are dropped.
//! 2. **When** — [`onset`]: first bucket above `level + max(3σ, binomial 3σ, floor)`, confirmed
//!    by the next bucket.
//! 3. **Which change** — [`rank_changes`] follows Gandalf (Li et al., "Gandalf: An Intelligent,
//!    End-To-End Analytics Service for Safe Deployment in Cloud-Scale Infrastructure", NSDI
//!    2020): *temporal* correlation (landed shortly before the onset; exponential decay with a
//!    half-life) times *spatial* correlation (touched the values Adtributor blamed).
//! 4. **What is new** — [`surges`]: new or surged exception templates / slow-SQL fingerprints
//!    (Poisson z-score against the window-scaled baseline).

use serde::Serialize;
use std::collections::BTreeMap;

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

/// Overall rate changes smaller than this are "no change".
const MIN_RATE_DELTA: f64 = 1e-6;
const EPS: f64 = 1e-12;

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Finite, non-negative count (anything else counts as 0).
fn count(x: f64) -> f64 {
    finite(x).max(0.0)
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > EPS {
        finite(num / den)
    } else {
        0.0
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

/// A time bucket of an aggregate: bucket start in µs, requests and bad requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Bucket start, µs since the epoch.
    pub ts: i64,
    /// Requests in the bucket.
    pub total: f64,
    /// Bad (error or slow) requests in the bucket.
    pub bad: f64,
}

/// Buckets with fewer requests are neither baseline nor onset candidates.
pub const ONSET_MIN_REQUESTS: f64 = 20.0;
/// Absolute floor of the rate increase that counts as a departure.
pub const ONSET_MIN_RISE: f64 = 0.02;
/// Preceding eligible buckets needed before a departure can be judged.
const ONSET_MIN_HISTORY: usize = 3;
/// At most this many preceding eligible buckets form the level.
const ONSET_MAX_HISTORY: usize = 60;

/// The first bucket where the rate departs from the level before it (e.g. rate above
/// baseline mean + max(3 sigma, an absolute floor like 0.02) with enough requests, confirmed by
/// the next bucket or being the last) — return its ts, or None if nothing departs.
///
/// Buckets are sorted by `ts`; only buckets with at least [`ONSET_MIN_REQUESTS`] take part.
/// The level is the pooled rate of up to 60 preceding buckets (at least 3); the threshold is
/// `level + max(3·σ_rates, 3·sqrt(level·(1-level)/n), ONSET_MIN_RISE)`.
pub fn onset(buckets: &[Bucket]) -> Option<i64> {
    let mut b = buckets.to_vec();
    b.retain(|b| count(b.total) >= ONSET_MIN_REQUESTS);
    b.sort_by_key(|b| b.ts);
    let rate = |b: &Bucket| count(b.bad) / b.total;
    let threshold = |hist: &[Bucket], n: f64| {
        let (bad, total) = hist
            .iter()
            .fold((0.0, 0.0), |(x, y), b| (x + count(b.bad), y + b.total));
        let level = ratio(bad, total);
        let rates: Vec<f64> = hist.iter().map(rate).collect();
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (rates.len() - 1) as f64;
        let sigma = finite(var.sqrt()).max((level * (1.0 - level) / n).max(0.0).sqrt());
        level + (3.0 * sigma).max(ONSET_MIN_RISE)
    };
    for i in ONSET_MIN_HISTORY..b.len() {
        let hist = &b[i.saturating_sub(ONSET_MAX_HISTORY)..i];
        let departs = |b: &Bucket| rate(b) > threshold(hist, b.total);
        if departs(&b[i]) && b.get(i + 1).is_none_or(departs) {
            return Some(b[i].ts);
        }
    }
    None
}

/// A change event (gray flip, config release, rollout step, rollback...).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Whatever identifies it, e.g. `"rules:api:v7"`.
    pub id: String,
    /// When it took effect, µs since the epoch.
    pub ts: i64,
    /// `gray_flip | config_release | rollout_step | rollback | ...`
    pub kind: String,
    /// `"dimension:value"` strings it touched, e.g. `"route:api"`, `"tag:gray"`.
    pub touched: Vec<String>,
    /// Human summary.
    pub summary: String,
}

/// A ranked candidate cause, output of [`rank_changes`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeSuspect {
    /// Change id.
    pub id: String,
    /// Change time, µs.
    pub ts: i64,
    /// Change kind.
    pub kind: String,
    /// Change summary.
    pub summary: String,
    /// `time_score · overlap_score`, in 0..=1.
    pub score: f64,
    /// 1 at the onset (within the grace), halving every half-life before it, 0 after it.
    pub time_score: f64,
    /// `OVERLAP_FLOOR + (1 - OVERLAP_FLOOR) · matched weight / total suspect weight`.
    pub overlap_score: f64,
    /// The suspect `"dim:value"` strings the change matched.
    pub matched: Vec<String>,
    /// Human sentence explaining the score.
    pub evidence: String,
}

/// Changes up to this long after the onset still count as "at the onset" (bucket granularity).
pub const ONSET_GRACE_US: i64 = 15_000_000;
/// Overlap score of a change touching none of the suspects (it still ranks by time).
pub const OVERLAP_FLOOR: f64 = 0.1;

fn split_dv(s: &str) -> (String, String) {
    match s.split_once(':') {
        Some((d, v)) => (d.trim().to_ascii_lowercase(), v.trim().to_string()),
        None => (String::new(), s.trim().to_string()),
    }
}

fn value_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Whether a change that touched `touched` can explain suspect `suspect` (both `"dim:value"`).
///
/// Dimensions compare case-insensitively and must be equal: a change on `route:api` does not
/// explain `tenant:acme` (the tenant's traffic through that route is a different element; if
/// Adtributor blamed the route too, the route suspect matches). Values compare exactly, except
/// that a value `*` matches any value of the dimension and a trailing `*` is a prefix match
/// (`route:/api/*` matches `route:/api/users`), on either side. A bare value without a
/// dimension (`"gray"`) matches that value in any dimension.
pub fn touches(touched: &str, suspect: &str) -> bool {
    let ((td, tv), (sd, sv)) = (split_dv(touched), split_dv(suspect));
    (td.is_empty() || sd.is_empty() || td == sd)
        && (value_matches(&tv, &sv) || value_matches(&sv, &tv))
}

/// Rank the changes in the window before the onset. `suspects` are "dim:value" strings with
/// weights (e.g. from adtributor: ("tag:gray", 0.9)). half_life_us controls the time decay.
///
/// Uses [`ONSET_GRACE_US`]; see [`rank_changes_with_grace`].
pub fn rank_changes(
    changes: &[Change],
    onset_ts: i64,
    suspects: &[(String, f64)],
    half_life_us: i64,
) -> Vec<ChangeSuspect> {
    rank_changes_with_grace(changes, onset_ts, suspects, half_life_us, ONSET_GRACE_US)
}

/// [`rank_changes`] with an explicit grace: changes at most `grace_us` after the onset get
/// time score 1 (use the bucket width when the onset is a bucket start). Later changes are
/// kept, last, with score 0, so the caller sees them. Sorted by score, then time score, then
/// most recent first.
pub fn rank_changes_with_grace(
    changes: &[Change],
    onset_ts: i64,
    suspects: &[(String, f64)],
    half_life_us: i64,
    grace_us: i64,
) -> Vec<ChangeSuspect> {
    let half_life = half_life_us.max(1) as f64;
    let mut weights: Vec<f64> = suspects.iter().map(|s| count(s.1)).collect();
    let equal = weights.iter().sum::<f64>() <= EPS; // all weights zero: weigh suspects equally
    if equal {
        weights.fill(1.0);
    }
    let total_w: f64 = weights.iter().sum();
    let mut out: Vec<ChangeSuspect> = changes
        .iter()
        .map(|c| {
            let dt = onset_ts.saturating_sub(c.ts); // > 0: before the onset
            let time_score = if dt < -grace_us.max(0) {
                0.0
            } else {
                finite((-(dt.max(0) as f64) / half_life * std::f64::consts::LN_2).exp())
            };
            let (mut matched, mut w, mut top) = (Vec::new(), 0.0, 0.0_f64);
            for ((s, _), &sw) in suspects.iter().zip(&weights) {
                if c.touched.iter().any(|t| touches(t, s)) && !matched.contains(s) {
                    matched.push(s.clone());
                    (w, top) = (w + sw, top.max(sw));
                }
            }
            let frac = ratio(w, total_w).clamp(0.0, 1.0);
            let overlap_score = OVERLAP_FLOOR + (1.0 - OVERLAP_FLOOR) * frac;
            let (secs, kind) = (dt.unsigned_abs() as f64 / 1e6, &c.kind);
            let (digits, side) = (
                usize::from(secs < 10.0),
                ["after", "before"][usize::from(dt >= 0)],
            );
            let when = format!("{kind} {secs:.digits$} s {side} onset");
            let evidence = if time_score == 0.0 {
                format!("{when}; too late to have caused it")
            } else if matched.is_empty() {
                format!("{when}; touched none of the anomaly's suspect values")
            } else {
                let pct = if equal { frac } else { top.min(1.0) } * 100.0;
                let verb = ["explains", "explain up to"][usize::from(matched.len() > 1)];
                format!(
                    "{when}; touched {} which {verb} {pct:.0}% of the change",
                    matched.join(", ")
                )
            };
            let (id, kind, summary) = (c.id.clone(), c.kind.clone(), c.summary.clone());
            let score = (time_score * overlap_score).clamp(0.0, 1.0);
            ChangeSuspect {
                id,
                ts: c.ts,
                kind,
                summary,
                score,
                time_score,
                overlap_score,
                matched,
                evidence,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.score.total_cmp(&a.score))
            .then(b.time_score.total_cmp(&a.time_score))
            .then(b.ts.cmp(&a.ts))
            .then(a.id.cmp(&b.id))
    });
    out
}

/// Counts of one key (exception template, slow-SQL fingerprint) in both windows.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCounts {
    /// Template or fingerprint.
    pub key: String,
    /// Occurrences in the baseline window.
    pub baseline: f64,
    /// Occurrences in the current window.
    pub current: f64,
}

/// A key that is new or surged, output of [`surges`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Surge {
    /// Template or fingerprint.
    pub key: String,
    /// Occurrences in the baseline window (unscaled).
    pub baseline: f64,
    /// Occurrences in the current window.
    pub current: f64,
    /// Absent from the baseline window.
    pub is_new: bool,
    /// `current / (baseline · window_ratio)`; for new keys the current count (finite sentinel).
    pub ratio: f64,
    /// Poisson z-score `(current - λ) / sqrt(max(λ, 1))` with `λ = baseline · window_ratio`.
    pub z: f64,
}

/// Keys that are new in the current window (baseline 0, current >= min_count) or surged
/// (Poisson z-score of current against baseline scaled by window_ratio = current_len/baseline_len
/// at least 3 and ratio at least 2), most significant first. Surged keys also need
/// `current >= min_count`. New keys get `is_new` and the finite sentinel `ratio = current`
/// (never `f64::MAX` or inf). A non-finite or non-positive `window_ratio` counts as 1. Sorted by
/// z descending, then current descending, then key.
pub fn surges(keys: &[KeyCounts], window_ratio: f64, min_count: f64) -> Vec<Surge> {
    let wr = Some(window_ratio)
        .filter(|w| finite(*w) > 0.0)
        .unwrap_or(1.0);
    let mut out: Vec<Surge> = keys
        .iter()
        .filter_map(|k| {
            let (baseline, current) = (count(k.baseline), count(k.current));
            let lambda = baseline * wr;
            let z = finite((current - lambda) / lambda.max(1.0).sqrt());
            let is_new = baseline <= 0.0;
            let ratio = finite(if is_new { current } else { current / lambda });
            let key = k.key.clone();
            let keep =
                current >= min_count && current > 0.0 && (is_new || (z >= 3.0 && ratio >= 2.0));
            keep.then_some(Surge {
                key,
                baseline,
                current,
                is_new,
                ratio,
                z,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.z.total_cmp(&a.z))
            .then(b.current.total_cmp(&a.current))
            .then(a.key.cmp(&b.key))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn no_nan<T: std::fmt::Debug>(x: &T) -> bool {
        let s = format!("{x:?}");
        !s.contains("NaN") && !s.contains("inf")
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

    fn series(rates: &[(f64, f64)]) -> Vec<Bucket> {
        let bucket = |(i, &(total, r)): (usize, &(f64, f64))| Bucket {
            ts: i as i64 * 60_000_000,
            total,
            bad: (total * r).round(),
        };
        rates.iter().enumerate().map(bucket).collect()
    }

    #[test]
    fn onset_finds_step() {
        let mut r = vec![(1000.0, 0.01); 10];
        r.extend([(1000.0, 0.3); 5]);
        let mut b = series(&r);
        b.reverse(); // order must not matter
        assert_eq!(onset(&b), Some(10 * 60_000_000));
        r.truncate(11); // a step in the last bucket counts
        assert_eq!(onset(&series(&r)), Some(10 * 60_000_000));
    }

    #[test]
    fn onset_none_when_flat_noisy_or_single_spike() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let r: Vec<_> = (0..50)
            .map(|_| (800.0 + 400.0 * rnd(), 0.004 + 0.012 * rnd()))
            .collect();
        assert_eq!(onset(&series(&r)), None);
        // noisier at a higher level: 3σ, not the floor, decides
        let r: Vec<_> = (0..50).map(|_| (1000.0, 0.04 + 0.12 * rnd())).collect();
        assert_eq!(onset(&series(&r)), None);
        let mut r = vec![(1000.0, 0.01); 10];
        r[5] = (1000.0, 0.5); // unconfirmed spike
        r.push((5.0, 1.0)); // too few requests, even as the last bucket
        assert_eq!(onset(&series(&r)), None);
        // a sustained rise smaller than the absolute floor over a perfectly flat level
        let mut r = vec![(100_000.0, 0.0); 10];
        r.extend([(100_000.0, 0.005); 5]);
        assert_eq!(onset(&series(&r)), None);
        assert_eq!(onset(&[]), None);
    }

    fn ch(id: &str, ts: i64, touched: &[&str]) -> Change {
        let touched = touched.iter().map(|s| s.to_string()).collect();
        let (id, kind, summary) = (id.to_string(), "gray_flip".to_string(), String::new());
        Change {
            id,
            ts,
            kind,
            touched,
            summary,
        }
    }

    fn sus(s: &[(&str, f64)]) -> Vec<(String, f64)> {
        s.iter().map(|&(s, w)| (s.to_string(), w)).collect()
    }

    #[test]
    fn rank_changes_prefers_related_change_before_onset() {
        let (onset_ts, s) = (1_000_000_000_000, 1_000_000);
        let changes = [
            ch("after", onset_ts + 120 * s, &["tag:gray"]),
            ch("unrelated", onset_ts - 30 * s, &["route:billing"]),
            ch("gray", onset_ts - 60 * s, &["tag:gray", "route:api"]),
        ];
        let suspects = sus(&[("tag:gray", 0.9), ("tenant:acme", 0.8)]);
        let r = rank_changes(&changes, onset_ts, &suspects, 300 * s);
        let ids: Vec<&str> = r.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            (ids, &r[0].matched[..]),
            (
                vec!["gray", "unrelated", "after"],
                &["tag:gray".to_string()][..]
            )
        );
        let e = &r[0].evidence;
        assert!(
            e.contains("60 s before onset") && e.contains("tag:gray which explains 90%"),
            "{e}"
        );
        assert!(r[2].score == 0.0 && (r[1].overlap_score - OVERLAP_FLOOR).abs() < 1e-12);
        assert!(r.iter().all(|c| (0.0..=1.0).contains(&c.score)));
        // without suspects, ranking is by time alone
        assert_eq!(
            rank_changes(&changes, onset_ts, &[], 300 * s)[0].id,
            "unrelated"
        );
    }

    #[test]
    fn matching_semantics() {
        assert!(touches("pool:gray", "pool:gray") && touches("Tenant:*", "tenant:acme"));
        assert!(touches("route:/api/*", "route:/api/users") && touches("gray", "tag:gray"));
        assert!(!touches("route:api", "tenant:acme") && !touches("pool:gray", "pool:stable"));
        assert!(!touches("tenant:gray", "tag:gray"));
        let changes = [ch("all-tenants", 9_000_000, &["tenant:*"])];
        let r = rank_changes(
            &changes,
            10_000_000,
            &sus(&[("tenant:acme", f64::NAN), ("tag:gray", 0.0)]),
            0,
        );
        assert!(no_nan(&r) && r[0].overlap_score > OVERLAP_FLOOR, "{r:?}");
    }

    #[test]
    fn surges_flags_new_and_surged_only() {
        let keys = [
            ("steady", 100.0, 105.0),
            ("surged", 10.0, 80.0),
            ("new", 0.0, 12.0),
            ("rare-new", 0.0, 2.0),
            ("gone", 50.0, 0.0),
            ("busy", 10_000.0, 12_000.0), // z = 20 but only 1.2x
            ("junk", f64::NAN, f64::INFINITY),
        ];
        let keys = keys.map(|(k, baseline, current)| KeyCounts {
            key: k.into(),
            baseline,
            current,
        });
        let s = surges(&keys, 1.0, 5.0);
        let ids: Vec<&str> = s.iter().map(|x| x.key.as_str()).collect();
        assert!(
            ids == ["surged", "new"] && s[1].is_new && !s[0].is_new && no_nan(&s),
            "{s:?}"
        );
        assert!((s[0].ratio - 8.0).abs() < 1e-12 && s[0].z > 3.0);
        // a current window 8x as long as the baseline window explains the surge
        let ids: Vec<String> = surges(&keys, 8.0, 5.0).into_iter().map(|x| x.key).collect();
        assert_eq!(ids, ["new"]);
    }
}
