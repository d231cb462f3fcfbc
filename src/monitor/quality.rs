//! Data quality per window: the evaluator behind the `data_quality` table.
//!
//! For every monitored column of each (model, version) in a closed window
//! (variants merged): the events that reached it, how many lacked a value,
//! for numeric columns the share of values outside the training profile's
//! [min, max], for categorical ones the categories the profile never saw
//! (count, share, the five most frequent names), and whether the column was
//! missing from every event, and the records dead-lettered for a value of
//! the wrong type in it (`type_errors`, counted when the record's event time
//! and model can be read). A share above its `[quality]` threshold, or a
//! column missing everywhere, is a breach, named in `breaches`.
//!
//! The out-of-range share is counted on the column's bottom-k sample: exact
//! while the window holds at most `window.sample_size` values (`sampled`
//! false), a uniform-sample estimate above. Unseen categories are counted
//! exactly among the categories the window kept (`window.max_categories`),
//! and only those the profile can vouch for (a capped profile does not know
//! every category above its bound).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};

use super::reference::Profiles;
use crate::config::{Config, FeatureType, QualityConfig};
use crate::error::Result;
use crate::event::ModelCatalog;
use crate::pipeline::evaluate::{Evaluator, Output};
use crate::stats::drift::Reference;
use crate::stats::summary::category_hash;
use crate::storage::tables::{self, DATA_QUALITY_FILE_SCHEMA};
use crate::window::{ClosedWindow, ColumnSummary, GroupState};

/// One row of `data_quality`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Row {
    version: String,
    kind: &'static str,
    feature: String,
    ty: &'static str,
    rows: u64,
    missing: u64,
    out_of_range: Option<u64>,
    out_of_range_share: Option<f64>,
    unseen: Option<u64>,
    unseen_share: Option<f64>,
    unseen_top: Option<String>,
    missing_everywhere: bool,
    type_errors: u64,
    sampled: bool,
    breaches: Vec<&'static str>,
    baseline: String,
}

/// The data-quality evaluator.
pub struct QualityEvaluator {
    catalog: Arc<ModelCatalog>,
    profiles: Arc<Profiles>,
    limits: QualityConfig,
}

impl QualityEvaluator {
    /// An evaluator with `config.quality`'s thresholds.
    pub fn new(config: &Config, catalog: Arc<ModelCatalog>, profiles: Arc<Profiles>) -> Self {
        Self {
            catalog,
            profiles,
            limits: config.quality.clone(),
        }
    }

    fn rows_of(&self, g: &GroupState) -> Vec<Row> {
        let schema = &self.catalog.models[g.key.model];
        let profile = self.profiles.for_version(g.key.model, &g.key.version);
        let mut out = Vec::new();
        for ((def, summary), p) in schema.columns.iter().zip(&g.columns).zip(&profile.columns) {
            let rows = summary.rows();
            if rows == 0 && summary.type_errors() == 0 {
                continue; // the prediction of a model seen only on the features topic
            }
            let mut r = Row {
                version: g.key.version.clone(),
                kind: def.kind.as_str(),
                feature: def.name.clone(),
                rows,
                type_errors: summary.type_errors(),
                baseline: profile.baseline.clone(),
                ..Row::default()
            };
            match summary {
                ColumnSummary::Numeric(n) => {
                    r.ty = "numeric";
                    r.missing = n.missing;
                    r.sampled = !n.sample.is_complete();
                    if let Some((lo, hi)) = p.as_ref().and_then(|p| p.range) {
                        // Infinite values are outside any training range.
                        let kept = n.sample.sorted_values();
                        let outside = kept.iter().filter(|v| **v < lo || **v > hi).count();
                        let estimate = share(outside as u64, kept.len() as u64);
                        let count = (estimate * n.finite() as f64).round() as u64 + n.non_finite;
                        let share = share(count, n.finite() + n.non_finite);
                        r.out_of_range = Some(count);
                        r.out_of_range_share = Some(share);
                        if share > self.limits.out_of_range_share {
                            r.breaches.push("out_of_range");
                        }
                    }
                }
                ColumnSummary::Categorical(c) => {
                    r.ty = "categorical";
                    r.missing = c.missing;
                    if let Some(Reference::Categorical(reference)) =
                        p.as_ref().map(|p| p.reference.as_ref())
                    {
                        let (known, _) = reference.counts();
                        let bound = reference.kept_bound();
                        let (kept, _) = c.counts.counts();
                        let mut unseen: Vec<(&String, u64)> = kept
                            .iter()
                            .filter(|(k, _)| {
                                !known.contains_key(*k)
                                    && bound.is_none_or(|b| (category_hash(k), k.as_str()) <= b)
                            })
                            .map(|(k, n)| (k, *n))
                            .collect();
                        unseen.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                        let count: u64 = unseen.iter().map(|(_, n)| n).sum();
                        let share = share(count, c.counts.total());
                        r.unseen = Some(count);
                        r.unseen_share = Some(share);
                        r.unseen_top = (!unseen.is_empty()).then(|| {
                            unseen
                                .iter()
                                .take(5)
                                .map(|(k, _)| k.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        });
                        if share > self.limits.unseen_share {
                            r.breaches.push("unseen");
                        }
                    }
                }
            }
            debug_assert_eq!(
                r.ty,
                match def.ty {
                    FeatureType::Numeric => "numeric",
                    FeatureType::Categorical => "categorical",
                }
            );
            if share(r.missing, rows) > self.limits.missing_share {
                r.breaches.push("missing");
            }
            if r.type_errors > 0
                && r.type_errors as f64 / (rows + r.type_errors) as f64
                    > self.limits.type_error_share
            {
                r.breaches.push("type_errors");
            }
            // (Every record refused for its type: present, not missing.)
            if rows > 0 && r.missing == rows {
                r.missing_everywhere = true;
                r.breaches.push("missing_everywhere");
            }
            out.push(r);
        }
        out
    }
}

#[async_trait::async_trait]
impl Evaluator for QualityEvaluator {
    fn name(&self) -> &'static str {
        "quality"
    }

    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        let groups = window.by_version();
        let mut start = 0;
        while start < groups.len() {
            let model = groups[start].key.model;
            let end = start
                + groups[start..]
                    .iter()
                    .take_while(|g| g.key.model == model)
                    .count();
            let rows: Vec<Row> = groups[start..end]
                .iter()
                .flat_map(|g| self.rows_of(g))
                .collect();
            if !rows.is_empty() {
                outputs.push(Output {
                    table: tables::DATA_QUALITY,
                    model: self.catalog.models[model].name.clone(),
                    batch: batch(window, &rows)?,
                    path: None,
                });
            }
            start = end;
        }
        Ok(outputs)
    }
}

/// `part / whole`, 0 for an empty whole.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
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
    let ints = |f: fn(&Row) -> Option<u64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| f(r).map(|v| v as i64)),
        ))
    };
    let floats = |f: fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        ts(window.start),
        ts(window.end),
        strs(|r| &r.version),
        strs(|r| r.kind),
        strs(|r| &r.feature),
        strs(|r| r.ty),
        ints(|r| Some(r.rows)),
        ints(|r| Some(r.missing)),
        floats(|r| Some(share(r.missing, r.rows))),
        ints(|r| r.out_of_range),
        floats(|r| r.out_of_range_share),
        ints(|r| r.unseen),
        floats(|r| r.unseen_share),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.unseen_top.as_deref()),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.missing_everywhere)),
        )),
        ints(|r| Some(r.type_errors)),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.sampled)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| (!r.breaches.is_empty()).then(|| r.breaches.join(","))),
        )),
        strs(|r| &r.baseline),
    ];
    Ok(RecordBatch::try_new(
        DATA_QUALITY_FILE_SCHEMA.clone(),
        cols,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::GroupKey;

    /// A column every record of which was refused for its type was present,
    /// not missing: `type_errors` breaches, `missing_everywhere` does not.
    #[tokio::test]
    async fn a_column_of_type_errors_only_is_not_missing_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("r.csv");
        let rows: String = (0..100).map(|i| format!("{i},{}\n", i % 2)).collect();
        std::fs::write(&reference, format!("x,prediction\n{rows}")).unwrap();
        let cfg = Config::from_toml_str(&format!(
            "[models.m]\nreference = \"{}\"\n[models.m.features]\nx = \"numeric\"",
            reference.display()
        ))
        .unwrap();
        let catalog = Arc::new(ModelCatalog::from_config(&cfg));
        let profiles = Arc::new(Profiles::load_config(&cfg, &catalog).await.unwrap());
        let e = QualityEvaluator::new(&cfg, catalog.clone(), profiles);
        let types: Vec<FeatureType> = catalog.models[0].columns.iter().map(|c| c.ty).collect();
        let key = GroupKey {
            model: 0,
            version: "1".into(),
            variant: String::new(),
        };
        let mut g = GroupState::new(key, &types, 100, 10);
        for _ in 0..5 {
            g.columns[0].count_type_error();
        }
        let rows = e.rows_of(&g);
        let x = rows.iter().find(|r| r.feature == "x").unwrap();
        assert_eq!((x.rows, x.type_errors), (0, 5));
        assert!(!x.missing_everywhere, "{x:?}");
        assert_eq!(x.breaches, vec!["type_errors"]);
    }
}
