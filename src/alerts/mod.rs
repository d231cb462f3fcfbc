//! Alerts: the sink that watches every closed window's results and tells a
//! person when something changed.
//!
//! An alert is raised when a column's drift verdict turns to drift
//! (`drift`) or back (`recovered`), when a model version's dataset verdict
//! turns (`dataset_drift`, `dataset_recovered`), when a column breaches
//! a data-quality threshold (`quality`), and when an experiment's decision
//! changes (`experiment`: ship, stop on a guardrail, sample ratio mismatch;
//! written to a file named after the window decided and the experiment).
//! Repeats for the same (model, version, column) within `alerts.cooldown`
//! windows of the last alert are suppressed (drift and quality alerts are
//! counted apart; experiment alerts are not).
//!
//! Each alert has an `alert_id` derived from (model, version, kind, column,
//! window start), so a replay after a crash produces the same ids. It is
//! written to the `alerts` table (one file per model and window, replaced on
//! replay), produced to the Kafka topic `kafka.alerts_topic` as JSON keyed
//! by model (at-least-once: a replay produces it again, so consumers dedupe
//! by `alert_id`), logged, and POSTed to `alerts.webhook_url` when set
//! ([`webhook`]: retried with backoff on a task of its own; a failure is
//! logged and counted and never blocks the stream).
//!
//! The verdicts and cool-down clocks are the sink's checkpoint part, so a
//! restart resumes them where the offsets resume.

pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::Float64Type;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::evaluate::ResultFiles;
use crate::pipeline::evaluate::{Output, Sink};
#[cfg(test)]
use crate::storage::Storage;
use crate::storage::tables::{self, ALERTS_FILE_SCHEMA, col};
use crate::window::ClosedWindow;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A column's verdict turned to drift.
    Drift,
    /// A column's verdict turned back to no drift.
    Recovered,
    /// The dataset verdict turned to drift.
    DatasetDrift,
    /// The dataset verdict turned back.
    DatasetRecovered,
    /// A column breached a data-quality threshold.
    Quality,
    /// An error-stream detector fired (the `column` names the detector).
    ConceptDrift,
    /// A performance metric is worse than the registry version's by more
    /// than its tolerance (the `column` names the metric).
    Degraded,
    /// An experiment's decision changed (the `column` names the experiment;
    /// SRM and guardrail breaches are decisions).
    Experiment,
}

impl AlertKind {
    /// The name in records and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drift => "drift",
            Self::Recovered => "recovered",
            Self::DatasetDrift => "dataset_drift",
            Self::DatasetRecovered => "dataset_recovered",
            Self::Quality => "quality",
            Self::ConceptDrift => "concept_drift",
            Self::Degraded => "degraded",
            Self::Experiment => "experiment",
        }
    }
}

/// One alert, as produced to Kafka and POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: hex of sha256(model, version, kind, column, window start), 16 bytes.
    pub alert_id: String,
    /// Model.
    pub model: String,
    /// Model version.
    pub version: String,
    /// What happened.
    pub kind: AlertKind,
    /// The column (a feature or `prediction`); `None` for dataset alerts.
    pub column: Option<String>,
    /// Window start, RFC 3339 UTC.
    pub window_start: String,
    /// Window end, RFC 3339 UTC.
    pub window_end: String,
    /// One line for a person.
    pub message: String,
    /// The window and file name suffix of the file that holds it, when not
    /// the hand-over's (an experiment decides per window, whichever
    /// hand-over completes it).
    #[serde(skip)]
    pub file_window: Option<(i64, i64, String)>,
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The id of an alert: the same inputs always give the same id.
pub fn alert_id(
    model: &str,
    version: &str,
    kind: AlertKind,
    column: Option<&str>,
    window_start_ms: i64,
) -> String {
    let mut h = Sha256::new();
    for part in [
        model,
        version,
        kind.as_str(),
        column.unwrap_or(""),
        &window_start_ms.to_string(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verdicts and cool-down clock of one (model, version, subject).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Track {
    /// The verdict last announced by an alert (drift / breach).
    announced: bool,
    /// Start of the window of the last alert sent for this subject.
    last_alert: Option<i64>,
}

/// The sink's state between windows (its checkpoint part).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct AlertState {
    /// By `model/version/subject` (`drift:<column>`, `dataset`, `quality:<column>`).
    tracks: BTreeMap<String, Track>,
}

/// The alert sink.
pub(crate) struct AlertSink {
    files: ResultFiles,
    producer: Option<(FutureProducer, String)>,
    webhook: Option<webhook::Webhook>,
    cooldown_ms: i64,
    state: AlertState,
}

impl AlertSink {
    /// A sink for `config` (Kafka producer to `kafka.alerts_topic`, webhook
    /// when `alerts.webhook_url` is set).
    pub fn new(config: &Config, files: ResultFiles) -> Result<Self> {
        let k = &config.kafka;
        let producer = if k.alerts_topic.is_empty() {
            None
        } else {
            let mut cc = ClientConfig::new();
            cc.set("bootstrap.servers", &k.brokers)
                .set("message.timeout.ms", "30000");
            for (key, v) in &k.options {
                cc.set(key, v);
            }
            Some((cc.create::<FutureProducer>()?, k.alerts_topic.clone()))
        };
        let a = &config.alerts;
        let webhook = (!a.webhook_url.is_empty()).then(|| webhook::Webhook::spawn(a));
        Ok(Self {
            files,
            producer,
            webhook,
            cooldown_ms: a.cooldown as i64 * config.window.size.as_millis() as i64,
            state: AlertState::default(),
        })
    }

    /// Failed webhook deliveries so far (after their retries).
    pub fn webhook_failures(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.webhook.as_ref().map(|w| w.failures())
    }

    /// What a stopping process waits on for the queued webhook alerts.
    pub(crate) fn webhook_drain(&self) -> Option<webhook::Drain> {
        self.webhook.as_ref().map(|w| w.drain())
    }

    /// Applies one observation; returns whether to alert. A verdict
    /// (`level` false) alerts when it differs from the last one announced;
    /// a breach (`level` true) alerts while it lasts. Either waits out the
    /// cool-down after the subject's last alert, so a verdict that flips
    /// back and forth within it is announced once it has settled, and the
    /// announced verdicts always alternate.
    fn observe(&mut self, key: String, on: bool, window_start: i64, level: bool) -> bool {
        let cooldown = self.cooldown_ms;
        let t = self.state.tracks.entry(key).or_default();
        let fire = if level { on } else { on != t.announced };
        if !fire
            || t.last_alert
                .is_some_and(|last| window_start < last.saturating_add(cooldown))
        {
            return false;
        }
        t.announced = on;
        t.last_alert = Some(window_start);
        true
    }

    /// The alerts of one window.
    fn alerts_of(&mut self, window: &ClosedWindow, outputs: &[Output]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut push =
            |model: &str, version: &str, kind: AlertKind, column: Option<&str>, message: String| {
                alerts.push(Alert {
                    alert_id: alert_id(model, version, kind, column, window.start),
                    model: model.to_string(),
                    version: version.to_string(),
                    kind,
                    column: column.map(str::to_string),
                    window_start: rfc3339(window.start),
                    window_end: rfc3339(window.end),
                    message,
                    file_window: None,
                });
            };
        let mut ab_alerts = Vec::new();
        for o in outputs {
            let b = &o.batch;
            let m = o.model.as_str();
            match o.table {
                tables::DRIFT_RESULTS => {
                    let (Some(version), Some(feature), Some(drifted)) = (
                        strings(b, col::VERSION),
                        strings(b, col::FEATURE),
                        bools(b, col::DRIFTED),
                    ) else {
                        continue;
                    };
                    let method = strings(b, col::METHOD);
                    for i in 0..b.num_rows() {
                        let (v, f, on) = (version.value(i), feature.value(i), drifted.value(i));
                        if self.observe(format!("{m}/{v}/drift:{f}"), on, window.start, false) {
                            let how = method.as_ref().map_or("", |x| x.value(i));
                            let (kind, message) = if on {
                                (AlertKind::Drift, format!("{m} v{v}: `{f}` drifted ({how})"))
                            } else {
                                (
                                    AlertKind::Recovered,
                                    format!("{m} v{v}: `{f}` no longer drifts ({how})"),
                                )
                            };
                            push(m, v, kind, Some(f), message);
                        }
                    }
                }
                tables::DRIFT_SUMMARY => {
                    let (Some(version), Some(on)) =
                        (strings(b, col::VERSION), bools(b, col::DATASET_DRIFTED))
                    else {
                        continue;
                    };
                    for i in 0..b.num_rows() {
                        let (v, on) = (version.value(i), on.value(i));
                        if self.observe(format!("{m}/{v}/dataset"), on, window.start, false) {
                            let (kind, message) = if on {
                                (
                                    AlertKind::DatasetDrift,
                                    format!("{m} v{v}: the dataset drifted"),
                                )
                            } else {
                                (
                                    AlertKind::DatasetRecovered,
                                    format!("{m} v{v}: the dataset no longer drifts"),
                                )
                            };
                            push(m, v, kind, None, message);
                        }
                    }
                }
                tables::DATA_QUALITY => {
                    let (Some(version), Some(feature), Some(breaches)) = (
                        strings(b, col::VERSION),
                        strings(b, col::FEATURE),
                        strings(b, "breaches"),
                    ) else {
                        continue;
                    };
                    for i in 0..b.num_rows() {
                        let (v, f) = (version.value(i), feature.value(i));
                        let on = !breaches.is_null(i);
                        if self.observe(format!("{m}/{v}/quality:{f}"), on, window.start, true) {
                            let message =
                                format!("{m} v{v}: `{f}` quality breach: {}", breaches.value(i));
                            push(m, v, AlertKind::Quality, Some(f), message);
                        }
                    }
                }
                tables::CONCEPT_DRIFT => {
                    let (Some(version), Some(detector)) =
                        (strings(b, col::VERSION), strings(b, "detector"))
                    else {
                        continue;
                    };
                    let mut seen = std::collections::BTreeSet::new();
                    for i in 0..b.num_rows() {
                        let (v, d) = (version.value(i), detector.value(i));
                        // One alert per version and detector per window.
                        if !seen.insert((v, d)) {
                            continue;
                        }
                        if self.observe(format!("{m}/{v}/concept:{d}"), true, window.start, true) {
                            let message = format!(
                                "{m} v{v}: {d} detected a change in the error stream (concept drift)"
                            );
                            push(m, v, AlertKind::ConceptDrift, Some(d), message);
                        }
                    }
                }
                tables::PERFORMANCE => {
                    let (Some(version), Some(variant), Some(metric), Some(degraded)) = (
                        strings(b, col::VERSION),
                        strings(b, col::VARIANT),
                        strings(b, col::METRIC),
                        bools(b, "degraded"),
                    ) else {
                        continue;
                    };
                    let value = b
                        .column_by_name(col::VALUE)
                        .map(|c| c.as_primitive::<Float64Type>().clone());
                    let baseline = b
                        .column_by_name("baseline_value")
                        .map(|c| c.as_primitive::<Float64Type>().clone());
                    for i in 0..b.num_rows() {
                        let (v, var, mt) = (version.value(i), variant.value(i), metric.value(i));
                        let on = !degraded.is_null(i) && degraded.value(i);
                        let subject = if var.is_empty() {
                            mt.to_string()
                        } else {
                            format!("{mt}@{var}")
                        };
                        if self.observe(
                            format!("{m}/{v}/degraded:{subject}"),
                            on,
                            window.start,
                            true,
                        ) {
                            let num = |a: &Option<datafusion::arrow::array::Float64Array>| {
                                a.as_ref().map_or(f64::NAN, |a| a.value(i))
                            };
                            let message = format!(
                                "{m} v{v}: {subject} is {:.4}, worse than the registry's {:.4} beyond its tolerance",
                                num(&value),
                                num(&baseline)
                            );
                            push(m, v, AlertKind::Degraded, Some(&subject), message);
                        }
                    }
                }
                tables::AB_DECISIONS => {
                    let (Some(exp), Some(verdict), Some(reason), Some(changed)) = (
                        strings(b, "experiment"),
                        strings(b, "verdict"),
                        strings(b, "reason"),
                        bools(b, "changed"),
                    ) else {
                        continue;
                    };
                    let starts = b.column_by_name(col::WINDOW_START).map(|c| {
                        c.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                            .clone()
                    });
                    let ends = b.column_by_name(col::WINDOW_END).map(|c| {
                        c.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                            .clone()
                    });
                    let (Some(starts), Some(ends)) = (starts, ends) else {
                        continue;
                    };
                    for i in 0..b.num_rows() {
                        // `changed` is the evaluator's: any change of decision,
                        // variant or metric, but not the first "keep running".
                        if !changed.value(i) {
                            continue;
                        }
                        let (ws, we) = (starts.value(i), ends.value(i));
                        let e = exp.value(i);
                        ab_alerts.push(Alert {
                            alert_id: alert_id(m, "", AlertKind::Experiment, Some(e), ws),
                            model: m.to_string(),
                            version: String::new(),
                            kind: AlertKind::Experiment,
                            column: Some(e.to_string()),
                            window_start: rfc3339(ws),
                            window_end: rfc3339(we),
                            message: format!(
                                "experiment {e}: {} ({})",
                                verdict.value(i),
                                reason.value(i)
                            ),
                            file_window: Some((ws, we, format!("ab-{e}"))),
                        });
                    }
                }
                _ => {}
            }
        }
        alerts.extend(ab_alerts);
        alerts
    }
}

fn strings(b: &RecordBatch, name: &str) -> Option<StringArray> {
    b.column_by_name(name).map(|c| c.as_string::<i32>().clone())
}

fn bools(b: &RecordBatch, name: &str) -> Option<datafusion::arrow::array::BooleanArray> {
    b.column_by_name(name).map(|c| c.as_boolean().clone())
}

fn batch(
    file_window: Option<(i64, i64)>,
    window: &ClosedWindow,
    alerts: &[&Alert],
) -> Result<RecordBatch> {
    let n = alerts.len();
    let (start, end) = file_window.unwrap_or((window.start, window.end));
    let ts = |v: i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone("UTC"))
    };
    let s = |f: fn(&Alert) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(alerts.iter().map(|a| f(a))))
    };
    let cols: Vec<ArrayRef> = vec![
        ts(start),
        ts(end),
        s(|a| Some(&a.alert_id)),
        s(|a| Some(&a.version)),
        s(|a| Some(a.kind.as_str())),
        s(|a| a.column.as_deref()),
        s(|a| Some(&a.message)),
    ];
    Ok(RecordBatch::try_new(ALERTS_FILE_SCHEMA.clone(), cols)?)
}

#[async_trait]
impl Sink for AlertSink {
    fn name(&self) -> &'static str {
        "alerts"
    }

    async fn write(&mut self, window: &ClosedWindow, outputs: &[Output]) -> Result<()> {
        let alerts = self.alerts_of(window, outputs);
        if alerts.is_empty() {
            return Ok(());
        }
        let mut by_file: BTreeMap<(&str, Option<&(i64, i64, String)>), Vec<&Alert>> =
            BTreeMap::new();
        for a in &alerts {
            by_file
                .entry((&a.model, a.file_window.as_ref()))
                .or_default()
                .push(a);
        }
        for ((model, file_window), list) in &by_file {
            // The alerts of a window's final labels have a file of their own,
            // beside those of the window's drift and quality; so have an
            // experiment's, named after the window decided.
            let path = if let Some((ws, we, name)) = file_window {
                tables::window_file_named(tables::ALERTS, model, *ws, *we, name)
            } else if window.is_performance() {
                tables::window_file_named(
                    tables::ALERTS,
                    model,
                    window.start,
                    window.end,
                    "performance",
                )
            } else {
                tables::window_file(tables::ALERTS, model, window.start, window.end)
            };
            self.files
                .write(
                    &path,
                    batch(file_window.map(|(s, e, _)| (*s, *e)), window, list)?,
                )
                .await?;
        }
        let mut bodies = Vec::with_capacity(alerts.len());
        for a in &alerts {
            tracing::warn!(alert_id = %a.alert_id, kind = a.kind.as_str(), model = %a.model,
                version = %a.version, column = a.column.as_deref().unwrap_or(""),
                window_start = %a.window_start, "{}", a.message);
            let json = serde_json::to_string(a).map_err(|e| Error::Task {
                task: "alerts",
                reason: e.to_string(),
            })?;
            bodies.push(json);
        }
        // The window's alerts are produced together and awaited once: one
        // round trip to the broker per window, not per alert.
        if let Some((producer, topic)) = &self.producer {
            let sends = alerts.iter().zip(&bodies).map(|(a, json)| {
                producer.send(
                    FutureRecord::to(topic).key(&a.model).payload(json),
                    Duration::from_secs(30),
                )
            });
            futures::future::join_all(sends)
                .await
                .into_iter()
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|(e, _)| Error::Kafka(e))?;
        }
        if let Some(w) = &self.webhook {
            for (a, json) in alerts.iter().zip(bodies) {
                w.post(a.alert_id.clone(), json);
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<serde_json::Value>> {
        serde_json::to_value(&self.state)
            .map(Some)
            .map_err(|e| Error::Task {
                task: "alerts",
                reason: e.to_string(),
            })
    }

    fn restore(&mut self, part: serde_json::Value) -> Result<()> {
        self.state = serde_json::from_value(part).map_err(|e| Error::Task {
            task: "alerts",
            reason: format!("checkpoint part: {e}"),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(cooldown_windows: i64) -> AlertSink {
        AlertSink {
            files: ResultFiles::new(
                Storage::open("memory://", &Default::default()).expect("memory store"),
            ),
            producer: None,
            webhook: None,
            cooldown_ms: cooldown_windows * 60_000,
            state: AlertState::default(),
        }
    }

    #[test]
    fn a_change_suppressed_by_the_cool_down_is_announced_once_it_settles() {
        let mut s = sink(3);
        let mut fired = Vec::new();
        for (w, on) in [
            (0, true),
            (1, false),
            (2, false),
            (3, false),
            (4, false),
            (5, true),
        ] {
            if s.observe("m/1/drift:x".into(), on, w * 60_000, false) {
                fired.push((w, on));
            }
        }
        assert_eq!(fired, vec![(0, true), (3, false)]);
        // Window 5 is within 3 windows of the alert at 3: suppressed, then
        // announced at 6 if it still holds.
        assert!(s.observe("m/1/drift:x".into(), true, 6 * 60_000, false));
        // A lasting breach repeats after each cool-down.
        let breaches: Vec<i64> = (0..8)
            .filter(|w| s.observe("m/1/quality:x".into(), true, w * 60_000, true))
            .collect();
        assert_eq!(breaches, vec![0, 3, 6]);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = alert_id("m", "1", AlertKind::Drift, Some("x"), 60_000);
        assert_eq!(a, alert_id("m", "1", AlertKind::Drift, Some("x"), 60_000));
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            alert_id("m", "1", AlertKind::Recovered, Some("x"), 60_000)
        );
        assert_ne!(a, alert_id("m", "1", AlertKind::Drift, Some("x"), 120_000));
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            alert_id("ab", "c", AlertKind::Drift, None, 0),
            alert_id("a", "bc", AlertKind::Drift, None, 0)
        );
    }
}
