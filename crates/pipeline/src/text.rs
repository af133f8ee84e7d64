//! Calibration and evaluation text: reading it, and cutting calibration sequences from it.

use std::path::Path;

use crate::error::{bail, invalid, Context, Result};

/// The text of `--text` or `--calib` and how to name it: the file given (read by [`read_text`]) or,
/// without one, the WikiText-2 raw test split built into the binary.
pub fn text_or_wikitext2(path: Option<&Path>) -> Result<(String, String)> {
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
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| invalid!("{} is not UTF-8 text: {e}", path.display()))?;
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
            invalid!(
                "{}:{}: record has no string field `text`",
                path.display(),
                i + 1
            )
        })?;
        parts.push(t.to_owned());
    }
    Ok(parts.join("\n\n"))
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
) -> Result<Vec<Vec<u32>>> {
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
) -> Result<Vec<Vec<u32>>> {
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
