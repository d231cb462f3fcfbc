//! Baselines kept with the model: a training profile built once from the
//! training data and recorded on a registry version.
//!
//! `mlwatch baseline build --model M --version V --input FILE` reads the
//! training data (Parquet, CSV or JSON lines, local or S3), profiles every
//! monitored column of M ([`crate::event::ModelSchema::columns`]: the
//! features, and the prediction when the data has it) and writes one
//! Parquet file, `baselines/<model>/v<version>/<sha256 of the input>.parquet`,
//! one row per column:
//!
//! | column | meaning |
//! |---|---|
//! | `column`, `kind`, `type` | the column (`feature` / `prediction`; `numeric` / `categorical`) |
//! | `rows`, `missing` | rows of the input, and those without a value |
//! | `min`, `max`, `mean`, `std` | of the present numeric values |
//! | `sample` | numeric: a deterministic bottom-k sample of at most `baseline.sample_size` values (keyed by a hash of the row number), sorted |
//! | `categories`, `counts`, `other` | categorical: counts per category (at most `window.max_categories`, the rest in `other`) |
//! | `input_sha256` | of the input file's bytes |
//!
//! The file's path is set as the version's tag `baseline_profile` (an
//! ordinary registry event, so it has history). `mlwatch run` tests the
//! windows of version V against V's profile when it has one, else against
//! the model's `reference` file; the profile is read once, never the
//! training data.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, Int64Builder, ListBuilder,
    RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use serde::Serialize;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::FeatureType;
use crate::error::{Error, Result};
use crate::event::{ColumnDef, ColumnKind};
use crate::stats::drift::Reference;
use crate::stats::sample::ValueSample;
use crate::stats::summary::{CategoryCounts, Moments};
use crate::storage::Storage;

/// The registry tag holding a version's profile path.
pub const TAG: &str = "baseline_profile";

/// What `baseline build` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltProfile {
    /// Model.
    pub model: String,
    /// Registry version.
    pub version: u64,
    /// Path of the profile under the storage root.
    pub path: String,
    /// Rows of the input.
    pub rows: u64,
    /// sha256 of the input file.
    pub input_sha256: String,
    /// Columns profiled.
    pub columns: Vec<String>,
    /// Declared columns the input lacks (the prediction may be absent).
    pub absent: Vec<String>,
}

fn schema() -> SchemaRef {
    let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
    Arc::new(Schema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("missing", DataType::Int64, false),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("mean", DataType::Float64, true),
        Field::new("std", DataType::Float64, true),
        Field::new("sample", list(DataType::Float64), true),
        Field::new("categories", list(DataType::Utf8), true),
        Field::new("counts", list(DataType::Int64), true),
        Field::new("other", DataType::Int64, true),
        Field::new("input_sha256", DataType::Utf8, false),
    ]))
}

/// Relative path of a profile.
pub fn profile_path(model: &str, version: u64, sha256: &str) -> String {
    format!("baselines/{model}/v{version}/{sha256}.parquet")
}

/// What to profile.
pub struct BuildRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// Registry version.
    pub version: u64,
    /// Training data (path or URL).
    pub location: &'a str,
    /// The model's monitored columns.
    pub columns: &'a [ColumnDef],
    /// `storage.options` (for an S3 input).
    pub options: &'a std::collections::BTreeMap<String, String>,
    /// Values kept per numeric column.
    pub sample_size: usize,
    /// Categories kept per categorical column.
    pub max_categories: usize,
}

/// Profiles the request's columns of its training data and writes the
/// profile; returns its description (the caller records it in the registry).
pub async fn build(storage: &Storage, req: BuildRequest<'_>) -> Result<BuiltProfile> {
    let BuildRequest {
        model,
        version,
        location,
        columns,
        options,
        sample_size,
        max_categories,
    } = req;
    let err = |reason: String| Error::Reference {
        model: model.to_string(),
        location: location.to_string(),
        reason,
    };
    let file = crate::files::TableFile::open(location, options).await?;
    let bytes = crate::files::read_bytes(location, options).await?;
    let sha = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    drop(bytes);
    let batches = file.read().await?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows == 0 {
        return Err(err("the training data has no rows".into()));
    }
    let (mut name, mut kind, mut ty) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut nrows, mut missing) = (Int64Builder::new(), Int64Builder::new());
    let (mut min, mut max, mut mean, mut std) = (
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    let mut sample = ListBuilder::new(Float64Builder::new());
    let mut cats = ListBuilder::new(StringBuilder::new());
    let mut counts = ListBuilder::new(Int64Builder::new());
    let mut other = Int64Builder::new();
    let (mut profiled, mut absent) = (Vec::new(), Vec::new());
    for def in columns {
        let arrays: Vec<&ArrayRef> = batches
            .iter()
            .filter_map(|b| b.column_by_name(&def.name))
            .collect();
        if arrays.len() != batches.len() {
            if def.kind == ColumnKind::Feature {
                return Err(err(format!(
                    "feature `{}` has no column in the training data",
                    def.name
                )));
            }
            absent.push(def.name.clone());
            continue;
        }
        profiled.push(def.name.clone());
        name.append_value(&def.name);
        kind.append_value(def.kind.as_str());
        nrows.append_value(rows as i64);
        let stats = profile_column(&arrays, def.ty, sample_size, max_categories)
            .map_err(|e| err(format!("column `{}`: {e}", def.name)))?;
        missing.append_value(stats.missing as i64);
        match (stats.sample, stats.counts) {
            (Some(s), _) => {
                ty.append_value("numeric");
                let m = &stats.moments;
                let present = m.count > 0;
                min.append_option(stats.range.map(|r| r.0));
                max.append_option(stats.range.map(|r| r.1));
                mean.append_option(present.then(|| m.mean()));
                std.append_option(present.then(|| m.variance().sqrt()));
                sample.append_value(s.sorted_values().into_iter().map(Some));
                cats.append_null();
                counts.append_null();
                other.append_null();
            }
            (None, c) => {
                ty.append_value("categorical");
                for b in [&mut min, &mut max, &mut mean, &mut std] {
                    b.append_null();
                }
                sample.append_null();
                let c = c.unwrap_or_else(|| CategoryCounts::new(max_categories));
                let (kept, o) = c.counts();
                cats.append_value(kept.keys().map(Some));
                counts.append_value(kept.values().map(|v| Some(*v as i64)));
                other.append_value(o as i64);
            }
        }
    }
    let n = profiled.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(ty.finish()),
        Arc::new(nrows.finish()),
        Arc::new(missing.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
        Arc::new(mean.finish()),
        Arc::new(std.finish()),
        Arc::new(sample.finish()),
        Arc::new(cats.finish()),
        Arc::new(counts.finish()),
        Arc::new(other.finish()),
        Arc::new(StringArray::from(vec![sha.as_str(); n])),
    ];
    let batch = RecordBatch::try_new(schema(), cols)?;
    let path = profile_path(model, version, &sha);
    storage.write_parquet(&path, &[batch]).await?;
    Ok(BuiltProfile {
        model: model.to_string(),
        version,
        path,
        rows,
        input_sha256: sha,
        columns: profiled,
        absent,
    })
}

/// What one pass over a training column keeps (bounded whatever its length).
pub(crate) struct ColumnStats {
    /// Rows without a (finite) value.
    pub missing: u64,
    /// Numeric: a bottom-k sample of the finite values keyed by a hash of
    /// the row number, so the same data always gives the same sample.
    pub sample: Option<ValueSample>,
    /// Numeric: moments of the finite values.
    pub moments: Moments,
    /// Numeric: the smallest and largest finite value.
    pub range: Option<(f64, f64)>,
    /// Categorical: counts per category, capped.
    pub counts: Option<CategoryCounts>,
}

/// Profiles one column given as `arrays` (one per batch): the pass both
/// `baseline build` and a config reference make. The error is the cast's.
pub(crate) fn profile_column(
    arrays: &[&ArrayRef],
    ty: FeatureType,
    sample_size: usize,
    max_categories: usize,
) -> std::result::Result<ColumnStats, String> {
    let mut out = ColumnStats {
        missing: 0,
        sample: None,
        moments: Moments::default(),
        range: None,
        counts: None,
    };
    match ty {
        FeatureType::Numeric => {
            let mut s = ValueSample::new(sample_size);
            let mut row_no = 0u64;
            for a in arrays {
                let c = cast(a, &DataType::Float64).map_err(|e| e.to_string())?;
                for v in c.as_primitive::<Float64Type>().iter() {
                    row_no += 1;
                    match v {
                        Some(x) if x.is_finite() => {
                            s.offer(xxh3_64(&row_no.to_le_bytes()), x);
                            out.moments.push(x);
                            out.range =
                                Some(out.range.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x))));
                        }
                        _ => out.missing += 1,
                    }
                }
            }
            out.sample = Some(s);
        }
        FeatureType::Categorical => {
            let mut c = CategoryCounts::new(max_categories);
            for a in arrays {
                let s = cast(a, &DataType::Utf8).map_err(|e| e.to_string())?;
                let s = s.as_string::<i32>();
                for i in 0..s.len() {
                    if s.is_null(i) {
                        out.missing += 1;
                    } else {
                        c.add(s.value(i), 1);
                    }
                }
            }
            out.counts = Some(c);
        }
    }
    Ok(out)
}

/// Reads a profile written by [`build`]: per column of `columns`, its
/// reference (`None` when the profile lacks it).
pub async fn read(
    storage: &Storage,
    path: &str,
    columns: &[ColumnDef],
    max_categories: usize,
) -> Result<Vec<Option<super::reference::Profiled>>> {
    let batches = crate::storage::decode_parquet(storage.get(path).await?)?;
    let mut out: Vec<Option<super::reference::Profiled>> = vec![None; columns.len()];
    let bad = |reason: &str| Error::Checkpoint {
        location: path.to_string(),
        reason: format!("not a baseline profile: {reason}"),
    };
    for b in &batches {
        let name = b
            .column_by_name("column")
            .ok_or_else(|| bad("no `column`"))?
            .as_string::<i32>()
            .clone();
        let sample = b
            .column_by_name("sample")
            .ok_or_else(|| bad("no `sample`"))?
            .as_list::<i32>()
            .clone();
        let cats = b
            .column_by_name("categories")
            .ok_or_else(|| bad("no `categories`"))?
            .as_list::<i32>()
            .clone();
        let counts = b
            .column_by_name("counts")
            .ok_or_else(|| bad("no `counts`"))?
            .as_list::<i32>()
            .clone();
        let other = b
            .column_by_name("other")
            .ok_or_else(|| bad("no `other`"))?
            .as_primitive::<Int64Type>()
            .clone();
        let float = |n: &str| -> Result<Float64Array> {
            let c = b.column_by_name(n).ok_or_else(|| bad(n))?;
            Ok(c.as_primitive::<Float64Type>().clone())
        };
        let (min, max) = (float("min")?, float("max")?);
        let int = |n: &str| -> Result<Int64Array> {
            let c = b.column_by_name(n).ok_or_else(|| bad(n))?;
            Ok(c.as_primitive::<Int64Type>().clone())
        };
        let (rows, missing) = (int("rows")?, int("missing")?);
        for i in 0..b.num_rows() {
            let Some(c) = columns.iter().position(|d| d.name == name.value(i)) else {
                continue;
            };
            out[c] = Some(match columns[c].ty {
                FeatureType::Numeric => {
                    if sample.is_null(i) {
                        return Err(bad("a numeric column without a sample"));
                    }
                    let v = sample.value(i);
                    let v: &Float64Array = v.as_primitive();
                    let mut sorted: Vec<f64> =
                        v.iter().flatten().filter(|x| x.is_finite()).collect();
                    sorted.sort_unstable_by(f64::total_cmp);
                    let range =
                        (!min.is_null(i) && !max.is_null(i)).then(|| (min.value(i), max.value(i)));
                    // The finite training values the sample was drawn from.
                    let count = (rows.value(i) - missing.value(i)).max(0) as u64;
                    let count = Some(count.max(sorted.len() as u64));
                    (Reference::Numeric { sorted, count }, range)
                }
                FeatureType::Categorical => {
                    if cats.is_null(i) || counts.is_null(i) {
                        return Err(bad("a categorical column without counts"));
                    }
                    let (k, n) = (cats.value(i), counts.value(i));
                    let (k, n): (&StringArray, &Int64Array) = (k.as_string(), n.as_primitive());
                    let mut cc = CategoryCounts::new(max_categories.max(k.len()));
                    for j in 0..k.len() {
                        cc.add(k.value(j), n.value(j).max(0) as u64);
                    }
                    cc.add_other(if other.is_null(i) {
                        0
                    } else {
                        other.value(i).max(0) as u64
                    });
                    (Reference::Categorical(cc), None)
                }
            });
        }
    }
    Ok(out)
}
