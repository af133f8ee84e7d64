//! [`GgufStore`]: a GGUF file seen as a Hugging Face checkpoint.
//!
//! Three things separate llama.cpp's tensors from the Hugging Face ones:
//! - **Names**: `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj.weight`, etc.
//!   (llama.cpp `gguf-py/gguf/tensor_mapping.py`). `ffn_norm` is the pre-FFN norm: Llama calls it
//!   `post_attention_layernorm`, Gemma 3 `pre_feedforward_layernorm`.
//! - **Q/K row order** (architecture `llama` only): llama.cpp's `convert_hf_to_gguf.py`
//!   (`LlamaModel.permute`) stores `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)`
//!   for `q_proj` (with `n_head` heads) and `k_proj` (with `n_head_kv` heads), so its RoPE can
//!   rotate adjacent pairs; Hugging Face rotates the two halves of each head. [`unpermute_rows`]
//!   inverts it. Qwen2 and Gemma 3 use the half-split ("NeoX") RoPE in llama.cpp and are stored
//!   unpermuted.
//! - **Gemma norms**: Gemma computes `x * (1 + w)` and stores `w`; the converter
//!   (`Gemma3Model.modify_tensors`: `if name.endswith("norm.weight"): data_torch += norm_shift`,
//!   `norm_shift = 1.0`) stores `w + 1`. The store subtracts 1 again, as transformers' GGUF loader
//!   does.
//!
//! Mixtral's expert tensors (`ffn_{gate,up,down}_exps`, one `[n_expert, rows, cols]` tensor each)
//! are split into the per-expert `block_sparse_moe.experts.E.{w1,w3,w2}` tensors.
//!
//! Llama 3.1's `rope_freqs.weight` (RoPE frequency divisors, no Hugging Face counterpart) is served
//! under its own name, [`ROPE_FREQS_TENSOR`], for a config whose scaling is
//! [`RopeScaling::Factors`](crate::RopeScaling::Factors).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::quants::{self, GgmlType};
use super::{GgufFile, GgufTensorInfo};
use crate::config::ROPE_FREQS_TENSOR;
use crate::tensor::{Bytes, DType, RawTensor, TensorSource};
use crate::{Error, Result};

/// The Hugging Face name of llama.cpp tensor `gguf_name` in a file of architecture `arch`
/// (`general.architecture`), or `None` for tensors without one (e.g. `rope_freqs.weight`, the
/// merged expert tensors, which [`GgufStore`] splits).
pub fn hf_tensor_name(arch: &str, gguf_name: &str) -> Option<String> {
    let rules = crate::family::gguf_tensor_rules(arch);
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => rules.ffn_norm,
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate_inp" => "block_sparse_moe.gate",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// llama.cpp's Q/K permutation, applied to a row-major `[rows, cols]` matrix whose rows form
/// `groups` heads: within each head, row `t * rows_per_head / 2 + i` moves to `2 * i + t`.
/// This is `w.reshape(groups, 2, rows / groups / 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
pub fn permute_rows(w: &[f32], rows: usize, cols: usize, groups: usize) -> Vec<f32> {
    move_rows(w, rows, cols, groups, true)
}

/// The inverse of [`permute_rows`]: GGUF row order back to Hugging Face row order.
pub fn unpermute_rows(w: &[f32], rows: usize, cols: usize, groups: usize) -> Vec<f32> {
    move_rows(w, rows, cols, groups, false)
}

/// Whether `len` values hold `rows` rows of `cols` that split into `groups` heads of even size.
fn permutable(len: usize, rows: usize, cols: usize, groups: usize) -> bool {
    groups > 0 && rows.is_multiple_of(2 * groups) && len == rows * cols
}

fn move_rows<T: Copy>(w: &[T], rows: usize, cols: usize, groups: usize, forward: bool) -> Vec<T> {
    assert!(
        permutable(w.len(), rows, cols, groups),
        "permute: {rows} rows of {cols} cannot form {groups} heads of even size"
    );
    let mut out = Vec::with_capacity(w.len());
    for dst in 0..rows {
        let src = if forward {
            hf_row_of(dst, rows / groups)
        } else {
            gguf_row_of(dst, rows / groups)
        };
        out.extend_from_slice(&w[src * cols..(src + 1) * cols]);
    }
    out
}

/// [`permute_rows`] on stored rows of `row_bytes` bytes each (quantised rows move whole, so a
/// quantised matrix is permuted without requantising); `None` unless `data` holds `rows` such
/// rows that split into `groups` heads of even size.
pub(crate) fn permute_row_bytes(
    data: &[u8],
    rows: usize,
    row_bytes: usize,
    groups: usize,
) -> Option<Vec<u8>> {
    permutable(data.len(), rows, row_bytes, groups)
        .then(|| move_rows(data, rows, row_bytes, groups, true))
}

/// The GGUF row holding Hugging Face row `r` (heads of `g` rows).
fn gguf_row_of(r: usize, g: usize) -> usize {
    let (h, w, half) = (r / g, r % g, g / 2);
    h * g + 2 * (w % half) + w / half
}

/// The Hugging Face row stored at GGUF row `r` (heads of `g` rows).
fn hf_row_of(r: usize, g: usize) -> usize {
    let (h, w, half) = (r / g, r % g, g / 2);
    h * g + (w % 2) * half + w / 2
}

#[derive(Debug, Clone, Copy)]
enum Transform {
    Identity,
    /// Undo llama.cpp's Q/K permutation over this many heads.
    Unpermute {
        groups: usize,
    },
    /// Gemma norm: subtract the 1 the converter added.
    SubOne,
    /// One expert's rows of a merged expert tensor.
    Expert {
        first_row: usize,
    },
}

#[derive(Debug, Clone)]
struct Mapped {
    tensor: usize,
    shape: Vec<usize>,
    transform: Transform,
}

/// A [`TensorSource`] over a GGUF file: Hugging Face names and shapes, tensors dequantised to
/// F32 on each `get` (nothing is cached), Q/K rows and Gemma norms restored.
pub struct GgufStore {
    file: Arc<GgufFile>,
    entries: HashMap<String, Mapped>,
    order: Vec<String>,
    unmapped: Vec<String>,
}

impl GgufStore {
    /// Opens the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::new(Arc::new(GgufFile::open(path)?))
    }

    /// Builds the name table for an open file.
    pub fn new(file: Arc<GgufFile>) -> Result<Self> {
        let arch = file.architecture()?.to_string();
        let (heads, kv_heads) = if arch == "deci" {
            // Per-layer arrays; the layers that keep attention share one value.
            let (_, h, kv, _) = super::deci::deci_layers(&file)?;
            (Some(h.max(1)), Some(kv.max(1)))
        } else {
            let heads = file
                .get_u64(&format!("{arch}.attention.head_count"))?
                .map(|v| v as usize);
            let kv_heads = file
                .get_u64(&format!("{arch}.attention.head_count_kv"))?
                .map(|v| v as usize)
                .or(heads);
            (heads, kv_heads)
        };
        // `deci` stores Q/K rows in llama.cpp's interleaved order, as `llama` does.
        let rules = crate::family::gguf_tensor_rules(&arch);
        let permuted = rules.qk_permuted;
        let mut entries = HashMap::new();
        let mut order = Vec::new();
        let mut unmapped = Vec::new();
        for (ti, t) in file.tensors().iter().enumerate() {
            if rules.stacked_experts {
                if let Some(experts) = expert_names(t) {
                    let n_expert = t.dims.get(2).copied().unwrap_or(0) as usize;
                    let rows_each = t.n_rows() / n_expert.max(1);
                    let shape = t.hf_shape()[1..].to_vec();
                    for (e, name) in experts.into_iter().enumerate() {
                        let m = Mapped {
                            tensor: ti,
                            shape: shape.clone(),
                            transform: Transform::Expert {
                                first_row: e * rows_each,
                            },
                        };
                        order.push(name.clone());
                        entries.insert(name, m);
                    }
                    continue;
                }
            }
            let mapped = if t.name == ROPE_FREQS_TENSOR {
                Some(t.name.clone())
            } else {
                hf_tensor_name(&arch, &t.name)
            };
            let Some(name) = mapped else {
                unmapped.push(t.name.clone());
                continue;
            };
            let shape = t.hf_shape();
            let transform = if permuted && (name.contains(".q_proj.") || name.contains(".k_proj."))
            {
                let groups = if name.contains(".q_proj.") {
                    heads
                } else {
                    kv_heads
                }
                .ok_or_else(|| {
                    Error::malformed(
                        file.path(),
                        format!("metadata `{arch}.attention.head_count` is missing"),
                    )
                })?;
                let rows = shape.first().copied().unwrap_or(0);
                if groups == 0 || rows % (2 * groups) != 0 {
                    return Err(Error::bad_tensor(
                        file.path(),
                        &t.name,
                        format!("{rows} rows do not split into {groups} heads of even size"),
                    ));
                }
                Transform::Unpermute { groups }
            } else if rules.norm_plus_one && name.ends_with("norm.weight") {
                Transform::SubOne
            } else {
                Transform::Identity
            };
            if entries.contains_key(&name) {
                return Err(Error::bad_tensor(
                    file.path(),
                    &t.name,
                    format!("maps to `{name}` twice"),
                ));
            }
            order.push(name.clone());
            entries.insert(
                name,
                Mapped {
                    tensor: ti,
                    shape,
                    transform,
                },
            );
        }
        Ok(GgufStore {
            file,
            entries,
            order,
            unmapped,
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// The Hugging Face shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|m| m.shape.as_slice())
    }

    /// The llama.cpp tensor that Hugging Face tensor `name` comes from.
    pub fn gguf_name(&self, name: &str) -> Option<&str> {
        self.entries
            .get(name)
            .map(|m| self.file.tensors()[m.tensor].name.as_str())
    }

    /// GGUF tensors without a Hugging Face counterpart (left out of [`TensorSource::names`]).
    pub fn unmapped(&self) -> &[String] {
        &self.unmapped
    }

    /// Tensor `name` as `f32`s in Hugging Face layout.
    pub fn get_f32(&self, name: &str) -> Result<Vec<f32>> {
        let m = self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            origin: self.file.path().display().to_string(),
        })?;
        let t: &GgufTensorInfo = &self.file.tensors()[m.tensor];
        let n_rows = m.shape.iter().product::<usize>() / t.row_len().max(1);
        match m.transform {
            Transform::Identity => self.file.dequantize_rows(t, t.n_rows(), |r| r),
            Transform::SubOne => {
                let mut v = self.file.dequantize_rows(t, t.n_rows(), |r| r)?;
                v.iter_mut().for_each(|x| *x -= 1.0);
                Ok(v)
            }
            Transform::Expert { first_row } => {
                self.file.dequantize_rows(t, n_rows, |r| first_row + r)
            }
            Transform::Unpermute { groups } if t.dims.len() == 1 => {
                let v = self.file.dequantize_rows(t, 1, |r| r)?;
                Ok(unpermute_rows(&v, v.len(), 1, groups))
            }
            Transform::Unpermute { groups } => {
                let g = n_rows / groups;
                self.file.dequantize_rows(t, n_rows, |r| gguf_row_of(r, g))
            }
        }
    }
}

/// Where the rows of a [`QuantizedRows`] come from in the GGUF tensor.
#[derive(Debug, Clone, Copy)]
enum RowMap {
    /// Row `r` is GGUF row `first + r`.
    Offset { first: usize },
    /// Row `r` is GGUF row `gguf_row_of(r, per_head)` (llama.cpp's Q/K permutation undone).
    Unpermute { per_head: usize },
}

/// A matrix of a GGUF file kept as stored (quantised blocks, or F16/BF16/F32 rows) in Hugging Face
/// row order, for a caller that dequantises rows only when it needs them
/// ([`TensorSource::get_quantized`]). Its rows dequantise to exactly the values of
/// [`GgufStore::get_f32`].
#[derive(Clone)]
pub struct QuantizedRows {
    name: String,
    path: std::path::PathBuf,
    ggml_type: GgmlType,
    data: Bytes,
    rows: usize,
    row_len: usize,
    row_bytes: usize,
    map: RowMap,
}

impl std::fmt::Debug for QuantizedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuantizedRows({}, {} × {} {})",
            self.name, self.rows, self.row_len, self.ggml_type
        )
    }
}

impl QuantizedRows {
    /// Hugging Face name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ggml storage type of the rows.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// `[rows, cols]` in Hugging Face layout.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.row_len]
    }

    /// Bytes the rows occupy as stored.
    pub fn stored_bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// Dequantises rows `first..first + out.len() / cols` into `out` (whole rows), with the
    /// arithmetic of [`quants::dequantize_row`].
    pub fn dequantize_rows(&self, first: usize, out: &mut [f32]) -> Result<()> {
        let n = out.len() / self.row_len.max(1);
        if self.row_len == 0 || out.len() != n * self.row_len || first + n > self.rows {
            return Err(Error::bad_tensor(
                &self.path,
                &self.name,
                format!(
                    "rows {first}..+{} of {} requested",
                    out.len() as f64 / self.row_len.max(1) as f64,
                    self.rows
                ),
            ));
        }
        for (i, dst) in out.chunks_exact_mut(self.row_len).enumerate() {
            let r = first + i;
            let s = match self.map {
                RowMap::Offset { first } => first + r,
                RowMap::Unpermute { per_head } => gguf_row_of(r, per_head),
            };
            let src = self
                .data
                .get(s * self.row_bytes..(s + 1) * self.row_bytes)
                .ok_or_else(|| {
                    Error::bad_tensor(&self.path, &self.name, format!("row {s} outside the data"))
                })?;
            quants::dequantize_row(self.ggml_type, src, dst)
                .map_err(|msg| Error::bad_tensor(&self.path, &self.name, msg))?;
        }
        Ok(())
    }
}

impl GgufStore {
    /// Matrix `name` kept as stored, when it is a 2-D tensor whose rows [`quants::dequantize_row`]
    /// handles (`None` for vectors and for transforms that change values, such as Gemma's norms).
    pub fn quantized_rows(&self, name: &str) -> Result<Option<QuantizedRows>> {
        let Some(m) = self.entries.get(name) else {
            return Ok(None);
        };
        let t: &GgufTensorInfo = &self.file.tensors()[m.tensor];
        if m.shape.len() != 2 || !t.ggml_type.can_dequantize() {
            return Ok(None);
        }
        let Some((block, block_bytes)) = t.ggml_type.layout() else {
            return Ok(None);
        };
        let (rows, row_len) = (m.shape[0], m.shape[1]);
        if row_len != t.row_len() || row_len == 0 || !row_len.is_multiple_of(block) {
            return Ok(None);
        }
        let map = match m.transform {
            Transform::Identity => RowMap::Offset { first: 0 },
            Transform::Expert { first_row } => RowMap::Offset { first: first_row },
            Transform::Unpermute { groups } => RowMap::Unpermute {
                per_head: rows / groups,
            },
            Transform::SubOne => return Ok(None),
        };
        let data = self.file.tensor_bytes(&t.name)?;
        let row_bytes = row_len / block * block_bytes;
        let last = match map {
            RowMap::Offset { first } => first + rows,
            RowMap::Unpermute { .. } => rows,
        };
        if last > t.n_rows() || data.len() < last * row_bytes {
            return Err(Error::bad_tensor(
                self.file.path(),
                &t.name,
                format!("{rows} rows of {row_bytes} bytes do not fit the tensor's data"),
            ));
        }
        Ok(Some(QuantizedRows {
            name: name.to_string(),
            path: self.file.path().to_path_buf(),
            ggml_type: t.ggml_type,
            data,
            rows,
            row_len,
            row_bytes,
            map,
        }))
    }
}

/// For a merged expert tensor `blk.N.ffn_{gate,up,down}_exps.weight`, the per-expert HF names.
fn expert_names(t: &GgufTensorInfo) -> Option<Vec<String>> {
    let rest = t.name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let w = match part {
        "ffn_gate_exps.weight" => "w1",
        "ffn_down_exps.weight" => "w2",
        "ffn_up_exps.weight" => "w3",
        _ => return None,
    };
    if t.dims.len() != 3 {
        return None;
    }
    let n = t.dims[2] as usize;
    Some(
        (0..n)
            .map(|e| format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight"))
            .collect(),
    )
}

impl TensorSource for GgufStore {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn get_quantized(&self, name: &str) -> Result<Option<QuantizedRows>> {
        self.quantized_rows(name)
    }

    fn get(&self, name: &str) -> Result<RawTensor> {
        let data = self.get_f32(name)?;
        let shape = self.entries[name].shape.clone();
        Ok(RawTensor {
            name: name.to_string(),
            dtype: DType::F32,
            shape,
            data: Bytes::from_f32_vec(data),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_llama_cpp() {
        assert_eq!(
            hf_tensor_name("llama", "blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_tensor_name("llama", "blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_tensor_name("gemma3", "blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_tensor_name("gemma3", "blk.1.post_ffw_norm.weight").unwrap(),
            "model.layers.1.post_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_tensor_name("qwen2", "blk.2.attn_k.bias").unwrap(),
            "model.layers.2.self_attn.k_proj.bias"
        );
        assert_eq!(
            hf_tensor_name("llama", "output.weight").unwrap(),
            "lm_head.weight"
        );
        assert!(hf_tensor_name("llama", "rope_freqs.weight").is_none());
        assert!(hf_tensor_name("llama", "blk.x.attn_q.weight").is_none());
    }

    #[test]
    fn row_maps_are_inverse() {
        for g in [2, 4, 8, 64] {
            for r in 0..g * 3 {
                assert_eq!(hf_row_of(gguf_row_of(r, g), g), r);
            }
        }
    }
}
