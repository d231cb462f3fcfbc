//! The streaming pipeline: Kafka records → Arrow → windows → drift → Parquet,
//! with checkpoints that make a crash replay instead of lose or duplicate.
//!
//! **Ordering.** A poll batch is decoded per topic (one Arrow decode per
//! model), then its valid rows are applied to the windows in the original
//! record order, so lateness decisions depend only on the record sequence.
//!
//! **Durability protocol.** Closed windows are written as soon as they close
//! (one file per model and window; the name comes from the window). Every
//! `checkpoint.interval`, or when dead letters pile up, or on shutdown:
//! 1. buffered dead letters are written, one file per partition named by
//!    the first offset they cover;
//! 2. what tracking events logged since the last checkpoint is written
//!    (files named by offsets, see [`crate::tracking::stream`]);
//! 3. the checkpoint (next offset per partition, watermarks, open-window
//!    samples, open tracking runs, counters) is written atomically to
//!    `_checkpoints/<group>.json`;
//! 4. the offsets are committed to Kafka.
//!
//! On start the checkpoint is restored and records below its offsets are
//! skipped (Kafka's committed offset can lag it if the process died between
//! 3 and 4). Everything after it is replayed; windows that close again are
//! recomputed from the same state and overwrite their files, and dead-letter
//! and tracking files of the replayed interval are overwritten by name. Hence a killed
//! and restarted run writes the same results as an uninterrupted one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::datatypes::TimestampMillisecondType;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Config, OffsetReset};
use crate::error::{Error, Result};
use crate::event::{self, EventKind, ModelCatalog, Reason, field};
use crate::monitor::DriftMonitor;
use crate::monitor::writer::WindowWriter;
use crate::storage::Storage;
use crate::storage::tables::{self, DEAD_LETTER_FILE_SCHEMA};
use crate::tracking::ExperimentTracker;
use crate::tracking::stream::{Record as TrackingRecord, TrackingSink, TrackingSnapshot};
use crate::window::{ClosedWindow, Windows, WindowsSnapshot};

/// Event kind of each configured topic, in `Pipeline::topics` order.
const KINDS: [EventKind; 3] = [
    EventKind::Prediction,
    EventKind::Feature,
    EventKind::Outcome,
];

/// Counters of one run (also carried in the checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Records consumed (including dead letters).
    pub records: u64,
    /// Records skipped because the checkpoint already covered them.
    pub skipped_replayed: u64,
    /// Valid prediction and feature events applied to windows.
    pub events: u64,
    /// Valid outcome events (validated and counted only).
    pub outcomes: u64,
    /// Tracking events applied to runs.
    #[serde(default)]
    pub tracking_events: u64,
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Feature names seen that the model does not declare.
    pub unknown_features: u64,
    /// Windows closed and written.
    pub windows_closed: u64,
    /// Drift result rows written.
    pub drift_rows: u64,
    /// Drift result rows marked drifted.
    pub drifted_rows: u64,
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    format: u32,
    /// Next offset to read per (topic, partition).
    offsets: Vec<(String, i32, i64)>,
    windows: WindowsSnapshot,
    /// Open runs of the tracking topic.
    #[serde(default)]
    tracking: TrackingSnapshot,
    counters: Counters,
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
    /// Seconds spent.
    pub seconds: f64,
    /// Of those, seconds spent decoding and applying records (the rest is
    /// waiting for Kafka, checkpoints and shutdown).
    pub process_seconds: f64,
}

struct DeadLetter {
    offset: i64,
    payload: String,
    reason: Reason,
    error: String,
}

/// The pipeline state between poll batches.
pub struct Pipeline {
    config: Config,
    catalog: Arc<ModelCatalog>,
    storage: Storage,
    writer: WindowWriter,
    windows: Windows,
    /// Next offset per partition (what the checkpoint will store).
    offsets: BTreeMap<(String, i32), i64>,
    /// Offsets restored from the checkpoint; records below are skipped.
    restored: Vec<(String, i32, i64)>,
    dead: BTreeMap<(String, i32), Vec<DeadLetter>>,
    dead_count: usize,
    /// Offsets last committed to Kafka.
    committed: HashMap<(String, i32), i64>,
    counters: Counters,
    topics: [String; 3],
    tracking: TrackingSink,
}

impl Pipeline {
    /// Opens storage, loads references and restores the checkpoint if any.
    pub async fn new(config: Config) -> Result<Self> {
        let catalog = Arc::new(ModelCatalog::from_config(&config));
        if catalog.models.is_empty() {
            return Err(Error::Config(
                "no models are declared: add a [models.<name>] table (see config/mlwatch.toml)"
                    .into(),
            ));
        }
        let storage = Storage::open(&config.storage.url, &config.storage.options)?;
        let monitor = DriftMonitor::new(&config, catalog.clone()).await?;
        let w = &config.window;
        let mut windows = Windows::new(
            w.size.as_millis() as i64,
            w.allowed_lateness.as_millis() as i64,
            w.sample_size,
        );
        let mut offsets = BTreeMap::new();
        let mut restored = Vec::new();
        let mut counters = Counters::default();
        let mut tracking = TrackingSnapshot::default();
        let ckpt_path = tables::checkpoint_file(&config.kafka.group_id);
        if let Some(bytes) = storage.get_opt(&ckpt_path).await? {
            let ckpt: Checkpoint =
                serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
                    location: ckpt_path.clone(),
                    reason: e.to_string(),
                })?;
            for (t, p, o) in &ckpt.offsets {
                offsets.insert((t.clone(), *p), *o);
                restored.push((t.clone(), *p, *o));
            }
            windows.restore(ckpt.windows);
            tracking = ckpt.tracking;
            counters = ckpt.counters;
            tracing::info!(
                checkpoint = %ckpt_path,
                partitions = offsets.len(),
                open_windows = windows.open_windows(),
                "restored checkpoint"
            );
        }
        let k = &config.kafka;
        let topics = [
            k.predictions_topic.clone(),
            k.features_topic.clone(),
            k.outcomes_topic.clone(),
        ];
        let writer = WindowWriter::spawn(monitor, storage.clone(), catalog.clone());
        let tracking = TrackingSink::new(
            ExperimentTracker::new(storage.clone()),
            config.tracking.clone(),
            tracking,
        );
        Ok(Self {
            config,
            writer,
            catalog,
            storage,
            windows,
            offsets,
            restored,
            dead: BTreeMap::new(),
            dead_count: 0,
            committed: HashMap::new(),
            counters,
            topics,
            tracking,
        })
    }

    /// Current counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn kind_of(&self, topic: &str) -> Option<EventKind> {
        self.topics
            .iter()
            .position(|t| t == topic)
            .map(|i| KINDS[i])
    }

    fn dead_letter(&mut self, msg: &OwnedMessage, reason: Reason, error: String) {
        *self
            .counters
            .dead_letters
            .entry(reason.as_str().to_string())
            .or_default() += 1;
        let payload = msg
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        self.dead
            .entry((msg.topic().to_string(), msg.partition()))
            .or_default()
            .push(DeadLetter {
                offset: msg.offset(),
                payload,
                reason,
                error,
            });
        self.dead_count += 1;
    }

    /// Applies one poll batch of records and hands windows that closed to
    /// the writer.
    pub async fn process(&mut self, msgs: &[OwnedMessage]) -> Result<()> {
        // Drop records the checkpoint already covers; note the next offsets
        // (per batch first, so no key is allocated per record).
        let mut fresh: Vec<&OwnedMessage> = Vec::with_capacity(msgs.len());
        let mut next: Vec<(&str, i32, i64)> = Vec::new();
        for m in msgs {
            let (topic, part) = (m.topic(), m.partition());
            if self
                .restored
                .iter()
                .any(|(t, p, o)| *p == part && t == topic && m.offset() < *o)
            {
                self.counters.skipped_replayed += 1;
                continue;
            }
            match next.iter_mut().find(|(t, p, _)| *p == part && *t == topic) {
                Some(e) => e.2 = e.2.max(m.offset() + 1),
                None => next.push((topic, part, m.offset() + 1)),
            }
            fresh.push(m);
        }
        self.counters.records += fresh.len() as u64;
        for (t, p, o) in next {
            let e = self.offsets.entry((t.to_string(), p)).or_insert(0);
            *e = (*e).max(o);
        }
        // Decode per event kind, remembering each row's position in the batch.
        let mut by_kind: [Vec<usize>; 3] = Default::default();
        let mut tracking_events = Vec::new();
        for (i, m) in fresh.iter().enumerate() {
            if let Some(k) = self.topics.iter().position(|t| t == m.topic()) {
                by_kind[k].push(i);
            } else if m.topic() == self.config.kafka.tracking_topic {
                tracking_events.push(*m);
            }
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
        let mut decoded: Vec<(EventKind, event::Decoded)> = Vec::new();
        let mut order: Vec<(usize, usize, usize)> = Vec::new(); // (batch pos, decoded idx, row)
        for (k, idxs) in by_kind.iter().enumerate() {
            if idxs.is_empty() {
                continue;
            }
            let payloads: Vec<&[u8]> = idxs
                .iter()
                .map(|&i| fresh[i].payload().unwrap_or(b""))
                .collect();
            let out = event::decode(&self.catalog, KINDS[k], &payloads);
            self.counters.unknown_features += out.unknown_features;
            for r in out.rejected {
                let msg = fresh[idxs[r.seq as usize]];
                self.dead_letter(msg, r.reason, r.error);
            }
            for d in out.decoded {
                let di = decoded.len();
                for (row, s) in d.seq.iter().enumerate() {
                    order.push((idxs[*s as usize], di, row));
                }
                decoded.push((KINDS[k], d));
            }
        }
        order.sort_unstable_by_key(|o| o.0);

        let views: Vec<RowView<'_>> = decoded
            .iter()
            .map(|(k, d)| RowView::new(*k, d, &self.catalog))
            .collect();
        for (pos, di, row) in order {
            let view = &views[di];
            let msg = fresh[pos];
            if view.kind == EventKind::Outcome {
                self.counters.outcomes += 1;
                continue;
            }
            let ts = view.ts[row];
            if self.windows.is_late(ts) {
                let err = format!(
                    "event time {ts} is behind the watermark {}; its window already closed",
                    self.windows.watermark()
                );
                self.dead_letter(msg, Reason::Late, err);
                continue;
            }
            self.counters.events += 1;
            let start = self.windows.window_start(ts);
            let priority = xxh3_64(view.event_id.value(row).as_bytes());
            let version = view.version(row);
            let width = view.numeric.len();
            let group = self.windows.group_mut(start, view.model, version, width);
            if group.sample.would_keep(priority) {
                let values = view.numeric_row(row);
                group.sample.offer(priority, values);
            } else {
                group.sample.count_skipped();
            }
            self.windows.observe(msg.topic(), msg.partition(), ts);
        }
        drop(views);
        let closed = self.windows.take_closable();
        self.write_windows(closed).await
    }

    async fn write_windows(&mut self, closed: Vec<ClosedWindow>) -> Result<()> {
        for w in closed {
            self.writer.submit(w).await?;
        }
        Ok(())
    }

    /// Finds the assigned partitions (of the event topics) that hold unread
    /// data but have not delivered an event yet, so the watermark waits for
    /// them: otherwise a partition that the consumer happens to read first
    /// would make the others' first events late. A partition counts as
    /// caught up once our next offset reaches its high watermark, so a
    /// partition of only bad records does not hold the watermark forever.
    /// Runs before the first batch and then about once a second.
    pub fn update_pending(&mut self, consumer: &StreamConsumer) {
        let Ok(assigned) = consumer.assignment() else {
            return;
        };
        let mut pending = Vec::new();
        for e in assigned.elements() {
            let (topic, part) = (e.topic(), e.partition());
            if !matches!(
                self.kind_of(topic),
                Some(EventKind::Prediction | EventKind::Feature)
            ) || self.windows.has_delivered(topic, part)
            {
                continue;
            }
            let next = self.offsets.get(&(topic.to_string(), part)).copied();
            if next.is_none() && self.config.kafka.auto_offset_reset == OffsetReset::Latest {
                continue; // nothing before the end will be read
            }
            match consumer.fetch_watermarks(topic, part, Duration::from_secs(2)) {
                Ok((low, high)) if high > next.unwrap_or(low).max(low) => {
                    pending.push((topic.to_string(), part))
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(topic, partition = part, error = %err, "no watermarks; treating the partition as pending");
                    pending.push((topic.to_string(), part));
                }
            }
        }
        self.windows.set_pending(pending);
    }

    /// Whether enough dead letters or tracking metric points are buffered
    /// to force a checkpoint.
    pub fn buffers_full(&self) -> bool {
        self.dead_count >= self.config.checkpoint.max_dead_letters || self.tracking.needs_flush()
    }

    /// Closes every open window (end of input) and writes them.
    pub async fn flush_all(&mut self) -> Result<()> {
        let closed = self.windows.take_all();
        self.write_windows(closed).await
    }

    /// Makes dead letters, state and offsets durable, then commits to Kafka.
    pub async fn checkpoint(&mut self, consumer: Option<&StreamConsumer>) -> Result<()> {
        // Results first: the offsets below must not run ahead of them.
        let written = self.writer.flush().await?;
        self.counters.windows_closed += written.windows;
        self.counters.drift_rows += written.rows;
        self.counters.drifted_rows += written.drifted;
        let dead = std::mem::take(&mut self.dead);
        for ((topic, partition), letters) in &dead {
            let Some(first) = letters.first() else {
                continue;
            };
            let batch = dead_letter_batch(letters)?;
            let path = tables::dead_letter_file(topic, *partition, first.offset);
            self.storage.write_parquet(&path, &[batch]).await?;
        }
        self.dead_count = 0;
        let tracking = self.tracking.flush().await?;
        let ckpt = Checkpoint {
            format: 1,
            offsets: self
                .offsets
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
            windows: self.windows.snapshot(),
            tracking,
            counters: self.counters.clone(),
        };
        let bytes = serde_json::to_vec(&ckpt).map_err(|e| Error::Checkpoint {
            location: tables::checkpoint_file(&self.config.kafka.group_id),
            reason: e.to_string(),
        })?;
        self.storage
            .put(
                &tables::checkpoint_file(&self.config.kafka.group_id),
                bytes.into(),
            )
            .await?;
        if let Some(c) = consumer {
            self.commit(c);
        }
        tracing::debug!(
            open_windows = self.windows.open_windows(),
            "checkpoint written"
        );
        Ok(())
    }
}

impl Pipeline {
    /// Commits the checkpointed offsets of the partitions this consumer
    /// holds now, when they moved. Committing during a rebalance (or for
    /// partitions owned by someone else) would fail and restart the
    /// rebalance, so other partitions are left alone; the checkpoint is the
    /// source of truth and a skipped commit only means more records are
    /// skipped on restart.
    fn commit(&mut self, c: &StreamConsumer) {
        let Ok(assigned) = c.assignment() else { return };
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            let key = (e.topic().to_string(), e.partition());
            if let Some(o) = self.offsets.get(&key)
                && self.committed.get(&key) != Some(o)
                && tpl
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(*o))
                    .is_ok()
            {
                self.committed.insert(key, *o);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "offset commit failed; the checkpoint still holds the offsets");
            self.committed.clear();
        }
    }
}

fn dead_letter_batch(letters: &[DeadLetter]) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            letters.iter().map(|d| d.offset),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.payload.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.error.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(DEAD_LETTER_FILE_SCHEMA.clone(), cols)?)
}

/// Typed access to the columns of one decoded batch.
struct RowView<'a> {
    kind: EventKind,
    model: usize,
    ts: &'a [i64],
    event_id: &'a StringArray,
    version: Option<&'a StringArray>,
    features: Option<&'a StructArray>,
    numeric: Vec<Option<&'a Float64Array>>,
}

impl<'a> RowView<'a> {
    fn new(kind: EventKind, d: &'a event::Decoded, catalog: &ModelCatalog) -> Self {
        let b = &d.batch;
        let schema = &catalog.models[d.model];
        let ts = b
            .column_by_name(field::TS)
            .expect("ts is in every schema")
            .as_primitive::<TimestampMillisecondType>()
            .values();
        let event_id = b
            .column_by_name(field::EVENT_ID)
            .expect("event_id is in every schema")
            .as_string::<i32>();
        let version = b
            .column_by_name(field::VERSION)
            .map(|c| c.as_string::<i32>());
        let features = b.column_by_name(field::FEATURES).map(|c| c.as_struct());
        let numeric = schema
            .numeric
            .iter()
            .map(|&i| {
                features
                    .and_then(|f| f.column_by_name(&schema.features[i].0))
                    .map(|c| c.as_primitive::<datafusion::arrow::datatypes::Float64Type>())
            })
            .collect();
        Self {
            kind,
            model: d.model,
            ts,
            event_id,
            version,
            features,
            numeric,
        }
    }

    fn version(&self, row: usize) -> &'a str {
        match self.version {
            Some(v) if !v.is_null(row) => v.value(row),
            _ => "",
        }
    }

    fn numeric_row(&self, row: usize) -> Vec<f64> {
        let struct_null = self.features.is_none_or(|f| f.is_null(row));
        self.numeric
            .iter()
            .map(|c| match c {
                Some(c) if !struct_null && !c.is_null(row) => c.value(row),
                _ => f64::NAN,
            })
            .collect()
    }
}

/// Builds the Kafka consumer for `config` and subscribes to its topics.
pub fn consumer(config: &Config) -> Result<StreamConsumer> {
    let k = &config.kafka;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match k.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        )
        .set(
            "session.timeout.ms",
            k.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (k.session_timeout.as_millis() / 4).max(100).to_string(),
        )
        .set("topic.metadata.refresh.interval.ms", "5000");
    for (key, v) in &k.options {
        cc.set(key, v);
    }
    let c: StreamConsumer = cc.create()?;
    let topics = [
        k.predictions_topic.as_str(),
        k.features_topic.as_str(),
        k.outcomes_topic.as_str(),
        k.tracking_topic.as_str(),
    ];
    c.subscribe(&topics)?;
    Ok(c)
}

/// Runs the pipeline until `control` says stop. This is what `mlwatch run`
/// and `mlwatch demo` call.
pub async fn run(config: Config, mut control: RunControl) -> Result<RunSummary> {
    let started = Instant::now();
    let max_batch = config.kafka.max_batch_records;
    let poll_timeout = config.kafka.poll_timeout;
    let interval = config.checkpoint.interval;
    let mut pipeline = Pipeline::new(config.clone()).await?;
    let consumer = consumer(&config)?;
    tracing::info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, "consuming");
    let mut last_ckpt = Instant::now();
    // Before the first record the idle clock also allows for a group join,
    // which can take up to about two session timeouts.
    let join_allowance = config.kafka.session_timeout * 2 + Duration::from_secs(5);
    let mut last_record: Option<Instant> = None;
    let mut last_pending_check: Option<Instant> = None;
    let mut process_time = Duration::ZERO;
    let mode = loop {
        if let Some(mode) = *control.stop.borrow() {
            break mode;
        }
        let mut batch: Vec<OwnedMessage> = Vec::new();
        // One timer per batch, not per record: the select below polls the
        // consumer, the batch deadline and the stop signal, in that order.
        let deadline = tokio::time::sleep(poll_timeout);
        tokio::pin!(deadline);
        while batch.len() < max_batch {
            tokio::select! {
                biased;
                r = consumer.recv() => match r {
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
                },
                _ = &mut deadline => break,
                _ = control.stop.changed() => break,
            }
        }
        if batch.is_empty() {
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
            if last_pending_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                pipeline.update_pending(&consumer);
                last_pending_check = Some(Instant::now());
            }
            let t0 = Instant::now();
            pipeline.process(&batch).await?;
            process_time += t0.elapsed();
            if let Some(p) = &control.progress {
                p.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
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
    let summary = RunSummary {
        counters: pipeline.counters().clone(),
        seconds: started.elapsed().as_secs_f64(),
        process_seconds: process_time.as_secs_f64(),
    };
    tracing::info!(?mode, events = summary.counters.events, "stopped");
    Ok(summary)
}
