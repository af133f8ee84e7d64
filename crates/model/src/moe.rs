//! Mixtral's sparse mixture of experts: the FFN branch of a Mixtral block.
//!
//! FinerCut removes the whole mixture as one unit (router and every expert), as the paper does for
//! Mixtral-8x7B: the mixture is one [`Branch`](crate::layers::Branch), so a plan skips it like any
//! FFN.
//!
//! Routing follows transformers' `MixtralTopKRouter` and `MixtralExperts`
//! (`models/mixtral/modeling_mixtral.py`, 5.x): router logits `h·Wᵀ`, softmax, the `top_k` most
//! probable experts, their probabilities renormalised to sum to 1 (softmax, then top-k, then
//! renormalise); expert `e` is a SwiGLU FFN (`w1` gate, `w3` up, `w2` down) and its outputs are
//! added with their weights. Experts run batched by expert: the rows routed to expert `e` are
//! gathered into one matrix, each of its three weights is one GEMM over them, and the weighted
//! outputs are scattered back. Experts are visited in index order and each row's contributions are
//! added in that order, as `index_add_` does in transformers, so the result does not depend on the
//! thread count.

use crate::layers::{Linear, Mlp};
use crate::{Error, Result};
use finercut_tensor::Tensor;

/// The sparse mixture of one Mixtral block.
pub(crate) struct SparseMoe {
    /// `block_sparse_moe.gate`: `[num_experts, d]`, no bias.
    pub router: Linear,
    /// `block_sparse_moe.experts.E` as gated FFNs (`w1` → gate, `w3` → up, `w2` → down).
    pub experts: Vec<Mlp>,
    /// Experts per token.
    pub top_k: usize,
    /// Whether the chosen experts' probabilities are renormalised to sum to 1 (Mixtral), or kept
    /// as the full softmax gives them (Qwen3-MoE without `norm_topk_prob`).
    pub normalise: bool,
}

/// The experts of each row and their weights: `(expert, weight)` pairs, `top_k` per row, most
/// probable first (ties: the lower expert index), renormalised over the chosen experts.
#[cfg(test)]
pub(crate) fn route(logits: &[f32], num_experts: usize, top_k: usize) -> Vec<Vec<(usize, f32)>> {
    route_with(logits, num_experts, top_k, true)
}

/// [`route`], with the weights renormalised over the chosen experts (`normalise`) or the full
/// softmax's probabilities.
pub(crate) fn route_with(
    logits: &[f32],
    num_experts: usize,
    top_k: usize,
    normalise: bool,
) -> Vec<Vec<(usize, f32)>> {
    logits
        .chunks_exact(num_experts)
        .map(|row| {
            let mut order: Vec<usize> = (0..num_experts).collect();
            // Stable sort: equal logits keep the lower index first. NaN logits sort last.
            order.sort_by(|&a, &b| {
                row[b]
                    .partial_cmp(&row[a])
                    .unwrap_or_else(|| row[a].is_nan().cmp(&row[b].is_nan()))
            });
            order.truncate(top_k);
            // softmax(l)_j / Σ_top softmax(l) = exp(l_j − m) / Σ_top exp(l − m): the full softmax's
            // denominator cancels.
            let m = f64::from(row[order[0]]);
            let e: Vec<f64> = order
                .iter()
                .map(|&j| (f64::from(row[j]) - m).exp())
                .collect();
            let z: f64 = if normalise {
                e.iter().sum()
            } else {
                row.iter().map(|&l| (f64::from(l) - m).exp()).sum()
            };
            order
                .iter()
                .zip(&e)
                .map(|(&j, &v)| (j, (v / z) as f32))
                .collect()
        })
        .collect()
}

impl SparseMoe {
    /// The mixture's output `[rows, d]` for normalised rows `h` `[rows, d]`.
    pub(crate) fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let n_exp = self.experts.len();
        let logits = self.router.forward(h)?;
        if logits.cols() != n_exp {
            return Err(Error::Config(format!(
                "router gives {} logits for {n_exp} experts",
                logits.cols()
            )));
        }
        let routes = route_with(&logits.to_vec_f32()?, n_exp, self.top_k, self.normalise);
        // Per expert, the rows routed to it (in row order) and their weights.
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); n_exp];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); n_exp];
        for (r, choice) in routes.iter().enumerate() {
            for &(e, w) in choice {
                rows[e].push(r);
                weights[e].push(w);
            }
        }
        let mut out = Tensor::zeros(h.shape(), &h.device())?;
        for (e, expert) in self.experts.iter().enumerate() {
            if rows[e].is_empty() {
                continue;
            }
            let x = h.gather_rows(&rows[e])?;
            let y = expert.forward(&x)?;
            out.add_scaled_rows_at(&rows[e], &y, &weights[e])?;
        }
        Ok(out)
    }

    pub(crate) fn param_count(&self) -> usize {
        self.router.param_count() + self.experts.iter().map(Mlp::param_count).sum::<usize>()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_softmax_then_top_k_then_renormalised() {
        let logits = [0.5f32, 2.0, -1.0, 2.0, 1.0, 0.0, 0.0, 3.0];
        let r = route(&logits, 4, 2);
        // Row 0: experts 1 and 3 tie; the lower index comes first, each gets half.
        assert_eq!(r[0], vec![(1, 0.5), (3, 0.5)]);
        // Row 1: experts 3 (3.0) and 0 (1.0): weights e^2/(e^2+1) and 1/(e^2+1).
        let p = (2f64.exp() / (2f64.exp() + 1.0)) as f32;
        assert_eq!(r[1][0].0, 3);
        assert_eq!(r[1][1].0, 0);
        assert!((r[1][0].1 - p).abs() < 1e-7 && (r[1][1].1 - (1.0 - p)).abs() < 1e-7);
        // The same as the full softmax, top-k, renormalisation.
        let sm: Vec<f64> = {
            let e: Vec<f64> = logits[4..].iter().map(|&v| f64::from(v).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        };
        let want = sm[3] / (sm[3] + sm[0]);
        assert!((f64::from(r[1][0].1) - want).abs() < 1e-7);
        assert_eq!(route(&logits, 4, 1)[1], vec![(3, 1.0)]);
    }
}
