//! The registry's page: models, versions with stages and aliases, each
//! model's stages over time, and the full history of events.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::charts::{self, Line, LineChart};
use super::html::{self, Links, Page, figure};
use super::{Dashboard, PageError, query};

/// Stages bottom to top on the timeline's y axis.
const STAGES: [&str; 4] = ["archived", "dev", "staging", "production"];

#[derive(Deserialize)]
struct Event {
    time: String,
    model: String,
    version: i64,
    to_stage: Option<String>,
}

impl Dashboard {
    /// The registry page.
    pub(crate) async fn registry(&self, links: Links) -> Result<Page, PageError> {
        let ctx = crate::query::new_context(Default::default());
        crate::query::register_registry_tables(&ctx, self.storage()).await?;
        let mut body = String::from("<h1>Model registry</h1><h2>Models</h2>");
        let models = ctx
            .sql(
                "SELECT name, versions, latest_version, staging_version, production_version, aliases, \
                 updated_at FROM models ORDER BY name",
            )
            .await?
            .collect()
            .await?;
        body.push_str(&html::batches(
            &models,
            Some(("name", &|m: &str| links.model(m))),
        )?);
        body.push_str("<h2>Versions</h2>");
        let versions = ctx
            .sql(
                "SELECT name, version, stage, aliases, model_type, run_id, metrics, created_at, created_by \
                 FROM model_versions ORDER BY name, version",
            )
            .await?
            .collect()
            .await?;
        body.push_str(&html::batches(
            &versions,
            Some(("run_id", &|r: &str| links.run(r))),
        )?);

        let events: Vec<Event> = query(
            &ctx,
            "SELECT CAST(time AS VARCHAR) AS time, model, CAST(version AS BIGINT) AS version, to_stage \
             FROM registry_events ORDER BY seq, idx",
        )
        .await?;
        let names: Vec<String> = {
            let mut n: Vec<String> = events.iter().map(|e| e.model.clone()).collect();
            n.sort();
            n.dedup();
            n
        };
        body.push_str("<h2>Stages over time</h2>");
        for m in &names {
            let mine: Vec<&Event> = events.iter().filter(|e| &e.model == m).collect();
            // Each version's stage as a step line over the model's events.
            let mut stage: BTreeMap<i64, f64> = BTreeMap::new();
            let mut lines: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
            for (i, e) in mine.iter().enumerate() {
                let Some(to) = e.to_stage.as_deref() else {
                    continue;
                };
                let Some(y) = STAGES.iter().position(|s| *s == to) else {
                    continue;
                };
                let pts = lines.entry(e.version).or_default();
                if let Some(prev) = stage.get(&e.version) {
                    pts.push((i as i64, *prev));
                }
                pts.push((i as i64, y as f64));
                stage.insert(e.version, y as f64);
            }
            let last = (mine.len() as i64 - 1).max(1);
            for (v, pts) in lines.iter_mut() {
                if let Some(y) = stage.get(v) {
                    pts.push((last, *y));
                }
            }
            let chart = LineChart {
                title: format!("{m}: stage of each version, event by event"),
                y_desc: "stage".into(),
                x_labels: mine
                    .iter()
                    .map(|e| e.time.get(11..19).unwrap_or(&e.time).to_string())
                    .collect(),
                x_desc: "registry event (time)".into(),
                lines: lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, (v, points))| Line {
                        label: format!("version {v}"),
                        points,
                        color: i,
                        marks: true,
                        ..Default::default()
                    })
                    .collect(),
                y_names: Some(STAGES.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            };
            body.push_str(&figure(&format!("stages-{m}"), &charts::lines(&chart)?));
        }
        if names.is_empty() {
            body.push_str("<p class=\"muted\">The registry is empty.</p>");
        }
        body.push_str("<h2>History</h2>");
        let history = ctx
            .sql(
                "SELECT seq, time, actor, model, kind, version, from_stage, to_stage, alias, from_version, \
                 tag_key, tag_value, forced_rule FROM registry_events ORDER BY seq DESC, idx DESC",
            )
            .await?
            .collect()
            .await?;
        body.push_str(&html::batches(&history, None)?);
        let _ = write!(
            body,
            "<p class=\"muted\">{} event(s); the same tables in SQL: <code>models</code>, \
             <code>model_versions</code>, <code>registry_events</code>.</p>",
            events.len()
        );
        Ok(Page {
            title: "Registry".into(),
            body,
        })
    }
}
