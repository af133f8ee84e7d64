//! Parity with Hugging Face transformers on Qwen2.5-Coder-0.5B-Instruct and Gemma-3-270M, read from
//! the same Q4_K_M GGUFs (golden files in `data/golden/`, made by
//! `benches/reference/make_golden_families.py`; see `data/golden/README.md`):
//!
//! - tokenisation of three prompts and of the whole WikiText-2 test text (count and SHA-256 of the ids);
//! - logits: top-10 and log-sum-exp at every prompt position, and 512 logits (the 256 largest and 256 at
//!   evenly spaced ids) at the last position of prompt 1 and of a 640-token WikiText-2 span (longer than
//!   Gemma 3's 512-token sliding window), within 1e-3 of the row's largest |logit|;
//! - the NLL of the first WikiText-2 windows of 256 tokens and their perplexity, within 0.5 % (Qwen2.5).
//!
//! Each model is loaded once and shared by its tests. A test fails, naming `cargo xtask fetch`, when
//! the GGUF is not in the cache (see `finercut_format::cache::require_downloaded`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use finercut_eval::{perplexity_of_tokens, ModelLm, PerplexityOptions};
use finercut_format::{cache, Checkpoint, Tokenizer};
use finercut_model::{Model, Plan};
use finercut_tensor::Device;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Relative tolerance of logits: |Δ| over the row's largest |logit|.
const REL_TOL: f64 = 1e-3;
/// Relative tolerance of the perplexity.
const PPL_TOL: f64 = 5e-3;

/// One real model with its golden files.
struct Family {
    /// File-name prefix of the golden files.
    key: &'static str,
    gguf: PathBuf,
    /// WikiText-2 windows scored in the perplexity test.
    windows: usize,
}

struct Loaded {
    model: Model,
    tokenizer: Tokenizer,
}

fn qwen25() -> Family {
    Family {
        key: "qwen25",
        gguf: cache::qwen25_model_path(),
        windows: 2,
    }
}

fn gemma3() -> Family {
    Family {
        key: "gemma3",
        gguf: cache::gemma3_model_path(),
        windows: 4,
    }
}

fn repo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn golden(family: &Family, what: &str) -> Value {
    let path = repo_data()
        .join("golden")
        .join(format!("{}_{what}.json", family.key));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn wiki_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/wikitext-2-raw/wiki.test.raw");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The family's model, loaded once per test binary. When the GGUF is absent the test fails naming
/// `cargo xtask fetch` (or returns `None` with a notice if `FINERCUT_SKIP_DOWNLOADED_TESTS` is set).
fn load(family: &Family, cell: &'static OnceLock<Loaded>) -> Option<&'static Loaded> {
    let gguf = cache::require_downloaded(&family.gguf)?;
    Some(cell.get_or_init(|| {
        let ck = Checkpoint::open(&gguf).unwrap();
        let model = Model::load(&ck.config, ck.weights.as_ref(), &Device::Cpu).unwrap();
        Loaded {
            model,
            tokenizer: ck.tokenizer,
        }
    }))
}

static QWEN25: OnceLock<Loaded> = OnceLock::new();
static GEMMA3: OnceLock<Loaded> = OnceLock::new();

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    m + row
        .iter()
        .map(|&v| (f64::from(v) - m).exp())
        .sum::<f64>()
        .ln()
}

fn tokenisation(family: &Family, loaded: &Loaded) {
    let golden = golden(family, "tokens");
    let tok = &loaded.tokenizer;
    for p in golden["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let want = u32s(&p["ids"]);
        assert_eq!(
            tok.encode(text, true).unwrap(),
            want,
            "{}: {}",
            family.key,
            p["name"]
        );
    }
    let wiki = &golden["wiki"];
    let text = wiki_text();
    assert_eq!(
        text.chars().count() as u64,
        wiki["n_chars"].as_u64().unwrap()
    );
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(
        &ids[..2048],
        u32s(&wiki["first_2048_ids"]).as_slice(),
        "{}",
        family.key
    );
    assert_eq!(
        ids.len() as u64,
        wiki["n_tokens"].as_u64().unwrap(),
        "{}",
        family.key
    );
    let mut h = Sha256::new();
    for &id in &ids {
        h.update(i32::try_from(id).unwrap().to_le_bytes());
    }
    assert_eq!(
        hex(&h.finalize()),
        wiki["ids_int32le_sha256"].as_str().unwrap(),
        "{}: all {} WikiText-2 ids",
        family.key,
        ids.len()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest |Δ| over the row's largest |logit| at the stored ids of one `last` entry.
fn last_row_rel_diff(row: &[f32], last: &Value) -> f64 {
    let scale = last["max_abs_logit"].as_f64().unwrap();
    let mut worst = 0f64;
    for (ids, vals) in [
        ("top256_ids", "top256_logits"),
        ("spaced_ids", "spaced_logits"),
    ] {
        for (id, want) in u32s(&last[ids]).into_iter().zip(f64s(&last[vals])) {
            worst = worst.max((f64::from(row[id as usize]) - want).abs() / scale);
        }
    }
    worst.max((log_sum_exp(row) - last["logsumexp"].as_f64().unwrap()).abs() / scale)
}

/// Top-10 logits and log-sum-exp at the listed positions: the largest absolute difference and the
/// largest relative to the row's largest |logit|.
fn positions_diff(name: &str, logits: &[f32], vocab: usize, positions: &Value) -> (f64, f64) {
    let (mut abs, mut rel) = (0f64, 0f64);
    for pos in positions.as_array().unwrap() {
        let p = pos["pos"].as_u64().unwrap() as usize;
        let row = &logits[p * vocab..(p + 1) * vocab];
        let scale = row.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        let top = u32s(&pos["top10_ids"]);
        let mut diffs: Vec<f64> = top
            .iter()
            .zip(f64s(&pos["top10_logits"]))
            .map(|(&id, want)| (f64::from(row[id as usize]) - want).abs())
            .collect();
        diffs.push((log_sum_exp(row) - pos["logsumexp"].as_f64().unwrap()).abs());
        for d in diffs {
            abs = abs.max(d);
            rel = rel.max(d / scale);
        }
        let argmax = (0..vocab)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        // Two first logits within the tolerance of each other may come in either order.
        if argmax != top[0] as usize {
            let gap = f64::from(row[argmax] - row[top[0] as usize]);
            assert!(
                gap <= REL_TOL * scale,
                "{name}: top-1 at position {p}: {argmax} vs {}",
                top[0]
            );
        }
    }
    (abs, rel)
}

fn logits(family: &Family, loaded: &Loaded) {
    let golden = golden(family, "logits_prompts");
    let vocab = loaded.model.config().vocab_size;
    let forward = |ids: &[u32]| {
        loaded
            .model
            .forward(&[ids.to_vec()], &Plan::dense())
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    let entries = golden["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&golden["long"]));
    for entry in entries {
        let name = format!("{} {}", family.key, entry["name"].as_str().unwrap());
        let ids = u32s(&entry["ids"]);
        let logits = forward(&ids);
        let (abs, rel) = positions_diff(&name, &logits, vocab, &entry["positions"]);
        println!(
            "{name}: {} tokens, top-10 logits and log-sum-exp: max |Δ| = {abs:.2e}, relative {rel:.2e}",
            ids.len()
        );
        assert!(rel <= REL_TOL, "{name}: relative difference {rel:e}");
        if let Some(last) = entry.get("last") {
            let row = &logits[(ids.len() - 1) * vocab..ids.len() * vocab];
            let rel = last_row_rel_diff(row, last);
            println!("{name}: last position, max |Δ| / max |logit| over 512 logits = {rel:.2e}");
            assert!(
                rel <= REL_TOL,
                "{name}: last-position relative difference {rel:e}"
            );
        }
    }
}

fn wikitext2_perplexity(family: &Family, loaded: &Loaded) {
    let ppl = golden(family, "ppl_wikitext2");
    let window = ppl["window"].as_u64().unwrap() as usize;
    let want = f64s(&ppl["nll_per_window"]);
    // transformers' ids (the tokenisation test checks that this tokenizer gives the same).
    let mut ids = u32s(&golden(family, "tokens")["wiki"]["first_2048_ids"]);
    assert!(ids.len() >= family.windows * window);
    ids.truncate(family.windows * window);
    let lm = ModelLm::new(&loaded.model, Plan::dense(), &loaded.tokenizer).unwrap();
    let mut options = PerplexityOptions::new(window);
    options.batch_size = 1;
    let report = perplexity_of_tokens(&lm, &ids, &options, &mut |_| {}).unwrap();
    assert_eq!(report.windows_scored, family.windows);
    let golden_ppl =
        (want[..family.windows].iter().sum::<f64>() / (family.windows * (window - 1)) as f64).exp();
    for w in &report.windows {
        println!(
            "{} window {}: NLL {:.4} vs {:.4}",
            family.key, w.window, w.nll, want[w.window]
        );
        assert!(
            (w.nll - want[w.window]).abs() / want[w.window] < PPL_TOL,
            "{} window {}: {} vs golden {}",
            family.key,
            w.window,
            w.nll,
            want[w.window]
        );
    }
    let rel = (report.perplexity - golden_ppl).abs() / golden_ppl;
    println!(
        "{}: perplexity over {} windows {:.4} vs transformers {:.4} (relative {rel:.2e})",
        family.key, family.windows, report.perplexity, golden_ppl
    );
    assert!(
        rel <= PPL_TOL,
        "{}: perplexity differs by {rel:e}",
        family.key
    );
}

#[test]
fn qwen25_tokenisation_matches_transformers() {
    let f = qwen25();
    if let Some(m) = load(&f, &QWEN25) {
        tokenisation(&f, m);
    }
}

#[test]
fn qwen25_logits_match_transformers() {
    let f = qwen25();
    if let Some(m) = load(&f, &QWEN25) {
        logits(&f, m);
    }
}

#[test]
fn qwen25_wikitext2_perplexity_matches_transformers() {
    let f = qwen25();
    if let Some(m) = load(&f, &QWEN25) {
        wikitext2_perplexity(&f, m);
    }
}

#[test]
fn gemma3_tokenisation_matches_transformers() {
    let f = gemma3();
    if let Some(m) = load(&f, &GEMMA3) {
        tokenisation(&f, m);
    }
}

#[test]
fn gemma3_logits_match_transformers() {
    let f = gemma3();
    if let Some(m) = load(&f, &GEMMA3) {
        logits(&f, m);
    }
}

#[test]
fn gemma3_wikitext2_perplexity_matches_transformers() {
    let f = gemma3();
    if let Some(m) = load(&f, &GEMMA3) {
        wikitext2_perplexity(&f, m);
    }
}
