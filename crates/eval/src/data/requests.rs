//! oe-eval request files: `requests.jsonl.gz`, one loglikelihood request per line.
//!
//! Each line carries the (oe-eval-processed) document it was made from, so the documents of a split
//! can be recovered from the requests: one request per choice means each document appears several times,
//! and "unconditional" requests carry `doc_id >= uncond_docid_offset` (from `config.json`).
//! [`read_docs`] keeps the first request of every real `doc_id` and returns the documents in `doc_id`
//! order.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::GzDecoder;
use serde_json::Value;

use super::arrow::Row;
use crate::error::{Error, Result};

/// The unconditional-request offset oe-eval uses when `config.json` does not say.
const DEFAULT_UNCOND_OFFSET: u64 = 1_000_000;

/// Reads the distinct documents of `dir/requests.jsonl.gz`, ordered by `doc_id`.
pub fn read_docs(dir: &Path) -> Result<Vec<Row>> {
    let offset = uncond_offset(dir)?;
    let path = dir.join("requests.jsonl.gz");
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let reader = BufReader::new(GzDecoder::new(file));
    let mut docs: BTreeMap<u64, Row> = BTreeMap::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(&path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::Json {
            path: path.clone(),
            line: i + 1,
            message,
        };
        let request: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let doc_id = request
            .get("doc_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no integer doc_id".to_string()))?;
        if doc_id >= offset || docs.contains_key(&doc_id) {
            continue;
        }
        let Some(Value::Object(doc)) = request.get("doc") else {
            return Err(bad("no doc object".to_string()));
        };
        docs.insert(doc_id, doc.clone());
    }
    Ok(docs.into_values().collect())
}

/// `task_config.metric_kwargs.uncond_docid_offset` of `dir/config.json`, if any.
fn uncond_offset(dir: &Path) -> Result<u64> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(DEFAULT_UNCOND_OFFSET);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let config: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.clone(),
        line: 0,
        message: e.to_string(),
    })?;
    Ok(config
        .pointer("/task_config/metric_kwargs/uncond_docid_offset")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_UNCOND_OFFSET))
}
