//! Pieces every command shares: finding and opening the model, reading calibration text,
//! checking a plan against a model, parsing ratios, atomic output files and progress bars.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, format_err, Context};
use finercut_format::{cache, Checkpoint};
use finercut_model::{Model, Plan};
use finercut_search::SearchResult;
use finercut_tensor::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::ModelArg;

/// The model path the user gave, or the default SmolLM2 from the cache.
pub fn model_path(arg: &ModelArg) -> anyhow::Result<PathBuf> {
    match &arg.model {
        Some(p) => {
            if !p.exists() {
                bail!("model {} does not exist", p.display());
            }
            Ok(p.clone())
        }
        None => {
            let p = cache::default_model_path();
            if !p.is_file() {
                bail!(
                    "the default model is not in the cache ({}): run `cargo xtask fetch smollm2` \
                     or pass --model",
                    p.display()
                );
            }
            Ok(p)
        }
    }
}

/// Opens a checkpoint, naming the path in the error; keys of its config.json that were ignored
/// as unknown are listed in one warning on stderr.
pub fn open_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    let ckpt =
        Checkpoint::open(path).with_context(|| format!("cannot open model {}", path.display()))?;
    if !ckpt.unknown_config_keys.is_empty() {
        eprintln!(
            "warning: {}: ignoring unknown config.json keys: {}",
            path.display(),
            ckpt.unknown_config_keys.join(", ")
        );
    }
    Ok(ckpt)
}

/// Sublayers removed by a `finercut export` checkpoint (its `config.json` section `finercut`).
pub fn removed_in_checkpoint(path: &Path) -> anyhow::Result<BTreeSet<usize>> {
    let config = path.join("config.json");
    if !path.is_dir() || !config.is_file() {
        return Ok(BTreeSet::new());
    }
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", config.display()))?;
    let Some(list) = json
        .get("finercut")
        .and_then(|s| s.get("removed_sublayers"))
    else {
        return Ok(BTreeSet::new());
    };
    let list = list.as_array().ok_or_else(|| {
        format_err!(
            "{}: finercut.removed_sublayers is not a list",
            config.display()
        )
    })?;
    list.iter()
        .map(|v| {
            v.as_u64().map(|i| i as usize).ok_or_else(|| {
                format_err!(
                    "{}: finercut.removed_sublayers holds {v}, not a sublayer index",
                    config.display()
                )
            })
        })
        .collect()
}

/// A loaded model with the plan its checkpoint already applies (empty unless it is an export).
pub struct Loaded {
    pub checkpoint: Checkpoint,
    pub model: Model,
    /// Sublayers the checkpoint itself removed (`finercut export`).
    pub base_removed: BTreeSet<usize>,
    pub path: PathBuf,
}

impl Loaded {
    /// The plan of the checkpoint with `extra` sublayers removed as well.
    pub fn plan_with(&self, extra: &BTreeSet<usize>) -> Plan {
        Plan::from_removed(self.base_removed.iter().chain(extra).copied())
    }
}

/// The device and weight-matrix dtype of `--device` and `--precision`.
pub fn device_of(arg: &ModelArg) -> anyhow::Result<(Device, DType)> {
    let device = Device::parse(&arg.device).with_context(|| format!("--device {}", arg.device))?;
    let dtype = match arg.precision {
        crate::Precision::F32 => DType::F32,
        crate::Precision::Bf16 if device.is_cpu() => {
            bail!("--precision bf16 needs a CUDA device (--device cuda); the CPU computes in f32")
        }
        crate::Precision::Bf16 => DType::BF16,
    };
    Ok((device, dtype))
}

/// Opens and loads a model on the device of `--device` (the CPU by default).
pub fn load_model(arg: &ModelArg) -> anyhow::Result<Loaded> {
    let (device, dtype) = device_of(arg)?;
    let path = model_path(arg)?;
    let checkpoint = open_checkpoint(&path)?;
    let mut base_removed = removed_in_checkpoint(&path)?;
    base_removed.extend(checkpoint.absent_sublayers.iter().copied());
    let model = Model::load_with(
        &checkpoint.config,
        checkpoint.weights.as_ref(),
        &device,
        &base_removed,
        arg.dtype.into(),
        dtype,
    )
    .with_context(|| format!("cannot build the model from {}", path.display()))?;
    eprintln!("weights: {}", model.weight_storage_summary());
    Ok(Loaded {
        checkpoint,
        model,
        base_removed,
        path,
    })
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

/// Checks that a result file belongs to this model (hash and size).
pub fn check_plan_matches(
    result: &SearchResult,
    plan_path: &Path,
    model_sha256: &str,
    ckpt: &Checkpoint,
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
             pass the model the plan was searched on",
            plan_path.display(),
            result.provenance.model_sha256
        );
    }
    Ok(())
}

/// The text of `--text` or `--calib` and how to name it: the file given (read by [`read_text`]) or,
/// without one, the WikiText-2 raw test split built into the binary.
pub fn text_or_wikitext2(path: Option<&Path>) -> anyhow::Result<(String, String)> {
    match path {
        Some(path) => Ok((read_text(path)?, path.display().to_string())),
        None => Ok((
            finercut_eval::WIKITEXT2_TEST.to_owned(),
            finercut_eval::WIKITEXT2_TEST_ORIGIN.to_owned(),
        )),
    }
}

/// Reads calibration or evaluation text: a plain text file as it is, or a JSONL file whose
/// records' `text` fields are joined with blank lines.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format_err!("{} is not UTF-8 text: {e}", path.display()))?;
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "ndjson");
    if !is_jsonl {
        return Ok(text);
    }
    let mut parts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON record", path.display(), i + 1))?;
        let t = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
            format_err!(
                "{}:{}: record has no string field `text`",
                path.display(),
                i + 1
            )
        })?;
        parts.push(t.to_owned());
    }
    Ok(parts.join("\n\n"))
}

/// SHA-256 (hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes JSON to `path` atomically (pretty, with a final newline; see
/// [`finercut_format::io::write_atomically`]), creating its directory if needed.
pub fn write_json_atomic(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    create_parent(path)?;
    Ok(finercut_format::io::write_json(path, value)?)
}

/// Writes `bytes` to `path` atomically (see [`finercut_format::io::write_atomically`]),
/// creating its directory if needed.
pub fn write_file_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    create_parent(path)?;
    Ok(finercut_format::io::write_bytes_atomically(
        path,
        bytes.as_ref(),
    )?)
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// Sets the worker thread count (rayon and BLAS) and returns it; `None` means all cores.
pub fn init_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    let n = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| format_err!("cannot start {n} worker threads: {e}"))?;
    Ok(n)
}

/// The reference's calibration set: the whole text tokenized as one string without BOS, then
/// `samples` contiguous chunks of `seq_len` tokens starting at token `offset`.
pub fn calibration(
    tokenizer: &finercut_format::Tokenizer,
    text: &str,
    origin: &str,
    samples: usize,
    seq_len: usize,
    offset: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    if samples == 0 || seq_len < 2 {
        bail!(
            "--samples must be at least 1 and --seq-len at least 2 (got {samples} and {seq_len})"
        );
    }
    let ids = tokenizer
        .encode(text, false)
        .with_context(|| format!("cannot tokenize {origin}"))?;
    let need = offset + samples * seq_len;
    if ids.len() < need {
        bail!(
            "{origin} has {} tokens; {samples} samples × {seq_len} tokens from offset {offset} need {need}",
            ids.len()
        );
    }
    Ok(ids[offset..need]
        .chunks(seq_len)
        .map(|c| c.to_vec())
        .collect())
}

/// Calibration from a JSON file of token ids (a list of lists, concatenated in order), cut like
/// [`calibration`]: `samples` chunks of `seq_len` ids from `offset`.
pub fn calibration_from_ids(
    path: &Path,
    samples: usize,
    seq_len: usize,
    offset: usize,
    vocab: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lists: Vec<Vec<u32>> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JSON list of lists of token ids",
            path.display()
        )
    })?;
    let ids: Vec<u32> = lists.into_iter().flatten().collect();
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!(
            "{}: token id {bad} is outside the vocabulary ({vocab})",
            path.display()
        );
    }
    let need = offset + samples * seq_len;
    if samples == 0 || seq_len < 2 || ids.len() < need {
        bail!(
            "{} has {} ids; {samples} samples × {seq_len} tokens from offset {offset} need {need}",
            path.display(),
            ids.len()
        );
    }
    Ok(ids[offset..need]
        .chunks(seq_len)
        .map(|c| c.to_vec())
        .collect())
}

/// Peak resident memory of this process in MiB (`ru_maxrss`), where the platform reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
