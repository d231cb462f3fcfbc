//! The registry as SQL tables: `registry_events` is the log itself (a
//! Parquet listing of `registry/log/`); `models` and `model_versions` are
//! the current state folded from it, built when a session starts.
//!
//! `model_versions`: name, version, stage, aliases (list), tags and metrics
//! (maps: `metrics['auc']`), model_type, training_time, run_id, description,
//! features and hyperparameters (JSON text), baseline_profile, artifact_*,
//! created_at, created_by, updated_at.
//! `models`: name, versions, latest_version, staging_version,
//! production_version, aliases (map alias -> version), created_at, updated_at.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, ListBuilder, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt64Array, UInt64Builder,
};

use super::model::{ModelVersion, Stage};
use super::state::RegistryState;
use crate::error::Result;

fn ts(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// `model_versions` as one batch.
pub fn model_versions(state: &RegistryState) -> Result<RecordBatch> {
    let vs: Vec<&ModelVersion> = state
        .models
        .values()
        .flat_map(|m| m.versions.values())
        .collect();
    let mut aliases = ListBuilder::new(StringBuilder::new());
    let mut tags = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut metrics = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
    for v in &vs {
        for a in &v.aliases {
            aliases.values().append_value(a);
        }
        aliases.append(true);
        for (k, t) in &v.tags {
            tags.keys().append_value(k);
            tags.values().append_value(t);
        }
        tags.append(true)?;
        for (k, m) in &v.metadata.metrics {
            metrics.keys().append_value(k);
            metrics.values().append_value(*m);
        }
        metrics.append(true)?;
    }
    let json = |f: &dyn Fn(&ModelVersion) -> String| -> ArrayRef {
        Arc::new(vs.iter().map(|v| Some(f(v))).collect::<StringArray>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("name", strings(vs.iter().map(|v| Some(v.name.as_str())))),
        (
            "version",
            Arc::new(vs.iter().map(|v| v.version).collect::<UInt64Array>()),
        ),
        ("stage", strings(vs.iter().map(|v| Some(v.stage.as_str())))),
        ("aliases", Arc::new(aliases.finish())),
        ("tags", Arc::new(tags.finish())),
        ("metrics", Arc::new(metrics.finish())),
        (
            "model_type",
            strings(vs.iter().map(|v| v.metadata.model_type.as_deref())),
        ),
        (
            "training_time",
            ts(vs
                .iter()
                .map(|v| v.metadata.training_time.map(|t| t.timestamp_micros()))),
        ),
        (
            "run_id",
            strings(vs.iter().map(|v| v.metadata.run_id.as_deref())),
        ),
        (
            "description",
            strings(vs.iter().map(|v| v.metadata.description.as_deref())),
        ),
        (
            "features",
            json(&|v| serde_json::to_string(&v.metadata.features).expect("json")),
        ),
        (
            "hyperparameters",
            json(&|v| serde_json::to_string(&v.metadata.hyperparameters).expect("json")),
        ),
        (
            "baseline_profile",
            strings(vs.iter().map(|v| v.baseline_profile())),
        ),
        (
            "artifact_name",
            strings(vs.iter().map(|v| Some(v.artifact.name.as_str()))),
        ),
        (
            "artifact_kind",
            strings(vs.iter().map(|v| Some(v.artifact.kind.as_str()))),
        ),
        (
            "artifact_sha256",
            strings(vs.iter().map(|v| Some(v.artifact.sha256.as_str()))),
        ),
        (
            "artifact_size",
            Arc::new(vs.iter().map(|v| v.artifact.size).collect::<UInt64Array>()),
        ),
        (
            "created_at",
            ts(vs.iter().map(|v| Some(v.created_at.timestamp_micros()))),
        ),
        (
            "created_by",
            strings(vs.iter().map(|v| Some(v.created_by.as_str()))),
        ),
        (
            "updated_at",
            ts(vs.iter().map(|v| Some(v.updated_at.timestamp_micros()))),
        ),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// `models` as one batch.
pub fn models(state: &RegistryState) -> Result<RecordBatch> {
    let ms: Vec<_> = state
        .models
        .iter()
        .filter(|(_, m)| !m.versions.is_empty())
        .collect();
    let mut aliases = MapBuilder::new(None, StringBuilder::new(), UInt64Builder::new());
    for (_, m) in &ms {
        for (a, v) in &m.aliases {
            aliases.keys().append_value(a);
            aliases.values().append_value(*v);
        }
        aliases.append(true)?;
    }
    let u64s = |f: &dyn Fn(&super::state::ModelState) -> Option<u64>| -> ArrayRef {
        Arc::new(ms.iter().map(|(_, m)| f(m)).collect::<UInt64Array>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("name", strings(ms.iter().map(|(n, _)| Some(n.as_str())))),
        ("versions", u64s(&|m| Some(m.versions.len() as u64))),
        (
            "latest_version",
            u64s(&|m| m.versions.keys().next_back().copied()),
        ),
        ("staging_version", u64s(&|m| m.holder(Stage::Staging))),
        ("production_version", u64s(&|m| m.holder(Stage::Production))),
        ("aliases", Arc::new(aliases.finish())),
        (
            "created_at",
            ts(ms.iter().map(|(_, m)| {
                m.versions
                    .values()
                    .map(|v| v.created_at.timestamp_micros())
                    .min()
            })),
        ),
        (
            "updated_at",
            ts(ms.iter().map(|(_, m)| {
                m.versions
                    .values()
                    .map(|v| v.updated_at.timestamp_micros())
                    .max()
            })),
        ),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}
