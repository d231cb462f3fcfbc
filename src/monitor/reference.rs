//! Training profiles from a reference file named in the configuration.
//!
//! A profile per monitored column: a numeric column's non-missing values,
//! sorted; a categorical column's counts per category (at most
//! `window.max_categories` kept, the rest counted as `other`, as in the
//! windows). The `prediction` column is profiled when the file has one
//! (the model's predictions on its training data).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use crate::config::FeatureType;
use crate::error::{Error, Result};
use crate::event::ColumnDef;
use crate::stats::drift::Reference;
use crate::stats::summary::CategoryCounts;

/// Reads `location` and profiles each of `columns` (`None` for a column
/// the file lacks). A feature missing from a file that has rows is an
/// error; the prediction may be absent.
pub async fn load(
    ctx: &SessionContext,
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
