//! Runs a tiny Llama (one weight tensor per Hugging Face name, held in memory) dense and with
//! sublayers removed, and prints how far each removal moves the last position's logits:
//! `cargo run -p finercut-model --example remove_sublayers`.

use std::collections::HashMap;

use finercut_model::format::{Bytes, DType, ModelConfig, RawTensor, TensorSource};
use finercut_model::tensor::Device;
use finercut_model::{Model, Plan, SublayerId};

/// Weights in memory: every tensor filled with a smooth function of its index.
struct Weights(HashMap<String, Vec<usize>>);

impl TensorSource for Weights {
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn get(&self, name: &str) -> finercut_model::format::Result<RawTensor> {
        let shape = self.0.get(name).cloned().unwrap_or_default();
        let n: usize = shape.iter().product();
        let seed = name.len() as f32;
        let values = if shape.len() == 1 {
            vec![1.0; n] // norms
        } else {
            (0..n)
                .map(|i| 0.3 * ((i as f32 + seed) * 0.618).sin())
                .collect()
        };
        Ok(RawTensor {
            name: name.into(),
            dtype: DType::F32,
            shape,
            data: Bytes::from_f32_vec(values),
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: first thing in `main`, before any thread starts.
    unsafe { finercut_model::tensor::init_blas() };
    let (vocab, d, ffn, blocks) = (32, 16, 32, 2);
    let config = ModelConfig::from_json_str(
        &format!(
            r#"{{"model_type": "llama", "vocab_size": {vocab}, "hidden_size": {d},
            "intermediate_size": {ffn}, "num_hidden_layers": {blocks}, "num_attention_heads": 4,
            "num_key_value_heads": 2, "tie_word_embeddings": true}}"#
        ),
        "example config",
    )?;
    let mut shapes = HashMap::from([
        ("model.embed_tokens.weight".to_string(), vec![vocab, d]),
        ("model.norm.weight".to_string(), vec![d]),
    ]);
    for b in 0..blocks {
        for (name, shape) in [
            ("input_layernorm", vec![d]),
            ("post_attention_layernorm", vec![d]),
            ("self_attn.q_proj", vec![d, d]),
            ("self_attn.k_proj", vec![d / 2, d]),
            ("self_attn.v_proj", vec![d / 2, d]),
            ("self_attn.o_proj", vec![d, d]),
            ("mlp.gate_proj", vec![ffn, d]),
            ("mlp.up_proj", vec![ffn, d]),
            ("mlp.down_proj", vec![d, ffn]),
        ] {
            shapes.insert(format!("model.layers.{b}.{name}.weight"), shape);
        }
    }
    let model = Model::load(&config, &Weights(shapes), &Device::Cpu)?;
    let tokens = vec![vec![1, 5, 9, 2, 7]];
    let last = |plan: &Plan| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
        let logits = model.forward(&tokens, plan)?.to_vec_f32()?;
        Ok(logits[logits.len() - vocab..].to_vec())
    };
    let dense = last(&Plan::dense())?;
    println!(
        "{} sublayers; dense logits of the last token: {:?}…",
        model.num_sublayers(),
        &dense[..4]
    );
    for i in 0..model.num_sublayers() {
        let pruned = last(&Plan::from_removed([i]))?;
        let moved = dense
            .iter()
            .zip(&pruned)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        println!(
            "without {}: logits moved by {moved:.4} (L2)",
            SublayerId::from_index(i)
        );
    }
    Ok(())
}
