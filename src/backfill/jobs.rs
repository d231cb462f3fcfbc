//! The `jobs` table: one row per backfill run, scheduled or by hand.
//!
//! `jobs/schedule=<name>/<scheduled_ms>-<attempt>.parquet`, one file per
//! attempt, written when it starts (`running`) and again when it ends
//! (`succeeded`, `failed`); a restart marks an attempt that was running
//! when its process died `interrupted`. Backfills run by hand are under
//! `schedule=manual`.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Serialize;

use super::BackfillSummary;
use crate::error::Result;
use crate::storage::Storage;

/// The table.
pub const JOBS: &str = "jobs";
/// The `schedule` of backfills run by hand.
pub const MANUAL: &str = "manual";

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Under way (or its process died and no restart has looked yet).
    Running,
    /// Done.
    Succeeded,
    /// Ended with an error (in `error`).
    Failed,
    /// Its process died while it ran; a restart found it.
    Interrupted,
}

impl Outcome {
    /// The value in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One attempt of one job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Schedule name, or `manual`.
    pub schedule: String,
    /// When it was due (epoch ms; for `manual`, when it started).
    pub scheduled_ms: i64,
    /// 1 for the first attempt at this time, 2 for the run after an
    /// interrupted one, ...
    pub attempt: i32,
    /// When the attempt started.
    pub started_ms: i64,
    /// When it ended.
    pub finished_ms: Option<i64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The error of a failed attempt.
    pub error: Option<String>,
    /// What the backfill did, once it did.
    pub summary: Option<BackfillSummary>,
}

/// Schema of `jobs` files (`schedule` comes from the path).
pub static JOBS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("scheduled_time", ts(), false),
        Field::new("attempt", DataType::Int32, false),
        Field::new("started", ts(), false),
        Field::new("finished", ts(), true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("range_from", DataType::Utf8, true),
        Field::new("range_to", DataType::Utf8, true),
        Field::new("records", DataType::Int64, true),
        Field::new("events", DataType::Int64, true),
        Field::new("windows", DataType::Int64, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("duration_s", DataType::Float64, true),
    ]))
});

impl Job {
    /// `<schedule>-<scheduled_ms>-<attempt>`.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.schedule, self.scheduled_ms, self.attempt)
    }

    /// Relative path of its file.
    pub fn path(&self) -> String {
        format!(
            "{JOBS}/schedule={}/{:020}-{}.parquet",
            self.schedule, self.scheduled_ms, self.attempt
        )
    }

    /// Writes (or rewrites) its row.
    pub async fn save(&self, storage: &Storage) -> Result<()> {
        let s = self.summary.as_ref();
        let duration = self.finished_ms.map(|f| (f - self.started_ms) as f64 / 1e3);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.id()])),
            Arc::new(TimestampMillisecondArray::from(vec![self.scheduled_ms]).with_timezone("UTC")),
            Arc::new(Int32Array::from(vec![self.attempt])),
            Arc::new(TimestampMillisecondArray::from(vec![self.started_ms]).with_timezone("UTC")),
            Arc::new(TimestampMillisecondArray::from(vec![self.finished_ms]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![self.outcome.as_str()])),
            Arc::new(StringArray::from(vec![self.error.clone()])),
            Arc::new(StringArray::from(vec![s.map(|s| s.from.clone())])),
            Arc::new(StringArray::from(vec![s.map(|s| s.to.clone())])),
            Arc::new(Int64Array::from(vec![s.map(|s| s.records as i64)])),
            Arc::new(Int64Array::from(vec![s.map(|s| s.events as i64)])),
            Arc::new(Int64Array::from(vec![s.map(|s| s.windows as i64)])),
            Arc::new(Int64Array::from(vec![
                s.map(|s| s.rows.values().sum::<u64>() as i64),
            ])),
            Arc::new(Float64Array::from(vec![duration])),
        ];
        let batch = RecordBatch::try_new(JOBS_SCHEMA.clone(), cols)?;
        storage.write_parquet(&self.path(), &[batch]).await
    }
}
