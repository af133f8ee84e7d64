//! Pieces every command shares: the model of `--model`/`--device`/`--precision`/`--dtype`,
//! checking a plan against a model, parsing ratios; the rest comes from `finercut-pipeline`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use finercut_dist::Transport;
use finercut_format::Checkpoint;
use finercut_pipeline::LoadOptions;
use finercut_search::SearchResult;
use finercut_tensor::{DType, Device};

pub use finercut_pipeline::{
    calibration, calibration_from_ids, init_threads, open_checkpoint, peak_rss_mib,
    removed_in_checkpoint, text_or_wikitext2, write_json_atomic, Loaded,
};

use crate::ModelArg;

/// Runs `work` on the ranks of the environment's transport (`mpirun`/`srun` with a build with
/// `--features mpi`, else one process); this thread makes every MPI call. An error on a rank ends
/// every rank now (MPI_Abort), so none waits for this one in a collective.
pub fn on_ranks<T>(work: impl FnOnce(&dyn Transport) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let dist = finercut_dist::from_environment()?;
    match work(dist.as_ref()) {
        Err(e) if dist.size() > 1 => {
            dist.abort(&format!("error: {e:#}"));
            Err(e)
        }
        other => other,
    }
}

/// The model path the user gave, or the default SmolLM2 from the cache.
pub fn model_path(arg: &ModelArg) -> anyhow::Result<PathBuf> {
    Ok(finercut_pipeline::model_path(arg.model.as_deref())?)
}

/// The device and weight-matrix dtype of `--device` and `--precision` for a rank of `dist`
/// (`&finercut_dist::Alone` for a command that runs as one process).
pub fn device_of(arg: &ModelArg, dist: &dyn Transport) -> anyhow::Result<(Device, DType)> {
    // Among several ranks plain `cuda` is the card of the node-local rank (asked for only then:
    // MPI and a launcher's variable that disagree on it matter for nothing else).
    let local_rank = if arg.device == "cuda" {
        dist.local_rank()?
    } else {
        None
    };
    let device =
        Device::parse_for_rank(&arg.device, local_rank).with_context(|| match local_rank {
            Some(r) => format!("--device {} on local rank {r}", arg.device),
            None => format!("--device {}", arg.device),
        })?;
    let dtype = match arg.precision {
        crate::Precision::F32 => DType::F32,
        crate::Precision::Bf16 if device.is_cpu() => {
            bail!("--precision bf16 needs a CUDA device (--device cuda); the CPU computes in f32")
        }
        crate::Precision::Bf16 => DType::BF16,
    };
    Ok((device, dtype))
}

/// How `--device`, `--precision` and `--dtype` say to load a model on a rank of `dist`.
pub fn load_options(arg: &ModelArg, dist: &dyn Transport) -> anyhow::Result<LoadOptions> {
    let (device, matrix_dtype) = device_of(arg, dist)?;
    Ok(LoadOptions {
        device,
        weights: arg.dtype.into(),
        matrix_dtype,
    })
}

/// Opens and loads the model of `--model` on the device of `--device` (the CPU by default).
pub fn load_model(arg: &ModelArg, dist: &dyn Transport) -> anyhow::Result<Loaded> {
    let options = load_options(arg, dist)?;
    let path = model_path(arg)?;
    Ok(finercut_pipeline::load_model(&path, &options)?)
}

/// [`load_model`] of sublayers `part` only (a pipeline stage's window) when given.
pub fn load_model_part(
    arg: &ModelArg,
    dist: &dyn Transport,
    part: Option<std::ops::Range<usize>>,
) -> anyhow::Result<Loaded> {
    let options = load_options(arg, dist)?;
    let path = model_path(arg)?;
    Ok(finercut_pipeline::load_model_part(&path, &options, part)?)
}

/// Parses a ratio option under the one rule for ratios ([`finercut_search::check_ratio`]): clap
/// reports a bad value with the option's name.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let ratio: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    finercut_search::check_ratio(ratio).map_err(|e| e.to_string())
}

/// Checks that a result file belongs to this model (hash and size); `hint` ends the message of a
/// hash mismatch (what else the user may pass).
pub fn check_plan_matches(
    result: &SearchResult,
    plan_path: &Path,
    model_sha256: &str,
    ckpt: &Checkpoint,
    hint: &str,
) -> anyhow::Result<()> {
    let blocks = ckpt.config.num_hidden_layers;
    if result.num_blocks != blocks {
        bail!(
            "{} was computed for a model of {} blocks; this model has {blocks}",
            plan_path.display(),
            result.num_blocks
        );
    }
    if result.provenance.model_sha256 != model_sha256 {
        bail!(
            "{} was computed for the model with SHA-256 {}, not this one ({model_sha256}); \
             pass the model the plan was searched on{hint}",
            plan_path.display(),
            result.provenance.model_sha256
        );
    }
    Ok(())
}

/// Calibration sequences cut as `--calib`/`--tokens`, `--samples`, `--seq-len` and
/// `--calib-offset` say.
pub struct Calibration {
    /// The sequences of token ids.
    pub seqs: Vec<Vec<u32>>,
    /// The file they came from, or the built-in WikiText-2 split.
    pub origin: String,
    /// SHA-256 of the source: the token-id file's bytes or the text's.
    pub source_sha256: String,
}

/// The calibration sequences of `arg` for a model with `checkpoint`'s tokenizer and vocabulary.
pub fn calibration_of(
    arg: &crate::CalibArg,
    checkpoint: &Checkpoint,
) -> anyhow::Result<Calibration> {
    match &arg.tokens {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let seqs = calibration_from_ids(
                path,
                arg.samples,
                arg.seq_len,
                arg.calib_offset,
                checkpoint.config.vocab_size,
            )?;
            Ok(Calibration {
                seqs,
                origin: path.display().to_string(),
                source_sha256: finercut_pipeline::sha256_hex(&bytes),
            })
        }
        None => {
            let (text, origin) = text_or_wikitext2(arg.calib.as_deref())?;
            let seqs = calibration(
                &checkpoint.tokenizer,
                &text,
                &origin,
                arg.samples,
                arg.seq_len,
                arg.calib_offset,
            )?;
            Ok(Calibration {
                seqs,
                origin,
                source_sha256: finercut_pipeline::sha256_hex(text.as_bytes()),
            })
        }
    }
}

/// Prints, as warnings, what writing a model directory found of interrupted earlier runs
/// ([`finercut_format::StagedDir::notes`]).
pub fn warn_notes(notes: &[String]) {
    for n in notes {
        eprintln!("warning: {n}");
    }
}
