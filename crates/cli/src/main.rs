//! The `finercut` command-line tool: convert checkpoints, run and score models, prune them the
//! FinerCut way, inspect and export the result, evaluate on the paper's benchmarks, and reproduce
//! the paper's tables and figures.

mod common;
mod convert;
mod evaluate;
mod export;
mod gsm8k;
mod inspect;
mod like;
mod prune;
mod ranks;
mod reproduce;
mod run;
mod slice;
mod speed;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Prune large language models the FinerCut way (arXiv 2405.18218) and see what was pruned.
///
/// Every attention and FFN sublayer of a decoder is a removal candidate; the greedy search removes,
/// step by step, the one whose removal changes the model's next-token distributions least on
/// calibration text. Models are Hugging Face directories (config.json, tokenizer.json,
/// *.safetensors, sharded or not) or GGUF files. Without --model, the default SmolLM2-135M-Instruct
/// from the cache ($FINERCUT_CACHE, default ~/.cache/finercut) is used; `cargo xtask fetch` puts it there.
/// Under `mpirun`/`srun` (a build with `--features mpi`), FINERCUT_RANK_TIMEOUT=SECONDS ends the
/// job when a rank waits longer than that for the others in one exchange (a rank stuck while alive);
/// unset or 0: no bound.
#[derive(Debug, Parser)]
#[command(name = "finercut", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a GGUF file into a Hugging Face directory (model.safetensors, config.json,
    /// tokenizer.json) that transformers loads as is.
    Convert(convert::Args),
    /// Print the most likely next tokens after a prompt: a quick check that a model loads and works.
    Run(run::Args),
    /// Perplexity over non-overlapping windows of a text (WikiText-2 test by default); under
    /// `mpirun`/`srun` the windows are shared among the ranks, with the one-process result.
    Ppl(run::PplArgs),
    /// Search which sublayers to remove (FinerCut or a baseline) and write a result file.
    Prune(prune::Args),
    /// Show which sublayers a result file removes at a ratio (the paper's Figure 4 view).
    Inspect(inspect::Args),
    /// Write a pruned checkpoint whose removed sublayers' tensors are gone.
    Export(export::Args),
    /// Slice the residual stream with SliceGPT (arXiv 2401.15024, a baseline) and write the
    /// smaller model, which every command loads with --model DIR. Its calibration defaults are
    /// FinerCut's, so both methods see the same text (the SliceGPT paper calibrates on far more);
    /// the kept width should not exceed samples × seq-len, beyond the covariance's rank the kept
    /// directions are arbitrary.
    Slice(slice::Args),
    /// Evaluate a (pruned) model on the paper's benchmarks, scored like lm-evaluation-harness 0.4
    /// (`finercut eval gsm8k`: GSM8K by greedy generation).
    Eval(evaluate::Args),
    /// Reproduce the paper's Table 2, figures and ablations on the models available here
    /// (`cargo xtask reproduce` builds in release mode and runs this); under `mpirun`/`srun`
    /// the searches and evaluations are shared among the ranks, with the one-process tables.
    Reproduce(reproduce::Args),
    /// Print where each rank of an MPI launch runs: its node, its index among the ranks of that
    /// node (from MPI) and the CUDA card plain --device cuda gives it; loads no model, so it
    /// checks a placement before a long job (`mpirun -np 8 finercut ranks`).
    Ranks,
    /// Time the dense forward pass at given batch × sequence shapes (median tokens per second).
    Speed(speed::Args),
    /// Write a tiny random Llama (4 blocks, d = 64, byte-level tokenizer) as a Hugging Face
    /// directory: a model for tests and quick experiments.
    MakeTiny {
        /// Output directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Number of decoder blocks [default: 4, or the published model's].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        blocks: Option<u32>,
        /// Write a random bf16 model with the shape and config.json of a published one instead:
        /// llama-3-8b, llama-3.1-8b, mistral-7b, qwen2.5-7b, qwen2.5-0.5b, mixtral-8x7b-2layers,
        /// phi-3-mini, phi-4-mini, pythia-160m, pythia-410m, pythia-1b.
        #[arg(long, value_name = "NAME")]
        like: Option<String>,
        /// Replace a checkpoint already in DIR (with --like).
        #[arg(long)]
        force: bool,
    },
}

// The unit tests run with the kernels `main` sets up.
#[cfg(test)]
finercut_tensor::init_blas_before_main!();

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in `main`, before this program starts any thread (rayon's pool included).
    unsafe { finercut_tensor::init_blas() };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => convert::main(args),
        Command::Run(args) => run::main(args),
        Command::Ppl(args) => run::ppl(args),
        Command::Prune(args) => prune::main(args),
        Command::Inspect(args) => inspect::main(args),
        Command::Export(args) => export::main(args),
        Command::Slice(args) => slice::main(args),
        Command::Eval(args) => evaluate::main(args),
        Command::Reproduce(args) => reproduce::main(args),
        Command::Speed(args) => speed::main(args),
        Command::Ranks => ranks::main(),
        Command::MakeTiny {
            dir,
            seed,
            blocks,
            like: Some(name),
            force,
        } => like::LikeSpec::preset(&name).and_then(|spec| {
            let mut spec = spec;
            spec.shape.blocks = blocks.map_or(spec.shape.blocks, |b| b as usize);
            like::write_like(&dir, &spec, seed, force)
        }),
        Command::MakeTiny {
            dir, seed, blocks, ..
        } => finercut_pipeline::write_tiny_model(
            &dir,
            &finercut_pipeline::TinySpec {
                seed,
                blocks: blocks.map_or(4, |b| b as usize),
                ..finercut_pipeline::TinySpec::default()
            },
        )
        .map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The model argument shared by every command that loads a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArg {
    /// A Hugging Face model directory or a .gguf file [default: SmolLM2-135M-Instruct from the cache].
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub model: Option<PathBuf>,
    /// Where the model runs: cpu, cuda (card 0) or cuda:N (CUDA needs a build with
    /// `--features cuda` and an NVIDIA driver).
    #[arg(long, value_name = "cpu|cuda|cuda:N", default_value = "cpu")]
    pub device: String,
    /// Weight matrices and GEMMs in f32 (the CPU's numerics) or bf16 (CUDA only: bf16 GEMM inputs
    /// with f32 accumulation; norms, softmax and divergences stay f32/f64).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// How weight matrices are held: `stored` keeps them as the checkpoint stores them (bf16/f16
    /// memory-mapped, GGUF blocks quantised) and widens them to f32 tile by tile inside each GEMM;
    /// `f32` widens everything once at load. Results are bit-identical. On a CUDA device the
    /// matrices are uploaded as `--precision` says.
    #[arg(long, value_enum, default_value_t = DtypeArg::Stored)]
    pub dtype: DtypeArg,
}

/// The calibration arguments of the commands that calibrate on text (`prune`, `slice`).
#[derive(Debug, Clone, clap::Args)]
pub struct CalibArg {
    /// Calibration text: a text file read as one string, or JSONL with a `text` field
    /// [default: the WikiText-2 raw test split built into the binary].
    #[arg(long, value_name = "FILE", conflicts_with = "tokens")]
    pub calib: Option<PathBuf>,
    /// Calibration as token ids instead of text: a JSON list of equally long lists of ids (what
    /// the PyTorch reference's --save-tokens writes). --samples, --seq-len and --calib-offset
    /// then select from it.
    #[arg(long, value_name = "FILE.json")]
    pub tokens: Option<PathBuf>,
    /// Number of calibration sequences.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Token offset of the first calibration sequence in the tokenized text.
    #[arg(long, default_value_t = 0)]
    pub calib_offset: usize,
}

/// Precision of the weight matrices and GEMMs (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// 32-bit floats throughout (TF32 off on CUDA).
    F32,
    /// bfloat16 weight matrices and GEMM inputs, f32 accumulation (CUDA only).
    Bf16,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// As stored, widened inside the GEMM.
    Stored,
    /// Widened to f32 at load.
    F32,
}

impl From<DtypeArg> for finercut_model::WeightDtype {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::Stored => finercut_model::WeightDtype::Stored,
            DtypeArg::F32 => finercut_model::WeightDtype::F32,
        }
    }
}
