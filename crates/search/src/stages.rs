//! Pipeline stages (`--stages P`, `docs/SCALING.md`): the ranks of a run form replicas of a
//! pipeline of `P` stages, each stage holding a contiguous range of sublayers, so that a model
//! larger than one rank's memory can be searched.
//!
//! - [`Stages::new`] checks the setting against the ranks and the model and lays out the ranks:
//!   rank `r` is stage `r mod P` of replica `r div P` (a replica's stages are consecutive ranks).
//! - [`balance`] places the boundaries so that every stage does about the same work: the work of
//!   sublayer `s` is the number of streams that run through it (the base stream while a later
//!   candidate needs it, and every candidate born at or before `s` that does not remove it), times
//!   the sublayer's weight count; the last sublayer also carries the candidates' LM heads.
//!   Every scoring pass recomputes the boundaries from its own candidates.
//! - A boundary moves at most [`Stages::margin`] sublayers from where it lies for the first step
//!   (every sublayer a candidate, [`Stages::first_boundaries`]), so a stage loads a fixed window:
//!   its first range widened by the margin on each side ([`Stages::window`]). With weights kept as
//!   stored (memory-mapped) a margin sublayer costs address space, and resident memory only once a
//!   boundary has moved onto it.
//! - [`Stages::micro_batches`] cuts a pass's candidates into groups that go from stage to stage
//!   one by one, so stage `k + 1` runs a group while stage `k` runs the next (GPipe-style); their
//!   number is the one with the shortest simulated schedule ([`finercut_dist::makespan`]).
//!
//! What crosses a boundary ([`encode_streams`]): the base stream, if still needed, and every born
//! candidate's stream, as `f32` rows: exact, so the staged search gives the one-process result
//! bit for bit.

use std::collections::BTreeMap;
use std::ops::Range;

use finercut_dist::{makespan, Transport};
use finercut_model::{Model, Plan, StageStreams, Tensor};

use crate::{Error, Result};

/// The margin by which a boundary may move from its first place, in sublayers (one block).
pub const DEFAULT_MARGIN: usize = 2;

/// The pipeline layout of a run: `count` stages per replica, `replicas` replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// Stages per pipeline, `P`.
    pub count: usize,
    /// Replicas of the pipeline (ranks / `P`); candidates are dealt to replicas.
    pub replicas: usize,
    /// How far a boundary may move from its first place, in sublayers.
    pub margin: usize,
    /// Sublayers of the model, `2L`.
    pub sublayers: usize,
    /// Every boundary is a multiple of this: 1, or 2 for a model of parallel blocks (GPT-NeoX's
    /// `use_parallel_residual`), whose attention runs with its FFN, so a stage holds whole blocks.
    pub step: usize,
    /// Weights per sublayer, the work unit of the balance.
    weights: Vec<u64>,
    /// Weights of one LM head.
    head: u64,
    /// The boundaries of the first step (`P + 1` values from 0 to 2L).
    first: Vec<usize>,
    /// Micro-batches per pass when set ([`Stages::with_micro_batches`]); else chosen per pass by
    /// [`Stages::micro_batches`]' rule.
    micro: Option<usize>,
}

impl Stages {
    /// The layout of `count` stages on `ranks` ranks for a model of `config`. A clear error for 0
    /// stages, more stages than sublayers, or ranks not divisible by the stages.
    pub fn new(
        count: usize,
        margin: usize,
        ranks: usize,
        config: &finercut_model::format::ModelConfig,
    ) -> Result<Stages> {
        let sublayers = 2 * config.num_hidden_layers;
        let bad = |message: String| Error::InvalidSetting {
            setting: "--stages",
            message,
        };
        if count == 0 {
            return Err(bad("0 stages: a pipeline has at least 1 stage".into()));
        }
        let step = if config.recipe().parallel_residual {
            2
        } else {
            1
        };
        if count > sublayers / step {
            return Err(bad(if step == 1 {
                format!(
                    "{count} stages for a model of {sublayers} sublayers: every stage needs at least one"
                )
            } else {
                format!(
                    "{count} stages for a model of {} parallel blocks: every stage needs at least one whole block",
                    sublayers / step
                )
            }));
        }
        if !ranks.is_multiple_of(count) {
            return Err(bad(format!(
                "{count} stages on {ranks} ranks: the number of ranks (-np) must be a multiple of the stages (each replica of the pipeline has {count} ranks)"
            )));
        }
        let d = config.hidden_size as u64;
        let q = (config.num_attention_heads * config.head_dim) as u64;
        let kv = (config.num_key_value_heads * config.head_dim) as u64;
        let top_k = config
            .recipe()
            .experts
            .map_or(1, |m| m.num_experts_per_tok as u64);
        let attn = 2 * d * q + 2 * d * kv;
        let mlp = 3 * d * config.intermediate_size as u64 * top_k;
        let weights: Vec<u64> = (0..sublayers)
            .map(|s| if s % 2 == 0 { attn } else { mlp })
            .collect();
        let head = d * config.vocab_size as u64;
        let mut stages = Stages {
            count,
            replicas: ranks / count,
            // A boundary of a parallel-block model moves by whole blocks.
            margin: margin.next_multiple_of(step),
            sublayers,
            step,
            weights,
            head,
            first: Vec::new(),
            micro: None,
        };
        // The first step: every sublayer a candidate born at itself, plus the base stream.
        let births: Vec<(usize, Vec<usize>)> = (0..sublayers).map(|s| (s, vec![s])).collect();
        let work = stages.work(&Plan::dense(), &births);
        stages.first = balance(&work, count, None, step);
        Ok(stages)
    }

    /// Fixes the number of micro-batches of every pass to `count` (at least 1, at most the pass's
    /// candidates) instead of choosing it by the rule of [`Stages::micro_batches`]. Changes the
    /// speed, never a result.
    pub fn with_micro_batches(mut self, count: usize) -> Stages {
        self.micro = Some(count.max(1));
        self
    }

    /// The boundaries of the first step: stage `k` runs `first[k]..first[k + 1]`.
    pub fn first_boundaries(&self) -> &[usize] {
        &self.first
    }

    /// `(replica, stage)` of `rank`.
    pub fn place(&self, rank: usize) -> (usize, usize) {
        (rank / self.count, rank % self.count)
    }

    /// The sublayers stage `stage` loads: its first range widened by the margin on each side,
    /// without sublayer 0 unless it is the first stage (which alone embeds) and without the last
    /// sublayer unless it is the last stage (which alone holds the LM head).
    pub fn window(&self, stage: usize) -> Range<usize> {
        let (lo, hi) = (self.first[stage], self.first[stage + 1]);
        let start = if stage == 0 {
            0
        } else {
            lo.saturating_sub(self.margin).max(self.step)
        };
        let end = if stage + 1 == self.count {
            self.sublayers
        } else {
            (hi + self.margin).min(self.sublayers - self.step)
        };
        start..end
    }

    /// Work per sublayer of streaming `candidates` (`(birth, removals beyond the base)`) over
    /// `base`: streams through the sublayer times its weights; the last sublayer adds one LM head
    /// per candidate.
    fn work(&self, base: &Plan, candidates: &[(usize, Vec<usize>)]) -> Vec<u64> {
        let n = self.sublayers;
        let last_birth = candidates.iter().map(|c| c.0).max().unwrap_or(0);
        let mut work: Vec<u64> = (0..n)
            .map(|s| {
                if base.is_removed(s) {
                    return 0;
                }
                let streams = usize::from(s < last_birth)
                    + candidates
                        .iter()
                        .filter(|(b, extra)| *b <= s && !extra.contains(&s))
                        .count();
                streams as u64 * self.weights[s]
            })
            .collect();
        if let Some(w) = work.last_mut() {
            *w += candidates.len() as u64 * self.head;
        }
        work
    }

    /// Each candidate's birth (its first sublayer not already removed in `base`; the sublayer
    /// count when it has none) and those sublayers.
    fn births(&self, base: &Plan, candidates: &[Vec<usize>]) -> Vec<(usize, Vec<usize>)> {
        candidates
            .iter()
            .map(|c| {
                let extra: Vec<usize> =
                    c.iter().copied().filter(|&i| !base.is_removed(i)).collect();
                (extra.iter().copied().min().unwrap_or(self.sublayers), extra)
            })
            .collect()
    }

    /// The boundaries of a pass of `candidates` (sublayer sets) over `base`: balanced by
    /// [`balance`], each within the margin of its first place.
    pub fn boundaries(&self, base: &Plan, candidates: &[Vec<usize>]) -> Vec<usize> {
        let births = self.births(base, candidates);
        let work = self.work(base, &births);
        balance(
            &work,
            self.count,
            Some((&self.first, self.margin)),
            self.step,
        )
    }

    /// The micro-batches of a pass of `candidates` over `base` cut at `cuts` ([`Stages::boundaries`]):
    /// groups of indices into `candidates`, in the order the stages run them. Each group is a pass
    /// of its own (its candidates' streams and its own copy of the base stream, as far as its
    /// latest-born candidate needs it), handed from stage to stage as soon as a stage is done with
    /// it, so that stage `k + 1` runs group `g` while stage `k` runs group `g + 1`.
    ///
    /// The candidates go latest-born first (ties: lower index), cut into contiguous groups of about
    /// equal cost (`2L − birth`, [`balance`]): the first group costs the first stage little more
    /// than the base stream, so the later stages start early. The number of groups `M` is the one
    /// (from 1 to the number of candidates, ties to fewer) whose schedule is shortest under the
    /// work model of [`balance`]: group `g` on stage `k` takes its weighted stream count over the
    /// stage's sublayers (its base copy included) and starts once stage `k` has finished group
    /// `g − 1` and stage `k − 1` group `g`. More groups shorten the start and end of the pipeline,
    /// where stages wait, by `(P − 1)/(M + P − 1)` of it; each adds a base-stream copy. With
    /// [`Stages::with_micro_batches`] `M` is fixed instead.
    pub fn micro_batches(
        &self,
        base: &Plan,
        candidates: &[Vec<usize>],
        cuts: &[usize],
    ) -> Vec<Vec<usize>> {
        let births = self.births(base, candidates);
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| births[b].0.cmp(&births[a].0).then(a.cmp(&b)));
        let costs: Vec<u64> = order
            .iter()
            .map(|&c| (self.sublayers - births[c].0.min(self.sublayers)) as u64 + 1)
            .collect();
        let groups_of = |m: usize| -> Vec<Vec<usize>> {
            let cut = balance(&costs, m, None, 1);
            cut.windows(2).map(|w| order[w[0]..w[1]].to_vec()).collect()
        };
        if candidates.is_empty() {
            return Vec::new();
        }
        if let Some(m) = self.micro {
            return groups_of(m.min(candidates.len()));
        }
        let stage_work = |group: &[usize]| -> Vec<u64> {
            let mine: Vec<(usize, Vec<usize>)> = group.iter().map(|&c| births[c].clone()).collect();
            let work = self.work(base, &mine);
            cuts.windows(2)
                .map(|w| work[w[0]..w[1]].iter().sum())
                .collect()
        };
        let mut best: Option<(u64, Vec<Vec<usize>>)> = None;
        for m in 1..=candidates.len() {
            let groups = groups_of(m);
            let work: Vec<Vec<u64>> = groups.iter().map(|g| stage_work(g)).collect();
            let span = makespan(&work);
            if best.as_ref().is_none_or(|(b, _)| span < *b) {
                best = Some((span, groups));
            }
        }
        best.map(|(_, g)| g).unwrap_or_default()
    }

    /// Checks that every rank runs the same layout (a collective).
    pub fn check_same(&self, dist: &dyn Transport) -> Result<()> {
        let mine = format!(
            "{} stages, margin {}, micro-batches {:?}",
            self.count, self.margin, self.micro
        );
        let all = dist.all_gather_bytes(mine.as_bytes())?;
        let first = String::from_utf8_lossy(&all[0]).into_owned();
        for (rank, theirs) in all.iter().enumerate().skip(1) {
            let theirs = String::from_utf8_lossy(theirs).into_owned();
            if theirs != first {
                return Err(Error::RankMismatch {
                    rank,
                    what: "pipeline stages (--stages, --stage-margin)",
                    file: "the command line".into(),
                    rank0: first,
                    theirs,
                });
            }
        }
        Ok(())
    }

    /// The storage of the whole model's weights, added up from the stages of replica 0 (each
    /// counts its first range, the first stage the embeddings, the last a separate LM head), in
    /// the words of `Model::weight_storage_summary`: what one process would record (a
    /// collective).
    pub fn weight_summary(&self, dist: &dyn Transport, model: &Model) -> Result<String> {
        let (replica, stage) = self.place(dist.rank());
        let mine: BTreeMap<String, (usize, usize)> = if replica == 0 {
            model.weight_storage_of(
                self.first[stage]..self.first[stage + 1],
                stage == 0,
                stage + 1 == self.count,
            )
        } else {
            BTreeMap::new()
        };
        let bytes = serde_json::to_vec(&mine).unwrap_or_default();
        let mut total: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (rank, theirs) in dist.all_gather_bytes(&bytes)?.iter().enumerate() {
            let map: BTreeMap<String, (usize, usize)> =
                serde_json::from_slice(theirs).map_err(|e| Error::Scorer {
                    message: format!("rank {rank} sent an unreadable weight storage: {e}"),
                })?;
            for (k, (n, b)) in map {
                let e = total.entry(k).or_default();
                e.0 += n;
                e.1 += b;
            }
        }
        Ok(model.storage_summary(&total))
    }
}

/// Checks that `method` can run on pipeline stages: the methods that score candidates
/// (`finercut`, `finercut-oneshot`, `sleb`, `blockpruner`) and `random` can; ShortGPT and
/// DeeperLayers compare every block's dense hidden states in one place and cannot.
pub fn check_method(method: crate::Method) -> Result<()> {
    match method.family() {
        crate::Family::HiddenStates => Err(Error::InvalidSetting {
            setting: "--stages",
            message: format!(
                "method {method} compares the hidden states of every block in one process and does not run on pipeline stages; use --stages with finercut, finercut-oneshot, sleb, blockpruner or random"
            ),
        }),
        _ => Ok(()),
    }
}

/// Boundaries `0 = b₀ < b₁ < … < b_P = n` cutting `work` (per sublayer) into `parts` contiguous
/// parts of about equal work: `b_k` is the cut whose prefix work is nearest to `k/P` of the total
/// (ties to the lower cut), every part at least one sublayer. With `within = (first, margin)`, `b_k`
/// also stays within `margin` of `first[k]` (always possible when `first` is itself such a cut).
/// Every cut is a multiple of `step` (2: whole blocks of sublayers; `work.len()` a multiple of it),
/// and every part holds at least `step` sublayers.
pub fn balance(
    work: &[u64],
    parts: usize,
    within: Option<(&[usize], usize)>,
    step: usize,
) -> Vec<usize> {
    let n = work.len();
    let step = step.max(1);
    let parts = parts.clamp(1, (n / step).max(1));
    let mut prefix = vec![0u128; n + 1];
    for (s, &w) in work.iter().enumerate() {
        prefix[s + 1] = prefix[s] + u128::from(w);
    }
    let total = prefix[n];
    let mut cuts = vec![0usize; parts + 1];
    cuts[parts] = n;
    for k in 1..parts {
        let mut lo = cuts[k - 1] + step;
        let mut hi = n - (parts - k) * step;
        if let Some((first, margin)) = within {
            lo = lo.max(first[k].saturating_sub(margin));
            hi = hi.min(first[k] + margin);
        }
        let (lo, hi) = (lo.next_multiple_of(step), hi - hi % step);
        let target = total * k as u128;
        let scaled = |s: usize| prefix[s] * parts as u128;
        cuts[k] = (lo..=hi.max(lo))
            .step_by(step)
            .min_by_key(|&s| (scaled(s).abs_diff(target), s))
            .unwrap_or(lo);
    }
    cuts
}

/// The bytes of `streams` for the next stage: a count, then for the base stream and each
/// candidate a presence byte and its `f32` values (little-endian).
pub fn encode_streams(streams: &StageStreams) -> Result<Vec<u8>> {
    let all = std::iter::once(&streams.base).chain(streams.streams.iter());
    let mut out = Vec::new();
    out.extend((streams.streams.len() as u64).to_le_bytes());
    for x in all {
        match x {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                let values = x.to_vec_f32().map_err(finercut_model::Error::from)?;
                out.extend((values.len() as u64).to_le_bytes());
                out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
    }
    Ok(out)
}

/// Decodes [`encode_streams`]' bytes from rank `from` into streams of `[rows, d]` on `model`'s
/// device, checking every length.
pub fn decode_streams(
    bytes: &[u8],
    from: usize,
    candidates: usize,
    rows: usize,
    d: usize,
    model: &Model,
) -> Result<StageStreams> {
    let bad = |what: &str| Error::Scorer {
        message: format!(
            "rank {from} handed over {} bytes of streams that do not decode: {what}",
            bytes.len()
        ),
    };
    let mut at = 0usize;
    let mut take = |k: usize| -> Result<&[u8]> {
        let piece = bytes.get(at..at + k).ok_or_else(|| bad("too short"))?;
        at += k;
        Ok(piece)
    };
    let read_u64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let count = read_u64(take(8)?);
    if count != candidates as u64 {
        return Err(bad(&format!("{count} candidates, expected {candidates}")));
    }
    let mut all: Vec<Option<Tensor>> = Vec::with_capacity(candidates + 1);
    for _ in 0..=candidates {
        match take(1)?[0] {
            0 => all.push(None),
            1 => {
                let len = read_u64(take(8)?);
                if len != (rows * d) as u64 {
                    return Err(bad(&format!(
                        "a stream of {len} values, expected {rows} × {d}"
                    )));
                }
                let values: Vec<f32> = take(rows * d * 4)?
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                all.push(Some(
                    Tensor::from_vec(values, &[rows, d], &model.device())
                        .map_err(finercut_model::Error::from)?,
                ));
            }
            _ => return Err(bad("a presence byte other than 0 or 1")),
        }
    }
    if at != bytes.len() {
        return Err(bad("bytes left over"));
    }
    let base = all.remove(0);
    Ok(StageStreams { base, streams: all })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn balance_cuts_equal_work_and_keeps_every_part_non_empty() {
        // Equal work: equal parts.
        assert_eq!(balance(&[1; 8], 4, None, 1), vec![0, 2, 4, 6, 8]);
        // A triangle (live streams growing with s): the first part is the longest.
        let tri: Vec<u64> = (1..=16).collect();
        let cuts = balance(&tri, 2, None, 1);
        assert_eq!(cuts, vec![0, 11, 16]);
        // Left 66 of 136, right 70: the nearest cut to half.
        // All work at the end: every part still gets a sublayer.
        assert_eq!(balance(&[0, 0, 0, 9], 3, None, 1), vec![0, 1, 2, 4]);
        // As many parts as sublayers.
        assert_eq!(balance(&[5, 1, 1], 3, None, 1), vec![0, 1, 2, 3]);
        // Within a margin of a first cut.
        assert_eq!(balance(&[1; 8], 2, Some((&[0, 6, 8], 1)), 1), vec![0, 5, 8]);
        assert_eq!(balance(&[1; 8], 2, Some((&[0, 4, 8], 0)), 1), vec![0, 4, 8]);
        // Whole blocks (step 2): even cuts only, every part at least one block.
        assert_eq!(balance(&tri, 2, None, 2), vec![0, 12, 16]);
        assert_eq!(balance(&[0, 0, 0, 0, 0, 9], 3, None, 2), vec![0, 2, 4, 6]);
        assert_eq!(balance(&[1; 8], 2, Some((&[0, 6, 8], 1)), 2), vec![0, 6, 8]);
        for parts in 1..=4 {
            let cuts = balance(&tri, parts, None, 2);
            assert!(cuts.iter().all(|c| c % 2 == 0), "{cuts:?}");
            assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
        }
    }

    fn config(layers: usize) -> finercut_model::format::ModelConfig {
        let json = format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": {layers},
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": false,
            "hidden_act": "silu"}}"#
        );
        finercut_model::format::ModelConfig::from_json_str(&json, "test config").unwrap()
    }

    #[test]
    fn bad_stage_settings_are_errors_naming_the_setting() {
        let c = config(2);
        for (stages, ranks, what) in [
            (0, 1, "0 stages"),
            (5, 5, "5 stages for a model of 4 sublayers"),
            (2, 3, "multiple of the stages"),
        ] {
            let e = Stages::new(stages, 2, ranks, &c).unwrap_err().to_string();
            assert!(e.contains("--stages") && e.contains(what), "{e}");
        }
        let e = check_method(crate::Method::Shortgpt)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--stages") && e.contains("shortgpt"), "{e}");
        assert!(check_method(crate::Method::Sleb).is_ok());
        let s = Stages::new(2, 1, 4, &c).unwrap();
        assert_eq!((s.replicas, s.place(3)), (2, (1, 1)));
    }

    #[test]
    fn windows_cover_every_reachable_boundary_and_only_the_ends_hold_embeddings_and_head() {
        let c = config(6);
        for (p, margin) in [(2, 0), (2, 2), (3, 1), (3, 4), (12, 1)] {
            let s = Stages::new(p, margin, p, &c).unwrap();
            let first = s.first_boundaries().to_vec();
            assert_eq!((first[0], first[p]), (0, 12));
            // Any pass's boundaries lie inside both neighbouring windows.
            for removed in [vec![], vec![3, 4], vec![0, 1, 2, 5]] {
                let base = Plan::from_removed(removed.iter().copied());
                let cands: Vec<Vec<usize>> = (0..12)
                    .filter(|i| !removed.contains(i))
                    .map(|i| vec![i])
                    .collect();
                for some in [&cands[..], &cands[cands.len() - 1..], &cands[..1]] {
                    let b = s.boundaries(&base, some);
                    for k in 0..p {
                        assert!(b[k] < b[k + 1], "{b:?}");
                        let w = s.window(k);
                        assert!(w.start <= b[k] && b[k + 1] <= w.end, "{b:?} {w:?}");
                        assert!(b[k].abs_diff(first[k]) <= margin);
                    }
                }
            }
            for k in 0..p {
                let w = s.window(k);
                assert_eq!(w.start == 0, k == 0);
                assert_eq!(w.end == 12, k + 1 == p);
            }
        }
    }

    #[test]
    fn micro_batches_partition_the_candidates_latest_born_first_and_fill_the_stages() {
        let c = config(6);
        let cands: Vec<Vec<usize>> = (0..12).map(|i| vec![i]).collect();
        for p in [2, 3] {
            let s = Stages::new(p, 2, p, &c).unwrap();
            let base = Plan::dense();
            let cuts = s.boundaries(&base, &cands);
            let groups = s.micro_batches(&base, &cands, &cuts);
            // More than one group, so the stages overlap; the groups' schedule is shorter than
            // one group's.
            assert!(groups.len() > 1, "{p} stages: {groups:?}");
            let flat: Vec<usize> = groups.iter().flatten().copied().collect();
            assert_eq!(flat, (0..12).rev().collect::<Vec<_>>(), "{groups:?}");
            let span = |groups: &[Vec<usize>]| {
                makespan(
                    &groups
                        .iter()
                        .map(|g| {
                            let births: Vec<(usize, Vec<usize>)> =
                                g.iter().map(|&i| (i, vec![i])).collect();
                            let w = s.work(&base, &births);
                            cuts.windows(2)
                                .map(|k| w[k[0]..k[1]].iter().sum())
                                .collect()
                        })
                        .collect::<Vec<Vec<u64>>>(),
                )
            };
            let one = vec![flat.clone()];
            assert!(span(&groups) < span(&one));
            // No other number of groups has a shorter schedule.
            for m in 1..=12 {
                let fixed = s.clone().with_micro_batches(m);
                let other = fixed.micro_batches(&base, &cands, &cuts);
                assert_eq!(other.len(), m);
                assert!(span(&groups) <= span(&other), "{m}: {other:?}");
            }
        }
        // Fixed: never more groups than candidates, never an empty one.
        let s = Stages::new(2, 2, 2, &c).unwrap().with_micro_batches(5);
        let few = vec![vec![3], vec![7]];
        let cuts = s.boundaries(&Plan::dense(), &few);
        assert_eq!(
            s.micro_batches(&Plan::dense(), &few, &cuts),
            vec![vec![1], vec![0]]
        );
        assert!(s.micro_batches(&Plan::dense(), &[], &cuts).is_empty());
    }

    #[test]
    fn the_rule_fills_real_pipelines_with_several_micro_batches() {
        // The first step (every sublayer a candidate) of SmolLM2-135M on 2 stages, the
        // Llama-3-8B shape on 3 and Llama-3-70B on 8 (`docs/SCALING.md` quotes these counts);
        // a pass of few candidates never has more groups than candidates.
        for (layers, d, ffn, heads, kv, vocab, p, want) in [
            (30, 576, 1536, 9, 3, 49_152, 2, 6),
            (32, 4096, 14_336, 32, 8, 128_256, 3, 8),
            (80, 8192, 28_672, 64, 8, 128_256, 8, 15),
        ] {
            let json = format!(
                r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "vocab_size": {vocab}, "hidden_size": {d}, "intermediate_size": {ffn},
                "num_hidden_layers": {layers}, "num_attention_heads": {heads},
                "num_key_value_heads": {kv}, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "max_position_embeddings": 64, "tie_word_embeddings": false,
                "hidden_act": "silu"}}"#
            );
            let c = finercut_model::format::ModelConfig::from_json_str(&json, "shape").unwrap();
            let s = Stages::new(p, 2, p, &c).unwrap();
            let base = Plan::dense();
            let cands: Vec<Vec<usize>> = (0..2 * layers).map(|i| vec![i]).collect();
            let groups = s.micro_batches(&base, &cands, &s.boundaries(&base, &cands));
            assert_eq!(groups.len(), want, "{layers} blocks on {p} stages");
            for few in 1..=3 {
                let some = &cands[..few];
                let g = s.micro_batches(&base, some, &s.boundaries(&base, some));
                assert!((1..=few).contains(&g.len()));
            }
        }
    }
}
