//! `mlwatch ab report`: an experiment's decision, cumulative results and
//! effect over time, read from the `ab_decisions` and `ab_results` tables,
//! as text, JSON or a self-contained HTML page (inline CSS and plotters
//! SVG; nothing fetched, so it opens offline).

use std::fmt::Write as _;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One decision row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// Window start.
    pub window_start: String,
    /// Window end.
    pub window_end: String,
    /// `ship`, `keep_control`, `keep_running`, `stop` or `invalid`.
    pub decision: String,
    /// The decision in words (`ship challenger`, `invalid: sample ratio
    /// mismatch`, ...).
    pub verdict: String,
    /// Variant it names.
    pub variant: Option<String>,
    /// Metric it names (the guardrail of a stop, else the primary).
    pub metric: Option<String>,
    /// The experiment's primary metric.
    pub primary_metric: String,
    /// The decision in words with its numbers.
    pub reason: String,
    /// Sample-ratio p-value.
    pub srm_p_value: Option<f64>,
    /// Units per variant (JSON list).
    pub unit_counts: String,
    /// Planned observations per variant.
    pub required_per_variant: Option<f64>,
    /// Observations in the smallest arm.
    pub smallest_n: i64,
    /// Progress towards the plan.
    pub progress: Option<f64>,
    /// Whether the decision changed at this window.
    pub changed: bool,
}

/// One cumulative result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Window end.
    pub window_end: String,
    /// Variant.
    pub variant: String,
    /// Model version.
    pub version: String,
    /// Whether it is the control.
    pub is_control: bool,
    /// Metric.
    pub metric: String,
    /// Observations.
    pub n: i64,
    /// The variant's value.
    pub estimate: Option<f64>,
    /// Variant minus control.
    pub effect: Option<f64>,
    /// Fixed-horizon interval of the effect.
    pub ci_low: Option<f64>,
    /// Upper end.
    pub ci_high: Option<f64>,
    /// Relative lift.
    pub relative_lift: Option<f64>,
    /// Its interval.
    pub lift_low: Option<f64>,
    /// Upper end.
    pub lift_high: Option<f64>,
    /// p-value.
    pub p_value: Option<f64>,
    /// Holm-adjusted p-value.
    pub p_value_adjusted: Option<f64>,
    /// Always-valid interval.
    pub cs_low: Option<f64>,
    /// Upper end.
    pub cs_high: Option<f64>,
    /// The test.
    pub test: Option<String>,
    /// Significant after Holm.
    pub significant: Option<bool>,
}

/// An experiment's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Experiment.
    pub experiment: String,
    /// Model.
    pub model: String,
    /// The latest decision.
    pub decision: DecisionRow,
    /// The decision in words (`ship challenger`, ...).
    pub verdict: String,
    /// Cumulative results at the latest window.
    pub results: Vec<ResultRow>,
    /// Every window's decision.
    pub history: Vec<DecisionRow>,
    /// Cumulative results of the charted metrics, every window (non-control).
    pub series: Vec<ResultRow>,
}

pub(crate) fn rows<T: for<'de> Deserialize<'de>>(batches: &[RecordBatch]) -> Result<Vec<T>> {
    let mut w = arrow_json::ArrayWriter::new(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Task {
        task: "reading query rows",
        reason: e.to_string(),
    })
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Builds the report of `experiment` from the tables registered on `ctx`.
/// An experiment without rows is an error naming the ones that have some.
pub async fn build(ctx: &SessionContext, experiment: &str) -> Result<Report> {
    let known: Vec<serde_json::Value> = rows(
        &ctx.sql("SELECT DISTINCT experiment FROM ab_decisions ORDER BY experiment")
            .await?
            .collect()
            .await?,
    )?;
    let names: Vec<String> = known
        .iter()
        .filter_map(|v| v["experiment"].as_str().map(str::to_string))
        .collect();
    if !names.iter().any(|n| n == experiment) {
        return Err(Error::Task {
            task: "ab report",
            reason: format!(
                "experiment `{experiment}` has no results (experiments with results: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        });
    }
    let e = quote(experiment);
    let history: Vec<DecisionRow> = rows(
        &ctx.sql(&format!(
            "SELECT CAST(window_start AS VARCHAR) AS window_start, CAST(window_end AS VARCHAR) AS window_end, \
             decision, verdict, variant, metric, primary_metric, reason, srm_p_value, unit_counts, required_per_variant, \
             smallest_n, progress, changed FROM ab_decisions WHERE experiment = {e} ORDER BY window_start"
        ))
        .await?
        .collect()
        .await?,
    )?;
    let model: Vec<serde_json::Value> = rows(
        &ctx.sql(&format!(
            "SELECT any_value(model) AS model FROM ab_decisions WHERE experiment = {e}"
        ))
        .await?
        .collect()
        .await?,
    )?;
    let model = model
        .first()
        .and_then(|v| v["model"].as_str())
        .unwrap_or_default()
        .to_string();
    let decision = history.last().cloned().ok_or_else(|| Error::Task {
        task: "ab report",
        reason: format!("experiment `{experiment}` has no decisions"),
    })?;
    let cols = "CAST(window_end AS VARCHAR) AS window_end, variant, version, is_control, metric, n, \
                estimate, effect, ci_low, ci_high, relative_lift, lift_low, lift_high, p_value, \
                p_value_adjusted, cs_low, cs_high, test, significant";
    let results: Vec<ResultRow> = rows(
        &ctx.sql(&format!(
            "SELECT {cols} FROM ab_results WHERE experiment = {e} AND scope = 'cumulative' \
             AND window_start = (SELECT max(window_start) FROM ab_results WHERE experiment = {e}) \
             ORDER BY metric, is_control DESC, variant"
        ))
        .await?
        .collect()
        .await?,
    )?;
    let primary = decision.primary_metric.clone();
    let series: Vec<ResultRow> = rows(
        &ctx.sql(&format!(
            "SELECT {cols} FROM ab_results WHERE experiment = {e} AND scope = 'cumulative' \
             AND NOT is_control AND metric IN ({}, 'latency_mean') ORDER BY metric, variant, window_end",
            quote(&primary)
        ))
        .await?
        .collect()
        .await?,
    )?;
    let verdict = decision.verdict.clone();
    Ok(Report {
        experiment: experiment.to_string(),
        model,
        decision,
        verdict,
        results,
        history,
        series,
    })
}

pub(crate) fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if (1e4..1e12).contains(&x.abs()) => format!("{x:.0}"),
        Some(x) if x.abs() >= 1e4 || (x != 0.0 && x.abs() < 1e-3) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

/// The report as text.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let d = &r.decision;
    let _ = writeln!(s, "experiment {} (model {})", r.experiment, r.model);
    let _ = writeln!(s, "decision at {}: {}", d.window_end, r.verdict);
    let _ = writeln!(s, "  {}", d.reason);
    let _ = writeln!(
        s,
        "  units per variant {} (sample-ratio p = {}); planned {} per variant, progress {}",
        d.unit_counts,
        num(d.srm_p_value),
        num(d.required_per_variant),
        d.progress
            .map_or("-".into(), |p| format!("{:.0}%", p * 100.0))
    );
    let _ = writeln!(
        s,
        "\n{:<14} {:<11} {:>8} {:>10} {:>10} {:>22} {:>22} {:>10} {:>10}  test",
        "metric",
        "variant",
        "n",
        "estimate",
        "effect",
        "95% interval",
        "always-valid",
        "lift",
        "p (Holm)"
    );
    for x in &r.results {
        let iv = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("[{}, {}]", num(Some(a)), num(Some(b))),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<14} {:<11} {:>8} {:>10} {:>10} {:>22} {:>22} {:>10} {:>10}  {}",
            x.metric,
            if x.is_control {
                format!("{}*", x.variant)
            } else {
                x.variant.clone()
            },
            x.n,
            num(x.estimate),
            num(x.effect),
            iv(x.ci_low, x.ci_high),
            iv(x.cs_low, x.cs_high),
            x.relative_lift
                .map_or("-".into(), |l| format!("{:+.1}%", l * 100.0)),
            pval(x.p_value_adjusted),
            x.test.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(s, "(* control)\n\nhistory:");
    for h in r.history.iter().filter(|h| h.changed) {
        let _ = writeln!(s, "  {}  {}: {}", h.window_end, h.verdict, h.reason);
    }
    s
}

pub(crate) fn chart(metric: &str, rows: &[&ResultRow]) -> Result<String> {
    let mut svg = String::new();
    let ends: Vec<&str> = {
        let mut v: Vec<&str> = rows.iter().map(|r| r.window_end.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let x_of = |w: &str| ends.iter().position(|e| *e == w).unwrap_or(0) as i64;
    let vals = rows
        .iter()
        .flat_map(|r| [r.cs_low, r.cs_high, r.ci_low, r.ci_high, r.effect])
        .flatten()
        .filter(|v| v.is_finite());
    let (mut y0, mut y1) = (0.0f64, 0.0f64);
    for v in vals {
        y0 = y0.min(v);
        y1 = y1.max(v);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let err = |e: &dyn std::fmt::Display| Error::Task {
        task: "ab report",
        reason: e.to_string(),
    };
    {
        let root = SVGBackend::with_string(&mut svg, (860, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!("{metric}: effect vs control (cumulative)"),
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0i64..(ends.len() as i64 - 1).max(1), (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        let labels = crate::tracking::plot::time_labels(&ends);
        c.configure_mesh()
            .x_desc("window end")
            .x_labels(ends.len().min(8))
            .x_label_formatter(&|x: &i64| labels.get(*x as usize).cloned().unwrap_or_default())
            .y_desc("variant − control")
            .draw()
            .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            [(0, 0.0), ((ends.len() as i64 - 1).max(1), 0.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| err(&e))?;
        let mut variants: Vec<&str> = rows.iter().map(|r| r.variant.as_str()).collect();
        variants.dedup();
        for (i, v) in variants.iter().enumerate() {
            let color = crate::tracking::plot::series_color(i);
            let mine: Vec<&&ResultRow> = rows.iter().filter(|r| r.variant == *v).collect();
            let band = |lo: fn(&ResultRow) -> Option<f64>, hi: fn(&ResultRow) -> Option<f64>| {
                let upper: Vec<(i64, f64)> = mine
                    .iter()
                    .filter_map(|r| Some((x_of(&r.window_end), hi(r)?)))
                    .collect();
                let mut lower: Vec<(i64, f64)> = mine
                    .iter()
                    .filter_map(|r| Some((x_of(&r.window_end), lo(r)?)))
                    .collect();
                lower.reverse();
                upper.into_iter().chain(lower).collect::<Vec<_>>()
            };
            c.draw_series(std::iter::once(Polygon::new(
                band(|r| r.cs_low, |r| r.cs_high),
                color.mix(0.12).filled(),
            )))
            .map_err(|e| err(&e))?;
            c.draw_series(std::iter::once(Polygon::new(
                band(|r| r.ci_low, |r| r.ci_high),
                color.mix(0.28).filled(),
            )))
            .map_err(|e| err(&e))?;
            c.draw_series(LineSeries::new(
                mine.iter()
                    .filter_map(|r| Some((x_of(&r.window_end), r.effect?))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(format!("{v} (dark: 95% interval, light: always-valid)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// A p-value (one that underflowed shows as such, not as 0).
fn pval(v: Option<f64>) -> String {
    match v {
        Some(p) if p < 1e-300 => "<1e-300".into(),
        _ => num(v),
    }
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> Result<String> {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Experiment {}</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:13px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}\
         td.l{{text-align:left}}.verdict{{font-size:1.4em;font-weight:bold}}\
         .ship{{color:#1a7f37}}.invalid,.stop{{color:#b42318}}.keep_control,.keep_running{{color:#555}}\
         </style></head><body>",
        esc(&r.experiment)
    );
    s.push_str(&body(r, 1)?);
    s.push_str("</body></html>\n");
    Ok(s)
}

/// The report's content (headings from level `h`), for a page of its own
/// or a section of the dashboard.
pub(crate) fn body(r: &Report, h: u8) -> Result<String> {
    let mut s = String::new();
    let d = &r.decision;
    let h2 = h + 1;
    let _ = write!(
        s,
        "<h{h}>Experiment {} <small>(model {})</small></h{h}><p class=\"verdict {}\">{}</p><p>{}</p>\
         <p>Units per variant {} (sample-ratio p = {}); planned {} per variant; progress {}. As of {}.</p>",
        esc(&r.experiment),
        esc(&r.model),
        esc(&d.decision),
        esc(&r.verdict),
        esc(&d.reason),
        esc(&d.unit_counts),
        num(d.srm_p_value),
        num(d.required_per_variant),
        d.progress
            .map_or("-".into(), |p| format!("{:.0}%", p * 100.0)),
        esc(&d.window_end),
    );
    let mut metrics: Vec<&str> = r.series.iter().map(|x| x.metric.as_str()).collect();
    metrics.dedup();
    for m in metrics {
        let rows: Vec<&ResultRow> = r.series.iter().filter(|x| x.metric == m).collect();
        let _ = write!(
            s,
            "<figure class=\"chart\" data-chart=\"effect-{}\">{}</figure>",
            esc(m),
            chart(m, &rows)?
        );
    }
    let _ = write!(s, "<h{h2}>Cumulative results</h{h2}>");
    s.push_str("<table><tr><th>metric</th><th>variant</th><th>n</th><th>estimate</th><th>effect</th><th>95% interval</th><th>always-valid</th><th>lift</th><th>p</th><th>p (Holm)</th><th>test</th></tr>");
    for x in &r.results {
        let iv = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("[{}, {}]", num(Some(a)), num(Some(b))),
            _ => "-".into(),
        };
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(&x.metric),
            esc(&x.variant),
            if x.is_control { " (control)" } else { "" },
            x.n,
            num(x.estimate),
            num(x.effect),
            iv(x.ci_low, x.ci_high),
            iv(x.cs_low, x.cs_high),
            x.relative_lift
                .map_or("-".into(), |l| format!("{:+.1}%", l * 100.0)),
            pval(x.p_value),
            pval(x.p_value_adjusted),
            esc(x.test.as_deref().unwrap_or("-"))
        );
    }
    let _ = write!(
        s,
        "</table><h{h2}>Decisions</h{h2}><table><tr><th>window end</th><th>decision</th></tr>"
    );
    for h in r.history.iter().filter(|h| h.changed) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"l\"><b>{}</b>: {}</td></tr>",
            esc(&h.window_end),
            esc(&h.verdict),
            esc(&h.reason)
        );
    }
    s.push_str("</table>");
    Ok(s)
}
