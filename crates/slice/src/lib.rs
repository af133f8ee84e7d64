//! SliceGPT (Ashkboos et al., arXiv 2401.15024) for the Llama-family models of `finercut-model`: a
//! width-pruning baseline for FinerCut's Table 2.
//!
//! SliceGPT removes whole dimensions of the residual stream. With every RMSNorm's weight folded
//! into the layers that read it, the norms commute with orthogonal rotations of the stream, so
//! each residual point `p` (the input of each of the 2L sublayers, and the stream before the final
//! norm) can be expressed in the basis `Q_p` of the principal components of its calibration
//! signals (eigenvectors of `Σ x xᵀ`, accumulated in `f64`, by decreasing eigenvalue) and cut to
//! its first `d'` directions:
//!
//! - embedding `E' = E Q_0[:, :d']`; LM head `W' = W diag(γ) Q_{2L}[:, :d']` (untied: a tied
//!   embedding becomes two matrices);
//! - a sublayer reading point `p` and writing point `p + 1`: input projections
//!   `W' = W diag(γ) Q_p[:, :d']`, output projection `W' = Q_{p+1}[:, :d']ᵀ W` (an output bias is
//!   rotated, q/k/v biases are kept), and the residual shortcut `S_p = Q_p[:, :d']ᵀ Q_{p+1}[:, :d']`,
//!   so that `h_{p+1} = h_p S_p + branch(h_p)`;
//! - the norms become weightless and keep dividing by the original width `d`.
//!
//! With `d' = d` the transformed model computes the same function as the dense one (up to float
//! rounding), which the tests check. Like the paper, the bases are computed sequentially: each on
//! the signals of the network sliced so far ([`slice_model`]).
//!
//! # Key types
//!
//! - [`slice_model`] with [`SliceSettings`]: the transform; [`SlicedModel`] holds the result,
//!   runs it ([`SlicedModel::to_model`]) and saves it ([`SlicedModel::save`]: a Hugging Face
//!   style directory whose config.json has a `slicegpt` section, loaded back by
//!   `finercut_format::Checkpoint::open` and `finercut_model::Model::load`).
//! - [`sliced_param_count`], [`dim_for_removed_params`], [`dim_for_ratio`]: parameter accounting
//!   and the choice of `d'`.
//! - [`symmetric_eigen`], [`covariance`], [`Dense`]: the `f64` linear algebra, through `faer`.
//! - [`check_supported`]: Gemma 3 and Mixtral are refused.
//!
//! # Example
//!
//! ```no_run
//! use finercut_format::Checkpoint;
//! use finercut_model::{Model, Plan};
//! use finercut_slice::{dim_for_ratio, slice_model, SliceSettings};
//! use finercut_tensor::Device;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ckpt = Checkpoint::open("SmolLM2-135M".as_ref())?;
//! let model = Model::load(&ckpt.config, ckpt.weights.as_ref(), &Device::Cpu)?;
//! let calibration: Vec<Vec<u32>> = vec![(0..128).collect(), (128..256).collect()];
//! let dim = dim_for_ratio(ckpt.config.hidden_size, 0.25)?;
//! let sliced = slice_model(&model, &calibration, &SliceSettings { dim })?;
//! println!("{} → {} parameters", model.param_count(), sliced.param_count());
//! let small = sliced.to_model(&Device::Cpu)?;
//! let logits = small.forward(&calibration, &Plan::dense())?;
//! # let _ = logits;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod linalg;
mod params;
mod slice;

pub use error::{Error, Result};
pub use linalg::{covariance, matmul_f64, symmetric_eigen, Dense};
pub use params::{dim_for_ratio, dim_for_removed_params, removed_params, sliced_param_count};
pub use slice::{check_supported, slice_model, tokens_sha256, SliceSettings, SlicedModel};
