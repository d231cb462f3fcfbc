//! Concept-drift detectors over an error stream (1 = the model was wrong,
//! 0 = right, or any bounded loss for Page-Hinkley), with the published
//! default parameters. Each is a small state machine: `update(x)` returns
//! the detector's state after the value; NaN values are ignored (`Stable`).
//!
//! * **DDM** (Gama et al. 2004): tracks the error rate `p` and its standard
//!   deviation `s = sqrt(p(1-p)/n)`; remembers the minimum of `p + s`;
//!   warning when `p + s > p_min + 2 s_min`, drift when `> p_min + 3 s_min`
//!   (strictly, as MOA and river: a model that is never wrong never drifts),
//!   after at least 30 values. Resets after a drift.
//! * **Page-Hinkley** (Page 1954; defaults as in river: `delta = 0.005`,
//!   `threshold = 50`, `alpha = 1 - 1e-4`, min 30 values): cumulative sum of
//!   deviations from the running mean, drift when it rises `threshold` above
//!   its minimum. Resets after a drift.
//! * **ADWIN** (Bifet & Gavalda 2007, "Learning from time-changing data with
//!   adaptive windowing", the ADWIN2 variant; defaults as in MOA and river:
//!   `delta = 0.002`, `clock = 32`, at most `M = 5` buckets per level,
//!   sub-windows of at least 5 values, no check before 10 values): keeps the
//!   window in an exponential histogram (level `i` holds up to `M` buckets
//!   of `2^i` values, each with its sum and sum of squared deviations), so
//!   memory is `O(M log W)` for a window of `W` values. Every `clock` values
//!   it tries each split of the window into an older and a newer part at a
//!   bucket boundary and drops the older buckets while the means differ by
//!   more than `eps = sqrt(2 m v ln(2 ln W / delta)) + 2/3 m ln(2 ln W / delta)`,
//!   with `v` the window variance and `m = 1/(n0 - 4) + 1/(n1 - 4)`. As in
//!   river (and unlike MOA), the value after a detection starts a new, empty
//!   window, so [`Adwin::width`] right after a drift still shows the shrunken
//!   window.

/// Serde of an `f64` that may be infinite (JSON has no infinity): a
/// number, or the string `inf` / `-inf` / `nan`.
pub mod extended {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("not a number: `{other}`"))),
            },
        }
    }
}

/// What a detector reports after a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorState {
    /// Nothing unusual.
    Stable,
    /// The error rate is rising.
    Warning,
    /// Drift detected (the detector has reset).
    Drift,
}

/// Drift Detection Method.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ddm {
    n: u64,
    #[serde(with = "extended")]
    p: f64,
    #[serde(with = "extended")]
    p_min: f64,
    #[serde(with = "extended")]
    s_min: f64,
    min_instances: u64,
    #[serde(with = "extended")]
    warning_level: f64,
    #[serde(with = "extended")]
    drift_level: f64,
    /// `p + s` after the last value.
    #[serde(default)]
    #[serde(with = "extended")]
    last: f64,
}

impl Default for Ddm {
    fn default() -> Self {
        Self::new(30, 2.0, 3.0)
    }
}

impl Ddm {
    /// Whether `other` was made with the same settings.
    pub fn same_settings(&self, other: &Self) -> bool {
        (self.min_instances, self.warning_level, self.drift_level)
            == (other.min_instances, other.warning_level, other.drift_level)
    }

    /// A DDM with the given minimum count and warning/drift levels.
    pub fn new(min_instances: u64, warning_level: f64, drift_level: f64) -> Self {
        Self {
            n: 0,
            p: 0.0,
            p_min: f64::INFINITY,
            s_min: f64::INFINITY,
            min_instances,
            warning_level,
            drift_level,
            last: 0.0,
        }
    }

    /// `p + s` (error rate plus its standard deviation) after the last
    /// value, also when that value caused a drift and a reset.
    pub fn statistic(&self) -> f64 {
        self.last
    }

    fn reset(&mut self) {
        *self = Self::new(self.min_instances, self.warning_level, self.drift_level);
    }

    /// Adds one error indicator (0 or 1).
    pub fn update(&mut self, error: f64) -> DetectorState {
        if error.is_nan() {
            return DetectorState::Stable;
        }
        self.n += 1;
        self.p += (error - self.p) / self.n as f64;
        let s = (self.p * (1.0 - self.p) / self.n as f64).sqrt();
        self.last = self.p + s;
        if self.n < self.min_instances {
            return DetectorState::Stable;
        }
        if self.p + s <= self.p_min + self.s_min {
            self.p_min = self.p;
            self.s_min = s;
        }
        if self.p + s > self.p_min + self.drift_level * self.s_min {
            let last = self.last;
            self.reset();
            self.last = last;
            DetectorState::Drift
        } else if self.p + s > self.p_min + self.warning_level * self.s_min {
            DetectorState::Warning
        } else {
            DetectorState::Stable
        }
    }
}

/// Page-Hinkley test for an increase in the mean.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PageHinkley {
    n: u64,
    #[serde(with = "extended")]
    mean: f64,
    #[serde(with = "extended")]
    sum: f64,
    #[serde(with = "extended")]
    min_sum: f64,
    #[serde(with = "extended")]
    delta: f64,
    #[serde(with = "extended")]
    threshold: f64,
    #[serde(with = "extended")]
    alpha: f64,
    min_instances: u64,
    /// The cumulative sum above its minimum after the last value.
    #[serde(default)]
    #[serde(with = "extended")]
    last: f64,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(0.005, 50.0, 1.0 - 1e-4, 30)
    }
}

impl PageHinkley {
    /// Whether `other` was made with the same settings.
    pub fn same_settings(&self, other: &Self) -> bool {
        (self.delta, self.threshold, self.alpha, self.min_instances)
            == (
                other.delta,
                other.threshold,
                other.alpha,
                other.min_instances,
            )
    }

    /// A Page-Hinkley test with magnitude `delta`, `threshold`, forgetting
    /// factor `alpha` and a minimum count.
    pub fn new(delta: f64, threshold: f64, alpha: f64, min_instances: u64) -> Self {
        Self {
            n: 0,
            mean: 0.0,
            sum: 0.0,
            min_sum: f64::INFINITY,
            delta,
            threshold,
            alpha,
            min_instances,
            last: 0.0,
        }
    }

    /// The cumulative deviation above its minimum after the last value,
    /// also when that value caused a drift and a reset.
    pub fn statistic(&self) -> f64 {
        self.last
    }

    /// Adds one value.
    pub fn update(&mut self, x: f64) -> DetectorState {
        if x.is_nan() {
            return DetectorState::Stable;
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.sum = self.alpha * self.sum + (x - self.mean - self.delta);
        self.min_sum = self.min_sum.min(self.sum);
        self.last = self.sum - self.min_sum;
        if self.n >= self.min_instances && self.sum - self.min_sum > self.threshold {
            let last = self.last;
            *self = Self::new(self.delta, self.threshold, self.alpha, self.min_instances);
            self.last = last;
            return DetectorState::Drift;
        }
        DetectorState::Stable
    }
}

/// One exponential-histogram bucket: `2^level` values summarised.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Bucket {
    #[serde(with = "extended")]
    total: f64,
    /// Sum of squared deviations from the bucket mean.
    #[serde(with = "extended")]
    variance: f64,
}

/// ADaptive WINdowing (ADWIN2).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Adwin {
    #[serde(with = "extended")]
    delta: f64,
    clock: u64,
    max_buckets: usize,
    min_window: u64,
    grace_period: u64,
    /// `levels[i]` holds buckets of `2^i` values, oldest first.
    levels: Vec<std::collections::VecDeque<Bucket>>,
    width: u64,
    #[serde(with = "extended")]
    total: f64,
    /// Sum of squared deviations from the window mean.
    #[serde(with = "extended")]
    variance: f64,
    ticks: u64,
    detections: u64,
    /// The last value was a detection: the next one starts a new window.
    reset_pending: bool,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(0.002, 32, 5, 5, 10)
    }
}

impl Adwin {
    /// Whether `other` was made with the same settings.
    pub fn same_settings(&self, other: &Self) -> bool {
        (
            self.delta,
            self.clock,
            self.max_buckets,
            self.min_window,
            self.grace_period,
        ) == (
            other.delta,
            other.clock,
            other.max_buckets,
            other.min_window,
            other.grace_period,
        )
    }

    /// An ADWIN with confidence `delta`, a check every `clock` values, at most
    /// `max_buckets` buckets per level, sub-windows of at least `min_window`
    /// values, and no check while the window holds `grace_period` values or fewer.
    pub fn new(
        delta: f64,
        clock: u64,
        max_buckets: usize,
        min_window: u64,
        grace_period: u64,
    ) -> Self {
        Self {
            delta,
            clock: clock.max(1),
            max_buckets: max_buckets.max(1),
            min_window: min_window.max(1),
            grace_period,
            levels: Vec::new(),
            width: 0,
            total: 0.0,
            variance: 0.0,
            ticks: 0,
            detections: 0,
            reset_pending: false,
        }
    }

    /// Values in the current window.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Mean of the current window (NaN when empty).
    pub fn mean(&self) -> f64 {
        self.total / self.width as f64
    }

    /// Population variance of the current window (NaN when empty).
    pub fn variance(&self) -> f64 {
        self.variance / self.width as f64
    }

    /// Buckets held, the detector's memory (`O(M log W)`).
    pub fn buckets(&self) -> usize {
        self.levels.iter().map(|l| l.len()).sum()
    }

    /// Drifts detected so far.
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// Adds one value (NaN is ignored and reported `Stable`).
    pub fn update(&mut self, x: f64) -> DetectorState {
        if x.is_nan() {
            return DetectorState::Stable;
        }
        if self.reset_pending {
            let detections = self.detections;
            *self = Self::new(
                self.delta,
                self.clock,
                self.max_buckets,
                self.min_window,
                self.grace_period,
            );
            self.detections = detections;
        }
        self.insert(x);
        self.ticks += 1;
        if self.ticks.is_multiple_of(self.clock) && self.width > self.grace_period && self.shrink()
        {
            self.detections += 1;
            self.reset_pending = true;
            return DetectorState::Drift;
        }
        DetectorState::Stable
    }

    fn insert(&mut self, x: f64) {
        if self.width > 0 {
            let w = self.width as f64;
            let d = x - self.total / w;
            self.variance += w * d * d / (w + 1.0);
        }
        self.width += 1;
        self.total += x;
        if self.levels.is_empty() {
            self.levels.push(Default::default());
        }
        self.levels[0].push_back(Bucket {
            total: x,
            variance: 0.0,
        });
        // Merge the two oldest buckets of any level that overflowed.
        let mut level = 0;
        while self.levels[level].len() > self.max_buckets {
            let n = (1u64 << level) as f64;
            let a = self.levels[level].pop_front().expect("overflowing level");
            let b = self.levels[level].pop_front().expect("overflowing level");
            let d = a.total / n - b.total / n;
            let merged = Bucket {
                total: a.total + b.total,
                variance: a.variance + b.variance + n * n * d * d / (2.0 * n),
            };
            if self.levels.len() == level + 1 {
                self.levels.push(Default::default());
            }
            self.levels[level + 1].push_back(merged);
            level += 1;
        }
    }

    /// Drops the oldest bucket from the window totals.
    fn drop_oldest(&mut self) {
        let Some(level) = self.levels.iter().rposition(|l| !l.is_empty()) else {
            return;
        };
        let b = self.levels[level].pop_front().expect("non-empty level");
        let n = (1u64 << level) as f64;
        self.width -= 1u64 << level;
        self.total -= b.total;
        let w = self.width as f64;
        let d = if self.width > 0 {
            b.total / n - self.total / w
        } else {
            0.0
        };
        self.variance = (self.variance - b.variance - n * w * d * d / (n + w)).max(0.0);
        if self.levels[level].is_empty() && level + 1 == self.levels.len() {
            self.levels.pop();
        }
    }

    /// Drops old buckets while some split shows different means; true when
    /// anything was dropped.
    fn shrink(&mut self) -> bool {
        let mut changed = false;
        'scan: loop {
            let (mut n0, mut u0) = (0u64, 0.0);
            let (mut n1, mut u1) = (self.width, self.total);
            // Oldest to newest: highest level first, each level oldest first.
            for level in (0..self.levels.len()).rev() {
                let size = 1u64 << level;
                for b in &self.levels[level] {
                    n0 += size;
                    n1 -= size;
                    u0 += b.total;
                    u1 -= b.total;
                    if n1 == 0 {
                        break 'scan;
                    }
                    if n0 >= self.min_window && n1 >= self.min_window && self.cut(n0, n1, u0, u1) {
                        changed = true;
                        self.drop_oldest();
                        continue 'scan;
                    }
                }
            }
            break;
        }
        changed
    }

    fn cut(&self, n0: u64, n1: u64, u0: f64, u1: f64) -> bool {
        let diff = (u0 / n0 as f64 - u1 / n1 as f64).abs();
        let v = self.variance();
        let m = 1.0 / (n0 - self.min_window + 1) as f64 + 1.0 / (n1 - self.min_window + 1) as f64;
        let dd = (2.0 * (self.width as f64).ln() / self.delta).ln();
        let eps = (2.0 * m * v * dd).sqrt() + 2.0 / 3.0 * dd * m;
        diff > eps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic error stream: rate 0.1 for 1000 values, then 0.5.
    fn stream() -> Vec<f64> {
        (0..2000)
            .map(|i| {
                if i < 1000 {
                    f64::from(i % 10 == 0)
                } else {
                    f64::from(i % 2 == 0)
                }
            })
            .collect()
    }

    #[test]
    fn ddm_flags_the_rise_and_not_before() {
        let mut d = Ddm::default();
        let states: Vec<DetectorState> = stream().iter().map(|e| d.update(*e)).collect();
        assert!(!states[..1000].contains(&DetectorState::Drift));
        let first = states
            .iter()
            .position(|s| *s == DetectorState::Drift)
            .expect("drift found");
        assert!((1000..1200).contains(&first), "{first}");
    }

    #[test]
    fn page_hinkley_flags_the_rise_and_not_before() {
        let mut d = PageHinkley::default();
        let states: Vec<DetectorState> = stream().iter().map(|e| d.update(*e)).collect();
        assert!(!states[..1000].contains(&DetectorState::Drift));
        assert!(states[1000..].contains(&DetectorState::Drift));
    }

    #[test]
    fn detector_state_survives_json_with_its_infinite_minimum() {
        let mut d = Ddm::default();
        let mut p = PageHinkley::default();
        for i in 0..10 {
            d.update(f64::from(i % 2));
            p.update(f64::from(i % 2));
        }
        let (mut d2, mut p2): (Ddm, PageHinkley) =
            serde_json::from_str(&serde_json::to_string(&(&d, &p)).expect("serializes"))
                .expect("round trip");
        for i in 0..200 {
            let x = f64::from(u8::from(i % 3 == 0 || i > 100));
            assert_eq!(d.update(x), d2.update(x));
            assert_eq!(p.update(x), p2.update(x));
        }
    }

    #[test]
    fn ddm_does_not_fire_on_a_model_that_is_never_wrong() {
        let mut d = Ddm::default();
        assert!((0..1_000).all(|_| d.update(0.0) == DetectorState::Stable));
    }
}
