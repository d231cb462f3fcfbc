//! An experiment's page: the decision and the numbers behind it (the A/B
//! report's content: each variant's effect with its 95% and always-valid
//! intervals over time), the sample-ratio check and the progress to the
//! planned sample size, window by window.

use super::charts::{self, Line, LineChart};
use super::html::{Links, Page, figure, time_labels};
use super::{Dashboard, PageError};
use crate::ab::report;

impl Dashboard {
    /// The page of `experiment`; one without decisions is
    /// [`PageError::NotFound`].
    pub(crate) async fn experiment(
        &self,
        experiment: &str,
        links: Links,
    ) -> Result<Page, PageError> {
        let ctx = self.context()?;
        let known = self.experiments(&ctx).await?;
        if !known.iter().any(|k| k == experiment) {
            return Err(PageError::NotFound {
                what: "experiment",
                name: experiment.to_string(),
                known,
            });
        }
        let r = report::build(&ctx, experiment).await?;
        let mut body = report::body(&r, 1)?;
        let ends: Vec<&str> = r.history.iter().map(|h| h.window_end.as_str()).collect();
        let x_labels = time_labels(&ends);
        let at = |f: fn(&report::DecisionRow) -> Option<f64>| -> Vec<(i64, f64)> {
            r.history
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((i as i64, f(h)?)))
                .collect()
        };
        let last = (x_labels.len() as i64 - 1).max(1);
        let srm = LineChart {
            title: "sample-ratio check: chi-square p-value of units per variant".into(),
            y_desc: "p-value".into(),
            x_labels: x_labels.clone(),
            x_desc: "window end".into(),
            lines: vec![
                Line {
                    label: "p-value".into(),
                    points: at(|h| h.srm_p_value),
                    marks: true,
                    ..Default::default()
                },
                Line {
                    label: "0.001: mismatch".into(),
                    points: vec![(0, 1e-3), (last, 1e-3)],
                    reference: true,
                    color: 4,
                    ..Default::default()
                },
            ],
            log_y: true,
            ..Default::default()
        };
        let progress = LineChart {
            title: "progress to the planned sample size per variant".into(),
            y_desc: "share of planned".into(),
            x_labels,
            x_desc: "window end".into(),
            lines: vec![
                Line {
                    label: "progress".into(),
                    points: at(|h| h.progress),
                    marks: true,
                    color: 2,
                    ..Default::default()
                },
                Line {
                    label: "planned".into(),
                    points: vec![(0, 1.0), (last, 1.0)],
                    reference: true,
                    color: 8,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        body.push_str("<h2>Sample ratio and progress</h2>");
        body.push_str(&figure("srm", &charts::lines(&srm)?));
        body.push_str(&figure("progress", &charts::lines(&progress)?));
        body.push_str(&format!(
            "<p>Model page: <a href=\"{}\">{}</a>.</p>",
            super::html::esc(&links.model(&r.model)),
            super::html::esc(&r.model)
        ));
        Ok(Page {
            title: format!("Experiment {experiment}"),
            body,
        })
    }
}
