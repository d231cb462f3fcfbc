//! The dashboard's charts, drawn server-side as SVG strings with plotters
//! (text is laid out by the browser, so no fonts are needed here). Every
//! chart has a window (or event) index on x and labels from the caller.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::tracking::plot::series_color;

fn err(e: impl std::fmt::Display) -> Error {
    Error::Task {
        task: "dashboard chart",
        reason: e.to_string(),
    }
}

/// One line of a [`LineChart`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Line {
    /// Legend label.
    pub label: String,
    /// `(x index, value)`; non-finite values are skipped.
    pub points: Vec<(i64, f64)>,
    /// Dashed-looking (thin, pale): a baseline or threshold to compare with.
    pub reference: bool,
    /// Colour index (lines sharing it are one series and its reference).
    pub color: usize,
    /// Marks on its points (few points, or detections).
    pub marks: bool,
    /// Only the marks, no line (events at points in time).
    pub scatter: bool,
}

/// A chart of lines over an index axis.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineChart {
    /// Caption.
    pub title: String,
    /// Label of the y axis.
    pub y_desc: String,
    /// Label of each x index (window end times, steps...).
    pub x_labels: Vec<String>,
    /// Label of the x axis.
    pub x_desc: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// Names of integer y values, for a categorical y axis (stages).
    pub y_names: Option<Vec<String>>,
    /// Draw y on a log10 scale (p-values); values must be positive.
    pub log_y: bool,
}

const SIZE: (u32, u32) = (880, 340);

/// Draws `chart` as an SVG document.
pub(crate) fn lines(chart: &LineChart) -> Result<String> {
    // Values beyond ±1e300 are left out: the axis range (and plotters'
    // ticks) must stay finite.
    let tf = |y: f64| {
        let y = if chart.log_y {
            y.max(1e-300).log10()
        } else {
            y
        };
        if y.abs() < 1e300 { y } else { f64::NAN }
    };
    let finite = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter())
        .map(|(_, y)| tf(*y))
        .filter(|y| y.is_finite());
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for y in finite {
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.08 } else { 0.5 };
    let (y0, y1) = match &chart.y_names {
        Some(n) => (-0.5, n.len() as f64 - 0.5),
        None => (y0 - pad, y1 + pad),
    };
    let x_max = (chart.x_labels.len() as i64 - 1).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(if chart.y_names.is_some() { 90 } else { 64 })
            .build_cartesian_2d(0i64..x_max, y0..y1)
            .map_err(err)?;
        let x_fmt = |x: &i64| chart.x_labels.get(*x as usize).cloned().unwrap_or_default();
        let y_fmt = |y: &f64| match (&chart.y_names, chart.log_y) {
            (Some(n), _) => {
                let i = y.round();
                if (y - i).abs() < 1e-9 && i >= 0.0 {
                    n.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
            (None, true) => format!("{:.0e}", 10f64.powf(*y)),
            (None, false) => format!("{y:.3}"),
        };
        let mut mesh = c.configure_mesh();
        mesh.x_desc(&chart.x_desc)
            .y_desc(&chart.y_desc)
            .x_labels(chart.x_labels.len().min(8))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(WHITE.mix(0.0));
        if let Some(n) = &chart.y_names {
            mesh.y_labels(n.len() * 2 + 1);
        }
        mesh.draw().map_err(err)?;
        for l in &chart.lines {
            let color = series_color(l.color);
            let pts: Vec<(i64, f64)> = l
                .points
                .iter()
                .map(|(x, y)| (*x, tf(*y)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            let style = if l.reference {
                color.mix(0.45).stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            if l.scatter {
                let s = c
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                    .map_err(err)?;
                if !l.label.is_empty() {
                    s.label(l.label.clone())
                        .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
                }
                continue;
            }
            let series = c
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?;
            if !l.label.is_empty() {
                series
                    .label(l.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            if l.marks {
                c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(err)?;
            }
        }
        if chart.lines.iter().any(|l| !l.label.is_empty()) {
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Grouped bars: one group per label, one bar per series (`(legend,
/// colour index, value per label)`); distributions side by side.
pub(crate) fn bars(
    title: &str,
    y_desc: &str,
    labels: &[String],
    series: &[(String, usize, Vec<f64>)],
) -> Result<String> {
    let n = labels.len().max(1) as i64;
    let top = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .filter(|v| v.is_finite() && v.abs() < 1e300)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let per = series.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(err)?;
        let step = (labels.len() / 10).max(1);
        c.configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(labels.len().min(12) + 1)
            .x_label_formatter(&|x: &f64| {
                let i = x.floor();
                let near = (x - i - 0.5).abs() < 0.26 || (x - i).abs() < 1e-9;
                match labels.get(i as usize) {
                    Some(l) if near && (i as usize).is_multiple_of(step) => l.clone(),
                    _ => String::new(),
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (k, (label, color, values)) in series.iter().enumerate() {
            let color = series_color(*color);
            let style = color.mix(if k == 0 { 0.45 } else { 0.85 }).filled();
            let s = c
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + 0.8 * k as f64 / per;
                    let x1 = x0 + 0.8 / per;
                    Rectangle::new([(x0, 0.0), (x1, v.max(0.0))], style)
                }))
                .map_err(err)?;
            s.label(label.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], style));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One cell of a [`heatmap`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    /// Row (column tested).
    pub row: usize,
    /// Window index.
    pub window: usize,
    /// Severity: the statistic relative to its threshold, 1 at the
    /// threshold (distance / threshold, or threshold / p-value).
    pub severity: f64,
    /// Whether the test flagged drift.
    pub drifted: bool,
}

/// Colour of a severity: white far below the threshold, yellow near it,
/// red well above (log scale, clamped at 1/10 and 10 times).
fn severity_color(s: f64) -> RGBColor {
    let t = ((s.max(1e-12).log10() + 1.0) / 2.0).clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64, u: f64| (a + (b - a) * u).round() as u8;
    if t < 0.5 {
        let u = t / 0.5;
        RGBColor(
            lerp(247.0, 253.0, u),
            lerp(251.0, 219.0, u),
            lerp(255.0, 120.0, u),
        )
    } else {
        let u = (t - 0.5) / 0.5;
        RGBColor(
            lerp(253.0, 190.0, u),
            lerp(219.0, 30.0, u),
            lerp(120.0, 45.0, u),
        )
    }
}

/// A heat map of drift: one row per tested column, one cell per window,
/// coloured by severity; drifted cells outlined in black with a dot.
pub(crate) fn heatmap(
    title: &str,
    rows: &[String],
    windows: &[String],
    cells: &[Cell],
) -> Result<String> {
    let (nw, nr) = (windows.len().max(1) as i64, rows.len().max(1) as i64);
    let height = (90 + 26 * nr as u32).max(160);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(150)
            .build_cartesian_2d((0i64..nw).into_segmented(), (0i64..nr).into_segmented())
            .map_err(err)?;
        let label = |names: &[String], v: &SegmentValue<i64>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        c.configure_mesh()
            .disable_mesh()
            .x_labels(windows.len().min(10))
            .y_labels(rows.len())
            .x_label_formatter(&|v| label(windows, v))
            .y_label_formatter(&|v| label(rows, v))
            .x_desc("window end")
            .draw()
            .map_err(err)?;
        let at = |v: i64| SegmentValue::Exact(v);
        c.draw_series(cells.iter().map(|cell| {
            let (x, y) = (cell.window as i64, cell.row as i64);
            Rectangle::new(
                [(at(x), at(y)), (at(x + 1), at(y + 1))],
                severity_color(cell.severity).filled(),
            )
        }))
        .map_err(err)?;
        c.draw_series(cells.iter().filter(|c| c.drifted).map(|cell| {
            let (x, y) = (cell.window as i64, cell.row as i64);
            Circle::new(
                (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                3,
                BLACK.filled(),
            )
        }))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_hold_their_elements() -> Result<()> {
        let chart = LineChart {
            title: "accuracy".into(),
            y_desc: "value".into(),
            x_labels: vec!["00:01".into(), "00:02".into(), "00:03".into()],
            lines: vec![Line {
                label: "v1".into(),
                points: vec![(0, 0.8), (1, 0.82), (2, f64::NAN)],
                marks: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let svg = lines(&chart)?;
        assert!(
            svg.contains("<polyline") && svg.contains("<circle"),
            "{svg}"
        );
        assert!(svg.contains("00:02") && svg.contains("v1"));
        let svg = heatmap(
            "drift",
            &["x".into(), "y".into()],
            &["a".into(), "b".into()],
            &[
                Cell {
                    row: 0,
                    window: 0,
                    severity: 0.1,
                    drifted: false,
                },
                Cell {
                    row: 1,
                    window: 1,
                    severity: 5.0,
                    drifted: true,
                },
            ],
        )?;
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.matches("<rect").count() >= 3);
        // White-ish far below the threshold, red above.
        assert!(severity_color(0.01).0 > 240 && severity_color(20.0).1 < 60);
        Ok(())
    }
}
