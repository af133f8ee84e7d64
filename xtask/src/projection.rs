//! `cargo xtask scaling-projection`: the projected time of one greedy step of Llama-3-70B at the
//! paper's calibration (10 × 256 tokens) on GPU and CPU clusters, computed from the measurements
//! written in `docs/PERFORMANCE.md` and `docs/SCALING.md` and from stated assumptions.
//!
//! The output is the Markdown of the section "Projection: Llama-3-70B" of `docs/SCALING.md`;
//! a test checks that the document holds exactly what this prints.

use finercut_dist::deal;

/// The shapes the projection needs of a Llama-3 model.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Transformer blocks (`2 × blocks` sublayers).
    pub blocks: usize,
    /// Hidden size.
    pub d: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// FFN intermediate size.
    pub ffn: usize,
    /// Vocabulary.
    pub vocab: usize,
}

/// Llama-3-8B (the shape `make-tiny --like llama-3-8b` writes).
pub const LLAMA3_8B: Shape = Shape {
    blocks: 32,
    d: 4096,
    heads: 32,
    kv_heads: 8,
    head_dim: 128,
    ffn: 14_336,
    vocab: 128_256,
};

/// Llama-3-70B.
pub const LLAMA3_70B: Shape = Shape {
    blocks: 80,
    d: 8192,
    heads: 64,
    kv_heads: 8,
    head_dim: 128,
    ffn: 28_672,
    vocab: 128_256,
};

impl Shape {
    /// Matrix parameters of one block (attention and FFN).
    pub fn block_params(&self) -> f64 {
        let (d, q, kv) = (
            self.d as f64,
            (self.heads * self.head_dim) as f64,
            (self.kv_heads * self.head_dim) as f64,
        );
        2.0 * d * q + 2.0 * d * kv + 3.0 * d * self.ffn as f64
    }

    /// FLOPs of one forward-equivalent (every block once) over `rows` token rows.
    pub fn forward_flops(&self, rows: usize) -> f64 {
        2.0 * rows as f64 * self.blocks as f64 * self.block_params()
    }

    /// Bytes of every weight (blocks, embeddings and LM head) in bf16.
    pub fn bf16_bytes(&self) -> f64 {
        2.0 * (self.blocks as f64 * self.block_params() + 2.0 * (self.vocab * self.d) as f64)
    }

    /// FLOPs of one LM head over `rows` rows.
    pub fn head_flops(&self, rows: usize) -> f64 {
        2.0 * rows as f64 * self.vocab as f64 * self.d as f64
    }
}

/// Measured inputs, with the document that records them.
pub mod measured {
    /// `docs/PERFORMANCE.md`, Llama-3-8B-shaped bf16 model: one greedy step (elimination) at
    /// 2 × 128 tokens on 2 cores took 315 s for 17.7 forward-equivalents.
    pub const STEP_8B_SECONDS: f64 = 315.0;
    /// Forward-equivalents of that step.
    pub const STEP_8B_FORWARDS: f64 = 17.7;
    /// Token rows of that step (2 × 128).
    pub const STEP_8B_ROWS: usize = 256;
    /// Cores of that machine.
    pub const STEP_8B_CORES: usize = 2;
    /// `docs/SCALING.md`, the same search as 1 process × 2 threads (s).
    pub const ONE_PROCESS_SECONDS: f64 = 76.7;
    /// … and as 2 ranks × 1 thread (s).
    pub const TWO_RANKS_SECONDS: f64 = 82.9;
}

/// Assumptions about the clusters, stated in the output.
#[derive(Clone, Copy, Debug)]
pub struct Assumptions {
    /// Calibration rows (10 sequences × 256 tokens).
    pub rows: usize,
    /// Cores per CPU node.
    pub cpu_cores: usize,
    /// CPU nodes.
    pub cpu_nodes: usize,
    /// GPU dense bf16 peak (FLOP/s).
    pub gpu_peak: f64,
    /// Fraction of the peak reached.
    pub gpu_utilisation: f64,
    /// GPUs per node (pipeline stages).
    pub gpus_per_node: usize,
    /// GPU nodes.
    pub gpu_nodes: usize,
    /// Micro-batches (groups of candidates) a pass sends through the pipeline: what the built rule
    /// (`finercut_search::stages::Stages::micro_batches`) chooses for the first step of Llama-3-70B
    /// on 8 stages, which a test in `crates/search/src/stages.rs` checks.
    pub pipeline_groups: usize,
    /// Bandwidth between the cards of a node (bytes/s per direction).
    pub nvlink: f64,
    /// Bandwidth between nodes (bytes/s).
    pub network: f64,
}

/// The assumptions of the table in `docs/SCALING.md`.
pub const ASSUMED: Assumptions = Assumptions {
    rows: 10 * 256,
    cpu_cores: 64,
    cpu_nodes: 16,
    gpu_peak: 989e12,
    gpu_utilisation: 0.40,
    gpus_per_node: 8,
    gpu_nodes: 4,
    pipeline_groups: 15,
    nvlink: 450e9,
    network: 12.5e9,
};

/// One row of the projection.
#[derive(Clone, Debug)]
pub struct Row {
    /// The setting.
    pub setting: String,
    /// Forward-equivalents the busiest rank computes (its candidates and the base stream).
    pub forwards: f64,
    /// Compute seconds of the busiest rank (with the measured distribution overhead).
    pub compute: f64,
    /// Seconds of communication (pipeline hand-overs and the gather of per-row values),
    /// counted as not overlapped with compute.
    pub communication: f64,
}

impl Row {
    /// Projected seconds of the step.
    pub fn total(&self) -> f64 {
        self.compute + self.communication
    }
}

/// The first step's candidates (every sublayer, candidate `c` costing `2L − c` sublayers),
/// dealt over `ranks` as the search deals them; returns each rank's candidates.
fn shares(shape: &Shape, ranks: usize) -> Vec<Vec<usize>> {
    let n = 2 * shape.blocks;
    let costs: Vec<usize> = (0..n).map(|c| n - c).collect();
    let owner = deal(&costs, ranks);
    let mut out = vec![Vec::new(); ranks.max(1)];
    for (c, &r) in owner.iter().enumerate() {
        out[r].push(c);
    }
    out
}

/// Forward-equivalents of a rank holding `candidates`: the base stream and, per candidate,
/// the sublayers after its birth.
fn forwards_of(shape: &Shape, candidates: &[usize]) -> f64 {
    let n = 2 * shape.blocks;
    1.0 + candidates.iter().map(|&c| (n - c) as f64).sum::<f64>() / n as f64
}

/// FLOPs of a rank holding `candidates`: its forward-equivalents and one LM head per stream.
fn flops_of(shape: &Shape, rows: usize, candidates: &[usize]) -> f64 {
    forwards_of(shape, candidates) * shape.forward_flops(rows)
        + (candidates.len() + 1) as f64 * shape.head_flops(rows)
}

/// The measured cost of distribution: 2 ranks against 1 process on the same search.
pub fn distribution_overhead() -> f64 {
    measured::TWO_RANKS_SECONDS / measured::ONE_PROCESS_SECONDS - 1.0
}

/// FLOP/s of one CPU core, from the 8B step (its LM heads not counted, so an underestimate).
pub fn cpu_core_rate() -> f64 {
    measured::STEP_8B_FORWARDS * LLAMA3_8B.forward_flops(measured::STEP_8B_ROWS)
        / measured::STEP_8B_SECONDS
        / measured::STEP_8B_CORES as f64
}

/// Seconds to all-gather the per-row values (one `f64` per row and candidate) between `ranks`.
fn gather_seconds(shape: &Shape, a: &Assumptions, ranks: usize) -> f64 {
    if ranks <= 1 {
        return 0.0;
    }
    let bytes = (a.rows * 2 * shape.blocks * 8) as f64;
    bytes / a.network
}

/// Bytes handed from stage to stage in a `stages`-stage pipeline balanced by live streams
/// (boundaries at `2L·sqrt(k/P)`), for a rank holding `candidates`: at a boundary at sublayer `s`
/// the base stream and every candidate born before `s` cross, `rows × d` f32 each.
fn handover_bytes(shape: &Shape, rows: usize, stages: usize, candidates: &[usize]) -> f64 {
    let n = (2 * shape.blocks) as f64;
    (1..stages)
        .map(|k| {
            let s = (n * (k as f64 / stages as f64).sqrt()).round() as usize;
            let streams = 1 + candidates.iter().filter(|&&c| c < s).count();
            (streams * rows * shape.d * 4) as f64
        })
        .sum()
}

/// The CPU row: `nodes` nodes of `a.cpu_cores` cores, one rank each holding the whole model.
fn cpu_row(shape: &Shape, a: &Assumptions, nodes: usize) -> Row {
    let share = shares(shape, nodes);
    let busiest = share
        .iter()
        .max_by(|x, y| flops_of(shape, a.rows, x).total_cmp(&flops_of(shape, a.rows, y)))
        .cloned()
        .unwrap_or_default();
    let overhead = if nodes > 1 {
        1.0 + distribution_overhead()
    } else {
        1.0
    };
    let compute = flops_of(shape, a.rows, &busiest) / (a.cpu_cores as f64 * cpu_core_rate());
    Row {
        setting: format!(
            "{nodes} CPU node{} × {} cores",
            if nodes == 1 { "" } else { "s" },
            a.cpu_cores
        ),
        forwards: forwards_of(shape, &busiest),
        compute: compute * overhead,
        communication: gather_seconds(shape, a, nodes),
    }
}

/// The GPU row: `nodes` nodes, candidates across nodes, an `a.gpus_per_node`-stage pipeline
/// within each.
fn gpu_row(shape: &Shape, a: &Assumptions, nodes: usize) -> Row {
    let share = shares(shape, nodes);
    let busiest = share
        .iter()
        .max_by(|x, y| flops_of(shape, a.rows, x).total_cmp(&flops_of(shape, a.rows, y)))
        .cloned()
        .unwrap_or_default();
    let p = a.gpus_per_node;
    let fill = a.pipeline_groups as f64 / (a.pipeline_groups + p - 1) as f64;
    let rate = p as f64 * a.gpu_peak * a.gpu_utilisation * fill;
    let overhead = if nodes > 1 {
        1.0 + distribution_overhead()
    } else {
        1.0
    };
    let compute = flops_of(shape, a.rows, &busiest) / rate * overhead;
    let handover = handover_bytes(shape, a.rows, p, &busiest) / a.nvlink;
    Row {
        setting: format!(
            "{nodes} node{} × {p} H100, {p}-stage pipeline{}",
            if nodes == 1 { "" } else { "s" },
            if nodes == 1 {
                ""
            } else {
                ", candidates across nodes"
            }
        ),
        forwards: forwards_of(shape, &busiest),
        compute,
        communication: handover + gather_seconds(shape, a, nodes),
    }
}

/// The rows of the projection: one GPU node and `a.gpu_nodes`, one CPU node and `a.cpu_nodes`.
pub fn rows(a: &Assumptions) -> Vec<Row> {
    let s = &LLAMA3_70B;
    vec![
        gpu_row(s, a, 1),
        gpu_row(s, a, a.gpu_nodes),
        cpu_row(s, a, 1),
        cpu_row(s, a, a.cpu_nodes),
    ]
}

/// Seconds for people: one decimal below 100 s, whole seconds above, minutes from 10 minutes.
fn seconds(s: f64) -> String {
    if s < 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 100.0 {
        format!("{s:.1} s")
    } else if s < 600.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.0} s ({:.0} min)", s / 60.0)
    }
}

/// The Markdown of the section, as `docs/SCALING.md` holds it (one sentence per line).
pub fn markdown(a: &Assumptions) -> String {
    let s = &LLAMA3_70B;
    let mut out = String::new();
    out.push_str(&format!(
        "Inputs measured on the development machine: a greedy step of the Llama-3-8B-shaped model \
         at {} rows on {} cores took {} s for {} forward-equivalents (`docs/PERFORMANCE.md`), \
         {:.0} GFLOP/s per core counting its block matrices only; 2 ranks took {:.1} % longer \
         than 1 process on the same search (above).\n",
        measured::STEP_8B_ROWS,
        measured::STEP_8B_CORES,
        measured::STEP_8B_SECONDS,
        measured::STEP_8B_FORWARDS,
        cpu_core_rate() / 1e9,
        100.0 * distribution_overhead()
    ));
    out.push_str(&format!(
        "The step projected is the first exhaustive step of Llama-3-70B ({} candidates, {:.1} \
         forward-equivalents with the base stream, {:.1} PFLOP with one LM head per stream) at \
         {} rows; later steps have fewer candidates, and elimination scored the 8B step with \
         {:.0} % of the exhaustive step's forward-equivalents.\n",
        2 * s.blocks,
        forwards_of(s, &(0..2 * s.blocks).collect::<Vec<_>>()),
        flops_of(s, a.rows, &(0..2 * s.blocks).collect::<Vec<_>>()) / 1e15,
        a.rows,
        100.0 * measured::STEP_8B_FORWARDS
            / forwards_of(&LLAMA3_8B, &(0..2 * LLAMA3_8B.blocks).collect::<Vec<_>>())
    ));
    out.push_str(&format!(
        "Assumed: an H100 reaches {:.0} % of its {:.0} TFLOP/s bf16 peak, a pipeline of {} \
         stages overlaps the {} micro-batches its rule chooses for this step on one node (taken \
         for the 4-node row too) with an idle fraction of (P − 1)/(G + P − 1), as if they were \
         equal, hand-overs \
         run at {:.0} GB/s (NVLink) and the per-row values between nodes at {:.1} GB/s; a CPU \
         node has {} cores as fast as these and holds the whole model ({:.0} GB in bf16); the \
         distribution overhead measured for 2 ranks holds for more; communication is counted as \
         not overlapped.\n\n",
        100.0 * a.gpu_utilisation,
        a.gpu_peak / 1e12,
        a.gpus_per_node,
        a.pipeline_groups,
        a.nvlink / 1e9,
        a.network / 1e9,
        a.cpu_cores,
        s.bf16_bytes() / 1e9
    ));
    out.push_str(
        "| setting | forward-equivalents on the busiest rank | compute | communication | step |\n",
    );
    out.push_str("|---|---|---|---|---|\n");
    for r in rows(a) {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} |\n",
            r.setting,
            r.forwards,
            seconds(r.compute),
            seconds(r.communication),
            seconds(r.total())
        ));
    }
    out
}

/// Prints the section.
pub fn print() {
    print!("{}", markdown(&ASSUMED));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Where the section sits in `docs/SCALING.md`.
    const BEGIN: &str = "<!-- scaling-projection: begin (cargo xtask scaling-projection) -->\n";
    /// … and where it ends.
    const END: &str = "<!-- scaling-projection: end -->";

    #[test]
    fn shapes_give_the_known_parameter_counts() {
        // Block matrices: 8B 6.98 B, 70B 68.5 B.
        let p8 = LLAMA3_8B.block_params() * 32.0;
        let p70 = LLAMA3_70B.block_params() * 80.0;
        assert!((p8 / 1e9 - 6.98).abs() < 0.01, "{p8}");
        assert!((p70 / 1e9 - 68.5).abs() < 0.1, "{p70}");
    }

    #[test]
    fn the_first_step_is_half_a_forward_per_candidate() {
        let all: Vec<usize> = (0..160).collect();
        assert!((forwards_of(&LLAMA3_70B, &all) - 81.5).abs() < 1e-9);
        // Dealt over 4 ranks, the shares cover every candidate once and the busiest holds
        // about a quarter of the work.
        let share = shares(&LLAMA3_70B, 4);
        assert_eq!(share.iter().map(Vec::len).sum::<usize>(), 160);
        let max = share
            .iter()
            .map(|c| forwards_of(&LLAMA3_70B, c) - 1.0)
            .fold(0.0, f64::max);
        assert!((max - 80.5 / 4.0).abs() < 1.0, "{max}");
    }

    #[test]
    fn more_ranks_are_faster_and_gpus_faster_than_cpus() {
        let r = rows(&ASSUMED);
        assert!(r[1].total() < r[0].total());
        assert!(r[3].total() < r[2].total());
        assert!(r[0].total() < r[2].total());
    }

    #[test]
    fn scaling_md_holds_the_computed_projection() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SCALING.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find(BEGIN).unwrap() + BEGIN.len();
        let len = doc[start..].find(END).unwrap();
        assert_eq!(
            &doc[start..start + len],
            markdown(&ASSUMED),
            "docs/SCALING.md differs from `cargo xtask scaling-projection`: paste its output"
        );
    }
}
