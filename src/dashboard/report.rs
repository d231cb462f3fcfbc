//! `mlwatch report`: the dashboard's pages as one self-contained HTML file
//! (inline SVG and CSS, no scripts, nothing fetched): the overview, each
//! model's and experiment's page, the registry and the tracked runs, as
//! sections linked from the navigation bar.

use super::html::{Links, document};
use super::{Dashboard, PageError};

/// Which parts a report holds: every model and experiment unless named;
/// naming only models keeps their experiments, naming only experiments
/// keeps their models.
#[derive(Debug, Clone, Default)]
pub struct ReportScope {
    /// Only these models (none: all).
    pub models: Vec<String>,
    /// Only these experiments (none: all).
    pub experiments: Vec<String>,
}

impl Dashboard {
    /// The report document; a model or experiment named in `scope` without
    /// data is [`PageError::NotFound`].
    pub async fn report(&self, scope: &ReportScope) -> Result<String, PageError> {
        Ok(self.report_of(scope).await?.0)
    }

    /// [`Dashboard::report`] with the scope it resolved to (the models and
    /// experiments it holds).
    pub async fn report_of(&self, scope: &ReportScope) -> Result<(String, ReportScope), PageError> {
        let ctx = self.context()?;
        #[derive(serde::Deserialize)]
        struct Pair {
            experiment: String,
            model: String,
        }
        let pairs: Vec<Pair> = super::query(
            &ctx,
            "SELECT DISTINCT experiment, model FROM ab_decisions ORDER BY experiment",
        )
        .await?;
        let (models, experiments) = match (scope.models.is_empty(), scope.experiments.is_empty()) {
            (true, true) => (self.models(&ctx).await?, self.experiments(&ctx).await?),
            (false, true) => {
                let e = pairs
                    .iter()
                    .filter(|p| scope.models.contains(&p.model))
                    .map(|p| p.experiment.clone())
                    .collect();
                (scope.models.clone(), e)
            }
            (true, false) => {
                let mut m: Vec<String> = pairs
                    .iter()
                    .filter(|p| scope.experiments.contains(&p.experiment))
                    .map(|p| p.model.clone())
                    .collect();
                m.sort();
                m.dedup();
                (m, scope.experiments.clone())
            }
            (false, false) => (scope.models.clone(), scope.experiments.clone()),
        };
        let links = Links::Report;
        let overview = self
            .overview_of(links, Some((&models, &experiments)))
            .await?;
        let mut sections = vec![("overview".to_string(), overview)];
        for m in &models {
            sections.push((
                format!("model-{}", super::html::enc(m)),
                self.model(m, links).await?,
            ));
        }
        for e in &experiments {
            sections.push((
                format!("experiment-{}", super::html::enc(e)),
                self.experiment(e, links).await?,
            ));
        }
        sections.push(("registry".into(), self.registry(links).await?));
        sections.push(("runs".into(), self.runs("", None, links).await?));
        let body: String = sections
            .iter()
            .map(|(id, p)| {
                format!(
                    "<section id=\"{}\">{}</section>",
                    super::html::esc(id),
                    p.body
                )
            })
            .collect();
        Ok((
            document("Report", &body, links),
            ReportScope {
                models,
                experiments,
            },
        ))
    }
}
