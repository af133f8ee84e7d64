//! GGUF: header and metadata parsing, alignment, corrupt files, dequantisation against plain
//! reference implementations, the Q/K un-permutation and the Hugging Face view.

use std::sync::Arc;

use finercut_format::gguf::{permute_rows, quants::dequantize_row, unpermute_rows, Value};
use finercut_format::{Bytes, GgmlType, GgufFile, GgufStore, ModelConfig, TensorSource};
use half::{bf16, f16};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{i32s, rand_f16_bytes, strings, GgufBuilder};

fn parse(bytes: Vec<u8>) -> finercut_format::Result<GgufFile> {
    GgufFile::from_bytes("test.gguf", Bytes::from_vec(bytes))
}

fn every_value_type() -> Vec<(String, Value)> {
    vec![
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-100)),
        ("t.u16".into(), Value::U16(60000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(1.5e-5)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.string".into(), Value::String("héllo ☃".into())),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(-2.25)),
        (
            "t.arr_u8".into(),
            Value::Array(0, vec![Value::U8(1), Value::U8(2)]),
        ),
        ("t.arr_str".into(), strings(&["a", "", "ccc"])),
        ("t.arr_empty".into(), Value::Array(6, vec![])),
        (
            "t.nested".into(),
            Value::Array(9, vec![i32s(&[1, -2]), Value::Array(5, vec![]), i32s(&[3])]),
        ),
        (
            "t.arr_f64".into(),
            Value::Array(12, vec![Value::F64(0.5), Value::F64(-1e300)]),
        ),
    ]
}

#[test]
fn every_metadata_type_round_trips_in_v2_and_v3() {
    for version in [2, 3] {
        let mut b = GgufBuilder::new();
        b.version = version;
        for (k, v) in every_value_type() {
            b.meta(&k, v);
        }
        let f = parse(b.build()).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.metadata(), every_value_type().as_slice());
        assert_eq!(f.get_u64("t.u16").unwrap(), Some(60000));
        assert_eq!(
            f.get_f64("t.f32").unwrap(),
            Some(1.5e-5),
            "f32 metadata reads as its shortest decimal"
        );
        assert_eq!(f.get_str("t.string").unwrap(), Some("héllo ☃"));
        assert!(
            f.get_u64("t.string").is_err(),
            "a type mismatch is an error"
        );
        assert!(f.get_u64("t.i8").is_err(), "a negative value is not a u64");
        assert_eq!(f.get_u64("missing").unwrap(), None);
    }
}

#[test]
fn version_1_and_bad_magic_are_rejected() {
    let mut b = GgufBuilder::new();
    b.version = 1;
    assert!(parse(b.build())
        .unwrap_err()
        .to_string()
        .contains("version 1"));
    let mut bytes = GgufBuilder::new().build();
    bytes[0] = b'X';
    assert!(parse(bytes)
        .unwrap_err()
        .to_string()
        .contains("not a GGUF file"));
}

#[test]
fn alignment_and_data_offsets() {
    for alignment in [32u64, 64, 256] {
        let mut b = GgufBuilder::new();
        b.alignment = alignment;
        b.meta("general.architecture", Value::String("llama".into()));
        b.f32_tensor("a", &[3], &[1.0, 2.0, 3.0]);
        b.f32_tensor("b", &[2, 2], &[4.0, 5.0, 6.0, 7.0]);
        let f = parse(b.build()).unwrap();
        assert_eq!(f.alignment(), alignment);
        assert_eq!(f.data_offset() as u64 % alignment, 0);
        assert_eq!(
            f.tensor("b").unwrap().offset,
            alignment,
            "each tensor starts on an aligned offset"
        );
        assert_eq!(f.tensor("b").unwrap().hf_shape(), vec![2, 2]);
        assert_eq!(f.dequantize("a").unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(f.dequantize("b").unwrap(), vec![4.0, 5.0, 6.0, 7.0]);
    }
    let mut b = GgufBuilder::new();
    b.meta("general.alignment", Value::U32(24));
    assert!(parse(b.build())
        .unwrap_err()
        .to_string()
        .contains("power of two"));
}

fn small_gguf() -> Vec<u8> {
    let mut b = GgufBuilder::new();
    for (k, v) in every_value_type() {
        b.meta(&k, v);
    }
    b.f32_tensor("x", &[2, 4], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let mut q = vec![0u8; 34];
    q[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
    b.raw_tensor("q", vec![32], GgmlType::Q8_0, q);
    b.build()
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_gguf();
    // The last tensor's 34 bytes are padded to 64; cutting only that padding stays valid.
    let needed = full.len() - 30;
    for len in 0..needed {
        let e = parse(full[..len].to_vec())
            .err()
            .unwrap_or_else(|| panic!("truncation to {len} accepted"));
        assert!(e.to_string().contains("test.gguf"), "{e}");
    }
    assert!(parse(full).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn corrupted_files_never_panic(pos in 0usize..100_000, byte in any::<u8>()) {
        let mut file = small_gguf();
        let at = pos % file.len();
        file[at] = byte;
        if let Ok(f) = parse(file) {
            for t in f.tensors().to_vec() {
                let _ = f.dequantize(&t.name);
            }
        }
    }

    #[test]
    fn huge_counts_are_errors_not_allocations(n in any::<u64>()) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(b'k');
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(&n.max(1).to_le_bytes());
        prop_assert!(parse(bytes).is_err());
    }
}

#[test]
fn overlapping_and_out_of_range_tensors_are_rejected() {
    let mut b = GgufBuilder::new();
    b.f32_tensor("a", &[16], &[0.0; 16]);
    b.f32_tensor("b", &[16], &[0.0; 16]);
    let mut bytes = b.build();
    // Point b's offset at a's data, then beyond the file.
    let pos = find_offset_field(&bytes, "b");
    bytes[pos..pos + 8].copy_from_slice(&32u64.to_le_bytes());
    let e = parse(bytes.clone()).unwrap_err().to_string();
    assert!(e.contains("overlaps"), "{e}");
    bytes[pos..pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = parse(bytes).unwrap_err().to_string();
    assert!(e.contains("`b`") && e.contains("out of range"), "{e}");
}

/// Byte position of the `offset` field of tensor `name`'s info (1-D tensors only).
fn find_offset_field(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap();
    at + key.len() + 4 + 8 + 4
}

// ---------------------------------------------------------------------------------------------
// Dequantisation: each ggml type against a reference written from the block layout description,
// one element at a time, on random blocks with valid f16 scales.

fn f16_of(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Reference: element `k` of one block.
fn reference(ty: GgmlType, b: &[u8], k: usize) -> f32 {
    match ty {
        // Q4_0: d, 16 bytes of nibbles; element k < 16 is the low nibble of byte k, k >= 16 the
        // high nibble of byte k - 16; value (q - 8) * d.
        GgmlType::Q4_0 => {
            let byte = b[2 + k % 16];
            let q = if k < 16 { byte & 15 } else { byte >> 4 };
            (q as f32 - 8.0) * f16_of(&b[0..])
        }
        // Q4_1: d, m, nibbles as Q4_0; value q * d + m.
        GgmlType::Q4_1 => {
            let byte = b[4 + k % 16];
            let q = if k < 16 { byte & 15 } else { byte >> 4 };
            q as f32 * f16_of(&b[0..]) + f16_of(&b[2..])
        }
        // Q5_0: d, 32 high bits (bit k belongs to element k), nibbles as Q4_0; (q - 16) * d.
        GgmlType::Q5_0 => {
            let high = u32::from_le_bytes(b[2..6].try_into().unwrap()) >> k & 1;
            let byte = b[6 + k % 16];
            let low = if k < 16 { byte & 15 } else { byte >> 4 } as u32;
            ((low | high << 4) as f32 - 16.0) * f16_of(&b[0..])
        }
        // Q5_1: d, m, 32 high bits, nibbles; q * d + m.
        GgmlType::Q5_1 => {
            let high = u32::from_le_bytes(b[4..8].try_into().unwrap()) >> k & 1;
            let byte = b[8 + k % 16];
            let low = if k < 16 { byte & 15 } else { byte >> 4 } as u32;
            (low | high << 4) as f32 * f16_of(&b[0..]) + f16_of(&b[2..])
        }
        // Q8_0: d, 32 signed bytes; q * d.
        GgmlType::Q8_0 => b[2 + k] as i8 as f32 * f16_of(&b[0..]),
        // Q4_K / Q5_K: d, dmin, 12 bytes packing eight 6-bit scales and eight 6-bit mins
        // (bytes 0-3: scales 0-3 in the low 6 bits; bytes 4-7: mins 0-3; bytes 8-11: low nibble
        // = scale 4-7 bits 0-3, high nibble = min 4-7 bits 0-3; the top 2 bits of bytes 0-3 and
        // 4-7 are bits 4-5 of scales 4-7 and mins 4-7). Quants come in 64-element chunks of 32
        // bytes: the low nibbles are the first 32 elements (sub-block 2c), the high nibbles the
        // next 32 (sub-block 2c + 1). Q5_K adds 32 bytes of high bits: bit 2c (resp. 2c + 1) of
        // byte l. Value (d * scale) * q - (dmin * min).
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let s = &b[4..16];
            let sub = k / 32;
            let (scale, min) = if sub < 4 {
                (s[sub] & 63, s[sub + 4] & 63)
            } else {
                let j = sub - 4;
                (
                    (s[8 + j] & 15) | (s[j] >> 6) << 4,
                    (s[8 + j] >> 4) | (s[4 + j] >> 6) << 4,
                )
            };
            let (chunk, within) = (k / 64, k % 64);
            let qs = if ty == GgmlType::Q4_K {
                &b[16..144]
            } else {
                &b[48..176]
            };
            let byte = qs[chunk * 32 + within % 32];
            let mut q = if within < 32 { byte & 15 } else { byte >> 4 };
            if ty == GgmlType::Q5_K {
                let qh = &b[16..48];
                q |= ((qh[within % 32] >> sub) & 1) << 4;
            }
            f16_of(&b[0..]) * scale as f32 * q as f32 - f16_of(&b[2..]) * min as f32
        }
        // Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales (one per 16
        // elements), d last. Halves of 128 elements: element w of half n takes, for quarter
        // w / 32 = 0, 1, 2, 3, the low nibble of ql[64n + l], low of ql[64n + 32 + l], high of
        // ql[64n + l], high of ql[64n + 32 + l], and bits 2·quarter of qh[32n + l] (l = w % 32);
        // value (d * scale) * (q - 32).
        GgmlType::Q6_K => {
            let (n, w) = (k / 128, k % 128);
            let (quarter, l) = (w / 32, w % 32);
            let ql = &b[64 * n..64 * n + 64];
            let low = match quarter {
                0 => ql[l] & 15,
                1 => ql[32 + l] & 15,
                2 => ql[l] >> 4,
                _ => ql[32 + l] >> 4,
            };
            let high = (b[128 + 32 * n + l] >> (2 * quarter)) & 3;
            let q = (low | high << 4) as i32 - 32;
            let scale = b[192 + k / 16] as i8;
            f16_of(&b[208..]) * scale as f32 * q as f32
        }
        GgmlType::F16 => f16_of(b),
        GgmlType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::F32 => f32::from_le_bytes(b[..4].try_into().unwrap()),
        other => panic!("no reference for {other}"),
    }
}

/// A random block whose f16 fields are finite.
fn random_block(ty: GgmlType, rng: &mut impl Rng) -> Vec<u8> {
    let (_, size) = ty.layout().unwrap();
    let mut b: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
    let f16_fields: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::F16 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        GgmlType::F32 => {
            b.copy_from_slice(&rng.gen_range(-3.0f32..3.0).to_le_bytes());
            &[]
        }
        GgmlType::BF16 => {
            b.copy_from_slice(&bf16::from_f32(rng.gen_range(-3.0f32..3.0)).to_le_bytes());
            &[]
        }
        _ => &[],
    };
    for &at in f16_fields {
        b[at..at + 2].copy_from_slice(&rand_f16_bytes(rng));
    }
    b
}

#[test]
fn dequantisers_match_the_references_bit_for_bit() {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for ty in types {
        let (block, size) = ty.layout().unwrap();
        for _ in 0..50 {
            let n_blocks = rng.gen_range(1..4);
            let blocks: Vec<Vec<u8>> = (0..n_blocks).map(|_| random_block(ty, &mut rng)).collect();
            let row: Vec<u8> = blocks.concat();
            let mut got = vec![0f32; n_blocks * block];
            dequantize_row(ty, &row, &mut got).unwrap();
            for (i, blk) in blocks.iter().enumerate() {
                assert_eq!(blk.len(), size);
                for k in 0..block {
                    let want = reference(ty, blk, k);
                    let g = got[i * block + k];
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "{ty} block {i} element {k}: {g} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn quantised_tensors_dequantise_through_the_file() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut b = GgufBuilder::new();
    // Two rows of 256 Q6_K elements: HF shape [2, 256].
    let blocks: Vec<Vec<u8>> = (0..2)
        .map(|_| random_block(GgmlType::Q6_K, &mut rng))
        .collect();
    b.raw_tensor("w", vec![256, 2], GgmlType::Q6_K, blocks.concat());
    let f = parse(b.build()).unwrap();
    let v = f.dequantize("w").unwrap();
    assert_eq!(v.len(), 512);
    for k in 0..512 {
        assert_eq!(
            v[k].to_bits(),
            reference(GgmlType::Q6_K, &blocks[k / 256], k % 256).to_bits()
        );
    }
    // A row length that is not a multiple of the block size is rejected at open.
    let mut b = GgufBuilder::new();
    b.raw_tensor("w", vec![100, 2], GgmlType::Q4_K, vec![0; 288]);
    assert!(parse(b.build())
        .unwrap_err()
        .to_string()
        .contains("block size"));
}

// ---------------------------------------------------------------------------------------------
// Q/K permutation.

/// `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols)`, by index.
fn numpy_permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let half = rows / n_head / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for t in 0..2 {
            for i in 0..half {
                // Source index (h, t, i) in shape (n_head, 2, half); destination (h, i, t) in (n_head, half, 2).
                let src = (h * 2 + t) * half + i;
                let dst = (h * half + i) * 2 + t;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn permute_matches_the_formula_and_unpermute_inverts_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (n_head, head_dim, cols) in [(1, 2, 1), (2, 4, 3), (9, 64, 5), (3, 8, 1)] {
        let rows = n_head * head_dim;
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen()).collect();
        let p = permute_rows(&w, rows, cols, n_head);
        assert_eq!(p, numpy_permute(&w, rows, cols, n_head));
        assert_eq!(unpermute_rows(&p, rows, cols, n_head), w);
        if head_dim > 2 {
            assert_ne!(p, w);
        }
    }
}

fn llama_gguf(q: &[f32], k: &[f32], with_output: bool) -> Vec<u8> {
    let (d, heads, kv, hd) = (8, 2, 1, 4);
    let mut b = GgufBuilder::new();
    b.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.block_count", Value::U32(1))
        .meta("llama.context_length", Value::U32(64))
        .meta("llama.embedding_length", Value::U32(d as u32))
        .meta("llama.feed_forward_length", Value::U32(16))
        .meta("llama.attention.head_count", Value::U32(heads as u32))
        .meta("llama.attention.head_count_kv", Value::U32(kv as u32))
        .meta("llama.rope.freq_base", Value::F32(100000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("llama.rope.dimension_count", Value::U32(hd as u32));
    let seq = |n: usize, s: f32| (0..n).map(|i| i as f32 * s).collect::<Vec<f32>>();
    b.f32_tensor("token_embd.weight", &[10, d], &seq(10 * d, 0.1));
    b.f32_tensor("blk.0.attn_norm.weight", &[d], &seq(d, 1.0));
    b.f32_tensor(
        "blk.0.attn_q.weight",
        &[heads * hd, d],
        &permute_rows(q, heads * hd, d, heads),
    );
    b.f32_tensor(
        "blk.0.attn_k.weight",
        &[kv * hd, d],
        &permute_rows(k, kv * hd, d, kv),
    );
    b.f32_tensor("blk.0.attn_v.weight", &[kv * hd, d], &seq(kv * hd * d, 0.5));
    b.f32_tensor(
        "blk.0.attn_output.weight",
        &[d, heads * hd],
        &seq(d * heads * hd, 0.25),
    );
    b.f32_tensor("blk.0.ffn_norm.weight", &[d], &seq(d, 2.0));
    b.f32_tensor("blk.0.ffn_gate.weight", &[16, d], &seq(16 * d, 1.0));
    b.f32_tensor("blk.0.ffn_up.weight", &[16, d], &seq(16 * d, 2.0));
    b.f32_tensor("blk.0.ffn_down.weight", &[d, 16], &seq(16 * d, 3.0));
    b.f32_tensor("output_norm.weight", &[d], &seq(d, 1.0));
    if with_output {
        b.f32_tensor("output.weight", &[10, d], &seq(10 * d, 0.2));
    }
    b.f32_tensor("rope_freqs_unused.weight", &[2], &[1.0, 1.0]);
    b.build()
}

#[test]
fn llama_store_restores_names_shapes_and_rows() {
    let q: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let k: Vec<f32> = (0..32).map(|i| 100.0 + i as f32).collect();
    let file = Arc::new(parse(llama_gguf(&q, &k, false)).unwrap());
    let store = GgufStore::new(file.clone()).unwrap();
    let names = store.names();
    assert_eq!(names[0], "model.embed_tokens.weight");
    assert!(names.contains(&"model.layers.0.post_attention_layernorm.weight".to_string()));
    assert!(names.contains(&"model.layers.0.mlp.down_proj.weight".to_string()));
    assert!(!store.contains("lm_head.weight"));
    assert_eq!(store.unmapped(), &["rope_freqs_unused.weight".to_string()]);

    let tq = store.get("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(tq.shape, vec![8, 8]);
    assert_eq!(
        tq.to_f32_vec().unwrap(),
        q,
        "q rows back in Hugging Face order"
    );
    let tk = store.get("model.layers.0.self_attn.k_proj.weight").unwrap();
    assert_eq!(tk.shape, vec![4, 8]);
    assert_eq!(
        tk.to_f32_vec().unwrap(),
        k,
        "k un-permuted with the KV head count"
    );
    let down = store.get("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(down.shape, vec![8, 16]);
    assert_eq!(
        store.gguf_name("model.norm.weight"),
        Some("output_norm.weight")
    );

    let c = ModelConfig::from_gguf(&file).unwrap();
    assert!(
        c.tie_word_embeddings,
        "no output.weight means tied embeddings"
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (2, 1, 4)
    );
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.vocab_size, 10);

    let untied = parse(llama_gguf(&q, &k, true)).unwrap();
    assert!(!ModelConfig::from_gguf(&untied).unwrap().tie_word_embeddings);
    assert!(GgufStore::new(Arc::new(untied))
        .unwrap()
        .contains("lm_head.weight"));
}

#[test]
fn gemma3_store_keeps_rows_and_removes_the_norm_offset() {
    let mut b = GgufBuilder::new();
    b.meta("general.architecture", Value::String("gemma3".into()))
        .meta("gemma3.block_count", Value::U32(6))
        .meta("gemma3.context_length", Value::U32(32768))
        .meta("gemma3.embedding_length", Value::U32(8))
        .meta("gemma3.feed_forward_length", Value::U32(16))
        .meta("gemma3.attention.head_count", Value::U32(2))
        .meta("gemma3.attention.head_count_kv", Value::U32(1))
        .meta("gemma3.attention.key_length", Value::U32(4))
        .meta("gemma3.attention.value_length", Value::U32(4))
        .meta("gemma3.attention.sliding_window", Value::U32(512))
        .meta("gemma3.rope.freq_base", Value::F32(1_000_000.0))
        .meta("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
    let q: Vec<f32> = (0..64).map(|i| i as f32).collect();
    b.f32_tensor("token_embd.weight", &[10, 8], &[0.5; 80]);
    b.f32_tensor("blk.0.attn_q.weight", &[8, 8], &q);
    b.f32_tensor("blk.0.attn_q_norm.weight", &[4], &[1.0, 1.5, 0.5, 2.0]);
    b.f32_tensor("blk.0.ffn_norm.weight", &[8], &[1.25; 8]);
    b.f32_tensor("blk.0.post_ffw_norm.weight", &[8], &[3.0; 8]);
    b.f32_tensor("blk.0.post_attention_norm.weight", &[8], &[0.0; 8]);
    let file = Arc::new(parse(b.build()).unwrap());
    let store = GgufStore::new(file.clone()).unwrap();
    assert_eq!(
        store
            .get("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        q
    );
    assert_eq!(
        store
            .get("model.layers.0.self_attn.q_norm.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        vec![0.0, 0.5, -0.5, 1.0]
    );
    assert_eq!(
        store
            .get("model.layers.0.pre_feedforward_layernorm.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        vec![0.25; 8]
    );
    assert_eq!(
        store
            .get("model.layers.0.post_feedforward_layernorm.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        vec![2.0; 8]
    );
    assert_eq!(
        store
            .get("model.layers.0.post_attention_layernorm.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        vec![-1.0; 8]
    );
    assert_eq!(
        store
            .get("model.embed_tokens.weight")
            .unwrap()
            .to_f32_vec()
            .unwrap(),
        vec![0.5; 80]
    );

    let c = ModelConfig::from_gguf(&file).unwrap();
    assert_eq!(c.architecture, finercut_format::Architecture::Gemma3);
    assert_eq!(c.head_dim, 4);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.sliding_window, Some(512));
    use finercut_format::LayerAttention::{Full, Sliding};
    assert_eq!(
        c.layer_types,
        vec![Sliding, Sliding, Sliding, Sliding, Sliding, Full]
    );
    let g = c.gemma3().unwrap();
    assert_eq!(g.query_pre_attn_scalar, 4.0);
    assert_eq!(g.rope_local_base_freq, 10000.0);
    assert_eq!(c.rope_theta, 1_000_000.0);

    // A per-layer pattern in the metadata wins over the default period.
    let mut b2 = GgufBuilder::new();
    b2.meta = b.meta.clone();
    b2.meta.push((
        "gemma3.attention.sliding_window_pattern".into(),
        Value::Array(
            7,
            [true, false, true, true, true, false]
                .map(Value::Bool)
                .to_vec(),
        ),
    ));
    b2.f32_tensor("token_embd.weight", &[10, 8], &[0.5; 80]);
    let c2 = ModelConfig::from_gguf(&parse(b2.build()).unwrap()).unwrap();
    assert_eq!(
        c2.layer_types,
        vec![Sliding, Full, Sliding, Sliding, Sliding, Full]
    );
}

#[test]
fn mixtral_experts_are_split() {
    let (d, ff, e) = (4usize, 6usize, 3usize);
    let mut b = GgufBuilder::new();
    b.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.attention.head_count", Value::U32(2))
        .meta("llama.expert_count", Value::U32(e as u32));
    let gate: Vec<f32> = (0..e * ff * d).map(|i| i as f32).collect();
    b.f32_tensor("blk.0.ffn_gate_exps.weight", &[e, ff, d], &gate);
    b.f32_tensor("blk.0.ffn_down_exps.weight", &[e, d, ff], &gate);
    b.f32_tensor("blk.0.ffn_gate_inp.weight", &[e, d], &vec![0.0; e * d]);
    let store = GgufStore::new(Arc::new(parse(b.build()).unwrap())).unwrap();
    assert!(store.contains("model.layers.0.block_sparse_moe.gate.weight"));
    for x in 0..e {
        let w1 = store
            .get(&format!(
                "model.layers.0.block_sparse_moe.experts.{x}.w1.weight"
            ))
            .unwrap();
        assert_eq!(w1.shape, vec![ff, d]);
        assert_eq!(
            w1.to_f32_vec().unwrap(),
            gate[x * ff * d..(x + 1) * ff * d].to_vec()
        );
        let w2 = store
            .get(&format!(
                "model.layers.0.block_sparse_moe.experts.{x}.w2.weight"
            ))
            .unwrap();
        assert_eq!(w2.shape, vec![d, ff]);
    }
}
