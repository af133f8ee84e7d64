//! The eigensolver and the covariance against plain `f64` references.

use finercut_slice::{covariance, symmetric_eigen, Dense, Error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_symmetric(n: usize, seed: u64) -> Dense {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = rng.gen_range(-1.0..1.0);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    Dense {
        rows: n,
        cols: n,
        data: a,
    }
}

#[test]
fn eigenpairs_satisfy_the_definition_and_are_sorted() {
    for (n, seed) in [(1, 1), (2, 2), (7, 3), (33, 4), (120, 5)] {
        let a = random_symmetric(n, seed);
        let (values, v) = symmetric_eigen(&a, 0).unwrap();
        assert_eq!(values.len(), n);
        assert!(
            values.windows(2).all(|w| w[0] >= w[1]),
            "n = {n}: eigenvalues not in descending order: {values:?}"
        );
        let norm: f64 = a.data.iter().map(|x| x * x).sum::<f64>().sqrt();
        for j in 0..n {
            // ‖A v − λ v‖ and ‖v‖ = 1, in plain loops.
            let mut residual = 0.0f64;
            for i in 0..n {
                let av: f64 = (0..n).map(|l| a.data[i * n + l] * v.data[l * n + j]).sum();
                residual += (av - values[j] * v.data[i * n + j]).powi(2);
            }
            assert!(
                residual.sqrt() <= 1e-10 * norm.max(1.0),
                "n = {n}, pair {j}: residual {}",
                residual.sqrt()
            );
            for m in 0..n {
                let dot: f64 = (0..n).map(|i| v.data[i * n + j] * v.data[i * n + m]).sum();
                let want = if m == j { 1.0 } else { 0.0 };
                assert!(
                    (dot - want).abs() < 1e-10,
                    "n = {n}: columns {j} and {m} have dot product {dot}"
                );
            }
        }
        // The trace is the sum of the eigenvalues.
        let trace: f64 = (0..n).map(|i| a.data[i * n + i]).sum();
        let sum: f64 = values.iter().sum();
        assert!((trace - sum).abs() < 1e-9 * norm.max(1.0));
    }
}

#[test]
fn a_known_spectrum_is_recovered_in_order() {
    // diag(1, 5, 3) rotated by a permutation: eigenvalues 5, 3, 1 with unit basis vectors.
    let a = Dense {
        rows: 3,
        cols: 3,
        data: vec![3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 5.0],
    };
    let (values, v) = symmetric_eigen(&a, 0).unwrap();
    for (got, want) in values.iter().zip([5.0, 3.0, 1.0]) {
        assert!((got - want).abs() < 1e-12, "{values:?}");
    }
    // The eigenvector of 5 is ±e₂, of 3 ±e₀, of 1 ±e₁.
    for (col, axis) in [(0, 2), (1, 0), (2, 1)] {
        assert!((v.data[axis * 3 + col].abs() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn non_finite_matrices_are_an_error_naming_the_point() {
    let mut a = random_symmetric(4, 9);
    a.data[5] = f64::NAN;
    let e = symmetric_eigen(&a, 7).unwrap_err();
    assert!(matches!(e, Error::Eigen { point: 7, .. }), "{e}");
    assert!(e.to_string().contains("point 7"), "{e}");
}

#[test]
fn covariance_matches_a_plain_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // More rows than one partial block, and a ragged last block.
    let (rows, d) = (1500, 9);
    let x: Vec<f32> = (0..rows * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let h = covariance(&x, rows, d).unwrap();
    for i in 0..d {
        for j in 0..d {
            let want: f64 = (0..rows)
                .map(|r| f64::from(x[r * d + i]) * f64::from(x[r * d + j]))
                .sum();
            let got = h.data[i * d + j];
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "H[{i}][{j}] = {got}, want {want}"
            );
        }
    }
    assert!(covariance(&x, rows + 1, d).is_err());
}
