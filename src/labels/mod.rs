//! The join of labels (the outcomes topic) to predictions, in bounded state.
//!
//! A label resolves the prediction with the same `event_id`, whichever
//! arrives first and on whichever partition:
//! * a prediction of a model with a `task` waits in its event-time window
//!   (per version and variant) until the *label watermark* passes the
//!   window's end plus the model's `label_horizon`; the window is then final
//!   and handed to the performance evaluator with its (prediction, label)
//!   pairs;
//! * a label that finds its prediction waiting labels it (the first label
//!   wins; later ones are counted as duplicates), unless its own event time
//!   is at or past the window's end plus the horizon: then it is a
//!   `late_label`, whether or not the window happens to be final yet when
//!   it is read;
//! * a label that arrives first waits until the watermark passes the end of
//!   the window after its own (a prediction older than that would be late by
//!   then; one window of grace for clocks that disagree), then goes to the
//!   dead letters as `unmatched_label`;
//! * a label for a prediction whose window is already final is a
//!   `late_label` (the ids of final predictions are remembered for one more
//!   horizon, at most four times `outcomes.max_pending` of them); one for an
//!   event never seen is an `unmatched_label`.
//!
//! **Bounded state.** A window holds at most `k` predictions per model: the
//! ones with the smallest `xxh3_64(event_id)` (a bottom-k sample), where `k`
//! is `outcomes.max_pending` divided by the number of windows that can be
//! waiting at once (the label horizon, twice `window.max_ahead` and the
//! allowed lateness, in windows, plus three). Which predictions a window
//! keeps depends only on which predictions it got, never on their order, so
//! a restart or another interleaving of partitions keeps the same ones. A
//! prediction pushed out of the sample takes its label with it; an early
//! label whose prediction turns out not to be kept is dropped with it; a
//! label whose key is above the sample's bound in every window its
//! prediction could be in is counted as sampled out, not dead-lettered. A
//! window that left a prediction out says `sampled`: its metrics are on a
//! uniform sample of its predictions (`n_predictions` stays exact). Early
//! labels are capped at `outcomes.max_pending` too, keeping those with the
//! smallest keys (the ones samples keep); label partitions more than
//! `window.max_ahead` ahead of the predictions are paused, so the cap is a
//! safety net, and only when it lets a label go that a sample would have
//! kept can a different interleaving change a result.
//!
//! The step calls [`LabelJoin::advance`] after every record, so expiry and
//! finality are decided at the same record on a replay; the checkpoint holds
//! the whole state.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Config, Task};
use crate::event::{ModelCatalog, Reason};

/// A prediction or label value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A score or a regression value (finite).
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
    pub(crate) hash: u64,
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
    /// Predictions and labels left out by the sample.
    pub sampled_out: u64,
}

/// An early label in the checkpoint.
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

/// An early label as held: most labels of a sampled window wait as these
/// until they expire, so one allocation holds the event id and the label's
/// text (the label is parsed again on a join), and the source (topic or
/// file) is shared between consecutive labels.
#[derive(Debug, Clone)]
struct Held {
    ts: i64,
    /// The event id, then the label as given.
    text: Box<str>,
    id_len: usize,
    source: Arc<str>,
    partition: i32,
    offset: i64,
    /// The label as a checkpoint holds it (parsed under the task of its
    /// time, which a restart's config may have changed); `None`: parsed
    /// from the text under the model's task.
    restored: Option<Box<Value>>,
}

impl Held {
    fn event_id(&self) -> &str {
        &self.text[..self.id_len]
    }

    fn raw(&self) -> &str {
        &self.text[self.id_len..]
    }

    fn to_early(&self, model: &str, task: Task) -> Early {
        Early {
            ts: self.ts,
            event_id: self.event_id().to_string(),
            model: model.to_string(),
            raw: self.raw().to_string(),
            label: self.label(task),
            source: self.source.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    fn from_early(e: &Early) -> Self {
        Held {
            ts: e.ts,
            text: format!("{}{}", e.event_id, e.raw).into_boxed_str(),
            id_len: e.event_id.len(),
            source: Arc::from(e.source.as_str()),
            partition: e.partition,
            offset: e.offset,
            restored: Some(Box::new(e.label.clone())),
        }
    }

    /// The label's value (its text was checked under `task` when held).
    fn label(&self, task: Task) -> Value {
        match &self.restored {
            Some(v) => (**v).clone(),
            None => {
                label_value(task, self.raw()).unwrap_or_else(|_| Value::Class(self.raw().into()))
            }
        }
    }
}

/// A label's value for a model's task: a finite number for regression, a
/// class otherwise; `Err` with the message when it is not.
fn label_value(task: Task, raw: &str) -> Result<Value, String> {
    match task {
        Task::Regression => match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Value::Number(v)),
            _ => Err(format!(
                "label `{raw}` is not a number (the model's task is regression)"
            )),
        },
        _ => Ok(Value::Class(raw.to_string())),
    }
}

/// Hashes a key that already is a hash (`xxh3_64` of the event id) by
/// using it as is: the maps of the join are keyed by such hashes, and
/// hashing them again (SipHash) would be most of a lookup's cost.
#[derive(Debug, Clone, Copy, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A map keyed by event-id hashes.
type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A performance window still waiting for labels.
#[derive(Debug, Clone, Default)]
struct OpenWindow {
    /// Keys of the pairs held (a max-heap: the first to go).
    keys: BinaryHeap<u64>,
    /// Whether a prediction was left out.
    sampled: bool,
    groups: Vec<PerfGroup>,
}

impl OpenWindow {
    /// The largest key the window can still take.
    fn bound(&self, k: usize) -> u64 {
        if self.keys.len() < k {
            u64::MAX
        } else {
            self.keys
                .peek()
                .copied()
                .unwrap_or(u64::MAX)
                .saturating_sub(1)
        }
    }
}

/// The join state of one model with a task.
#[derive(Debug, Clone)]
struct ModelJoin {
    name: String,
    task: Task,
    horizon_ms: i64,
    windows: BTreeMap<i64, OpenWindow>,
    /// Key → (window start, group, index) of a waiting prediction.
    index: KeyMap<(i64, u32, u32)>,
    early: KeyMap<Held>,
    /// Keys of the early labels by expiry (may hold keys of labels that
    /// left since, checked at expiry; rebuilt when mostly those).
    early_queue: BTreeMap<i64, Vec<u64>>,
    /// Keys in `early_queue`.
    queued: usize,
    /// The source of the last early label (shared by the next ones).
    last_source: Option<Arc<str>>,
    /// Keys of the early labels, largest first (may hold keys of labels
    /// that left since; rebuilt when mostly those).
    early_keys: BinaryHeap<u64>,
    /// Keys of finalized predictions → whether they were labelled.
    expired: KeyMap<bool>,
    expired_queue: VecDeque<(i64, u64)>,
    /// The bound of each recently final window, by start.
    history: BTreeMap<i64, u64>,
}

fn window_start(ts: i64, size: i64) -> i64 {
    ts.div_euclid(size) * size
}

/// When an early label at `ts` stops waiting: the end of the window after
/// its own.
fn early_expiry(ts: i64, size: i64) -> i64 {
    window_start(ts, size).saturating_add(2 * size)
}

/// The first window a prediction labelled at `ts` can be in (its ceiling
/// spans from there to the window after the label's).
fn ceiling_lo(ts: i64, size: i64, horizon_ms: i64) -> i64 {
    window_start(ts.saturating_sub(horizon_ms.saturating_add(size)), size)
}

/// Final ids remembered per model, as a multiple of `outcomes.max_pending`.
const EXPIRED_FACTOR: usize = 4;

impl ModelJoin {
    /// The largest bound a prediction labelled at `ts` may face, counting
    /// the candidate windows that do not exist yet as unbounded (`at_expiry`
    /// false), or, once every candidate window is closed to predictions
    /// (`at_expiry`), over the windows that exist (`None`: none does). A
    /// label above it belongs to a prediction the sample leaves out.
    fn ceiling_for(&self, ts: i64, size: i64, k: usize, at_expiry: bool) -> Option<u64> {
        let lo = ceiling_lo(ts, size, self.horizon_ms);
        let hi = window_start(ts, size).saturating_add(size);
        // In event-time order the window after the label's own is mostly
        // still to come, which bounds nothing: no need to look further.
        if !at_expiry && !self.windows.contains_key(&hi) && !self.history.contains_key(&hi) {
            return Some(u64::MAX);
        }
        let mut ceiling: Option<u64> = None;
        let mut start = lo;
        while start <= hi {
            let bound = match (self.windows.get(&start), self.history.get(&start)) {
                (Some(w), _) => Some(w.bound(k)),
                (None, Some(b)) => Some(*b),
                (None, None) if at_expiry => None,
                (None, None) => Some(u64::MAX),
            };
            ceiling = ceiling.max(bound);
            start = start.saturating_add(size);
        }
        ceiling
    }

    /// Holds an early label, keeping the `max` with the smallest keys (the
    /// ones the windows' samples keep); returns how many were let go.
    fn hold_early(&mut self, hash: u64, e: Held, size: i64, max: usize) -> u64 {
        self.early_queue
            .entry(early_expiry(e.ts, size))
            .or_default()
            .push(hash);
        self.queued += 1;
        self.early.insert(hash, e);
        self.early_keys.push(hash);
        let mut dropped = 0;
        while self.early.len() > max {
            let Some(h) = self.early_keys.pop() else {
                break;
            };
            if self.remove_early(h).is_some() {
                dropped += 1;
            }
        }
        if self.early_keys.len() > 2 * self.early.len() + 64 {
            self.early_keys = self.early.keys().copied().collect();
        }
        if self.queued > 2 * self.early.len() + 64 {
            self.requeue_early(size);
        }
        dropped
    }

    /// Rebuilds the expiry queue from the early labels held.
    fn requeue_early(&mut self, size: i64) {
        self.early_queue.clear();
        for (hash, e) in &self.early {
            self.early_queue
                .entry(early_expiry(e.ts, size))
                .or_default()
                .push(*hash);
        }
        self.queued = self.early.len();
    }

    /// Removes the early label of `hash` (its key stays queued until its
    /// expiry finds it gone).
    fn remove_early(&mut self, hash: u64) -> Option<Held> {
        self.early.remove(&hash)
    }

    /// The shared source `name`.
    fn source(&mut self, name: &str) -> Arc<str> {
        match &self.last_source {
            Some(s) if &**s == name => s.clone(),
            _ => {
                let s: Arc<str> = Arc::from(name);
                self.last_source = Some(s.clone());
                s
            }
        }
    }

    /// Removes the pair with the largest key of the window at `start` (the
    /// sample's next to go); returns whether it had a label.
    fn evict_largest(&mut self, start: i64) -> bool {
        let Some(w) = self.windows.get_mut(&start) else {
            return false;
        };
        let Some(hash) = w.keys.pop() else {
            return false;
        };
        w.sampled = true;
        let Some((_, gi, pi)) = self.index.remove(&hash) else {
            return false;
        };
        let g = &mut w.groups[gi as usize];
        let gone = g.pairs.swap_remove(pi as usize);
        if let Some(moved) = g.pairs.get(pi as usize) {
            self.index.insert(moved.hash, (start, gi, pi));
        }
        gone.label.is_some()
    }
}

/// The join of every model with a task.
#[derive(Debug, Clone)]
pub struct LabelJoin {
    size_ms: i64,
    max_pending: usize,
    /// Predictions a window holds at most.
    per_window: usize,
    models: Vec<Option<ModelJoin>>,
    letters: Vec<LabelLetter>,
    /// Windows that became final, until the step hands them over.
    finals: Vec<PerformanceWindow>,
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

/// A group of a window in the checkpoint: (version, variant, predictions,
/// pairs as (ts, event_id, prediction, label)).
type GroupSnapshot = (
    String,
    String,
    u64,
    Vec<(i64, String, Value, Option<Value>)>,
);

impl LabelsSnapshot {
    /// Start of the earliest performance window still waiting for labels.
    pub fn first_pending(&self) -> Option<i64> {
        self.models
            .values()
            .flat_map(|m| m.windows.iter().map(|w| w.0))
            .min()
    }
}

/// One model's join state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelSnapshot {
    /// (start, sampled, groups).
    windows: Vec<(i64, bool, Vec<GroupSnapshot>)>,
    early: Vec<Early>,
    /// (expiry, event key, labelled).
    expired: Vec<(i64, u64, bool)>,
    /// (window start, bound) of recently final windows.
    history: Vec<(i64, u64)>,
}

impl LabelJoin {
    /// The join for `config`'s models (those without a task take no part).
    pub fn new(config: &Config, catalog: &ModelCatalog) -> Self {
        let size = (config.window.size.as_millis() as i64).max(1);
        let models: Vec<Option<ModelJoin>> = catalog
            .models
            .iter()
            .map(|m| {
                let mc = config.models.get(&m.name)?;
                Some(ModelJoin {
                    name: m.name.clone(),
                    task: mc.task?,
                    horizon_ms: mc.label_horizon.as_millis() as i64,
                    windows: BTreeMap::new(),
                    index: KeyMap::default(),
                    early: KeyMap::default(),
                    early_queue: BTreeMap::new(),
                    queued: 0,
                    last_source: None,
                    early_keys: BinaryHeap::new(),
                    expired: KeyMap::default(),
                    expired_queue: VecDeque::new(),
                    history: BTreeMap::new(),
                })
            })
            .collect();
        let horizon = models
            .iter()
            .flatten()
            .map(|m| m.horizon_ms)
            .max()
            .unwrap_or(0);
        let span = horizon
            .saturating_add(2 * config.window.max_ahead_ms())
            .saturating_add(config.window.allowed_lateness.as_millis() as i64)
            / size
            + 3;
        let max_pending = config.outcomes.max_pending;
        Self {
            size_ms: size,
            max_pending,
            per_window: (max_pending / span.max(1) as usize).max(1),
            models,
            letters: Vec::new(),
            finals: Vec::new(),
            stats: JoinStats::default(),
        }
    }

    /// Whether model `model` joins labels.
    pub fn joins(&self, model: usize) -> bool {
        self.models.get(model).is_some_and(Option::is_some)
    }

    /// Predictions and early labels held, over every model.
    pub fn held(&self) -> usize {
        self.models
            .iter()
            .flatten()
            .map(|m| m.index.len() + m.early.len())
            .sum()
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
        let (size, k) = (self.size_ms, self.per_window);
        let Some(Some(m)) = self.models.get_mut(model) else {
            return;
        };
        let hash = xxh3_64(event_id.as_bytes());
        if let Some(&(s, gi, pi)) = m.index.get(&hash)
            && m.windows[&s].groups[gi as usize].pairs[pi as usize].event_id == event_id
        {
            // The same event logged twice: the first prediction counts.
            return;
        }
        let w = m.windows.entry(start).or_default();
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
        let early = m.early.get(&hash).is_some_and(|e| e.event_id() == event_id);
        if hash > w.bound(k) {
            // Left out by the sample, and its early label with it.
            w.sampled = true;
            self.stats.sampled_out += 1;
            if early {
                m.remove_early(hash);
                self.stats.sampled_out += 1;
            }
            return;
        }
        if w.keys.len() >= k {
            let labelled = m.evict_largest(start);
            self.stats.sampled_out += 1 + u64::from(labelled);
        }
        let deadline = start.saturating_add(size).saturating_add(m.horizon_ms);
        let label = match early.then(|| m.remove_early(hash)).flatten() {
            Some(e) if e.ts >= deadline => {
                self.letters.push(late(&e, &m.name, deadline));
                None
            }
            e => e.map(|e| e.label(m.task)),
        };
        if label.is_some() {
            self.stats.joined += 1;
        }
        let w = m.windows.get_mut(&start).expect("created above");
        w.keys.push(hash);
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
        let (size, max, k) = (self.size_ms, self.max_pending, self.per_window);
        let Some(Some(m)) = self.models.get_mut(model) else {
            return Ok(());
        };
        // A wrong label is refused now, whatever would become of it.
        let number = match m.task {
            Task::Regression => match label_value(m.task, raw) {
                Ok(Value::Number(v)) => Some(v),
                Ok(Value::Class(_)) => None,
                Err(e) => return Err((Reason::WrongType, e)),
            },
            _ => None,
        };
        let hash = xxh3_64(event_id.as_bytes());
        if let Some(&(start, gi, pi)) = m.index.get(&hash) {
            let w = m.windows.get_mut(&start).expect("indexed window exists");
            let p = &mut w.groups[gi as usize].pairs[pi as usize];
            if p.event_id == event_id {
                let deadline = start.saturating_add(size).saturating_add(m.horizon_ms);
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
                    p.label = Some(match number {
                        Some(v) => Value::Number(v),
                        None => Value::Class(raw.to_string()),
                    });
                    self.stats.joined += 1;
                }
                return Ok(());
            }
        }
        if m.early.get(&hash).is_some_and(|e| e.event_id() == event_id) {
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
                    "the performance of its prediction's window is final (its end plus the label horizon of {} ms has passed)",
                    m.horizon_ms
                ),
            ));
        }
        if m.ceiling_for(ts, size, k, false).is_some_and(|c| hash > c) {
            // Every window its prediction can be in has left it out.
            self.stats.sampled_out += 1;
            return Ok(());
        }
        let expiry = early_expiry(ts, size);
        if expiry <= watermark {
            if m.ceiling_for(ts, size, k, true).is_some_and(|c| hash > c) {
                self.stats.sampled_out += 1;
                return Ok(());
            }
            return Err((
                Reason::UnmatchedLabel,
                format!(
                    "no prediction with event_id `{event_id}` is waiting for a label, and one older than the label would be late"
                ),
            ));
        }
        let mut text = String::with_capacity(event_id.len() + raw.len());
        text.push_str(event_id);
        text.push_str(raw);
        let early = Held {
            ts,
            text: text.into_boxed_str(),
            id_len: event_id.len(),
            source: m.source(origin.source),
            partition: origin.partition,
            offset: origin.offset,
            restored: None,
        };
        self.stats.sampled_out += m.hold_early(hash, early, size, max);
        Ok(())
    }

    /// Moves the join on to `watermark` (early labels expire against it) and
    /// `label_watermark` (windows become final against it). Called after
    /// every record; cheap when nothing is due.
    pub fn advance(&mut self, watermark: i64, label_watermark: i64) {
        self.advance_to(watermark, label_watermark);
    }

    /// Finalizes every window and expires every early label (end of input).
    pub fn finish(&mut self) {
        self.advance_to(i64::MAX, i64::MAX);
    }

    /// The windows that became final since the last call, in start order.
    pub fn take_finals(&mut self) -> Vec<PerformanceWindow> {
        let mut out = std::mem::take(&mut self.finals);
        out.sort_by_key(|w| (w.start, w.model));
        out
    }

    /// Early labels expire against `watermark` (the predictions'); windows
    /// become final, and the ids of final predictions are forgotten, against
    /// `label_watermark` (how far the labels have been read).
    fn advance_to(&mut self, watermark: i64, label_watermark: i64) {
        let (size, max, k) = (self.size_ms, self.max_pending, self.per_window);
        for (mi, slot) in self.models.iter_mut().enumerate() {
            let Some(m) = slot else { continue };
            while let Some(entry) = m.early_queue.first_entry() {
                let expiry = *entry.key();
                if expiry > watermark {
                    break;
                }
                let mut keys = entry.remove();
                m.queued -= keys.len();
                // In key order; a key queued twice (held, gone, held again
                // with the same expiry) counts once.
                keys.sort_unstable();
                keys.dedup();
                // The labels of one expiry share their window, so mostly
                // their ceiling too (windows do not change in this loop).
                let mut ceiling: Option<(i64, Option<u64>)> = None;
                for hash in keys {
                    let due = m
                        .early
                        .get(&hash)
                        .is_some_and(|e| early_expiry(e.ts, size) == expiry);
                    if !due {
                        continue;
                    }
                    let Some(e) = m.early.remove(&hash) else {
                        continue;
                    };
                    let lo = ceiling_lo(e.ts, size, m.horizon_ms);
                    let c = match ceiling {
                        Some((l, c)) if l == lo => c,
                        _ => {
                            let c = m.ceiling_for(e.ts, size, k, true);
                            ceiling = Some((lo, c));
                            c
                        }
                    };
                    if c.is_some_and(|c| hash > c) {
                        self.stats.sampled_out += 1;
                    } else {
                        self.letters.push(unmatched(&e, &m.name));
                    }
                }
            }
            while let Some((&start, _)) = m.windows.first_key_value() {
                let end = start.saturating_add(size);
                if end.saturating_add(m.horizon_ms) > label_watermark {
                    break;
                }
                let Some(mut w) = m.windows.remove(&start) else {
                    break;
                };
                let until = end.saturating_add(2 * m.horizon_ms);
                for g in &w.groups {
                    for p in &g.pairs {
                        m.index.remove(&p.hash);
                        m.expired.insert(p.hash, p.label.is_some());
                        m.expired_queue.push_back((until, p.hash));
                    }
                }
                m.history.insert(start, w.bound(k));
                // Bounds matter for labels up to a horizon and a window
                // after their prediction's window.
                let old = start.saturating_sub(2 * (m.horizon_ms + 2 * size));
                while m.history.first_key_value().is_some_and(|(s, _)| *s < old) {
                    m.history.pop_first();
                }
                w.groups
                    .sort_by(|a, b| (&a.version, &a.variant).cmp(&(&b.version, &b.variant)));
                for g in &mut w.groups {
                    // Event ids are unique in a window: no equal keys.
                    g.pairs
                        .sort_unstable_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
                }
                self.finals.push(PerformanceWindow {
                    model: mi,
                    start,
                    end,
                    sampled: w.sampled,
                    groups: w.groups,
                });
            }
            while let Some(&(until, hash)) = m.expired_queue.front() {
                if until > label_watermark && m.expired_queue.len() <= max * EXPIRED_FACTOR {
                    break;
                }
                m.expired_queue.pop_front();
                m.expired.remove(&hash);
            }
        }
    }

    /// Labels that waited in vain, to be dead-lettered.
    pub fn take_letters(&mut self) -> Vec<LabelLetter> {
        std::mem::take(&mut self.letters)
    }

    /// What the join did since the last call.
    pub fn take_stats(&mut self) -> JoinStats {
        std::mem::take(&mut self.stats)
    }

    /// The state for the checkpoint (taken after the step handed over the
    /// final windows, see [`LabelJoin::take_finals`]).
    pub fn snapshot(&self) -> LabelsSnapshot {
        debug_assert!(
            self.finals.is_empty(),
            "final windows are handed over first"
        );
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
                            let mut pairs: Vec<_> = g
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
                            pairs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                            (g.version.clone(), g.variant.clone(), g.predictions, pairs)
                        })
                        .collect();
                    (*s, w.sampled, groups)
                })
                .collect();
            let mut early: Vec<Early> = m
                .early
                .values()
                .map(|e| e.to_early(&m.name, m.task))
                .collect();
            early.sort_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
            let expired = m
                .expired_queue
                .iter()
                .filter_map(|(until, h)| m.expired.get(h).map(|l| (*until, *h, *l)))
                .collect();
            models.insert(
                m.name.clone(),
                ModelSnapshot {
                    windows,
                    early,
                    expired,
                    history: m.history.iter().map(|(s, b)| (*s, *b)).collect(),
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
            m.windows.clear();
            m.index.clear();
            for (start, sampled, groups) in &s.windows {
                let mut w = OpenWindow {
                    sampled: *sampled,
                    ..Default::default()
                };
                for (gi, (version, variant, predictions, pairs)) in groups.iter().enumerate() {
                    let mut g = PerfGroup {
                        version: version.clone(),
                        variant: variant.clone(),
                        predictions: *predictions,
                        pairs: Vec::with_capacity(pairs.len()),
                    };
                    for (ts, id, p, l) in pairs {
                        let hash = xxh3_64(id.as_bytes());
                        w.keys.push(hash);
                        m.index
                            .insert(hash, (*start, gi as u32, g.pairs.len() as u32));
                        g.pairs.push(Pair {
                            ts: *ts,
                            hash,
                            event_id: id.clone(),
                            prediction: p.clone(),
                            label: l.clone(),
                        });
                    }
                    w.groups.push(g);
                }
                m.windows.insert(*start, w);
            }
            m.early.clear();
            for e in &s.early {
                let hash = xxh3_64(e.event_id.as_bytes());
                m.early.insert(hash, Held::from_early(e));
            }
            m.requeue_early(size);
            m.early_keys = m.early.keys().copied().collect();
            m.expired.clear();
            m.expired_queue.clear();
            for (until, h, l) in &s.expired {
                m.expired.insert(*h, *l);
                m.expired_queue.push_back((*until, *h));
            }
            m.history = s.history.iter().copied().collect();
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

fn late(e: &Held, model: &str, deadline: i64) -> LabelLetter {
    let error = format!(
        "label time {} is at or past its prediction's window end plus the label horizon ({deadline})",
        e.ts
    );
    LabelLetter {
        reason: Reason::LateLabel,
        error,
        ..unmatched(e, model)
    }
}

fn unmatched(e: &Held, model: &str) -> LabelLetter {
    let payload = serde_json::json!({
        "event_id": e.event_id(),
        "ts": e.ts,
        "model": model,
        "label": e.raw(),
    })
    .to_string();
    LabelLetter {
        source: e.source.to_string(),
        partition: e.partition,
        offset: e.offset,
        payload,
        reason: Reason::UnmatchedLabel,
        error: format!(
            "no prediction with event_id `{}` is waiting for a label, and one older than the label would be late",
            e.event_id()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(max_pending: usize) -> LabelJoin {
        join_for("binary", max_pending)
    }

    fn join_for(task: &str, max_pending: usize) -> LabelJoin {
        let cfg = Config::from_toml_str(&format!(
            "[outcomes]\nmax_pending = {max_pending}\n[window]\nsize = \"1m\"\n\
             [models.m]\nreference = \"r.csv\"\ntask = \"{task}\"\nlabel_horizon = \"2m\"\n\
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
    fn early_labels_that_leave_stay_out_of_expiry_and_the_queue_stays_bounded() {
        let mut j = join(1_000_000);
        // Labels that find their predictions later leave the queue's map
        // but not its buckets; the queue is rebuilt before it holds more
        // than twice the labels waiting.
        for i in 0..5_000 {
            let id = format!("e{i}");
            j.outcome(0, &id, 10_000, "1", O, i64::MIN).unwrap();
            let m = j.models[0].as_ref().unwrap();
            assert!(m.queued <= 2 * m.early.len() + 64, "{} queued", m.queued);
            j.prediction(0, 0, ("1", ""), &id, 5_000, Value::Number(0.5));
        }
        // Two that wait in vain: each one letter at its expiry, in key
        // order, also the one held again after it left.
        j.outcome(0, "x", 10_000, "1", O, i64::MIN).unwrap();
        j.outcome(0, "y", 10_000, "0", O, i64::MIN).unwrap();
        let m = j.models[0].as_mut().unwrap();
        let hx = xxh3_64(b"x");
        let held = m.remove_early(hx).unwrap();
        m.hold_early(hx, held, 60_000, usize::MAX);
        j.advance(119_999, i64::MIN);
        assert!(j.take_letters().is_empty(), "not yet expired");
        j.advance(120_000, i64::MIN);
        let letters = j.take_letters();
        let mut ids: Vec<_> = letters
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l.payload).unwrap()["event_id"].clone()
            })
            .collect();
        assert_eq!(ids.len(), 2, "{letters:?}");
        let mut by_key = [(xxh3_64(b"x"), "x"), (xxh3_64(b"y"), "y")];
        by_key.sort();
        assert_eq!(
            ids.drain(..)
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            by_key
                .iter()
                .map(|(_, id)| id.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(letters[0].reason, Reason::UnmatchedLabel);
        assert_eq!(letters[0].source, "outcomes");
        assert!(
            letters
                .iter()
                .any(|l| l.payload.contains("\"model\":\"m\"")),
            "{letters:?}"
        );
        // The 5,000 predictions wait for their window; no label does.
        assert_eq!(j.held(), 5_000);
    }

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
        j.advance(i64::MIN, 60_000 + 119_999);
        assert!(j.take_finals().is_empty(), "the horizon has not passed");
        j.advance(180_000, 180_000);
        let w = j.take_finals();
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
        j.advance(300_000, 300_000);
        let w = j.take_finals();
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
        j.finish();
        let w = j.take_finals();
        assert!(w[0].groups[0].pairs.iter().all(|p| p.label.is_none()));
    }

    #[test]
    fn a_regressor_label_that_is_not_a_number_is_a_wrong_type() {
        let cfg = Config::from_toml_str(
            "[models.r]\nreference = \"r.csv\"\ntask = \"regression\"\n[models.r.features]\nx = \"numeric\"",
        )
        .unwrap();
        let mut j = LabelJoin::new(&cfg, &ModelCatalog::from_config(&cfg));
        let e = j.outcome(0, "a", 1_000, "high", O, i64::MIN).unwrap_err();
        assert_eq!(e.0, Reason::WrongType);
        j.prediction(0, 0, ("1", ""), "a", 500, Value::Number(2.5));
        j.outcome(0, "a", 1_000, " 3.25 ", O, i64::MIN).unwrap();
        j.finish();
        let w = j.take_finals();
        assert_eq!(w[0].groups[0].pairs[0].label, Some(Value::Number(3.25)));
    }

    #[test]
    fn an_early_label_without_prediction_expires_as_a_dead_letter() {
        let mut j = join(100);
        j.outcome(0, "x", 70_000, "1", O, 0).unwrap();
        j.advance(179_999, 179_999);
        assert!(j.take_finals().is_empty());
        assert!(j.take_letters().is_empty(), "one window of grace");
        j.advance(180_000, 180_000);
        let l = j.take_letters();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].reason, l[0].offset), (Reason::UnmatchedLabel, 7));
        assert!(l[0].payload.contains("\"event_id\":\"x\""));
    }

    #[test]
    fn past_max_pending_a_window_keeps_the_bottom_k_in_any_order_with_labels() {
        let run = |reverse: bool| {
            let mut j = join(1_000);
            let k = j.per_window;
            let mut ids: Vec<u64> = (0..5_000).collect();
            if reverse {
                ids.reverse();
            }
            for i in ids {
                let id = format!("e{i}");
                if i % 2 == 0 {
                    j.outcome(0, &id, 30_000, "1", O, i64::MIN).unwrap();
                    j.prediction(0, 0, ("1", ""), &id, 1_000, Value::Number(0.7));
                } else {
                    j.prediction(0, 0, ("1", ""), &id, 1_000, Value::Number(0.7));
                    j.outcome(0, &id, 30_000, "1", O, i64::MIN).unwrap();
                }
                assert!(j.held() <= j.per_window + 1_000);
            }
            j.finish();
            assert!(
                j.take_letters().is_empty(),
                "sampled-out labels are not unmatched"
            );
            (k, j.take_finals())
        };
        let (k, w) = run(false);
        assert!(k > 50 && k < 1_000, "{k}");
        assert!(w[0].sampled);
        let g = &w[0].groups[0];
        assert_eq!(g.predictions, 5_000);
        let mut smallest: Vec<u64> = (0..5_000)
            .map(|i| xxh3_64(format!("e{i}").as_bytes()))
            .collect();
        smallest.sort_unstable();
        let mut kept: Vec<u64> = g.pairs.iter().map(|p| p.hash).collect();
        kept.sort_unstable();
        assert_eq!(kept, smallest[..k].to_vec(), "the k smallest keys");
        assert!(
            g.pairs.iter().all(|p| p.label.is_some()),
            "kept predictions keep their labels"
        );
        assert_eq!(run(true).1, w, "the order of arrival does not matter");
    }

    #[test]
    fn a_restored_early_label_keeps_the_value_it_was_held_with() {
        // Held under a binary task, restored under regression: the label
        // joins as the class it was, as the checkpoint holds it.
        let mut j = join(100);
        j.outcome(0, "b", 2_000, "yes", O, i64::MIN).unwrap();
        let snap = j.snapshot();
        let mut r = join_for("regression", 100);
        r.restore(snap.clone());
        assert_eq!(
            serde_json::to_value(r.snapshot()).unwrap(),
            serde_json::to_value(&snap).unwrap()
        );
        r.prediction(0, 0, ("1", "A"), "b", 1_500, Value::Number(0.1));
        assert_eq!(r.take_stats().joined, 1);
        r.finish();
        let w = r.take_finals();
        assert_eq!(
            w[0].groups[0].pairs[0].label,
            Some(Value::Class("yes".into()))
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
        r.finish();
        let w = r.take_finals();
        assert_eq!(w[0].groups[0].pairs.len(), 2);
        assert!(w[0].groups[0].pairs.iter().all(|p| p.label.is_some()));
    }
}
