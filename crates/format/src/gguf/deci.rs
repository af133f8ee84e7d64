//! Pruned models as GGUF files that llama.cpp runs: its `deci` architecture (NVIDIA's
//! Nemotron-NAS / DeciLM family), whose blocks may lack attention or FFN.
//!
//! llama.cpp (`src/models/deci.cpp`, `conversion/deci.py`) reads three per-layer arrays:
//! `deci.attention.head_count`, `deci.attention.head_count_kv` and `deci.feed_forward_length`
//! (`int32` arrays of `deci.block_count` entries), and runs layer `il` as
//! - `head_count == 0`: no attention (the residual passes through);
//! - `head_count > 0, head_count_kv == 0`: "linear attention", `x + attn_output(attn_norm(x))`;
//! - otherwise the Llama attention (its Q/K rows in llama.cpp's interleaved RoPE order);
//! - `feed_forward_length > 0`: the SwiGLU FFN with `ffn_norm`.
//!
//! Two cases are not what they seem, and are encoded differently here so that the file computes
//! exactly the pruned model:
//! - **A block that keeps its attention and loses its FFN.** deci.cpp `continue`s before the
//!   residual update (`inpL = cur`) when `feed_forward_length` is 0, so that block's attention
//!   output would be dropped too. Such a block gets an FFN of width 1 whose weights are zero
//!   (F32 `ffn_gate`/`ffn_up` `[d, 1]`, `ffn_down` `[1, d]`, `ffn_norm` of ones): it adds exactly
//!   `0.0` for a cost of 3·d multiply-adds per token.
//! - **Layer 0 without attention.** llama.cpp derives the head size from layer 0's head count
//!   (`n_head()` with `il = 0`), and reads `attention.key_length` only when that count is not 0;
//!   a first layer without heads would leave every layer with head size 0. When the first kept
//!   block has no attention it becomes a "linear attention" layer whose `attn_output` is zero
//!   (F16 `[d, d]`), which adds exactly `0.0`.
//!
//! Whole removed blocks are dropped and the rest renumbered. Tensors are copied byte for byte, so
//! a Q4_1 tensor stays Q4_1 with the same blocks. A model with nothing removed keeps its own
//! architecture.
//!
//! **Qwen2 sources.** A Qwen2 block is a Llama block with Q/K/V biases, which `deci` loads when
//! present, and NeoX RoPE (each head's rows rotated as two halves), where `deci` rotates
//! interleaved pairs. The Q/K weights and biases of a `qwen2` file are therefore reordered into the
//! interleaved order, as llama.cpp's converter reorders a Llama's (whole rows move, so quantised
//! tensors keep their blocks). Reading back, a `deci` file with Q/K/V biases and no output bias is
//! a Qwen2.
//!
//! Reading back: [`deci_layers`] gives, for every layer of a `deci` file, which sublayers it
//! really has (the encodings above count as absent).

use std::collections::BTreeSet;

use super::writer::GgufTensorOut;
use super::{GgmlType, GgufFile, Value};
use crate::family::Capability;
use crate::{Error, Result};

/// Which sublayers one block of an exported model keeps, and the source block it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptBlock {
    /// Index of the block in the source model.
    pub source: usize,
    /// Whether the attention sublayer is kept.
    pub attn: bool,
    /// Whether the FFN sublayer is kept.
    pub ffn: bool,
}

/// The blocks of an `n_blocks` model with sublayers `removed` (`2b` = attention of block `b`,
/// `2b + 1` its FFN) taken out, whole removed blocks dropped.
pub fn kept_blocks(n_blocks: usize, removed: &BTreeSet<usize>) -> Vec<KeptBlock> {
    (0..n_blocks)
        .map(|b| KeptBlock {
            source: b,
            attn: !removed.contains(&(2 * b)),
            ffn: !removed.contains(&(2 * b + 1)),
        })
        .filter(|k| k.attn || k.ffn)
        .collect()
}

/// The sublayer indices absent from a model whose blocks are `blocks` (in the exported model's
/// own numbering).
pub fn absent_sublayers(blocks: &[(bool, bool)]) -> BTreeSet<usize> {
    blocks
        .iter()
        .enumerate()
        .flat_map(|(b, &(attn, ffn))| {
            (!attn)
                .then_some(2 * b)
                .into_iter()
                .chain((!ffn).then_some(2 * b + 1))
        })
        .collect()
}

/// Which sublayer a per-block llama.cpp tensor belongs to: `Some(true)` attention, `Some(false)`
/// FFN, `None` unknown.
fn tensor_is_attention(part: &str) -> Option<bool> {
    match part {
        "attn_norm"
        | "attn_q"
        | "attn_k"
        | "attn_v"
        | "attn_output"
        | "attn_q_norm"
        | "attn_k_norm"
        | "post_attention_norm"
        | "attn_qkv" => Some(true),
        "ffn_norm" | "ffn_gate" | "ffn_up" | "ffn_down" | "post_ffw_norm" | "ffn_gate_inp"
        | "ffn_gate_exps" | "ffn_up_exps" | "ffn_down_exps" => Some(false),
        _ => None,
    }
}

/// Splits `blk.N.part.suffix` into `(N, part, suffix)`.
fn split_block_name(name: &str) -> Option<(usize, &str, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    let (part, suffix) = rest.split_once('.')?;
    Some((n.parse().ok()?, part, suffix))
}

/// A GGUF model ready to write: metadata and tensors.
#[derive(Debug, Clone)]
pub struct GgufModelOut {
    /// Metadata entries in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensorOut>,
}

impl GgufModelOut {
    /// Writes the model to `path` (atomically).
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        super::writer::write_gguf(path, &self.metadata, &self.tensors)
    }

    /// Stores the matrices as `dtype` (F32, F16 or BF16): quantised ones are dequantised, as
    /// llama.cpp's `convert_hf_to_gguf.py --outtype` would have written them unquantised. 1-D
    /// tensors (norms, `rope_freqs`) stay F32, as that converter keeps them; `general.file_type`
    /// follows (`ALL_F32` 0, `MOSTLY_F16` 1, `MOSTLY_BF16` 32). `origin` names the source in
    /// errors.
    pub fn store_floats_as(&mut self, dtype: crate::DType, origin: &std::path::Path) -> Result<()> {
        let (ty, file_type) = match dtype {
            crate::DType::F32 => (GgmlType::F32, 0u32),
            crate::DType::F16 => (GgmlType::F16, 1),
            crate::DType::BF16 => (GgmlType::BF16, 32),
        };
        for t in &mut self.tensors {
            let target = if t.dims.len() < 2 { GgmlType::F32 } else { ty };
            if t.ggml_type == target {
                continue;
            }
            let row = t.dims.first().copied().unwrap_or(1) as usize;
            let n: usize = t.dims.iter().product::<u64>() as usize;
            let mut values = vec![0f32; n];
            let (block, bytes) = t.ggml_type.layout().ok_or_else(|| {
                Error::bad_tensor(origin, &t.name, format!("cannot read {}", t.ggml_type))
            })?;
            if row > 0 && n > 0 {
                let row_bytes = row.div_ceil(block) * bytes;
                if t.data.len() != n / row * row_bytes {
                    return Err(Error::bad_tensor(
                        origin,
                        &t.name,
                        format!(
                            "{} bytes do not hold {:?} of {}",
                            t.data.len(),
                            t.dims,
                            t.ggml_type
                        ),
                    ));
                }
                for (src, dst) in t
                    .data
                    .chunks_exact(row_bytes)
                    .zip(values.chunks_exact_mut(row))
                {
                    super::quants::dequantize_row(t.ggml_type, src, dst)
                        .map_err(|e| Error::bad_tensor(origin, &t.name, e))?;
                }
            }
            t.data = crate::tensor::Bytes::from_vec(crate::tensor::f32_to_bytes(
                &values,
                match target {
                    GgmlType::F16 => crate::DType::F16,
                    GgmlType::BF16 => crate::DType::BF16,
                    _ => crate::DType::F32,
                },
            ));
            t.ggml_type = target;
        }
        let value = Value::U32(file_type);
        match self
            .metadata
            .iter_mut()
            .find(|(k, _)| k == "general.file_type")
        {
            Some((_, v)) => *v = value,
            None => self.metadata.push(("general.file_type".into(), value)),
        }
        Ok(())
    }
}

fn i32_array(path: &std::path::Path, key: &str, v: &[usize]) -> Result<Value> {
    let items = v
        .iter()
        .map(|&x| {
            i32::try_from(x)
                .map(Value::I32)
                .map_err(|_| Error::malformed(path, format!("`{key}`: {x} does not fit an int32")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Value::Array(5, items))
}

/// The model of GGUF file `src` with sublayers `removed` taken out, as llama.cpp's `deci`
/// architecture (see the module documentation); with nothing removed, the file's own
/// architecture and contents.
///
/// Only Llama-architecture (Llama, Mistral, SmolLM, …) and Qwen2 sources can lose sublayers:
/// `deci` runs Llama blocks (SwiGLU, RMSNorm, interleaved RoPE, optional Q/K/V biases) and nothing
/// else, so Qwen3 (QK-norm), Gemma 3 (GeGLU, sandwich norms, QK-norm) and mixtures of experts are
/// refused.
pub fn pruned_from_gguf(src: &GgufFile, removed: &BTreeSet<usize>) -> Result<GgufModelOut> {
    let path = src.path();
    let arch = src.architecture()?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let n_blocks = src.get_u64(&key("block_count"))?.ok_or_else(|| {
        Error::malformed(
            path,
            format!("metadata `{}` is missing", key("block_count")),
        )
    })? as usize;
    if let Some(&bad) = removed.iter().find(|&&i| i >= 2 * n_blocks) {
        return Err(Error::config(
            path.display().to_string(),
            format!("sublayer {bad} does not exist: the model has {n_blocks} blocks"),
        ));
    }
    if removed.is_empty() {
        let tensors = src
            .tensors()
            .iter()
            .map(|t| {
                Ok(GgufTensorOut {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                    data: src.tensor_bytes(&t.name)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(GgufModelOut {
            metadata: src.metadata().to_vec(),
            tensors,
        });
    }
    let experts = src.get_u64(&key("expert_count"))?.unwrap_or(0);
    // Qwen2 blocks are Llama blocks with Q/K/V biases (which `deci` loads when present) and
    // NeoX RoPE: its Q/K rows (and biases) are reordered into the interleaved order `deci`
    // rotates, as llama.cpp's converter reorders a Llama's.
    let rule = crate::family::gguf_tensor_rules(&arch).deci;
    let reorder_qk = rule == crate::family::DeciRule::ReorderQk;
    // The family decides, with its reason ([`Family::supports`](crate::Family::supports)); a
    // family that supports `deci` but whose tensors of this architecture have no `deci` rule
    // (a `deci` file itself) is refused too.
    let has_bias = |part: &str| {
        let suffix = format!(".{part}.bias");
        src.tensors()
            .iter()
            .any(|t| t.name.starts_with("blk.") && t.name.ends_with(&suffix))
    };
    let facts = crate::family::GgufFacts {
        arch: &arch,
        experts: usize::try_from(experts).unwrap_or(usize::MAX),
        q_bias: has_bias("attn_q"),
        o_bias: has_bias("attn_output"),
        layers: n_blocks,
        hidden_size: 0,
        heads: 0,
        head_dim: 0,
    };
    let origin = path.display().to_string();
    let refusal = match crate::family::gguf_support(&facts, Capability::DeciGguf, &origin) {
        Err(why) => Some(why),
        Ok(()) if rule == crate::family::DeciRule::Refused => Some(format!(
            "the tensors of architecture `{arch}` are not written as `deci` blocks"
        )),
        Ok(()) => None,
    };
    if let Some(why) = refusal {
        return Err(Error::unsupported(
            origin,
            format!(
                "a GGUF of architecture `{arch}` with sublayers removed as llama.cpp's `deci` \
                 (the only architecture whose blocks may lack attention or FFN): {why}; export \
                 this model with --format dropped or hf-compatible instead"
            ),
        ));
    }
    let heads = src.get_u64(&key("attention.head_count"))?.ok_or_else(|| {
        Error::malformed(
            path,
            format!("metadata `{}` is missing", key("attention.head_count")),
        )
    })? as usize;
    let kv_heads = src
        .get_u64(&key("attention.head_count_kv"))?
        .map_or(heads, |v| v as usize);
    let ffn = src.get_u64(&key("feed_forward_length"))?.ok_or_else(|| {
        Error::malformed(
            path,
            format!("metadata `{}` is missing", key("feed_forward_length")),
        )
    })? as usize;
    let d = src.get_u64(&key("embedding_length"))?.ok_or_else(|| {
        Error::malformed(
            path,
            format!("metadata `{}` is missing", key("embedding_length")),
        )
    })? as usize;
    let head_dim = match src.get_u64(&key("attention.key_length"))? {
        Some(v) => v as usize,
        None if heads > 0 => d / heads,
        None => 0,
    };
    let kept = kept_blocks(n_blocks, removed);
    if kept.is_empty() {
        return Err(Error::config(
            path.display().to_string(),
            "every block is removed; nothing would be left to export",
        ));
    }
    let mut new_index = vec![None; n_blocks];
    for (i, k) in kept.iter().enumerate() {
        new_index[k.source] = Some(i);
    }

    // Per-layer arrays and the extra tensors of the two special encodings.
    let mut head_counts = Vec::with_capacity(kept.len());
    let mut kv_counts = Vec::with_capacity(kept.len());
    let mut ffn_lengths = Vec::with_capacity(kept.len());
    let mut extra: Vec<Vec<GgufTensorOut>> = vec![Vec::new(); kept.len()];
    for (i, k) in kept.iter().enumerate() {
        if k.attn {
            head_counts.push(heads);
            kv_counts.push(kv_heads);
        } else if i == 0 {
            head_counts.push(heads);
            kv_counts.push(0);
            extra[i].push(GgufTensorOut::f32(
                format!("blk.{i}.attn_norm.weight"),
                vec![d as u64],
                vec![1.0; d],
            ));
            extra[i].push(GgufTensorOut {
                name: format!("blk.{i}.attn_output.weight"),
                dims: vec![d as u64, d as u64],
                ggml_type: GgmlType::F16,
                data: crate::tensor::Bytes::from_vec(vec![0u8; d * d * 2]),
            });
        } else {
            head_counts.push(0);
            kv_counts.push(0);
        }
        if k.ffn {
            ffn_lengths.push(ffn);
        } else {
            ffn_lengths.push(1);
            extra[i].push(GgufTensorOut::f32(
                format!("blk.{i}.ffn_norm.weight"),
                vec![d as u64],
                vec![1.0; d],
            ));
            for part in ["ffn_gate", "ffn_up"] {
                extra[i].push(GgufTensorOut::f32(
                    format!("blk.{i}.{part}.weight"),
                    vec![d as u64, 1],
                    vec![0.0; d],
                ));
            }
            extra[i].push(GgufTensorOut::f32(
                format!("blk.{i}.ffn_down.weight"),
                vec![1, d as u64],
                vec![0.0; d],
            ));
        }
    }

    let rewritten = [
        "block_count",
        "attention.head_count",
        "attention.head_count_kv",
        "feed_forward_length",
        "attention.key_length",
        "attention.value_length",
    ];
    let mut metadata = Vec::with_capacity(src.metadata().len() + 4);
    for (k, v) in src.metadata() {
        if k == "general.architecture" {
            metadata.push((k.clone(), Value::String("deci".into())));
        } else if let Some(rest) = k.strip_prefix(&format!("{arch}.")) {
            if !rewritten.contains(&rest) {
                metadata.push((format!("deci.{rest}"), v.clone()));
            }
        } else {
            metadata.push((k.clone(), v.clone()));
        }
    }
    let insert_at = metadata
        .iter()
        .position(|(k, _)| k.starts_with("deci."))
        .unwrap_or(metadata.len());
    let arrays = vec![
        (
            "deci.block_count".to_string(),
            Value::U32(kept.len() as u32),
        ),
        (
            "deci.attention.head_count".to_string(),
            i32_array(path, "deci.attention.head_count", &head_counts)?,
        ),
        (
            "deci.attention.head_count_kv".to_string(),
            i32_array(path, "deci.attention.head_count_kv", &kv_counts)?,
        ),
        (
            "deci.feed_forward_length".to_string(),
            i32_array(path, "deci.feed_forward_length", &ffn_lengths)?,
        ),
        (
            "deci.attention.key_length".to_string(),
            Value::U32(head_dim as u32),
        ),
        (
            "deci.attention.value_length".to_string(),
            Value::U32(head_dim as u32),
        ),
    ];
    metadata.splice(insert_at..insert_at, arrays);

    let mut tensors = Vec::with_capacity(src.tensors().len());
    let mut pending = extra.into_iter().map(Some).collect::<Vec<_>>();
    let mut last_block: Option<usize> = None;
    let flush = |tensors: &mut Vec<GgufTensorOut>,
                 pending: &mut Vec<Option<Vec<GgufTensorOut>>>,
                 upto: Option<usize>| {
        let end = upto.unwrap_or(pending.len());
        for slot in pending.iter_mut().take(end) {
            if let Some(v) = slot.take() {
                tensors.extend(v);
            }
        }
    };
    for t in src.tensors() {
        let Some((b, part, suffix)) = split_block_name(&t.name) else {
            tensors.push(GgufTensorOut {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
                data: src.tensor_bytes(&t.name)?,
            });
            continue;
        };
        if b >= n_blocks {
            return Err(Error::bad_tensor(
                path,
                &t.name,
                format!("block {b} does not exist: the model has {n_blocks} blocks"),
            ));
        }
        let is_attn = tensor_is_attention(part).ok_or_else(|| {
            Error::unsupported(
                path.display().to_string(),
                format!(
                    "tensor `{}`: cannot tell which sublayer `{part}` belongs to",
                    t.name
                ),
            )
        })?;
        let Some(nb) = new_index[b] else { continue };
        if last_block.is_some_and(|l| l < nb) {
            flush(&mut tensors, &mut pending, Some(nb));
        }
        last_block = Some(nb);
        let sub = if is_attn { 2 * b } else { 2 * b + 1 };
        if removed.contains(&sub) {
            continue;
        }
        let mut data = src.tensor_bytes(&t.name)?;
        if reorder_qk && (part == "attn_q" || part == "attn_k") {
            let groups = if part == "attn_q" { heads } else { kv_heads };
            data = interleaved_rows(path, t, &data, groups)?;
        }
        tensors.push(GgufTensorOut {
            name: format!("blk.{nb}.{part}.{suffix}"),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
            data,
        });
    }
    flush(&mut tensors, &mut pending, None);
    Ok(GgufModelOut { metadata, tensors })
}

/// The rows of a Q or K weight (or bias) of `groups` heads, stored in NeoX RoPE order (half of
/// each head, then the other half), reordered into the interleaved order llama.cpp's `llama` and
/// `deci` graphs rotate; quantised rows move whole.
fn interleaved_rows(
    path: &std::path::Path,
    t: &super::GgufTensorInfo,
    data: &[u8],
    groups: usize,
) -> Result<crate::tensor::Bytes> {
    let bad = |why: String| Error::bad_tensor(path, &t.name, why);
    let (rows, row_elems) = match t.dims.as_slice() {
        [n] => (*n as usize, 1),
        [cols, rows] => (*rows as usize, *cols as usize),
        dims => return Err(bad(format!("a Q/K tensor of shape {dims:?}"))),
    };
    let (block, bytes) = t
        .ggml_type
        .layout()
        .ok_or_else(|| bad(format!("cannot reorder rows of {}", t.ggml_type)))?;
    if row_elems % block != 0 {
        return Err(bad(format!(
            "rows of {row_elems} values do not split into {} blocks of {block}",
            t.ggml_type
        )));
    }
    let row_bytes = row_elems / block * bytes;
    super::store::permute_row_bytes(data, rows, row_bytes, groups)
        .map(crate::tensor::Bytes::from_vec)
        .ok_or_else(|| {
            bad(format!(
                "{rows} rows ({} bytes) do not split into {groups} heads of even size",
                data.len()
            ))
        })
}

/// What [`deci_layers`] returns: `(attention present, FFN present)` per layer, then the heads,
/// key/value heads and FFN width of the present sublayers.
pub type DeciLayers = (Vec<(bool, bool)>, usize, usize, usize);

/// For every layer of a `deci` GGUF file, whether it really has attention and an FFN: a
/// zero-width FFN, no heads, and the exact-zero encodings of this module (an FFN of width 1 whose
/// `ffn_down` is zero; "linear attention" whose `attn_output` is zero) count as absent.
///
/// Also returns the uniform head counts and FFN width of the present sublayers
/// (`(heads, kv_heads, ffn)`); a file whose present layers differ is unsupported.
pub fn deci_layers(file: &GgufFile) -> Result<DeciLayers> {
    let path = file.path();
    let origin = path.display().to_string();
    let n = file
        .get_u64("deci.block_count")?
        .ok_or_else(|| Error::config(&origin, "metadata `deci.block_count` is missing"))?
        as usize;
    let per_layer = |k: &str| -> Result<Vec<usize>> {
        let key = format!("deci.{k}");
        match file.get(&key) {
            None => Err(Error::config(
                &origin,
                format!("metadata `{key}` is missing"),
            )),
            Some(Value::Array(_, items)) => {
                if items.len() != n {
                    return Err(Error::config(
                        &origin,
                        format!(
                            "metadata `{key}` has {} entries for {n} blocks",
                            items.len()
                        ),
                    ));
                }
                items
                    .iter()
                    .map(|v| {
                        v.as_u64().map(|x| x as usize).ok_or_else(|| {
                            Error::config(
                                &origin,
                                format!("metadata `{key}` holds {v}, not a count"),
                            )
                        })
                    })
                    .collect()
            }
            Some(v) => match v.as_u64() {
                Some(x) => Ok(vec![x as usize; n]),
                None => Err(Error::config(
                    &origin,
                    format!("metadata `{key}` is {v}, not a count"),
                )),
            },
        }
    };
    let heads = per_layer("attention.head_count")?;
    let kv = match file.get("deci.attention.head_count_kv") {
        None => heads.clone(),
        Some(_) => per_layer("attention.head_count_kv")?,
    };
    let ffn = per_layer("feed_forward_length")?;
    let all_zero = |name: &str| -> Result<bool> {
        match file.tensor(name) {
            None => Ok(false),
            Some(_) => Ok(file.dequantize(name)?.iter().all(|&x| x == 0.0)),
        }
    };
    let mut layers = Vec::with_capacity(n);
    let (mut h_u, mut kv_u, mut f_u) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for i in 0..n {
        let attn = if heads[i] == 0 {
            false
        } else if kv[i] == 0 {
            if !all_zero(&format!("blk.{i}.attn_output.weight"))? {
                return Err(Error::unsupported(
                    &origin,
                    format!("layer {i} uses \"linear attention\" (head_count_kv 0), which finercut does not implement"),
                ));
            }
            false
        } else {
            h_u.insert(heads[i]);
            kv_u.insert(kv[i]);
            true
        };
        let absent = ffn[i] == 0 || (ffn[i] == 1 && all_zero(&format!("blk.{i}.ffn_down.weight"))?);
        let has_ffn = if absent {
            false
        } else {
            f_u.insert(ffn[i]);
            true
        };
        layers.push((attn, has_ffn));
    }
    let one = |set: &BTreeSet<usize>, what: &str| -> Result<usize> {
        match set.len() {
            0 => Ok(0),
            1 => Ok(set.iter().copied().next().unwrap_or(0)),
            _ => Err(Error::unsupported(
                &origin,
                format!("layers with different {what} ({set:?}); finercut models have one"),
            )),
        }
    };
    Ok((
        layers,
        one(&h_u, "attention head counts")?,
        one(&kv_u, "key/value head counts")?,
        one(&f_u, "FFN widths")?,
    ))
}
