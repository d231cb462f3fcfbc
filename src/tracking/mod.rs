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
//! [`ExperimentTracker::compact`] merges each table's small files in
//! bounded groups. It writes a merged file before deleting its inputs, so no
//! row is ever missing; a query that lists the folder in between (or after a
//! crash in between, until the duplicate files are removed) can count a row
//! twice. The `runs`, `tags` and `latest_metrics` views pick one row per key
//! and are not affected. Run it when no one is reading totals, e.g. nightly.
//!
//! Runs can also be logged from Kafka: [`stream`] turns JSON events of the
//! `mlwatch.tracking` topic into calls on this API (`mlwatch run` consumes
//! the topic). Such runs are *deferred*: they write only when the consumer
//! checkpoints, under file names derived from Kafka offsets, so a replay
//! after a crash overwrites instead of duplicating.

pub mod env;
pub mod filter;
pub mod plot;
pub mod stream;
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

/// Input bytes merged into one file by [`ExperimentTracker::compact`] (about
/// 2-3x that in memory while a group is merged).
pub const COMPACT_GROUP_BYTES: u64 = 64 << 20;

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

/// Checks a param, metric or tag key: a name that is also a normalised
/// relative path (no empty, `.` or `..` parts), as MLflow requires.
fn check_key(what: &'static str, key: &str) -> Result<(), TrackingError> {
    check_name(what, key, 250)?;
    if key
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(TrackingError::Invalid {
            what,
            value: key.to_string(),
            reason: "must not start or end with '/', hold '//', or have a `.` or `..` part".into(),
        });
    }
    Ok(())
}

/// Checks a run id: 32 lower-case hex digits (a UUID's hex form, as
/// MLflow's run ids and Python's `uuid.uuid4().hex`).
fn check_run_id(run_id: &str) -> Result<(), TrackingError> {
    if run_id.len() == 32
        && run_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(TrackingError::Invalid {
            what: "run id",
            value: run_id.to_string(),
            reason: "use 32 lower-case hex digits (e.g. Python's uuid.uuid4().hex)".into(),
        })
    }
}

/// The `RUNNING` row that starts a run, after checking its names.
fn new_row(
    run_id: String,
    experiment: &str,
    run_name: Option<&str>,
    start_time: i64,
    pid: i64,
    env: env::RunEnvironment,
) -> Result<RunRow, TrackingError> {
    check_name("experiment name", experiment, 256)?;
    let run_name = match run_name {
        Some(n) => {
            check_name("run name", n, 256)?;
            n.to_string()
        }
        None => format!("run-{}", &run_id[..8]),
    };
    Ok(RunRow {
        run_id,
        experiment: experiment.to_string(),
        run_name,
        status: "RUNNING".into(),
        start_time,
        end_time: None,
        updated_at: start_time,
        pid,
        env,
    })
}

/// `'a', 'b', ...` for a SQL `IN (...)` list (quotes doubled).
pub(crate) fn sql_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| filter::quote(s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of a query of two text columns as a map from the first to the
/// second.
pub(crate) async fn text_map(ctx: &SessionContext, sql: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for b in ctx.sql(sql).await?.collect().await? {
        let (k, v) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            map.insert(k.value(i).to_string(), v.value(i).to_string());
        }
    }
    Ok(map)
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
        let run_id = format!("{:032x}", rand::random::<u128>());
        let row = new_row(
            run_id,
            experiment,
            run_name,
            now_us(),
            i64::from(owner_pid),
            self.environment().clone(),
        )?;
        let mut run = Run::new(self.clone(), row.clone(), BTreeMap::new(), false);
        // The start is written at once, so other processes see the run.
        run.pending_runs.push(row);
        run.flush().await?;
        run.set_tags(tags)?;
        Ok(run)
    }

    /// A run named and described by its producer (a Kafka event): nothing
    /// is written until [`Run::flush`], files are named by labels (see
    /// [`Run::label_next`]; the start row gets `label`), and the owner pid is
    /// 0 (no local process owns it, so [`ExperimentTracker::reap_orphans`]
    /// leaves it).
    pub fn deferred_run(
        &self,
        label: &str,
        run_id: &str,
        experiment: &str,
        run_name: Option<&str>,
        start_time_us: i64,
        environment: env::RunEnvironment,
    ) -> Result<Run> {
        check_run_id(run_id)?;
        let row = new_row(
            run_id.to_string(),
            experiment,
            run_name,
            start_time_us,
            0,
            environment,
        )?;
        let mut run = Run::new(self.clone(), row.clone(), BTreeMap::new(), true);
        run.label_next(label)?;
        run.note_first("run_log");
        run.pending_runs.push(row);
        Ok(run)
    }

    /// A deferred run restored from saved state ([`Run::state`]).
    pub fn restore_deferred(&self, row: RunRow, params: BTreeMap<String, String>) -> Run {
        Run::new(self.clone(), row, params, true)
    }

    /// Which of `run_ids` are stored, with one query (ids that are not
    /// well-formed run ids are never stored).
    pub async fn stored_runs(&self, run_ids: &[&str]) -> Result<std::collections::HashSet<String>> {
        let ids: Vec<&str> = run_ids
            .iter()
            .copied()
            .filter(|id| check_run_id(id).is_ok())
            .collect();
        let mut stored = std::collections::HashSet::new();
        if ids.is_empty() {
            return Ok(stored);
        }
        let ctx = self.context().await?;
        let sql = format!(
            "SELECT DISTINCT run_id FROM run_log WHERE run_id IN ({})",
            sql_list(&ids)
        );
        for b in ctx.sql(&sql).await?.collect().await? {
            let a = b.column(0).as_string::<i32>();
            stored.extend((0..b.num_rows()).map(|i| a.value(i).to_string()));
        }
        Ok(stored)
    }

    /// Reopens a run (e.g. for a later CLI call) with its logged params.
    pub async fn resume(&self, run_id: &str) -> Result<Run> {
        let ctx = self.context().await?;
        let row = self.run_row(&ctx, run_id).await?;
        if row.status != "RUNNING" {
            return Err(TrackingError::Ended(run_id.to_string()).into());
        }
        let params = text_map(
            &ctx,
            &format!("SELECT key, value FROM params WHERE run_id = '{run_id}'"),
        )
        .await?;
        Ok(Run::new(self.clone(), row, params, false))
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
        self.reap_in(&self.context().await?).await
    }

    /// [`ExperimentTracker::reap_orphans`] with a session to read from. The
    /// session's listing cache does not see the rows this writes: query
    /// through a new session when it returns ids.
    async fn reap_in(&self, ctx: &SessionContext) -> Result<Vec<String>> {
        let Some(host) = env::hostname(&self.workdir) else {
            return Ok(Vec::new());
        };
        // Start rows on this host (pid 0: a run from the tracking topic,
        // owned by no process) without a later row that ends them.
        let batches = ctx
            .sql(&format!(
                "SELECT s.run_id, s.pid FROM run_log s LEFT ANTI JOIN \
                 (SELECT run_id FROM run_log WHERE status <> 'RUNNING') e ON s.run_id = e.run_id \
                 WHERE s.status = 'RUNNING' AND s.pid > 0 AND s.hostname = '{}'",
                host.replace('\'', "''")
            ))
            .await?
            .collect()
            .await?;
        let mut reaped = Vec::new();
        for b in &batches {
            let (ids, pids) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                if Path::new(&format!("/proc/{}", pids.value(i))).exists() {
                    continue;
                }
                let row = self.run_row(ctx, ids.value(i)).await?;
                // One file name for every reaper of this run: two processes
                // reaping it at once leave one row, not two.
                let mut run = Run::new(self.clone(), row, BTreeMap::new(), true);
                run.label_next("reaped")?;
                run.finish(RunStatus::Killed, now_us())?;
                run.flush().await?;
                reaped.push(ids.value(i).to_string());
            }
        }
        Ok(reaped)
    }

    /// Merges each stored table's small files (see the module docs) with
    /// [`COMPACT_GROUP_BYTES`] per output file; returns `(table, files
    /// merged, rows)` for each table that had small files to merge.
    pub async fn compact(&self) -> Result<Vec<(String, usize, usize)>> {
        self.compact_with(COMPACT_GROUP_BYTES).await
    }

    /// [`ExperimentTracker::compact`] with another group size. Files of at
    /// least half of `group_bytes` are left as they are (earlier outputs),
    /// so a nightly run only rewrites what arrived since. The others are
    /// merged in groups of at most `group_bytes` of input (memory stays
    /// bounded whatever the table size), read concurrently, each group sorted
    /// by key then run (so `key = ...` skips row groups) and written as one
    /// file before its inputs are deleted.
    pub async fn compact_with(&self, group_bytes: u64) -> Result<Vec<(String, usize, usize)>> {
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStoreExt;
        let mut report = Vec::new();
        for (table, schema) in tables::stored_tables() {
            let prefix = self.storage.path(&format!("{}/{table}", tables::ROOT));
            let mut files: Vec<_> = self
                .storage
                .store()
                .list(Some(&prefix))
                .try_filter(|m| {
                    futures::future::ready(
                        m.location.as_ref().ends_with(".parquet") && m.size < group_bytes / 2,
                    )
                })
                .try_collect()
                .await?;
            files.sort_by(|a, b| a.location.cmp(&b.location));
            let mut groups: Vec<Vec<object_store::ObjectMeta>> = Vec::new();
            let mut size = 0;
            for f in files {
                match groups.last_mut() {
                    Some(g) if size + f.size <= group_bytes => {
                        size += f.size;
                        g.push(f);
                    }
                    _ => {
                        size = f.size;
                        groups.push(vec![f]);
                    }
                }
            }
            let (mut merged_files, mut merged_rows) = (0, 0);
            for group in groups.into_iter().filter(|g| g.len() > 1) {
                merged_rows += self.merge_files(table, &schema, &group).await?;
                merged_files += group.len();
                let store = self.storage.store();
                futures::stream::iter(group.iter().map(|f| store.delete(&f.location)))
                    .buffer_unordered(32)
                    .try_collect::<Vec<_>>()
                    .await?;
            }
            if merged_files > 0 {
                report.push((table.to_string(), merged_files, merged_rows));
            }
        }
        Ok(report)
    }

    /// Reads `files` (32 at a time), sorts their rows by key then run and
    /// writes them as one file in 64k-row groups; returns the rows.
    async fn merge_files(
        &self,
        table: &str,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        files: &[object_store::ObjectMeta],
    ) -> Result<usize> {
        use datafusion::arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take};
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStoreExt;
        let store = self.storage.store();
        let contents: Vec<Bytes> = futures::stream::iter(files.iter().map(|f| async move {
            Ok::<_, crate::Error>(store.get(&f.location).await?.bytes().await?)
        }))
        .buffered(32)
        .try_collect()
        .await?;
        let mut batches = Vec::new();
        for bytes in contents {
            for b in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
                batches.push(b?);
            }
        }
        let merged = concat_batches(schema, &batches)?;
        drop(batches);
        let sort_cols: &[&str] = if schema.field_with_name("key").is_ok() {
            &["key", "run_id"]
        } else {
            &["run_id"]
        };
        let columns: Vec<SortColumn> = sort_cols
            .iter()
            .map(|c| SortColumn {
                values: merged.column_by_name(c).expect("schema column").clone(),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&columns, None)?;
        let sorted = RecordBatch::try_new(
            schema.clone(),
            merged
                .columns()
                .iter()
                .map(|c| take(c, &order, None))
                .collect::<std::result::Result<Vec<_>, _>>()?,
        )?;
        let rel = format!(
            "{}/{table}/compacted-{}-{:016x}.parquet",
            tables::ROOT,
            now_us(),
            rand::random::<u64>()
        );
        let bytes =
            crate::storage::encode_parquet_grouped(schema.clone(), &[sorted], Some(65_536))?;
        self.storage.put(&rel, bytes).await?;
        Ok(merged.num_rows())
    }

    /// Runs matching an MLflow-style filter (see [`filter`]), as batches.
    pub async fn search(&self, filter: &str, experiment: Option<&str>) -> Result<Vec<RecordBatch>> {
        let sql = filter::translate(filter, experiment)?.sql;
        let mut ctx = self.context().await?;
        if !self.reap_in(&ctx).await?.is_empty() {
            ctx = self.context().await?;
        }
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
///
/// A run started by [`ExperimentTracker::start_run`] writes its start at
/// once and the rest on [`Run::flush`] / [`Run::end`] (metrics also every
/// [`METRIC_FLUSH_POINTS`]). A *deferred* run
/// ([`ExperimentTracker::deferred_run`]) writes only on [`Run::flush`],
/// naming each table's file by the label ([`Run::label_next`]) current when
/// that table's first buffered row was logged.
#[derive(Debug)]
pub struct Run {
    tracker: ExperimentTracker,
    row: RunRow,
    params: BTreeMap<String, String>,
    deferred: bool,
    /// Label of what is logged next (deferred runs).
    label: Option<String>,
    /// File name of each table's buffered rows (deferred runs).
    names: BTreeMap<&'static str, String>,
    pending_runs: Vec<RunRow>,
    pending_params: Vec<(String, String, Option<String>, i64)>,
    pending_tags: Vec<(String, String, Option<String>, i64)>,
    pending_metrics: Vec<MetricPoint>,
    pending_artifacts: Vec<(String, String, String, i64, i64)>,
    ended: bool,
}

impl Run {
    fn new(
        tracker: ExperimentTracker,
        row: RunRow,
        params: BTreeMap<String, String>,
        deferred: bool,
    ) -> Self {
        Self {
            tracker,
            row,
            params,
            deferred,
            label: None,
            names: BTreeMap::new(),
            pending_runs: Vec::new(),
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

    /// The run's current row and logged params (what
    /// [`ExperimentTracker::restore_deferred`] takes back).
    pub fn state(&self) -> (&RunRow, &BTreeMap<String, String>) {
        (&self.row, &self.params)
    }

    /// Labels what is logged next (deferred runs): when a table's buffer
    /// is empty, the label current at its first new row names its next file,
    /// `<table>/<run id>-<label>.parquet`, replacing a file of that name. A
    /// caller that labels by input position (the tracking topic uses the
    /// Kafka offset) gets the same names when it replays the same input, so
    /// a replay overwrites what it wrote before instead of doubling it.
    pub fn label_next(&mut self, label: &str) -> Result<()> {
        if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TrackingError::Invalid {
                what: "file label",
                value: label.to_string(),
                reason: "use ASCII letters, digits, '-' and '_'".into(),
            }
            .into());
        }
        self.label = Some(label.to_string());
        Ok(())
    }

    /// Records the file name of `table` unless its buffer already has one
    /// (call before adding rows).
    fn note_first(&mut self, table: &'static str) {
        if let Some(label) = &self.label
            && self.deferred
        {
            self.names.entry(table).or_insert_with(|| label.clone());
        }
    }

    fn live(&self) -> Result<(), TrackingError> {
        if self.ended {
            Err(TrackingError::Ended(self.row.run_id.clone()))
        } else {
            Ok(())
        }
    }

    /// Writes one table's rows as one file: `<run id>-<label>.parquet` for a
    /// deferred run, else `<run id>-<time>-<pid>-<n>.parquet` (unique).
    async fn write(&mut self, table: &'static str, batch: RecordBatch) -> Result<()> {
        let label = self.names.remove(table).unwrap_or_else(|| {
            format!(
                "{}-{}-{}",
                now_us(),
                std::process::id(),
                FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let rel = tables::file_path(table, &self.row.run_id, &label);
        self.tracker.storage.write_parquet(&rel, &[batch]).await
    }

    /// Logs params; a key logged before must keep its value. Nothing is
    /// recorded when any of them is refused.
    pub fn log_params(&mut self, params: &[(String, String)]) -> Result<()> {
        self.log_params_at(params, now_us())
    }

    /// [`Run::log_params`] stamped `at` (µs since the epoch).
    pub fn log_params_at(&mut self, params: &[(String, String)], at: i64) -> Result<()> {
        self.live()?;
        for (k, v) in params {
            check_key("param key", k)?;
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
        if params.iter().any(|(k, _)| !self.params.contains_key(k)) {
            self.note_first("params");
        }
        for (k, v) in params {
            if self.params.insert(k.clone(), v.clone()).is_none() {
                self.pending_params
                    .push((self.row.run_id.clone(), k.clone(), Some(v.clone()), at));
            }
        }
        Ok(())
    }

    /// Logs metric points `(key, value, step)` stamped now.
    pub async fn log_metrics(&mut self, points: &[(&str, f64, i64)]) -> Result<()> {
        let t = now_us();
        self.log_metric_points(points.iter().map(|(k, v, s)| MetricPoint {
            key: k.to_string(),
            value: *v,
            step: *s,
            timestamp: t,
        }))
        .await
    }

    /// Logs metric points with their own timestamps. Nothing is recorded
    /// when a key is refused.
    pub async fn log_metric_points(
        &mut self,
        points: impl IntoIterator<Item = MetricPoint>,
    ) -> Result<()> {
        self.buffer_metric_points(points)?;
        if !self.deferred && self.pending_metrics.len() >= METRIC_FLUSH_POINTS {
            self.flush_metrics().await?;
        }
        Ok(())
    }

    /// Adds metric points to the buffer without writing (a deferred run's
    /// caller decides when to flush). Nothing is recorded when a key is
    /// refused.
    pub fn buffer_metric_points(
        &mut self,
        points: impl IntoIterator<Item = MetricPoint>,
    ) -> Result<()> {
        self.live()?;
        let before = self.pending_metrics.len();
        self.pending_metrics.extend(points);
        if let Some(err) = self.pending_metrics[before..]
            .iter()
            .find_map(|p| check_key("metric key", &p.key).err())
        {
            self.pending_metrics.truncate(before);
            return Err(err.into());
        }
        if self.pending_metrics.len() > before {
            self.note_first("metrics");
        }
        Ok(())
    }

    /// Sets tags (a later value replaces an earlier one).
    pub fn set_tags(&mut self, tags: &[(String, String)]) -> Result<()> {
        self.set_tags_at(tags, now_us())
    }

    /// [`Run::set_tags`] stamped `at` (µs since the epoch).
    pub fn set_tags_at(&mut self, tags: &[(String, String)], at: i64) -> Result<()> {
        self.live()?;
        for (k, _) in tags {
            check_key("tag key", k)?;
        }
        if !tags.is_empty() {
            self.note_first("tag_log");
        }
        self.pending_tags.extend(
            tags.iter()
                .map(|(k, v)| (self.row.run_id.clone(), k.clone(), Some(v.clone()), at)),
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
        self.note_first("artifacts");
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

    /// Writes everything buffered, one file per table with rows; the run's
    /// own rows last, so an end is never visible before what it ends.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.pending_params.is_empty() {
            let batch = tables::kv_batch(&self.pending_params)?;
            self.write("params", batch).await?;
            self.pending_params.clear();
        }
        if !self.pending_tags.is_empty() {
            let batch = tables::kv_batch(&self.pending_tags)?;
            self.write("tag_log", batch).await?;
            self.pending_tags.clear();
        }
        if !self.pending_artifacts.is_empty() {
            let batch = tables::artifact_batch(&self.pending_artifacts)?;
            self.write("artifacts", batch).await?;
            self.pending_artifacts.clear();
        }
        self.flush_metrics().await?;
        if !self.pending_runs.is_empty() {
            let batch = tables::run_batch(&self.pending_runs)?;
            self.write("run_log", batch).await?;
            self.pending_runs.clear();
        }
        Ok(())
    }

    /// Records the end of the run at `at` (µs since the epoch) without
    /// writing it; [`Run::end`] also flushes.
    pub fn finish(&mut self, status: RunStatus, at: i64) -> Result<()> {
        self.live()?;
        self.row.status = status.as_str().into();
        self.row.end_time = Some(at);
        // Strictly after the previous row, so the `runs` view picks this one.
        self.row.updated_at = at.max(self.row.updated_at + 1);
        self.note_first("run_log");
        self.pending_runs.push(self.row.clone());
        self.ended = true;
        Ok(())
    }

    /// Flushes and records the end of the run.
    pub async fn end(mut self, status: RunStatus) -> Result<()> {
        self.finish(status, now_us())?;
        self.flush().await
    }
}
