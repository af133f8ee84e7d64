//! A tiny random model held in memory, and a naive `f64` forward pass of it written from the
//! transformers modelling code (Llama, Qwen2, Gemma 3, Mixtral), one sequence and one position at a
//! time.

use finercut_format::{Bytes, DType, ModelConfig, RawTensor, TensorSource};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};

/// Which variant of the family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
    /// Llama attention with a sparse mixture of [`EXPERTS`] experts, [`TOP_K`] per token.
    Mixtral,
}

/// Weights in memory, served as F32 (or BF16) raw tensors.
#[derive(Clone)]
pub struct MemSource {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub bf16: bool,
}

impl TensorSource for MemSource {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        let (shape, data) = self
            .tensors
            .get(name)
            .expect("test asks only for names it has");
        let (dtype, bytes) = if self.bf16 {
            (
                DType::BF16,
                Bytes::from_vec(
                    data.iter()
                        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                        .collect(),
                ),
            )
        } else {
            (DType::F32, Bytes::from_f32_vec(data.clone()))
        };
        Ok(RawTensor {
            name: name.to_string(),
            dtype,
            shape: shape.clone(),
            data: bytes,
        })
    }
}

/// A tiny random model: 3 blocks, d = 64, 4 query / 2 KV heads of 16, FFN 96, vocab 101.
pub struct Tiny {
    pub arch: Arch,
    pub config: ModelConfig,
    pub source: MemSource,
}

pub const VOCAB: usize = 101;
const D: usize = 64;
const FFN: usize = 96;
const LAYERS: usize = 3;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = 16;
pub const EXPERTS: usize = 4;
pub const TOP_K: usize = 2;

impl Tiny {
    pub fn new(arch: Arch, seed: u64) -> Tiny {
        let json = match arch {
            Arch::Llama => format!(
                r#"{{"model_type": "llama", "vocab_size": {VOCAB}, "hidden_size": {D}, "intermediate_size": {FFN},
                "num_hidden_layers": {LAYERS}, "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS},
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false}}"#
            ),
            Arch::Qwen2 => format!(
                r#"{{"model_type": "qwen2", "vocab_size": {VOCAB}, "hidden_size": {D}, "intermediate_size": {FFN},
                "num_hidden_layers": {LAYERS}, "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS},
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true}}"#
            ),
            Arch::Gemma3 => format!(
                r#"{{"model_type": "gemma3_text", "vocab_size": {VOCAB}, "hidden_size": {D}, "intermediate_size": {FFN},
                "num_hidden_layers": {LAYERS}, "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS},
                "head_dim": {HD}, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "query_pre_attn_scalar": 24, "sliding_window": 3,
                "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": true}}"#
            ),
            Arch::Mixtral => format!(
                r#"{{"model_type": "mixtral", "vocab_size": {VOCAB}, "hidden_size": {D}, "intermediate_size": {FFN},
                "num_hidden_layers": {LAYERS}, "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS},
                "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "tie_word_embeddings": false,
                "num_local_experts": {EXPERTS}, "num_experts_per_tok": {TOP_K}}}"#
            ),
        };
        let config = ModelConfig::from_json_str(&json, "tiny").expect("tiny config");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        let mut put =
            |name: String, shape: Vec<usize>, center: f32, spread: f32, rng: &mut StdRng| {
                let n: usize = shape.iter().product();
                let data = (0..n)
                    .map(|_| center + rng.gen_range(-spread..spread))
                    .collect();
                tensors.insert(name, (shape, data));
            };
        let norm_center = if arch == Arch::Gemma3 { 0.0 } else { 1.0 };
        put(
            "model.embed_tokens.weight".into(),
            vec![VOCAB, D],
            0.0,
            1.0,
            &mut rng,
        );
        for b in 0..LAYERS {
            let p = format!("model.layers.{b}");
            put(
                format!("{p}.input_layernorm.weight"),
                vec![D],
                norm_center,
                0.2,
                &mut rng,
            );
            put(
                format!("{p}.post_attention_layernorm.weight"),
                vec![D],
                norm_center,
                0.2,
                &mut rng,
            );
            for (name, out, inp) in [
                ("q", HEADS * HD, D),
                ("k", KV_HEADS * HD, D),
                ("v", KV_HEADS * HD, D),
                ("o", D, HEADS * HD),
            ] {
                put(
                    format!("{p}.self_attn.{name}_proj.weight"),
                    vec![out, inp],
                    0.0,
                    0.15,
                    &mut rng,
                );
                if arch == Arch::Qwen2 && name != "o" {
                    put(
                        format!("{p}.self_attn.{name}_proj.bias"),
                        vec![out],
                        0.0,
                        0.5,
                        &mut rng,
                    );
                }
            }
            if arch == Arch::Mixtral {
                // A wide router: routing decisions sit far from ties, so float noise never flips one.
                put(
                    format!("{p}.block_sparse_moe.gate.weight"),
                    vec![EXPERTS, D],
                    0.0,
                    2.0,
                    &mut rng,
                );
                for e in 0..EXPERTS {
                    for (name, out, inp) in [("w1", FFN, D), ("w3", FFN, D), ("w2", D, FFN)] {
                        put(
                            format!("{p}.block_sparse_moe.experts.{e}.{name}.weight"),
                            vec![out, inp],
                            0.0,
                            0.15,
                            &mut rng,
                        );
                    }
                }
            } else {
                for (name, out, inp) in [("gate", FFN, D), ("up", FFN, D), ("down", D, FFN)] {
                    put(
                        format!("{p}.mlp.{name}_proj.weight"),
                        vec![out, inp],
                        0.0,
                        0.15,
                        &mut rng,
                    );
                }
            }
            if arch == Arch::Gemma3 {
                put(
                    format!("{p}.pre_feedforward_layernorm.weight"),
                    vec![D],
                    0.0,
                    0.2,
                    &mut rng,
                );
                put(
                    format!("{p}.post_feedforward_layernorm.weight"),
                    vec![D],
                    0.0,
                    0.2,
                    &mut rng,
                );
                put(
                    format!("{p}.self_attn.q_norm.weight"),
                    vec![HD],
                    0.0,
                    0.2,
                    &mut rng,
                );
                put(
                    format!("{p}.self_attn.k_norm.weight"),
                    vec![HD],
                    0.0,
                    0.2,
                    &mut rng,
                );
            }
        }
        put(
            "model.norm.weight".into(),
            vec![D],
            norm_center,
            0.2,
            &mut rng,
        );
        if matches!(arch, Arch::Llama | Arch::Mixtral) {
            put("lm_head.weight".into(), vec![VOCAB, D], 0.0, 0.3, &mut rng);
        }
        Tiny {
            arch,
            config,
            source: MemSource {
                tensors,
                bf16: false,
            },
        }
    }

    fn w(&self, name: &str) -> &[f32] {
        &self.source.tensors[name].1
    }

    /// Logits `[n][t][vocab]` of the naive `f64` forward with `removed` sublayers skipped.
    pub fn naive_forward(
        &self,
        tokens: &[Vec<u32>],
        removed: &BTreeSet<usize>,
    ) -> Vec<Vec<Vec<f64>>> {
        tokens
            .iter()
            .map(|seq| self.naive_sequence(seq, removed))
            .collect()
    }

    fn norm(&self, x: &[f64], name: &str) -> Vec<f64> {
        let w = self.w(name);
        let eps = self.config.rms_norm_eps;
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        let gemma = self.arch == Arch::Gemma3;
        x.iter()
            .zip(w)
            .map(|(v, &g)| {
                v * inv
                    * if gemma {
                        1.0 + f64::from(g)
                    } else {
                        f64::from(g)
                    }
            })
            .collect()
    }

    /// `W·x (+ b)` for `W` `[out, in]`.
    fn linear(&self, x: &[f64], name: &str) -> Vec<f64> {
        let (shape, w) = &self.source.tensors[&format!("{name}.weight")];
        let (out, inp) = (shape[0], shape[1]);
        let bias = self.source.tensors.get(&format!("{name}.bias"));
        (0..out)
            .map(|o| {
                let s: f64 = (0..inp).map(|i| f64::from(w[o * inp + i]) * x[i]).sum();
                s + bias.map_or(0.0, |(_, b)| f64::from(b[o]))
            })
            .collect()
    }

    fn rope(&self, x: &mut [f64], pos: usize, theta: f64) {
        let half = HD / 2;
        for head in x.chunks_mut(HD) {
            for i in 0..half {
                let a = pos as f64 / theta.powf(2.0 * i as f64 / HD as f64);
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * a.cos() - x2 * a.sin();
                head[i + half] = x2 * a.cos() + x1 * a.sin();
            }
        }
    }

    /// transformers' `MixtralSparseMoeBlock` for one position: softmax over the router logits, the
    /// `TOP_K` most probable experts, their probabilities renormalised, weighted SwiGLU outputs.
    fn naive_moe(&self, h: &[f64], p: &str) -> Vec<f64> {
        let logits = self.linear(h, &format!("{p}.block_sparse_moe.gate"));
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        let probs: Vec<f64> = logits.iter().map(|l| (l - m).exp() / z).collect();
        let mut order: Vec<usize> = (0..EXPERTS).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        order.truncate(TOP_K);
        let total: f64 = order.iter().map(|&e| probs[e]).sum();
        let mut out = vec![0f64; D];
        for &e in &order {
            let q = format!("{p}.block_sparse_moe.experts.{e}");
            let g = self.linear(h, &format!("{q}.w1"));
            let u = self.linear(h, &format!("{q}.w3"));
            let a: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let y = self.linear(&a, &format!("{q}.w2"));
            for (o, v) in out.iter_mut().zip(&y) {
                *o += probs[e] / total * v;
            }
        }
        out
    }

    fn naive_sequence(&self, seq: &[u32], removed: &BTreeSet<usize>) -> Vec<Vec<f64>> {
        let gemma = self.arch == Arch::Gemma3;
        let emb = self.w("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f64>> = seq
            .iter()
            .map(|&id| {
                let row = &emb[id as usize * D..(id as usize + 1) * D];
                let scale = if gemma { (D as f32).sqrt() as f64 } else { 1.0 };
                row.iter().map(|&v| f64::from(v) * scale).collect()
            })
            .collect();
        for s in 0..2 * LAYERS {
            if removed.contains(&s) {
                continue;
            }
            let b = s / 2;
            let p = format!("model.layers.{b}");
            if s % 2 == 0 {
                let sliding = gemma && b != 1;
                let theta = if gemma && sliding {
                    10_000.0
                } else {
                    self.config.rope_theta
                };
                let scale = if gemma {
                    1.0 / 24f64.sqrt()
                } else {
                    1.0 / (HD as f64).sqrt()
                };
                let mut qs = Vec::new();
                let mut ks = Vec::new();
                let mut vs = Vec::new();
                for (pos, x) in xs.iter().enumerate() {
                    let h = self.norm(x, &format!("{p}.input_layernorm.weight"));
                    let mut q = self.linear(&h, &format!("{p}.self_attn.q_proj"));
                    let mut k = self.linear(&h, &format!("{p}.self_attn.k_proj"));
                    if gemma {
                        q = q
                            .chunks(HD)
                            .flat_map(|c| self.norm(c, &format!("{p}.self_attn.q_norm.weight")))
                            .collect();
                        k = k
                            .chunks(HD)
                            .flat_map(|c| self.norm(c, &format!("{p}.self_attn.k_norm.weight")))
                            .collect();
                    }
                    self.rope(&mut q, pos, theta);
                    self.rope(&mut k, pos, theta);
                    qs.push(q);
                    ks.push(k);
                    vs.push(self.linear(&h, &format!("{p}.self_attn.v_proj")));
                }
                for (i, x) in xs.iter_mut().enumerate() {
                    let mut a = vec![0f64; HEADS * HD];
                    for h in 0..HEADS {
                        let g = h / (HEADS / KV_HEADS);
                        let lo = if sliding {
                            (i + 1).saturating_sub(3)
                        } else {
                            0
                        };
                        let sc: Vec<f64> = (lo..=i)
                            .map(|j| {
                                (0..HD)
                                    .map(|e| qs[i][h * HD + e] * ks[j][g * HD + e])
                                    .sum::<f64>()
                                    * scale
                            })
                            .collect();
                        let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let pr: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
                        let z: f64 = pr.iter().sum();
                        for e in 0..HD {
                            a[h * HD + e] = (lo..=i)
                                .map(|j| pr[j - lo] * vs[j][g * HD + e])
                                .sum::<f64>()
                                / z;
                        }
                    }
                    let mut o = self.linear(&a, &format!("{p}.self_attn.o_proj"));
                    if gemma {
                        o = self.norm(&o, &format!("{p}.post_attention_layernorm.weight"));
                    }
                    x.iter_mut().zip(&o).for_each(|(v, d)| *v += d);
                }
            } else {
                for x in xs.iter_mut() {
                    let norm = if gemma {
                        "pre_feedforward_layernorm"
                    } else {
                        "post_attention_layernorm"
                    };
                    let h = self.norm(x, &format!("{p}.{norm}.weight"));
                    if self.arch == Arch::Mixtral {
                        let o = self.naive_moe(&h, &p);
                        x.iter_mut().zip(&o).for_each(|(v, d)| *v += d);
                        continue;
                    }
                    let g = self.linear(&h, &format!("{p}.mlp.gate_proj"));
                    let u = self.linear(&h, &format!("{p}.mlp.up_proj"));
                    let a: Vec<f64> = g
                        .iter()
                        .zip(&u)
                        .map(|(&g, &u)| {
                            let act = if gemma {
                                0.5 * g
                                    * (1.0
                                        + ((2.0 / std::f64::consts::PI).sqrt()
                                            * (g + 0.044715 * g * g * g))
                                            .tanh())
                            } else {
                                g / (1.0 + (-g).exp())
                            };
                            act * u
                        })
                        .collect();
                    let mut o = self.linear(&a, &format!("{p}.mlp.down_proj"));
                    if gemma {
                        o = self.norm(&o, &format!("{p}.post_feedforward_layernorm.weight"));
                    }
                    x.iter_mut().zip(&o).for_each(|(v, d)| *v += d);
                }
            }
        }
        let head = if self.source.tensors.contains_key("lm_head.weight") {
            "lm_head"
        } else {
            "model.embed_tokens"
        };
        xs.iter()
            .map(|x| self.linear(&self.norm(x, "model.norm.weight"), head))
            .collect()
    }
}

/// Asserts `|got - want| <= tol · (1 + |want|)` elementwise over flattened logits.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs() / (1.0 + w.abs());
        if err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: element {} off by {:e} (tolerance {tol:e})",
        worst.1,
        worst.0
    );
}

/// Asserts two `f32` slices agree to `tol · (1 + |b|)`.
pub fn assert_close_f32(a: &[f32], b: &[f32], tol: f64, what: &str) {
    let want: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    assert_close(a, &want, tol, what);
}
