//! The streaming pipeline: Kafka records → Arrow → windows → evaluators →
//! sinks, with checkpoints that make a crash replay instead of lose or
//! duplicate.
//!
//! The parts, each owning its state:
//! * [`kafka`]: the consumer, positions per partition, commits;
//! * [`step`]: the source-agnostic step that applies decoded batches with
//!   their provenance to the windows (lateness, per-column summaries);
//! * [`evaluate`]: the evaluators (drift, ...) that turn a closed window into
//!   rows and the sinks (Parquet tables, ...) that take them, on a task of
//!   their own;
//! * [`dead_letters`]: refused records until the next checkpoint;
//! * [`checkpoint`]: the checkpoint format.
//!
//! **Ordering.** A poll batch is decoded per topic (one Arrow decode per
//! model), then its valid rows are applied to the windows in the original
//! record order, so lateness decisions depend only on the record sequence.
//!
//! **Durability protocol.** Closed windows are evaluated and written as soon
//! as they close (one file per table, model and window; the name comes from
//! the window). Every `checkpoint.interval`, or when dead letters pile up, or
//! on shutdown:
//! 1. the writer is flushed: every closed window is durable, and the
//!    evaluators and sinks hand over their state as of that point;
//! 2. buffered dead letters are written, one file per partition named by
//!    the first offset they cover, and archived events (`archive.enabled`),
//!    one file per table, model, date and partition named by the first
//!    offset the interval read from it;
//! 3. what tracking events logged since the last checkpoint is written
//!    (files named by offsets, see [`crate::tracking::stream`]);
//! 4. the checkpoint (next offset per partition, watermarks, open-window
//!    summaries, evaluator and sink parts, open tracking runs, counters) is
//!    written atomically to `_checkpoints/<group>.json`;
//! 5. the offsets are committed to Kafka.
//!
//! On start the checkpoint is restored and records below its offsets are
//! skipped. Everything after it is replayed; windows that close again are
//! recomputed from the same state and overwrite their files, and dead-letter,
//! archive and tracking files of the replayed interval are overwritten by
//! name.
//! Hence a killed and restarted run writes the same results as an
//! uninterrupted one.

pub(crate) mod checkpoint;
pub(crate) mod dead_letters;
pub(crate) mod evaluate;
mod kafka;
pub use kafka::CONSUMER_DEFAULTS;
pub(crate) mod step;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ab::evaluate::AbEvaluator;
use crate::archive::{Archive, Provenance};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{EventKind, ModelCatalog, Reason};
use crate::monitor::DriftEvaluator;
use crate::monitor::distribution::DistributionEvaluator;
use crate::monitor::performance::PerformanceEvaluator;
use crate::monitor::quality::QualityEvaluator;
use crate::monitor::reference::Profiles;
use crate::storage::Storage;
use crate::tracking::ExperimentTracker;
use crate::tracking::stream::{Record as TrackingRecord, TrackingSink};
use crate::window::ClosedWindow;
use checkpoint::Checkpoint;
use dead_letters::DeadLetters;
use evaluate::{Evaluator, ParquetSink, Sink, WindowWriter};
use kafka::KafkaPositions;
use step::{Input, Origin, Step};

/// Longest a stop waits for queued webhook alerts to be delivered (those
/// left are counted in `webhook_failures` and logged).
const WEBHOOK_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Counters of one run (also carried in the checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Records consumed (including dead letters).
    pub records: u64,
    /// Records skipped as already applied: the checkpoint covered them, or
    /// a rebalance delivered them again from the last commit.
    pub skipped_replayed: u64,
    /// Valid prediction and feature events applied to windows.
    pub events: u64,
    /// Valid outcome (label) events.
    pub outcomes: u64,
    /// Labels joined to their prediction.
    #[serde(default)]
    pub labels_joined: u64,
    /// Labels for an event that already had one (the first one counts).
    #[serde(default)]
    pub duplicate_labels: u64,
    /// Predictions and labels left out of the join by its sample
    /// (`outcomes.max_pending`).
    #[serde(default)]
    pub join_sampled_out: u64,
    /// Tracking events applied to runs.
    #[serde(default)]
    pub tracking_events: u64,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Feature names seen that the model does not declare.
    pub unknown_features: u64,
    /// Windows closed and written.
    pub windows_closed: u64,
    /// Rows written per result table.
    #[serde(default)]
    pub rows: BTreeMap<String, u64>,
    /// Drift result rows written.
    pub drift_rows: u64,
    /// Drift result rows marked drifted.
    pub drifted_rows: u64,
    /// Alert webhook deliveries that failed after their retries.
    #[serde(default)]
    pub webhook_failures: u64,
    /// Most windows open at once.
    #[serde(default)]
    pub peak_open_windows: u64,
    /// Times a partition was paused for running ahead of the watermark
    /// (`window.max_ahead`).
    #[serde(default)]
    pub partition_pauses: u64,
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Keep open windows in the checkpoint (Ctrl-C, SIGTERM): a restart resumes them.
    Interrupt,
    /// The input is finished: close and write every open window.
    EndOfInput,
}

/// Controls how [`run`] stops.
#[derive(Debug, Clone)]
pub struct RunControl {
    /// Becomes `Some` when the run should stop.
    pub stop: watch::Receiver<Option<StopMode>>,
    /// Stop with [`StopMode::EndOfInput`] after this long without records.
    pub idle_exit: Option<Duration>,
    /// Incremented by the number of records consumed (lets a producer in the
    /// same process pace itself, as the demo does).
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Summary returned when a run ends.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Counters at the end.
    pub counters: Counters,
    /// Seconds from the start to the final checkpoint.
    pub seconds: f64,
    /// Of those, seconds spent decoding and applying records (the rest is
    /// waiting for Kafka, checkpoints and shutdown).
    pub process_seconds: f64,
}

/// The pipeline's parts between poll batches.
struct Pipeline {
    config: Config,
    catalog: Arc<ModelCatalog>,
    storage: Storage,
    positions: KafkaPositions,
    step: Step,
    writer: WindowWriter,
    dead: DeadLetters,
    /// Consumed events until the next checkpoint (`archive.enabled`).
    archive: Option<Archive>,
    counters: Counters,
    /// The counters restored at start: the Prometheus counters count this
    /// process's share (from 0), so a restart reads as a reset.
    metrics_base: Counters,
    tracking: TrackingSink,
    /// Webhook deliveries that failed, counted by the alert sink's task.
    webhook_failures: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The webhook task, waited on at a stop (its queue is delivered).
    webhook_drain: Option<crate::alerts::webhook::Drain>,
    /// The number of the last checkpoint saved (or restored).
    sequence: u64,
}

impl Pipeline {
    /// Opens storage, builds the evaluators and restores the checkpoint if any.
    async fn new(config: Config) -> Result<Self> {
        let catalog = Arc::new(ModelCatalog::from_config(&config));
        if catalog.models.is_empty() {
            return Err(Error::Config(
                "no models are declared: add a [models.<name>] table (see config/mlwatch.toml)"
                    .into(),
            ));
        }
        let storage = Storage::open(&config.storage.url, &config.storage.options)?;
        let ckpt = Checkpoint::load(&storage, &config.kafka.group_id).await?;
        let mut step = Step::new(&config, catalog.clone());
        let sequence = ckpt.as_ref().map_or(0, |c| c.sequence);
        let (offsets, counters, tracking, parts) = match ckpt {
            Some(c) => {
                step.restore(c.windows, c.labels);
                tracing::info!(
                    group = %config.kafka.group_id,
                    partitions = c.offsets.len(),
                    open_windows = step.windows().open_windows(),
                    "restored checkpoint"
                );
                (c.offsets, c.counters, c.tracking, c.parts)
            }
            None => Default::default(),
        };
        let evaluators = evaluators(&config, &catalog, &storage, true).await?;
        let files = evaluate::ResultFiles::new(storage.clone());
        let alerts = crate::alerts::AlertSink::new(&config, files.clone())?;
        let webhook_failures = alerts.webhook_failures();
        let webhook_drain = alerts.webhook_drain();
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(ParquetSink::new(files)), Box::new(alerts)];
        let writer = WindowWriter::spawn(evaluators, sinks, &parts)?;
        let tracking = TrackingSink::new(
            ExperimentTracker::new(storage.clone()),
            config.tracking.clone(),
            tracking,
        );
        let archive = config.archive.enabled.then(Archive::default);
        Ok(Self {
            positions: KafkaPositions::new(&config, offsets),
            config,
            catalog,
            storage,
            step,
            writer,
            dead: DeadLetters::default(),
            archive,
            metrics_base: counters.clone(),
            counters,
            tracking,
            webhook_failures,
            webhook_drain,
            sequence,
        })
    }

    fn dead_letter(&mut self, msg: &OwnedMessage, reason: Reason, error: String) {
        *self
            .counters
            .dead_letters
            .entry(reason.as_str().to_string())
            .or_default() += 1;
        self.dead.push(
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.payload().unwrap_or_default(),
            reason,
            error,
        );
    }

    /// Applies one poll batch of records and hands windows that closed to
    /// the writer.
    async fn process(&mut self, msgs: &[OwnedMessage]) -> Result<()> {
        let fresh = self.positions.admit(msgs, &mut self.counters);
        // Route by topic, remembering each record's position in the batch.
        let mut kinds: Vec<Option<EventKind>> = Vec::with_capacity(fresh.len());
        let mut tracking_events = Vec::new();
        for m in fresh.iter() {
            let kind = self.positions.kind_of(m.topic());
            if kind.is_none() && m.topic() == self.config.kafka.tracking_topic {
                tracking_events.push(*m);
            }
            kinds.push(kind);
        }
        // Tracking events are independent of the windows: applied in order.
        if !tracking_events.is_empty() {
            let records: Vec<TrackingRecord<'_>> = tracking_events
                .iter()
                .map(|m| TrackingRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    payload: m.payload().unwrap_or(b""),
                })
                .collect();
            let applied = self.tracking.apply_batch(&records).await?;
            for (m, a) in tracking_events.into_iter().zip(applied) {
                match a {
                    Ok(()) => self.counters.tracking_events += 1,
                    Err(r) => self.dead_letter(m, r.reason, r.error),
                }
            }
        }
        // Decode each event kind; batch `seq`s become record positions.
        let payloads: Vec<&[u8]> = fresh.iter().map(|m| m.payload().unwrap_or(b"")).collect();
        let decoded = step::decode_records(&self.catalog, &payloads, &kinds);
        self.counters.unknown_features += decoded.unknown_features;
        for (pos, reason, error) in decoded.rejected {
            self.dead_letter(fresh[pos], reason, error);
        }
        let input = Input {
            batches: decoded.batches,
            origins: fresh
                .iter()
                .map(|m| Origin {
                    source: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                })
                .collect(),
            type_errors: decoded.type_errors,
        };
        let refused = self.step.apply(&input, &mut self.counters);
        if let Some(archive) = &mut self.archive {
            for (kind, d) in &input.batches {
                archive.add(*kind, &self.catalog, d, |pos| {
                    let m = fresh[pos];
                    (
                        m.payload().unwrap_or(b""),
                        Provenance {
                            topic: m.topic(),
                            partition: m.partition(),
                            offset: m.offset(),
                        },
                    )
                });
            }
        }
        drop(input);
        for r in refused {
            self.dead_letter(fresh[r.pos], r.reason, r.error);
        }
        let closed = self.step.take_closable();
        self.label_letters();
        self.write_windows(closed).await
    }

    /// Dead-letters the labels that waited in vain for their prediction.
    fn label_letters(&mut self) {
        for l in self.step.take_label_letters() {
            *self
                .counters
                .dead_letters
                .entry(l.reason.as_str().to_string())
                .or_default() += 1;
            self.dead.push(
                &l.source,
                l.partition,
                l.offset,
                l.payload.as_bytes(),
                l.reason,
                l.error,
            );
        }
    }

    async fn write_windows(&mut self, closed: Vec<ClosedWindow>) -> Result<()> {
        for w in closed {
            self.writer.submit(w).await?;
        }
        Ok(())
    }

    /// Tells the windows which assigned partitions still hold unread data
    /// but have not delivered (see [`KafkaPositions::pending`]).
    fn update_pending(&mut self, consumer: &StreamConsumer) {
        if let Some(p) = self.positions.pending(consumer, self.step.windows()) {
            let (labels, events): (Vec<_>, Vec<_>) = p
                .into_iter()
                .partition(|(t, _)| self.positions.kind_of(t) == Some(EventKind::Outcome));
            self.step.set_pending(events, labels);
        }
    }

    /// Pauses the partitions running ahead of the watermark and resumes
    /// the ones it caught up with (see [`KafkaPositions::align`]).
    fn align(&mut self, consumer: &StreamConsumer) {
        let max_ahead = self.config.window.max_ahead_ms();
        self.positions
            .align(consumer, self.step.windows(), max_ahead, &mut self.counters);
    }

    /// Whether enough dead letters or tracking metric points are buffered
    /// to force a checkpoint.
    fn buffers_full(&self) -> bool {
        self.dead.len() >= self.config.checkpoint.max_dead_letters
            || self.tracking.needs_flush()
            || self
                .archive
                .as_ref()
                .is_some_and(|a| a.len() >= self.config.archive.max_buffered)
    }

    /// Closes every open window (end of input) and writes them.
    async fn flush_all(&mut self) -> Result<()> {
        let closed = self.step.take_all();
        self.label_letters();
        self.write_windows(closed).await
    }

    /// Makes results, dead letters, state and offsets durable, then commits
    /// to Kafka.
    async fn checkpoint(&mut self, consumer: Option<&StreamConsumer>) -> Result<()> {
        // Results first: the offsets below must not run ahead of them.
        let t0 = Instant::now();
        let flushed = self.writer.flush().await?;
        let flush_ms = t0.elapsed().as_secs_f64() * 1e3;
        let c = &mut self.counters;
        c.windows_closed += flushed.stats.windows;
        for (table, n) in &flushed.stats.rows {
            *c.rows.entry(table.to_string()).or_default() += n;
        }
        c.drift_rows += flushed
            .stats
            .rows
            .get(crate::storage::tables::DRIFT_RESULTS)
            .copied()
            .unwrap_or(0);
        c.drifted_rows += flushed.stats.drifted;
        if let Some(f) = &self.webhook_failures {
            c.webhook_failures += f.swap(0, std::sync::atomic::Ordering::Relaxed);
        }
        let sequence = self.sequence + 1;
        self.dead
            .write_interval(&self.storage, &self.config.kafka.group_id, sequence)
            .await?;
        if let Some(a) = &mut self.archive {
            a.write(&self.storage).await?;
        }
        let tracking = self.tracking.flush().await?;
        let t1 = Instant::now();
        let (windows, labels) = self.step.snapshot();
        let bytes = Checkpoint::new(
            self.positions.offsets(),
            windows,
            labels,
            tracking,
            self.counters.clone(),
            flushed.parts,
            sequence,
        )
        .save(&self.storage, &self.config.kafka.group_id)
        .await?;
        self.sequence = sequence;
        let save_ms = t1.elapsed().as_secs_f64() * 1e3;
        if let Some(c) = consumer {
            self.positions.commit(c);
            kafka::publish_lag(c);
        }
        crate::telemetry::checkpointed();
        crate::telemetry::publish(
            &self.counters,
            &self.metrics_base,
            self.step.windows().open_windows(),
        );
        let w = self.step.windows();
        tracing::debug!(
            open_windows = w.open_windows(),
            watermark = w.watermark(),
            slowest = ?w.slowest(),
            flush_ms,
            save_ms,
            bytes,
            "checkpoint written"
        );
        Ok(())
    }
}

/// The evaluators, in the order they see each closed window (the A/B one
/// last, and only with `ab`): the stream's, and a backfill's.
pub(crate) async fn evaluators(
    config: &Config,
    catalog: &Arc<ModelCatalog>,
    storage: &Storage,
    ab: bool,
) -> Result<Vec<Box<dyn Evaluator>>> {
    let profiles = Arc::new(Profiles::load_config(config, catalog).await?.with_registry(
        storage.clone(),
        catalog.clone(),
        config,
    ));
    let mut evaluators: Vec<Box<dyn Evaluator>> = vec![
        Box::new(DriftEvaluator::new(
            config,
            catalog.clone(),
            profiles.clone(),
        )),
        Box::new(QualityEvaluator::new(
            config,
            catalog.clone(),
            profiles.clone(),
        )),
        Box::new(DistributionEvaluator::new(catalog.clone(), profiles)),
        Box::new(PerformanceEvaluator::new(
            config,
            catalog.clone(),
            Some(storage.clone()),
        )),
    ];
    if ab {
        evaluators.push(Box::new(AbEvaluator::new(config, catalog.clone())));
    }
    Ok(evaluators)
}

/// Runs the pipeline until `control` says stop. This is what `mlwatch run`
/// and `mlwatch demo` call.
pub async fn run(config: Config, mut control: RunControl) -> Result<RunSummary> {
    let started = Instant::now();
    let max_batch = config.kafka.max_batch_records;
    let poll_timeout = config.kafka.poll_timeout;
    let interval = config.checkpoint.interval;
    let mut pipeline = Pipeline::new(config.clone()).await?;
    let consumer = kafka::consumer(&config, &pipeline.positions.offsets())?;
    tracing::info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, "consuming");
    let mut last_ckpt = Instant::now();
    // Before the first record the idle clock also allows for a group join,
    // which can take up to about two session timeouts.
    let join_allowance = config.kafka.session_timeout * 2 + Duration::from_secs(5);
    let mut last_record: Option<Instant> = None;
    let mut last_pending_check: Option<Instant> = None;
    let mut last_lag: Option<Instant> = None;
    // Alignment may pause partitions from then on (see the stall breaker).
    let mut pauses_from = Instant::now();
    let mut process_time = Duration::ZERO;
    let mode = loop {
        if let Some(mode) = *control.stop.borrow() {
            break mode;
        }
        let mut batch: Vec<OwnedMessage> = Vec::new();
        // One timer per batch, not per record: the select below polls the
        // consumer, the batch deadline and the stop signal, in that order.
        // Once the batch has records, it takes only what librdkafka already
        // holds: waiting to fill it would leave the records in hand idle
        // while the next fetch is under way.
        let deadline = tokio::time::sleep(poll_timeout);
        tokio::pin!(deadline);
        while batch.len() < max_batch {
            let r = if batch.is_empty() {
                tokio::select! {
                    biased;
                    r = consumer.recv() => r,
                    _ = &mut deadline => break,
                    _ = control.stop.changed() => break,
                }
            } else {
                match consumer.recv().now_or_never() {
                    Some(r) => r,
                    None => break,
                }
            };
            match r {
                Ok(m) => batch.push(m.detach()),
                Err(e) => {
                    // A subscribed topic that does not exist (yet) is
                    // reported on every metadata refresh; it is not a
                    // reason to slow down the topics that do exist.
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                        tracing::debug!(error = %e, "subscribed topic not available");
                        continue;
                    }
                    tracing::warn!(error = %e, "kafka error; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
        // Which partitions are pending: before the first batch, then about
        // once a second, also while nothing arrives (a pending partition of
        // only bad records must not keep the others paused).
        if (!batch.is_empty() || last_record.is_some())
            && last_pending_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            pipeline.update_pending(&consumer);
            last_pending_check = Some(Instant::now());
        }
        // Lag once a second, whatever arrives (it falls to 0 once drained).
        if last_lag.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            kafka::publish_lag(&consumer);
            last_lag = Some(Instant::now());
        }
        if batch.is_empty() {
            // The stall breaker: nothing arrived while partitions were
            // paused, so resume them all and do not pause again for a
            // second; they may still hold records, so the run is not idle.
            if pipeline.positions.paused() > 0 {
                pipeline.positions.resume_all(&consumer);
                pauses_from = Instant::now() + Duration::from_secs(1);
                last_record = Some(Instant::now());
            }
            let idle = match last_record {
                Some(t) => control.idle_exit.is_some_and(|d| t.elapsed() >= d),
                None => control
                    .idle_exit
                    .is_some_and(|d| started.elapsed() >= d.max(join_allowance)),
            };
            if idle {
                break StopMode::EndOfInput;
            }
        } else {
            last_record = Some(Instant::now());
            let t0 = Instant::now();
            pipeline.process(&batch).await?;
            process_time += t0.elapsed();
            crate::telemetry::publish(
                &pipeline.counters,
                &pipeline.metrics_base,
                pipeline.step.windows().open_windows(),
            );
            if let Some(p) = &control.progress {
                p.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if last_record.is_some() && Instant::now() >= pauses_from {
            pipeline.align(&consumer);
        }
        if last_ckpt.elapsed() >= interval || pipeline.buffers_full() {
            pipeline.checkpoint(Some(&consumer)).await?;
            last_ckpt = Instant::now();
        }
    };
    if mode == StopMode::EndOfInput {
        pipeline.flush_all().await?;
    }
    pipeline.checkpoint(Some(&consumer)).await?;
    let mut summary = RunSummary {
        counters: pipeline.counters.clone(),
        seconds: started.elapsed().as_secs_f64(),
        process_seconds: process_time.as_secs_f64(),
    };
    let (drain, failures) = (
        pipeline.webhook_drain.take(),
        pipeline.webhook_failures.clone(),
    );
    pipeline.writer.close().await?;
    // The alert sink is gone: the webhook task delivers what is queued
    // (the checkpoint counts those alerts as announced) and ends.
    if let Some(d) = drain {
        d.wait(WEBHOOK_DRAIN).await;
    }
    if let Some(f) = failures {
        summary.counters.webhook_failures += f.swap(0, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::info!(?mode, events = summary.counters.events, "stopped");
    Ok(summary)
}
