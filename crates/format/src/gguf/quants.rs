//! ggml storage types and their dequantisation to `f32`.
//!
//! Block layouts follow llama.cpp's `ggml-common.h` (`block_q4_0` … `block_q6_K`, `QK_K = 256`)
//! and the arithmetic follows `ggml-quants.c` (`dequantize_row_*`) operation for operation, so the
//! results are bit-identical to llama.cpp's reference code and to gguf-py's numpy dequantiser:
//! each value is an `f32` product (and sum) of the stored scales and integer quants, computed in
//! the same order.

use std::fmt;

use half::{bf16, f16};

/// A ggml tensor type (the `ggml_type` ids of llama.cpp's `ggml.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 0: f32.
    F32,
    /// 1: f16.
    F16,
    /// 2: blocks of 32, one f16 scale, 4-bit quants offset by 8.
    Q4_0,
    /// 3: blocks of 32, f16 scale and minimum, 4-bit quants.
    Q4_1,
    /// 6: blocks of 32, f16 scale, 5-bit quants offset by 16.
    Q5_0,
    /// 7: blocks of 32, f16 scale and minimum, 5-bit quants.
    Q5_1,
    /// 8: blocks of 32, f16 scale, 8-bit quants.
    Q8_0,
    /// 9: blocks of 32 with a scale and a sum (activations only).
    Q8_1,
    /// 10: super-blocks of 256, 2-bit.
    Q2_K,
    /// 11: super-blocks of 256, 3-bit.
    Q3_K,
    /// 12: super-blocks of 256: eight sub-blocks of 32 with 6-bit scales and minimums, 4-bit quants.
    Q4_K,
    /// 13: like Q4_K with a fifth bit per quant.
    Q5_K,
    /// 14: super-blocks of 256: sixteen sub-blocks of 16 with 8-bit scales, 6-bit quants.
    Q6_K,
    /// 15: super-blocks of 256, 8-bit (activations only).
    Q8_K,
    /// 24: i8.
    I8,
    /// 25: i16.
    I16,
    /// 26: i32.
    I32,
    /// 27: i64.
    I64,
    /// 28: f64.
    F64,
    /// 30: bfloat16.
    BF16,
    /// Any other id: the file can be read, such tensors cannot.
    Other(u32),
}

impl GgmlType {
    /// The type for a ggml type id.
    pub fn from_id(id: u32) -> GgmlType {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            other => Other(other),
        }
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            Other(id) => id,
        }
    }

    /// `(elements per block, bytes per block)`, or `None` for an unknown type.
    pub fn layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            Other(_) => return None,
        })
    }

    /// Whether [`dequantize_row`] handles this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Other(id) => write!(f, "ggml type {id}"),
            t => write!(f, "{t:?}"),
        }
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K/Q5_K super-block (`get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantises one row: `src` holds `dst.len()` elements of type `ty`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), String> {
    let (block, bytes) = ty.layout().ok_or_else(|| format!("unknown {ty}"))?;
    if !dst.len().is_multiple_of(block) || src.len() != dst.len() / block * bytes {
        return Err(format!(
            "{} bytes of {ty} cannot hold {} elements (blocks of {block} in {bytes} bytes)",
            src.len(),
            dst.len()
        ));
    }
    let blocks = src.chunks_exact(bytes).zip(dst.chunks_exact_mut(block));
    match ty {
        GgmlType::F32 => {
            for (x, y) in blocks {
                y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            }
        }
        GgmlType::F16 => {
            for (x, y) in blocks {
                y[0] = f16_at(x, 0);
            }
        }
        GgmlType::BF16 => {
            for (x, y) in blocks {
                y[0] = bf16::from_le_bytes([x[0], x[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                let qs = &x[2..18];
                for j in 0..16 {
                    let x0 = (qs[j] & 0x0F) as i32 - 8;
                    let x1 = (qs[j] >> 4) as i32 - 8;
                    y[j] = x0 as f32 * d;
                    y[j + 16] = x1 as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                let m = f16_at(x, 2);
                let qs = &x[4..20];
                for j in 0..16 {
                    y[j] = (qs[j] & 0x0F) as f32 * d + m;
                    y[j + 16] = (qs[j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q5_0 => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
                let qs = &x[6..22];
                for j in 0..16 {
                    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                    let x0 = ((qs[j] & 0x0F) | xh0) as i32 - 16;
                    let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
                    y[j] = x0 as f32 * d;
                    y[j + 16] = x1 as f32 * d;
                }
            }
        }
        GgmlType::Q5_1 => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                let m = f16_at(x, 2);
                let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
                let qs = &x[8..24];
                for j in 0..16 {
                    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                    let x0 = (qs[j] & 0x0F) | xh0;
                    let x1 = (qs[j] >> 4) | xh1;
                    y[j] = x0 as f32 * d + m;
                    y[j + 16] = x1 as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                for j in 0..32 {
                    y[j] = (x[2 + j] as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_K => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                let min = f16_at(x, 2);
                let scales = &x[4..16];
                let qs = &x[16..144];
                for (c, (q, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
                    let (sc, m) = scale_min_k4(2 * c, scales);
                    let (d1, m1) = (d * sc as f32, min * m as f32);
                    let (sc, m) = scale_min_k4(2 * c + 1, scales);
                    let (d2, m2) = (d * sc as f32, min * m as f32);
                    for l in 0..32 {
                        out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                        out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            for (x, y) in blocks {
                let d = f16_at(x, 0);
                let min = f16_at(x, 2);
                let scales = &x[4..16];
                let qh = &x[16..48];
                let qs = &x[48..176];
                for (c, (ql, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
                    let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
                    let (sc, m) = scale_min_k4(2 * c, scales);
                    let (d1, m1) = (d * sc as f32, min * m as f32);
                    let (sc, m) = scale_min_k4(2 * c + 1, scales);
                    let (d2, m2) = (d * sc as f32, min * m as f32);
                    for l in 0..32 {
                        let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                        let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                        out[l] = d1 * ((ql[l] & 0x0F) + h1) as f32 - m1;
                        out[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (x, y) in blocks {
                let d = f16_at(x, 208);
                for n in 0..2 {
                    let ql = &x[64 * n..64 * n + 64];
                    let qh = &x[128 + 32 * n..128 + 32 * n + 32];
                    let sc = &x[192 + 8 * n..192 + 8 * n + 8];
                    let out = &mut y[128 * n..128 * n + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
        }
        other => return Err(format!("dequantising {other} is not implemented")),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for id in 0..40 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut y = [0f32; 32];
        dequantize_row(GgmlType::Q8_0, &b, &mut y).unwrap();
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);
        assert!(dequantize_row(GgmlType::Q8_0, &b[..10], &mut y).is_err());
    }
}
