//! GPT-NeoX's blocks on the tiny golden models (`data/golden/tiny/gpt_neox`, parallel residual,
//! and `gpt_neox_sequential`): removing a sublayer equals zeroing its branch's output (the output
//! projection's weight and bias), which in a parallel block leaves the other branch reading the
//! block input; and every way of running the model (traces and resumes, streamed candidates,
//! continuations, parts of the model) agrees with the forward under any plan.

use crate::families::{family_dir, family_tokens, load_family};
use crate::reference::assert_close_f32;
use finercut_format::{Bytes, ModelConfig, RawTensor, SafetensorsStore, TensorSource};
use finercut_model::{LoadOptions, Model, Plan};
use finercut_tensor::Device;

const NEOX: [&str; 2] = ["gpt_neox", "gpt_neox_sequential"];

/// Sublayers of the tiny models (4 blocks).
const SUBLAYERS: usize = 8;

fn plan_from_mask(mask: u32) -> Plan {
    Plan::from_removed((0..SUBLAYERS).filter(|i| mask & (1 << i) != 0))
}

/// The family's view of a golden directory's tensors, with the output projection (weight and
/// bias) of the sublayers in `zeroed` replaced by zeros.
struct Zeroed {
    inner: Box<dyn TensorSource>,
    zeroed: Vec<String>,
}

impl TensorSource for Zeroed {
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        let mut t = self.inner.get(name)?;
        if self.zeroed.iter().any(|z| name.starts_with(z.as_str())) {
            t.data = Bytes::from_vec(vec![0u8; t.data.len()]);
        }
        Ok(t)
    }
}

fn config(family: &str) -> ModelConfig {
    ModelConfig::from_json_file(&family_dir(family).join("config.json")).unwrap()
}

fn source(family: &str, c: &ModelConfig) -> Box<dyn TensorSource> {
    let store = SafetensorsStore::open(&family_dir(family)).unwrap();
    c.family().weights(c, Box::new(store))
}

#[test]
fn removing_a_sublayer_equals_zeroing_its_branch() {
    for family in NEOX {
        let c = config(family);
        assert_eq!(c.recipe().parallel_residual, family == "gpt_neox");
        let model = load_family(family);
        let tokens = family_tokens(family);
        for removed in [vec![0], vec![3], vec![4, 5], vec![2, 7], vec![1, 2, 6]] {
            let zeroed: Vec<String> = removed
                .iter()
                .map(|&s| {
                    let module = if s % 2 == 0 {
                        "self_attn.o_proj"
                    } else {
                        "mlp.down_proj"
                    };
                    format!("model.layers.{}.{module}.", s / 2)
                })
                .collect();
            let source = Zeroed {
                inner: source(family, &c),
                zeroed,
            };
            let reference = Model::load(&c, &source, &Device::Cpu).unwrap();
            let want = reference.forward(&tokens, &Plan::dense()).unwrap();
            let plan = Plan::from_removed(removed.iter().copied());
            let got = model.forward(&tokens, &plan).unwrap();
            assert_close_f32(
                got.as_slice_f32().unwrap(),
                want.as_slice_f32().unwrap(),
                1e-5,
                &format!("{family}: {removed:?} removed vs zeroed"),
            );
        }
    }
}

#[test]
fn traces_streams_and_continuations_agree_with_the_forward() {
    for family in NEOX {
        let model = load_family(family);
        let tokens = family_tokens(family);
        let short: Vec<Vec<u32>> = tokens.iter().map(|t| t[..9].to_vec()).collect();
        for mask in (0..1u32 << SUBLAYERS).step_by(23) {
            let plan = plan_from_mask(mask);
            let what = format!("{family} under {plan}");
            let full = model.forward(&short, &plan).unwrap();
            let states = model.trace(&short, &plan).unwrap();
            assert_eq!(states.len(), SUBLAYERS + 1);
            for (s, state) in states.iter().enumerate() {
                if s > 0 {
                    let next = model.advance(&states[s - 1], s - 1, s, &plan).unwrap();
                    assert_close_f32(
                        next.as_slice_f32().unwrap(),
                        state.as_slice_f32().unwrap(),
                        1e-6,
                        &format!("{what}: advance to {s}"),
                    );
                }
                let resumed = model.resume(state, s, &plan).unwrap();
                assert_close_f32(
                    resumed.as_slice_f32().unwrap(),
                    full.as_slice_f32().unwrap(),
                    1e-6,
                    &format!("{what}: resume at {s}"),
                );
            }
            // Every single and some paired candidates on top of the plan.
            let cands: Vec<Vec<usize>> = (0..SUBLAYERS)
                .map(|i| vec![i])
                .chain([vec![0, 1], vec![2, 5], vec![6, 7]])
                .collect();
            let vocab = model.config().vocab_size;
            let mut got: Vec<Vec<f32>> = vec![Vec::new(); cands.len()];
            model
                .stream_candidates(&short, &plan, &cands, &mut |c, _, rows| {
                    got[c].extend_from_slice(rows);
                    Ok(())
                })
                .unwrap();
            for (c, cand) in cands.iter().enumerate() {
                let want = model
                    .forward(&short, &plan.with(cand.iter().copied()))
                    .unwrap();
                assert_eq!(got[c].len(), want.elem_count());
                assert_close_f32(
                    &got[c],
                    want.as_slice_f32().unwrap(),
                    1e-5,
                    &format!("{what}: candidate {cand:?}"),
                );
            }
            // A shared prefix with continuations, and a prefix state extended, through the caches.
            let (prefix, suffixes) = (
                &tokens[0][..5],
                vec![tokens[1][..4].to_vec(), tokens[0][5..7].to_vec()],
            );
            let cont = model.continuation_logits(prefix, &suffixes, &plan).unwrap();
            let head = model.prefix_state(&prefix[..2], &plan).unwrap();
            let grown = model
                .extend_prefix(Some(&head), &prefix[2..], &plan)
                .unwrap();
            let from = model
                .continuation_logits_from(&grown, &suffixes, &plan)
                .unwrap();
            for ((s, out), again) in suffixes.iter().zip(&cont).zip(&from) {
                let whole: Vec<u32> = prefix.iter().chain(s).copied().collect();
                let lsm = model
                    .forward(&[whole], &plan)
                    .unwrap()
                    .log_softmax_last()
                    .unwrap();
                let rows = &lsm.as_slice_f32().unwrap()[4 * vocab..(4 + s.len()) * vocab];
                assert_close_f32(
                    out.as_slice_f32().unwrap(),
                    rows,
                    1e-5,
                    &format!("{what}: continuation"),
                );
                assert_close_f32(
                    again.as_slice_f32().unwrap(),
                    rows,
                    1e-5,
                    &format!("{what}: extended prefix"),
                );
            }
        }
    }
}

#[test]
fn weights_are_served_under_the_shared_names() {
    let family = "gpt_neox";
    let c = config(family);
    let source = source(family, &c);
    let model = load_family(family);
    for name in source.names() {
        let want = source.get(&name).unwrap();
        let got = model.weight(&name).unwrap();
        assert_eq!(got.shape(), want.shape.as_slice(), "{name}");
        assert_eq!(
            got.to_vec_f32().unwrap(),
            want.to_f32_vec().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn parts_hold_whole_parallel_blocks() {
    let family = "gpt_neox";
    let c = config(family);
    let source = source(family, &c);
    let load = |range: std::ops::Range<usize>| {
        let options = LoadOptions {
            sublayers: Some(range),
            ..LoadOptions::default()
        };
        Model::load_with_options(&c, source.as_ref(), &Device::Cpu, &options)
    };
    // A boundary inside a parallel block is refused, naming the split.
    let e = load(0..3).err().unwrap().to_string();
    assert!(e.contains("parallel block"), "{e}");
    assert!(load(3..8).is_err());
    // Parts on block boundaries, run one after the other, give the whole model's logits.
    let tokens = family_tokens(family);
    let plan = plan_from_mask(0b0110_0100);
    let (first, second) = (load(0..4).unwrap(), load(4..8).unwrap());
    let state = first
        .advance(&first.embed_tokens(&tokens).unwrap(), 0, 4, &plan)
        .unwrap();
    let got = second.resume(&state, 4, &plan).unwrap();
    let want = load_family(family).forward(&tokens, &plan).unwrap();
    assert_eq!(got.as_slice_f32().unwrap(), want.as_slice_f32().unwrap());
}
