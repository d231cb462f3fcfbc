//! A model's page: drift per column over windows, the prediction's drift
//! against its baseline, data quality, performance against the registered
//! metric, concept-drift detections and alerts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::charts::{self, Cell, Line, LineChart};
use super::html::{self, Links, Page, esc, figure, short_time, time_labels};
use super::{Dashboard, PageError, query};
use crate::ab::report::{num, quote};

/// Metrics charted first when a model has many (the rest follow by name).
const METRIC_ORDER: [&str; 8] = [
    "accuracy", "f1", "roc_auc", "log_loss", "brier", "mae", "rmse", "r2",
];
/// At most this many performance charts and quality lines per page.
const MAX_CHARTS: usize = 6;
const MAX_QUALITY_LINES: usize = 8;

#[derive(Deserialize)]
struct DriftCell {
    version: String,
    kind: Option<String>,
    feature: String,
    window_end: String,
    severity: Option<f64>,
    drifted: bool,
}

#[derive(Deserialize)]
struct PredictionDrift {
    version: String,
    method: String,
    window_end: String,
    p_value: Option<f64>,
    distance: Option<f64>,
    threshold: Option<f64>,
}

#[derive(Deserialize)]
struct Quality {
    feature: String,
    window_end: String,
    share: Option<f64>,
}

#[derive(Deserialize)]
struct Perf {
    version: String,
    variant: String,
    metric: String,
    window_end: String,
    value: Option<f64>,
    baseline_value: Option<f64>,
    degraded: Option<bool>,
}

#[derive(Deserialize)]
struct Detection {
    version: String,
    detector: String,
    ts: String,
    window_end: String,
    input: String,
    statistic: Option<f64>,
    n_seen: i64,
}

#[derive(Deserialize)]
struct Alert {
    window_end: String,
    version: String,
    kind: String,
    column: Option<String>,
    message: String,
}

/// Index of each distinct text, in sorted order.
fn index(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut v: Vec<String> = items.into_iter().collect();
    v.sort();
    v.dedup();
    v.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
}

/// Sorted keys of an index, as x labels.
fn labels(ix: &BTreeMap<String, usize>) -> Vec<String> {
    time_labels(&ix.keys().collect::<Vec<_>>())
}

impl Dashboard {
    /// The page of `model`; an unknown model is [`PageError::NotFound`].
    pub(crate) async fn model(&self, model: &str, links: Links) -> Result<Page, PageError> {
        let ctx = self.context()?;
        let known = self.models(&ctx).await?;
        if !known.iter().any(|k| k == model) {
            return Err(PageError::NotFound {
                what: "model",
                name: model.to_string(),
                known,
            });
        }
        let m = quote(model);
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>Model {}</h1><p>Versions, stages and history: <a href=\"{}\">registry</a>.</p>",
            esc(model),
            esc(&links.page("registry"))
        );

        // Drift heat map, one per version.
        let cells: Vec<DriftCell> = query(
            &ctx,
            &format!(
                "SELECT version, kind, feature, CAST(window_end AS VARCHAR) AS window_end, \
                 max(CASE WHEN coalesce(p_value_adjusted, p_value) IS NOT NULL \
                     THEN threshold / greatest(coalesce(p_value_adjusted, p_value), 1e-300) \
                     ELSE distance / threshold END) AS severity, bool_or(drifted) AS drifted \
                 FROM drift_results WHERE model = {m} GROUP BY 1, 2, 3, 4"
            ),
        )
        .await?;
        let windows = index(cells.iter().map(|c| c.window_end.clone()));
        let x_labels = labels(&windows);
        body.push_str(
            "<h2>Drift per column</h2><p class=\"muted\">Colour: the test statistic against its \
             threshold (distance / threshold, or threshold / p-value; white far below, red well \
             above); a dot marks a window the test flagged.</p>",
        );
        let versions = index(cells.iter().map(|c| c.version.clone()));
        for v in versions.keys() {
            let mine: Vec<&DriftCell> = cells.iter().filter(|c| &c.version == v).collect();
            // The prediction first, then the features by name.
            let mut rows: Vec<(bool, String)> = mine
                .iter()
                .map(|c| (c.kind.as_deref() != Some("prediction"), c.feature.clone()))
                .collect();
            rows.sort();
            rows.dedup();
            let row_names: Vec<String> = rows.iter().map(|(_, f)| f.clone()).collect();
            let grid: Vec<Cell> = mine
                .iter()
                .filter_map(|c| {
                    Some(Cell {
                        row: row_names.iter().position(|r| r == &c.feature)?,
                        window: windows[&c.window_end],
                        severity: c.severity.unwrap_or(0.0),
                        drifted: c.drifted,
                    })
                })
                .collect();
            let svg = charts::heatmap(
                &format!("version {v}: drift by window"),
                &row_names,
                &x_labels,
                &grid,
            )?;
            body.push_str(&figure(&format!("drift-heatmap-v{v}"), &svg));
        }

        body.push_str("<h2>Prediction against its baseline</h2>");
        self.distribution_section(&ctx, &m, &mut body).await?;

        // The prediction's drift statistic over time.
        let pred: Vec<PredictionDrift> = query(
            &ctx,
            &format!(
                "SELECT version, method, CAST(window_end AS VARCHAR) AS window_end, \
                 coalesce(p_value_adjusted, p_value) AS p_value, distance, threshold \
                 FROM drift_results WHERE model = {m} AND kind = 'prediction' ORDER BY version, method, window_end"
            ),
        )
        .await?;
        let methods = index(pred.iter().map(|p| p.method.clone()));
        for method in methods.keys() {
            let mine: Vec<&PredictionDrift> = pred.iter().filter(|p| &p.method == method).collect();
            // NaN p-values (an untestable window) arrive as NULL: decide by
            // the method, not the values.
            let by_p = crate::stats::drift::DriftMethod::parse(method).map_or_else(
                || mine.iter().any(|p| p.p_value.is_some()),
                |d| d.is_p_value(),
            );
            let mut lines = Vec::new();
            let mut thresholds = Vec::new();
            for (i, v) in versions.keys().enumerate() {
                let pts: Vec<(i64, f64)> = mine
                    .iter()
                    .filter(|p| &p.version == v)
                    .filter_map(|p| {
                        let y = if by_p { p.p_value } else { p.distance }?;
                        Some((windows.get(&p.window_end).copied()? as i64, y))
                    })
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let threshold = mine
                    .iter()
                    .find(|p| &p.version == v)
                    .and_then(|p| p.threshold);
                lines.push(Line {
                    label: format!("version {v}"),
                    points: pts.clone(),
                    color: i,
                    marks: true,
                    ..Default::default()
                });
                thresholds.extend(threshold);
            }
            thresholds.sort_by(f64::total_cmp);
            thresholds.dedup();
            for t in thresholds {
                lines.push(Line {
                    label: format!("threshold {}", num(Some(t))),
                    points: vec![(0, t), ((windows.len() as i64 - 1).max(1), t)],
                    reference: true,
                    color: 8,
                    ..Default::default()
                });
            }
            let chart = LineChart {
                title: format!(
                    "prediction: {method} {} by window",
                    if by_p { "p-value" } else { "distance" }
                ),
                y_desc: if by_p { "p-value" } else { "distance" }.into(),
                x_labels: x_labels.clone(),
                x_desc: "window end".into(),
                lines,
                log_y: by_p,
                ..Default::default()
            };
            body.push_str(&figure(
                &format!("prediction-drift-{method}"),
                &charts::lines(&chart)?,
            ));
        }
        if methods.is_empty() {
            body.push_str(
                "<p class=\"muted\">The prediction is not tested (no prediction rows).</p>",
            );
        }

        self.quality_section(&ctx, &m, &mut body).await?;
        self.performance_section(&ctx, &m, &mut body).await?;
        self.detections_section(&ctx, &m, &mut body).await?;
        self.alerts_section(&ctx, &m, &mut body).await?;
        Ok(Page {
            title: format!("Model {model}"),
            body,
        })
    }

    /// The prediction's histogram per version: the baseline's, the first
    /// window's and the latest window's shares in the same bins.
    async fn distribution_section(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        m: &str,
        body: &mut String,
    ) -> Result<(), PageError> {
        #[derive(Deserialize)]
        struct Bin {
            version: String,
            feature: String,
            #[serde(rename = "end_text")]
            window_end: String,
            bin: i64,
            lower: Option<f64>,
            upper: Option<f64>,
            category: Option<String>,
            reference_share: f64,
            current_share: f64,
        }
        let rows: Vec<Bin> = query(
            ctx,
            &format!(
                "WITH w AS (SELECT version, min(window_end) AS first, max(window_end) AS last \
                 FROM prediction_distribution WHERE model = {m} GROUP BY version) \
                 SELECT d.version, d.feature, CAST(d.window_end AS VARCHAR) AS end_text, d.bin, d.lower, d.upper, \
                 d.category, d.reference_share, d.current_share FROM prediction_distribution d \
                 JOIN w ON d.version = w.version AND (d.window_end = w.first OR d.window_end = w.last) \
                 WHERE d.model = {m} ORDER BY d.version, end_text, d.bin"
            ),
        )
        .await?;
        if rows.is_empty() {
            body.push_str(
                "<p class=\"muted\">No histograms (<code>prediction_distribution</code> is empty: \
                 no prediction in the events, or none in the baseline).</p>",
            );
            return Ok(());
        }
        let mut versions: Vec<&str> = rows.iter().map(|r| r.version.as_str()).collect();
        versions.dedup();
        for v in versions {
            let mine: Vec<&Bin> = rows.iter().filter(|r| r.version == v).collect();
            let mut ends: Vec<&str> = mine.iter().map(|r| r.window_end.as_str()).collect();
            ends.dedup();
            let at = |end: &str| -> Vec<&Bin> {
                mine.iter()
                    .copied()
                    .filter(|r| r.window_end == end)
                    .collect()
            };
            let last = at(ends[ends.len() - 1]);
            let labels: Vec<String> = last
                .iter()
                .map(|r| match (&r.category, r.lower, r.upper) {
                    (Some(c), _, _) => c.clone(),
                    (None, Some(lo), Some(hi)) => format!("{:.2}", (lo + hi) / 2.0),
                    _ => r.bin.to_string(),
                })
                .collect();
            let mut series = vec![(
                "baseline".to_string(),
                8,
                last.iter().map(|r| r.reference_share).collect::<Vec<_>>(),
            )];
            // Numeric bins span each window's own range: the first window
            // shares them only when it is the latest one.
            let numeric = last.iter().all(|r| r.category.is_none());
            if ends.len() > 1 && !numeric {
                let first = at(ends[0]);
                let share = |label: &str| {
                    first
                        .iter()
                        .find(|r| r.category.as_deref() == Some(label))
                        .map_or(0.0, |r| r.current_share)
                };
                series.push((
                    format!("window ending {}", short_time(ends[0])),
                    2,
                    labels.iter().map(|l| share(l)).collect(),
                ));
            }
            series.push((
                format!("window ending {}", short_time(ends[ends.len() - 1])),
                1,
                last.iter().map(|r| r.current_share).collect(),
            ));
            let svg = charts::bars(
                &format!(
                    "version {v}: {} in the latest window against the baseline",
                    last[0].feature
                ),
                "share of values",
                &labels,
                &series,
            )?;
            body.push_str(&figure(&format!("prediction-histogram-v{v}"), &svg));
        }
        Ok(())
    }

    async fn quality_section(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        m: &str,
        body: &mut String,
    ) -> Result<(), PageError> {
        let rows: Vec<Quality> = query(
            ctx,
            &format!(
                "SELECT feature, CAST(window_end AS VARCHAR) AS window_end, \
                 max(missing_share + coalesce(out_of_range_share, 0) + coalesce(unseen_share, 0)) AS share \
                 FROM data_quality WHERE model = {m} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        )
        .await?;
        body.push_str("<h2>Data quality</h2>");
        if rows.is_empty() {
            body.push_str("<p class=\"muted\">No data-quality rows.</p>");
            return Ok(());
        }
        let windows = index(rows.iter().map(|r| r.window_end.clone()));
        // The columns with the largest problem share first.
        let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
        for r in &rows {
            let e = worst.entry(r.feature.as_str()).or_default();
            *e = e.max(r.share.unwrap_or(0.0));
        }
        let mut order: Vec<(&str, f64)> = worst.into_iter().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let shown: Vec<&str> = order
            .iter()
            .take(MAX_QUALITY_LINES)
            .map(|(f, _)| *f)
            .collect();
        let lines = shown
            .iter()
            .enumerate()
            .map(|(i, f)| Line {
                label: (*f).to_string(),
                points: rows
                    .iter()
                    .filter(|r| r.feature == *f)
                    .filter_map(|r| Some((windows[&r.window_end] as i64, r.share?)))
                    .collect(),
                color: i,
                ..Default::default()
            })
            .collect();
        let chart = LineChart {
            title: "share of values missing, out of range or unseen".into(),
            y_desc: "share of rows".into(),
            x_labels: labels(&windows),
            x_desc: "window end".into(),
            lines,
            ..Default::default()
        };
        body.push_str(&figure("quality", &charts::lines(&chart)?));
        if order.len() > shown.len() {
            let _ = write!(
                body,
                "<p class=\"muted\">The {} columns with the largest share are drawn; {} more have \
                 rows in <code>data_quality</code>.</p>",
                shown.len(),
                order.len() - shown.len()
            );
        }
        #[derive(Deserialize)]
        struct Breach {
            window_end: String,
            version: String,
            feature: String,
            breaches: String,
        }
        let breaches: Vec<Breach> = query(
            ctx,
            &format!(
                "SELECT CAST(window_end AS VARCHAR) AS window_end, version, feature, breaches FROM data_quality \
                 WHERE model = {m} AND breaches IS NOT NULL AND breaches <> '' \
                 AND window_end = (SELECT max(window_end) FROM data_quality WHERE model = {m}) \
                 ORDER BY version, feature"
            ),
        )
        .await?;
        body.push_str("<p>Breaches in the latest window:</p>");
        body.push_str(&html::table(
            &["window end", "version", "column", "breaches"],
            &breaches
                .iter()
                .map(|b| {
                    vec![
                        esc(&b.window_end),
                        esc(&b.version),
                        esc(&b.feature),
                        esc(&b.breaches),
                    ]
                })
                .collect::<Vec<_>>(),
        ));
        Ok(())
    }

    async fn performance_section(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        m: &str,
        body: &mut String,
    ) -> Result<(), PageError> {
        let rows: Vec<Perf> = query(
            ctx,
            &format!(
                "SELECT version, variant, metric, CAST(window_end AS VARCHAR) AS window_end, value, \
                 baseline_value, degraded FROM performance WHERE model = {m} \
                 ORDER BY metric, version, variant, window_end"
            ),
        )
        .await?;
        body.push_str("<h2>Performance</h2>");
        if rows.is_empty() {
            body.push_str(
                "<p class=\"muted\">No labelled predictions yet (no performance rows).</p>",
            );
            return Ok(());
        }
        let windows = index(rows.iter().map(|r| r.window_end.clone()));
        let mut metrics: Vec<String> = rows.iter().map(|r| r.metric.clone()).collect();
        metrics.sort_by_key(|x| {
            (
                METRIC_ORDER
                    .iter()
                    .position(|o| o == x)
                    .unwrap_or(usize::MAX),
                x.clone(),
            )
        });
        metrics.dedup();
        let series = index(rows.iter().map(|r| format!("{}/{}", r.version, r.variant)));
        for metric in metrics.iter().take(MAX_CHARTS) {
            let mut lines = Vec::new();
            for (key, &i) in &series {
                let mine: Vec<&Perf> = rows
                    .iter()
                    .filter(|r| {
                        &r.metric == metric && format!("{}/{}", r.version, r.variant) == *key
                    })
                    .collect();
                let Some(first) = mine.first() else { continue };
                let label = format!("v{} {}", first.version, first.variant);
                let x = |r: &Perf| windows[&r.window_end] as i64;
                lines.push(Line {
                    label: label.clone(),
                    points: mine.iter().filter_map(|r| Some((x(r), r.value?))).collect(),
                    color: i,
                    ..Default::default()
                });
                if let Some(b) = first.baseline_value {
                    lines.push(Line {
                        label: String::new(),
                        points: vec![(0, b), ((windows.len() as i64 - 1).max(1), b)],
                        reference: true,
                        color: i,
                        ..Default::default()
                    });
                }
                let degraded: Vec<(i64, f64)> = mine
                    .iter()
                    .filter(|r| r.degraded == Some(true))
                    .filter_map(|r| Some((x(r), r.value?)))
                    .collect();
                if !degraded.is_empty() {
                    lines.push(Line {
                        label: String::new(),
                        points: degraded,
                        color: i,
                        scatter: true,
                        ..Default::default()
                    });
                }
            }
            let chart = LineChart {
                title: format!(
                    "{metric} by window (thin: the version's registered value; dots: degraded)"
                ),
                y_desc: metric.clone(),
                x_labels: labels(&windows),
                x_desc: "window end".into(),
                lines,
                ..Default::default()
            };
            body.push_str(&figure(
                &format!("performance-{metric}"),
                &charts::lines(&chart)?,
            ));
        }
        if metrics.len() > MAX_CHARTS {
            let _ = write!(
                body,
                "<p class=\"muted\">Also in <code>performance</code>: {}.</p>",
                esc(&metrics[MAX_CHARTS..].join(", "))
            );
        }
        Ok(())
    }

    async fn detections_section(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        m: &str,
        body: &mut String,
    ) -> Result<(), PageError> {
        let rows: Vec<Detection> = query(
            ctx,
            &format!(
                "SELECT version, detector, CAST(ts AS VARCHAR) AS ts, CAST(window_end AS VARCHAR) AS window_end, \
                 input, statistic, n_seen FROM concept_drift WHERE model = {m} ORDER BY ts, version, detector"
            ),
        )
        .await?;
        body.push_str("<h2>Concept-drift detections</h2>");
        if rows.is_empty() {
            body.push_str("<p class=\"muted\">No detections.</p>");
            return Ok(());
        }
        let windows: Vec<String> = query::<serde_json::Value>(
            ctx,
            &format!(
                "SELECT DISTINCT CAST(window_end AS VARCHAR) AS w FROM performance WHERE model = {m} \
                 UNION SELECT DISTINCT CAST(window_end AS VARCHAR) AS w FROM concept_drift WHERE model = {m} ORDER BY w"
            ),
        )
        .await?
        .iter()
        .filter_map(|v| v["w"].as_str().map(str::to_string))
        .collect();
        let windows = index(windows);
        let detectors = index(rows.iter().map(|r| r.detector.clone()));
        let versions = index(rows.iter().map(|r| r.version.clone()));
        let lines = versions
            .iter()
            .map(|(v, &i)| Line {
                label: format!("version {v}"),
                points: rows
                    .iter()
                    .filter(|r| &r.version == v)
                    .filter_map(|r| {
                        // Versions side by side within a detector's row. The
                        // windows come from another query: a file written in
                        // between may be missing from them.
                        let offset = (i as f64 - (versions.len() as f64 - 1.0) / 2.0) * 0.15;
                        Some((
                            *windows.get(&r.window_end)? as i64,
                            detectors[&r.detector] as f64 + offset,
                        ))
                    })
                    .collect(),
                color: i,
                scatter: true,
                ..Default::default()
            })
            .collect();
        let chart = LineChart {
            title: "detections by window (error stream of the joined labels)".into(),
            y_desc: "detector".into(),
            x_labels: labels(&windows),
            x_desc: "window end".into(),
            lines,
            y_names: Some(detectors.keys().cloned().collect()),
            ..Default::default()
        };
        body.push_str(&figure("detections", &charts::lines(&chart)?));
        body.push_str(&html::table(
            &[
                "at",
                "version",
                "detector",
                "input",
                "statistic",
                "predictions seen",
            ],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        esc(&r.ts),
                        esc(&r.version),
                        esc(&r.detector),
                        esc(&r.input),
                        num(r.statistic),
                        r.n_seen.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ));
        Ok(())
    }

    async fn alerts_section(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        m: &str,
        body: &mut String,
    ) -> Result<(), PageError> {
        #[derive(Deserialize)]
        struct PerWindow {
            window_end: String,
            kind: String,
            n: i64,
        }
        let counts: Vec<PerWindow> = query(
            ctx,
            &format!(
                "SELECT CAST(window_end AS VARCHAR) AS window_end, kind, count(*) AS n FROM alerts \
                 WHERE model = {m} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        )
        .await?;
        body.push_str("<h2>Alerts</h2>");
        if counts.is_empty() {
            body.push_str("<p class=\"muted\">No alerts.</p>");
            return Ok(());
        }
        let windows = index(counts.iter().map(|c| c.window_end.clone()));
        let kinds = index(counts.iter().map(|c| c.kind.clone()));
        let lines = kinds
            .iter()
            .map(|(k, &i)| Line {
                label: k.clone(),
                points: counts
                    .iter()
                    .filter(|c| &c.kind == k)
                    .map(|c| (windows[&c.window_end] as i64, c.n as f64))
                    .collect(),
                color: i,
                marks: true,
                ..Default::default()
            })
            .collect();
        let chart = LineChart {
            title: "alerts by window and kind".into(),
            y_desc: "alerts".into(),
            x_labels: labels(&windows),
            x_desc: "window end".into(),
            lines,
            ..Default::default()
        };
        body.push_str(&figure("alerts", &charts::lines(&chart)?));
        // Drift and dataset drift have a state: raised until their
        // recovery. The other kinds are events, repeated while a breach
        // lasts (after the cool-down): shown with their latest window.
        let rows: Vec<Alert> = query(
            ctx,
            &format!(
                "WITH a AS (SELECT *, CASE kind WHEN 'recovered' THEN 'drift' \
                 WHEN 'dataset_recovered' THEN 'dataset_drift' ELSE kind END AS family FROM alerts WHERE model = {m}), \
                 l AS (SELECT *, row_number() OVER (PARTITION BY version, family, coalesce(\"column\", '') \
                 ORDER BY window_start DESC, alert_id DESC) AS rn FROM a) \
                 SELECT CAST(window_end AS VARCHAR) AS window_end, version, kind, \"column\", message FROM l \
                 WHERE rn = 1 ORDER BY CASE WHEN kind IN ('drift', 'dataset_drift') THEN 0 ELSE 1 END, window_end DESC, kind, version, \"column\""
            ),
        )
        .await?;
        let state = |kind: &str| match kind {
            "drift" | "dataset_drift" => "<b class=\"bad\">open</b>",
            "recovered" | "dataset_recovered" => "recovered",
            _ => "event",
        };
        let open = rows
            .iter()
            .filter(|a| matches!(a.kind.as_str(), "drift" | "dataset_drift"))
            .count();
        let _ = write!(
            body,
            "<p>The latest alert of each subject (version, kind, column): {open} drift alert(s) \
             open (raised and not recovered since); the other kinds are events, shown with the \
             window they last fired in.</p>"
        );
        body.push_str(&html::table(
            &[
                "state",
                "last window end",
                "version",
                "kind",
                "column",
                "message",
            ],
            &rows
                .iter()
                .map(|a| {
                    vec![
                        state(&a.kind).to_string(),
                        esc(&a.window_end),
                        esc(&a.version),
                        esc(&a.kind),
                        esc(a.column.as_deref().unwrap_or("")),
                        esc(&a.message),
                    ]
                })
                .collect::<Vec<_>>(),
        ));
        Ok(())
    }
}
