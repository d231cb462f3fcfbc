//! The dashboard: pages over the tables `mlwatch sql` reads (local or S3
//! storage), served by `mlwatch serve` ([`server`]) or written as one
//! self-contained file by `mlwatch report` ([`report`]).
//!
//! Every page is built per request from a fresh DataFusion session over the
//! output, registry and tracking tables, so it shows what is stored now.
//! Charts are SVG drawn here with plotters ([`charts`]); pages carry inline
//! CSS and no scripts, and fetch nothing, so they work offline.
//!
//! | page | route | report section |
//! |---|---|---|
//! | overview: models, experiments, latest alerts | `/` | `#overview` |
//! | a model: drift heat map, prediction drift, quality, performance, detections, alerts | `/models/{model}` | `#model-{model}` |
//! | an experiment: effects with intervals, sample ratio, progress, decision | `/experiments/{name}` | `#experiment-{name}` |
//! | the registry: models, versions, stages, aliases, history | `/registry` | `#registry` |
//! | tracking: runs with search, a run, a comparison | `/runs?filter=`, `/runs/{id}`, `/compare?runs=a,b` | `#runs` |
//!
//! Bad requests (an unknown model, experiment or run; a malformed filter)
//! are [`PageError`]s: a 4xx page with the reason.

pub(crate) mod charts;
mod experiment;
pub(crate) mod html;
mod model;
mod registry;
pub mod report;
mod runs;
pub mod server;

use datafusion::prelude::SessionContext;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::storage::Storage;
use html::{Links, Page, esc};

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The model, experiment or run named in the request has no data.
    #[error("{what} `{name}` not found{}", known_list(.known))]
    NotFound {
        /// What was asked for (`model`, `experiment`, `run`).
        what: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist (empty when not listed).
        known: Vec<String>,
    },
    /// A request argument is malformed (a run filter, a run id).
    #[error("bad {what}: {reason}")]
    BadRequest {
        /// The argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Storage or a query failed.
    #[error(transparent)]
    Internal(#[from] Error),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (known: {})", known.join(", "))
    }
}

impl From<datafusion::arrow::error::ArrowError> for PageError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        PageError::Internal(e.into())
    }
}

impl From<datafusion::error::DataFusionError> for PageError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        PageError::Internal(e.into())
    }
}

/// Pages over one storage root.
#[derive(Clone)]
pub struct Dashboard {
    storage: Storage,
}

impl Dashboard {
    /// A dashboard over `storage`.
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// The storage it reads.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// A session with the output tables registered (the registry's and
    /// tracking's are registered by the pages that read them).
    fn context(&self) -> Result<SessionContext> {
        let ctx = crate::query::new_context(Default::default());
        crate::query::register_tables(&ctx, &self.storage)?;
        Ok(ctx)
    }

    /// Whether storage answers (a read of a key that need not exist).
    pub async fn ready(&self) -> Result<()> {
        self.storage.get_opt("_health").await.map(drop)
    }

    /// Models with results, in name order.
    async fn models(&self, ctx: &SessionContext) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT model FROM (SELECT model FROM drift_summary \
                   UNION ALL SELECT model FROM data_quality UNION ALL SELECT model FROM performance) \
                   ORDER BY model";
        names(ctx, sql, "model").await
    }

    /// Experiments with decisions, in name order.
    async fn experiments(&self, ctx: &SessionContext) -> Result<Vec<String>> {
        names(
            ctx,
            "SELECT DISTINCT experiment FROM ab_decisions ORDER BY experiment",
            "experiment",
        )
        .await
    }

    /// The overview: models and experiments with their latest state, and
    /// the latest alerts.
    pub(crate) async fn overview(&self, links: Links) -> Result<Page, PageError> {
        self.overview_of(links, None).await
    }

    /// The overview, limited to `scope` (models, experiments) when given: a
    /// report of some models links only to the sections it has.
    pub(crate) async fn overview_of(
        &self,
        links: Links,
        scope: Option<(&[String], &[String])>,
    ) -> Result<Page, PageError> {
        let ctx = self.context()?;
        let mut models = self.models(&ctx).await?;
        if let Some((m, _)) = scope {
            models.retain(|x| m.contains(x));
        }
        let mut body = String::from("<h1>mlwatch</h1><h2>Models</h2>");
        #[derive(Deserialize)]
        struct Latest {
            model: String,
            window_end: String,
            versions: i64,
            drifted: i64,
            alerts: Option<i64>,
        }
        let latest: Vec<Latest> = query(
            &ctx,
            "WITH last AS (SELECT model, max(window_end) AS w FROM drift_summary GROUP BY model) \
             SELECT s.model, CAST(last.w AS VARCHAR) AS window_end, count(DISTINCT s.version) AS versions, \
             sum(CASE WHEN s.dataset_drifted THEN 1 ELSE 0 END) AS drifted, \
             (SELECT count(*) FROM alerts a WHERE a.model = s.model AND a.window_end = last.w) AS alerts \
             FROM drift_summary s JOIN last ON s.model = last.model AND s.window_end = last.w \
             GROUP BY s.model, last.w ORDER BY s.model",
        )
        .await?;
        let rows: Vec<Vec<String>> = models
            .iter()
            .map(|m| {
                let l = latest.iter().find(|l| &l.model == m);
                vec![
                    format!("<a href=\"{}\">{}</a>", esc(&links.model(m)), esc(m)),
                    l.map_or("-".into(), |l| esc(&l.window_end)),
                    l.map_or("-".into(), |l| l.versions.to_string()),
                    l.map_or("-".into(), |l| l.drifted.to_string()),
                    l.and_then(|l| l.alerts)
                        .map_or("-".into(), |a| a.to_string()),
                ]
            })
            .collect();
        body.push_str(&html::table(
            &[
                "model",
                "latest window end",
                "versions",
                "versions with dataset drift",
                "alerts in the latest window",
            ],
            &rows,
        ));
        #[derive(Deserialize)]
        struct Share {
            model: String,
            version: String,
            window_end: String,
            share: Option<f64>,
        }
        let mut shares: Vec<Share> = query(
            &ctx,
            "SELECT model, version, CAST(window_end AS VARCHAR) AS window_end, share FROM drift_summary \
             ORDER BY model, version, window_end",
        )
        .await?;
        shares.retain(|s| models.contains(&s.model));
        if !shares.is_empty() {
            let mut windows: Vec<&str> = shares.iter().map(|s| s.window_end.as_str()).collect();
            windows.sort_unstable();
            windows.dedup();
            let mut series: Vec<(&str, &str)> = shares
                .iter()
                .map(|s| (s.model.as_str(), s.version.as_str()))
                .collect();
            series.dedup();
            let lines = series
                .iter()
                .enumerate()
                .map(|(i, (m, v))| charts::Line {
                    label: format!("{m} v{v}"),
                    points: shares
                        .iter()
                        .filter(|s| s.model == *m && s.version == *v)
                        .filter_map(|s| {
                            let x = windows.binary_search(&s.window_end.as_str()).ok()?;
                            Some((x as i64, s.share?))
                        })
                        .collect(),
                    color: i,
                    marks: true,
                    ..Default::default()
                })
                .collect();
            let chart = charts::LineChart {
                title: "share of columns drifted, by window".into(),
                y_desc: "share of columns".into(),
                x_labels: html::time_labels(&windows),
                x_desc: "window end".into(),
                lines,
                ..Default::default()
            };
            body.push_str(&html::figure("drift-share", &charts::lines(&chart)?));
        }
        body.push_str("<h2>Experiments</h2>");
        #[derive(Deserialize)]
        struct Decision {
            experiment: String,
            model: String,
            verdict: String,
            decision: String,
            progress: Option<f64>,
        }
        let mut decisions: Vec<Decision> = query(
            &ctx,
            "SELECT experiment, model, verdict, decision, progress FROM ab_decisions d \
             WHERE window_start = (SELECT max(window_start) FROM ab_decisions e WHERE e.experiment = d.experiment) \
             ORDER BY experiment",
        )
        .await?;
        if let Some((_, e)) = scope {
            decisions.retain(|d| e.contains(&d.experiment));
        }
        let rows: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                vec![
                    format!(
                        "<a href=\"{}\">{}</a>",
                        esc(&links.experiment(&d.experiment)),
                        esc(&d.experiment)
                    ),
                    esc(&d.model),
                    format!(
                        "<span class=\"{}\">{}</span>",
                        esc(&d.decision),
                        esc(&d.verdict)
                    ),
                    d.progress
                        .map_or("-".into(), |p| format!("{:.0}%", p * 100.0)),
                ]
            })
            .collect();
        body.push_str(&html::table(
            &["experiment", "model", "decision", "progress"],
            &rows,
        ));
        Ok(Page {
            title: "Overview".into(),
            body,
        })
    }
}

/// Rows of `sql` as `T` (through Arrow's JSON writer).
pub(crate) async fn query<T: for<'de> Deserialize<'de>>(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<T>> {
    crate::ab::report::rows(&ctx.sql(sql).await?.collect().await?)
}

/// The text column `col` of `sql`'s rows.
async fn names(ctx: &SessionContext, sql: &str, col: &str) -> Result<Vec<String>> {
    let rows: Vec<serde_json::Value> = query(ctx, sql).await?;
    Ok(rows
        .iter()
        .filter_map(|r| r[col].as_str().map(str::to_string))
        .collect())
}
