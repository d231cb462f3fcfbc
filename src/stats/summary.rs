//! Mergeable summaries for window state: count/mean/variance (Welford, with
//! Chan's parallel merge), fixed-edge histograms and category counts. Each
//! satisfies `merge(a, b) == one pass over a ++ b` (exactly for counts and
//! histograms, to rounding for moments), so windows combine across
//! partitions and processes. NaN values are counted apart and not folded in.

use std::collections::BTreeMap;

/// Count, mean and sum of squared deviations (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Moments {
    /// Values folded in.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// NaN values seen (not folded in).
    pub nan: u64,
}

impl Moments {
    /// Folds in one value.
    pub fn push(&mut self, x: f64) {
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        self.count += 1;
        let d = x - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Combines two summaries (Chan et al.).
    pub fn merge(&mut self, o: &Moments) {
        if o.count == 0 {
            self.nan += o.nan;
            return;
        }
        let n = self.count + o.count;
        let d = o.mean - self.mean;
        let (na, nb) = (self.count as f64, o.count as f64);
        self.mean += d * nb / n as f64;
        self.m2 += o.m2 + d * d * na * nb / n as f64;
        self.count = n;
        self.nan += o.nan;
    }

    /// Sample variance (ddof = 1); NaN below two values.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            f64::NAN
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }
}

/// Counts over fixed bin edges: `(-inf, e0), [e0, e1), ..., [ek, inf)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    edges: Vec<f64>,
    counts: Vec<u64>,
    nan: u64,
}

impl Histogram {
    /// An empty histogram over sorted `edges`.
    pub fn new(mut edges: Vec<f64>) -> Self {
        edges.retain(|e| !e.is_nan());
        edges.sort_unstable_by(f64::total_cmp);
        edges.dedup();
        let n = edges.len() + 1;
        Self {
            edges,
            counts: vec![0; n],
            nan: 0,
        }
    }

    /// Counts one value.
    pub fn push(&mut self, x: f64) {
        if x.is_nan() {
            self.nan += 1;
        } else {
            self.counts[self.edges.partition_point(|e| *e <= x)] += 1;
        }
    }

    /// Adds another histogram over the same edges; `false` (and no change)
    /// when the edges differ.
    pub fn merge(&mut self, o: &Histogram) -> bool {
        if o.edges != self.edges {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.nan += o.nan;
        true
    }

    /// Counts per bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

/// Counts per category, with a cap on distinct categories: values beyond it
/// are counted under `other` so memory stays bounded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CategoryCounts {
    cap: usize,
    counts: BTreeMap<String, u64>,
    other: u64,
}

impl CategoryCounts {
    /// Empty counts keeping at most `cap` distinct categories.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            counts: BTreeMap::new(),
            other: 0,
        }
    }

    /// Counts `n` occurrences of `value`.
    pub fn add(&mut self, value: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(value) {
            *c += n;
        } else if self.counts.len() < self.cap {
            self.counts.insert(value.to_string(), n);
        } else {
            self.other += n;
        }
    }

    /// Adds another summary (categories past the cap go to `other`).
    pub fn merge(&mut self, o: &CategoryCounts) {
        for (k, v) in &o.counts {
            self.add(k, *v);
        }
        self.other += o.other;
    }

    /// Counts by category, and the overflow count.
    pub fn counts(&self) -> (&BTreeMap<String, u64>, u64) {
        (&self.counts, self.other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn moments_merge_equals_one_pass(v in proptest::collection::vec(-1e6f64..1e6, 0..200), split in 0usize..200) {
            let split = split.min(v.len());
            let (mut a, mut b, mut all) = (Moments::default(), Moments::default(), Moments::default());
            v[..split].iter().for_each(|x| a.push(*x));
            v[split..].iter().for_each(|x| b.push(*x));
            v.iter().for_each(|x| all.push(*x));
            a.merge(&b);
            prop_assert_eq!(a.count, all.count);
            prop_assert!((a.mean - all.mean).abs() <= 1e-9 * (1.0 + all.mean.abs()));
            prop_assert!((a.m2 - all.m2).abs() <= 1e-9 * (1.0 + all.m2.abs()));
        }

        #[test]
        fn histogram_merge_equals_one_pass(v in proptest::collection::vec(-10.0f64..10.0, 0..200), split in 0usize..200) {
            let split = split.min(v.len());
            let edges = vec![-5.0, 0.0, 2.5, 5.0];
            let (mut a, mut b, mut all) = (Histogram::new(edges.clone()), Histogram::new(edges.clone()), Histogram::new(edges));
            v[..split].iter().for_each(|x| a.push(*x));
            v[split..].iter().for_each(|x| b.push(*x));
            v.iter().for_each(|x| all.push(*x));
            prop_assert!(a.merge(&b));
            prop_assert_eq!(a, all);
        }

        #[test]
        fn category_merge_equals_one_pass(v in proptest::collection::vec("[a-e]", 0..100), split in 0usize..100) {
            let split = split.min(v.len());
            let (mut a, mut b, mut all) = (CategoryCounts::new(100), CategoryCounts::new(100), CategoryCounts::new(100));
            v[..split].iter().for_each(|x| a.add(x, 1));
            v[split..].iter().for_each(|x| b.add(x, 1));
            v.iter().for_each(|x| all.add(x, 1));
            a.merge(&b);
            prop_assert_eq!(a, all);
        }
    }

    #[test]
    fn variance_matches_two_pass() {
        let mut m = Moments::default();
        [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, f64::NAN]
            .iter()
            .for_each(|x| m.push(*x));
        assert_eq!(m.count, 8);
        assert_eq!(m.nan, 1);
        assert!((m.variance() - 32.0 / 7.0).abs() < 1e-12);
    }
}
