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
//! file. Tables and views: see [`tables`].
//!
//! Each run also has small control objects ([`markers`]) created with
//! create-if-absent: its head (so a later `log-*` call reads one object, not
//! the tables, whatever the store holds), one per param key (params are
//! immutable, as in MLflow, also between concurrent processes: the first
//! value wins) and its end (the first status wins). A run started with an
//! owner process ([`ExperimentTracker::start_run`], or the CLI's
//! `--owner-pid`) is marked `KILLED` by the next read on its host once that
//! process is gone without `end` ([`ExperimentTracker::reap_orphans`]); a run
//! without an owner stays `RUNNING` until it is ended.
//!
//! Reads compact a table first when it holds too many small files, and
//! [`ExperimentTracker::compact`] does it on demand; [`compact`] describes
//! the protocol that keeps concurrent readers and crashes from seeing a row
//! twice or missing one.
//!
//! Runs can also be logged from Kafka: [`stream`] turns JSON events of the
//! `mlwatch.tracking` topic into calls on this API (`mlwatch run` consumes
//! the topic). Such runs are *deferred*: they write only when the consumer
//! checkpoints, under file names derived from Kafka offsets, so a replay
//! after a crash overwrites instead of duplicating.

pub mod compact;
pub mod env;
pub mod filter;
pub mod markers;
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
    /// A stored tracking object cannot be read.
    #[error("tracking object {path} is not readable: {reason}")]
    Unreadable {
        /// Path under the storage root.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The run ended with another status first.
    #[error("run {run_id} has already ended as {status}; cannot end it as {requested}")]
    AlreadyEnded {
        /// Run.
        run_id: String,
        /// The status it ended with.
        status: String,
        /// The refused status.
        requested: String,
    },
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

/// A JSON object of the store (a control object, a compaction record), or
/// `None` when there is none at `path`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    path: &str,
) -> Result<Option<T>> {
    storage
        .get_opt(path)
        .await?
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                TrackingError::Unreadable {
                    path: path.to_string(),
                    reason: e.to_string(),
                }
                .into()
            })
        })
        .transpose()
}

/// A param's marker, if the key was logged.
async fn read_param_mark(storage: Storage, path: String) -> Result<Option<markers::ParamMark>> {
    read_json(&storage, &path).await
}

/// A pending param row with the marker path, the winner's marker when
/// another value won, and whether this call created the marker.
type Claim = (
    (String, String, Option<String>, i64),
    String,
    Option<markers::ParamMark>,
    bool,
);

/// Claims one param by creating its marker (`known`: it already exists
/// with the same value, nothing to create).
async fn claim_param(
    storage: Storage,
    run_id: String,
    p: (String, String, Option<String>, i64),
    known: bool,
) -> Result<Claim> {
    let path = markers::param_path(&run_id, &p.1);
    if known {
        return Ok((p, path, None, false));
    }
    let value = p.2.clone().unwrap_or_default();
    let new = markers::ParamMark {
        key: p.1.clone(),
        value: value.clone(),
        logged_at: p.3,
    };
    let bytes = Bytes::from(serde_json::to_vec(&new).expect("json"));
    if storage.put_if_absent(&path, bytes).await? {
        return Ok((p, path, None, true));
    }
    // Lost a race: who won, with which value?
    let winner = read_param_mark(storage, path.clone()).await?;
    Ok((p, path, winner.filter(|w| w.value != value), false))
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
    policy: compact::CompactionPolicy,
    /// Captured once per tracker: the probes are subprocesses (~0.1 s).
    environment: std::sync::Arc<std::sync::OnceLock<env::RunEnvironment>>,
}

impl ExperimentTracker {
    /// A tracker over `storage`; git facts are read from the current directory.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            policy: Default::default(),
            environment: Default::default(),
        }
    }

    /// The same tracker with another compaction policy.
    pub fn with_compaction(mut self, policy: compact::CompactionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The environment recorded with runs, captured on first use.
    pub fn environment(&self) -> &env::RunEnvironment {
        self.environment.get_or_init(|| env::capture(&self.workdir))
    }

    /// The storage it uses.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Starts a run owned by this process: if the process ends without
    /// [`Run::end`], the next read on this host marks the run `KILLED`.
    pub async fn start_run(
        &self,
        experiment: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<Run> {
        self.start_run_owned_by(experiment, run_name, tags, Some(std::process::id()))
            .await
    }

    /// Starts a run owned by process `owner` on this host (reaped as
    /// `KILLED` once that process is gone without ending it), or by no one
    /// (`None`: the run stays `RUNNING` until it is ended, as in MLflow).
    pub async fn start_run_owned_by(
        &self,
        experiment: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
        owner: Option<u32>,
    ) -> Result<Run> {
        let run_id = format!("{:032x}", rand::random::<u128>());
        let env = self.environment().clone();
        let owner = owner.map(|pid| markers::Owner::process(pid, env.hostname.clone()));
        let row = new_row(
            run_id,
            experiment,
            run_name,
            now_us(),
            owner.as_ref().map_or(0, |o| i64::from(o.pid)),
            env,
        )?;
        let head = markers::Head {
            row: row.clone(),
            owner,
        };
        // A random id is new; create-if-absent makes sure of it.
        if !self
            .storage
            .put_if_absent(
                &markers::head_path(&row.run_id),
                Bytes::from(serde_json::to_vec(&head).expect("json")),
            )
            .await?
        {
            return Err(TrackingError::Invalid {
                what: "run id",
                value: row.run_id,
                reason: "already taken".into(),
            }
            .into());
        }
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
        // The consumer's lookup: no compaction on this path.
        let ctx = self.tables_context().await?;
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

    /// Reopens a run (e.g. for a later CLI call). A run started by this
    /// version is read from its own head and end objects (two reads,
    /// however many runs the store holds); older runs and runs from the
    /// tracking topic from the tables.
    pub async fn resume(&self, run_id: &str) -> Result<Run> {
        if let Some(head) = self.head(run_id).await? {
            if let Some(end) = self.end_mark(run_id).await? {
                let _ = end;
                return Err(TrackingError::Ended(run_id.to_string()).into());
            }
            return Ok(Run::new(self.clone(), head.row, BTreeMap::new(), false));
        }
        self.resume_from_tables(run_id).await
    }

    /// The run's head, or `None` for runs without one (see [`markers`]).
    async fn head(&self, run_id: &str) -> Result<Option<markers::Head>> {
        check_run_id(run_id).map_err(|_| TrackingError::UnknownRun(run_id.to_string()))?;
        read_json(&self.storage, &markers::head_path(run_id)).await
    }

    /// The run's end, if it has ended through its end object.
    async fn end_mark(&self, run_id: &str) -> Result<Option<markers::EndMark>> {
        read_json(&self.storage, &markers::end_path(run_id)).await
    }

    /// Ends run `run_id` with `status` (one call, e.g. from the CLI). The
    /// first end wins: ending again with the same status changes nothing
    /// and succeeds (a retried script), another status is refused with
    /// [`TrackingError::AlreadyEnded`].
    pub async fn end_run(&self, run_id: &str, status: RunStatus) -> Result<()> {
        if let Some(head) = self.head(run_id).await? {
            if let Some(end) = self.end_mark(run_id).await? {
                return if end.status == status.as_str() {
                    self.repair_end(head, &end).await
                } else {
                    Err(TrackingError::AlreadyEnded {
                        run_id: run_id.to_string(),
                        status: end.status,
                        requested: status.as_str().into(),
                    }
                    .into())
                };
            }
            return Run::new(self.clone(), head.row, BTreeMap::new(), false)
                .end(status)
                .await;
        }
        // A run without a head (logged through Kafka, or before heads):
        // its row says whether and how it ended.
        let ctx = self.tables_context().await?;
        let row = self.run_row(&ctx, run_id).await?;
        if row.status != "RUNNING" {
            return if row.status == status.as_str() {
                Ok(())
            } else {
                Err(TrackingError::AlreadyEnded {
                    run_id: run_id.to_string(),
                    status: row.status,
                    requested: status.as_str().into(),
                }
                .into())
            };
        }
        self.resume_from_tables(run_id).await?.end(status).await
    }

    /// A run whose end object exists but whose process died before writing
    /// the end row still reads `RUNNING`: write the row. Checked through the
    /// tables (an `end` repeated by its caller, not a `log-*` call), and only
    /// written when no end row is visible, so it never adds a second one.
    async fn repair_end(&self, head: markers::Head, end: &markers::EndMark) -> Result<()> {
        let ctx = self.tables_context().await?;
        if self.run_row(&ctx, &head.row.run_id).await?.status == "RUNNING" {
            let mut run = Run::new(self.clone(), head.row, BTreeMap::new(), false);
            run.write_end(end).await?;
        }
        Ok(())
    }

    /// [`ExperimentTracker::resume`] for a run without a head: its row and
    /// params from the tables.
    async fn resume_from_tables(&self, run_id: &str) -> Result<Run> {
        let ctx = self.tables_context().await?;
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

    /// A SQL session with the tracking tables and views registered. When
    /// a table holds more small files than the compaction policy allows, it
    /// is compacted first (see [`compact`]), so reads stay fast without a
    /// manual step.
    pub async fn context(&self) -> Result<SessionContext> {
        if self.policy.after_files > 0 {
            // A read must not fail because compaction did (read-only
            // credentials, a transient error): it reads the files as they are.
            match compact::compact(&self.storage, &self.policy, false, compact::StopAt::Never).await
            {
                Ok(done) => {
                    for c in &done {
                        tracing::info!(
                            table = %c.table,
                            files = c.files,
                            rows = c.rows,
                            "compacted small tracking files"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tracking compaction failed; reading uncompacted files")
                }
            }
        }
        self.tables_context().await
    }

    /// A SQL session over the tracking tables, without compacting (nothing
    /// is written: what the dashboard's pages read from).
    pub(crate) async fn tables_context(&self) -> Result<SessionContext> {
        let ctx = crate::query::new_context(Default::default());
        register_tables(&ctx, &self.storage).await?;
        Ok(ctx)
    }

    /// Marks `KILLED` every run still `RUNNING` whose owner process, on
    /// this host, no longer exists, and completes ends that a crashed
    /// process recorded without writing their row. Returns the ids marked.
    pub async fn reap_orphans(&self) -> Result<Vec<String>> {
        self.reap_in(&self.context().await?).await
    }

    /// [`ExperimentTracker::reap_orphans`] with a session to read from. The
    /// session's listing cache does not see the rows this writes: query
    /// through a new session when it returns ids.
    ///
    /// Only runs with a head are considered: a run is reaped only when it
    /// was started with an owner process ([`ExperimentTracker::start_run`],
    /// `mlwatch runs start --owner-pid`), never because some other process
    /// exited.
    async fn reap_in(&self, ctx: &SessionContext) -> Result<Vec<String>> {
        use futures::{StreamExt, TryStreamExt};
        let Some(host) = env::hostname(&self.workdir) else {
            return Ok(Vec::new());
        };
        // Runs with an owner process on this host: the only ones whose
        // owner this process can check.
        let batches = ctx
            .sql(&format!(
                "SELECT run_id FROM runs WHERE status = 'RUNNING' AND pid > 0 AND hostname = {}",
                filter::quote(&host)
            ))
            .await?
            .collect()
            .await?;
        let ids: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_string::<i32>();
                (0..b.num_rows()).map(move |i| a.value(i).to_string())
            })
            .collect();
        let reaped: Vec<Option<String>> = futures::stream::iter(ids.into_iter().map(|id| {
            let host = host.clone();
            async move {
                let Some(head) = self.head(&id).await? else {
                    return Ok::<_, crate::Error>(None);
                };
                if let Some(end) = self.end_mark(&id).await? {
                    // Ended, but the process died before writing the row
                    // (the row is not visible: this run reads RUNNING).
                    let mut run = Run::new(self.clone(), head.row, BTreeMap::new(), false);
                    run.write_end(&end).await?;
                    return Ok(None);
                }
                let dead = head
                    .owner
                    .as_ref()
                    .and_then(|o| o.alive(&host))
                    .is_some_and(|alive| !alive);
                if !dead {
                    return Ok(None);
                }
                match self.end_run(&id, RunStatus::Killed).await {
                    Ok(()) => Ok(Some(id)),
                    // Ended meanwhile by its owner or another reader.
                    Err(crate::Error::Tracking(TrackingError::AlreadyEnded { .. })) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }))
        .buffer_unordered(16)
        .try_collect()
        .await?;
        let mut reaped: Vec<String> = reaped.into_iter().flatten().collect();
        reaped.sort();
        Ok(reaped)
    }

    /// Merges each stored table's small files now (see [`compact`]) with
    /// the tracker's policy; returns what was merged per table.
    pub async fn compact(&self) -> Result<Vec<compact::Compacted>> {
        compact::compact(&self.storage, &self.policy, true, compact::StopAt::Never).await
    }

    /// [`ExperimentTracker::compact`] with another group size. Files of at
    /// least half of `group_bytes` are left as they are (earlier outputs),
    /// so a nightly run only rewrites what arrived since.
    pub async fn compact_with(&self, group_bytes: u64) -> Result<Vec<compact::Compacted>> {
        let policy = compact::CompactionPolicy {
            group_bytes,
            ..self.policy.clone()
        };
        compact::compact(&self.storage, &policy, true, compact::StopAt::Never).await
    }

    /// Runs matching an MLflow-style filter (see [`filter`]), as batches.
    pub async fn search(&self, filter: &str, experiment: Option<&str>) -> Result<Vec<RecordBatch>> {
        let sql = filter::translate(filter, experiment)?.sql;
        let ctx = self.reaped_context().await?;
        Ok(ctx.sql(&sql).await?.collect().await?)
    }

    /// [`ExperimentTracker::context`] after reaping orphaned runs: what a
    /// read that shows run statuses (`list`, `search`, `show`) answers from.
    /// One compaction check; a second session only when something was
    /// reaped (a session's listing does not see the rows reaping writes).
    pub async fn reaped_context(&self) -> Result<SessionContext> {
        let ctx = self.context().await?;
        if self.reap_in(&ctx).await?.is_empty() {
            Ok(ctx)
        } else {
            self.tables_context().await
        }
    }
}

/// Registers the tracking tables and views on `ctx`. Files that a finished
/// compaction replaced but has not deleted yet are hidden (see [`compact`]).
pub async fn register_tables(ctx: &SessionContext, storage: &Storage) -> Result<()> {
    let hide: std::sync::Arc<dyn crate::storage::objects::ListFilter> =
        std::sync::Arc::new(compact::HideMerged::new(storage.clone()));
    for (name, schema) in tables::stored_tables() {
        let dir = format!("{}/{name}", tables::ROOT);
        storage.register_listing(ctx, name, &dir, schema, &[], Some(hide.clone()))?;
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
        for (i, (k, v)) in params.iter().enumerate() {
            check_key("param key", k)?;
            // Logged before, or earlier in this call: params never change.
            let earlier = params[..i].iter().find(|(e, _)| e == k).map(|(_, v)| v);
            if let Some(old) = self.params.get(k).or(earlier)
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
        if let Some(err) = self.pending_metrics[before..].iter().find_map(|p| {
            check_key("metric key", &p.key).err().or_else(|| {
                // (Parquet would hold it, but a NaN would sort first and
                // compare false: refused, as the CLI and Kafka refuse it.)
                (!p.value.is_finite()).then(|| TrackingError::Invalid {
                    what: "metric value",
                    value: format!("{}={}", p.key, p.value),
                    reason: "must be a finite number".into(),
                })
            })
        }) {
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
    ///
    /// Params of a run that is not deferred are first claimed, each by
    /// creating its marker ([`markers`]): a key another process set to
    /// another value meanwhile is refused with
    /// [`TrackingError::ParamChanged`] (after the keys this call won are
    /// written), a key set to the same value is not written twice.
    pub async fn flush(&mut self) -> Result<()> {
        let mut conflict = None;
        if !self.deferred && !self.pending_params.is_empty() {
            let pending = std::mem::take(&mut self.pending_params);
            let keys: Vec<String> = pending.iter().map(|p| p.1.clone()).collect();
            let (won, created, lost) = match self.claim_params(pending).await {
                Ok(c) => c,
                Err(e) => {
                    // Not logged: the same call may be retried.
                    for k in &keys {
                        self.params.remove(k);
                    }
                    return Err(e);
                }
            };
            conflict = lost;
            if !won.is_empty() {
                let batch = tables::kv_batch(&won)?;
                if let Err(e) = self.write("params", batch).await {
                    // Refused whole: the keys are free again.
                    for (_, k, _, _) in &won {
                        self.params.remove(k);
                    }
                    self.tracker.storage.delete_all(&created).await?;
                    return Err(e);
                }
            }
        }
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
        conflict.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Claims each pending param by creating its marker; returns the rows
    /// won, the markers created, and the first conflict. A key already
    /// holding another value refuses the whole call before anything is
    /// created (as a sequential change); a conflict that appears while
    /// claiming (a concurrent writer) refuses only its key.
    async fn claim_params(
        &mut self,
        pending: Vec<(String, String, Option<String>, i64)>,
    ) -> Result<(
        Vec<(String, String, Option<String>, i64)>,
        Vec<String>,
        Option<TrackingError>,
    )> {
        use futures::{StreamExt, TryStreamExt};
        let storage = self.tracker.storage.clone();
        let run_id = self.row.run_id.clone();
        let changed = |mark: &markers::ParamMark, new: &str| TrackingError::ParamChanged {
            run_id: run_id.clone(),
            key: mark.key.clone(),
            old: mark.value.clone(),
            new: new.to_string(),
        };
        // A sequential change: refuse the whole request, create nothing.
        let lookups: Vec<_> = pending
            .iter()
            .map(|p| read_param_mark(storage.clone(), markers::param_path(&run_id, &p.1)))
            .collect();
        let before: Vec<Option<markers::ParamMark>> = futures::stream::iter(lookups)
            .buffered(16)
            .try_collect()
            .await?;
        for (p, mark) in pending.iter().zip(&before) {
            if let Some(mark) = mark
                && Some(&mark.value) != p.2.as_ref()
            {
                for p in &pending {
                    self.params.remove(&p.1);
                }
                return Err(changed(mark, p.2.as_deref().unwrap_or_default()).into());
            }
        }
        let attempts: Vec<_> = pending
            .into_iter()
            .zip(before)
            .map(|(p, mark)| claim_param(storage.clone(), run_id.clone(), p, mark.is_some()))
            .collect();
        let claims = futures::stream::iter(attempts)
            .buffered(16)
            .try_collect::<Vec<_>>()
            .await?;
        let (mut won, mut created, mut lost) = (Vec::new(), Vec::new(), None);
        for (p, path, conflict, is_new) in claims {
            if let Some(w) = conflict {
                self.params.insert(p.1.clone(), w.value.clone());
                lost.get_or_insert_with(|| changed(&w, p.2.as_deref().unwrap_or_default()));
            } else if is_new {
                created.push(path);
                won.push(p);
            }
        }
        Ok((won, created, lost))
    }

    /// Writes the run's end row as the file `<run id>-end.parquet` (the
    /// same name for every writer of this end, so a repeat overwrites).
    async fn write_end(&mut self, end: &markers::EndMark) -> Result<()> {
        self.row.status = end.status.clone();
        self.row.end_time = Some(end.end_time);
        self.row.updated_at = end.end_time.max(self.row.start_time + 1);
        let batch = tables::run_batch(std::slice::from_ref(&self.row))?;
        self.names.insert("run_log", markers::END_LABEL.to_string());
        self.write("run_log", batch).await
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

    /// Flushes and records the end of the run. A run that is not deferred
    /// ends through its end object ([`markers`]): when another process
    /// ended it first with another status, this is refused with
    /// [`TrackingError::AlreadyEnded`] (same status: nothing to do).
    pub async fn end(mut self, status: RunStatus) -> Result<()> {
        if self.deferred {
            self.finish(status, now_us())?;
            return self.flush().await;
        }
        self.live()?;
        self.flush().await?;
        let run_id = self.row.run_id.clone();
        let mark = markers::EndMark {
            status: status.as_str().into(),
            end_time: now_us(),
        };
        let path = markers::end_path(&run_id);
        let created = self
            .tracker
            .storage
            .put_if_absent(&path, Bytes::from(serde_json::to_vec(&mark).expect("json")))
            .await?;
        if !created {
            let first = self
                .tracker
                .end_mark(&run_id)
                .await?
                .ok_or_else(|| TrackingError::Ended(run_id.clone()))?;
            self.ended = true;
            return if first.status == mark.status {
                Ok(())
            } else {
                Err(TrackingError::AlreadyEnded {
                    run_id,
                    status: first.status,
                    requested: mark.status,
                }
                .into())
            };
        }
        self.ended = true;
        if let Err(e) = self.write_end(&mark).await {
            // Not half-done: the run is still running, as far as anyone knows.
            self.tracker.storage.delete(&path).await?;
            return Err(e);
        }
        Ok(())
    }
}
