//! Conversions between [`Tensor`] and the `ndarray` crate's arrays (feature `ndarray`), so that
//! logits, hidden states and weights can be read and built with the array type the Rust ecosystem
//! shares.
//!
//! A CPU `f32` tensor is contiguous and row-major, which is `ndarray`'s standard layout:
//! [`Tensor::as_ndarray`] views it and [`Tensor::from_ndarray`] takes an owned standard-layout array's
//! buffer, both without copying. Everything else (16-bit or device tensors, views with strides)
//! goes through a copy: [`Tensor::to_ndarray`] and [`Tensor::from_ndarray_view`].

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

use crate::{Device, Error, Result, Tensor};

fn shape_error(op: &'static str, e: ndarray::ShapeError) -> Error {
    Error::Invalid {
        op,
        detail: format!("ndarray: {e}"),
    }
}

impl Tensor {
    /// A view of a CPU `f32` tensor as an `ndarray` array of the same shape, without copying.
    /// Other dtypes and devices are an error: use [`Tensor::to_ndarray`] for them.
    pub fn as_ndarray(&self) -> Result<ArrayViewD<'_, f32>> {
        let data = self.cpu_f32("as_ndarray")?;
        ArrayViewD::from_shape(IxDyn(self.shape()), data).map_err(|e| shape_error("as_ndarray", e))
    }

    /// A mutable view of a CPU `f32` tensor, without copying (a memory-mapped tensor is first
    /// copied into memory of its own, as [`Tensor::as_mut_slice_f32`] does).
    pub fn as_ndarray_mut(&mut self) -> Result<ArrayViewMutD<'_, f32>> {
        let shape = self.shape().to_vec();
        let data = self.cpu_f32_mut("as_ndarray_mut")?;
        ArrayViewMutD::from_shape(IxDyn(&shape), data).map_err(|e| shape_error("as_ndarray_mut", e))
    }

    /// The values as an owned `f32` array (copied to the host; 16-bit values are widened).
    pub fn to_ndarray(&self) -> Result<ArrayD<f32>> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec_f32()?)
            .map_err(|e| shape_error("to_ndarray", e))
    }

    /// A tensor on `device` from an owned array. An array in standard (row-major, contiguous)
    /// layout hands its buffer to a CPU tensor without copying; any other layout is copied in
    /// row-major order first.
    pub fn from_ndarray(array: ArrayD<f32>, device: &Device) -> Result<Tensor> {
        let shape = array.shape().to_vec();
        let data = if array.is_standard_layout() {
            let (data, offset) = array.into_raw_vec_and_offset();
            match offset {
                // The buffer starts with the first element: take it as it is.
                Some(0) | None => data,
                Some(start) => data[start..start + shape.iter().product::<usize>()].to_vec(),
            }
        } else {
            array.iter().copied().collect()
        };
        Tensor::from_vec(data, &shape, device)
    }

    /// A tensor on `device` holding a copy of `view`'s values in row-major order (a `Tensor` owns
    /// or maps its storage, so a borrowed view is copied).
    pub fn from_ndarray_view(view: ArrayViewD<'_, f32>, device: &Device) -> Result<Tensor> {
        let shape = view.shape().to_vec();
        let data = match view.as_slice() {
            Some(s) => s.to_vec(),
            None => view.iter().copied().collect(),
        };
        Tensor::from_vec(data, &shape, device)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
    }

    #[test]
    fn a_cpu_tensor_is_viewed_in_place() {
        let t = Tensor::from_vec(values(24), &[2, 3, 4], &Device::Cpu).unwrap();
        let v = t.as_ndarray().unwrap();
        assert_eq!(v.shape(), &[2, 3, 4]);
        assert_eq!(v.as_ptr(), t.as_slice_f32().unwrap().as_ptr(), "no copy");
        assert_eq!(v[[1, 2, 3]], values(24)[12 + 8 + 3]);
    }

    #[test]
    fn a_mutable_view_writes_the_tensor() {
        let mut t = Tensor::from_vec(values(6), &[2, 3], &Device::Cpu).unwrap();
        t.as_ndarray_mut().unwrap()[[1, 0]] = 42.0;
        assert_eq!(t.to_vec_f32().unwrap()[3], 42.0);
    }

    #[test]
    fn an_owned_standard_array_becomes_a_tensor_without_copying() {
        let a = Array3::from_shape_vec((2, 3, 4), values(24))
            .unwrap()
            .into_dyn();
        let ptr = a.as_ptr();
        let t = Tensor::from_ndarray(a, &Device::Cpu).unwrap();
        assert_eq!(t.shape(), &[2, 3, 4]);
        assert_eq!(t.as_slice_f32().unwrap().as_ptr(), ptr, "no copy");
        assert_eq!(t.to_vec_f32().unwrap(), values(24));
    }

    #[test]
    fn strided_and_transposed_arrays_are_copied_in_row_major_order() {
        let a = Array3::from_shape_vec((2, 3, 4), values(24)).unwrap();
        // Every other column of the transposed last two axes: neither contiguous nor row-major.
        let v = a.slice(s![.., .., ..;2]).reversed_axes();
        let t = Tensor::from_ndarray_view(v.view().into_dyn(), &Device::Cpu).unwrap();
        let want: Vec<f32> = v.iter().copied().collect();
        assert_eq!(t.shape(), v.shape());
        assert_eq!(t.to_vec_f32().unwrap(), want);
        let owned =
            Tensor::from_ndarray(v.to_owned().reversed_axes().into_dyn(), &Device::Cpu).unwrap();
        assert_eq!(owned.shape(), &[2, 3, 2]);
        assert_eq!(
            owned.to_ndarray().unwrap(),
            a.slice(s![.., .., ..;2]).into_dyn()
        );
    }

    #[test]
    fn half_tensors_convert_by_copy_and_refuse_a_view() {
        let t = Tensor::from_vec(values(6), &[2, 3], &Device::Cpu)
            .unwrap()
            .to_dtype(crate::DType::BF16)
            .unwrap();
        assert!(t.as_ndarray().is_err());
        let a = t.to_ndarray().unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), values(6)); // exact in bf16
    }
}
