//! The join of labels (the outcomes topic) to predictions, in bounded state.
//!
//! A label resolves the prediction with the same `event_id`, whichever
//! arrives first and on whichever partition:
//! * a prediction of a model with a `task` waits in its event-time window
//!   (per version and variant) until the watermark passes the window's end
//!   plus the model's `label_horizon`; the window is then final and handed
//!   to the performance evaluator with its (prediction, label) pairs;
//! * a label that finds its prediction waiting labels it (the first label
//!   wins; later ones are counted as duplicates), unless its own event time
//!   is at or past the window's end plus the horizon: then it is a
//!   `late_label`, whether or not the window happens to be final yet when
//!   it is read (so the outcome does not depend on how far the label topic
//!   is read ahead of the predictions);
//! * a label that arrives first waits until the watermark passes the end of
//!   its own window (a prediction older than the label would be late by
//!   then), then goes to the dead letters as `unmatched_label`;
//! * a label for a prediction whose window is already final is a
//!   `late_label` (finalized event ids are remembered for one more horizon);
//!   one for an event never seen is an `unmatched_label`.
//!
//! **Bounded state.** At most `outcomes.max_pending` predictions and early
//! labels are held per model. Each event's key is `xxh3_64(event_id)`; only
//! keys at or below the model's *keep* threshold are held. When the limit is
//! reached the threshold halves and the entries above it are dropped, from
//! the predictions and the early labels alike, so both sides of the join
//! keep the same events without coordination. A window remembers the lowest
//! threshold in force while it was open; its metrics are then on a uniform
//! sample (`sampled`). The threshold doubles back, one step per final
//! window, while fewer than a quarter of the limit are held.
//!
//! Everything here is decided by the record sequence and the watermark, so
//! a replay after a crash (the state is in the checkpoint) makes the same
//! decisions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Config, Task};
use crate::event::{ModelCatalog, Reason};

/// A prediction or label value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A score or a regression value.
    Number(f64),
    /// A class.
    Class(String),
}

/// One prediction in a performance window, with its label once joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Event time of the prediction.
    pub ts: i64,
    /// The event id.
    pub event_id: String,
    /// What the model predicted.
    pub prediction: Value,
    /// The label, when it arrived.
    pub label: Option<Value>,
    hash: u64,
}

/// The predictions of one (version, variant) in a performance window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PerfGroup {
    /// Model version.
    pub version: String,
    /// Variant.
    pub variant: String,
    /// Every prediction of the group in the window (not only the sample).
    pub predictions: u64,
    /// The predictions held (all of them unless the window is sampled).
    pub pairs: Vec<Pair>,
}

/// A window whose labels are final.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceWindow {
    /// Index of the model in the catalog.
    pub model: usize,
    /// Window start, epoch ms.
    pub start: i64,
    /// Window end, epoch ms.
    pub end: i64,
    /// Whether the pairs are a sample of the window's predictions.
    pub sampled: bool,
    /// Groups in (version, variant) order.
    pub groups: Vec<PerfGroup>,
}

/// A label dead-lettered after it arrived (it waited in vain for its
/// prediction): where it came from and what it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelLetter {
    /// Topic (or file).
    pub source: String,
    /// Partition.
    pub partition: i32,
    /// Offset (or row).
    pub offset: i64,
    /// The outcome event as JSON (rebuilt from its fields).
    pub payload: String,
    /// Why.
    pub reason: Reason,
    /// The message.
    pub error: String,
}

/// Where an outcome record came from.
#[derive(Debug, Clone, Copy)]
pub struct LabelOrigin<'a> {
    /// Topic (or file).
    pub source: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset (or row).
    pub offset: i64,
}

/// What the join did since it was last asked (added to the run counters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Labels joined to a waiting prediction.
    pub joined: u64,
    /// Labels for an event that already had one.
    pub duplicates: u64,
    /// Labels and predictions dropped by the keep threshold.
    pub sampled_out: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Early {
    ts: i64,
    event_id: String,
    model: String,
    raw: String,
    label: Value,
    source: String,
    partition: i32,
    offset: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct OpenWindow {
    keep: u64,
    groups: Vec<PerfGroup>,
}

/// The join state of one model with a task.
#[derive(Debug, Clone)]
struct ModelJoin {
    name: String,
    task: Task,
    horizon_ms: i64,
    keep: u64,
    windows: BTreeMap<i64, OpenWindow>,
    /// Key → (window start, group, index) of a waiting prediction.
    index: HashMap<u64, (i64, u32, u32)>,
    early: HashMap<u64, Early>,
    /// (expiry, key) of early labels; stale entries are skipped.
    early_queue: BTreeSet<(i64, u64)>,
    /// Keys of finalized predictions → whether they were labelled.
    expired: HashMap<u64, bool>,
    expired_queue: VecDeque<(i64, u64)>,
}

impl ModelJoin {
    fn held(&self) -> usize {
        self.index.len() + self.early.len()
    }

    /// The lowest keep threshold of any open window (a label above it may
    /// belong to a prediction that was sampled out).
    fn floor(&self) -> u64 {
        self.windows
            .values()
            .map(|w| w.keep)
            .min()
            .unwrap_or(u64::MAX)
            .min(self.keep)
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (start, w) in &self.windows {
            for (gi, g) in w.groups.iter().enumerate() {
                for (pi, p) in g.pairs.iter().enumerate() {
                    self.index.insert(p.hash, (*start, gi as u32, pi as u32));
                }
            }
        }
    }

    /// Halves the keep threshold until at most `max` entries are held.
    fn shrink(&mut self, max: usize, stats: &mut JoinStats) {
        if self.held() <= max {
            return;
        }
        while self.held() > max && self.keep > 0 {
            self.keep /= 2;
            let keep = self.keep;
            for w in self.windows.values_mut() {
                w.keep = w.keep.min(keep);
                for g in &mut w.groups {
                    let before = g.pairs.len();
                    g.pairs.retain(|p| p.hash <= keep);
                    stats.sampled_out += (before - g.pairs.len()) as u64;
                }
            }
            let before = self.early.len();
            self.early.retain(|h, _| *h <= keep);
            stats.sampled_out += (before - self.early.len()) as u64;
            self.reindex();
        }
        tracing::info!(model = %self.name, keep_share = self.keep as f64 / u64::MAX as f64,
            "outcomes.max_pending reached: the join keeps a sample of events");
    }
}

/// The join of every model with a task.
#[derive(Debug, Clone)]
pub struct LabelJoin {
    size_ms: i64,
    max_pending: usize,
    models: Vec<Option<ModelJoin>>,
    letters: Vec<LabelLetter>,
    stats: JoinStats,
}

/// Serializable state of the join (part of the checkpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabelsSnapshot {
    /// Per model name.
    pub models: BTreeMap<String, ModelSnapshot>,
    /// Dead letters not yet handed over.
    #[serde(default)]
    pub letters: Vec<LabelLetter>,
}

/// One model's join state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelSnapshot {
    keep: u64,
    /// (start, keep, groups: (version, variant, predictions, pairs as
    /// (ts, event_id, prediction, label))).
    #[allow(clippy::type_complexity)]
    windows: Vec<(
        i64,
        u64,
        Vec<(
            String,
            String,
            u64,
            Vec<(i64, String, Value, Option<Value>)>,
        )>,
    )>,
    early: Vec<Early>,
    /// (expiry, event key, labelled).
    expired: Vec<(i64, u64, bool)>,
}

impl LabelJoin {
    /// The join for `config`'s models (those without a task take no part).
    pub fn new(config: &Config, catalog: &ModelCatalog) -> Self {
        let models = catalog
            .models
            .iter()
            .map(|m| {
                let mc = config.models.get(&m.name)?;
                Some(ModelJoin {
                    name: m.name.clone(),
                    task: mc.task?,
                    horizon_ms: mc.label_horizon.as_millis() as i64,
                    keep: u64::MAX,
                    windows: BTreeMap::new(),
                    index: HashMap::new(),
                    early: HashMap::new(),
                    early_queue: BTreeSet::new(),
                    expired: HashMap::new(),
                    expired_queue: VecDeque::new(),
                })
            })
            .collect();
        Self {
            size_ms: config.window.size.as_millis() as i64,
            max_pending: config.outcomes.max_pending,
            models,
            letters: Vec::new(),
            stats: JoinStats::default(),
        }
    }

    /// Whether model `model` joins labels.
    pub fn joins(&self, model: usize) -> bool {
        self.models.get(model).is_some_and(Option::is_some)
    }

    /// Predictions and early labels held, over every model.
    pub fn held(&self) -> usize {
        self.models.iter().flatten().map(ModelJoin::held).sum()
    }

    /// A prediction of `model` in the window starting at `start`.
    pub fn prediction(
        &mut self,
        model: usize,
        start: i64,
        (version, variant): (&str, &str),
        event_id: &str,
        ts: i64,
        prediction: Value,
    ) {
        let max = self.max_pending;
        let Some(Some(m)) = self.models.get_mut(model) else {
            return;
        };
        let hash = xxh3_64(event_id.as_bytes());
        let keep = m.keep;
        let w = m.windows.entry(start).or_insert_with(|| OpenWindow {
            keep,
            groups: Vec::new(),
        });
        let gi = match w
            .groups
            .iter()
            .position(|g| g.version == version && g.variant == variant)
        {
            Some(i) => i,
            None => {
                w.groups.push(PerfGroup {
                    version: version.to_string(),
                    variant: variant.to_string(),
                    ..Default::default()
                });
                w.groups.len() - 1
            }
        };
        w.groups[gi].predictions += 1;
        if hash > w.keep {
            self.stats.sampled_out += 1;
            return;
        }
        if m.index.contains_key(&hash) {
            // The same event logged twice: the first prediction is joined.
            return;
        }
        let deadline = start + self.size_ms + m.horizon_ms;
        let label = match m.early.get(&hash) {
            Some(e) if e.event_id == event_id => match m.early.remove(&hash) {
                Some(e) if e.ts >= deadline => {
                    self.letters.push(late(e, deadline));
                    None
                }
                e => e.map(|e| e.label),
            },
            _ => None,
        };
        if label.is_some() {
            self.stats.joined += 1;
        }
        let g = &mut w.groups[gi];
        g.pairs.push(Pair {
            ts,
            event_id: event_id.to_string(),
            prediction,
            label,
            hash,
        });
        m.index
            .insert(hash, (start, gi as u32, (g.pairs.len() - 1) as u32));
        m.shrink(max, &mut self.stats);
    }

    /// A label of `model` for `event_id` at `ts`. `Err` refuses it now
    /// (reason, message); `Ok` means joined, waiting, or counted.
    pub fn outcome(
        &mut self,
        model: usize,
        event_id: &str,
        ts: i64,
        raw: &str,
        origin: LabelOrigin<'_>,
        watermark: i64,
    ) -> Result<(), (Reason, String)> {
        let (size, max) = (self.size_ms, self.max_pending);
        let Some(Some(m)) = self.models.get_mut(model) else {
            return Ok(());
        };
        let label = match m.task {
            Task::Regression => match raw.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Value::Number(v),
                _ => {
                    return Err((
                        Reason::WrongType,
                        format!("label `{raw}` is not a number (the model's task is regression)"),
                    ));
                }
            },
            _ => Value::Class(raw.to_string()),
        };
        let hash = xxh3_64(event_id.as_bytes());
        if let Some(&(start, gi, pi)) = m.index.get(&hash) {
            let w = m.windows.get_mut(&start).expect("indexed window exists");
            let p = &mut w.groups[gi as usize].pairs[pi as usize];
            if p.event_id == event_id {
                let deadline = start + size + m.horizon_ms;
                if p.label.is_some() {
                    self.stats.duplicates += 1;
                } else if ts >= deadline {
                    return Err((
                        Reason::LateLabel,
                        format!(
                            "label time {ts} is at or past its prediction's window end plus the label horizon ({deadline})"
                        ),
                    ));
                } else {
                    p.label = Some(label);
                    self.stats.joined += 1;
                }
                return Ok(());
            }
        }
        if m.early.get(&hash).is_some_and(|e| e.event_id == event_id) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if let Some(&labelled) = m.expired.get(&hash) {
            if labelled {
                self.stats.duplicates += 1;
                return Ok(());
            }
            return Err((
                Reason::LateLabel,
                format!(
                    "the performance of its prediction's window is final (the watermark {watermark} passed the window's end plus the label horizon of {} ms)",
                    m.horizon_ms
                ),
            ));
        }
        if hash > m.floor() {
            self.stats.sampled_out += 1;
            return Ok(());
        }
        let expiry = ts.div_euclid(size) * size + size;
        if expiry <= watermark {
            return Err((
                Reason::UnmatchedLabel,
                format!(
                    "no prediction with event_id `{event_id}` is waiting for a label, and one older than the label would be late (watermark {watermark})"
                ),
            ));
        }
        m.early.insert(
            hash,
            Early {
                ts,
                event_id: event_id.to_string(),
                model: m.name.clone(),
                raw: raw.to_string(),
                label,
                source: origin.source.to_string(),
                partition: origin.partition,
                offset: origin.offset,
            },
        );
        m.early_queue.insert((expiry, hash));
        m.shrink(max, &mut self.stats);
        Ok(())
    }

    /// The windows whose labels are final at `watermark` (their end plus
    /// the horizon has passed), and the early labels that expired (as dead
    /// letters, see [`LabelJoin::take_letters`]).
    pub fn take_final(&mut self, watermark: i64) -> Vec<PerformanceWindow> {
        self.take(
            |end, horizon| end.saturating_add(horizon) <= watermark,
            watermark,
        )
    }

    /// Every open window and early label (end of input).
    pub fn take_all(&mut self) -> Vec<PerformanceWindow> {
        self.take(|_, _| true, i64::MAX)
    }

    fn take(&mut self, ready: impl Fn(i64, i64) -> bool, watermark: i64) -> Vec<PerformanceWindow> {
        let (size, max) = (self.size_ms, self.max_pending);
        let mut out = Vec::new();
        for (mi, slot) in self.models.iter_mut().enumerate() {
            let Some(m) = slot else { continue };
            while let Some(&(expiry, hash)) = m.early_queue.first() {
                if expiry > watermark {
                    break;
                }
                m.early_queue.pop_first();
                if let Some(e) = m.early.remove(&hash) {
                    self.letters.push(unmatched(e));
                }
            }
            let starts: Vec<i64> = m
                .windows
                .keys()
                .copied()
                .take_while(|s| ready(s + size, m.horizon_ms))
                .collect();
            for start in starts {
                let Some(mut w) = m.windows.remove(&start) else {
                    continue;
                };
                let end = start + size;
                let until = end.saturating_add(2 * m.horizon_ms);
                for g in &w.groups {
                    for p in &g.pairs {
                        m.index.remove(&p.hash);
                        m.expired.insert(p.hash, p.label.is_some());
                        m.expired_queue.push_back((until, p.hash));
                    }
                }
                w.groups
                    .sort_by(|a, b| (&a.version, &a.variant).cmp(&(&b.version, &b.variant)));
                out.push(PerformanceWindow {
                    model: mi,
                    start,
                    end,
                    sampled: w.keep < u64::MAX,
                    groups: w.groups,
                });
            }
            while let Some(&(until, hash)) = m.expired_queue.front() {
                if until > watermark && m.expired_queue.len() <= max {
                    break;
                }
                m.expired_queue.pop_front();
                m.expired.remove(&hash);
            }
            if m.keep < u64::MAX && m.held() * 4 < max {
                m.keep = m.keep.saturating_mul(2).saturating_add(1);
            }
        }
        out.sort_by_key(|w| (w.start, w.model));
        out
    }

    /// Labels that waited in vain, to be dead-lettered.
    pub fn take_letters(&mut self) -> Vec<LabelLetter> {
        std::mem::take(&mut self.letters)
    }

    /// What the join did since the last call.
    pub fn take_stats(&mut self) -> JoinStats {
        std::mem::take(&mut self.stats)
    }

    /// The state for the checkpoint.
    pub fn snapshot(&self) -> LabelsSnapshot {
        let mut models = BTreeMap::new();
        for m in self.models.iter().flatten() {
            let windows = m
                .windows
                .iter()
                .map(|(s, w)| {
                    let groups = w
                        .groups
                        .iter()
                        .map(|g| {
                            let pairs = g
                                .pairs
                                .iter()
                                .map(|p| {
                                    (
                                        p.ts,
                                        p.event_id.clone(),
                                        p.prediction.clone(),
                                        p.label.clone(),
                                    )
                                })
                                .collect();
                            (g.version.clone(), g.variant.clone(), g.predictions, pairs)
                        })
                        .collect();
                    (*s, w.keep, groups)
                })
                .collect();
            let mut early: Vec<Early> = m.early.values().cloned().collect();
            early.sort_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
            let expired = m
                .expired_queue
                .iter()
                .filter_map(|(until, h)| m.expired.get(h).map(|l| (*until, *h, *l)))
                .collect();
            models.insert(
                m.name.clone(),
                ModelSnapshot {
                    keep: m.keep,
                    windows,
                    early,
                    expired,
                },
            );
        }
        LabelsSnapshot {
            models,
            letters: self.letters.clone(),
        }
    }

    /// Restores [`LabelJoin::snapshot`]'s state (models no longer
    /// configured with a task are dropped).
    pub fn restore(&mut self, snap: LabelsSnapshot) {
        let size = self.size_ms;
        self.letters = snap.letters;
        for m in self.models.iter_mut().flatten() {
            let Some(s) = snap.models.get(&m.name) else {
                continue;
            };
            m.keep = s.keep;
            m.windows = s
                .windows
                .iter()
                .map(|(start, keep, groups)| {
                    let groups = groups
                        .iter()
                        .map(|(version, variant, predictions, pairs)| PerfGroup {
                            version: version.clone(),
                            variant: variant.clone(),
                            predictions: *predictions,
                            pairs: pairs
                                .iter()
                                .map(|(ts, id, p, l)| Pair {
                                    ts: *ts,
                                    hash: xxh3_64(id.as_bytes()),
                                    event_id: id.clone(),
                                    prediction: p.clone(),
                                    label: l.clone(),
                                })
                                .collect(),
                        })
                        .collect();
                    (
                        *start,
                        OpenWindow {
                            keep: *keep,
                            groups,
                        },
                    )
                })
                .collect();
            m.reindex();
            m.early.clear();
            m.early_queue.clear();
            for e in &s.early {
                let hash = xxh3_64(e.event_id.as_bytes());
                m.early_queue
                    .insert((e.ts.div_euclid(size) * size + size, hash));
                m.early.insert(hash, e.clone());
            }
            m.expired.clear();
            m.expired_queue.clear();
            for (until, h, l) in &s.expired {
                m.expired.insert(*h, *l);
                m.expired_queue.push_back((*until, *h));
            }
        }
    }
}

/// A labelled pair of event `e{i}` (tests elsewhere).
#[cfg(test)]
pub(crate) fn test_pair(i: usize, score: f64, label: &str) -> Pair {
    let event_id = format!("e{i}");
    Pair {
        ts: i as i64,
        hash: xxh3_64(event_id.as_bytes()),
        event_id,
        prediction: Value::Number(score),
        label: Some(Value::Class(label.to_string())),
    }
}

fn late(e: Early, deadline: i64) -> LabelLetter {
    let error = format!(
        "label time {} is at or past its prediction's window end plus the label horizon ({deadline})",
        e.ts
    );
    LabelLetter {
        reason: Reason::LateLabel,
        error,
        ..unmatched(e)
    }
}

fn unmatched(e: Early) -> LabelLetter {
    let payload = serde_json::json!({
        "event_id": e.event_id,
        "ts": e.ts,
        "model": e.model,
        "label": e.raw,
    })
    .to_string();
    LabelLetter {
        source: e.source,
        partition: e.partition,
        offset: e.offset,
        payload,
        reason: Reason::UnmatchedLabel,
        error: format!(
            "no prediction with event_id `{}` arrived before the watermark passed the label's window",
            e.event_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(max_pending: usize) -> LabelJoin {
        let cfg = Config::from_toml_str(&format!(
            "[outcomes]\nmax_pending = {max_pending}\n[window]\nsize = \"1m\"\n\
             [models.m]\nreference = \"r.csv\"\ntask = \"binary\"\nlabel_horizon = \"2m\"\n\
             [models.m.features]\nx = \"numeric\""
        ))
        .unwrap();
        LabelJoin::new(&cfg, &ModelCatalog::from_config(&cfg))
    }

    const O: LabelOrigin<'static> = LabelOrigin {
        source: "outcomes",
        partition: 0,
        offset: 7,
    };

    #[test]
    fn labels_join_either_way_and_windows_wait_for_the_horizon() {
        let mut j = join(100);
        j.prediction(0, 0, ("1", ""), "a", 1_000, Value::Number(0.9));
        j.outcome(0, "a", 5_000, "1", O, i64::MIN).unwrap();
        j.outcome(0, "b", 2_000, "0", O, i64::MIN).unwrap(); // before its prediction
        j.prediction(0, 0, ("1", ""), "b", 1_500, Value::Number(0.2));
        j.outcome(0, "a", 6_000, "0", O, i64::MIN).unwrap(); // duplicate
        assert_eq!(
            j.take_stats(),
            JoinStats {
                joined: 2,
                duplicates: 1,
                sampled_out: 0
            }
        );
        assert!(
            j.take_final(60_000 + 119_999).is_empty(),
            "the horizon has not passed"
        );
        let w = j.take_final(180_000);
        assert_eq!(w.len(), 1);
        let labels: Vec<_> = w[0].groups[0]
            .pairs
            .iter()
            .map(|p| p.label.clone())
            .collect();
        assert_eq!(
            labels,
            vec![
                Some(Value::Class("1".into())),
                Some(Value::Class("0".into()))
            ]
        );
        // After the window is final: late, or duplicate when it had one.
        let e = j.outcome(0, "a", 190_000, "1", O, 180_000);
        assert!(e.is_ok());
        assert_eq!(j.take_stats().duplicates, 1);
        j.prediction(0, 120_000, ("1", ""), "c", 121_000, Value::Number(0.5));
        let w = j.take_final(120_000 + 180_000);
        assert_eq!(w.len(), 1);
        let e = j.outcome(0, "c", 400_000, "1", O, 300_000).unwrap_err();
        assert_eq!(e.0, Reason::LateLabel);
        let e = j.outcome(0, "zzz", 10_000, "1", O, 300_000).unwrap_err();
        assert_eq!(e.0, Reason::UnmatchedLabel);
        // Past the horizon by its own event time: late even though the
        // window is still waiting, whichever side came first.
        j.prediction(0, 300_000, ("1", ""), "d", 301_000, Value::Number(0.5));
        let e = j.outcome(0, "d", 540_000, "1", O, 300_000).unwrap_err();
        assert_eq!(e.0, Reason::LateLabel);
        j.outcome(0, "f", 540_000, "1", O, 300_000).unwrap();
        j.prediction(0, 300_000, ("1", ""), "f", 302_000, Value::Number(0.5));
        let l = j.take_letters();
        assert_eq!((l.len(), l[0].reason), (1, Reason::LateLabel));
        let w = j.take_all();
        assert!(w[0].groups[0].pairs.iter().all(|p| p.label.is_none()));
    }

    #[test]
    fn an_early_label_without_prediction_expires_as_a_dead_letter() {
        let mut j = join(100);
        j.outcome(0, "x", 70_000, "1", O, 0).unwrap();
        assert!(j.take_final(119_999).is_empty());
        assert!(j.take_letters().is_empty());
        j.take_final(120_000);
        let l = j.take_letters();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].reason, l[0].offset), (Reason::UnmatchedLabel, 7));
        assert!(l[0].payload.contains("\"event_id\":\"x\""));
    }

    #[test]
    fn past_max_pending_both_sides_keep_the_same_hash_sample() {
        let mut j = join(1_000);
        for i in 0..5_000 {
            let id = format!("e{i}");
            if i % 2 == 0 {
                j.outcome(0, &id, 30_000, "1", O, i64::MIN).unwrap();
                j.prediction(0, 0, ("1", ""), &id, 1_000, Value::Number(0.7));
            } else {
                j.prediction(0, 0, ("1", ""), &id, 1_000, Value::Number(0.7));
                j.outcome(0, &id, 30_000, "1", O, i64::MIN).unwrap();
            }
            assert!(j.held() <= 1_000);
        }
        let w = j.take_final(i64::MAX - 1);
        assert!(w[0].sampled);
        let g = &w[0].groups[0];
        assert_eq!(g.predictions, 5_000);
        assert!(
            g.pairs.len() > 250 && g.pairs.len() <= 1_000,
            "{}",
            g.pairs.len()
        );
        assert!(
            g.pairs.iter().all(|p| p.label.is_some()),
            "kept predictions keep their labels"
        );
        assert!(
            j.take_letters().is_empty(),
            "sampled-out labels are not unmatched"
        );
    }

    #[test]
    fn snapshot_round_trip() {
        let mut j = join(100);
        j.prediction(0, 0, ("1", "A"), "a", 1_000, Value::Number(0.9));
        j.outcome(0, "b", 2_000, "0", O, i64::MIN).unwrap();
        let snap: LabelsSnapshot =
            serde_json::from_str(&serde_json::to_string(&j.snapshot()).unwrap()).unwrap();
        let mut r = join(100);
        r.restore(snap);
        r.outcome(0, "a", 3_000, "1", O, i64::MIN).unwrap();
        r.prediction(0, 0, ("1", "A"), "b", 1_500, Value::Number(0.1));
        let w = r.take_all();
        assert_eq!(w[0].groups[0].pairs.len(), 2);
        assert!(w[0].groups[0].pairs.iter().all(|p| p.label.is_some()));
    }
}
