//! Construction from shared bytes, dtype conversion and zero-copy use of aligned `f32` data.

use finercut_tensor::{DType, Device, Error, SharedBytes, Tensor};
use std::sync::Arc;

struct Owner(Vec<u8>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Bytes at a 4-byte aligned base address (a `Vec<u32>` viewed as bytes).
fn aligned_owner(values: &[f32], pad_front: usize) -> (SharedBytes, usize) {
    let words = vec![0u32; values.len() + pad_front.div_ceil(4) + 1];
    let mut bytes: Vec<u8> = bytemuck_bytes(&words);
    for (i, v) in values.iter().enumerate() {
        bytes[pad_front + 4 * i..pad_front + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    // Re-wrap in an aligned buffer so that `pad_front == 0` gives an aligned start.
    struct Words(Vec<u32>);
    impl AsRef<[u8]> for Words {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: u32 has no padding; the byte view covers exactly the vector's initialised memory.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * 4) }
        }
    }
    let mut w = vec![0u32; words.len()];
    for (i, chunk) in bytes.chunks_exact(4).enumerate() {
        w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    (Arc::new(Words(w)), pad_front)
}

fn bytemuck_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

#[test]
fn aligned_f32_is_used_in_place_and_unaligned_is_copied() {
    let values = [1.5f32, -2.0, 3.25, 4.0, 5.0, 6.0];
    let (owner, start) = aligned_owner(&values, 0);
    let t = Tensor::from_shared_bytes(owner.clone(), start, 24, DType::F32, &[2, 3]).unwrap();
    assert!(t.is_mapped());
    assert_eq!(t.as_slice_f32().unwrap(), &values);
    assert_eq!(
        t.as_slice_f32().unwrap().as_ptr().cast::<u8>(),
        (*owner).as_ref().as_ptr()
    );

    let (owner, start) = aligned_owner(&values, 2);
    let t = Tensor::from_shared_bytes(owner, start, 24, DType::F32, &[6]).unwrap();
    assert!(!t.is_mapped());
    assert_eq!(t.as_slice_f32().unwrap(), &values);

    // Writing to a mapped tensor copies it first; the owner is untouched.
    let (owner, start) = aligned_owner(&values, 0);
    let mut t = Tensor::from_shared_bytes(owner.clone(), start, 24, DType::F32, &[6]).unwrap();
    t.as_mut_slice_f32().unwrap()[0] = 9.0;
    assert!(!t.is_mapped());
    assert_eq!(
        f32::from_le_bytes((*owner).as_ref()[..4].try_into().unwrap()),
        1.5
    );
}

#[test]
fn half_types_convert_to_f32() {
    let vals = [1.0f32, -0.5, 3.0, 65504.0];
    for dtype in [DType::BF16, DType::F16] {
        let bytes: Vec<u8> = vals
            .iter()
            .flat_map(|&v| match dtype {
                DType::BF16 => half::bf16::from_f32(v).to_bits().to_le_bytes(),
                _ => half::f16::from_f32(v).to_bits().to_le_bytes(),
            })
            .collect();
        let owner: SharedBytes = Arc::new(Owner([vec![0u8; 1], bytes].concat()));
        let t = Tensor::from_shared_bytes(owner, 1, 8, dtype, &[2, 2]).unwrap();
        assert_eq!(t.dtype(), dtype);
        let f = t.to_dtype(DType::F32).unwrap();
        let want: Vec<f32> = match dtype {
            DType::BF16 => vals
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect(),
            _ => vals.to_vec(),
        };
        assert_eq!(f.as_slice_f32().unwrap(), &want[..]);
        assert_eq!(f.to_dtype(dtype).unwrap().to_vec_f32().unwrap(), want);
    }
}

#[test]
fn bad_byte_ranges_are_errors() {
    let owner: SharedBytes = Arc::new(Owner(vec![0u8; 16]));
    assert!(matches!(
        Tensor::from_shared_bytes(owner.clone(), 8, 16, DType::F32, &[4]),
        Err(Error::ByteRange {
            start: 8,
            end: 24,
            available: 16,
            ..
        })
    ));
    assert!(matches!(
        Tensor::from_shared_bytes(owner.clone(), 0, 12, DType::F32, &[4]),
        Err(Error::ElementCount { .. })
    ));
    assert!(Tensor::from_shared_bytes(owner, usize::MAX - 2, 4, DType::F32, &[1]).is_err());
    assert!(Tensor::from_vec(vec![0.0; 3], &[2, 2], &Device::Cpu).is_err());
}

#[test]
fn rows_and_slices() {
    let t = Tensor::from_vec(
        (0..12).map(|i| i as f32).collect(),
        &[2, 2, 3],
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!((t.rows(), t.cols()), (4, 3));
    let s = t.slice_rows(1, 2).unwrap();
    assert_eq!(s.to_vec_f32().unwrap(), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let mut u = Tensor::zeros(&[3, 3], &Device::Cpu).unwrap();
    u.copy_rows_from(1, &t, 2, 2).unwrap();
    u.add_rows_from(0, &t, 0, 1).unwrap();
    assert_eq!(
        u.to_vec_f32().unwrap(),
        vec![0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    );
    assert!(t.slice_rows(3, 2).is_err());
    let mut v = t.clone();
    v.add_rows_from(0, &t, 0, t.rows()).unwrap();
    v.scale_in_place(0.5).unwrap();
    assert_eq!(v.to_vec_f32().unwrap(), t.to_vec_f32().unwrap());
    assert_eq!(format!("{t:?}"), "Tensor[[2, 2, 3], f32, cpu]");
}
