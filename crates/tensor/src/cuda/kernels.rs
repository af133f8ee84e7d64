//! The CUDA C source of the backend's kernels and its run-time compilation with NVRTC.

use cudarc::nvrtc::{CompileOptions, Ptx};

/// The CUDA C source of every kernel (self-contained: no headers needed).
pub const KERNELS_CU: &str = include_str!("kernels.cu");

/// Names of the kernels the backend launches (each an `extern "C" __global__` function of
/// [`KERNELS_CU`]).
pub fn kernel_names() -> &'static [&'static str] {
    &[
        "add_f32",
        "add_row_vector_f32",
        "scale_f32",
        "softcap_f32",
        "gated_silu_f32",
        "gated_gelu_tanh_f32",
        "f32_to_bf16",
        "bf16_to_f32",
        "rms_norm_f32",
        "log_softmax_rows_f32",
        "embedding_f32",
        "embedding_bf16",
        "add_scaled_rows_f32",
        "rope_f32",
        "attention_f32",
        "divergence_rows",
    ]
}

/// Compiles `src` (normally [`KERNELS_CU`]) to PTX for virtual architecture `compute_{compute}`
/// (e.g. 80, 90).
///
/// NVRTC must be loadable (checked here: `cudarc` would panic); it needs no GPU. The error is
/// NVRTC's log.
pub fn compile_ptx(src: &str, compute: i32, include_paths: &[String]) -> Result<Ptx, String> {
    // SAFETY: only tries to load the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so.12) cannot be loaded; put its directory on \
                    LD_LIBRARY_PATH"
                .into(),
        );
    }
    let arch: &'static str = match compute {
        70 => "compute_70",
        75 => "compute_75",
        80 => "compute_80",
        86 => "compute_86",
        87 => "compute_87",
        89 => "compute_89",
        90 => "compute_90",
        100 => "compute_100",
        120 => "compute_120",
        // Unknown (newer) cards run PTX of the newest architecture listed, JIT-compiled by the driver.
        c if c > 120 => "compute_120",
        c if c > 90 => "compute_90",
        c if c > 80 => "compute_80",
        _ => "compute_70",
    };
    let opts = CompileOptions {
        arch: Some(arch),
        include_paths: include_paths.to_vec(),
        name: Some("finercut_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            format!("{arch}: {}", log.to_string_lossy())
        }
        other => format!("{arch}: {other}"),
    })
}
