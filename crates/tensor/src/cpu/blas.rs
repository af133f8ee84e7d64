//! The CPU BLAS behind the GEMMs (`cblas_sgemm`), chosen by a cargo feature: one linked at build
//! time (`openblas-system` and `openblas-static` through `openblas-src`, `blis` and `accelerate`
//! through `blas-src`, `intel-mkl` as the system's `libmkl_rt`), OpenBLAS loaded at run time (`openblas-dynamic`: `dlopen` of
//! `libopenblas.so.0`, the pure-Rust GEMM where it is absent), or none (the pure-Rust
//! `matrixmultiply`, in `gemm.rs`).
//!
//! Loading this crate changes nothing in the process. OpenBLAS is told to run single-threaded (rayon
//! runs the tiles) at the first GEMM; the one set-up that touches the process, re-initialising a
//! `DYNAMIC_ARCH` OpenBLAS that did not recognise the CPU with better kernels (it must set
//! `OPENBLAS_CORETYPE` for the call), runs only when an executable asks for it: [`init_blas`] first
//! thing in `main`, or [`init_blas_before_main!`](crate::init_blas_before_main) for a test harness.

use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE};
use std::os::raw::c_int;
#[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
use std::os::raw::{c_char, c_void};

/// `cblas_sgemm`'s signature.
pub(crate) type SgemmFn = unsafe extern "C" fn(
    CBLAS_LAYOUT,
    CBLAS_TRANSPOSE,
    CBLAS_TRANSPOSE,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

// The linked BLAS: naming the crate makes the linker keep its library.
#[cfg(any(feature = "blis", feature = "accelerate"))]
use blas_src as _;
#[cfg(finercut_openblas_linked)]
use openblas_src as _;
#[cfg(feature = "intel-mkl")]
#[link(name = "mkl_rt")]
unsafe extern "C" {
    /// MKL's thread count for the whole process.
    fn MKL_Set_Num_Threads(n: c_int);
    /// MKL's threading layer, chosen before its first computation; returns the layer in use.
    fn MKL_Set_Threading_Layer(layer: c_int) -> c_int;
}

/// `MKL_THREADING_SEQUENTIAL` of `mkl_service.h`: no OpenMP or TBB runtime is loaded.
#[cfg(feature = "intel-mkl")]
const MKL_THREADING_SEQUENTIAL: c_int = 1;

/// The CPU BLAS that runs this process' GEMMs, as [`blas_info`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlasInfo {
    /// `"openblas"`, `"intel-mkl"`, `"blis"`, `"accelerate"`, or `"matrixmultiply"` (no BLAS: the
    /// pure-Rust GEMM).
    pub name: &'static str,
    /// OpenBLAS' kernel set in use, lower case (e.g. `"skylakex"`); empty for the others.
    pub kernels: String,
    /// How it came in: `"linked"` (a build feature), `"loaded at run time from FILE"`, `"built in"`
    /// (matrixmultiply), or for `openblas-dynamic` without OpenBLAS, `"built in (no libopenblas
    /// found at run time)"`.
    pub source: String,
    /// Whether this BLAS computes a row of a product with the same bits at every row position of
    /// a call (probed at first use): the batch-invariant products run their tiles on it only
    /// then, else on `matrixmultiply` (OpenBLAS 0.3.21's Haswell and Zen kernels are not). Always
    /// true for `matrixmultiply`.
    pub tiles_batch_invariant: bool,
}

/// A BLAS in this process, ready for GEMMs.
#[cfg_attr(
    not(any(finercut_blas_linked, finercut_blas_dynamic)),
    allow(dead_code)
)]
pub(crate) struct Blas {
    name: &'static str,
    pub(crate) sgemm: SgemmFn,
    /// OpenBLAS' `openblas_get_corename`.
    #[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
    corename: Option<unsafe extern "C" fn() -> *const c_char>,
    /// Where OpenBLAS' other symbols are looked up (`dlsym`).
    #[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
    handle: usize,
    source: String,
}

#[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
impl Blas {
    /// OpenBLAS' kernel set (lower case), e.g. `"skylakex"`; empty when unknown.
    fn core_name(&self) -> String {
        let Some(f) = self.corename else {
            return String::new();
        };
        // SAFETY: `openblas_get_corename` takes nothing and returns a static NUL-terminated string
        // (or null).
        let p = unsafe { f() };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .to_ascii_lowercase()
    }

    /// The symbol `name` of the BLAS library, or null.
    fn symbol(&self, name: &std::ffi::CStr) -> *mut c_void {
        // SAFETY: `handle` is a handle from `dlopen` (never closed) or `RTLD_DEFAULT`; `name` is
        // NUL-terminated.
        unsafe { libc::dlsym(self.handle as *mut c_void, name.as_ptr()) }
    }

    /// Tells OpenBLAS to run single-threaded: rayon splits the product into tiles of fixed size
    /// and runs one call per tile (OpenBLAS' own threading partitions by thread count).
    fn single_threaded(&self) {
        let f = self.symbol(c"openblas_set_num_threads");
        if !f.is_null() {
            // SAFETY: `void openblas_set_num_threads(int)` in every OpenBLAS.
            unsafe {
                let f: extern "C" fn(c_int) =
                    std::mem::transmute::<*mut c_void, extern "C" fn(c_int)>(f);
                f(1);
            }
        }
    }
}

#[cfg(not(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix))))]
impl Blas {
    fn core_name(&self) -> String {
        String::new()
    }
}

#[cfg(finercut_blas_linked)]
fn find() -> Option<Blas> {
    #[cfg(finercut_openblas_linked)]
    {
        unsafe extern "C" {
            fn openblas_get_corename() -> *const c_char;
        }
        let blas = Blas {
            name: "openblas",
            sgemm: cblas_sys::cblas_sgemm,
            corename: Some(openblas_get_corename),
            handle: libc::RTLD_DEFAULT as usize,
            source: "linked".to_owned(),
        };
        blas.single_threaded();
        Some(blas)
    }
    #[cfg(not(finercut_openblas_linked))]
    {
        #[cfg(feature = "intel-mkl")]
        {
            // MKL runs single-threaded (rayon runs the tiles), so its sequential layer does, which
            // needs no OpenMP runtime (`libmkl_rt`'s default, Intel's, needs `libiomp5`, which
            // an MKL installed without it lacks). A layer the host chose through
            // `MKL_THREADING_LAYER` is kept.
            if std::env::var_os("MKL_THREADING_LAYER").is_none() {
                // SAFETY: plain call without pointers, before this crate's first MKL computation.
                unsafe { MKL_Set_Threading_Layer(MKL_THREADING_SEQUENTIAL) };
            }
            // SAFETY: plain call without pointers.
            unsafe { MKL_Set_Num_Threads(1) };
        }
        let name = if cfg!(feature = "intel-mkl") {
            "intel-mkl"
        } else if cfg!(feature = "blis") {
            "blis"
        } else {
            "accelerate"
        };
        Some(Blas {
            name,
            sgemm: cblas_sys::cblas_sgemm,
            source: "linked".to_owned(),
        })
    }
}

/// The file names tried, in order, by `openblas-dynamic`.
#[cfg(all(finercut_blas_dynamic, unix))]
const OPENBLAS_FILES: &[&std::ffi::CStr] = if cfg!(target_os = "macos") {
    &[
        c"libopenblas.0.dylib",
        c"libopenblas.dylib",
        c"/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
        c"/usr/local/opt/openblas/lib/libopenblas.dylib",
    ]
} else {
    &[c"libopenblas.so.0", c"libopenblas.so"]
};

#[cfg(all(finercut_blas_dynamic, unix))]
fn find() -> Option<Blas> {
    for file in OPENBLAS_FILES {
        // SAFETY: a NUL-terminated name; loading OpenBLAS runs its initialisers, which read the
        // environment only.
        let handle = unsafe { libc::dlopen(file.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            continue;
        }
        // SAFETY: a handle from `dlopen`; NUL-terminated names.
        let (sgemm, corename) = unsafe {
            (
                libc::dlsym(handle, c"cblas_sgemm".as_ptr()),
                libc::dlsym(handle, c"openblas_get_corename".as_ptr()),
            )
        };
        if sgemm.is_null() {
            // Not a CBLAS build; the handle stays open (closing a library is never safe to assume).
            continue;
        }
        // SAFETY: `cblas_sgemm` and `openblas_get_corename` have these C signatures in every
        // OpenBLAS with CBLAS (`cblas.h`).
        let blas = unsafe {
            Blas {
                name: "openblas",
                sgemm: std::mem::transmute::<*mut c_void, SgemmFn>(sgemm),
                corename: (!corename.is_null()).then(|| {
                    std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *const c_char>(
                        corename,
                    )
                }),
                handle: handle as usize,
                source: format!(
                    "loaded at run time from {}",
                    file.to_string_lossy().into_owned()
                ),
            }
        };
        blas.single_threaded();
        return Some(blas);
    }
    None
}

#[cfg(not(any(finercut_blas_linked, all(finercut_blas_dynamic, unix))))]
fn find() -> Option<Blas> {
    None
}

static BLAS: std::sync::OnceLock<Option<Blas>> = std::sync::OnceLock::new();

/// The BLAS for GEMMs, found (linked) or loaded on first use; `None`: the pure-Rust GEMM runs.
pub(crate) fn get() -> Option<&'static Blas> {
    BLAS.get_or_init(find).as_ref()
}

/// Which BLAS runs this process' GEMMs (loading it first where it is loaded at run time).
pub fn blas_info() -> BlasInfo {
    match get() {
        Some(b) => BlasInfo {
            name: b.name,
            kernels: b.core_name(),
            source: b.source.clone(),
            tiles_batch_invariant: tiles_batch_invariant(b),
        },
        None => BlasInfo {
            name: "matrixmultiply",
            kernels: String::new(),
            source: if cfg!(finercut_blas_dynamic) {
                "built in (no libopenblas found at run time)".to_owned()
            } else {
                "built in".to_owned()
            },
            tiles_batch_invariant: true,
        },
    }
}

/// [`BlasInfo::tiles_batch_invariant`] of a BLAS in this process.
#[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
fn tiles_batch_invariant(blas: &Blas) -> bool {
    crate::cpu::gemm::tiles_on_blas(blas)
}

#[cfg(not(any(finercut_blas_linked, finercut_blas_dynamic)))]
fn tiles_batch_invariant(_: &Blas) -> bool {
    true
}

/// Sets up the CPU BLAS for this process: for an executable to call first thing in `main`, before
/// it starts any thread (or through [`init_blas_before_main!`](crate::init_blas_before_main)).
///
/// It loads OpenBLAS now where it is loaded at run time (feature `openblas-dynamic`). Where the
/// OpenBLAS in use is a `DYNAMIC_ARCH` build that did not recognise the CPU and fell back to its
/// generic SSE3 "Prescott" kernels (Debian 12's 0.3.21 on Intel Emerald Rapids: 5× slower than its
/// AVX-512 ones), and the user did not choose a kernel set with `OPENBLAS_CORETYPE`, it re-runs
/// OpenBLAS' initialisation with the best kernel set the CPU's features allow (SkylakeX, Haswell or
/// SandyBridge). [`blas_info`] reports the kernels in use. Without this call GEMMs are just as
/// correct, with the kernels OpenBLAS chose; with another BLAS, or none, it does nothing.
///
/// # Safety
///
/// The re-initialisation sets the environment variable `OPENBLAS_CORETYPE` (OpenBLAS reads its
/// choice from nowhere else) and removes it right after. No other thread may read or write the
/// environment, and no GEMM may run, during the call: call it before the program starts threads.
pub unsafe fn init_blas() {
    #[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
    if let Some(blas) = get() {
        // SAFETY: guaranteed by the caller.
        unsafe { fix_core_detection(blas) };
    }
}

/// Re-runs OpenBLAS' dynamic initialisation with [`best_core`] when it chose Prescott.
///
/// # Safety
///
/// See [`init_blas`].
#[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
unsafe fn fix_core_detection(blas: &Blas) {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() || blas.core_name() != "prescott" {
        return;
    }
    let Some(core) = best_core() else { return };
    // Only DYNAMIC_ARCH builds have these; look them up rather than link against them.
    let (quit, init) = (
        blas.symbol(c"gotoblas_dynamic_quit"),
        blas.symbol(c"gotoblas_dynamic_init"),
    );
    if quit.is_null() || init.is_null() {
        return;
    }
    // SAFETY: both symbols are `void f(void)` in OpenBLAS' dynamic.c. The caller guarantees that
    // no GEMM runs and no other thread touches the environment meanwhile; the variable is removed
    // right after.
    unsafe {
        let quit: extern "C" fn() = std::mem::transmute::<*mut c_void, extern "C" fn()>(quit);
        let init: extern "C" fn() = std::mem::transmute::<*mut c_void, extern "C" fn()>(init);
        libc::setenv(c"OPENBLAS_CORETYPE".as_ptr(), core.as_ptr(), 1);
        quit();
        init();
        libc::unsetenv(c"OPENBLAS_CORETYPE".as_ptr());
    }
    // Re-initialising may restore OpenBLAS' default thread count, and the new kernels are probed
    // afresh.
    blas.single_threaded();
    crate::cpu::gemm::reprobe_tiles();
}

/// The best OpenBLAS kernel set this CPU's features allow, where that is known.
#[cfg(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix)))]
pub(crate) fn best_core() -> Option<&'static std::ffi::CStr> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512dq")
            && has!("avx512cd")
        {
            return Some(c"SkylakeX");
        }
        if has!("avx2") && has!("fma") {
            return Some(c"Haswell");
        }
        if has!("avx") {
            return Some(c"SandyBridge");
        }
    }
    None
}

/// Calls [`init_blas`] before `main` in the executable that invokes it (Linux: from the ELF
/// `.init_array`, after the shared libraries are initialised and before `main`, while the program
/// has no thread of its own). For executables whose `main` the author does not write, such as a
/// test harness, which starts its threads before any test runs:
///
/// ```
/// // In tests/tests.rs (or under `#[cfg(test)]` in a crate root):
/// finercut_tensor::init_blas_before_main!();
/// ```
///
/// Invoke it at most once per executable, only in executables (a library that invoked it would
/// change every program that links it). Elsewhere than on Linux it does nothing; call
/// [`init_blas`] in `main` there.
#[macro_export]
macro_rules! init_blas_before_main {
    () => {
        #[cfg(target_os = "linux")]
        const _: () = {
            extern "C" fn finercut_init_blas_before_main() {
                // SAFETY: runs from `.init_array`, before `main`: the program has started no
                // thread, and nothing else reads or writes the environment. `init_blas` does
                // not panic (a panic here would abort).
                unsafe { $crate::init_blas() }
            }
            #[used]
            #[link_section = ".init_array"]
            static FINERCUT_INIT_BLAS: extern "C" fn() = finercut_init_blas_before_main;
        };
    };
}

#[cfg(all(
    test,
    any(finercut_openblas_linked, finercut_blas_dynamic),
    target_os = "linux"
))]
mod tests {
    /// This crate's unit tests invoke `init_blas_before_main!` (lib.rs): where the CPU allows better
    /// kernels than the generic Prescott ones, they are in use, and the variable set for the
    /// re-initialisation is gone.
    #[test]
    fn kernels_are_chosen_before_main() {
        if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
            return; // The user chose the kernels.
        }
        let info = super::blas_info();
        if info.name == "openblas" && super::best_core().is_some() {
            assert_ne!(info.kernels, "prescott", "{info:?}");
        }
    }
}
