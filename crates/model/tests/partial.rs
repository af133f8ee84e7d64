//! Loading a part of the model (a pipeline stage, `LoadOptions::sublayers`): a part reads only
//! its own tensors, and running the parts one after the other, the residual stream handed over
//! at each boundary, gives the whole model's logits bit for bit.

use crate::reference::{Arch, MemSource, Tiny, VOCAB};
use finercut_format::{RawTensor, TensorSource};
use finercut_model::{Error, LoadOptions, Model, Plan};
use finercut_tensor::Device;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// A source that records the names it was asked for.
struct Recording {
    inner: MemSource,
    read: Mutex<BTreeSet<String>>,
}

impl TensorSource for Recording {
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        self.read.lock().unwrap().insert(name.to_string());
        self.inner.get(name)
    }
}

fn part(t: &Tiny, range: std::ops::Range<usize>) -> (Model, BTreeSet<String>) {
    let source = Recording {
        inner: t.source.clone(),
        read: Mutex::new(BTreeSet::new()),
    };
    let options = LoadOptions {
        sublayers: Some(range),
        ..LoadOptions::default()
    };
    let model = Model::load_with_options(&t.config, &source, &Device::Cpu, &options).unwrap();
    let read = source.read.into_inner().unwrap();
    (model, read)
}

/// The sublayer a block tensor belongs to (attention or FFN by the family's names), or `None` for
/// the embeddings, final norm and head.
fn owner(t: &Tiny, name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    let (block, rest) = rest.split_once('.')?;
    let block: usize = block.parse().ok()?;
    let names = t.config.recipe().tensors;
    let module = rest.split('.').next()?;
    let attn = names.sublayer_modules(true).contains(&module);
    Some(2 * block + usize::from(!attn))
}

fn tokens() -> Vec<Vec<u32>> {
    (0..2)
        .map(|i| {
            (0..7)
                .map(|j| ((i * 13 + j * 5 + 3) % VOCAB) as u32)
                .collect()
        })
        .collect()
}

#[test]
fn a_part_reads_only_its_own_tensors() {
    for arch in [Arch::Llama, Arch::Gemma3, Arch::Mixtral] {
        let t = Tiny::new(arch, 5);
        let count = 2 * t.config.num_hidden_layers;
        // Boundaries inside a block (3) and on block edges (2, 4).
        for range in [0..3, 3..count, 2..4, 0..count] {
            let (model, read) = part(&t, range.clone());
            assert_eq!(model.part(), range);
            for name in &read {
                match owner(&t, name) {
                    Some(s) => assert!(range.contains(&s), "{arch:?} {range:?} read {name}"),
                    None => {
                        let first = range.start == 0;
                        let last = range.end == count;
                        let ok = match name.as_str() {
                            "model.embed_tokens.weight" => {
                                first || (last && t.config.tie_word_embeddings)
                            }
                            "model.norm.weight" | "lm_head.weight" => last,
                            _ => false,
                        };
                        assert!(ok, "{arch:?} {range:?} read {name}");
                    }
                }
            }
            // Every tensor of the part's own sublayers was read.
            for name in t.source.names() {
                if owner(&t, &name).is_some_and(|s| range.contains(&s)) {
                    assert!(read.contains(&name), "{arch:?} {range:?} skipped {name}");
                }
            }
        }
    }
}

#[test]
fn stages_in_turn_give_the_whole_forward_bit_for_bit() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Gemma3, Arch::Mixtral] {
        let t = Tiny::new(arch, 7);
        let count = 2 * t.config.num_hidden_layers;
        let whole = Model::load(&t.config, &t.source, &Device::Cpu).unwrap();
        let toks = tokens();
        for plan in [Plan::dense(), Plan::from_removed([1, 3])] {
            let want = whole.forward(&toks, &plan).unwrap().to_vec_f32().unwrap();
            for cuts in [vec![3], vec![1, 4], vec![2, 3, 5]] {
                let mut bounds = vec![0];
                bounds.extend(&cuts);
                bounds.push(count);
                let stages: Vec<Model> =
                    bounds.windows(2).map(|w| part(&t, w[0]..w[1]).0).collect();
                let mut x = stages[0].embed_tokens(&toks).unwrap();
                let (last, inner) = stages.split_last().unwrap();
                for (s, w) in inner.iter().zip(bounds.windows(2)) {
                    x = s.advance(&x, w[0], w[1], &plan).unwrap();
                }
                let got = last
                    .resume(&x, last.part().start, &plan)
                    .unwrap()
                    .to_vec_f32()
                    .unwrap();
                assert_eq!(got, want, "{arch:?} stages {bounds:?} plan {plan}");
            }
        }
    }
}

#[test]
fn a_part_refuses_what_it_does_not_hold() {
    let t = Tiny::new(Arch::Llama, 2);
    let (middle, _) = part(&t, 2..4);
    let toks = tokens();
    assert!(matches!(
        middle.forward(&toks, &Plan::dense()),
        Err(Error::NotLoaded { .. })
    ));
    let x = Model::load(&t.config, &t.source, &Device::Cpu)
        .unwrap()
        .embed_tokens(&toks)
        .unwrap();
    assert!(matches!(
        middle.advance(&x, 0, 2, &Plan::dense()),
        Err(Error::NotLoaded { .. })
    ));
    assert!(matches!(
        middle.resume(&x, 2, &Plan::dense()),
        Err(Error::NotLoaded { .. })
    ));
    let e = middle
        .advance(&x, 1, 3, &Plan::dense())
        .unwrap_err()
        .to_string();
    assert!(e.contains("L0.mlp") && e.contains("2..4"), "{e}");
}
