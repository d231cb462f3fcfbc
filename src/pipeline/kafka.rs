//! The Kafka side of the pipeline: the consumer, positions per partition,
//! which assigned partitions still hold the watermark, and offset commits.
//!
//! The checkpoint's offsets are the source of truth: on start, records
//! below them are skipped (Kafka's committed offset can lag them if the
//! process died between writing the checkpoint and committing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// Offsets last committed to Kafka.
    committed: HashMap<(String, i32), i64>,
    /// Event partitions paused for running ahead of the watermark.
    paused: BTreeSet<(String, i32)>,
    /// The event partitions assigned when [`KafkaPositions::align`] last ran.
    assigned: BTreeSet<(String, i32)>,
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
            committed: HashMap::new(),
            paused: BTreeSet::new(),
            assigned: BTreeSet::new(),
        }
    }

    /// The event kind of `topic`, if it is an event topic.
    pub fn kind_of(&self, topic: &str) -> Option<EventKind> {
        self.topics
            .iter()
            .position(|t| t == topic)
            .map(|i| KINDS[i])
    }

    /// Drops the records already applied (below the next offset: those the
    /// checkpoint covers, and those a rebalance hands over again from the
    /// last commit) and notes the next offsets (per batch first, so no key
    /// is allocated per record).
    pub fn admit<'m>(
        &mut self,
        msgs: &'m [OwnedMessage],
        counters: &mut Counters,
    ) -> Vec<&'m OwnedMessage> {
        let mut fresh = Vec::with_capacity(msgs.len());
        let mut next: Vec<(&str, i32, i64)> = Vec::new();
        // The next offset of each partition as the batch began.
        let mut floors: Vec<(&str, i32, i64)> = Vec::new();
        for m in msgs {
            let (topic, part) = (m.topic(), m.partition());
            let floor = match floors.iter().find(|(t, p, _)| *p == part && *t == topic) {
                Some(f) => f.2,
                None => {
                    let f = self
                        .offsets
                        .get(&(topic.to_string(), part))
                        .copied()
                        .unwrap_or(i64::MIN);
                    floors.push((topic, part, f));
                    f
                }
            };
            if m.offset() < floor {
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
            if self.kind_of(topic).is_none() || windows.has_delivered(topic, part) {
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

    /// Watermark alignment: pauses the assigned event partitions whose own
    /// watermark runs more than `max_ahead_ms` ahead of the global one and
    /// resumes them once it catches up, so a partition read far ahead of
    /// the slowest one does not keep a trail of windows open (memory).
    ///
    /// Pausing only helps while some partition that is not ahead still has
    /// unread records (a pending one, or one whose position is below the
    /// high watermark of its last fetch, see [`unread`]): only reading it
    /// can move the watermark. When none has, every partition is resumed,
    /// so an idle partition holding the watermark does not keep the others
    /// paused (their windows then stay open until it delivers, as without
    /// alignment); and the loop resumes them all when a poll brings nothing
    /// while some are paused ([`KafkaPositions::resume_all`]).
    ///
    /// Pausing changes when a partition is read, not what: librdkafka drops
    /// the records it prefetched for a paused partition and fetches again
    /// from the consumer's position on resume, and offsets only cover what
    /// was applied. Results are the same as long as each partition's events
    /// are in order within `allowed_lateness` (an event further behind is
    /// judged against the watermark when it is read, with or without
    /// pausing). The bound on open windows is approximate: a poll batch can
    /// carry a partition past `max_ahead` before it is paused.
    pub fn align(
        &mut self,
        consumer: &StreamConsumer,
        windows: &Windows,
        max_ahead_ms: i64,
        counters: &mut Counters,
    ) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        // Hysteresis: a paused partition stays paused until it is less than
        // half of `max_ahead` ahead, so it does not flap at the threshold
        // (each resume makes librdkafka fetch its records again).
        let ahead: HashSet<(&str, i32)> = windows.ahead(max_ahead_ms).collect();
        let still_ahead: HashSet<(&str, i32)> = windows.ahead(max_ahead_ms / 2).collect();
        let positions = consumer.position().ok();
        let mut assigned = BTreeSet::new();
        let mut want = BTreeSet::new();
        let mut laggard = false;
        for e in assignment.elements() {
            let (t, p) = (e.topic(), e.partition());
            if self.kind_of(t).is_none() {
                continue;
            }
            let key = (t.to_string(), p);
            assigned.insert(key.clone());
            if ahead.contains(&(t, p))
                || (self.paused.contains(&key) && still_ahead.contains(&(t, p)))
            {
                want.insert(key);
            } else if !laggard {
                laggard = windows.is_pending(t, p) || unread(consumer, positions.as_ref(), t, p);
            }
        }
        if !laggard {
            want.clear();
        }
        // A new assignment: librdkafka may keep a partition paused across a
        // rebalance, so resume every newly assigned partition not wanted paused.
        let mut resume: Vec<(String, i32)> = if assigned != self.assigned {
            assigned.difference(&want).cloned().collect()
        } else {
            self.paused.difference(&want).cloned().collect()
        };
        resume.retain(|k| assigned.contains(k));
        let pause: Vec<(String, i32)> = want.difference(&self.paused).cloned().collect();
        // On failure they stay in `paused`, so the next call tries again.
        let resumed = resume.is_empty()
            || consumer
                .resume(&partition_list(&resume))
                .inspect_err(|e| tracing::warn!(error = %e, "resuming partitions failed"))
                .is_ok();
        if !resume.is_empty() || !pause.is_empty() {
            tracing::debug!(
                watermark = windows.watermark(),
                open_windows = windows.open_windows(),
                paused = pause.len(),
                resumed = resume.len(),
                ahead = ahead.len(),
                laggard,
                "alignment"
            );
        }
        if resumed {
            self.paused.retain(|k| want.contains(k));
            self.assigned = assigned;
        }
        if !pause.is_empty() {
            match consumer.pause(&partition_list(&pause)) {
                Ok(()) => {
                    counters.partition_pauses += pause.len() as u64;
                    self.paused.extend(pause);
                }
                Err(e) => tracing::warn!(error = %e, "pausing partitions failed"),
            }
        }
    }

    /// Resumes every partition paused by [`KafkaPositions::align`]: the
    /// stall breaker, for a poll that brought nothing while some were
    /// paused (whatever kept them paused, reading must go on).
    pub fn resume_all(&mut self, consumer: &StreamConsumer) {
        if self.paused.is_empty() {
            return;
        }
        match consumer.resume(&partition_list(&self.paused)) {
            Ok(()) => {
                tracing::debug!(
                    resumed = self.paused.len(),
                    "nothing arrived; resumed every paused partition"
                );
                self.paused.clear();
            }
            Err(e) => tracing::warn!(error = %e, "resuming partitions failed"),
        }
    }

    /// Number of partitions paused by [`KafkaPositions::align`].
    pub fn paused(&self) -> usize {
        self.paused.len()
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

/// A list of `partitions` (no offsets), as pause and resume take them.
fn partition_list<'a>(
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    tpl
}

/// Whether the last fetch of (`topic`, `partition`) saw records beyond the
/// consumer's position: librdkafka's cached high watermark, updated by every
/// fetch response, read without a request (rust-rdkafka has no wrapper for
/// it), against the position librdkafka gives the next record (it moves past
/// transaction markers, which are never delivered). A partition without a
/// position (nothing consumed from it yet) or without a cached watermark
/// counts as having nothing to read, so it never keeps others paused.
fn unread(
    consumer: &StreamConsumer,
    positions: Option<&TopicPartitionList>,
    topic: &str,
    partition: i32,
) -> bool {
    let Some(position) = positions
        .and_then(|tpl| tpl.find_partition(topic, partition))
        .and_then(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
    else {
        return false;
    };
    cached_watermarks(consumer, topic, partition).is_some_and(|(_, high)| high > position)
}

/// librdkafka's cached (low, high) watermarks of a partition, from its last
/// fetch response, read without a request (rust-rdkafka has no wrapper
/// for it); `None` before the partition's first fetch.
fn cached_watermarks(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let name = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed;
    // `name` outlives the call; librdkafka only writes the two i64s and
    // guards the partition state with its own lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            name.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low.max(0), high))
}

/// Publishes the lag of every assigned partition (`mlwatch_consumer_lag`):
/// the cached high watermark minus the consumer's position (the position
/// of the next record handed to mlwatch; the log start when nothing was
/// read yet). Local reads only, no request. A partition not fetched yet
/// has no watermark and keeps its last value.
pub(crate) fn publish_lag(consumer: &StreamConsumer) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let positions = consumer.position().ok();
    for e in assigned.elements() {
        let (topic, part) = (e.topic(), e.partition());
        let Some((low, high)) = cached_watermarks(consumer, topic, part) else {
            continue;
        };
        let position = positions
            .as_ref()
            .and_then(|tpl| tpl.find_partition(topic, part))
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
            .unwrap_or(low);
        crate::telemetry::lag(topic, part, (high - position.max(low)).max(0));
    }
}

/// librdkafka settings of the consumer that differ from librdkafka's
/// defaults; `kafka.options` overrides them. Pausing partitions (see
/// [`KafkaPositions::align`]) often leaves librdkafka's prefetch queue over
/// its thresholds, and its default backoff then (1 s) stalled the consumer
/// most of the time in the throughput bench; a fetch of partitions with
/// nothing new waits at the broker (default up to 500 ms) and delays the
/// partitions resumed meanwhile. Both at 10 ms (figures in the README's
/// drift monitoring figures); the cost is a fetch request every 10 ms per
/// broker while the topics are idle. librdkafka prefetches up to 100,000
/// records per partition by default and drops a paused partition's
/// prefetch, to fetch it again on resume; mlwatch prefetches about 2,000
/// (the bench's CPU per event and open windows in the README).
pub const CONSUMER_DEFAULTS: [(&str, &str); 3] = [
    ("fetch.queue.backoff.ms", "10"),
    ("fetch.wait.max.ms", "10"),
    ("queued.min.messages", "2000"),
];

/// Builds the Kafka consumer for `config` and subscribes to its topics,
/// first committing the checkpoint's next offsets (`resume`) for the
/// partitions Kafka holds no commit for (expired, or a crash between the
/// checkpoint and the first commit): the group then starts there, not at
/// `auto_offset_reset` (with `latest`, records would be skipped). A commit
/// Kafka holds is left alone (an operator's reset stands; records below
/// the checkpoint's offsets are skipped as read).
pub(crate) fn consumer(config: &Config, resume: &[(String, i32, i64)]) -> Result<StreamConsumer> {
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
    for (key, v) in CONSUMER_DEFAULTS {
        cc.set(key, v);
    }
    for (key, v) in &k.options {
        cc.set(key, v);
    }
    let c: StreamConsumer = cc.create()?;
    if !resume.is_empty() {
        let mut ask = TopicPartitionList::new();
        for (t, p, _) in resume {
            ask.add_partition(t, *p);
        }
        match c.committed_offsets(ask, k.session_timeout) {
            Ok(held) => {
                let mut tpl = TopicPartitionList::new();
                for (t, p, o) in resume {
                    let none = held
                        .find_partition(t, *p)
                        .is_none_or(|e| !matches!(e.offset(), Offset::Offset(_)));
                    if none {
                        // (A partition the checkpoint names can only be added once.)
                        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
                    }
                }
                if tpl.count() > 0
                    && let Err(e) = c.commit(&tpl, CommitMode::Sync)
                {
                    tracing::warn!(error = %e, "could not commit the checkpoint's offsets for partitions Kafka holds none for");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the group's committed offsets; starting from them or auto_offset_reset");
            }
        }
    }
    let topics = [
        k.predictions_topic.as_str(),
        k.features_topic.as_str(),
        k.outcomes_topic.as_str(),
        k.tracking_topic.as_str(),
    ];
    c.subscribe(&topics)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn msg(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "mlwatch.predictions".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    /// Records below a partition's next offset are applied once: those the
    /// checkpoint covers, and those a rebalance delivers again from the
    /// last commit.
    #[test]
    fn records_handed_over_again_are_skipped() {
        let cfg = Config::from_toml_str("").unwrap();
        let mut k = KafkaPositions::new(&cfg, vec![("mlwatch.predictions".into(), 0, 2)]);
        let mut c = Counters::default();
        let first = [msg(0, 0), msg(0, 1), msg(0, 2), msg(0, 3), msg(1, 0)];
        let got: Vec<(i32, i64)> = k
            .admit(&first, &mut c)
            .iter()
            .map(|m| (m.partition(), m.offset()))
            .collect();
        assert_eq!(got, [(0, 2), (0, 3), (1, 0)]);
        // A rebalance restarts both partitions from older offsets.
        let again = [msg(0, 1), msg(0, 3), msg(0, 4), msg(1, 0), msg(1, 1)];
        let got: Vec<(i32, i64)> = k
            .admit(&again, &mut c)
            .iter()
            .map(|m| (m.partition(), m.offset()))
            .collect();
        assert_eq!(got, [(0, 4), (1, 1)]);
        assert_eq!(c.skipped_replayed, 2 + 3);
        assert_eq!(c.records, 5);
        let mut next = k.offsets();
        next.sort();
        assert_eq!(
            next,
            [
                ("mlwatch.predictions".to_string(), 0, 5),
                ("mlwatch.predictions".to_string(), 1, 2)
            ]
        );
    }
}
