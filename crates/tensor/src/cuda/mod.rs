//! The CUDA backend (feature `cuda`): device memory through `cudarc`, GEMMs through cuBLAS, every
//! other operation a kernel of `kernels.cu` compiled at run time with NVRTC.
//!
//! The driver, cuBLAS and NVRTC libraries are loaded when a card is first opened ([`open`]), never at
//! build time, so a CUDA build compiles without a CUDA toolkit and runs on the CPU where there is no
//! driver; each library is checked for before it is used, because `cudarc` panics on a missing one.
//!
//! A [`CudaDevice`] is the card's ordinal (so [`crate::Device`] stays `Copy`); the card's context, its
//! one stream, the cuBLAS handle and the compiled kernels live in a process-wide table, and every
//! storage holds an `Arc` of them. All work goes to that one stream, in order.
//!
//! Numerics: `f32` GEMMs use `CUBLAS_COMPUTE_32F` with the default math mode (no TF32), so results
//! match the CPU to float rounding. `bf16` storages (weights in `--precision bf16`) multiply through
//! `cublasGemmEx` with `bf16` inputs and `f32` accumulation and output; activations, norms and
//! softmaxes stay `f32`.

mod kernels;

use crate::backend::{AttnDims, BLayout, BackendStorage, GemmSpec, RopeTables};
use crate::cpu::storage::CpuStorage;
use crate::dtype::HalfKind;
use crate::ops::{Activation, NormWeight};
use crate::{DType, Device, Error, Result};
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

pub use kernels::{compile_ptx, kernel_names, KERNELS_CU};

/// Whether the CUDA backend is compiled in.
pub(crate) const COMPILED: bool = true;

/// Threads per block of the row-wise and elementwise kernels.
const THREADS: u32 = 256;

/// A CUDA card, by ordinal. Its context, stream, cuBLAS handle and kernels are created by
/// [`crate::Device::cuda`] and live as long as the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CudaDevice {
    ordinal: usize,
}

impl CudaDevice {
    /// The card's ordinal (`N` of `cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn backend(&self) -> Result<Arc<Backend>> {
        let table = cards().lock().map_err(|_| Error::Cuda {
            op: "device",
            detail: "the table of CUDA cards was poisoned by a panic".into(),
        })?;
        table.get(&self.ordinal).cloned().ok_or(Error::Unavailable {
            device: self.to_string(),
            detail: "the card was never opened".into(),
        })
    }

    pub(crate) fn synchronize(&self) -> Result<()> {
        self.backend()?
            .stream
            .synchronize()
            .map_err(|e| driver_err("synchronize", e))
    }

    /// `len` zeros (`f32`) on the card.
    pub(crate) fn zeros(&self, len: usize) -> Result<CudaStorage> {
        let be = self.backend()?;
        let data = be
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| driver_err("alloc", e))?;
        Ok(CudaStorage {
            be,
            len,
            data: Data::F32(data),
        })
    }

    /// A copy of host data on the card (16-bit data stays 16-bit for bf16; f16 becomes `f32`).
    pub(crate) fn upload(&self, src: &CpuStorage) -> Result<CudaStorage> {
        match src {
            CpuStorage::Half { kind, bits } => self.upload_half(*kind, bits),
            c => {
                let be = self.backend()?;
                let values = c.as_f32("to_device")?;
                let data = htod(&be.stream, "to_device", values)?;
                Ok(CudaStorage {
                    be,
                    len: values.len(),
                    data: Data::F32(data),
                })
            }
        }
    }

    /// 16-bit host data on the card: `bf16` as is, `f16` converted to `f32`.
    pub(crate) fn upload_half(&self, kind: HalfKind, bits: &[u16]) -> Result<CudaStorage> {
        let be = self.backend()?;
        match kind {
            HalfKind::Bf16 => {
                let data = htod(&be.stream, "to_device", bits)?;
                Ok(CudaStorage {
                    be,
                    len: bits.len(),
                    data: Data::Bf16(data),
                })
            }
            HalfKind::F16 => {
                let mut values = vec![0f32; bits.len()];
                kind.to_f32(bits, &mut values);
                self.upload(&CpuStorage::F32(values))
            }
        }
    }
}

impl std::fmt::Display for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda:{}", self.ordinal)
    }
}

/// A copy of `v` on the card; empty data becomes one unused zero (`cudarc` allocates no empty slices).
fn htod<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    op: &'static str,
    v: &[T],
) -> Result<CudaSlice<T>> {
    let r = if v.is_empty() {
        stream.alloc_zeros::<T>(1)
    } else {
        stream.clone_htod(v)
    };
    r.map_err(|e| driver_err(op, e))
}

/// What one card holds for the process.
struct Backend {
    device: CudaDevice,
    stream: Arc<CudaStream>,
    blas: Mutex<Blas>,
    #[allow(dead_code)] // Kept alive for its functions.
    module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
}

/// The cuBLAS handle, bound to the card's stream. cuBLAS handles must not be used from two threads
/// at once: it lives behind a mutex.
struct Blas(blas_sys::cublasHandle_t);

// SAFETY: the handle is only used while holding the mutex of its `Backend`, one thread at a time.
unsafe impl Send for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle was created by cublasCreate and is destroyed once.
        unsafe {
            let _ = blas_sys::cublasDestroy_v2(self.0);
        }
    }
}

fn cards() -> &'static Mutex<HashMap<usize, Arc<Backend>>> {
    static CARDS: OnceLock<Mutex<HashMap<usize, Arc<Backend>>>> = OnceLock::new();
    CARDS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn driver_err(op: &'static str, e: cudarc::driver::DriverError) -> Error {
    Error::Cuda {
        op,
        detail: e.to_string(),
    }
}

fn blas_err(op: &'static str, status: blas_sys::cublasStatus_t) -> Result<()> {
    if status == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cuda {
            op,
            detail: format!("cuBLAS status {status:?}"),
        })
    }
}

/// Opens card `ordinal` (once per process): checks for the driver, cuBLAS and NVRTC libraries,
/// creates the context, stream and cuBLAS handle, and compiles the kernels for the card.
pub(crate) fn open(ordinal: usize) -> Result<CudaDevice> {
    let device = CudaDevice { ordinal };
    let mut table = cards().lock().map_err(|_| Error::Cuda {
        op: "Device::cuda",
        detail: "the table of CUDA cards was poisoned by a panic".into(),
    })?;
    if table.contains_key(&ordinal) {
        return Ok(device);
    }
    let unavailable = |detail: String| Error::Unavailable {
        device: device.to_string(),
        detail,
    };
    // SAFETY: these only try to load the libraries (`dlopen`), they call nothing in them.
    let (driver, blas, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err(unavailable(
            "no NVIDIA driver found (libcuda.so.1 cannot be loaded): CUDA needs an NVIDIA GPU \
             and its driver"
                .into(),
        ));
    }
    for (present, lib) in [
        (blas, "cuBLAS (libcublas.so)"),
        (nvrtc, "NVRTC (libnvrtc.so)"),
    ] {
        if !present {
            return Err(unavailable(format!(
                "{lib} cannot be loaded: install the CUDA libraries or put their directory on \
                 LD_LIBRARY_PATH (see docs/PERFORMANCE.md, \"CUDA\")"
            )));
        }
    }
    let count = CudaContext::device_count().map_err(|e| unavailable(e.to_string()))?;
    if ordinal >= count.max(0) as usize {
        return Err(unavailable(format!(
            "no such CUDA device: {count} device(s) found"
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(e.to_string()))?;
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| driver_err("Device::cuda", e))?;
    let stream = ctx.default_stream();
    let ptx = compile_ptx(KERNELS_CU, major * 10 + minor, &[]).map_err(|detail| Error::Cuda {
        op: "Device::cuda (NVRTC)",
        detail,
    })?;
    let module = ctx
        .load_module(ptx)
        .map_err(|e| driver_err("Device::cuda (loading kernels)", e))?;
    let mut functions = HashMap::new();
    for &name in kernel_names() {
        let f = module
            .load_function(name)
            .map_err(|e| driver_err("Device::cuda (loading kernels)", e))?;
        functions.insert(name, f);
    }
    let mut handle: blas_sys::cublasHandle_t = std::ptr::null_mut();
    // SAFETY: cuBLAS is present (checked above); the handle is written by cublasCreate, bound to the
    // card's stream and set to the default math mode (no TF32).
    unsafe {
        blas_err("cublasCreate", blas_sys::cublasCreate_v2(&mut handle))?;
        let blas = Blas(handle);
        blas_err(
            "cublasSetStream",
            blas_sys::cublasSetStream_v2(blas.0, stream.cu_stream() as _),
        )?;
        blas_err(
            "cublasSetMathMode",
            blas_sys::cublasSetMathMode(blas.0, blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH),
        )?;
        table.insert(
            ordinal,
            Arc::new(Backend {
                device,
                stream,
                blas: Mutex::new(blas),
                module,
                functions,
            }),
        );
    }
    Ok(device)
}

impl Backend {
    fn func(&self, name: &'static str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or(Error::Cuda {
            op: name,
            detail: "kernel missing from the compiled module".into(),
        })
    }
}

/// Data of a storage on the card.
#[derive(Clone)]
enum Data {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

/// Device memory of a CUDA tensor (contiguous, `f32` or `bf16`).
#[derive(Clone)]
pub struct CudaStorage {
    be: Arc<Backend>,
    /// Elements (the slice may hold one more when empty).
    len: usize,
    data: Data,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage[{}, {}]", self.len, self.be.device)
    }
}

/// Launches kernel `$name` of `$be` with grid `$cfg` and the given arguments (references to values
/// that live until the launch returns).
macro_rules! launch {
    ($be:expr, $name:literal, $cfg:expr, $($arg:expr),* $(,)?) => {{
        let be: &Backend = $be;
        let f = be.func($name)?;
        let mut b = be.stream.launch_builder(f);
        $( b.arg($arg); )*
        // SAFETY: the arguments match the kernel's parameter list in kernels.cu in number, order and
        // type, and the callers checked that every buffer covers the indices the grid touches.
        unsafe { b.launch($cfg) }
            .map(|_| ())
            .map_err(|e| driver_err($name, e))
    }};
}

/// A grid-stride launch over `n` elements.
fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row.
fn per_row(rows: usize) -> Result<LaunchConfig> {
    let rows = u32::try_from(rows).map_err(|_| Error::TooLarge {
        op: "cuda kernel",
        dim: rows,
    })?;
    Ok(LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn u32_of(op: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::TooLarge { op, dim: x })
}

fn i32_of(op: &'static str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::TooLarge { op, dim: x })
}

impl CudaStorage {
    fn f32(&self, op: &'static str) -> Result<&CudaSlice<f32>> {
        match &self.data {
            Data::F32(s) => Ok(s),
            Data::Bf16(_) => Err(Error::DType {
                op,
                expected: DType::F32,
                got: DType::BF16,
            }),
        }
    }

    fn f32_mut(&mut self, op: &'static str) -> Result<&mut CudaSlice<f32>> {
        match &mut self.data {
            Data::F32(s) => Ok(s),
            Data::Bf16(_) => Err(Error::DType {
                op,
                expected: DType::F32,
                got: DType::BF16,
            }),
        }
    }

    /// Checks that `other` lives on the same card.
    fn same_card(&self, op: &'static str, other: &CudaStorage) -> Result<()> {
        if Arc::ptr_eq(&self.be, &other.be) {
            Ok(())
        } else {
            Err(Error::DeviceMismatch {
                op,
                lhs: Device::Cuda(self.be.device),
                rhs: Device::Cuda(other.be.device),
            })
        }
    }

    fn new_f32(&self, op: &'static str, len: usize) -> Result<CudaStorage> {
        let data = self
            .be
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| driver_err(op, e))?;
        Ok(CudaStorage {
            be: self.be.clone(),
            len,
            data: Data::F32(data),
        })
    }

    /// The data as host storage of the same dtype (`bf16` stays 16-bit).
    pub(crate) fn to_cpu(&self) -> Result<CpuStorage> {
        let op = "to_device";
        Ok(match &self.data {
            Data::F32(s) => {
                let mut v = self
                    .be
                    .stream
                    .clone_dtoh(s)
                    .map_err(|e| driver_err(op, e))?;
                v.truncate(self.len);
                CpuStorage::F32(v)
            }
            Data::Bf16(s) => {
                let mut bits = self
                    .be
                    .stream
                    .clone_dtoh(s)
                    .map_err(|e| driver_err(op, e))?;
                bits.truncate(self.len);
                CpuStorage::Half {
                    kind: HalfKind::Bf16,
                    bits,
                }
            }
        })
    }

    /// This storage's values converted to `bf16` in a new buffer.
    fn to_bf16_slice(&self, op: &'static str) -> Result<CudaSlice<u16>> {
        match &self.data {
            Data::Bf16(s) => Ok(s.clone()),
            Data::F32(s) => {
                let mut out = self
                    .be
                    .stream
                    .alloc_zeros::<u16>(self.len.max(1))
                    .map_err(|e| driver_err(op, e))?;
                let n = self.len as u64;
                launch!(
                    &self.be,
                    "f32_to_bf16",
                    elementwise(self.len),
                    s,
                    &mut out,
                    &n
                )?;
                Ok(out)
            }
        }
    }

    /// Per-row divergences of `self` (`[rows, vocab]` pruned logits) against dense rows
    /// `dense_row0..` of `dense`; only the `rows` values come back to the host.
    pub(crate) fn divergence_rows(
        &self,
        op: &'static str,
        dense: &CudaStorage,
        meta: &crate::DenseLogits,
        vocab: usize,
        dense_row0: usize,
        metric: i32,
    ) -> Result<Vec<f64>> {
        self.same_card(op, dense)?;
        let rows = self.len / vocab.max(1);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let stream = &self.be.stream;
        let lse = htod(stream, op, &meta.lse)?;
        let norm = htod(stream, op, &meta.norm)?;
        let targets = htod(stream, op, &meta.targets)?;
        let mut out = stream
            .alloc_zeros::<f64>(rows)
            .map_err(|e| driver_err(op, e))?;
        let (v, r0) = (u32_of(op, vocab)?, u32_of(op, dense_row0)?);
        launch!(
            &self.be,
            "divergence_rows",
            per_row(rows)?,
            dense.f32(op)?,
            &lse,
            &norm,
            self.f32(op)?,
            &targets,
            &mut out,
            &v,
            &r0,
            &metric
        )?;
        stream.clone_dtoh(&out).map_err(|e| driver_err(op, e))
    }
}

impl BackendStorage for CudaStorage {
    fn device(&self) -> Device {
        Device::Cuda(self.be.device)
    }

    fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::Bf16(_) => DType::BF16,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_cpu()?.to_vec_f32()
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let op = "to_dtype";
        match (&self.data, dtype) {
            (Data::F32(_), DType::F32) | (Data::Bf16(_), DType::BF16) => Ok(self.clone()),
            (Data::F32(_), DType::BF16) => Ok(CudaStorage {
                be: self.be.clone(),
                len: self.len,
                data: Data::Bf16(self.to_bf16_slice(op)?),
            }),
            (Data::Bf16(s), DType::F32) => {
                let mut out = self.new_f32(op, self.len)?;
                let n = self.len as u64;
                let dst = out.f32_mut(op)?;
                launch!(&self.be, "bf16_to_f32", elementwise(self.len), s, dst, &n)?;
                Ok(out)
            }
            (_, DType::F16) => Err(Error::DType {
                op,
                expected: DType::BF16,
                got: DType::F16,
            }),
        }
    }

    fn slice(&self, start: usize, len: usize) -> Result<Self> {
        let op = "slice_rows";
        let mut out = self.new_f32(op, len)?;
        out.copy_from(0, self, start, len)?;
        Ok(out)
    }

    fn copy_from(&mut self, dst: usize, src: &Self, src_start: usize, len: usize) -> Result<()> {
        let op = "copy_rows_from";
        self.same_card(op, src)?;
        if len == 0 {
            return Ok(());
        }
        let stream = self.be.stream.clone();
        let s = src.f32(op)?.slice(src_start..src_start + len);
        let mut d = self.f32_mut(op)?.slice_mut(dst..dst + len);
        stream
            .memcpy_dtod(&s, &mut d)
            .map_err(|e| driver_err(op, e))
    }

    fn add_from(&mut self, dst: usize, src: &Self, src_start: usize, len: usize) -> Result<()> {
        let op = "add_rows_from";
        self.same_card(op, src)?;
        if len == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let s = src.f32(op)?.slice(src_start..src_start + len);
        let mut d = self.f32_mut(op)?.slice_mut(dst..dst + len);
        let n = len as u64;
        launch!(&be, "add_f32", elementwise(len), &mut d, &s, &n)
    }

    fn add_row_vector(&mut self, v: &Self, cols: usize) -> Result<()> {
        let op = "add_row_vector_in_place";
        self.same_card(op, v)?;
        if self.len == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let (n, c) = (self.len as u64, u32_of(op, cols)?);
        let vv = v.f32(op)?;
        let x = self.f32_mut(op)?;
        launch!(
            &be,
            "add_row_vector_f32",
            elementwise(n as usize),
            x,
            vv,
            &n,
            &c
        )
    }

    fn scale(&mut self, s: f32) -> Result<()> {
        let be = self.be.clone();
        let n = self.len as u64;
        let x = self.f32_mut("scale_in_place")?;
        launch!(&be, "scale_f32", elementwise(n as usize), x, &s, &n)
    }

    fn softcap(&mut self, cap: f32) -> Result<()> {
        let be = self.be.clone();
        let n = self.len as u64;
        let x = self.f32_mut("softcap_in_place")?;
        launch!(&be, "softcap_f32", elementwise(n as usize), x, &cap, &n)
    }

    fn gated(&mut self, up: &Self, act: Activation) -> Result<()> {
        let op = "gated_in_place";
        self.same_card(op, up)?;
        let be = self.be.clone();
        let n = self.len as u64;
        let u = up.f32(op)?;
        let g = self.f32_mut(op)?;
        let cfg = elementwise(n as usize);
        match act {
            Activation::Silu => launch!(&be, "gated_silu_f32", cfg, g, u, &n),
            Activation::GeluTanh => launch!(&be, "gated_gelu_tanh_f32", cfg, g, u, &n),
        }
    }

    fn log_softmax_rows(&mut self, cols: usize) -> Result<()> {
        let op = "log_softmax_last_in_place";
        if self.len == 0 || cols == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let (rows, c) = (self.len / cols, u32_of(op, cols)?);
        let x = self.f32_mut(op)?;
        launch!(&be, "log_softmax_rows_f32", per_row(rows)?, x, &c)
    }

    fn gemm(&self, b: &Self, spec: GemmSpec, out: &mut Self) -> Result<()> {
        let op = "matmul";
        self.same_card(op, b)?;
        self.same_card(op, out)?;
        let GemmSpec { m, n, k, .. } = spec;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // An empty sum: zeros (cuBLAS would leave C as it is with beta = 0 only by accident).
            let z = vec![0f32; m * n];
            let stream = self.be.stream.clone();
            let mut d = out.f32_mut(op)?.slice_mut(..m * n);
            return stream
                .memcpy_htod(&z, &mut d)
                .map_err(|e| driver_err(op, e));
        }
        // Row-major C = A·op(B) is column-major Cᵀ = op(B)ᵀ·Aᵀ: cuBLAS gets (B, A) with m and n
        // swapped. B [n,k] row-major (NxK) is column-major k×n: transposed; B [k,n] (KxN) is n×k.
        let (transa, lda) = match spec.b_layout {
            BLayout::NxK => (blas_sys::cublasOperation_t::CUBLAS_OP_T, k),
            BLayout::KxN => (blas_sys::cublasOperation_t::CUBLAS_OP_N, n),
        };
        let transb = blas_sys::cublasOperation_t::CUBLAS_OP_N;
        let (mi, ni, ki) = (i32_of(op, n)?, i32_of(op, m)?, i32_of(op, k)?);
        let (lda, ldb, ldc) = (i32_of(op, lda)?, i32_of(op, k)?, i32_of(op, n)?);
        let (alpha, beta) = (1f32, 0f32);
        let stream = self.be.stream.clone();
        // bf16 weights: the activations are rounded to bf16 too (inputs of GemmEx must share a
        // type); accumulation and output stay f32.
        let a_bf16;
        let (a_ptr, b_ptr, dtype, _guards) = match (&self.data, &b.data) {
            (Data::F32(a), Data::F32(w)) => {
                let (pa, ga) = a.device_ptr(&stream);
                let (pb, gb) = w.device_ptr(&stream);
                (pa, pb, blas_sys::cudaDataType_t::CUDA_R_32F, (ga, gb))
            }
            (_, Data::Bf16(w)) => {
                a_bf16 = self.to_bf16_slice(op)?;
                let (pa, ga) = a_bf16.device_ptr(&stream);
                let (pb, gb) = w.device_ptr(&stream);
                (pa, pb, blas_sys::cudaDataType_t::CUDA_R_16BF, (ga, gb))
            }
            (Data::Bf16(_), Data::F32(_)) => {
                return Err(Error::DType {
                    op,
                    expected: DType::F32,
                    got: DType::BF16,
                })
            }
        };
        let c = out.f32_mut(op)?;
        let (c_ptr, _gc) = c.device_ptr_mut(&stream);
        // cuBLAS runs in the calling thread's current context (a rayon worker may have none).
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| driver_err(op, e))?;
        let blas = self.be.blas.lock().map_err(|_| Error::Cuda {
            op,
            detail: "the cuBLAS handle was poisoned by a panic".into(),
        })?;
        let compute = blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F;
        let algo = blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
        let c_type = blas_sys::cudaDataType_t::CUDA_R_32F;
        // SAFETY: the pointers are live device allocations of the sizes the shapes need (checked by
        // the caller: A holds m·k, B k·n, C at least m·n elements); the handle is
        // used under its mutex on the stream that orders every access to these buffers.
        let status = unsafe {
            blas_sys::cublasGemmEx(
                blas.0,
                transa,
                transb,
                mi,
                ni,
                ki,
                (&alpha as *const f32).cast::<c_void>(),
                b_ptr as *const c_void,
                dtype,
                lda,
                a_ptr as *const c_void,
                dtype,
                ldb,
                (&beta as *const f32).cast::<c_void>(),
                c_ptr as *mut c_void,
                c_type,
                ldc,
                compute,
                algo,
            )
        };
        blas_err("cublasGemmEx", status)
    }

    fn rms_norm(
        &self,
        src_row: usize,
        n: usize,
        cols: usize,
        weight: &Self,
        eps: f32,
        kind: NormWeight,
        out: &mut Self,
        dst_row: usize,
    ) -> Result<()> {
        let op = "rms_norm_rows_into";
        self.same_card(op, weight)?;
        self.same_card(op, out)?;
        if n == 0 || cols == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let x = self.f32(op)?.slice(src_row * cols..(src_row + n) * cols);
        let w = weight.f32(op)?;
        let mut o = out
            .f32_mut(op)?
            .slice_mut(dst_row * cols..(dst_row + n) * cols);
        let c = u32_of(op, cols)?;
        let one_plus = i32::from(kind == NormWeight::OnePlus);
        launch!(
            &be,
            "rms_norm_f32",
            per_row(n)?,
            &x,
            w,
            &mut o,
            &c,
            &eps,
            &one_plus
        )
    }

    fn embedding(&self, ids: &[u32], d: usize) -> Result<Self> {
        let op = "embedding";
        let mut out = self.new_f32(op, ids.len() * d)?;
        if ids.is_empty() || d == 0 {
            return Ok(out);
        }
        let ids_dev = self
            .be
            .stream
            .clone_htod(ids)
            .map_err(|e| driver_err(op, e))?;
        let dd = u32_of(op, d)?;
        let cfg = per_row(ids.len())?;
        let dst = out.f32_mut(op)?;
        match &self.data {
            Data::F32(t) => launch!(&self.be, "embedding_f32", cfg, t, &ids_dev, dst, &dd)?,
            Data::Bf16(t) => launch!(&self.be, "embedding_bf16", cfg, t, &ids_dev, dst, &dd)?,
        }
        Ok(out)
    }

    fn gather_rows(&self, rows: &[u32], cols: usize) -> Result<Self> {
        // The embedding kernel is this gather; unlike an embedding table, the rows must be `f32`.
        self.f32("gather_rows")?;
        self.embedding(rows, cols)
    }

    fn add_scaled_rows_at(
        &mut self,
        rows: &[u32],
        src: &Self,
        scales: &[f32],
        cols: usize,
    ) -> Result<()> {
        let op = "add_scaled_rows_at";
        self.same_card(op, src)?;
        if rows.is_empty() || cols == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let (n, c) = (u32_of(op, rows.len())?, u32_of(op, cols)?);
        // Rows are taken in order of `i` within a chunk of `per` of them, one thread per column;
        // chunks run in parallel only when no row repeats, so a repeated row sees its additions in
        // the host's order.
        let distinct = {
            let mut sorted = rows.to_vec();
            sorted.sort_unstable();
            sorted.windows(2).all(|w| w[0] != w[1])
        };
        let per = if distinct {
            n.div_ceil(65_535).max(1)
        } else {
            n
        };
        let cfg = LaunchConfig {
            grid_dim: (c.div_ceil(THREADS), n.div_ceil(per), 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let rows_dev = be.stream.clone_htod(rows).map_err(|e| driver_err(op, e))?;
        let scales_dev = be
            .stream
            .clone_htod(scales)
            .map_err(|e| driver_err(op, e))?;
        let y = src.f32(op)?;
        let x = self.f32_mut(op)?;
        launch!(
            &be,
            "add_scaled_rows_f32",
            cfg,
            x,
            &rows_dev,
            y,
            &scales_dev,
            &n,
            &c,
            &per
        )
    }

    fn rope(&mut self, cols: usize, tables: &RopeTables<'_>) -> Result<()> {
        let op = "Rope::apply";
        let rows = tables.index.len();
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let up = |v: &[f32]| be.stream.clone_htod(v).map_err(|e| driver_err(op, e));
        let (cos, sin) = (up(tables.cos)?, up(tables.sin)?);
        let index = be
            .stream
            .clone_htod(tables.index)
            .map_err(|e| driver_err(op, e))?;
        let (c, half) = (u32_of(op, cols)?, u32_of(op, tables.half)?);
        let x = self.f32_mut(op)?;
        launch!(
            &be,
            "rope_f32",
            per_row(rows)?,
            x,
            &cos,
            &sin,
            &index,
            &c,
            &half
        )
    }

    fn attention(
        &self,
        k: &Self,
        v: &Self,
        prefix: Option<(&Self, &Self, usize)>,
        seq_lens: &[usize],
        dims: &AttnDims,
    ) -> Result<Self> {
        let op = "causal_attention";
        self.same_card(op, k)?;
        self.same_card(op, v)?;
        let hd = dims.head_dim;
        if hd > 256 {
            return Err(Error::Invalid {
                op,
                detail: format!("head_dim {hd} above the CUDA kernel's limit of 256"),
            });
        }
        let mut out = self.new_f32(op, self.len)?;
        let max_len = seq_lens.iter().copied().max().unwrap_or(0);
        if max_len == 0 || seq_lens.is_empty() {
            return Ok(out);
        }
        let mut starts = Vec::with_capacity(seq_lens.len());
        let mut row = 0u32;
        for &len in seq_lens {
            starts.push(row);
            row += u32_of(op, len)?;
        }
        let lens: Vec<u32> = seq_lens
            .iter()
            .map(|&l| u32_of(op, l))
            .collect::<Result<_>>()?;
        let be = self.be.clone();
        let starts = be
            .stream
            .clone_htod(&starts)
            .map_err(|e| driver_err(op, e))?;
        let lens = be.stream.clone_htod(&lens).map_err(|e| driver_err(op, e))?;
        let (pk, pv, plen) = match prefix {
            Some((pk, pv, plen)) => {
                self.same_card(op, pk)?;
                self.same_card(op, pv)?;
                (pk.f32(op)?, pv.f32(op)?, plen)
            }
            None => (k.f32(op)?, v.f32(op)?, 0),
        };
        // Key tile rows: shared memory of 2·bk·hd floats stays within 32 KiB.
        let bk = (4096 / hd).clamp(1, 32);
        let cfg = LaunchConfig {
            grid_dim: (
                u32_of(op, max_len.div_ceil(ATT_BQ))?,
                u32_of(op, dims.heads)?,
                u32_of(op, seq_lens.len())?,
            ),
            block_dim: (32 * ATT_WARPS, 1, 1),
            shared_mem_bytes: u32_of(op, 2 * bk * hd * 4)?,
        };
        let plen = u32_of(op, plen)?;
        let (heads, kvh, hdu) = (
            u32_of(op, dims.heads)?,
            u32_of(op, dims.kv_heads)?,
            u32_of(op, hd)?,
        );
        let window = u32_of(op, dims.window.unwrap_or(0))?;
        let softcap = dims.softcap.unwrap_or(0.0);
        let bk = bk as u32;
        let dst = out.f32_mut(op)?;
        launch!(
            &be,
            "attention_f32",
            cfg,
            self.f32(op)?,
            k.f32(op)?,
            v.f32(op)?,
            pk,
            pv,
            &plen,
            &starts,
            &lens,
            dst,
            &heads,
            &kvh,
            &hdu,
            &dims.scale,
            &window,
            &softcap,
            &bk
        )?;
        Ok(out)
    }
}

/// Query rows per attention block and warps per block (as `ATT_BQ`, `ATT_WARPS` in kernels.cu).
const ATT_BQ: usize = 16;
const ATT_WARPS: u32 = 4;
