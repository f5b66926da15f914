//! One mergeable quantile sketch with bounded relative error (log buckets, as in DDSketch),
//! shared by the slow-query digest and the stores' rollups: bucket `i` holds values in
//! `(γ^(i-1), γ^i]`, so any quantile read back is within `(γ-1)/(γ+1)` of a value of the
//! data (2% at the rollups' γ = 1.04, 0.5% at the digest's γ = 1.01). Sparse, sorted
//! `(bucket, count)` pairs; a compact binary form (varints) for storage, decoded against
//! hostile bytes without allocating more than the input can describe.

/// The rollups' γ: 2% relative error, a few hundred buckets over µs..hours.
pub const ROLLUP_GAMMA: f64 = 1.04;
/// Bucket of zero, negative and NaN values.
const ZERO: i32 = -4000;
const MAX: i32 = 4000;
/// Most buckets a decoded blob may claim (the index range), against hostile bytes.
const MAX_BINS: u64 = (MAX - ZERO + 1) as u64;

/// A sketch: sorted, sparse `(bucket, count)` pairs at one γ.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    gamma: f64,
    bins: Vec<(i32, u64)>,
}

impl Default for Sketch {
    /// An empty sketch at the rollups' γ.
    fn default() -> Self {
        Sketch::new(ROLLUP_GAMMA)
    }
}

/// LEB128: 7 bits a byte, low first, high bit set on all but the last (ClickHouse's
/// RowBinary and the sketch encoding both use it).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(x & 0x7f) << shift;
        if x < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Decode an encoded sketch's `(bucket, count)` pairs into `out` (cleared first), checking
/// everything a hostile blob could get wrong: the claimed count against the index range
/// (before reserving), each index in range and strictly increasing, no trailing bytes.
fn decode(mut b: &[u8], out: &mut Vec<(i32, u64)>) -> Option<()> {
    out.clear();
    let n = get_varint(&mut b)?;
    if n > MAX_BINS {
        return None;
    }
    out.reserve(n as usize);
    let mut prev = 0i64;
    for _ in 0..n {
        let z = get_varint(&mut b)?;
        let i = prev + ((z >> 1) as i64 ^ -((z & 1) as i64));
        if !(i64::from(ZERO)..=i64::from(MAX)).contains(&i) || (i <= prev && !out.is_empty()) {
            return None;
        }
        out.push((i as i32, get_varint(&mut b)?));
        prev = i;
    }
    b.is_empty().then_some(())
}

impl Sketch {
    /// An empty sketch with bucket ratio `gamma` (> 1).
    pub fn new(gamma: f64) -> Sketch {
        Sketch {
            gamma: if gamma > 1.0 { gamma } else { ROLLUP_GAMMA },
            bins: Vec::new(),
        }
    }

    fn index(&self, v: f64) -> i32 {
        if v.is_nan() || v <= 0.0 {
            return ZERO;
        }
        // ln(v)/ln(γ) fits i32 for every finite f64; clamp keeps the range bounded.
        ((v.ln() / self.gamma.ln()).ceil() as i32).clamp(ZERO + 1, MAX)
    }

    fn value(&self, i: i32) -> f64 {
        if i == ZERO {
            0.0
        } else {
            // The point of (γ^(i-1), γ^i] with the least relative error to both ends.
            self.gamma.powi(i) * 2.0 / (1.0 + self.gamma)
        }
    }

    /// Count one value.
    pub fn add(&mut self, v: f64) {
        self.add_n(self.index(v), 1);
    }

    fn add_n(&mut self, i: i32, n: u64) {
        match self.bins.binary_search_by_key(&i, |b| b.0) {
            Ok(p) => self.bins[p].1 += n,
            Err(p) => self.bins.insert(p, (i, n)),
        }
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<(i32, u64)>()
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|b| b.1).sum()
    }

    /// Add every count of `other` (a sketch at the same γ).
    pub fn merge(&mut self, other: &Sketch) {
        debug_assert_eq!(self.gamma, other.gamma, "merging sketches of different γ");
        if self.bins.is_empty() {
            self.bins.clone_from(&other.bins);
            return;
        }
        let mut out = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1 + y.1));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(**x);
                    a.next();
                }
                (_, Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (Some(x), None) => {
                    out.push(**x);
                    a.next();
                }
                (None, None) => break,
            }
        }
        self.bins = out;
    }

    /// The `q` quantile (0..=1), `None` when empty: the value of rank `⌊q·(n-1)⌋`
    /// (0-based), within the sketch's relative error of a counted value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        self.at_rank((q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64)
    }

    /// The value of the `rank`-th smallest counted value (0-based; the last if beyond).
    pub fn at_rank(&self, rank: u64) -> Option<f64> {
        let mut seen = 0;
        for &(i, c) in &self.bins {
            seen += c;
            if seen > rank {
                return Some(self.value(i));
            }
        }
        self.bins.last().map(|b| self.value(b.0))
    }

    /// Append the binary form: bin count, then (zigzag index delta, count) varints.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.bins.len() as u64);
        let mut prev = 0i64;
        for &(i, c) in &self.bins {
            let d = i64::from(i) - prev;
            put_varint(out, ((d << 1) ^ (d >> 63)) as u64);
            put_varint(out, c);
            prev = i64::from(i);
        }
    }

    /// The binary form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + self.bins.len() * 3);
        self.encode(&mut v);
        v
    }

    /// Add the counts of an encoded histogram; `None` (and nothing added) if malformed.
    pub fn merge_bytes(&mut self, b: &[u8]) -> Option<()> {
        let mut other = Sketch {
            gamma: self.gamma,
            bins: Vec::new(),
        };
        decode(b, &mut other.bins)?;
        self.merge(&other);
        Some(())
    }
}

/// Many encoded sketches merged fast (a query merging the hourly rollups' histograms: 100k+
/// blobs per ranking): counts are added into a dense window of buckets, grown as the data
/// needs (at most the index range, the zero bucket kept apart), so a merge is one pass over
/// the blob with no allocation once the window covers the data, where [`Sketch::merge`]
/// rebuilds the sorted pairs. [`Merger::finish`] gives the merged sketch.
#[derive(Debug, Clone)]
pub struct Merger {
    gamma: f64,
    zero: u64,
    lo: i32,
    counts: Vec<u64>,
    scratch: Vec<(i32, u64)>,
}

impl Default for Merger {
    /// A merger at the rollups' γ.
    fn default() -> Self {
        Merger::new(ROLLUP_GAMMA)
    }
}

impl Merger {
    /// An empty merger of sketches at `gamma`.
    pub fn new(gamma: f64) -> Merger {
        Merger {
            gamma: Sketch::new(gamma).gamma,
            zero: 0,
            lo: 0,
            counts: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn add(&mut self, i: i32, c: u64) {
        if i == ZERO {
            self.zero = self.zero.saturating_add(c);
            return;
        }
        if self.counts.is_empty() {
            self.lo = i;
        }
        if i < self.lo {
            let grow = (self.lo - i) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.lo = i;
        } else if i - self.lo >= self.counts.len() as i32 {
            self.counts.resize((i - self.lo) as usize + 1, 0);
        }
        let slot = &mut self.counts[(i - self.lo) as usize];
        *slot = slot.saturating_add(c);
    }

    /// Add the counts of an encoded sketch; `None` (and nothing added) if malformed, with
    /// the same checks as [`Sketch::merge_bytes`].
    pub fn merge_bytes(&mut self, b: &[u8]) -> Option<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let ok = decode(b, &mut scratch);
        self.scratch = scratch;
        ok?;
        for k in 0..self.scratch.len() {
            let (i, c) = self.scratch[k];
            self.add(i, c);
        }
        Some(())
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
            + self.scratch.capacity() * std::mem::size_of::<(i32, u64)>()
    }

    /// The merged sketch.
    pub fn finish(&self) -> Sketch {
        let mut bins = Vec::with_capacity(self.counts.len() + 1);
        if self.zero > 0 {
            bins.push((ZERO, self.zero));
        }
        bins.extend(
            self.counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(k, c)| (self.lo + k as i32, *c)),
        );
        Sketch {
            gamma: self.gamma,
            bins,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_two_percent() {
        let mut h = Sketch::default();
        for i in 1..=10_000 {
            h.add(f64::from(i) / 100.0);
        }
        for (q, want) in [
            (0.5, 50.0),
            (0.95, 95.0),
            (0.99, 99.0),
            (0.0, 0.01),
            (1.0, 100.0),
        ] {
            let got = h.quantile(q).unwrap();
            assert!(
                (got - want).abs() / want <= 0.021,
                "q={q} got={got} want={want}"
            );
        }
        assert_eq!(Sketch::default().quantile(0.5), None);
    }

    #[test]
    fn zero_and_odd_values() {
        let mut h = Sketch::default();
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300, 5.0] {
            h.add(v);
        }
        assert_eq!(h.count(), 6);
        assert_eq!(h.quantile(0.0), Some(0.0));
        assert!(h.quantile(1.0).unwrap().is_finite());
    }

    #[test]
    fn encode_merge_roundtrip() {
        let (mut a, mut b, mut both) = (Sketch::default(), Sketch::default(), Sketch::default());
        for i in 0..500 {
            let x = f64::from(i * 7 % 300) + 0.5;
            let y = f64::from(i * 13 % 1000) * 3.0;
            a.add(x);
            b.add(y);
            both.add(x);
            both.add(y);
        }
        let mut m = Sketch::default();
        m.merge_bytes(&a.to_bytes()).unwrap();
        m.merge_bytes(&b.to_bytes()).unwrap();
        assert_eq!(m, both);
        let mut c = a.clone();
        c.merge(&b);
        assert_eq!(c, both);
    }

    #[test]
    fn merger_equals_merging_one_by_one() {
        let mut blobs = Vec::new();
        let mut want = Sketch::default();
        for k in 0..50u32 {
            let mut h = Sketch::default();
            for i in 0..(20 + k * 7) {
                // Values from 0 (the zero bucket) to hours, each blob its own range.
                let v = f64::from((i * 7919 + k * 104_729) % 5_000) * f64::from(k + 1) / 3.0;
                h.add(v);
            }
            if k % 5 == 0 {
                h.add(0.0);
            }
            want.merge(&h);
            blobs.push(h.to_bytes());
        }
        let mut m = Merger::default();
        for b in blobs.iter().rev() {
            m.merge_bytes(b).unwrap();
        }
        assert_eq!(m.finish(), want);
        assert_eq!(m.finish().quantile(0.99), want.quantile(0.99));
        // A malformed blob adds nothing.
        assert!(m.merge_bytes(&[2, 2, 1, 0, 1]).is_none());
        assert_eq!(m.finish(), want);
        assert_eq!(Merger::default().finish().quantile(0.5), None);
    }

    #[test]
    fn hostile_bytes_are_rejected() {
        let good = {
            let mut h = Sketch::default();
            h.add(1.0);
            h.add(2.0);
            h.to_bytes()
        };
        let mut h = Sketch::default();
        for bad in [
            &[][..],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &good[..good.len() - 1],
            &[1, 0x80][..],
            &[2, 2, 1, 0, 1][..], // second index not increasing
        ] {
            assert!(h.merge_bytes(bad).is_none(), "{bad:?}");
        }
        assert_eq!(h.count(), 0);
        let mut extra = good.clone();
        extra.push(0);
        assert!(h.merge_bytes(&extra).is_none());
    }
}
