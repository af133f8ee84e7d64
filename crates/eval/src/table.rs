//! A Markdown table of an [`EvalReport`]: task, metric, value, stderr, n, and the average.

use std::fmt::Write as _;

use crate::evaluate::EvalReport;

/// Renders `report` as a Markdown table (values as fractions with four decimals, like lm-eval), one row
/// per task and a last row with the average of the headline values.
/// Tasks whose split differs from lm-eval's, or with skipped documents, get a footnote.
pub fn render_table(report: &EvalReport) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "task".into(),
        "metric".into(),
        "value".into(),
        "stderr".into(),
        "n".into(),
    ]];
    for t in &report.tasks {
        rows.push([
            t.task.to_string(),
            t.metric.clone(),
            format!("{:.4}", t.value),
            t.stderr.map_or_else(|| "-".into(), |s| format!("{s:.4}")),
            t.n.to_string(),
        ]);
    }
    if let Some(avg) = report.average {
        rows.push([
            "average".into(),
            String::new(),
            format!("{avg:.4}"),
            String::new(),
            String::new(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            // Text left-aligned, numbers right-aligned.
            if c < 2 {
                let _ = write!(out, " {cell:<w$} |", w = widths[c]);
            } else {
                let _ = write!(out, " {cell:>w$} |", w = widths[c]);
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                let _ = if c < 2 {
                    write!(out, " {dashes} |")
                } else {
                    write!(out, " {dashes}:|")
                };
            }
            out.push('\n');
        }
    }
    for t in &report.tasks {
        if let Some(note) = &t.split_note {
            let _ = writeln!(out, "\n{}: {note}", t.task);
        }
        if t.n_skipped > 0 {
            let _ = writeln!(out, "\n{}: {} documents skipped", t.task, t.n_skipped);
        }
    }
    out
}
