//! Training profiles: what each window is tested against.
//!
//! A profile per monitored column: a numeric column's non-missing values,
//! sorted; a categorical column's counts per category (at most
//! `window.max_categories` kept, the rest counted as `other`, as in the
//! windows). The `prediction` column is profiled when the reference has one
//! (the model's predictions on its training data).
//!
//! [`Profiles`] holds them for every model, named `<model>/<baseline>/<column>`
//! in the map the `drift_reference*` SQL functions read, and is shared by
//! the evaluators (drift tests, data quality).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

use crate::config::{Config, FeatureType};
use crate::error::{Error, Result};
use crate::event::{ColumnDef, ModelCatalog};
use crate::stats::drift::Reference;
use crate::stats::summary::CategoryCounts;
use crate::udf::drift::Baselines;

/// Which profile windows of the config's reference are tested against, as
/// the `baseline` column says.
pub const CONFIG_BASELINE: &str = "config";

/// One column's profile and its name in the baselines map.
#[derive(Debug, Clone)]
pub struct ColumnProfile {
    /// `<model>/<baseline>/<column>`.
    pub name: String,
    /// The profile.
    pub reference: Arc<Reference>,
}

impl ColumnProfile {
    /// The smallest and largest reference value of a numeric column.
    pub fn range(&self) -> Option<(f64, f64)> {
        match self.reference.as_ref() {
            Reference::Numeric { sorted } => Some((*sorted.first()?, *sorted.last()?)),
            Reference::Categorical(_) => None,
        }
    }
}

/// A model's profiles for one baseline.
#[derive(Debug, Clone)]
pub struct ModelProfile {
    /// Where they come from (`config`, ...).
    pub baseline: String,
    /// Per column of the model (`None`: the reference lacks it).
    pub columns: Vec<Option<ColumnProfile>>,
}

/// Every model's profiles.
pub struct Profiles {
    baselines: Baselines,
    by_model: Vec<Arc<ModelProfile>>,
}

impl Profiles {
    /// Loads each model's reference file.
    pub async fn load_config(config: &Config, catalog: &ModelCatalog) -> Result<Self> {
        let mut map = BTreeMap::new();
        let mut by_model = Vec::with_capacity(catalog.models.len());
        for schema in &catalog.models {
            let model = &config.models[&schema.name];
            let loaded = load(
                &config.storage.options,
                &schema.name,
                &model.reference,
                &schema.columns,
                config.window.max_categories,
            )
            .await?;
            let columns = schema
                .columns
                .iter()
                .zip(loaded)
                .map(|(def, profile)| {
                    let Some(p) = profile else {
                        tracing::warn!(model = %schema.name, column = %def.name, reference = %model.reference,
                            "the reference has no such column; the column is not tested");
                        return None;
                    };
                    let name = format!("{}/{CONFIG_BASELINE}/{}", schema.name, def.name);
                    let reference = Arc::new(p);
                    map.insert(name.clone(), reference.clone());
                    Some(ColumnProfile { name, reference })
                })
                .collect();
            by_model.push(Arc::new(ModelProfile {
                baseline: CONFIG_BASELINE.to_string(),
                columns,
            }));
        }
        Ok(Self {
            baselines: Arc::new(RwLock::new(map)),
            by_model,
        })
    }

    /// The map the `drift_reference*` functions read.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// The profile windows of `model` and `version` are tested against.
    pub fn for_version(&self, model: usize, _version: &str) -> Arc<ModelProfile> {
        self.by_model[model].clone()
    }
}

/// Reads `location` and profiles each of `columns` (`None` for a column
/// the file lacks). A feature missing from a file that has rows is an
/// error; the prediction may be absent.
async fn load(
    options: &BTreeMap<String, String>,
    model: &str,
    location: &str,
    columns: &[ColumnDef],
    max_categories: usize,
) -> Result<Vec<Option<Reference>>> {
    let err = |reason: String| Error::Reference {
        model: model.to_string(),
        location: location.to_string(),
        reason,
    };
    let batches = crate::files::TableFile::open(location, options)
        .await
        .map_err(|e| err(e.to_string()))?
        .read()
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(columns.len());
    for def in columns {
        let name = &def.name;
        let arrays: Vec<_> = batches
            .iter()
            .filter_map(|b| b.column_by_name(name))
            .collect();
        if arrays.is_empty() {
            if def.kind == crate::event::ColumnKind::Feature && !batches.is_empty() {
                return Err(err(format!(
                    "feature `{name}` has no column in the reference"
                )));
            }
            out.push(None);
            continue;
        }
        let profile = match def.ty {
            FeatureType::Numeric => {
                let mut values = Vec::new();
                for a in arrays {
                    let c = cast(a, &DataType::Float64)
                        .map_err(|e| err(format!("column `{name}`: {e}")))?;
                    values.extend(
                        c.as_primitive::<Float64Type>()
                            .iter()
                            .flatten()
                            .filter(|v| !v.is_nan()),
                    );
                }
                values.sort_unstable_by(f64::total_cmp);
                Reference::Numeric { sorted: values }
            }
            FeatureType::Categorical => {
                let mut counts = CategoryCounts::new(max_categories);
                for a in arrays {
                    let c = cast(a, &DataType::Utf8)
                        .map_err(|e| err(format!("column `{name}`: {e}")))?;
                    let c = c.as_string::<i32>();
                    for i in 0..c.len() {
                        if !c.is_null(i) {
                            counts.add(c.value(i), 1);
                        }
                    }
                }
                Reference::Categorical(counts)
            }
        };
        out.push(Some(profile));
    }
    Ok(out)
}
