//! The embedded demo: an in-process Kafka broker (librdkafka's mock cluster),
//! a synthetic event stream, and the same [`pipeline::run`] as `mlwatch run`.
//!
//! The stream has one model, `credit_risk`, with five numeric and two
//! categorical features and a score prediction. Three changes are injected,
//! each from a window boundary on ([`Drifts::at`]): from a quarter of the
//! windows on, a new `region` ("overseas") takes a fifth of the events;
//! from half-way, `credit_score` shifts up by two-thirds of a standard
//! deviation; from three quarters, the prediction's distribution moves up.
//! Every other column keeps its training distribution.
//!
//! Labels follow on the outcomes topic ([`Labels`]): a prediction's label is
//! drawn from its score (the model is calibrated), 10% never arrive, most
//! arrive seconds to a minute and a half after the prediction, 2% after the
//! label horizon. From three eighths of the windows on, the concept
//! changes: 40% of the labels are flipped while the features and the
//! prediction keep their distributions, so only performance can show it.
//! Versions 1 and 2 of the model are registered with their training
//! metrics, the baseline of the `performance` table.
//!
//! Two A/B experiments run on the model ([`route`]): `challenger`, where
//! version 2 (more accurate, faster) is tested against version 1 on a fair
//! split, and `rollout`, whose router sends 55% of its users to the canary
//! instead of 50%: the first should end in `ship challenger`, the second
//! in `invalid: sample ratio mismatch`.
//!
//! The producer paces itself on the pipeline's progress because the mock
//! broker keeps only ~5 MiB per partition.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, LogNormal, Normal};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::{self, RunControl, RunSummary};
use crate::registry::Stage;

/// The demo model's name.
pub const MODEL: &str = "credit_risk";
/// The feature that shifts half-way through the stream.
pub const SHIFTED_FEATURE: &str = "credit_score";
/// The categorical feature that gains a new category a quarter of the way in.
pub const NEW_CATEGORY_FEATURE: &str = "region";
/// The category that appears.
pub const NEW_CATEGORY: &str = "overseas";

/// Which injected changes are active for an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drifts {
    /// `credit_score` shifted.
    pub score: bool,
    /// `region` has the new category.
    pub new_category: bool,
    /// The prediction shifted.
    pub prediction: bool,
    /// The labels' relation to the inputs changed (concept drift).
    pub concept: bool,
}

impl Drifts {
    /// No change: the training distribution.
    pub const NONE: Drifts = Drifts {
        score: false,
        new_category: false,
        prediction: false,
        concept: false,
    };

    /// The changes active in window `window` (0-based) of `windows`.
    pub fn at(window: u64, windows: u64) -> Self {
        Self {
            new_category: 4 * window >= windows,
            score: 2 * window >= windows,
            prediction: 4 * window >= 3 * windows,
            concept: 8 * window >= 3 * windows,
        }
    }

    /// The first window (0-based) of `windows` where the concept changes.
    pub fn concept_start(windows: u64) -> u64 {
        (0..windows)
            .find(|w| Drifts::at(*w, windows).concept)
            .unwrap_or(windows)
    }

    /// The first window (0-based) of `windows` where each change is active:
    /// (new category, score, prediction).
    pub fn starts(windows: u64) -> (u64, u64, u64) {
        let first = |f: fn(&Drifts) -> bool| (0..windows).find(|w| f(&Drifts::at(*w, windows)));
        (
            first(|d| d.new_category).unwrap_or(windows),
            first(|d| d.score).unwrap_or(windows),
            first(|d| d.prediction).unwrap_or(windows),
        )
    }
}
/// Numeric features of the demo model.
pub const NUMERIC: [&str; 5] = [
    "age",
    "income",
    "credit_score",
    "tenure_months",
    "debt_ratio",
];
/// Categorical features of the demo model.
pub const CATEGORICAL: [&str; 2] = ["region", "device"];
/// Event time of the first event: 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;

const REGIONS: [&str; 5] = ["north", "south", "east", "west", "central"];
const DEVICES: [&str; 3] = ["web", "ios", "android"];

/// Draws feature rows from the training distribution, or the shifted one.
pub struct Generator {
    rng: StdRng,
    age: Normal<f64>,
    income: LogNormal<f64>,
    score: Normal<f64>,
    shifted_score: Normal<f64>,
    tenure: Exp<f64>,
    debt: Beta<f64>,
    prediction: Beta<f64>,
    shifted_prediction: Beta<f64>,
}

/// One synthetic row.
pub struct Row {
    /// Numeric values in [`NUMERIC`] order.
    pub numeric: [f64; 5],
    /// Categorical values in [`CATEGORICAL`] order.
    pub categorical: [&'static str; 2],
    /// The model's score.
    pub prediction: f64,
}

impl Generator {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            age: Normal::new(40.0, 10.0).expect("valid parameters"),
            income: LogNormal::new(10.5, 0.5).expect("valid parameters"),
            score: Normal::new(650.0, 60.0).expect("valid parameters"),
            shifted_score: Normal::new(690.0, 60.0).expect("valid parameters"),
            tenure: Exp::new(1.0 / 36.0).expect("valid parameters"),
            debt: Beta::new(2.0, 5.0).expect("valid parameters"),
            prediction: Beta::new(2.0, 5.0).expect("valid parameters"),
            shifted_prediction: Beta::new(3.0, 4.0).expect("valid parameters"),
        }
    }

    /// Draws one row with the changes of `drifts`.
    pub fn row(&mut self, drifts: Drifts) -> Row {
        let r = &mut self.rng;
        let score = if drifts.score {
            self.shifted_score.sample(r)
        } else {
            self.score.sample(r)
        };
        let round = |v: f64| (v * 1e4).round() / 1e4;
        Row {
            numeric: [
                round(self.age.sample(r)),
                round(self.income.sample(r)),
                round(score),
                round(self.tenure.sample(r)),
                round(self.debt.sample(r)),
            ],
            categorical: [
                if drifts.new_category && r.random_bool(0.2) {
                    NEW_CATEGORY
                } else {
                    REGIONS[r.random_range(0..REGIONS.len())]
                },
                DEVICES[r.random_range(0..DEVICES.len())],
            ],
            prediction: if drifts.prediction {
                self.shifted_prediction.sample(r)
            } else {
                self.prediction.sample(r)
            },
        }
    }

    /// The JSON of prediction event `i` at event time `ts_ms`.
    pub fn event_json(&mut self, i: u64, ts_ms: i64, drifts: Drifts) -> String {
        self.event(i, ts_ms, drifts).0
    }

    /// The JSON of prediction event `i` at event time `ts_ms`, and the
    /// probability its label is 1 (see [`route`] for who serves it).
    pub fn event(&mut self, i: u64, ts_ms: i64, drifts: Drifts) -> (String, f64) {
        let (variant, version) = route(&unit(i));
        self.event_as(i, ts_ms, drifts, variant, version)
    }

    /// [`Generator::event`] served by `version` under `variant`. Version 1
    /// is calibrated (its label is 1 with the probability it predicts);
    /// version 2 is the better model: its label is 1 with the sharpened
    /// probability `p² / (p² + (1 − p)²)`, so thresholding it at 0.5 is
    /// right more often, and it answers faster.
    pub fn event_as(
        &mut self,
        i: u64,
        ts_ms: i64,
        drifts: Drifts,
        variant: &str,
        version: &str,
    ) -> (String, f64) {
        let row = self.row(drifts);
        let pred = row.prediction;
        let (u1, u2): (f64, f64) = (self.rng.random(), self.rng.random());
        let better = version == "2";
        let latency = if better {
            4.0 + 14.0 * (u1 + u2) / 2.0
        } else {
            5.0 + 20.0 * (u1 + u2) / 2.0
        };
        let [a, inc, s, t, d] = row.numeric;
        let [reg, dev] = row.categorical;
        let json = format!(
            r#"{{"event_id":"evt-{i}","ts":{ts_ms},"model":"{MODEL}","version":"{version}","variant":"{variant}","unit_id":"{u}","features":{{"age":{a},"income":{inc},"credit_score":{s},"tenure_months":{t},"debt_ratio":{d},"region":"{reg}","device":"{dev}"}},"prediction":{pred:.6},"latency_ms":{latency:.3}}}"#,
            u = unit(i)
        );
        // The score as the event carries it (6 decimals).
        let p = (pred * 1e6).round() / 1e6;
        let truth = if better {
            p * p / (p * p + (1.0 - p) * (1.0 - p))
        } else {
            p
        };
        (json, truth)
    }
}

/// The unit (user) of prediction `i`.
pub fn unit(i: u64) -> String {
    format!("user-{}", i % 50_000)
}

/// The demo's two experiments: half of the users (by a layer hash) are in
/// `challenger`, a fair 50/50 test of version 2 against version 1; the
/// other half in `rollout`, declared 50/50 but served by a router with a
/// bug that sends 55% of its users to the canary.
pub const EXPERIMENTS: [&str; 2] = ["challenger", "rollout"];

/// Who serves `unit`: (variant, version).
pub fn route(unit: &str) -> (&'static str, &'static str) {
    if crate::ab::bucket("credit-demo-layer", unit) < 5_000 {
        if crate::ab::bucket("credit-challenger", unit) < 5_000 {
            ("control", "1")
        } else {
            ("challenger", "2")
        }
    } else if crate::ab::bucket("credit-rollout", unit) < 4_500 {
        // Should be 5,000: the router's bug.
        ("stable", "1")
    } else {
        ("canary", "2")
    }
}

/// Share of labels that never arrive.
pub const MISSING_LABELS: f64 = 0.10;
/// Share of labels that arrive after the label horizon.
pub const LATE_LABELS: f64 = 0.02;
/// Share of labels flipped once the concept has changed.
pub const FLIPPED_LABELS: f64 = 0.4;
/// The demo's label horizon.
pub const LABEL_HORIZON_MS: i64 = 180_000;

/// Draws the label of each prediction and when it arrives (own seed, so
/// the feature stream does not depend on it).
pub struct Labels {
    rng: StdRng,
    delay: Exp<f64>,
}

impl Labels {
    /// A label generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            delay: Exp::new(1.0 / 20_000.0).expect("valid parameters"),
        }
    }

    /// The label of prediction `i` made at `ts_ms` with `score`: `None` when
    /// it never arrives, else its event time and JSON. The true class is
    /// drawn with probability `score`; after a concept change a share of
    /// them is flipped.
    pub fn label(
        &mut self,
        i: u64,
        ts_ms: i64,
        score: f64,
        drifts: Drifts,
    ) -> Option<(i64, String)> {
        let r = &mut self.rng;
        let mut y = r.random_bool(score.clamp(0.0, 1.0));
        if drifts.concept && r.random_bool(FLIPPED_LABELS) {
            y = !y;
        }
        let u: f64 = r.random();
        let delay = if u < MISSING_LABELS {
            return None;
        } else if u < MISSING_LABELS + LATE_LABELS {
            LABEL_HORIZON_MS + 90_000
        } else {
            (self.delay.sample(r) as i64).clamp(500, 90_000)
        };
        let at = ts_ms + delay;
        let json = format!(
            r#"{{"event_id":"evt-{i}","ts":{at},"model":"{MODEL}","label":"{}"}}"#,
            u8::from(y)
        );
        Some((at, json))
    }
}

/// Writes a reference sample of `rows` rows (features and the model's
/// prediction on them) as Parquet at `path`.
pub fn write_reference(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let mut g = Generator::new(seed);
    let mut cols: Vec<Vec<f64>> = (0..5).map(|_| Vec::with_capacity(rows)).collect();
    let mut cats: Vec<Vec<&str>> = (0..2).map(|_| Vec::with_capacity(rows)).collect();
    let mut predictions = Vec::with_capacity(rows);
    for _ in 0..rows {
        let r = g.row(Drifts::NONE);
        predictions.push(r.prediction);
        for (c, v) in cols.iter_mut().zip(r.numeric) {
            c.push(v);
        }
        for (c, v) in cats.iter_mut().zip(r.categorical) {
            c.push(v);
        }
    }
    let mut fields: Vec<Field> = NUMERIC
        .iter()
        .map(|n| Field::new(*n, DataType::Float64, false))
        .collect();
    fields.extend(
        CATEGORICAL
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false)),
    );
    fields.push(Field::new("prediction", DataType::Float64, false));
    let mut arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef)
        .collect();
    arrays.extend(
        cats.into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef),
    );
    arrays.push(Arc::new(Float64Array::from(predictions)));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    let bytes = crate::storage::encode_parquet(batch.schema(), &[batch])?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, &bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The configuration of the demo (also a template for a real one).
pub fn demo_config(brokers: &str, data: &Path, reference: &Path) -> Result<Config> {
    Config::from_toml_str(&demo_config_toml(brokers, data, reference))
}

/// [`demo_config`] as TOML, for a `mlwatch run --config` file.
pub fn demo_config_toml(brokers: &str, data: &Path, reference: &Path) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "mlwatch-demo"
session_timeout = "6s"

[storage]
url = "{data}"

[window]
size = "1m"
allowed_lateness = "5s"
sample_size = 5000

[checkpoint]
interval = "2s"

# Consumed events as Parquet: what `mlwatch backfill` re-runs.
[archive]
enabled = true

# The demo runs 5 features x ~20 windows = ~100 tests; at 0.05 about five
# would be flagged by chance alone. A stricter threshold keeps the demo's
# false-alarm rate near zero while a real shift is still found at p << 1e-10.
[drift]
p_value_threshold = 0.001

# The detectors watch ~4,500 labels a minute for 20 minutes. Page-Hinkley
# without forgetting (alpha = 1), its delta half the smallest shift of the
# error rate worth an alarm (0.1); DDM tracks its minimum once 1,000 labels
# are in (from 30 it anchors on a noisy early minimum). F1 and the Brier score
# on ~1,100 labels a variant vary by 5-10% between windows (and are not
# z-tested like the proportions): their tolerance is 20%.
[performance]
page_hinkley_delta = 0.05
page_hinkley_alpha = 1.0
ddm_min_instances = 1000
tolerances = {{ f1 = 0.2, brier = 0.2 }}

[models.{MODEL}]
reference = "{reference}"
prediction = "numeric"
# Labels on the outcomes topic are joined to predictions; a window's
# performance is final 3 minutes after its end.
task = "binary"
positive_label = "1"
decision_threshold = 0.5
label_horizon = "3m"
[models.{MODEL}.features]
age = "numeric"
income = "numeric"
credit_score = "numeric"
tenure_months = "numeric"
debt_ratio = "numeric"
region = "categorical"
device = "categorical"

# Half of the users test version 2 against version 1 (see `demo::route`).
[experiments.challenger]
model = "{MODEL}"
control = "control"
salt = "credit-challenger"
start = "{start}"
primary_metric = "accuracy"
guardrails = {{ latency_p95 = 0.10 }}
mde = 0.02
variants = [
  {{ name = "control", version = "1", weight = 50 }},
  {{ name = "challenger", version = "2", weight = 50 }},
]

# The other half: declared 50/50, but the router sends 55% to the canary.
[experiments.rollout]
model = "{MODEL}"
control = "stable"
salt = "credit-rollout"
start = "{start}"
primary_metric = "accuracy"
guardrails = {{ latency_p95 = 0.10 }}
mde = 0.02
variants = [
  {{ name = "stable", version = "1", weight = 50 }},
  {{ name = "canary", version = "2", weight = 50 }},
]
"#,
        data = data.display(),
        reference = reference.display(),
        start = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(START_MS)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Topics and partition counts the demo broker serves.
pub fn create_topics<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    config: &Config,
) -> Result<()> {
    cluster.create_topic(&config.kafka.predictions_topic, 3, 1)?;
    cluster.create_topic(&config.kafka.features_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.outcomes_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.tracking_topic, 1, 1)?;
    if !config.kafka.alerts_topic.is_empty() {
        cluster.create_topic(&config.kafka.alerts_topic, 1, 1)?;
    }
    Ok(())
}

/// Options of [`run_demo`].
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Output folder.
    pub data: PathBuf,
    /// Number of prediction events.
    pub events: u64,
    /// Number of one-minute windows the events span.
    pub windows: u64,
}

/// Runs the demo end to end and returns the pipeline's summary.
pub async fn run_demo(opts: &DemoOptions) -> Result<RunSummary> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    std::fs::create_dir_all(&opts.data).map_err(|source| Error::Io {
        path: opts.data.clone(),
        source,
    })?;
    let data = opts.data.canonicalize().map_err(|source| Error::Io {
        path: opts.data.clone(),
        source,
    })?;
    let reference = data.join("reference").join(format!("{MODEL}.parquet"));
    write_reference(&reference, 20_000, 7)?;
    let config = demo_config(&brokers, &data, &reference)?;
    create_topics(&cluster, &config)?;
    // A previous demo's checkpoint refers to another broker's offsets.
    let _ = std::fs::remove_file(data.join(crate::storage::tables::checkpoint_file(
        &config.kafka.group_id,
    )));

    register_version(&data, &reference, 1).await?;
    register_version(&data, &reference, 2).await?;

    let progress = Arc::new(AtomicU64::new(0));
    let (_stop_tx, stop_rx) = watch::channel(None);
    let control = RunControl {
        stop: stop_rx,
        idle_exit: Some(Duration::from_secs(4)),
        progress: Some(progress.clone()),
    };
    let pipeline = tokio::spawn(pipeline::run(config.clone(), control));

    let topics = (
        config.kafka.predictions_topic.clone(),
        config.kafka.outcomes_topic.clone(),
    );
    let (events, windows) = (opts.events, opts.windows.max(1));
    let producer_progress = progress.clone();
    let producer = tokio::task::spawn_blocking(move || {
        produce(&brokers, &topics, events, windows, &producer_progress)
    });
    producer.await.map_err(|e| Error::Task {
        task: "demo producer",
        reason: e.to_string(),
    })??;
    let summary = pipeline.await.map_err(|e| Error::Task {
        task: "demo pipeline",
        reason: e.to_string(),
    })??;
    drop(cluster);
    Ok(summary)
}

/// The tracking experiment holding the demo versions' training runs.
pub const DEMO_TRAINING: &str = "credit_risk-training";

/// Registers `version` of the demo model (unless the registry has it) with
/// the metrics of that version on labelled training data, the baseline of
/// the `performance` table.
async fn register_version(data: &Path, reference: &Path, version: u64) -> Result<()> {
    let storage = crate::storage::Storage::open(&data.display().to_string(), &Default::default())?;
    let registry = crate::registry::ModelRegistry::new(storage);
    let selector = crate::registry::Selector::Version(version);
    if registry.get_model(MODEL, &selector).await.is_ok() {
        return Ok(());
    }
    let mut g = Generator::new(7);
    let mut labels = Labels::new(8);
    let (mut scores, mut ys) = (Vec::new(), Vec::new());
    let v = version.to_string();
    for i in 0..20_000 {
        let (json, truth) = g.event_as(i, START_MS, Drifts::NONE, "", &v);
        let score = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|j| j["prediction"].as_f64())
            .unwrap_or(f64::NAN);
        if let Some((_, json)) = labels.label(i, START_MS, truth, Drifts::NONE) {
            scores.push(crate::labels::Value::Number(score));
            let y = if json.contains(r#""label":"1""#) {
                "1"
            } else {
                "0"
            };
            ys.push(crate::labels::Value::Class(y.into()));
        }
    }
    let scoring = crate::monitor::performance::Scoring {
        task: crate::config::Task::Binary,
        positive_label: "1".into(),
        decision_threshold: 0.5,
    };
    let pairs: Vec<_> = scores.iter().zip(&ys).collect();
    let metadata = crate::registry::ModelMetadata {
        metrics: scoring
            .metrics(&pairs)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        model_type: Some(
            if version == 1 {
                "demo.calibrated_score"
            } else {
                "demo.sharpened_score"
            }
            .into(),
        ),
        run_id: Some(training_run(&registry, version).await?),
        ..Default::default()
    };
    registry.register_model(MODEL, reference, metadata).await?;
    // Version 1 serves, version 2 is being validated (the experiments'
    // challenger and canary): the registry page's stages and history.
    let stage = if version == 1 {
        Stage::Production
    } else {
        Stage::Staging
    };
    let skip = crate::registry::PromoteOptions {
        allow_skip: true,
        force: false,
    };
    registry
        .promote_model(MODEL, version, Stage::Staging, skip)
        .await?;
    if stage == Stage::Production {
        registry.promote_model(MODEL, version, stage, skip).await?;
        registry.set_alias(MODEL, "champion", version).await?;
    } else {
        registry.set_alias(MODEL, "challenger", version).await?;
    }
    Ok(())
}

/// The experiment `DEMO_TRAINING` gets the (synthetic) training run of
/// `version`: its hyperparameters and loss / accuracy curves by epoch,
/// deterministic per version. Returns the run id the version records.
async fn training_run(registry: &crate::registry::ModelRegistry, version: u64) -> Result<String> {
    let tracker = crate::tracking::ExperimentTracker::new(registry.storage().clone());
    let name = format!("train-v{version}");
    let mut run = tracker
        .start_run_owned_by(DEMO_TRAINING, Some(&name), &[], None)
        .await?;
    let (lr, depth, final_loss, final_acc) = if version == 1 {
        ("0.1", "4", 0.46, 0.78)
    } else {
        ("0.05", "6", 0.38, 0.84)
    };
    run.log_params(&[
        ("learning_rate".to_string(), lr.to_string()),
        ("max_depth".to_string(), depth.to_string()),
        ("epochs".to_string(), "30".to_string()),
    ])?;
    run.set_tags(&[("model".to_string(), MODEL.to_string())])?;
    let mut points = Vec::new();
    for epoch in 0..30i64 {
        let decay = (-(epoch as f64) / 6.0).exp();
        let wiggle = 0.01 * ((epoch as f64) * 1.7 + version as f64).sin();
        points.push(("loss", final_loss + 0.3 * decay + wiggle, epoch));
        points.push(("val_loss", final_loss + 0.03 + 0.3 * decay, epoch));
        points.push(("val_accuracy", final_acc - 0.25 * decay, epoch));
    }
    run.log_metrics(&points).await?;
    let id = run.id().to_string();
    run.end(crate::tracking::RunStatus::Finished).await?;
    Ok(id)
}

/// Sends one record, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    payload: &str,
) -> Result<()> {
    let mut record = BaseRecord::to(topic).payload(payload).key(key);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, r)) => {
                if matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    std::thread::sleep(Duration::from_millis(2));
                    record = r;
                } else {
                    return Err(e.into());
                }
            }
        }
    }
}

/// Produces the synthetic stream (predictions, and their labels in the
/// order of their event times), keeping at most ~30k records in flight
/// ahead of the consumer.
fn produce(
    brokers: &str,
    (predictions, outcomes): &(String, String),
    events: u64,
    windows: u64,
    consumed: &AtomicU64,
) -> Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let mut g = Generator::new(42);
    let mut labels = Labels::new(43);
    let mut waiting: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u64, String)>> =
        Default::default();
    let span_ms = windows as i64 * 60_000;
    let mut sent = 0u64;
    for i in 0..events {
        while sent.saturating_sub(consumed.load(Ordering::Relaxed)) > 30_000 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let ts = START_MS + (i as i64 * span_ms) / events as i64;
        while let Some(std::cmp::Reverse((at, j, _))) = waiting.peek()
            && *at <= ts
        {
            let key = unit(*j);
            if let Some(std::cmp::Reverse((_, _, json))) = waiting.pop() {
                send(&producer, outcomes, &key, &json)?;
                sent += 1;
            }
        }
        let window = ((ts - START_MS) / 60_000) as u64;
        let drifts = Drifts::at(window, windows);
        let (payload, score) = g.event(i, ts, drifts);
        send(&producer, predictions, &unit(i), &payload)?;
        sent += 1;
        if let Some((at, json)) = labels.label(i, ts, score, drifts) {
            waiting.push(std::cmp::Reverse((at, i, json)));
        }
    }
    while let Some(std::cmp::Reverse((_, j, json))) = waiting.pop() {
        send(&producer, outcomes, &unit(j), &json)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
