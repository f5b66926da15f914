//! A mergeable latency histogram with bounded relative error (log buckets, as in DDSketch):
//! bucket `i` holds values in `(γ^(i-1), γ^i]` with γ = 1.04, so any quantile read back is
//! within 2% of a value of the data. Stored in rollup rows as a compact binary blob, and
//! read in SQL through two aggregate functions:
//!
//! - `hist_of(x DOUBLE) -> BINARY`: the histogram of raw values;
//! - `hist_pct(h BINARY, q DOUBLE) -> DOUBLE`: the `q` quantile of merged histograms.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{create_udaf, Accumulator, AggregateUDF, Volatility};

const GAMMA: f64 = 1.04;
/// Bucket of zero, negative and NaN values.
const ZERO: i32 = -4000;
const MAX: i32 = 4000;
/// Most buckets a decoded blob may claim (the index range), against hostile bytes.
const MAX_BINS: u64 = (MAX - ZERO + 1) as u64;

/// A histogram: sorted, sparse `(bucket, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    bins: Vec<(i32, u64)>,
}

fn index(v: f64) -> i32 {
    if v.is_nan() || v <= 0.0 {
        return ZERO;
    }
    // ln(v)/ln(γ) fits i32 for every finite f64; clamp keeps the range bounded.
    ((v.ln() / GAMMA.ln()).ceil() as i32).clamp(ZERO + 1, MAX)
}

fn value(i: i32) -> f64 {
    if i == ZERO {
        0.0
    } else {
        // The point of (γ^(i-1), γ^i] with the least relative error to both ends.
        GAMMA.powi(i) * 2.0 / (1.0 + GAMMA)
    }
}

/// LEB128: 7 bits a byte, low first, high bit set on all but the last (RowBinary and
/// the histogram encoding both use it).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
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

impl Hist {
    /// Count one value.
    pub fn add(&mut self, v: f64) {
        self.add_n(index(v), 1);
    }

    fn add_n(&mut self, i: i32, n: u64) {
        match self.bins.binary_search_by_key(&i, |b| b.0) {
            Ok(p) => self.bins[p].1 += n,
            Err(p) => self.bins.insert(p, (i, n)),
        }
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|b| b.1).sum()
    }

    /// Add every count of `other`.
    pub fn merge(&mut self, other: &Hist) {
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

    /// The `q` quantile (0..=1), `None` when empty; within 2% of a counted value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        let mut seen = 0;
        for &(i, c) in &self.bins {
            seen += c;
            if seen > rank {
                return Some(value(i));
            }
        }
        self.bins.last().map(|b| value(b.0))
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
    pub fn merge_bytes(&mut self, mut b: &[u8]) -> Option<()> {
        let n = get_varint(&mut b)?;
        if n > MAX_BINS {
            return None;
        }
        let mut other = Hist {
            bins: Vec::with_capacity(n as usize),
        };
        let mut prev = 0i64;
        for _ in 0..n {
            let z = get_varint(&mut b)?;
            let i = prev + ((z >> 1) as i64 ^ -((z & 1) as i64));
            if !(i64::from(ZERO)..=i64::from(MAX)).contains(&i)
                || (i <= prev && !other.bins.is_empty())
            {
                return None;
            }
            other.bins.push((i as i32, get_varint(&mut b)?));
            prev = i;
        }
        if !b.is_empty() {
            return None;
        }
        self.merge(&other);
        Some(())
    }
}

fn bad_blob() -> DataFusionError {
    DataFusionError::Execution("hist_pct: malformed histogram".into())
}

fn merge_blobs(h: &mut Hist, a: &ArrayRef) -> datafusion::common::Result<()> {
    let a = a.as_binary_opt::<i32>().ok_or_else(bad_blob)?;
    for i in 0..a.len() {
        if a.is_valid(i) {
            h.merge_bytes(a.value(i)).ok_or_else(bad_blob)?;
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct HistOf(Hist);

impl Accumulator for HistOf {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        let v = values[0].as_primitive::<Float64Type>();
        for x in v.iter().flatten() {
            self.0.add(x);
        }
        Ok(())
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        merge_blobs(&mut self.0, &states[0])
    }
    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.0.to_bytes())))
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.bins.capacity() * 16
    }
}

#[derive(Debug, Default)]
struct HistPct {
    hist: Hist,
    q: Option<f64>,
}

impl HistPct {
    fn take_q(&mut self, a: &ArrayRef) {
        if self.q.is_none() {
            self.q = a.as_primitive::<Float64Type>().iter().flatten().next();
        }
    }
}

impl Accumulator for HistPct {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.take_q(&values[1]);
        merge_blobs(&mut self.hist, &values[0])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.take_q(&states[1]);
        merge_blobs(&mut self.hist, &states[0])
    }
    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Binary(Some(self.hist.to_bytes())),
            ScalarValue::Float64(self.q),
        ])
    }
    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        Ok(ScalarValue::Float64(
            self.q.and_then(|q| self.hist.quantile(q)),
        ))
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.hist.bins.capacity() * 16
    }
}

/// The aggregate functions `hist_of` and `hist_pct` (see the module docs).
pub fn udafs() -> Vec<AggregateUDF> {
    vec![
        create_udaf(
            "hist_of",
            vec![DataType::Float64],
            Arc::new(DataType::Binary),
            Volatility::Immutable,
            Arc::new(|_| Ok(Box::<HistOf>::default())),
            Arc::new(vec![DataType::Binary]),
        ),
        create_udaf(
            "hist_pct",
            vec![DataType::Binary, DataType::Float64],
            Arc::new(DataType::Float64),
            Volatility::Immutable,
            Arc::new(|_| Ok(Box::<HistPct>::default())),
            Arc::new(vec![DataType::Binary, DataType::Float64]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_two_percent() {
        let mut h = Hist::default();
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
        assert_eq!(Hist::default().quantile(0.5), None);
    }

    #[test]
    fn zero_and_odd_values() {
        let mut h = Hist::default();
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300, 5.0] {
            h.add(v);
        }
        assert_eq!(h.count(), 6);
        assert_eq!(h.quantile(0.0), Some(0.0));
        assert!(h.quantile(1.0).unwrap().is_finite());
    }

    #[test]
    fn encode_merge_roundtrip() {
        let (mut a, mut b, mut both) = (Hist::default(), Hist::default(), Hist::default());
        for i in 0..500 {
            let x = f64::from(i * 7 % 300) + 0.5;
            let y = f64::from(i * 13 % 1000) * 3.0;
            a.add(x);
            b.add(y);
            both.add(x);
            both.add(y);
        }
        let mut m = Hist::default();
        m.merge_bytes(&a.to_bytes()).unwrap();
        m.merge_bytes(&b.to_bytes()).unwrap();
        assert_eq!(m, both);
        let mut c = a.clone();
        c.merge(&b);
        assert_eq!(c, both);
    }

    #[test]
    fn hostile_bytes_are_rejected() {
        let good = {
            let mut h = Hist::default();
            h.add(1.0);
            h.add(2.0);
            h.to_bytes()
        };
        let mut h = Hist::default();
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
