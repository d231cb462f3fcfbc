//! Mergeable summaries for window state: count/mean/variance (Welford, with
//! Chan's parallel merge, kept relative to a shift so that values sharing a
//! large offset keep their digits), fixed-edge histograms and category counts. Each
//! satisfies `merge(a, b) == one pass over a ++ b` (exactly for counts and
//! histograms, to rounding for moments), so windows combine across
//! partitions and processes. NaN values are counted apart and not folded in.

use std::collections::BTreeMap;

/// Count, mean and sum of squared deviations: Welford's updates, Chan et
/// al.'s parallel merge, kept relative to a shift.
///
/// **Why the shift.** Values that share a large offset (epoch timestamps,
/// large ids: about 1e9 with noise of about 1) have a mean whose last bit is
/// worth 1e-7, so a mean kept in absolute terms carries an error of that
/// size after every update, and the difference of two such means (the
/// numerator of every test on means) loses six or more digits. The summary
/// therefore keeps the mean of `x - shift`, where `shift` is the first value
/// folded in: for values within a factor two of it the subtraction is exact
/// (Sterbenz), the kept mean is of the size of the noise, and
/// [`Moments::mean_difference`] subtracts the shifts exactly before adding
/// the small means. `m2` (the sum of squared deviations) does not depend on
/// the shift. [`Moments::from_slice`] builds the same summary in two passes
/// when the values are at hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Moments {
    /// Values folded in.
    pub count: u64,
    /// The reference point: the first finite value folded in (0 before).
    shift: f64,
    /// Mean of `x - shift`.
    shifted_mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// NaN values seen (not folded in).
    pub nan: u64,
}

impl Moments {
    /// Folds in one value (Welford).
    pub fn push(&mut self, x: f64) {
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        if self.count == 0 && x.is_finite() {
            self.shift = x;
        }
        self.count += 1;
        let y = x - self.shift;
        let d = y - self.shifted_mean;
        self.shifted_mean += d / self.count as f64;
        self.m2 += d * (y - self.shifted_mean);
    }

    /// The summary of `values` in two passes: the shifted mean, then the
    /// squared deviations from it, with the correction term of Chan, Golub
    /// & LeVeque ("Algorithms for computing the sample variance", 1983) that
    /// removes the rounding error of the mean to first order. NaN values are
    /// counted apart, as in [`Moments::push`].
    pub fn from_slice(values: &[f64]) -> Self {
        let mut m = Moments::default();
        let shift = values.iter().copied().find(|v| v.is_finite());
        m.shift = shift.unwrap_or(0.0);
        let mut sum = 0.0;
        for v in values {
            if v.is_nan() {
                m.nan += 1;
            } else {
                m.count += 1;
                sum += v - m.shift;
            }
        }
        if m.count == 0 {
            m.shift = 0.0;
            return m;
        }
        let n = m.count as f64;
        let mean = sum / n;
        let (mut sq, mut comp) = (0.0, 0.0);
        for v in values.iter().filter(|v| !v.is_nan()) {
            let d = (v - m.shift) - mean;
            sq += d * d;
            comp += d;
        }
        m.shifted_mean = mean + comp / n;
        let m2 = sq - comp * comp / n;
        // Rounding can leave a tiny negative value; NaN (from infinities) stays.
        m.m2 = if m2 < 0.0 { 0.0 } else { m2 };
        m
    }

    /// Combines two summaries (Chan et al., "Updating formulae and a
    /// pairwise algorithm for computing sample variances", 1979), in this
    /// summary's frame: `o`'s mean is moved to this shift by subtracting the
    /// shifts first, which is exact for shifts within a factor two.
    pub fn merge(&mut self, o: &Moments) {
        if o.count == 0 {
            self.nan += o.nan;
            return;
        }
        if self.count == 0 {
            let nan = self.nan;
            *self = *o;
            self.nan += nan;
            return;
        }
        let n = self.count + o.count;
        let d = (o.shift - self.shift) + o.shifted_mean - self.shifted_mean;
        let (na, nb) = (self.count as f64, o.count as f64);
        self.shifted_mean += d * nb / n as f64;
        self.m2 += o.m2 + d * d * na * nb / n as f64;
        self.count = n;
        self.nan += o.nan;
    }

    /// The mean (NaN when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.shift + self.shifted_mean
        }
    }

    /// `self.mean() - o.mean()`, without the rounding of either mean: the
    /// shifts are subtracted first (exactly, when within a factor two),
    /// then the small shifted means. NaN when either is empty.
    pub fn mean_difference(&self, o: &Moments) -> f64 {
        if self.count == 0 || o.count == 0 {
            return f64::NAN;
        }
        (self.shift - o.shift) + (self.shifted_mean - o.shifted_mean)
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
            if all.count > 0 {
                prop_assert!((a.mean() - all.mean()).abs() <= 1e-9 * (1.0 + all.mean().abs()));
                prop_assert!(a.mean_difference(&all).abs() <= 1e-9 * (1.0 + all.mean().abs()));
            } else {
                prop_assert!(a.mean().is_nan());
            }
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

    /// Values `1e9 + k / 1024` for integer `k` are exact in float64, so the
    /// exact mean and sum of squared deviations follow from integer sums.
    fn offset_values(n: usize, seed: u64, centre: i64) -> (Vec<f64>, Vec<i64>) {
        let mut state = seed;
        let ks: Vec<i64> = (0..n)
            .map(|_| {
                // A 64-bit LCG (Knuth's MMIX constants): noise of about +-2.
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                centre + ((state >> 33) % 4096) as i64 - 2048
            })
            .collect();
        (ks.iter().map(|k| 1e9 + *k as f64 / 1024.0).collect(), ks)
    }

    /// Exact (mean - 1e9, m2) of `1e9 + k / 1024` from integer sums.
    fn exact_offset_moments(ks: &[i64]) -> (f64, f64) {
        let n = ks.len() as i128;
        let s: i128 = ks.iter().map(|k| *k as i128).sum();
        let s2: i128 = ks.iter().map(|k| (*k as i128) * (*k as i128)).sum();
        let mean = s as f64 / (n as f64 * 1024.0);
        let m2 = (n * s2 - s * s) as f64 / (n as f64 * 1024.0 * 1024.0);
        (mean, m2)
    }

    /// Values around 1e9 with noise of about 1, folded in one at a time in
    /// several partitions and merged: the variance and the difference of two
    /// means agree with the exact values to 1e-12 (relative). Without the
    /// shift, the means carried errors of about 1e-6 and the difference of
    /// two means lost six digits.
    #[test]
    fn large_offset_merge_matches_exact_moments() {
        let (a, ka) = offset_values(20_000, 7, 0);
        let (b, kb) = offset_values(15_000, 11, 256);
        let merged = |v: &[f64]| {
            let mut total = Moments::default();
            for part in v.chunks(1_234) {
                let mut m = Moments::default();
                part.iter().for_each(|x| m.push(*x));
                total.merge(&m);
            }
            total
        };
        let (ma, mb) = (merged(&a), merged(&b));
        let ((ea, e2a), (eb, e2b)) = (exact_offset_moments(&ka), exact_offset_moments(&kb));
        for (m, e2, n) in [(&ma, e2a, ka.len()), (&mb, e2b, kb.len())] {
            let want = e2 / (n - 1) as f64;
            assert!(
                (m.variance() - want).abs() <= 1e-12 * want,
                "variance {} vs exact {want}",
                m.variance()
            );
        }
        let want = ea - eb;
        let got = ma.mean_difference(&mb);
        assert!(
            (got - want).abs() <= 1e-12 * want.abs(),
            "mean difference {got} vs exact {want}"
        );
        assert!((ma.mean() - (1e9 + ea)).abs() <= 1.2e-7, "{}", ma.mean());

        // The two-pass construction agrees with the streamed one.
        for (v, m) in [(&a, &ma), (&b, &mb)] {
            let t = Moments::from_slice(v);
            assert_eq!(t.count, m.count);
            assert!((t.m2 - m.m2).abs() <= 1e-12 * m.m2, "{} vs {}", t.m2, m.m2);
            assert!(
                t.mean_difference(m).abs() <= 1e-12,
                "{}",
                t.mean_difference(m)
            );
        }
        let (ta, tb) = (Moments::from_slice(&a), Moments::from_slice(&b));
        assert!((ta.mean_difference(&tb) - want).abs() <= 1e-12 * want.abs());
        assert!((ta.m2 - e2a).abs() <= 1e-12 * e2a);
    }

    #[test]
    fn from_slice_counts_nan_apart_and_handles_empty() {
        let m = Moments::from_slice(&[f64::NAN, 3.0, 5.0, f64::NAN]);
        assert_eq!((m.count, m.nan), (2, 2));
        assert_eq!((m.mean(), m.m2, m.variance()), (4.0, 2.0, 2.0));
        let e = Moments::from_slice(&[f64::NAN]);
        assert_eq!((e.count, e.nan), (0, 1));
        assert!(e.mean().is_nan() && e.variance().is_nan());
        assert!(e.mean_difference(&m).is_nan());
        // Merging into an empty summary takes the other's frame.
        let mut z = Moments::default();
        z.merge(&m);
        assert_eq!((z.count, z.mean(), z.m2, z.nan), (2, 4.0, 2.0, 2));
    }

    /// A constant sample has exactly zero variance however the constant
    /// rounds (a mean computed as sum / n need not equal 0.1).
    #[test]
    fn constant_values_have_zero_variance() {
        let mut m = Moments::default();
        [0.1; 7].iter().for_each(|x| m.push(*x));
        assert_eq!((m.m2, m.mean()), (0.0, 0.1));
        assert_eq!(Moments::from_slice(&[0.1; 7]).m2, 0.0);
    }
}
