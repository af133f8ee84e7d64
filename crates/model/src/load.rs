//! Building a [`Model`] from a configuration and a [`TensorSource`]: the shared loader that every
//! family goes through, reading the family's [`BlockRecipe`] (tensor names, norm placement,
//! biases, QK-norm, soft-caps, local RoPE, experts), and [`LoadOptions`], which also says which
//! part of the model to build (a pipeline stage: a contiguous range of sublayers, with the
//! embeddings only when the range starts at 0 and the final norm and LM head only when it ends at
//! 2L).

use std::collections::BTreeSet;
use std::ops::Range;

use crate::layers::{Attention, Branch, Linear, Mlp, RmsNorm, Sublayer};
use crate::moe::SparseMoe;
use crate::weights::{WeightDtype, Weights};
use crate::{Error, Model, Result, SublayerId, SublayerKind};
use finercut_format::{
    family::sliced::{ATTN_SHORTCUT, MLP_SHORTCUT},
    Activation as FmtActivation, BlockRecipe, FfnTensors, LayerAttention, ModelConfig, NormScale,
    QkNorm, RopeScaling as FmtRope, TensorSource, ROPE_FREQS_TENSOR,
};
use finercut_tensor::{
    Activation, AttentionSpec, DType, Device, LongRope, Matrix, NormWeight, Rope, RopeScaling,
    Tensor,
};

/// How to load a model: which sublayers the checkpoint lacks, how weight matrices are held, and
/// which part of the model to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Sublayers absent from the checkpoint (a pruned export): their weights are not looked up,
    /// and every plan given to the model must remove them.
    pub absent: BTreeSet<usize>,
    /// How weight matrices are held on the CPU.
    pub weight_dtype: WeightDtype,
    /// The element type of weight matrices on another device (`F32`, or `BF16`).
    pub matrix_dtype: DType,
    /// The sublayers to build (a pipeline stage), or `None` for all `2L`. The embeddings are
    /// loaded when the range starts at 0, the final norm and LM head when it ends at `2L` (and the
    /// embedding matrix there too when the head is tied to it); a boundary may fall inside a
    /// block. Only the tensors of the part are read.
    pub sublayers: Option<Range<usize>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            absent: BTreeSet::new(),
            weight_dtype: WeightDtype::Stored,
            matrix_dtype: DType::F32,
            sublayers: None,
        }
    }
}

fn rope_scaling(s: &FmtRope) -> RopeScaling {
    match *s {
        // `Factors` is built from the weights instead (see `Loader::ropes`).
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

/// The checked sizes and shared settings of one load.
struct Loader<'a> {
    c: &'a ModelConfig,
    r: BlockRecipe,
    root: Weights<'a>,
    device: Device,
    matrix_dtype: DType,
    d: usize,
    eps: f32,
    norm_kind: NormWeight,
    act: Activation,
    /// A sliced model's norms: epsilon and weight scale for the original width.
    residual: Option<(f32, f32)>,
    /// `(global, local)` rotary tables, built once the first attention weights confirmed
    /// `head_dim`.
    ropes: Option<(Rope, Rope)>,
}

impl Model {
    /// Builds the model (or the part of it that `options` names) from `config` and the weights of
    /// `weights` (Hugging Face names), on `device`. A missing weight or a wrong shape is an error
    /// naming the full tensor name.
    pub fn load_with_options(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Model> {
        let c = config;
        let count = 2 * c.num_hidden_layers;
        if let Some(&index) = options.absent.iter().find(|&&i| i >= count) {
            return Err(Error::SublayerIndex { index, count });
        }
        let part = options.sublayers.clone().unwrap_or(0..count);
        if part.start > part.end || part.end > count {
            return Err(Error::SublayerIndex {
                index: part.end.max(part.start),
                count,
            });
        }
        let r = c.recipe();
        // A parallel block's attention runs with its FFN, at the FFN sublayer: a part holds
        // whole parallel blocks.
        if r.parallel_residual && (part.start % 2 == 1 || part.end % 2 == 1) {
            return Err(Error::Config(format!(
                "sublayers {part:?} split a parallel block: a part of a parallel-residual model \
                 must start and end at block boundaries (even sublayer indices)"
            )));
        }
        if let Some(m) = r.experts {
            let (experts, top_k) = (m.num_local_experts, m.num_experts_per_tok);
            if experts == 0 || top_k == 0 || top_k > experts {
                return Err(Error::Config(format!(
                    "{top_k} experts per token of {experts} experts"
                )));
            }
        }
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
        if heads.checked_mul(hd).is_none() || kvh.checked_mul(hd).is_none() {
            return Err(Error::Config(format!(
                "{heads} attention heads of head_dim {hd} overflow"
            )));
        }
        let eps = c.rms_norm_eps as f32;
        // A sliced model's norms divide by the original width D over d kept dimensions:
        // x / sqrt(Σx²/D + eps) = sqrt(D/d) · x / sqrt(Σx²/d + eps·D/d), an RMSNorm over d with
        // its weight scaled by sqrt(D/d) and epsilon by D/d (exactly the plain norm when D = d).
        let residual = c.slicing().map(|p| {
            let ratio = p.original_hidden_size as f64 / d as f64;
            ((c.rms_norm_eps * ratio) as f32, ratio.sqrt() as f32)
        });
        let mut l = Loader {
            c,
            root: Weights::new(weights, *device, options.weight_dtype, options.matrix_dtype),
            device: *device,
            matrix_dtype: options.matrix_dtype,
            d,
            eps,
            norm_kind: match r.norm_scale {
                NormScale::Plain => NormWeight::Plain,
                NormScale::OnePlus => NormWeight::OnePlus,
                NormScale::LayerNorm => NormWeight::Centred,
            },
            act: match c.hidden_act {
                FmtActivation::Silu => Activation::Silu,
                FmtActivation::GeluTanh => Activation::GeluTanh,
                FmtActivation::Gelu => Activation::Gelu,
            },
            residual,
            ropes: None,
            r,
        };
        let m = l.root.pp("model");
        let first = part.start == 0;
        let last = part.end == count;
        let embed = if first || (last && c.tie_word_embeddings) {
            Some(m.pp("embed_tokens").matrix("weight", [vocab, d])?)
        } else {
            None
        };
        let mut sublayers = Vec::with_capacity(count);
        for s in 0..count {
            let id = SublayerId::from_index(s);
            let sub = if !part.contains(&s) {
                l.placeholder(id, false)?
            } else if options.absent.contains(&s) {
                l.placeholder(id, true)?
            } else {
                match id.kind {
                    SublayerKind::Attn => l.attention(id)?,
                    SublayerKind::Mlp => l.ffn(id)?,
                }
            };
            sublayers.push(sub);
        }
        let (final_norm, lm_head) = if last {
            let norm = l.norm(&m, "norm")?;
            let head = if c.tie_word_embeddings {
                None
            } else {
                Some(l.root.pp("lm_head").matrix("weight", [vocab, d])?)
            };
            (Some(norm), head)
        } else {
            (None, None)
        };
        Ok(Model {
            config: c.clone(),
            device: *device,
            embed,
            embed_scale: l.r.scale_embeddings.then(|| (d as f32).sqrt()),
            sublayers,
            final_norm,
            lm_head,
            final_softcap: l.r.final_softcap.map(|x| x as f32),
            weight_dtype: options.weight_dtype,
            part,
        })
    }
}

impl<'a> Loader<'a> {
    /// A norm over the residual width in scope `w` (a sliced model's rescaled for its original
    /// width).
    fn norm(&self, w: &Weights<'_>, name: &str) -> Result<RmsNorm> {
        match self.residual {
            Some((eps, scale)) => {
                let mut n = RmsNorm::load(w, name, self.d, eps, NormWeight::Plain)?;
                if scale != 1.0 {
                    n.weight.scale_in_place(scale)?;
                }
                Ok(n)
            }
            None => RmsNorm::load(w, name, self.d, self.eps, self.norm_kind),
        }
    }

    /// A sliced model's residual shortcut around sublayer `id`, stored as SliceGPT's `x·Q`
    /// matrix `[d, d]` and held transposed for `matmul_t`.
    fn shortcut(&self, id: SublayerId) -> Result<Option<Matrix>> {
        if self.residual.is_none() {
            return Ok(None);
        }
        let d = self.d;
        let name = match id.kind {
            SublayerKind::Attn => ATTN_SHORTCUT,
            SublayerKind::Mlp => MLP_SHORTCUT,
        };
        let q = self
            .block(id)
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
            .to_dtype(self.matrix_dtype)?
            .to_device(&self.device)?;
        Ok(Some(Matrix::Dense(m)))
    }

    fn block(&self, id: SublayerId) -> Weights<'a> {
        self.root.pp("model").pp("layers").pp(id.block)
    }

    /// A sublayer without weights: absent from the checkpoint (`stored_absent`, with a sliced
    /// model's shortcut, which a removed sublayer still applies), or outside the loaded part.
    fn placeholder(&self, id: SublayerId, stored_absent: bool) -> Result<Sublayer> {
        Ok(Sublayer {
            id,
            parallel: self.r.parallel_residual,
            norm: None,
            branch: Branch::Absent,
            post_norm: None,
            shortcut: if stored_absent {
                self.shortcut(id)?
            } else {
                None
            },
        })
    }

    /// The `(global, local)` rotary tables. They are sized by `head_dim`, a number from the
    /// configuration alone: built once the first attention weights have confirmed it, so a
    /// configuration that claims a huge head_dim fails on a shape, not on an allocation.
    fn ropes(&mut self) -> Result<(Rope, Rope)> {
        if let Some(r) = &self.ropes {
            return Ok(r.clone());
        }
        let (c, hd) = (self.c, self.c.head_dim);
        // The first `rot` values of each head rotate (all of them unless partial rotary).
        let rot = self.r.rotary_dim.unwrap_or_else(|| c.rotary_dim());
        let global = match (&c.long_rope, c.rope_scaling) {
            (Some(l), _) => Rope::long_rope(
                hd,
                rot,
                c.rope_theta,
                &LongRope {
                    short_factor: l.short_factor.clone(),
                    long_factor: l.long_factor.clone(),
                    original_max_position_embeddings: l.original_max_position_embeddings,
                    attention_factor: l.attention_factor,
                },
            )?,
            (None, FmtRope::Factors) if rot == hd => {
                let factors = self.root.get(ROPE_FREQS_TENSOR, &[hd / 2])?.to_vec_f32()?;
                Rope::with_freq_factors(hd, c.rope_theta, &factors)?
            }
            (None, FmtRope::Factors) => {
                return Err(Error::Config(format!(
                    "RoPE frequency factors with partial rotary embeddings ({rot} of {hd})"
                )))
            }
            (None, ref other) => Rope::partial(hd, rot, c.rope_theta, rope_scaling(other))?,
        };
        let local = match self.r.local_rope_theta {
            Some(theta) => Rope::partial(hd, rot, theta, RopeScaling::None)?,
            None => global.clone(),
        };
        self.ropes = Some((global.clone(), local.clone()));
        Ok((global, local))
    }

    fn attention(&mut self, id: SublayerId) -> Result<Sublayer> {
        let c = self.c;
        let (d, hd) = (self.d, c.head_dim);
        let (heads, kvh) = (c.num_attention_heads, c.num_key_value_heads);
        let (q_rows, kv_rows) = (heads * hd, kvh * hd);
        let t = self.r.tensors;
        let sliding = c.layer_types[id.block] == LayerAttention::Sliding;
        let mut spec = AttentionSpec::new(heads, kvh, hd);
        spec.sliding_window = if sliding { c.sliding_window } else { None };
        if let Some(scale) = self.r.query_scale {
            spec.scale = scale as f32;
        }
        spec.softcap = self.r.attn_softcap.map(|x| x as f32);
        let l = self.block(id);
        let w = l.pp(t.attn);
        // RMSNorms of queries and keys before RoPE: per head, or over the whole projection.
        let (q_width, k_width) = match self.r.qk_norm {
            QkNorm::None => (0, 0),
            QkNorm::PerHead => (hd, hd),
            QkNorm::Whole => (q_rows, kv_rows),
        };
        let (q_norm, k_norm) = if q_width > 0 {
            (
                Some(RmsNorm::load(
                    &w,
                    "q_norm",
                    q_width,
                    self.eps,
                    self.norm_kind,
                )?),
                Some(RmsNorm::load(
                    &w,
                    "k_norm",
                    k_width,
                    self.eps,
                    self.norm_kind,
                )?),
            )
        } else {
            (None, None)
        };
        let qkv_bias = self.r.qkv_bias;
        let (q, k, v) = match t.fused_qkv {
            // One matrix of rows q, k, v (Phi-3's `qkv_proj`), split into its parts.
            Some(name) if !qkv_bias => {
                let all = q_rows + 2 * kv_rows;
                (
                    Linear::load_rows(&w, name, all, d, 0..q_rows)?,
                    Linear::load_rows(&w, name, all, d, q_rows..q_rows + kv_rows)?,
                    Linear::load_rows(&w, name, all, d, q_rows + kv_rows..all)?,
                )
            }
            Some(name) => {
                return Err(Error::Config(format!(
                    "biases on the fused projection `{}`",
                    w.full(name)
                )))
            }
            None => (
                Linear::load(&w, "q_proj", q_rows, d, qkv_bias)?,
                Linear::load(&w, "k_proj", kv_rows, d, qkv_bias)?,
                Linear::load(&w, "v_proj", kv_rows, d, qkv_bias)?,
            ),
        };
        let o = Linear::load(&w, "o_proj", d, q_rows, self.r.o_proj_bias)?;

        let (global, local) = self.ropes()?;
        let attn = Attention {
            q,
            k,
            v,
            o,
            q_norm,
            k_norm,
            rope: if sliding { local } else { global },
            spec,
        };
        let post_norm = match t.attn_post_norm {
            Some(name) => Some(self.norm(&l, name)?),
            None => None,
        };
        Ok(Sublayer {
            id,
            parallel: self.r.parallel_residual,
            norm: match t.attn_norm {
                Some(name) => Some(self.norm(&l, name)?),
                None => None,
            },
            branch: Branch::Attn(attn),
            post_norm,
            shortcut: self.shortcut(id)?,
        })
    }

    fn ffn(&mut self, id: SublayerId) -> Result<Sublayer> {
        let (d, ffn, act) = (self.d, self.c.intermediate_size, self.act);
        let t = self.r.tensors;
        let l = self.block(id);
        let w = l.pp(t.ffn);
        let branch = match (t.ffn_kind, self.r.experts) {
            (
                FfnTensors::Experts {
                    router,
                    gate,
                    up,
                    down,
                },
                Some(moe),
            ) => {
                let n = moe.num_local_experts;
                let experts = (0..n)
                    .map(|e| {
                        let ew = w.pp("experts").pp(e);
                        Ok(Mlp {
                            gate: Some(Linear::load(&ew, gate, ffn, d, false)?),
                            up: Linear::load(&ew, up, ffn, d, false)?,
                            down: Linear::load(&ew, down, d, ffn, false)?,
                            act,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Branch::Moe(SparseMoe {
                    router: Linear::load(&w, router, n, d, false)?,
                    experts,
                    top_k: moe.num_experts_per_tok,
                    normalise: moe.norm_topk_prob,
                })
            }
            (FfnTensors::FusedGated { gate_up, down }, None) => Branch::Mlp(Mlp {
                gate: Some(Linear::load_rows(&w, gate_up, 2 * ffn, d, 0..ffn)?),
                up: Linear::load_rows(&w, gate_up, 2 * ffn, d, ffn..2 * ffn)?,
                down: Linear::load(&w, down, d, ffn, false)?,
                act,
            }),
            (FfnTensors::Gated { gate, up, down }, None) => Branch::Mlp(Mlp {
                gate: Some(Linear::load(&w, gate, ffn, d, self.r.mlp_bias)?),
                up: Linear::load(&w, up, ffn, d, self.r.mlp_bias)?,
                down: Linear::load(&w, down, d, ffn, self.r.mlp_bias)?,
                act,
            }),
            (FfnTensors::Plain { up, down }, None) => Branch::Mlp(Mlp {
                gate: None,
                up: Linear::load(&w, up, ffn, d, self.r.mlp_bias)?,
                down: Linear::load(&w, down, d, ffn, self.r.mlp_bias)?,
                act,
            }),
            (kind, experts) => {
                return Err(Error::Config(format!(
                    "FFN tensors {kind:?} do not fit experts {experts:?}"
                )))
            }
        };
        let norm = match t.ffn_norm {
            Some(name) => Some(self.norm(&l, name)?),
            None => None,
        };
        let post_norm = match t.ffn_post_norm {
            Some(name) => Some(self.norm(&l, name)?),
            None => None,
        };
        Ok(Sublayer {
            id,
            parallel: self.r.parallel_residual,
            norm,
            branch,
            post_norm,
            shortcut: self.shortcut(id)?,
        })
    }
}
