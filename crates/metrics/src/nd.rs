//! The metrics' inputs as `ndarray` arrays (feature `ndarray`): logits as `[rows, vocabulary]`
//! matrices, hidden states as `[rows, hidden]` matrices. Row-major views are read in place; other
//! layouts are copied in row-major order first.

use ndarray::{Array2, ArrayView2};

use crate::{Accumulator, DenseRows, Result};

/// The rows of `view` as one row-major slice: borrowed when the view is already laid out so,
/// else a row-major copy.
fn row_major<'a>(view: &'a ArrayView2<'_, f32>, copy: &'a mut Vec<f32>) -> &'a [f32] {
    match view.as_slice() {
        Some(s) => s,
        None => {
            *copy = view.iter().copied().collect();
            copy
        }
    }
}

impl DenseRows {
    /// Caches the dense logits of an owned `[rows, vocabulary]` array (its buffer is taken without
    /// copying when it is in standard layout).
    pub fn from_ndarray(logits: Array2<f32>) -> Result<Self> {
        let (vocab, n) = (logits.ncols(), logits.len());
        let logits = if logits.is_standard_layout() {
            logits
        } else {
            logits.as_standard_layout().into_owned()
        };
        let (data, offset) = logits.into_raw_vec_and_offset();
        let data = match offset {
            Some(0) | None => data,
            Some(start) => data[start..start + n].to_vec(),
        };
        DenseRows::new(data, vocab)
    }
}

impl Accumulator<'_> {
    /// [`Accumulator::add_rows`] for a `[rows, vocabulary]` view of pruned logits starting at row
    /// `first_row` (read in place when row-major).
    pub fn add_ndarray_rows(&mut self, first_row: usize, rows: ArrayView2<'_, f32>) -> Result<()> {
        let mut copy = Vec::new();
        let slice = row_major(&rows, &mut copy);
        self.add_rows(first_row, slice)
    }
}

/// [`crate::similarity::mean_row_cosine`] of two `[rows, hidden]` views of hidden states.
pub fn mean_row_cosine(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Result<f64> {
    let (mut ca, mut cb) = (Vec::new(), Vec::new());
    crate::similarity::mean_row_cosine(row_major(&a, &mut ca), row_major(&b, &mut cb), a.ncols())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Metric;
    use ndarray::Array2;

    fn logits(rows: usize, vocab: usize, shift: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, vocab), |(r, v)| {
            ((r * 7 + v * 3) as f32 * 0.37 + shift).sin()
        })
    }

    #[test]
    fn arrays_score_as_the_slices_they_hold() {
        let dense = logits(5, 6, 0.0);
        let pruned = logits(5, 6, 0.3);
        let from_slices = DenseRows::new(dense.iter().copied().collect(), 6).unwrap();
        let from_array = DenseRows::from_ndarray(dense.clone()).unwrap();
        for metric in [Metric::Js, Metric::Kl, Metric::Angular] {
            let mut a = Accumulator::new(metric, &from_slices).unwrap();
            a.add_rows(0, pruned.as_slice().unwrap()).unwrap();
            let mut b = Accumulator::new(metric, &from_array).unwrap();
            // In two chunks, the second a view of rows 2.. of the array.
            b.add_ndarray_rows(0, pruned.slice(ndarray::s![..2, ..]))
                .unwrap();
            b.add_ndarray_rows(2, pruned.slice(ndarray::s![2.., ..]))
                .unwrap();
            assert_eq!(a.finish().unwrap(), b.finish().unwrap(), "{metric}");
        }
    }

    #[test]
    fn transposed_inputs_are_read_in_row_major_order() {
        let dense = logits(4, 3, 0.0);
        let stored_transposed = dense.t().as_standard_layout().into_owned(); // [3, 4] row-major
        let view = stored_transposed.t();
        assert!(view.as_slice().is_none());
        let rows = DenseRows::from_ndarray(view.to_owned()).unwrap();
        let mut acc = Accumulator::new(Metric::Js, &rows).unwrap();
        acc.add_ndarray_rows(0, view).unwrap();
        assert_eq!(acc.finish().unwrap(), 0.0);
        let c = mean_row_cosine(view, dense.view()).unwrap();
        assert!((c - 1.0).abs() < 1e-9, "{c}");
    }
}
