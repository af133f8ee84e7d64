//! [`Model`]: loading, the forward pass under a removal plan, traces and resuming.

use crate::layers::{apply_parallel, Batch, Branch, KvMode, Part, RmsNorm, Sublayer};
use crate::load::LoadOptions;
use crate::weights::WeightDtype;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::{Error, Plan, Result, SublayerId};
use finercut_format::{FfnTensors, ModelConfig, TensorSource};
use finercut_tensor::{DType, Device, Matrix, Tensor};

pub use finercut_format::family::sliced::{ATTN_SHORTCUT, MLP_SHORTCUT};

/// Rows evaluated together in one batched sublayer call (whole sequences; at least one sequence).
/// A constant, not a function of the thread count, so results are reproducible.
pub(crate) const CHUNK_ROWS: usize = 8192;

/// A Llama-family decoder whose 2L sublayers can be removed (skipped) by a [`Plan`].
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) device: Device,
    /// `None` in a part of the model that neither starts at sublayer 0 nor ends with a head tied
    /// to the embeddings.
    pub(crate) embed: Option<Matrix>,
    pub(crate) embed_scale: Option<f32>,
    /// All 2L sublayers; those outside [`Model::part`] are placeholders without weights.
    pub(crate) sublayers: Vec<Sublayer>,
    /// `None` in a part of the model that does not end at sublayer 2L.
    pub(crate) final_norm: Option<RmsNorm>,
    /// `None` when the LM head is the embedding matrix (or not loaded).
    pub(crate) lm_head: Option<Matrix>,
    pub(crate) final_softcap: Option<f32>,
    pub(crate) weight_dtype: WeightDtype,
    /// The sublayers loaded ([`LoadOptions::sublayers`]).
    pub(crate) part: Range<usize>,
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
    /// `matrix_dtype` on another device ([`Model::load_with_options`] with the whole model).
    pub fn load_with(
        config: &ModelConfig,
        weights: &dyn TensorSource,
        device: &Device,
        absent: &BTreeSet<usize>,
        dtype: WeightDtype,
        matrix_dtype: DType,
    ) -> Result<Model> {
        let options = LoadOptions {
            absent: absent.clone(),
            weight_dtype: dtype,
            matrix_dtype,
            sublayers: None,
        };
        Self::load_with_options(config, weights, device, &options)
    }

    /// How the weight matrices are held ([`WeightDtype`]).
    pub fn weight_dtype(&self) -> WeightDtype {
        self.weight_dtype
    }

    /// The types the weight matrices are held in, with how many matrices and bytes of each
    /// (`"f32"`, `"bf16"`, `"Q4_1"`, ...).
    pub fn weight_storage(&self) -> BTreeMap<String, (usize, usize)> {
        self.weight_storage_of(0..self.sublayers.len(), true, true)
    }

    /// [`Model::weight_storage`] of sublayers `range` only (those loaded), with the embedding
    /// matrix when `embed` and a separate LM head when `head`: pipeline stages add up theirs to
    /// the whole model's.
    pub fn weight_storage_of(
        &self,
        range: Range<usize>,
        embed: bool,
        head: bool,
    ) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut add = |m: &Matrix| {
            let e = out.entry(m.stored_type()).or_default();
            e.0 += 1;
            e.1 += m.stored_bytes();
        };
        if let Some(e) = self.embed.as_ref().filter(|_| embed) {
            add(e);
        }
        if let Some(h) = self.lm_head.as_ref().filter(|_| head) {
            add(h);
        }
        for s in self.sublayers.get(range).unwrap_or_default() {
            s.for_each_matrix(&mut add);
            if let Some(m) = &s.shortcut {
                add(m);
            }
        }
        out
    }

    /// [`Model::weight_storage`] in words, e.g. `"stored: Q4_1 ×211 (76.2 MB), Q6_K ×1 (22.1 MB)"`.
    pub fn weight_storage_summary(&self) -> String {
        self.storage_summary(&self.weight_storage())
    }

    /// A [`Model::weight_storage`] map (e.g. the sum of the stages') in the words of
    /// [`Model::weight_storage_summary`].
    pub fn storage_summary(&self, storage: &BTreeMap<String, (usize, usize)>) -> String {
        let parts: Vec<String> = storage
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
            "model.embed_tokens.weight" => return dense(self.embed.as_ref().ok_or_else(missing)?),
            "lm_head.weight" => return dense(self.head_weight().map_err(|_| missing())?),
            "model.norm.weight" => {
                return host(&self.final_norm.as_ref().ok_or_else(missing)?.weight)
            }
            "model.norm.bias" => {
                let norm = self.final_norm.as_ref().ok_or_else(missing)?;
                return host(norm.bias.as_ref().ok_or_else(missing)?);
            }
            _ => {}
        }
        let rest = name.strip_prefix("model.layers.").ok_or_else(missing)?;
        let (block, rest) = rest.split_once('.').ok_or_else(missing)?;
        let block: usize = block.parse().map_err(|_| missing())?;
        let names = self.config.recipe().tensors;
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
        // A fused projection's weight: its parts' rows, stacked again.
        let stacked = |parts: &[&crate::layers::Linear], part: &str| -> Result<Tensor> {
            if part != "weight" {
                return Err(missing());
            }
            let mut values = Vec::new();
            let mut rows = 0;
            let mut cols = 0;
            for l in parts {
                let t = dense(&l.weight)?;
                rows += t.rows();
                cols = t.cols();
                values.extend(t.to_vec_f32()?);
            }
            Ok(Tensor::from_vec(values, &[rows, cols], &Device::Cpu)?)
        };
        fn norm_of(r: &str) -> Option<&str> {
            r.strip_suffix(".weight")
        }
        let in_module = |r: &'_ str, module: &str| -> Option<String> {
            r.strip_prefix(module)?
                .strip_prefix('.')
                .map(str::to_string)
        };
        let post = |s: &Sublayer| -> Result<Tensor> {
            host(&s.post_norm.as_ref().ok_or_else(missing)?.weight)
        };
        // A LayerNorm's bias (GPT-NeoX).
        let norm_bias = |r: &str, module: Option<&str>, s: &Sublayer| -> Option<Result<Tensor>> {
            let bias = s.norm.as_ref()?.bias.as_ref()?;
            (module.is_some() && r.strip_suffix(".bias") == module).then(|| host(bias))
        };
        if let Some(t) = norm_bias(rest, names.attn_norm, attn) {
            return t;
        }
        if let Some(t) = norm_bias(rest, names.ffn_norm, mlp) {
            return t;
        }
        match (rest, &attn.branch, &mlp.branch) {
            (r, Branch::Attn(_), _) if norm_of(r).is_some() && norm_of(r) == names.attn_norm => {
                host(&attn.norm.as_ref().ok_or_else(missing)?.weight)
            }
            (r, Branch::Attn(_), _)
                if norm_of(r).is_some() && norm_of(r) == names.attn_post_norm =>
            {
                post(attn)
            }
            (r, _, Branch::Mlp(_) | Branch::Moe(_))
                if norm_of(r).is_some() && norm_of(r) == names.ffn_norm =>
            {
                host(&mlp.norm.as_ref().ok_or_else(missing)?.weight)
            }
            (r, _, Branch::Mlp(_) | Branch::Moe(_))
                if norm_of(r).is_some() && norm_of(r) == names.ffn_post_norm =>
            {
                post(mlp)
            }
            (ATTN_SHORTCUT, _, _) => transposed(&attn.shortcut),
            (MLP_SHORTCUT, _, _) => transposed(&mlp.shortcut),
            (r, Branch::Attn(a), _) if in_module(r, names.attn).is_some() => {
                let r = in_module(r, names.attn).ok_or_else(missing)?;
                let (module, part) = r.split_once('.').ok_or_else(missing)?;
                match module {
                    m if Some(m) == names.fused_qkv => stacked(&[&a.q, &a.k, &a.v], part),
                    _ if names.fused_qkv.is_some()
                        && matches!(module, "q_proj" | "k_proj" | "v_proj") =>
                    {
                        Err(missing())
                    }
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
            (r, _, Branch::Mlp(m)) if in_module(r, names.ffn).is_some() => {
                let r = in_module(r, names.ffn).ok_or_else(missing)?;
                let (module, part) = r.split_once('.').ok_or_else(missing)?;
                match names.ffn_kind {
                    FfnTensors::Gated { gate, .. } if module == gate => {
                        linear(m.gate.as_ref().ok_or_else(missing)?, part)
                    }
                    FfnTensors::Gated { up, .. } if module == up => linear(&m.up, part),
                    FfnTensors::Gated { down, .. } if module == down => linear(&m.down, part),
                    FfnTensors::Plain { up, .. } if module == up => linear(&m.up, part),
                    FfnTensors::Plain { down, .. } if module == down => linear(&m.down, part),
                    FfnTensors::FusedGated { gate_up, .. } if module == gate_up => {
                        stacked(&[m.gate.as_ref().ok_or_else(missing)?, &m.up], part)
                    }
                    FfnTensors::FusedGated { down, .. } if module == down => linear(&m.down, part),
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
        self.embed.as_ref().map_or(0, Matrix::elem_count)
            + self
                .sublayers
                .iter()
                .map(|s| s.param_count() + s.shortcut_param_count())
                .sum::<usize>()
            + self.final_norm.as_ref().map_or(0, RmsNorm::param_count)
            + self.lm_head.as_ref().map_or(0, Matrix::elem_count)
    }

    /// Logits `[n, t, vocab]` of `n` token sequences of equal length `t` under `plan`.
    pub fn forward(&self, tokens: &[Vec<u32>], plan: &Plan) -> Result<Tensor> {
        let (n, t) = self.check_tokens(tokens)?;
        self.check_plan(plan)?;
        let mut x = self.embed_batch(tokens)?;
        for s in 0..self.sublayers.len() {
            self.apply_stream(s, &mut x, n, t, &|i| plan.is_removed(i))?;
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
            self.apply_stream(s, &mut x, n, t, &|i| plan.is_removed(i))?;
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
            self.apply_stream(s, &mut x, n, t, &|i| plan.is_removed(i))?;
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
            self.apply_stream(s, &mut x, n, t, &|i| plan.is_removed(i))?;
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
        match self.sublayers[self.part.clone()]
            .iter()
            .find(|s| matches!(s.branch, Branch::Absent) && !plan.is_removed(s.id.index()))
        {
            Some(s) => Err(Error::Absent(s.id)),
            None => Ok(()),
        }
    }

    /// Sublayers absent from the checkpoint (see [`Model::load_pruned`]).
    pub fn absent_sublayers(&self) -> BTreeSet<usize> {
        self.sublayers[self.part.clone()]
            .iter()
            .filter(|s| matches!(s.branch, Branch::Absent))
            .map(|s| s.id.index())
            .collect()
    }

    /// The sublayers this model holds: `0..2L`, or the range of a part loaded with
    /// [`LoadOptions::sublayers`] (a pipeline stage). A part runs [`Model::embed_tokens`] when it
    /// starts at 0, [`Model::advance`] over its own sublayers, and [`Model::resume`] from its
    /// start when it ends at 2L.
    pub fn part(&self) -> Range<usize> {
        self.part.clone()
    }

    /// The residual stream `[n, t, d]` entering sublayer 0: the (scaled) embeddings of `tokens`.
    pub fn embed_tokens(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let (n, t) = self.check_tokens(tokens)?;
        Ok(self
            .embed_batch(tokens)?
            .reshape(&[n, t, self.config.hidden_size])?)
    }

    /// Embeddings of the concatenated rows `[Σ len, d]`.
    pub(crate) fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        // A last part with tied embeddings holds the matrix for its head, not as an input.
        let embed = match &self.embed {
            Some(e) if self.part.start == 0 => e,
            _ => return Err(self.not_loaded("the embeddings")),
        };
        let mut x = embed.embedding(ids)?;
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
    /// whole sequences, under the plan that `removed` describes; a removed sublayer only applies
    /// its shortcut, if any. In a parallel block the attention sublayer does nothing and the FFN
    /// sublayer runs both kept branches on the block input ([`Model::parallel_branches`]).
    pub(crate) fn apply_stream(
        &self,
        s: usize,
        x: &mut Tensor,
        n: usize,
        t: usize,
        removed: &dyn Fn(usize) -> bool,
    ) -> Result<()> {
        if !self.part.contains(&s) {
            return Err(self.not_loaded(&format!("sublayer {}", SublayerId::from_index(s))));
        }
        let parallel = self.parallel_branches(s, removed);
        if parallel.is_none() && removed(s) {
            let rows = x.rows();
            return self.sublayers[s].bypass(&mut [Part { x, row: 0, rows }]);
        }
        if parallel.as_ref().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        let per = (CHUNK_ROWS / t).max(1);
        let mut seq = 0;
        while seq < n {
            let k = per.min(n - seq);
            let batch = Batch::uniform(k, t, 0);
            let mut parts = [Part {
                x,
                row: seq * t,
                rows: k * t,
            }];
            match &parallel {
                Some(run) => apply_parallel(
                    run.iter()
                        .map(|&i| (&self.sublayers[i], KvMode::Plain))
                        .collect(),
                    &mut parts,
                    &batch,
                )?,
                None => self.sublayers[s].apply(&mut parts, &batch, KvMode::Plain)?,
            }
            seq += k;
        }
        Ok(())
    }

    /// At the attention sublayer `s` of a parallel block, in a loop that runs a whole block at a
    /// time: the block's branches that `plan` keeps, the attention with `attn` (its key/value
    /// mode) first, to run together on the block input ([`apply_parallel`]).
    pub(crate) fn parallel_run<'a>(
        &'a self,
        s: usize,
        plan: &Plan,
        attn: KvMode<'a>,
    ) -> Vec<(&'a Sublayer, KvMode<'a>)> {
        let mut run = Vec::with_capacity(2);
        if !plan.is_removed(s) {
            run.push((&self.sublayers[s], attn));
        }
        if let Some(ffn) = self
            .sublayers
            .get(s + 1)
            .filter(|_| !plan.is_removed(s + 1))
        {
            run.push((ffn, KvMode::Plain));
        }
        run
    }

    /// For a sublayer of a parallel block, the sublayers whose branches run at `s` under the plan
    /// that `removed` describes: none at the attention sublayer, and at the FFN sublayer the
    /// block's attention and FFN that are kept (attention first), both reading the block input.
    /// `None` for a sublayer of a sequential block.
    pub(crate) fn parallel_branches(
        &self,
        s: usize,
        removed: &dyn Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        if !self.sublayers.get(s)?.parallel {
            return None;
        }
        if s.is_multiple_of(2) {
            return Some(Vec::new());
        }
        Some([s - 1, s].into_iter().filter(|&i| !removed(i)).collect())
    }

    /// The LM-head weight `[vocab, d]`.
    pub(crate) fn head_weight(&self) -> Result<&Matrix> {
        self.lm_head
            .as_ref()
            .or(self.embed.as_ref())
            .filter(|_| self.final_norm.is_some())
            .ok_or_else(|| self.not_loaded("the LM head"))
    }

    /// The final norm, which only the part that ends the model holds.
    pub(crate) fn final_norm(&self) -> Result<&RmsNorm> {
        self.final_norm
            .as_ref()
            .ok_or_else(|| self.not_loaded("the final norm"))
    }

    fn not_loaded(&self, what: &str) -> Error {
        Error::NotLoaded {
            what: what.to_string(),
            part: self.part.clone(),
        }
    }

    /// Logits `[rows, vocab]` of residual rows `[rows, d]`: final norm, LM head, optional softcap.
    pub(crate) fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.final_norm()?.forward(x)?;
        let mut y = self.head_weight()?.matmul_t(&h)?;
        drop(h);
        if let Some(cap) = self.final_softcap {
            y.softcap_in_place(cap)?;
        }
        Ok(y)
    }
}
