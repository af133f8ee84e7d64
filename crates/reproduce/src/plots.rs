//! The paper's figures, drawn from plain data: SVG through `plotters`, PNG through an external converter.
//!
//! Each figure function takes the path of the SVG to write and a plain-data struct (no other crate of the
//! workspace is involved, so the structs can also be filled from JSON files).
//! Next to the SVG it writes the numbers behind the picture, with the same stem: `<stem>.json` (the input
//! struct, pretty-printed) and `<stem>.csv` (one tidy row per plotted value).
//! It then tries to convert the SVG to `<stem>.png`: first with `rsvg-convert` (Debian `librsvg2-bin`), then
//! with ImageMagick's `convert`; if neither works the PNG is skipped and [`Png::Skipped`] says why.
//!
//! - [`figure3`]: perplexity (log scale) against removal ratio, one line per pruning method.
//! - [`figure4`]: which attention and FFN sublayers are removed at one removal ratio, one grid per model.
//! - [`figure1b`]: grouped bars of removed attention versus removed FFN sublayers.
//! - [`ablation`]: grouped bars comparing variants (granularity, metric) on one outcome.
//!
//! Design decision: text is written as SVG `<text>` elements and measured by plotters' built-in estimate
//! (no font files at build time, no system font packages needed to compile).
//! The SVG viewer or converter lays the text out with whatever sans-serif font it has; the layout keeps
//! generous room around text so that small differences between fonts do not make labels collide.

mod draw;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use finercut_pipeline::Context;

use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};

/// One point of a perplexity curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Removal ratio in percent (0 to 100).
    pub ratio_percent: f64,
    /// Perplexity at that ratio; non-finite values (a collapsed model) are kept in the data files but
    /// not plotted, and the figure says so in a note.
    pub perplexity: f64,
}

/// The perplexity curve of one pruning method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodCurve {
    /// Method name as shown in the legend, e.g. "FinerCut", "ShortGPT", "DeeperLayers".
    pub method: String,
    /// Points of the curve, in any order (they are sorted by ratio before drawing).
    pub points: Vec<CurvePoint>,
}

/// Data of Figure 3: perplexity against removal ratio for several methods on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure3Data {
    /// Model name, shown in the title, e.g. "SmolLM2-135M-Instruct".
    pub model: String,
    /// Evaluation set, shown in the title and the y-axis label, e.g. "WikiText-2".
    pub dataset: String,
    /// One curve per method; the first gets the first palette colour and a thicker line.
    pub methods: Vec<MethodCurve>,
}

/// The removed sublayers of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SublayerGrid {
    /// Model name, shown above the grid.
    pub model: String,
    /// Number of transformer blocks L (the grid has L columns).
    pub num_blocks: usize,
    /// Blocks whose attention sublayer is removed.
    pub removed_attn: Vec<usize>,
    /// Blocks whose FFN (MLP) sublayer is removed.
    pub removed_mlp: Vec<usize>,
}

impl SublayerGrid {
    /// Builds a grid from sublayer indices in the model crate's numbering: sublayer `2*b` is the attention
    /// of block `b` and `2*b + 1` its FFN.
    pub fn from_sublayer_indices(
        model: impl Into<String>,
        num_blocks: usize,
        removed: impl IntoIterator<Item = usize>,
    ) -> SublayerGrid {
        let (mut removed_attn, mut removed_mlp) = (Vec::new(), Vec::new());
        for i in removed {
            if i % 2 == 0 {
                removed_attn.push(i / 2);
            } else {
                removed_mlp.push(i / 2);
            }
        }
        SublayerGrid {
            model: model.into(),
            num_blocks,
            removed_attn,
            removed_mlp,
        }
    }

    /// Removed attention blocks, sorted and without duplicates.
    pub fn attn_set(&self) -> BTreeSet<usize> {
        self.removed_attn.iter().copied().collect()
    }

    /// Removed FFN blocks, sorted and without duplicates.
    pub fn mlp_set(&self) -> BTreeSet<usize> {
        self.removed_mlp.iter().copied().collect()
    }

    fn check(&self) -> Result<()> {
        if self.num_blocks == 0 {
            bail!("figure 4: model {:?} has num_blocks = 0", self.model);
        }
        for (kind, list) in [
            ("attention", &self.removed_attn),
            ("FFN", &self.removed_mlp),
        ] {
            if let Some(&b) = list.iter().find(|&&b| b >= self.num_blocks) {
                bail!(
                    "figure 4: model {:?}: removed {kind} block {b} is out of range (num_blocks = {})",
                    self.model,
                    self.num_blocks
                );
            }
        }
        Ok(())
    }
}

/// Data of Figure 4: the removed sublayers of one or more models at one removal ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure4Data {
    /// Pruning method, shown in the title, e.g. "FinerCut".
    pub method: String,
    /// Removal ratio in percent, shown in the title.
    pub ratio_percent: f64,
    /// One grid per model, drawn top to bottom.
    pub panels: Vec<SublayerGrid>,
}

/// Removed attention and FFN sublayer counts for one bar group of Figure 1b.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedCounts {
    /// Group label under the bars, e.g. a model name or "25%".
    pub label: String,
    /// Number of removed attention sublayers.
    pub attn: usize,
    /// Number of removed FFN sublayers.
    pub mlp: usize,
}

impl RemovedCounts {
    /// The counts of a sublayer grid (duplicates counted once).
    pub fn from_grid(label: impl Into<String>, grid: &SublayerGrid) -> RemovedCounts {
        RemovedCounts {
            label: label.into(),
            attn: grid.attn_set().len(),
            mlp: grid.mlp_set().len(),
        }
    }
}

/// Data of Figure 1b: removed attention versus FFN sublayers, per model or per removal ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure1bData {
    /// Figure title.
    pub title: String,
    /// Label of the group axis, e.g. "Model" or "Removal ratio".
    pub group_axis: String,
    /// One bar pair per group.
    pub groups: Vec<RemovedCounts>,
}

/// One variant of an ablation: one bar per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationVariant {
    /// Variant name for the legend, e.g. "Sublayer, JS" or "Block level".
    pub name: String,
    /// One value per group (same order as [`AblationData::groups`]); `None` where not measured.
    pub values: Vec<Option<f64>>,
}

/// Data of an ablation figure: grouped bars, groups on the x axis and one bar per variant in each group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationData {
    /// Figure title.
    pub title: String,
    /// Label of the group axis, e.g. "Removal ratio" or "Model".
    pub group_axis: String,
    /// Label of the value axis, e.g. "Average accuracy (%)" or "WikiText-2 perplexity".
    pub value_axis: String,
    /// Log-scale value axis (for perplexities); all values must then be positive.
    pub log_y: bool,
    /// Group labels along the x axis.
    pub groups: Vec<String>,
    /// Variants, one bar each per group.
    pub variants: Vec<AblationVariant>,
}

/// What happened to the PNG copy of a figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Png {
    /// The PNG was written by `converter` (`rsvg-convert` or `convert`).
    Written {
        /// Path of the PNG.
        path: PathBuf,
        /// The program that converted it.
        converter: String,
    },
    /// No PNG: no converter was found or every converter failed.
    Skipped {
        /// Why, naming the converters tried.
        reason: String,
    },
}

/// The files one figure function wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The SVG.
    pub svg: PathBuf,
    /// The input data as JSON.
    pub json: PathBuf,
    /// The plotted numbers as CSV.
    pub csv: PathBuf,
    /// The PNG copy, or why there is none.
    pub png: Png,
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (+ .json, .csv", self.svg.display())?;
        match &self.png {
            Png::Written { converter, .. } => write!(f, ", .png by {converter})"),
            Png::Skipped { reason } => write!(f, "; no PNG: {reason})"),
        }
    }
}

/// Figure 3: perplexity (log scale) against removal ratio, one line with markers per method.
pub fn figure3(path: &Path, data: &Figure3Data) -> Result<Rendered> {
    if data.methods.is_empty() {
        bail!("figure 3 ({}): no methods to plot", path.display());
    }
    let mut csv = String::from("model,dataset,method,ratio_percent,perplexity\n");
    for m in &data.methods {
        for p in &m.points {
            csv_row(
                &mut csv,
                &[
                    &data.model,
                    &data.dataset,
                    &m.method,
                    &num(p.ratio_percent),
                    &num(p.perplexity),
                ],
            );
        }
    }
    let svg =
        draw::figure3(data).with_context(|| format!("drawing figure 3 into {}", path.display()))?;
    write_all(path, &svg, data, &csv)
}

/// Figure 4: grids of removed attention and FFN sublayers (blocks on x, two rows), one per model.
pub fn figure4(path: &Path, data: &Figure4Data) -> Result<Rendered> {
    if data.panels.is_empty() {
        bail!("figure 4 ({}): no models to plot", path.display());
    }
    for g in &data.panels {
        g.check()?;
    }
    let mut csv = String::from("method,ratio_percent,model,block,sublayer,removed\n");
    for g in &data.panels {
        let (attn, mlp) = (g.attn_set(), g.mlp_set());
        for b in 0..g.num_blocks {
            for (kind, set) in [("attn", &attn), ("mlp", &mlp)] {
                let removed = if set.contains(&b) { "1" } else { "0" };
                csv_row(
                    &mut csv,
                    &[
                        &data.method,
                        &num(data.ratio_percent),
                        &g.model,
                        &b.to_string(),
                        kind,
                        removed,
                    ],
                );
            }
        }
    }
    let svg =
        draw::figure4(data).with_context(|| format!("drawing figure 4 into {}", path.display()))?;
    write_all(path, &svg, data, &csv)
}

/// Figure 1b: grouped bars of removed attention versus removed FFN sublayers.
pub fn figure1b(path: &Path, data: &Figure1bData) -> Result<Rendered> {
    if data.groups.is_empty() {
        bail!("figure 1b ({}): no groups to plot", path.display());
    }
    let mut csv = String::from("group,attn_removed,mlp_removed\n");
    for g in &data.groups {
        csv_row(
            &mut csv,
            &[&g.label, &g.attn.to_string(), &g.mlp.to_string()],
        );
    }
    let svg = draw::figure1b(data)
        .with_context(|| format!("drawing figure 1b into {}", path.display()))?;
    write_all(path, &svg, data, &csv)
}

/// Ablation figure: grouped bars, one bar per variant in each group.
pub fn ablation(path: &Path, data: &AblationData) -> Result<Rendered> {
    if data.groups.is_empty() || data.variants.is_empty() {
        bail!(
            "ablation figure ({}): needs at least one group and one variant",
            path.display()
        );
    }
    for v in &data.variants {
        if v.values.len() != data.groups.len() {
            bail!(
                "ablation figure ({}): variant {:?} has {} values for {} groups",
                path.display(),
                v.name,
                v.values.len(),
                data.groups.len()
            );
        }
        if data.log_y {
            if let Some(x) = v
                .values
                .iter()
                .flatten()
                .find(|x| !(x.is_finite() && **x > 0.0))
            {
                bail!(
                    "ablation figure ({}): variant {:?} has value {x}, not positive, on a log scale",
                    path.display(),
                    v.name
                );
            }
        }
    }
    let mut csv = String::from("group,variant,value\n");
    for v in &data.variants {
        for (g, x) in data.groups.iter().zip(&v.values) {
            csv_row(&mut csv, &[g, &v.name, &x.map(num).unwrap_or_default()]);
        }
    }
    let svg = draw::ablation(data)
        .with_context(|| format!("drawing ablation figure into {}", path.display()))?;
    write_all(path, &svg, data, &csv)
}

/// Writes the SVG, the JSON and the CSV, then tries the PNG; each file atomically.
fn write_all<T: Serialize>(path: &Path, svg: &str, data: &T, csv: &str) -> Result<Rendered> {
    finercut_pipeline::write_file_atomic(path, svg)?;
    let json_path = path.with_extension("json");
    finercut_pipeline::write_json_atomic(
        &json_path,
        &serde_json::to_value(data).context("serialising figure data")?,
    )?;
    let csv_path = path.with_extension("csv");
    finercut_pipeline::write_file_atomic(&csv_path, csv)?;
    let png = svg_to_png(path, &path.with_extension("png"));
    Ok(Rendered {
        svg: path.to_path_buf(),
        json: json_path,
        csv: csv_path,
        png,
    })
}

/// Converts an SVG to a PNG at twice the SVG's pixel size: `rsvg-convert` first, then ImageMagick
/// `convert`. The converter writes to its standard output and the PNG is written atomically.
pub fn svg_to_png(svg: &Path, png: &Path) -> Png {
    let attempts: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        ("rsvg-convert", vec!["--zoom=2".as_ref(), svg.as_os_str()]),
        (
            "convert",
            vec![
                "-density".as_ref(),
                "192".as_ref(),
                svg.as_os_str(),
                "png:-".as_ref(),
            ],
        ),
    ];
    let mut notes = Vec::new();
    for (program, args) in attempts {
        match Command::new(program).args(&args).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                notes.push(format!("{program} not found"))
            }
            Err(e) => notes.push(format!("{program} could not start: {e}")),
            Ok(out) if out.status.success() && !out.stdout.is_empty() => {
                match finercut_pipeline::write_file_atomic(png, &out.stdout) {
                    Ok(()) => {
                        return Png::Written {
                            path: png.to_path_buf(),
                            converter: program.to_string(),
                        }
                    }
                    Err(e) => notes.push(format!("{program}: {e:#}")),
                }
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let err = err.lines().next().unwrap_or("").trim();
                notes.push(format!("{program} failed ({}): {err}", out.status));
            }
        }
    }
    Png::Skipped {
        reason: format!(
            "{}; install librsvg2-bin (rsvg-convert) for PNG copies",
            notes.join("; ")
        ),
    }
}

/// A number for the CSV: shortest round-tripping form, `inf`/`-inf`/`nan` for non-finite values.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        format!("{x}").to_lowercase()
    }
}

/// Appends one CSV row, quoting fields that need it (RFC 4180).
fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            let _ = write!(out, "\"{}\"", f.replace('"', "\"\""));
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (project rules).
mod tests {
    use super::*;
    use std::fs;

    fn synthetic_grid(model: &str, l: usize, attn: &[usize], mlp: &[usize]) -> SublayerGrid {
        SublayerGrid {
            model: model.into(),
            num_blocks: l,
            removed_attn: attn.to_vec(),
            removed_mlp: mlp.to_vec(),
        }
    }

    fn fig3_data() -> Figure3Data {
        let ratios = [
            0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0,
        ];
        let curve = |name: &str, growth: f64, collapse_at: Option<f64>| MethodCurve {
            method: name.into(),
            points: ratios
                .iter()
                .map(|&r| CurvePoint {
                    ratio_percent: r,
                    perplexity: match collapse_at {
                        Some(c) if r >= c => f64::INFINITY,
                        _ => 18.5 * (growth * r / 10.0).exp(),
                    },
                })
                .collect(),
        };
        Figure3Data {
            model: "SmolLM2-135M-Instruct".into(),
            dataset: "WikiText-2".into(),
            methods: vec![
                curve("FinerCut", 0.35, None),
                curve("ShortGPT", 1.1, Some(50.0)),
                curve("DeeperLayers", 0.9, None),
                curve("SLEB", 0.7, None),
                curve("BlockPruner", 0.55, None),
            ],
        }
    }

    fn fig4_data() -> Figure4Data {
        Figure4Data {
            method: "FinerCut".into(),
            ratio_percent: 25.0,
            panels: vec![
                synthetic_grid(
                    "SmolLM2-135M",
                    30,
                    &[14, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28],
                    &[3, 26, 29],
                ),
                synthetic_grid(
                    "Llama-3-8B",
                    32,
                    &[19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
                    &[24, 27, 28, 30],
                ),
            ],
        }
    }

    fn fig1b_data() -> Figure1bData {
        let f4 = fig4_data();
        Figure1bData {
            title: "Removed sublayers by type at 25% removal".into(),
            group_axis: "Model".into(),
            groups: f4
                .panels
                .iter()
                .map(|g| RemovedCounts::from_grid(g.model.clone(), g))
                .chain([RemovedCounts {
                    label: "Qwen2.5-7B".into(),
                    attn: 11,
                    mlp: 3,
                }])
                .collect(),
        }
    }

    fn ablation_data() -> AblationData {
        AblationData {
            title: "Ablation: pruning unit and similarity metric".into(),
            group_axis: "Removal ratio".into(),
            value_axis: "Average zero-shot accuracy (%)".into(),
            log_y: false,
            groups: vec!["12.5%".into(), "25%".into(), "37.5%".into()],
            variants: vec![
                AblationVariant {
                    name: "Sublayer, JS (FinerCut)".into(),
                    values: vec![Some(62.1), Some(58.4), Some(51.0)],
                },
                AblationVariant {
                    name: "Sublayer, angular".into(),
                    values: vec![Some(61.0), Some(55.2), Some(47.3)],
                },
                AblationVariant {
                    name: "Sublayer, Euclidean".into(),
                    values: vec![Some(60.2), Some(52.9), None],
                },
                AblationVariant {
                    name: "Block, JS".into(),
                    values: vec![Some(57.7), Some(48.0), Some(41.5)],
                },
            ],
        }
    }

    fn check_svg(r: &Rendered, title: &str) {
        let text = fs::read_to_string(&r.svg).unwrap();
        assert!(
            text.len() > 2000,
            "{} is only {} bytes",
            r.svg.display(),
            text.len()
        );
        assert!(
            text.starts_with("<svg"),
            "{} is not an SVG",
            r.svg.display()
        );
        assert!(
            text.contains(title),
            "{} does not contain its title {title:?}",
            r.svg.display()
        );
        assert!(text.contains("<text"), "{} has no text", r.svg.display());
        assert!(r.json.is_file() && fs::metadata(&r.json).unwrap().len() > 20);
        let csv = fs::read_to_string(&r.csv).unwrap();
        assert!(
            csv.lines().count() > 2,
            "{} has no data rows",
            r.csv.display()
        );
        if let Png::Written { path, .. } = &r.png {
            assert!(
                fs::metadata(path).unwrap().len() > 1000,
                "{} is tiny",
                path.display()
            );
        }
    }

    #[test]
    fn renders_all_four_figures() {
        let dir = tempfile::tempdir().unwrap();
        // Set FINERCUT_PLOTS_KEEP=dir to keep the pictures for looking at them.
        let out = std::env::var_os("FINERCUT_PLOTS_KEEP")
            .map(PathBuf::from)
            .unwrap_or(dir.path().to_path_buf());

        let r = figure3(&out.join("figure3.svg"), &fig3_data()).unwrap();
        check_svg(&r, "WikiText-2 perplexity vs. removal ratio");
        check_svg(&r, "SmolLM2-135M-Instruct");
        let text = fs::read_to_string(&r.svg).unwrap();
        assert!(
            text.contains("ShortGPT") && text.contains("BlockPruner"),
            "legend missing"
        );
        let csv = fs::read_to_string(&r.csv).unwrap();
        assert!(csv.contains("ShortGPT,50,inf"), "{csv}");

        let r = figure4(&out.join("figure4.svg"), &fig4_data()).unwrap();
        check_svg(&r, "Sublayers removed by FinerCut at 25% removal ratio");
        check_svg(&r, "12 attention + 3 FFN");
        let csv = fs::read_to_string(&r.csv).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2 * 30 + 2 * 32);

        let r = figure1b(&out.join("figure1b.svg"), &fig1b_data()).unwrap();
        check_svg(&r, "Removed sublayers by type at 25% removal");

        let r = ablation(&out.join("ablation.svg"), &ablation_data()).unwrap();
        check_svg(&r, "Ablation: pruning unit and similarity metric");
        let json: AblationData =
            serde_json::from_str(&fs::read_to_string(&r.json).unwrap()).unwrap();
        assert_eq!(json, ablation_data());

        let mut log = ablation_data();
        log.log_y = true;
        log.value_axis = "WikiText-2 perplexity".into();
        log.title = "Ablation on perplexity".into();
        for v in &mut log.variants {
            for x in v.values.iter_mut().flatten() {
                *x = (100.0 - *x) * 3.0;
            }
        }
        let r = ablation(&out.join("ablation_ppl.svg"), &log).unwrap();
        check_svg(&r, "Ablation on perplexity");
    }

    /// Harder layouts: 80 blocks, one panel; a wide perplexity range with many methods; many bar groups.
    #[test]
    fn renders_large_and_crowded_figures() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::env::var_os("FINERCUT_PLOTS_KEEP")
            .map(PathBuf::from)
            .unwrap_or(dir.path().to_path_buf());

        let removed = (0..160).filter(|i| (i % 7 == 3 && *i > 60) || *i % 11 == 0);
        let grid = SublayerGrid::from_sublayer_indices("Llama-3-70B", 80, removed);
        let counts = format!(
            "{} attention + {} FFN",
            grid.attn_set().len(),
            grid.mlp_set().len()
        );
        let d = Figure4Data {
            method: "FinerCut".into(),
            ratio_percent: 12.5,
            panels: vec![grid],
        };
        let r = figure4(&out.join("figure4_l80.svg"), &d).unwrap();
        check_svg(&r, "at 12.5% removal ratio");
        check_svg(&r, &counts);

        let mut f3 = fig3_data();
        f3.model = "Meta-Llama-3-70B-Instruct".into();
        for (i, m) in f3.methods.iter_mut().enumerate() {
            for p in &mut m.points {
                if p.perplexity.is_finite() {
                    p.perplexity = p.perplexity.powf(1.0 + 0.25 * i as f64);
                }
            }
        }
        f3.methods.push(MethodCurve {
            method: "A rather long method name (variant)".into(),
            points: vec![
                CurvePoint {
                    ratio_percent: 10.0,
                    perplexity: 30.0,
                },
                CurvePoint {
                    ratio_percent: 30.0,
                    perplexity: 90.0,
                },
            ],
        });
        let r = figure3(&out.join("figure3_wide.svg"), &f3).unwrap();
        check_svg(&r, "Meta-Llama-3-70B-Instruct");

        let d = Figure1bData {
            title: "Removed sublayers by type, Llama-3-8B".into(),
            group_axis: "Removal ratio".into(),
            groups: (1..=8)
                .map(|k| RemovedCounts {
                    label: format!("{}%", 5 * k),
                    attn: (3 * k).min(32),
                    mlp: k * k / 4,
                })
                .collect(),
        };
        let r = figure1b(&out.join("figure1b_ratios.svg"), &d).unwrap();
        check_svg(&r, "Removed sublayers by type, Llama-3-8B");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = fig4_data();
        d.panels[0].removed_mlp.push(30);
        let err = figure4(&dir.path().join("f4.svg"), &d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");

        let mut a = ablation_data();
        a.variants[0].values.pop();
        assert!(ablation(&dir.path().join("a.svg"), &a).is_err());
        a = ablation_data();
        a.log_y = true;
        a.variants[1].values[0] = Some(0.0);
        assert!(ablation(&dir.path().join("a.svg"), &a).is_err());

        let mut f3 = fig3_data();
        for m in &mut f3.methods {
            for p in &mut m.points {
                p.perplexity = f64::NAN;
            }
        }
        assert!(figure3(&dir.path().join("f3.svg"), &f3).is_err());
        f3.methods.clear();
        assert!(figure3(&dir.path().join("f3.svg"), &f3).is_err());
        assert!(figure1b(
            &dir.path().join("f1.svg"),
            &Figure1bData {
                title: "t".into(),
                group_axis: "g".into(),
                groups: vec![]
            }
        )
        .is_err());
    }

    #[test]
    fn sublayer_indices_map_to_blocks() {
        let g = SublayerGrid::from_sublayer_indices("m", 4, [0, 3, 6, 7]);
        assert_eq!(g.removed_attn, vec![0, 3]);
        assert_eq!(g.removed_mlp, vec![1, 3]);
        let c = RemovedCounts::from_grid("m", &g);
        assert_eq!((c.attn, c.mlp), (2, 2));
    }

    #[test]
    fn png_conversion_failure_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let png = svg_to_png(
            &dir.path().join("missing.svg"),
            &dir.path().join("missing.png"),
        );
        match png {
            Png::Skipped { reason } => assert!(reason.contains("rsvg-convert"), "{reason}"),
            Png::Written { path, .. } => panic!("wrote {} from a missing SVG", path.display()),
        }
    }

    #[test]
    fn csv_fields_are_quoted() {
        let mut s = String::new();
        csv_row(&mut s, &["a,b", "say \"hi\"", "plain"]);
        assert_eq!(s, "\"a,b\",\"say \"\"hi\"\"\",plain\n");
        assert_eq!(num(f64::INFINITY), "inf");
        assert_eq!(num(2.5), "2.5");
    }
}
