//! Causal multi-head attention with grouped-query heads on the CPU.
//!
//! One rayon task per (sequence, query head); within a task, blocks of queries use small single-threaded
//! GEMMs for `Q·Kᵀ` and `P·V` (see [`attend_head`]). Every product and sum runs in an order fixed by the
//! shapes, independent of the thread count.

use super::gemm::{self, BLayout, Gemm, SendPtr};
use super::simd::{self, multiversion};
use crate::Result;
use rayon::prelude::*;

pub(crate) use crate::backend::AttnDims;

/// Keys and values of a prefix that every sequence continues (rows `[len, kv_heads * head_dim]`).
#[derive(Clone, Copy)]
pub(crate) struct KvPrefix<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub len: usize,
}

/// `out[rows, heads*hd] = attention(q[rows, heads*hd], k/v[rows, kv_heads*hd])`; the rows are the
/// concatenation of sequences of the given lengths (checked by the caller). With a prefix, query `i` of
/// every sequence sits at position `prefix.len + i` and sees the whole prefix plus its own keys `0..=i`.
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq_lens: &[usize],
    prefix: Option<KvPrefix<'_>>,
    d: &AttnDims,
    out: &mut [f32],
) -> Result<()> {
    let mut starts = Vec::with_capacity(seq_lens.len());
    let mut row = 0;
    for &len in seq_lens {
        starts.push(row);
        row += len;
    }
    let tasks = seq_lens.len() * d.heads;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let qs = d.heads * d.head_dim;
    let task = |t: usize| -> Result<()> {
        let (s, h) = (t / d.heads, t % d.heads);
        let (start, len) = (starts[s], seq_lens[s]);
        if len == 0 {
            return Ok(());
        }
        let mut local = vec![0f32; len * d.head_dim];
        attend_head(q, k, v, start, len, h, prefix, d, &mut local)?;
        for (i, src) in local.chunks_exact(d.head_dim).enumerate() {
            // SAFETY: `out` has `rows * heads * head_dim` elements (checked by the caller); task (s, h)
            // alone writes columns `h*hd..(h+1)*hd` of rows `start..start+len`, so writes never overlap.
            unsafe {
                let dst = out_ptr.get().add((start + i) * qs + h * d.head_dim);
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, d.head_dim);
            }
        }
        Ok(())
    };
    if tasks > 1 {
        (0..tasks).into_par_iter().try_for_each(task)
    } else {
        (0..tasks).try_for_each(task)
    }
}

/// Query rows per block: scores of a block against its keys are one small GEMM.
const QUERY_BLOCK: usize = 64;

/// Attention of query head `h` of one sequence (rows `start..start+len`); writes `[len, hd]` to `out`.
///
/// Queries go in blocks of [`QUERY_BLOCK`] rows. For a block, `S = scale · Q·Kᵀ` over every key any of
/// its queries may see (one GEMM, or two with a prefix), then a masked softmax per row, then
/// `O = P·V` (GEMM). Only the diagonal block computes masked scores, so about 1/8 of the work is
/// wasted at 256 tokens, in exchange for GEMM speed. Block sizes depend only on the shapes.
#[allow(clippy::too_many_arguments)]
fn attend_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    start: usize,
    len: usize,
    h: usize,
    prefix: Option<KvPrefix<'_>>,
    d: &AttnDims,
    out: &mut [f32],
) -> Result<()> {
    let hd = d.head_dim;
    let qs = d.heads * hd;
    let kvs = d.kv_heads * hd;
    let kvh = h / (d.heads / d.kv_heads);
    let plen = prefix.map_or(0, |p| p.len);
    let mut scores = vec![0f32; QUERY_BLOCK.min(len) * (plen + len)];
    let mut sums = vec![0f64; QUERY_BLOCK];
    let mut i0 = 0;
    while i0 < len {
        let i1 = (i0 + QUERY_BLOCK).min(len);
        let mb = i1 - i0;
        // Keys visible to some query of the block, in the combined (prefix, own) index.
        let khi = plen + i1;
        let klo = d.window.map_or(0, |w| (plen + i0 + 1).saturating_sub(w));
        let nk = khi - klo;
        let s = &mut scores[..mb * nk];
        let q_blk = &q[(start + i0) * qs + h * hd..];
        // Scores against prefix keys [klo, plen) and own keys [max(klo, plen), khi).
        let own_lo = klo.max(plen);
        if let Some(p) = prefix.filter(|_| klo < plen) {
            let g = Gemm {
                alpha: d.scale,
                m: mb,
                n: plen - klo,
                k: hd,
                lda: qs,
                ldb: kvs,
                ldc: nk,
                b_layout: BLayout::NxK,
                accumulate: false,
            };
            gemm::sgemm_serial(g, q_blk, &p.k[klo * kvs + kvh * hd..], s)?;
        }
        let g = Gemm {
            alpha: d.scale,
            m: mb,
            n: khi - own_lo,
            k: hd,
            lda: qs,
            ldb: kvs,
            ldc: nk,
            b_layout: BLayout::NxK,
            accumulate: false,
        };
        gemm::sgemm_serial(
            g,
            q_blk,
            &k[(start + own_lo - plen) * kvs + kvh * hd..],
            &mut s[own_lo - klo..],
        )?;
        for (r, row) in s.chunks_exact_mut(nk).enumerate() {
            let pos = plen + i0 + r;
            let lo = d.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            sums[r] = masked_softmax_row(row, lo - klo, pos + 1 - klo, d.softcap.unwrap_or(0.0));
        }
        // O = P·V over the same key ranges (unnormalised; rows divided by their sums below).
        let o = &mut out[i0 * hd..i1 * hd];
        let mut accumulate = false;
        if let Some(p) = prefix.filter(|_| klo < plen) {
            let g = Gemm {
                alpha: 1.0,
                m: mb,
                n: hd,
                k: plen - klo,
                lda: nk,
                ldb: kvs,
                ldc: hd,
                b_layout: BLayout::KxN,
                accumulate,
            };
            gemm::sgemm_serial(g, s, &p.v[klo * kvs + kvh * hd..], o)?;
            accumulate = true;
        }
        let g = Gemm {
            alpha: 1.0,
            m: mb,
            n: hd,
            k: khi - own_lo,
            lda: nk,
            ldb: kvs,
            ldc: hd,
            b_layout: BLayout::KxN,
            accumulate,
        };
        gemm::sgemm_serial(
            g,
            &s[own_lo - klo..],
            &v[(start + own_lo - plen) * kvs + kvh * hd..],
            o,
        )?;
        for (row, &sum) in o.chunks_exact_mut(hd).zip(&sums) {
            let inv = (1.0 / sum) as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        }
        i0 = i1;
    }
    Ok(())
}

multiversion! {
    /// Softmax over `row[lo..hi]` (after optional soft-capping when `softcap > 0`), unnormalised:
    /// writes `exp(s - max)` there and zeros elsewhere, and returns the sum.
    fn masked_softmax_row(row: &mut [f32], lo: usize, hi: usize, softcap: f32) -> f64 {
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        let live = &mut row[lo..hi];
        if softcap > 0.0 {
            for x in live.iter_mut() {
                *x = softcap * simd::tanh(*x / softcap);
            }
        }
        let m = simd::max(live);
        simd::exp_shift_sum(live, m)
    }
}
