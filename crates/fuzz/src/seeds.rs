//! The inputs the campaign starts from: a tiny Llama as GGUF (F32, F16, Q8_0, Q4_0, Q4_1 and
//! Q5_0 tensors, a small BPE tokenizer), the same model converted to a Hugging Face directory (single
//! and sharded safetensors, config.json, tokenizer.json), a search result file and a checkpoint of
//! an unfinished run, and the header and metadata region of the real SmolLM2 GGUF.
//!
//! Every seed remembers where its length and count fields lie, so the mutators can put huge values
//! exactly there.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use finercut_format::gguf::Value;
use finercut_format::{convert_gguf_to_hf, DType, GgmlType, GgufFile};
use finercut_search::{
    run, FnScorer, Inputs, Level, Method, Provenance, SearchResult, Settings, Stop,
};

/// One starting input.
#[derive(Clone)]
pub struct Seed {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Byte offsets of 8-byte little-endian length or count fields (GGUF), or of the header
    /// length (safetensors).
    pub u64_fields: Vec<usize>,
    /// Byte offsets of 4-byte little-endian type ids and dimension counts (GGUF).
    pub u32_fields: Vec<usize>,
}

impl Seed {
    fn plain(bytes: Vec<u8>) -> Seed {
        Seed {
            bytes,
            u64_fields: Vec::new(),
            u32_fields: Vec::new(),
        }
    }
}

/// All seeds, by target.
pub struct Corpus {
    /// Synthetic GGUF files of a tiny Llama.
    pub gguf: Vec<Seed>,
    /// The real model's header and metadata (tensor count set to 0: the data is not carried).
    pub real_gguf: Option<Seed>,
    /// Single safetensors files (F32 and BF16).
    pub safetensors: Vec<Seed>,
    /// Two shards and their index, in that order.
    pub shards: [Seed; 3],
    /// `config.json` of the tiny model.
    pub config: Seed,
    /// `tokenizer.json` of the tiny model.
    pub tokenizer: Seed,
    /// A finished result file and a checkpoint of an unfinished run.
    pub results: Vec<Seed>,
}

/// Writes GGUF and records where its fields are.
struct GgufWriter {
    out: Vec<u8>,
    u64_fields: Vec<usize>,
    u32_fields: Vec<usize>,
}

impl GgufWriter {
    fn u64_field(&mut self, v: u64) {
        self.u64_fields.push(self.out.len());
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn u32_field(&mut self, v: u32) {
        self.u32_fields.push(self.out.len());
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u64_field(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::U8(x) => self.out.push(*x),
            Value::I8(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Value::U16(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => self.u32_field(*x),
            Value::I32(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Value::Bool(x) => self.out.push(u8::from(*x)),
            Value::String(s) => self.string(s),
            Value::Array(t, items) => {
                self.u32_field(*t);
                self.u64_field(items.len() as u64);
                for i in items {
                    self.value(i);
                }
            }
            Value::U64(x) => self.u64_field(*x),
            Value::I64(x) => self.out.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => self.out.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

/// A GGUF tensor: name, dims (GGUF order: fastest first), type, data.
type GgufTensor = (String, Vec<u64>, GgmlType, Vec<u8>);

fn write_gguf(meta: &[(&str, Value)], tensors: &[GgufTensor]) -> Seed {
    const ALIGN: usize = 32;
    let mut w = GgufWriter {
        out: b"GGUF".to_vec(),
        u64_fields: Vec::new(),
        u32_fields: Vec::new(),
    };
    w.u32_field(3);
    w.u64_field(tensors.len() as u64);
    w.u64_field(meta.len() as u64);
    for (k, v) in meta {
        w.string(k);
        w.u32_field(v.gguf_type());
        w.value(v);
    }
    let mut offset = 0usize;
    for (name, dims, ty, data) in tensors {
        w.string(name);
        w.u32_field(dims.len() as u32);
        for &d in dims {
            w.u64_field(d);
        }
        w.u32_field(ty.id());
        w.u64_field(offset as u64);
        offset = (offset + data.len()).next_multiple_of(ALIGN);
    }
    for (_, _, _, data) in tensors {
        w.out.resize(w.out.len().next_multiple_of(ALIGN), 0);
        w.out.extend_from_slice(data);
    }
    Seed {
        bytes: w.out,
        u64_fields: w.u64_fields,
        u32_fields: w.u32_fields,
    }
}

/// A small deterministic generator for weights.
fn weights(n: usize, salt: u64) -> Vec<f32> {
    let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    finercut_format::f32_to_bytes(v, DType::F16)
}

/// `n` values in a block-quantised type: pseudo-random blocks (every bit pattern is valid data).
fn quantised(ty: GgmlType, n: usize, salt: u64) -> Vec<u8> {
    let (block, bytes) = ty.layout().unwrap_or((1, 4));
    let len = n.div_ceil(block) * bytes;
    weights(len, salt)
        .iter()
        .map(|x| (x.to_bits() >> 7) as u8)
        .collect()
}

/// The tokenizer metadata of the tiny model: byte-level BPE over a handful of tokens.
fn tokenizer_meta() -> Vec<(&'static str, Value)> {
    let tokens = [
        "<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "h", "l", "o", "Ġ", "ab", "he", "ll",
        "hell", "hello", "Ġa",
    ];
    let merges = ["a b", "h e", "l l", "he ll", "hell o", "Ġ a"];
    let strings =
        |v: &[&str]| Value::Array(8, v.iter().map(|s| Value::String(s.to_string())).collect());
    let mut types = vec![Value::I32(1); tokens.len()];
    for t in types.iter_mut().take(3) {
        *t = Value::I32(3);
    }
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(5, types)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ]
}

/// Vocabulary size of the tiny model (the tokenizer's 18 tokens plus room).
pub const VOCAB: usize = 32;
const D: usize = 32;
const FF: usize = 64;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = D / HEADS;

/// The tiny Llama as GGUF, with the given encoding for its large matrices.
fn tiny_gguf(quant: GgmlType) -> Seed {
    let mut meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("fuzz-tiny".into())),
        ("llama.block_count", Value::U32(2)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(D as u32)),
        ("llama.feed_forward_length", Value::U32(FF as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.dimension_count", Value::U32(HEAD_DIM as u32)),
        ("llama.vocab_size", Value::U32(VOCAB as u32)),
    ];
    meta.extend(tokenizer_meta());
    let encode = |v: &[f32], salt: u64| match quant {
        GgmlType::F32 => f32_bytes(v),
        GgmlType::F16 => f16_bytes(v),
        other => quantised(other, v.len(), salt),
    };
    let mut tensors: Vec<GgufTensor> = Vec::new();
    let mut salt = 0u64;
    let mut matrix = |name: String, rows: usize, cols: usize, tensors: &mut Vec<GgufTensor>| {
        salt += 1;
        let v = weights(rows * cols, salt);
        tensors.push((
            name,
            vec![cols as u64, rows as u64],
            quant,
            encode(&v, salt),
        ));
    };
    let norm = |name: String| -> GgufTensor {
        (name, vec![D as u64], GgmlType::F32, f32_bytes(&[1.0; D]))
    };
    matrix("token_embd.weight".into(), VOCAB, D, &mut tensors);
    for b in 0..2 {
        tensors.push(norm(format!("blk.{b}.attn_norm.weight")));
        matrix(format!("blk.{b}.attn_q.weight"), D, D, &mut tensors);
        matrix(
            format!("blk.{b}.attn_k.weight"),
            KV_HEADS * HEAD_DIM,
            D,
            &mut tensors,
        );
        matrix(
            format!("blk.{b}.attn_v.weight"),
            KV_HEADS * HEAD_DIM,
            D,
            &mut tensors,
        );
        matrix(format!("blk.{b}.attn_output.weight"), D, D, &mut tensors);
        tensors.push(norm(format!("blk.{b}.ffn_norm.weight")));
        matrix(format!("blk.{b}.ffn_gate.weight"), FF, D, &mut tensors);
        matrix(format!("blk.{b}.ffn_up.weight"), FF, D, &mut tensors);
        matrix(format!("blk.{b}.ffn_down.weight"), D, FF, &mut tensors);
    }
    tensors.push(norm("output_norm.weight".into()));
    write_gguf(&meta, &tensors)
}

/// The header and metadata region of a real GGUF, with its tensor count set to 0 so that the
/// missing data section is not an error. `None` when the file cannot be read.
pub fn real_gguf_header(path: &Path) -> anyhow::Result<Seed> {
    let file = GgufFile::open(path)?;
    // Everything before the tensor infos: magic, version, counts and metadata.
    let end = file.data_offset().min(8 << 20);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = bytes
        .get(..end)
        .with_context(|| format!("{} is shorter than its header", path.display()))?
        .to_vec();
    bytes[8..16].copy_from_slice(&0u64.to_le_bytes());
    let mut seed = Seed {
        bytes,
        u64_fields: vec![8, 16],
        u32_fields: vec![4],
    };
    let kv = file.metadata().len();
    let mut at = 24;
    for _ in 0..kv {
        at = walk_string(&mut seed, at)?;
        let ty = read_u32(&seed, at)?;
        seed.u32_fields.push(at);
        at = walk_value(&mut seed, at + 4, ty)?;
    }
    Ok(seed)
}

fn read_u32(seed: &Seed, at: usize) -> anyhow::Result<u32> {
    let b = seed
        .bytes
        .get(at..at + 4)
        .context("GGUF header ends early")?;
    Ok(u32::from_le_bytes(b.try_into()?))
}

fn read_u64(seed: &Seed, at: usize) -> anyhow::Result<usize> {
    let b = seed
        .bytes
        .get(at..at + 8)
        .context("GGUF header ends early")?;
    Ok(usize::try_from(u64::from_le_bytes(b.try_into()?))?)
}

/// Records the length field of the string at `at`; returns the offset after it.
fn walk_string(seed: &mut Seed, at: usize) -> anyhow::Result<usize> {
    seed.u64_fields.push(at);
    Ok(at + 8 + read_u64(seed, at)?)
}

/// Records the length, count and type fields of the value of type `ty` at `at` (metadata that
/// the parser accepted); returns the offset after it.
fn walk_value(seed: &mut Seed, at: usize, ty: u32) -> anyhow::Result<usize> {
    Ok(match ty {
        0 | 1 | 7 => at + 1,
        2 | 3 => at + 2,
        4..=6 => at + 4,
        10..=12 => at + 8,
        8 => walk_string(seed, at)?,
        9 => {
            let elem = read_u32(seed, at)?;
            seed.u32_fields.push(at);
            seed.u64_fields.push(at + 4);
            let n = read_u64(seed, at + 4)?;
            let mut at = at + 12;
            for _ in 0..n {
                // Strings are recorded for the first elements only: the fields list stays small.
                at = match (elem, seed.u64_fields.len() < 4096) {
                    (8, false) => at + 8 + read_u64(seed, at)?,
                    _ => walk_value(seed, at, elem)?,
                };
            }
            at
        }
        other => anyhow::bail!("unknown GGUF value type {other} at byte {at}"),
    })
}

/// Builds the corpus in `dir` (a scratch directory for the conversion).
pub fn corpus(dir: &Path, real_gguf: Option<&Path>) -> anyhow::Result<Corpus> {
    let gguf: Vec<Seed> = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ]
    .into_iter()
    .map(tiny_gguf)
    .collect();

    // The Hugging Face layout of the same model, through the converter.
    let gguf_path = dir.join("tiny.gguf");
    std::fs::write(&gguf_path, &gguf[0].bytes)?;
    let hf = dir.join("hf");
    convert_gguf_to_hf(&gguf_path, &hf, DType::F32)?;
    let hf16 = dir.join("hf16");
    convert_gguf_to_hf(&gguf_path, &hf16, DType::BF16)?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let safetensors = vec![
        safetensors_seed(read(&hf.join("model.safetensors"))?),
        safetensors_seed(read(&hf16.join("model.safetensors"))?),
    ];
    let shards = shard(&hf, dir)?;

    let real_gguf = real_gguf.map(real_gguf_header).transpose()?;
    Ok(Corpus {
        gguf,
        real_gguf,
        safetensors,
        shards,
        config: Seed::plain(read(&hf.join("config.json"))?),
        tokenizer: Seed::plain(read(&hf.join("tokenizer.json"))?),
        results: results(dir)?,
    })
}

fn safetensors_seed(bytes: Vec<u8>) -> Seed {
    Seed {
        bytes,
        u64_fields: vec![0],
        u32_fields: Vec::new(),
    }
}

/// Splits the tiny model's `model.safetensors` into two shards and an index.
fn shard(hf: &Path, dir: &Path) -> anyhow::Result<[Seed; 3]> {
    use finercut_format::{write_safetensors, SafetensorsStore, TensorSource};
    let store = SafetensorsStore::open(&hf.join("model.safetensors"))?;
    let names = store.names();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = BTreeMap::new();
    let mut seeds = Vec::new();
    for (i, part) in [first, second].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let tensors = part
            .iter()
            .map(|n| store.get(n).map(|t| (n.clone(), t)))
            .collect::<finercut_format::Result<Vec<_>>>()?;
        let list: Vec<(String, DType, Vec<usize>, &[u8])> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype, t.shape.clone(), &*t.data))
            .collect();
        let path = dir.join(&file);
        write_safetensors(&path, &list, &BTreeMap::new())?;
        seeds.push(safetensors_seed(std::fs::read(&path)?));
        for n in part {
            weight_map.insert(n.clone(), file.clone());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    seeds.push(Seed::plain(serde_json::to_vec_pretty(&index)?));
    let [a, b, c]: [Seed; 3] = seeds
        .try_into()
        .map_err(|_| anyhow::format_err!("expected two shards and an index"))?;
    Ok([a, b, c])
}

/// A finished result file and the checkpoint of an unfinished run of the greedy search on an
/// additive objective over 4 blocks.
fn results(dir: &Path) -> anyhow::Result<Vec<Seed>> {
    let weights = [0.5, 0.1, 0.7, 0.2, 0.9, 0.3, 0.4, 0.8];
    let mut seeds = Vec::new();
    for stop in [Stop::End, Stop::Ratio(0.25)] {
        let mut settings = Settings::new(Method::Finercut);
        settings.level = Level::Sublayer;
        settings.stop = stop;
        let mut result = SearchResult::new(settings, provenance(), 4)?;
        let mut scorer = FnScorer::new(8, |set: &std::collections::BTreeSet<usize>| {
            set.iter().map(|&i| weights[i]).sum()
        });
        let path = dir.join("result.json");
        run(
            &mut result,
            Inputs::Scorer(&mut scorer),
            Some(&path),
            &mut (),
        )?;
        seeds.push(Seed::plain(std::fs::read(&path)?));
    }
    Ok(seeds)
}

/// The provenance the result seeds were written with.
pub fn provenance() -> Provenance {
    Provenance {
        model_sha256: "fuzz-model".into(),
        data_sha256: "fuzz-data".into(),
    }
}
