//! Branch-free `f64` `exp` and `ln(1 + e)` that the compiler can vectorise, for the per-element
//! kernels (libm's scalar calls would cost most of a divergence pass).
//!
//! `exp` is Cody–Waite range reduction `x = k·ln 2 + r`, `|r| ≤ ln2/2`, with a degree-13 Taylor
//! polynomial for `e^r`; `ln_1p_unit` is fdlibm's `log` kernel (`s = f/(2+f)`, Remez
//! polynomial in `s²`). Both are within a few ulp of libm on their domains (tested below).
//! The constants keep fdlibm's published digits, hence the `excessive_precision` allowance.
#![allow(clippy::excessive_precision)]

const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
const INV_LN2: f64 = std::f64::consts::LOG2_E;
/// Adding this rounds a double in `[-2^51, 2^51]` to an integer kept in the low mantissa bits.
const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52

/// `e^x`. Exact zero below `-708` (where the result would be subnormal); NaN for NaN.
/// Arguments above `709` are clamped (the kernels never pass any).
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    let xc = x.clamp(-708.0, 709.0);
    let t = xc * INV_LN2 + SHIFTER;
    let k = t - SHIFTER;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    // Taylor series of e^r to r^13 / 13!, |r| ≤ 0.347: truncation error < 5e-18.
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^k from the integer in t's low bits.
    let ki = t.to_bits().wrapping_sub(SHIFTER.to_bits());
    let scale = f64::from_bits(ki.wrapping_add(1023) << 52);
    let v = p * scale;
    let v = if x < -708.0 { 0.0 } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

const LG1: f64 = 6.666_666_666_666_735_130e-01;
const LG2: f64 = 3.999_999_999_940_941_908e-01;
const LG3: f64 = 2.857_142_874_366_239_149e-01;
const LG4: f64 = 2.222_219_843_214_978_396e-01;
const LG5: f64 = 1.818_357_216_161_805_012e-01;
const LG6: f64 = 1.531_383_769_920_937_332e-01;
const LG7: f64 = 1.479_819_860_511_658_591e-01;

/// `ln(1 + e)` for `e` in `[0, 1]` (NaN in, NaN out).
#[inline(always)]
pub(crate) fn ln_1p_unit(e: f64) -> f64 {
    // Reduce 1+e to [√2/2, √2): above √2, halve it (ln(1+e) = ln 2 + ln(1 + (e−1)/2)).
    let big = e > std::f64::consts::SQRT_2 - 1.0;
    let f = if big { (e - 1.0) * 0.5 } else { e };
    let (k_hi, k_lo) = if big { (LN2_HI, LN2_LO) } else { (0.0, 0.0) };
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    k_hi - ((hfsq - (s * (hfsq + r) + k_lo)) - f)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        let spacing = f64::EPSILON * b.abs().max(f64::MIN_POSITIVE);
        (a - b).abs() / spacing
    }

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -708.0;
        while x < 5.0 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.000_731_3;
        }
        for x in [0.0, -0.0, 1e-300, -1e-300, 1e-10, -1e-10, -0.5, 0.5, -700.0] {
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert!(exp(f64::NAN).is_nan());
    }

    #[test]
    fn ln_1p_unit_matches_libm() {
        let mut worst = 0.0f64;
        let mut e = 0.0;
        while e <= 1.0 {
            worst = worst.max(ulps(ln_1p_unit(e), e.ln_1p()));
            e += 0.000_013_7;
        }
        for e in [
            0.0,
            1e-300,
            1e-17,
            1e-9,
            0.414_213_562_373_095,
            0.414_213_562_373_096,
            1.0,
        ] {
            worst = worst.max(ulps(ln_1p_unit(e), e.ln_1p()));
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(ln_1p_unit(0.0), 0.0);
        assert_eq!(ln_1p_unit(1.0), std::f64::consts::LN_2);
        assert!(ln_1p_unit(f64::NAN).is_nan());
    }
}
