//! Rendering of the figures into SVG strings with `plotters`: layout, colours, markers, legends, axes.
//!
//! Sizes are in SVG pixels.
//! plotters writes `font-size = size / 1.24`, so [`font`] scales by 1.24 to get the pixel size asked for.
//! Text widths are estimated from the character count ([`text_w`]) with a margin for wide fonts.

use std::collections::BTreeSet;

use crate::error::{bail, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{AblationData, Figure1bData, Figure3Data, Figure4Data};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Okabe–Ito colours (readable with colour-vision deficiencies), most distinct first.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x33, 0x33, 0x33), // near black
];
const ATTN: RGBColor = PALETTE[0];
const MLP: RGBColor = PALETTE[1];
const KEPT: RGBColor = RGBColor(0xF3, 0xF3, 0xF3);
const CELL_BORDER: RGBColor = RGBColor(0xC4, 0xC4, 0xC4);
const GRID_BOLD: RGBColor = RGBColor(0xD4, 0xD4, 0xD4);
const GRID_LIGHT: RGBColor = RGBColor(0xEE, 0xEE, 0xEE);
const AXIS: RGBColor = RGBColor(0x55, 0x55, 0x55);
const NOTE: RGBColor = RGBColor(0x55, 0x55, 0x55);

const TITLE_PX: f64 = 22.0;
const AXIS_DESC_PX: f64 = 18.0;
const TICK_PX: f64 = 16.0;
const LEGEND_PX: f64 = 16.0;
const VALUE_PX: f64 = 14.0;

/// A font of `px` SVG pixels.
fn font(px: f64) -> FontDesc<'static> {
    ("sans-serif", px * 1.24).into_font()
}

fn bold(px: f64) -> FontDesc<'static> {
    font(px).style(FontStyle::Bold)
}

fn anchored(f: FontDesc<'static>, h: HPos, v: VPos, c: &RGBColor) -> TextStyle<'static> {
    f.color(c).pos(Pos::new(h, v))
}

/// A generous estimate of the width of `s` at `px` pixels (DejaVu Sans averages about 0.55 em).
fn text_w(px: f64, s: &str) -> i32 {
    (0.62 * px * s.chars().count() as f64).ceil() as i32
}

/// A value axis with explicit tick positions: bold ticks (labelled, with grid lines) and light grid lines.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Axis {
    fn linear(lo: f64, hi: f64, bold: Vec<f64>, light: Vec<f64>) -> Axis {
        Axis {
            lo,
            hi,
            log: false,
            bold,
            light,
        }
    }

    fn log(lo: f64, hi: f64, bold: Vec<f64>, light: Vec<f64>) -> Axis {
        Axis {
            lo,
            hi,
            log: true,
            bold,
            light,
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = if self.log {
            // Non-positive values go to the bottom of a log axis.
            let v = if *value > 0.0 { *value } else { self.lo };
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (value - self.lo) / (self.hi - self.lo)
        };
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Marker shapes, one per line series.
#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Pentagon,
    Hexagon,
}

const MARKERS: [Marker; 7] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Pentagon,
    Marker::Hexagon,
];

/// Draws a filled marker of radius `r` centred at pixel `(x, y)` with a thin white rim.
fn draw_marker(
    area: &Area<'_>,
    (x, y): (i32, i32),
    m: Marker,
    color: RGBColor,
    r: f64,
) -> Result<()> {
    let poly = |n: usize, phase: f64, scale: f64| -> Vec<(i32, i32)> {
        (0..n)
            .map(|k| {
                let a = phase + 2.0 * std::f64::consts::PI * k as f64 / n as f64;
                (
                    x + (scale * r * a.cos()).round() as i32,
                    y + (scale * r * a.sin()).round() as i32,
                )
            })
            .collect()
    };
    let up = -std::f64::consts::FRAC_PI_2;
    let pts = match m {
        Marker::Circle => {
            area.draw(&Circle::new((x, y), r.round() as i32, color.filled()))?;
            area.draw(&Circle::new(
                (x, y),
                r.round() as i32,
                WHITE.stroke_width(1),
            ))?;
            return Ok(());
        }
        Marker::Square => poly(4, std::f64::consts::FRAC_PI_4, 1.2),
        Marker::TriangleUp => poly(3, up, 1.35),
        Marker::Diamond => poly(4, 0.0, 1.3),
        Marker::TriangleDown => poly(3, -up, 1.35),
        Marker::Pentagon => poly(5, up, 1.15),
        Marker::Hexagon => poly(6, 0.0, 1.1),
    };
    area.draw(&Polygon::new(pts.clone(), color.filled()))?;
    let mut rim = pts;
    if let Some(&first) = rim.first() {
        rim.push(first);
    }
    area.draw(&PathElement::new(rim, WHITE.stroke_width(1)))?;
    Ok(())
}

/// What a legend entry shows next to its label.
enum Swatch {
    /// A line with a marker in the middle.
    Line {
        color: RGBColor,
        marker: Marker,
        width: u32,
    },
    /// A filled square with a border.
    Cell { fill: RGBColor, border: RGBColor },
}

struct LegendEntry {
    label: String,
    swatch: Swatch,
}

const LINE_SWATCH_W: i32 = 40;
const CELL_SWATCH_W: i32 = 22;
const LEGEND_ROW_H: i32 = 30;
const LEGEND_PAD: i32 = 14;

impl Swatch {
    fn width(&self) -> i32 {
        match self {
            Swatch::Line { .. } => LINE_SWATCH_W,
            Swatch::Cell { .. } => CELL_SWATCH_W,
        }
    }
}

fn entry_w(e: &LegendEntry) -> i32 {
    e.swatch.width() + 10 + text_w(LEGEND_PX, &e.label)
}

/// Width of a one-column legend box.
fn legend_column_w(entries: &[LegendEntry]) -> i32 {
    2 * LEGEND_PAD + entries.iter().map(entry_w).max().unwrap_or(0)
}

fn draw_swatch(area: &Area<'_>, s: &Swatch, x: i32, y: i32) -> Result<()> {
    match s {
        Swatch::Line {
            color,
            marker,
            width,
        } => {
            area.draw(&PathElement::new(
                vec![(x, y), (x + LINE_SWATCH_W, y)],
                color.stroke_width(*width),
            ))?;
            draw_marker(area, (x + LINE_SWATCH_W / 2, y), *marker, *color, 5.5)?;
        }
        Swatch::Cell { fill, border } => {
            let (x0, x1) = (x + 1, x + CELL_SWATCH_W - 1);
            area.draw(&Rectangle::new([(x0, y - 10), (x1, y + 10)], fill.filled()))?;
            area.draw(&Rectangle::new(
                [(x0, y - 10), (x1, y + 10)],
                border.stroke_width(1),
            ))?;
        }
    }
    Ok(())
}

/// A framed one-column legend with its top-left corner at `(x, y)`.
fn draw_legend_column(area: &Area<'_>, entries: &[LegendEntry], x: i32, y: i32) -> Result<()> {
    let w = legend_column_w(entries);
    let h = 2 * LEGEND_PAD + LEGEND_ROW_H * entries.len() as i32 - 6;
    area.draw(&Rectangle::new([(x, y), (x + w, y + h)], WHITE.filled()))?;
    area.draw(&Rectangle::new(
        [(x, y), (x + w, y + h)],
        GRID_BOLD.stroke_width(1),
    ))?;
    for (i, e) in entries.iter().enumerate() {
        let cy = y + LEGEND_PAD + LEGEND_ROW_H * i as i32 + (LEGEND_ROW_H - 6) / 2;
        draw_swatch(area, &e.swatch, x + LEGEND_PAD, cy)?;
        let style = anchored(font(LEGEND_PX), HPos::Left, VPos::Center, &BLACK);
        area.draw_text(
            &e.label,
            &style,
            (x + LEGEND_PAD + e.swatch.width() + 10, cy),
        )?;
    }
    Ok(())
}

/// A one-row legend centred horizontally at `cx`, vertically at `cy`.
fn draw_legend_row(area: &Area<'_>, entries: &[LegendEntry], cx: i32, cy: i32) -> Result<()> {
    let gap = 36;
    let total: i32 =
        entries.iter().map(entry_w).sum::<i32>() + gap * (entries.len() as i32 - 1).max(0);
    let mut x = cx - total / 2;
    for e in entries {
        draw_swatch(area, &e.swatch, x, cy)?;
        let style = anchored(font(LEGEND_PX), HPos::Left, VPos::Center, &BLACK);
        area.draw_text(&e.label, &style, (x + e.swatch.width() + 10, cy))?;
        x += entry_w(e) + gap;
    }
    Ok(())
}

fn draw_title(area: &Area<'_>, title: &str, w: i32, y: i32) -> Result<()> {
    area.draw_text(
        title,
        &anchored(bold(TITLE_PX), HPos::Center, VPos::Top, &BLACK),
        (w / 2, y),
    )?;
    Ok(())
}

/// Formats a tick value compactly: 1.5k, 20k, 3M, 12, 2.5.
fn fmt_tick(v: f64) -> String {
    fn trim(s: String) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
    let a = v.abs();
    if a >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.2}"))
    }
}

/// Decimals for the values written on bars, the same for a whole chart: none for integers or values of
/// 100 and more, one from 10, two below.
fn value_decimals(values: impl Iterator<Item = f64> + Clone) -> usize {
    let max = values.clone().map(f64::abs).fold(0.0, f64::max);
    if values.clone().all(|v| v.fract() == 0.0) || max >= 100.0 {
        0
    } else if max >= 10.0 {
        1
    } else {
        2
    }
}

/// Log-axis bounds and ticks for data in `[min, max]` (both positive): a margin of a factor 1.3 each side,
/// bold ticks at 1-2-5 (1-3 or decades for wider ranges), light grid lines at the other integers
/// (narrower ranges only).
fn log_axis(min: f64, max: f64) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let (lo, hi) = (min / 1.3, max * 1.3);
    let span = (hi / lo).log10();
    let mults: &[f64] = if span <= 1.2 {
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]
    } else if span <= 2.6 {
        &[1.0, 2.0, 5.0]
    } else if span <= 4.6 {
        &[1.0, 3.0]
    } else {
        &[1.0]
    };
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mut bold = Vec::new();
    let mut light = Vec::new();
    for e in e0..=e1 {
        let p = 10f64.powi(e);
        for &m in mults {
            let v = m * p;
            if v >= lo && v <= hi {
                bold.push(v);
            }
        }
        if span <= 3.2 {
            for m in 1..=9 {
                let v = f64::from(m) * p;
                if v >= lo && v <= hi {
                    light.push(v);
                }
            }
        }
    }
    (lo, hi, bold, light)
}

/// Linear axis from 0: top of the range (with headroom for value labels) and 1-2-5 ticks.
fn linear_axis(max: f64, integer: bool) -> (f64, Vec<f64>) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p);
    if integer {
        step = step.max(1.0).round();
    }
    let top = max * 1.14;
    let ticks = (0..)
        .map(|k| f64::from(k) * step)
        .take_while(|t| *t <= top)
        .collect();
    (top, ticks)
}

pub(super) fn figure3(d: &Figure3Data) -> Result<String> {
    let mut series = Vec::new();
    let mut omitted = Vec::new();
    for m in &d.methods {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for p in &m.points {
            if p.ratio_percent.is_finite() && p.perplexity.is_finite() && p.perplexity > 0.0 {
                pts.push((p.ratio_percent, p.perplexity));
            } else {
                omitted.push(format!("{} at {}%", m.method, fmt_tick(p.ratio_percent)));
            }
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push((m.method.as_str(), pts));
    }
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    if all().next().is_none() {
        bail!("no finite, positive perplexity to plot");
    }
    let ymin = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let ymax = all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let xmax_data = all().map(|p| p.0).fold(0.0, f64::max);
    let xmin_data = all().map(|p| p.0).fold(0.0, f64::min);
    let xmax = (xmax_data / 10.0).ceil().max(5.0) * 10.0;
    let xmin = (xmin_data / 10.0).floor() * 10.0;
    let (ylo, yhi, ybold, ylight) = log_axis(ymin, ymax);

    let entries: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(i, (name, _))| LegendEntry {
            label: name.to_string(),
            swatch: Swatch::Line {
                color: PALETTE[i % PALETTE.len()],
                marker: MARKERS[i % MARKERS.len()],
                width: line_w(i),
            },
        })
        .collect();
    let title = format!("{} perplexity vs. removal ratio — {}", d.dataset, d.model);
    let legend_w = legend_column_w(&entries);
    let plot_w = 780;
    let w = (plot_w + legend_w + 40).max(text_w(TITLE_PX, &title) + 60);
    let note = if omitted.is_empty() {
        None
    } else {
        Some(format!(
            "Not plotted (perplexity not finite): {}",
            omitted.join(", ")
        ))
    };
    let h = 600 + if note.is_some() { 34 } else { 0 };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_title(&root, &title, w, 18)?;
        let (_, body) = root.split_vertically(64);
        let (body, _) = body.split_vertically(600 - 64);
        let (plot, legend_area) = body.split_horizontally(w - legend_w - 40);
        let mut chart = ChartBuilder::on(&plot)
            .margin_left(16)
            .margin_right(24)
            .margin_top(8)
            .margin_bottom(8)
            .x_label_area_size(62)
            .y_label_area_size(96)
            .build_cartesian_2d(
                Axis::linear(
                    xmin - 1.5,
                    xmax + 1.5,
                    (0..)
                        .map(|k| xmin + 10.0 * f64::from(k))
                        .take_while(|x| *x <= xmax)
                        .collect(),
                    (0..)
                        .map(|k| xmin + 5.0 + 10.0 * f64::from(k))
                        .take_while(|x| *x < xmax)
                        .collect(),
                ),
                Axis::log(ylo, yhi, ybold, ylight),
            )?;
        let xfmt = |x: &f64| fmt_tick(*x);
        let yfmt = |y: &f64| fmt_tick(*y);
        chart
            .configure_mesh()
            .x_desc("Removal ratio (%)")
            .y_desc(format!("{} perplexity (log scale)", d.dataset))
            .axis_desc_style(font(AXIS_DESC_PX))
            .label_style(font(TICK_PX))
            .x_label_formatter(&xfmt)
            .y_label_formatter(&yfmt)
            .bold_line_style(GRID_BOLD.stroke_width(1))
            .light_line_style(GRID_LIGHT.stroke_width(1))
            .axis_style(AXIS.stroke_width(1))
            .draw()?;
        // Lines first (the reference method last, so it is on top), then markers over them.
        let order: Vec<usize> = (1..series.len()).chain([0]).collect();
        for &i in &order {
            let color = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(
                series[i].1.iter().copied(),
                color.stroke_width(line_w(i)),
            ))?;
        }
        for &i in &order {
            let color = PALETTE[i % PALETTE.len()];
            for p in &series[i].1 {
                draw_marker(
                    &root,
                    chart.backend_coord(p),
                    MARKERS[i % MARKERS.len()],
                    color,
                    5.5,
                )?;
            }
        }
        // Legend outside the data, beside the top of the plot.
        let (lx, _) = legend_area.get_base_pixel();
        let top = plot.get_base_pixel().1 + 8;
        draw_legend_column(&root, &entries, lx + 4, top)?;
        if let Some(note) = &note {
            let style = anchored(font(VALUE_PX), HPos::Left, VPos::Center, &NOTE);
            root.draw_text(note, &style, (24, h - 20))?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn line_w(i: usize) -> u32 {
    if i == 0 {
        4
    } else {
        3
    }
}

pub(super) fn figure4(d: &Figure4Data) -> Result<String> {
    let lmax = d.panels.iter().map(|g| g.num_blocks).max().unwrap_or(1);
    let cell_w = if lmax <= 40 {
        30
    } else if lmax <= 64 {
        22
    } else {
        16
    };
    let row_h = 40;
    let left = 120; // row labels
    let right = 30;
    let plot_w = cell_w * lmax as i32;
    let title = format!(
        "Sublayers removed by {} at {}% removal ratio",
        d.method,
        fmt_tick_pct(d.ratio_percent)
    );
    let w = (left + plot_w + right + 20)
        .max(text_w(TITLE_PX, &title) + 60)
        .max(760);
    let header = 112; // title + legend row
    let sub_h = 36; // panel label
    let tick_h = 34;
    let desc_h = 36; // x-axis description, last panel only
    let gap = 22;
    let panel_h = |last: bool| sub_h + 2 * row_h + tick_h + if last { desc_h } else { gap };
    let n = d.panels.len();
    let h = header + (0..n).map(|i| panel_h(i + 1 == n)).sum::<i32>() + 10;

    let entries = vec![
        LegendEntry {
            label: "Removed attention".into(),
            swatch: Swatch::Cell {
                fill: ATTN,
                border: ATTN,
            },
        },
        LegendEntry {
            label: "Removed FFN".into(),
            swatch: Swatch::Cell {
                fill: MLP,
                border: MLP,
            },
        },
        LegendEntry {
            label: "Kept".into(),
            swatch: Swatch::Cell {
                fill: KEPT,
                border: CELL_BORDER,
            },
        },
    ];

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_title(&root, &title, w, 18)?;
        draw_legend_row(&root, &entries, w / 2, 78)?;
        let mut y = header;
        for (i, g) in d.panels.iter().enumerate() {
            let last = i + 1 == n;
            let (attn, mlp) = (g.attn_set(), g.mlp_set());
            let total = 2 * g.num_blocks;
            let removed = attn.len() + mlp.len();
            let label = format!(
                "{}: {} attention + {} FFN removed ({} of {} sublayers, {}%)",
                g.model,
                attn.len(),
                mlp.len(),
                removed,
                total,
                fmt_tick_pct(100.0 * removed as f64 / total as f64)
            );
            let ph = panel_h(last);
            let area = root.clone().shrink((0, y), (w, ph));
            area.draw_text(
                &label,
                &anchored(bold(LEGEND_PX + 1.0), HPos::Left, VPos::Center, &BLACK),
                (left - 4, sub_h / 2),
            )?;
            let grid_area = area.shrink((0, sub_h), (w, ph - sub_h));
            draw_grid(
                &grid_area,
                g.num_blocks,
                (&attn, &mlp),
                (left, right),
                last,
                ph - sub_h - 2 * row_h,
            )?;
            y += ph;
        }
        root.present()?;
    }
    Ok(svg)
}

/// `25` for 25.0, `12.5` for 12.5.
fn fmt_tick_pct(v: f64) -> String {
    let s = format!("{v:.1}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Draws one model's grid into `area`: row labels in a `left`-pixel column, `below` pixels for tick labels
/// (and, for the `last` panel, the axis description) under it.
fn draw_grid(
    area: &Area<'_>,
    l: usize,
    (attn, mlp): (&BTreeSet<usize>, &BTreeSet<usize>),
    (left, right): (i32, i32),
    last: bool,
    below: i32,
) -> Result<()> {
    let (aw, _) = area.dim_in_pixel();
    let digits = text_w(TICK_PX, &(l.saturating_sub(1)).to_string()) + 8;
    let plot_w = aw as i32 - left - right;
    let px_per_block = f64::from(plot_w) / l as f64;
    let step = [1usize, 2, 4, 5, 10, 20, 50]
        .into_iter()
        .find(|s| px_per_block * *s as f64 >= f64::from(digits))
        .unwrap_or(100);
    let lf = l as f64;
    let xfmt = |x: &f64| format!("{}", x.round() as i64);
    let yfmt = |y: &f64| {
        if *y > 1.0 {
            "Attention".to_string()
        } else {
            "FFN".to_string()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .margin_right(right)
        .x_label_area_size(below)
        .y_label_area_size(left)
        .build_cartesian_2d(
            Axis::linear(
                -0.5,
                lf - 0.5,
                (0..l).step_by(step).map(|b| b as f64).collect(),
                vec![],
            ),
            Axis::linear(0.0, 2.0, vec![0.5, 1.5], vec![]),
        )?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh()
        .label_style(font(TICK_PX))
        .axis_desc_style(font(AXIS_DESC_PX))
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .axis_style(AXIS.stroke_width(1));
    if last {
        mesh.x_desc("Block index");
    }
    mesh.draw()?;
    for b in 0..l {
        let x0 = b as f64 - 0.5;
        for (row, set, color) in [(1.0, attn, ATTN), (0.0, mlp, MLP)] {
            let fill = if set.contains(&b) { color } else { KEPT };
            let r = [(x0, row), (x0 + 1.0, row + 1.0)];
            chart.draw_series([Rectangle::new(r, fill.filled())])?;
            chart.draw_series([Rectangle::new(r, CELL_BORDER.stroke_width(1))])?;
        }
    }
    Ok(())
}

/// One bar series of a grouped bar chart.
struct Bars<'a> {
    name: &'a str,
    color: RGBColor,
    values: Vec<Option<f64>>,
}

struct BarChart<'a> {
    title: &'a str,
    group_axis: &'a str,
    value_axis: &'a str,
    groups: Vec<&'a str>,
    series: Vec<Bars<'a>>,
    log_y: bool,
    integer: bool,
}

pub(super) fn figure1b(d: &Figure1bData) -> Result<String> {
    bar_chart(&BarChart {
        title: &d.title,
        group_axis: &d.group_axis,
        value_axis: "Removed sublayers",
        groups: d.groups.iter().map(|g| g.label.as_str()).collect(),
        series: vec![
            Bars {
                name: "Attention",
                color: ATTN,
                values: d.groups.iter().map(|g| Some(g.attn as f64)).collect(),
            },
            Bars {
                name: "FFN",
                color: MLP,
                values: d.groups.iter().map(|g| Some(g.mlp as f64)).collect(),
            },
        ],
        log_y: false,
        integer: true,
    })
}

pub(super) fn ablation(d: &AblationData) -> Result<String> {
    bar_chart(&BarChart {
        title: &d.title,
        group_axis: &d.group_axis,
        value_axis: &d.value_axis,
        groups: d.groups.iter().map(String::as_str).collect(),
        series: d
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| Bars {
                name: &v.name,
                color: PALETTE[i % PALETTE.len()],
                values: v.values.clone(),
            })
            .collect(),
        log_y: d.log_y,
        integer: false,
    })
}

fn bar_chart(c: &BarChart<'_>) -> Result<String> {
    let ng = c.groups.len();
    let nv = c.series.len();
    let values = || {
        c.series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .filter(|v| v.is_finite())
    };
    let max = values().fold(0.0, f64::max);
    let min_pos = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let decimals = value_decimals(values());
    let bar_px = 46.0;
    let fill_frac = 0.76; // share of a group's width covered by its bars
    let longest_group = c
        .groups
        .iter()
        .map(|g| text_w(TICK_PX, g))
        .max()
        .unwrap_or(0);
    let group_px = (nv as f64 * bar_px / fill_frac).max(f64::from(longest_group) + 24.0);
    let entries: Vec<LegendEntry> = c
        .series
        .iter()
        .map(|s| LegendEntry {
            label: s.name.to_string(),
            swatch: Swatch::Cell {
                fill: s.color,
                border: s.color,
            },
        })
        .collect();
    let legend_w = legend_column_w(&entries);
    let y_label_w = 96;
    let plot_w = (group_px * ng as f64).round() as i32 + y_label_w + 40;
    let plot_w = plot_w.max(520);
    let w = (plot_w + legend_w + 40).max(text_w(TITLE_PX, c.title) + 60);
    let h = 560;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_title(&root, c.title, w, 18)?;
        let (_, body) = root.split_vertically(64);
        let (plot, legend_area) = body.split_horizontally(w - legend_w - 40);
        let gfmt = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < ng {
                c.groups[i as usize].to_string()
            } else {
                String::new()
            }
        };
        let vfmt = |y: &f64| {
            if c.integer {
                format!("{y:.0}")
            } else {
                fmt_tick(*y)
            }
        };
        let value_axis = if c.log_y && !c.value_axis.contains("log") {
            format!("{} (log scale)", c.value_axis)
        } else {
            c.value_axis.to_string()
        };
        let xspec = Axis::linear(
            -0.5,
            ng as f64 - 0.5,
            (0..ng).map(|i| i as f64).collect(),
            vec![],
        );
        let mut builder = ChartBuilder::on(&plot);
        builder
            .margin_left(16)
            .margin_right(24)
            .margin_top(8)
            .margin_bottom(8)
            .x_label_area_size(70)
            .y_label_area_size(y_label_w);
        let slot = fill_frac / nv as f64;
        let bar_x = |gi: usize, si: usize| {
            let x0 = gi as f64 - fill_frac / 2.0 + slot * si as f64;
            (x0 + 0.06 * slot, x0 + 0.94 * slot)
        };
        let (yspec, base) = if c.log_y {
            let (lo, hi, bold_ticks, light) = log_axis(min_pos.min(max), max * 1.05);
            (Axis::log(lo, hi, bold_ticks, light), lo)
        } else {
            let (top, ticks) = linear_axis(max, c.integer);
            (Axis::linear(0.0, top, ticks, vec![]), 0.0)
        };
        let mut chart = builder.build_cartesian_2d(xspec, yspec)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(c.group_axis)
            .y_desc(value_axis)
            .axis_desc_style(font(AXIS_DESC_PX))
            .label_style(font(TICK_PX))
            .x_label_formatter(&gfmt)
            .y_label_formatter(&vfmt)
            .bold_line_style(GRID_BOLD.stroke_width(1))
            .light_line_style(GRID_LIGHT.stroke_width(1))
            .axis_style(AXIS.stroke_width(1))
            .draw()?;
        for (si, s) in c.series.iter().enumerate() {
            for (gi, v) in s.values.iter().enumerate() {
                let (x0, x1) = bar_x(gi, si);
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    // Not measured: a short grey label where the bar would be.
                    let (px, py) = chart.backend_coord(&((x0 + x1) / 2.0, base));
                    let style = anchored(font(VALUE_PX), HPos::Center, VPos::Bottom, &NOTE);
                    root.draw_text("n/a", &style, (px, py - 4))?;
                    continue;
                };
                chart.draw_series([Rectangle::new([(x0, base), (x1, v)], s.color.filled())])?;
                let (px, py) = chart.backend_coord(&((x0 + x1) / 2.0, v));
                let style = anchored(font(VALUE_PX), HPos::Center, VPos::Bottom, &BLACK);
                root.draw_text(&format!("{v:.decimals$}"), &style, (px, py - 4))?;
            }
        }
        let (lx, _) = legend_area.get_base_pixel();
        draw_legend_column(&root, &entries, lx + 4, plot.get_base_pixel().1 + 8)?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_formatting() {
        assert_eq!(fmt_tick(20000.0), "20k");
        assert_eq!(fmt_tick(1500.0), "1.5k");
        assert_eq!(fmt_tick(50.0), "50");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(value_decimals([58.44, 61.0].into_iter()), 1);
        assert_eq!(value_decimals([12.0, 3.0].into_iter()), 0);
        assert_eq!(value_decimals([2.5, 3.0].into_iter()), 2);
        assert_eq!(fmt_tick_pct(12.5), "12.5");
        assert_eq!(fmt_tick_pct(25.0), "25");
    }

    #[test]
    fn log_axis_covers_data() {
        for (a, b) in [(15.0, 80.0), (18.0, 25000.0), (3.0, 3.0), (12.0, 1e7)] {
            let (lo, hi, bold, _) = log_axis(a, b);
            assert!(lo < a && hi > b);
            assert!(!bold.is_empty(), "{a}..{b}");
            assert!(bold.iter().all(|t| *t >= lo && *t <= hi));
        }
        let (top, ticks) = linear_axis(12.0, true);
        assert!(top > 12.0 && ticks.iter().all(|t| t.fract() == 0.0) && ticks.len() >= 3);
    }
}
