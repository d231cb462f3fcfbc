//! The Kafka side of the pipeline: the consumer, positions per partition,
//! which assigned partitions still hold the watermark, and offset commits.
//!
//! The checkpoint's offsets are the source of truth: on start, records
//! below them are skipped (Kafka's committed offset can lag them if the
//! process died between writing the checkpoint and committing).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::Counters;
use crate::config::{Config, OffsetReset};
use crate::error::Result;
use crate::event::EventKind;
use crate::window::Windows;

/// Event kind of each event topic, in [`KafkaPositions::topics`] order.
pub(crate) const KINDS: [EventKind; 3] = [
    EventKind::Prediction,
    EventKind::Feature,
    EventKind::Outcome,
];

/// Where the consumer is, per partition.
pub(crate) struct KafkaPositions {
    /// The event topics, in [`KINDS`] order.
    pub topics: [String; 3],
    reset: OffsetReset,
    /// Next offset per partition (what the checkpoint will store).
    offsets: BTreeMap<(String, i32), i64>,
    /// Offsets restored from the checkpoint; records below are skipped.
    restored: Vec<(String, i32, i64)>,
    /// Offsets last committed to Kafka.
    committed: HashMap<(String, i32), i64>,
}

impl KafkaPositions {
    /// Positions for `config`'s topics, resuming at `restored`.
    pub fn new(config: &Config, restored: Vec<(String, i32, i64)>) -> Self {
        let k = &config.kafka;
        Self {
            topics: [
                k.predictions_topic.clone(),
                k.features_topic.clone(),
                k.outcomes_topic.clone(),
            ],
            reset: k.auto_offset_reset,
            offsets: restored
                .iter()
                .map(|(t, p, o)| ((t.clone(), *p), *o))
                .collect(),
            restored,
            committed: HashMap::new(),
        }
    }

    /// The event kind of `topic`, if it is an event topic.
    pub fn kind_of(&self, topic: &str) -> Option<EventKind> {
        self.topics
            .iter()
            .position(|t| t == topic)
            .map(|i| KINDS[i])
    }

    /// Drops the records the checkpoint already covers and notes the next
    /// offsets (per batch first, so no key is allocated per record).
    pub fn admit<'m>(
        &mut self,
        msgs: &'m [OwnedMessage],
        counters: &mut Counters,
    ) -> Vec<&'m OwnedMessage> {
        let mut fresh = Vec::with_capacity(msgs.len());
        let mut next: Vec<(&str, i32, i64)> = Vec::new();
        for m in msgs {
            let (topic, part) = (m.topic(), m.partition());
            if self
                .restored
                .iter()
                .any(|(t, p, o)| *p == part && t == topic && m.offset() < *o)
            {
                counters.skipped_replayed += 1;
                continue;
            }
            match next.iter_mut().find(|(t, p, _)| *p == part && *t == topic) {
                Some(e) => e.2 = e.2.max(m.offset() + 1),
                None => next.push((topic, part, m.offset() + 1)),
            }
            fresh.push(m);
        }
        counters.records += fresh.len() as u64;
        for (t, p, o) in next {
            let e = self.offsets.entry((t.to_string(), p)).or_insert(0);
            *e = (*e).max(o);
        }
        fresh
    }

    /// The next offset per partition, for the checkpoint.
    pub fn offsets(&self) -> Vec<(String, i32, i64)> {
        self.offsets
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect()
    }

    /// Finds the assigned partitions (of the event topics) that hold unread
    /// data but have not delivered an event yet, so the watermark waits for
    /// them: otherwise a partition that the consumer happens to read first
    /// would make the others' first events late. A partition counts as
    /// caught up once our next offset reaches its high watermark, so a
    /// partition of only bad records does not hold the watermark forever.
    pub fn pending(
        &self,
        consumer: &StreamConsumer,
        windows: &Windows,
    ) -> Option<Vec<(String, i32)>> {
        let assigned = consumer.assignment().ok()?;
        let mut pending = Vec::new();
        let mut candidates: Vec<(String, i32, Option<i64>)> = Vec::new();
        for e in assigned.elements() {
            let (topic, part) = (e.topic(), e.partition());
            if !matches!(
                self.kind_of(topic),
                Some(EventKind::Prediction | EventKind::Feature)
            ) || windows.has_delivered(topic, part)
            {
                continue;
            }
            let next = self.offsets.get(&(topic.to_string(), part)).copied();
            if next.is_none() && self.reset == OffsetReset::Latest {
                continue; // nothing before the end will be read
            }
            candidates.push((topic.to_string(), part, next));
        }
        if candidates.is_empty() {
            return Some(pending);
        }
        // The first and next-to-write offsets of every candidate in two
        // requests (ListOffsets with the "earliest" and "latest" markers),
        // not one blocking request per partition.
        let ends = |marker: Offset| {
            let mut tpl = TopicPartitionList::new();
            for (t, p, _) in &candidates {
                let _ = tpl.add_partition_offset(t, *p, marker);
            }
            consumer.offsets_for_times(tpl, Duration::from_secs(2))
        };
        let (low, high) = match (ends(Offset::Beginning), ends(Offset::End)) {
            (Ok(l), Ok(h)) => (l, h),
            (Err(err), _) | (_, Err(err)) => {
                tracing::debug!(error = %err, "no watermarks; treating the partitions as pending");
                pending.extend(candidates.into_iter().map(|(t, p, _)| (t, p)));
                return Some(pending);
            }
        };
        let raw = |tpl: &TopicPartitionList, t: &str, p: i32| {
            tpl.find_partition(t, p)
                .filter(|e| e.error().is_ok())
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
        };
        for (t, p, next) in candidates {
            match (raw(&low, &t, p), raw(&high, &t, p)) {
                (Some(low), Some(high)) if high > next.unwrap_or(low).max(low) => {
                    pending.push((t, p))
                }
                (Some(_), Some(_)) => {}
                _ => pending.push((t, p)),
            }
        }
        Some(pending)
    }

    /// Commits the checkpointed offsets of the partitions this consumer
    /// holds now, when they moved. Committing during a rebalance (or for
    /// partitions owned by someone else) would fail and restart the
    /// rebalance, so other partitions are left alone; the checkpoint is the
    /// source of truth and a skipped commit only means more records are
    /// skipped on restart.
    pub fn commit(&mut self, c: &StreamConsumer) {
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

/// Builds the Kafka consumer for `config` and subscribes to its topics.
pub(crate) fn consumer(config: &Config) -> Result<StreamConsumer> {
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
