//! The embedded demo: an in-process Kafka broker (librdkafka's mock cluster),
//! a synthetic event stream, and the same [`pipeline::run`] as `mlwatch run`.
//!
//! The stream has one model, `credit_risk`, with five numeric and two
//! categorical features and a score prediction. Three changes are injected,
//! each from a window boundary on ([`Drifts::at`]): from a quarter of the
//! windows on, a new `region` ("overseas") takes a fifth of the events;
//! from half-way, `credit_score` shifts up by two-thirds of a standard
//! deviation; from three quarters, the prediction's distribution moves up.
//! Every other column keeps its training distribution. The producer paces
//! itself on the pipeline's progress because the mock broker keeps only
//! ~5 MiB per partition.

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
}

impl Drifts {
    /// No change: the training distribution.
    pub const NONE: Drifts = Drifts {
        score: false,
        new_category: false,
        prediction: false,
    };

    /// The changes active in window `window` (0-based) of `windows`.
    pub fn at(window: u64, windows: u64) -> Self {
        Self {
            new_category: 4 * window >= windows,
            score: 2 * window >= windows,
            prediction: 4 * window >= 3 * windows,
        }
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
        let row = self.row(drifts);
        let variant = if self.rng.random_bool(0.5) { "A" } else { "B" };
        let pred = row.prediction;
        let latency = 5.0 + self.rng.random::<f64>() * 20.0;
        let [a, inc, s, t, d] = row.numeric;
        let [reg, dev] = row.categorical;
        format!(
            r#"{{"event_id":"evt-{i}","ts":{ts_ms},"model":"{MODEL}","version":"1","variant":"{variant}","unit_id":"user-{u}","features":{{"age":{a},"income":{inc},"credit_score":{s},"tenure_months":{t},"debt_ratio":{d},"region":"{reg}","device":"{dev}"}},"prediction":{pred:.6},"latency_ms":{latency:.3}}}"#,
            u = i % 50_000
        )
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

# The demo runs 5 features x ~20 windows = ~100 tests; at 0.05 about five
# would be flagged by chance alone. A stricter threshold keeps the demo's
# false-alarm rate near zero while a real shift is still found at p << 1e-10.
[drift]
p_value_threshold = 0.001

[models.{MODEL}]
reference = "{reference}"
prediction = "numeric"
[models.{MODEL}.features]
age = "numeric"
income = "numeric"
credit_score = "numeric"
tenure_months = "numeric"
debt_ratio = "numeric"
region = "categorical"
device = "categorical"
"#,
        data = data.display(),
        reference = reference.display(),
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

    let progress = Arc::new(AtomicU64::new(0));
    let (_stop_tx, stop_rx) = watch::channel(None);
    let control = RunControl {
        stop: stop_rx,
        idle_exit: Some(Duration::from_secs(4)),
        progress: Some(progress.clone()),
    };
    let pipeline = tokio::spawn(pipeline::run(config.clone(), control));

    let topic = config.kafka.predictions_topic.clone();
    let (events, windows) = (opts.events, opts.windows.max(1));
    let producer_progress = progress.clone();
    let producer = tokio::task::spawn_blocking(move || {
        produce(&brokers, &topic, events, windows, &producer_progress)
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

/// Produces the synthetic stream, keeping at most ~30k records in flight
/// ahead of the consumer.
fn produce(
    brokers: &str,
    topic: &str,
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
    let span_ms = windows as i64 * 60_000;
    for i in 0..events {
        while i.saturating_sub(consumed.load(Ordering::Relaxed)) > 30_000 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let ts = START_MS + (i as i64 * span_ms) / events as i64;
        let window = ((ts - START_MS) / 60_000) as u64;
        let payload = g.event_json(i, ts, Drifts::at(window, windows));
        let key = format!("user-{}", i % 50_000);
        let mut record = BaseRecord::to(topic).payload(&payload).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
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
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
