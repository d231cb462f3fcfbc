//! Model performance per window and error-stream detectors: the evaluator
//! behind the `performance` and `concept_drift` tables.
//!
//! It takes the performance windows the label join ([`crate::labels`])
//! finalized (their label horizon has passed) and, per (version, variant):
//! * **metrics** on the labelled pairs, as scikit-learn computes them:
//!   binary: accuracy, precision, recall, F1 (`pos_label` = the model's
//!   `positive_label`), ROC AUC, log loss and Brier score (from the score,
//!   when the prediction is numeric; log loss and Brier only when every
//!   score is in [0, 1]), positive rate (share predicted positive);
//!   multiclass: accuracy, macro and weighted F1; regression: MAE, RMSE,
//!   R², mean error (prediction − label);
//! * **against the registry**: `baseline_value` is the metric logged on the
//!   registry version (`metrics`, read when the evaluator first sees the
//!   version, and again every `baseline.refresh` of event time while it has
//!   none; kept in its checkpoint part, so a replay uses the same value),
//!   `delta = value − baseline_value`, and `degraded` when the value is
//!   worse than the baseline by more than `performance.tolerance` times its
//!   magnitude and, for the proportions (accuracy, precision, recall), a
//!   one-sided one-sample z-test against the baseline rejects at
//!   `performance.alpha` (directionless metrics are never degraded).
//!
//! Binary labels and class predictions are compared with `positive_label`
//! as text, or as numbers when both read as one (`1`, `1.0`, `true`).
//! `positive_rate` is the share of the window's predictions (labelled or
//! not) that are positive.
//!
//! Per model version (variants merged), the labelled pairs in event-time
//! order (`ts`, then `event_id`) feed DDM, Page-Hinkley and ADWIN
//! ([`crate::stats::detectors`]) on the error stream (0/1 errors for
//! classifiers, absolute errors for regressors; DDM only on 0/1), carried
//! from window to window in the checkpoint part. Each detection is a row of
//! `concept_drift`; the alert sink turns it into an alert.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use serde::{Deserialize, Serialize};

use crate::config::{Config, PerformanceConfig, Task};
use crate::error::{Error, Result};
use crate::event::ModelCatalog;
use crate::labels::{Pair, PerformanceWindow, Value};
use crate::pipeline::evaluate::{Evaluator, Output};
use crate::stats::detectors::{Adwin, Ddm, DetectorState, PageHinkley};
use crate::stats::metrics::{self, Average};
use crate::storage::Storage;
use crate::storage::tables::{self, CONCEPT_DRIFT_FILE_SCHEMA, PERFORMANCE_FILE_SCHEMA};
use crate::window::ClosedWindow;

/// Every metric name the `performance` table uses.
pub const METRICS: &[&str] = &[
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
    "positive_rate",
    "f1_macro",
    "f1_weighted",
    "mae",
    "rmse",
    "r2",
    "mean_error",
];

/// Detector names.
pub const DETECTORS: &[&str] = &["ddm", "page_hinkley", "adwin"];

/// Whether larger is better (`Some(true)`), smaller (`Some(false)`), or
/// neither.
fn higher_is_better(metric: &str) -> Option<bool> {
    match metric {
        "accuracy" | "precision" | "recall" | "f1" | "roc_auc" | "f1_macro" | "f1_weighted"
        | "r2" => Some(true),
        "log_loss" | "brier" | "mae" | "rmse" => Some(false),
        _ => None,
    }
}

/// Names a registry version's `metrics` may use for `metric`.
fn registry_names(metric: &str) -> &'static [&'static str] {
    match metric {
        "roc_auc" => &["roc_auc", "auc"],
        "f1" => &["f1", "f1_score"],
        "log_loss" => &["log_loss", "logloss"],
        "mean_error" => &["mean_error", "bias"],
        "accuracy" => &["accuracy"],
        "precision" => &["precision"],
        "recall" => &["recall"],
        "brier" => &["brier", "brier_score"],
        "positive_rate" => &["positive_rate"],
        "f1_macro" => &["f1_macro"],
        "f1_weighted" => &["f1_weighted"],
        "mae" => &["mae"],
        "rmse" => &["rmse"],
        "r2" => &["r2"],
        _ => &[],
    }
}

/// One-sided p-value of a proportion `p` over `n` trials being below `p0`
/// (one-sample z-test with the null's standard error).
fn worse_proportion_p(p: f64, p0: f64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let se = (p0 * (1.0 - p0) / n as f64).sqrt();
    if se == 0.0 {
        return if p < p0 { 0.0 } else { 1.0 };
    }
    crate::stats::proportions::norm_sf((p0 - p) / se)
}

/// Whether two class names are the same class: equal text, or the same
/// number (`1`, `1.0`; `true` and `false` read as 1 and 0).
fn same_class(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let num = |x: &str| match x.trim() {
        "true" => Some(1.0),
        "false" => Some(0.0),
        t => t.parse::<f64>().ok(),
    };
    matches!((num(a), num(b)), (Some(x), Some(y)) if x == y)
}

/// How a model's predictions and labels are scored.
#[derive(Debug, Clone)]
pub struct Scoring {
    /// The task.
    pub task: Task,
    /// The positive class (binary).
    pub positive_label: String,
    /// Scores at or above it predict the positive class (binary).
    pub decision_threshold: f64,
}

impl Scoring {
    /// The metric names of the task, in table order.
    pub fn metric_names(&self, scores: bool) -> Vec<&'static str> {
        match self.task {
            Task::Binary if scores => vec![
                "accuracy",
                "precision",
                "recall",
                "f1",
                "roc_auc",
                "log_loss",
                "brier",
                "positive_rate",
            ],
            Task::Binary => vec!["accuracy", "precision", "recall", "f1", "positive_rate"],
            Task::Multiclass => vec!["accuracy", "f1_macro", "f1_weighted"],
            Task::Regression => vec!["mae", "rmse", "r2", "mean_error"],
        }
    }

    pub(crate) fn positive(&self, v: &Value) -> i64 {
        match v {
            Value::Number(s) => i64::from(*s >= self.decision_threshold),
            Value::Class(c) => i64::from(same_class(c, &self.positive_label)),
        }
    }

    /// Whether the prediction was wrong (classifiers), or its absolute
    /// error (regressors).
    pub(crate) fn error(&self, prediction: &Value, label: &Value) -> f64 {
        match self.task {
            Task::Binary => f64::from(u8::from(self.positive(prediction) != self.positive(label))),
            Task::Multiclass => match (prediction, label) {
                (Value::Class(p), Value::Class(l)) => f64::from(u8::from(!same_class(p, l))),
                _ => f64::from(u8::from(prediction != label)),
            },
            Task::Regression => match (prediction, label) {
                (Value::Number(p), Value::Number(y)) => (p - y).abs(),
                _ => f64::NAN,
            },
        }
    }

    /// The number of trials behind a proportion metric of `pairs`: the
    /// labelled predictions (accuracy), the predicted positives (precision),
    /// the actual positives (recall); `None` for other metrics.
    pub fn trials(&self, metric: &str, pairs: &[(&Value, &Value)]) -> Option<u64> {
        let count = |f: &dyn Fn(&Value, &Value) -> bool| {
            pairs.iter().filter(|(p, l)| f(p, l)).count() as u64
        };
        match (self.task, metric) {
            (Task::Binary | Task::Multiclass, "accuracy") => Some(pairs.len() as u64),
            (Task::Binary, "precision") => Some(count(&|p, _| self.positive(p) == 1)),
            (Task::Binary, "recall") => Some(count(&|_, l| self.positive(l) == 1)),
            // F1 = 2tp / (2tp + fp + fn) only counts pairs positive in the
            // prediction or the label: tested as a proportion over those.
            (Task::Binary, "f1") => Some(count(&|p, l| {
                self.positive(p) == 1 || self.positive(l) == 1
            })),
            _ => None,
        }
    }

    /// The metrics of `pairs` (prediction, label). Metrics that cannot be
    /// computed on them (AUC with one class, log loss with scores outside
    /// [0, 1]) are left out.
    pub fn metrics(&self, pairs: &[(&Value, &Value)]) -> Vec<(&'static str, f64)> {
        if pairs.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut put = |name: &'static str, v: std::result::Result<f64, _>| {
            if let Ok(v) = v
                && !f64::is_nan(v)
            {
                out.push((name, v));
            }
        };
        match self.task {
            Task::Binary => {
                let y: Vec<i64> = pairs.iter().map(|(_, l)| self.positive(l)).collect();
                let p: Vec<i64> = pairs.iter().map(|(p, _)| self.positive(p)).collect();
                put("accuracy", metrics::accuracy(&y, &p));
                if let Ok(prf) = metrics::precision_recall_f1(&y, &p, Average::Binary) {
                    put("precision", Ok(prf.precision));
                    put("recall", Ok(prf.recall));
                    put("f1", Ok(prf.f1));
                }
                let scores: Option<Vec<f64>> = pairs
                    .iter()
                    .map(|(p, _)| match p {
                        Value::Number(s) => Some(*s),
                        Value::Class(_) => None,
                    })
                    .collect();
                if let Some(s) = scores {
                    put("roc_auc", metrics::roc_auc(&y, &s));
                    if s.iter().all(|v| (0.0..=1.0).contains(v)) {
                        put("log_loss", metrics::log_loss(&y, &s));
                        put("brier", metrics::brier_score(&y, &s));
                    }
                }
                put(
                    "positive_rate",
                    Ok(p.iter().sum::<i64>() as f64 / p.len() as f64),
                );
            }
            Task::Multiclass => {
                // Numeric class names are compared as numbers ("1" = "1.0").
                let class = |v: &Value| match v {
                    Value::Class(c) => match c.trim().parse::<f64>() {
                        Ok(n) => n.to_string(),
                        Err(_) => c.clone(),
                    },
                    Value::Number(n) => n.to_string(),
                };
                let mut names: Vec<String> = pairs
                    .iter()
                    .flat_map(|(p, l)| [class(p), class(l)])
                    .collect();
                names.sort();
                names.dedup();
                let id = |v: &Value| names.binary_search(&class(v)).unwrap_or(0) as i64;
                let y: Vec<i64> = pairs.iter().map(|(_, l)| id(l)).collect();
                let p: Vec<i64> = pairs.iter().map(|(p, _)| id(p)).collect();
                put("accuracy", metrics::accuracy(&y, &p));
                put(
                    "f1_macro",
                    metrics::precision_recall_f1(&y, &p, Average::Macro).map(|r| r.f1),
                );
                put(
                    "f1_weighted",
                    metrics::precision_recall_f1(&y, &p, Average::Weighted).map(|r| r.f1),
                );
            }
            Task::Regression => {
                let (y, p): (Vec<f64>, Vec<f64>) = pairs
                    .iter()
                    .filter_map(|(p, l)| match (p, l) {
                        (Value::Number(p), Value::Number(y)) => Some((*y, *p)),
                        _ => None,
                    })
                    .unzip();
                if let Ok(e) = metrics::regression_errors(&y, &p) {
                    put("mae", Ok(e.mae));
                    put("rmse", Ok(e.rmse));
                }
                put("r2", metrics::r2_score(&y, &p));
                put("mean_error", metrics::mean_error(&y, &p));
            }
        }
        out
    }
}

/// One row of `performance`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    version: String,
    variant: String,
    metric: &'static str,
    value: Option<f64>,
    n_predictions: u64,
    n_labeled: u64,
    coverage: f64,
    baseline: Option<f64>,
    degraded: Option<bool>,
    sampled: bool,
}

/// One row of `concept_drift`.
#[derive(Debug, Clone, PartialEq)]
struct Detection {
    version: String,
    detector: &'static str,
    ts: i64,
    event_id: String,
    input: &'static str,
    statistic: f64,
    n_seen: u64,
}

/// The detectors of one model version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Detectors {
    ddm: Ddm,
    page_hinkley: PageHinkley,
    adwin: Adwin,
    /// Labelled predictions seen.
    n_seen: u64,
}

impl Detectors {
    fn same_settings(&self, o: &Self) -> bool {
        self.ddm.same_settings(&o.ddm)
            && self.page_hinkley.same_settings(&o.page_hinkley)
            && self.adwin.same_settings(&o.adwin)
    }
}

/// The evaluator's state between windows (its checkpoint part).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// By `model/version`.
    detectors: BTreeMap<String, Detectors>,
    /// The registry metrics of each `model/version` seen (empty: none
    /// yet), and the window start they were last looked up at.
    baselines: BTreeMap<String, (BTreeMap<String, f64>, i64)>,
}

/// The performance evaluator.
pub struct PerformanceEvaluator {
    catalog: Arc<ModelCatalog>,
    scoring: Vec<Option<Scoring>>,
    config: PerformanceConfig,
    storage: Option<Storage>,
    /// Event time between registry looks for versions without metrics.
    refresh_ms: i64,
    state: State,
}

impl PerformanceEvaluator {
    /// The evaluator of `config`'s models with a task; registry metrics
    /// are read from `storage` when given.
    pub fn new(config: &Config, catalog: Arc<ModelCatalog>, storage: Option<Storage>) -> Self {
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
        Self {
            catalog,
            scoring,
            config: config.performance.clone(),
            storage,
            refresh_ms: config.baseline.refresh.as_millis() as i64,
            state: State::default(),
        }
    }

    fn new_detectors(&self) -> Detectors {
        let c = &self.config;
        Detectors {
            ddm: Ddm::new(c.ddm_min_instances, 2.0, c.ddm_drift_level),
            page_hinkley: PageHinkley::new(
                c.page_hinkley_delta,
                c.page_hinkley_threshold,
                c.page_hinkley_alpha,
                30,
            ),
            adwin: Adwin::new(c.adwin_delta, 32, 5, 5, 10),
            n_seen: 0,
        }
    }

    /// Reads the registry metrics of the versions not seen before, and of
    /// those without any every `baseline.refresh` of event time. A registry
    /// that cannot be read is logged and tried again at the next window.
    async fn load_baselines(&mut self, w: &PerformanceWindow) {
        let name = &self.catalog.models[w.model].name;
        let due: Vec<String> = w
            .groups
            .iter()
            .map(|g| format!("{name}/{}", g.version))
            .filter(|k| match self.state.baselines.get(k) {
                None => true,
                Some((m, at)) => m.is_empty() && w.start >= at.saturating_add(self.refresh_ms),
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let Some(storage) = &self.storage else {
            return;
        };
        let st = match crate::registry::ModelRegistry::new(storage.clone())
            .state()
            .await
        {
            Ok(st) => st,
            Err(e) => {
                tracing::warn!(error = %e, "registry not readable; baseline metrics looked up again at the next window");
                return;
            }
        };
        for key in due {
            let version = key.rsplit('/').next().unwrap_or("");
            let metrics = super::reference::registry_version(version)
                .and_then(|v| {
                    Some(
                        st.models
                            .get(name)?
                            .versions
                            .get(&v)?
                            .metadata
                            .metrics
                            .clone(),
                    )
                })
                .unwrap_or_default();
            self.state.baselines.insert(key, (metrics, w.start));
        }
    }

    fn rows_of(&self, w: &PerformanceWindow, scoring: &Scoring) -> Vec<Row> {
        let name = &self.catalog.models[w.model].name;
        let mut rows = Vec::new();
        for g in &w.groups {
            let labelled: Vec<(&Value, &Value)> = g
                .pairs
                .iter()
                .filter_map(|p| p.label.as_ref().map(|l| (&p.prediction, l)))
                .collect();
            let n_labeled = labelled.len() as u64;
            let coverage = if g.pairs.is_empty() {
                0.0
            } else {
                n_labeled as f64 / g.pairs.len() as f64
            };
            let scores = g
                .pairs
                .iter()
                .all(|p| matches!(p.prediction, Value::Number(_)));
            let mut values: BTreeMap<&str, f64> =
                if labelled.len() >= self.config.min_labeled.max(1) {
                    scoring.metrics(&labelled).into_iter().collect()
                } else {
                    BTreeMap::new()
                };
            // A property of the predictions: over all of them, labelled or not.
            if scoring.task == Task::Binary && !g.pairs.is_empty() {
                let positive: i64 = g
                    .pairs
                    .iter()
                    .map(|p| scoring.positive(&p.prediction))
                    .sum();
                values.insert("positive_rate", positive as f64 / g.pairs.len() as f64);
            }
            let baselines = self
                .state
                .baselines
                .get(&format!("{name}/{}", g.version))
                .map(|(m, _)| m);
            for metric in scoring.metric_names(scores) {
                let value = values.get(metric).copied();
                let baseline = baselines.and_then(|b| {
                    registry_names(metric)
                        .iter()
                        .find_map(|n| b.get(*n).copied())
                });
                let trials = scoring.trials(metric, &labelled);
                let degraded = match (value, baseline, higher_is_better(metric)) {
                    // Undefined in this window (no positive prediction for
                    // precision, no positive label for recall, neither for
                    // F1: scikit-learn's zero_division value): not judged.
                    _ if trials == Some(0) => None,
                    (Some(v), Some(b), Some(higher)) => {
                        let tol = self.config.tolerance_of(metric) * b.abs();
                        let beyond = if higher { v < b - tol } else { v > b + tol };
                        let significant = match trials {
                            Some(n) => worse_proportion_p(v, b, n) < self.config.alpha,
                            None => true,
                        };
                        Some(beyond && significant)
                    }
                    _ => None,
                };
                rows.push(Row {
                    version: g.version.clone(),
                    variant: g.variant.clone(),
                    metric,
                    value,
                    n_predictions: g.predictions,
                    n_labeled,
                    coverage,
                    baseline,
                    degraded,
                    sampled: w.sampled,
                });
            }
        }
        rows
    }

    /// Feeds each version's labelled pairs, in (ts, event_id) order, to its
    /// detectors.
    fn detect(&mut self, w: &PerformanceWindow, scoring: &Scoring) -> Vec<Detection> {
        let name = self.catalog.models[w.model].name.clone();
        let mut by_version: BTreeMap<&str, Vec<&Pair>> = BTreeMap::new();
        for g in &w.groups {
            by_version
                .entry(g.version.as_str())
                .or_default()
                .extend(g.pairs.iter().filter(|p| p.label.is_some()));
        }
        let enabled = |d: &str| self.config.detectors.iter().any(|x| x == d);
        let (ddm_on, ph_on, adwin_on) = (enabled("ddm"), enabled("page_hinkley"), enabled("adwin"));
        let input = if scoring.task == Task::Regression {
            "absolute_error"
        } else {
            "error"
        };
        let mut out = Vec::new();
        for (version, mut pairs) in by_version {
            pairs.sort_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
            let key = format!("{name}/{version}");
            let fresh = self.new_detectors();
            let d = self.state.detectors.entry(key).or_insert(fresh);
            for p in pairs {
                let Some(label) = &p.label else { continue };
                let e = scoring.error(&p.prediction, label);
                if !e.is_finite() {
                    continue;
                }
                d.n_seen += 1;
                let mut hit = |detector: &'static str, statistic: f64| {
                    out.push(Detection {
                        version: version.to_string(),
                        detector,
                        ts: p.ts,
                        event_id: p.event_id.clone(),
                        input,
                        statistic,
                        n_seen: d.n_seen,
                    })
                };
                if ddm_on
                    && scoring.task != Task::Regression
                    && d.ddm.update(e) == DetectorState::Drift
                {
                    hit("ddm", d.ddm.statistic());
                }
                if ph_on && d.page_hinkley.update(e) == DetectorState::Drift {
                    hit("page_hinkley", d.page_hinkley.statistic());
                }
                if adwin_on && d.adwin.update(e) == DetectorState::Drift {
                    hit("adwin", d.adwin.mean());
                }
            }
        }
        out
    }
}

#[async_trait]
impl Evaluator for PerformanceEvaluator {
    fn name(&self) -> &'static str {
        "performance"
    }

    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for w in &window.performance {
            let Some(scoring) = self.scoring.get(w.model).cloned().flatten() else {
                continue;
            };
            self.load_baselines(w).await;
            let model = self.catalog.models[w.model].name.clone();
            let rows = self.rows_of(w, &scoring);
            if !rows.is_empty() {
                outputs.push(Output {
                    table: tables::PERFORMANCE,
                    model: model.clone(),
                    batch: performance_batch(w, scoring.task, &rows)?,
                    path: None,
                });
            }
            let detections = self.detect(w, &scoring);
            if !detections.is_empty() {
                outputs.push(Output {
                    table: tables::CONCEPT_DRIFT,
                    model,
                    batch: detections_batch(w, &detections)?,
                    path: None,
                });
            }
        }
        Ok(outputs)
    }

    fn snapshot(&self) -> Result<Option<serde_json::Value>> {
        serde_json::to_value(&self.state)
            .map(Some)
            .map_err(|e| Error::Task {
                task: "performance",
                reason: e.to_string(),
            })
    }

    fn restore(&mut self, part: serde_json::Value) -> Result<()> {
        self.state = serde_json::from_value(part).map_err(|e| Error::Task {
            task: "performance",
            reason: format!("checkpoint part: {e}"),
        })?;
        // Detectors made under other settings (the config changed across
        // the restart) start over under the config's: a detector keeps its
        // settings through its own resets, so they would never apply.
        let fresh = self.new_detectors();
        for (key, d) in self.state.detectors.iter_mut() {
            if !d.same_settings(&fresh) {
                tracing::info!(version = %key, "detector settings changed in the config: detectors start over");
                *d = fresh.clone();
            }
        }
        Ok(())
    }
}

fn ts_col(v: i64, n: usize) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(vec![v; n]).with_timezone("UTC"))
}

fn performance_batch(w: &PerformanceWindow, task: Task, rows: &[Row]) -> Result<RecordBatch> {
    let n = rows.len();
    let strs = |f: fn(&Row) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let ints = |f: fn(&Row) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| f(r) as i64),
        ))
    };
    let floats = |f: fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        ts_col(w.start, n),
        ts_col(w.end, n),
        strs(|r| &r.version),
        strs(|r| &r.variant),
        Arc::new(StringArray::from(vec![task.as_str(); n])),
        strs(|r| r.metric),
        floats(|r| r.value),
        ints(|r| r.n_predictions),
        ints(|r| r.n_labeled),
        floats(|r| Some(r.coverage)),
        floats(|r| r.baseline),
        floats(|r| Some(r.value? - r.baseline?)),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.degraded))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.sampled)),
        )),
    ];
    Ok(RecordBatch::try_new(PERFORMANCE_FILE_SCHEMA.clone(), cols)?)
}

fn detections_batch(w: &PerformanceWindow, d: &[Detection]) -> Result<RecordBatch> {
    let n = d.len();
    let cols: Vec<ArrayRef> = vec![
        ts_col(w.start, n),
        ts_col(w.end, n),
        Arc::new(StringArray::from_iter_values(d.iter().map(|x| &x.version))),
        Arc::new(StringArray::from_iter_values(d.iter().map(|x| x.detector))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(d.iter().map(|x| x.ts))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(d.iter().map(|x| &x.event_id))),
        Arc::new(StringArray::from_iter_values(d.iter().map(|x| x.input))),
        Arc::new(Float64Array::from_iter_values(
            d.iter().map(|x| x.statistic),
        )),
        Arc::new(Int64Array::from_iter_values(
            d.iter().map(|x| x.n_seen as i64),
        )),
    ];
    Ok(RecordBatch::try_new(
        CONCEPT_DRIFT_FILE_SCHEMA.clone(),
        cols,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::PerfGroup;

    #[derive(Deserialize)]
    struct Oracle {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        task: Task,
        positive_label: Option<String>,
        decision_threshold: Option<f64>,
        pairs: Pairs,
        expected: BTreeMap<String, f64>,
    }

    #[derive(Deserialize)]
    struct Pairs {
        prediction: Vec<serde_json::Value>,
        label: Vec<String>,
    }

    /// Every metric of a window equals scikit-learn on the same pairs
    /// (vectors from tests/data/make_performance_vectors.py).
    #[test]
    fn window_metrics_equal_scikit_learn() {
        let text = include_str!("../../tests/data/performance_oracle.json");
        let oracle: Oracle = serde_json::from_str(text).unwrap();
        assert!(oracle.cases.len() >= 6);
        for case in oracle.cases {
            let scoring = Scoring {
                task: case.task,
                positive_label: case.positive_label.clone().unwrap_or_default(),
                decision_threshold: case.decision_threshold.unwrap_or(0.5),
            };
            let preds: Vec<Value> = case
                .pairs
                .prediction
                .iter()
                .map(|v| match v {
                    serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap()),
                    other => Value::Class(other.as_str().unwrap().to_string()),
                })
                .collect();
            let labels: Vec<Value> = case
                .pairs
                .label
                .iter()
                .map(|l| match case.task {
                    Task::Regression => Value::Number(l.parse().unwrap()),
                    _ => Value::Class(l.clone()),
                })
                .collect();
            let pairs: Vec<(&Value, &Value)> = preds.iter().zip(&labels).collect();
            let got: BTreeMap<&str, f64> = scoring.metrics(&pairs).into_iter().collect();
            assert_eq!(
                got.keys().copied().collect::<Vec<_>>(),
                case.expected.keys().map(String::as_str).collect::<Vec<_>>(),
                "{}: metric names",
                case.name
            );
            for (metric, want) in &case.expected {
                let v = got[metric.as_str()];
                let tol = 1e-12 + 1e-9 * want.abs();
                assert!(
                    (v - want).abs() <= tol,
                    "{} {metric}: {v} vs scikit-learn {want}",
                    case.name
                );
            }
        }
    }

    /// Detector settings changed in the config apply after a restart: the
    /// checkpoint's detectors made under the old ones start over; those
    /// made under the same ones keep their state.
    #[test]
    fn restored_detectors_follow_the_config() {
        let cfg = |ph: &str| {
            Config::from_toml_str(&format!(
                "[performance]\npage_hinkley_threshold = {ph}\n[models.m]\nreference = \"r.csv\"\n\
                 task = \"binary\"\n[models.m.features]\nx = \"numeric\""
            ))
            .unwrap()
        };
        let make = |c: &Config| {
            let catalog = Arc::new(ModelCatalog::from_config(c));
            PerformanceEvaluator::new(c, catalog, None)
        };
        let mut old = make(&cfg("50.0"));
        let mut d = old.new_detectors();
        d.n_seen = 7;
        old.state.detectors.insert("m/1".into(), d);
        let part = old.snapshot().unwrap().unwrap();
        let mut same = make(&cfg("50.0"));
        same.restore(part.clone()).unwrap();
        assert_eq!(same.state.detectors["m/1"].n_seen, 7);
        let mut changed = make(&cfg("20.0"));
        changed.restore(part).unwrap();
        let d = &changed.state.detectors["m/1"];
        assert_eq!(d.n_seen, 0);
        assert!(d.same_settings(&changed.new_detectors()));
    }

    #[test]
    fn binary_classes_compare_as_text_or_as_numbers() {
        assert!(same_class("1", "1"));
        assert!(same_class("1.0", "1"));
        assert!(same_class("true", "1"));
        assert!(same_class("false", "0"));
        assert!(!same_class("yes", "1"));
        assert!(!same_class("2", "1"));
    }

    #[test]
    fn degraded_follows_the_metric_direction_and_tolerance() {
        let cfg = Config::from_toml_str(
            "[performance]\ntolerance = 0.05\n[models.m]\nreference = \"r.csv\"\ntask = \"binary\"\n\
             [models.m.features]\nx = \"numeric\"",
        )
        .unwrap();
        let catalog = Arc::new(ModelCatalog::from_config(&cfg));
        let mut e = PerformanceEvaluator::new(&cfg, catalog, None);
        e.config.min_labeled = 1;
        e.config.alpha = 0.05;
        e.state.baselines.insert(
            "m/1".into(),
            (
                [("accuracy".to_string(), 0.95), ("auc".to_string(), 0.5)].into(),
                0,
            ),
        );
        let pair = crate::labels::test_pair;
        let w = PerformanceWindow {
            model: 0,
            start: 0,
            end: 60_000,
            sampled: false,
            groups: vec![PerfGroup {
                version: "1".into(),
                variant: String::new(),
                predictions: 4,
                pairs: vec![
                    pair(0, 0.9, "1"),
                    pair(1, 0.2, "0"),
                    pair(2, 0.7, "0"),
                    pair(3, 0.1, "0"),
                ],
            }],
        };
        let scoring = e.scoring[0].clone().unwrap();
        let rows = e.rows_of(&w, &scoring);
        let row = |m: &str| rows.iter().find(|r| r.metric == m).unwrap();
        assert_eq!(row("accuracy").value, Some(0.75));
        assert_eq!(row("accuracy").degraded, Some(true), "0.75 < 0.95 - 0.0475");
        assert_eq!(row("roc_auc").baseline, Some(0.5), "`auc` in the registry");
        assert_eq!(row("roc_auc").degraded, Some(false));
        assert_eq!(row("positive_rate").degraded, None);
        assert_eq!(row("log_loss").baseline, None);

        // A window without positives, predicted or labelled: precision,
        // recall and F1 are scikit-learn's zero_division 0, not judged; one
        // missed positive is too little to call F1 degraded (at the default
        // alpha).
        e.config.alpha = 0.01;
        e.state.baselines.insert(
            "m/1".into(),
            (
                [
                    ("f1".to_string(), 0.8),
                    ("precision".to_string(), 0.8),
                    ("recall".to_string(), 0.8),
                ]
                .into(),
                0,
            ),
        );
        let mut quiet = w.clone();
        quiet.groups[0].pairs = (0..40).map(|i| pair(i, 0.1, "0")).collect();
        let rows = e.rows_of(&quiet, &scoring);
        let row = |m: &str| rows.iter().find(|r| r.metric == m).unwrap().clone();
        assert_eq!(row("accuracy").value, Some(1.0));
        for m in ["f1", "precision", "recall"] {
            assert_eq!(row(m).value, Some(0.0), "{m}");
            assert_eq!(row(m).degraded, None, "{m}");
        }
        quiet.groups[0].pairs[0] = pair(0, 0.1, "1");
        let rows = e.rows_of(&quiet, &scoring);
        let f1 = rows.iter().find(|r| r.metric == "f1").unwrap();
        assert_eq!((f1.value, f1.degraded), (Some(0.0), Some(false)));
        // Many missed positives are.
        quiet.groups[0].pairs = (0..40).map(|i| pair(i, 0.1, "1")).collect();
        let rows = e.rows_of(&quiet, &scoring);
        let f1 = rows.iter().find(|r| r.metric == "f1").unwrap();
        assert_eq!((f1.value, f1.degraded), (Some(0.0), Some(true)));
    }
}
