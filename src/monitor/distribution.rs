//! The prediction's distribution against its baseline, per window: the
//! evaluator behind the `prediction_distribution` table (and the model
//! page's histograms).
//!
//! For each (model, version) of a closed window (variants merged) and its
//! prediction column, the shares of the window's values and of the baseline
//! profile's in the same bins: a numeric prediction over
//! [`BINS`] equal-width bins spanning both (the window's bottom-k sample, so
//! a uniform-sample estimate above `window.sample_size` values: `sampled`),
//! a categorical one per category (the window's kept categories and the
//! profile's, the rest as `(other)`). Stateless: the rows come from the
//! window and the profile alone, so a replay writes the same file.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};

use super::reference::Profiles;
use crate::error::Result;
use crate::event::{ColumnKind, ModelCatalog};
use crate::pipeline::evaluate::{Evaluator, Output};
use crate::stats::drift::Reference;
use crate::stats::summary::shared_bins;
use crate::storage::tables::{self, PREDICTION_DISTRIBUTION_FILE_SCHEMA};
use crate::window::{ClosedWindow, ColumnSummary, GroupState};

/// Bins of a numeric prediction.
pub const BINS: usize = 20;
/// Categories of a categorical prediction kept by name (by window plus
/// baseline count; the rest are summed as `(other)`).
const CATEGORIES: usize = 20;
/// The name of the summed rest.
pub(crate) const OTHER: &str = "(other)";

#[derive(Debug, Clone, PartialEq)]
struct Row {
    version: String,
    feature: String,
    ty: &'static str,
    bin: i64,
    lower: Option<f64>,
    upper: Option<f64>,
    category: Option<String>,
    reference_share: f64,
    current_share: f64,
    n_reference: u64,
    n_current: u64,
    sampled: bool,
    baseline: String,
}

/// The prediction-distribution evaluator.
pub(crate) struct DistributionEvaluator {
    catalog: Arc<ModelCatalog>,
    profiles: Arc<Profiles>,
}

impl DistributionEvaluator {
    /// An evaluator over the shared profiles.
    pub(crate) fn new(catalog: Arc<ModelCatalog>, profiles: Arc<Profiles>) -> Self {
        Self { catalog, profiles }
    }

    fn rows_of(&self, g: &GroupState) -> Vec<Row> {
        let schema = &self.catalog.models[g.key.model];
        let profile = self.profiles.for_version(g.key.model, &g.key.version);
        let mut out = Vec::new();
        for ((def, summary), p) in schema.columns.iter().zip(&g.columns).zip(&profile.columns) {
            if def.kind != ColumnKind::Prediction || summary.rows() == 0 {
                continue;
            }
            let Some(reference) = p.as_ref().map(|p| p.reference.as_ref()) else {
                continue; // the baseline has no prediction to compare with
            };
            let base = Row {
                version: g.key.version.clone(),
                feature: def.name.clone(),
                ty: "numeric",
                bin: 0,
                lower: None,
                upper: None,
                category: None,
                reference_share: 0.0,
                current_share: 0.0,
                n_reference: 0,
                n_current: 0,
                sampled: false,
                baseline: profile.baseline.clone(),
            };
            match (summary, reference) {
                (ColumnSummary::Numeric(n), Reference::Numeric { sorted, .. }) => {
                    let current = n.sample.sorted_values();
                    let (edges, r, c) = shared_bins(sorted, &current, BINS);
                    let (nr, nc) = (r.iter().sum::<u64>(), c.iter().sum::<u64>());
                    for i in 0..r.len() {
                        out.push(Row {
                            bin: i as i64,
                            lower: Some(edges[i]),
                            upper: Some(edges[i + 1]),
                            reference_share: share(r[i], nr),
                            current_share: share(c[i], nc),
                            n_reference: nr,
                            n_current: n.finite(),
                            sampled: !n.sample.is_complete(),
                            ..base.clone()
                        });
                    }
                }
                (ColumnSummary::Categorical(c), Reference::Categorical(reference)) => {
                    let (nc, nr) = (c.counts.total(), reference.total());
                    // Both sides on the categories each counts exactly (a
                    // capped side's `other` may hold a category the other
                    // side names), as the drift tests compare them.
                    let a = reference.aligned(&c.counts);
                    // Each category's combined share decides which are named.
                    let mut order: Vec<(usize, f64)> = (0..a.categories.len())
                        .map(|i| (i, share(a.reference[i], nr) + share(a.current[i], nc)))
                        .collect();
                    order.sort_by(|x, y| {
                        y.1.total_cmp(&x.1)
                            .then(a.categories[x.0].cmp(&a.categories[y.0]))
                    });
                    let (named, rest) = order.split_at(order.len().min(CATEGORIES));
                    let mut rows: Vec<(String, u64, u64)> = named
                        .iter()
                        .map(|(i, _)| (a.categories[*i].clone(), a.reference[*i], a.current[*i]))
                        .collect();
                    let (ref_other, cur_other) = a.other.unwrap_or((0, 0));
                    let other_r =
                        ref_other + rest.iter().map(|(i, _)| a.reference[*i]).sum::<u64>();
                    let other_c = cur_other + rest.iter().map(|(i, _)| a.current[*i]).sum::<u64>();
                    if other_r + other_c > 0 {
                        rows.push((OTHER.to_string(), other_r, other_c));
                    }
                    for (i, (k, r, cu)) in rows.into_iter().enumerate() {
                        out.push(Row {
                            ty: "categorical",
                            bin: i as i64,
                            category: Some(k),
                            reference_share: share(r, nr),
                            current_share: share(cu, nc),
                            n_reference: nr,
                            n_current: nc,
                            ..base.clone()
                        });
                    }
                }
                _ => {} // types differ: the drift evaluator reports it
            }
        }
        out
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[async_trait::async_trait]
impl Evaluator for DistributionEvaluator {
    fn name(&self) -> &'static str {
        "distribution"
    }

    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>> {
        let groups = window.by_version();
        let mut by_model: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
        for g in groups {
            by_model
                .entry(g.key.model)
                .or_default()
                .extend(self.rows_of(g));
        }
        let mut out = Vec::new();
        for (model, rows) in by_model.into_iter().filter(|(_, r)| !r.is_empty()) {
            out.push(Output {
                table: tables::PREDICTION_DISTRIBUTION,
                model: self.catalog.models[model].name.clone(),
                batch: batch(window, &rows)?,
                path: None,
            });
        }
        Ok(out)
    }
}

fn batch(window: &ClosedWindow, rows: &[Row]) -> Result<RecordBatch> {
    let n = rows.len();
    let ts = |v: i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone("UTC"))
    };
    let strs = |f: fn(&Row) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let floats = |f: fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let ints = |f: fn(&Row) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        ts(window.start),
        ts(window.end),
        strs(|r| &r.version),
        strs(|r| &r.feature),
        strs(|r| r.ty),
        ints(|r| r.bin),
        floats(|r| r.lower),
        floats(|r| r.upper),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.category.as_deref()),
        )),
        floats(|r| Some(r.reference_share)),
        floats(|r| Some(r.current_share)),
        ints(|r| r.n_reference as i64),
        ints(|r| r.n_current as i64),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.sampled)),
        )),
        strs(|r| &r.baseline),
    ];
    Ok(RecordBatch::try_new(
        PREDICTION_DISTRIBUTION_FILE_SCHEMA.clone(),
        cols,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FeatureType};
    use crate::window::GroupKey;

    /// A categorical prediction whose training classes outnumber the
    /// category cap: a class the window names but the reference counts in
    /// its `other` bucket is not shown with a reference share of 0; both
    /// sides are compared on the classes both count exactly.
    #[tokio::test]
    async fn capped_categories_are_compared_on_common_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("r.csv");
        let mut csv = String::from("x,prediction\n");
        for i in 0..3_000 {
            csv.push_str(&format!("{},c{}\n", i % 7, i % 60));
        }
        std::fs::write(&reference, csv).unwrap();
        let cfg = Config::from_toml_str(&format!(
            "[window]\nmax_categories = 10\n[models.m]\nreference = \"{}\"\nprediction = \"categorical\"\n\
             [models.m.features]\nx = \"numeric\"",
            reference.display()
        ))
        .unwrap();
        let catalog = Arc::new(ModelCatalog::from_config(&cfg));
        let profiles = Arc::new(Profiles::load_config(&cfg, &catalog).await.unwrap());
        let e = DistributionEvaluator::new(catalog.clone(), profiles);
        let types: Vec<FeatureType> = catalog.models[0].columns.iter().map(|c| c.ty).collect();
        let key = GroupKey {
            model: 0,
            version: "1".into(),
            variant: String::new(),
        };
        let mut g = GroupState::new(key, &types, 100, 10);
        // Five classes, each a sixtieth of the training data.
        for i in 0..500 {
            if let ColumnSummary::Categorical(c) = &mut g.columns[1] {
                c.push(Some(&format!("c{}", i % 5)));
            }
        }
        let rows = e.rows_of(&g);
        let total = |f: fn(&Row) -> f64| rows.iter().map(f).sum::<f64>();
        assert!(
            (total(|r| r.reference_share) - 1.0).abs() < 1e-9,
            "{rows:?}"
        );
        assert!((total(|r| r.current_share) - 1.0).abs() < 1e-9, "{rows:?}");
        // Every named class is counted exactly on both sides: a sixtieth of
        // training, and a fifth of the window or none of it. (A window class
        // the reference holds in `other` was named with a training share
        // of 0.)
        let named: Vec<&Row> = rows
            .iter()
            .filter(|r| r.category.as_deref() != Some(OTHER))
            .collect();
        assert!(!named.is_empty());
        for r in named {
            assert!((r.reference_share - 1.0 / 60.0).abs() < 1e-9, "{r:?}");
            assert!(
                r.current_share == 0.0 || (r.current_share - 0.2).abs() < 1e-9,
                "{r:?}"
            );
        }
    }
}
