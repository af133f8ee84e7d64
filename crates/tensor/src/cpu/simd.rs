//! Vector-friendly scalar kernels and run-time dispatch to AVX2/FMA code.
//!
//! The crate is compiled for the baseline target (no `-C target-cpu=native`, see `docs/STYLE.md`), so
//! hot loops are compiled twice by [`multiversion!`]: once for the baseline and once with AVX2 and FMA
//! enabled, chosen at run time. Reductions are written with explicit lanes (`[f32; LANES]`
//! accumulators combined in a fixed order) so the summation order, and therefore the result, is the same
//! in both versions and does not depend on the number of threads.

/// Accumulator lanes of the reductions (one AVX-512 register, two AVX2 registers).
pub(crate) const LANES: usize = 16;

/// Whether the CPU has AVX2 and FMA (cached by the standard library).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled for the baseline target and for AVX2+FMA, dispatching at
/// run time. The body must be safe code; it is inlined into both versions.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident $(<$($lt:lifetime),*>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$($lt),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn generic $(<$($lt),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2 $(<$($lt),*>)? ($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if $crate::cpu::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `e^x` for `f32`, branch-free so loops over it vectorize (Cephes `expf`: range reduction by `ln 2`
/// and a degree-5 polynomial; within 2 ulp). Inputs are clamped to `[-87, 88]`, so the result is never 0
/// or infinite: `exp(-inf)` gives about 1.6e-38.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published.
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const C1: f32 = 0.693_359_4; // ln 2, high part (exact in few bits)
    const C2: f32 = -2.121_944_4e-4; // ln 2 - C1
                                     // Comparisons rather than `f32::max`/`min`, whose NaN rules cost extra instructions.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * (r * r) + r + 1.0;
    // t's bit pattern is MAGIC's plus n in the low bits.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((ni.wrapping_add(127) << 23) as u32);
    y * scale
}

/// `tanh(x)` via [`exp`]; absolute error below 1e-7.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// SiLU `x·σ(x)`.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, evaluated in `f64` and rounded once.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// GELU, tanh approximation (`gelu_pytorch_tanh`).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

/// Sum of squares with [`LANES`] accumulators, combined in a fixed order.
#[inline(always)]
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l] * c[l];
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] += v * v;
    }
    reduce(&acc)
}

/// Maximum of a non-empty slice (NaN-propagation is not needed here).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] = if v > acc[l] { v } else { acc[l] };
    }
    acc.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Elements summed in `f32` lanes before the partial sum is added in `f64`.
const BLOCK: usize = 1024;

/// Writes `exp(x - shift)` into `x` and returns the sum (`f32` lanes per block of [`BLOCK`], blocks
/// added in `f64`; a fixed order).
#[inline(always)]
pub(crate) fn exp_shift_sum(x: &mut [f32], shift: f32) -> f64 {
    let mut total = 0f64;
    for block in x.chunks_mut(BLOCK) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let e = exp(c[l] - shift);
                c[l] = e;
                acc[l] += e;
            }
        }
        for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
            let e = exp(*v - shift);
            *v = e;
            acc[l] += e;
        }
        total += f64::from(reduce(&acc));
    }
    total
}

/// Sum of `exp(x - shift)` without writing (same summation order as [`exp_shift_sum`]).
#[inline(always)]
pub(crate) fn sum_exp_shift(x: &[f32], shift: f32) -> f64 {
    let mut total = 0f64;
    for block in x.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                acc[l] += exp(c[l] - shift);
            }
        }
        for (l, &v) in chunks.remainder().iter().enumerate() {
            acc[l] += exp(v - shift);
        }
        total += f64::from(reduce(&acc));
    }
    total
}

/// Combines lane accumulators pairwise in a fixed order.
#[inline(always)]
pub(crate) fn reduce(acc: &[f32; LANES]) -> f32 {
    let mut a = *acc;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            a[l] += a[l + w];
        }
        w /= 2;
    }
    a[0]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let got = f64::from(exp(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    #[test]
    fn tanh_and_friends() {
        for i in -400..400 {
            let x = i as f32 * 0.05;
            assert!(
                (f64::from(tanh(x)) - f64::from(x).tanh()).abs() < 2e-7,
                "{x}"
            );
            let s = f64::from(x) / (1.0 + (-f64::from(x)).exp());
            assert!(
                (f64::from(silu(x)) - s).abs() < 1e-6 * (1.0 + s.abs()),
                "{x}"
            );
        }
    }

    #[test]
    fn reductions_match_sequential() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert!((f64::from(sum_sq(&x)) - want).abs() < 1e-5);
        assert_eq!(max(&x), x.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        let want: f64 = x.iter().map(|&v| (f64::from(v) - 1.0).exp()).sum();
        assert!((sum_exp_shift(&x, 1.0) - want).abs() < 1e-5);
    }
}
