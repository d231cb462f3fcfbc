//! Experiment tracking pages: runs searched with the filter syntax of
//! `mlwatch runs search`, one run (params, metrics, tags, artifacts and its
//! metric curves), and runs compared side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use datafusion::prelude::SessionContext;
use serde::Deserialize;

use super::html::{self, Links, Page, enc, esc, figure};
use super::{Dashboard, PageError, query};
use crate::tracking::{ExperimentTracker, filter, sql_list};

/// Runs whose curves a search page draws, and metrics charted per page.
const MAX_CURVE_RUNS: usize = 10;
const MAX_CURVE_METRICS: usize = 4;
/// Runs one comparison may hold.
const MAX_COMPARED: usize = 10;

#[derive(Deserialize)]
struct Point {
    run_id: String,
    key: String,
    step: i64,
    value: Option<f64>,
}

/// Checks a run id's form (32 hex digits, as `mlwatch runs` prints them).
fn run_id(id: &str) -> Result<&str, PageError> {
    if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(PageError::BadRequest {
            what: "run id",
            reason: format!("`{id}` is not 32 hex digits"),
        })
    }
}

/// Charts of the metrics of `runs` (id, name) by step: one chart per key
/// (the first [`MAX_CURVE_METRICS`] by name), one line per run.
async fn curves(ctx: &SessionContext, runs: &[(String, String)]) -> Result<String, PageError> {
    if runs.is_empty() {
        return Ok(String::new());
    }
    let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
    let points: Vec<Point> = query(
        ctx,
        &format!(
            "SELECT run_id, key, step, value FROM metrics WHERE run_id IN ({}) \
             ORDER BY key, run_id, step, timestamp",
            sql_list(&ids)
        ),
    )
    .await?;
    let keys: BTreeSet<&str> = points.iter().map(|p| p.key.as_str()).collect();
    let mut out = String::new();
    for key in keys.iter().take(MAX_CURVE_METRICS) {
        let series: Vec<crate::tracking::plot::Series> = runs
            .iter()
            .map(|(id, name)| {
                let pts = points
                    .iter()
                    .filter(|p| &p.run_id == id && p.key == *key)
                    .filter_map(|p| Some((p.step, p.value?)))
                    .collect();
                (name.clone(), pts)
            })
            .filter(|(_, p): &(String, Vec<(i64, f64)>)| !p.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        out.push_str(&figure(
            &format!("metric-{key}"),
            &crate::tracking::plot::metric_svg(key, &series)?,
        ));
    }
    if keys.len() > MAX_CURVE_METRICS {
        let _ = write!(
            out,
            "<p class=\"muted\">Also logged: {}.</p>",
            esc(&keys
                .iter()
                .skip(MAX_CURVE_METRICS)
                .copied()
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    Ok(out)
}

/// Names of `ids` that exist; an unknown one is [`PageError::NotFound`].
async fn run_names(ctx: &SessionContext, ids: &[&str]) -> Result<Vec<(String, String)>, PageError> {
    let names = crate::tracking::text_map(
        ctx,
        &format!(
            "SELECT run_id, coalesce(run_name, run_id) FROM runs WHERE run_id IN ({})",
            sql_list(ids)
        ),
    )
    .await?;
    ids.iter()
        .map(|id| match names.get(*id) {
            Some(n) => Ok((id.to_string(), n.clone())),
            None => Err(PageError::NotFound {
                what: "run",
                name: id.to_string(),
                known: Vec::new(),
            }),
        })
        .collect()
}

impl Dashboard {
    /// Runs matching `filter` (MLflow-style, as `mlwatch runs search`),
    /// with their curves; a malformed filter is [`PageError::BadRequest`].
    pub(crate) async fn runs(
        &self,
        filter_text: &str,
        experiment: Option<&str>,
        links: Links,
    ) -> Result<Page, PageError> {
        let sql = filter::translate(filter_text, experiment)
            .map_err(|e| PageError::BadRequest {
                what: "filter",
                reason: e.to_string(),
            })?
            .sql;
        // Neither reaping nor compacting: a page only reads (runs of dead
        // processes show as RUNNING until a CLI read reaps them).
        let tracker = ExperimentTracker::new(self.storage().clone());
        let ctx = tracker.tables_context().await?;
        // The query is the filter's: a plan it cannot make, or a value it
        // cannot convert, is the filter's fault; storage failures are not.
        let blame = |e: datafusion::error::DataFusionError| match e.find_root() {
            datafusion::error::DataFusionError::ObjectStore(_)
            | datafusion::error::DataFusionError::IoError(_)
            | datafusion::error::DataFusionError::External(_) => PageError::from(e),
            _ => PageError::BadRequest {
                what: "filter",
                reason: e.to_string(),
            },
        };
        let found = ctx
            .sql(&sql)
            .await
            .map_err(blame)?
            .collect()
            .await
            .map_err(blame)?;
        let mut body = String::from("<h1>Runs</h1>");
        if links == Links::Server {
            let _ = write!(
                body,
                "<form method=\"get\" action=\"/runs\"><input type=\"text\" name=\"filter\" value=\"{}\" \
                 placeholder=\"metrics.val_accuracy > 0.8 and params.max_depth = '6' order by metrics.val_accuracy desc\">\
                 <input type=\"submit\" value=\"Search\"></form>",
                esc(filter_text)
            );
        }
        let to = |id: &str| links.run(id);
        body.push_str(&html::batches(&found, Some(("run_id", &to)))?);
        let mut runs: Vec<(String, String)> = Vec::new();
        for b in &found {
            let (Some(ids), Some(names)) =
                (b.column_by_name("run_id"), b.column_by_name("run_name"))
            else {
                continue;
            };
            let opts = Default::default();
            let (ids, names) = (
                datafusion::arrow::util::display::ArrayFormatter::try_new(ids.as_ref(), &opts)?,
                datafusion::arrow::util::display::ArrayFormatter::try_new(names.as_ref(), &opts)?,
            );
            for i in 0..b.num_rows() {
                runs.push((ids.value(i).to_string(), names.value(i).to_string()));
            }
        }
        if runs.len() >= 2 && links == Links::Server {
            let ids: Vec<&str> = runs
                .iter()
                .take(MAX_CURVE_RUNS)
                .map(|(i, _)| i.as_str())
                .collect();
            let _ = write!(
                body,
                "<p><a href=\"/compare?runs={}\">Compare these runs</a></p>",
                enc(&ids.join(","))
            );
        }
        runs.truncate(MAX_CURVE_RUNS);
        body.push_str("<h2>Metric curves</h2>");
        body.push_str(&curves(&ctx, &runs).await?);
        Ok(Page {
            title: "Runs".into(),
            body,
        })
    }

    /// One run; an id of the wrong form is [`PageError::BadRequest`], an
    /// unknown one [`PageError::NotFound`].
    pub(crate) async fn run(&self, id: &str) -> Result<Page, PageError> {
        let id = run_id(id)?;
        let tracker = ExperimentTracker::new(self.storage().clone());
        let ctx = tracker.tables_context().await?;
        let named = run_names(&ctx, &[id]).await?;
        let mut body = format!("<h1>Run {}</h1>", esc(&named[0].1));
        let q = filter::quote(id);
        for (title, sql) in [
            ("Run", format!("SELECT * FROM runs WHERE run_id = {q}")),
            (
                "Params",
                format!("SELECT key, value FROM params WHERE run_id = {q} ORDER BY key"),
            ),
            (
                "Latest metrics",
                format!(
                    "SELECT key, value, step FROM latest_metrics WHERE run_id = {q} ORDER BY key"
                ),
            ),
            (
                "Tags",
                format!("SELECT key, value FROM tags WHERE run_id = {q} ORDER BY key"),
            ),
            (
                "Artifacts",
                format!(
                    "SELECT path, size, sha256 FROM artifacts WHERE run_id = {q} ORDER BY path"
                ),
            ),
        ] {
            let _ = write!(body, "<h2>{title}</h2>");
            body.push_str(&html::batches(
                &ctx.sql(&sql).await?.collect().await?,
                None,
            )?);
        }
        body.push_str("<h2>Metric curves</h2>");
        body.push_str(&curves(&ctx, &named).await?);
        Ok(Page {
            title: format!("Run {}", named[0].1),
            body,
        })
    }

    /// Runs side by side: params and latest metrics (rows that differ
    /// marked), and each metric's curves together.
    pub(crate) async fn compare(&self, ids: &str) -> Result<Page, PageError> {
        let mut unique: Vec<&str> = Vec::new();
        for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        let ids = unique;
        if ids.len() > MAX_COMPARED {
            return Err(PageError::BadRequest {
                what: "runs",
                reason: format!("compare at most {MAX_COMPARED} runs (got {})", ids.len()),
            });
        }
        if ids.len() < 2 {
            return Err(PageError::BadRequest {
                what: "runs",
                reason: "give at least two run ids, comma-separated (`/compare?runs=ID,ID`)".into(),
            });
        }
        for id in &ids {
            run_id(id)?;
        }
        let tracker = ExperimentTracker::new(self.storage().clone());
        let ctx = tracker.tables_context().await?;
        let runs = run_names(&ctx, &ids).await?;
        let list = sql_list(&ids);
        let mut table: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        #[derive(Deserialize)]
        struct Kv {
            run_id: String,
            key: String,
            value: serde_json::Value,
        }
        for (prefix, source) in [("params", "params"), ("metrics", "latest_metrics")] {
            let rows: Vec<Kv> = query(
                &ctx,
                &format!("SELECT run_id, key, value FROM {source} WHERE run_id IN ({list})"),
            )
            .await?;
            for r in rows {
                let v = match r.value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                table
                    .entry(format!("{prefix}.{}", r.key))
                    .or_default()
                    .insert(r.run_id, v);
            }
        }
        let mut header = vec!["key"];
        header.extend(runs.iter().map(|(_, n)| n.as_str()));
        let rows: Vec<Vec<String>> = table
            .iter()
            .map(|(k, row)| {
                let values: BTreeSet<Option<&String>> = ids.iter().map(|i| row.get(*i)).collect();
                let differs = values.len() > 1;
                std::iter::once(if differs {
                    format!("<b>{}</b> *", esc(k))
                } else {
                    esc(k)
                })
                .chain(
                    ids.iter()
                        .map(|i| esc(row.get(*i).map_or("-", String::as_str))),
                )
                .collect()
            })
            .collect();
        let mut body = String::from("<h1>Compare runs</h1>");
        body.push_str(&html::table(&header, &rows));
        body.push_str(
            "<p class=\"muted\">* the runs differ in this row.</p><h2>Metric curves</h2>",
        );
        body.push_str(&curves(&ctx, &runs).await?);
        Ok(Page {
            title: "Compare runs".into(),
            body,
        })
    }
}
