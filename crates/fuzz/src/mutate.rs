//! Mutations: byte flips, truncations, insertions and deletions, huge values in the length and
//! count fields a seed records, and structural edits of JSON (configs, tokenizers, indexes, result
//! files, safetensors headers): wrong types, huge numbers, wrong dtypes and shapes, missing keys.

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::seeds::Seed;

/// Values that break length and count arithmetic.
const HUGE_U64: &[u64] = &[
    1 << 60,
    u64::MAX,
    u64::MAX - 7,
    1 << 63,
    1 << 32,
    (1 << 32) - 1,
    1 << 40,
    (1 << 31) + 1,
    0,
    1,
];

/// Values for type ids and dimension counts.
const ODD_U32: &[u32] = &[u32::MAX, 1 << 31, 0, 1, 4, 5, 13, 30, 39, 64, 65, 1000];

/// Dtype names for safetensors headers: real ones, sub-byte ones and nonsense.
const DTYPES: &[&str] = &[
    "F32", "F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "F4", "F6_E2M3", "F8_E4M3", "Q9", "",
];

/// Applies one to four mutations to `seed`. `json` seeds also get structural JSON edits.
pub fn mutate(rng: &mut impl Rng, seed: &Seed, json: bool) -> Vec<u8> {
    let mut bytes = seed.bytes.clone();
    let rounds = [1, 1, 1, 2, 2, 3, 4][rng.gen_range(0..7)];
    for _ in 0..rounds {
        if json && rng.gen_bool(0.5) {
            if let Some(b) = mutate_json(rng, &bytes) {
                bytes = b;
                continue;
            }
        }
        if seed.u64_fields.first() == Some(&0) && rng.gen_bool(0.3) {
            if let Some(b) = mutate_safetensors_header(rng, &bytes) {
                bytes = b;
                continue;
            }
        }
        mutate_bytes(rng, seed, &mut bytes);
    }
    bytes
}

/// A position, biased towards the start (where headers are).
fn position(rng: &mut impl Rng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.gen_bool(0.5) {
        rng.gen_range(0..len.min(512))
    } else {
        rng.gen_range(0..len)
    }
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    let end = (at + value.len()).min(bytes.len());
    if at < end {
        bytes[at..end].copy_from_slice(&value[..end - at]);
    }
}

fn mutate_bytes(rng: &mut impl Rng, seed: &Seed, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    match rng.gen_range(0..10) {
        0 | 1 => {
            if len > 0 {
                let at = position(rng, len);
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
        }
        2 => {
            if len > 0 {
                let at = position(rng, len);
                bytes[at] = *[0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'9', rng.gen()]
                    .choose(rng)
                    .unwrap_or(&0);
            }
        }
        3 => {
            let at = if rng.gen_bool(0.5) {
                position(rng, len)
            } else {
                len.saturating_sub(rng.gen_range(1..=64))
            };
            bytes.truncate(at);
        }
        4 => {
            let at = position(rng, len + 1).min(len);
            let n = rng.gen_range(1..=16);
            let extra: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            bytes.splice(at..at, extra);
        }
        5 => {
            if len > 0 {
                let at = position(rng, len);
                let n = rng.gen_range(1..=64).min(len - at);
                bytes.drain(at..at + n);
            }
        }
        6 => {
            if len > 0 {
                let at = position(rng, len);
                let n = rng.gen_range(1..=32).min(len - at);
                let copy = bytes[at..at + n].to_vec();
                let to = position(rng, len);
                bytes.splice(to..to, copy);
            }
        }
        7 | 8 => {
            let value = *HUGE_U64.choose(rng).unwrap_or(&u64::MAX);
            // Counts near the input's size pass "larger than the file" checks and test what is
            // allocated from them.
            let value = match rng.gen_range(0..10) {
                0 => len as u64 + rng.gen_range(0..16),
                1 => (len as u64) >> rng.gen_range(0..4),
                _ => value,
            };
            let at = match seed.u64_fields.choose(rng) {
                Some(&at) if rng.gen_bool(0.8) => at,
                _ => position(rng, len),
            };
            put(bytes, at, &value.to_le_bytes());
        }
        _ => {
            let value = *ODD_U32.choose(rng).unwrap_or(&u32::MAX);
            let at = match seed.u32_fields.choose(rng) {
                Some(&at) if rng.gen_bool(0.8) => at,
                _ => position(rng, len),
            };
            put(bytes, at, &value.to_le_bytes());
        }
    }
}

/// A value that breaks assumptions about a JSON field.
fn odd_value(rng: &mut impl Rng) -> Value {
    match rng.gen_range(0..14) {
        0 => json!(1u64 << 60),
        1 => json!(u64::MAX),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(1e308),
        5 => json!(-0.0),
        6 => json!(0.5),
        7 => json!("x"),
        8 => Value::Null,
        9 => json!([]),
        10 => json!({}),
        11 => json!(true),
        12 => json!(1u64 << 32),
        _ => json!(i64::MIN),
    }
}

/// Every path to a node of `v` (as indices into objects' keys or arrays), capped for big documents.
fn paths(v: &Value, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    if out.len() >= 4096 {
        return;
    }
    out.push(prefix.clone());
    let children: Vec<&Value> = match v {
        Value::Object(m) => m.values().collect(),
        Value::Array(a) => a.iter().collect(),
        _ => return,
    };
    for (i, c) in children.into_iter().enumerate().take(64) {
        prefix.push(i);
        paths(c, prefix, out);
        prefix.pop();
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[usize]) -> Option<&'a mut Value> {
    let Some((&first, rest)) = path.split_first() else {
        return Some(v);
    };
    let child = match v {
        Value::Object(m) => m.values_mut().nth(first)?,
        Value::Array(a) => a.get_mut(first)?,
        _ => return None,
    };
    node_mut(child, rest)
}

/// Edits one node of a JSON document; `None` when `bytes` is not JSON.
fn mutate_json(rng: &mut impl Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(bytes).ok()?;
    let mut all = Vec::new();
    paths(&doc, &mut Vec::new(), &mut all);
    let path = all.choose(rng)?.clone();
    let node = node_mut(&mut doc, &path)?;
    match (rng.gen_range(0..4), &mut *node) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let key = m.keys().nth(rng.gen_range(0..m.len()))?.clone();
            m.remove(&key);
        }
        (0, Value::Array(a)) if !a.is_empty() => {
            let i = rng.gen_range(0..a.len());
            if rng.gen_bool(0.5) {
                a.remove(i);
            } else {
                let copy = a[i].clone();
                a.push(copy);
            }
        }
        (1, Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(0.0);
            *node = json!(x * [2.0, -1.0, 1e9, 0.0][rng.gen_range(0..4)]);
        }
        _ => *node = odd_value(rng),
    }
    let out = if rng.gen_bool(0.5) {
        serde_json::to_vec(&doc)
    } else {
        serde_json::to_vec_pretty(&doc)
    };
    out.ok()
}

/// Edits a safetensors header: a tensor's dtype, shape or offsets, or `__metadata__`; the header
/// length is rewritten to match (or left stale).
fn mutate_safetensors_header(rng: &mut impl Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let data = &bytes[8 + n..];
    let mut doc: serde_json::Map<String, Value> = serde_json::from_slice(header).ok()?;
    let names: Vec<String> = doc.keys().cloned().collect();
    let name = names.choose(rng)?.clone();
    let entry = doc.get_mut(&name)?;
    match rng.gen_range(0..6) {
        0 => {
            entry
                .as_object_mut()?
                .insert("dtype".into(), json!(DTYPES.choose(rng)?));
        }
        1 => {
            let shape = entry.get_mut("shape")?.as_array_mut()?;
            match rng.gen_range(0..4) {
                0 => shape.push(json!(*HUGE_U64.choose(rng)?)),
                1 => {
                    shape.pop();
                }
                2 if !shape.is_empty() => {
                    let i = rng.gen_range(0..shape.len());
                    shape[i] = json!(*HUGE_U64.choose(rng)?);
                }
                _ => shape.insert(0, json!(0)),
            }
        }
        2 => {
            let offsets = entry.get_mut("data_offsets")?.as_array_mut()?;
            let i = rng.gen_range(0..offsets.len().max(1));
            if let Some(o) = offsets.get_mut(i) {
                *o = json!(*HUGE_U64.choose(rng)?);
            }
        }
        3 => {
            let offsets = entry.get_mut("data_offsets")?.as_array_mut()?;
            offsets.reverse();
        }
        4 => *entry = odd_value(rng),
        _ => {
            doc.insert(
                "__metadata__".into(),
                json!({"format": odd_value(rng), "x": "y"}),
            );
        }
    }
    let text = serde_json::to_vec(&doc).ok()?;
    let len = if rng.gen_bool(0.9) {
        text.len() as u64
    } else {
        *HUGE_U64.choose(rng)?
    };
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Some(out)
}
