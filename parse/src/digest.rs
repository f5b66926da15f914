//! A pt-query-digest-style digest of slow-log entries: entries grouped by fingerprint
//! ([`crate::fingerprint`]), each group with its call count, total / avg / min / max / p95
//! query time, average rows examined, first and last seen, and as sample the statement of its
//! slowest call (the first of equals). Rows rank by total time, then calls, then fingerprint.
//!
//! Memory per fingerprint is bounded: the p95 is exact (nearest rank) while a group has at
//! most [`EXACT_SAMPLES`] calls; past that its times move into the shared quantile sketch
//! ([`crate::sketch`]) with buckets 1% wide, so the reported p95 is within 0.5% of a true query time of that rank
//! (times under 1 µs share one bucket, reported as 0), clamped to the group's min and max.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::fingerprint::{fingerprint, fingerprint_id};
use crate::sketch::Sketch;
use crate::slowlog::SlowEntry;

/// Calls per fingerprint whose times are kept exactly.
pub const EXACT_SAMPLES: usize = 1000;

/// One fingerprint of a digest (the JSON shape of `apus slowlog digest --format json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestRow {
    /// 1-based, by `total_s` descending.
    pub rank: usize,
    pub fingerprint_id: String,
    pub fingerprint: String,
    pub calls: u64,
    pub total_s: f64,
    pub avg_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub p95_s: f64,
    pub rows_examined_avg: f64,
    /// The statement of the slowest call.
    pub sample: String,
    /// µs since the epoch; 0 when no entry had a time.
    pub first_seen_us: i64,
    pub last_seen_us: i64,
}

/// Accumulates entries; [`Digest::rows`] reads the result at any time.
#[derive(Debug, Default)]
pub struct Digest {
    groups: HashMap<String, Group>,
    /// Position (in the whole input) of the next entry added; decides sample ties.
    pos: u64,
}

#[derive(Debug)]
struct Group {
    calls: u64,
    total_s: f64,
    min_s: f64,
    max_s: f64,
    rows_examined: u128,
    sample: String,
    /// Input position of the sample (the first of equally slow calls wins).
    sample_pos: u64,
    first_seen_us: i64,
    last_seen_us: i64,
    times: Quantiles,
}

impl Group {
    fn merge(&mut self, o: Group) {
        self.calls += o.calls;
        self.total_s += o.total_s;
        self.min_s = self.min_s.min(o.min_s);
        if o.max_s > self.max_s || (o.max_s == self.max_s && o.sample_pos < self.sample_pos) {
            self.max_s = o.max_s;
            self.sample = o.sample;
            self.sample_pos = o.sample_pos;
        }
        self.rows_examined += o.rows_examined;
        if o.first_seen_us != 0 && (self.first_seen_us == 0 || o.first_seen_us < self.first_seen_us)
        {
            self.first_seen_us = o.first_seen_us;
        }
        self.last_seen_us = self.last_seen_us.max(o.last_seen_us);
        self.times.merge(o.times);
    }
}

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct fingerprints so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds one entry under its fingerprint.
    pub fn add(&mut self, e: &SlowEntry) {
        self.add_fingerprinted(fingerprint(&e.query), e);
    }

    /// The next entries added start at this position of the whole input (for digests of
    /// parts of one input that are [merged](Digest::merge) later).
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Fold another digest (of other entries of the same input) into this one; the result
    /// is the digest of all the entries, as if added in input order.
    pub fn merge(&mut self, other: Digest) {
        for (fp, g) in other.groups {
            match self.groups.entry(fp) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(g);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().merge(g),
            }
        }
    }

    /// Adds one entry whose fingerprint the caller already has.
    pub fn add_fingerprinted(&mut self, fp: String, e: &SlowEntry) {
        let pos = self.pos;
        self.pos += 1;
        let t = if e.query_time.is_finite() && e.query_time > 0.0 {
            e.query_time
        } else {
            0.0
        };
        let group = self.groups.entry(fp).or_insert_with(|| Group {
            calls: 0,
            total_s: 0.0,
            min_s: t,
            max_s: t,
            rows_examined: 0,
            sample: e.query.clone(),
            sample_pos: pos,
            first_seen_us: 0,
            last_seen_us: 0,
            times: Quantiles::default(),
        });
        group.calls += 1;
        group.total_s += t;
        group.min_s = group.min_s.min(t);
        if t > group.max_s {
            group.max_s = t;
            group.sample.clone_from(&e.query);
            group.sample_pos = pos;
        }
        group.rows_examined += u128::from(e.rows_examined);
        if e.ts_us != 0 {
            if group.first_seen_us == 0 || e.ts_us < group.first_seen_us {
                group.first_seen_us = e.ts_us;
            }
            if group.last_seen_us == 0 || e.ts_us > group.last_seen_us {
                group.last_seen_us = e.ts_us;
            }
        }
        group.times.add(t);
    }

    /// The ranked rows, the first `limit` of them if given.
    pub fn rows(&self, limit: Option<usize>) -> Vec<DigestRow> {
        let mut groups: Vec<(&String, &Group)> = self.groups.iter().collect();
        groups.sort_by(|(fa, a), (fb, b)| {
            b.total_s
                .total_cmp(&a.total_s)
                .then(b.calls.cmp(&a.calls))
                .then_with(|| fa.cmp(fb))
        });
        groups.truncate(limit.unwrap_or(usize::MAX));
        groups
            .into_iter()
            .enumerate()
            .map(|(i, (fp, g))| {
                let calls = g.calls.max(1) as f64;
                DigestRow {
                    rank: i + 1,
                    fingerprint_id: fingerprint_id(fp),
                    fingerprint: fp.clone(),
                    calls: g.calls,
                    total_s: g.total_s,
                    avg_s: g.total_s / calls,
                    min_s: g.min_s,
                    max_s: g.max_s,
                    p95_s: g.times.quantile(0.95).clamp(g.min_s, g.max_s),
                    rows_examined_avg: g.rows_examined as f64 / calls,
                    sample: g.sample.clone(),
                    first_seen_us: g.first_seen_us,
                    last_seen_us: g.last_seen_us,
                }
            })
            .collect()
    }
}

/// Query times of one group: exact while few, then the shared [`Sketch`] at γ = 1.01.
#[derive(Debug)]
enum Quantiles {
    Exact(Vec<f64>),
    Histogram(Sketch),
}

impl Default for Quantiles {
    fn default() -> Self {
        Quantiles::Exact(Vec::new())
    }
}

/// The digest's bucket ratio: buckets 1% wide, so a p95 is within 0.5% of a true time.
const DIGEST_GAMMA: f64 = 1.01;

impl Quantiles {
    fn sketch(&mut self) -> &mut Sketch {
        if let Quantiles::Exact(v) = self {
            let mut s = Sketch::new(DIGEST_GAMMA);
            for &x in v.iter() {
                s.add(clean(x));
            }
            *self = Quantiles::Histogram(s);
        }
        match self {
            Quantiles::Histogram(s) => s,
            Quantiles::Exact(_) => unreachable!("converted above"),
        }
    }

    fn add(&mut self, t: f64) {
        match self {
            Quantiles::Exact(v) if v.len() < EXACT_SAMPLES => v.push(t),
            _ => self.sketch().add(clean(t)),
        }
    }

    fn merge(&mut self, o: Quantiles) {
        match o {
            Quantiles::Exact(v) => v.into_iter().for_each(|x| self.add(x)),
            Quantiles::Histogram(h) => self.sketch().merge(&h),
        }
    }

    /// Nearest-rank quantile: the smallest time with at least `q` of the calls at or below.
    fn quantile(&self, q: f64) -> f64 {
        match self {
            Quantiles::Exact(v) if v.is_empty() => 0.0,
            Quantiles::Exact(v) => {
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                sorted[nearest_rank(q, sorted.len()) - 1]
            }
            Quantiles::Histogram(h) => {
                let rank = nearest_rank(q, h.count() as usize) as u64;
                h.at_rank(rank - 1).unwrap_or(0.0)
            }
        }
    }
}

/// Times under 1 µs (and bad ones) count as 0, as in the exact path's report.
fn clean(t: f64) -> f64 {
    if t >= 1e-6 {
        t
    } else {
        0.0
    }
}

fn nearest_rank(q: f64, n: usize) -> usize {
    ((q * n as f64).ceil() as usize).clamp(1, n.max(1))
}

/// A human report: a header line, then per fingerprint its rank, id, calls, total / avg /
/// p95 / max seconds and the fingerprint (cut to 100 characters, control characters shown
/// as spaces).
pub fn render_text(rows: &[DigestRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4} {:<16} {:>9} {:>12} {:>10} {:>10} {:>10}  fingerprint",
        "rank", "id", "calls", "total_s", "avg_s", "p95_s", "max_s"
    );
    for r in rows {
        let mut fp: String = r
            .fingerprint
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(100)
            .collect();
        if r.fingerprint.chars().count() > 100 {
            fp.push('…');
        }
        let _ = writeln!(
            s,
            "{:>4} {:<16} {:>9} {:>12.6} {:>10.6} {:>10.6} {:>10.6}  {}",
            r.rank, r.fingerprint_id, r.calls, r.total_s, r.avg_s, r.p95_s, r.max_s, fp
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_parts_equal_the_whole() {
        // Ties for the slowest call, a group past EXACT_SAMPLES, entries without time.
        let entries: Vec<SlowEntry> = (0..3000)
            .map(|i| {
                let q = match i % 3 {
                    0 => format!("SELECT * FROM a WHERE id = {i}"),
                    1 => format!("UPDATE b SET x = {i}"),
                    _ => format!("DELETE FROM c WHERE k = {}", i % 7),
                };
                entry(
                    &q,
                    f64::from((i * 37) % 11) / 8.0,
                    if i % 5 == 0 { 0 } else { i64::from(i) },
                )
            })
            .collect();
        let mut whole = Digest::new();
        entries.iter().for_each(|e| whole.add(e));
        // Alternating batches of 100, as the two-worker command hands them out.
        let (mut a, mut b) = (Digest::new(), Digest::new());
        for (k, chunk) in entries.chunks(100).enumerate() {
            let d = if k % 2 == 0 { &mut a } else { &mut b };
            d.seek((k * 100) as u64);
            chunk.iter().for_each(|e| d.add(e));
        }
        a.merge(b);
        assert_eq!(a.rows(None), whole.rows(None));
    }

    fn entry(q: &str, t: f64, ts: i64) -> SlowEntry {
        SlowEntry {
            query: q.to_string(),
            query_time: t,
            ts_us: ts,
            rows_examined: 10,
            ..SlowEntry::default()
        }
    }

    #[test]
    fn groups_ranks_and_samples() {
        let mut d = Digest::new();
        d.add(&entry("SELECT * FROM t WHERE id = 1", 0.5, 20));
        d.add(&entry("select * from t where id=2", 0.1, 10));
        d.add(&entry("SELECT * FROM t WHERE id = 3", 2.0, 30));
        d.add(&entry("UPDATE t SET a=1", 3.0, 0));
        let rows = d.rows(None);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].fingerprint, "update t set a=?");
        assert_eq!((rows[0].first_seen_us, rows[0].last_seen_us), (0, 0));
        let r = &rows[1];
        assert_eq!((r.rank, r.calls), (2, 2));
        assert_eq!(r.fingerprint, "select * from t where id = ?");
        assert_eq!(
            (r.total_s, r.avg_s, r.min_s, r.max_s, r.p95_s),
            (2.5, 1.25, 0.5, 2.0, 2.0)
        );
        assert_eq!(r.sample, "SELECT * FROM t WHERE id = 3");
        assert_eq!((r.first_seen_us, r.last_seen_us), (20, 30));
        assert_eq!(r.rows_examined_avg, 10.0);
        assert_eq!(r.fingerprint_id, fingerprint_id(&r.fingerprint));
        assert_eq!(rows[2].rank, 3);
        assert_eq!(d.rows(Some(1)).len(), 1);
    }

    #[test]
    fn ties_break_by_calls_then_fingerprint() {
        let mut d = Digest::new();
        d.add(&entry("select b", 1.0, 0));
        d.add(&entry("select a", 1.0, 0));
        d.add(&entry("select c", 0.5, 0));
        d.add(&entry("select c", 0.5, 0));
        let fps: Vec<String> = d.rows(None).into_iter().map(|r| r.fingerprint).collect();
        assert_eq!(fps, ["select c", "select a", "select b"]);
    }

    #[test]
    fn p95_exact_then_within_half_a_percent() {
        let mut q = Quantiles::default();
        for i in 1..=100 {
            q.add(f64::from(i) / 1000.0);
        }
        assert_eq!(q.quantile(0.95), 0.095);
        for i in 101..=100_000 {
            q.add(f64::from(i) / 1000.0);
        }
        assert!(matches!(q, Quantiles::Histogram(_)));
        let p95 = q.quantile(0.95);
        assert!((p95 / 95.0 - 1.0).abs() < 0.005, "{p95}");
        let mut zeros = Quantiles::default();
        for _ in 0..5000 {
            zeros.add(0.0);
        }
        assert_eq!(zeros.quantile(0.95), 0.0);
        assert_eq!(Quantiles::default().quantile(0.95), 0.0);
        let mut huge = Quantiles::default();
        for _ in 0..=EXACT_SAMPLES {
            huge.add(1e300);
        }
        assert!(huge.quantile(0.95).is_finite());
    }

    #[test]
    fn bad_times_count_as_zero() {
        let mut d = Digest::new();
        d.add(&entry("select 1", f64::NAN, 0));
        d.add(&entry("select 1", -1.0, 0));
        let r = &d.rows(None)[0];
        assert_eq!((r.calls, r.total_s, r.max_s, r.p95_s), (2, 0.0, 0.0, 0.0));
    }

    #[test]
    fn text_report() {
        let mut d = Digest::new();
        d.add(&entry("select 1", 0.25, 0));
        d.add(&entry(&format!("select {}", "x, ".repeat(100)), 0.5, 0));
        let text = render_text(&d.rows(None));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("rank id"));
        assert!(lines[1].contains("0.500000") && lines[1].ends_with('…'));
        assert!(lines[2].ends_with("  select ?"));
    }
}
