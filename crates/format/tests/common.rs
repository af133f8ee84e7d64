//! Test helpers: a small GGUF writer, GPT-2's byte-to-unicode table, the repository's data directory.

use std::path::PathBuf;

use finercut_format::gguf::Value;
use finercut_format::GgmlType;
use half::f16;
use rand::Rng;

/// Builds GGUF files in memory (test-only; follows `docs/GGUF.md` independently of the reader).
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: u64,
    pub meta: Vec<(String, Value)>,
    pub tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(t, items) => {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: 32,
            meta: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn meta(&mut self, k: &str, v: Value) -> &mut Self {
        self.meta.push((k.to_string(), v));
        self
    }

    /// Adds an F32 tensor given in Hugging Face (row-major) shape.
    pub fn f32_tensor(&mut self, name: &str, hf_shape: &[usize], values: &[f32]) -> &mut Self {
        let dims = hf_shape.iter().rev().map(|&d| d as u64).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .push((name.to_string(), dims, GgmlType::F32, data));
        self
    }

    pub fn raw_tensor(
        &mut self,
        name: &str,
        dims: Vec<u64>,
        ty: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push((name.to_string(), dims, ty, data));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let mut meta = self.meta.clone();
        if self.alignment != 32 {
            meta.push((
                "general.alignment".into(),
                Value::U32(self.alignment as u32),
            ));
        }
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in &meta {
            put_str(&mut out, k);
            out.extend_from_slice(&v.gguf_type().to_le_bytes());
            put_value(&mut out, v);
        }
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + data.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }
}

pub fn strings(v: &[&str]) -> Value {
    Value::Array(8, v.iter().map(|s| Value::String(s.to_string())).collect())
}

pub fn i32s(v: &[i32]) -> Value {
    Value::Array(5, v.iter().map(|&x| Value::I32(x)).collect())
}

/// A random finite f16 in [-2, 2] as little-endian bytes.
pub fn rand_f16_bytes(rng: &mut impl Rng) -> [u8; 2] {
    f16::from_f32(rng.gen_range(-2.0f32..2.0)).to_le_bytes()
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100 onwards.
pub fn bytes_to_unicode() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                let c = char::from_u32(next).unwrap();
                next += 1;
                c
            }
        })
        .collect()
}

/// The repository's `data/` directory (vendored WikiText-2 text, golden outputs).
pub fn repo_data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data")
}
