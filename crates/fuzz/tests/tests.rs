//! A short fuzz campaign (the full one is `cargo xtask fuzz`), and regression tests for what
//! campaigns found, measured with the counting allocator.

#![allow(clippy::unwrap_used)]

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

use std::time::Duration;

use finercut_fuzz::{alloc, run, CountingAlloc, Options};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn short_campaign_finds_nothing() {
    let crash_dir = tempfile::tempdir().unwrap();
    let real = finercut_format::cache::default_model_path();
    let opts = Options {
        cases: 2_000,
        seed: 7,
        jobs: 2,
        max_alloc: 16 << 20,
        case_time: Duration::from_secs(20),
        hang_time: Duration::from_secs(120),
        crash_dir: crash_dir.path().to_path_buf(),
        real_gguf: real.is_file().then_some(real),
        only: None,
        save_all: false,
    };
    let report = run(&opts).unwrap();
    println!("{report}");
    assert_eq!(report.cases, 2_000);
    assert!(report.failures.is_empty(), "{report}");
    // Every target ran and accepted some inputs, so the mutations do not only produce garbage.
    for (name, counts) in &report.targets {
        assert!(
            counts.accepted > 0,
            "no {name} input was accepted: {report}"
        );
    }
}

/// The start of a GGUF v3 file: magic, version, tensor count, metadata count.
fn gguf_header(tensors: u64, entries: u64) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&tensors.to_le_bytes());
    bytes.extend_from_slice(&entries.to_le_bytes());
    bytes
}

/// Found by review of the campaign's allocation figures: a GGUF array count is checked against the
/// bytes left in the file (one byte per `u8` element), but was reserved in full as parsed values
/// (32 bytes each) before the first element was read, so a corrupt count allocated 32 times the
/// file's size before failing.
#[test]
fn a_corrupt_gguf_count_does_not_reserve_memory_in_proportion() {
    let n: usize = 4 << 20;
    let mut bytes = gguf_header(0, 1);
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.push(b'k');
    bytes.extend_from_slice(&9u32.to_le_bytes()); // array
    bytes.extend_from_slice(&7u32.to_le_bytes()); // of bools
    bytes.extend_from_slice(&(n as u64).to_le_bytes());
    bytes.resize(bytes.len() + n, 2); // 2 is not a bool: the first element fails
    let data = finercut_format::Bytes::from_vec(bytes);
    alloc::start_case(0);
    let e = finercut_format::GgufFile::from_bytes("count.gguf", data)
        .err()
        .unwrap()
        .to_string();
    let largest = alloc::largest_in_case();
    assert!(e.contains("count.gguf") && e.contains("bool"), "{e}");
    assert!(
        largest < 1 << 20,
        "{largest} bytes allocated for a {n}-byte file"
    );
}

/// A header that claims 2^60 tensors (or metadata entries) fails before anything is allocated
/// for them.
#[test]
fn a_gguf_header_claiming_2_pow_60_entries_fails_before_allocating() {
    for field in [8, 16] {
        let mut bytes = gguf_header(0, 0);
        bytes.resize(4096, 0);
        bytes[field..field + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let data = finercut_format::Bytes::from_vec(bytes);
        alloc::start_case(0);
        let e = finercut_format::GgufFile::from_bytes("claims.gguf", data)
            .err()
            .unwrap()
            .to_string();
        let largest = alloc::largest_in_case();
        assert!(
            e.contains("claims.gguf") && e.contains("larger than the rest"),
            "{e}"
        );
        assert!(largest < 4096, "{largest} bytes allocated");
    }
}
