//! Drift monitoring: reference samples and the per-window drift tests.
//!
//! Each model's reference (training) sample is read once at start-up from
//! Parquet or CSV, sorted per feature and handed to the `ks_reference`
//! aggregate registered on the monitor's DataFusion session. When a window
//! closes, its samples become the table `window_current(model, version,
//! feature, value)` and `sql/window_drift.sql` runs `ks_reference` per model,
//! version and feature. The test stays in SQL, so backfills and ad-hoc
//! queries can use the same functions (`ks_2samp` takes both samples as rows).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use crate::config::{Config, FeatureType};
use crate::error::{Error, Result};
use crate::event::ModelCatalog;
use crate::pipeline::evaluate::{Evaluator, Output};
use crate::storage::tables::{self, DRIFT_FILE_SCHEMA, col};
use crate::udf::{KsReference, References};
use crate::window::{ClosedWindow, ColumnSummary, GroupState};

/// The query run for every closed window.
pub const WINDOW_DRIFT_SQL: &str = include_str!("../../sql/window_drift.sql");

/// Schema of `window_current(model, version, feature, value)`.
fn window_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::MODEL, DataType::Utf8, false),
        Field::new(col::VERSION, DataType::Utf8, false),
        Field::new(col::FEATURE, DataType::Utf8, false),
        Field::new(col::VALUE, DataType::Float64, false),
    ]))
}

/// Drift results of one model in one window, in the `drift_results` file schema.
#[derive(Debug)]
pub struct ModelDrift {
    /// Model index in the catalog.
    pub model: usize,
    /// Rows in [`DRIFT_FILE_SCHEMA`].
    pub batch: RecordBatch,
}

/// Runs the drift tests of closed windows.
pub struct DriftEvaluator {
    ctx: SessionContext,
    catalog: Arc<ModelCatalog>,
    threshold: f64,
    min_current: i64,
}

#[async_trait::async_trait]
impl Evaluator for DriftEvaluator {
    fn name(&self) -> &'static str {
        "drift"
    }

    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>> {
        Ok(DriftEvaluator::evaluate(self, window)
            .await?
            .into_iter()
            .map(|d| Output {
                table: tables::DRIFT_RESULTS,
                model: self.catalog.models[d.model].name.clone(),
                batch: d.batch,
            })
            .collect())
    }
}

/// The groups of `window` with the variants of each (model, version) merged.
fn by_version(window: &ClosedWindow) -> Vec<GroupState> {
    let mut out: Vec<GroupState> = Vec::new();
    for g in &window.groups {
        match out
            .last_mut()
            .filter(|o| o.key.model == g.key.model && o.key.version == g.key.version)
        {
            Some(o) => o.merge(g),
            None => {
                let mut g = g.clone();
                g.key.variant.clear();
                out.push(g);
            }
        }
    }
    out
}

impl DriftEvaluator {
    /// Loads every model's reference and prepares the session.
    pub async fn new(config: &Config, catalog: Arc<ModelCatalog>) -> Result<Self> {
        let ctx = crate::query::new_context(config.drift.ks_method);
        let mut references = References::new();
        for (name, model) in &config.models {
            let schema = &catalog.models[catalog.index(name).expect("catalog built from config")];
            for (feature, v) in load_reference(&ctx, name, &model.reference, schema).await? {
                references.insert(format!("{name}/{feature}"), Arc::new(v));
            }
        }
        ctx.register_udaf(AggregateUDF::from(KsReference::new(
            config.drift.ks_method,
            Arc::new(references),
        )));
        Ok(Self {
            ctx,
            catalog,
            threshold: config.drift.p_value_threshold,
            min_current: config.drift.min_current as i64,
        })
    }

    /// Tests every numeric feature of every (model, version) in `window`.
    pub async fn evaluate(&self, window: &ClosedWindow) -> Result<Vec<ModelDrift>> {
        let current = self.current_batch(window)?;
        if current.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let table = MemTable::try_new(current.schema(), vec![vec![current]])?;
        self.ctx.deregister_table("window_current")?;
        self.ctx.register_table("window_current", Arc::new(table))?;
        let df = self
            .ctx
            .sql(WINDOW_DRIFT_SQL)
            .await?
            .with_param_values(vec![
                ScalarValue::Float64(Some(self.threshold)),
                ScalarValue::Int64(Some(self.min_current)),
            ])?;
        let batches = df.collect().await?;
        self.ctx.deregister_table("window_current")?;
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let all = concat_batches(&batches[0].schema(), &batches)?;
        split_by_model(&self.catalog, window, &all)
    }

    fn current_batch(&self, window: &ClosedWindow) -> Result<RecordBatch> {
        let (mut m, mut v, mut f, mut x) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let groups = by_version(window);
        for g in &groups {
            let schema = &self.catalog.models[g.key.model];
            for (def, summary) in schema.columns.iter().zip(&g.columns) {
                let ColumnSummary::Numeric(n) = summary else {
                    continue;
                };
                if def.kind != crate::event::ColumnKind::Feature || def.ty != FeatureType::Numeric {
                    continue;
                }
                for value in n.sample.sorted_values() {
                    m.push(schema.name.as_str());
                    v.push(g.key.version.as_str());
                    f.push(def.name.as_str());
                    x.push(value);
                }
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(m)),
            Arc::new(StringArray::from(v)),
            Arc::new(StringArray::from(f)),
            Arc::new(Float64Array::from(x)),
        ];
        Ok(RecordBatch::try_new(window_schema(), cols)?)
    }
}

fn split_by_model(
    catalog: &ModelCatalog,
    window: &ClosedWindow,
    all: &RecordBatch,
) -> Result<Vec<ModelDrift>> {
    let col_str = |name: &str| -> Result<StringArray> {
        let c = all.column_by_name(name).ok_or_else(|| missing(name))?;
        Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone())
    };
    let col_f64 = |name: &str| -> Result<Float64Array> {
        let c = all.column_by_name(name).ok_or_else(|| missing(name))?;
        Ok(cast(c, &DataType::Float64)?
            .as_primitive::<Float64Type>()
            .clone())
    };
    let col_i64 = |name: &str| -> Result<Int64Array> {
        let c = all.column_by_name(name).ok_or_else(|| missing(name))?;
        Ok(cast(c, &DataType::Int64)?
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .clone())
    };
    let model = col_str(col::MODEL)?;
    let drifted = all
        .column_by_name(col::DRIFTED)
        .ok_or_else(|| missing(col::DRIFTED))?
        .as_boolean()
        .clone();
    let (version, feature, method) = (
        col_str(col::VERSION)?,
        col_str(col::FEATURE)?,
        col_str(col::METHOD)?,
    );
    let (stat, p, th) = (
        col_f64(col::STATISTIC)?,
        col_f64(col::P_VALUE)?,
        col_f64(col::THRESHOLD)?,
    );
    let (nr, nc) = (col_i64(col::N_REFERENCE)?, col_i64(col::N_CURRENT)?);

    let mut out = Vec::new();
    let mut start = 0;
    while start < all.num_rows() {
        let name = model.value(start);
        let mut end = start;
        while end < all.num_rows() && model.value(end) == name {
            end += 1;
        }
        let len = end - start;
        let model_idx = catalog.index(name).ok_or_else(|| missing(name))?;
        let ts = |v: i64| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(vec![v; len]).with_timezone("UTC"))
        };
        let cols: Vec<ArrayRef> = vec![
            ts(window.start),
            ts(window.end),
            Arc::new(version.slice(start, len)),
            Arc::new(feature.slice(start, len)),
            Arc::new(method.slice(start, len)),
            Arc::new(stat.slice(start, len)),
            Arc::new(p.slice(start, len)),
            Arc::new(th.slice(start, len)),
            Arc::new(BooleanArray::from(
                drifted
                    .slice(start, len)
                    .iter()
                    .map(|b| b.unwrap_or(false))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(nr.slice(start, len)),
            Arc::new(nc.slice(start, len)),
        ];
        out.push(ModelDrift {
            model: model_idx,
            batch: RecordBatch::try_new(DRIFT_FILE_SCHEMA.clone(), cols)?,
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

/// Reads one model's reference file: each numeric feature's values, sorted.
async fn load_reference(
    ctx: &SessionContext,
    model: &str,
    location: &str,
    schema: &crate::event::ModelSchema,
) -> Result<Vec<(String, Vec<f64>)>> {
    let err = |reason: String| Error::Reference {
        model: model.to_string(),
        location: location.to_string(),
        reason,
    };
    let lower = location.to_ascii_lowercase();
    let df = if lower.ends_with(".parquet") {
        ctx.read_parquet(location, ParquetReadOptions::default())
            .await
    } else if lower.ends_with(".csv") {
        ctx.read_csv(location, CsvReadOptions::new().has_header(true))
            .await
    } else {
        return Err(err("the file name must end in .parquet or .csv".into()));
    }
    .map_err(|e| err(e.to_string()))?;
    let batches = df.collect().await.map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(schema.numeric.len());
    for &idx in &schema.numeric {
        let name = &schema.features[idx].0;
        let mut found = false;
        let mut values = Vec::new();
        for b in &batches {
            let Some(c) = b.column_by_name(name) else {
                continue;
            };
            found = true;
            let c =
                cast(c, &DataType::Float64).map_err(|e| err(format!("column `{name}`: {e}")))?;
            values.extend(
                c.as_primitive::<Float64Type>()
                    .iter()
                    .flatten()
                    .filter(|v| !v.is_nan()),
            );
        }
        if !found && !batches.is_empty() {
            return Err(err(format!(
                "numeric feature `{name}` has no column in the reference"
            )));
        }
        values.sort_unstable_by(f64::total_cmp);
        out.push((name.clone(), values));
    }
    if out.iter().all(|(_, v)| v.is_empty()) {
        return Err(err("no numeric reference values".into()));
    }
    Ok(out)
}
