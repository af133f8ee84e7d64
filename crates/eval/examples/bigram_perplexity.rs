//! The perplexity protocol of `finercut-eval` on a language model written in a few lines: a
//! byte-level bigram model counted on the first half of the built-in WikiText-2 test text and
//! scored on windows of the second half: `cargo run -p finercut-eval --example bigram_perplexity`.

use finercut_eval::{
    perplexity, ContinuationScore, LanguageModel, PerplexityOptions, ScoreGroup, WIKITEXT2_TEST,
};

/// Byte bigrams with add-one smoothing; token 256 is the prefix token.
struct Bigram {
    log_p: Vec<[f64; 257]>,
}

impl Bigram {
    fn fit(text: &[u8]) -> Bigram {
        let mut counts = vec![[1.0f64; 257]; 257];
        for pair in text.windows(2) {
            counts[usize::from(pair[0])][usize::from(pair[1])] += 1.0;
        }
        let log_p = counts
            .iter()
            .map(|row| {
                let total: f64 = row.iter().sum();
                row.map(|c| (c / total).ln())
            })
            .collect();
        Bigram { log_p }
    }
}

impl LanguageModel for Bigram {
    fn encode(&self, text: &str) -> finercut_eval::Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn prefix_token(&self) -> u32 {
        256
    }
    fn max_length(&self) -> usize {
        4096
    }
    fn score(&self, groups: &[ScoreGroup]) -> finercut_eval::Result<Vec<Vec<ContinuationScore>>> {
        Ok(groups
            .iter()
            .map(|g| {
                g.continuations
                    .iter()
                    .map(|c| {
                        let mut prev = *g.context.last().unwrap_or(&256) as usize;
                        let (mut logprob, mut is_greedy) = (0.0, true);
                        for &t in c {
                            let row = &self.log_p[prev];
                            logprob += row[t as usize];
                            let best = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            is_greedy &= row[t as usize] == best;
                            prev = t as usize;
                        }
                        ContinuationScore { logprob, is_greedy }
                    })
                    .collect()
            })
            .collect())
    }
}

fn main() -> finercut_eval::Result<()> {
    let half = WIKITEXT2_TEST.len() / 2;
    let split = (half..WIKITEXT2_TEST.len())
        .find(|&i| WIKITEXT2_TEST.is_char_boundary(i))
        .unwrap_or(half);
    let (train, test) = WIKITEXT2_TEST.split_at(split);
    let model = Bigram::fit(train.as_bytes());
    let mut options = PerplexityOptions::new(512);
    options.max_windows = Some(64);
    let report = perplexity(&model, test, &options, &mut |_| {})?;
    println!(
        "byte bigram on WikiText-2 (second half): perplexity {:.3} per byte over {} windows of {} bytes",
        report.perplexity, report.windows_scored, report.seq_len
    );
    Ok(())
}
