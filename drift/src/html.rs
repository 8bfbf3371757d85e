//! A drift report as one self-contained HTML page: a summary, a table of
//! every column's test, and per column an SVG chart of the reference and
//! current distributions overlaid. No scripts, no external files: the page
//! can be saved, mailed or served as it is.

use std::fmt::Write;

use crate::report::{ColumnDrift, DriftReport, Status, format_value};

/// An extra table for the page (live performance, A/B results).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Its heading.
    pub caption: String,
    /// Column headings.
    pub headers: Vec<String>,
    /// Rows of cells (plain text; escaped when written).
    pub rows: Vec<Vec<String>>,
}

/// Renders `report` under `title`, with `tables` after the summary.
pub fn render(title: &str, subtitle: &str, report: &DriftReport, tables: &[Table]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let verdict = if report.dataset_drift {
        "<span class=\"bad\">dataset drift detected</span>"
    } else {
        "<span class=\"good\">no dataset drift</span>"
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n<p class=\"sub\">{s}</p>\n\
<p class=\"verdict\">{verdict}: {d} of {n} tested columns drifted ({share:.0}% — the threshold is {thr:.0}%). \
Reference {rr} rows, current {cr} rows.</p>\n",
        t = escape(title),
        s = escape(subtitle),
        d = report.drifted_columns,
        n = report.tested_columns,
        share = report.drift_share * 100.0,
        thr = report.drift_share_threshold * 100.0,
        rr = report.reference_rows,
        cr = report.current_rows,
    );
    if let Some(note) = &report.note {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    for table in tables {
        write_table(&mut out, table);
    }
    out.push_str("<h2>Columns</h2>\n<table><tr><th>column</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th><th>threshold</th><th>drift</th><th>missing (ref → cur)</th><th>mean (ref → cur)</th><th>note</th></tr>\n");
    for c in report.columns.iter().chain(&report.prediction) {
        write_row(&mut out, c);
    }
    out.push_str("</table>\n<h2>Distributions</h2>\n<p class=\"legend\"><span class=\"key ref\"></span> reference <span class=\"key cur\"></span> current</p>\n<div class=\"grid\">\n");
    for c in report.columns.iter().chain(&report.prediction) {
        if c.chart.labels.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<figure><figcaption>{}{}</figcaption>{}</figure>",
            escape(&c.column),
            if c.drifted {
                " <span class=\"bad\">drifted</span>"
            } else {
                ""
            },
            chart_svg(c)
        );
    }
    out.push_str("</div>\n</body></html>\n");
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}\
th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}.good{color:#1b7f3a;font-weight:600}\
.verdict{font-size:1.1em}.note{color:#8a5a00}.grid{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0;border:1px solid #ddd;padding:.5em}figcaption{font-weight:600;margin-bottom:.3em}\
.key{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}\
.key.ref{background:#1f77b4;opacity:.55}.key.cur{background:#ff7f0e;opacity:.55}";

fn write_table(out: &mut String, table: &Table) {
    let _ = write!(out, "<h2>{}</h2>\n<table><tr>", escape(&table.caption));
    for h in &table.headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn write_row(out: &mut String, c: &ColumnDrift) {
    let num = |v: Option<f64>| v.map(format_value).unwrap_or_else(|| "—".into());
    let drift = match (c.status, c.drifted) {
        (Status::Skipped, _) => "<td>skipped</td>".to_string(),
        (_, true) => "<td class=\"bad\">drifted</td>".to_string(),
        (_, false) => "<td class=\"good\">no</td>".to_string(),
    };
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}<td>{:.1}% → {:.1}%</td><td>{} → {}</td><td>{}</td></tr>",
        escape(&c.column),
        escape(&c.kind),
        c.method.map(|m| m.as_str()).unwrap_or("—"),
        num(c.statistic),
        num(c.p_value),
        num(c.threshold),
        drift,
        c.reference_null_share * 100.0,
        c.current_null_share * 100.0,
        num(c.reference_mean),
        num(c.current_mean),
        escape(c.note.as_deref().unwrap_or("")),
    );
}

/// The chart of one column: overlaid bars (numeric bins) or side-by-side
/// bars (categories), shares on the y axis.
fn chart_svg(c: &ColumnDrift) -> String {
    const W: f64 = 380.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 34.0;
    const TOP: f64 = 8.0;
    let chart = &c.chart;
    let bins = chart.labels.len().max(1);
    let top = chart
        .reference
        .iter()
        .chain(&chart.current)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - TOP;
    let slot = plot_w / bins as f64;
    let y = |share: f64| TOP + plot_h * (1.0 - share / top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(&c.column)
    );
    let numeric = !chart.edges.is_empty();
    for (i, (r, cur)) in chart.reference.iter().zip(&chart.current).enumerate() {
        let x = LEFT + slot * i as f64;
        let (rw, cx, cw) = if numeric {
            (slot, x, slot)
        } else {
            (slot * 0.42, x + slot * 0.46, slot * 0.42)
        };
        let rx = if numeric { x } else { x + slot * 0.04 };
        let _ = write!(
            svg,
            "<rect x=\"{rx:.2}\" y=\"{:.2}\" width=\"{rw:.2}\" height=\"{:.2}\" fill=\"#1f77b4\" fill-opacity=\"0.55\"><title>reference {}: {:.2}%</title></rect>",
            y(*r),
            (TOP + plot_h - y(*r)).max(0.0),
            escape(&chart.labels[i]),
            r * 100.0
        );
        let _ = write!(
            svg,
            "<rect x=\"{cx:.2}\" y=\"{:.2}\" width=\"{cw:.2}\" height=\"{:.2}\" fill=\"#ff7f0e\" fill-opacity=\"0.55\"><title>current {}: {:.2}%</title></rect>",
            y(*cur),
            (TOP + plot_h - y(*cur)).max(0.0),
            escape(&chart.labels[i]),
            cur * 100.0
        );
    }
    // Axes and labels.
    let base = TOP + plot_h;
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#444\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\" stroke=\"#444\"/>",
        LEFT + plot_w
    );
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{:.0}%</text><text x=\"{}\" y=\"{base}\" font-size=\"10\" text-anchor=\"end\">0</text>",
        LEFT - 3.0,
        TOP + 9.0,
        top * 100.0,
        LEFT - 3.0
    );
    if numeric {
        let first = chart.edges.first().copied().unwrap_or(0.0);
        let last = chart.edges.last().copied().unwrap_or(0.0);
        let _ = write!(
            svg,
            "<text x=\"{LEFT}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            base + 14.0,
            escape(&format_value(first)),
            LEFT + plot_w,
            base + 14.0,
            escape(&format_value(last))
        );
    } else {
        let every = bins.div_ceil(12);
        for (i, label) in chart.labels.iter().enumerate().step_by(every) {
            let short: String = label.chars().take(10).collect();
            let _ = write!(
                svg,
                "<text x=\"{:.2}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                LEFT + slot * (i as f64 + 0.5),
                base + 14.0,
                escape(&short)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Escapes text for HTML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
