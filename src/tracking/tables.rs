//! The tracking tables: Parquet files under `tracking/<table>/`, each file
//! written once with a unique name (`<run id>-<time>-<n>.parquet`), so
//! processes logging different runs never touch the same object.
//!
//! Stored tables (append-only): `run_log` (one row per run state change),
//! `params`, `metrics`, `tag_log`, `artifacts`. SQL views give the current
//! state: `runs` (latest row of each run in `run_log`), `tags` (latest value
//! per run and key), `experiments` (name, runs, first and last start), and
//! `latest_metrics` (per run and key, the value at the largest step, then
//! the latest timestamp).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Result;

/// Folder of the tracking tables.
pub const ROOT: &str = "tracking";

/// Path of a run's file in `table`: `tracking/<table>/<run id>-<label>.parquet`.
pub fn file_path(table: &str, run_id: &str, label: &str) -> String {
    format!("{ROOT}/{table}/{run_id}-{label}.parquet")
}

/// The stored tables and their schemas.
pub fn stored_tables() -> Vec<(&'static str, SchemaRef)> {
    vec![
        ("run_log", run_schema()),
        ("params", kv_schema()),
        ("metrics", metric_schema()),
        ("tag_log", kv_schema()),
        ("artifacts", artifact_schema()),
    ]
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// `run_log` schema.
pub fn run_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("run_id", false),
        utf8("experiment", false),
        utf8("run_name", false),
        utf8("status", false),
        Field::new("start_time", ts(), false),
        Field::new("end_time", ts(), true),
        Field::new("updated_at", ts(), false),
        utf8("user", true),
        utf8("hostname", true),
        utf8("os", false),
        Field::new("pid", DataType::Int64, false),
        utf8("git_commit", true),
        utf8("git_branch", true),
        Field::new("git_dirty", DataType::Boolean, true),
        utf8("mlwatch_version", false),
        utf8("command", false),
        utf8("rustc_version", true),
        utf8("python_version", true),
    ]))
}

/// `params` and `tag_log` schema.
pub fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("run_id", false),
        utf8("key", false),
        utf8("value", true),
        Field::new("logged_at", ts(), false),
    ]))
}

/// `metrics` schema.
pub fn metric_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("run_id", false),
        utf8("key", false),
        Field::new("value", DataType::Float64, false),
        Field::new("step", DataType::Int64, false),
        Field::new("timestamp", ts(), false),
    ]))
}

/// `artifacts` schema.
pub fn artifact_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("run_id", false),
        utf8("path", false),
        utf8("sha256", false),
        Field::new("size", DataType::Int64, false),
        Field::new("logged_at", ts(), false),
    ]))
}

fn s<'a>(v: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(v.collect::<StringArray>())
}

fn t(v: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        v.collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

/// One row of `run_log`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRow {
    /// Run id.
    pub run_id: String,
    /// Experiment name.
    pub experiment: String,
    /// Run name.
    pub run_name: String,
    /// RUNNING, FINISHED, FAILED or KILLED.
    pub status: String,
    /// Start, µs since the epoch.
    pub start_time: i64,
    /// End, µs since the epoch.
    pub end_time: Option<i64>,
    /// Time of this row.
    pub updated_at: i64,
    /// Process id that started the run.
    pub pid: i64,
    /// Captured environment.
    pub env: super::env::RunEnvironment,
}

/// `run_log` rows as a batch.
pub fn run_batch(rows: &[RunRow]) -> Result<RecordBatch> {
    let e = |f: &dyn Fn(&RunRow) -> Option<&str>| s(rows.iter().map(f));
    let columns: Vec<ArrayRef> = vec![
        e(&|r| Some(&r.run_id)),
        e(&|r| Some(&r.experiment)),
        e(&|r| Some(&r.run_name)),
        e(&|r| Some(&r.status)),
        t(rows.iter().map(|r| Some(r.start_time))),
        t(rows.iter().map(|r| r.end_time)),
        t(rows.iter().map(|r| Some(r.updated_at))),
        e(&|r| r.env.user.as_deref()),
        e(&|r| r.env.hostname.as_deref()),
        e(&|r| Some(&r.env.os)),
        Arc::new(rows.iter().map(|r| r.pid).collect::<Int64Array>()),
        e(&|r| r.env.git_commit.as_deref()),
        e(&|r| r.env.git_branch.as_deref()),
        Arc::new(
            rows.iter()
                .map(|r| r.env.git_dirty)
                .collect::<BooleanArray>(),
        ),
        e(&|r| Some(&r.env.mlwatch_version)),
        e(&|r| Some(&r.env.command)),
        e(&|r| r.env.rustc_version.as_deref()),
        e(&|r| r.env.python_version.as_deref()),
    ];
    Ok(RecordBatch::try_new(run_schema(), columns)?)
}

/// `(run_id, key, value, logged_at)` rows as a batch.
pub fn kv_batch(rows: &[(String, String, Option<String>, i64)]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        kv_schema(),
        vec![
            s(rows.iter().map(|r| Some(r.0.as_str()))),
            s(rows.iter().map(|r| Some(r.1.as_str()))),
            s(rows.iter().map(|r| r.2.as_deref())),
            t(rows.iter().map(|r| Some(r.3))),
        ],
    )?)
}

/// One metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Metric name.
    pub key: String,
    /// Value.
    pub value: f64,
    /// Step (iteration, epoch).
    pub step: i64,
    /// µs since the epoch.
    pub timestamp: i64,
}

/// Metric points of one run as a batch.
pub fn metric_batch(run_id: &str, points: &[MetricPoint]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        metric_schema(),
        vec![
            s(points.iter().map(|_| Some(run_id))),
            s(points.iter().map(|p| Some(p.key.as_str()))),
            Arc::new(points.iter().map(|p| p.value).collect::<Float64Array>()),
            Arc::new(points.iter().map(|p| p.step).collect::<Int64Array>()),
            t(points.iter().map(|p| Some(p.timestamp))),
        ],
    )?)
}

/// `(run_id, path, sha256, size, logged_at)` rows as a batch.
pub fn artifact_batch(rows: &[(String, String, String, i64, i64)]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        artifact_schema(),
        vec![
            s(rows.iter().map(|r| Some(r.0.as_str()))),
            s(rows.iter().map(|r| Some(r.1.as_str()))),
            s(rows.iter().map(|r| Some(r.2.as_str()))),
            Arc::new(rows.iter().map(|r| r.3).collect::<Int64Array>()),
            t(rows.iter().map(|r| Some(r.4))),
        ],
    )?)
}

/// SQL views over the stored tables (registered after them).
pub const VIEWS: &[(&str, &str)] = &[
    // The row with the largest (updated_at, status rank): a join on the
    // per-run maximum of one BIGINT key, about 1.5x faster than a
    // row_number() window at 100,000 runs (the window sorts every column).
    (
        "runs",
        "WITH l AS (SELECT *, CAST(updated_at AS BIGINT) * 4 + CASE status WHEN 'RUNNING' \
         THEN 0 WHEN 'FAILED' THEN 1 WHEN 'FINISHED' THEN 2 ELSE 3 END AS k FROM run_log) \
         SELECT l.* EXCEPT (k) FROM l JOIN (SELECT run_id, max(k) AS k FROM l GROUP BY run_id) m \
         ON l.run_id = m.run_id AND l.k = m.k",
    ),
    (
        "tags",
        "SELECT run_id, key, value, logged_at FROM (SELECT *, row_number() OVER \
         (PARTITION BY run_id, key ORDER BY logged_at DESC) AS rn FROM tag_log) \
         WHERE rn = 1 AND value IS NOT NULL",
    ),
    (
        "latest_metrics",
        "SELECT run_id, key, value, step, timestamp FROM (SELECT *, row_number() OVER \
         (PARTITION BY run_id, key ORDER BY step DESC, timestamp DESC, value DESC) AS rn FROM metrics) \
         WHERE rn = 1",
    ),
    (
        "experiments",
        "SELECT experiment AS name, count(*) AS runs, min(start_time) AS first_start, \
         max(start_time) AS last_start FROM runs GROUP BY experiment",
    ),
];
