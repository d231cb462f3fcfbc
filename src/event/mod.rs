//! The event contract: Arrow schemas per model and the decoder that turns
//! Kafka payloads into record batches.
//!
//! Decoding is two cheap passes per payload. [`peek`] parses the JSON once
//! with serde into borrowed pieces only (the `model` name, the presence of
//! required fields, the keys of `features`): it rejects bad JSON and missing
//! fields with a precise reason, routes the record to its model and counts
//! feature names the model does not declare. Payloads are then fed, grouped
//! by model, to arrow-json's tape decoder with the model's schema, which
//! builds the columns directly. If arrow rejects a group (a value of the
//! wrong type), the group is bisected until every bad record is isolated,
//! so one bad record costs `O(log n)` extra decodes and never the batch.

mod peek;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_json::ReaderBuilder;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};

use crate::config::{Config, FeatureType};

pub use peek::{Peek, peek};

/// Which topic a record came from, and so which contract it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `mlwatch.predictions`
    Prediction,
    /// `mlwatch.features`
    Feature,
    /// `mlwatch.outcomes`
    Outcome,
}

/// Why a record went to the dead-letter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not valid UTF-8 JSON, or not a JSON object.
    BadJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has a value of the wrong type.
    WrongType,
    /// The `model` is not declared in the configuration.
    UnknownModel,
    /// The event's window had already closed when it arrived.
    Late,
    /// A tracking event for a run that is not open.
    UnknownRun,
    /// A tracking event for a run that has ended.
    RunEnded,
    /// A tracking `start` for a run id that exists.
    DuplicateRun,
    /// A tracking param logged again with another value.
    ParamChanged,
    /// A name, key or status that is not acceptable; an event time outside
    /// the years 0 to 9999.
    InvalidValue,
    /// A tracking `start` while `tracking.max_open_runs` runs are open.
    TooManyRuns,
    /// A new (version, variant) of a model in a window that already holds
    /// `window.max_groups` of them.
    TooManyGroups,
    /// A label for an event with no waiting prediction (never seen, late,
    /// or final long ago).
    UnmatchedLabel,
    /// A label for a prediction whose window's performance is already final.
    LateLabel,
}

impl Reason {
    /// The value stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadJson => "bad_json",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::UnknownModel => "unknown_model",
            Reason::Late => "late",
            Reason::UnknownRun => "unknown_run",
            Reason::RunEnded => "run_ended",
            Reason::DuplicateRun => "duplicate_run",
            Reason::ParamChanged => "param_changed",
            Reason::InvalidValue => "invalid_value",
            Reason::TooManyRuns => "too_many_runs",
            Reason::TooManyGroups => "too_many_groups",
            Reason::UnmatchedLabel => "unmatched_label",
            Reason::LateLabel => "late_label",
        }
    }
}

/// Field names of the contract.
pub mod field {
    pub const EVENT_ID: &str = "event_id";
    pub const TS: &str = "ts";
    pub const MODEL: &str = "model";
    pub const VERSION: &str = "version";
    pub const VARIANT: &str = "variant";
    pub const UNIT_ID: &str = "unit_id";
    pub const FEATURES: &str = "features";
    pub const PREDICTION: &str = "prediction";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const LABEL: &str = "label";
}

/// What a monitored column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// A declared feature.
    Feature,
    /// The model's `prediction`.
    Prediction,
}

impl ColumnKind {
    /// The value stored in result tables' `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Prediction => "prediction",
        }
    }
}

/// A column the windows summarise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Feature name, or `prediction`.
    pub name: String,
    /// Feature or prediction.
    pub kind: ColumnKind,
    /// Numeric or categorical.
    pub ty: FeatureType,
}

/// The schemas of one model, fixed by its declared features.
#[derive(Debug, Clone)]
pub struct ModelSchema {
    /// Model name.
    pub name: String,
    /// Declared features in name order.
    pub features: Vec<(String, FeatureType)>,
    /// Indexes (into `features`) of the numeric ones.
    pub numeric: Vec<usize>,
    /// Monitored columns: the features in name order, then the prediction.
    pub columns: Vec<ColumnDef>,
    /// Types of `columns`, in order.
    pub column_types: Vec<FeatureType>,
    /// Schema of prediction events.
    pub prediction: SchemaRef,
    /// Schema of feature events.
    pub feature: SchemaRef,
    /// Schema of outcome events.
    pub outcome: SchemaRef,
}

impl ModelSchema {
    /// Builds the schemas of `name` from its declared features.
    pub fn new(name: &str, features: &[(String, FeatureType)], prediction: FeatureType) -> Self {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let to_type = |t: FeatureType| match t {
            FeatureType::Numeric => DataType::Float64,
            FeatureType::Categorical => DataType::Utf8,
        };
        let feature_fields: Fields = features
            .iter()
            .map(|(n, t)| Field::new(n, to_type(*t), true))
            .collect();
        let features_field = Field::new(field::FEATURES, DataType::Struct(feature_fields), true);
        let prediction_schema = Schema::new(vec![
            Field::new(field::EVENT_ID, DataType::Utf8, false),
            Field::new(field::TS, ts.clone(), false),
            Field::new(field::MODEL, DataType::Utf8, false),
            Field::new(field::VERSION, DataType::Utf8, false),
            Field::new(field::VARIANT, DataType::Utf8, true),
            Field::new(field::UNIT_ID, DataType::Utf8, true),
            features_field.clone(),
            Field::new(field::PREDICTION, to_type(prediction), false),
            Field::new(field::LATENCY_MS, DataType::Float64, true),
        ]);
        let feature_schema = Schema::new(vec![
            Field::new(field::EVENT_ID, DataType::Utf8, false),
            Field::new(field::TS, ts.clone(), false),
            Field::new(field::MODEL, DataType::Utf8, false),
            Field::new(field::VERSION, DataType::Utf8, true),
            features_field,
        ]);
        let outcome_schema = Schema::new(vec![
            Field::new(field::EVENT_ID, DataType::Utf8, false),
            Field::new(field::TS, ts, false),
            Field::new(field::MODEL, DataType::Utf8, false),
            Field::new(field::LABEL, DataType::Utf8, false),
        ]);
        let numeric = features
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| *t == FeatureType::Numeric)
            .map(|(i, _)| i)
            .collect();
        let mut columns: Vec<ColumnDef> = features
            .iter()
            .map(|(n, t)| ColumnDef {
                name: n.clone(),
                kind: ColumnKind::Feature,
                ty: *t,
            })
            .collect();
        columns.push(ColumnDef {
            name: field::PREDICTION.to_string(),
            kind: ColumnKind::Prediction,
            ty: prediction,
        });
        let column_types = columns.iter().map(|c| c.ty).collect();
        Self {
            name: name.to_string(),
            features: features.to_vec(),
            numeric,
            columns,
            column_types,
            prediction: Arc::new(prediction_schema),
            feature: Arc::new(feature_schema),
            outcome: Arc::new(outcome_schema),
        }
    }

    /// The schema of events of `kind`.
    pub fn schema(&self, kind: EventKind) -> &SchemaRef {
        match kind {
            EventKind::Prediction => &self.prediction,
            EventKind::Feature => &self.feature,
            EventKind::Outcome => &self.outcome,
        }
    }

    /// Whether `name` is a declared feature.
    pub fn has_feature(&self, name: &str) -> bool {
        self.features
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .is_ok()
    }
}

/// All monitored models.
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    /// Models in name order.
    pub models: Vec<ModelSchema>,
    by_name: HashMap<String, usize>,
}

impl ModelCatalog {
    /// The catalog of the models declared in `config`.
    pub fn from_config(config: &Config) -> Self {
        let models: Vec<ModelSchema> = config
            .models
            .iter()
            .map(|(name, m)| {
                let feats: Vec<(String, FeatureType)> =
                    m.features.iter().map(|(k, v)| (k.clone(), *v)).collect();
                ModelSchema::new(name, &feats, m.prediction)
            })
            .collect();
        let by_name = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Self { models, by_name }
    }

    /// Index of the model called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// A batch of valid events of one model, with where each row came from.
#[derive(Debug)]
pub struct Decoded {
    /// Index of the model in the catalog.
    pub model: usize,
    /// The rows, in the model's schema for the event kind.
    pub batch: RecordBatch,
    /// For each row, the index of its record in the input slice.
    pub seq: Vec<u32>,
}

/// A record that cannot be used.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Index of the record in the input slice.
    pub seq: u32,
    /// Why.
    pub reason: Reason,
    /// The decoder's message.
    pub error: String,
    /// For a value of the wrong type: where it belongs, when the record
    /// says (data quality counts it against its window and column).
    pub type_error: Option<TypeError>,
}

/// Where a record with a value of the wrong type belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// Model index in the catalog.
    pub model: usize,
    /// Event time, epoch ms.
    pub ts: i64,
    /// Model version ("" when absent).
    pub version: String,
    /// A/B variant ("" when absent).
    pub variant: String,
    /// Indexes (into [`ModelSchema::columns`]) of the numeric columns whose
    /// value is neither a number, a numeric string nor null.
    pub columns: Vec<usize>,
}

/// Finds the columns of `model` holding a value of the wrong type in
/// `payload`, with the record's window keys; `None` when the record's
/// event time cannot be read or no column is to blame.
fn diagnose(model: &ModelSchema, index: usize, payload: &[u8]) -> Option<TypeError> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let ts = match v.get(field::TS)? {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()?
            .timestamp_millis(),
        _ => return None,
    };
    // A time outside the windows' range is not counted against a window.
    if !ts_in_range(ts) {
        return None;
    }
    let text = |name: &str| match v.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let bad_number = |x: &serde_json::Value| match x {
        serde_json::Value::Null | serde_json::Value::Number(_) => false,
        serde_json::Value::String(s) => s.trim().parse::<f64>().is_err(),
        _ => true,
    };
    let columns: Vec<usize> = model
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.ty == FeatureType::Numeric)
        .filter(|(_, c)| {
            let slot = match c.kind {
                ColumnKind::Feature => v.get(field::FEATURES).and_then(|f| f.get(&c.name)),
                ColumnKind::Prediction => v.get(field::PREDICTION),
            };
            slot.is_some_and(bad_number)
        })
        .map(|(i, _)| i)
        .collect();
    (!columns.is_empty()).then(|| TypeError {
        model: index,
        ts,
        version: text(field::VERSION),
        variant: text(field::VARIANT),
        columns,
    })
}

/// What [`decode`] made of a slice of payloads.
#[derive(Debug, Default)]
pub struct DecodeOutput {
    /// Valid events, grouped by model.
    pub decoded: Vec<Decoded>,
    /// Invalid records.
    pub rejected: Vec<Rejected>,
    /// Feature names seen that the event's model does not declare.
    pub unknown_features: u64,
}

/// Poll batches smaller than this are decoded on one thread.
const PARALLEL_MIN: usize = 2048;

/// [`decode`] on two threads: the second half of `payloads` is decoded on a
/// scoped thread while the calling one decodes the first. The rows and
/// rejections are those of [`decode`] (positions refer to `payloads`); a
/// model's rows may come as two batches.
pub fn decode_parallel(
    catalog: &ModelCatalog,
    kind: EventKind,
    payloads: &[&[u8]],
) -> DecodeOutput {
    if payloads.len() < PARALLEL_MIN {
        return decode(catalog, kind, payloads);
    }
    let mid = payloads.len() / 2;
    let (head, tail) = payloads.split_at(mid);
    let (mut out, second) = std::thread::scope(|s| {
        let second = s.spawn(|| decode(catalog, kind, tail));
        (decode(catalog, kind, head), second.join())
    });
    let second = second.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let shift = mid as u32;
    out.unknown_features += second.unknown_features;
    out.rejected
        .extend(second.rejected.into_iter().map(|mut r| {
            r.seq += shift;
            r
        }));
    out.decoded.extend(second.decoded.into_iter().map(|mut d| {
        d.seq.iter_mut().for_each(|s| *s += shift);
        d
    }));
    out
}

/// The earliest event time an event may have: 0000-01-01T00:00:00Z, epoch
/// ms (RFC 3339 and the archive's date partitions name years 0 to 9999;
/// window arithmetic on times far outside would overflow).
pub(crate) const TS_MIN: i64 = -62_167_219_200_000;
/// The latest event time an event may have: 9999-12-31T23:59:59.999Z.
pub(crate) const TS_MAX: i64 = 253_402_300_799_999;

/// Whether `ts` (epoch ms) is an event time mlwatch accepts.
pub(crate) fn ts_in_range(ts: i64) -> bool {
    (TS_MIN..=TS_MAX).contains(&ts)
}

/// Decodes payloads of one event kind into Arrow batches per model.
pub fn decode(catalog: &ModelCatalog, kind: EventKind, payloads: &[&[u8]]) -> DecodeOutput {
    let mut out = DecodeOutput::default();
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); catalog.models.len()];
    for (i, payload) in payloads.iter().enumerate() {
        let seq = i as u32;
        match peek(payload, kind) {
            Err((reason, error)) => out.rejected.push(Rejected {
                seq,
                reason,
                error,
                type_error: None,
            }),
            Ok(p) => match catalog.index(&p.model) {
                None => out.rejected.push(Rejected {
                    seq,
                    type_error: None,
                    reason: Reason::UnknownModel,
                    error: format!("model `{}` is not declared in the configuration", p.model),
                }),
                Some(m) => {
                    let schema = &catalog.models[m];
                    out.unknown_features += p
                        .feature_keys
                        .iter()
                        .filter(|k| !schema.has_feature(k))
                        .count() as u64;
                    groups[m].push(seq);
                }
            },
        }
    }
    for (m, seqs) in groups.into_iter().enumerate() {
        if seqs.is_empty() {
            continue;
        }
        let schema = catalog.models[m].schema(kind).clone();
        let g = Group {
            schema: &schema,
            model: &catalog.models[m],
            index: m,
        };
        decode_group(&g, payloads, &seqs, &mut out);
    }
    out.rejected.sort_by_key(|r| r.seq);
    out
}

fn arrow_decode(
    schema: &SchemaRef,
    payloads: &[&[u8]],
    seqs: &[u32],
) -> Result<Option<RecordBatch>, String> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(seqs.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for &s in seqs {
        let p = payloads[s as usize];
        let n = decoder.decode(p).map_err(|e| e.to_string())?;
        if n != p.len() {
            return Err("record holds more than one JSON value".into());
        }
        decoder.decode(b"\n").map_err(|e| e.to_string())?;
    }
    decoder.flush().map_err(|e| e.to_string())
}

/// One model's payloads of one kind.
struct Group<'a> {
    schema: &'a SchemaRef,
    model: &'a ModelSchema,
    index: usize,
}

/// Decodes `seqs` as one batch; on failure bisects to isolate bad records.
fn decode_group(g: &Group<'_>, payloads: &[&[u8]], seqs: &[u32], out: &mut DecodeOutput) {
    match arrow_decode(g.schema, payloads, seqs) {
        Ok(Some(batch)) => push_decoded(g.index, batch, seqs, out),
        Ok(None) => {}
        Err(error) if seqs.len() == 1 => {
            // A category may be any JSON value: an object or array where a
            // category is expected is counted as its JSON text.
            let fixed = categories_as_text(g.model, payloads[seqs[0] as usize]);
            match fixed.map(|p| arrow_decode(g.schema, &[p.as_slice()], &[0])) {
                Some(Ok(Some(batch))) => push_decoded(g.index, batch, seqs, out),
                _ => out.rejected.push(Rejected {
                    seq: seqs[0],
                    reason: Reason::WrongType,
                    error,
                    type_error: diagnose(g.model, g.index, payloads[seqs[0] as usize]),
                }),
            }
        }
        Err(_) => {
            let mid = seqs.len() / 2;
            decode_group(g, payloads, &seqs[..mid], out);
            decode_group(g, payloads, &seqs[mid..], out);
        }
    }
}

/// Adds a decoded batch of `seqs` to `out`, less its rows whose event
/// time is outside the years 0 to 9999 (refused as `invalid_value`: the
/// decoder takes a huge number for a time, saturated).
fn push_decoded(model: usize, batch: RecordBatch, seqs: &[u32], out: &mut DecodeOutput) {
    let ts = batch
        .column_by_name(field::TS)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let keep: Vec<bool> = match ts {
        Some(ts) => (0..batch.num_rows())
            .map(|i| ts.is_null(i) || ts_in_range(ts.value(i)))
            .collect(),
        None => vec![true; batch.num_rows()],
    };
    if keep.iter().all(|k| *k) {
        out.decoded.push(Decoded {
            model,
            batch,
            seq: seqs.to_vec(),
        });
        return;
    }
    for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
        let t = ts.map_or(0, |c| c.value(i));
        out.rejected.push(Rejected {
            seq: seqs[i],
            reason: Reason::InvalidValue,
            error: format!("event time {t} ms is outside the years 0 to 9999"),
            type_error: None,
        });
    }
    let mask = BooleanArray::from(keep.clone());
    let batch = filter_record_batch(&batch, &mask).expect("a mask of the batch's length");
    let seq: Vec<u32> = seqs
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(s, _)| *s)
        .collect();
    if !seq.is_empty() {
        out.decoded.push(Decoded { model, batch, seq });
    }
}

/// The payload with every object or array value of a categorical column
/// (feature or prediction) replaced by its JSON text; `None` when there is
/// none (the record's error is elsewhere).
fn categories_as_text(model: &ModelSchema, payload: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let mut changed = false;
    let mut fix = |x: &mut serde_json::Value| {
        if x.is_object() || x.is_array() {
            *x = serde_json::Value::String(x.to_string());
            changed = true;
        }
    };
    for c in model
        .columns
        .iter()
        .filter(|c| c.ty == FeatureType::Categorical)
    {
        let slot = match c.kind {
            ColumnKind::Feature => v.get_mut(field::FEATURES).and_then(|f| f.get_mut(&c.name)),
            ColumnKind::Prediction => v.get_mut(field::PREDICTION),
        };
        if let Some(x) = slot {
            fix(x);
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType};

    fn catalog() -> ModelCatalog {
        let cfg = Config::from_toml_str(
            "[models.m]\nreference = \"r.csv\"\n[models.m.features]\nx = \"numeric\"\nc = \"categorical\"",
        )
        .unwrap();
        ModelCatalog::from_config(&cfg)
    }

    #[test]
    fn decodes_valid_and_rejects_each_bad_record_with_reason() {
        let recs: Vec<&[u8]> = vec![
            br#"{"event_id":"a","ts":"2026-01-01T00:00:00Z","model":"m","version":3,"features":{"x":1.5,"c":"de","zz":1},"prediction":0.2}"#,
            br#"{"event_id":"b","ts":1767225600000,"model":"m","version":"v2","features":{"x":"oops"},"prediction":1}"#,
            br#"{"event_id":"c","ts":1767225600001,"model":"m","version":"1","prediction":1"#,
            br#"{"event_id":"d","ts":1767225600002,"model":"nope","version":"1","prediction":1}"#,
            br#"{"event_id":"e","model":"m","version":"1","prediction":1}"#,
            br#"{"event_id":"f","ts":1767225600003,"model":"m","version":"1","features":{"x":2,"c":true},"prediction":3}"#,
        ];
        let out = decode(&catalog(), EventKind::Prediction, &recs);
        let reasons: Vec<(u32, Reason)> = out.rejected.iter().map(|r| (r.seq, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (1, Reason::WrongType),
                (2, Reason::BadJson),
                (3, Reason::UnknownModel),
                (4, Reason::MissingField)
            ]
        );
        assert_eq!(out.unknown_features, 1);
        let rows: usize = out.decoded.iter().map(|d| d.batch.num_rows()).sum();
        assert_eq!(rows, 2);
        let seqs: Vec<u32> = out.decoded.iter().flat_map(|d| d.seq.clone()).collect();
        assert_eq!(seqs, vec![0, 5]);
        let b = &out.decoded[0].batch;
        let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_767_225_600_000);
        let version = b.column(3).as_string::<i32>();
        assert_eq!(version.value(0), "3");
        let feats = b.column(6).as_struct();
        let x = feats
            .column_by_name("x")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(x.value(0), 1.5);
        let last = out
            .decoded
            .last()
            .unwrap()
            .batch
            .column(6)
            .as_struct()
            .clone();
        let c = last.column_by_name("c").unwrap().as_string::<i32>();
        assert_eq!(c.value(0), "true");
        assert!(!last.column_by_name("x").unwrap().is_null(0));
    }

    /// Two threads give the rows and rejections of one, at the same
    /// positions.
    #[test]
    fn parallel_decoding_equals_decoding_on_one_thread() {
        let recs: Vec<Vec<u8>> = (0..5000)
            .map(|i| match i % 97 {
                0 => format!(r#"{{"event_id":"{i}","ts":{i},"model":"m","features":{{"x":"no"}}}}"#),
                1 => format!(r#"{{"event_id":"{i}","ts":{i},"model":"other"}}"#),
                2 => "{not json".to_string(),
                _ => format!(
                    r#"{{"event_id":"{i}","ts":{i},"model":"m","version":"1","features":{{"x":{i}.5,"c":"k{}","zz":1}},"prediction":0.5}}"#,
                    i % 7
                ),
            }
            .into_bytes())
            .collect();
        let recs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
        assert!(recs.len() >= PARALLEL_MIN);
        let rows = |o: &DecodeOutput| {
            let mut v: Vec<(u32, String)> = Vec::new();
            for d in &o.decoded {
                let ids = d
                    .batch
                    .column_by_name("event_id")
                    .unwrap()
                    .as_string::<i32>();
                let x = d.batch.column_by_name("features").unwrap().as_struct();
                let x = x.column_by_name("x").unwrap().as_primitive::<Float64Type>();
                for (i, s) in d.seq.iter().enumerate() {
                    v.push((*s, format!("{} {}", ids.value(i), x.value(i))));
                }
            }
            v.sort();
            v
        };
        let rejected = |o: &DecodeOutput| -> Vec<(u32, Reason)> {
            o.rejected.iter().map(|r| (r.seq, r.reason)).collect()
        };
        let (one, two) = (
            decode(&catalog(), EventKind::Prediction, &recs),
            decode_parallel(&catalog(), EventKind::Prediction, &recs),
        );
        assert_eq!(rows(&one).len(), 5000 - 3 * 52);
        assert_eq!(rows(&one), rows(&two));
        assert_eq!(rejected(&one), rejected(&two));
        assert_eq!(one.unknown_features, two.unknown_features);
        assert_eq!(two.decoded.len(), 2, "one batch per half");
    }

    #[test]
    fn a_category_of_any_json_type_is_counted() {
        let recs: Vec<&[u8]> = vec![
            br#"{"event_id":"a","ts":1,"model":"m","version":"1","features":{"x":1,"c":{"k":[1,2]}},"prediction":0.2}"#,
            br#"{"event_id":"b","ts":2,"model":"m","version":"1","features":{"x":1,"c":[true,null]},"prediction":0.2}"#,
            br#"{"event_id":"c","ts":3,"model":"m","version":"1","features":{"x":1,"c":null},"prediction":0.2}"#,
            br#"{"event_id":"d","ts":4,"model":"m","version":"1","features":{"x":1,"c":2.5},"prediction":0.2}"#,
            br#"{"event_id":"e","ts":5,"model":"m","version":"1","features":{"x":{"no":1},"c":"z"},"prediction":0.2}"#,
        ];
        let out = decode(&catalog(), EventKind::Prediction, &recs);
        let reasons: Vec<(u32, Reason)> = out.rejected.iter().map(|r| (r.seq, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![(4, Reason::WrongType)],
            "a numeric object stays an error"
        );
        let mut cats = Vec::new();
        for d in &out.decoded {
            let c = d
                .batch
                .column(6)
                .as_struct()
                .column_by_name("c")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for (i, s) in d.seq.iter().enumerate() {
                cats.push((*s, c.is_valid(i).then(|| c.value(i).to_string())));
            }
        }
        cats.sort();
        assert_eq!(
            cats,
            vec![
                (0, Some(r#"{"k":[1,2]}"#.to_string())),
                (1, Some("[true,null]".to_string())),
                (2, None),
                (3, Some("2.5".to_string())),
            ]
        );
    }
}
