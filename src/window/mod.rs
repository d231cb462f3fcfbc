//! Event-time tumbling windows with per-partition watermarks.
//!
//! A record is assigned to the window `[floor(ts/size)*size, +size)`. Each
//! (topic, partition) tracks the largest event time it has delivered; its
//! watermark is that minus the allowed lateness, and the global watermark is
//! the minimum over the partitions that have delivered data (never below the
//! end of the last window already closed). A window closes once the global
//! watermark reaches its end. A record whose window ends at or before the
//! watermark *at the moment it is processed* is late. Because that decision
//! depends only on the records before it, replaying the same partition
//! sequence after a crash reproduces it.
//!
//! State per open window is a list of (model, version, variant) groups,
//! each made of per-column mergeable summaries ([`group`]), so memory does
//! not grow with the event count. The whole state serialises into the
//! checkpoint.

pub mod group;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::FeatureType;
pub use group::{ColumnSummary, GroupKey, GroupState};

/// A window that has closed, with its groups.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    /// Inclusive start, epoch ms.
    pub start: i64,
    /// Exclusive end, epoch ms.
    pub end: i64,
    /// Its (model, version, variant) groups, in key order.
    pub groups: Vec<GroupState>,
    /// Models whose labels for this window are final (they become final
    /// after the window closed, past the label horizon, and are handed over
    /// on a window of their own with no `groups`).
    pub performance: Vec<crate::labels::PerformanceWindow>,
    /// `groups` with the variants of each (model, version) merged, made
    /// once for the evaluators that read versions (drift, quality,
    /// distribution).
    by_version: std::sync::OnceLock<Vec<GroupState>>,
}

impl ClosedWindow {
    /// A closed window of `groups` (in key order) with no final labels.
    pub(crate) fn new(start: i64, end: i64, groups: Vec<GroupState>) -> Self {
        Self {
            start,
            end,
            groups,
            performance: Vec::new(),
            by_version: std::sync::OnceLock::new(),
        }
    }

    /// Whether this hands over final labels rather than a closed window.
    pub fn is_performance(&self) -> bool {
        self.groups.is_empty() && !self.performance.is_empty()
    }

    /// The groups with the variants of each (model, version) merged, in
    /// (model, version) order.
    pub(crate) fn by_version(&self) -> &[GroupState] {
        self.by_version.get_or_init(|| {
            let mut out: Vec<GroupState> = Vec::new();
            for g in &self.groups {
                match out
                    .last_mut()
                    .filter(|o| o.key.model == g.key.model && o.key.version == g.key.version)
                {
                    Some(o) => o.merge(g),
                    None => {
                        let mut g = g.clone();
                        g.key.variant.clear();
                        out.push(g);
                    }
                }
            }
            out
        })
    }
}

/// Serializable snapshot of [`Windows`] (part of the checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WindowsSnapshot {
    /// Largest event time seen per partition.
    pub partition_max_ts: Vec<(String, i32, i64)>,
    /// Windows ending at or before this are closed.
    pub closed_through: i64,
    /// Open windows: start and groups.
    pub open: Vec<(i64, Vec<GroupState>)>,
    /// The global watermark (it never moves back, even if a restart
    /// recomputes a lower one from the partitions' maxima).
    #[serde(default = "min_ts")]
    pub watermark: i64,
    /// Largest event time seen per label partition (see
    /// [`Windows::label_watermark`]).
    #[serde(default)]
    pub label_partition_max_ts: Vec<(String, i32, i64)>,
}

fn min_ts() -> i64 {
    i64::MIN
}

/// All open windows and the watermark bookkeeping.
#[derive(Debug)]
pub struct Windows {
    size_ms: i64,
    lateness_ms: i64,
    sample_size: usize,
    category_cap: usize,
    /// Open windows by start; a window's groups are few (models x versions
    /// x variants), so a vector with a linear scan beats hashing per row.
    open: BTreeMap<i64, Vec<GroupState>>,
    /// Largest event time per partition; few partitions, so a vector.
    partition_max: Vec<(String, i32, i64)>,
    closed_through: i64,
    watermark: i64,
    /// Cached minimum of `partition_max`.
    min_partition_max: i64,
    /// Assigned partitions that hold unread data but have not delivered an
    /// event yet. While any is pending the watermark stays put, so their
    /// first events are not judged late against partitions read earlier.
    pending: Vec<(String, i32)>,
    /// Largest event time per label (outcomes) partition: they do not move
    /// the watermark, only the label watermark.
    label_max: Vec<(String, i32, i64)>,
    /// Cached minimum of `label_max` (`i64::MAX` when empty).
    label_min: i64,
    /// Label partitions that hold unread data but have not delivered.
    label_pending: Vec<(String, i32)>,
    /// The longest label horizon of the models that join labels (`None`:
    /// no model does), and `window.max_ahead`.
    label_horizon: Option<(i64, i64)>,
}

impl Windows {
    /// Empty state for windows of `size_ms` with `lateness_ms` allowed
    /// lateness; numeric columns keep `sample_size` values, categorical ones
    /// at most `category_cap` categories.
    pub fn new(size_ms: i64, lateness_ms: i64, sample_size: usize, category_cap: usize) -> Self {
        Self {
            size_ms,
            lateness_ms,
            sample_size,
            category_cap,
            open: BTreeMap::new(),
            partition_max: Vec::new(),
            closed_through: i64::MIN,
            watermark: i64::MIN,
            min_partition_max: i64::MIN,
            pending: Vec::new(),
            label_max: Vec::new(),
            label_min: i64::MAX,
            label_pending: Vec::new(),
            label_horizon: None,
        }
    }

    /// Sets the longest label horizon of the models that join labels, and
    /// `window.max_ahead` (see [`Windows::label_watermark`]).
    pub fn set_label_horizon(&mut self, horizon_ms: i64, max_ahead_ms: i64) {
        self.label_horizon = Some((horizon_ms, max_ahead_ms));
    }

    /// How far every label partition has delivered: the minimum of their
    /// newest event times less the allowed lateness (`i64::MIN` while one
    /// with unread data has not delivered, `i64::MAX` without any).
    fn labels_held(&self) -> i64 {
        if !self.label_pending.is_empty() {
            return i64::MIN;
        }
        if self.label_min == i64::MAX {
            return i64::MAX;
        }
        self.label_min.saturating_sub(self.lateness_ms)
    }

    /// How far labels are complete: the watermark, held back by every label
    /// partition's newest event time less the allowed lateness (and while a
    /// label partition with unread data has not delivered), but never more
    /// than the longest label horizon plus twice `max_ahead` behind the
    /// watermark. Joins finalize on it, so a label partition read more
    /// slowly than the predictions does not make its labels miss their
    /// window; prediction partitions running more than a horizon plus
    /// `max_ahead` ahead of the labels are paused ([`Windows::ahead`]), so
    /// only a label partition that has stopped delivering reaches the bound,
    /// and then it cannot hold performance back for ever. Everything here
    /// follows from the records, so a replay finalizes at the same records.
    pub fn label_watermark(&self) -> i64 {
        let wm = self.watermark.min(self.labels_held());
        match self.label_horizon {
            Some((h, ahead)) => wm.max(
                self.watermark
                    .saturating_sub(h.saturating_add(ahead.saturating_mul(2))),
            ),
            None => wm,
        }
    }

    /// Records that label partition (`topic`, `partition`) delivered an
    /// event at `ts`.
    pub fn observe_label(&mut self, topic: &str, partition: i32, ts: i64) {
        if !self.label_pending.is_empty() {
            self.label_pending
                .retain(|(t, p)| !(*p == partition && t == topic));
        }
        let recompute = match self
            .label_max
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some((_, _, max)) if ts <= *max => false,
            Some((_, _, max)) => {
                // Only the partition holding the minimum can move it.
                let old = *max;
                *max = ts;
                old <= self.label_min
            }
            None => {
                self.label_max.push((topic.to_string(), partition, ts));
                true
            }
        };
        if recompute {
            self.label_min = self
                .label_max
                .iter()
                .map(|(_, _, t)| *t)
                .min()
                .unwrap_or(i64::MAX);
        }
    }

    /// Sets the label partitions that hold unread data and have not
    /// delivered yet.
    pub fn set_label_pending(&mut self, pending: Vec<(String, i32)>) {
        self.label_pending = pending;
    }

    /// Start of the window holding `ts`.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_ms) * self.size_ms
    }

    /// The current global watermark (epoch ms; `i64::MIN` before any data).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Whether an event at `ts` is late now.
    pub fn is_late(&self, ts: i64) -> bool {
        self.window_start(ts).saturating_add(self.size_ms) <= self.watermark
    }

    /// Sets the partitions that hold unread data and have not delivered yet
    /// (the pipeline checks assignments and broker watermarks for this).
    pub fn set_pending(&mut self, pending: Vec<(String, i32)>) {
        self.pending = pending;
        self.recompute_watermark();
    }

    /// The partition holding the watermark back: the one with the oldest
    /// newest event time.
    pub fn slowest(&self) -> Option<(&str, i32, i64)> {
        self.partition_max
            .iter()
            .min_by_key(|(_, _, ts)| *ts)
            .map(|(t, p, ts)| (t.as_str(), *p, *ts))
    }

    /// Whether partition (`topic`, `partition`) is pending (see
    /// [`Windows::set_pending`]).
    pub fn is_pending(&self, topic: &str, partition: i32) -> bool {
        self.pending
            .iter()
            .chain(&self.label_pending)
            .any(|(t, p)| *p == partition && t == topic)
    }

    /// Whether partition (`topic`, `partition`) has delivered an event.
    pub fn has_delivered(&self, topic: &str, partition: i32) -> bool {
        self.partition_max
            .iter()
            .chain(&self.label_max)
            .any(|(t, p, _)| *p == partition && t == topic)
    }

    /// The partitions whose own watermark (newest event time less the
    /// allowed lateness) is more than `by_ms` past the global one, and, when
    /// models join labels, the event partitions more than the label horizon
    /// plus `by_ms` past the labels ([`Windows::label_watermark`]). Before
    /// the global watermark exists (some partition is still pending) every
    /// partition that delivered counts as ahead, however large `by_ms`: the
    /// pending ones' event times are not known yet.
    pub fn ahead(&self, by_ms: i64) -> impl Iterator<Item = (&str, i32)> {
        let limit = self.watermark.saturating_add(by_ms);
        let label_limit = match self.label_horizon {
            Some((h, _)) => self.labels_held().saturating_add(h).saturating_add(by_ms),
            None => i64::MAX,
        };
        let events = self.partition_max.iter().filter(move |(_, _, ts)| {
            let own = ts.saturating_sub(self.lateness_ms);
            own > limit || own > label_limit
        });
        let labels = self
            .label_max
            .iter()
            .filter(move |(_, _, ts)| ts.saturating_sub(self.lateness_ms) > limit);
        events.chain(labels).map(|(t, p, _)| (t.as_str(), *p))
    }

    /// Records that partition (`topic`, `partition`) delivered an event at `ts`.
    pub fn observe(&mut self, topic: &str, partition: i32, ts: i64) {
        let mut recompute = false;
        if !self.pending.is_empty() {
            self.pending
                .retain(|(t, p)| !(*p == partition && t == topic));
            recompute = self.pending.is_empty();
        }
        match self
            .partition_max
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some((_, _, max)) if ts <= *max => {}
            Some((_, _, max)) => {
                let old = *max;
                *max = ts;
                // Only the partition holding the minimum can move it.
                recompute |= old <= self.min_partition_max;
            }
            None => {
                self.partition_max.push((topic.to_string(), partition, ts));
                recompute = true;
            }
        }
        if recompute {
            self.recompute_watermark();
        }
    }

    fn recompute_watermark(&mut self) {
        let min = self
            .partition_max
            .iter()
            .map(|(_, _, ts)| *ts)
            .min()
            .unwrap_or(i64::MIN);
        self.min_partition_max = min;
        if !self.pending.is_empty() {
            return;
        }
        let wm = min
            .saturating_sub(self.lateness_ms)
            .max(self.closed_through);
        self.watermark = self.watermark.max(wm);
    }

    /// The group of (`model`, `version`, `variant`) in the window starting
    /// at `start`, created with columns of `types` if absent; `None` when it
    /// is absent and the window already holds `max` groups of the model
    /// (versions and variants come from the events, so a producer sending
    /// ever new ones must not grow the state without bound).
    pub fn group_mut(
        &mut self,
        start: i64,
        model: usize,
        (version, variant): (&str, &str),
        types: &[FeatureType],
        max: usize,
    ) -> Option<&mut GroupState> {
        let (sample_size, cap) = (self.sample_size, self.category_cap);
        let groups = self.open.entry(start).or_default();
        let mut of_model = 0;
        let mut found = None;
        for (i, g) in groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.key.model == model)
        {
            if g.key.version == version && g.key.variant == variant {
                found = Some(i);
                break;
            }
            of_model += 1;
        }
        let idx = match found {
            Some(i) => i,
            None if of_model >= max => return None,
            None => {
                let key = GroupKey {
                    model,
                    version: version.to_string(),
                    variant: variant.to_string(),
                };
                groups.push(GroupState::new(key, types, sample_size, cap));
                groups.len() - 1
            }
        };
        Some(&mut groups[idx])
    }

    /// Removes and returns every window whose end is at or before the watermark.
    pub fn take_closable(&mut self) -> Vec<ClosedWindow> {
        let wm = self.watermark;
        let size = self.size_ms;
        let ready: Vec<i64> = self
            .open
            .keys()
            .copied()
            .take_while(|s| s.saturating_add(size) <= wm)
            .collect();
        ready.into_iter().map(|s| self.close(s)).collect()
    }

    /// Closes every open window (end of input) and moves the watermark past
    /// them, so that later events for them count as late.
    pub fn take_all(&mut self) -> Vec<ClosedWindow> {
        let starts: Vec<i64> = self.open.keys().copied().collect();
        let closed: Vec<ClosedWindow> = starts.into_iter().map(|s| self.close(s)).collect();
        if let Some(last) = closed.last() {
            self.closed_through = self.closed_through.max(last.end);
            self.watermark = self.watermark.max(self.closed_through);
        }
        closed
    }

    fn close(&mut self, start: i64) -> ClosedWindow {
        let mut groups = self.open.remove(&start).unwrap_or_default();
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        self.closed_through = self.closed_through.max(start + self.size_ms);
        ClosedWindow::new(start, start + self.size_ms, groups)
    }

    /// Number of open windows.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Snapshot for the checkpoint.
    pub fn snapshot(&self) -> WindowsSnapshot {
        let mut partition_max_ts = self.partition_max.clone();
        partition_max_ts.sort();
        let mut label_partition_max_ts = self.label_max.clone();
        label_partition_max_ts.sort();
        WindowsSnapshot {
            partition_max_ts,
            label_partition_max_ts,
            watermark: self.watermark,
            closed_through: self.closed_through,
            open: self
                .open
                .iter()
                .map(|(s, g)| {
                    let mut groups = g.clone();
                    groups.sort_by(|a, b| a.key.cmp(&b.key));
                    (*s, groups)
                })
                .collect(),
        }
    }

    /// Restores state from a snapshot.
    pub fn restore(&mut self, snap: WindowsSnapshot) {
        self.partition_max = snap.partition_max_ts;
        self.label_max = snap.label_partition_max_ts;
        self.label_min = self
            .label_max
            .iter()
            .map(|(_, _, t)| *t)
            .min()
            .unwrap_or(i64::MAX);
        self.closed_through = snap.closed_through;
        self.open = snap.open.into_iter().collect();
        self.watermark = snap.watermark;
        self.recompute_watermark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(g: &mut GroupState) -> &mut group::NumericSummary {
        match &mut g.columns[0] {
            ColumnSummary::Numeric(n) => n,
            ColumnSummary::Categorical(_) => unreachable!("column 0 is numeric in these tests"),
        }
    }

    proptest! {
        #[test]
        fn cached_label_minimum_equals_a_full_recompute(events in proptest::collection::vec((0i32..5, 0i64..1_000_000), 1..200)) {
            let mut w = Windows::new(60_000, 1_000, 10, 10);
            w.observe("p", 0, 2_000_000);
            let mut max: std::collections::BTreeMap<i32, i64> = Default::default();
            for (p, ts) in events {
                w.observe_label("o", p, ts);
                let e = max.entry(p).or_insert(ts);
                *e = (*e).max(ts);
                prop_assert_eq!(w.label_watermark(), max.values().min().unwrap() - 1_000);
            }
        }

        #[test]
        fn cached_watermark_equals_a_full_recompute(events in proptest::collection::vec((0i32..5, 0i64..1_000_000), 1..200)) {
            let mut w = Windows::new(60_000, 1_000, 10, 10);
            let mut max: std::collections::BTreeMap<i32, i64> = Default::default();
            let mut expected = i64::MIN;
            for (p, ts) in events {
                w.observe("t", p, ts);
                let e = max.entry(p).or_insert(ts);
                *e = (*e).max(ts);
                expected = expected.max(max.values().min().unwrap() - 1_000);
                prop_assert_eq!(w.watermark(), expected);
            }
        }
    }

    #[test]
    fn watermark_is_min_over_partitions_and_closes_windows() {
        let mut w = Windows::new(60_000, 10_000, 100, 10);
        w.observe("t", 0, 130_000);
        assert_eq!(w.watermark(), 120_000);
        num(w
            .group_mut(0, 0, ("v1", ""), &[FeatureType::Numeric], 8)
            .unwrap())
        .push(1, 1.0);
        num(w
            .group_mut(60_000, 0, ("v1", ""), &[FeatureType::Numeric], 8)
            .unwrap())
        .push(2, 2.0);
        w.observe("t", 1, 65_000); // a slower partition holds the watermark back
        assert_eq!(w.watermark(), 120_000, "watermark never moves backwards");
        let closed = w.take_closable();
        assert_eq!(
            closed.iter().map(|c| c.start).collect::<Vec<_>>(),
            vec![0, 60_000]
        );
        assert!(w.is_late(119_999));
        assert!(!w.is_late(120_000));
    }

    #[test]
    fn partitions_ahead_of_the_watermark() {
        let mut w = Windows::new(60_000, 10_000, 100, 10);
        w.set_pending(vec![("t".into(), 2)]);
        w.observe("t", 0, 70_000);
        w.observe("t", 1, 400_000);
        let ahead = |w: &Windows, by| w.ahead(by).map(|(_, p)| p).collect::<Vec<_>>();
        assert_eq!(ahead(&w, 120_000), vec![0, 1], "no watermark yet");
        w.observe("t", 2, 100_000);
        assert_eq!(w.watermark(), 60_000);
        // Partition 1's own watermark is 390 s: 330 s past the global one.
        assert_eq!(ahead(&w, 120_000), vec![1]);
        assert_eq!(ahead(&w, 330_000), Vec::<i32>::new());
        assert_eq!(ahead(&w, 329_999), vec![1]);
    }

    #[test]
    fn label_partitions_hold_the_label_watermark_within_a_bound() {
        let mut w = Windows::new(60_000, 0, 100, 10);
        w.set_label_horizon(180_000, 120_000);
        w.observe("p", 0, 600_000);
        assert_eq!(w.label_watermark(), 600_000, "no label partition yet");
        w.observe_label("o", 0, 500_000);
        assert_eq!(w.label_watermark(), 500_000);
        // The predictions run a horizon plus max_ahead past the labels: paused.
        let ahead = |w: &Windows| {
            w.ahead(120_000)
                .map(|(t, _)| t.to_string())
                .collect::<Vec<_>>()
        };
        assert!(ahead(&w).is_empty());
        w.observe("p", 0, 800_001);
        assert_eq!(ahead(&w), vec!["p"]);
        // A label partition that stopped delivering holds it back at most
        // a horizon plus twice max_ahead.
        w.observe("p", 0, 1_000_000);
        assert_eq!(w.label_watermark(), 1_000_000 - 180_000 - 240_000);
        w.set_label_pending(vec![("o".into(), 1)]);
        assert_eq!(w.label_watermark(), 1_000_000 - 420_000);
    }

    #[test]
    fn pending_partitions_hold_the_watermark_until_they_deliver() {
        let mut w = Windows::new(60_000, 0, 100, 10);
        w.set_pending(vec![("t".into(), 1)]);
        w.observe("t", 0, 200_000);
        assert_eq!(w.watermark(), i64::MIN, "partition 1 has unread data");
        assert!(!w.is_late(5_000));
        w.observe("t", 1, 5_000);
        assert_eq!(w.watermark(), 5_000);
        w.observe("t", 1, 300_000);
        assert_eq!(w.watermark(), 200_000);
    }

    #[test]
    fn slow_partition_holds_back_closing() {
        let mut w = Windows::new(60_000, 0, 100, 10);
        w.observe("t", 0, 10_000);
        w.observe("t", 1, 200_000);
        assert_eq!(w.watermark(), 10_000);
        w.group_mut(0, 0, ("", ""), &[FeatureType::Numeric], 8);
        assert!(w.take_closable().is_empty());
        w.observe("t", 0, 60_000);
        assert_eq!(w.take_closable().len(), 1);
    }

    #[test]
    fn snapshot_round_trip_keeps_watermark_and_windows() {
        let mut w = Windows::new(60_000, 5_000, 10, 10);
        w.observe("t", 0, 70_000);
        let types = [FeatureType::Numeric, FeatureType::Categorical];
        let g = w.group_mut(60_000, 1, ("v", "B"), &types, 8).unwrap();
        num(g).push(7, 1.5);
        if let ColumnSummary::Categorical(c) = &mut g.columns[1] {
            c.push(Some("north"));
        }
        let snap = serde_json::to_string(&w.snapshot()).unwrap();
        let mut r = Windows::new(60_000, 5_000, 10, 10);
        r.restore(serde_json::from_str(&snap).unwrap());
        assert_eq!(r.watermark(), w.watermark());
        assert_eq!(r.open_windows(), 1);
        let all = r.take_all();
        assert_eq!(all[0].groups, w.take_all()[0].groups);
        assert_eq!(all[0].groups[0].columns[1].rows(), 1);
        assert!(r.is_late(60_000));
    }
}
