//! [`Accumulator`]: per-row values of one metric for one pruned model, finalised in row order.

use rayon::prelude::*;

use crate::{DenseRows, Error, Metric, Result};

/// Rows per chunk below which [`Accumulator::add_rows`] stays on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// Collects the per-row values of one [`Metric`] for one pruned model.
///
/// Rows may be given in chunks, in any order, from a streaming evaluation; each row exactly once.
/// [`Accumulator::finish`] sums the stored values in row order with compensated summation, so
/// the score is the same whatever the chunking, order or thread count.
#[derive(Debug, Clone)]
pub struct Accumulator<'a> {
    metric: Metric,
    dense: &'a DenseRows,
    values: Vec<f64>,
    given: Vec<bool>,
    num_given: usize,
}

impl<'a> Accumulator<'a> {
    /// A new, empty accumulator of `metric` against `dense`.
    pub fn new(metric: Metric, dense: &'a DenseRows) -> Result<Self> {
        dense.check_supports(metric)?;
        let n = dense.num_rows();
        Ok(Accumulator {
            metric,
            dense,
            values: vec![0.0; n],
            given: vec![false; n],
            num_given: 0,
        })
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Adds pruned rows `first_row ..` given as `rows.len() / vocab` consecutive rows.
    pub fn add_rows(&mut self, first_row: usize, rows: &[f32]) -> Result<()> {
        let vocab = self.dense.vocab();
        if !rows.len().is_multiple_of(vocab) {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "chunk of pruned rows starting at row {first_row} (vocabulary {vocab})"
                ),
                expected: (rows.len() / vocab + 1) * vocab,
                got: rows.len(),
            });
        }
        let n = rows.len() / vocab;
        let end = first_row.saturating_add(n);
        if end > self.values.len() {
            return Err(Error::RowOutOfRange {
                first: first_row,
                end,
                num_rows: self.values.len(),
            });
        }
        if let Some(k) = self.given[first_row..end].iter().position(|&g| g) {
            return Err(Error::RowTwice {
                row: first_row + k,
                metric: self.metric,
            });
        }
        let (metric, dense) = (self.metric, self.dense);
        let out = &mut self.values[first_row..end];
        if rows.len() >= PARALLEL_MIN_VALUES && n > 1 {
            out.par_iter_mut()
                .zip(rows.par_chunks(vocab))
                .enumerate()
                .for_each(|(k, (v, row))| {
                    *v = dense.row_value_unchecked(metric, first_row + k, row);
                });
        } else {
            for (k, (v, row)) in out.iter_mut().zip(rows.chunks(vocab)).enumerate() {
                *v = dense.row_value_unchecked(metric, first_row + k, row);
            }
        }
        self.given[first_row..end]
            .iter_mut()
            .for_each(|g| *g = true);
        self.num_given += n;
        Ok(())
    }

    /// Adds the per-row values of rows `first_row ..` computed elsewhere with this crate's formulas
    /// (the CUDA backend's divergence kernels, which return only these values to the host).
    pub fn add_row_values(&mut self, first_row: usize, values: &[f64]) -> Result<()> {
        let end = first_row.saturating_add(values.len());
        if end > self.values.len() {
            return Err(Error::RowOutOfRange {
                first: first_row,
                end,
                num_rows: self.values.len(),
            });
        }
        if let Some(k) = self.given[first_row..end].iter().position(|&g| g) {
            return Err(Error::RowTwice {
                row: first_row + k,
                metric: self.metric,
            });
        }
        self.values[first_row..end].copy_from_slice(values);
        self.given[first_row..end]
            .iter_mut()
            .for_each(|g| *g = true);
        self.num_given += values.len();
        Ok(())
    }

    /// Whether every row has been given.
    pub fn is_complete(&self) -> bool {
        self.num_given == self.values.len()
    }

    /// The stored per-row values (0 for rows not yet given).
    pub fn row_values(&self) -> &[f64] {
        &self.values
    }

    /// The score: the mean of the row values (`js`, `js-reference`, `kl`, `angular`),
    /// the square root of their sum (`euclidean`), or `exp` of their mean over rows with a
    /// target (`ppl`). An error if any row is missing.
    pub fn finish(&self) -> Result<f64> {
        if !self.is_complete() {
            let first = self.given.iter().position(|&g| !g).unwrap_or(0);
            return Err(Error::MissingRows {
                metric: self.metric,
                missing: self.values.len() - self.num_given,
                num_rows: self.values.len(),
                first,
            });
        }
        let (total, count) = self.sum_in_row_order();
        Ok(self.finalise(total, count))
    }

    /// Number of rows given so far.
    pub fn rows_given(&self) -> usize {
        self.num_given
    }

    /// A lower bound of the score that [`Accumulator::finish`] returns once every row is given,
    /// from the rows given so far; once every row is given, a bound that lies at most a relative
    /// [`BOUND_MARGIN`] below the score. NaN when a given row's value is NaN.
    ///
    /// Why it is a bound, in floating point too: every per-row value is non-negative (the row
    /// kernels clamp rounding noise at zero; NaN aside), so the exact sum over the given rows is
    /// at most the exact sum over all rows. [`Accumulator::finish`] sums with compensated
    /// summation, whose relative error on non-negative terms is at most `2u + O(n·u²)` (Higham,
    /// *Accuracy and Stability of Numerical Algorithms*, §4.3; `u = 2⁻⁵³`), so the computed partial
    /// sum shrunk by [`BOUND_MARGIN`] (10⁻¹², far above `4u` for any row count that fits in
    /// memory) is at most the computed complete sum. The finalisation (division by the row count,
    /// square root, exponential) is monotone and applied with the complete row count.
    pub fn lower_bound(&self) -> f64 {
        let (partial, count) = self.sum_in_row_order();
        self.finalise(partial * (1.0 - BOUND_MARGIN), count)
    }

    /// The compensated sum of the stored values of counted rows, in row order (rows not yet given
    /// hold 0 and leave the sum unchanged), and the number of counted rows.
    fn sum_in_row_order(&self) -> (f64, usize) {
        let mut sum = NeumaierSum::default();
        let mut count = 0usize;
        for (row, &v) in self.values.iter().enumerate() {
            if self.dense.counts(self.metric, row) {
                sum.add(v);
                count += 1;
            }
        }
        (sum.value(), count)
    }

    /// The score from the sum of row values over `count` counted rows.
    fn finalise(&self, total: f64, count: usize) -> f64 {
        match self.metric {
            Metric::Euclidean => total.sqrt(),
            Metric::Ppl => (total / count.max(1) as f64).exp(),
            _ => total / count.max(1) as f64,
        }
    }
}

/// Relative margin by which [`Accumulator::lower_bound`] shrinks a partial sum to cover the
/// rounding of compensated summation.
pub const BOUND_MARGIN: f64 = 1e-12;

/// Compensated (Neumaier) summation; the order of `add` calls fixes the result.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NeumaierSum {
    sum: f64,
    comp: f64,
}

impl NeumaierSum {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn row_values_given_directly_equal_rows_given_as_logits() {
        let vocab = 4;
        let dense = DenseRows::new(vec![0.5, -1.0, 2.0, 0.0, 1.0, 1.0, -3.0, 0.25], vocab).unwrap();
        let pruned = [0.0, -1.5, 2.5, 0.5, 1.0, 0.0, -2.0, 0.0];
        let mut a = Accumulator::new(Metric::Js, &dense).unwrap();
        a.add_rows(0, &pruned).unwrap();
        let values = a.row_values().to_vec();
        let mut b = Accumulator::new(Metric::Js, &dense).unwrap();
        b.add_row_values(1, &values[1..]).unwrap();
        assert!(b.add_row_values(1, &values[1..]).is_err());
        assert!(b.add_row_values(2, &[0.0]).is_err());
        assert!(b.finish().is_err());
        b.add_row_values(0, &values[..1]).unwrap();
        assert_eq!(a.finish().unwrap(), b.finish().unwrap());
    }

    #[test]
    fn missing_and_repeated_rows_are_errors() {
        let dense = DenseRows::new(vec![0.0, 1.0, 2.0, 3.0], 2).unwrap();
        let mut acc = Accumulator::new(Metric::Kl, &dense).unwrap();
        acc.add_rows(1, &[2.0, 3.0]).unwrap();
        let err = acc.finish().unwrap_err().to_string();
        assert!(err.contains("first: row 0"), "{err}");
        assert!(acc.add_rows(1, &[2.0, 3.0]).is_err());
        assert!(acc.add_rows(1, &[2.0, 3.0, 4.0, 5.0]).is_err());
        assert!(acc.add_rows(0, &[2.0]).is_err());
        acc.add_rows(0, &[0.0, 1.0]).unwrap();
        assert_eq!(acc.finish().unwrap(), 0.0);
    }

    #[test]
    fn neumaier_recovers_small_terms() {
        let mut s = NeumaierSum::default();
        for x in [1e16, 1.0, -1e16, 1.0] {
            s.add(x);
        }
        assert_eq!(s.value(), 2.0);
    }

    #[test]
    fn perplexity_skips_rows_without_target() {
        let dense = DenseRows::targets_only(vec![Some(0), None], 2).unwrap();
        let mut acc = Accumulator::new(Metric::Ppl, &dense).unwrap();
        acc.add_rows(0, &[0.0, 0.0, 9.0, -9.0]).unwrap();
        assert!((acc.finish().unwrap() - 2.0).abs() < 1e-12);
    }
}
