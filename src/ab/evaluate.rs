//! The A/B evaluator: per experiment, each window's variants summarised,
//! merged into the cumulative state since the experiment's start, tested
//! against the control and decided on; rows for `ab_results` and
//! `ab_decisions`.
//!
//! A window's experiment data arrives in two hand-overs: its events (latency,
//! units, scores) when the window closes, its labels when they are final
//! (a label horizon later). A window is evaluated once both parts are in,
//! or once a later hand-over of the same kind shows its part will never
//! come (both kinds arrive in window order), and windows are evaluated in
//! start order. So the cumulative state at each window, and every row,
//! are the same whatever interleaving of records and hand-overs a run saw:
//! the rows of a window are written to a file named after that window,
//! whichever hand-over completed it. Models without a task need no label
//! part.
//!
//! A group belongs to an arm by its `variant` (or, for events without a
//! variant, by its version when one arm serves it); windows overlapping
//! the experiment's `[start, end)` count.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use serde::{Deserialize, Serialize};

use super::Experiment;
use super::analysis::{self, ArmData, Decision, MetricRow};
use super::summary::{VariantEvents, VariantOutcomes};
use crate::config::{Config, Task};
use crate::error::{Error, Result};
use crate::event::ModelCatalog;
use crate::labels::{PerfGroup, Value};
use crate::monitor::performance::Scoring;
use crate::pipeline::evaluate::{Evaluator, Output};
use crate::storage::tables::{self, AB_DECISIONS_FILE_SCHEMA, AB_RESULTS_FILE_SCHEMA};
use crate::window::{ClosedWindow, ColumnSummary, GroupState};

/// One arm's events in a window or since the start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ArmEvents {
    predictions: u64,
    events: Option<VariantEvents>,
    scores: Option<crate::stats::sample::ValueSample>,
}

impl ArmEvents {
    fn merge(&mut self, o: &ArmEvents) {
        self.predictions += o.predictions;
        match (&mut self.events, &o.events) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.events = Some(b.clone()),
            _ => {}
        }
        match (&mut self.scores, &o.scores) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.scores = Some(b.clone()),
            _ => {}
        }
    }

    fn add_group(&mut self, g: &GroupState) {
        self.predictions += g.predictions;
        if let Some(ab) = &g.ab {
            match &mut self.events {
                Some(e) => e.merge(ab),
                None => self.events = Some((**ab).clone()),
            }
        }
        if let Some(ColumnSummary::Numeric(n)) = g.columns.last()
            && n.finite() > 0
        {
            match &mut self.scores {
                Some(s) => s.merge(&n.sample),
                None => self.scores = Some(n.sample.clone()),
            }
        }
    }
}

/// One side of a window (its events, or its final labels), evaluated when
/// it arrived: rows without Holm or always-valid intervals, which need the
/// whole evaluation. Only rows are kept while the window waits for its
/// other side, so waiting costs kilobytes, not samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Side {
    window: Vec<MetricRow>,
    cumulative: Vec<MetricRow>,
    /// The sample-ratio check (events side).
    srm: Option<analysis::Srm>,
    /// Planned observations per variant (the side of the primary metric).
    required: Option<f64>,
}

/// A window waiting for its other side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Parts {
    end: i64,
    events: Option<Side>,
    outcomes: Option<Side>,
}

/// The last decision: (decision, variant, metric).
type DecisionKey = (String, Option<String>, Option<String>);

/// One experiment's state (its share of the checkpoint part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ExpState {
    /// The definition and sizes the state was built with; a restart with
    /// another definition starts the experiment over.
    fingerprint: String,
    pending: BTreeMap<i64, Parts>,
    /// Start of the latest window whose events were handed over.
    events_through: i64,
    /// Start of the latest window of this model whose labels were final.
    outcomes_through: i64,
    /// Cumulative state per arm, through the latest side taken in.
    events: Vec<ArmEvents>,
    outcomes: Vec<Option<VariantOutcomes>>,
    /// The latest cumulative side, for windows that lack one.
    last_events: Side,
    last_outcomes: Side,
    /// Planned observations per variant, latest known (NaN before).
    #[serde(with = "crate::stats::detectors::extended")]
    required: f64,
    /// The always-valid intervals' `t*`, fixed at the first planned size.
    t_star: Option<f64>,
    /// Evaluations so far.
    looks: u64,
    decision: Option<DecisionKey>,
}

impl ExpState {
    fn new(fingerprint: String, arms: usize) -> Self {
        Self {
            fingerprint,
            pending: BTreeMap::new(),
            events_through: i64::MIN,
            outcomes_through: i64::MIN,
            events: vec![ArmEvents::default(); arms],
            outcomes: vec![None; arms],
            last_events: Side::default(),
            last_outcomes: Side::default(),
            required: f64::NAN,
            t_star: None,
            looks: 0,
            decision: None,
        }
    }
}

/// An experiment as the evaluator runs it.
struct Exp {
    e: Experiment,
    model: usize,
    start: i64,
    end: Option<i64>,
    /// Events without a variant count by version (no other experiment
    /// runs on the model).
    by_version: bool,
    control: usize,
    fingerprint: String,
}

/// The A/B evaluator.
pub struct AbEvaluator {
    experiments: Vec<Exp>,
    scoring: Vec<Option<Scoring>>,
    catalog: Arc<ModelCatalog>,
    k: usize,
    unit_k: usize,
    state: Vec<ExpState>,
}

impl AbEvaluator {
    /// The evaluator of `config`'s experiments.
    pub fn new(config: &Config, catalog: Arc<ModelCatalog>) -> Self {
        let (k, unit_k) = (config.window.sample_size, config.window.unit_sample);
        let experiments: Vec<Exp> = config
            .experiments
            .iter()
            .filter_map(|(name, ec)| {
                let model = catalog.models.iter().position(|m| m.name == ec.model)?;
                let e = Experiment::from_config(name, ec);
                let fingerprint = serde_json::to_string(&(&e, k, unit_k)).unwrap_or_default();
                Some(Exp {
                    control: e.arms.iter().position(|a| a.control).unwrap_or(0),
                    by_version: config
                        .experiments
                        .values()
                        .filter(|o| o.model == ec.model)
                        .count()
                        == 1,
                    e,
                    model,
                    start: ec.start.timestamp_millis(),
                    end: ec.end.map(|e| e.timestamp_millis()),
                    fingerprint,
                })
            })
            .collect();
        let scoring = catalog
            .models
            .iter()
            .map(|m| {
                let mc = config.models.get(&m.name)?;
                Some(Scoring {
                    task: mc.task?,
                    positive_label: mc.positive_label.clone(),
                    decision_threshold: mc.decision_threshold,
                })
            })
            .collect();
        let state = experiments
            .iter()
            .map(|x| ExpState::new(x.fingerprint.clone(), x.e.arms.len()))
            .collect();
        Self {
            experiments,
            scoring,
            catalog,
            k,
            unit_k,
            state,
        }
    }

    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.experiments.is_empty()
    }
}

/// The arm a (version, variant) group belongs to.
fn arm_of(x: &Exp, version: &str, variant: &str) -> Option<usize> {
    if !variant.is_empty() {
        return x.e.arms.iter().position(|a| a.name == variant);
    }
    if !x.by_version {
        return None;
    }
    let mut it =
        x.e.arms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.version == version);
    match (it.next(), it.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// The labelled pairs of a group, summarised.
fn summarise(g: &PerfGroup, s: &Scoring, into: &mut VariantOutcomes) {
    into.predictions += g.predictions;
    for p in &g.pairs {
        let Some(label) = &p.label else { continue };
        match s.task {
            Task::Binary => {
                let (yp, yl) = (s.positive(&p.prediction), s.positive(label));
                into.labeled += 1;
                into.correct += u64::from(yp == yl);
                match (yp, yl) {
                    (1, 1) => into.tp += 1,
                    (1, _) => into.fp += 1,
                    (_, 1) => into.fn_ += 1,
                    _ => into.tn += 1,
                }
                into.positives += u64::from(yl == 1);
                if let Value::Number(score) = p.prediction {
                    if yl == 1 {
                        into.pos_scores.offer(p.hash, score);
                    } else {
                        into.neg_scores.offer(p.hash, score);
                    }
                    if (0.0..=1.0).contains(&score) {
                        let eps = f64::EPSILON;
                        let q = if yl == 1 { score } else { 1.0 - score };
                        into.log_loss.push(-q.clamp(eps, 1.0 - eps).ln());
                    }
                }
            }
            Task::Multiclass => {
                into.labeled += 1;
                into.correct += u64::from(s.error(&p.prediction, label) == 0.0);
            }
            Task::Regression => {
                if let (Value::Number(y), Value::Number(l)) = (&p.prediction, label) {
                    into.labeled += 1;
                    let e = y - l;
                    if e.is_finite() {
                        into.abs_err.push(e.abs());
                        into.sq_err.push(e * e);
                    }
                }
            }
        }
    }
}

fn arm_data<'a>(
    e: &'a Experiment,
    events: &'a [ArmEvents],
    outcomes: Option<&'a [Option<VariantOutcomes>]>,
) -> Vec<ArmData<'a>> {
    e.arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ev = &events[i];
            ArmData {
                variant: &a.name,
                version: &a.version,
                predictions: ev.predictions,
                latency: ev.events.as_ref().map(|x| x.latency).unwrap_or_default(),
                latency_sample: ev.events.as_ref().map(|x| &x.latency_sample),
                scores: ev.scores.as_ref(),
                units: ev.events.as_ref().map(|x| &x.units),
                outcomes: outcomes.and_then(|o| o[i].as_ref()),
            }
        })
        .collect()
}

fn ts(v: i64, n: usize) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone("UTC"))
}

fn results_batch(
    exp: &str,
    (start, end): (i64, i64),
    rows: &[(&str, MetricRow)],
) -> Result<RecordBatch> {
    let n = rows.len();
    let f = |g: fn(&MetricRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(|(_, r)| g(r))))
    };
    let cols: Vec<ArrayRef> = vec![
        ts(start, n),
        ts(end, n),
        Arc::new(StringArray::from(vec![exp; n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(s, _)| *s))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, r)| r.variant.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, r)| r.version.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, r)| Some(r.is_control)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, r)| r.metric.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(_, r)| r.n as i64),
        )),
        f(|r| Some(r.estimate).filter(|v| v.is_finite())),
        f(|r| r.effect),
        f(|r| r.ci_low),
        f(|r| r.ci_high),
        f(|r| r.relative_lift),
        f(|r| r.lift_low),
        f(|r| r.lift_high),
        f(|r| r.p_value),
        f(|r| r.p_value_adjusted),
        f(|r| r.cs_low),
        f(|r| r.cs_high),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, r)| r.test.as_deref()),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, r)| r.significant),
        )),
    ];
    Ok(RecordBatch::try_new(AB_RESULTS_FILE_SCHEMA.clone(), cols)?)
}

fn decision_batch(
    exp: &str,
    (start, end): (i64, i64),
    d: &Decision,
    changed: bool,
) -> Result<RecordBatch> {
    let opt = |v: f64| Some(v).filter(|v| v.is_finite());
    let cols: Vec<ArrayRef> = vec![
        ts(start, 1),
        ts(end, 1),
        Arc::new(StringArray::from(vec![exp])),
        Arc::new(StringArray::from(vec![d.decision.as_str()])),
        Arc::new(StringArray::from(vec![d.label()])),
        Arc::new(StringArray::from(vec![d.variant.as_deref()])),
        Arc::new(StringArray::from(vec![d.metric.as_deref()])),
        Arc::new(StringArray::from(vec![d.primary_metric.as_str()])),
        Arc::new(StringArray::from(vec![d.reason.as_str()])),
        Arc::new(Float64Array::from(vec![d.srm_p_value])),
        Arc::new(StringArray::from(vec![
            serde_json::to_string(&d.unit_counts).unwrap_or_default(),
        ])),
        Arc::new(Float64Array::from(vec![opt(d.required_per_variant)])),
        Arc::new(Int64Array::from(vec![d.smallest_n as i64])),
        Arc::new(Float64Array::from(vec![opt(d.progress)])),
        Arc::new(BooleanArray::from(vec![changed])),
    ];
    Ok(RecordBatch::try_new(
        AB_DECISIONS_FILE_SCHEMA.clone(),
        cols,
    )?)
}

impl AbEvaluator {
    /// Takes a hand-over's sides in: each is merged into its cumulative
    /// state (both kinds arrive in window order) and evaluated into rows.
    fn take_in(&mut self, window: &ClosedWindow) {
        for (x, st) in self.experiments.iter().zip(self.state.iter_mut()) {
            let e = &x.e;
            let task = self.scoring[x.model].as_ref().map(|s| s.task);
            let overlaps = |ws: i64, we: i64| we > x.start && x.end.is_none_or(|end| ws < end);
            let primary_from_labels = analysis::from_labels(&e.primary_metric);
            if window.is_performance() {
                let Some(scoring) = &self.scoring[x.model] else {
                    continue;
                };
                for pw in window.performance.iter().filter(|p| p.model == x.model) {
                    st.outcomes_through = st.outcomes_through.max(pw.start);
                    if !overlaps(pw.start, pw.end) {
                        continue;
                    }
                    let mut arms: Vec<Option<VariantOutcomes>> = vec![None; e.arms.len()];
                    for g in &pw.groups {
                        if let Some(a) = arm_of(x, &g.version, &g.variant) {
                            summarise(
                                g,
                                scoring,
                                arms[a].get_or_insert_with(|| VariantOutcomes::new(self.k)),
                            );
                        }
                    }
                    if arms.iter().all(Option::is_none) {
                        continue;
                    }
                    for (c, w) in st.outcomes.iter_mut().zip(&arms) {
                        if let Some(w) = w {
                            match c {
                                Some(c) => c.merge(w),
                                None => *c = Some(w.clone()),
                            }
                        }
                    }
                    let none = vec![ArmEvents::default(); e.arms.len()];
                    let metrics = analysis::outcome_metrics(task);
                    let win = arm_data(e, &none, Some(arms.as_slice()));
                    let cum = arm_data(e, &none, Some(st.outcomes.as_slice()));
                    let side = Side {
                        window: analysis::results(e, task, &win, x.control, &metrics),
                        cumulative: analysis::results(e, task, &cum, x.control, &metrics),
                        srm: None,
                        required: primary_from_labels
                            .then(|| analysis::required_per_variant(e, task, &cum[x.control])),
                    };
                    let p = st.pending.entry(pw.start).or_default();
                    p.end = pw.end;
                    p.outcomes = Some(side);
                }
            } else {
                st.events_through = st.events_through.max(window.start);
                if !overlaps(window.start, window.end) {
                    continue;
                }
                let mut arms = vec![ArmEvents::default(); e.arms.len()];
                let mut any = false;
                for g in window.groups.iter().filter(|g| g.key.model == x.model) {
                    if let Some(a) = arm_of(x, &g.key.version, &g.key.variant) {
                        arms[a].add_group(g);
                        any = true;
                    }
                }
                if !any {
                    continue;
                }
                for (c, w) in st.events.iter_mut().zip(&arms) {
                    c.merge(w);
                }
                let metrics = analysis::EVENT_METRICS;
                let win = arm_data(e, &arms, None);
                let cum = arm_data(e, &st.events, None);
                let side = Side {
                    window: analysis::results(e, task, &win, x.control, metrics),
                    cumulative: analysis::results(e, task, &cum, x.control, metrics),
                    srm: Some(analysis::srm(e, &cum, self.unit_k)),
                    required: (!primary_from_labels)
                        .then(|| analysis::required_per_variant(e, task, &cum[x.control])),
                };
                let p = st.pending.entry(window.start).or_default();
                p.end = window.end;
                p.events = Some(side);
            }
        }
    }

    /// Evaluates every pending window that is complete, in start order.
    fn drain(&mut self) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for (x, st) in self.experiments.iter().zip(self.state.iter_mut()) {
            let e = &x.e;
            let needs_labels = self.scoring[x.model].is_some();
            let model_name = &self.catalog.models[x.model].name;
            while let Some((&start, parts)) = st.pending.first_key_value() {
                let events_in = parts.events.is_some() || st.events_through >= start;
                let outcomes_in =
                    !needs_labels || parts.outcomes.is_some() || st.outcomes_through >= start;
                if !(events_in && outcomes_in) {
                    break;
                }
                let Some((_, parts)) = st.pending.pop_first() else {
                    break;
                };
                let window = (start, parts.end);
                if let Some(ev) = &parts.events {
                    st.last_events = ev.clone();
                }
                if let Some(out) = &parts.outcomes {
                    st.last_outcomes = out.clone();
                }
                let ev = parts.events.unwrap_or_default();
                let out = parts.outcomes.unwrap_or_default();
                if let Some(r) = ev.required.or(out.required).filter(|r| r.is_finite()) {
                    st.required = r;
                }
                if st.t_star.is_none() && st.required.is_finite() && st.required > 0.0 {
                    // Tightest at the planned total sample.
                    st.t_star = Some(2.0 * st.required);
                }
                st.looks += 1;
                let mut win_rows: Vec<MetricRow> =
                    ev.window.into_iter().chain(out.window).collect();
                analysis::holm(&mut win_rows, e.alpha);
                let mut cum_rows: Vec<MetricRow> = st
                    .last_events
                    .cumulative
                    .iter()
                    .chain(&st.last_outcomes.cumulative)
                    .cloned()
                    .collect();
                if let Some(t_star) = st.t_star {
                    analysis::add_sequential(&mut cum_rows, analysis::sequential_alpha(e), t_star);
                }
                analysis::holm(&mut cum_rows, e.alpha);
                let srm = st.last_events.srm.clone().unwrap_or_default();
                let decision = analysis::decide(e, &cum_rows, &srm, st.required, st.looks);
                let key: DecisionKey = (
                    decision.decision.clone(),
                    decision.variant.clone(),
                    decision.metric.clone(),
                );
                // The first "keep running" is no news; any other change is.
                let changed = match &st.decision {
                    Some(prev) => *prev != key,
                    None => decision.decision != "keep_running",
                };
                st.decision = Some(key);
                let rows: Vec<(&str, MetricRow)> = win_rows
                    .into_iter()
                    .map(|r| ("window", r))
                    .chain(cum_rows.into_iter().map(|r| ("cumulative", r)))
                    .collect();
                outputs.push(Output {
                    table: tables::AB_RESULTS,
                    model: model_name.clone(),
                    batch: results_batch(&e.name, window, &rows)?,
                    path: Some(tables::window_file_named(
                        tables::AB_RESULTS,
                        model_name,
                        window.0,
                        window.1,
                        &e.name,
                    )),
                });
                outputs.push(Output {
                    table: tables::AB_DECISIONS,
                    model: model_name.clone(),
                    batch: decision_batch(&e.name, window, &decision, changed)?,
                    path: Some(tables::window_file_named(
                        tables::AB_DECISIONS,
                        model_name,
                        window.0,
                        window.1,
                        &e.name,
                    )),
                });
            }
        }
        Ok(outputs)
    }
}

#[async_trait]
impl Evaluator for AbEvaluator {
    fn name(&self) -> &'static str {
        "ab"
    }

    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>> {
        self.take_in(window);
        self.drain()
    }

    fn snapshot(&self) -> Result<Option<serde_json::Value>> {
        if self.is_empty() {
            return Ok(None);
        }
        let by_name: BTreeMap<&str, &ExpState> = self
            .experiments
            .iter()
            .zip(&self.state)
            .map(|(x, s)| (x.e.name.as_str(), s))
            .collect();
        serde_json::to_value(by_name)
            .map(Some)
            .map_err(|e| Error::Task {
                task: "ab",
                reason: e.to_string(),
            })
    }

    fn restore(&mut self, part: serde_json::Value) -> Result<()> {
        let mut by_name: BTreeMap<String, serde_json::Value> = serde_json::from_value(part)
            .map_err(|e| Error::Task {
                task: "ab",
                reason: format!("checkpoint part: {e}"),
            })?;
        for (x, s) in self.experiments.iter().zip(self.state.iter_mut()) {
            let Some(saved) = by_name.remove(&x.e.name) else {
                continue;
            };
            // A state built for another definition (arms, weights, salt,
            // period, sample sizes) is not this experiment's: it starts over.
            match serde_json::from_value::<ExpState>(saved) {
                Ok(saved) if saved.fingerprint == x.fingerprint => *s = saved,
                Ok(_) => tracing::warn!(
                    experiment = %x.e.name,
                    "the experiment's definition changed since the checkpoint; its results start over"
                ),
                Err(e) => {
                    return Err(Error::Task {
                        task: "ab",
                        reason: format!("checkpoint part of `{}`: {e}", x.e.name),
                    });
                }
            }
        }
        Ok(())
    }
}
