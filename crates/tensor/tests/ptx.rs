//! Every CUDA kernel compiles to PTX for `compute_80` (A100) and `compute_90` (H100/H200) with
//! NVRTC, on a machine without a GPU: a kernel that does not compile fails this test.
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
