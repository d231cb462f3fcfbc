//! Operational metrics of a run, in Prometheus text format on `/metrics`
//! (`mlwatch run --metrics-listen`, `mlwatch serve`'s process, `mlwatch
//! demo --serve`).
//!
//! Recorded with the `metrics` facade (a no-op until [`install`] sets the
//! process's recorder, so library users and tests pay nothing) and rendered
//! by `metrics-exporter-prometheus` into our own axum route. Names follow
//! Prometheus conventions: `_total` counters, base units (`_seconds`),
//! labels for dimensions. Rates are the scraper's job:
//! `rate(mlwatch_events_total[1m])` is events per second. Counters count
//! what this process did (from 0 at its start, as Prometheus expects of a
//! restarted target), not the run's totals that the checkpoint carries.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mlwatch_records_total` | counter: records consumed (dead letters included) | |
//! | `mlwatch_events_total` | counter: prediction and feature events applied to windows | |
//! | `mlwatch_outcomes_total` | counter: outcome (label) events | |
//! | `mlwatch_dead_letters_total` | counter | `reason` |
//! | `mlwatch_late_events_total` | counter: events behind the watermark by more than the allowed lateness | |
//! | `mlwatch_windows_closed_total` | counter | |
//! | `mlwatch_webhook_failures_total` | counter: alert deliveries failed after their retries | |
//! | `mlwatch_open_windows` | gauge | |
//! | `mlwatch_consumer_lag` | gauge: records between the consumer's position and the partition's end | `topic`, `partition` |
//! | `mlwatch_evaluator_seconds` | histogram: time per window | `part` (evaluator or sink) |
//! | `mlwatch_checkpoint_age_seconds` | gauge: since the last checkpoint | |
//! | `mlwatch_last_checkpoint_timestamp_seconds` | gauge: Unix time of the last checkpoint | |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};
use crate::pipeline::Counters;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Unix time (ms) of the last checkpoint; 0 before the first.
static LAST_CHECKPOINT_MS: AtomicU64 = AtomicU64::new(0);

/// Bucket bounds of the time histograms, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the process's Prometheus recorder (once; later calls return the
/// same handle).
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| Error::Config(format!("metrics buckets: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::Task {
        task: "metrics recorder",
        reason: e.to_string(),
    })?;
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// The recorder's handle, if [`install`] ran.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mlwatch_records_total",
        "Records consumed, dead letters included."
    );
    describe_counter!(
        "mlwatch_events_total",
        "Prediction and feature events applied to windows."
    );
    describe_counter!("mlwatch_outcomes_total", "Outcome (label) events consumed.");
    describe_counter!("mlwatch_dead_letters_total", "Records refused, by reason.");
    describe_counter!(
        "mlwatch_late_events_total",
        "Events too far behind the watermark."
    );
    describe_counter!(
        "mlwatch_windows_closed_total",
        "Windows closed and written."
    );
    describe_counter!(
        "mlwatch_webhook_failures_total",
        "Alert webhook deliveries that failed."
    );
    describe_gauge!("mlwatch_open_windows", "Windows open now.");
    describe_gauge!(
        "mlwatch_consumer_lag",
        "Records between the consumer's position and the partition's high watermark."
    );
    describe_histogram!(
        "mlwatch_evaluator_seconds",
        Unit::Seconds,
        "Time per window of each evaluator and sink."
    );
    describe_gauge!(
        "mlwatch_checkpoint_age_seconds",
        Unit::Seconds,
        "Seconds since the last checkpoint."
    );
    describe_gauge!(
        "mlwatch_last_checkpoint_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last checkpoint."
    );
}

/// Publishes a run's counters as counted by this process: `c` less the
/// counters it restored from the checkpoint (`base`). Counting from 0 in
/// each process is what Prometheus expects of a restarted target; the
/// checkpoint's totals would start below the last value scraped before a
/// crash (records after the checkpoint were counted, then replayed) and
/// read as a reset anyway.
pub(crate) fn publish(c: &Counters, base: &Counters, open_windows: usize) {
    let dead = |r: &str, m: &Counters| m.dead_letters.get(r).copied().unwrap_or(0);
    counter!("mlwatch_records_total").absolute(c.records.saturating_sub(base.records));
    counter!("mlwatch_events_total").absolute(c.events.saturating_sub(base.events));
    counter!("mlwatch_outcomes_total").absolute(c.outcomes.saturating_sub(base.outcomes));
    for reason in c.dead_letters.keys() {
        counter!("mlwatch_dead_letters_total", "reason" => reason.clone())
            .absolute(dead(reason, c).saturating_sub(dead(reason, base)));
    }
    counter!("mlwatch_late_events_total")
        .absolute(dead("late", c).saturating_sub(dead("late", base)));
    counter!("mlwatch_windows_closed_total")
        .absolute(c.windows_closed.saturating_sub(base.windows_closed));
    counter!("mlwatch_webhook_failures_total")
        .absolute(c.webhook_failures.saturating_sub(base.webhook_failures));
    gauge!("mlwatch_open_windows").set(open_windows as f64);
}

/// Sets the lag of one partition.
pub(crate) fn lag(topic: &str, partition: i32, records: i64) {
    gauge!("mlwatch_consumer_lag", "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(records as f64);
}

/// Records one evaluator's or sink's time on a window.
pub(crate) fn part_time(part: &'static str, seconds: f64) {
    histogram!("mlwatch_evaluator_seconds", "part" => part).record(seconds);
}

/// Notes that a checkpoint was just written.
pub(crate) fn checkpointed() {
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    LAST_CHECKPOINT_MS.store(now, Ordering::Relaxed);
    gauge!("mlwatch_last_checkpoint_timestamp_seconds").set(now as f64 / 1e3);
}

/// The metrics in Prometheus text format, with the checkpoint age as of now.
pub fn render(handle: &PrometheusHandle) -> String {
    let last = LAST_CHECKPOINT_MS.load(Ordering::Relaxed);
    if last > 0 {
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        gauge!("mlwatch_checkpoint_age_seconds").set(now.saturating_sub(last) as f64 / 1e3);
    }
    handle.render()
}
