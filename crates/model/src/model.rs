//! [`Model`]: loading, the forward pass under a removal plan, traces and resuming.

use crate::layers::{Attention, Batch, Branch, KvMode, Linear, Mlp, Part, RmsNorm, Sublayer};
use crate::moe::SparseMoe;
use crate::weights::{WeightDtype, Weights};
use std::collections::{BTreeMap, BTreeSet};

use crate::{Error, Plan, Result, SublayerId, SublayerKind};
use finercut_format::{
    Activation as FmtActivation, Architecture, LayerAttention, ModelConfig, RopeScaling as FmtRope,
    TensorSource, ROPE_FREQS_TENSOR,
};
use finercut_tensor::{
    Activation, AttentionSpec, DType, Device, Matrix, NormWeight, Rope, RopeScaling, Tensor,
};

/// Name of a sliced model's shortcut matrix around the attention sublayer, in its block's scope.
pub const ATTN_SHORTCUT: &str = "attn_shortcut_Q";
/// Name of a sliced model's shortcut matrix around the FFN sublayer, in its block's scope.
pub const MLP_SHORTCUT: &str = "mlp_shortcut_Q";

/// Rows evaluated together in one batched sublayer call (whole sequences; at least one sequence).
/// A constant, not a function of the thread count, so results are reproducible.
pub(crate) const CHUNK_ROWS: usize = 8192;

/// A Llama-family decoder whose 2L sublayers can be removed (skipped) by a [`Plan`].
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) device: Device,
    pub(crate) embed: Matrix,
    pub(crate) embed_scale: Option<f32>,
    pub(crate) sublayers: Vec<Sublayer>,
    pub(crate) final_norm: RmsNorm,
    /// `None` when the LM head is the embedding matrix.
    pub(crate) lm_head: Option<Matrix>,
    pub(crate) final_softcap: Option<f32>,
    pub(crate) weight_dtype: WeightDtype,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("architecture", &self.config.architecture)
            .field("blocks", &self.config.num_hidden_layers)
            .field("hidden_size", &self.config.hidden_size)
            .field("vocab_size", &self.config.vocab_size)
            .field("device", &self.device)
            .finish()
    }
}

fn rope_scaling(s: &FmtRope) -> RopeScaling {
    match *s {
        // `Factors` is built from the weights instead (see `load_pruned`).
        FmtRope::None | FmtRope::Factors => RopeScaling::None,
        FmtRope::Linear { factor } => RopeScaling::Linear { factor },
        FmtRope::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        },
    }
}

impl Model {
    /// Builds the model from `config` and the weights of `weights` (Hugging Face names), on `device`.
    ///
    /// Weight matrices stay as stored ([`WeightDtype::Stored`]): bf16/f16 in place in the memory
    /// map, GGUF blocks quantised, widened to `f32` inside each GEMM; aligned `f32` weights are
    /// used in place; norms and biases are converted to `f32`. A missing weight or a wrong shape
    /// is an error naming the full tensor name.
    pub fn load(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
    ) -> Result<Model> {
        Self::load_pruned(config, weights, device, &BTreeSet::new())
    }

    /// [`Model::load`] for a pruned checkpoint (`finercut export`) whose sublayers `absent` are not
    /// stored: their weights are not looked up, and every plan given to the model must remove them.
    pub fn load_pruned(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
        absent: &BTreeSet<usize>,
    ) -> Result<Model> {
        Self::load_with(
            config,
            weights,
            device,
            absent,
            WeightDtype::Stored,
            DType::F32,
        )
    }

    /// [`Model::load_pruned`] with the weight matrices (projections, embeddings, LM head) on a CUDA
    /// device stored as `matrix_dtype`: `BF16` halves their memory and runs their GEMMs with `bf16`
    /// inputs and `f32` accumulation (a CUDA device's fast mode; the CPU backend multiplies `f32`
    /// only). Norm weights and biases stay `f32`.
    pub fn load_pruned_as(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
        absent: &BTreeSet<usize>,
        matrix_dtype: DType,
    ) -> Result<Model> {
        Self::load_with(
            config,
            weights,
            device,
            absent,
            WeightDtype::Stored,
            matrix_dtype,
        )
    }

    /// [`Model::load_pruned`] with the weight matrices held as `dtype` says.
    pub fn load_as(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
        absent: &BTreeSet<usize>,
        dtype: WeightDtype,
    ) -> Result<Model> {
        Self::load_with(config, weights, device, absent, dtype, DType::F32)
    }

    /// [`Model::load_pruned`] with the weight matrices held as `dtype` says on the CPU, and as
    /// `matrix_dtype` on another device.
    pub fn load_with(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
        absent: &BTreeSet<usize>,
        dtype: WeightDtype,
        matrix_dtype: DType,
    ) -> Result<Model> {
        let c = config;
        if let Some(&index) = absent.iter().find(|&&i| i >= 2 * c.num_hidden_layers) {
            return Err(Error::SublayerIndex {
                index,
                count: 2 * c.num_hidden_layers,
            });
        }
        let gemma = match c.architecture {
            Architecture::Llama
            | Architecture::Mistral
            | Architecture::Qwen2
            | Architecture::Qwen3
            | Architecture::Mixtral => None,
            Architecture::Gemma3 => c.gemma3().copied(),
        };
        if c.architecture == Architecture::Gemma3 && gemma.is_none() {
            return Err(Error::Config(
                "gemma3 architecture without gemma3 parameters".into(),
            ));
        }
        let moe = c.moe().copied();
        if c.architecture == Architecture::Mixtral {
            match moe {
                None => {
                    return Err(Error::Config(
                        "mixtral architecture without mixture-of-experts parameters".into(),
                    ))
                }
                Some(m)
                    if m.num_local_experts == 0
                        || m.num_experts_per_tok == 0
                        || m.num_experts_per_tok > m.num_local_experts =>
                {
                    return Err(Error::Config(format!(
                        "{} experts per token of {} experts",
                        m.num_experts_per_tok, m.num_local_experts
                    )))
                }
                Some(_) => {}
            }
        }
        let qk_norm = gemma.is_some() || c.architecture == Architecture::Qwen3;
        let (d, hd, heads, kvh, ffn, vocab) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
            c.vocab_size,
        );
        if d == 0
            || hd == 0
            || heads == 0
            || kvh == 0
            || ffn == 0
            || vocab == 0
            || c.num_hidden_layers == 0
        {
            return Err(Error::Config(format!("zero size in {c:?}")));
        }
        if heads % kvh != 0 {
            return Err(Error::Config(format!(
                "{heads} attention heads not divisible by {kvh} key/value heads"
            )));
        }
        if c.layer_types.len() != c.num_hidden_layers {
            return Err(Error::Config(format!(
                "{} layer types for {} layers",
                c.layer_types.len(),
                c.num_hidden_layers
            )));
        }
        let eps = c.rms_norm_eps as f32;
        // A sliced model's norms divide by the original width D over d kept dimensions:
        // x / sqrt(Σx²/D + eps) = sqrt(D/d) · x / sqrt(Σx²/d + eps·D/d), an RMSNorm over d with
        // its weight scaled by sqrt(D/d) and epsilon by D/d (exactly the plain norm when D = d).
        let slicing = c.slicing().copied();
        let (residual_eps, residual_scale) = match slicing {
            Some(p) => {
                let ratio = p.original_hidden_size as f64 / d as f64;
                ((c.rms_norm_eps * ratio) as f32, ratio.sqrt() as f32)
            }
            None => (eps, 1.0),
        };
        let residual_norm = |w: &Weights<'_>, name: &str| -> Result<RmsNorm> {
            let mut n = RmsNorm::load(w, name, d, residual_eps, NormWeight::Plain)?;
            if residual_scale != 1.0 {
                n.weight.scale_in_place(residual_scale)?;
            }
            Ok(n)
        };
        let norm_kind = if gemma.is_some() {
            NormWeight::OnePlus
        } else {
            NormWeight::Plain
        };
        let act = match c.hidden_act {
            FmtActivation::Silu => Activation::Silu,
            FmtActivation::GeluTanh => Activation::GeluTanh,
        };
        let root = Weights::new(weights, *device, dtype, matrix_dtype);
        let m = root.pp("model");
        let embed = m.pp("embed_tokens").matrix("weight", [vocab, d])?;
        let (q_rows, kv_rows) = match (heads.checked_mul(hd), kvh.checked_mul(hd)) {
            (Some(q), Some(kv)) => (q, kv),
            _ => {
                return Err(Error::Config(format!(
                    "{heads} attention heads of head_dim {hd} overflow"
                )))
            }
        };
        // The rotary tables are sized by `head_dim`, a number from the configuration alone: they
        // are built once the first attention weights have confirmed it, so a configuration that
        // claims a huge head_dim fails on a shape, not on an allocation.
        let mut ropes: Option<(Rope, Rope)> = None;
        let mut confirmed_ropes = || -> Result<(Rope, Rope)> {
            if let Some(r) = &ropes {
                return Ok(r.clone());
            }
            let global = match c.rope_scaling {
                FmtRope::Factors => {
                    let factors = root.get(ROPE_FREQS_TENSOR, &[hd / 2])?.to_vec_f32()?;
                    Rope::with_freq_factors(hd, c.rope_theta, &factors)?
                }
                ref other => Rope::new(hd, c.rope_theta, rope_scaling(other))?,
            };
            let local = match gemma {
                Some(g) => Rope::new(hd, g.rope_local_base_freq, RopeScaling::None)?,
                None => global.clone(),
            };
            ropes = Some((global.clone(), local.clone()));
            Ok((global, local))
        };
        let mut sublayers = Vec::with_capacity(2 * c.num_hidden_layers);
        for b in 0..c.num_hidden_layers {
            let l = m.pp("layers").pp(b);
            let sliding = c.layer_types[b] == LayerAttention::Sliding;
            let mut spec = AttentionSpec::new(heads, kvh, hd);
            spec.sliding_window = if sliding { c.sliding_window } else { None };
            let norm = |name: &str| {
                if slicing.is_some() {
                    residual_norm(&l, name)
                } else {
                    RmsNorm::load(&l, name, d, eps, norm_kind)
                }
            };
            // A sliced model's residual shortcuts, stored as SliceGPT's `x·Q` matrices
            // `[d, d]` and held transposed for `matmul_t`.
            let shortcut = |name: &str| -> Result<Option<Matrix>> {
                if slicing.is_none() {
                    return Ok(None);
                }
                let q = l
                    .get(name, &[d, d])?
                    .to_device(&Device::Cpu)?
                    .to_vec_f32()?;
                let mut qt = vec![0.0f32; d * d];
                for i in 0..d {
                    for j in 0..d {
                        qt[j * d + i] = q[i * d + j];
                    }
                }
                let m = Tensor::from_vec(qt, &[d, d], &Device::Cpu)?
                    .to_dtype(matrix_dtype)?
                    .to_device(device)?;
                Ok(Some(Matrix::Dense(m)))
            };
            let attn_id = SublayerId {
                block: b,
                kind: SublayerKind::Attn,
            };
            let mlp_id = SublayerId {
                block: b,
                kind: SublayerKind::Mlp,
            };
            let absent_sublayer = |id: SublayerId, shortcut_name: &str| -> Result<Sublayer> {
                Ok(Sublayer {
                    id,
                    norm: RmsNorm {
                        weight: Tensor::zeros(&[d], device)?,
                        eps,
                        kind: norm_kind,
                    },
                    branch: Branch::Absent,
                    post_norm: None,
                    shortcut: shortcut(shortcut_name)?,
                })
            };
            if absent.contains(&attn_id.index()) {
                sublayers.push(absent_sublayer(attn_id, ATTN_SHORTCUT)?);
            } else {
                let attn_w = l.pp("self_attn");
                if let Some(g) = gemma {
                    spec.scale = (1.0 / g.query_pre_attn_scalar.sqrt()) as f32;
                    spec.softcap = g.attn_logit_softcapping.map(|x| x as f32);
                }
                // Gemma 3 and Qwen3 normalise every query and key head before RoPE.
                let (q_norm, k_norm) = if qk_norm {
                    (
                        Some(RmsNorm::load(&attn_w, "q_norm", hd, eps, norm_kind)?),
                        Some(RmsNorm::load(&attn_w, "k_norm", hd, eps, norm_kind)?),
                    )
                } else {
                    (None, None)
                };
                let qkv_bias = c.attention_bias;
                let q = Linear::load(&attn_w, "q_proj", q_rows, d, qkv_bias)?;
                let k = Linear::load(&attn_w, "k_proj", kv_rows, d, qkv_bias)?;
                let v = Linear::load(&attn_w, "v_proj", kv_rows, d, qkv_bias)?;
                let o = Linear::load(&attn_w, "o_proj", d, q_rows, c.o_proj_bias())?;
                let (global_rope, local_rope) = confirmed_ropes()?;
                let attn = Attention {
                    q,
                    k,
                    v,
                    o,
                    q_norm,
                    k_norm,
                    rope: if sliding { local_rope } else { global_rope },
                    spec,
                };
                let attn_post = if gemma.is_some() {
                    Some(norm("post_attention_layernorm")?)
                } else {
                    None
                };
                sublayers.push(Sublayer {
                    id: attn_id,
                    norm: norm("input_layernorm")?,
                    branch: Branch::Attn(attn),
                    post_norm: attn_post,
                    shortcut: shortcut(ATTN_SHORTCUT)?,
                });
            }
            if absent.contains(&mlp_id.index()) {
                sublayers.push(absent_sublayer(mlp_id, MLP_SHORTCUT)?);
            } else {
                let branch = match moe {
                    Some(m) => {
                        // Mixtral checkpoints: `block_sparse_moe.gate` and experts `w1` (gate),
                        // `w3` (up), `w2` (down).
                        let moe_w = l.pp("block_sparse_moe");
                        let experts = (0..m.num_local_experts)
                            .map(|e| {
                                let ew = moe_w.pp("experts").pp(e);
                                Ok(Mlp {
                                    gate: Linear::load(&ew, "w1", ffn, d, false)?,
                                    up: Linear::load(&ew, "w3", ffn, d, false)?,
                                    down: Linear::load(&ew, "w2", d, ffn, false)?,
                                    act,
                                })
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Branch::Moe(SparseMoe {
                            router: Linear::load(&moe_w, "gate", m.num_local_experts, d, false)?,
                            experts,
                            top_k: m.num_experts_per_tok,
                        })
                    }
                    None => {
                        let mlp_w = l.pp("mlp");
                        Branch::Mlp(Mlp {
                            gate: Linear::load(&mlp_w, "gate_proj", ffn, d, false)?,
                            up: Linear::load(&mlp_w, "up_proj", ffn, d, false)?,
                            down: Linear::load(&mlp_w, "down_proj", d, ffn, false)?,
                            act,
                        })
                    }
                };
                let (mlp_norm, mlp_post) = if gemma.is_some() {
                    (
                        norm("pre_feedforward_layernorm")?,
                        Some(norm("post_feedforward_layernorm")?),
                    )
                } else {
                    (norm("post_attention_layernorm")?, None)
                };
                sublayers.push(Sublayer {
                    id: mlp_id,
                    norm: mlp_norm,
                    branch,
                    post_norm: mlp_post,
                    shortcut: shortcut(MLP_SHORTCUT)?,
                });
            }
        }
        let final_norm = if slicing.is_some() {
            residual_norm(&m, "norm")?
        } else {
            RmsNorm::load(&m, "norm", d, eps, norm_kind)?
        };
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(root.pp("lm_head").matrix("weight", [vocab, d])?)
        };
        Ok(Model {
            config: c.clone(),
            device: *device,
            embed,
            embed_scale: gemma.map(|_| (d as f32).sqrt()),
            sublayers,
            final_norm,
            lm_head,
            final_softcap: gemma
                .and_then(|g| g.final_logit_softcapping)
                .map(|x| x as f32),
            weight_dtype: dtype,
        })
    }

    /// How the weight matrices are held ([`WeightDtype`]).
    pub fn weight_dtype(&self) -> WeightDtype {
        self.weight_dtype
    }

    /// The types the weight matrices are held in, with how many matrices and bytes of each
    /// (`"f32"`, `"bf16"`, `"Q4_1"`, ...).
    pub fn weight_storage(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut add = |m: &Matrix| {
            let e = out.entry(m.stored_type()).or_default();
            e.0 += 1;
            e.1 += m.stored_bytes();
        };
        add(&self.embed);
        if let Some(h) = &self.lm_head {
            add(h);
        }
        for s in &self.sublayers {
            s.for_each_matrix(&mut add);
            if let Some(m) = &s.shortcut {
                add(m);
            }
        }
        out
    }

    /// [`Model::weight_storage`] in words, e.g. `"stored: Q4_1 ×211 (76.2 MB), Q6_K ×1 (22.1 MB)"`.
    pub fn weight_storage_summary(&self) -> String {
        let parts: Vec<String> = self
            .weight_storage()
            .iter()
            .map(|(t, (n, bytes))| format!("{t} ×{n} ({:.1} MB)", *bytes as f64 / 1e6))
            .collect();
        format!("{}: {}", self.weight_dtype, parts.join(", "))
    }

    /// The `f32` values of the weight with Hugging Face name `name` (e.g.
    /// `model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`, which is the embedding when the
    /// two are tied), on the host, widened from however it is held. Norm weights are those the
    /// model computes with (a sliced model's are rescaled for its original width). An unknown name,
    /// or a weight of a sublayer absent from the checkpoint, is [`Error::MissingWeight`].
    pub fn weight(&self, name: &str) -> Result<Tensor> {
        let missing = || Error::MissingWeight {
            name: name.to_string(),
        };
        let host = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(&Device::Cpu)?) };
        let dense = |m: &Matrix| -> Result<Tensor> { host(&m.to_dense()?.to_dtype(DType::F32)?) };
        match name {
            "model.embed_tokens.weight" => return dense(&self.embed),
            "lm_head.weight" => return dense(self.head_weight()),
            "model.norm.weight" => return host(&self.final_norm.weight),
            _ => {}
        }
        let rest = name.strip_prefix("model.layers.").ok_or_else(missing)?;
        let (block, rest) = rest.split_once('.').ok_or_else(missing)?;
        let block: usize = block.parse().map_err(|_| missing())?;
        let gemma = self.config.gemma3().is_some();
        let attn = self.sublayers.get(2 * block).ok_or_else(missing)?;
        let mlp = self.sublayers.get(2 * block + 1).ok_or_else(missing)?;
        let linear = |l: &crate::layers::Linear, part: &str| -> Result<Tensor> {
            match part {
                "weight" => dense(&l.weight),
                "bias" => host(l.bias.as_ref().ok_or_else(missing)?),
                _ => Err(missing()),
            }
        };
        let transposed = |m: &Option<Matrix>| -> Result<Tensor> {
            let t = dense(m.as_ref().ok_or_else(missing)?)?;
            let d = t.rows();
            let v = t.to_vec_f32()?;
            let mut out = vec![0.0f32; d * d];
            for i in 0..d {
                for j in 0..d {
                    out[j * d + i] = v[i * d + j];
                }
            }
            Ok(Tensor::from_vec(out, &[d, d], &Device::Cpu)?)
        };
        match (rest, &attn.branch, &mlp.branch) {
            ("input_layernorm.weight", Branch::Attn(_), _) => host(&attn.norm.weight),
            ("post_attention_layernorm.weight", Branch::Attn(_), _) if gemma => {
                host(&attn.post_norm.as_ref().ok_or_else(missing)?.weight)
            }
            ("post_attention_layernorm.weight", _, Branch::Mlp(_) | Branch::Moe(_)) if !gemma => {
                host(&mlp.norm.weight)
            }
            ("pre_feedforward_layernorm.weight", _, Branch::Mlp(_)) if gemma => {
                host(&mlp.norm.weight)
            }
            ("post_feedforward_layernorm.weight", _, Branch::Mlp(_)) if gemma => {
                host(&mlp.post_norm.as_ref().ok_or_else(missing)?.weight)
            }
            (ATTN_SHORTCUT, _, _) => transposed(&attn.shortcut),
            (MLP_SHORTCUT, _, _) => transposed(&mlp.shortcut),
            (r, Branch::Attn(a), _) if r.starts_with("self_attn.") => {
                let r = &r["self_attn.".len()..];
                let (module, part) = r.split_once('.').ok_or_else(missing)?;
                match module {
                    "q_proj" => linear(&a.q, part),
                    "k_proj" => linear(&a.k, part),
                    "v_proj" => linear(&a.v, part),
                    "o_proj" => linear(&a.o, part),
                    "q_norm" if part == "weight" => {
                        host(&a.q_norm.as_ref().ok_or_else(missing)?.weight)
                    }
                    "k_norm" if part == "weight" => {
                        host(&a.k_norm.as_ref().ok_or_else(missing)?.weight)
                    }
                    _ => Err(missing()),
                }
            }
            (r, _, Branch::Mlp(m)) if r.starts_with("mlp.") => {
                let (module, part) = r["mlp.".len()..].split_once('.').ok_or_else(missing)?;
                match module {
                    "gate_proj" => linear(&m.gate, part),
                    "up_proj" => linear(&m.up, part),
                    "down_proj" => linear(&m.down, part),
                    _ => Err(missing()),
                }
            }
            _ => Err(missing()),
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of sublayers, 2L.
    pub fn num_sublayers(&self) -> usize {
        self.sublayers.len()
    }

    /// The identity of sublayer `i` (`L{i/2}.attn` or `.mlp`; defined for any `i`).
    pub fn sublayer(&self, i: usize) -> SublayerId {
        self.sublayers
            .get(i)
            .map_or(SublayerId::from_index(i), |s| s.id)
    }

    /// Parameters of sublayer `i`: its norm(s) and its branch (0 when `i` is out of range); a sliced
    /// model's residual shortcut is not counted, as removing the sublayer keeps it.
    pub fn param_count_of(&self, i: usize) -> usize {
        self.sublayers.get(i).map_or(0, Sublayer::param_count)
    }

    /// All parameters: embeddings, sublayers (with a sliced model's shortcut matrices), final norm
    /// and (untied) LM head.
    pub fn param_count(&self) -> usize {
        self.embed.elem_count()
            + self
                .sublayers
                .iter()
                .map(|s| s.param_count() + s.shortcut_param_count())
                .sum::<usize>()
            + self.final_norm.param_count()
            + self.lm_head.as_ref().map_or(0, Matrix::elem_count)
    }

    /// Logits `[n, t, vocab]` of `n` token sequences of equal length `t` under `plan`.
    pub fn forward(&self, tokens: &[Vec<u32>], plan: &Plan) -> Result<Tensor> {
        let (n, t) = self.check_tokens(tokens)?;
        self.check_plan(plan)?;
        let mut x = self.embed_batch(tokens)?;
        for s in 0..self.sublayers.len() {
            self.apply_stream(s, &mut x, n, t, plan.is_removed(s))?;
        }
        Ok(self.logits(&x)?.reshape(&[n, t, self.config.vocab_size])?)
    }

    /// The residual stream `[n, t, d]` entering every sublayer under `plan` (2L states), then the stream
    /// after the last sublayer, before the final norm (2L + 1 states in all). A removed sublayer's
    /// entering state equals the next one's (in a sliced model: times its shortcut matrix).
    pub fn trace(&self, tokens: &[Vec<u32>], plan: &Plan) -> Result<Vec<Tensor>> {
        let (n, t) = self.check_tokens(tokens)?;
        self.check_plan(plan)?;
        let d = self.config.hidden_size;
        let mut x = self.embed_batch(tokens)?;
        let mut states = Vec::with_capacity(self.sublayers.len() + 1);
        for s in 0..self.sublayers.len() {
            states.push(x.clone().reshape(&[n, t, d])?);
            self.apply_stream(s, &mut x, n, t, plan.is_removed(s))?;
        }
        states.push(x.reshape(&[n, t, d])?);
        Ok(states)
    }

    /// Logits `[n, t, vocab]` continuing from `state` (`[n, t, d]`, the stream entering sublayer
    /// `from`, as given by [`Model::trace`]) through sublayers `from..2L` under `plan`.
    pub fn resume(&self, state: &Tensor, from: usize, plan: &Plan) -> Result<Tensor> {
        self.check_plan(plan)?;
        let count = self.sublayers.len();
        if from > count {
            return Err(Error::SublayerIndex { index: from, count });
        }
        let d = self.config.hidden_size;
        let (n, t) = self.check_state(state)?;
        let mut x = state.clone().reshape(&[n * t, d])?;
        for s in from..count {
            self.apply_stream(s, &mut x, n, t, plan.is_removed(s))?;
        }
        Ok(self.logits(&x)?.reshape(&[n, t, self.config.vocab_size])?)
    }

    /// The residual stream entering sublayer `to`, continuing from `state` (`[n, t, d]`, the stream
    /// entering sublayer `from`) through sublayers `from..to` under `plan`: a piece of a trace, without
    /// the LM head.
    pub fn advance(&self, state: &Tensor, from: usize, to: usize, plan: &Plan) -> Result<Tensor> {
        self.check_plan(plan)?;
        let count = self.sublayers.len();
        if to > count || from > to {
            return Err(Error::SublayerIndex {
                index: if to > count { to } else { from },
                count,
            });
        }
        let (n, t) = self.check_state(state)?;
        let d = self.config.hidden_size;
        let mut x = state.clone().reshape(&[n * t, d])?;
        for s in from..to {
            self.apply_stream(s, &mut x, n, t, plan.is_removed(s))?;
        }
        Ok(x.reshape(&[n, t, d])?)
    }

    /// `(n, t)` of a residual state `[n, t, d]`.
    fn check_state(&self, state: &Tensor) -> Result<(usize, usize)> {
        let d = self.config.hidden_size;
        match *state.shape() {
            [n, t, sd] if sd == d && n > 0 && t > 0 => Ok((n, t)),
            _ => Err(Error::Input(format!(
                "a residual state must have shape [n, t, {d}], got {:?}",
                state.shape()
            ))),
        }
    }

    /// `(n, t)` of a token batch, checked: at least one sequence, all of the same non-zero
    /// length, every id below the vocabulary size. Every method that takes a batch checks it so.
    pub fn check_tokens(&self, tokens: &[Vec<u32>]) -> Result<(usize, usize)> {
        let Some(first) = tokens.first() else {
            return Err(Error::Input("empty batch of token sequences".into()));
        };
        let t = first.len();
        if t == 0 {
            return Err(Error::Input("empty token sequence".into()));
        }
        if let Some((i, row)) = tokens.iter().enumerate().find(|(_, r)| r.len() != t) {
            return Err(Error::Input(format!(
                "sequence {i} has {} tokens, sequence 0 has {t}: rows must be equally long",
                row.len()
            )));
        }
        for row in tokens {
            self.check_ids(row)?;
        }
        Ok((tokens.len(), t))
    }

    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(id) => Err(Error::Input(format!(
                "token id {id} out of range for a vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn check_plan(&self, plan: &Plan) -> Result<()> {
        let count = self.sublayers.len();
        if let Some(&index) = plan.removed().iter().find(|&&i| i >= count) {
            return Err(Error::SublayerIndex { index, count });
        }
        match self
            .sublayers
            .iter()
            .find(|s| matches!(s.branch, Branch::Absent) && !plan.is_removed(s.id.index()))
        {
            Some(s) => Err(Error::Absent(s.id)),
            None => Ok(()),
        }
    }

    /// Sublayers absent from the checkpoint (see [`Model::load_pruned`]).
    pub fn absent_sublayers(&self) -> BTreeSet<usize> {
        self.sublayers
            .iter()
            .filter(|s| matches!(s.branch, Branch::Absent))
            .map(|s| s.id.index())
            .collect()
    }

    /// Embeddings of the concatenated rows `[Σ len, d]`.
    pub(crate) fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        let mut x = self.embed.embedding(ids)?;
        if let Some(s) = self.embed_scale {
            x.scale_in_place(s)?;
        }
        Ok(x)
    }

    fn embed_batch(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let ids: Vec<u32> = tokens.iter().flatten().copied().collect();
        self.embed_ids(&ids)
    }

    /// Applies sublayer `s` to a stream of `n` sequences of `t` tokens (`[n·t, d]`), in chunks of
    /// whole sequences; a `removed` sublayer only applies its shortcut, if any.
    pub(crate) fn apply_stream(
        &self,
        s: usize,
        x: &mut Tensor,
        n: usize,
        t: usize,
        removed: bool,
    ) -> Result<()> {
        if removed {
            let rows = x.rows();
            return self.sublayers[s].bypass(&mut [Part { x, row: 0, rows }]);
        }
        let per = (CHUNK_ROWS / t).max(1);
        let mut seq = 0;
        while seq < n {
            let k = per.min(n - seq);
            let batch = Batch::uniform(k, t, 0);
            self.sublayers[s].apply(
                &mut [Part {
                    x,
                    row: seq * t,
                    rows: k * t,
                }],
                &batch,
                KvMode::Plain,
            )?;
            seq += k;
        }
        Ok(())
    }

    /// The LM-head weight `[vocab, d]`.
    pub(crate) fn head_weight(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Logits `[rows, vocab]` of residual rows `[rows, d]`: final norm, LM head, optional softcap.
    pub(crate) fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.final_norm.forward(x)?;
        let mut y = self.head_weight().matmul_t(&h)?;
        drop(h);
        if let Some(cap) = self.final_softcap {
            y.softcap_in_place(cap)?;
        }
        Ok(y)
    }
}
