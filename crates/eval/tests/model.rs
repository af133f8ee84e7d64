//! [`ModelLm`] against direct computations: a tiny random Llama (always), and SmolLM2-135M's WikiText-2
//! perplexity against the golden numbers (when the GGUF and the golden files are present).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use finercut_eval::lm::logprob_and_argmax;
use finercut_eval::{perplexity, LanguageModel, ModelLm, PerplexityOptions, ScoreGroup, TaskName};
use finercut_format::{Bytes, Checkpoint, DType, ModelConfig, RawTensor, TensorSource, Tokenizer};
use finercut_model::{Model, Plan};
use finercut_tensor::Device;
use rand::{Rng, SeedableRng};

/// Weights held in memory.
struct MemSource(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl TensorSource for MemSource {
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        let (shape, data) = &self.0[name];
        Ok(RawTensor {
            name: name.to_string(),
            dtype: DType::F32,
            shape: shape.clone(),
            data: Bytes::from_f32_vec(data.clone()),
        })
    }
}

const VOCAB: usize = 40;

/// A 2-block Llama with random weights.
pub(crate) fn tiny_model() -> Model {
    let config = ModelConfig::from_json_str(
        &format!(
            r#"{{"model_type": "llama", "vocab_size": {VOCAB}, "hidden_size": 16, "intermediate_size": 24,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
            "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2}}"#
        ),
        "tiny",
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut w = HashMap::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, rng: &mut rand::rngs::StdRng| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.gen_range(-1.0..1.0) * scale).collect();
        w.insert(name, (shape, data));
    };
    let (d, f, q, kv) = (16, 24, 16, 8);
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, d],
        1.0,
        &mut rng,
    );
    add("lm_head.weight".into(), vec![VOCAB, d], 0.5, &mut rng);
    add("model.norm.weight".into(), vec![d], 1.0, &mut rng);
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        add(
            format!("{p}.input_layernorm.weight"),
            vec![d],
            1.0,
            &mut rng,
        );
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            1.0,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, d],
            0.4,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, d],
            0.4,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, d],
            0.4,
            &mut rng,
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![d, q],
            0.4,
            &mut rng,
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![f, d],
            0.4,
            &mut rng,
        );
        add(format!("{p}.mlp.up_proj.weight"), vec![f, d], 0.4, &mut rng);
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![d, f],
            0.4,
            &mut rng,
        );
    }
    Model::load(&config, &MemSource(w), &Device::Cpu).unwrap()
}

/// A word-level tokenizer over `w0 … w35` (ids 4..40) with `<unk> <s> </s> <pad>` as ids 0..4.
pub(crate) fn tiny_tokenizer(dir: &Path) -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>", "<pad>"].iter().enumerate() {
        vocab.insert((*t).into(), i.into());
    }
    for i in 4..VOCAB {
        vocab.insert(format!("w{}", i - 4), i.into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    )
    .unwrap();
    Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap()
}

/// `Σ log p(cont | ctx)` from one full forward pass of `ctx ++ cont[..-1]`.
fn direct(model: &Model, plan: &Plan, ctx: &[u32], cont: &[u32]) -> (f64, bool) {
    let seq: Vec<u32> = ctx.iter().chain(&cont[..cont.len() - 1]).copied().collect();
    let logits = model.forward(&[seq], plan).unwrap();
    let data = logits.to_vec_f32().unwrap();
    let mut lp = 0.0;
    let mut greedy = true;
    for (k, &t) in cont.iter().enumerate() {
        let pos = ctx.len() - 1 + k;
        let (l, am) = logprob_and_argmax(&data[pos * VOCAB..(pos + 1) * VOCAB], t).unwrap();
        lp += l;
        greedy &= am == t;
    }
    (lp, greedy)
}

#[test]
fn model_lm_scores_match_forward() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    for plan in [Plan::dense(), Plan::from_removed([1, 2])] {
        let lm = ModelLm::new(&model, plan.clone(), &tokenizer).unwrap();
        assert_eq!(lm.prefix_token(), 1);
        assert_eq!(lm.max_length(), 64);
        assert_eq!(lm.encode("w0 w5 w9").unwrap(), vec![4, 9, 13]);
        let groups = vec![
            // Shared context, continuations of different lengths: continuation_logits.
            ScoreGroup {
                context: vec![5, 6, 7, 8],
                continuations: vec![vec![9], vec![10, 11, 12], vec![13, 14]],
            },
            // Single continuations of equal input length: one stacked forward.
            ScoreGroup {
                context: vec![4, 5],
                continuations: vec![vec![6, 7, 8]],
            },
            ScoreGroup {
                context: vec![20, 21, 22],
                continuations: vec![vec![23, 24]],
            },
            // Single continuation of another length.
            ScoreGroup {
                context: vec![30],
                continuations: vec![vec![31]],
            },
        ];
        // Consecutive multi-continuation groups behind a shared 40-token header (one state for
        // the header, one per context): a tail, no tail, a longer tail, then one sharing too
        // little to join.
        let header: Vec<u32> = (0..40).map(|i| 3 + (i * 7) % 25).collect();
        let with_tail = |tail: &[u32]| header.iter().chain(tail).copied().collect::<Vec<u32>>();
        let mut groups = groups;
        for context in [
            with_tail(&[5, 9]),
            header.clone(),
            with_tail(&[11, 12, 13, 14]),
            header[..20].iter().chain(&[8, 8]).copied().collect(),
        ] {
            groups.push(ScoreGroup {
                context,
                continuations: vec![vec![9], vec![10, 11], vec![12]],
            });
        }
        let scores = lm.score(&groups).unwrap();
        for (g, group) in groups.iter().enumerate() {
            assert_eq!(scores[g].len(), group.continuations.len());
            for (c, cont) in group.continuations.iter().enumerate() {
                let (lp, greedy) = direct(&model, &plan, &group.context, cont);
                assert!(
                    (scores[g][c].logprob - lp).abs() < 1e-4,
                    "group {g} cont {c}: {} vs {lp}",
                    scores[g][c].logprob
                );
                assert_eq!(scores[g][c].is_greedy, greedy);
            }
        }
    }
}

#[test]
fn model_lm_evaluates_hand_made_docs() {
    use finercut_eval::tasks::{TaskDoc, TaskDocs};
    use finercut_eval::{score_docs, EvalOptions, Prompt, Request};
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    let lm = ModelLm::new(&model, Plan::dense(), &tokenizer).unwrap();
    let prompt = Prompt {
        requests: ["w7", "w8 w9"]
            .iter()
            .map(|c| Request {
                context: "w1 w2 w3".into(),
                continuation: format!(" {c}"),
            })
            .collect(),
        choices: vec!["w7".into(), "w8 w9".into()],
        gold: 1,
    };
    let docs = TaskDocs {
        task: TaskName::Piqa,
        split: "validation".into(),
        source: "hand-made".into(),
        note: None,
        docs: vec![TaskDoc {
            index: 0,
            subtask: None,
            prompt: Ok(prompt),
        }],
    };
    let options = EvalOptions::new(PathBuf::from("/nonexistent"), None);
    let result = score_docs(&lm, docs, &options, &mut |_| {}).unwrap();
    let (a, _) = direct(&model, &Plan::dense(), &[5, 6, 7], &[11]);
    let (b, _) = direct(&model, &Plan::dense(), &[5, 6, 7], &[12, 13]);
    assert!((result.docs[0].loglik[0] - a).abs() < 1e-4);
    assert!((result.docs[0].loglik[1] - b).abs() < 1e-4);
}

/// The golden files committed to the repository (`data/golden/README.md` says how they were made).
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden")
}

/// SmolLM2-135M-Instruct on the first WikiText-2 test windows against the golden per-window NLLs
/// (transformers, float32): the protocol behind the 44.980 / 38.877 figures.
#[test]
fn smollm2_wikitext2_windows_match_golden() {
    let Some(gguf) =
        finercut_format::cache::require_downloaded(finercut_format::cache::default_model_path())
    else {
        return;
    };
    let golden = golden_dir().join("smollm2_ppl_wikitext2.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    let nll: Vec<f64> = golden["nll_per_window"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let ck = Checkpoint::open(&gguf).unwrap();
    let model = Model::load(&ck.config, ck.weights.as_ref(), &Device::Cpu).unwrap();
    let lm = ModelLm::new(&model, Plan::dense(), &ck.tokenizer).unwrap();
    let text = finercut_eval::WIKITEXT2_TEST;
    let mut options = PerplexityOptions::new(256);
    options.max_windows = Some(4);
    let report = perplexity(&lm, text, &options, &mut |_| {}).unwrap();
    assert_eq!(
        report.windows_total,
        golden["n_windows_total"].as_u64().unwrap() as usize
    );
    for w in &report.windows {
        assert!(
            (w.nll - nll[w.window]).abs() < 0.01,
            "window {}: {} vs golden {}",
            w.window,
            w.nll,
            nll[w.window]
        );
    }
}
