//! Metric-by-step line charts as SVG (plotters' SVG backend): one line per
//! run, axis labels, a legend. SVG text is laid out by the viewer, so no
//! font files are needed to draw it (plotters estimates label sizes).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Line colours in order, repeated past the end. Each has a contrast ratio
/// of at least 3:1 against the white background (WCAG 2 non-text
/// contrast; plotters' `Palette99` puts a pale yellow third, about 1.3:1),
/// and red never follows green.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),  // blue
    (200, 82, 0),    // dark orange
    (34, 136, 51),   // green
    (148, 103, 189), // purple
    (214, 39, 40),   // red
    (0, 128, 128),   // teal
    (140, 86, 75),   // brown
    (170, 51, 119),  // wine
    (102, 102, 102), // grey
    (128, 128, 0),   // olive
];

/// The colour of the `i`-th line.
pub fn series_color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// `HH:MM` of an RFC 3339-ish timestamp (`2026-01-01T00:05:00Z`,
/// `2026-01-01 00:05:00`), for axis labels; the whole text otherwise.
pub(crate) fn short_time(ts: &str) -> String {
    match ts.get(11..16) {
        Some(hm) if ts.len() >= 16 => hm.to_string(),
        _ => ts.to_string(),
    }
}

/// Axis labels of sorted timestamps: `HH:MM` when they share a date,
/// `MM-DD HH:MM` when they span several.
pub(crate) fn time_labels<S: AsRef<str>>(ts: &[S]) -> Vec<String> {
    let date = |t: &S| t.as_ref().get(..10).map(str::to_string);
    let one_day = ts.first().map(date) == ts.last().map(date);
    ts.iter()
        .map(|t| {
            let t = t.as_ref();
            match t.get(5..16) {
                Some(md) if !one_day && t.len() >= 16 => md.replacen('T', " ", 1),
                _ => short_time(t),
            }
        })
        .collect()
}

/// One line: its legend label and `(step, value)` points.
pub type Series = (String, Vec<(i64, f64)>);

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes an SVG chart of `metric` by step, one line per series, to `path`.
pub fn metric_chart(metric: &str, series: &[Series], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    draw(metric, series, &root).map_err(|e| plot_err(path, e))
}

/// The chart of [`metric_chart`] as an SVG document (for pages).
pub(crate) fn metric_svg(metric: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (880, 380)).into_drawing_area();
        draw(metric, series, &root).map_err(|reason| Error::Task {
            task: "metric chart",
            reason,
        })?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(
    metric: &str,
    series: &[Series],
    root: &DrawingArea<DB, plotters::coord::Shift>,
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in points.filter(|(_, y)| y.is_finite()) {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        return Err(format!("no finite values of metric `{metric}` to plot"));
    }
    if x0 == x1 {
        x1 = x0 + 1;
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { 0.5 };
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{metric} by step"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(metric)
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = series_color(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(|(_, y)| y.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
