//! Parameter accounting of a sliced model, and the width that removes a given number of
//! parameters.

use crate::{Error, Result};
use finercut_format::{ModelConfig, QkNorm};

/// Parameters of the model that [`crate::slice_model`] makes from a model of configuration
/// `config` at residual width `dim`: the embedding and the untied LM head (`vocab × dim` each),
/// every norm (`dim`), the attention and FFN projections with their inner widths unchanged and
/// their residual side `dim` wide, q/k/v (and `o_proj`) biases, Qwen3's per-head norms, and the
/// two `dim × dim` shortcut matrices of every block.
pub fn sliced_param_count(config: &ModelConfig, dim: usize) -> usize {
    let c = config;
    let q_rows = c.num_attention_heads * c.head_dim;
    let kv_rows = c.num_key_value_heads * c.head_dim;
    let ffn = c.intermediate_size;
    let mut block = 2 * dim // norms
        + (q_rows + 2 * kv_rows) * dim // q, k, v
        + dim * q_rows // o
        + 3 * ffn * dim // gate, up, down
        + 2 * dim * dim; // shortcuts
    if c.attention_bias {
        block += q_rows + 2 * kv_rows;
    }
    if c.o_proj_bias() {
        block += dim;
    }
    if c.recipe().qk_norm == QkNorm::PerHead {
        block += 2 * c.head_dim;
    }
    2 * c.vocab_size * dim + dim + c.num_hidden_layers * block
}

/// Parameters removed by slicing to `dim`: `dense_params − sliced_param_count(config, dim)`,
/// negative when the untied head and the shortcut matrices add more than slicing removes.
pub fn removed_params(config: &ModelConfig, dense_params: usize, dim: usize) -> i64 {
    dense_params as i64 - sliced_param_count(config, dim) as i64
}

/// The residual width that removes `target` parameters from a model of `dense_params`
/// parameters: the largest width whose removed count is at least `target` (so the sliced model
/// is never larger than the target asks; its count exceeds the target by less than one width
/// step). An error when even width 1 removes fewer.
pub fn dim_for_removed_params(
    config: &ModelConfig,
    dense_params: usize,
    target: usize,
) -> Result<usize> {
    let d = config.hidden_size;
    let target = target as i64;
    // The sliced count grows with the width: the removed count falls.
    (1..=d)
        .rev()
        .find(|&k| removed_params(config, dense_params, k) >= target)
        .ok_or_else(|| {
            Error::Input(format!(
                "no residual width removes {target} parameters (width 1 removes {})",
                removed_params(config, dense_params, 1)
            ))
        })
}

/// The residual width after slicing a fraction `ratio` of the `hidden_size` dimensions (SliceGPT's
/// slicing ratio): `⌊(1 − ratio) · hidden_size⌋`, without SliceGPT's rounding to a multiple of 8.
/// `ratio` must lie in `[0, 1)` and leave at least one dimension.
pub fn dim_for_ratio(hidden_size: usize, ratio: f64) -> Result<usize> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(Error::Input(format!(
            "slicing ratio {ratio} is not in [0, 1)"
        )));
    }
    let k = ((1.0 - ratio) * hidden_size as f64).floor() as usize;
    if k == 0 {
        return Err(Error::Input(format!(
            "slicing ratio {ratio} leaves no dimension of {hidden_size}"
        )));
    }
    Ok(k.min(hidden_size))
}
