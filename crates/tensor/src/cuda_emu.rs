//! A Rust emulation of the CUDA kernels whose indexing and reductions are easy to get wrong
//! (`attention_f32`, `rope_f32`, `rms_norm_f32`, `layer_norm_f32`, `divergence_rows` and the bf16 conversions of
//! `cuda/kernels.cu`), run against the CPU backend and `finercut-metrics` on random inputs, so an
//! indexing or reduction mistake in the kernels' logic shows without a GPU.
//!
//! Each emulated kernel mirrors its CUDA source line for line: the same launch geometry (from
//! `cuda_plan`, as the backend launches it), the same block, warp and lane loops with the same
//! index arithmetic, the xor-shuffle butterflies of `warp_sum`/`warp_max` lane by lane, the
//! `__shared__` partials of `block_sum`, and key/value tiles bounded by the dynamic shared memory
//! the launch asks for. Phases separated by `__syncthreads()` run one after the other for all
//! threads of a block. What it cannot mirror is the device's rounding of individual operations
//! (fused multiply-adds, `expf`'s last bit), so comparisons use tolerances of a few float ulps
//! scaled by the sizes.
//!
//! Tests only: nothing here is compiled into the library.

#![allow(clippy::unwrap_used, clippy::too_many_arguments)] // Tests may unwrap (`docs/STYLE.md`).

use crate::backend::{AttnDims, BackendStorage, RopeTables};
use crate::cpu::storage::CpuStorage;
use crate::cuda_plan::{self, Geometry, ATT_BQ, ATT_MAXD, ATT_ROWS, ATT_WARPS};
use crate::ops::NormWeight;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WARP: usize = 32;

/// `warp_sum`/`warp_max`: `v = f(v, __shfl_xor_sync(v, o))` for o = 16, 8, 4, 2, 1, every lane at
/// once; each lane ends with the same value.
fn warp_reduce<T: Copy>(v: &mut [T; WARP], f: impl Fn(T, T) -> T) {
    let mut o = 16;
    while o > 0 {
        let prev = *v;
        for (l, x) in v.iter_mut().enumerate() {
            *x = f(prev[l], prev[l ^ o]);
        }
        o >>= 1;
    }
}

/// `block_sum`/`block_sum_d`/`block_max`: a warp reduction per warp, lane 0 of each writes
/// `s[warp]`, then warp 0 reduces `s[lane]` (`identity` for lanes past the warp count). `v` holds
/// one value per thread of the block.
fn block_reduce<T: Copy>(v: &[T], identity: T, f: impl Fn(T, T) -> T + Copy) -> T {
    assert_eq!(v.len() % WARP, 0, "blockDim.x must be a multiple of 32");
    let nw = v.len() / WARP;
    assert!(nw <= 32, "block_sum's s[32] holds one partial per warp");
    let mut s = [identity; 32];
    for w in 0..nw {
        let mut lanes: [T; WARP] = v[w * WARP..(w + 1) * WARP].try_into().unwrap();
        warp_reduce(&mut lanes, f);
        s[w] = lanes[0];
    }
    let mut lanes = [identity; WARP];
    for (lane, x) in lanes.iter_mut().enumerate() {
        *x = if lane < nw { s[lane] } else { identity };
    }
    warp_reduce(&mut lanes, f);
    lanes[0]
}

fn block_sum(v: &[f32]) -> f32 {
    block_reduce(v, 0.0, |a, b| a + b)
}

fn block_sum_d(v: &[f64]) -> f64 {
    block_reduce(v, 0.0, |a, b| a + b)
}

fn block_max(v: &[f32]) -> f32 {
    block_reduce(v, f32::NEG_INFINITY, f32::max)
}

/// `f32_to_bf16` of kernels.cu: round to nearest even; NaN stays a quiet NaN.
fn f32_to_bf16(f: f32) -> u16 {
    let mut u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    u = u.wrapping_add(0x7fff + ((u >> 16) & 1));
    (u >> 16) as u16
}

/// `bf16_to_f32` of kernels.cu.
fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Every thread index of a block.
fn threads(g: &Geometry) -> std::ops::Range<usize> {
    0..g.block.0 as usize
}

/// `rms_norm_f32` over a grid of rows.
fn rms_norm_f32(
    g: Geometry,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    cols: u32,
    eps: f32,
    one_plus: i32,
) {
    let bd = g.block.0 as usize;
    for block in 0..g.grid.0 as usize {
        let xr = &x[block * cols as usize..];
        let orow = &mut out[block * cols as usize..];
        let mut ss = vec![0f32; bd];
        for (t, s) in threads(&g).zip(ss.iter_mut()) {
            let mut j = t;
            while j < cols as usize {
                *s += xr[j] * xr[j];
                j += bd;
            }
        }
        let ss = block_sum(&ss);
        let inv = 1.0 / (ss / cols as f32 + eps).sqrt();
        for t in threads(&g) {
            let mut j = t;
            while j < cols as usize {
                let gw = if one_plus != 0 { 1.0 + w[j] } else { w[j] };
                orow[j] = (xr[j] * inv) * gw;
                j += bd;
            }
        }
    }
}

/// `layer_norm_f32` over a grid of rows.
fn layer_norm_f32(g: Geometry, x: &[f32], w: &[f32], out: &mut [f32], cols: u32, eps: f32) {
    let bd = g.block.0 as usize;
    let n = cols as usize;
    for block in 0..g.grid.0 as usize {
        let xr = &x[block * n..];
        let orow = &mut out[block * n..];
        let mut s = vec![0f32; bd];
        for (t, acc) in threads(&g).zip(s.iter_mut()) {
            let mut j = t;
            while j < n {
                *acc += xr[j];
                j += bd;
            }
        }
        let mean = block_sum(&s) / cols as f32;
        let mut ss = vec![0f32; bd];
        for (t, acc) in threads(&g).zip(ss.iter_mut()) {
            let mut j = t;
            while j < n {
                let d = xr[j] - mean;
                *acc += d * d;
                j += bd;
            }
        }
        let inv = 1.0 / (block_sum(&ss) / cols as f32 + eps).sqrt();
        for t in threads(&g) {
            let mut j = t;
            while j < n {
                orow[j] = ((xr[j] - mean) * inv) * w[j];
                j += bd;
            }
        }
    }
}

/// `rope_f32` over a grid of rows.
#[allow(clippy::too_many_arguments)]
fn rope_f32(
    g: Geometry,
    x: &mut [f32],
    cos_t: &[f32],
    sin_t: &[f32],
    index: &[u32],
    cols: u32,
    half: u32,
    head_dim: u32,
) {
    let bd = g.block.0 as usize;
    for block in 0..g.grid.0 as usize {
        let r = &mut x[block * cols as usize..];
        let c = &cos_t[index[block] as usize * half as usize..];
        let s = &sin_t[index[block] as usize * half as usize..];
        let pairs = cols / head_dim * half;
        for t in threads(&g) {
            let mut p = t as u32;
            while p < pairs {
                let (head, i) = ((p / half) as usize, (p % half) as usize);
                let a = head * head_dim as usize;
                let (x1, x2) = (r[a + i], r[a + i + half as usize]);
                r[a + i] = x1 * c[i] - x2 * s[i];
                r[a + i + half as usize] = x2 * c[i] + x1 * s[i];
                p += bd as u32;
            }
        }
    }
}

/// Online-softmax state of one lane of a warp (`qr`, `o`, `m`, `l` of attention_f32).
#[derive(Clone, Copy)]
struct Lane {
    qr: [[f32; ATT_MAXD as usize]; ATT_ROWS as usize],
    o: [[f32; ATT_MAXD as usize]; ATT_ROWS as usize],
    m: [f32; ATT_ROWS as usize],
    l: [f32; ATT_ROWS as usize],
}

/// `attention_f32` over its grid (query blocks × heads × sequences).
fn attention_f32(
    g: Geometry,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pk: &[f32],
    pv: &[f32],
    plen: u32,
    seq_starts: &[u32],
    seq_lens: &[u32],
    out: &mut [f32],
    heads: u32,
    kv_heads: u32,
    hd: u32,
    scale: f32,
    window: u32,
    softcap: f32,
    bk: u32,
) {
    let (bq, rows, maxd) = (ATT_BQ, ATT_ROWS as usize, ATT_MAXD as usize);
    let bd = g.block.0 as usize;
    assert_eq!(bd, (32 * ATT_WARPS) as usize);
    // Dynamic shared memory: ks then vs, bk·hd floats each.
    let smem_floats = g.shared_bytes as usize / 4;
    assert!(
        2 * (bk * hd) as usize <= smem_floats,
        "tiles exceed the launch's shared memory"
    );
    let mut smem = vec![f32::NAN; smem_floats];
    for s in 0..g.grid.2 {
        for h in 0..g.grid.1 {
            for bx in 0..g.grid.0 {
                let (len, start) = (seq_lens[s as usize], seq_starts[s as usize]);
                let i0 = bx * bq;
                if i0 >= len {
                    continue;
                }
                let i1 = (i0 + bq).min(len);
                let kvh = h / (heads / kv_heads);
                let (qs, kvs) = (
                    u64::from(heads) * u64::from(hd),
                    u64::from(kv_heads) * u64::from(hd),
                );
                let mut st = vec![
                    Lane {
                        qr: [[0.0; ATT_MAXD as usize]; ATT_ROWS as usize],
                        o: [[0.0; ATT_MAXD as usize]; ATT_ROWS as usize],
                        m: [0.0; ATT_ROWS as usize],
                        l: [0.0; ATT_ROWS as usize],
                    };
                    bd
                ];
                for (tid, ls) in st.iter_mut().enumerate() {
                    let (lane, warp) = ((tid & 31) as u32, (tid >> 5) as u32);
                    for r in 0..rows {
                        let i = i0 + warp * ATT_ROWS + r as u32;
                        ls.m[r] = f32::NEG_INFINITY;
                        ls.l[r] = 0.0;
                        for jd in 0..maxd {
                            let d = lane + 32 * jd as u32;
                            ls.qr[r][jd] = if i < i1 && d < hd {
                                q[(u64::from(start + i) * qs
                                    + u64::from(h) * u64::from(hd)
                                    + u64::from(d)) as usize]
                            } else {
                                0.0
                            };
                            ls.o[r][jd] = 0.0;
                        }
                    }
                }
                let first = plen + i0 + 1;
                let klo = if window != 0 && first > window {
                    first - window
                } else {
                    0
                };
                let khi = plen + i1;
                let mut t0 = klo;
                while t0 < khi {
                    let nt = bk.min(khi - t0);
                    // __syncthreads(); every thread stages elements e, e + blockDim, ...
                    smem.fill(f32::NAN);
                    let (ks, vs) = smem.split_at_mut((bk * hd) as usize);
                    for tid in 0..bd {
                        let mut e = tid as u32;
                        while e < nt * hd {
                            let (jj, d) = (e / hd, e % hd);
                            let j = t0 + jj;
                            let (off, kb, vb) = if j < plen {
                                (u64::from(j) * kvs, pk, pv)
                            } else {
                                (u64::from(start + j - plen) * kvs, k, v)
                            };
                            let at = (off + u64::from(kvh) * u64::from(hd) + u64::from(d)) as usize;
                            ks[e as usize] = kb[at];
                            vs[e as usize] = vb[at];
                            e += bd as u32;
                        }
                    }
                    // __syncthreads(); each warp scores its rows against the tile.
                    for warp in 0..ATT_WARPS {
                        for r in 0..rows {
                            let i = i0 + warp * ATT_ROWS + r as u32;
                            if i >= i1 {
                                continue;
                            }
                            let pos = plen + i;
                            let lo = if window != 0 && pos + 1 > window {
                                pos + 1 - window
                            } else {
                                0
                            };
                            for jj in 0..nt {
                                let j = t0 + jj;
                                if j < lo || j > pos {
                                    continue;
                                }
                                let lanes =
                                    &mut st[(warp * 32) as usize..(warp * 32 + 32) as usize];
                                let mut part = [0f32; WARP];
                                for (lane, p) in part.iter_mut().enumerate() {
                                    for jd in 0..maxd {
                                        let d = lane as u32 + 32 * jd as u32;
                                        if d < hd {
                                            *p +=
                                                lanes[lane].qr[r][jd] * ks[(jj * hd + d) as usize];
                                        }
                                    }
                                }
                                warp_reduce(&mut part, |a, b| a + b);
                                for (lane, ls) in lanes.iter_mut().enumerate() {
                                    let mut sc = part[lane] * scale;
                                    if softcap > 0.0 {
                                        sc = softcap * (sc / softcap).tanh();
                                    }
                                    let mn = ls.m[r].max(sc);
                                    let corr = (ls.m[r] - mn).exp();
                                    let p = (sc - mn).exp();
                                    ls.l[r] = ls.l[r] * corr + p;
                                    for jd in 0..maxd {
                                        let d = lane as u32 + 32 * jd as u32;
                                        if d < hd {
                                            ls.o[r][jd] =
                                                ls.o[r][jd] * corr + p * vs[(jj * hd + d) as usize];
                                        }
                                    }
                                    ls.m[r] = mn;
                                }
                            }
                        }
                    }
                    t0 += bk;
                }
                for (tid, ls) in st.iter().enumerate() {
                    let (lane, warp) = ((tid & 31) as u32, (tid >> 5) as u32);
                    for r in 0..rows {
                        let i = i0 + warp * ATT_ROWS + r as u32;
                        if i >= i1 {
                            continue;
                        }
                        let inv = 1.0 / ls.l[r];
                        for jd in 0..maxd {
                            let d = lane + 32 * jd as u32;
                            if d < hd {
                                out[(u64::from(start + i) * qs
                                    + u64::from(h) * u64::from(hd)
                                    + u64::from(d)) as usize] = ls.o[r][jd] * inv;
                            }
                        }
                    }
                }
            }
        }
    }
}

const LN2: f64 = std::f64::consts::LN_2;

/// `row_lse` of kernels.cu for one block: NaN when a value is NaN or +∞ or the maximum is not finite.
fn row_lse(bd: usize, r: &[f32], vocab: u32) -> f64 {
    let mut m = vec![f32::NEG_INFINITY; bd];
    let mut bad = false;
    for (t, mt) in m.iter_mut().enumerate() {
        let mut j = t;
        while j < vocab as usize {
            let x = r[j];
            if x.is_nan() || x == f32::INFINITY {
                bad = true;
            }
            *mt = mt.max(x);
            j += bd;
        }
    }
    let m = block_max(&m);
    if bad || !m.is_finite() {
        return f64::NAN;
    }
    let md = f64::from(m);
    let mut s = vec![0f64; bd];
    for (t, st) in s.iter_mut().enumerate() {
        let mut j = t;
        while j < vocab as usize {
            *st += (f64::from(r[j]) - md).exp();
            j += bd;
        }
    }
    md + block_sum_d(&s).ln()
}

fn js_elem(lp: f64, lq: f64) -> f64 {
    let (t, big) = ((lq - lp).abs(), if lq > lp { lq } else { lp }.exp());
    let (e, l1p) = ((-t).exp(), (-t).exp().ln_1p());
    big * ((1.0 + e) * (LN2 - l1p) - if e == 0.0 { 0.0 } else { t * e })
}

fn js_reference_elem(lp: f64, lq: f64) -> f64 {
    let (t, big) = ((lq - lp).abs(), if lq > lp { lq } else { lp }.exp());
    let l1p = (-t).exp().ln_1p();
    0.5 * big * (1.0 + (-t).exp()) * (2.0 * (l1p - LN2) + t)
}

fn clamp0(x: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// `divergence_rows` over a grid of pruned rows.
fn divergence_rows(
    g: Geometry,
    dense: &[f32],
    dense_lse: &[f64],
    dense_norm: &[f64],
    pruned: &[f32],
    targets: &[i32],
    out: &mut [f64],
    vocab: u32,
    dense_row0: u32,
    metric: i32,
) {
    let bd = g.block.0 as usize;
    let v = vocab as usize;
    for row in 0..g.grid.0 as usize {
        let drow = dense_row0 as usize + row;
        let b = &pruned[row * v..];
        let a = &dense[drow * v..];
        // Per-thread partial sums over j = t, t + blockDim, ...
        let partial = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
            (0..bd)
                .map(|t| {
                    let mut acc = 0.0;
                    let mut j = t;
                    while j < v {
                        acc += f(j);
                        j += bd;
                    }
                    acc
                })
                .collect()
        };
        let value = match metric {
            4 => block_sum_d(&partial(&|j| {
                let d = f64::from(a[j]) - f64::from(b[j]);
                d * d
            })),
            3 => {
                let dot = block_sum_d(&partial(&|j| f64::from(a[j]) * f64::from(b[j])));
                let sq = block_sum_d(&partial(&|j| f64::from(b[j]) * f64::from(b[j])));
                let denom = dense_norm[drow] * sq.sqrt();
                let c = if denom > 0.0 {
                    dot / denom
                } else if denom.is_nan() {
                    f64::NAN
                } else {
                    0.0
                };
                c.clamp(0.0, 1.0).acos()
            }
            _ => {
                let lse_q = row_lse(bd, b, vocab);
                let lse_d = dense_lse[drow];
                if metric == 5 {
                    let t = targets[drow];
                    if t < 0 {
                        0.0
                    } else {
                        clamp0(lse_q - f64::from(b[t as usize]))
                    }
                } else {
                    let shift = lse_q - lse_d;
                    let acc = block_sum_d(&partial(&|j| {
                        let (x, y) = (f64::from(a[j]), f64::from(b[j]));
                        match metric {
                            0 => js_elem(x - lse_d, y - lse_q),
                            1 => js_reference_elem(x - lse_d, y - lse_q),
                            _ => (x - lse_d).exp() * ((x - y) + shift),
                        }
                    }));
                    match metric {
                        0 => clamp0(0.5 * acc).min(LN2),
                        1 => clamp0(0.5 * acc) / f64::from(vocab),
                        _ => clamp0(acc),
                    }
                }
            }
        };
        out[row] = value;
    }
}

fn rand_vec(g: &mut StdRng, n: usize, spread: f32) -> Vec<f32> {
    (0..n).map(|_| g.gen_range(-spread..spread)).collect()
}

/// `max |a − b|` against `tol · max(1, max |b|)`.
fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: element {i}: emulated kernel {x} vs CPU backend {y}"
        );
    }
}

#[test]
fn reductions_sum_every_thread_once() {
    // Integers are exact in f32: any lost or doubled lane or warp shows.
    for threads in [32usize, 64, 128, 256, 1024] {
        let v: Vec<f32> = (0..threads).map(|t| (t * 7 % 13) as f32).collect();
        assert_eq!(block_sum(&v), v.iter().sum::<f32>(), "{threads} threads");
        assert_eq!(block_max(&v), 12.0);
        let mut lanes: [f32; 32] = std::array::from_fn(|l| l as f32);
        warp_reduce(&mut lanes, |a, b| a + b);
        assert!(lanes.iter().all(|&x| x == 496.0), "every lane gets the sum");
    }
}

#[test]
fn bf16_rounding_of_the_kernels_equals_the_half_crate() {
    let mut g = StdRng::seed_from_u64(1);
    let edges = [
        0u32,
        0x8000_0000,
        0x0000_0001,
        0x807f_ffff,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffff_ffff,
        0x7fbf_ffff,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_7fff,
        0x3f80_8001,
        0x7f7f_8000,
        0x0080_0000,
        0x007f_ffff,
        0x4049_0fdb,
    ];
    let randoms = (0..200_000).map(|_| g.gen::<u32>());
    // Every tie pattern (low 16 bits 0x8000) over a sweep of high halves.
    let ties = (0..=0xffffu32).step_by(7).map(|hi| (hi << 16) | 0x8000);
    for bits in edges.into_iter().chain(randoms).chain(ties) {
        let f = f32::from_bits(bits);
        let want = half::bf16::from_f32(f);
        let got = f32_to_bf16(f);
        if f.is_nan() {
            assert!(
                half::bf16::from_bits(got).is_nan(),
                "{bits:#010x}: NaN must stay NaN"
            );
            assert_eq!(
                got & 0x8000,
                want.to_bits() & 0x8000,
                "{bits:#010x}: NaN sign"
            );
        } else {
            assert_eq!(got, want.to_bits(), "{bits:#010x} ({f:e})");
        }
        let b = (bits >> 16) as u16;
        let back = bf16_to_f32(b);
        let want_back = half::bf16::from_bits(b).to_f32();
        assert!(back.to_bits() == want_back.to_bits() || (back.is_nan() && want_back.is_nan()));
    }
}

#[test]
fn rms_norm_kernel_matches_the_cpu_backend() {
    let mut g = StdRng::seed_from_u64(2);
    for (rows, cols) in [(1, 1), (3, 31), (2, 256), (5, 257), (4, 1000), (2, 4096)] {
        for one_plus in [false, true] {
            let x = rand_vec(&mut g, rows * cols, 3.0);
            let w = rand_vec(&mut g, cols, 1.0);
            let geo = cuda_plan::per_row("rms_norm", rows).unwrap();
            let mut out = vec![f32::NAN; rows * cols];
            rms_norm_f32(
                geo,
                &x,
                &w,
                &mut out,
                cols as u32,
                1e-5,
                i32::from(one_plus),
            );
            let kind = if one_plus {
                NormWeight::OnePlus
            } else {
                NormWeight::Plain
            };
            let mut want = CpuStorage::F32(vec![0.0; rows * cols]);
            CpuStorage::F32(x)
                .rms_norm(0, rows, cols, &CpuStorage::F32(w), 1e-5, kind, &mut want, 0)
                .unwrap();
            let tol = 4.0 * f32::EPSILON * (cols as f32).sqrt().max(4.0);
            assert_close(
                &out,
                want.as_f32("t").unwrap(),
                tol,
                &format!("rms_norm {rows}x{cols}"),
            );
        }
    }
}

#[test]
fn layer_norm_kernel_matches_the_cpu_backend() {
    let mut g = StdRng::seed_from_u64(4);
    for (rows, cols) in [(1, 1), (3, 31), (2, 256), (5, 257), (4, 1000), (2, 4096)] {
        // Rows off centre, so that the mean matters.
        let x: Vec<f32> = rand_vec(&mut g, rows * cols, 3.0)
            .iter()
            .map(|v| v + 2.0)
            .collect();
        let w = rand_vec(&mut g, cols, 1.0);
        let geo = cuda_plan::per_row("layer_norm", rows).unwrap();
        let mut out = vec![f32::NAN; rows * cols];
        layer_norm_f32(geo, &x, &w, &mut out, cols as u32, 1e-5);
        let mut want = CpuStorage::F32(vec![0.0; rows * cols]);
        CpuStorage::F32(x)
            .rms_norm(
                0,
                rows,
                cols,
                &CpuStorage::F32(w),
                1e-5,
                NormWeight::Centred,
                &mut want,
                0,
            )
            .unwrap();
        let tol = 8.0 * f32::EPSILON * (cols as f32).sqrt().max(4.0);
        assert_close(
            &out,
            want.as_f32("t").unwrap(),
            tol,
            &format!("layer_norm {rows}x{cols}"),
        );
    }
}

#[test]
fn rope_kernel_matches_the_cpu_backend() {
    let mut g = StdRng::seed_from_u64(3);
    // (rows, heads, half, head_dim, positions): partial rotary where head_dim > 2 · half.
    for (rows, heads, half, head_dim, positions) in [
        (1, 1, 1, 2, 1),
        (5, 3, 32, 64, 9),
        (7, 4, 64, 128, 20),
        (3, 9, 40, 80, 3),
        (4, 2, 300, 600, 5),
        (3, 4, 8, 64, 6),
        (2, 3, 16, 96, 4),
    ] {
        let cols = heads * head_dim;
        let x = rand_vec(&mut g, rows * cols, 2.0);
        let (cos, sin) = (
            rand_vec(&mut g, positions * half, 1.0),
            rand_vec(&mut g, positions * half, 1.0),
        );
        let index: Vec<u32> = (0..rows)
            .map(|_| g.gen_range(0..positions as u32))
            .collect();
        let geo = cuda_plan::per_row("rope", rows).unwrap();
        let mut got = x.clone();
        rope_f32(
            geo,
            &mut got,
            &cos,
            &sin,
            &index,
            cols as u32,
            half as u32,
            head_dim as u32,
        );
        let mut want = CpuStorage::F32(x);
        want.rope(
            cols,
            &RopeTables {
                head_dim,
                half,
                cos: &cos,
                sin: &sin,
                index: &index,
            },
        )
        .unwrap();
        assert_close(
            &got,
            want.as_f32("t").unwrap(),
            2.0 * f32::EPSILON,
            &format!("rope {rows}x{cols}"),
        );
    }
}

/// One attention case: sequences, heads, head size, prefix length, window, softcap.
fn attention_case(
    g: &mut StdRng,
    lens: &[usize],
    heads: usize,
    kv_heads: usize,
    hd: usize,
    plen: usize,
    window: Option<usize>,
    softcap: Option<f32>,
) {
    let rows: usize = lens.iter().sum();
    let (qs, kvs) = (heads * hd, kv_heads * hd);
    let q = rand_vec(g, rows * qs, 1.0);
    let (k, v) = (rand_vec(g, rows * kvs, 1.0), rand_vec(g, rows * kvs, 1.0));
    let (pk, pv) = (
        rand_vec(g, plen.max(1) * kvs, 1.0),
        rand_vec(g, plen.max(1) * kvs, 1.0),
    );
    let dims = AttnDims {
        heads,
        kv_heads,
        head_dim: hd,
        scale: 1.0 / (hd as f32).sqrt(),
        window,
        softcap,
    };
    let max_len = lens.iter().copied().max().unwrap();
    let (geo, bk) = cuda_plan::attention("att", max_len, heads, lens.len(), hd).unwrap();
    let mut starts = Vec::new();
    let mut row = 0u32;
    for &l in lens {
        starts.push(row);
        row += l as u32;
    }
    let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
    let mut got = vec![f32::NAN; rows * qs];
    let (pk_, pv_) = if plen > 0 {
        (&pk[..], &pv[..])
    } else {
        (&k[..], &v[..])
    };
    attention_f32(
        geo,
        &q,
        &k,
        &v,
        pk_,
        pv_,
        plen as u32,
        &starts,
        &lens32,
        &mut got,
        heads as u32,
        kv_heads as u32,
        hd as u32,
        dims.scale,
        window.unwrap_or(0) as u32,
        softcap.unwrap_or(0.0),
        bk,
    );
    let (cq, ck, cv) = (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v));
    let (cpk, cpv) = (CpuStorage::F32(pk), CpuStorage::F32(pv));
    let prefix = (plen > 0).then_some((&cpk, &cpv, plen));
    let want = cq.attention(&ck, &cv, prefix, lens, &dims).unwrap();
    let keys = (plen + max_len) as f32;
    assert_close(
        &got,
        want.as_f32("t").unwrap(),
        8.0 * f32::EPSILON * keys.sqrt().max(4.0) * (hd as f32).sqrt(),
        &format!("attention lens {lens:?} heads {heads}/{kv_heads} hd {hd} prefix {plen} window {window:?} softcap {softcap:?}"),
    );
}

#[test]
fn attention_kernel_matches_the_cpu_backend() {
    let mut g = StdRng::seed_from_u64(4);
    attention_case(&mut g, &[1], 1, 1, 1, 0, None, None);
    attention_case(&mut g, &[17, 5, 40], 4, 2, 64, 0, None, None);
    attention_case(&mut g, &[33, 1], 6, 3, 40, 0, None, None);
    attention_case(&mut g, &[50], 2, 1, 256, 0, None, None);
    attention_case(&mut g, &[20, 37], 4, 4, 72, 0, Some(7), None);
    attention_case(&mut g, &[19, 3], 8, 2, 128, 0, None, Some(50.0));
    attention_case(&mut g, &[9, 16, 2], 4, 2, 96, 13, None, None);
    attention_case(&mut g, &[25], 2, 2, 32, 70, Some(30), Some(30.0));
}

#[test]
fn divergence_kernel_matches_finercut_metrics() {
    use finercut_metrics::{DenseRows, Metric};
    let mut g = StdRng::seed_from_u64(5);
    for vocab in [1usize, 7, 300, 1031] {
        let rows = 6;
        let dense = rand_vec(&mut g, rows * vocab, 6.0);
        let mut pruned = rand_vec(&mut g, rows * vocab, 6.0);
        // Row 1 equals its dense row; row 2 is a small change of it.
        pruned[vocab..2 * vocab].copy_from_slice(&dense[vocab..2 * vocab]);
        for j in 0..vocab {
            pruned[2 * vocab + j] = dense[2 * vocab + j] + 1e-3 * (j % 5) as f32;
        }
        let targets: Vec<Option<u32>> = (0..rows)
            .map(|r| (r != 3).then(|| g.gen_range(0..vocab as u32)))
            .collect();
        let oracle = DenseRows::new(dense.clone(), vocab)
            .unwrap()
            .with_targets(targets.clone())
            .unwrap();
        let lse: Vec<f64> = (0..rows).map(|r| oracle.log_sum_exp(r).unwrap()).collect();
        let norm: Vec<f64> = dense
            .chunks(vocab)
            .map(|r| {
                r.iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let t: Vec<i32> = targets.iter().map(|t| t.map_or(-1, |x| x as i32)).collect();
        for (metric, row_metric) in [
            (Metric::Js, crate::RowMetric::Js),
            (Metric::JsReference, crate::RowMetric::JsReference),
            (Metric::Kl, crate::RowMetric::Kl),
            (Metric::Angular, crate::RowMetric::Angular),
            (Metric::Euclidean, crate::RowMetric::Euclidean),
            (Metric::Ppl, crate::RowMetric::Ppl),
        ] {
            // Rows 2.. of the pruned logits against dense rows 2.. (dense_row0 = 2).
            let n = rows - 2;
            let geo = cuda_plan::per_row("div", n).unwrap();
            let mut out = vec![f64::NAN; n];
            divergence_rows(
                geo,
                &dense,
                &lse,
                &norm,
                &pruned[2 * vocab..],
                &t,
                &mut out,
                vocab as u32,
                2,
                row_metric.code(),
            );
            for (i, &got) in out.iter().enumerate() {
                let want = oracle
                    .row_value(metric, 2 + i, &pruned[(2 + i) * vocab..(3 + i) * vocab])
                    .unwrap();
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{metric:?} vocab {vocab} row {}: emulated kernel {got} vs finercut-metrics {want}",
                    2 + i
                );
            }
        }
    }
}
