//! The bounded, mergeable state of one variant: what a window group holds
//! for an experiment's model, and what the A/B evaluator accumulates from
//! the joined labels.
//!
//! Latency means come from sufficient statistics `(n, Σy, Σy²)` kept in
//! **fixed point** (`y · 2^16` as integers, `|y|` clamped to `2^31` ms):
//! a window group is filled in record order, which differs between runs
//! when partitions interleave differently, and integer sums are
//! associative where float sums are not, so the state is bit-for-bit the
//! same. The resolution (1.5e-5 ms) is far below what a latency needs.
//! The labelled outcomes' sums (log loss, regression errors) are floats
//! ([`Moments`]): their pairs come sorted by `(ts, event_id)` and windows
//! merge in start order, so the order is fixed and any scale is kept.
//!
//! Quantiles and rank tests use the deterministic bottom-k samples of
//! [`crate::stats::sample::ValueSample`], keyed by the event-id hash: exact
//! while a variant holds at most `k` values, a uniform `k`-sample beyond
//! (a quantile's rank error is then about `sqrt(q (1 - q) / k)`, 0.3% at
//! the p95 with the default `k = 5000`). Units are a [`Kmv`] of unit-id
//! hashes.

use serde::{Deserialize, Serialize};

use crate::stats::distinct::Kmv;
use crate::stats::sample::ValueSample;
use crate::stats::summary::Moments;

/// Fixed-point scale: `2^16` steps per unit.
const SCALE: f64 = 65_536.0;
/// Values are clamped to `±2^31` before scaling.
const CLAMP: f64 = 2_147_483_648.0;

/// `(n, Σy, Σy²)` in fixed point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedMoments {
    /// Values folded in.
    pub n: u64,
    #[serde(with = "i128_text")]
    sum: i128,
    #[serde(with = "i128_text")]
    sum_sq: i128,
}

mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl FixedMoments {
    /// Folds in one finite value (others are ignored).
    #[inline]
    pub fn push(&mut self, y: f64) {
        if !y.is_finite() {
            return;
        }
        let q = (y.clamp(-CLAMP, CLAMP) * SCALE).round() as i128;
        self.n += 1;
        self.sum += q;
        self.sum_sq += q * q;
    }

    /// Adds another summary.
    pub fn merge(&mut self, o: &FixedMoments) {
        self.n += o.n;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
    }

    /// The mean (NaN when empty).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        self.sum as f64 / SCALE / self.n as f64
    }

    /// The summary as [`Moments`] for the tests.
    pub fn moments(&self) -> Moments {
        if self.n == 0 {
            return Moments::default();
        }
        // Σ(y - mean)² = Σy² - (Σy)² / n, in integers as far as they reach:
        // with sum = q n + r, (Σy)² / n = q² n + 2 q r + r² / n.
        let n = self.n as i128;
        let (q, r) = (self.sum.div_euclid(n), self.sum.rem_euclid(n));
        let exact = self.sum_sq - q * q * n - 2 * q * r;
        let m2 = (exact as f64 - (r as f64) * (r as f64) / self.n as f64) / (SCALE * SCALE);
        Moments::from_parts(self.n, self.mean(), m2)
    }
}

/// What a window group of an experiment's model holds besides its column
/// summaries: latency and units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantEvents {
    /// Latency (ms) sufficient statistics.
    pub latency: FixedMoments,
    /// Bottom-k sample of latencies.
    pub latency_sample: ValueSample,
    /// Distinct unit ids (hashes).
    pub units: Kmv,
    /// Predictions without a unit id.
    pub no_unit: u64,
}

impl VariantEvents {
    /// Empty, with samples of `k` latencies and `unit_k` unit hashes.
    pub fn new(k: usize, unit_k: usize) -> Self {
        Self {
            latency: FixedMoments::default(),
            latency_sample: ValueSample::new(k),
            units: Kmv::new(unit_k),
            no_unit: 0,
        }
    }

    /// Folds in one prediction.
    #[inline]
    pub fn push(&mut self, priority: u64, latency_ms: Option<f64>, unit_hash: Option<u64>) {
        if let Some(l) = latency_ms.filter(|l| l.is_finite()) {
            self.latency.push(l);
            self.latency_sample.offer(priority, l);
        }
        match unit_hash {
            Some(h) => self.units.insert(h),
            None => self.no_unit += 1,
        }
    }

    /// Adds another summary.
    pub fn merge(&mut self, o: &VariantEvents) {
        self.latency.merge(&o.latency);
        self.latency_sample.merge(&o.latency_sample);
        self.units.merge(&o.units);
        self.no_unit += o.no_unit;
    }
}

/// The labelled predictions of a variant, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantOutcomes {
    /// Predictions (labelled or not).
    pub predictions: u64,
    /// Labelled predictions.
    pub labeled: u64,
    /// Correct predictions (classifiers).
    pub correct: u64,
    /// Confusion counts of the positive class (binary).
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives.
    pub fn_: u64,
    /// True negatives.
    pub tn: u64,
    /// Labels equal to the positive class (the `conversion` rate).
    pub positives: u64,
    /// Per-prediction log loss (binary with scores in [0, 1]).
    pub log_loss: Moments,
    /// Absolute errors (regression).
    pub abs_err: Moments,
    /// Squared errors (regression).
    pub sq_err: Moments,
    /// Scores of positive-labelled predictions (bottom-k by event hash).
    pub pos_scores: ValueSample,
    /// Scores of negative-labelled predictions.
    pub neg_scores: ValueSample,
}

impl VariantOutcomes {
    /// Empty, with score samples of `k` per class.
    pub fn new(k: usize) -> Self {
        Self {
            predictions: 0,
            labeled: 0,
            correct: 0,
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
            positives: 0,
            log_loss: Moments::default(),
            abs_err: Moments::default(),
            sq_err: Moments::default(),
            pos_scores: ValueSample::new(k),
            neg_scores: ValueSample::new(k),
        }
    }

    /// Adds another summary.
    pub fn merge(&mut self, o: &VariantOutcomes) {
        self.predictions += o.predictions;
        self.labeled += o.labeled;
        self.correct += o.correct;
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
        self.positives += o.positives;
        self.log_loss.merge(&o.log_loss);
        self.abs_err.merge(&o.abs_err);
        self.sq_err.merge(&o.sq_err);
        self.pos_scores.merge(&o.pos_scores);
        self.neg_scores.merge(&o.neg_scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_moments_are_exact_in_any_order_and_match_two_pass() {
        let xs: Vec<f64> = (0..10_000)
            .map(|i| 5.0 + ((i * 7919) % 1000) as f64 / 37.0)
            .collect();
        let mut a = FixedMoments::default();
        xs.iter().for_each(|x| a.push(*x));
        let mut b = FixedMoments::default();
        xs.iter().rev().for_each(|x| b.push(*x));
        let (mut c, mut d) = (FixedMoments::default(), FixedMoments::default());
        for (i, x) in xs.iter().enumerate() {
            if i % 3 == 0 { &mut c } else { &mut d }.push(*x);
        }
        d.merge(&c);
        assert_eq!(a, b);
        assert_eq!(a, d);
        let m = Moments::from_slice(&xs);
        let f = a.moments();
        assert!((f.mean() - m.mean()).abs() < 1e-4);
        assert!((f.variance() / m.variance() - 1.0).abs() < 1e-6);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<FixedMoments>(&json).unwrap(), a);
    }
}
