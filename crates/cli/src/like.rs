//! `finercut make-tiny DIR --like NAME`: a random model with the shape of a published one (its real
//! `config.json` hyperparameters, bf16 safetensors sharded like Hugging Face's at most 5 GB a
//! shard, with `model.safetensors.index.json`), for measuring time and memory at real sizes
//! without downloading weights.
//!
//! Weights are drawn deterministically from the seed: each tensor from its own generator seeded
//! by `(seed, tensor index)`, in chunks of rows each seeded by its index, so the bytes do not
//! depend on the thread count. Matrices are approximately normal with standard deviation 0.02
//! (transformers' `initializer_range`; the sum of four uniforms, exact in mean and variance),
//! norms are 1, biases 0. Tensors are generated and written one at a time (the largest, the
//! embedding of an 8B Llama 3, is 1 GB), each shard atomically. The tokenizer is byte-level (256
//! bytes and an end-of-text token); the embedding's other rows are never looked up.
//! Tensors are written in the family's stock layout (`finercut_format::Family::stock_layout`: the
//! names its own checkpoints use, GPT-NeoX's `gpt_neox.layers.N.attention.query_key_value` …), so
//! transformers loads the directory with the preset's class.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use finercut_format::{
    family, io::write_json, write_safetensors_streamed, Bytes, DType, FfnTensors, LikePreset,
    ModelConfig, NormScale, Overwrite, QkNorm, StagedDir, TensorSpec,
};
use rayon::prelude::*;
use serde_json::{json, Value};

/// Largest shard, as transformers' default `max_shard_size="5GB"`.
const SHARD_BYTES: usize = 5_000_000_000;

/// The published shapes `--like` accepts: every family module's
/// [`finercut_format::LikePreset`]s, in registry order.
pub const PRESETS: Presets = Presets;

/// The names of the `--like` presets (see [`PRESETS`]).
#[derive(Debug, Clone, Copy)]
pub struct Presets;

impl Presets {
    /// The names joined by `sep`.
    pub fn join(self, sep: &str) -> String {
        self.into_iter().collect::<Vec<_>>().join(sep)
    }
}

impl IntoIterator for Presets {
    type Item = &'static str;
    type IntoIter = std::vec::IntoIter<&'static str>;
    fn into_iter(self) -> Self::IntoIter {
        family::like_presets()
            .into_iter()
            .map(|(_, p)| p.name)
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// A model shape: what `config.json` says. The sizes are the family's [`LikePreset`] (changed
/// where a run asks for fewer blocks, or a test for a smaller model).
#[derive(Debug, Clone)]
pub struct LikeSpec {
    pub model_type: &'static str,
    pub architecture: &'static str,
    pub shape: LikePreset,
}

impl LikeSpec {
    /// The shape of a published model (see [`PRESETS`]).
    pub fn preset(name: &str) -> anyhow::Result<LikeSpec> {
        let Some((f, p)) = family::like_presets()
            .into_iter()
            .find(|(_, p)| p.name == name)
        else {
            bail!(
                "unknown --like `{name}`; expected one of {}",
                PRESETS.join(", ")
            )
        };
        Ok(LikeSpec {
            model_type: f.model_types()[0],
            architecture: f.hf_class(),
            shape: *p,
        })
    }

    fn head_dim(&self) -> usize {
        self.shape.hidden / self.shape.heads
    }

    /// The `config.json` of this shape: the family reads the shape's settings and writes its
    /// config.json ([`ModelConfig::to_hf_json`]), so every family's keys come from its module.
    pub fn config(&self) -> Value {
        self.model_config().map_or_else(
            |e| json!({"model_type": self.model_type, "error": e.to_string()}),
            |c| {
                let mut j = c.to_hf_json();
                if let Some(o) = j.as_object_mut() {
                    o.insert("architectures".into(), json!([self.architecture]));
                }
                j
            },
        )
    }

    /// The checked configuration of this shape.
    pub fn model_config(&self) -> anyhow::Result<ModelConfig> {
        let mut c = json!({
            "model_type": self.model_type,
            "vocab_size": self.shape.vocab,
            "hidden_size": self.shape.hidden,
            "intermediate_size": self.shape.intermediate,
            "num_hidden_layers": self.shape.blocks,
            "num_attention_heads": self.shape.heads,
            "num_key_value_heads": self.shape.kv_heads,
            "head_dim": self.head_dim(),
            "hidden_act": self.shape.hidden_act,
            "max_position_embeddings": self.shape.max_position,
            "rms_norm_eps": self.shape.rms_norm_eps,
            "rope_theta": self.shape.rope_theta,
            "tie_word_embeddings": self.shape.tie_embeddings,
            "attention_bias": self.shape.qkv_bias,
            "bos_token_id": 256,
            "eos_token_id": 256,
            "torch_dtype": "bfloat16",
        });
        let o = c.as_object_mut().context("a JSON object")?;
        if let Some(w) = self.shape.sliding_window {
            o.insert("sliding_window".into(), json!(w));
        }
        if let Some((n, k)) = self.shape.experts {
            o.insert("num_local_experts".into(), json!(n));
            o.insert("num_experts_per_tok".into(), json!(k));
        }
        if let Some(f) = family::by_model_type(self.model_type) {
            f.like_config(self.shape.name, o);
        }
        if self.shape.llama3_rope {
            o.insert(
                "rope_scaling".into(),
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
            );
        }
        Ok(ModelConfig::from_json_str(&c.to_string(), self.shape.name)?)
    }

    /// Every tensor in Hugging Face order, with its initial value kind, named as the family's
    /// block recipe says.
    fn tensors(&self) -> anyhow::Result<Vec<(TensorSpec, Init)>> {
        let c = self.model_config()?;
        let r = c.recipe();
        let t = r.tensors;
        // LayerNorms (GPT-NeoX) have a bias.
        let layer_norm = r.norm_scale == NormScale::LayerNorm;
        let (d, f, hd) = (self.shape.hidden, self.shape.intermediate, self.head_dim());
        let (q, kv) = (self.shape.heads * hd, self.shape.kv_heads * hd);
        let mut out = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, init: Init| {
            out.push((
                TensorSpec {
                    name,
                    dtype: DType::BF16,
                    shape,
                },
                init,
            ))
        };
        add(
            "model.embed_tokens.weight".into(),
            vec![self.shape.vocab, d],
            Init::Normal,
        );
        for b in 0..self.shape.blocks {
            let p = format!("model.layers.{b}");
            let a = format!("{p}.{}", t.attn);
            let projections = match t.fused_qkv {
                Some(qkv) => vec![(qkv, q + 2 * kv, d), ("o_proj", d, q)],
                None => vec![
                    ("q_proj", q, d),
                    ("k_proj", kv, d),
                    ("v_proj", kv, d),
                    ("o_proj", d, q),
                ],
            };
            for (name, rows, cols) in projections {
                add(format!("{a}.{name}.weight"), vec![rows, cols], Init::Normal);
                let bias = if name == "o_proj" {
                    r.o_proj_bias
                } else {
                    r.qkv_bias
                };
                if bias {
                    add(format!("{a}.{name}.bias"), vec![rows], Init::Zero);
                }
            }
            let qk = match r.qk_norm {
                QkNorm::None => None,
                QkNorm::PerHead => Some((hd, hd)),
                QkNorm::Whole => Some((q, kv)),
            };
            if let Some((qw, kw)) = qk {
                add(format!("{a}.q_norm.weight"), vec![qw], Init::One);
                add(format!("{a}.k_norm.weight"), vec![kw], Init::One);
            }
            let m = format!("{p}.{}", t.ffn);
            match t.ffn_kind {
                FfnTensors::Experts {
                    router,
                    gate,
                    up,
                    down,
                } => {
                    let n = r.experts.map_or(0, |m| m.num_local_experts);
                    add(format!("{m}.{router}.weight"), vec![n, d], Init::Normal);
                    for e in 0..n {
                        for (w, rows, cols) in [(gate, f, d), (down, d, f), (up, f, d)] {
                            add(
                                format!("{m}.experts.{e}.{w}.weight"),
                                vec![rows, cols],
                                Init::Normal,
                            );
                        }
                    }
                }
                FfnTensors::FusedGated { gate_up, down } => {
                    for (name, rows, cols) in [(gate_up, 2 * f, d), (down, d, f)] {
                        add(format!("{m}.{name}.weight"), vec![rows, cols], Init::Normal);
                    }
                }
                FfnTensors::Gated { gate, up, down } => {
                    for (name, rows, cols) in [(gate, f, d), (up, f, d), (down, d, f)] {
                        add(format!("{m}.{name}.weight"), vec![rows, cols], Init::Normal);
                    }
                }
                FfnTensors::Plain { up, down } => {
                    for (name, rows, cols) in [(up, f, d), (down, d, f)] {
                        add(format!("{m}.{name}.weight"), vec![rows, cols], Init::Normal);
                        if r.mlp_bias {
                            add(format!("{m}.{name}.bias"), vec![rows], Init::Zero);
                        }
                    }
                }
            }
            let norms = [t.attn_norm, t.attn_post_norm, t.ffn_norm, t.ffn_post_norm];
            for norm in norms.into_iter().flatten() {
                add(format!("{p}.{norm}.weight"), vec![d], Init::One);
                if layer_norm {
                    add(format!("{p}.{norm}.bias"), vec![d], Init::Zero);
                }
            }
        }
        add("model.norm.weight".into(), vec![d], Init::One);
        if layer_norm {
            add("model.norm.bias".into(), vec![d], Init::Zero);
        }
        if !c.tie_word_embeddings {
            add(
                "lm_head.weight".into(),
                vec![self.shape.vocab, d],
                Init::Normal,
            );
        }
        // Stored as the family's own checkpoints store them (GPT-NeoX: its names, one fused
        // `query_key_value`), so stock loaders read the directory.
        let names: Vec<String> = out.iter().map(|(t, _)| t.name.clone()).collect();
        let by_name: BTreeMap<&str, &(TensorSpec, Init)> =
            out.iter().map(|e| (e.0.name.as_str(), e)).collect();
        c.family()
            .stock_layout(&c, &names)
            .into_iter()
            .map(|s| {
                let parts = s
                    .parts
                    .iter()
                    .map(|p| {
                        by_name
                            .get(p.as_str())
                            .copied()
                            .with_context(|| format!("{}: no tensor `{p}`", self.shape.name))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.0.shape.clone()).collect();
                let init = parts.first().map_or(Init::Normal, |p| p.1);
                let spec = TensorSpec {
                    shape: s.shape(&shapes)?,
                    name: s.name,
                    dtype: DType::BF16,
                };
                Ok((spec, init))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Init {
    Normal,
    One,
    Zero,
}

/// SplitMix64 (deterministic, seekable by seeding).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows generated per seeded chunk.
const CHUNK_ELEMS: usize = 1 << 16;

/// The bf16 bytes of tensor `index` of `spec`.
fn tensor_bytes(seed: u64, index: usize, spec: &TensorSpec, init: Init) -> Vec<u8> {
    let n: usize = spec.shape.iter().product();
    let mut out = vec![0u8; n * 2];
    let constant = |v: f32, out: &mut Vec<u8>| {
        let b = half::bf16::from_f32(v).to_le_bytes();
        out.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&b));
    };
    match init {
        Init::One => constant(1.0, &mut out),
        Init::Zero => constant(0.0, &mut out),
        Init::Normal => {
            // √3 / 2^16 · 0.02: four 16-bit uniforms summed have variance 4·(2^32 − 1)/12.
            let scale = 0.02 * 3f32.sqrt() / 65_536.0;
            out.par_chunks_mut(CHUNK_ELEMS * 2)
                .enumerate()
                .for_each(|(chunk, dst)| {
                    let mut s = seed
                        ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407)
                        ^ (chunk as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25);
                    for c in dst.chunks_exact_mut(2) {
                        let r = splitmix(&mut s);
                        let sum =
                            (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
                        let v = (sum as f32 - 2.0 * 65_535.0) * scale;
                        c.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
                    }
                });
        }
    }
    out
}

/// Writes a random model shaped like `spec` into `dir`: shards, index, tokenizer and config.json,
/// beside `dir` and then renamed into place ([`StagedDir`]).
pub fn write_like(dir: &Path, spec: &LikeSpec, seed: u64, force: bool) -> anyhow::Result<()> {
    if spec.shape.heads == 0
        || !spec.shape.hidden.is_multiple_of(spec.shape.heads)
        || spec.shape.blocks == 0
    {
        bail!(
            "{}: hidden size {} does not split into {} heads",
            spec.shape.name,
            spec.shape.hidden,
            spec.shape.heads
        );
    }
    let staged = StagedDir::begin(
        dir,
        if force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        },
    )?;
    crate::common::warn_notes(staged.notes());
    let target = dir;
    let dir = staged.path();
    let tensors = spec.tensors()?;
    // Shards of consecutive tensors, each at most SHARD_BYTES (a larger tensor gets its own).
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0usize;
    let mut total = 0usize;
    for (i, (t, _)) in tensors.iter().enumerate() {
        let bytes = t.shape.iter().product::<usize>() * 2;
        if size + bytes > SHARD_BYTES && size > 0 {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        size += bytes;
        total += bytes;
    }
    let count = shards.len();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut weight_map = serde_json::Map::new();
    for (s, members) in shards.iter().enumerate() {
        let file = if count == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", s + 1)
        };
        let specs: Vec<TensorSpec> = members.iter().map(|&i| tensors[i].0.clone()).collect();
        eprintln!("writing {file} ({} tensors)", specs.len());
        write_safetensors_streamed(&dir.join(&file), &specs, &meta, |j| {
            let i = members[j];
            Ok(Bytes::from_vec(tensor_bytes(
                seed,
                i,
                &tensors[i].0,
                tensors[i].1,
            )))
        })?;
        for &i in members {
            weight_map.insert(tensors[i].0.name.clone(), json!(file));
        }
    }
    if count > 1 {
        write_json(
            &dir.join("model.safetensors.index.json"),
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )?;
    }
    write_json(
        &dir.join("tokenizer.json"),
        &finercut_pipeline::byte_tokenizer(256),
    )?;
    write_json(&dir.join("config.json"), &spec.config())
        .with_context(|| format!("cannot write {}", target.display()))?;
    staged.commit()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use finercut_format::{Checkpoint, ModelConfig};
    use finercut_model::{Model, Plan, WeightDtype};

    /// Every preset's configuration parses, with no unknown key, to the shape it claims.
    #[test]
    fn presets_have_real_configs() {
        for name in PRESETS {
            let spec = LikeSpec::preset(name).unwrap();
            let text = spec.config().to_string();
            let (c, unknown) = ModelConfig::parse_json_str(&text, name).unwrap();
            assert!(unknown.is_empty(), "{name}: {unknown:?}");
            assert_eq!(c.num_hidden_layers, spec.shape.blocks);
            assert_eq!(c.vocab_size, spec.shape.vocab);
        }
        assert!(LikeSpec::preset("gpt-5").is_err());
    }

    /// Each preset's family shrunk to a few MB writes, shards, reloads and runs; the bytes depend
    /// on the seed only; a second write into the same directory needs `force`.
    #[test]
    fn shrunk_presets_write_and_run() {
        for name in [
            "llama-3.1-8b",
            "qwen2.5-7b",
            "mixtral-8x7b-2layers",
            "mistral-7b",
            "pythia-160m",
            "phi-4-mini",
        ] {
            let base = LikeSpec::preset(name).unwrap();
            let spec = LikeSpec {
                shape: LikePreset {
                    vocab: 300,
                    hidden: 64,
                    intermediate: 96,
                    blocks: 2,
                    heads: 4,
                    // GPT-NeoX has as many key/value heads as query heads.
                    kv_heads: if base.shape.kv_heads == base.shape.heads {
                        4
                    } else {
                        2
                    },
                    ..base.shape
                },
                ..base
            };
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("m");
            write_like(&dir, &spec, 3, false).unwrap();
            assert!(write_like(&dir, &spec, 3, false).is_err());
            let ckpt = Checkpoint::open(&dir).unwrap();
            assert!(ckpt.unknown_config_keys.is_empty());
            let ids = vec![vec![1u32, 200, 17, 256, 5]];
            let logits = |dtype| {
                let model = Model::load_as(
                    &ckpt.config,
                    ckpt.weights.as_ref(),
                    &finercut_tensor::Device::Cpu,
                    &Default::default(),
                    dtype,
                )
                .unwrap();
                model
                    .forward(&ids, &Plan::dense())
                    .unwrap()
                    .to_vec_f32()
                    .unwrap()
            };
            let stored = logits(WeightDtype::Stored);
            assert!(stored.iter().all(|v| v.is_finite()));
            assert_eq!(stored, logits(WeightDtype::F32), "{name}");
            let again = tmp.path().join("again");
            write_like(&again, &spec, 3, false).unwrap();
            let file = "model.safetensors";
            assert_eq!(
                std::fs::read(dir.join(file)).unwrap(),
                std::fs::read(again.join(file)).unwrap()
            );
        }
    }

    /// At the sizes of a family's golden model (`data/golden/tiny/`, saved by transformers), a
    /// preset writes the same tensors, by name and shape, as transformers' checkpoint: the stock
    /// layout (GPT-NeoX's `gpt_neox.` names, fused `query_key_value` and `embed_out`; Phi-3's
    /// fused `qkv_proj` and `gate_up_proj`, no head when tied), which transformers loads.
    #[test]
    fn presets_write_the_stock_layout_of_their_family() {
        use finercut_format::{SafetensorsStore, TensorSource};
        const VOCAB: usize = 300;
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden/tiny");
        for (name, family) in [
            ("pythia-160m", "gpt_neox"),
            ("phi-3-mini", "phi3"),
            ("phi-4-mini", "phi4_mini"),
            ("llama-3.1-8b", "llama3"),
        ] {
            let dir = golden.join(family);
            let c = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
            let base = LikeSpec::preset(name).unwrap();
            let spec = LikeSpec {
                shape: LikePreset {
                    // More than the byte tokenizer's 257 ids; compared as the golden's below.
                    vocab: VOCAB,
                    hidden: c.hidden_size,
                    intermediate: c.intermediate_size,
                    blocks: c.num_hidden_layers,
                    heads: c.num_attention_heads,
                    kv_heads: c.num_key_value_heads,
                    ..base.shape
                },
                ..base
            };
            let mut got: Vec<(String, Vec<usize>)> = spec
                .tensors()
                .unwrap()
                .into_iter()
                .map(|(t, _)| {
                    let shape = t
                        .shape
                        .iter()
                        .map(|&n| if n == VOCAB { c.vocab_size } else { n });
                    (t.name, shape.collect())
                })
                .collect();
            let store = SafetensorsStore::open(&dir).unwrap();
            let mut want: Vec<(String, Vec<usize>)> = store
                .names()
                .into_iter()
                .map(|n| {
                    let shape = store.get(&n).unwrap().shape;
                    (n, shape)
                })
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name} against {family}");
        }
    }

    #[test]
    fn big_models_are_sharded_under_five_gb() {
        let spec = LikeSpec::preset("llama-3-8b").unwrap();
        let total: usize = spec
            .tensors()
            .unwrap()
            .iter()
            .map(|(t, _)| t.shape.iter().product::<usize>() * 2)
            .sum();
        // 8.03 B parameters in bf16.
        assert!((16_000_000_000..16_100_000_000).contains(&total), "{total}");
    }
}
