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
//! Launch geometry and cuBLAS arguments come from `cuda_plan` (plain functions, tested without a
//! GPU): a call beyond CUDA's grid limits is an [`Error::LaunchLimit`], not a failed launch. Device
//! buffers are shared between clones of a tensor and copied (fallibly) before the first write to a
//! shared one, so cloning never allocates; a failed allocation is an [`Error::OutOfMemory`] naming
//! the operation and the size.
//!
//! Kernels are compiled by NVRTC to a cubin for the card's own architecture (`sm_XY`), so the driver
//! never JIT-compiles PTX and an NVRTC newer than the driver still loads; only for an architecture
//! this NVRTC does not know is PTX loaded, and a driver too old for it is named in the error.
//! Kernel launches are asynchronous: a fault shows at the next synchronising call. With
//! `FINERCUT_CUDA_DEBUG=1` or `CUDA_LAUNCH_BLOCKING=1`, every launch and GEMM is followed by a
//! synchronisation, and a fault is reported against the kernel that caused it, with its grid.
//!
//! Numerics: `f32` GEMMs use `CUBLAS_COMPUTE_32F` with the default math mode (no TF32), so results
//! match the CPU to float rounding. `bf16` storages (weights in `--precision bf16`) multiply through
//! `cublasGemmEx` with `bf16` inputs and `f32` accumulation and output; activations, norms and
//! softmaxes stay `f32`.

mod kernels;

use crate::backend::{AttnDims, BackendStorage, GemmSpec, RopeTables};
use crate::cpu::storage::CpuStorage;
use crate::dtype::HalfKind;
use crate::ops::{Activation, NormWeight};
use crate::{DType, Device, Error, Result};
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DeviceRepr, DriverError, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use crate::cuda_plan::{self, GemmArgs, Geometry, Trans};
pub use kernels::{
    compile_cubin, compile_ptx, kernel_names, nvrtc_version, parse_ptxas_info, Cubin,
    KernelResources, KERNELS_CU,
};

/// Whether the CUDA backend is compiled in.
pub(crate) const COMPILED: bool = true;

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
        let data = alloc::<f32>(&be, "zeros", len)?;
        Ok(CudaStorage {
            be,
            len,
            data: Data::F32(Arc::new(data)),
        })
    }

    /// A copy of host data on the card (16-bit data stays 16-bit for bf16; f16 becomes `f32`).
    pub(crate) fn upload(&self, src: &CpuStorage) -> Result<CudaStorage> {
        match src {
            CpuStorage::Half { kind, bits } => self.upload_half(*kind, bits),
            c => {
                let be = self.backend()?;
                let values = c.as_f32("to_device")?;
                let data = htod(&be, "to_device", values)?;
                Ok(CudaStorage {
                    be,
                    len: values.len(),
                    data: Data::F32(Arc::new(data)),
                })
            }
        }
    }

    /// 16-bit host data on the card: `bf16` as is, `f16` converted to `f32`.
    pub(crate) fn upload_half(&self, kind: HalfKind, bits: &[u16]) -> Result<CudaStorage> {
        let be = self.backend()?;
        match kind {
            HalfKind::Bf16 => {
                let data = htod(&be, "to_device", bits)?;
                Ok(CudaStorage {
                    be,
                    len: bits.len(),
                    data: Data::Bf16(Arc::new(data)),
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
    be: &Backend,
    op: &'static str,
    v: &[T],
) -> Result<CudaSlice<T>> {
    if v.is_empty() {
        return alloc::<T>(be, op, 0);
    }
    be.stream
        .clone_htod(v)
        .map_err(|e| alloc_err::<T>(be.device, op, v.len(), e))
}

/// `len` zeros of `T` on the card (one when `len` is 0).
fn alloc<T: DeviceRepr + ValidAsZeroBits>(
    be: &Backend,
    op: &'static str,
    len: usize,
) -> Result<CudaSlice<T>> {
    be.stream
        .alloc_zeros::<T>(len.max(1))
        .map_err(|e| alloc_err::<T>(be.device, op, len, e))
}

/// The error of `op` allocating `elems` values of `T`: [`Error::OutOfMemory`] when the card is
/// full, else the driver's error with the size.
fn alloc_err<T>(device: CudaDevice, op: &'static str, elems: usize, e: DriverError) -> Error {
    let bytes = elems.max(1).saturating_mul(std::mem::size_of::<T>());
    if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory {
            op,
            device: device.to_string(),
            bytes,
            elems,
            detail: driver_text(e),
        }
    } else {
        Error::Cuda {
            op,
            detail: format!(
                "allocating {elems} elements ({bytes} bytes) on {device}: {}",
                describe(e)
            ),
        }
    }
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

fn driver_err(op: &'static str, e: DriverError) -> Error {
    Error::Cuda {
        op,
        detail: describe(e),
    }
}

/// The driver's name and message of `e` (the message needs the driver, so without one only the
/// name).
fn driver_text(e: DriverError) -> String {
    // SAFETY: only tries to load the library.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        format!("{:?}: {e}", e.0)
    } else {
        format!("{:?}", e.0)
    }
}

/// The driver's message; for a fault that an earlier asynchronous launch may have caused, also how
/// to find that launch.
fn describe(e: DriverError) -> String {
    use cudarc::driver::sys::CUresult as R;
    let sticky = matches!(
        e.0,
        R::CUDA_ERROR_ILLEGAL_ADDRESS
            | R::CUDA_ERROR_LAUNCH_FAILED
            | R::CUDA_ERROR_MISALIGNED_ADDRESS
            | R::CUDA_ERROR_ILLEGAL_INSTRUCTION
            | R::CUDA_ERROR_HARDWARE_STACK_ERROR
            | R::CUDA_ERROR_INVALID_PC
            | R::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    );
    if sticky && !debug_launches() {
        format!(
            "{} (kernels run asynchronously, so an earlier launch may have caused this: rerun \
             with FINERCUT_CUDA_DEBUG=1 or CUDA_LAUNCH_BLOCKING=1 to name the kernel)",
            driver_text(e)
        )
    } else {
        driver_text(e)
    }
}

/// Whether every launch is followed by a synchronisation that reports a fault against its kernel
/// (`FINERCUT_CUDA_DEBUG=1` or `CUDA_LAUNCH_BLOCKING=1`, read once).
fn debug_launches() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| {
        ["FINERCUT_CUDA_DEBUG", "CUDA_LAUNCH_BLOCKING"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|x| x.trim() == "1"))
    })
}

/// In debug mode, waits for the work just queued by `what` and reports a fault against it.
fn debug_sync(be: &Backend, what: &str, op: &'static str) -> Result<()> {
    if !debug_launches() {
        return Ok(());
    }
    be.stream.synchronize().map_err(|e| Error::Cuda {
        op,
        detail: format!("{what} faulted: {}", driver_text(e)),
    })
}

/// The driver's CUDA version, `(major, minor)`.
fn driver_version() -> Option<(i32, i32)> {
    let mut v = 0;
    // SAFETY: the driver is loaded (checked by the caller); the pointer is to a live integer.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some((v / 1000, (v % 1000) / 10))
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

/// The number of CUDA cards the driver sees (an error without a driver).
pub(crate) fn device_count() -> Result<usize> {
    let unavailable = |detail: String| Error::Unavailable {
        device: "cuda".into(),
        detail,
    };
    // SAFETY: this only tries to load the driver library (`dlopen`), it calls nothing in it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(unavailable(
            "no NVIDIA driver found (libcuda.so.1 cannot be loaded): CUDA needs an NVIDIA GPU \
             and its driver"
                .into(),
        ));
    }
    let count = CudaContext::device_count().map_err(|e| unavailable(e.to_string()))?;
    Ok(count.max(0) as usize)
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
    let module = load_kernels(&ctx, major * 10 + minor)?;
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

/// The kernels for a card of compute capability `cc` (e.g. 90): a cubin for `sm_{cc}`, or, where
/// this NVRTC does not know the architecture, PTX for the newest one it knows (JIT-compiled by the
/// driver, which must then be at least as new as NVRTC: a driver too old is named).
fn load_kernels(ctx: &Arc<CudaContext>, cc: i32) -> Result<Arc<CudaModule>> {
    let op = "Device::cuda (kernels)";
    let versions = || {
        let nvrtc = nvrtc_version().map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"));
        let driver = driver_version().map_or("unknown".to_string(), |(a, b)| format!("{a}.{b}"));
        format!(
            "NVRTC {nvrtc}, driver CUDA {driver}, compute capability {}.{}",
            cc / 10,
            cc % 10
        )
    };
    match compile_cubin(KERNELS_CU, cc, &[], &[]) {
        Ok(cubin) => ctx
            .load_module(Ptx::from_binary(cubin.image))
            .map_err(|e| Error::Cuda {
                op,
                detail: format!(
                    "loading the sm_{cc} cubin ({}): {}",
                    versions(),
                    driver_text(e)
                ),
            }),
        Err(cubin_err) => {
            let ptx = compile_ptx(KERNELS_CU, cc, &[]).map_err(|detail| Error::Cuda {
                op,
                detail: format!("NVRTC ({}): {detail}", versions()),
            })?;
            ctx.load_module(ptx).map_err(|e| {
                let why =
                    if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
                        "the driver is older than NVRTC and cannot JIT-compile its PTX: update the \
                     NVIDIA driver, or use an NVRTC no newer than the driver"
                    } else {
                        "the driver cannot load the PTX"
                    };
                Error::Cuda {
                    op,
                    detail: format!(
                        "{why} ({}; no cubin for sm_{cc}: {cubin_err}): {}",
                        versions(),
                        driver_text(e)
                    ),
                }
            })
        }
    }
}

impl Backend {
    fn func(&self, name: &'static str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or(Error::Cuda {
            op: name,
            detail: "kernel missing from the compiled module".into(),
        })
    }
}

/// Data of a storage on the card, shared between clones (copy on write: see
/// [`CudaStorage::f32_mut`]).
#[derive(Clone)]
enum Data {
    F32(Arc<CudaSlice<f32>>),
    Bf16(Arc<CudaSlice<u16>>),
}

/// Device memory of a CUDA tensor (contiguous, `f32` or `bf16`). Cloning shares the buffer; the
/// first write to a shared buffer copies it ([`CudaStorage::try_clone`]), so no clone allocates
/// behind the caller's back or can fail.
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
        let geometry: Geometry = $cfg;
        let f = be.func($name)?;
        let mut b = be.stream.launch_builder(f);
        $( b.arg($arg); )*
        // SAFETY: the arguments match the kernel's parameter list in kernels.cu in number, order and
        // type, and the callers checked that every buffer covers the indices the grid touches.
        unsafe { b.launch(launch_config(geometry)) }
            .map(|_| ())
            .map_err(|e| driver_err($name, e))?;
        debug_sync(
            be,
            &format!("kernel {} (grid {:?}, block {:?})", $name, geometry.grid, geometry.block),
            $name,
        )
    }};
}

fn launch_config(g: Geometry) -> LaunchConfig {
    LaunchConfig {
        grid_dim: g.grid,
        block_dim: g.block,
        shared_mem_bytes: g.shared_bytes,
    }
}

use cuda_plan::elementwise;

fn per_row(op: &'static str, rows: usize) -> Result<Geometry> {
    cuda_plan::per_row(op, rows)
}

fn u32_of(op: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::TooLarge { op, dim: x })
}

impl CudaStorage {
    fn f32(&self, op: &'static str) -> Result<&CudaSlice<f32>> {
        match &self.data {
            Data::F32(s) => Ok(s.as_ref()),
            Data::Bf16(_) => Err(Error::DType {
                op,
                expected: DType::F32,
                got: DType::BF16,
            }),
        }
    }

    /// The `f32` buffer for writing: a buffer shared with a clone is first copied (copy on write),
    /// so the clone keeps its values.
    fn f32_mut(&mut self, op: &'static str) -> Result<&mut CudaSlice<f32>> {
        let be = self.be.clone();
        let len = self.len;
        match &mut self.data {
            Data::F32(s) => {
                if Arc::get_mut(s).is_none() {
                    let mut copy = alloc::<f32>(&be, op, len)?;
                    be.stream
                        .memcpy_dtod(s.as_ref(), &mut copy)
                        .map_err(|e| driver_err(op, e))?;
                    *s = Arc::new(copy);
                }
                Arc::get_mut(s).ok_or(Error::Cuda {
                    op,
                    detail: "a device buffer is shared while being written".into(),
                })
            }
            Data::Bf16(_) => Err(Error::DType {
                op,
                expected: DType::F32,
                got: DType::BF16,
            }),
        }
    }

    /// A copy of this storage in a new device buffer (fallible, unlike a device copy in `Clone`).
    pub(crate) fn try_clone(&self) -> Result<CudaStorage> {
        let op = "try_clone";
        let data = match &self.data {
            Data::F32(s) => {
                let mut copy = alloc::<f32>(&self.be, op, self.len)?;
                self.be
                    .stream
                    .memcpy_dtod(s.as_ref(), &mut copy)
                    .map_err(|e| driver_err(op, e))?;
                Data::F32(Arc::new(copy))
            }
            Data::Bf16(s) => {
                let mut copy = alloc::<u16>(&self.be, op, self.len)?;
                self.be
                    .stream
                    .memcpy_dtod(s.as_ref(), &mut copy)
                    .map_err(|e| driver_err(op, e))?;
                Data::Bf16(Arc::new(copy))
            }
        };
        Ok(CudaStorage {
            be: self.be.clone(),
            len: self.len,
            data,
        })
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
        let data = alloc::<f32>(&self.be, op, len)?;
        Ok(CudaStorage {
            be: self.be.clone(),
            len,
            data: Data::F32(Arc::new(data)),
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
                    .clone_dtoh(s.as_ref())
                    .map_err(|e| driver_err(op, e))?;
                v.truncate(self.len);
                CpuStorage::F32(v)
            }
            Data::Bf16(s) => {
                let mut bits = self
                    .be
                    .stream
                    .clone_dtoh(s.as_ref())
                    .map_err(|e| driver_err(op, e))?;
                bits.truncate(self.len);
                CpuStorage::Half {
                    kind: HalfKind::Bf16,
                    bits,
                }
            }
        })
    }

    /// This storage's values as `bf16`: the buffer itself when it is `bf16`, else a new one.
    fn to_bf16_slice(&self, op: &'static str) -> Result<Arc<CudaSlice<u16>>> {
        match &self.data {
            Data::Bf16(s) => Ok(s.clone()),
            Data::F32(s) => {
                let mut out = alloc::<u16>(&self.be, op, self.len)?;
                let n = self.len as u64;
                launch!(
                    &self.be,
                    "f32_to_bf16",
                    elementwise(self.len),
                    s.as_ref(),
                    &mut out,
                    &n
                )?;
                Ok(Arc::new(out))
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
        let lse = htod(&self.be, op, &meta.lse)?;
        let norm = htod(&self.be, op, &meta.norm)?;
        let targets = htod(&self.be, op, &meta.targets)?;
        let mut out = alloc::<f64>(&self.be, op, rows)?;
        let (v, r0) = (u32_of(op, vocab)?, u32_of(op, dense_row0)?);
        launch!(
            &self.be,
            "divergence_rows",
            per_row(op, rows)?,
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
                launch!(
                    &self.be,
                    "bf16_to_f32",
                    elementwise(self.len),
                    s.as_ref(),
                    dst,
                    &n
                )?;
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
            Activation::Gelu => launch!(&be, "gated_gelu_f32", cfg, g, u, &n),
        }
    }

    fn activate(&mut self, act: Activation) -> Result<()> {
        let be = self.be.clone();
        let n = self.len as u64;
        let x = self.f32_mut("activate_in_place")?;
        let which: i32 = match act {
            Activation::Silu => 0,
            Activation::GeluTanh => 1,
            Activation::Gelu => 2,
        };
        launch!(&be, "activate_f32", elementwise(n as usize), x, &n, &which)
    }

    fn log_softmax_rows(&mut self, cols: usize) -> Result<()> {
        let op = "log_softmax_last_in_place";
        if self.len == 0 || cols == 0 {
            return Ok(());
        }
        let be = self.be.clone();
        let (rows, c) = (self.len / cols, u32_of(op, cols)?);
        let x = self.f32_mut(op)?;
        launch!(&be, "log_softmax_rows_f32", per_row(op, rows)?, x, &c)
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
        // swapped (`GemmArgs`, whose arguments a test runs through a column-major GEMM).
        let g = GemmArgs::new(op, spec)?;
        let trans = |t: Trans| match t {
            Trans::N => blas_sys::cublasOperation_t::CUBLAS_OP_N,
            Trans::T => blas_sys::cublasOperation_t::CUBLAS_OP_T,
        };
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
                trans(g.transa),
                trans(g.transb),
                g.m,
                g.n,
                g.k,
                (&alpha as *const f32).cast::<c_void>(),
                b_ptr as *const c_void,
                dtype,
                g.lda,
                a_ptr as *const c_void,
                dtype,
                g.ldb,
                (&beta as *const f32).cast::<c_void>(),
                c_ptr as *mut c_void,
                c_type,
                g.ldc,
                compute,
                algo,
            )
        };
        blas_err("cublasGemmEx", status)?;
        drop(blas);
        debug_sync(
            &self.be,
            &format!("cublasGemmEx (m {m}, n {n}, k {k}, {:?})", spec.b_layout),
            op,
        )
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
        if kind == NormWeight::Centred {
            return launch!(
                &be,
                "layer_norm_f32",
                per_row(op, n)?,
                &x,
                w,
                &mut o,
                &c,
                &eps
            );
        }
        let one_plus = i32::from(kind == NormWeight::OnePlus);
        launch!(
            &be,
            "rms_norm_f32",
            per_row(op, n)?,
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
        let ids_dev = htod(&self.be, op, ids)?;
        let dd = u32_of(op, d)?;
        let cfg = per_row(op, ids.len())?;
        let dst = out.f32_mut(op)?;
        match &self.data {
            Data::F32(t) => launch!(
                &self.be,
                "embedding_f32",
                cfg,
                t.as_ref(),
                &ids_dev,
                dst,
                &dd
            )?,
            Data::Bf16(t) => launch!(
                &self.be,
                "embedding_bf16",
                cfg,
                t.as_ref(),
                &ids_dev,
                dst,
                &dd
            )?,
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
        let (cfg, per) = cuda_plan::add_scaled_rows(op, rows.len(), cols, distinct)?;
        let rows_dev = htod(&be, op, rows)?;
        let scales_dev = htod(&be, op, scales)?;
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
        let (cos, sin) = (htod(&be, op, tables.cos)?, htod(&be, op, tables.sin)?);
        let index = htod(&be, op, tables.index)?;
        let (c, half) = (u32_of(op, cols)?, u32_of(op, tables.half)?);
        let head_dim = u32_of(op, tables.head_dim)?;
        let x = self.f32_mut(op)?;
        launch!(
            &be,
            "rope_f32",
            per_row(op, rows)?,
            x,
            &cos,
            &sin,
            &index,
            &c,
            &half,
            &head_dim
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
        let (cfg, bk) = cuda_plan::attention(op, max_len, dims.heads, seq_lens.len(), hd)?;
        let be = self.be.clone();
        let starts = htod(&be, op, &starts)?;
        let lens = htod(&be, op, &lens)?;
        let (pk, pv, plen) = match prefix {
            Some((pk, pv, plen)) => {
                self.same_card(op, pk)?;
                self.same_card(op, pv)?;
                (pk.f32(op)?, pv.f32(op)?, plen)
            }
            None => (k.f32(op)?, v.f32(op)?, 0),
        };
        let plen = u32_of(op, plen)?;
        let (heads, kvh, hdu) = (
            u32_of(op, dims.heads)?,
            u32_of(op, dims.kv_heads)?,
            u32_of(op, hd)?,
        );
        let window = u32_of(op, dims.window.unwrap_or(0))?;
        let softcap = dims.softcap.unwrap_or(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use cudarc::driver::sys::CUresult;

    #[test]
    fn a_full_card_is_a_typed_error_naming_the_operation_and_size() {
        let dev = CudaDevice { ordinal: 1 };
        let e = alloc_err::<f32>(
            dev,
            "matmul",
            1 << 20,
            DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        );
        assert!(
            matches!(
                &e,
                Error::OutOfMemory { op: "matmul", device, bytes: 4_194_304, elems: 1_048_576, .. }
                    if device == "cuda:1"
            ),
            "{e}"
        );
        let e = alloc_err::<u16>(
            dev,
            "to_device",
            3,
            DriverError(CUresult::CUDA_ERROR_INVALID_VALUE),
        );
        let text = e.to_string();
        assert!(
            text.contains("to_device") && text.contains("3 elements (6 bytes)"),
            "{text}"
        );
    }

    #[test]
    fn an_asynchronous_fault_says_how_to_find_its_kernel() {
        let text = describe(DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS));
        if !debug_launches() {
            assert!(text.contains("CUDA_LAUNCH_BLOCKING=1"), "{text}");
        }
        let other = describe(DriverError(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert!(!other.contains("CUDA_LAUNCH_BLOCKING"), "{other}");
    }
}
