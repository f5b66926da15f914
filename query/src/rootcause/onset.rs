//! **When**: the first time bucket whose rate leaves the level before it.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
