//! The state of one window group: per-column mergeable summaries.
//!
//! A group is keyed by (model, version, variant), wide enough for A/B tests
//! (each variant apart) while drift merges the variants of a version. Its
//! state is one summary per monitored column (the model's features, then
//! the prediction), sized by the configuration, never by the event count:
//!
//! * numeric: a deterministic bottom-k sample of the finite values
//!   ([`ValueSample`], keyed by a hash of `event_id`, so the tests are exact
//!   while a window holds at most `k` values), the count of finite values,
//!   of missing ones, of non-finite ones (±inf: outside any training range,
//!   kept out of the sample and of every float in the checkpoint, whose JSON
//!   cannot hold them) and of records refused for a wrong type;
//! * categorical: exact counts per category up to a cap (the categories
//!   with the smallest hashes are kept, the rest counted as `other`, so the
//!   result does not depend on arrival order) and the count of missing
//!   values.
//!
//! Every part merges exactly (`merge(a, b)` is one pass over both), so
//! replays, restarts and partition interleavings give the same sample and
//! counts. (Sums of floats, such as moments, would agree only up to
//! rounding; an evaluator that needs them keeps them itself.)

use serde::{Deserialize, Serialize};

use crate::config::FeatureType;
use crate::stats::sample::ValueSample;
use crate::stats::summary::CategoryCounts;

/// Key of a group within a window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// Model index in the catalog.
    pub model: usize,
    /// Model version ("" when the events carried none).
    pub version: String,
    /// A/B variant ("" when the events carried none).
    pub variant: String,
}

/// Summary of a numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// Bottom-k sample of the finite values.
    pub sample: ValueSample,
    /// Events without a value.
    pub missing: u64,
    /// Events with an infinite value.
    #[serde(default)]
    pub non_finite: u64,
    /// Records dead-lettered for a value of the wrong type here.
    #[serde(default)]
    pub type_errors: u64,
}

impl NumericSummary {
    fn new(k: usize) -> Self {
        Self {
            sample: ValueSample::new(k),
            missing: 0,
            non_finite: 0,
            type_errors: 0,
        }
    }

    /// Folds in one value (NaN = missing).
    #[inline]
    pub fn push(&mut self, priority: u64, x: f64) {
        if x.is_nan() {
            self.missing += 1;
        } else if x.is_infinite() {
            self.non_finite += 1;
        } else {
            self.sample.offer(priority, x);
        }
    }

    fn merge(&mut self, o: &NumericSummary) {
        self.sample.merge(&o.sample);
        self.missing += o.missing;
        self.non_finite += o.non_finite;
        self.type_errors += o.type_errors;
    }

    /// Finite values seen.
    pub fn finite(&self) -> u64 {
        self.sample.seen()
    }
}

/// Summary of a categorical column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary {
    /// Counts per category, capped.
    pub counts: CategoryCounts,
    /// Events without a value.
    pub missing: u64,
}

impl CategoricalSummary {
    /// Folds in one value (`None` = missing).
    #[inline]
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.counts.add(v, 1),
            None => self.missing += 1,
        }
    }
}

/// Summary of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnSummary {
    /// A numeric column.
    Numeric(NumericSummary),
    /// A categorical column.
    Categorical(CategoricalSummary),
}

impl ColumnSummary {
    /// An empty summary for a column of type `ty`.
    pub fn new(ty: FeatureType, sample_size: usize, category_cap: usize) -> Self {
        match ty {
            FeatureType::Numeric => Self::Numeric(NumericSummary::new(sample_size)),
            FeatureType::Categorical => Self::Categorical(CategoricalSummary {
                counts: CategoryCounts::new(category_cap),
                missing: 0,
            }),
        }
    }

    /// Records dead-lettered for a value of the wrong type in this column.
    pub fn type_errors(&self) -> u64 {
        match self {
            Self::Numeric(n) => n.type_errors,
            Self::Categorical(_) => 0,
        }
    }

    /// Counts a record dead-lettered for a wrong type in this column.
    pub fn count_type_error(&mut self) {
        if let Self::Numeric(n) = self {
            n.type_errors += 1;
        }
    }

    /// Events that reached this column (present or missing).
    pub fn rows(&self) -> u64 {
        match self {
            Self::Numeric(n) => n.finite() + n.non_finite + n.missing,
            Self::Categorical(c) => {
                let (kept, other) = c.counts.counts();
                kept.values().sum::<u64>() + other + c.missing
            }
        }
    }

    /// Adds `o` (a summary of the same column) into this one.
    pub fn merge(&mut self, o: &ColumnSummary) {
        match (self, o) {
            (Self::Numeric(a), Self::Numeric(b)) => a.merge(b),
            (Self::Categorical(a), Self::Categorical(b)) => {
                a.counts.merge(&b.counts);
                a.missing += b.missing;
            }
            _ => debug_assert!(false, "merging summaries of different column types"),
        }
    }
}

/// One (model, version, variant) group of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's key.
    pub key: GroupKey,
    /// Prediction events applied.
    pub predictions: u64,
    /// Feature events applied.
    pub feature_events: u64,
    /// One summary per column of the model ([`crate::event::ModelSchema::columns`]).
    pub columns: Vec<ColumnSummary>,
    /// Latency and units, for models in an experiment.
    #[serde(default)]
    pub ab: Option<Box<crate::ab::summary::VariantEvents>>,
}

impl GroupState {
    /// An empty group for `key` with these column types.
    pub fn new(
        key: GroupKey,
        types: &[FeatureType],
        sample_size: usize,
        category_cap: usize,
    ) -> Self {
        Self {
            key,
            predictions: 0,
            feature_events: 0,
            columns: types
                .iter()
                .map(|t| ColumnSummary::new(*t, sample_size, category_cap))
                .collect(),
            ab: None,
        }
    }

    /// Adds another group of the same model into this one (e.g. the
    /// variants of one version).
    pub fn merge(&mut self, o: &GroupState) {
        self.predictions += o.predictions;
        self.feature_events += o.feature_events;
        for (a, b) in self.columns.iter_mut().zip(&o.columns) {
            a.merge(b);
        }
        match (&mut self.ab, &o.ab) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.ab = Some(b.clone()),
            _ => {}
        }
    }
}
