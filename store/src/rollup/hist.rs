//! The rollups' latency histogram in SQL: the shared [`Sketch`] (at the rollups' γ, 2%
//! relative error), stored in rollup rows as its compact binary form and read through two
//! aggregate functions:
//!
//! - `hist_of(x DOUBLE) -> BINARY`: the histogram of raw values;
//! - `hist_pct(h BINARY, q DOUBLE) -> DOUBLE`: the `q` quantile of merged histograms.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{create_udaf, Accumulator, AggregateUDF, Volatility};

use apus_parse::sketch::Merger;
/// The rollups' histogram: the shared sketch at its default (rollup) γ.
pub use apus_parse::sketch::Sketch as Hist;

fn bad_blob() -> DataFusionError {
    DataFusionError::Execution("hist_pct: malformed histogram".into())
}

/// `merge` each non-null blob of the binary column `a`; a malformed one is an error.
fn each_blob(
    a: &ArrayRef,
    mut merge: impl FnMut(&[u8]) -> Option<()>,
) -> datafusion::common::Result<()> {
    let a = a.as_binary_opt::<i32>().ok_or_else(bad_blob)?;
    for i in 0..a.len() {
        if a.is_valid(i) {
            merge(a.value(i)).ok_or_else(bad_blob)?;
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
        each_blob(&states[0], |b| self.0.merge_bytes(b))
    }
    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.0.to_bytes())))
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.heap_bytes()
    }
}

/// Merges through a dense [`Merger`]: a ranking merges one blob per rollup row.
#[derive(Debug, Default)]
struct HistPct {
    hist: Merger,
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
        each_blob(&values[0], |b| self.hist.merge_bytes(b))
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        self.take_q(&states[1]);
        each_blob(&states[0], |b| self.hist.merge_bytes(b))
    }
    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Binary(Some(self.hist.finish().to_bytes())),
            ScalarValue::Float64(self.q),
        ])
    }
    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        Ok(ScalarValue::Float64(
            self.q.and_then(|q| self.hist.finish().quantile(q)),
        ))
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.hist.heap_bytes()
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
