//! Opening and writing whole checkpoints: a tokenizer that does not fit the embedding is refused
//! on open, conversion refuses to overwrite a checkpoint, and replacing one removes stale shards.

use std::path::Path;

use finercut_format::gguf::Value;
use finercut_format::{
    checkpoint_files, convert_gguf_to_hf, convert_gguf_to_hf_replacing, Checkpoint, DType,
    Overwrite,
};

use crate::common::{bytes_to_unicode, i32s, strings, GgufBuilder};

/// A one-block Llama GGUF with a byte-level tokenizer of 259 tokens (3 control tokens and the
/// 256 byte symbols) and an embedding of `rows` rows.
fn tiny_llama_gguf(rows: usize) -> Vec<u8> {
    let (d, ffn) = (8usize, 16usize);
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(bytes_to_unicode().iter().map(|c| c.to_string()));
    let mut types = vec![1i32; tokens.len()];
    types[..3].fill(3);
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut b = GgufBuilder::new();
    b.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.block_count", Value::U32(1))
        .meta("llama.context_length", Value::U32(64))
        .meta("llama.embedding_length", Value::U32(d as u32))
        .meta("llama.feed_forward_length", Value::U32(ffn as u32))
        .meta("llama.attention.head_count", Value::U32(2))
        .meta("llama.attention.head_count_kv", Value::U32(1))
        .meta("llama.rope.freq_base", Value::F32(10000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("llama.rope.dimension_count", Value::U32(4))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.tokens", strings(&token_refs))
        .meta("tokenizer.ggml.token_type", i32s(&types))
        .meta("tokenizer.ggml.merges", strings(&[]))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2));
    let ramp = |n: usize| (0..n).map(|i| (i % 13) as f32 * 0.1).collect::<Vec<f32>>();
    b.f32_tensor("token_embd.weight", &[rows, d], &ramp(rows * d));
    for (name, shape) in [
        ("blk.0.attn_norm.weight", vec![d]),
        ("blk.0.attn_q.weight", vec![d, d]),
        ("blk.0.attn_k.weight", vec![4, d]),
        ("blk.0.attn_v.weight", vec![4, d]),
        ("blk.0.attn_output.weight", vec![d, d]),
        ("blk.0.ffn_norm.weight", vec![d]),
        ("blk.0.ffn_gate.weight", vec![ffn, d]),
        ("blk.0.ffn_up.weight", vec![ffn, d]),
        ("blk.0.ffn_down.weight", vec![d, ffn]),
        ("output_norm.weight", vec![d]),
    ] {
        b.f32_tensor(name, &shape, &ramp(shape.iter().product()));
    }
    b.build()
}

fn write_gguf(dir: &Path, rows: usize) -> std::path::PathBuf {
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(rows)).unwrap();
    path
}

#[test]
fn a_tokenizer_beyond_the_embedding_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let fits = write_gguf(dir.path(), 259);
    let ckpt = Checkpoint::open(&fits).unwrap();
    assert_eq!(ckpt.tokenizer.id_bound(), 259);
    assert!(ckpt.unknown_config_keys.is_empty());

    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let gguf = write_gguf(&small, 200);
    let e = Checkpoint::open(&gguf).err().expect("refused").to_string();
    for want in [
        "tiny.gguf",
        "259 tokens",
        "200 rows",
        "model.embed_tokens.weight",
    ] {
        assert!(e.contains(want), "`{e}` lacks `{want}`");
    }

    // The same in a Hugging Face directory: the error names tokenizer.json.
    let hf = dir.path().join("hf");
    convert_gguf_to_hf(&fits, &hf, DType::F32).unwrap();
    Checkpoint::open(&hf).unwrap();
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    for i in 0..41 {
        vocab.insert(format!("<extra_{i}>"), serde_json::json!(259 + i));
    }
    std::fs::write(hf.join("tokenizer.json"), tok.to_string()).unwrap();
    let e = Checkpoint::open(&hf).err().expect("refused").to_string();
    for want in ["tokenizer.json", "300 tokens", "ids up to 299", "259 rows"] {
        assert!(e.contains(want), "`{e}` lacks `{want}`");
    }
}

#[test]
fn conversion_refuses_a_checkpoint_and_replacing_drops_stale_shards() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = write_gguf(dir.path(), 259);
    let out = dir.path().join("out");
    convert_gguf_to_hf(&gguf, &out, DType::F32).unwrap();
    let written = checkpoint_files(&out).unwrap();
    assert_eq!(
        written,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );

    // A second conversion into the same directory is refused and changes nothing.
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let e = convert_gguf_to_hf(&gguf, &out, DType::BF16)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("already holds a checkpoint"), "{e}");
    assert!(e.contains("model.safetensors"), "{e}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );

    // Stale shards of an earlier sharded checkpoint, whose index would win over the new file.
    std::fs::write(out.join("model.safetensors.index.json"), "{}").unwrap();
    std::fs::write(out.join("model-00001-of-00002.safetensors"), b"old").unwrap();
    std::fs::write(out.join("README.md"), "kept").unwrap();
    std::fs::write(dir.path().join("not-a-dir"), "x").unwrap();
    let e = convert_gguf_to_hf_replacing(
        &gguf,
        &dir.path().join("not-a-dir"),
        DType::F32,
        Overwrite::Replace,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let notes = convert_gguf_to_hf_replacing(&gguf, &out, DType::BF16, Overwrite::Replace).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        out.join("README.md").is_file(),
        "other files are left alone"
    );
    assert!(!out.join("model.safetensors.index.json").exists());
    assert!(!out.join("model-00001-of-00002.safetensors").exists());
    let ckpt = Checkpoint::open(&out).unwrap();
    assert_eq!(ckpt.config.torch_dtype, DType::BF16);
    assert_eq!(ckpt.files, vec![out.join("model.safetensors")]);

    // A missing directory is created; no temporary file is left anywhere.
    let fresh = dir.path().join("a/b");
    convert_gguf_to_hf(&gguf, &fresh, DType::F32).unwrap();
    assert!(fresh.join("config.json").is_file());
    for d in [&out, dir.path()] {
        for entry in std::fs::read_dir(d).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp"), "stray temporary file {name}");
        }
    }
}
