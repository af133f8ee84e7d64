//! config.json parsing for each family, defaults, validation, and `to_hf_json` round trips.

use std::path::PathBuf;

use finercut_format::{
    Activation, ArchParams, Architecture, DType, LayerAttention, ModelConfig, RopeScaling,
    SUPPORTED_MODEL_TYPES,
};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> ModelConfig {
    ModelConfig::from_json_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every fixture survives `to_hf_json` → parse unchanged.
fn check_round_trip(c: &ModelConfig) {
    let j = c.to_hf_json();
    let back = ModelConfig::from_json_str(&j.to_string(), "round trip").unwrap();
    assert_eq!(&back, c, "{j:#}");
}

#[test]
fn llama_2_7b() {
    let c = load("llama-2-7b.json");
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (32000, 4096, 11008)
    );
    assert_eq!(
        (
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim
        ),
        (32, 32, 32, 128)
    );
    assert_eq!(c.rope_theta, 10000.0, "default rope_theta");
    assert_eq!(c.rope_scaling, RopeScaling::None);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.max_position_embeddings, 4096);
    assert!(!c.tie_word_embeddings);
    assert!(!c.attention_bias);
    assert_eq!((c.bos_token_id, c.eos_token_id), (Some(1), Some(2)));
    assert_eq!(c.torch_dtype, DType::F16);
    assert_eq!(c.arch, ArchParams::Dense);
    assert_eq!(c.sliding_window, None);
    check_round_trip(&c);
}

#[test]
fn llama_3_1_8b_rope_scaling() {
    let c = load("llama-3.1-8b.json");
    assert_eq!(c.num_key_value_heads, 8);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        }
    );
    assert_eq!(c.torch_dtype, DType::BF16);
    check_round_trip(&c);
}

#[test]
fn mistral_7b_sliding_window() {
    let c = load("mistral-7b-v0.1.json");
    assert_eq!(c.architecture, Architecture::Mistral);
    assert_eq!(c.sliding_window, Some(4096));
    assert!(c.layer_types.iter().all(|t| *t == LayerAttention::Sliding));
    assert_eq!(c.head_dim, 128);
    check_round_trip(&c);
}

#[test]
fn qwen2_7b_biases() {
    let c = load("qwen2-7b.json");
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert!(c.attention_bias, "Qwen2 always has q/k/v biases");
    assert!(!c.o_proj_bias());
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.sliding_window, None, "use_sliding_window is false");
    check_round_trip(&c);
}

#[test]
fn mixtral_experts() {
    let c = load("mixtral-8x7b-v0.1.json");
    assert_eq!(c.architecture, Architecture::Mixtral);
    let m = c.moe().unwrap();
    assert_eq!((m.num_local_experts, m.num_experts_per_tok), (8, 2));
    assert_eq!(c.sliding_window, None);
    check_round_trip(&c);
}

#[test]
fn gemma_3_270m() {
    let c = load("gemma-3-270m.json");
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers
        ),
        (262144, 640, 2048, 18)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (4, 1, 256)
    );
    assert_eq!(c.hidden_act, Activation::GeluTanh);
    assert!(c.tie_word_embeddings, "Gemma ties by default");
    assert_eq!(c.sliding_window, Some(512));
    let globals: Vec<usize> = (0..18)
        .filter(|&i| c.layer_types[i] == LayerAttention::Full)
        .collect();
    assert_eq!(globals, vec![5, 11, 17]);
    let g = c.gemma3().unwrap();
    assert_eq!(g.query_pre_attn_scalar, 256.0);
    assert_eq!(g.rope_local_base_freq, 10000.0);
    assert_eq!(g.final_logit_softcapping, None);
    assert_eq!(g.attn_logit_softcapping, None);
    assert_eq!(
        (c.bos_token_id, c.eos_token_id, c.pad_token_id),
        (Some(2), Some(1), Some(0))
    );
    check_round_trip(&c);

    // The older spelling without layer_types, and the multimodal wrapper, give the same model.
    let mut j: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gemma-3-270m.json")).unwrap())
            .unwrap();
    j.as_object_mut().unwrap().remove("layer_types");
    let by_pattern = ModelConfig::from_json_str(&j.to_string(), "pattern").unwrap();
    assert_eq!(by_pattern, c);
    let wrapped = json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": j});
    assert_eq!(
        ModelConfig::from_json_str(&wrapped.to_string(), "wrapped").unwrap(),
        c
    );
}

#[test]
fn smollm2_defaults_and_gemma_model_type_alias() {
    let c = load("smollm2-135m-instruct.json");
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (9, 3, 64)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    let mut j: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gemma-3-270m.json")).unwrap())
            .unwrap();
    j["model_type"] = json!("gemma3");
    assert_eq!(
        ModelConfig::from_json_str(&j.to_string(), "x")
            .unwrap()
            .architecture,
        Architecture::Gemma3
    );
}

#[test]
fn transformers_5_rope_parameters() {
    let mut j: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama-3.1-8b.json")).unwrap())
            .unwrap();
    let obj = j.as_object_mut().unwrap();
    let mut params = obj.remove("rope_scaling").unwrap();
    params["rope_theta"] = obj.remove("rope_theta").unwrap();
    obj.insert("rope_parameters".into(), params);
    assert_eq!(
        ModelConfig::from_json_str(&j.to_string(), "v5").unwrap(),
        load("llama-3.1-8b.json")
    );

    let mut g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gemma-3-270m.json")).unwrap())
            .unwrap();
    let obj = g.as_object_mut().unwrap();
    obj.remove("rope_theta");
    obj.remove("rope_local_base_freq");
    obj.remove("rope_scaling");
    obj.insert(
        "rope_parameters".into(),
        json!({"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
    );
    assert_eq!(
        ModelConfig::from_json_str(&g.to_string(), "v5").unwrap(),
        load("gemma-3-270m.json")
    );
}

#[test]
fn eos_lists_and_negative_ids() {
    let mut j: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama-3.1-8b.json")).unwrap())
            .unwrap();
    j["eos_token_id"] = json!([128001, 128008, 128009]);
    j["pad_token_id"] = json!(-1);
    let c = ModelConfig::from_json_str(&j.to_string(), "x").unwrap();
    assert_eq!(c.eos_token_id, Some(128001));
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    assert_eq!(c.pad_token_id, None);
    check_round_trip(&c);
}

#[test]
fn unknown_model_type_lists_the_supported_ones() {
    let e = ModelConfig::from_json_str(r#"{"model_type": "gpt2", "vocab_size": 5}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cfg.json") && e.contains("`gpt2`"), "{e}");
    for t in SUPPORTED_MODEL_TYPES {
        assert!(e.contains(t), "{e} lacks {t}");
    }
    let e = ModelConfig::from_json_str(r#"{"vocab_size": 5}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_type") && e.contains("gemma3_text"), "{e}");
}

fn with(base: &str, patch: Value) -> String {
    let mut j: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(base)).unwrap()).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        j[k] = v.clone();
    }
    j.to_string()
}

#[test]
fn inconsistent_values_are_rejected() {
    let cases = [
        (
            "llama-2-7b.json",
            json!({"num_key_value_heads": 5}),
            "not a multiple of num_key_value_heads",
        ),
        (
            "llama-2-7b.json",
            json!({"num_attention_heads": 30}),
            "not a multiple of num_attention_heads",
        ),
        (
            "llama-2-7b.json",
            json!({"hidden_size": 0}),
            "`hidden_size` must be positive",
        ),
        (
            "llama-2-7b.json",
            json!({"num_hidden_layers": null}),
            "`num_hidden_layers` is missing",
        ),
        ("llama-2-7b.json", json!({"head_dim": 3}), "must be even"),
        (
            "llama-2-7b.json",
            json!({"rms_norm_eps": -1.0}),
            "rms_norm_eps",
        ),
        ("llama-2-7b.json", json!({"rope_theta": 0.0}), "rope_theta"),
        (
            "llama-2-7b.json",
            json!({"eos_token_id": 32000}),
            "outside the vocabulary",
        ),
        (
            "llama-2-7b.json",
            json!({"hidden_act": "relu"}),
            "hidden_act `relu`",
        ),
        (
            "llama-2-7b.json",
            json!({"hidden_size": "big"}),
            "invalid config.json",
        ),
        ("llama-2-7b.json", json!({"mlp_bias": true}), "mlp_bias"),
        (
            "llama-2-7b.json",
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            "yarn",
        ),
        (
            "llama-2-7b.json",
            json!({"rope_scaling": {"rope_type": "linear"}}),
            "`factor`",
        ),
        (
            "llama-2-7b.json",
            json!({"torch_dtype": "int8"}),
            "torch_dtype `int8`",
        ),
        (
            "llama-3.1-8b.json",
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                    "high_freq_factor": 1.0, "original_max_position_embeddings": 8192}}),
            "rope_scaling",
        ),
        (
            "mixtral-8x7b-v0.1.json",
            json!({"num_experts_per_tok": 9}),
            "exceeds num_local_experts",
        ),
        (
            "gemma-3-270m.json",
            json!({"layer_types": ["full_attention"]}),
            "layer_types has 1 entries for 18 layers",
        ),
        (
            "gemma-3-270m.json",
            json!({"layer_types": vec!["global"; 18]}),
            "unknown `global`",
        ),
    ];
    for (base, patch, want) in cases {
        refused(base, patch, &[want, base]);
    }
}

/// Asserts that `base` patched with `patch` is refused with an error containing every `want`.
fn refused(base: &str, patch: Value, want: &[&str]) {
    let e = ModelConfig::from_json_str(&with(base, patch.clone()), base)
        .err()
        .unwrap_or_else(|| panic!("{base} with {patch} accepted"))
        .to_string();
    for w in want {
        assert!(e.contains(w), "{base} {patch}: `{e}` lacks `{w}`");
    }
}

#[test]
fn hf_json_has_what_transformers_needs() {
    let c = load("smollm2-135m-instruct.json");
    let j = c.to_hf_json();
    assert_eq!(j["architectures"], json!(["LlamaForCausalLM"]));
    assert_eq!(j["model_type"], "llama");
    assert_eq!(j["torch_dtype"], "bfloat16");
    assert_eq!(j["hidden_act"], "silu");
    assert_eq!(j["tie_word_embeddings"], true);
    assert_eq!(j["rms_norm_eps"], 1e-5);
    assert_eq!(j["head_dim"], 64);
    let g = load("gemma-3-270m.json").to_hf_json();
    assert_eq!(g["architectures"], json!(["Gemma3ForCausalLM"]));
    assert_eq!(g["model_type"], "gemma3_text");
    assert_eq!(g["sliding_window_pattern"], 6);
    assert_eq!(g["hidden_activation"], "gelu_pytorch_tanh");
}

#[test]
fn qwen3_8b_qk_norm_family() {
    let c = load("qwen3-8b.json");
    assert_eq!(c.architecture, Architecture::Qwen3);
    // head_dim 128 with 32 heads of a 4096-wide model; no biases, not even on o_proj.
    assert_eq!((c.head_dim, c.num_key_value_heads), (128, 8));
    assert!(!c.attention_bias && !c.o_proj_bias());
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.layer_types, vec![LayerAttention::Full; 36]);
    check_round_trip(&c);
    // transformers' Qwen3Config: head_dim defaults to 128 whatever the width, and q/k/v/o biases
    // follow `attention_bias`; sliding windows need `use_sliding_window`, then follow `layer_types`.
    let c = ModelConfig::from_json_str(
        r#"{"model_type": "qwen3", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
        "num_hidden_layers": 3, "num_attention_heads": 4, "attention_bias": true,
        "use_sliding_window": true, "sliding_window": 7,
        "layer_types": ["full_attention", "sliding_attention", "full_attention"]}"#,
        "qwen3",
    )
    .unwrap();
    assert_eq!(c.head_dim, 128);
    assert!(c.attention_bias && c.o_proj_bias());
    assert_eq!(c.sliding_window, Some(7));
    use LayerAttention::{Full, Sliding};
    assert_eq!(c.layer_types, vec![Full, Sliding, Full]);
    check_round_trip(&c);
}

#[test]
fn llama3_scaling_in_both_spellings_and_without_original_context() {
    // transformers 4: `rope_theta` + `rope_scaling`; transformers 5: one `rope_parameters`.
    let base = r#""model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 256"#;
    let v4 = format!(
        r#"{{{base}, "rope_theta": 10000.0, "rope_scaling": {{"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}}}"#
    );
    let v5 = format!(
        r#"{{{base}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}}}"#
    );
    let a = ModelConfig::from_json_str(&v4, "v4").unwrap();
    let b = ModelConfig::from_json_str(&v5, "v5").unwrap();
    assert_eq!(a, b);
    let want = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    assert_eq!((a.rope_theta, a.rope_scaling), (10000.0, want));
    // The older `type` key names the scaling too.
    let old = v4.replace(r#""rope_type": "llama3""#, r#""type": "llama3""#);
    assert_eq!(ModelConfig::from_json_str(&old, "type").unwrap(), a);
    // Without `original_max_position_embeddings`, transformers uses `max_position_embeddings`.
    for text in [&v4, &v5] {
        let text = text.replace(r#", "original_max_position_embeddings": 64"#, "");
        let c = ModelConfig::from_json_str(&text, "no original").unwrap();
        let RopeScaling::Llama3 {
            original_max_position_embeddings,
            ..
        } = c.rope_scaling
        else {
            panic!("{:?}", c.rope_scaling);
        };
        assert_eq!(original_max_position_embeddings, 256);
    }
    let bad = v5.replace(
        r#""original_max_position_embeddings": 64"#,
        r#""original_max_position_embeddings": 6.5"#,
    );
    let err = ModelConfig::from_json_str(&bad, "bad").unwrap_err();
    assert!(
        err.to_string().contains("original_max_position_embeddings"),
        "{err}"
    );
    // The tiny Llama 3.1 of the transformers goldens, written by transformers 5.
    let tiny = ModelConfig::from_json_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/golden/tiny/llama3/config.json"),
    )
    .unwrap();
    assert_eq!(tiny.rope_scaling, want);
}

#[test]
fn configs_saved_by_transformers_5_parse_the_same() {
    // Written by transformers 5.24 `save_pretrained` (`rope_parameters`, `dtype`).
    for (v5, v4) in [
        ("gemma-3-270m.transformers5.json", "gemma-3-270m.json"),
        ("llama-3.1-8b.transformers5.json", "llama-3.1-8b.json"),
    ] {
        assert_eq!(load(v5), load(v4), "{v5}");
    }
}

const FIXTURES: [&str; 9] = [
    "gemma-3-270m.json",
    "gemma-3-270m.transformers5.json",
    "llama-2-7b.json",
    "llama-3.1-8b.json",
    "llama-3.1-8b.transformers5.json",
    "mistral-7b-v0.1.json",
    "mixtral-8x7b-v0.1.json",
    "qwen2-7b.json",
    "smollm2-135m-instruct.json",
];

#[test]
fn unknown_keys_are_listed() {
    // Every key of the real configurations, and of what `to_hf_json` writes, is known.
    for name in FIXTURES {
        let (c, unknown) = ModelConfig::read_json_file(&fixture(name)).unwrap();
        assert!(unknown.is_empty(), "{name}: {unknown:?}");
        let (_, unknown) = ModelConfig::parse_json_str(&c.to_hf_json().to_string(), name).unwrap();
        assert!(unknown.is_empty(), "{name} written back: {unknown:?}");
    }
    let j = with(
        "llama-2-7b.json",
        json!({"zeta_setting": 1, "alpha_setting": {"x": true}, "finercut": {"removed_sublayers": []}}),
    );
    let (c, unknown) = ModelConfig::parse_json_str(&j, "cfg.json").unwrap();
    assert_eq!(unknown, ["alpha_setting", "zeta_setting"]);
    assert_eq!(c, load("llama-2-7b.json"), "unknown keys change nothing");
    // Keys of a multimodal Gemma 3's text part are listed with their prefix.
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gemma-3-270m.json")).unwrap())
            .unwrap();
    let mut text = g.clone();
    text["new_norm_kind"] = json!("x");
    let wrapped = json!({"model_type": "gemma3", "text_config": text, "vision_config": {}, "mm_tokens_per_image": 256});
    let (_, unknown) = ModelConfig::parse_json_str(&wrapped.to_string(), "mm.json").unwrap();
    assert_eq!(unknown, ["text_config.new_norm_kind"]);
}

#[test]
fn settings_that_change_the_computation_are_refused_by_name() {
    let cases = [
        (
            "smollm2-135m-instruct.json",
            json!({"rope_interleaved": true}),
            "`rope_interleaved`",
        ),
        (
            "llama-2-7b.json",
            json!({"partial_rotary_factor": 0.5}),
            "`partial_rotary_factor`",
        ),
        (
            "llama-2-7b.json",
            json!({"quantization_config": {"quant_method": "bitsandbytes"}}),
            "`quantization_config`",
        ),
        (
            "llama-2-7b.json",
            json!({"final_logit_softcapping": 30.0}),
            "`final_logit_softcapping`",
        ),
        (
            "qwen2-7b.json",
            json!({"attn_logit_softcapping": 50.0}),
            "`attn_logit_softcapping`",
        ),
        (
            "mistral-7b-v0.1.json",
            json!({"num_local_experts": 8}),
            "`num_local_experts`",
        ),
        (
            "llama-2-7b.json",
            json!({"num_experts_per_tok": 2}),
            "`num_experts_per_tok`",
        ),
        (
            "gemma-3-270m.json",
            json!({"use_bidirectional_attention": true}),
            "`use_bidirectional_attention`",
        ),
        ("llama-2-7b.json", json!({"mlp_bias": true}), "mlp_bias"),
    ];
    for (base, patch, want) in cases {
        refused(base, patch, &[want, base, "unsupported"]);
    }
    // Their harmless values are accepted and not reported as unknown.
    let j = with(
        "llama-2-7b.json",
        json!({"rope_interleaved": false, "partial_rotary_factor": 1.0, "quantization_config": null,
               "use_bidirectional_attention": false}),
    );
    let (c, unknown) = ModelConfig::parse_json_str(&j, "cfg.json").unwrap();
    assert_eq!(c, load("llama-2-7b.json"));
    assert!(unknown.is_empty(), "{unknown:?}");
}
