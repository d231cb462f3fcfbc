//! Mergeable summaries for window state: count/mean/variance (Welford, with
//! Chan's parallel merge, kept relative to a shift so that values sharing a
//! large offset keep their digits), fixed-edge histograms and capped category
//! counts (the `cap` categories of smallest hash, so independent of arrival
//! order). Each satisfies `merge(a, b) == one pass over a ++ b` (exactly for
//! counts and histograms, to rounding for moments), so windows combine
//! across partitions and processes. NaN values are counted apart and not folded in.

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64;

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

    /// A summary from its count, mean and sum of squared deviations (e.g.
    /// built from exact fixed-point sums elsewhere).
    pub fn from_parts(count: u64, mean: f64, m2: f64) -> Self {
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            shift: mean,
            shifted_mean: 0.0,
            m2: m2.max(0.0),
            nan: 0,
        }
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

/// Two samples counted over the same `bins` equal-width bins that
/// span both (the last bin closed): the pair of histograms a reader puts
/// side by side. Returns the `bins + 1` edges and each sample's counts;
/// one bin when every value is equal, nothing when both are empty.
/// Non-finite values are skipped.
pub fn shared_bins(a: &[f64], b: &[f64], bins: usize) -> (Vec<f64>, Vec<u64>, Vec<u64>) {
    // Any order works (a sorted sample is the usual input).
    let finite = |s: &[f64]| -> (Option<f64>, Option<f64>) {
        let f = s.iter().copied().filter(|v| v.is_finite());
        (f.clone().reduce(f64::min), f.reduce(f64::max))
    };
    let ((a0, a1), (b0, b1)) = (finite(a), finite(b));
    let lo = [a0, b0].into_iter().flatten().reduce(f64::min);
    let hi = [a1, b1].into_iter().flatten().reduce(f64::max);
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let bins = if hi > lo { bins.max(1) } else { 1 };
    let width = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..bins).map(|i| lo + width * i as f64).collect();
    edges.push(hi);
    let count = |s: &[f64]| -> Vec<u64> {
        let mut c = vec![0u64; bins];
        for v in s.iter().filter(|v| v.is_finite()) {
            // Bin i holds [edge i, edge i+1); the last also holds `hi`.
            let i = edges[1..bins].partition_point(|e| *e <= *v);
            c[i] += 1;
        }
        c
    };
    let (ca, cb) = (count(a), count(b));
    (edges, ca, cb)
}

/// The hash that orders categories in [`CategoryCounts`]: xxh3-64 of the
/// category's UTF-8 bytes (ties, which need a collision, by the string).
pub fn category_hash(value: &str) -> u64 {
    xxh3_64(value.as_bytes())
}

/// Counts per category, with a cap on distinct categories so memory stays
/// bounded, independent of arrival order.
///
/// **Which categories are kept.** The `cap` distinct categories with the
/// smallest key `(category_hash(c), c)` among all categories seen, each with
/// its exact count; every other occurrence is counted under `other`. A new
/// category that beats the largest kept key evicts it, and the evicted
/// count moves into `other`.
///
/// **Why the result is order-independent and merges exactly.** The kept set
/// is always the bottom `cap` of the categories seen so far (a bottom-k
/// sketch on the keys). A category in the final kept set was admitted at its
/// first arrival (nothing with a smaller key could have filled the set) and
/// never evicted afterwards, so every occurrence was counted under it: its
/// count is exact. `other` is then `total - sum(kept counts)`. Kept set,
/// kept counts and `other` are therefore functions of the multiset of
/// (category, count) additions alone: any order, any split into partial
/// summaries merged together, gives the same value. Merging summaries with
/// different caps keeps the smaller cap, the largest cap for which the
/// result is still exact.
///
/// **Hot path.** [`CategoryCounts::add`] of a kept category is one map
/// lookup by `&str` with no allocation; hashing and allocation happen only
/// when a category is seen for the first time (or again after eviction).
///
/// **Serde.** Only `cap`, `counts` and `other` are stored; the eviction
/// index is rebuilt on load. A stored state that breaks the invariant (from
/// the former first-come rule, or edited by hand) is normalised on load:
/// the bottom `cap` of its categories are kept and the rest moved to
/// `other`, so totals are preserved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "CategoryCountsRepr")]
pub struct CategoryCounts {
    cap: usize,
    counts: BTreeMap<String, u64>,
    other: u64,
    /// The kept categories by key; the last one is the next to evict.
    /// Derived from `counts`, not stored.
    #[serde(skip)]
    order: BTreeSet<(u64, String)>,
}

/// The stored form of [`CategoryCounts`].
#[derive(serde::Deserialize)]
struct CategoryCountsRepr {
    cap: usize,
    counts: BTreeMap<String, u64>,
    other: u64,
}

impl From<CategoryCountsRepr> for CategoryCounts {
    fn from(r: CategoryCountsRepr) -> Self {
        let mut c = CategoryCounts::new(r.cap);
        for (k, v) in &r.counts {
            c.add(k, *v);
        }
        c.other += r.other;
        c
    }
}

impl CategoryCounts {
    /// Empty counts keeping at most `cap` distinct categories.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            counts: BTreeMap::new(),
            other: 0,
            order: BTreeSet::new(),
        }
    }

    /// Counts `n` occurrences of `value` (`n = 0` changes nothing).
    #[inline]
    pub fn add(&mut self, value: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(value) {
            *c += n;
        } else if n > 0 {
            self.admit(value, n);
        }
    }

    /// A category not kept: keep it if its key is among the `cap` smallest,
    /// evicting the largest kept one into `other`; else count it as other.
    #[cold]
    fn admit(&mut self, value: &str, n: u64) {
        let h = category_hash(value);
        if self.counts.len() >= self.cap {
            match self.order.last() {
                Some((lh, lv)) if (h, value) < (*lh, lv.as_str()) => self.evict_last(),
                _ => {
                    self.other += n;
                    return;
                }
            }
        }
        self.order.insert((h, value.to_owned()));
        self.counts.insert(value.to_owned(), n);
    }

    /// Moves the kept category with the largest key into `other`.
    fn evict_last(&mut self) {
        if let Some((_, v)) = self.order.pop_last() {
            self.other += self.counts.remove(&v).unwrap_or(0);
        }
    }

    /// Adds another summary. The result keeps `min(self.cap(), o.cap())`
    /// categories and equals one pass over both inputs with that cap.
    pub fn merge(&mut self, o: &CategoryCounts) {
        if o.cap < self.cap {
            self.cap = o.cap;
            while self.counts.len() > self.cap {
                self.evict_last();
            }
        }
        for (k, v) in &o.counts {
            self.add(k, *v);
        }
        self.other += o.other;
    }

    /// Counts by category, and the overflow count.
    pub fn counts(&self) -> (&BTreeMap<String, u64>, u64) {
        (&self.counts, self.other)
    }

    /// All occurrences counted, kept or not.
    pub fn total(&self) -> u64 {
        self.counts.values().sum::<u64>() + self.other
    }

    /// Whether some category was not kept (`other > 0`): the kept set is
    /// then full and holds exactly the `cap` smallest keys seen.
    pub fn is_capped(&self) -> bool {
        self.other > 0
    }

    /// Counts `n` occurrences of categories known only to be outside the
    /// kept set (a summary rebuilt from its kept counts and `other`).
    pub fn add_other(&mut self, n: u64) {
        self.other += n;
    }

    /// The most distinct categories kept.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The largest kept key `(category_hash, category)` when capped: every
    /// category seen with a smaller or equal key is kept with its exact
    /// count, every larger one is in `other`. `None` when not capped (every
    /// category is kept).
    pub fn kept_bound(&self) -> Option<(u64, &str)> {
        if !self.is_capped() {
            return None;
        }
        self.order.last().map(|(h, v)| (*h, v.as_str()))
    }

    /// The two summaries on common buckets, for tests that compare them:
    /// see [`AlignedCounts`].
    pub fn aligned(&self, current: &CategoryCounts) -> AlignedCounts {
        // The smaller bound of the capped sides: below it both sides are exact.
        let bound = match (self.kept_bound(), current.kept_bound()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let within = |k: &str| bound.is_none_or(|b| (category_hash(k), k) <= b);
        let mut joint: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (k, v) in &self.counts {
            if within(k) {
                joint.entry(k).or_default().0 += v;
            }
        }
        for (k, v) in &current.counts {
            if within(k) {
                joint.entry(k).or_default().1 += v;
            }
        }
        let (kept_r, kept_c) = joint.values().fold((0, 0), |(a, b), (r, c)| (a + r, b + c));
        let other = (self.total() - kept_r, current.total() - kept_c);
        AlignedCounts {
            categories: joint.keys().map(|k| k.to_string()).collect(),
            reference: joint.values().map(|(r, _)| *r).collect(),
            current: joint.values().map(|(_, c)| *c).collect(),
            other: (other != (0, 0)).then_some(other),
        }
    }
}

/// Two [`CategoryCounts`] on common buckets: the categories kept exactly on
/// both sides (sorted by name), and one `other` bucket when either side has
/// overflow.
///
/// When a side is capped, a category above its kept bound is somewhere in
/// its `other`, so a category kept on one side only would be compared with
/// a count that is missing on the other. Categories above the smaller bound
/// of the capped sides are therefore moved into `other` on both sides;
/// every remaining count is exact on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignedCounts {
    /// Category names, sorted.
    pub categories: Vec<String>,
    /// Reference counts per category.
    pub reference: Vec<u64>,
    /// Current counts per category.
    pub current: Vec<u64>,
    /// `(reference, current)` counts of the `other` bucket, when either is
    /// non-zero.
    pub other: Option<(u64, u64)>,
}

impl AlignedCounts {
    /// Counts per bucket, the `other` bucket last: `(reference, current)`.
    pub fn buckets(&self) -> (Vec<u64>, Vec<u64>) {
        let (mut r, mut c) = (self.reference.clone(), self.current.clone());
        if let Some((ro, co)) = self.other {
            r.push(ro);
            c.push(co);
        }
        (r, c)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_bins_cover_both_samples_with_equal_widths() {
        let (edges, a, b) = super::shared_bins(&[0.0, 0.1, 0.2, 0.5], &[0.5, 0.9, 1.0], 4);
        assert_eq!(edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(a, vec![3, 0, 1, 0]);
        assert_eq!(b, vec![0, 0, 1, 2], "1.0 falls in the last, closed bin");
        let (edges, a, b) = super::shared_bins(&[2.0, 2.0], &[2.0], 10);
        assert_eq!((edges, a, b), (vec![2.0, 2.0], vec![2], vec![1]));
        let (edges, a, _) = super::shared_bins(&[], &[f64::NAN], 10);
        assert!(edges.is_empty() && a.is_empty());
    }

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

        /// Capped counts: any order of the additions, and any split into
        /// two partial summaries merged in either direction, gives the
        /// same kept counts and `other`, and both equal the definition
        /// (the `cap` smallest keys with exact counts, the rest in other).
        #[test]
        fn capped_categories_do_not_depend_on_order(
            (adds, shuffled) in proptest::collection::vec(("[a-l]{1,2}", 1u64..5), 0..80)
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            cap in 0usize..8,
            split in 0usize..80,
        ) {
            let one_pass = |v: &[(String, u64)]| {
                let mut c = CategoryCounts::new(cap);
                v.iter().for_each(|(k, n)| c.add(k, *n));
                c
            };
            let all = one_pass(&adds);
            // The definition, by brute force.
            let mut exact: BTreeMap<String, u64> = BTreeMap::new();
            adds.iter().for_each(|(k, n)| *exact.entry(k.clone()).or_default() += n);
            let mut keys: Vec<(u64, &String)> = exact.keys().map(|k| (category_hash(k), k)).collect();
            keys.sort();
            let kept: BTreeMap<String, u64> = keys.iter().take(cap).map(|(_, k)| ((*k).clone(), exact[*k])).collect();
            let total: u64 = adds.iter().map(|(_, n)| n).sum();
            let other = total - kept.values().sum::<u64>();
            prop_assert_eq!(all.counts(), (&kept, other));
            prop_assert_eq!(all.total(), total);
            prop_assert_eq!(all.is_capped(), exact.len() > cap);

            prop_assert_eq!(&one_pass(&shuffled), &all);
            let split = split.min(shuffled.len());
            let (mut a, mut b) = (one_pass(&shuffled[..split]), one_pass(&shuffled[split..]));
            let mut ba = b.clone();
            ba.merge(&a);
            a.merge(&b);
            prop_assert_eq!(&a, &all);
            prop_assert_eq!(&ba, &all);
            // Merging into an empty summary, and serde, give the same value.
            b = CategoryCounts::new(cap);
            b.merge(&all);
            prop_assert_eq!(&b, &all);
            let back: CategoryCounts = serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
            prop_assert_eq!(&back, &all);
        }
    }

    /// A summary merged with one of a smaller cap takes that cap and equals
    /// one pass with it.
    #[test]
    fn merging_different_caps_keeps_the_smaller() {
        let cats: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let (mut big, mut small, mut want) = (
            CategoryCounts::new(10),
            CategoryCounts::new(3),
            CategoryCounts::new(3),
        );
        for (i, c) in cats.iter().enumerate() {
            let n = i as u64 % 4 + 1;
            if i % 2 == 0 {
                big.add(c, n)
            } else {
                small.add(c, n)
            }
            want.add(c, n);
        }
        big.merge(&small);
        assert_eq!(big.cap(), 3);
        assert_eq!(big, want);
        assert_eq!(big.counts().0.len(), 3);
        assert_eq!(big.total(), (0..40).map(|i| i % 4 + 1).sum::<u64>());
    }

    /// The stored form is `{cap, counts, other}`; a stored state over the
    /// cap (the former first-come rule) is normalised on load.
    #[test]
    fn category_serde_shape_and_normalisation() {
        let mut c = CategoryCounts::new(2);
        for (k, n) in [("x", 3), ("y", 1), ("z", 2), ("w", 5)] {
            c.add(k, n);
        }
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["cap", "counts", "other"]
        );
        assert_eq!(
            v["other"].as_u64(),
            Some(11 - c.counts().0.values().sum::<u64>())
        );
        let legacy =
            serde_json::json!({"cap": 2, "counts": {"x": 3, "y": 1, "z": 2, "w": 5}, "other": 0});
        let loaded: CategoryCounts = serde_json::from_value(legacy).unwrap();
        assert_eq!(loaded, c);
        assert_eq!(loaded.total(), 11);
        assert!(loaded.is_capped());
    }

    /// Aligned counts keep only categories exact on both sides: one kept by
    /// the current side but above the reference's bound goes to `other`.
    #[test]
    fn aligned_counts_use_the_common_bound() {
        let cats: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let mut keyed: Vec<&String> = cats.iter().collect();
        keyed.sort_by_key(|k| (category_hash(k), (*k).clone()));
        // Reference sees all 12 with cap 4; current sees the 5 largest keys
        // and one small one, uncapped (cap 100).
        let (mut r, mut c) = (CategoryCounts::new(4), CategoryCounts::new(100));
        for k in &cats {
            r.add(k, 10);
        }
        c.add(keyed[0], 7);
        for k in &keyed[7..] {
            c.add(k, 1);
        }
        assert_eq!(r.kept_bound().map(|b| b.1), Some(keyed[3].as_str()));
        assert_eq!(c.kept_bound(), None);
        let a = r.aligned(&c);
        let mut want: Vec<String> = keyed[..4].iter().map(|k| (*k).clone()).collect();
        want.sort();
        assert_eq!(a.categories, want);
        assert_eq!(a.reference, vec![10; 4]);
        let small = want.iter().position(|k| k == keyed[0]).unwrap();
        let mut cur = vec![0; 4];
        cur[small] = 7;
        assert_eq!(a.current, cur);
        assert_eq!(a.other, Some((80, 5)));
        let (rb, cb) = a.buckets();
        assert_eq!((rb.iter().sum::<u64>(), cb.iter().sum::<u64>()), (120, 12));
        // Uncapped on both sides: no other bucket.
        let (mut u, mut w) = (CategoryCounts::new(10), CategoryCounts::new(10));
        u.add("a", 2);
        w.add("b", 3);
        let a = u.aligned(&w);
        assert_eq!((a.categories.len(), a.other), (2, None));
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
