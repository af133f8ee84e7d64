//! Weight lookup by Hugging Face name with scoped prefixes, bridging `finercut-format`'s raw tensors to
//! `finercut-tensor` tensors without copying where possible.

use crate::{Error, Result};
use finercut_format::{DType as RawDType, RawTensor, TensorSource};
use finercut_tensor::{DType, Device, Tensor};

/// A view of a [`TensorSource`] under a name prefix (like candle's `VarBuilder::pp`), so a missing or
/// misshapen weight is reported with its full Hugging Face name.
#[derive(Clone)]
pub(crate) struct Weights<'a> {
    source: &'a dyn TensorSource,
    prefix: String,
    device: Device,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(source: &'a dyn TensorSource, device: Device) -> Self {
        Weights {
            source,
            prefix: String::new(),
            device,
        }
    }

    /// The scope `prefix.name.`.
    pub(crate) fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        Weights {
            source: self.source,
            prefix: format!("{}{name}.", self.prefix),
            device: self.device,
        }
    }

    /// Full name of `name` in this scope.
    pub(crate) fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The `f32` tensor `name` of shape `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
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
        Ok(to_tensor(&raw)?.to_device(&self.device)?)
    }
}

/// A raw tensor as an `f32` tensor: aligned `f32` data is used in place (the tensor keeps the
/// memory map alive); other data is copied or converted.
pub(crate) fn to_tensor(raw: &RawTensor) -> Result<Tensor> {
    let dtype = match raw.dtype {
        RawDType::F32 => DType::F32,
        RawDType::F16 => DType::F16,
        RawDType::BF16 => DType::BF16,
    };
    let t = Tensor::from_shared_bytes(
        raw.data.owner().clone(),
        raw.data.start(),
        raw.data.len(),
        dtype,
        &raw.shape,
    )
    .map_err(|e| Error::Input(format!("weight `{}`: {e}", raw.name)))?;
    Ok(t.to_dtype(DType::F32)?)
}
