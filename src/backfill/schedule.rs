//! Backfills on a cron schedule (`[[schedules]]`), run by `mlwatch run`
//! beside the stream or by `mlwatch schedule` alone.
//!
//! Each schedule is a loop of its own, so one schedule never runs two
//! backfills at once. Its state, `_schedules/<name>.json`, says which
//! scheduled time was last done and which attempt is running:
//! * a scheduled time is *due* when it is the latest cron time at or before
//!   now and after both the last one done and the schedule's first start
//!   (a new schedule does not run for times before it existed);
//! * before a run the state records it as running (and its `jobs` row says
//!   `running`); after it, as done;
//! * a process that finds a run recorded as running (its predecessor died)
//!   marks that `jobs` row `interrupted`; the due time, which is that one
//!   or a later one if more came, then runs once: several missed times make
//!   one run, of the latest (the backfill arguments are relative to it).
//!
//! Relative backfill arguments (`from = "-1d"`) are taken from the
//! scheduled time, not the time the run started, so a late run covers the
//! same windows as a punctual one.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::jobs::{Job, Outcome};
use super::{BackfillArgs, Progress};
use crate::config::{Config, ScheduleConfig};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Parses a cron expression (five fields, or six with seconds first).
pub fn parse_cron(expr: &str) -> Result<Cron> {
    Cron::from_str(expr).map_err(|e| Error::Config(format!("cron `{expr}`: {e}")))
}

/// A schedule's state between processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// When the schedule was first seen (epoch ms).
    since: i64,
    /// The last scheduled time done.
    done: Option<i64>,
    /// The run under way: (scheduled time, attempt).
    running: Option<(i64, i32)>,
}

fn state_path(name: &str) -> String {
    format!("_schedules/{name}.json")
}

async fn load(storage: &Storage, name: &str) -> Result<Option<State>> {
    match storage.get_opt(&state_path(name)).await? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Task {
                task: "schedule",
                reason: format!("{}: {e}", state_path(name)),
            }),
        None => Ok(None),
    }
}

async fn save(storage: &Storage, name: &str, s: &State) -> Result<()> {
    let bytes = serde_json::to_vec(s).map_err(|e| Error::Task {
        task: "schedule",
        reason: e.to_string(),
    })?;
    storage.put(&state_path(name), bytes.into()).await
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The latest cron time at or before `now`.
fn latest(cron: &Cron, now: i64) -> Option<i64> {
    let t = DateTime::<Utc>::from_timestamp_millis(now)?;
    cron.find_previous_occurrence(&t, true)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// The first cron time after `now`.
fn next(cron: &Cron, now: i64) -> Option<i64> {
    let t = DateTime::<Utc>::from_timestamp_millis(now)?;
    cron.find_next_occurrence(&t, false)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// What one pass of a schedule did.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    /// The schedule.
    pub schedule: String,
    /// The jobs it recorded (an interrupted predecessor, its own run).
    pub jobs: Vec<Job>,
}

/// Runs `schedule` once if a time is due (after marking an interrupted run);
/// returns the jobs written.
pub async fn run_due(config: &Config, schedule: &ScheduleConfig) -> Result<Pass> {
    let storage = Storage::open(&config.storage.url, &config.storage.options)?;
    let cron = parse_cron(&schedule.cron)?;
    let name = &schedule.name;
    let mut pass = Pass {
        schedule: name.clone(),
        jobs: Vec::new(),
    };
    let now = now_ms();
    let mut state = match load(&storage, name).await? {
        Some(s) => s,
        None => {
            let s = State {
                since: now,
                ..Default::default()
            };
            save(&storage, name, &s).await?;
            s
        }
    };
    let mut interrupted = None;
    if let Some((at, attempt)) = state.running.take() {
        let recorded = recorded(&storage, name, at, attempt).await?;
        if recorded
            .as_ref()
            .is_some_and(|(_, o)| o != Outcome::Running.as_str())
        {
            // It ended, but its process died before the state said so.
            state.done = Some(state.done.map_or(at, |d| d.max(at)));
        } else {
            let job = Job {
                schedule: name.clone(),
                scheduled_ms: at,
                attempt,
                started_ms: at,
                finished_ms: None,
                outcome: Outcome::Interrupted,
                error: Some("the process running it stopped before it ended".into()),
                summary: None,
            };
            // Keep the start the running row recorded.
            let job = Job {
                started_ms: recorded.map_or(at, |(s, _)| s),
                ..job
            };
            job.save(&storage).await?;
            tracing::warn!(schedule = %name, scheduled = at, attempt, "marked an interrupted run");
            interrupted = Some((at, attempt));
            pass.jobs.push(job);
        }
    }
    // The state is saved once: without a run, or with the next one (so an
    // interrupted attempt's number is never reused).
    let due =
        latest(&cron, now).filter(|due| *due >= state.since && state.done.is_none_or(|d| *due > d));
    let Some(due) = due else {
        save(&storage, name, &state).await?;
        return Ok(pass);
    };
    let attempt = match interrupted {
        Some((at, a)) if at == due => a + 1,
        _ => 1,
    };
    state.running = Some((due, attempt));
    save(&storage, name, &state).await?;
    let mut job = Job {
        schedule: name.clone(),
        scheduled_ms: due,
        attempt,
        started_ms: now_ms(),
        finished_ms: None,
        outcome: Outcome::Running,
        error: None,
        summary: None,
    };
    job.save(&storage).await?;
    tracing::info!(schedule = %name, scheduled = due, attempt, "scheduled backfill started");
    let args = BackfillArgs {
        from: schedule.from.clone(),
        to: schedule.to.clone(),
        models: schedule.models.clone(),
        version: schedule.version.clone(),
        input: schedule.input.clone(),
        now_ms: due,
    };
    let result = super::run(config, &args, Progress::Quiet).await;
    job.finished_ms = Some(now_ms());
    match result {
        Ok(s) => {
            job.outcome = Outcome::Succeeded;
            job.summary = Some(s);
        }
        Err(e) => {
            job.outcome = Outcome::Failed;
            job.error = Some(e.to_string());
        }
    }
    job.save(&storage).await?;
    tracing::info!(schedule = %name, scheduled = due, outcome = job.outcome.as_str(), "scheduled backfill ended");
    // A failed run is done too: it is recorded, and the next time runs.
    state.running = None;
    state.done = Some(due);
    save(&storage, name, &state).await?;
    pass.jobs.push(job);
    Ok(pass)
}

/// The `started` and `outcome` an attempt's `jobs` row recorded, if it
/// has one.
async fn recorded(
    storage: &Storage,
    schedule: &str,
    at: i64,
    attempt: i32,
) -> Result<Option<(i64, String)>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let probe = Job {
        schedule: schedule.into(),
        scheduled_ms: at,
        attempt,
        started_ms: at,
        finished_ms: None,
        outcome: Outcome::Running,
        error: None,
        summary: None,
    };
    let Some(bytes) = storage.get_opt(&probe.path()).await? else {
        return Ok(None);
    };
    let batches = crate::storage::decode_parquet(bytes)?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        let started = b
            .column_by_name("started")?
            .as_primitive_opt::<TimestampMillisecondType>()?
            .value(0);
        let outcome = b
            .column_by_name("outcome")?
            .as_string_opt::<i32>()?
            .value(0);
        Some((started, outcome.to_string()))
    }))
}

/// Runs every schedule until `stop` turns true: each in its own loop,
/// waking at its next cron time.
pub async fn run_all(config: Config, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for s in config.schedules.clone() {
        let config = config.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let cron = parse_cron(&s.cron)?;
            loop {
                // A stop drops a run under way: its state stays `running`,
                // and the next start marks it interrupted and runs it again.
                let ran = tokio::select! {
                    r = run_due(&config, &s) => match r {
                        Ok(pass) => pass.jobs.iter().any(|j| j.outcome != Outcome::Interrupted),
                        Err(e) => {
                            tracing::error!(schedule = %s.name, error = %e, "schedule pass failed");
                            false
                        }
                    },
                    _ = stop.changed() => return Ok::<(), Error>(()),
                };
                // A time that passed during a long run is due now.
                if ran {
                    continue;
                }
                let wait = next(&cron, now_ms())
                    .map(|t| (t - now_ms()).max(0) as u64 + 5)
                    .map_or(Duration::from_secs(3600), Duration::from_millis);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = stop.changed() => {},
                }
                if *stop.borrow() {
                    return Ok::<(), Error>(());
                }
            }
        });
    }
    if tasks.is_empty() {
        let _ = stop.changed().await;
        return Ok(());
    }
    // One schedule failing (or panicking) does not stop the others.
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "a schedule stopped"),
            Err(e) => tracing::error!(error = %e, "a schedule's task failed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_times() -> Result<()> {
        let c = parse_cron("0 30 2 * * *")?;
        let t = 1_764_469_800_000; // 2025-11-30T02:30:00Z
        assert_eq!(latest(&c, t), Some(t));
        assert_eq!(latest(&c, t + 1), Some(t));
        assert_eq!(latest(&c, t - 1), Some(t - 86_400_000));
        assert_eq!(next(&c, t), Some(t + 86_400_000));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("every day").is_err());
        Ok(())
    }
}
