//! The paired bootstrap that the reproduction's verdicts rest on, applied to two made-up sets of
//! per-question outcomes: `cargo run -p finercut-reproduce --example paired_bootstrap`.

use finercut_reproduce::stats::{doc_key, paired, Bootstrap, Outcomes};

fn main() -> finercut_reproduce::Result<()> {
    // A dense model and a pruned one on the same 200 questions of one task: the pruned model
    // loses every seventh question the dense model had right.
    let (mut dense, mut pruned) = (Outcomes::default(), Outcomes::default());
    let right = |i: usize| !i.is_multiple_of(3);
    dense.insert_task("arc_easy", (0..200).map(|i| (doc_key(None, i), right(i))));
    pruned.insert_task(
        "arc_easy",
        (0..200).map(|i| (doc_key(None, i), right(i) && !i.is_multiple_of(7))),
    );
    let tasks = ["arc_easy".to_string()];
    let c = paired(&pruned, &dense, &tasks, &Bootstrap::default())?;
    let d = c.average;
    println!(
        "pruned − dense accuracy: {:+.3} (95% interval {:+.3} … {:+.3}); retained {:.3} of the dense score",
        d.estimate, d.low, d.high, c.ratio.estimate
    );
    println!(
        "the drop is {}",
        if d.excludes(0.0) {
            "significant"
        } else {
            "within noise"
        }
    );
    Ok(())
}
