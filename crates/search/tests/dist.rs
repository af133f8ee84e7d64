//! The search across ranks, with the in-process group of ranks (`finercut_dist::Local`, one thread
//! per rank): for 1 to 4 ranks, every rank's result equals the one-process result bit for bit
//! (removal order, scores, runners-up, bounds, stop rows, work counted), with elimination and
//! exhaustively, for every greedy method; checkpoints resume with another number of ranks; a
//! rank that fails ends every other rank's search with its error; ranks that disagree on what
//! they run refuse to start. Pipelines of 2 and 3 stages (every rank holding only its window of
//! sublayers, a boundary inside a block) and 2 replicas of 2 stages give the one-process result
//! bit for bit too.

use finercut_dist::{Local, Transport};
use finercut_metrics::Metric;
use finercut_model::Model;
use finercut_search::distributed::{check_same_run, RunIdentity};
use finercut_search::model_scorer::StreamingScorer;
use finercut_search::{run, Error, Inputs, Level, Method, SearchResult, Settings, Stop};

use crate::model::{
    greedy_configurations, prov, tiny_config_for_stages, tiny_model, tiny_model_part, tokens,
    BLOCKS,
};
use finercut_search::stages::Stages;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

/// The result without wall times, which differ between runs.
fn timeless(r: &SearchResult) -> SearchResult {
    let mut r = r.clone();
    r.preparation.wall_s = 0.0;
    r.steps.iter_mut().for_each(|s| s.wall_s = 0.0);
    r
}

fn one_process(model: &Model, calib: &[Vec<u32>], s: &Settings) -> SearchResult {
    let metric = s.metric.unwrap_or(Metric::Js);
    let mut scorer = StreamingScorer::new(model, calib.to_vec(), metric)
        .unwrap()
        .with_group_rows(1);
    let mut r = SearchResult::new(s.clone(), prov(), BLOCKS).unwrap();
    r.preparation = scorer.preparation().clone();
    run(&mut r, Inputs::Scorer(&mut scorer), None, &mut ()).unwrap();
    r
}

/// Runs `s` on `ranks` ranks, one thread each, rank 0 writing `checkpoint` (resumed from it when
/// it exists); returns every rank's outcome. A rank that fails aborts the group, as the
/// command line does.
fn on_ranks(
    model: &Model,
    calib: &[Vec<u32>],
    s: &Settings,
    ranks: usize,
    checkpoint: Option<&std::path::Path>,
    fail_rank: Option<usize>,
) -> Vec<finercut_search::Result<SearchResult>> {
    let group = Local::group(ranks);
    std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .iter()
            .map(|t| {
                scope.spawn(move || {
                    let out = rank_run(model, calib, s, t, checkpoint, fail_rank);
                    if let Err(e) = &out {
                        t.abort(&e.to_string());
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn rank_run(
    model: &Model,
    calib: &[Vec<u32>],
    s: &Settings,
    t: &Local,
    checkpoint: Option<&std::path::Path>,
    fail_rank: Option<usize>,
) -> finercut_search::Result<SearchResult> {
    if fail_rank == Some(t.rank()) {
        return Err(Error::Scorer {
            message: "out of memory".into(),
        });
    }
    let metric = s.metric.unwrap_or(Metric::Js);
    let mut scorer = StreamingScorer::new(model, calib.to_vec(), metric)?
        .with_group_rows(1)
        .with_transport(t);
    let mut r = match checkpoint.filter(|p| p.exists()) {
        Some(p) => SearchResult::resume(p, s, &prov(), BLOCKS)?,
        None => {
            let mut r = SearchResult::new(s.clone(), prov(), BLOCKS)?;
            r.preparation = scorer.preparation().clone();
            r
        }
    };
    let ckpt = checkpoint.filter(|_| t.rank() == 0);
    run(&mut r, Inputs::Scorer(&mut scorer), ckpt, &mut ())?;
    Ok(r)
}

#[test]
fn every_rank_count_gives_the_one_process_result_bit_for_bit() {
    let model = tiny_model(31);
    let calib = tokens(17, 4, 5);
    let mut configurations: Vec<(Method, Metric, Level)> = Vec::new();
    for metric in [Metric::Js, Metric::Ppl] {
        for level in [Level::Sublayer, Level::Block] {
            configurations.push((Method::Finercut, metric, level));
        }
    }
    configurations.push((Method::Sleb, Metric::Ppl, Level::Block));
    configurations.push((Method::Blockpruner, Metric::Ppl, Level::Sublayer));
    for (method, metric, level) in configurations {
        for exhaustive in [false, true] {
            let mut s = Settings::new(method);
            s.metric = Some(metric);
            s.level = level;
            s.stop = Stop::End;
            s.exhaustive = exhaustive;
            let want = timeless(&one_process(&model, &calib, &s));
            assert!(!want.steps.is_empty());
            for ranks in 1..=4 {
                for (rank, got) in on_ranks(&model, &calib, &s, ranks, None, None)
                    .into_iter()
                    .enumerate()
                {
                    let got = timeless(&got.unwrap());
                    assert_eq!(
                        got, want,
                        "{method} {metric} {level} exhaustive={exhaustive}: rank {rank} of {ranks}"
                    );
                }
            }
        }
    }
}

#[test]
fn elimination_across_ranks_for_every_greedy_configuration() {
    // Every metric and level, on 3 ranks (candidates unevenly dealt).
    let model = tiny_model(12);
    let calib = tokens(3, 3, 6);
    for (method, metric, level) in greedy_configurations() {
        let mut s = Settings::new(method);
        s.metric = Some(metric);
        s.level = level;
        s.stop = Stop::End;
        let want = timeless(&one_process(&model, &calib, &s));
        let got = on_ranks(&model, &calib, &s, 3, None, None);
        for (rank, r) in got.into_iter().enumerate() {
            assert_eq!(
                timeless(&r.unwrap()),
                want,
                "{method} {metric} {level} rank {rank}"
            );
        }
    }
}

#[test]
fn a_checkpoint_resumes_with_another_number_of_ranks() {
    let model = tiny_model(5);
    let calib = tokens(6, 4, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let mut s = Settings::new(Method::Finercut);
    s.stop = Stop::End;
    let want = timeless(&one_process(&model, &calib, &s));

    let mut part = s.clone();
    part.stop = Stop::Ratio(0.4);
    for r in on_ranks(&model, &calib, &part, 3, Some(&path), None) {
        assert_eq!(r.unwrap().steps.len(), 3);
    }
    assert_eq!(SearchResult::load(&path).unwrap().steps.len(), 3);
    for r in on_ranks(&model, &calib, &s, 2, Some(&path), None) {
        assert_eq!(timeless(&r.unwrap()), want);
    }
    // Rank 0 wrote the whole run, atomically.
    assert_eq!(timeless(&SearchResult::load(&path).unwrap()), want);
    assert!(!dir.path().join("run.json.tmp").exists());
}

#[test]
fn a_failing_rank_ends_every_rank_with_its_error() {
    let model = tiny_model(5);
    let calib = tokens(6, 3, 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let mut s = Settings::new(Method::Finercut);
    s.stop = Stop::End;
    for fail in [0, 2] {
        let out = on_ranks(&model, &calib, &s, 3, Some(&path), Some(fail));
        for (rank, r) in out.iter().enumerate() {
            let err = r.as_ref().unwrap_err().to_string();
            if rank == fail {
                assert!(err.contains("out of memory"), "{err}");
            } else {
                assert!(
                    err.contains(&format!("rank {fail} aborted")) && err.contains("out of memory"),
                    "rank {rank}: {err}"
                );
            }
        }
        // No step was completed, so nothing was written.
        assert!(!path.exists());
    }
}

#[test]
fn ranks_that_run_different_searches_refuse_to_start() {
    let group = Local::group(3);
    let base = Settings::new(Method::Finercut);
    let mut other = base.clone();
    other.level = Level::Block;
    let p = prov();
    let mut q = prov();
    q.data_sha256 = "other".into();
    let cases: [(&Settings, &finercut_search::Provenance, &str); 3] = [
        (&base, &p, "calibration SHA-256"),
        (&other, &p, "settings"),
        (&base, &q, "calibration SHA-256"),
    ];
    let (base_ref, p_ref) = (&base, &p);
    for (k, (settings_2, prov_2, what)) in cases.into_iter().enumerate() {
        let errs: Vec<String> = std::thread::scope(|scope| {
            let hs: Vec<_> = group
                .iter()
                .map(|t| {
                    scope.spawn(move || {
                        let (settings, provenance, data) = if t.rank() == 2 {
                            (settings_2, prov_2, "calib-2.txt")
                        } else {
                            (base_ref, p_ref, "calib.txt")
                        };
                        let id = RunIdentity {
                            provenance,
                            settings,
                            resumed_steps: 0,
                            model_file: "model",
                            data_file: data,
                            out_file: "run.json",
                        };
                        check_same_run(t, &id).map_or_else(|e| e.to_string(), |()| String::new())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        if k == 0 {
            // Only the file name differs: the same run.
            assert!(errs.iter().all(String::is_empty), "{errs:?}");
            continue;
        }
        for e in &errs {
            assert!(e.contains("rank 2") && e.contains(what), "{e}");
        }
        if what == "calibration SHA-256" {
            assert!(errs[0].contains("calib-2.txt"), "{}", errs[0]);
        }
    }
}

/// Runs `s` on `ranks` ranks forming pipelines of `stages` stages (margin `margin`, `micro`
/// micro-batches per pass or the rule's), each rank holding only its window of the model; returns every rank's outcome and the boundaries of the
/// first step.
fn on_stages(
    seed: u64,
    calib: &[Vec<u32>],
    s: &Settings,
    ranks: usize,
    stages: usize,
    margin: usize,
    micro: Option<usize>,
) -> (Vec<finercut_search::Result<SearchResult>>, Vec<usize>) {
    let mut layout = Stages::new(stages, margin, ranks, &tiny_config_for_stages()).unwrap();
    if let Some(m) = micro {
        layout = layout.with_micro_batches(m);
    }
    let parts: Vec<Model> = (0..ranks)
        .map(|r| tiny_model_part(seed, Some(layout.window(layout.place(r).1))))
        .collect();
    (
        on_parts(&parts, &layout, calib, s),
        layout.first_boundaries().to_vec(),
    )
}

/// Runs `s` on one rank per model of `parts`, laid out as `layout` says.
fn on_parts(
    parts: &[Model],
    layout: &Stages,
    calib: &[Vec<u32>],
    s: &Settings,
) -> Vec<finercut_search::Result<SearchResult>> {
    on_parts_with(&Local::group(parts.len()), parts, layout, calib, s)
}

/// [`on_parts`] on the ranks of `group`.
fn on_parts_with<T: Transport + Sync>(
    group: &[T],
    parts: &[Model],
    layout: &Stages,
    calib: &[Vec<u32>],
    s: &Settings,
) -> Vec<finercut_search::Result<SearchResult>> {
    let layout = &layout;
    let out = std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .iter()
            .zip(parts)
            .map(|(t, model)| {
                scope.spawn(move || {
                    let out = (|| -> finercut_search::Result<SearchResult> {
                        let metric = s.metric.unwrap_or(Metric::Js);
                        let mut scorer =
                            StreamingScorer::staged(model, calib.to_vec(), metric, t, layout)?
                                .with_group_rows(1);
                        let mut r = SearchResult::new(s.clone(), prov(), BLOCKS)?;
                        r.preparation = scorer.preparation().clone();
                        run(&mut r, Inputs::Scorer(&mut scorer), None, &mut ())?;
                        Ok(r)
                    })();
                    if let Err(e) = &out {
                        t.abort(&e.to_string());
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    out
}

#[test]
fn pipelines_of_stages_give_the_one_process_result_bit_for_bit() {
    let model = tiny_model(23);
    let calib = tokens(29, 3, 5);
    let mut configurations: Vec<(Metric, Level, bool)> = Vec::new();
    for metric in Metric::ALL {
        for level in [Level::Sublayer, Level::Block] {
            configurations.push((metric, level, false));
        }
    }
    for metric in [Metric::Js, Metric::Ppl] {
        configurations.push((metric, Level::Sublayer, true));
        configurations.push((metric, Level::Block, true));
    }
    // (ranks, stages, margin, micro-batches): 2 and 3 stages, 2 replicas of 2 stages; micro-batches
    // by the rule, 2, 3, or one candidate each.
    let layouts = [
        (2, 2, 2, None),
        (3, 3, 1, Some(3)),
        (4, 2, 0, Some(2)),
        (2, 2, 1, Some(usize::MAX)),
        (3, 3, 2, None),
    ];
    for (metric, level, exhaustive) in configurations {
        let mut s = Settings::new(Method::Finercut);
        s.metric = Some(metric);
        s.level = level;
        s.stop = Stop::End;
        s.exhaustive = exhaustive;
        let want = timeless(&one_process(&model, &calib, &s));
        for (ranks, stages, margin, micro) in layouts {
            let (got, first) = on_stages(23, &calib, &s, ranks, stages, margin, micro);
            // A boundary inside a block (an odd sublayer index) is among those tested.
            if stages == 3 {
                assert!(first[1..stages].iter().any(|b| b % 2 == 1), "{first:?}");
            }
            for (rank, r) in got.into_iter().enumerate() {
                assert_eq!(
                    timeless(&r.unwrap()),
                    want,
                    "{metric} {level} exhaustive={exhaustive}: rank {rank} of {ranks}, {stages} stages, {micro:?} micro-batches"
                );
            }
        }
    }
}

#[test]
fn a_model_of_parallel_blocks_is_cut_at_block_edges_and_gives_the_one_process_result() {
    // GPT-NeoX's tiny golden model: its attention runs with its FFN, so a stage holds whole blocks.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden/tiny/gpt_neox");
    let config = finercut_format::ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
    assert!(config.recipe().parallel_residual);
    let load = |part: Option<std::ops::Range<usize>>| {
        let store = finercut_format::SafetensorsStore::open(&dir).unwrap();
        let weights = config.family().weights(&config, Box::new(store));
        let options = finercut_model::LoadOptions {
            sublayers: part,
            ..finercut_model::LoadOptions::default()
        };
        Model::load_with_options(
            &config,
            weights.as_ref(),
            &finercut_tensor::Device::Cpu,
            &options,
        )
        .unwrap()
    };
    let model = load(None);
    let calib: Vec<Vec<u32>> = (0..3u32)
        .map(|i| (0..5).map(|t| (i * 37 + t * 11) % 256).collect())
        .collect();
    for (metric, level, exhaustive) in [
        (Metric::Js, Level::Sublayer, false),
        (Metric::Ppl, Level::Sublayer, true),
        (Metric::Js, Level::Block, false),
    ] {
        let mut s = Settings::new(Method::Finercut);
        s.metric = Some(metric);
        s.level = level;
        s.stop = Stop::End;
        s.exhaustive = exhaustive;
        let want = timeless(&one_process(&model, &calib, &s));
        // (ranks, stages, margin, micro-batches): an odd margin moves boundaries by whole blocks
        // too.
        for (ranks, stages, margin, micro) in
            [(2, 2, 1, None), (3, 3, 2, Some(3)), (4, 2, 0, Some(2))]
        {
            let mut layout = Stages::new(stages, margin, ranks, &config).unwrap();
            if let Some(m) = micro {
                layout = layout.with_micro_batches(m);
            }
            assert!(layout.first_boundaries().iter().all(|b| b % 2 == 0));
            let parts: Vec<Model> = (0..ranks)
                .map(|r| {
                    let w = layout.window(layout.place(r).1);
                    assert!(
                        w.start.is_multiple_of(2) && w.end.is_multiple_of(2),
                        "{w:?}"
                    );
                    load(Some(w))
                })
                .collect();
            for (rank, r) in on_parts(&parts, &layout, &calib, &s)
                .into_iter()
                .enumerate()
            {
                assert_eq!(
                    timeless(&r.unwrap()),
                    want,
                    "{metric} {level}: rank {rank} of {ranks}, {stages} stages"
                );
            }
        }
    }
    // More stages than blocks is refused, naming the setting.
    let e = Stages::new(5, 2, 5, &config).unwrap_err().to_string();
    assert!(
        e.contains("--stages") && e.contains("4 parallel blocks"),
        "{e}"
    );
}

#[test]
fn sleb_blockpruner_and_one_shot_finercut_run_on_stages() {
    let model = tiny_model(8);
    let calib = tokens(4, 2, 6);
    for (method, level, metric) in [
        (Method::Sleb, Level::Block, Metric::Ppl),
        (Method::Blockpruner, Level::Sublayer, Metric::Ppl),
        (Method::FinercutOneshot, Level::Sublayer, Metric::Js),
    ] {
        let mut s = Settings::new(method);
        s.metric = Some(metric);
        s.level = level;
        s.stop = Stop::End;
        let want = timeless(&one_process(&model, &calib, &s));
        let (got, _) = on_stages(8, &calib, &s, 2, 2, 2, Some(2));
        for r in got {
            assert_eq!(timeless(&r.unwrap()), want, "{method}");
        }
    }
}

/// What [`Synchronous`] ranks share: messages sent and received per `(from, to)`, and every
/// receipt in the order it happened.
#[derive(Default)]
struct SyncState {
    sent: BTreeMap<(usize, usize), u64>,
    received: BTreeMap<(usize, usize), u64>,
    /// `(from, to, message index on that link, collectives the receiver had completed)`.
    receipts: Vec<(usize, usize, u64, u64)>,
    aborted: bool,
    /// `(rank, message index)`: that receipt fails instead.
    fail: Option<(usize, u64)>,
}

/// A rank of an in-process group whose sends return only once the receiver has taken the
/// message (MPI's synchronous send): the order of receipts it records is then fixed by the
/// code's sends and receives, not by thread timing.
struct Synchronous {
    inner: Local,
    shared: Arc<(Mutex<SyncState>, Condvar)>,
    collectives: Mutex<u64>,
}

fn synchronous_group(size: usize, fail: Option<(usize, u64)>) -> Vec<Synchronous> {
    let shared = Arc::new((
        Mutex::new(SyncState {
            fail,
            ..SyncState::default()
        }),
        Condvar::new(),
    ));
    Local::group(size)
        .into_iter()
        .map(|inner| Synchronous {
            inner,
            shared: shared.clone(),
            collectives: Mutex::new(0),
        })
        .collect()
}

impl Transport for Synchronous {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> finercut_dist::Result<Vec<Vec<u8>>> {
        let all = self.inner.all_gather_bytes(mine)?;
        *self.collectives.lock().unwrap() += 1;
        Ok(all)
    }
    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> finercut_dist::Result<Vec<u8>> {
        let b = self.inner.broadcast_bytes(root, data)?;
        *self.collectives.lock().unwrap() += 1;
        Ok(b)
    }
    fn local_rank(&self) -> finercut_dist::Result<Option<usize>> {
        self.inner.local_rank()
    }
    fn abort(&self, message: &str) {
        let (state, changed) = &*self.shared;
        state.lock().unwrap().aborted = true;
        changed.notify_all();
        self.inner.abort(message);
    }
    fn send_bytes(&self, to: usize, data: &[u8]) -> finercut_dist::Result<()> {
        self.inner.send_bytes(to, data)?;
        let (state, changed) = &*self.shared;
        let mut st = state.lock().unwrap();
        let link = (self.rank(), to);
        let index = *st.sent.entry(link).or_default();
        st.sent.insert(link, index + 1);
        // After an abort the next call on `inner` fails with the aborting rank's error.
        while !st.aborted && st.received.get(&link).copied().unwrap_or(0) <= index {
            st = changed.wait(st).unwrap();
        }
        Ok(())
    }
    fn recv_bytes(&self, from: usize) -> finercut_dist::Result<Vec<u8>> {
        let m = self.inner.recv_bytes(from)?;
        let epoch = *self.collectives.lock().unwrap();
        let (state, changed) = &*self.shared;
        let mut st = state.lock().unwrap();
        let link = (from, self.rank());
        let index = st.received.get(&link).copied().unwrap_or(0);
        if st.fail == Some((self.rank(), index)) {
            return Err(finercut_dist::Error::Setup(format!(
                "the link from rank {from} broke"
            )));
        }
        st.received.insert(link, index + 1);
        st.receipts.push((from, self.rank(), index, epoch));
        changed.notify_all();
        Ok(m)
    }
}

#[test]
fn a_later_stage_runs_a_micro_batch_while_the_first_stage_runs_the_next() {
    let model = tiny_model(23);
    let calib = tokens(29, 3, 5);
    let mut s = Settings::new(Method::Finercut);
    s.stop = Stop::End;
    s.exhaustive = true;
    let want = timeless(&one_process(&model, &calib, &s));
    let layout = Stages::new(3, 1, 3, &tiny_config_for_stages())
        .unwrap()
        .with_micro_batches(3);
    let parts: Vec<Model> = (0..3)
        .map(|r| tiny_model_part(23, Some(layout.window(layout.place(r).1))))
        .collect();
    let group = synchronous_group(3, None);
    for r in on_parts_with(&group, &parts, &layout, &calib, &s) {
        assert_eq!(timeless(&r.unwrap()), want);
    }
    // Between two collectives (one scoring pass), the last stage receives a micro-batch from
    // stage 1 before stage 1 receives the next one from stage 0: stage 1 ran the first while stage
    // 0 ran the second. A pipeline that passes all streams at once sends one message per pass.
    let receipts = group[0].shared.0.lock().unwrap().receipts.clone();
    let overlapped = receipts
        .iter()
        .enumerate()
        .any(|(i, &(from, to, _, epoch))| {
            (from, to) == (1, 2)
                && receipts[i..]
                    .iter()
                    .any(|&(f, t, _, e)| (f, t, e) == (0, 1, epoch))
        });
    assert!(overlapped, "{receipts:?}");
    // Every micro-batch of a pass crossed each boundary as a message of its own.
    let per_pass = |link: (usize, usize)| {
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for &(f, t, _, e) in &receipts {
            if (f, t) == link {
                *counts.entry(e).or_default() += 1;
            }
        }
        counts.values().copied().max().unwrap_or(0)
    };
    assert_eq!((per_pass((0, 1)), per_pass((1, 2))), (3, 3), "{receipts:?}");
}

#[test]
fn a_stage_failing_mid_pipeline_ends_every_rank_with_its_error() {
    let calib = tokens(29, 3, 5);
    let mut s = Settings::new(Method::Finercut);
    s.stop = Stop::End;
    let layout = Stages::new(3, 1, 3, &tiny_config_for_stages())
        .unwrap()
        .with_micro_batches(3);
    let parts: Vec<Model> = (0..3)
        .map(|r| tiny_model_part(23, Some(layout.window(layout.place(r).1))))
        .collect();
    // Rank 1 fails on its third message: the dense forward's, then the first scoring pass's
    // first micro-batch, then its second, while stage 0 waits to hand over the third and stage 2
    // waits for the second.
    let group = synchronous_group(3, Some((1, 2)));
    let out = on_parts_with(&group, &parts, &layout, &calib, &s);
    for (rank, r) in out.iter().enumerate() {
        let err = r.as_ref().unwrap_err().to_string();
        if rank == 1 {
            assert!(err.contains("the link from rank 0 broke"), "{err}");
        } else {
            assert!(
                err.contains("rank 1 aborted") && err.contains("the link from rank 0 broke"),
                "rank {rank}: {err}"
            );
        }
    }
}
