//! The CUDA C source of the backend's kernels and its run-time compilation with NVRTC: to a cubin
//! for the card's own architecture (what the backend loads: no PTX for the driver to JIT, so an
//! NVRTC newer than the driver still works), or to PTX; with `--ptxas-options=-v`, the cubin's
//! compile log lists each kernel's registers, spills and shared memory ([`parse_ptxas_info`]).

use cudarc::nvrtc::{sys as nvrtc_sys, CompileOptions, Ptx};
use std::ffi::CString;

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
        "gated_gelu_f32",
        "activate_f32",
        "f32_to_bf16",
        "bf16_to_f32",
        "rms_norm_f32",
        "layer_norm_f32",
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

/// The version of the NVRTC library that is loaded, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    // SAFETY: only tries to load the library.
    if !unsafe { nvrtc_sys::is_culib_present() } {
        return Err("NVRTC (libnvrtc.so.12) cannot be loaded".into());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is present; the pointers are to live integers.
    let r = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    if r == nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
        Ok((major, minor))
    } else {
        Err(format!("nvrtcVersion failed: {r:?}"))
    }
}

/// A cubin with NVRTC's compile log.
pub struct Cubin {
    /// The ELF image, for `cuModuleLoadData`.
    pub image: Vec<u8>,
    /// NVRTC's log (with `--ptxas-options=-v`, ptxas's resource report of every kernel).
    pub log: String,
}

/// Compiles `src` to a cubin for real architecture `sm_{sm}` (e.g. 80, 90), with extra NVRTC
/// `options` (e.g. `--ptxas-options=-v`). The error is NVRTC's log, or why NVRTC cannot compile for
/// that architecture.
pub fn compile_cubin(
    src: &str,
    sm: i32,
    include_paths: &[String],
    options: &[&str],
) -> Result<Cubin, String> {
    use cudarc::nvrtc::result as nvrtc;
    // SAFETY: only tries to load the library.
    if !unsafe { nvrtc_sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so.12) cannot be loaded; put its directory on LD_LIBRARY_PATH".into(),
        );
    }
    let arch = format!("sm_{sm}");
    let csrc = CString::new(src).map_err(|_| format!("{arch}: the source contains a NUL byte"))?;
    let prog = nvrtc::create_program(&csrc, Some(c"finercut_kernels.cu"))
        .map_err(|e| format!("{arch}: nvrtcCreateProgram: {e:?}"))?;
    let mut opts = vec![format!("--gpu-architecture={arch}")];
    opts.extend(include_paths.iter().map(|p| format!("--include-path={p}")));
    opts.extend(options.iter().map(|o| o.to_string()));
    // SAFETY: `prog` was created above and is destroyed once, below; `csrc` outlives it.
    let result = unsafe {
        let compiled = nvrtc::compile_program(prog, &opts);
        let log = nvrtc::get_program_log(prog)
            .map(|l| {
                let bytes: Vec<u8> = l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(format!("{arch}: {e:?}\n{log}")),
            Ok(()) => {
                let mut size = 0usize;
                let r = nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size);
                if r != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(format!(
                        "{arch}: no cubin ({r:?}): is {arch} a real architecture?"
                    ))
                } else {
                    let mut image = vec![0u8; size];
                    let r = nvrtc_sys::nvrtcGetCUBIN(prog, image.as_mut_ptr().cast());
                    if r == nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
                        Ok(Cubin { image, log })
                    } else {
                        Err(format!("{arch}: nvrtcGetCUBIN: {r:?}"))
                    }
                }
            }
        }
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    result
}

/// What ptxas reports for one kernel (`--ptxas-options=-v`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of register spill stores and loads (0 when everything fits in registers).
    pub spill_stores: u32,
    /// Bytes of register spill loads.
    pub spill_loads: u32,
    /// Bytes of stack frame per thread.
    pub stack: u32,
    /// Bytes of static shared memory (`__shared__` arrays; dynamic shared memory comes on top).
    pub static_smem: u32,
}

/// The per-kernel resource lines of ptxas's verbose log, in the order the kernels appear.
pub fn parse_ptxas_info(log: &str) -> Vec<KernelResources> {
    fn number_before(line: &str, unit: &str) -> Option<u32> {
        let at = line.find(unit)?;
        line[..at].split_whitespace().last()?.parse().ok()
    }
    let mut out: Vec<KernelResources> = Vec::new();
    let mut current: Option<usize> = None;
    for line in log.lines() {
        let quoted = line.split('\'').nth(1);
        if line.contains("Compiling entry function") || line.contains("Function properties for") {
            let name = quoted
                .map(str::to_string)
                .or_else(|| line.rsplit(' ').next().map(|s| s.trim().to_string()))
                .unwrap_or_default();
            current = match out.iter().position(|k| k.name == name) {
                Some(i) => Some(i),
                None => {
                    out.push(KernelResources {
                        name,
                        ..Default::default()
                    });
                    Some(out.len() - 1)
                }
            };
            continue;
        }
        let Some(i) = current else { continue };
        let k = &mut out[i];
        if line.contains("spill stores") {
            k.stack = number_before(line, "bytes stack frame").unwrap_or(0);
            k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("Used") && line.contains("registers") {
            k.registers = number_before(line, "registers").unwrap_or(0);
            k.static_smem = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}
