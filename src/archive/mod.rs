//! The archive: the events `mlwatch run` consumed, as Parquet, for backfills
//! and ad-hoc SQL.
//!
//! Three tables, one per event kind, Hive-partitioned by model and by the
//! UTC date of the event time:
//!
//! | table | layout under the storage root |
//! |---|---|
//! | `predictions` | `predictions/model=<m>/date=<yyyy-mm-dd>/<topic>-<partition>-<first_offset>.parquet` |
//! | `features` | `features/model=<m>/date=<yyyy-mm-dd>/<topic>-<partition>-<first_offset>.parquet` |
//! | `outcomes` | `outcomes/model=<m>/date=<yyyy-mm-dd>/<topic>-<partition>-<first_offset>.parquet` |
//!
//! **What is archived**: every event that decodes (each file's rows in
//! event-time order, see **Files**);
//! records the decoder refuses (bad JSON, wrong types, unknown models) are
//! in `dead_letters` instead. Events the windows then refused as late (or
//! labels that came after their window's performance was final) are
//! archived too, and are also dead letters: whether an event is late
//! depends on how the partitions interleaved, which a replay after a crash
//! does not repeat, while what decodes depends only on the record. So the
//! archive of a crashed and restarted run is that of an uninterrupted one,
//! and a backfill (which reads in event-time order, where nothing is late)
//! counts late events in their windows: it reproduces the stream's rows
//! where the stream had no late events, and completes them where it had.
//!
//! **Features are a map** (`map<utf8, utf8>`), not a struct per model: the
//! archive keeps every feature an event carries, declared or not, so a
//! feature declared later can be backfilled from events logged before, and
//! files written under different declarations share one schema (one table
//! across models and config changes). Values follow one convention, also
//! for `prediction`: a JSON string is stored as its text, `null` as NULL,
//! anything else as its JSON text (`0.25`, `true`, `{"a":1}`). SQL reads
//! them with `CAST(features['income'] AS DOUBLE)` or
//! `features['region'] = 'north'`. [`payloads`] turns a row back into an
//! event payload: a value that is a JSON number goes back as a number, any
//! other as a string, which the decoder (with primitive coercion) reads as
//! it read the original.
//!
//! **Files**: rows are buffered until the pipeline's next checkpoint (or
//! until `archive.max_buffered` rows force one) and written as one file per
//! table, model, date and source partition, named after the lowest offset
//! among its rows. Each file's rows are sorted by event time, then offset
//! ([`SORTED_BY`]), and its metadata says so (Parquet `sorting_columns`):
//! a backfill merges such files in event-time order instead of sorting
//! them. A replay after a crash starts at the checkpoint's
//! offsets and archives the same records (what decodes depends only on the
//! record), so each (table, model, date, partition) gets a file named after
//! the same first record, which overwrites the crashed run's; its later
//! records land in files named after later offsets, and a backfill reads a
//! record that two files hold once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use chrono::DateTime;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int32Builder, Int64Builder, MapArray,
    MapBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use serde::Deserialize;

use crate::error::Result;
use crate::event::{Decoded, EventKind, ModelCatalog, field};
use crate::storage::Storage;

pub(crate) mod columnar;

/// Archived prediction events.
pub const PREDICTIONS: &str = "predictions";
/// Archived feature events.
pub const FEATURES: &str = "features";
/// Archived outcome (label) events.
pub const OUTCOMES: &str = "outcomes";

/// Provenance columns.
pub mod col {
    /// Topic (or input) the event came from.
    pub const TOPIC: &str = "topic";
    /// Partition within it.
    pub const PARTITION: &str = "partition";
    /// Offset (or row) within the partition.
    pub const OFFSET: &str = "offset";
}

/// The archive table of an event kind.
pub fn table_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Prediction => PREDICTIONS,
        EventKind::Feature => FEATURES,
        EventKind::Outcome => OUTCOMES,
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The type of the `features` column (what [`MapBuilder`] makes).
fn map_type() -> DataType {
    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    b.finish().data_type().clone()
}

fn provenance() -> [Field; 3] {
    [
        Field::new(col::TOPIC, DataType::Utf8, false),
        Field::new(col::PARTITION, DataType::Int32, false),
        Field::new(col::OFFSET, DataType::Int64, false),
    ]
}

/// Schema of `predictions` files (`model` and `date` come from the path).
pub static PREDICTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new(field::EVENT_ID, DataType::Utf8, false),
        Field::new(field::TS, ts_type(), false),
        Field::new(field::VERSION, DataType::Utf8, true),
        Field::new(field::VARIANT, DataType::Utf8, true),
        Field::new(field::UNIT_ID, DataType::Utf8, true),
        Field::new(field::FEATURES, map_type(), true),
        Field::new(field::PREDICTION, DataType::Utf8, true),
        Field::new(field::LATENCY_MS, DataType::Float64, true),
    ];
    f.extend(provenance());
    Arc::new(Schema::new(f))
});

/// Schema of `features` files.
pub static FEATURES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new(field::EVENT_ID, DataType::Utf8, false),
        Field::new(field::TS, ts_type(), false),
        Field::new(field::VERSION, DataType::Utf8, true),
        Field::new(field::FEATURES, map_type(), true),
    ];
    f.extend(provenance());
    Arc::new(Schema::new(f))
});

/// Schema of `outcomes` files.
pub static OUTCOMES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = vec![
        Field::new(field::EVENT_ID, DataType::Utf8, false),
        Field::new(field::TS, ts_type(), false),
        Field::new(field::LABEL, DataType::Utf8, true),
    ];
    f.extend(provenance());
    Arc::new(Schema::new(f))
});

/// The file schema of an event kind's table.
pub fn schema_of(kind: EventKind) -> SchemaRef {
    match kind {
        EventKind::Prediction => PREDICTIONS_SCHEMA.clone(),
        EventKind::Feature => FEATURES_SCHEMA.clone(),
        EventKind::Outcome => OUTCOMES_SCHEMA.clone(),
    }
}

/// UTC date (`yyyy-mm-dd`) of an epoch-ms time: the `date` partition.
pub fn date_of(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".into())
}

/// Relative path of one archive file.
pub fn file(
    kind: EventKind,
    model: &str,
    date: &str,
    topic: &str,
    partition: i32,
    first: i64,
) -> String {
    format!(
        "{}/model={model}/date={date}/{topic}-{partition}-{first:020}.parquet",
        table_of(kind)
    )
}

/// What the archive keeps of a payload beyond the decoded columns.
#[derive(Deserialize)]
struct Extra<'a> {
    #[serde(borrow, default)]
    features: Option<Entries<'a>>,
    #[serde(borrow, default)]
    prediction: Option<Stored<'a>>,
}

/// The `features` object as stored: entries sorted by key, the last of a
/// key given twice kept (as a map would).
struct Entries<'a>(Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>);

/// A JSON value as the archive stores it (see the module docs): a string
/// as its text, `null` as NULL (`None`), anything else as its JSON text,
/// read without building a `serde_json::Value` (but for objects and
/// arrays), the text being the one `Value::to_string` gives.
struct Stored<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Stored<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Stored<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(Stored(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Stored(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_unit<E: Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Stored(None))
            }
            fn visit_none<E: Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Stored(None))
            }
            fn visit_bool<E: Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
                Ok(Stored(Some(Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                }))))
            }
            fn visit_u64<E: Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                Ok(Stored(Some(Cow::Owned(
                    serde_json::Number::from(v).to_string(),
                ))))
            }
            fn visit_i64<E: Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                Ok(Stored(Some(Cow::Owned(
                    serde_json::Number::from(v).to_string(),
                ))))
            }
            fn visit_f64<E: Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
                let n = serde_json::Number::from_f64(v)
                    .ok_or_else(|| E::custom("a number JSON cannot hold"))?;
                Ok(Stored(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let v = serde_json::Value::deserialize(MapAccessDeserializer::new(m))?;
                Ok(Stored(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_seq<S: SeqAccess<'de>>(
                self,
                s: S,
            ) -> std::result::Result<Self::Value, S::Error> {
                let v = serde_json::Value::deserialize(SeqAccessDeserializer::new(s))?;
                Ok(Stored(Some(Cow::Owned(v.to_string()))))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of feature name to value")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut entries: Vec<(Cow<'a, str>, Option<Cow<'a, str>>)> = Vec::new();
                // (A key read as `Stored` borrows when it has no escapes.)
                while let Some(k) = m.next_key::<Stored<'a>>()? {
                    let v: Stored<'a> = m.next_value()?;
                    entries.push((k.0.unwrap_or_default(), v.0));
                }
                // Sorted by key; of a key given twice, the last (stable sort,
                // then keep the last of each run).
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out: Vec<(Cow<'a, str>, Option<Cow<'a, str>>)> =
                    Vec::with_capacity(entries.len());
                for e in entries {
                    match out.last_mut() {
                        Some(last) if last.0 == e.0 => *last = e,
                        _ => out.push(e),
                    }
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Column builders of one file.
struct Rows {
    kind: EventKind,
    event_id: StringBuilder,
    ts: TimestampMillisecondBuilder,
    version: StringBuilder,
    variant: StringBuilder,
    unit_id: StringBuilder,
    features: MapBuilder<StringBuilder, StringBuilder>,
    prediction: StringBuilder,
    latency: Float64Builder,
    label: StringBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    /// The lowest offset of the rows: the file's name.
    first: i64,
}

impl Rows {
    fn new(kind: EventKind) -> Self {
        Self {
            kind,
            event_id: StringBuilder::new(),
            ts: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            version: StringBuilder::new(),
            variant: StringBuilder::new(),
            unit_id: StringBuilder::new(),
            features: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            prediction: StringBuilder::new(),
            latency: Float64Builder::new(),
            label: StringBuilder::new(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            first: i64::MAX,
        }
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> =
            vec![Arc::new(self.event_id.finish()), Arc::new(self.ts.finish())];
        match self.kind {
            EventKind::Prediction => {
                cols.push(Arc::new(self.version.finish()));
                cols.push(Arc::new(self.variant.finish()));
                cols.push(Arc::new(self.unit_id.finish()));
                cols.push(Arc::new(self.features.finish()));
                cols.push(Arc::new(self.prediction.finish()));
                cols.push(Arc::new(self.latency.finish()));
            }
            EventKind::Feature => {
                cols.push(Arc::new(self.version.finish()));
                cols.push(Arc::new(self.features.finish()));
            }
            EventKind::Outcome => cols.push(Arc::new(self.label.finish())),
        }
        cols.push(Arc::new(self.topic.finish()));
        cols.push(Arc::new(self.partition.finish()));
        cols.push(Arc::new(self.offset.finish()));
        Ok(RecordBatch::try_new(schema_of(self.kind), cols)?)
    }
}

/// What the rows of every archive file are sorted by (its topic and
/// partition are one per file): event time, then offset. A backfill merges
/// files so written instead of sorting them.
pub(crate) const SORTED_BY: [&str; 2] = [field::TS, col::OFFSET];

/// The event times `[min, max]` of an archive file of `kind` as
/// `mlwatch run` writes them: the table's schema, one topic and partition,
/// each row group sorted by [`SORTED_BY`] and saying so (Parquet
/// `sorting_columns`), the row groups in that order too (by their
/// statistics). `None` for any other file (archives written before files
/// were sorted, exports, other writers' files), which a backfill sorts. A
/// file without rows spans nothing (`min > max`).
pub(crate) fn sorted_span(
    kind: EventKind,
    meta: &datafusion::parquet::file::metadata::ParquetMetaData,
) -> Option<(i64, i64)> {
    use datafusion::parquet::file::metadata::SortingColumn;
    use datafusion::parquet::file::statistics::Statistics;
    let file = meta.file_metadata();
    let schema = datafusion::parquet::arrow::parquet_to_arrow_schema(
        file.schema_descr(),
        file.key_value_metadata(),
    )
    .ok()?;
    let want = schema_of(kind);
    let same = schema.fields().len() == want.fields().len()
        && schema
            .fields()
            .iter()
            .zip(want.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if !same {
        return None;
    }
    let leaves = file.schema_descr().columns();
    let leaf = |name: &str| {
        leaves
            .iter()
            .position(|c| c.path().parts() == [name.to_string()])
    };
    let expected: Vec<SortingColumn> = SORTED_BY
        .iter()
        .map(|name| {
            leaf(name).map(|i| SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: false,
            })
        })
        .collect::<Option<_>>()?;
    let (ts, offset) = (leaf(field::TS)?, leaf(col::OFFSET)?);
    let (topic, partition) = (leaf(col::TOPIC)?, leaf(col::PARTITION)?);
    // Per row group: (min ts, max ts, min offset, max offset).
    let mut spans: Vec<(i64, i64, i64, i64)> = Vec::new();
    let mut source = None;
    for rg in meta.row_groups() {
        if rg.sorting_columns() != Some(&expected) {
            return None;
        }
        if rg.num_rows() == 0 {
            continue;
        }
        let (Some(Statistics::Int64(t)), Some(Statistics::Int64(o))) =
            (rg.column(ts).statistics(), rg.column(offset).statistics())
        else {
            return None;
        };
        spans.push((*t.min_opt()?, *t.max_opt()?, *o.min_opt()?, *o.max_opt()?));
        // One topic and partition, so (ts, offset) orders the rows as
        // (ts, topic, partition, offset) does.
        let (Some(Statistics::ByteArray(n)), Some(Statistics::Int32(p))) = (
            rg.column(topic).statistics(),
            rg.column(partition).statistics(),
        ) else {
            return None;
        };
        let here = (n.min_opt()?.clone(), *p.min_opt()?);
        if Some(n.max_opt()?) != Some(&here.0) || p.max_opt()? != &here.1 {
            return None;
        }
        if source.get_or_insert_with(|| here.clone()) != &here {
            return None;
        }
    }
    // Each row group's rows after the one before's.
    let ordered = spans
        .windows(2)
        .all(|w| w[0].1 < w[1].0 || (w[0].1 == w[1].0 && w[0].3 <= w[1].2));
    if !ordered {
        return None;
    }
    let min = spans.iter().map(|s| s.0).min().unwrap_or(i64::MAX);
    let max = spans.iter().map(|s| s.1).max().unwrap_or(i64::MIN);
    Some((min, max))
}

/// Key of one archive file within its topic: (partition, model index,
/// UTC day number of the event time). Plain values, so finding a row's file
/// allocates nothing.
type FileKey = (i32, usize, i64);

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Where an archived record came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provenance<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Events buffered until the next checkpoint.
#[derive(Default)]
pub(crate) struct Archive {
    /// By topic, then [`FileKey`]; each file's rows with its model's name.
    files: HashMap<String, HashMap<FileKey, (String, Rows)>>,
    len: usize,
}

impl Archive {
    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Buffers the rows of `decoded` (one model, one kind); `record(seq)`
    /// gives a row's payload and provenance.
    pub fn add<'a>(
        &mut self,
        kind: EventKind,
        catalog: &ModelCatalog,
        decoded: &Decoded,
        record: impl Fn(usize) -> (&'a [u8], Provenance<'a>),
    ) {
        let b = &decoded.batch;
        let model = catalog.models[decoded.model].name.as_str();
        let strings = |name: &str| b.column_by_name(name).map(|c| c.as_string::<i32>());
        let (Some(event_id), Some(ts)) = (
            strings(field::EVENT_ID),
            b.column_by_name(field::TS)
                .map(|c| c.as_primitive::<TimestampMillisecondType>()),
        ) else {
            return;
        };
        let (version, variant, unit_id, label) = (
            strings(field::VERSION),
            strings(field::VARIANT),
            strings(field::UNIT_ID),
            strings(field::LABEL),
        );
        let latency: Option<&Float64Array> = b
            .column_by_name(field::LATENCY_MS)
            .and_then(|c| c.as_primitive_opt::<Float64Type>());
        fn opt(c: Option<&StringArray>, row: usize) -> Option<&str> {
            c.filter(|c| !c.is_null(row)).map(|c| c.value(row))
        }
        for (row, seq) in decoded.seq.iter().enumerate() {
            let (payload, from) = record(*seq as usize);
            let t = ts.value(row);
            let key = (from.partition, decoded.model, t.div_euclid(DAY_MS));
            let by_topic = match self.files.get_mut(from.topic) {
                Some(m) => m,
                None => self.files.entry(from.topic.to_string()).or_default(),
            };
            let (_, rows) = by_topic
                .entry(key)
                .or_insert_with(|| (model.to_string(), Rows::new(kind)));
            rows.event_id.append_value(event_id.value(row));
            rows.ts.append_value(t);
            rows.topic.append_value(from.topic);
            rows.partition.append_value(from.partition);
            rows.offset.append_value(from.offset);
            rows.first = rows.first.min(from.offset);
            self.len += 1;
            if kind == EventKind::Outcome {
                rows.label.append_option(opt(label, row));
                continue;
            }
            rows.version.append_option(opt(version, row));
            let extra: Option<Extra<'_>> = serde_json::from_slice(payload).ok();
            match extra.as_ref().and_then(|e| e.features.as_ref()) {
                Some(map) => {
                    for (k, v) in &map.0 {
                        rows.features.keys().append_value(k);
                        rows.features.values().append_option(v.as_deref());
                    }
                    // Infallible: keys and values were appended in pairs.
                    let _ = rows.features.append(true);
                }
                None => {
                    let _ = rows.features.append(false);
                }
            }
            if kind == EventKind::Prediction {
                rows.variant.append_option(opt(variant, row));
                rows.unit_id.append_option(opt(unit_id, row));
                rows.latency
                    .append_option(latency.filter(|c| !c.is_null(row)).map(|c| c.value(row)));
                rows.prediction.append_option(
                    extra
                        .as_ref()
                        .and_then(|e| e.prediction.as_ref())
                        .and_then(|p| p.0.as_deref()),
                );
            }
        }
    }

    /// Writes and empties the buffer: files are encoded on blocking
    /// threads and put a few at a time (a checkpoint of a topic with many
    /// partitions writes many small files).
    pub async fn write(&mut self, storage: &Storage) -> Result<()> {
        use futures::StreamExt;
        let files = std::mem::take(&mut self.files);
        self.len = 0;
        let mut writes = Vec::new();
        for (topic, by_key) in files {
            for ((partition, _, day), (model, rows)) in by_key {
                let date = date_of(day * DAY_MS);
                let path = file(rows.kind, &model, &date, &topic, partition, rows.first);
                writes.push((path, rows.finish()?));
            }
        }
        let results: Vec<Result<()>> =
            futures::stream::iter(writes.into_iter().map(|(path, batch)| {
                let storage = storage.clone();
                async move {
                    let bytes = tokio::task::spawn_blocking(move || {
                        crate::storage::encode_parquet_sorted(batch.schema(), &batch, &SORTED_BY)
                    })
                    .await
                    .map_err(|e| crate::error::Error::Task {
                        task: "archive encoder",
                        reason: e.to_string(),
                    })??;
                    storage.put(&path, bytes).await
                }
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

/// Rebuilds the event payloads of archive rows (a batch in the table's
/// file schema, extra columns ignored; `model_of(row)` names the row's
/// model, which the path holds), for the decoder.
pub fn payloads<'m>(
    kind: EventKind,
    batch: &RecordBatch,
    model_of: impl Fn(usize) -> &'m str,
) -> Result<Vec<String>> {
    use std::fmt::Write;
    let strings = |name: &str| batch.column_by_name(name).map(|c| c.as_string::<i32>());
    let missing = |name: &str| {
        crate::error::Error::Config(format!(
            "archive rows of `{}` lack the column `{name}`",
            table_of(kind)
        ))
    };
    let event_id = strings(field::EVENT_ID).ok_or_else(|| missing(field::EVENT_ID))?;
    let ts = batch
        .column_by_name(field::TS)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| missing(field::TS))?;
    let (version, variant, unit_id, prediction, label) = (
        strings(field::VERSION),
        strings(field::VARIANT),
        strings(field::UNIT_ID),
        strings(field::PREDICTION),
        strings(field::LABEL),
    );
    let latency = batch
        .column_by_name(field::LATENCY_MS)
        .and_then(|c| c.as_primitive_opt::<Float64Type>());
    let features: Option<&MapArray> = batch
        .column_by_name(field::FEATURES)
        .and_then(|c| c.as_map_opt());
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut p = String::with_capacity(256);
        let _ = write!(
            p,
            "{{\"event_id\":{},\"ts\":{},\"model\":{}",
            quoted(event_id.value(row)),
            ts.value(row),
            quoted(model_of(row))
        );
        let mut text = |name: &str, c: Option<&StringArray>| {
            if let Some(c) = c.filter(|c| !c.is_null(row)) {
                let _ = write!(p, ",\"{name}\":{}", quoted(c.value(row)));
            }
        };
        text(field::VERSION, version);
        text(field::VARIANT, variant);
        text(field::UNIT_ID, unit_id);
        text(field::LABEL, label);
        if let Some(l) = latency.filter(|c| !c.is_null(row)) {
            let v = l.value(row);
            if v.is_finite() {
                let _ = write!(p, ",\"{}\":{}", field::LATENCY_MS, v);
            }
        }
        if let Some(f) = features.filter(|c| !c.is_null(row)) {
            let entries = f.value(row);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            p.push_str(",\"features\":{");
            for i in 0..keys.len() {
                if i > 0 {
                    p.push(',');
                }
                let v = (!values.is_null(i)).then(|| values.value(i));
                let _ = write!(p, "{}:{}", quoted(keys.value(i)), value_json(v, &quoted));
            }
            p.push('}');
        }
        if let Some(c) = prediction {
            let v = (!c.is_null(row)).then(|| c.value(row));
            let _ = write!(p, ",\"prediction\":{}", value_json(v, &quoted));
        }
        p.push('}');
        out.push(p);
    }
    Ok(out)
}

/// A stored value as JSON: a JSON number as itself, NULL as `null`,
/// anything else as a string.
fn value_json(v: Option<&str>, quoted: &dyn Fn(&str) -> String) -> String {
    match v {
        None => "null".into(),
        Some(t) if is_json_number(t) => t.to_string(),
        Some(t) => quoted(t),
    }
}

/// Whether `t` is a JSON number (`-0.5`, `1e3`; not `05`, `NaN`, ` 1`).
pub(crate) fn is_json_number(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::decode;

    fn catalog(features: &str) -> ModelCatalog {
        let cfg = Config::from_toml_str(&format!(
            "[models.m]\nreference = \"r.csv\"\n[models.m.features]\n{features}"
        ))
        .unwrap();
        ModelCatalog::from_config(&cfg)
    }

    /// Undeclared features are archived, and come back when declared later
    /// with the values the original events carried.
    #[tokio::test]
    async fn archived_events_come_back_with_features_declared_later() -> Result<()> {
        let events: Vec<&[u8]> = vec![
            br#"{"event_id":"a","ts":"2026-01-01T00:00:00Z","model":"m","version":"1","variant":"ctl","unit_id":"u1","features":{"x":1.5,"new":"north","num":"2.5","obj":{"k":[1,2]},"nul":null},"prediction":0.25,"latency_ms":12.125}"#,
            br#"{"event_id":"b\"q","ts":1767225600001,"model":"m","version":"2","features":{"x":-0.5,"new":"05","num":1e3},"prediction":1}"#,
            br#"{"event_id":"c","ts":1767225600002,"model":"m","version":"2","prediction":0.5}"#,
        ];
        let before = catalog("x = \"numeric\"");
        let out = decode(&before, EventKind::Prediction, &events);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let mut archive = Archive::default();
        for d in &out.decoded {
            archive.add(EventKind::Prediction, &before, d, |pos| {
                (
                    events[pos],
                    Provenance {
                        topic: "t",
                        partition: 0,
                        offset: 7 + pos as i64,
                    },
                )
            });
        }
        assert_eq!(archive.len(), 3);
        let storage = Storage::open("memory:///", &Default::default())?;
        archive.write(&storage).await?;
        let path = file(EventKind::Prediction, "m", "2026-01-01", "t", 0, 7);
        let bytes = storage.get_opt(&path).await?.expect("archive file");
        let batch = &crate::storage::decode_parquet(bytes)?[0];
        assert_eq!(batch.schema(), PREDICTIONS_SCHEMA.clone());
        let features = batch.column(5).as_map();
        let first = features.value(0);
        let keys: Vec<&str> = first
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(keys, ["new", "nul", "num", "obj", "x"]);
        let values = first.column(1).as_string::<i32>();
        assert_eq!(values.value(0), "north");
        assert!(values.is_null(1));
        assert_eq!(values.value(3), r#"{"k":[1,2]}"#);
        assert!(features.is_null(2));

        // Declared now: the decoder reads the rebuilt events as the originals.
        let after = catalog(
            "x = \"numeric\"\nnew = \"categorical\"\nnum = \"numeric\"\nobj = \"categorical\"",
        );
        let rebuilt = payloads(EventKind::Prediction, batch, |_| "m")?;
        let rebuilt: Vec<&[u8]> = rebuilt.iter().map(|p| p.as_bytes()).collect();
        let again = decode(&after, EventKind::Prediction, &rebuilt);
        let direct = decode(&after, EventKind::Prediction, &events);
        assert!(again.rejected.is_empty(), "{:?}", again.rejected);
        // (The object makes the original decode bisect into batches.)
        let all = |d: &crate::event::DecodeOutput| {
            let b: Vec<RecordBatch> = d.decoded.iter().map(|d| d.batch.clone()).collect();
            datafusion::arrow::compute::concat_batches(&b[0].schema(), &b)
        };
        assert_eq!(all(&again)?, all(&direct)?);
        Ok(())
    }

    /// A file's rows are sorted by event time, then offset, whatever order
    /// they were consumed in, and its metadata says so; a file that does
    /// not say so is not taken for sorted.
    #[tokio::test]
    async fn archive_files_are_sorted_by_event_time_and_say_so() -> Result<()> {
        // Consumed out of event-time order; two share an event time.
        let events: Vec<&[u8]> = vec![
            br#"{"event_id":"a","ts":1767225600005,"model":"m","version":"1","prediction":0.1}"#,
            br#"{"event_id":"b","ts":1767225600001,"model":"m","version":"1","prediction":0.2}"#,
            br#"{"event_id":"c","ts":1767225600009,"model":"m","version":"1","prediction":0.3}"#,
            br#"{"event_id":"d","ts":1767225600001,"model":"m","version":"1","prediction":0.4}"#,
        ];
        let catalog = catalog("x = \"numeric\"");
        let out = decode(&catalog, EventKind::Prediction, &events);
        let mut archive = Archive::default();
        for d in &out.decoded {
            archive.add(EventKind::Prediction, &catalog, d, |pos| {
                let offset = [40, 12, 30, 20][pos];
                (
                    events[pos],
                    Provenance {
                        topic: "t",
                        partition: 0,
                        offset,
                    },
                )
            });
        }
        let storage = Storage::open("memory:///", &Default::default())?;
        archive.write(&storage).await?;
        let path = file(EventKind::Prediction, "m", "2026-01-01", "t", 0, 12);
        let bytes = storage.get_opt(&path).await?.expect("archive file");
        let size = bytes.len() as u64;
        let batch = &crate::storage::decode_parquet(bytes)?[0];
        let ids: Vec<&str> = batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(ids, ["b", "d", "a", "c"]);
        let meta = storage.parquet_metadata(&path, size).await?;
        assert_eq!(
            sorted_span(EventKind::Prediction, &meta),
            Some((1767225600001, 1767225600009))
        );
        assert_eq!(
            sorted_span(EventKind::Outcome, &meta),
            None,
            "another table's schema"
        );
        // A footer longer than the first read is read in a second one.
        for tail in [8, 64, 200] {
            let again = storage
                .parquet_metadata_from_tail(&path, size, tail)
                .await?;
            assert_eq!(again, meta, "tail {tail}");
        }
        let short = storage.parquet_metadata(&path, 4).await;
        assert!(short.is_err_and(|e| e.to_string().contains("not Parquet")));

        // Declared sorted, but not as `mlwatch run` writes: row groups that
        // overlap, or two partitions in one file.
        let declared = |b: &RecordBatch, group: usize| -> Result<Option<(i64, i64)>> {
            use datafusion::parquet::arrow::ArrowWriter;
            use datafusion::parquet::file::metadata::ParquetMetaDataReader;
            use datafusion::parquet::file::properties::WriterProperties;
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(group))
                .set_sorting_columns(Some(crate::storage::sorting_columns(
                    &b.schema(),
                    &SORTED_BY,
                )?))
                .build();
            let mut buf = Vec::new();
            let mut w = ArrowWriter::try_new(&mut buf, b.schema(), Some(props))?;
            w.write(b)?;
            w.close()?;
            let meta = ParquetMetaDataReader::new().parse_and_finish(&bytes::Bytes::from(buf))?;
            Ok(sorted_span(EventKind::Prediction, &meta))
        };
        assert_eq!(declared(batch, 2)?, Some((1767225600001, 1767225600009)));
        let take = |idx: Vec<u32>| {
            datafusion::arrow::compute::take_record_batch(
                batch,
                &datafusion::arrow::array::UInt32Array::from(idx),
            )
        };
        assert_eq!(declared(&take(vec![0, 2, 1, 3])?, 2)?, None);
        let mut columns = batch.columns().to_vec();
        columns[batch.schema().index_of(col::PARTITION)?] =
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![0, 0, 1, 1]));
        let two = RecordBatch::try_new(batch.schema(), columns)?;
        assert_eq!(declared(&two, 4)?, None);

        // The same rows written without `sorting_columns`.
        let plain = crate::storage::encode_parquet(batch.schema(), std::slice::from_ref(batch))?;
        let size = plain.len() as u64;
        storage.put("plain.parquet", plain).await?;
        let meta = storage.parquet_metadata("plain.parquet", size).await?;
        assert_eq!(sorted_span(EventKind::Prediction, &meta), None);
        Ok(())
    }

    /// The archive stores what `serde_json::Value` makes of each value
    /// (sorted keys, the last of a key given twice, `to_string` of
    /// non-strings), without building one per value.
    #[test]
    fn stored_values_are_those_of_json_values() {
        let payloads = [
            r#"{"features":{"b":1.50,"a":"x\"y","c":null,"d":true,"e":-7,"f":18446744073709551615,"g":1e3,"h":{"k":[1,{"z":2.0}]},"i":[],"a":"last","j":-0.0,"k\u00e9":1.5e-7,"l":123456789012345678901234567890},"prediction":0.1}"#,
            r#"{"features":{},"prediction":"yes"}"#,
            r#"{"prediction":null}"#,
            r#"{"features":null,"prediction":[1,2]}"#,
            r#"{"features":{"x":false},"prediction":{"p":1}}"#,
        ];
        #[derive(Deserialize)]
        struct Reference {
            features: Option<std::collections::BTreeMap<String, serde_json::Value>>,
            prediction: Option<serde_json::Value>,
        }
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
        for p in payloads {
            let want: Reference = serde_json::from_str(p).unwrap();
            let got: Extra<'_> = serde_json::from_str(p).unwrap();
            let want_features = want.features.map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect::<Vec<_>>()
            });
            let got_features = got.features.map(|e| {
                e.0.iter()
                    .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_string())))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got_features, want_features, "{p}");
            assert_eq!(
                got.prediction.and_then(|s| s.0.map(|v| v.to_string())),
                want.prediction.as_ref().and_then(text),
                "{p}"
            );
        }
    }

    #[test]
    fn json_numbers() {
        for t in ["0", "-0.5", "12", "1e3", "1.5E-7", "-0"] {
            assert!(is_json_number(t), "{t}");
        }
        for t in [
            "", "-", "05", "1.", ".5", "1e", "NaN", " 1", "0x1", "true", "1,5",
        ] {
            assert!(!is_json_number(t), "{t}");
        }
    }
}
