//! The `mlwatch.tracking` Kafka topic: JSON tracking events, consumed by
//! `mlwatch run` and written through the tracking API ([`super::Run`]).
//!
//! One JSON object per record, told apart by `type`; times are milliseconds
//! since the epoch (as MLflow's) and default to the record's Kafka timestamp:
//!
//! ```json
//! {"type": "start", "run_id": "<32 hex>", "experiment": "churn", "run_name": "xgb-1",
//!  "tags": {"team": "risk"}, "time": 1700000000000,
//!  "env": {"git_commit": "…", "git_branch": "main", "git_dirty": false, "hostname": "…",
//!          "os": "linux", "user": "ana", "command": "python train.py", "python_version": "3.12.1"}}
//! {"type": "params",  "run_id": "…", "params": {"lr": 0.1, "model": "xgb"}}
//! {"type": "metrics", "run_id": "…", "metrics": [{"key": "loss", "value": 0.3, "step": 1, "timestamp": 1700000000500}]}
//! {"type": "tags",    "run_id": "…", "tags": {"stage": "tuning"}}
//! {"type": "end",     "run_id": "…", "status": "FINISHED", "time": 1700000100000}
//! ```
//!
//! The producer names the run (Python: `uuid.uuid4().hex`) and should key
//! every record of a run by its id, so they share a partition and arrive in
//! order. An event that cannot be applied (bad JSON, an unknown run, a param
//! that changes, a bad key) is rejected with a [`Reason`] and the pipeline
//! writes it to the dead letters; it changes nothing.
//!
//! **Exactly once across restarts.** Runs opened here are deferred
//! ([`ExperimentTracker::deferred_run`]): what they log stays buffered until
//! the pipeline checkpoints. Then each run writes one file per table with
//! rows, named `<run id>-k<partition>-<offset>` after the first record since
//! the last checkpoint that gave the run rows in that table
//! ([`Run::label_next`]), and the checkpoint stores the open runs (row and
//! params). At most one such write is not yet covered by a checkpoint when
//! a process dies; the restart replays from the last checkpoint, where the
//! same first record gives the same name, so those files are overwritten
//! (whatever the new checkpoint boundaries), never doubled.
//!
//! **Bounded.** At most `tracking.max_open_runs` runs are open (a start
//! beyond it is rejected); a run without events for `tracking.idle_timeout`
//! is ended `KILLED`; the pipeline checkpoints early once
//! [`super::METRIC_FLUSH_POINTS`] points are buffered ([`TrackingSink::needs_flush`]).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::env::RunEnvironment;
use super::tables::{MetricPoint, RunRow};
use super::{ExperimentTracker, METRIC_FLUSH_POINTS, Run, RunStatus, TrackingError};
use crate::config::TrackingConfig;
use crate::error::{Error, Result};
use crate::event::Reason;

/// One event of the topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TrackingEvent {
    /// Opens a run.
    Start {
        /// 32 lower-case hex digits, chosen by the producer.
        run_id: String,
        /// Experiment name.
        experiment: String,
        /// Run name (default `run-<first 8 digits of the id>`).
        #[serde(default)]
        run_name: Option<String>,
        /// Tags set at start.
        #[serde(default)]
        tags: BTreeMap<String, Value>,
        /// Start time, ms since the epoch.
        #[serde(default)]
        time: Option<i64>,
        /// Where the run runs.
        #[serde(default)]
        env: Box<StreamEnvironment>,
    },
    /// Logs params (strings, numbers or booleans; stored as text).
    Params {
        /// Run id.
        run_id: String,
        /// Key to value.
        params: BTreeMap<String, Value>,
    },
    /// Logs a batch of metric points.
    Metrics {
        /// Run id.
        run_id: String,
        /// The points.
        metrics: Vec<MetricEvent>,
    },
    /// Sets tags.
    Tags {
        /// Run id.
        run_id: String,
        /// Key to value.
        tags: BTreeMap<String, Value>,
    },
    /// Ends a run.
    End {
        /// Run id.
        run_id: String,
        /// FINISHED (default), FAILED or KILLED.
        #[serde(default)]
        status: Option<String>,
        /// End time, ms since the epoch.
        #[serde(default)]
        time: Option<i64>,
    },
}

/// One metric point of a `metrics` event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricEvent {
    /// Metric name.
    pub key: String,
    /// Value.
    pub value: f64,
    /// Step (default 0).
    #[serde(default)]
    pub step: i64,
    /// ms since the epoch (default: the record's time).
    #[serde(default)]
    pub timestamp: Option<i64>,
}

/// The environment a producer reports with `start` (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamEnvironment {
    git_commit: Option<String>,
    git_branch: Option<String>,
    git_dirty: Option<bool>,
    hostname: Option<String>,
    os: Option<String>,
    user: Option<String>,
    command: Option<String>,
    rustc_version: Option<String>,
    python_version: Option<String>,
}

impl StreamEnvironment {
    /// The stored environment; empty strings count as absent (e.g. a
    /// `git rev-parse` outside a repository).
    fn into_run_environment(self) -> RunEnvironment {
        let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        RunEnvironment {
            git_commit: some(self.git_commit),
            git_branch: some(self.git_branch),
            git_dirty: self.git_dirty,
            hostname: some(self.hostname),
            os: some(self.os).unwrap_or_else(|| "unknown".into()),
            user: some(self.user),
            mlwatch_version: env!("CARGO_PKG_VERSION").to_string(),
            command: self.command.unwrap_or_default(),
            rustc_version: some(self.rustc_version),
            python_version: some(self.python_version),
        }
    }
}

/// Why an event was not applied (it goes to the dead letters).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The dead-letter reason.
    pub reason: Reason,
    /// What was wrong, for a person.
    pub error: String,
}

impl Rejection {
    fn new(reason: Reason, error: impl Into<String>) -> Self {
        Self {
            reason,
            error: error.into(),
        }
    }
}

/// Milliseconds since the epoch as microseconds, refusing values that do
/// not fit (a producer sending nanoseconds, say).
fn micros(what: &str, ms: i64) -> std::result::Result<i64, Rejection> {
    ms.checked_mul(1000).ok_or_else(|| {
        Rejection::new(
            Reason::InvalidValue,
            format!("{what} {ms} is out of range: use milliseconds since the epoch"),
        )
    })
}

/// Parses one record's payload.
pub fn parse(payload: &[u8]) -> std::result::Result<TrackingEvent, Rejection> {
    serde_json::from_slice(payload).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Data if e.to_string().starts_with("missing field") => {
                Reason::MissingField
            }
            serde_json::error::Category::Data => Reason::WrongType,
            _ => Reason::BadJson,
        };
        Rejection::new(reason, e.to_string())
    })
}

/// Text of a param or tag value: strings as they are, numbers and booleans
/// as JSON writes them.
fn text(what: &str, key: &str, v: Value) -> std::result::Result<String, Rejection> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(Rejection::new(
            Reason::WrongType,
            format!("{what} `{key}` must be a string, number or boolean, not {other}"),
        )),
    }
}

fn texts(
    what: &str,
    map: BTreeMap<String, Value>,
) -> std::result::Result<Vec<(String, String)>, Rejection> {
    map.into_iter()
        .map(|(k, v)| text(what, &k, v).map(|v| (k, v)))
        .collect()
}

/// What a tracking request's refusal becomes; storage failures stay errors.
fn refusal(e: Error) -> std::result::Result<Rejection, Error> {
    match e {
        Error::Tracking(t @ TrackingError::Unreadable { .. }) => Err(Error::Tracking(t)),
        Error::Tracking(t) => Ok(match t {
            TrackingError::ParamChanged { .. } => {
                Rejection::new(Reason::ParamChanged, t.to_string())
            }
            TrackingError::Ended(_) | TrackingError::AlreadyEnded { .. } => {
                Rejection::new(Reason::RunEnded, t.to_string())
            }
            TrackingError::Unreadable { .. } => unreachable!("matched above"),
            TrackingError::UnknownRun(_) => Rejection::new(Reason::UnknownRun, t.to_string()),
            TrackingError::Invalid { .. } | TrackingError::Filter { .. } => {
                Rejection::new(Reason::InvalidValue, t.to_string())
            }
        }),
        other => Err(other),
    }
}

/// An open run.
#[derive(Debug)]
struct Open {
    run: Run,
    /// Wall-clock ms of its last event (for the idle timeout).
    last_seen_ms: i64,
}

/// What a checkpoint keeps of one open run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRunState {
    row: RunRow,
    params: BTreeMap<String, String>,
    last_seen_ms: i64,
}

/// The open runs, as stored in the pipeline checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackingSnapshot {
    runs: Vec<OpenRunState>,
}

/// Applies tracking events to runs and writes them at checkpoints.
#[derive(Debug)]
pub struct TrackingSink {
    tracker: ExperimentTracker,
    limits: TrackingConfig,
    open: BTreeMap<String, Open>,
    /// Runs ended since the last checkpoint.
    ended: Vec<Run>,
    points: usize,
}

/// One Kafka record of the tracking topic.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record's timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The JSON event.
    pub payload: &'a [u8],
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl TrackingSink {
    /// A sink writing through `tracker`, with the open runs of `snapshot`.
    pub fn new(
        tracker: ExperimentTracker,
        limits: TrackingConfig,
        snapshot: TrackingSnapshot,
    ) -> Self {
        let open = snapshot
            .runs
            .into_iter()
            .map(|s| {
                let id = s.row.run_id.clone();
                let run = tracker.restore_deferred(s.row, s.params);
                let open = Open {
                    run,
                    last_seen_ms: s.last_seen_ms,
                };
                (id, open)
            })
            .collect();
        Self {
            tracker,
            limits,
            open,
            ended: Vec::new(),
            points: 0,
        }
    }

    /// Whether enough is buffered that the pipeline should checkpoint.
    pub fn needs_flush(&self) -> bool {
        self.points >= METRIC_FLUSH_POINTS
    }

    /// Applies one record (`record_ms`: its Kafka timestamp). `Ok(Err(_))`
    /// is a refused event (nothing changed); `Err(_)` a storage failure.
    pub async fn apply(
        &mut self,
        partition: i32,
        offset: i64,
        record_ms: Option<i64>,
        payload: &[u8],
    ) -> Result<std::result::Result<(), Rejection>> {
        let record = Record {
            partition,
            offset,
            timestamp_ms: record_ms,
            payload,
        };
        let mut out = self.apply_batch(&[record]).await?;
        Ok(out.pop().expect("one result per record"))
    }

    /// Applies records in order, one result per record (see
    /// [`TrackingSink::apply`]). The run ids that `start` events name are
    /// looked up in storage with one query for the whole batch.
    pub async fn apply_batch(
        &mut self,
        records: &[Record<'_>],
    ) -> Result<Vec<std::result::Result<(), Rejection>>> {
        let events: Vec<_> = records.iter().map(|r| parse(r.payload)).collect();
        let starts: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Ok(TrackingEvent::Start { run_id, .. }) if !self.open.contains_key(run_id) => {
                    Some(run_id.as_str())
                }
                _ => None,
            })
            .collect();
        // Run ids of this batch's `start` events found in storage.
        let stored = self.tracker.stored_runs(&starts).await?;
        let mut out = Vec::with_capacity(records.len());
        for (r, event) in records.iter().zip(events) {
            let applied = match event {
                Ok(event) => {
                    let default_ms = r.timestamp_ms.unwrap_or_else(now_ms);
                    let name = format!("k{}-{}", r.partition, r.offset);
                    self.apply_event(event, default_ms, name, &stored).await?
                }
                Err(rej) => Err(rej),
            };
            out.push(applied);
        }
        Ok(out)
    }

    async fn apply_event(
        &mut self,
        event: TrackingEvent,
        default_ms: i64,
        name: String,
        stored: &HashSet<String>,
    ) -> Result<std::result::Result<(), Rejection>> {
        let record_us = match micros("record time", default_ms) {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        Ok(match event {
            TrackingEvent::Start {
                run_id,
                experiment,
                run_name,
                tags,
                time,
                env,
            } => match time.map_or(Ok(record_us), |t| micros("start time", t)) {
                Ok(time_us) => {
                    let start = StartRequest {
                        run_id,
                        experiment,
                        run_name,
                        tags,
                        time_us,
                        env,
                    };
                    self.start(start, name, stored).await?
                }
                Err(r) => Err(r),
            },
            TrackingEvent::Params { run_id, params } => match texts("param", params) {
                Ok(kv) => self.with_run(&run_id, name, |r| r.log_params_at(&kv, record_us))?,
                Err(r) => Err(r),
            },
            TrackingEvent::Tags { run_id, tags } => match texts("tag", tags) {
                Ok(kv) => self.with_run(&run_id, name, |r| r.set_tags_at(&kv, record_us))?,
                Err(r) => Err(r),
            },
            TrackingEvent::Metrics { run_id, metrics } => {
                let points: std::result::Result<Vec<MetricPoint>, Rejection> = metrics
                    .into_iter()
                    .map(|m| {
                        Ok(MetricPoint {
                            timestamp: m
                                .timestamp
                                .map_or(Ok(record_us), |t| micros("metric timestamp", t))?,
                            key: m.key,
                            value: m.value,
                            step: m.step,
                        })
                    })
                    .collect();
                match points {
                    Ok(points) => {
                        let n = points.len();
                        let r = self.with_run(&run_id, name, |r| r.buffer_metric_points(points))?;
                        if r.is_ok() {
                            self.points += n;
                        }
                        r
                    }
                    Err(r) => Err(r),
                }
            }
            TrackingEvent::End {
                run_id,
                status,
                time,
            } => {
                let status = match status.as_deref().unwrap_or("FINISHED") {
                    "FINISHED" => Ok(RunStatus::Finished),
                    "FAILED" => Ok(RunStatus::Failed),
                    "KILLED" => Ok(RunStatus::Killed),
                    other => Err(Rejection::new(
                        Reason::InvalidValue,
                        format!("status `{other}`: use FINISHED, FAILED or KILLED"),
                    )),
                };
                let at = time.map_or(Ok(record_us), |t| micros("end time", t));
                match status.and_then(|s| at.map(|at| (s, at))) {
                    Ok((status, at)) => {
                        let r = self.with_run(&run_id, name, |r| r.finish(status, at))?;
                        if r.is_ok() {
                            let o = self.open.remove(&run_id).expect("just applied");
                            self.ended.push(o.run);
                        }
                        r
                    }
                    Err(r) => Err(r),
                }
            }
        })
    }

    fn missing(&self, run_id: &str) -> Rejection {
        if self.ended.iter().any(|r| r.id() == run_id) {
            Rejection::new(Reason::RunEnded, format!("run {run_id} has ended"))
        } else {
            Rejection::new(
                Reason::UnknownRun,
                format!(
                    "run `{run_id}` is not open: no `start` event for it on this topic, or it \
                     has ended"
                ),
            )
        }
    }

    /// Applies `f` to the open run `run_id`; marks the run touched.
    fn with_run(
        &mut self,
        run_id: &str,
        name: String,
        f: impl FnOnce(&mut Run) -> Result<()>,
    ) -> Result<std::result::Result<(), Rejection>> {
        let Some(o) = self.open.get_mut(run_id) else {
            return Ok(Err(self.missing(run_id)));
        };
        o.run.label_next(&name)?;
        match f(&mut o.run) {
            Ok(()) => {
                o.last_seen_ms = now_ms();
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(refusal(e)?)),
        }
    }

    async fn start(
        &mut self,
        s: StartRequest,
        name: String,
        stored: &HashSet<String>,
    ) -> Result<std::result::Result<(), Rejection>> {
        let tags = match texts("tag", s.tags) {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        if self.ended.iter().any(|r| r.id() == s.run_id) {
            return Ok(Err(Rejection::new(
                Reason::DuplicateRun,
                format!("run {} has just ended", s.run_id),
            )));
        }
        if let Some(o) = self.open.get(&s.run_id) {
            // A producer's retry repeats the start: the same one is a no-op.
            let (row, _) = o.run.state();
            let same = row.experiment == s.experiment
                && s.run_name.as_deref().is_none_or(|n| n == row.run_name)
                && row.start_time == s.time_us;
            return Ok(if same {
                Ok(())
            } else {
                Err(Rejection::new(
                    Reason::DuplicateRun,
                    format!("run {} is already open", s.run_id),
                ))
            });
        }
        if self.open.len() >= self.limits.max_open_runs {
            return Ok(Err(Rejection::new(
                Reason::TooManyRuns,
                format!(
                    "{} runs are open (tracking.max_open_runs); end some first",
                    self.open.len()
                ),
            )));
        }
        let mut run = match self.tracker.deferred_run(
            &name,
            &s.run_id,
            &s.experiment,
            s.run_name.as_deref(),
            s.time_us,
            s.env.into_run_environment(),
        ) {
            Ok(r) => r,
            Err(e) => return Ok(Err(refusal(e)?)),
        };
        if let Err(e) = run.set_tags_at(&tags, s.time_us) {
            return Ok(Err(refusal(e)?));
        }
        // A run id already stored is refused, unless this very record wrote
        // it before a crash and is now replayed: then its run_log file has
        // this record's name (a producer's retry has another offset).
        if stored.contains(&s.run_id) {
            let file = super::tables::file_path("run_log", &s.run_id, &name);
            if self.tracker.storage().get_opt(&file).await?.is_none() {
                return Ok(Err(Rejection::new(
                    Reason::DuplicateRun,
                    format!("run {} already exists", s.run_id),
                )));
            }
        }
        self.open.insert(
            s.run_id,
            Open {
                run,
                last_seen_ms: now_ms(),
            },
        );
        Ok(Ok(()))
    }

    /// Writes what every run logged since the last call (see the module
    /// docs for the names), ends runs idle past the timeout, and returns the
    /// state the checkpoint keeps.
    pub async fn flush(&mut self) -> Result<TrackingSnapshot> {
        for o in self.open.values_mut() {
            o.run.flush().await?;
        }
        for run in &mut self.ended {
            run.flush().await?;
        }
        self.ended.clear();
        self.points = 0;
        let now = now_ms();
        let timeout = self.limits.idle_timeout.as_millis() as i64;
        let idle: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| now - o.last_seen_ms >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            let mut o = self.open.remove(&id).expect("listed above");
            tracing::warn!(run_id = %id, "tracking run idle past tracking.idle_timeout; ending it KILLED");
            o.run.label_next(&format!("idle-{now}"))?;
            o.run.finish(RunStatus::Killed, now * 1000)?;
            o.run.flush().await?;
        }
        Ok(TrackingSnapshot {
            runs: self
                .open
                .values()
                .map(|o| {
                    let (row, params) = o.run.state();
                    OpenRunState {
                        row: row.clone(),
                        params: params.clone(),
                        last_seen_ms: o.last_seen_ms,
                    }
                })
                .collect(),
        })
    }
}

struct StartRequest {
    run_id: String,
    experiment: String,
    run_name: Option<String>,
    tags: BTreeMap<String, Value>,
    time_us: i64,
    env: Box<StreamEnvironment>,
}
