//! The loaders under test, one function per kind of input. Each takes the mutated bytes, runs the
//! loader and, where it accepts the input, uses what it returned (every tensor read and decoded,
//! a tokenizer run, a small model built and run): a bug may hide behind a successful load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use finercut_format::{
    Bytes, Checkpoint, GgufFile, GgufStore, ModelConfig, SafetensorsStore, TensorSource, Tokenizer,
};
use finercut_model::{Model, Plan};
use finercut_search::SearchResult;
use finercut_tensor::Device;

use crate::seeds::Corpus;

/// What a loader made of an input.
pub type Outcome = anyhow::Result<()>;

/// The kinds of input, with their share of the cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A synthetic GGUF: parse, configuration, tokenizer, every tensor, a model.
    Gguf,
    /// The real model's header and metadata: parse, configuration, tokenizer.
    RealGguf,
    /// A single safetensors file: every tensor, a model with the tiny configuration.
    Safetensors,
    /// A sharded checkpoint (one of its two shards or its index mutated).
    Sharded,
    /// `config.json` of a Hugging Face directory: the checkpoint opened, a model built.
    Config,
    /// `tokenizer.json`: loaded, run.
    Tokenizer,
    /// A result file or a checkpoint of the search: loaded, resumed, plans read from it.
    Result,
}

impl Target {
    /// Every target with its weight in the mix.
    pub const MIX: &'static [(Target, u32)] = &[
        (Target::Gguf, 28),
        (Target::RealGguf, 2),
        (Target::Safetensors, 20),
        (Target::Sharded, 8),
        (Target::Config, 16),
        (Target::Tokenizer, 10),
        (Target::Result, 16),
    ];

    /// A short name for reports and crash files.
    pub fn name(self) -> &'static str {
        match self {
            Target::Gguf => "gguf",
            Target::RealGguf => "real-gguf",
            Target::Safetensors => "safetensors",
            Target::Sharded => "sharded",
            Target::Config => "config",
            Target::Tokenizer => "tokenizer",
            Target::Result => "result",
        }
    }
}

/// A worker's scratch space: a directory holding a Hugging Face checkpoint of the tiny model whose
/// files are replaced one at a time.
pub struct Scratch {
    dir: PathBuf,
    corpus: Arc<Corpus>,
    tiny: ModelConfig,
}

impl Scratch {
    /// Lays out the tiny model's files under `dir`.
    pub fn new(dir: &Path, corpus: Arc<Corpus>) -> anyhow::Result<Scratch> {
        let tiny = ModelConfig::from_json_str(
            std::str::from_utf8(&corpus.config.bytes)?,
            "tiny config.json",
        )?;
        let s = Scratch {
            dir: dir.to_path_buf(),
            corpus,
            tiny,
        };
        s.restore()?;
        Ok(s)
    }

    /// Writes the unmutated files back.
    pub fn restore(&self) -> anyhow::Result<()> {
        let c = &self.corpus;
        let files: [(&str, &[u8]); 6] = [
            ("hf/config.json", &c.config.bytes),
            ("hf/tokenizer.json", &c.tokenizer.bytes),
            ("hf/model.safetensors", &c.safetensors[0].bytes),
            (
                "sharded/model-00001-of-00002.safetensors",
                &c.shards[0].bytes,
            ),
            (
                "sharded/model-00002-of-00002.safetensors",
                &c.shards[1].bytes,
            ),
            ("sharded/model.safetensors.index.json", &c.shards[2].bytes),
        ];
        for (name, bytes) in files {
            let p = self.dir.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(p, bytes)?;
        }
        Ok(())
    }

    /// Runs `target` on `input` (`part` picks the file of a sharded checkpoint: 0 and 1 the
    /// shards, 2 the index).
    pub fn run(&self, target: Target, input: &[u8], part: usize) -> Outcome {
        match target {
            Target::Gguf => gguf(input, true),
            Target::RealGguf => gguf(input, false),
            Target::Safetensors => {
                let store = SafetensorsStore::from_bytes(
                    "case.safetensors",
                    Bytes::from_vec(input.to_vec()),
                )?;
                read_all(&store)?;
                build_and_run(&self.tiny, &store)
            }
            Target::Sharded => {
                let names = [
                    "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors",
                    "model.safetensors.index.json",
                ];
                let dir = self.dir.join("sharded");
                let file = dir.join(names[part % 3]);
                std::fs::write(&file, input)?;
                let result = (|| {
                    let store = SafetensorsStore::open(&dir)?;
                    read_all(&store)?;
                    build_and_run(&self.tiny, &store)
                })();
                std::fs::write(&file, &self.corpus.shards[part % 3].bytes)?;
                result
            }
            Target::Config => {
                self.with_file("hf/config.json", input, &self.corpus.config.bytes, |dir| {
                    let checkpoint = Checkpoint::open(dir)?;
                    build_and_run(&checkpoint.config, checkpoint.weights.as_ref())
                })
            }
            Target::Tokenizer => self.with_file(
                "hf/tokenizer.json",
                input,
                &self.corpus.tokenizer.bytes,
                |dir| {
                    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
                    let ids = tokenizer.encode("hello ab cd 12", true)?;
                    tokenizer.decode(&ids)?;
                    Checkpoint::open(dir)?;
                    Ok(())
                },
            ),
            Target::Result => {
                let path = self.dir.join("result.json");
                std::fs::write(&path, input)?;
                let r = SearchResult::load(&path)?;
                r.order();
                r.removed_sublayers();
                r.total_forward_equivalents();
                r.total_wall_s();
                for ratio in [0.0, 0.25, 0.5, 1.0] {
                    let _ = r.units_for_ratio(ratio);
                    let _ = r.plan_for_ratio(ratio);
                }
                SearchResult::resume(&path, &r.settings, &r.provenance, r.num_blocks)?;
                Ok(())
            }
        }
    }

    /// Puts `input` in place of one file of the Hugging Face directory, runs `f` on the directory
    /// and puts the original back.
    fn with_file(
        &self,
        name: &str,
        input: &[u8],
        original: &[u8],
        f: impl FnOnce(&Path) -> Outcome,
    ) -> Outcome {
        let path = self.dir.join(name);
        std::fs::write(&path, input)?;
        let result = f(&self.dir.join("hf"));
        std::fs::write(&path, original)?;
        result
    }
}

/// A GGUF: parse, configuration, tokenizer; with `tensors`, every tensor and a model.
fn gguf(input: &[u8], tensors: bool) -> Outcome {
    let file = Arc::new(GgufFile::from_bytes(
        "case.gguf",
        Bytes::from_vec(input.to_vec()),
    )?);
    let config = ModelConfig::from_gguf(&file);
    let tokenizer = Tokenizer::from_gguf(&file);
    if let Ok(t) = &tokenizer {
        let ids = t.encode("hello ab 12", true)?;
        t.decode(&ids)?;
    }
    if tensors {
        for info in file.tensors() {
            let _ = file.dequantize(&info.name);
        }
        let store = GgufStore::new(file.clone())?;
        read_all(&store)?;
        build_and_run(&config?, &store)?;
    }
    tokenizer?;
    Ok(())
}

/// Reads every tensor of `source` and decodes it to `f32`.
fn read_all(source: &dyn TensorSource) -> Outcome {
    for name in source.names() {
        source.get(&name)?.to_f32_vec()?;
    }
    Ok(())
}

/// Most parameters a model may have to be built in a case (the tiny model has about 40,000).
const MAX_PARAMS: usize = 1 << 20;

/// Builds the model of `config` from `weights` and runs it on three tokens, when it is small.
fn build_and_run(config: &ModelConfig, weights: &dyn TensorSource) -> Outcome {
    let c = config;
    let per_block = c
        .hidden_size
        .saturating_mul(c.hidden_size.saturating_add(c.intermediate_size))
        .saturating_mul(4);
    let params = c
        .vocab_size
        .saturating_mul(c.hidden_size)
        .saturating_add(per_block.saturating_mul(c.num_hidden_layers));
    if params > MAX_PARAMS {
        return Ok(());
    }
    let model = Model::load(config, weights, &Device::Cpu)?;
    model.forward(&[vec![1, 2, 3]], &Plan::dense())?;
    Ok(())
}
