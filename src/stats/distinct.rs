//! A mergeable sample of distinct keys: the `k` smallest distinct 64-bit
//! hashes seen (a KMV sketch, Bar-Yossef et al. 2002; Beyer et al. 2007).
//!
//! Because membership depends only on the hash, the kept set does not
//! depend on arrival order, duplicates or replays, and two sketches merge
//! into exactly the sketch of the union. While fewer than `k` distinct keys
//! were seen the count is exact; beyond, `(k - 1) / h_k * 2^64` (with `h_k`
//! the largest kept hash) estimates it with a relative standard error of
//! about `1 / sqrt(k - 2)`.
//!
//! The kept keys are also a uniform random sample of the distinct keys
//! (hash order is independent of anything else about a key), which is what
//! a test on counts of keys per group needs: [`split_counts`] counts, for
//! several sketches (one per group), how many of the `k` smallest hashes of
//! their union fall in each group, an exact multinomial sample of the
//! groups' distinct keys.

use std::collections::BTreeSet;

/// The `capacity` smallest distinct hashes seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kmv {
    capacity: usize,
    kept: BTreeSet<u64>,
    /// Whether more distinct hashes than `capacity` were offered (the count
    /// is an estimate). Set by any hash beyond the kept ones, so it does not
    /// depend on the order they came in.
    saturated: bool,
}

impl Kmv {
    /// An empty sketch keeping at most `capacity` hashes (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            kept: BTreeSet::new(),
            saturated: false,
        }
    }

    /// Offers one key's hash.
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        if self.kept.len() >= self.capacity {
            let max = self.kept.last().copied().unwrap_or(u64::MAX);
            if hash > max {
                // A key beyond the kept ones: there are more than capacity.
                self.saturated = true;
            } else if hash < max && self.kept.insert(hash) {
                self.kept.pop_last();
                self.saturated = true;
            }
        } else {
            self.kept.insert(hash);
        }
    }

    /// Adds another sketch (of any capacity) into this one.
    pub fn merge(&mut self, o: &Kmv) {
        self.saturated |= o.saturated;
        for h in &o.kept {
            self.insert(*h);
        }
    }

    /// Whether the count is exact.
    pub fn is_exact(&self) -> bool {
        !self.saturated
    }

    /// The kept hashes, ascending.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.kept.iter().copied()
    }

    /// Distinct keys seen: exact below capacity, else the KMV estimate.
    pub fn estimate(&self) -> f64 {
        if !self.saturated {
            return self.kept.len() as f64;
        }
        let k = self.kept.len() as f64;
        let max = self.kept.last().copied().unwrap_or(u64::MAX) as f64;
        (k - 1.0) / (max / 2f64.powi(64))
    }
}

/// How many of the `k` smallest hashes of the union of `groups` belong to
/// each group (`k` = the smallest capacity among them; every distinct key
/// below the union's `k`-th smallest hash is kept by its own group's
/// sketch, so the counts are exact). A hash kept by two groups counts in
/// both.
pub fn split_counts(groups: &[&Kmv]) -> Vec<u64> {
    let k = groups.iter().map(|g| g.capacity).min().unwrap_or(0);
    let mut all: Vec<u64> = groups.iter().flat_map(|g| g.hashes()).collect();
    all.sort_unstable();
    all.dedup();
    let saturated = groups.iter().any(|g| g.saturated) || all.len() > k;
    let threshold = if saturated && all.len() >= k && k > 0 {
        all[k - 1]
    } else {
        u64::MAX
    };
    groups
        .iter()
        .map(|g| g.hashes().take_while(|h| *h <= threshold).count() as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        // splitmix64: a good spread of test keys.
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn exact_below_capacity_and_close_above() {
        let mut s = Kmv::new(4096);
        for i in 0..1000 {
            s.insert(hash(i));
            s.insert(hash(i));
        }
        assert!(s.is_exact());
        assert_eq!(s.estimate(), 1000.0);
        for i in 0..200_000 {
            s.insert(hash(i));
        }
        assert!(!s.is_exact());
        let rel = (s.estimate() - 200_000.0).abs() / 200_000.0;
        // 1 / sqrt(4094) = 1.6%: within three standard errors.
        assert!(rel < 0.05, "estimate {}", s.estimate());
    }

    #[test]
    fn saturation_does_not_depend_on_order() {
        let (mut a, mut b) = (Kmv::new(2), Kmv::new(2));
        for h in [1, 2, 3] {
            a.insert(h);
        }
        for h in [3, 1, 2] {
            b.insert(h);
        }
        assert_eq!(a, b);
        assert!(!a.is_exact());
        let mut c = Kmv::new(2);
        for h in [2, 1, 2, 1] {
            c.insert(h);
        }
        assert!(c.is_exact(), "duplicates are not more keys");
    }

    #[test]
    fn merge_is_the_sketch_of_the_union_in_any_order() {
        let (mut a, mut b, mut whole) = (Kmv::new(64), Kmv::new(64), Kmv::new(64));
        for i in 0..5000 {
            if i % 3 == 0 { &mut a } else { &mut b }.insert(hash(i));
            whole.insert(hash(i));
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, whole);
        assert_eq!(ba, whole);
    }

    #[test]
    fn split_counts_are_the_groups_of_the_smallest_hashes() {
        let (mut a, mut b) = (Kmv::new(100), Kmv::new(100));
        let mut all = Vec::new();
        for i in 0..10_000 {
            let h = hash(i);
            all.push((h, i % 4 == 0));
            if i % 4 == 0 { &mut a } else { &mut b }.insert(h);
        }
        all.sort_unstable();
        let in_a = all[..100].iter().filter(|(_, a)| *a).count() as u64;
        assert_eq!(split_counts(&[&a, &b]), vec![in_a, 100 - in_a]);
        // Below capacity: every key counts.
        let (mut c, mut d) = (Kmv::new(100), Kmv::new(100));
        for i in 0..30 {
            if i < 10 { &mut c } else { &mut d }.insert(hash(i));
        }
        assert_eq!(split_counts(&[&c, &d]), vec![10, 20]);
    }
}
