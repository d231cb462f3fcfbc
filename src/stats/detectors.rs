//! Concept-drift detectors over an error stream (1 = the model was wrong,
//! 0 = right, or any bounded loss for Page-Hinkley), with the published
//! default parameters. Each is a small state machine: `update(x)` returns
//! the detector's state after the value.
//!
//! * **DDM** (Gama et al. 2004): tracks the error rate `p` and its standard
//!   deviation `s = sqrt(p(1-p)/n)`; remembers the minimum of `p + s`;
//!   warning when `p + s >= p_min + 2 s_min`, drift when `>= p_min + 3 s_min`,
//!   after at least 30 values. Resets after a drift.
//! * **Page-Hinkley** (Page 1954; defaults as in river: `delta = 0.005`,
//!   `threshold = 50`, `alpha = 1 - 1e-4`, min 30 values): cumulative sum of
//!   deviations from the running mean, drift when it rises `threshold` above
//!   its minimum. Resets after a drift.

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
    p: f64,
    p_min: f64,
    s_min: f64,
    min_instances: u64,
    warning_level: f64,
    drift_level: f64,
}

impl Default for Ddm {
    fn default() -> Self {
        Self::new(30, 2.0, 3.0)
    }
}

impl Ddm {
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
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.min_instances, self.warning_level, self.drift_level);
    }

    /// Adds one error indicator (0 or 1).
    pub fn update(&mut self, error: f64) -> DetectorState {
        self.n += 1;
        self.p += (error - self.p) / self.n as f64;
        let s = (self.p * (1.0 - self.p) / self.n as f64).sqrt();
        if self.n < self.min_instances {
            return DetectorState::Stable;
        }
        if self.p + s <= self.p_min + self.s_min {
            self.p_min = self.p;
            self.s_min = s;
        }
        if self.p + s >= self.p_min + self.drift_level * self.s_min {
            self.reset();
            DetectorState::Drift
        } else if self.p + s >= self.p_min + self.warning_level * self.s_min {
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
    mean: f64,
    sum: f64,
    min_sum: f64,
    delta: f64,
    threshold: f64,
    alpha: f64,
    min_instances: u64,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(0.005, 50.0, 1.0 - 1e-4, 30)
    }
}

impl PageHinkley {
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
        }
    }

    /// Adds one value.
    pub fn update(&mut self, x: f64) -> DetectorState {
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.sum = self.alpha * self.sum + (x - self.mean - self.delta);
        self.min_sum = self.min_sum.min(self.sum);
        if self.n >= self.min_instances && self.sum - self.min_sum > self.threshold {
            *self = Self::new(self.delta, self.threshold, self.alpha, self.min_instances);
            return DetectorState::Drift;
        }
        DetectorState::Stable
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
}
