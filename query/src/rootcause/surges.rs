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

/// The two windows a surge compares, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    /// Length of the current window.
    pub current_s: f64,
    /// Length of the baseline window (before the current one).
    pub baseline_s: f64,
}

impl Windows {
    /// Two windows of equal length.
    pub fn equal(len_s: f64) -> Windows {
        Windows {
            current_s: len_s,
            baseline_s: len_s,
        }
    }
}

/// A key that is new or surged, output of [`surges`]. Its numbers agree with each other:
/// `current_per_min = current / current_window_s · 60`, `baseline_per_min` likewise, and
/// `ratio = current_per_min / baseline_per_min`, so a person can check the signal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Surge {
    /// Template or fingerprint.
    pub key: String,
    /// Occurrences in the baseline window (unscaled).
    pub baseline: f64,
    /// Occurrences in the current window.
    pub current: f64,
    /// Length of the current window, seconds.
    pub current_window_s: f64,
    /// Length of the baseline window, seconds.
    pub baseline_window_s: f64,
    /// Occurrences per minute in the current window.
    pub current_per_min: f64,
    /// Occurrences per minute in the baseline window.
    pub baseline_per_min: f64,
    /// Absent from the baseline window.
    pub is_new: bool,
    /// `current_per_min / baseline_per_min`; for new keys the current count (finite
    /// sentinel).
    pub ratio: f64,
    /// Poisson z-score `(current - λ) / sqrt(max(λ, 1))` with `λ` the baseline count
    /// scaled to the current window's length.
    pub z: f64,
}

impl Surge {
    /// What a person reads: the counts, the windows, the rates and the ratio.
    pub fn describe(&self, what: &str) -> String {
        let cur = span(self.current_window_s);
        if self.is_new {
            return format!(
                "new {what}: {} occurrences in the last {cur} ({:.2}/min), none in the {} before",
                self.current,
                self.current_per_min,
                span(self.baseline_window_s)
            );
        }
        format!(
            "{what} surged ×{:.1}: {} occurrences in the last {cur} ({:.2}/min) vs {} in the {} \
             before ({:.2}/min), z = {:.1}",
            self.ratio,
            self.current,
            self.current_per_min,
            self.baseline,
            span(self.baseline_window_s),
            self.baseline_per_min,
            self.z
        )
    }
}

/// [`surges`] over query rows with `cur` and `base` counts, keyed by `key`: the flagged rows
/// with their surge, most significant first.
pub fn surged_rows(
    rows: &[apus_store::read::json::Row],
    w: Windows,
    min_count: f64,
    key: impl Fn(&apus_store::read::json::Row) -> String,
) -> Vec<(&apus_store::read::json::Row, Surge)> {
    use apus_store::read::json::num;
    let by_key: std::collections::HashMap<String, &apus_store::read::json::Row> =
        rows.iter().map(|r| (key(r), r)).collect();
    let keys: Vec<KeyCounts> = rows
        .iter()
        .map(|r| KeyCounts {
            key: key(r),
            baseline: num(r, "base"),
            current: num(r, "cur"),
        })
        .collect();
    surges(&keys, w, min_count)
        .into_iter()
        .filter_map(|s| by_key.get(&s.key).map(|r| (*r, s)))
        .collect()
}

/// A window length as people say it (`90s`, `15m`, `2.5h`).
pub fn span(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// Keys that are new in the current window (baseline 0, current >= min_count) or surged
/// (Poisson z-score of current against the baseline scaled to the current window's length
/// at least 3 and rate ratio at least 2), most significant first. Surged keys also need
/// `current >= min_count`. New keys get `is_new` and the finite sentinel `ratio = current`
/// (never `f64::MAX` or inf). A non-finite or non-positive window length counts as 1 s.
/// Sorted by z descending, then current descending, then key.
pub fn surges(keys: &[KeyCounts], w: Windows, min_count: f64) -> Vec<Surge> {
    let len = |s: f64| Some(s).filter(|s| finite(*s) > 0.0).unwrap_or(1.0);
    let (cur_s, base_s) = (len(w.current_s), len(w.baseline_s));
    let wr = cur_s / base_s;
    let mut out: Vec<Surge> = keys
        .iter()
        .filter_map(|k| {
            let (baseline, current) = (count(k.baseline), count(k.current));
            let lambda = baseline * wr;
            let z = finite((current - lambda) / lambda.max(1.0).sqrt());
            let is_new = baseline <= 0.0;
            let (current_per_min, baseline_per_min) =
                (current / cur_s * 60.0, baseline / base_s * 60.0);
            let ratio = finite(if is_new {
                current
            } else {
                current_per_min / baseline_per_min
            });
            let key = k.key.clone();
            let keep =
                current >= min_count && current > 0.0 && (is_new || (z >= 3.0 && ratio >= 2.0));
            keep.then_some(Surge {
                key,
                baseline,
                current,
                current_window_s: cur_s,
                baseline_window_s: base_s,
                current_per_min: finite(current_per_min),
                baseline_per_min: finite(baseline_per_min),
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
        let s = surges(&keys, Windows::equal(60.0), 5.0);
        let ids: Vec<&str> = s.iter().map(|x| x.key.as_str()).collect();
        assert!(
            ids == ["surged", "new"] && s[1].is_new && !s[0].is_new && no_nan(&s),
            "{s:?}"
        );
        assert!((s[0].ratio - 8.0).abs() < 1e-12 && s[0].z > 3.0);
        // a current window 8x as long as the baseline window explains the surge
        let long = Windows {
            current_s: 480.0,
            baseline_s: 60.0,
        };
        let ids: Vec<String> = surges(&keys, long, 5.0)
            .into_iter()
            .map(|x| x.key)
            .collect();
        assert_eq!(ids, ["new"]);
        // the numbers a person reads agree: 80 in 2 min vs 10 in 60 min is ×240
        let uneven = Windows {
            current_s: 120.0,
            baseline_s: 3600.0,
        };
        let all = surges(&keys, uneven, 5.0);
        let s = all.iter().find(|s| s.key == "surged").unwrap();
        assert!((s.current_per_min - 40.0).abs() < 1e-9);
        assert!((s.baseline_per_min - 10.0 / 60.0).abs() < 1e-9);
        assert!((s.ratio - s.current_per_min / s.baseline_per_min).abs() < 1e-9);
        let text = s.describe("exception template");
        assert!(
            text.contains("×240.0")
                && text.contains("last 2m (40.00/min)")
                && text.contains("60m before (0.17/min)"),
            "{text}"
        );
    }
}
