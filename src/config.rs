//! Configuration: embedded `config/mlwatch.toml`, then an optional file, then
//! `MLWATCH__SECTION__KEY` environment variables (figment layers).
//!
//! Every struct denies unknown fields, so a misspelt key is an error that
//! names it (and the layer it came from) instead of a silently ignored line.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::drift::DriftMethod;
use crate::stats::ks::KsMethod;

/// Method names accepted in `[models.M.drift] method`.
const METHOD_NAMES: &str =
    "auto, ks, wasserstein, psi, js, hellinger, anderson, cramer_von_mises, chi2, g_test, z";

/// The embedded defaults (also the documentation of every key).
pub const DEFAULT_TOML: &str = include_str!("../config/mlwatch.toml");

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// Output storage.
    pub storage: StorageConfig,
    /// Event-time windows.
    pub window: WindowConfig,
    /// Checkpointing and offset commits.
    pub checkpoint: CheckpointConfig,
    /// Drift tests.
    pub drift: DriftConfig,
    /// Data-quality thresholds.
    pub quality: QualityConfig,
    /// Where alerts go.
    pub alerts: AlertsConfig,
    /// Training profiles kept with registry versions.
    pub baseline: BaselineConfig,
    /// Model registry.
    pub registry: RegistryConfig,
    /// Experiment tracking from the tracking topic.
    pub tracking: TrackingConfig,
    /// Labels joined to predictions.
    pub outcomes: OutcomesConfig,
    /// Model performance per window and concept-drift detectors.
    pub performance: PerformanceConfig,
    /// Monitored models by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// A/B(/n) experiments by name.
    #[serde(default)]
    pub experiments: BTreeMap<String, ExperimentConfig>,
    /// The archive of consumed events.
    pub archive: ArchiveConfig,
    /// Backfills run on a cron schedule (`[[schedules]]`).
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
}

/// `[archive]`: the consumed events as Parquet (see [`crate::archive`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Whether `mlwatch run` archives the events it consumes.
    pub enabled: bool,
    /// Archived rows buffered before a checkpoint is forced.
    pub max_buffered: usize,
}

/// `[[schedules]]`: a backfill run on a cron schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Name (the `schedule` of its rows in `jobs`).
    pub name: String,
    /// When it runs: a cron expression, five fields (minutes) or six
    /// (seconds first), UTC.
    pub cron: String,
    /// Start of the backfill, relative to the scheduled time (`-1d`), or
    /// absolute (RFC 3339, `yyyy-mm-dd`).
    pub from: String,
    /// End of the backfill (exclusive), as `from`.
    #[serde(default = "default_to")]
    pub to: String,
    /// Models to backfill (all when empty).
    #[serde(default)]
    pub models: Vec<String>,
    /// Restrict to one model version.
    #[serde(default)]
    pub version: Option<String>,
    /// Input other than the archive (URL, folder or glob).
    #[serde(default)]
    pub input: Option<String>,
}

fn default_to() -> String {
    "now".into()
}

/// `[experiments.NAME]`: an A/B(/n) test of model versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The model (declared in `[models]`).
    pub model: String,
    /// Variants in allocation order: name, model version, traffic weight
    /// (percent; they sum to 100).
    pub variants: Vec<VariantConfig>,
    /// The variant the others are compared with.
    pub control: String,
    /// Salt of the assignment hash (default: the experiment's name).
    #[serde(default)]
    pub salt: Option<String>,
    /// First event time of the experiment (RFC 3339).
    pub start: chrono::DateTime<chrono::Utc>,
    /// Last event time (RFC 3339), if it has one.
    #[serde(default)]
    pub end: Option<chrono::DateTime<chrono::Utc>>,
    /// The metric the decision is made on.
    pub primary_metric: String,
    /// Metrics that must not get worse, with the relative degradation
    /// allowed (e.g. `{ latency_p95 = 0.10 }`).
    #[serde(default)]
    pub guardrails: BTreeMap<String, f64>,
    /// Minimum detectable effect on the primary metric (absolute).
    pub mde: f64,
    /// Significance level.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Power for the sample size.
    #[serde(default = "default_power")]
    pub power: f64,
}

/// One arm of an experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// Variant name (the events' `variant`).
    pub name: String,
    /// Model version it serves.
    pub version: String,
    /// Share of the units, percent (two decimals at most).
    pub weight: f64,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_power() -> f64 {
    0.8
}

/// Kafka settings mlwatch reasons about, plus a pass-through table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topic of prediction events.
    pub predictions_topic: String,
    /// Topic of feature events.
    pub features_topic: String,
    /// Topic of outcome events.
    pub outcomes_topic: String,
    /// Topic of experiment-tracking events.
    pub tracking_topic: String,
    /// Topic alerts are produced to ("" = none).
    pub alerts_topic: String,
    /// "earliest" or "latest".
    pub auto_offset_reset: OffsetReset,
    /// Consumer session timeout.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Most records per decoded batch.
    pub max_batch_records: usize,
    /// Longest wait before a partial batch is processed.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// librdkafka settings passed through verbatim.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// From the oldest retained record.
    Earliest,
    /// Only records produced after joining.
    Latest,
}

/// Output storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Root URL or local path of every output table.
    pub url: String,
    /// object_store options passed through (secrets belong in the environment).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Event-time windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Tumbling window size.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// Allowed lateness behind the newest event time per partition.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Values kept per numeric column, window and group (bottom-k sample).
    pub sample_size: usize,
    /// Distinct categories counted per categorical column, window and
    /// group; the rest are counted together as `other`.
    pub max_categories: usize,
    /// (version, variant) groups kept per model and window; events of a
    /// further one are dead letters (`too_many_groups`).
    pub max_groups: usize,
    /// How far a partition's own watermark may run ahead of the global one
    /// before it is paused until the others catch up; `None`: twice `size`.
    #[serde(default, with = "humantime_serde")]
    pub max_ahead: Option<Duration>,
    /// Distinct unit ids kept per window and variant of a model in an
    /// experiment (the smallest hashes; they count units and feed the
    /// sample-ratio check).
    #[serde(default = "default_unit_sample")]
    pub unit_sample: usize,
}

fn default_unit_sample() -> usize {
    10_000
}

impl WindowConfig {
    /// [`WindowConfig::max_ahead`] in milliseconds, with its default.
    pub fn max_ahead_ms(&self) -> i64 {
        self.max_ahead.unwrap_or(self.size * 2).as_millis() as i64
    }
}

/// Checkpointing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Time between checkpoints.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Dead letters buffered before a checkpoint is forced.
    pub max_dead_letters: usize,
}

/// Drift tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// p-value below which a result is drifted (p-value methods without a
    /// column threshold).
    pub p_value_threshold: f64,
    /// Correction of one window's p-values per model and version.
    pub correction: Correction,
    /// Share of drifted columns at which the dataset drifted.
    pub dataset_share: f64,
    /// KS p-value method of the `ks_2samp` SQL function (the windows'
    /// drift tests use `auto`, scipy's default, as Evidently does).
    pub ks_method: KsMethod,
    /// Fewest current values for a feature to be tested.
    pub min_current: usize,
}

/// Data-quality thresholds: a share above one is a breach.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Share of events without a value.
    pub missing_share: f64,
    /// Share of numeric values outside the profile's [min, max].
    pub out_of_range_share: f64,
    /// Share of categorical values the profile never saw.
    pub unseen_share: f64,
    /// Share of a numeric column's records dead-lettered for a wrong type.
    pub type_error_share: f64,
}

/// Alerts (besides the `alerts` table and `kafka.alerts_topic`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// URL alerts are POSTed to as JSON ("" = none).
    pub webhook_url: String,
    /// Timeout of one webhook request.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Retries of a failed webhook request.
    pub webhook_retries: u32,
    /// Windows during which repeats for the same (model, version, column)
    /// are suppressed.
    pub cooldown: u32,
}

/// Training profiles kept with registry versions (`mlwatch baseline build`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// Values kept per numeric column of a profile (bottom-k sample).
    pub sample_size: usize,
    /// How often `mlwatch run` looks for new versions' profiles.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

/// Multiple-testing correction across the columns of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// Each column on its own p-value.
    None,
    /// Holm-Bonferroni (family-wise error rate).
    Holm,
    /// Benjamini-Hochberg (false discovery rate).
    Bh,
}

impl Correction {
    /// The name in the configuration and the SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Holm => "holm",
            Self::Bh => "bh",
        }
    }
}

/// Model registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Commits between snapshots of the event log (0: never).
    pub snapshot_every: u64,
    /// Rules checked when a version enters a stage.
    #[serde(default)]
    pub rules: Vec<crate::registry::PromotionRule>,
}

/// Experiment tracking from the tracking topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// Most runs open at once.
    pub max_open_runs: usize,
    /// A run without events this long is ended KILLED.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Reads compact a tracking table first once it holds more small
    /// files than this (0: only `mlwatch runs compact` compacts).
    pub compact_after_files: usize,
    /// How long compacted input files stay (hidden from readers) before
    /// they are deleted, so that queries that listed them can finish.
    #[serde(with = "humantime_serde")]
    pub compact_grace: Duration,
}

impl TrackingConfig {
    /// The compaction policy these settings give, for runs whose tracking
    /// topic is `tracking_topic` (`kafka.tracking_topic`).
    pub fn compaction(&self, tracking_topic: &str) -> crate::tracking::compact::CompactionPolicy {
        crate::tracking::compact::CompactionPolicy {
            after_files: self.compact_after_files,
            grace: self.compact_grace,
            tracking_topic: tracking_topic.to_string(),
            ..Default::default()
        }
    }
}

/// Labels (the outcomes topic) joined to predictions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesConfig {
    /// Predictions held per model over the windows waiting for labels (a
    /// bottom-k sample by hash of `event_id` per window past it), and early
    /// labels held per model.
    pub max_pending: usize,
}

/// Model performance per window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceConfig {
    /// A metric is degraded when it is worse than the registry version's
    /// value by more than this share of that value.
    pub tolerance: f64,
    /// Per-metric overrides of `tolerance`.
    #[serde(default)]
    pub tolerances: BTreeMap<String, f64>,
    /// Fewest labelled predictions for a window's metrics to be written.
    pub min_labeled: usize,
    /// Error-stream detectors run per model version (`ddm`,
    /// `page_hinkley`, `adwin`).
    pub detectors: Vec<String>,
    /// A proportion metric is degraded only when a one-sided z-test
    /// against the registry value rejects at this level.
    pub alpha: f64,
    /// DDM: drift when `p + s` exceeds `p_min + level * s_min`.
    pub ddm_drift_level: f64,
    /// DDM: values before it starts tracking its minimum.
    pub ddm_min_instances: u64,
    /// Page-Hinkley: drift when the cumulative deviation exceeds this.
    pub page_hinkley_threshold: f64,
    /// Page-Hinkley: the magnitude of change tolerated.
    pub page_hinkley_delta: f64,
    /// Page-Hinkley: forgetting factor of the cumulative sum (1: none).
    pub page_hinkley_alpha: f64,
    /// ADWIN: confidence of a cut.
    pub adwin_delta: f64,
}

impl PerformanceConfig {
    /// The tolerance of `metric`.
    pub fn tolerance_of(&self, metric: &str) -> f64 {
        self.tolerances
            .get(metric)
            .copied()
            .unwrap_or(self.tolerance)
    }
}

/// What a model predicts, which fixes how its labels are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Two classes: a score thresholded at `decision_threshold`, or a
    /// categorical prediction compared with `positive_label`.
    Binary,
    /// Several classes: a categorical prediction.
    Multiclass,
    /// A number.
    Regression,
}

impl Task {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Multiclass => "multiclass",
            Self::Regression => "regression",
        }
    }
}

/// One monitored model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Reference sample: a Parquet or CSV file (path or URL), one column per feature.
    pub reference: String,
    /// Type of the `prediction` field.
    #[serde(default = "default_prediction")]
    pub prediction: FeatureType,
    /// Declared features and their types; this fixes the Arrow schema.
    pub features: BTreeMap<String, FeatureType>,
    /// Drift methods and thresholds per column.
    #[serde(default)]
    pub drift: ModelDriftConfig,
    /// What the model predicts; with it, labels from the outcomes topic
    /// are joined to predictions and its performance is measured.
    #[serde(default)]
    pub task: Option<Task>,
    /// The label (and class prediction) that counts as positive (binary).
    #[serde(default = "default_positive_label")]
    pub positive_label: String,
    /// A binary score at or above this predicts the positive class.
    #[serde(default = "default_decision_threshold")]
    pub decision_threshold: f64,
    /// How long after its window a prediction's label may arrive.
    #[serde(default = "default_label_horizon", with = "humantime_serde")]
    pub label_horizon: Duration,
}

fn default_positive_label() -> String {
    "1".into()
}

fn default_decision_threshold() -> f64 {
    0.5
}

fn default_label_horizon() -> Duration {
    Duration::from_secs(3600)
}

/// `[models.M.drift]`: per-column drift settings (feature names, or
/// `prediction`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDriftConfig {
    /// Method per column (`ks`, `wasserstein`, `psi`, `js`, `hellinger`,
    /// `anderson`, `cramer_von_mises`, `chi2`, `g_test`, `z`); others get
    /// Evidently's choice by type and size.
    #[serde(default)]
    pub method: BTreeMap<String, String>,
    /// Threshold per column (a p-value, or a distance for distance methods).
    #[serde(default)]
    pub threshold: BTreeMap<String, f64>,
}

fn default_prediction() -> FeatureType {
    FeatureType::Numeric
}

/// Type of a feature or prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    /// A number (JSON number; numeric strings are accepted).
    Numeric,
    /// A category (JSON string, number or bool; stored as a string).
    Categorical,
}

impl Config {
    /// Loads the layered configuration: defaults, then `file`, then env.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("MLWATCH__").split("__"));
        Self::from_figment(fig)
    }

    /// Builds a config from defaults plus a TOML string (tests, demo).
    pub fn from_toml_str(toml: &str) -> Result<Self> {
        let fig = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml));
        Self::from_figment(fig)
    }

    fn from_figment(fig: Figment) -> Result<Self> {
        let cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            Error::Config(msgs.join("; "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("`{key}`: {why}")));
        if self.window.size.as_millis() == 0 {
            return bad("window.size", "must be positive");
        }
        // Window arithmetic is in i64 epoch ms over event times of years 0
        // to 9999: durations far beyond any window must not overflow it.
        const LONGEST: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
        let mut durations = vec![
            ("window.size".to_string(), self.window.size),
            (
                "window.allowed_lateness".to_string(),
                self.window.allowed_lateness,
            ),
            ("baseline.refresh".to_string(), self.baseline.refresh),
        ];
        durations.extend(
            self.window
                .max_ahead
                .map(|d| ("window.max_ahead".to_string(), d)),
        );
        durations.extend(
            self.models
                .iter()
                .map(|(m, c)| (format!("models.{m}.label_horizon"), c.label_horizon)),
        );
        if let Some((key, _)) = durations.iter().find(|(_, d)| *d > LONGEST) {
            return bad(key, "must be at most 100 years");
        }
        for (key, topic) in [
            ("kafka.predictions_topic", &self.kafka.predictions_topic),
            ("kafka.features_topic", &self.kafka.features_topic),
            ("kafka.outcomes_topic", &self.kafka.outcomes_topic),
            ("kafka.tracking_topic", &self.kafka.tracking_topic),
            ("kafka.alerts_topic", &self.kafka.alerts_topic),
        ] {
            // librdkafka takes a name starting with `^` for a pattern; a
            // record's kind is found by its topic's exact name. (An empty
            // alerts topic turns producing alerts off.)
            let off = key == "kafka.alerts_topic" && topic.is_empty();
            if (topic.is_empty() && !off) || topic.starts_with('^') {
                return bad(key, "must be a topic name (not empty, not a `^` pattern)");
            }
        }
        if self.window.unit_sample < 2 {
            return bad("window.unit_sample", "must be at least 2");
        }
        if self.window.sample_size == 0 {
            return bad("window.sample_size", "must be at least 1");
        }
        if self.baseline.sample_size == 0 {
            return bad("baseline.sample_size", "must be at least 1");
        }
        if self.window.max_groups == 0 {
            return bad("window.max_groups", "must be at least 1");
        }
        if self.window.max_ahead.is_some_and(|d| d.is_zero()) {
            return bad("window.max_ahead", "must be positive");
        }
        if self.window.max_categories == 0 {
            return bad("window.max_categories", "must be at least 1");
        }
        if self.archive.max_buffered == 0 {
            return bad("archive.max_buffered", "must be at least 1");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let key = |k: &str| format!("schedules[{i}].{k}");
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return bad(&key("name"), "must be set and unique");
            }
            if let Err(e) = crate::backfill::schedule::parse_cron(&s.cron) {
                return bad(&key("cron"), &e.to_string());
            }
            for (k, v) in [("from", &s.from), ("to", &s.to)] {
                if let Err(e) = crate::backfill::range::parse_time(v, 0) {
                    return bad(&key(k), &e.to_string());
                }
            }
            // The range each run would cover, where it does not depend on
            // the run's time (both relative, or both absolute).
            let at = |now: i64| -> Result<(i64, i64)> {
                Ok((
                    crate::backfill::range::parse_time(&s.from, now)?,
                    crate::backfill::range::parse_time(&s.to, now)?,
                ))
            };
            let (a, b) = (at(1_767_225_600_000)?, at(1_798_761_600_000)?);
            if a.1 - a.0 == b.1 - b.0
                && let Err(Error::Config(why)) = crate::backfill::range::Covered::new(
                    a.0,
                    a.1,
                    self.window.size.as_millis().max(1) as i64,
                    0,
                )
            {
                return bad(&format!("{} / {}", key("from"), key("to")), &why);
            }
            if let Some(m) = s.models.iter().find(|m| !self.models.contains_key(*m)) {
                return bad(&key("models"), &format!("model `{m}` is not declared"));
            }
        }
        if self.kafka.max_batch_records == 0 {
            return bad("kafka.max_batch_records", "must be at least 1");
        }
        if !(self.drift.p_value_threshold > 0.0 && self.drift.p_value_threshold < 1.0) {
            return bad("drift.p_value_threshold", "must be in (0, 1)");
        }
        for (key, v) in [
            ("quality.missing_share", self.quality.missing_share),
            (
                "quality.out_of_range_share",
                self.quality.out_of_range_share,
            ),
            ("quality.unseen_share", self.quality.unseen_share),
            ("quality.type_error_share", self.quality.type_error_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(key, "must be in [0, 1]");
            }
        }
        if !self.alerts.webhook_url.is_empty()
            && url::Url::parse(&self.alerts.webhook_url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
        {
            return bad("alerts.webhook_url", "must be an http:// or https:// URL");
        }
        if !(self.drift.dataset_share > 0.0 && self.drift.dataset_share <= 1.0) {
            return bad("drift.dataset_share", "must be in (0, 1]");
        }
        if self.tracking.max_open_runs == 0 {
            return bad("tracking.max_open_runs", "must be at least 1");
        }
        if self.tracking.idle_timeout.is_zero() {
            return bad("tracking.idle_timeout", "must be positive");
        }
        if self.outcomes.max_pending < 2 {
            return bad("outcomes.max_pending", "must be at least 2");
        }
        if !(self.performance.tolerance >= 0.0 && self.performance.tolerance.is_finite()) {
            return bad("performance.tolerance", "must be a non-negative number");
        }
        for d in &self.performance.detectors {
            if !crate::monitor::performance::DETECTORS.contains(&d.as_str()) {
                return bad(
                    "performance.detectors",
                    &format!(
                        "unknown detector `{d}`; use {}",
                        crate::monitor::performance::DETECTORS.join(", ")
                    ),
                );
            }
        }
        let p = &self.performance;
        for (key, v) in [
            ("performance.ddm_drift_level", p.ddm_drift_level),
            (
                "performance.page_hinkley_threshold",
                p.page_hinkley_threshold,
            ),
            ("performance.page_hinkley_delta", p.page_hinkley_delta),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, "must be a non-negative number");
            }
        }
        if !(p.page_hinkley_alpha > 0.0 && p.page_hinkley_alpha <= 1.0) {
            return bad("performance.page_hinkley_alpha", "must be in (0, 1]");
        }
        if !(p.alpha > 0.0 && p.alpha < 1.0) {
            return bad("performance.alpha", "must be in (0, 1)");
        }
        if !(p.adwin_delta > 0.0 && p.adwin_delta < 1.0) {
            return bad("performance.adwin_delta", "must be in (0, 1)");
        }
        for (metric, t) in &self.performance.tolerances {
            let key = format!("performance.tolerances.{metric}");
            if !crate::monitor::performance::METRICS.contains(&metric.as_str()) {
                return bad(
                    &key,
                    &format!(
                        "unknown metric; use one of {}",
                        crate::monitor::performance::METRICS.join(", ")
                    ),
                );
            }
            if !(*t >= 0.0 && t.is_finite()) {
                return bad(&key, "must be a non-negative number");
            }
        }
        for (name, e) in &self.experiments {
            crate::ab::validate(name, e, self).map_err(Error::Config)?;
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers", "must not be empty");
        }
        for (name, model) in &self.models {
            if !valid_name(name) {
                return bad(
                    &format!("models.{name}"),
                    "model names use letters, digits, '_', '-' and '.', at most 128 characters",
                );
            }
            if model.features.is_empty() {
                return bad(
                    &format!("models.{name}.features"),
                    "declare at least one feature",
                );
            }
            for feature in model.features.keys() {
                if !valid_name(feature) {
                    return bad(
                        &format!("models.{name}.features.{feature}"),
                        "feature names use letters, digits, '_', '-' and '.'",
                    );
                }
                if feature == crate::event::field::PREDICTION {
                    return bad(
                        &format!("models.{name}.features.{feature}"),
                        "`prediction` names the model's output in results; rename the feature",
                    );
                }
            }
            let column_type = |col: &str| {
                if col == crate::event::field::PREDICTION {
                    Some(model.prediction)
                } else {
                    model.features.get(col).copied()
                }
            };
            for (col, method) in &model.drift.method {
                let key = format!("models.{name}.drift.method.{col}");
                let Some(ty) = column_type(col) else {
                    return bad(&key, "is neither a declared feature nor `prediction`");
                };
                if method == "auto" {
                    continue;
                }
                let Some(m) = DriftMethod::parse(method) else {
                    return bad(
                        &key,
                        &format!("unknown method `{method}`; use one of {}", METHOD_NAMES),
                    );
                };
                let fits = match ty {
                    FeatureType::Numeric => m.fits_numeric(),
                    FeatureType::Categorical => m.fits_categorical(),
                };
                if !fits {
                    let ty = match ty {
                        FeatureType::Numeric => "numeric",
                        FeatureType::Categorical => "categorical",
                    };
                    return bad(
                        &key,
                        &format!("method `{method}` does not apply to the {ty} column `{col}`"),
                    );
                }
            }
            let key = |k: &str| format!("models.{name}.{k}");
            match (model.task, model.prediction) {
                (Some(Task::Multiclass), FeatureType::Numeric) => {
                    return bad(
                        &key("task"),
                        "`multiclass` needs a categorical prediction (the predicted class); set `prediction = \"categorical\"`",
                    );
                }
                (Some(Task::Regression), FeatureType::Categorical) => {
                    return bad(
                        &key("task"),
                        "`regression` needs a numeric prediction; set `prediction = \"numeric\"`",
                    );
                }
                _ => {}
            }
            if model.task == Some(Task::Binary) && model.positive_label.is_empty() {
                return bad(&key("positive_label"), "must not be empty");
            }
            if !model.decision_threshold.is_finite() {
                return bad(&key("decision_threshold"), "must be a finite number");
            }
            for (col, t) in &model.drift.threshold {
                let key = format!("models.{name}.drift.threshold.{col}");
                if column_type(col).is_none() {
                    return bad(&key, "is neither a declared feature nor `prediction`");
                }
                if !(t.is_finite() && *t > 0.0) {
                    return bad(&key, "must be a positive number");
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as JSON, with pass-through options masked
    /// (they may hold credentials).
    pub fn to_masked_json(&self) -> String {
        let mut c = self.clone();
        for v in c
            .kafka
            .options
            .values_mut()
            .chain(c.storage.options.values_mut())
        {
            *v = "***".into();
        }
        if !c.alerts.webhook_url.is_empty() {
            // Webhook URLs often carry a token.
            c.alerts.webhook_url = "***".into();
        }
        serde_json::to_string_pretty(&c).unwrap_or_default()
    }
}

/// Names used in paths and SQL: `[A-Za-z0-9_.-]{1,128}`, not starting with '.'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.window.size, Duration::from_secs(60));
        assert!(c.models.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("[window]\nsise = \"1m\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sise"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_toml_str("[window]\nsize = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("size"), "{err}");
        let err = Config::from_toml_str("[drift]\np_value_threshold = 2.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("drift.p_value_threshold"), "{err}");
    }

    /// Durations window arithmetic would overflow on, topic patterns the
    /// consumer would read but not route, and schedules whose range is
    /// empty on every run are refused with their key.
    #[test]
    fn out_of_range_durations_topics_and_schedule_ranges_are_named() {
        let err = |toml: &str| Config::from_toml_str(toml).unwrap_err().to_string();
        let e = err("[window]\nsize = \"300000000y\"");
        assert!(
            e.contains("`window.size`: must be at most 100 years"),
            "{e}"
        );
        let e = err("[window]\nallowed_lateness = \"200y\"");
        assert!(e.contains("`window.allowed_lateness`"), "{e}");
        let e = err(
            "[models.m]\nreference = \"r.csv\"\ntask = \"binary\"\nlabel_horizon = \"1000y\"\n[models.m.features]\nx = \"numeric\"",
        );
        assert!(e.contains("`models.m.label_horizon`"), "{e}");
        assert!(Config::from_toml_str("[window]\nsize = \"99y\"").is_ok());
        let e = err("[kafka]\npredictions_topic = \"^predictions\\\\..*\"");
        assert!(e.contains("`kafka.predictions_topic`"), "{e}");
        assert!(Config::from_toml_str("[kafka]\nalerts_topic = \"\"").is_ok());
        let schedule = |from: &str, to: &str| {
            format!(
                "[[schedules]]\nname = \"s\"\ncron = \"0 * * * *\"\nfrom = \"{from}\"\nto = \"{to}\""
            )
        };
        let e = err(&schedule("-1h", "-2h"));
        assert!(
            e.contains("`schedules[0].from / schedules[0].to`") && e.contains("not after"),
            "{e}"
        );
        let e = err(&schedule("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"));
        assert!(e.contains("schedules[0].from"), "{e}");
        assert!(Config::from_toml_str(&schedule("-2h", "-1h")).is_ok());
        // Mixed: the range depends on the run's time, checked per run.
        assert!(Config::from_toml_str(&schedule("2026-01-01T00:00:00Z", "-1h")).is_ok());
    }

    fn model_error(extra: &str) -> String {
        Config::from_toml_str(&format!(
            "[models.fraud]\nreference = \"r.csv\"\n[models.fraud.features]\namount = \"numeric\"\ncountry = \"categorical\"\n{extra}"
        ))
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn tasks_are_checked_against_the_prediction_type() {
        let base = |extra: &str| {
            Config::from_toml_str(&format!(
                "[models.m]\nreference = \"r.csv\"\n{extra}\n[models.m.features]\nx = \"numeric\""
            ))
        };
        let err = base("task = \"multiclass\"").unwrap_err().to_string();
        assert!(
            err.contains("models.m.task") && err.contains("categorical"),
            "{err}"
        );
        let err = base("prediction = \"categorical\"\ntask = \"regression\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("models.m.task"), "{err}");
        let err = base("task = \"ranking\"").unwrap_err().to_string();
        assert!(err.contains("ranking"), "{err}");
        let c = base("task = \"binary\"\nlabel_horizon = \"2h\"").unwrap();
        let m = &c.models["m"];
        assert_eq!(
            (m.positive_label.as_str(), m.decision_threshold),
            ("1", 0.5)
        );
        assert_eq!(m.label_horizon, Duration::from_secs(7200));
        let err = Config::from_toml_str("[performance]\ntolerances = { acuracy = 0.1 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("performance.tolerances.acuracy"), "{err}");
    }

    #[test]
    fn drift_methods_are_checked_against_names_and_types() {
        let err = model_error("[models.fraud.drift]\nmethod = { amount = \"kolmogorov\" }");
        assert!(
            err.contains("models.fraud.drift.method.amount")
                && err.contains("unknown method `kolmogorov`"),
            "{err}"
        );
        let err = model_error("[models.fraud.drift]\nmethod = { country = \"ks\" }");
        assert!(
            err.contains("models.fraud.drift.method.country")
                && err.contains("does not apply to the categorical column"),
            "{err}"
        );
        let err = model_error("[models.fraud.drift]\nmethod = { zip = \"psi\" }");
        assert!(err.contains("models.fraud.drift.method.zip"), "{err}");
        let err = model_error("[models.fraud.drift]\nthreshold = { amount = -1.0 }");
        assert!(err.contains("models.fraud.drift.threshold.amount"), "{err}");
        let ok = Config::from_toml_str(
            "[models.fraud]\nreference = \"r.csv\"\n[models.fraud.features]\namount = \"numeric\"\ncountry = \"categorical\"\n[models.fraud.drift]\nmethod = { amount = \"psi\", country = \"chi2\", prediction = \"ks\" }",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_feature_called_prediction_is_refused() {
        let err = Config::from_toml_str(
            "[models.m]\nreference = \"r.csv\"\n[models.m.features]\nprediction = \"numeric\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("models.m.features.prediction"), "{err}");
    }

    #[test]
    fn models_parse() {
        let c = Config::from_toml_str(
            "[models.fraud]\nreference = \"r.csv\"\n[models.fraud.features]\namount = \"numeric\"\ncountry = \"categorical\"",
        )
        .unwrap();
        assert_eq!(
            c.models["fraud"].features["country"],
            FeatureType::Categorical
        );
    }
}
