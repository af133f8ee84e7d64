//! Per-document metrics and their aggregation, as lm-evaluation-harness 0.4 computes them.
//!
//! - `acc`: `argmax(loglik) == gold`;
//! - `acc_norm`: `argmax(loglik / len(choice)) == gold`, where `len` is Python's `len` of the
//!   `doc_to_choice` string, i.e. its number of Unicode code points (lm-eval:
//!   `completion_len = np.array([float(len(i)) for i in choices])`; for ASCII text this equals its bytes);
//! - `argmax` is `np.argmax`: the first maximum, and the first NaN if there is one;
//! - the mean's standard error is `mean_stderr`: sample standard deviation (ddof = 1) over `sqrt(n)`;
//! - a group (MMLU) reports the size-weighted mean of its subtasks and lm-eval's pooled standard error.

/// `np.argmax`: the index of the first NaN if any, else of the first maximum; `None` for an empty slice.
pub fn np_argmax(values: &[f64]) -> Option<usize> {
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Some(i);
    }
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|b| v > values[b]) {
            best = Some(i);
        }
    }
    best
}

/// Python's `len(s)`: the number of code points.
pub fn py_len(s: &str) -> usize {
    s.chars().count()
}

/// `acc` of one multiple-choice document.
pub fn acc(logliks: &[f64], gold: usize) -> f64 {
    f64::from(u8::from(np_argmax(logliks) == Some(gold)))
}

/// `acc_norm` of one multiple-choice document: log-likelihoods divided by the choices' lengths.
pub fn acc_norm(logliks: &[f64], choices: &[String], gold: usize) -> f64 {
    let normed: Vec<f64> = logliks
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / py_len(c) as f64)
        .collect();
    f64::from(u8::from(np_argmax(&normed) == Some(gold)))
}

/// Arithmetic mean (`NaN` for no values).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation with `ddof = 1`; `None` below two values.
pub fn sample_stddev(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values);
    let ss: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    Some((ss / (values.len() - 1) as f64).sqrt())
}

/// lm-eval's `mean_stderr`: `sample_stddev / sqrt(n)`; `None` below two values.
pub fn mean_stderr(values: &[f64]) -> Option<f64> {
    sample_stddev(values).map(|s| s / (values.len() as f64).sqrt())
}

/// lm-eval's `pooled_sample_stderr(stderrs, sizes)` for a group of subtasks:
/// `sqrt(Σ (n_i − 1)·se_i²·n_i / (Σ n_i − k) / Σ n_i)`.
/// A subtask whose standard error is undefined (one document) contributes nothing, as its `n_i − 1` is 0.
pub fn pooled_stderr(parts: &[(Option<f64>, usize)]) -> Option<f64> {
    let total: usize = parts.iter().map(|p| p.1).sum();
    let dof = total.checked_sub(parts.len()).filter(|&d| d > 0)?;
    let var: f64 = parts
        .iter()
        .map(|&(se, n)| {
            let se = se.unwrap_or(0.0);
            n.saturating_sub(1) as f64 * se * se * n as f64
        })
        .sum::<f64>()
        / dof as f64;
    Some((var / total as f64).sqrt())
}

/// lm-eval's `perplexity` aggregation over per-document log-likelihoods: `exp(-mean(loglik))`.
pub fn perplexity(logliks: &[f64]) -> f64 {
    (-mean(logliks)).exp()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn argmax_is_numpy() {
        assert_eq!(np_argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(np_argmax(&[1.0, f64::NAN, 5.0]), Some(1));
        assert_eq!(np_argmax(&[]), None);
        assert_eq!(np_argmax(&[f64::NEG_INFINITY, f64::NEG_INFINITY]), Some(0));
    }

    #[test]
    fn stderr_formula() {
        // n = 4, mean 0.5, sample variance = 1/3, stderr = sqrt(1/3)/2.
        let v = [1.0, 0.0, 1.0, 0.0];
        assert!((mean_stderr(&v).unwrap() - (1.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        assert_eq!(mean_stderr(&[1.0]), None);
    }

    #[test]
    fn pooled_stderr_matches_concatenation_for_equal_means() {
        // Two subtasks with the same mean: pooling equals the stderr of the concatenation up to the
        // (k-1) degrees of freedom lm-eval's formula spends.
        let a = [1.0, 0.0, 1.0, 0.0];
        let b = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let pooled =
            pooled_stderr(&[(mean_stderr(&a), a.len()), (mean_stderr(&b), b.len())]).unwrap();
        let var_a = sample_stddev(&a).unwrap().powi(2);
        let var_b = sample_stddev(&b).unwrap().powi(2);
        let expect =
            (((3.0 * var_a / 4.0 * 4.0) + (5.0 * var_b / 6.0 * 6.0)) / 8.0 / 10.0f64).sqrt();
        assert!((pooled - expect).abs() < 1e-15);
        assert_eq!(pooled_stderr(&[(None, 1)]), None);
    }
}
