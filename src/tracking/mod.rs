//! Experiment tracking: runs, params, step-wise metrics, tags and artifacts
//! as Parquet in the same object storage as everything else, queried with
//! SQL.
//!
//! An [`ExperimentTracker`] starts [`Run`]s. A run buffers what it logs and
//! writes each table's rows as one Parquet file per flush (on `end`, on
//! [`Run::flush`], and whenever [`METRIC_FLUSH_POINTS`] metric points are
//! waiting), so 100,000 metric points make two files, not 100,000. Files
//! have unique names and are written whole with one `put`, so two processes
//! logging different runs never interfere and a reader never sees half a
//! file. Tables and views: see [`tables`]. Params are immutable (logging a
//! different value for a key is an error, as in MLflow). A run whose process
//! died without `end` (same host, process gone) is marked `KILLED` the next
//! time runs are read ([`ExperimentTracker::reap_orphans`]).
//!
//! [`ExperimentTracker::compact`] merges each table's small files into one.
//! It writes the merged file before deleting the inputs, so no row is ever
//! missing; a query that lists the folder in between can count a row twice
//! (the `runs`, `tags` and `latest_metrics` views pick one row per key and
//! are not affected). Run it when no one is reading totals, e.g. nightly.
//!
//! Not in this module yet (see the tracking issue): the `mlwatch.tracking`
//! Kafka topic and plots.

pub mod env;
pub mod filter;
pub mod plot;
pub mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::Utc;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::registry::artifact::{put_blob, safe_relative};
use crate::storage::Storage;
use tables::{MetricPoint, RunRow};

/// Metric points buffered before a run writes them.
pub const METRIC_FLUSH_POINTS: usize = 50_000;

/// Errors of tracking requests; each names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// A name, key or path is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A param was logged before with another value.
    #[error("run {run_id}: param `{key}` is already `{old}`; params cannot change (got `{new}`)")]
    ParamChanged {
        /// Run.
        run_id: String,
        /// Key.
        key: String,
        /// Stored value.
        old: String,
        /// Rejected value.
        new: String,
    },
    /// No run with that id.
    #[error("run `{0}` does not exist")]
    UnknownRun(String),
    /// The run has ended.
    #[error("run {0} has ended; start a new run to log more")]
    Ended(String),
    /// A search filter cannot be parsed.
    #[error("filter `{filter}`: {reason}")]
    Filter {
        /// The filter.
        filter: String,
        /// What is wrong.
        reason: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunStatus {
    /// Completed.
    Finished,
    /// Failed.
    Failed,
    /// Stopped.
    Killed,
}

impl RunStatus {
    /// Upper-case name, as MLflow.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

fn check_name(what: &'static str, value: &str, max: usize) -> Result<(), TrackingError> {
    let ok = !value.is_empty()
        && value.chars().count() <= max
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':'));
    if ok {
        Ok(())
    } else {
        Err(TrackingError::Invalid {
            what,
            value: value.to_string(),
            reason: format!("use 1 to {max} letters, digits, spaces and '_', '-', '.', '/', ':'"),
        })
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The tracking store over a storage root.
#[derive(Debug, Clone)]
pub struct ExperimentTracker {
    storage: Storage,
    workdir: PathBuf,
    /// Captured once per tracker: the probes are subprocesses (~0.1 s).
    environment: std::sync::Arc<std::sync::OnceLock<env::RunEnvironment>>,
}

impl ExperimentTracker {
    /// A tracker over `storage`; git facts are read from the current directory.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            environment: Default::default(),
        }
    }

    /// The environment recorded with runs, captured on first use.
    pub fn environment(&self) -> &env::RunEnvironment {
        self.environment.get_or_init(|| env::capture(&self.workdir))
    }

    /// The storage it uses.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Starts a run owned by this process.
    pub async fn start_run(
        &self,
        experiment: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<Run> {
        self.start_run_owned_by(experiment, run_name, tags, std::process::id())
            .await
    }

    /// Starts a run owned by process `owner_pid` (the CLI passes its
    /// caller's pid: the run is orphaned when that script dies).
    pub async fn start_run_owned_by(
        &self,
        experiment: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
        owner_pid: u32,
    ) -> Result<Run> {
        check_name("experiment name", experiment, 256)?;
        let run_id = format!("{:032x}", rand::random::<u128>());
        let run_name = match run_name {
            Some(n) => {
                check_name("run name", n, 256)?;
                n.to_string()
            }
            None => format!("run-{}", &run_id[..8]),
        };
        let start = now_us();
        let row = RunRow {
            run_id: run_id.clone(),
            experiment: experiment.to_string(),
            run_name,
            status: "RUNNING".into(),
            start_time: start,
            end_time: None,
            updated_at: start,
            pid: i64::from(owner_pid),
            env: self.environment().clone(),
        };
        let mut run = Run::new(self.clone(), row.clone(), BTreeMap::new());
        // The start is written at once, so other processes see the run.
        run.write("run_log", tables::run_batch(&[row])?).await?;
        run.set_tags(tags)?;
        Ok(run)
    }

    /// Reopens a run (e.g. for a later CLI call) with its logged params.
    pub async fn resume(&self, run_id: &str) -> Result<Run> {
        let ctx = self.context().await?;
        let row = self.run_row(&ctx, run_id).await?;
        if row.status != "RUNNING" {
            return Err(TrackingError::Ended(run_id.to_string()).into());
        }
        let mut params = BTreeMap::new();
        for b in ctx
            .sql(&format!(
                "SELECT key, value FROM params WHERE run_id = '{run_id}'"
            ))
            .await?
            .collect()
            .await?
        {
            let (k, v) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                params.insert(k.value(i).to_string(), v.value(i).to_string());
            }
        }
        Ok(Run::new(self.clone(), row, params))
    }

    /// The run's latest row, as stored (its environment is the one
    /// captured at start, whoever reads it).
    async fn run_row(&self, ctx: &SessionContext, run_id: &str) -> Result<RunRow> {
        if !run_id.chars().all(|c| c.is_ascii_hexdigit()) || run_id.is_empty() {
            return Err(TrackingError::UnknownRun(run_id.to_string()).into());
        }
        let batches = ctx
            .sql(&format!(
                "SELECT run_id, experiment, run_name, status, CAST(start_time AS BIGINT), \
                 CAST(end_time AS BIGINT), pid, user, hostname, os, git_commit, git_branch, \
                 git_dirty, mlwatch_version, command, rustc_version, python_version \
                 FROM runs WHERE run_id = '{run_id}'"
            ))
            .await?
            .collect()
            .await?;
        let b = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| TrackingError::UnknownRun(run_id.to_string()))?;
        let s = |i: usize| {
            let a = b.column(i).as_string::<i32>();
            (!a.is_null(0)).then(|| a.value(0).to_string())
        };
        let n = |i: usize| {
            let a = b.column(i).as_primitive::<Int64Type>();
            (!a.is_null(0)).then(|| a.value(0))
        };
        let dirty = b.column(12).as_boolean();
        Ok(RunRow {
            run_id: s(0).unwrap_or_default(),
            experiment: s(1).unwrap_or_default(),
            run_name: s(2).unwrap_or_default(),
            status: s(3).unwrap_or_default(),
            start_time: n(4).unwrap_or_default(),
            end_time: n(5),
            updated_at: now_us(),
            pid: n(6).unwrap_or_default(),
            env: env::RunEnvironment {
                user: s(7),
                hostname: s(8),
                os: s(9).unwrap_or_default(),
                git_commit: s(10),
                git_branch: s(11),
                git_dirty: (!dirty.is_null(0)).then(|| dirty.value(0)),
                mlwatch_version: s(13).unwrap_or_default(),
                command: s(14).unwrap_or_default(),
                rustc_version: s(15),
                python_version: s(16),
            },
        })
    }

    /// A SQL session with the tracking tables and views registered.
    pub async fn context(&self) -> Result<SessionContext> {
        let ctx = crate::query::new_context(Default::default());
        register_tables(&ctx, &self.storage).await?;
        Ok(ctx)
    }

    /// Marks `KILLED` every run still `RUNNING` whose owner process, on
    /// this host, no longer exists. Returns the ids marked.
    pub async fn reap_orphans(&self) -> Result<Vec<String>> {
        let ctx = self.context().await?;
        let host = env::hostname(&self.workdir);
        let batches = ctx
            .sql(
                "SELECT run_id, first_value(hostname) AS hostname, first_value(pid) AS pid \
                 FROM run_log GROUP BY run_id HAVING bool_and(status = 'RUNNING')",
            )
            .await?
            .collect()
            .await?;
        let mut reaped = Vec::new();
        for b in &batches {
            let (ids, hosts, pids) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
                b.column(2).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                let same_host = !hosts.is_null(i) && Some(hosts.value(i)) == host.as_deref();
                if same_host && !Path::new(&format!("/proc/{}", pids.value(i))).exists() {
                    let mut row = self.run_row(&ctx, ids.value(i)).await?;
                    row.status = RunStatus::Killed.as_str().into();
                    row.end_time = Some(now_us());
                    row.updated_at = now_us();
                    let run = Run::new(self.clone(), row.clone(), BTreeMap::new());
                    run.write("run_log", tables::run_batch(&[row])?).await?;
                    reaped.push(ids.value(i).to_string());
                }
            }
        }
        Ok(reaped)
    }

    /// Merges each stored table's files into one file per table (see the
    /// module docs); returns `(table, files merged, rows)` for each table
    /// that had more than one file.
    pub async fn compact(&self) -> Result<Vec<(String, usize, usize)>> {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let mut report = Vec::new();
        for (table, schema) in tables::stored_tables() {
            let prefix = self.storage.path(&format!("{}/{table}", tables::ROOT));
            let files: Vec<_> = self
                .storage
                .store()
                .list(Some(&prefix))
                .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
                .try_collect()
                .await?;
            if files.len() < 2 {
                continue;
            }
            let mut batches = Vec::new();
            for f in &files {
                let bytes = self.storage.store().get(&f.location).await?.bytes().await?;
                let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
                    .build()?;
                for b in reader {
                    batches.push(b?);
                }
            }
            let rows = batches.iter().map(RecordBatch::num_rows).sum();
            let merged = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
            // Sorted by key (then run) in row groups of 64k rows, so that a
            // search's `key = '...'` reads only the groups holding that key.
            let sort_cols: Vec<&str> = if schema.field_with_name("key").is_ok() {
                vec!["key", "run_id"]
            } else {
                vec!["run_id"]
            };
            let columns: Vec<datafusion::arrow::compute::SortColumn> = sort_cols
                .iter()
                .map(|c| datafusion::arrow::compute::SortColumn {
                    values: merged.column_by_name(c).expect("schema column").clone(),
                    options: None,
                })
                .collect();
            let order = datafusion::arrow::compute::lexsort_to_indices(&columns, None)?;
            let merged = RecordBatch::try_new(
                schema.clone(),
                merged
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::compute::take(c, &order, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )?;
            let rel = format!(
                "{}/{table}/compacted-{}-{:016x}.parquet",
                tables::ROOT,
                now_us(),
                rand::random::<u64>()
            );
            let bytes =
                crate::storage::encode_parquet_grouped(schema.clone(), &[merged], Some(65_536))?;
            self.storage.put(&rel, bytes).await?;
            for f in &files {
                self.storage.store().delete(&f.location).await?;
            }
            report.push((table.to_string(), files.len(), rows));
        }
        Ok(report)
    }

    /// Runs matching an MLflow-style filter (see [`filter`]), as batches.
    pub async fn search(&self, filter: &str, experiment: Option<&str>) -> Result<Vec<RecordBatch>> {
        let sql = filter::translate(filter, experiment)?.sql;
        self.reap_orphans().await?;
        let ctx = self.context().await?;
        Ok(ctx.sql(&sql).await?.collect().await?)
    }
}

/// Registers the tracking tables and views on `ctx`.
pub async fn register_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    ctx.register_object_store(storage.base_url(), storage.store().clone());
    for (name, schema) in tables::stored_tables() {
        let url = ListingTableUrl::parse(storage.table_url(&format!("{}/{name}", tables::ROOT)))?;
        let options = ListingOptions::new(std::sync::Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        ctx.register_table(name, std::sync::Arc::new(ListingTable::try_new(config)?))?;
    }
    for (name, sql) in tables::VIEWS {
        let view = ctx.sql(sql).await?.into_view();
        ctx.register_table(*name, view)?;
    }
    Ok(())
}

/// A run being logged into.
#[derive(Debug)]
pub struct Run {
    tracker: ExperimentTracker,
    row: RunRow,
    params: BTreeMap<String, String>,
    pending_params: Vec<(String, String, Option<String>, i64)>,
    pending_tags: Vec<(String, String, Option<String>, i64)>,
    pending_metrics: Vec<MetricPoint>,
    pending_artifacts: Vec<(String, String, String, i64, i64)>,
    ended: bool,
}

impl Run {
    fn new(tracker: ExperimentTracker, row: RunRow, params: BTreeMap<String, String>) -> Self {
        Self {
            tracker,
            row,
            params,
            pending_params: Vec::new(),
            pending_tags: Vec::new(),
            pending_metrics: Vec::new(),
            pending_artifacts: Vec::new(),
            ended: false,
        }
    }

    /// The run id (32 hex digits).
    pub fn id(&self) -> &str {
        &self.row.run_id
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.row.run_name
    }

    fn live(&self) -> Result<(), TrackingError> {
        if self.ended {
            Err(TrackingError::Ended(self.row.run_id.clone()))
        } else {
            Ok(())
        }
    }

    async fn write(&self, table: &str, batch: RecordBatch) -> Result<()> {
        let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let rel = format!(
            "{}/{table}/{}-{}-{}-{n}.parquet",
            tables::ROOT,
            self.row.run_id,
            now_us(),
            std::process::id()
        );
        self.tracker.storage.write_parquet(&rel, &[batch]).await
    }

    /// Logs params; a key logged before must keep its value. Nothing is
    /// recorded when any of them is refused.
    pub fn log_params(&mut self, params: &[(String, String)]) -> Result<()> {
        self.live()?;
        for (k, v) in params {
            check_name("param key", k, 250)?;
            if let Some(old) = self.params.get(k)
                && old != v
            {
                return Err(TrackingError::ParamChanged {
                    run_id: self.row.run_id.clone(),
                    key: k.clone(),
                    old: old.clone(),
                    new: v.clone(),
                }
                .into());
            }
        }
        let t = now_us();
        for (k, v) in params {
            if self.params.insert(k.clone(), v.clone()).is_none() {
                self.pending_params
                    .push((self.row.run_id.clone(), k.clone(), Some(v.clone()), t));
            }
        }
        Ok(())
    }

    /// Logs metric points `(key, value, step)` stamped now.
    pub async fn log_metrics(&mut self, points: &[(&str, f64, i64)]) -> Result<()> {
        self.live()?;
        for (k, _, _) in points {
            check_name("metric key", k, 250)?;
        }
        let t = now_us();
        self.pending_metrics
            .extend(points.iter().map(|(k, v, s)| MetricPoint {
                key: k.to_string(),
                value: *v,
                step: *s,
                timestamp: t,
            }));
        if self.pending_metrics.len() >= METRIC_FLUSH_POINTS {
            self.flush_metrics().await?;
        }
        Ok(())
    }

    /// Sets tags (a later value replaces an earlier one).
    pub fn set_tags(&mut self, tags: &[(String, String)]) -> Result<()> {
        self.live()?;
        for (k, _) in tags {
            check_name("tag key", k, 250)?;
        }
        let t = now_us();
        self.pending_tags.extend(
            tags.iter()
                .map(|(k, v)| (self.row.run_id.clone(), k.clone(), Some(v.clone()), t)),
        );
        Ok(())
    }

    /// Stores bytes as the artifact `path` of this run (content-addressed).
    pub async fn log_artifact_bytes(&mut self, path: &str, bytes: Bytes) -> Result<String> {
        self.live()?;
        let rel = safe_relative(Path::new(path)).ok_or_else(|| TrackingError::Invalid {
            what: "artifact path",
            value: path.to_string(),
            reason: "must be relative, without `..` or `.`".into(),
        })?;
        let size = bytes.len() as i64;
        let sha = put_blob(&self.tracker.storage, bytes).await?;
        self.pending_artifacts
            .push((self.row.run_id.clone(), rel, sha.clone(), size, now_us()));
        Ok(sha)
    }

    /// Stores a local file as the artifact `path` (default: its file name).
    pub async fn log_artifact(&mut self, local: &Path, path: Option<&str>) -> Result<String> {
        let name = match path {
            Some(p) => p.to_string(),
            None => local
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string(),
        };
        // Check the name before reading the file.
        if safe_relative(Path::new(&name)).is_none() {
            return Err(TrackingError::Invalid {
                what: "artifact path",
                value: name,
                reason: "must be relative, without `..` or `.`".into(),
            }
            .into());
        }
        let bytes = std::fs::read(local).map_err(|source| crate::Error::Io {
            path: local.to_path_buf(),
            source,
        })?;
        self.log_artifact_bytes(&name, Bytes::from(bytes)).await
    }

    async fn flush_metrics(&mut self) -> Result<()> {
        if !self.pending_metrics.is_empty() {
            let batch = tables::metric_batch(&self.row.run_id, &self.pending_metrics)?;
            self.write("metrics", batch).await?;
            self.pending_metrics.clear();
        }
        Ok(())
    }

    /// Writes everything buffered, one file per table with rows.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.pending_params.is_empty() {
            self.write("params", tables::kv_batch(&self.pending_params)?)
                .await?;
            self.pending_params.clear();
        }
        if !self.pending_tags.is_empty() {
            self.write("tag_log", tables::kv_batch(&self.pending_tags)?)
                .await?;
            self.pending_tags.clear();
        }
        if !self.pending_artifacts.is_empty() {
            self.write(
                "artifacts",
                tables::artifact_batch(&self.pending_artifacts)?,
            )
            .await?;
            self.pending_artifacts.clear();
        }
        self.flush_metrics().await
    }

    /// Flushes and records the end of the run.
    pub async fn end(mut self, status: RunStatus) -> Result<()> {
        self.live()?;
        self.flush().await?;
        let t = now_us();
        self.row.status = status.as_str().into();
        self.row.end_time = Some(t);
        self.row.updated_at = t;
        self.write(
            "run_log",
            tables::run_batch(std::slice::from_ref(&self.row))?,
        )
        .await?;
        self.ended = true;
        Ok(())
    }
}
