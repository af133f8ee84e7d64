//! Weight lookup by Hugging Face name with scoped prefixes, bridging `finercut-format`'s raw tensors to
//! `finercut-tensor` tensors without copying where possible.

use crate::{Error, Result};
use finercut_format::{DType as RawDType, QuantizedRows, RawTensor, TensorSource};
use finercut_tensor::{DType, Device, Matrix, Tensor, WidenRows};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// How weight matrices (linear layers, embeddings, LM head) are held in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// As stored in the checkpoint: bf16/f16 safetensors in place in the memory map, quantised
    /// GGUF blocks quantised; widened to `f32` tile by tile inside each GEMM. The products are
    /// bit-identical to [`WeightDtype::F32`]'s (widening is exact and the GEMM sees the same
    /// `f32` values in the same tiles).
    #[default]
    Stored,
    /// Every matrix widened to `f32` once at load (four bytes per parameter).
    F32,
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightDtype::Stored => "stored",
            WeightDtype::F32 => "f32",
        })
    }
}

impl FromStr for WeightDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stored" => Ok(WeightDtype::Stored),
            "f32" => Ok(WeightDtype::F32),
            other => Err(Error::Input(format!(
                "unknown weight dtype `{other}`; expected `stored` or `f32`"
            ))),
        }
    }
}

/// GGUF rows as [`WidenRows`]: the bridge between `finercut-format`'s quantised rows and the
/// tensor engine, which know nothing of each other.
struct GgufRows(QuantizedRows);

impl WidenRows for GgufRows {
    fn rows(&self) -> usize {
        self.0.shape()[0]
    }

    fn cols(&self) -> usize {
        self.0.shape()[1]
    }

    fn stored_type(&self) -> String {
        self.0.ggml_type().to_string()
    }

    fn stored_bytes(&self) -> usize {
        self.0.stored_bytes()
    }

    fn widen_rows(&self, first: usize, out: &mut [f32]) -> std::result::Result<(), String> {
        self.0
            .dequantize_rows(first, out)
            .map_err(|e| e.to_string())
    }
}

/// A view of a [`TensorSource`] under a name prefix (like candle's `VarBuilder::pp`), so a missing or
/// misshapen weight is reported with its full Hugging Face name.
#[derive(Clone)]
pub(crate) struct Weights<'a> {
    source: &'a dyn TensorSource,
    prefix: String,
    device: Device,
    /// How weight matrices are held on the CPU ([`WeightDtype`]).
    dtype: WeightDtype,
    /// Element type of weight matrices on another device (`F32`, or `BF16` for `--precision bf16`).
    matrix_dtype: DType,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(
        source: &'a dyn TensorSource,
        device: Device,
        dtype: WeightDtype,
        matrix_dtype: DType,
    ) -> Self {
        Weights {
            source,
            prefix: String::new(),
            device,
            dtype,
            matrix_dtype,
        }
    }

    /// The scope `prefix.name.`.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        Weights {
            source: self.source,
            prefix: format!("{}{name}.", self.prefix),
            device: self.device,
            dtype: self.dtype,
            matrix_dtype: self.matrix_dtype,
        }
    }

    /// Full name of `name` in this scope.
    pub(crate) fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The `f32` tensor `name` of shape `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(name, shape, DType::F32)
    }

    /// The weight matrix `name` of shape `shape`, in the model's matrix dtype (converted on the host,
    /// before it travels to the device).
    pub(crate) fn get_matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(name, shape, self.matrix_dtype)
    }

    fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let full = self.full(name);
        if !self.source.contains(&full) {
            return Err(Error::MissingWeight { name: full });
        }
        let raw = self.source.get(&full)?;
        if raw.shape != shape {
            return Err(Error::WeightShape {
                name: full,
                expected: shape.to_vec(),
                actual: raw.shape,
            });
        }
        // Converted once, from the stored type straight to `dtype` (bf16 stored and wanted: no
        // conversion at all), then moved to the device.
        Ok(stored_tensor(&raw)?
            .to_dtype(dtype)?
            .to_device(&self.device)?)
    }

    /// The weight matrix `name` of shape `[rows, cols]`, held as [`WeightDtype`] says (stored
    /// rows only on the CPU; on another device the matrix is widened and moved there).
    pub(crate) fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<Matrix> {
        if self.dtype == WeightDtype::F32 || self.device != Device::Cpu {
            return Ok(Matrix::Dense(self.get_matrix(name, &shape)?));
        }
        let full = self.full(name);
        if !self.source.contains(&full) {
            return Err(Error::MissingWeight { name: full });
        }
        let check = |actual: Vec<usize>| -> Result<()> {
            if actual != shape {
                return Err(Error::WeightShape {
                    name: full.clone(),
                    expected: shape.to_vec(),
                    actual,
                });
            }
            Ok(())
        };
        if let Some(rows) = self.source.get_quantized(&full)? {
            check(rows.shape().to_vec())?;
            return Ok(Matrix::from_rows(Arc::new(GgufRows(rows))));
        }
        let raw = self.source.get(&full)?;
        check(raw.shape.clone())?;
        Matrix::from_shared_bytes(
            raw.data.owner().clone(),
            raw.data.start(),
            raw.data.len(),
            dtype_of(raw.dtype),
            &raw.shape,
        )
        .map_err(|e| Error::Input(format!("weight `{}`: {e}", raw.name)))
    }
}

impl Weights<'_> {
    /// Rows `rows` of the weight matrix `name` of shape `[rows, cols]` (one part of a fused
    /// projection), held as [`Weights::matrix`] holds a whole matrix: a row range of a row-major
    /// matrix is one byte range, used in place when stored rows are kept.
    pub(crate) fn matrix_rows(
        &self,
        name: &str,
        shape: [usize; 2],
        rows: std::ops::Range<usize>,
    ) -> Result<Matrix> {
        let full = self.full(name);
        if !self.source.contains(&full) {
            return Err(Error::MissingWeight { name: full });
        }
        if self.source.get_quantized(&full)?.is_some() {
            return Err(Error::Input(format!(
                "weight `{full}`: a fused projection stored as quantised GGUF rows is not split"
            )));
        }
        let raw = self.source.get(&full)?;
        if raw.shape != shape || rows.start > rows.end || rows.end > shape[0] {
            return Err(Error::WeightShape {
                name: full,
                expected: shape.to_vec(),
                actual: raw.shape,
            });
        }
        let row_bytes = shape[1] * raw.dtype.size();
        let data = raw
            .data
            .sub(rows.start * row_bytes, rows.len() * row_bytes)
            .ok_or_else(|| Error::Input(format!("weight `{full}`: rows {rows:?} out of range")))?;
        let part = RawTensor {
            name: format!("{full}[{}..{}]", rows.start, rows.end),
            dtype: raw.dtype,
            shape: vec![rows.len(), shape[1]],
            data,
        };
        if self.dtype == WeightDtype::F32 || self.device != Device::Cpu {
            return Ok(Matrix::Dense(
                stored_tensor(&part)?
                    .to_dtype(self.matrix_dtype)?
                    .to_device(&self.device)?,
            ));
        }
        Matrix::from_shared_bytes(
            part.data.owner().clone(),
            part.data.start(),
            part.data.len(),
            dtype_of(part.dtype),
            &part.shape,
        )
        .map_err(|e| Error::Input(format!("weight `{}`: {e}", part.name)))
    }
}

fn dtype_of(d: RawDType) -> DType {
    match d {
        RawDType::F32 => DType::F32,
        RawDType::F16 => DType::F16,
        RawDType::BF16 => DType::BF16,
    }
}

/// A raw tensor in its stored element type: aligned `f32` data is used in place (the tensor keeps
/// the memory map alive); other data is copied as it is.
pub(crate) fn stored_tensor(raw: &RawTensor) -> Result<Tensor> {
    Tensor::from_shared_bytes(
        raw.data.owner().clone(),
        raw.data.start(),
        raw.data.len(),
        dtype_of(raw.dtype),
        &raw.shape,
    )
    .map_err(|e| Error::Input(format!("weight `{}`: {e}", raw.name)))
}

/// A raw tensor as an `f32` tensor ([`stored_tensor`], widened when it is 16-bit).
#[cfg(test)]
pub(crate) fn to_tensor(raw: &RawTensor) -> Result<Tensor> {
    Ok(stored_tensor(raw)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use finercut_format::Bytes;

    fn raw(data: Bytes, dtype: RawDType, shape: Vec<usize>) -> RawTensor {
        RawTensor {
            name: "w".into(),
            dtype,
            shape,
            data,
        }
    }

    #[test]
    fn aligned_f32_is_shared_and_the_rest_is_converted() {
        let t = to_tensor(&raw(
            Bytes::from_f32_vec(vec![1.0, 2.0, 3.0, 4.0]),
            RawDType::F32,
            vec![2, 2],
        ))
        .unwrap();
        assert!(t.is_mapped());
        assert_eq!(t.to_vec_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);

        // The same floats at every offset of a byte buffer: used in place exactly when aligned.
        let mut seen_unaligned = false;
        for off in 0..4 {
            let mut bytes = vec![0u8; off];
            bytes.extend([1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()));
            let data = Bytes::from_vec(bytes).sub(off, 8).unwrap();
            let aligned = (data.as_ptr() as usize).is_multiple_of(4);
            seen_unaligned |= !aligned;
            let t = to_tensor(&raw(data, RawDType::F32, vec![2])).unwrap();
            assert_eq!(t.is_mapped(), aligned);
            assert_eq!(t.to_vec_f32().unwrap(), vec![1.5, -2.0]);
        }
        assert!(seen_unaligned);

        let bf = Bytes::from_vec(
            [1.0f32, 0.5]
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        );
        let t = to_tensor(&raw(bf, RawDType::BF16, vec![2])).unwrap();
        assert_eq!(
            (t.dtype(), t.to_vec_f32().unwrap()),
            (DType::F32, vec![1.0, 0.5])
        );
    }
}
