//! Drift monitoring: the evaluator that tests every monitored column of a
//! closed window against its training profile.
//!
//! Each model's profile (per column: a sorted sample of a numeric column,
//! the category counts of a categorical one) is loaded once at start-up
//! ([`reference`]) and held by the `drift_reference*` SQL functions
//! ([`crate::udf::drift`]). When a window closes, the variants of each
//! (model, version) are merged and its summaries become the tables
//! `window_numeric` (per column, the bottom-k sample as one list) and
//! `window_categorical` (the counts); `sql/window_drift.sql` runs one test per column with the
//! configured method (or Evidently's choice), corrects the p-values of the
//! window (Holm or Benjamini-Hochberg) and decides `drifted`;
//! `sql/window_drift_summary.sql` gives the dataset verdict. The tests stay
//! in SQL, so backfills and `mlwatch sql` use the same functions.

pub mod baseline;
pub mod distribution;
pub mod performance;
pub mod quality;
pub mod reference;

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;

use crate::config::{Config, Correction};
use crate::error::{Error, Result};
use crate::event::ModelCatalog;
use crate::pipeline::evaluate::{Evaluator, Output};
use crate::query::prepared::Prepared;
use crate::storage::tables::{self, DRIFT_FILE_SCHEMA, DRIFT_SUMMARY_FILE_SCHEMA, col};
use crate::udf::drift::{DriftKind, DriftUdaf};
use crate::window::{ClosedWindow, ColumnSummary, GroupState};
use reference::{ModelProfile, Profiles};

/// The query run for every closed window.
pub const WINDOW_DRIFT_SQL: &str = include_str!("../../sql/window_drift.sql");
/// The dataset verdict, run on the rows of [`WINDOW_DRIFT_SQL`].
pub const WINDOW_DRIFT_SUMMARY_SQL: &str = include_str!("../../sql/window_drift_summary.sql");

/// One monitored column's test settings.
#[derive(Debug, Clone)]
struct ColumnTest {
    /// Configured method or "auto".
    method: String,
    /// Configured threshold.
    threshold: Option<f64>,
}

/// Runs the drift tests of closed windows.
pub struct DriftEvaluator {
    ctx: SessionContext,
    /// `sql/window_drift.sql` and `sql/window_drift_summary.sql`, planned
    /// when the writer starts ([`Evaluator::start`]).
    queries: Option<(Prepared, Prepared)>,
    catalog: Arc<ModelCatalog>,
    profiles: Arc<Profiles>,
    /// Per model, per column ([`crate::event::ModelSchema::columns`]).
    tests: Vec<Vec<ColumnTest>>,
    p_value_threshold: f64,
    min_current: i64,
    correction: Correction,
    dataset_share: f64,
    /// Registry baselines of the checkpoint, adopted before the next window.
    restored: Vec<reference::Adopted>,
    /// Event time (window start) at which the registry is next looked at.
    next_refresh: i64,
    refresh_ms: i64,
}

impl DriftEvaluator {
    /// A session over the shared `profiles` with each column's settings.
    pub fn new(config: &Config, catalog: Arc<ModelCatalog>, profiles: Arc<Profiles>) -> Self {
        let ctx = crate::query::window_context(config.drift.ks_method);
        for kind in DriftKind::ALL {
            ctx.register_udaf(AggregateUDF::from(DriftUdaf::new(
                kind,
                profiles.baselines().clone(),
            )));
        }
        let tests = catalog
            .models
            .iter()
            .map(|schema| {
                let model = &config.models[&schema.name];
                schema
                    .columns
                    .iter()
                    .map(|def| ColumnTest {
                        method: model
                            .drift
                            .method
                            .get(&def.name)
                            .cloned()
                            .unwrap_or_else(|| "auto".into()),
                        threshold: model.drift.threshold.get(&def.name).copied(),
                    })
                    .collect()
            })
            .collect();
        Self {
            ctx,
            queries: None,
            catalog,
            profiles,
            tests,
            p_value_threshold: config.drift.p_value_threshold,
            min_current: config.drift.min_current as i64,
            correction: config.drift.correction,
            dataset_share: config.drift.dataset_share,
            restored: Vec::new(),
            next_refresh: i64::MIN,
            refresh_ms: config.baseline.refresh.as_millis() as i64,
        }
    }
}

#[async_trait::async_trait]
impl Evaluator for DriftEvaluator {
    fn name(&self) -> &'static str {
        "drift"
    }

    /// Plans the window queries (about 30 ms) before the first window.
    async fn start(&mut self) -> Result<()> {
        self.queries().await.map(|_| ())
    }

    /// The registry baselines in use: a restart tests with the same ones.
    fn snapshot(&self) -> Result<Option<serde_json::Value>> {
        let mut adopted = self.profiles.adopted();
        adopted.extend(self.restored.iter().cloned());
        Ok(Some(
            serde_json::json!({ "baselines": adopted, "next_refresh": self.next_refresh }),
        ))
    }

    fn restore(&mut self, part: serde_json::Value) -> Result<()> {
        if let Some(t) = part.get("next_refresh").and_then(|t| t.as_i64()) {
            self.next_refresh = t;
        }
        if let Some(list) = part.get("baselines") {
            self.restored = serde_json::from_value(list.clone()).map_err(|e| Error::Task {
                task: "drift evaluator",
                reason: format!("checkpoint part: {e}"),
            })?;
        }
        Ok(())
    }

    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>> {
        for (m, v, path) in std::mem::take(&mut self.restored) {
            if let Err(e) = self.profiles.adopt(&m, &v, &path).await {
                tracing::error!(model = %m, version = %v, path = %path, error = %e,
                    "a baseline of the checkpoint is not readable; testing against the config's reference");
            }
        }
        let groups = window.by_version();
        // The registry is looked at every `baseline.refresh` of event time,
        // so a replay looks at the same windows as the original run.
        if window.start >= self.next_refresh {
            let seen: Vec<(usize, String)> = groups
                .iter()
                .map(|g| (g.key.model, g.key.version.clone()))
                .collect();
            self.profiles.refresh(&seen).await;
            self.next_refresh = window.start.saturating_add(self.refresh_ms);
        }
        let (numeric, categorical) = self.window_tables(groups)?;
        if numeric.num_rows() == 0 && categorical.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let (tests, verdict) = self.queries().await?;
        let results = tests.run(vec![numeric, categorical]).await?;
        if results.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let summary = verdict.run(vec![results.clone()]).await?;
        let mut out = split_by_model(tables::DRIFT_RESULTS, &DRIFT_FILE_SCHEMA, window, &results)?;
        out.extend(split_by_model(
            tables::DRIFT_SUMMARY,
            &DRIFT_SUMMARY_FILE_SCHEMA,
            window,
            &summary,
        )?);
        Ok(out)
    }
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn group_fields() -> Vec<Field> {
    vec![
        utf8(col::MODEL),
        utf8(col::VERSION),
        utf8(col::KIND),
        utf8(col::FEATURE),
        utf8(col::BASELINE),
        utf8("reference"),
        utf8(col::METHOD),
        Field::new(col::THRESHOLD, DataType::Float64, true),
    ]
}

/// The item of `window_numeric`'s `value` list.
fn sample_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float64, false))
}

/// `window_numeric`: a numeric column's sample as one list.
fn numeric_schema() -> SchemaRef {
    let mut f = group_fields();
    f.push(Field::new(col::VALUE, DataType::List(sample_item()), false));
    Arc::new(Schema::new(f))
}

/// `window_categorical`: one row per kept category (NULL: `other`).
fn categorical_schema() -> SchemaRef {
    let mut f = group_fields();
    f.push(utf8("category"));
    f.push(Field::new("n", DataType::Int64, false));
    Arc::new(Schema::new(f))
}

/// Columns of `window_numeric` / `window_categorical` shared by both.
#[derive(Default)]
struct GroupCols<'a> {
    model: Vec<&'a str>,
    version: Vec<&'a str>,
    kind: Vec<&'static str>,
    feature: Vec<&'a str>,
    baseline: Vec<String>,
    reference: Vec<&'a str>,
    method: Vec<&'a str>,
    threshold: Vec<Option<f64>>,
}

impl<'a> GroupCols<'a> {
    fn push(
        &mut self,
        g: &'a GroupState,
        schema: &'a crate::event::ModelSchema,
        c: usize,
        t: &'a ColumnTest,
        (baseline, reference): (&str, &'a str),
    ) {
        let def = &schema.columns[c];
        self.model.push(&schema.name);
        self.version.push(&g.key.version);
        self.kind.push(def.kind.as_str());
        self.feature.push(&def.name);
        self.baseline.push(baseline.to_string());
        self.reference.push(reference);
        self.method.push(&t.method);
        self.threshold.push(t.threshold);
    }

    fn arrays(self) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from(self.model)),
            Arc::new(StringArray::from(self.version)),
            Arc::new(StringArray::from(self.kind)),
            Arc::new(StringArray::from(self.feature)),
            Arc::new(StringArray::from(self.baseline)),
            Arc::new(StringArray::from(self.reference)),
            Arc::new(StringArray::from(self.method)),
            Arc::new(Float64Array::from(self.threshold)),
        ]
    }
}

impl DriftEvaluator {
    /// The window's summaries as `window_numeric` and `window_categorical`.
    fn window_tables(&self, groups: &[GroupState]) -> Result<(RecordBatch, RecordBatch)> {
        let profiles: Vec<Arc<ModelProfile>> = groups
            .iter()
            .map(|g| self.profiles.for_version(g.key.model, &g.key.version))
            .collect();
        let (mut num, mut values, mut lengths) =
            (GroupCols::default(), Vec::<f64>::new(), Vec::<usize>::new());
        let (mut cat, mut cats, mut counts) = (
            GroupCols::default(),
            Vec::<Option<&str>>::new(),
            Vec::<i64>::new(),
        );
        for (g, profile) in groups.iter().zip(&profiles) {
            let schema = &self.catalog.models[g.key.model];
            for (c, summary) in g.columns.iter().enumerate() {
                let t = &self.tests[g.key.model][c];
                let Some(p) = &profile.columns[c] else {
                    continue;
                };
                let reference = (profile.baseline.as_str(), p.name.as_str());
                match summary {
                    // No values, no test (as a categorical column without
                    // counts has no rows).
                    ColumnSummary::Numeric(n) if n.sample.is_empty() => {}
                    ColumnSummary::Numeric(n) => {
                        num.push(g, schema, c, t, reference);
                        let before = values.len();
                        values.extend(n.sample.sorted_values());
                        lengths.push(values.len() - before);
                    }
                    ColumnSummary::Categorical(s) => {
                        let (kept, other) = s.counts.counts();
                        let rows = kept
                            .iter()
                            .map(|(k, n)| (Some(k.as_str()), *n))
                            .chain((other > 0).then_some((None, other)));
                        for (k, n) in rows {
                            cat.push(g, schema, c, t, reference);
                            cats.push(k);
                            counts.push(n as i64);
                        }
                    }
                }
            }
        }
        let mut na = num.arrays();
        na.push(Arc::new(ListArray::try_new(
            sample_item(),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(Float64Array::from(values)),
            None,
        )?));
        let mut ca = cat.arrays();
        ca.push(Arc::new(StringArray::from(cats)));
        ca.push(Arc::new(Int64Array::from(counts)));
        Ok((
            RecordBatch::try_new(numeric_schema(), na)?,
            RecordBatch::try_new(categorical_schema(), ca)?,
        ))
    }

    /// The window queries, planned on first use.
    async fn queries(&mut self) -> Result<&(Prepared, Prepared)> {
        let planned = match self.queries.take() {
            Some(q) => q,
            None => {
                let tests = Prepared::new(
                    &self.ctx,
                    WINDOW_DRIFT_SQL,
                    &[
                        ("window_numeric", numeric_schema()),
                        ("window_categorical", categorical_schema()),
                    ],
                    vec![
                        ScalarValue::Int64(Some(self.min_current)),
                        ScalarValue::Float64(Some(self.p_value_threshold)),
                        ScalarValue::Utf8(Some(self.correction.as_str().into())),
                    ],
                )
                .await?;
                let verdict = Prepared::new(
                    &self.ctx,
                    WINDOW_DRIFT_SUMMARY_SQL,
                    &[("window_drift", tests.schema())],
                    vec![ScalarValue::Float64(Some(self.dataset_share))],
                )
                .await?;
                (tests, verdict)
            }
        };
        Ok(self.queries.insert(planned))
    }
}

/// Splits query rows (sorted by model) into one output per model in the
/// table's file schema: the window's bounds, then the schema's other
/// columns taken by name.
fn split_by_model(
    table: &'static str,
    file_schema: &SchemaRef,
    window: &ClosedWindow,
    all: &RecordBatch,
) -> Result<Vec<Output>> {
    let model = all
        .column_by_name(col::MODEL)
        .ok_or_else(|| missing(col::MODEL))?;
    let model = cast(model, &DataType::Utf8)?;
    let model = model
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| missing(col::MODEL))?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < all.num_rows() {
        let name = model.value(start);
        let mut end = start;
        while end < all.num_rows() && model.value(end) == name {
            end += 1;
        }
        let len = end - start;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(file_schema.fields().len());
        for f in file_schema.fields() {
            let a: ArrayRef = match f.name().as_str() {
                col::WINDOW_START | col::WINDOW_END => {
                    let v = if f.name() == col::WINDOW_START {
                        window.start
                    } else {
                        window.end
                    };
                    Arc::new(TimestampMillisecondArray::from(vec![v; len]).with_timezone("UTC"))
                }
                n => {
                    let c = all.column_by_name(n).ok_or_else(|| missing(n))?;
                    cast(&c.slice(start, len), f.data_type())?
                }
            };
            cols.push(a);
        }
        out.push(Output {
            table,
            model: name.to_string(),
            batch: RecordBatch::try_new(file_schema.clone(), cols)?,
            path: None,
        });
        start = end;
    }
    Ok(out)
}

fn missing(what: &str) -> Error {
    Error::DataFusion(datafusion::error::DataFusionError::Internal(format!(
        "window drift query returned no `{what}`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::drift::Reference;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::datasource::MemTable;

    /// `sql/window_drift.sql` adjusts a window's p-values as the Holm and
    /// Benjamini-Hochberg kernels (checked against statsmodels) do, and
    /// `drifted` follows the adjusted value.
    #[tokio::test]
    async fn the_window_query_corrects_as_the_kernels() -> Result<()> {
        let ctx = crate::query::new_context(Default::default());
        let baselines: crate::udf::drift::Baselines = Default::default();
        let reference: Vec<f64> = (0..200).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut sorted = reference.clone();
        sorted.sort_by(f64::total_cmp);
        baselines.write().expect("not poisoned").insert(
            "m/x".into(),
            Arc::new(Reference::Numeric {
                sorted,
                count: None,
            }),
        );
        for kind in DriftKind::ALL {
            ctx.register_udaf(AggregateUDF::from(DriftUdaf::new(kind, baselines.clone())));
        }
        // Six columns, each the reference shifted a little more: p-values
        // from large to tiny.
        let (mut feature, mut value) = (Vec::new(), Vec::new());
        for c in 0..6 {
            for (i, x) in reference.iter().enumerate().filter(|(i, _)| i % 2 == c % 2) {
                feature.push(format!("f{c}"));
                value.push(x + 0.06 * c as f64 + 0.001 * (i % 7) as f64);
            }
        }
        let n = value.len();
        let mut fields = group_fields();
        fields.push(Field::new(col::VALUE, DataType::Float64, false));
        let s = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
        let numeric = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                s("m"),
                s("1"),
                s("feature"),
                Arc::new(StringArray::from(feature)),
                s("config"),
                s("m/x"),
                s("ks"),
                Arc::new(Float64Array::from(vec![None::<f64>; n])),
                Arc::new(Float64Array::from(value)),
            ],
        )?;
        let mut cf = group_fields();
        cf.push(utf8("category"));
        cf.push(Field::new("n", DataType::Int64, false));
        let categorical = RecordBatch::new_empty(Arc::new(Schema::new(cf)));
        ctx.register_table(
            "window_numeric",
            Arc::new(MemTable::try_new(numeric.schema(), vec![vec![numeric]])?),
        )?;
        ctx.register_table(
            "window_categorical",
            Arc::new(MemTable::try_new(
                categorical.schema(),
                vec![vec![categorical]],
            )?),
        )?;
        type Kernel = fn(&[f64]) -> std::result::Result<Vec<f64>, crate::stats::StatsError>;
        let kernels: [(&str, Option<Kernel>); 3] = [
            ("none", None),
            ("holm", Some(crate::stats::correction::holm)),
            ("bh", Some(crate::stats::correction::benjamini_hochberg)),
        ];
        for (name, kernel) in kernels {
            let b = ctx
                .sql(WINDOW_DRIFT_SQL)
                .await?
                .with_param_values(vec![
                    ScalarValue::Int64(Some(1)),
                    ScalarValue::Float64(Some(0.05)),
                    ScalarValue::Utf8(Some(name.into())),
                ])?
                .collect()
                .await?;
            let b = concat_batches(&b[0].schema(), &b)?;
            let get = |c: &str| {
                b.column_by_name(c)
                    .expect("column")
                    .as_primitive::<Float64Type>()
                    .values()
                    .to_vec()
            };
            let (p, adj) = (get(col::P_VALUE), get(col::P_VALUE_ADJUSTED));
            let drifted = b
                .column_by_name(col::DRIFTED)
                .expect("column")
                .as_boolean()
                .clone();
            assert_eq!(p.len(), 6);
            assert!(
                p.iter().any(|x| *x < 0.01) && p.iter().any(|x| *x > 0.2),
                "{p:?}"
            );
            let want = match kernel {
                None => p.clone(),
                Some(k) => k(&p).expect("valid p-values"),
            };
            for i in 0..6 {
                assert!(
                    (adj[i] - want[i]).abs() <= 1e-12 * want[i].max(1e-300),
                    "{name}: {adj:?} vs {want:?}"
                );
                assert_eq!(
                    drifted.value(i),
                    adj[i] <= 0.05,
                    "{name}: ks drifts at p <= threshold"
                );
            }
        }
        Ok(())
    }
}
