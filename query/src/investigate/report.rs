//! The answer of root cause: typed suspects in one ranked list (the JSON of
//! `/api/v1/rootcause`), built from what the analysis steps found.

use serde::Serialize;

use super::{Surged, CHANGE_FIRST};
use crate::rootcause::{ChangeSuspect, DimensionSuspect, ValueSuspect};
use apus_store::read::json::{rfc3339, text, Row};

/// The answer of root cause (the JSON of `/api/v1/rootcause`).
#[derive(Debug, Serialize)]
pub struct RootCause {
    /// Every suspect, ranked.
    pub rows: Vec<Ranked>,
    /// `error_rate` or `latency`.
    pub metric: &'static str,
    /// Where the measure's series turned, if it did.
    pub onset: Option<String>,
    /// The window asked about.
    pub from: String,
    /// End of the window.
    pub to: String,
    /// The anomalous period.
    pub current: Period,
    /// The period before it.
    pub baseline: Period,
    /// Adtributor's explaining dimensions, by surprise.
    pub dimensions: Vec<DimensionSuspect>,
    /// Every change suspect, by score.
    pub changes: Vec<Suspect>,
    /// New or surged exception templates (their rows).
    pub templates: Vec<Row>,
    /// New or surged slow-SQL fingerprints (their rows).
    pub slow_sql: Vec<Row>,
    /// Route → pool → upstream layers, the most worsened first.
    pub layers: Vec<Row>,
    /// Time the analysis took.
    pub took_ms: f64,
}

/// Requests and bad requests of one period.
#[derive(Debug, Serialize)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub requests: f64,
    pub bad: f64,
    pub rate: f64,
}

/// A suspect with its place in the list.
#[derive(Debug, Serialize)]
pub struct Ranked {
    /// 1-based.
    pub rank: usize,
    #[serde(flatten)]
    pub suspect: Suspect,
}

/// One suspect, by kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Suspect {
    /// A change (gray flip, release, rollout step, server change) before the onset.
    Change {
        id: String,
        change_kind: String,
        ts: String,
        score: f64,
        time_score: f64,
        overlap_score: f64,
        matched: Vec<String>,
        summary: String,
        evidence: String,
    },
    /// A dimension whose values explain the change.
    Dimension {
        dimension: String,
        values: Vec<ValueSuspect>,
        score: f64,
        surprise: f64,
        evidence: String,
    },
    /// A new or surged exception template.
    Template {
        pool: String,
        template_id: String,
        template: String,
        exception: String,
        sample: String,
        new: bool,
        current: f64,
        baseline: f64,
        /// The windows, rates and ratio the evidence states.
        #[serde(flatten)]
        rates: Rates,
        score: f64,
        evidence: String,
    },
    /// A new or surged slow-SQL fingerprint.
    SlowSql {
        fingerprint_id: String,
        fingerprint: String,
        new: bool,
        current: f64,
        baseline: f64,
        /// The windows, rates and ratio the evidence states.
        #[serde(flatten)]
        rates: Rates,
        score: f64,
        evidence: String,
    },
}

/// A surge's windows and rates, so the evidence can be checked by a person.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub current_window_s: f64,
    pub baseline_window_s: f64,
    pub current_per_min: f64,
    pub baseline_per_min: f64,
    pub ratio: f64,
}

impl Rates {
    fn of(s: &crate::rootcause::Surge) -> Rates {
        Rates {
            current_window_s: s.current_window_s,
            baseline_window_s: s.baseline_window_s,
            current_per_min: s.current_per_min,
            baseline_per_min: s.baseline_per_min,
            ratio: s.ratio,
        }
    }
}

pub(super) fn change_suspect(c: &ChangeSuspect) -> Suspect {
    Suspect::Change {
        id: c.id.clone(),
        change_kind: c.kind.clone(),
        ts: rfc3339(c.ts),
        score: c.score,
        time_score: c.time_score,
        overlap_score: c.overlap_score,
        matched: c.matched.clone(),
        summary: c.summary.clone(),
        evidence: c.evidence.clone(),
    }
}

/// One ranked list of suspects: strong change suspects, then the explaining dimensions
/// (the most complete explanation first; Adtributor's own order, by surprise, stays in
/// `dimensions`), new or surged templates and slow queries, then the weaker changes.
pub(super) fn suspect_list(
    ranked_changes: &[ChangeSuspect],
    explained: &[DimensionSuspect],
    templates: &Surged,
    fingerprints: &Surged,
) -> Vec<Ranked> {
    let mut rows: Vec<Suspect> = Vec::new();
    for c in ranked_changes.iter().filter(|c| c.score >= CHANGE_FIRST) {
        rows.push(change_suspect(c));
    }
    let mut by_ep: Vec<&DimensionSuspect> = explained.iter().collect();
    by_ep.sort_by(|a, b| {
        b.explanatory_power
            .total_cmp(&a.explanatory_power)
            .then(b.surprise.total_cmp(&a.surprise))
    });
    for d in by_ep {
        let vals: Vec<String> = d
            .values
            .iter()
            .map(|v| {
                format!(
                    "{}={} ({:.1}% → {:.1}%, explains {:.0}%)",
                    d.dimension,
                    v.value,
                    v.baseline_rate * 100.0,
                    v.current_rate * 100.0,
                    v.explanatory_power * 100.0
                )
            })
            .collect();
        rows.push(Suspect::Dimension {
            dimension: d.dimension.clone(),
            values: d.values.clone(),
            score: d.explanatory_power,
            surprise: d.surprise,
            evidence: vals.join("; "),
        });
    }
    for (r, s) in templates {
        rows.push(Suspect::Template {
            pool: text(r, "pool").into(),
            template_id: text(r, "template_id").into(),
            template: text(r, "template").into(),
            exception: text(r, "exception").into(),
            sample: text(r, "sample").into(),
            new: s.is_new,
            current: s.current,
            baseline: s.baseline,
            rates: Rates::of(s),
            score: s.z,
            evidence: surge_text(s, "exception template"),
        });
    }
    for (r, s) in fingerprints {
        rows.push(Suspect::SlowSql {
            fingerprint_id: text(r, "fingerprint_id").into(),
            fingerprint: text(r, "fingerprint").into(),
            new: s.is_new,
            current: s.current,
            baseline: s.baseline,
            rates: Rates::of(s),
            score: s.z,
            evidence: surge_text(s, "slow query"),
        });
    }
    for c in ranked_changes.iter().filter(|c| c.score < CHANGE_FIRST) {
        rows.push(change_suspect(c));
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, suspect)| Ranked {
            rank: i + 1,
            suspect,
        })
        .collect()
}

fn surge_text(s: &crate::rootcause::Surge, what: &str) -> String {
    s.describe(what)
}
