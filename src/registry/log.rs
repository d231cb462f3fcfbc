//! The registry's append-only event log in object storage.
//!
//! Layout under the storage root:
//!
//! ```text
//! registry/log/00000000000000000001.parquet        commit 1 (one or more events)
//! registry/log/00000000000000000002.parquet        commit 2 ...
//! registry/snapshots/00000000000000000100.parquet  every event of commits 1..=100
//! ```
//!
//! A writer commits `head + 1` with `PutMode::Create` (create-if-absent:
//! `If-None-Match: *` on S3, a no-replace link on a local disk). Of two
//! writers racing for the same number exactly one succeeds; the other reads
//! the winner's commit, checks its request again against the new state, and
//! tries `head + 2`. Log files are never rewritten or deleted, so the log is
//! the table `registry_events`. Every `snapshot_every` commits the writer
//! also stores all events so far in one snapshot file, so a new reader does
//! one listing of `snapshots/`, one read, and at most `snapshot_every - 1`
//! small reads, however long the history. A failed snapshot is only logged:
//! the log alone is complete.
//!
//! Columns are only ever added, at the end and nullable (`forced_rule` came
//! later): a file written before a column existed reads it as null, here
//! and in `mlwatch sql` (the listing table fills missing nullable columns).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, UInt32Type, UInt64Type,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::RegistryError;
use super::model::{EventKind, RegistryEvent, Stage};
use crate::error::{Error, Result};
use crate::storage::{Storage, encode_parquet};

/// Folder of commits.
pub const LOG_DIR: &str = "registry/log";
/// Folder of snapshots.
pub const SNAPSHOT_DIR: &str = "registry/snapshots";

/// Object path (relative to the storage root) of commit `seq`.
pub fn log_path(seq: u64) -> String {
    format!("{LOG_DIR}/{seq:020}.parquet")
}

fn snapshot_path(seq: u64) -> String {
    format!("{SNAPSHOT_DIR}/{seq:020}.parquet")
}

/// Schema of `registry_events` (log and snapshot files).
pub fn event_schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("idx", DataType::UInt32, false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        s("actor", false),
        s("model", false),
        s("kind", false),
        Field::new("version", DataType::UInt64, false),
        s("from_stage", true),
        s("to_stage", true),
        s("alias", true),
        Field::new("from_version", DataType::UInt64, true),
        s("tag_key", true),
        s("tag_value", true),
        s("metadata", true),
        s("commit_id", false),
        s("forced_rule", true),
    ]))
}

/// Events as one record batch.
pub fn to_batch(events: &[RegistryEvent]) -> Result<RecordBatch> {
    let strs = |f: &dyn Fn(&RegistryEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(events.iter().map(f).collect::<StringArray>())
    };
    let stage = |s: Option<Stage>| s.map(Stage::as_str);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(events.iter().map(|e| e.seq).collect::<UInt64Array>()),
        Arc::new(events.iter().map(|e| e.idx).collect::<UInt32Array>()),
        Arc::new(
            events
                .iter()
                .map(|e| Some(e.time.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        strs(&|e| Some(&e.actor)),
        strs(&|e| Some(&e.model)),
        strs(&|e| Some(e.kind.as_str())),
        Arc::new(events.iter().map(|e| e.version).collect::<UInt64Array>()),
        strs(&|e| stage(e.from_stage)),
        strs(&|e| stage(e.to_stage)),
        strs(&|e| e.alias.as_deref()),
        Arc::new(
            events
                .iter()
                .map(|e| e.from_version)
                .collect::<UInt64Array>(),
        ),
        strs(&|e| e.tag_key.as_deref()),
        strs(&|e| e.tag_value.as_deref()),
        strs(&|e| e.metadata.as_deref()),
        strs(&|e| Some(&e.commit_id)),
        strs(&|e| e.forced_rule.as_deref()),
    ];
    Ok(RecordBatch::try_new(event_schema(), columns)?)
}

fn corrupt(path: &str, reason: impl std::fmt::Display) -> Error {
    RegistryError::Corrupt {
        path: path.to_string(),
        reason: reason.to_string(),
    }
    .into()
}

/// Reads the events of one log or snapshot file.
pub fn decode(path: &str, bytes: Bytes) -> Result<Vec<RegistryEvent>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(path, e))?
        .build()
        .map_err(|e| corrupt(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let b = batch.map_err(|e| corrupt(path, e))?;
        let col = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| corrupt(path, format!("no column `{name}`")))
        };
        let string = |name: &str| -> Result<StringArray> {
            Ok(
                datafusion::arrow::compute::cast(col(name)?, &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone(),
            )
        };
        let seq = col("seq")?.as_primitive_opt::<UInt64Type>().cloned();
        let idx = col("idx")?.as_primitive_opt::<UInt32Type>().cloned();
        let time = col("time")?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .cloned();
        let version = col("version")?.as_primitive_opt::<UInt64Type>().cloned();
        let from_version = col("from_version")?
            .as_primitive_opt::<UInt64Type>()
            .cloned();
        let (Some(seq), Some(idx), Some(time), Some(version), Some(from_version)) =
            (seq, idx, time, version, from_version)
        else {
            return Err(corrupt(path, "a column has an unexpected type"));
        };
        let [
            actor,
            model,
            kind,
            from_stage,
            to_stage,
            alias,
            tag_key,
            tag_value,
            metadata,
            commit_id,
        ] = [
            "actor",
            "model",
            "kind",
            "from_stage",
            "to_stage",
            "alias",
            "tag_key",
            "tag_value",
            "metadata",
            "commit_id",
        ]
        .map(string);
        let (actor, model, kind, from_stage, to_stage) =
            (actor?, model?, kind?, from_stage?, to_stage?);
        let (alias, tag_key, tag_value, metadata, commit_id) =
            (alias?, tag_key?, tag_value?, metadata?, commit_id?);
        // Added later: absent from older files, where it reads as null.
        let forced_rule = b
            .column_by_name("forced_rule")
            .map(|_| string("forced_rule"))
            .transpose()?;
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        let stage = |a: &StringArray, i: usize| -> Result<Option<Stage>> {
            opt(a, i)
                .map(|s| s.parse::<Stage>().map_err(|e| corrupt(path, e)))
                .transpose()
        };
        for i in 0..b.num_rows() {
            out.push(RegistryEvent {
                seq: seq.value(i),
                idx: idx.value(i),
                time: DateTime::<Utc>::from_timestamp_micros(time.value(i))
                    .ok_or_else(|| corrupt(path, "time out of range"))?,
                actor: actor.value(i).to_string(),
                model: model.value(i).to_string(),
                kind: EventKind::parse(kind.value(i))
                    .ok_or_else(|| corrupt(path, format!("unknown kind `{}`", kind.value(i))))?,
                version: version.value(i),
                from_stage: stage(&from_stage, i)?,
                to_stage: stage(&to_stage, i)?,
                alias: opt(&alias, i),
                from_version: (!from_version.is_null(i)).then(|| from_version.value(i)),
                tag_key: opt(&tag_key, i),
                tag_value: opt(&tag_value, i),
                metadata: opt(&metadata, i),
                commit_id: commit_id.value(i).to_string(),
                forced_rule: forced_rule.as_ref().and_then(|a| opt(a, i)),
            });
        }
    }
    Ok(out)
}

/// Outcome of trying to commit.
pub enum Put {
    /// The file was created.
    Created,
    /// Another writer holds that sequence number.
    Taken,
}

/// Creates commit `seq` if nobody has. A transient failure is returned as
/// an error; the write may still have landed, which the caller finds by its
/// commit id when it reads the log again.
pub async fn put_commit(storage: &Storage, seq: u64, events: &[RegistryEvent]) -> Result<Put> {
    let bytes = encode_parquet(event_schema(), &[to_batch(events)?])?;
    Ok(if storage.put_if_absent(&log_path(seq), bytes).await? {
        Put::Created
    } else {
        Put::Taken
    })
}

/// Reads commits after `head` until the first missing number.
pub async fn read_after(storage: &Storage, head: u64) -> Result<Vec<RegistryEvent>> {
    let mut out = Vec::new();
    let mut seq = head + 1;
    loop {
        let rel = log_path(seq);
        match storage.get_opt(&rel).await? {
            Some(bytes) => out.extend(decode(&rel, bytes)?),
            None => return Ok(out),
        }
        seq += 1;
    }
}

/// The newest snapshot's events, if any.
pub async fn read_latest_snapshot(storage: &Storage) -> Result<Vec<RegistryEvent>> {
    let newest = storage
        .list(SNAPSHOT_DIR)
        .await?
        .iter()
        .filter_map(|l| {
            let name = l.rel.rsplit('/').next()?;
            name.strip_suffix(".parquet")?.parse::<u64>().ok()
        })
        .max();
    let Some(seq) = newest else {
        return Ok(Vec::new());
    };
    let rel = snapshot_path(seq);
    match storage.get_opt(&rel).await? {
        Some(bytes) => decode(&rel, bytes),
        None => Ok(Vec::new()),
    }
}

/// Stores every event so far as the snapshot at the last one's commit.
pub async fn write_snapshot(storage: &Storage, events: &[RegistryEvent]) -> Result<()> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    storage
        .write_parquet(&snapshot_path(last.seq), &[to_batch(events)?])
        .await
}
