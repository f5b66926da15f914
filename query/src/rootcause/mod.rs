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

mod attribution;
mod changes;
mod onset;
mod surges;

pub use attribution::{adtributor, AdtributorParams, DimCounts, DimensionSuspect, ValueSuspect};
pub use changes::{
    rank_changes, rank_changes_with_grace, touches, Change, ChangeSuspect, ONSET_GRACE_US,
    OVERLAP_FLOOR,
};
pub use onset::{onset, Bucket, ONSET_MIN_REQUESTS, ONSET_MIN_RISE};
pub use surges::{span, surged_rows, surges, KeyCounts, Surge, Windows};

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

/// `num / den`, 0 when `den` is (about) zero or the result is not finite.
pub fn ratio(num: f64, den: f64) -> f64 {
    if den > EPS {
        finite(num / den)
    } else {
        0.0
    }
}

/// Test helper: no NaN or infinity anywhere in `x`'s debug output.
#[cfg(test)]
fn no_nan<T: std::fmt::Debug>(x: &T) -> bool {
    let s = format!("{x:?}");
    !s.contains("NaN") && !s.contains("inf")
}
