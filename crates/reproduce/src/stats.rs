//! Paired bootstrap over documents: how sure a difference between two pruned models is.
//!
//! Two rows of Table 2 are scored on the same documents, so their difference is measured on
//! pairs: a resample draws documents (with replacement, independently within each task) and both
//! rows are scored on the same draw. The task average is the unweighted mean of the task accuracies,
//! as in the table's "Avg" column; "retained" is the ratio of two averages. Intervals are the 2.5th
//! and 97.5th percentiles of [`Bootstrap::replicates`] resamples, drawn by a ChaCha8 generator
//! seeded from [`Bootstrap::seed`] and the task's name, so that the same documents give the same
//! intervals whatever the order rows are compared in. A difference is called significant when its
//! 95% interval excludes zero.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{bail, Result};

/// Per-document outcomes of one model on the benchmark tasks: task → document key → correct.
///
/// The document key is the document's index in its split, prefixed by the subject and `/` for
/// MMLU ([`doc_key`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Task name → document key → whether the headline metric counts it correct.
    pub tasks: BTreeMap<String, BTreeMap<String, bool>>,
}

/// The key of a document in [`Outcomes`]: `7`, or `anatomy/7` for a subject's document.
pub fn doc_key(subject: Option<&str>, index: usize) -> String {
    match subject {
        Some(s) => format!("{s}/{index}"),
        None => index.to_string(),
    }
}

impl Outcomes {
    /// Outcomes of a task's documents.
    pub fn insert_task(&mut self, task: &str, docs: impl IntoIterator<Item = (String, bool)>) {
        self.tasks.entry(task.to_owned()).or_default().extend(docs);
    }

    /// Accuracy on a task (`None` if the task has no documents).
    pub fn accuracy(&self, task: &str) -> Option<f64> {
        let docs = self.tasks.get(task)?;
        (!docs.is_empty()).then(|| docs.values().filter(|&&c| c).count() as f64 / docs.len() as f64)
    }
}

/// Settings of the paired bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Number of resamples.
    pub replicates: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            replicates: 2000,
            seed: 2405_18218,
        }
    }
}

/// An estimate with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The value on the documents as scored.
    pub estimate: f64,
    /// 2.5th percentile of the resampled values.
    pub low: f64,
    /// 97.5th percentile of the resampled values.
    pub high: f64,
}

impl Interval {
    /// Whether the interval lies entirely on one side of `value`.
    pub fn excludes(&self, value: f64) -> bool {
        self.low > value || self.high < value
    }
}

/// A row compared with a baseline row on the same documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Row minus baseline, per task (accuracy as a fraction).
    pub tasks: BTreeMap<String, Interval>,
    /// Row minus baseline on the task average.
    pub average: Interval,
    /// Row's average over baseline's average.
    pub ratio: Interval,
    /// Documents paired, per task.
    pub documents: BTreeMap<String, usize>,
}

/// Compares `row` with `baseline` on `tasks`, pairing the documents both scored.
///
/// Fails when a task has no document scored by both (nothing to compare).
pub fn paired(
    row: &Outcomes,
    baseline: &Outcomes,
    tasks: &[String],
    boot: &Bootstrap,
) -> Result<Comparison> {
    if tasks.is_empty() {
        bail!("a paired comparison needs at least one task");
    }
    if boot.replicates < 100 {
        bail!(
            "the bootstrap needs at least 100 replicates (got {})",
            boot.replicates
        );
    }
    // Per task: the paired outcomes as (row, baseline) 0/1 values.
    let mut pairs: Vec<(String, Vec<(f64, f64)>)> = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (Some(r), Some(b)) = (row.tasks.get(task), baseline.tasks.get(task)) else {
            bail!("task {task}: missing from one of the rows compared");
        };
        let p: Vec<(f64, f64)> = r
            .iter()
            .filter_map(|(k, &x)| {
                b.get(k)
                    .map(|&y| (f64::from(u8::from(x)), f64::from(u8::from(y))))
            })
            .collect();
        if p.is_empty() {
            bail!("task {task}: no document scored by both rows");
        }
        pairs.push((task.clone(), p));
    }
    let means = |p: &[(f64, f64)], idx: &mut dyn Iterator<Item = usize>| {
        let (mut a, mut b, mut n) = (0.0, 0.0, 0usize);
        for i in idx {
            a += p[i].0;
            b += p[i].1;
            n += 1;
        }
        (a / n as f64, b / n as f64)
    };
    let k = pairs.len() as f64;
    // Point estimates.
    let mut task_est = Vec::with_capacity(pairs.len());
    let (mut avg_a, mut avg_b) = (0.0, 0.0);
    for (_, p) in &pairs {
        let (a, b) = means(p, &mut (0..p.len()));
        task_est.push(a - b);
        avg_a += a / k;
        avg_b += b / k;
    }
    // Resamples: one generator per task, seeded by the task's name.
    let reps = boot.replicates;
    let mut task_reps: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); pairs.len()];
    let mut avg_a_reps = vec![0.0; reps];
    let mut avg_b_reps = vec![0.0; reps];
    for (t, (name, p)) in pairs.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(boot.seed ^ fnv1a(name.as_bytes()));
        let n = p.len();
        for r in 0..reps {
            let (a, b) = means(p, &mut (0..n).map(|_| rng.gen_range(0..n)));
            task_reps[t].push(a - b);
            avg_a_reps[r] += a / k;
            avg_b_reps[r] += b / k;
        }
    }
    let diff_reps: Vec<f64> = avg_a_reps
        .iter()
        .zip(&avg_b_reps)
        .map(|(a, b)| a - b)
        .collect();
    let ratio_reps: Vec<f64> = avg_a_reps
        .iter()
        .zip(&avg_b_reps)
        .map(|(a, b)| if *b > 0.0 { a / b } else { f64::NAN })
        .collect();
    Ok(Comparison {
        tasks: pairs
            .iter()
            .zip(task_est)
            .zip(task_reps)
            .map(|(((name, _), est), reps)| (name.clone(), interval(est, reps)))
            .collect(),
        average: interval(avg_a - avg_b, diff_reps),
        ratio: interval(
            if avg_b > 0.0 { avg_a / avg_b } else { f64::NAN },
            ratio_reps,
        ),
        documents: pairs.iter().map(|(n, p)| (n.clone(), p.len())).collect(),
    })
}

/// The percentile interval of resampled values around an estimate (NaN resamples are dropped).
fn interval(estimate: f64, mut reps: Vec<f64>) -> Interval {
    reps.retain(|x| x.is_finite());
    if reps.is_empty() {
        return Interval {
            estimate,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    reps.sort_by(f64::total_cmp);
    let at = |q: f64| {
        // Linear interpolation between order statistics (numpy's default percentile).
        let pos = q * (reps.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        reps[lo] + (reps[hi] - reps[lo]) * (pos - lo as f64)
    };
    Interval {
        estimate,
        low: at(0.025),
        high: at(0.975),
    }
}

/// FNV-1a: a stable hash of a task name (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How a method stands against FinerCut on the task average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// FinerCut's average is higher beyond noise (the interval of method − FinerCut is below 0).
    Behind,
    /// The interval contains 0.
    Tied,
    /// The method's average is higher beyond noise.
    Ahead,
}

impl Standing {
    /// The standing of a method whose difference to FinerCut (method − FinerCut) is `diff`.
    pub fn of(diff: &Interval) -> Standing {
        if diff.high < 0.0 {
            Standing::Behind
        } else if diff.low > 0.0 {
            Standing::Ahead
        } else {
            Standing::Tied
        }
    }
}

/// The one-line verdict under a model's table, from each method's standing against FinerCut.
pub fn verdict(model: &str, standings: &[(String, Standing)]) -> String {
    let names = |s: Standing| -> Vec<&str> {
        standings
            .iter()
            .filter(|(_, x)| *x == s)
            .map(|(n, _)| n.as_str())
            .collect()
    };
    let list = |v: &[&str]| match v {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    let (behind, tied, ahead) = (
        names(Standing::Behind),
        names(Standing::Tied),
        names(Standing::Ahead),
    );
    let mut parts = Vec::new();
    if !behind.is_empty() {
        parts.push(format!(
            "FinerCut is ahead of {} beyond noise",
            list(&behind)
        ));
    }
    if !tied.is_empty() {
        parts.push(format!(
            "{} with {}",
            if parts.is_empty() {
                "FinerCut is tied"
            } else {
                "tied"
            },
            list(&tied)
        ));
    }
    if !ahead.is_empty() {
        parts.push(format!(
            "{} {} ahead of FinerCut beyond noise",
            list(&ahead),
            if ahead.len() == 1 { "is" } else { "are" }
        ));
    }
    if parts.is_empty() {
        return format!("{model}: no method to compare with FinerCut.");
    }
    format!(
        "{model}: {} (95% paired bootstrap intervals of the average's difference).",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    fn outcomes(task: &str, v: &[bool]) -> Outcomes {
        let mut o = Outcomes::default();
        o.insert_task(
            task,
            v.iter().enumerate().map(|(i, &c)| (doc_key(None, i), c)),
        );
        o
    }

    #[test]
    fn identical_rows_have_a_zero_interval() {
        let a = outcomes("t", &[true, false, true, true, false]);
        let c = paired(&a, &a, &["t".into()], &Bootstrap::default()).expect("compare");
        assert_eq!(c.average.estimate, 0.0);
        assert_eq!((c.average.low, c.average.high), (0.0, 0.0));
        assert_eq!(c.ratio.estimate, 1.0);
        assert!(!c.average.excludes(0.0));
    }

    #[test]
    fn a_row_right_everywhere_the_baseline_is_wrong_is_significant() {
        let a = outcomes("t", &[true; 50]);
        let b = outcomes("t", &[false; 50]);
        let c = paired(&a, &b, &["t".into()], &Bootstrap::default()).expect("compare");
        assert_eq!(c.average.estimate, 1.0);
        assert!(c.average.excludes(0.0));
        assert_eq!(Standing::of(&c.average), Standing::Ahead);
    }

    #[test]
    fn same_seed_same_interval_and_another_seed_another() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let a: Vec<bool> = (0..60).map(|_| rng.gen_bool(0.6)).collect();
        let b: Vec<bool> = (0..60).map(|_| rng.gen_bool(0.4)).collect();
        let (a, b) = (outcomes("t", &a), outcomes("t", &b));
        let t = ["t".to_string()];
        let x = paired(&a, &b, &t, &Bootstrap::default()).expect("compare");
        let y = paired(&a, &b, &t, &Bootstrap::default()).expect("compare");
        assert_eq!(x, y);
        let z = paired(
            &a,
            &b,
            &t,
            &Bootstrap {
                seed: 1,
                ..Bootstrap::default()
            },
        )
        .expect("compare");
        assert_ne!(
            (x.average.low, x.average.high),
            (z.average.low, z.average.high)
        );
    }

    #[test]
    fn only_documents_scored_by_both_are_paired() {
        let a = outcomes("t", &[true, true, true, true]);
        let b = outcomes("t", &[false, false]);
        let c = paired(&a, &b, &["t".into()], &Bootstrap::default()).expect("compare");
        assert_eq!(c.documents["t"], 2);
        let missing = paired(&a, &b, &["u".into()], &Bootstrap::default());
        assert!(missing.is_err());
    }

    #[test]
    fn the_verdict_names_every_method_once() {
        let v = verdict(
            "M",
            &[
                ("A".into(), Standing::Behind),
                ("B".into(), Standing::Behind),
                ("C".into(), Standing::Tied),
                ("D".into(), Standing::Ahead),
            ],
        );
        assert_eq!(
            v,
            "M: FinerCut is ahead of A and B beyond noise; tied with C; D is ahead of FinerCut \
             beyond noise (95% paired bootstrap intervals of the average's difference)."
        );
        let t = verdict("M", &[("A".into(), Standing::Tied)]);
        assert!(t.starts_with("M: FinerCut is tied with A"));
    }

    proptest! {
        /// The interval brackets the estimate's sampling distribution: the normal-approximation
        /// standard error of a paired mean difference, times 1.96, is close to the interval's
        /// half-width, and the estimate lies inside the interval.
        #[test]
        fn interval_matches_the_normal_approximation(
            seed in 0u64..1000,
            n in 200usize..400,
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let a: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.6)).collect();
            let b: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.5)).collect();
            let c = paired(&outcomes("t", &a), &outcomes("t", &b), &["t".into()], &Bootstrap::default())
                .expect("compare");
            let d: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| f64::from(u8::from(x)) - f64::from(u8::from(y))).collect();
            let mean = d.iter().sum::<f64>() / n as f64;
            let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let half = 1.96 * (var / n as f64).sqrt();
            let got = (c.average.high - c.average.low) / 2.0;
            prop_assert!((mean - c.average.estimate).abs() < 1e-12);
            prop_assert!(c.average.low <= mean && mean <= c.average.high);
            prop_assert!((got - half).abs() < 0.2 * half, "bootstrap half-width {} vs normal {}", got, half);
        }
    }
}
