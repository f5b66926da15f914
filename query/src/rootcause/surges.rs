//! **What is new**: keys (exception templates, slow-SQL fingerprints) that appeared or
//! surged against the window-scaled baseline.

use serde::Serialize;

use super::*;

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
    use crate::rootcause::no_nan;

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
