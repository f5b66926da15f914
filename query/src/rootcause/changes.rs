//! **Which change**: changes ranked by time before the onset and by overlap of what they
//! touched with the dimension values that explain the anomaly (after Gandalf).

use apus_schema::Touched;
use serde::Serialize;

use super::*;

/// A change event (gray flip, config release, rollout step, rollback...).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Whatever identifies it, e.g. `"rules:api:v7"`.
    pub id: String,
    /// When it took effect, µs since the epoch.
    pub ts: i64,
    /// `gray_flip | config_release | rollout_step | rollback | ...`
    pub kind: String,
    /// What it touched, e.g. `route:api tag:gray`.
    pub touched: Touched,
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
    let (td, tv) = split_dv(touched);
    touches_item(&td, &tv, suspect)
}

/// [`touches`] for one `(dimension, value)` item of a [`Touched`].
fn touches_item(td: &str, tv: &str, suspect: &str) -> bool {
    let td = td.trim().to_ascii_lowercase();
    let (sd, sv) = split_dv(suspect);
    (td.is_empty() || sd.is_empty() || td == sd)
        && (value_matches(tv.trim(), &sv) || value_matches(&sv, tv.trim()))
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
                if c.touched.items().any(|(d, v)| touches_item(d, v, s)) && !matched.contains(s) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootcause::no_nan;

    fn ch(id: &str, ts: i64, touched: &[&str]) -> Change {
        let touched = touched.iter().copied().collect();
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
}
