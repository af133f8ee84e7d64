//! `finercut inspect`: the Figure 4 view of a result file, in the terminal and as SVG.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use finercut_search::inspect::Inspection;
use finercut_search::SearchResult;

/// Arguments of `finercut inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A result file written by `finercut prune`.
    #[arg(value_name = "RUN.json")]
    pub run: PathBuf,
    /// Pruning ratio to show, in (0, 1): the fraction of the 2L sublayers [default: everything
    /// the run removed].
    #[arg(long, value_parser = crate::common::parse_ratio)]
    pub ratio: Option<f64>,
    /// Where to write the SVG grid [default: RUN.ratio-R.svg next to the result file].
    #[arg(long, value_name = "FILE.svg")]
    pub svg: Option<PathBuf>,
    /// Print the inspection as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list every step with its score and runners-up (lower bounds of candidates stopped
    /// early are marked with ≥).
    #[arg(long)]
    pub steps: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let result = SearchResult::load(&args.run)?;
    let (removed, ratio) = match args.ratio {
        Some(r) => (result.plan_for_ratio(r)?, r),
        None => {
            let all: BTreeSet<usize> = result.removed_sublayers().into_iter().collect();
            let share = all.len() as f64 / result.num_sublayers() as f64;
            (all, share)
        }
    };
    let inspection = Inspection::new(result.num_blocks, &removed);
    let svg = args
        .svg
        .unwrap_or_else(|| default_svg_path(&args.run, ratio));
    let title = format!(
        "{} ({}, {}) at {:.0}% of sublayers removed",
        result.settings.method,
        result
            .settings
            .metric
            .map(|m| m.to_string())
            .unwrap_or_else(|| "no metric".into()),
        result.settings.level,
        ratio * 100.0
    );
    let data = finercut_reproduce::plots::Figure4Data {
        method: result.settings.method.to_string(),
        ratio_percent: ratio * 100.0,
        panels: vec![
            finercut_reproduce::plots::SublayerGrid::from_sublayer_indices(
                result
                    .provenance
                    .model_sha256
                    .get(..12)
                    .unwrap_or("model")
                    .to_owned(),
                result.num_blocks,
                removed,
            ),
        ],
    };
    let rendered = finercut_reproduce::plots::figure4(&svg, &data)
        .with_context(|| format!("cannot write {}", svg.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        println!("{title}");
        println!("{}", inspection.text());
        if args.steps {
            print!("{}", finercut_search::inspect::steps_text(&result));
        }
        println!("grid: {rendered}");
    }
    Ok(())
}

fn default_svg_path(run: &Path, ratio: f64) -> PathBuf {
    let stem = run
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    run.with_file_name(format!("{stem}.ratio-{:.0}.svg", ratio * 100.0))
}
