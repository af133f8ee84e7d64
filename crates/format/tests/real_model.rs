//! The real SmolLM2-135M-Instruct GGUF (fetched by `cargo xtask fetch`; an absent file fails the tests
//! unless `FINERCUT_SKIP_DOWNLOADED_TESTS` is set):
//! configuration, tokenizer against the golden ids, conversion to safetensors bit for bit.

use std::path::{Path, PathBuf};

use finercut_format::{
    cache, convert_gguf_to_hf, Architecture, Checkpoint, DType, GgufFile, GgufStore, ModelConfig,
    RopeScaling, SafetensorsStore, TensorSource, Tokenizer,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::repo_data_dir;

const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The downloaded GGUF; `None` only when it is absent and `FINERCUT_SKIP_DOWNLOADED_TESTS` is set.
fn model() -> Option<PathBuf> {
    cache::require_downloaded(cache::default_model_path())
}

fn golden() -> Value {
    let path = repo_data_dir().join("golden/smollm2_tokens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn config_from_gguf_matches_the_design() {
    let Some(path) = model() else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.tensors().len(), 272);
    let c = ModelConfig::from_gguf(&file).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.num_hidden_layers, 30);
    assert_eq!(c.hidden_size, 576);
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (9, 3, 64)
    );
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.vocab_size, 49152);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.rope_scaling, RopeScaling::None);
    assert_eq!(
        (c.bos_token_id, c.eos_token_id, c.pad_token_id),
        (Some(1), Some(2), Some(2))
    );
    // The same model as the Hugging Face config.json describes it.
    let hf = ModelConfig::from_json_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/smollm2-135m-instruct.json"),
    )
    .unwrap();
    assert_eq!(
        ModelConfig {
            torch_dtype: hf.torch_dtype,
            ..c
        },
        hf
    );
}

#[test]
fn tokenizer_matches_the_golden_ids() {
    let Some(path) = model() else { return };
    let golden = golden();
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert!(!tok.add_bos(), "the GGUF says add_bos_token = false");
    assert_eq!(tok.vocab_size(), 49152);
    for p in golden["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let want = u32s(&p["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), want, "{}", p["name"]);
        assert_eq!(tok.encode(text, true).unwrap(), want, "no BOS is added");
        assert_eq!(tok.decode(&want).unwrap(), text);
    }

    let wiki = &golden["wiki"];
    let wiki_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/data/wikitext-2-raw/wiki.test.raw");
    let text = std::fs::read_to_string(wiki_path).unwrap();
    assert_eq!(
        text.chars().count() as u64,
        wiki["n_chars"].as_u64().unwrap(),
        "read with CRLF kept"
    );
    // The first 2048 ids (identical under both pre-tokenisations).
    let first = u32s(&wiki["first_2048_ids"]);
    let prefix: String = text.chars().take(20_000).collect();
    let ids = tok.encode(&prefix, false).unwrap();
    assert_eq!(&ids[..2048], first.as_slice());

    // Where transformers' plain GPT-2 split and llama.cpp's `smollm` split differ, this tokenizer
    // follows the GGUF's `pre = "smollm"`.
    for d in wiki["wiki_tokenization_differences"].as_array().unwrap() {
        let context = d["context"].as_str().unwrap();
        let got = tok.encode(context, false).unwrap();
        let smollm = u32s(&d["smollm_ids"]);
        let hf = u32s(&d["transformers_gguf_ids"]);
        assert!(
            got.windows(smollm.len()).any(|w| w == smollm.as_slice()),
            "{context:?}: {got:?} lacks {smollm:?}"
        );
        assert!(
            !got.windows(hf.len()).any(|w| w == hf.as_slice()),
            "{context:?}: {got:?} has {hf:?}"
        );
    }

    // The whole file: count and hash of the ids as int32 little-endian.
    let all = tok.encode(&text, false).unwrap();
    assert_eq!(
        all.len() as u64,
        wiki["n_tokens_smollm_pretok"].as_u64().unwrap()
    );
    let mut h = Sha256::new();
    for id in &all {
        h.update((*id as i32).to_le_bytes());
    }
    assert_eq!(
        hex::encode(h.finalize()),
        wiki["ids_int32le_sha256_smollm_pretok"].as_str().unwrap()
    );
}

#[test]
fn conversion_is_bit_identical_and_reopens_as_a_checkpoint() {
    let Some(path) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    convert_gguf_to_hf(&path, dir.path(), DType::F32).unwrap();
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let gguf = GgufStore::open(&path).unwrap();
    let st = SafetensorsStore::open(dir.path()).unwrap();
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    assert_eq!(st.names(), gguf.names());
    assert_eq!(st.names().len(), 272);
    for name in gguf.names() {
        let a = gguf.get(&name).unwrap();
        let b = st.get(&name).unwrap();
        assert_eq!(a.shape, b.shape, "{name}");
        assert_eq!(b.dtype, DType::F32);
        assert!(*a.data == *b.data, "{name} differs");
    }
    let q = st.get("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q.shape, vec![576, 576]);
    assert_eq!(
        st.get("model.layers.0.mlp.down_proj.weight").unwrap().shape,
        vec![576, 1536]
    );

    // The directory is a checkpoint equal to the GGUF one (same config, same tokenisation).
    let from_gguf = Checkpoint::open(&path).unwrap();
    let from_dir = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(from_dir.config, from_gguf.config);
    let text = "<|im_start|>user\nWhat is 12 + 35? Réponds en français.<|im_end|>\n";
    assert_eq!(
        from_dir.tokenizer.encode(text, false).unwrap(),
        from_gguf.tokenizer.encode(text, false).unwrap()
    );
    assert_eq!(
        from_dir.tokenizer.encode(text, true).unwrap(),
        from_gguf.tokenizer.encode(text, true).unwrap()
    );
    assert_eq!(
        (from_dir.tokenizer.bos_id(), from_dir.tokenizer.eos_id()),
        (Some(1), Some(2))
    );
    assert_eq!(from_gguf.sha256().unwrap(), GGUF_SHA256);
    assert_eq!(from_dir.files, vec![dir.path().join("model.safetensors")]);

    // BF16 output is the F32 weights rounded.
    let dir16 = tempfile::tempdir().unwrap();
    convert_gguf_to_hf(&path, dir16.path(), DType::BF16).unwrap();
    let st16 = SafetensorsStore::open(dir16.path()).unwrap();
    let n = "model.layers.3.self_attn.k_proj.weight";
    let b = st16.get(n).unwrap();
    assert_eq!(b.dtype, DType::BF16);
    let want: Vec<f32> = gguf
        .get_f32(n)
        .unwrap()
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    assert_eq!(b.to_f32_vec().unwrap(), want);
    assert_eq!(
        ModelConfig::from_json_file(&dir16.path().join("config.json"))
            .unwrap()
            .torch_dtype,
        DType::BF16
    );
}
