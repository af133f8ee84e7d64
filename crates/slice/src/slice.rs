//! The SliceGPT transform: PCA bases of the residual stream of the sliced network, computed
//! sequentially, and the rotated and sliced weights.

use crate::linalg::{covariance, matmul_views, symmetric_eigen, Dense};
use crate::{Error, Result};
use finercut_format::own_types::{mark, OwnLayout};
use finercut_format::{
    f32_to_bytes, io::write_json, write_safetensors_streamed, ArchParams, Bytes, Capability, DType,
    ModelConfig, Overwrite, QkNorm, RawTensor, SliceParams, StagedDir, TensorSource, TensorSpec,
    Tokenizer,
};
use finercut_model::{Model, Plan, ATTN_SHORTCUT, MLP_SHORTCUT};
use finercut_tensor::{Device, Tensor};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// What [`slice_model`] needs besides the model and the calibration tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceSettings {
    /// The residual width `d'` after slicing (`1..=hidden_size`); see
    /// [`crate::dim_for_ratio`] and [`crate::dim_for_removed_params`].
    pub dim: usize,
}

/// Refuses what SliceGPT cannot slice: Gemma 3 (its norms after each sublayer do not commute
/// with a rotation of the residual stream), Mixtral (a router reads the stream and every expert
/// would need its own rotation; not implemented), and an already sliced model. The error names
/// the architecture.
pub fn check_supported(config: &ModelConfig) -> Result<()> {
    config
        .supports(Capability::SliceGpt)
        .map_err(Error::Unsupported)?;
    if let ArchParams::Sliced(p) = config.arch {
        return Err(Error::Unsupported(format!(
            "the model is already sliced (from {} to {} dimensions)",
            p.original_hidden_size, config.hidden_size
        )));
    }
    Ok(())
}

/// A sliced model: its configuration and weights (`f32`, Hugging Face names plus SliceGPT's
/// `model.layers.N.attn_shortcut_Q` / `mlp_shortcut_Q`), ready to run ([`SlicedModel::to_model`])
/// or to save ([`SlicedModel::save`]).
pub struct SlicedModel {
    config: ModelConfig,
    tensors: BTreeMap<String, RawTensor>,
    record: Json,
    /// Eigenvalues of the covariance at every residual point (`2L + 1` lists, descending).
    eigenvalues: Vec<Vec<f64>>,
    /// `Q_p[:, :d']` at every residual point.
    bases: Vec<Dense>,
}

impl std::fmt::Debug for SlicedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlicedModel")
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .field("record", &self.record)
            .finish()
    }
}

/// In-memory weights by name.
struct MemSource<'a>(&'a BTreeMap<String, RawTensor>);

impl TensorSource for MemSource<'_> {
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        self.0.get(name).cloned().ok_or_else(|| {
            finercut_format::Error::malformed("sliced model", format!("no tensor `{name}`"))
        })
    }
}

impl SlicedModel {
    /// The sliced model's configuration (`hidden_size` = `d'`, untied head, `slicegpt` settings).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Its parameters, counted over the weights it holds (equal to
    /// [`crate::sliced_param_count`]).
    pub fn param_count(&self) -> usize {
        self.tensors.values().map(RawTensor::numel).sum()
    }

    /// The names and shapes of its tensors.
    pub fn tensor_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect()
    }

    /// The `slicegpt` section written to config.json (original and new width, ratio, calibration
    /// settings and hashes).
    pub fn record(&self) -> &Json {
        &self.record
    }

    /// Eigenvalues of the covariance at every residual point `0..=2L`, in descending order.
    pub fn eigenvalues(&self) -> &[Vec<f64>] {
        &self.eigenvalues
    }

    /// The kept principal directions `Q_p[:, :d']` (`d × d'`, columns by decreasing eigenvalue)
    /// at every residual point `0..=2L`, in the original basis.
    pub fn bases(&self) -> &[Dense] {
        &self.bases
    }

    /// Builds the runnable model on `device`, through the same loader as a saved sliced
    /// checkpoint.
    pub fn to_model(&self, device: &Device) -> Result<Model> {
        Ok(Model::load(
            &self.config,
            &MemSource(&self.tensors),
            device,
        )?)
    }

    /// [`SlicedModel::to_model`] on the CPU, consuming the weights' owner.
    pub fn into_model(self) -> Result<Model> {
        self.to_model(&Device::Cpu)
    }

    /// Writes the model to `dir`: `finercut-slicegpt.safetensors` (every tensor in `dtype`: `F32`
    /// keeps the computed weights exactly, `BF16`/`F16` halve the file, rounding to nearest
    /// even; named by [`OwnLayout::weights_file`], with `__metadata__` `format`
    /// `finercut-slicegpt`, instead of the `model.safetensors` that stock loaders read),
    /// `config.json` (`model_type` `finercut-slicegpt`, which stock loaders refuse, with the
    /// source's `model_type` in the `slicegpt` section ([`finercut_format::own_types`]);
    /// `hidden_size` = `d'`, explicit `head_dim`, `tie_word_embeddings: false`, and `extra`'s
    /// keys added to the section) and, when given, `tokenizer.json`.
    /// The directory is written beside `dir` and renamed into place
    /// ([`finercut_format::StagedDir`]); a directory that already holds a checkpoint is refused
    /// or replaced, as `overwrite` says. Returns what was found of interrupted earlier runs
    /// ([`finercut_format::StagedDir::notes`]).
    pub fn save(
        &self,
        dir: &Path,
        overwrite: Overwrite,
        tokenizer: Option<&Tokenizer>,
        extra: &BTreeMap<String, Json>,
        dtype: DType,
    ) -> Result<Vec<String>> {
        let staged = StagedDir::begin(dir, overwrite)?;
        let notes = staged.notes().to_vec();
        let dir = staged.path();
        let tensors: Vec<&RawTensor> = self.tensors.values().collect();
        let specs: Vec<TensorSpec> = tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dtype,
                shape: t.shape.clone(),
            })
            .collect();
        let metadata = OwnLayout::Sliced.weights_metadata();
        let weights = dir.join(OwnLayout::Sliced.weights_file());
        write_safetensors_streamed(&weights, &specs, &metadata, |i| {
            let t = tensors[i];
            if t.dtype == dtype {
                Ok(t.data.clone())
            } else {
                Ok(Bytes::from_vec(f32_to_bytes(&t.to_f32_vec()?, dtype)))
            }
        })?;
        let mut out_config = self.config.clone();
        out_config.torch_dtype = dtype;
        let mut config = out_config.to_hf_json();
        let mut record = self.record.clone();
        if let Some(obj) = record.as_object_mut() {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        if let Some(obj) = config.as_object_mut() {
            obj.insert("slicegpt".into(), record);
        }
        let config_path = dir.join("config.json");
        // Stock loaders would drop the shortcut matrices without a word: give them a model_type
        // they refuse (finercut reads the source's back from the `slicegpt` section).
        mark(
            &mut config,
            OwnLayout::Sliced,
            &config_path.display().to_string(),
        )?;
        write_json(&config_path, &config)?;
        if let Some(t) = tokenizer {
            t.save(&dir.join("tokenizer.json"))?;
        }
        staged.commit()?;
        Ok(notes)
    }
}

/// SHA-256 of token ids (little-endian `u32`, sequence after sequence), as lowercase hex.
pub fn tokens_sha256(tokens: &[Vec<u32>]) -> String {
    let mut h = Sha256::new();
    for id in tokens.iter().flatten() {
        h.update(id.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// The values of `name` on the host.
fn host(model: &Model, name: &str) -> Result<Vec<f32>> {
    Ok(model.weight(name)?.to_vec_f32()?)
}

/// `x Q Qᵀ` for rows `x` (`rows × d`): the projection onto the kept principal directions, in the
/// original basis.
fn project(x: &[f32], rows: usize, d: usize, q: &Dense) -> Result<Vec<f32>> {
    let xd = Dense::from_f32(x, rows, d)?;
    let coords = matmul_views(xd.view(), q.view());
    Ok(matmul_views(coords.view(), q.view().transpose()).to_f32())
}

/// Principal directions of rows `x` (`rows × d`): eigenvalues (descending) and the `d × k` matrix
/// of the first `k` eigenvectors.
fn basis(x: &[f32], rows: usize, d: usize, k: usize, point: usize) -> Result<(Vec<f64>, Dense)> {
    let h = covariance(x, rows, d)?;
    let (values, vectors) = symmetric_eigen(&h, point)?;
    Ok((values, vectors.first_cols(k)))
}

/// `W diag(γ) Q` for `W` (`out × d`): the weights of a linear layer reading a norm's output,
/// with the norm's weight folded in, rotated and sliced to `k` inputs.
fn rotate_in(w: &[f32], out: usize, gamma: &[f32], q: &Dense) -> Result<Vec<f32>> {
    let d = q.rows;
    let mut gq = q.clone();
    for (i, &g) in gamma.iter().enumerate().take(d) {
        for v in &mut gq.data[i * q.cols..(i + 1) * q.cols] {
            *v *= f64::from(g);
        }
    }
    let wd = Dense::from_f32(w, out, d)?;
    Ok(matmul_views(wd.view(), gq.view()).to_f32())
}

/// `Qᵀ W` for `W` (`d × inner`): the weights of a layer writing the residual stream, rotated and
/// sliced to `k` outputs.
fn rotate_out(w: &[f32], inner: usize, q: &Dense) -> Result<Vec<f32>> {
    let wd = Dense::from_f32(w, q.rows, inner)?;
    Ok(matmul_views(q.view().transpose(), wd.view()).to_f32())
}

fn raw(name: String, shape: Vec<usize>, values: Vec<f32>) -> (String, RawTensor) {
    (
        name.clone(),
        RawTensor {
            name,
            dtype: DType::F32,
            shape,
            data: Bytes::from_f32_vec(values),
        },
    )
}

/// Slices `model` to `settings.dim` residual dimensions with SliceGPT (Ashkboos et al., arXiv
/// 2401.15024), calibrated on `calibration` (equally long token sequences).
///
/// The bases are computed sequentially, as the paper does: the covariance at residual point
/// `p + 1` is that of the stream of the network already sliced up to sublayer `p`. In the original
/// basis that stream is the dense sublayer `p` applied to the projection `x Q_p Q_pᵀ` of the
/// stream entering it (the sliced sublayer computes exactly this, rotated by `Q_{p+1}`, because
/// its norm still divides by the original width), so it is computed with the dense model's
/// [`Model::advance`].
pub fn slice_model(
    model: &Model,
    calibration: &[Vec<u32>],
    settings: &SliceSettings,
) -> Result<SlicedModel> {
    let c = model.config();
    check_supported(c)?;
    if let Some(&i) = model.absent_sublayers().iter().next() {
        return Err(Error::Unsupported(format!(
            "sublayer {i} is absent from the checkpoint (a pruned export); slice the dense model"
        )));
    }
    let d = c.hidden_size;
    let k = settings.dim;
    if k == 0 || k > d {
        return Err(Error::Input(format!(
            "residual width {k} is not in 1..={d}"
        )));
    }
    let (n, t) = model.check_tokens(calibration)?;
    let rows = n * t;
    let count = model.num_sublayers();

    // Residual point 0: the embeddings.
    let embed = host(model, "model.embed_tokens.weight")?;
    let mut x = Vec::with_capacity(rows * d);
    for &id in calibration.iter().flatten() {
        let id = id as usize;
        x.extend_from_slice(&embed[id * d..(id + 1) * d]);
    }
    let mut eigenvalues = Vec::with_capacity(count + 1);
    let mut bases = Vec::with_capacity(count + 1);
    let (values, q) = basis(&x, rows, d, k, 0)?;
    eigenvalues.push(values);
    bases.push(q);
    let dense = Plan::dense();
    for p in 0..count {
        let projected = project(&x, rows, d, &bases[p])?;
        let state = Tensor::from_vec(projected, &[n, t, d], &model.device())?;
        x = model
            .advance(&state, p, p + 1, &dense)?
            .to_device(&Device::Cpu)?
            .to_vec_f32()?;
        let (values, q) = basis(&x, rows, d, k, p + 1)?;
        eigenvalues.push(values);
        bases.push(q);
    }
    drop(x);

    let mut tensors = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        let (n, r) = raw(name, shape, values);
        tensors.insert(n, r);
    };
    let vocab = c.vocab_size;
    add(
        "model.embed_tokens.weight".into(),
        vec![vocab, k],
        rotate_in(&embed, vocab, &vec![1.0; d], &bases[0])?,
    );
    drop(embed);
    let q_rows = c.num_attention_heads * c.head_dim;
    let kv_rows = c.num_key_value_heads * c.head_dim;
    let ffn = c.intermediate_size;
    for b in 0..c.num_hidden_layers {
        let l = |s: &str| format!("model.layers.{b}.{s}");
        let (qa, qm, qn) = (&bases[2 * b], &bases[2 * b + 1], &bases[2 * b + 2]);
        // Attention: reads point 2b, writes point 2b + 1.
        let gamma = host(model, &l("input_layernorm.weight"))?;
        for (proj, out) in [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)] {
            let w = host(model, &l(&format!("self_attn.{proj}.weight")))?;
            add(
                l(&format!("self_attn.{proj}.weight")),
                vec![out, k],
                rotate_in(&w, out, &gamma, qa)?,
            );
            if c.attention_bias {
                let name = l(&format!("self_attn.{proj}.bias"));
                add(name.clone(), vec![out], host(model, &name)?);
            }
        }
        if c.recipe().qk_norm == QkNorm::PerHead {
            for norm in ["q_norm", "k_norm"] {
                let name = l(&format!("self_attn.{norm}.weight"));
                add(name.clone(), vec![c.head_dim], host(model, &name)?);
            }
        }
        let o = host(model, &l("self_attn.o_proj.weight"))?;
        add(
            l("self_attn.o_proj.weight"),
            vec![k, q_rows],
            rotate_out(&o, q_rows, qm)?,
        );
        if c.o_proj_bias() {
            let bias = host(model, &l("self_attn.o_proj.bias"))?;
            add(
                l("self_attn.o_proj.bias"),
                vec![k],
                rotate_out(&bias, 1, qm)?,
            );
        }
        add(l("input_layernorm.weight"), vec![k], vec![1.0; k]);
        add(
            l(ATTN_SHORTCUT),
            vec![k, k],
            matmul_views(qa.view().transpose(), qm.view()).to_f32(),
        );
        // FFN: reads point 2b + 1, writes point 2b + 2.
        let gamma = host(model, &l("post_attention_layernorm.weight"))?;
        for proj in ["gate_proj", "up_proj"] {
            let w = host(model, &l(&format!("mlp.{proj}.weight")))?;
            add(
                l(&format!("mlp.{proj}.weight")),
                vec![ffn, k],
                rotate_in(&w, ffn, &gamma, qm)?,
            );
        }
        let down = host(model, &l("mlp.down_proj.weight"))?;
        add(
            l("mlp.down_proj.weight"),
            vec![k, ffn],
            rotate_out(&down, ffn, qn)?,
        );
        add(l("post_attention_layernorm.weight"), vec![k], vec![1.0; k]);
        add(
            l(MLP_SHORTCUT),
            vec![k, k],
            matmul_views(qm.view().transpose(), qn.view()).to_f32(),
        );
    }
    let last = &bases[count];
    let gamma = host(model, "model.norm.weight")?;
    let head = host(model, "lm_head.weight")?;
    add(
        "lm_head.weight".into(),
        vec![vocab, k],
        rotate_in(&head, vocab, &gamma, last)?,
    );
    drop(head);
    add("model.norm.weight".into(), vec![k], vec![1.0; k]);

    let mut config = c.clone();
    config.hidden_size = k;
    config.tie_word_embeddings = false;
    config.torch_dtype = DType::F32;
    config.arch = ArchParams::Sliced(SliceParams {
        original_hidden_size: d,
    });
    config.validate("sliced model")?;
    let record = json!({
        "original_hidden_size": d,
        "hidden_size": k,
        "slicing_ratio": 1.0 - k as f64 / d as f64,
        "signals": "sequential",
        "calibration": {
            "samples": n,
            "seq_len": t,
            "tokens_sha256": tokens_sha256(calibration),
        },
        "version": env!("CARGO_PKG_VERSION"),
    });
    Ok(SlicedModel {
        config,
        tensors,
        record,
        eigenvalues,
        bases,
    })
}
