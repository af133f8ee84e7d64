//! Writes the tiny random Llama of `finercut reproduce --smoke` (config, byte-level tokenizer,
//! weights), loads it as the `finercut` commands do, and measures its perplexity on the built-in
//! WikiText-2 text dense and with two sublayers removed:
//! `cargo run -p finercut-pipeline --example tiny_model [DIR]` (DIR defaults to a fresh directory
//! under the system's temporary directory).

use std::collections::BTreeSet;
use std::path::PathBuf;

use finercut_eval::PerplexityOptions;
use finercut_pipeline::{load_model, perplexity_of, write_tiny_model, LoadOptions, TinySpec};

fn main() -> finercut_pipeline::Result<()> {
    // SAFETY: first thing in `main`, before any thread starts.
    unsafe { finercut_tensor::init_blas() };
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("finercut-tiny-{}", std::process::id())),
    };
    write_tiny_model(&dir, &TinySpec::default())?;
    let loaded = load_model(&dir, &LoadOptions::default())?;
    println!(
        "{}: {} sublayers",
        dir.display(),
        loaded.model.num_sublayers()
    );
    let mut options = PerplexityOptions::new(128);
    options.max_windows = Some(8);
    let text = finercut_eval::WIKITEXT2_TEST;
    for removed in [BTreeSet::new(), BTreeSet::from([1, 6])] {
        let report = perplexity_of(&loaded, &removed, text, &options, false)?;
        println!(
            "removed {removed:?}: perplexity {:.2} over {} windows",
            report.perplexity, report.windows_scored
        );
    }
    Ok(())
}
