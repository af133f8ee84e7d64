//! Compares a dense model's next-token logits with a pruned model's under every metric FinerCut can
//! search with: `cargo run -p finercut-metrics --example divergences`.

use finercut_metrics::{next_token_targets, Accumulator, DenseRows, Metric};

fn main() -> Result<(), finercut_metrics::Error> {
    let vocab = 4;
    // Logits of three positions of one sequence, dense and after a removal.
    let dense = vec![2.0, 0.5, -1.0, 0.0, 0.1, 3.0, 0.2, -0.5, 1.0, 1.0, 1.0, 1.0];
    let pruned = vec![1.5, 0.7, -0.8, 0.1, 0.4, 2.2, 0.3, -0.2, 1.2, 0.9, 1.0, 0.8];
    // Perplexity scores the next token of each position: the sequence is the tokens 0, 1, 2
    // (the last position has no next token).
    let targets = next_token_targets(&[vec![0, 1, 2]]);
    let rows = DenseRows::new(dense, vocab)?.with_targets(targets)?;
    for metric in Metric::ALL {
        let mut acc = Accumulator::new(metric, &rows)?;
        acc.add_rows(0, &pruned)?;
        println!("{metric:>13}: {:.6}", acc.finish()?);
    }
    Ok(())
}
