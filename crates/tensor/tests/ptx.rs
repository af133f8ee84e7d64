//! Every CUDA kernel compiles with NVRTC, on a machine without a GPU: to PTX for `compute_80`
//! (A100) and `compute_90` (H100/H200), and to cubins for `sm_80` and `sm_90` with ptxas's verbose
//! report, which must show no register spills in the attention kernel and no kernel above the
//! per-block shared-memory limit. A kernel that does not compile fails this test.
//!
//! Needs NVRTC on the library path: `cargo xtask test` fetches it (`cargo xtask fetch cuda-tools`,
//! the PyPI wheel `nvidia-cuda-nvrtc-cu12==12.9.86`) and runs this target with `LD_LIBRARY_PATH`
//! and `FINERCUT_CUDA_INCLUDE` (the headers of `nvidia-cuda-runtime-cu12==12.9.79`) set.

use finercut_tensor::cuda_kernels::{
    compile_source_to_ptx, compile_to_ptx, kernel_names, KERNELS_CU,
};

fn include_paths() -> Vec<String> {
    std::env::var("FINERCUT_CUDA_INCLUDE")
        .ok()
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect()
}

fn check(compute: i32) {
    let ptx = match compile_to_ptx(compute, &include_paths()) {
        Ok(p) => p,
        Err(log) => panic!("the CUDA kernels do not compile for compute_{compute}:\n{log}"),
    };
    assert!(
        ptx.contains(&format!(".target sm_{compute}")),
        "PTX for another target:\n{}",
        &ptx[..ptx.len().min(600)]
    );
    for name in kernel_names() {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "kernel {name} missing from the PTX for compute_{compute}"
        );
        assert!(
            KERNELS_CU.contains(&format!("__global__ void {name}(")),
            "{name} is not a kernel of kernels.cu"
        );
    }
    // Every kernel of the source is one the backend knows by name.
    let defined = KERNELS_CU.matches("extern \"C\" __global__ void ").count();
    assert_eq!(
        defined,
        kernel_names().len(),
        "kernels.cu and kernel_names() differ"
    );
}

#[test]
fn kernels_compile_for_compute_80() {
    check(80);
}

#[test]
fn kernels_compile_for_compute_90() {
    check(90);
}

#[test]
fn a_broken_kernel_fails_with_the_compiler_log() {
    // The compile path the tests above use must turn a kernel that does not compile into an error
    // carrying NVRTC's log, so they cannot pass vacuously.
    let src = "extern \"C\" __global__ void broken(float* x) { x[0] = ; }";
    match compile_source_to_ptx(src, 80, &include_paths()) {
        Ok(_) => panic!("a syntax error compiled"),
        Err(log) => assert!(log.contains("error"), "{log}"),
    }
}

/// Every kernel compiled by NVRTC to a cubin for `sm_{sm}` with ptxas's verbose report: the
/// attention kernel must not spill registers, and no kernel's static shared memory plus the
/// dynamic shared memory the backend gives it may exceed the per-block limit.
fn check_cubin(sm: i32) {
    use finercut_tensor::cuda_kernels::{
        compile_cubin, parse_ptxas_info, ATTENTION_TILE_BYTES, MAX_SHARED_BYTES,
    };
    let cubin = match compile_cubin(KERNELS_CU, sm, &include_paths(), &["--ptxas-options=-v"]) {
        Ok(c) => c,
        Err(log) => panic!("the CUDA kernels do not compile to a cubin for sm_{sm}:\n{log}"),
    };
    assert!(
        cubin.image.starts_with(b"\x7fELF"),
        "sm_{sm}: the cubin is not an ELF image"
    );
    let report = parse_ptxas_info(&cubin.log);
    eprintln!("sm_{sm}: ptxas report:");
    for k in &report {
        eprintln!(
            "  {:<22} {:>3} registers, {:>5} B static smem, spills {} B stored / {} B loaded, stack {} B",
            k.name, k.registers, k.static_smem, k.spill_stores, k.spill_loads, k.stack
        );
    }
    for name in kernel_names() {
        let k = report.iter().find(|k| k.name == *name).unwrap_or_else(|| {
            panic!(
                "sm_{sm}: no ptxas report for kernel {name} (is --ptxas-options=-v honoured?):\n{}",
                cubin.log
            )
        });
        assert!(
            k.registers > 0,
            "sm_{sm}: {name}: no register count in\n{}",
            cubin.log
        );
        let dynamic = if *name == "attention_f32" {
            ATTENTION_TILE_BYTES as u32
        } else {
            0
        };
        assert!(
            k.static_smem + dynamic <= MAX_SHARED_BYTES,
            "sm_{sm}: {name} needs {} B static + {dynamic} B dynamic shared memory, above the \
             limit of {MAX_SHARED_BYTES} B",
            k.static_smem
        );
    }
    let att = report
        .iter()
        .find(|k| k.name == "attention_f32")
        .expect("attention_f32 reported above");
    assert!(
        att.spill_stores == 0 && att.spill_loads == 0,
        "sm_{sm}: attention_f32 spills registers ({} B stored, {} B loaded; {} registers)",
        att.spill_stores,
        att.spill_loads,
        att.registers
    );
}

#[test]
fn kernels_compile_to_cubins_for_sm_80_without_spills() {
    check_cubin(80);
}

#[test]
fn kernels_compile_to_cubins_for_sm_90_without_spills() {
    check_cubin(90);
}

#[test]
fn the_ptxas_report_parser_reads_spills_and_shared_memory() {
    // The parser the checks above rely on, on a log in ptxas's format, so a spill cannot go unseen.
    let log = "ptxas info    : 0 bytes gmem\n\
        ptxas info    : Compiling entry function 'attention_f32' for 'sm_90'\n\
        ptxas info    : Function properties for attention_f32\n\
        \x20   16 bytes stack frame, 24 bytes spill stores, 20 bytes spill loads\n\
        ptxas info    : Used 255 registers, 512 bytes smem, 452 bytes cmem[0]\n\
        ptxas info    : Compiling entry function 'add_f32' for 'sm_90'\n\
        ptxas info    : Function properties for add_f32\n\
        \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
        ptxas info    : Used 10 registers, 376 bytes cmem[0]\n";
    let r = finercut_tensor::cuda_kernels::parse_ptxas_info(log);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].name.as_str(), r[0].registers, r[0].static_smem),
        ("attention_f32", 255, 512)
    );
    assert_eq!(
        (r[0].spill_stores, r[0].spill_loads, r[0].stack),
        (24, 20, 16)
    );
    assert_eq!(
        (r[1].name.as_str(), r[1].registers, r[1].spill_stores),
        ("add_f32", 10, 0)
    );
}
