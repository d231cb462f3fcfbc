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

/// The `capacity` smallest distinct hashes seen.
///
/// Hashes are appended to a buffer that is sorted, deduplicated and cut to
/// `capacity` when it reaches `capacity` and a half (amortized, cheaper
/// than a tree insert per hash); once the sketch is full, a hash above the
/// largest kept one is refused by one comparison. Readers see only the
/// sketch, whatever the buffer holds.
#[derive(Debug, Clone)]
pub struct Kmv {
    capacity: usize,
    /// Ascending and distinct up to `sorted`, then the hashes offered since
    /// the last cut.
    kept: Vec<u64>,
    /// Length of the sorted, distinct prefix of `kept`.
    sorted: usize,
    /// Once `capacity` distinct hashes are kept: the largest.
    bound: Option<u64>,
    /// Whether more distinct hashes than `capacity` were offered (the count
    /// is an estimate). Set by any hash beyond the kept ones, so it does not
    /// depend on the order they came in.
    saturated: bool,
}

/// The stored form of [`Kmv`] (the kept hashes ascending).
#[derive(serde::Serialize, serde::Deserialize)]
struct KmvRepr {
    capacity: usize,
    kept: Vec<u64>,
    saturated: bool,
}

impl serde::Serialize for Kmv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kept, saturated) = self.sketch();
        KmvRepr {
            capacity: self.capacity,
            kept,
            saturated,
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Kmv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = KmvRepr::deserialize(d)?;
        let mut k = Kmv::new(r.capacity);
        k.kept = r.kept;
        k.saturated = r.saturated;
        k.cut();
        Ok(k)
    }
}

impl PartialEq for Kmv {
    /// Same capacity and sketch (whatever the buffer holds).
    fn eq(&self, o: &Self) -> bool {
        self.capacity == o.capacity && self.sketch() == o.sketch()
    }
}

impl Eq for Kmv {}

impl Kmv {
    /// An empty sketch keeping at most `capacity` hashes (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            kept: Vec::new(),
            sorted: 0,
            bound: None,
            saturated: false,
        }
    }

    /// Offers a key's hash.
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        match self.bound {
            // A key beyond the kept ones: there are more than capacity.
            Some(b) if hash > b => self.saturated = true,
            // The largest kept one again.
            Some(b) if hash == b => {}
            _ => {
                self.kept.push(hash);
                if self.kept.len() >= self.capacity + self.capacity / 2 {
                    self.cut();
                }
            }
        }
    }

    /// Sorts, deduplicates and cuts the buffer to `capacity`.
    fn cut(&mut self) {
        self.kept.sort_unstable();
        self.kept.dedup();
        if self.kept.len() > self.capacity {
            self.kept.truncate(self.capacity);
            self.saturated = true;
        }
        self.sorted = self.kept.len();
        if self.kept.len() == self.capacity {
            self.bound = self.kept.last().copied();
        }
    }

    /// The kept hashes (ascending) and whether the sketch is saturated.
    fn sketch(&self) -> (Vec<u64>, bool) {
        if self.sorted == self.kept.len() {
            return (self.kept.clone(), self.saturated);
        }
        let mut c = self.clone();
        c.cut();
        (c.kept, c.saturated)
    }

    /// Adds another sketch (of any capacity) into this one.
    pub fn merge(&mut self, o: &Kmv) {
        let (kept, saturated) = o.sketch();
        self.saturated |= saturated;
        for h in kept {
            self.insert(h);
        }
        self.cut();
    }

    /// Whether the count is exact.
    pub fn is_exact(&self) -> bool {
        !self.sketch().1
    }

    /// The kept hashes, ascending.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.sketch().0.into_iter()
    }

    /// Distinct keys seen: exact below capacity, else the KMV estimate.
    pub fn estimate(&self) -> f64 {
        let (kept, saturated) = self.sketch();
        if !saturated {
            return kept.len() as f64;
        }
        let k = kept.len() as f64;
        let max = kept.last().copied().unwrap_or(u64::MAX) as f64;
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
    let saturated = groups.iter().any(|g| !g.is_exact()) || all.len() > k;
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

    proptest::proptest! {
        /// The buffered sketch keeps the `k` smallest distinct hashes of
        /// any sequence with repeats, is saturated exactly when more than
        /// `k` were distinct, and its stored form reads back the same.
        #[test]
        fn keeps_the_k_smallest_distinct(hashes in proptest::collection::vec(0u64..200, 0..600),
                                         k in 2usize..40) {
            let mut s = Kmv::new(k);
            for h in &hashes { s.insert(*h); }
            let mut all = hashes.clone();
            all.sort_unstable();
            all.dedup();
            let distinct = all.len();
            all.truncate(k);
            proptest::prop_assert_eq!(s.hashes().collect::<Vec<_>>(), all);
            proptest::prop_assert_eq!(s.is_exact(), distinct <= k);
            let back: Kmv = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }

    proptest::proptest! {
        /// Few distinct keys, offered many times: the sketch often holds
        /// exactly `k` of them and sees its largest again (not a new key).
        #[test]
        fn repeats_of_the_largest_kept_do_not_saturate(hashes in proptest::collection::vec(0u64..8, 0..200),
                                                       k in 2usize..10) {
            let mut s = Kmv::new(k);
            for h in &hashes { s.insert(*h); }
            let mut all = hashes.clone();
            all.sort_unstable();
            all.dedup();
            proptest::prop_assert_eq!(s.is_exact(), all.len() <= k);
            all.truncate(k);
            proptest::prop_assert_eq!(s.hashes().collect::<Vec<_>>(), all);
        }
    }

    #[test]
    fn a_full_sketch_seeing_its_largest_again_stays_exact() {
        let mut s = Kmv::new(2);
        for h in [2, 1, 1, 2, 2, 1] {
            s.insert(h);
        }
        assert!(s.is_exact());
        assert_eq!(s.estimate(), 2.0);
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
