//! The CUDA slot of a build without the `cuda` feature: uninhabited types, so every CUDA arm of a
//! `match` is dead code, and [`open`] says how to get a CUDA build.

use crate::backend::{AttnDims, BackendStorage, GemmSpec, RopeTables};
use crate::cpu::storage::CpuStorage;
use crate::dtype::HalfKind;
use crate::ops::{Activation, NormWeight};
use crate::{DType, Device, Error, Result};

/// Whether the CUDA backend is compiled in.
pub(crate) const COMPILED: bool = false;

/// A CUDA device handle. Uninhabited: this build has no CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CudaDevice {}

/// Device memory of a CUDA tensor. Uninhabited: this build has no CUDA backend.
#[derive(Clone, Debug)]
pub enum CudaStorage {}

/// Always an error: this build has no CUDA backend.
pub(crate) fn open(ordinal: usize) -> Result<CudaDevice> {
    Err(Error::Unavailable {
        device: format!("cuda:{ordinal}"),
        detail: "this build has no CUDA backend (build with the `cuda` feature, e.g. \
                 `cargo build --release --features cuda`)"
            .into(),
    })
}

/// Always an error: this build has no CUDA backend.
pub(crate) fn device_count() -> Result<usize> {
    open(0).map(|d| match d {})
}

impl CudaDevice {
    pub(crate) fn synchronize(&self) -> Result<()> {
        match *self {}
    }
    pub(crate) fn zeros(&self, _len: usize) -> Result<CudaStorage> {
        match *self {}
    }
    pub(crate) fn upload(&self, _src: &CpuStorage) -> Result<CudaStorage> {
        match *self {}
    }
    #[allow(dead_code)]
    pub(crate) fn upload_half(&self, _kind: HalfKind, _bits: &[u16]) -> Result<CudaStorage> {
        match *self {}
    }
}

impl std::fmt::Display for CudaDevice {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl CudaStorage {
    pub(crate) fn to_cpu(&self) -> Result<CpuStorage> {
        match *self {}
    }

    pub(crate) fn try_clone(&self) -> Result<CudaStorage> {
        match *self {}
    }

    pub(crate) fn divergence_rows(
        &self,
        _op: &'static str,
        _dense: &CudaStorage,
        _meta: &crate::DenseLogits,
        _vocab: usize,
        _dense_row0: usize,
        _metric: i32,
    ) -> Result<Vec<f64>> {
        match *self {}
    }
}

impl BackendStorage for CudaStorage {
    fn device(&self) -> Device {
        match *self {}
    }
    fn dtype(&self) -> DType {
        match *self {}
    }
    fn len(&self) -> usize {
        match *self {}
    }
    fn to_vec_f32(&self) -> Result<Vec<f32>> {
        match *self {}
    }
    fn to_dtype(&self, _: DType) -> Result<Self> {
        match *self {}
    }
    fn slice(&self, _: usize, _: usize) -> Result<Self> {
        match *self {}
    }
    fn copy_from(&mut self, _: usize, _: &Self, _: usize, _: usize) -> Result<()> {
        match *self {}
    }
    fn add_from(&mut self, _: usize, _: &Self, _: usize, _: usize) -> Result<()> {
        match *self {}
    }
    fn add_row_vector(&mut self, _: &Self, _: usize) -> Result<()> {
        match *self {}
    }
    fn scale(&mut self, _: f32) -> Result<()> {
        match *self {}
    }
    fn softcap(&mut self, _: f32) -> Result<()> {
        match *self {}
    }
    fn gated(&mut self, _: &Self, _: Activation) -> Result<()> {
        match *self {}
    }
    fn activate(&mut self, _: Activation) -> Result<()> {
        match *self {}
    }
    fn log_softmax_rows(&mut self, _: usize) -> Result<()> {
        match *self {}
    }
    fn gemm(&self, _: &Self, _: GemmSpec, _: &mut Self) -> Result<()> {
        match *self {}
    }
    fn rms_norm(
        &self,
        _: usize,
        _: usize,
        _: usize,
        _: &Self,
        _: f32,
        _: NormWeight,
        _: &mut Self,
        _: usize,
    ) -> Result<()> {
        match *self {}
    }
    fn embedding(&self, _: &[u32], _: usize) -> Result<Self> {
        match *self {}
    }
    fn gather_rows(&self, _: &[u32], _: usize) -> Result<Self> {
        match *self {}
    }
    fn add_scaled_rows_at(&mut self, _: &[u32], _: &Self, _: &[f32], _: usize) -> Result<()> {
        match *self {}
    }
    fn rope(&mut self, _: usize, _: &RopeTables<'_>) -> Result<()> {
        match *self {}
    }
    fn attention(
        &self,
        _: &Self,
        _: &Self,
        _: Option<(&Self, &Self, usize)>,
        _: &[usize],
        _: &AttnDims,
    ) -> Result<Self> {
        match *self {}
    }
}
