//! SliceGPT's sliced variant of a dense pre-norm family (Ashkboos et al., arXiv 2401.15024), as
//! this project treats it: not a family of its own but [`ArchParams::Sliced`] on a Llama,
//! Mistral, Qwen2 or Qwen3 configuration (`finercut slice` writes it; the `slicegpt` section of
//! config.json reads it back).
//!
//! Its residual width `hidden_size` is smaller than the attention and FFN widths (an explicit
//! `head_dim`), its head is untied, every sublayer carries a residual shortcut matrix
//! ([`ATTN_SHORTCUT`], [`MLP_SHORTCUT`]) and its RMSNorms divide by `original_hidden_size`.
//! A family says whether it can be sliced through [`super::Capability::SliceGpt`].

use serde_json::Value as Json;

use crate::config::{ArchParams, RawConfig, SliceParams};
use crate::{Error, Result};

/// Name of a sliced model's shortcut matrix around the attention sublayer, in its block's scope.
pub const ATTN_SHORTCUT: &str = "attn_shortcut_Q";
/// Name of a sliced model's shortcut matrix around the FFN sublayer, in its block's scope.
pub const MLP_SHORTCUT: &str = "mlp_shortcut_Q";

/// The `slicegpt` object of a sliced model's config.json: only `original_hidden_size` changes the
/// computation; the other keys (slicing ratio, calibration settings and hashes) are records.
pub(crate) fn parse_slice(v: &Json, origin: &str) -> Result<SliceParams> {
    let n = v
        .get("original_hidden_size")
        .and_then(Json::as_u64)
        .and_then(|n| usize::try_from(n).ok());
    match n {
        Some(n) if n > 0 => Ok(SliceParams {
            original_hidden_size: n,
        }),
        _ => Err(Error::config(
            origin,
            "`slicegpt` needs a positive integer `original_hidden_size`",
        )),
    }
}

/// [`ArchParams::Dense`], or [`ArchParams::Sliced`] when config.json has a `slicegpt` section:
/// what a dense family that SliceGPT can slice reads.
pub(crate) fn dense_or_sliced(raw: &RawConfig, origin: &str) -> Result<ArchParams> {
    match &raw.slicegpt {
        None => Ok(ArchParams::Dense),
        Some(v) => Ok(ArchParams::Sliced(parse_slice(v, origin)?)),
    }
}
