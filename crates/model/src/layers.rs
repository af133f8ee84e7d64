//! The pieces of a decoder: RMSNorm (or LayerNorm), linear layers, attention and FFN branches,
//! and the [`Sublayer`] that pairs a norm with a branch.
//!
//! A decoder block is two residual sublayers (FinerCut, arXiv 2405.18218, §3):
//! `h = x + Attn(norm1(x))` and `y = h + FFN(norm2(h))`. They are kept as data, one [`Sublayer`] per
//! branch, so a removal plan can skip any of them (norm and branch together), unlike the reference
//! implementation (github.com/YaNgZhAnG-V5/llm_dissect), which zeroes the branch output and still
//! computes it.

use crate::moe::SparseMoe;
use crate::weights::Weights;
use crate::{Error, Result, SublayerId};
use finercut_tensor::{
    causal_attention, causal_attention_with_prefix, causal_attention_with_prefix_rows, Activation,
    AttentionSpec, Matrix, NormWeight, Rope, Tensor,
};

/// RMSNorm with its weight, or LayerNorm ([`NormWeight::Centred`]) with its weight and bias.
pub(crate) struct RmsNorm {
    pub weight: Tensor,
    /// LayerNorm's bias, added after the weight.
    pub bias: Option<Tensor>,
    pub eps: f32,
    pub kind: NormWeight,
}

impl RmsNorm {
    /// The norm `name` of `dim` values: a LayerNorm ([`NormWeight::Centred`]) reads its bias too.
    pub(crate) fn load(
        w: &Weights<'_>,
        name: &str,
        dim: usize,
        eps: f32,
        kind: NormWeight,
    ) -> Result<Self> {
        let bias = if kind == NormWeight::Centred {
            Some(w.get(&format!("{name}.bias"), &[dim])?)
        } else {
            None
        };
        Ok(RmsNorm {
            weight: w.get(&format!("{name}.weight"), &[dim])?,
            bias,
            eps,
            kind,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.rms_norm(&self.weight, self.eps, self.kind)?;
        if let Some(b) = &self.bias {
            y.add_row_vector_in_place(b)?;
        }
        Ok(y)
    }

    /// Normalises rows `row..row+n` of `x` into rows `dst..` of `out`.
    pub(crate) fn rows_into(
        &self,
        x: &Tensor,
        row: usize,
        n: usize,
        out: &mut Tensor,
        dst: usize,
    ) -> Result<()> {
        x.rms_norm_rows_into(row, n, &self.weight, self.eps, self.kind, out, dst)?;
        if let Some(b) = &self.bias {
            let mut rows = out.slice_rows(dst, n)?;
            rows.add_row_vector_in_place(b)?;
            out.copy_rows_from(dst, &rows, 0, n)?;
        }
        Ok(())
    }

    pub(crate) fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, Tensor::elem_count)
    }
}

/// `y = x·Wᵀ + b`.
pub(crate) struct Linear {
    pub weight: Matrix,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn load(
        w: &Weights<'_>,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.matrix(&format!("{name}.weight"), [out, inp])?;
        let bias = if bias {
            Some(w.get(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Rows `rows` of the `[out, inp]` projection `name` (one part of a fused projection), no
    /// bias.
    pub(crate) fn load_rows(
        w: &Weights<'_>,
        name: &str,
        out: usize,
        inp: usize,
        rows: std::ops::Range<usize>,
    ) -> Result<Self> {
        let weight = w.matrix_rows(&format!("{name}.weight"), [out, inp], rows)?;
        Ok(Linear { weight, bias: None })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.weight.linear(x, self.bias.as_ref())?)
    }

    pub(crate) fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.as_ref().map_or(0, Tensor::elem_count)
    }
}

/// Sequences and positions of the rows in one batch.
pub(crate) struct Batch {
    /// Lengths of the sequences whose rows are stacked in the batch (they sum to the row count).
    pub seq_lens: Vec<usize>,
    /// Position of every row.
    pub positions: Vec<usize>,
}

impl Batch {
    /// `n` sequences of `t` tokens, each starting at position `start`.
    pub(crate) fn uniform(n: usize, t: usize, start: usize) -> Batch {
        Batch {
            seq_lens: vec![t; n],
            positions: (0..n).flat_map(|_| start..start + t).collect(),
        }
    }
}

/// Keys and values of the attention sublayers for a shared prefix.
pub(crate) type Kv = (Tensor, Tensor);

/// What an attention branch does with keys and values.
pub(crate) enum KvMode<'a> {
    /// Plain causal attention over the batch.
    Plain,
    /// Plain attention, and keep this batch's keys and values (post-RoPE).
    Store(&'a mut Option<Kv>),
    /// Every sequence continues the prefix whose keys and values are given.
    Continue(&'a Kv),
    /// The batch's single sequence continues the given prefix; keep the keys and values of the
    /// prefix followed by its own.
    Extend(&'a Kv, &'a mut Option<Kv>),
    /// Sequence `i` of the batch continues its own cache `caches[i]` (one per sequence), to which
    /// its keys and values are appended in place.
    Append(Vec<&'a mut KvCache>),
}

/// Self-attention with grouped-query heads and RoPE (optionally Qwen2 biases, Gemma and Qwen3
/// QK-norm).
pub(crate) struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub rope: Rope,
    pub spec: AttentionSpec,
}

impl Attention {
    pub(crate) fn forward(&self, h: &Tensor, batch: &Batch, kv: KvMode<'_>) -> Result<Tensor> {
        let mut q = self.q.forward(h)?;
        let mut k = self.k.forward(h)?;
        let v = self.v.forward(h)?;
        if let Some(n) = &self.q_norm {
            q = per_group(n, q)?;
        }
        if let Some(n) = &self.k_norm {
            k = per_group(n, k)?;
        }
        self.rope.apply(&mut q, &batch.positions)?;
        self.rope.apply(&mut k, &batch.positions)?;
        let a = match kv {
            KvMode::Plain => causal_attention(&q, &k, &v, &batch.seq_lens, &self.spec)?,
            KvMode::Store(slot) => {
                let a = causal_attention(&q, &k, &v, &batch.seq_lens, &self.spec)?;
                *slot = Some((k, v));
                a
            }
            KvMode::Continue((pk, pv)) => {
                causal_attention_with_prefix(&q, &k, &v, &batch.seq_lens, pk, pv, &self.spec)?
            }
            KvMode::Extend((pk, pv), slot) => {
                if batch.seq_lens.len() != 1 {
                    return Err(Error::Input(format!(
                        "extending cached keys needs one sequence, got {}",
                        batch.seq_lens.len()
                    )));
                }
                let a =
                    causal_attention_with_prefix(&q, &k, &v, &batch.seq_lens, pk, pv, &self.spec)?;
                *slot = Some((append_rows(pk, &k)?, append_rows(pv, &v)?));
                a
            }
            KvMode::Append(mut caches) => {
                if caches.len() != batch.seq_lens.len() {
                    return Err(Error::Input(format!(
                        "{} key/value caches for {} sequences",
                        caches.len(),
                        batch.seq_lens.len()
                    )));
                }
                let mut out = Tensor::empty(&[q.rows(), q.cols()], &q.device())?;
                let mut row = 0;
                for (cache, &n) in caches.iter_mut().zip(&batch.seq_lens) {
                    if n == 0 {
                        continue;
                    }
                    let (qi, ki, vi) = (
                        q.slice_rows(row, n)?,
                        k.slice_rows(row, n)?,
                        v.slice_rows(row, n)?,
                    );
                    let a = causal_attention_with_prefix_rows(
                        &qi,
                        &ki,
                        &vi,
                        &[n],
                        &cache.k,
                        &cache.v,
                        cache.len,
                        &self.spec,
                    )?;
                    out.copy_rows_from(row, &a, 0, n)?;
                    cache.append(&ki, &vi)?;
                    row += n;
                }
                out
            }
        };
        self.o.forward(&a)
    }

    pub(crate) fn param_count(&self) -> usize {
        [&self.q, &self.k, &self.v, &self.o]
            .iter()
            .map(|l| l.param_count())
            .sum::<usize>()
            + self.q_norm.as_ref().map_or(0, RmsNorm::param_count)
            + self.k_norm.as_ref().map_or(0, RmsNorm::param_count)
    }
}

/// The rows of `a` followed by those of `b` (same column count).
fn append_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut out = Tensor::empty(&[a.rows() + b.rows(), a.cols()], &a.device())?;
    out.copy_rows_from(0, a, 0, a.rows())?;
    out.copy_rows_from(a.rows(), b, 0, b.rows())?;
    Ok(out)
}

/// Keys and values of one attention sublayer for one sequence being decoded: the first `len` rows
/// of `k` and `v` are used, the rows after them are room to grow into.
pub(crate) struct KvCache {
    pub k: Tensor,
    pub v: Tensor,
    pub len: usize,
}

impl KvCache {
    /// A cache holding a copy of `from` (if any), with room for `capacity` rows in all.
    pub(crate) fn new(
        from: Option<&Kv>,
        cols: usize,
        capacity: usize,
        device: &finercut_tensor::Device,
    ) -> Result<Self> {
        let len = from.map_or(0, |(k, _)| k.rows());
        let cap = capacity.max(len).max(1);
        let mut k = Tensor::empty(&[cap, cols], device)?;
        let mut v = Tensor::empty(&[cap, cols], device)?;
        if let Some((pk, pv)) = from {
            k.copy_rows_from(0, pk, 0, len)?;
            v.copy_rows_from(0, pv, 0, len)?;
        }
        Ok(KvCache { k, v, len })
    }

    /// Appends the rows of `k` and `v` in place; when the buffer is full it is replaced by one
    /// twice as large (amortised constant cost per row).
    pub(crate) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let n = k.rows();
        let need = self.len + n;
        if need > self.k.rows() {
            let cap = need.max(2 * self.k.rows());
            let device = self.k.device();
            let cols = self.k.cols();
            for t in [&mut self.k, &mut self.v] {
                let mut grown = Tensor::empty(&[cap, cols], &device)?;
                grown.copy_rows_from(0, t, 0, self.len)?;
                *t = grown;
            }
        }
        self.k.copy_rows_from(self.len, k, 0, n)?;
        self.v.copy_rows_from(self.len, v, 0, n)?;
        self.len = need;
        Ok(())
    }
}

/// RMSNorm of every group of `x` (`[rows, cols]`) as wide as the norm's weight: every head vector
/// (Gemma, Qwen3: a weight of `head_dim`) or the whole projection (OLMo 2: a weight of `cols`).
fn per_group(norm: &RmsNorm, x: Tensor) -> Result<Tensor> {
    let (rows, cols) = (x.rows(), x.cols());
    let width = norm.weight.elem_count();
    if width == 0 || cols % width != 0 {
        return Err(Error::Config(format!(
            "a norm of width {width} does not divide projections of width {cols}"
        )));
    }
    let y = norm.forward(&x.reshape(&[rows * cols / width, width])?)?;
    Ok(y.reshape(&[rows, cols])?)
}

/// Gated feed-forward, `down(act(gate(x)) · up(x))`, or without a gate, `down(act(up(x)))`
/// (GPT-NeoX).
pub(crate) struct Mlp {
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
    pub act: Activation,
}

impl Mlp {
    pub(crate) fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let mut u = self.up.forward(h)?;
        match &self.gate {
            Some(gate) => {
                let mut g = gate.forward(h)?;
                g.gated_in_place(&u, self.act)?;
                self.down.forward(&g)
            }
            None => {
                u.activate_in_place(self.act)?;
                self.down.forward(&u)
            }
        }
    }

    pub(crate) fn param_count(&self) -> usize {
        self.gate.as_ref().map_or(0, Linear::param_count)
            + self.up.param_count()
            + self.down.param_count()
    }
}

/// The residual branch of a sublayer.
#[allow(clippy::large_enum_variant)] // One per sublayer: the size does not matter.
pub(crate) enum Branch {
    Attn(Attention),
    Mlp(Mlp),
    /// Mixtral's sparse mixture of experts (an FFN sublayer removed as one unit).
    Moe(SparseMoe),
    /// Not in the checkpoint (a pruned export): every plan must remove it (checked by
    /// `Model::check_plan`), so it is never run.
    Absent,
}

/// One residual sublayer: `x + post_norm(branch(norm(x)))` (`post_norm` only for Gemma's sandwich
/// norms), or `x·S + branch(norm(x))` in a sliced model (SliceGPT), whose residual shortcut `S`
/// carries the stream from this sublayer's basis to the next one's. Removing it skips the norm and
/// the branch; the shortcut, part of the residual path, still applies.
///
/// In a parallel block (`parallel`, GPT-NeoX), the attention and FFN sublayers read the same block
/// input: the model runs the attention's branch together with the FFN's, at the FFN sublayer
/// (`Model::apply_stream`), so the stream entering the FFN sublayer is the block input.
pub(crate) struct Sublayer {
    pub id: SublayerId,
    /// Part of a parallel block.
    pub parallel: bool,
    /// The norm before the branch; `None` where the family has none (OLMo 2 normalises after).
    pub norm: Option<RmsNorm>,
    pub branch: Branch,
    pub post_norm: Option<RmsNorm>,
    /// `Sᵀ` (`[d, d]`), so that `matmul_t` computes the row-vector product `x·S`.
    pub shortcut: Option<Matrix>,
}

/// Adds the stacked rows of `out` to the parts, in order.
pub(crate) fn add_output(parts: &mut [Part<'_>], out: &Tensor) -> Result<()> {
    let mut off = 0;
    for p in parts.iter_mut() {
        p.x.add_rows_from(p.row, out, off, p.rows)?;
        off += p.rows;
    }
    Ok(())
}

/// Applies the branches of a parallel block that a plan keeps (`(sublayer, kv mode)`, the
/// attention first) to the parts: every branch reads the same input rows, then their outputs are
/// added in order.
pub(crate) fn apply_parallel(
    branches: Vec<(&Sublayer, KvMode<'_>)>,
    parts: &mut [Part<'_>],
    batch: &Batch,
) -> Result<()> {
    let mut outs = Vec::with_capacity(branches.len());
    for (sub, kv) in branches {
        outs.extend(sub.output(parts, batch, kv)?);
    }
    for out in &outs {
        add_output(parts, out)?;
    }
    Ok(())
}

/// Rows `row..row+rows` of a residual stream: one piece of a batched sublayer evaluation.
pub(crate) struct Part<'a> {
    pub x: &'a mut Tensor,
    pub row: usize,
    pub rows: usize,
}

impl Sublayer {
    /// Applies this sublayer to every part, as one batch: the parts' normalised rows are stacked, the
    /// branch runs once (one GEMM per weight), and each part gets its rows of the output added.
    pub(crate) fn apply(
        &self,
        parts: &mut [Part<'_>],
        batch: &Batch,
        kv: KvMode<'_>,
    ) -> Result<()> {
        let Some(out) = self.output(parts, batch, kv)? else {
            return Ok(());
        };
        self.bypass(parts)?;
        add_output(parts, &out)
    }

    /// The branch's output (after its norms) for the parts' rows, stacked; the parts are only
    /// read. `None` without parts.
    pub(crate) fn output(
        &self,
        parts: &[Part<'_>],
        batch: &Batch,
        kv: KvMode<'_>,
    ) -> Result<Option<Tensor>> {
        let total: usize = parts.iter().map(|p| p.rows).sum();
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let d = first.x.cols();
        let mut h = Tensor::empty(&[total, d], &first.x.device())?;
        let mut off = 0;
        for p in parts.iter() {
            match &self.norm {
                Some(n) => n.rows_into(p.x, p.row, p.rows, &mut h, off)?,
                None => h.copy_rows_from(off, p.x, p.row, p.rows)?,
            }
            off += p.rows;
        }
        let mut out = match &self.branch {
            Branch::Attn(a) => a.forward(&h, batch, kv)?,
            Branch::Mlp(m) => m.forward(&h)?,
            Branch::Moe(m) => m.forward(&h)?,
            Branch::Absent => return Err(Error::Absent(self.id)),
        };
        drop(h);
        if let Some(n) = &self.post_norm {
            out = n.forward(&out)?;
        }
        Ok(Some(out))
    }

    /// What a removed sublayer does to the parts: nothing, or in a sliced model the residual
    /// shortcut `x ← x·S`.
    pub(crate) fn bypass(&self, parts: &mut [Part<'_>]) -> Result<()> {
        let Some(s) = &self.shortcut else {
            return Ok(());
        };
        for p in parts.iter_mut() {
            let y = s.matmul_t(&p.x.slice_rows(p.row, p.rows)?)?;
            p.x.copy_rows_from(p.row, &y, 0, p.rows)?;
        }
        Ok(())
    }

    /// Parameters of the residual shortcut (0 without one).
    pub(crate) fn shortcut_param_count(&self) -> usize {
        self.shortcut.as_ref().map_or(0, Matrix::elem_count)
    }

    /// Calls `f` on every weight matrix of the branch.
    pub(crate) fn for_each_matrix(&self, f: &mut dyn FnMut(&Matrix)) {
        let mlp = |m: &Mlp, f: &mut dyn FnMut(&Matrix)| {
            for l in m.gate.iter().chain([&m.up, &m.down]) {
                f(&l.weight);
            }
        };
        match &self.branch {
            Branch::Attn(a) => {
                for l in [&a.q, &a.k, &a.v, &a.o] {
                    f(&l.weight);
                }
            }
            Branch::Mlp(m) => mlp(m, f),
            Branch::Moe(moe) => {
                f(&moe.router.weight);
                for e in &moe.experts {
                    mlp(e, f);
                }
            }
            Branch::Absent => {}
        }
    }

    /// Parameters of the norm(s) and the branch: what removing the sublayer removes (a sliced
    /// model's shortcut stays; [`Sublayer::shortcut_param_count`]).
    pub(crate) fn param_count(&self) -> usize {
        if matches!(self.branch, Branch::Absent) {
            return 0;
        }
        self.norm.as_ref().map_or(0, RmsNorm::param_count)
            + self.post_norm.as_ref().map_or(0, RmsNorm::param_count)
            + match &self.branch {
                Branch::Attn(a) => a.param_count(),
                Branch::Mlp(m) => m.param_count(),
                Branch::Moe(m) => m.param_count(),
                Branch::Absent => 0,
            }
    }
}
