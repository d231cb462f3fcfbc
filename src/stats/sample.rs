//! A deterministic, mergeable bottom-k sample of rows.
//!
//! Every row carries a 64-bit priority (a hash of the event id). The sample
//! keeps the `k` rows with the smallest priorities. Because the priority is a
//! function of the row alone, the sample does not depend on arrival order,
//! partitioning or replays, and two samples merge into exactly the sample of
//! the union (`merge(a, b) == one pass over a ++ b`). With a good hash the
//! kept rows are a uniform sample without replacement.
//!
//! While a window holds at most `k` rows the sample *is* the window, so the
//! tests on it are exact; above that they run on a uniform `k`-row sample,
//! which keeps their size and type-I error but loses power relative to the
//! full window (the p-value is that of a `k`-row sample). Memory is
//! `O(k * width)` regardless of how many rows are offered.

use std::collections::BinaryHeap;

/// One kept row: its priority and its values (NaN = missing).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampledRow {
    /// The row's priority; smaller is kept first.
    pub priority: u64,
    /// The row's values, one per column.
    pub values: Vec<f64>,
}

impl Eq for SampledRow {}
impl PartialOrd for SampledRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SampledRow {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Ties on priority (duplicate ids) are broken by the values so the
        // kept set stays order-independent.
        self.priority.cmp(&other.priority).then_with(|| {
            for (a, b) in self.values.iter().zip(&other.values) {
                let c = a.total_cmp(b);
                if c.is_ne() {
                    return c;
                }
            }
            std::cmp::Ordering::Equal
        })
    }
}

/// Bottom-k sample over rows of fixed width.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BottomK {
    capacity: usize,
    width: usize,
    /// Rows offered so far (kept or not).
    seen: u64,
    /// Max-heap on priority: the root is the first row to evict.
    #[serde(with = "heap_as_vec")]
    heap: BinaryHeap<SampledRow>,
}

/// A heap stored as its items in ascending order (stable bytes for the
/// same content), for both samples.
mod heap_as_vec {
    use std::collections::BinaryHeap;
    pub fn serialize<T: Ord + serde::Serialize, S: serde::Serializer>(
        h: &BinaryHeap<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut v: Vec<&T> = h.iter().collect();
        v.sort_unstable();
        serde::Serialize::serialize(&v, s)
    }
    pub fn deserialize<'de, T: Ord + serde::Deserialize<'de>, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BinaryHeap<T>, D::Error> {
        let v: Vec<T> = serde::Deserialize::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

impl BottomK {
    /// An empty sample keeping at most `capacity` rows of `width` values.
    pub fn new(capacity: usize, width: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            width,
            seen: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// Number of values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Rows kept.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no row is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// True when every offered row is kept (tests on it are exact).
    pub fn is_complete(&self) -> bool {
        self.seen == self.heap.len() as u64
    }

    /// Whether a row with this priority would be kept; lets callers skip
    /// building the row.
    pub fn would_keep(&self, priority: u64) -> bool {
        self.heap.len() < self.capacity
            || self.heap.peek().is_some_and(|top| priority <= top.priority)
    }

    /// Offers one row. `values.len()` must equal the width.
    pub fn offer(&mut self, priority: u64, values: Vec<f64>) {
        debug_assert_eq!(values.len(), self.width);
        self.seen += 1;
        self.push(SampledRow { priority, values });
    }

    /// Counts a row that the caller already knows will not be kept.
    pub fn count_skipped(&mut self) {
        self.seen += 1;
    }

    fn push(&mut self, row: SampledRow) {
        if self.heap.len() < self.capacity {
            self.heap.push(row);
        } else if let Some(mut top) = self.heap.peek_mut()
            && row < *top
        {
            *top = row;
        }
    }

    /// Merges another sample of the same width into this one.
    pub fn merge(&mut self, other: &BottomK) {
        self.seen += other.seen;
        for row in other.heap.iter() {
            self.push(row.clone());
        }
    }

    /// The non-missing values of column `col` among the kept rows.
    pub fn column(&self, col: usize) -> Vec<f64> {
        self.heap
            .iter()
            .map(|r| r.values[col])
            .filter(|v| !v.is_nan())
            .collect()
    }

    /// Kept rows in priority order (for tests and inspection).
    pub fn rows_sorted(&self) -> Vec<SampledRow> {
        let mut v: Vec<_> = self.heap.iter().cloned().collect();
        v.sort();
        v
    }
}

/// A bottom-k sample of single values: the one-column case of [`BottomK`]
/// without a vector per kept row, used for each numeric column of a window.
///
/// Same contract: the `k` values with the smallest priorities (ties broken
/// by the value's total order) are kept, so the sample is independent of
/// arrival order and two samples merge into the sample of the union.
/// Missing values are not offered (callers count them apart).
///
/// Offers are appended to a buffer and cut down to the `k` smallest by one
/// linear selection when it reaches `k` and a half (amortized O(1) per
/// offer; a heap replacement is O(log k) with a cache miss a level); once
/// cut, an offer at or above the largest item kept is refused by one
/// comparison. Readers see only the `k` smallest, whatever the buffer holds.
#[derive(Debug, Clone)]
pub struct ValueSample {
    capacity: usize,
    seen: u64,
    /// (priority, order key of the value): the kept items and the offers
    /// since the last cut, unordered.
    items: Vec<(u64, u64)>,
    /// After a cut to `capacity` items: the largest of them. An item at or
    /// above it is not among the `capacity` smallest (an equal one is the
    /// same item).
    bound: Option<(u64, u64)>,
}

/// The stored form of [`ValueSample`] (the kept items ascending, as the heap
/// it replaced stored them).
#[derive(serde::Serialize, serde::Deserialize)]
struct ValueSampleRepr {
    capacity: usize,
    seen: u64,
    heap: Vec<(u64, u64)>,
}

impl serde::Serialize for ValueSample {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ValueSampleRepr {
            capacity: self.capacity,
            seen: self.seen,
            heap: self.kept(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ValueSample {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = ValueSampleRepr::deserialize(d)?;
        let mut s = ValueSample {
            capacity: r.capacity.max(1),
            seen: r.seen,
            items: r.heap,
            bound: None,
        };
        s.cut();
        Ok(s)
    }
}

impl PartialEq for ValueSample {
    /// Same capacity, count and kept set (whatever the buffer holds).
    fn eq(&self, o: &Self) -> bool {
        self.capacity == o.capacity && self.seen == o.seen && self.kept() == o.kept()
    }
}

/// Maps a float to a `u64` with the same total order (`f64::total_cmp`).
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

impl ValueSample {
    /// An empty sample keeping at most `capacity` values.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: 0,
            items: Vec::new(),
            bound: None,
        }
    }

    /// Items the buffer holds before it is cut down to the kept ones.
    fn limit(&self) -> usize {
        self.capacity + (self.capacity / 2).max(16)
    }

    /// Values offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Values kept.
    pub fn len(&self) -> usize {
        // Every offer not refused is in the buffer, and a refusal needs a
        // full sample: the kept ones are the buffer's smallest `capacity`.
        self.items.len().min(self.capacity)
    }

    /// True when no value is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when every offered value is kept (tests on it are exact).
    pub fn is_complete(&self) -> bool {
        self.seen == self.len() as u64
    }

    /// Offers `value` with `priority`.
    #[inline]
    pub fn offer(&mut self, priority: u64, value: f64) {
        self.seen += 1;
        self.push((priority, order_key(value)));
    }

    #[inline]
    fn push(&mut self, item: (u64, u64)) {
        if self.bound.is_some_and(|b| item >= b) {
            return;
        }
        self.items.push(item);
        if self.items.len() >= self.limit() {
            self.cut();
        }
    }

    /// Cuts the buffer down to the `capacity` smallest items.
    fn cut(&mut self) {
        let k = self.capacity;
        if self.items.len() > k {
            self.items.select_nth_unstable(k - 1);
            self.items.truncate(k);
        }
        if self.items.len() == k {
            self.bound = self.items.iter().max().copied();
        }
    }

    /// The kept items, ascending.
    fn kept(&self) -> Vec<(u64, u64)> {
        let mut v = self.items.clone();
        if v.len() > self.capacity {
            v.select_nth_unstable(self.capacity - 1);
            v.truncate(self.capacity);
        }
        v.sort_unstable();
        v
    }

    /// Merges another sample into this one: the `capacity` smallest items
    /// of both, in one linear selection.
    pub fn merge(&mut self, other: &ValueSample) {
        self.seen += other.seen;
        // Its kept items only (its buffer may hold more, which a sample of a
        // larger capacity would otherwise keep).
        let theirs = if other.items.len() > other.capacity {
            other.kept()
        } else {
            other.items.clone()
        };
        self.items.extend(
            theirs
                .into_iter()
                .filter(|i| self.bound.is_none_or(|b| *i < b)),
        );
        self.cut();
    }

    /// The kept values, ascending.
    pub fn sorted_values(&self) -> Vec<f64> {
        // The kept items chosen by selection; only their values sorted.
        let mut keys: Vec<u64> = if self.items.len() > self.capacity {
            let mut items = self.items.clone();
            items.select_nth_unstable(self.capacity - 1);
            items[..self.capacity].iter().map(|(_, k)| *k).collect()
        } else {
            self.items.iter().map(|(_, k)| *k).collect()
        };
        keys.sort_unstable();
        keys.into_iter().map(from_order_key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn merge_equals_single_pass(rows in proptest::collection::vec((any::<u64>(), -1e6f64..1e6), 0..300),
                                    split in 0usize..300, k in 1usize..50) {
            let split = split.min(rows.len());
            let mut all = BottomK::new(k, 1);
            for (p, v) in &rows { all.offer(*p, vec![*v]); }
            let mut a = BottomK::new(k, 1);
            let mut b = BottomK::new(k, 1);
            for (p, v) in &rows[..split] { a.offer(*p, vec![*v]); }
            for (p, v) in &rows[split..] { b.offer(*p, vec![*v]); }
            a.merge(&b);
            prop_assert_eq!(a.rows_sorted(), all.rows_sorted());
            prop_assert_eq!(a.seen(), all.seen());
            prop_assert!(a.len() <= k);
        }
    }

    proptest! {
        #[test]
        fn value_sample_merge_equals_single_pass(rows in proptest::collection::vec((0u64..64, -1e6f64..1e6), 0..300),
                                                 split in 0usize..300, k in 1usize..50) {
            let split = split.min(rows.len());
            let mut all = ValueSample::new(k);
            for (p, v) in &rows { all.offer(*p, *v); }
            let mut a = ValueSample::new(k);
            let mut b = ValueSample::new(k);
            for (p, v) in rows[split..].iter().rev() { b.offer(*p, *v); }
            for (p, v) in &rows[..split] { a.offer(*p, *v); }
            a.merge(&b);
            prop_assert_eq!(&a, &all);
            prop_assert_eq!(a.sorted_values(), all.sorted_values());
            prop_assert!(a.len() <= k);
        }
    }

    proptest! {
        /// The buffered sample keeps what sorting every offer and taking
        /// the `k` smallest keeps, across cuts and in any order, and its
        /// stored form reads back to the same sample.
        #[test]
        fn value_sample_keeps_the_k_smallest(rows in proptest::collection::vec((0u64..40, -3i32..3), 0..400),
                                             k in 1usize..60) {
            let mut s = ValueSample::new(k);
            for (p, v) in &rows { s.offer(*p, f64::from(*v)); }
            let mut all: Vec<(u64, u64)> = rows.iter().map(|(p, v)| (*p, order_key(f64::from(*v)))).collect();
            all.sort_unstable();
            all.truncate(k);
            let mut expect: Vec<f64> = all.iter().map(|(_, key)| from_order_key(*key)).collect();
            expect.sort_by(f64::total_cmp);
            prop_assert_eq!(s.len(), all.len());
            prop_assert_eq!(s.seen(), rows.len() as u64);
            prop_assert_eq!(s.is_complete(), rows.len() <= k);
            prop_assert_eq!(s.sorted_values(), expect);
            let back: ValueSample = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert!(back.items.len() <= k);
        }

        /// A merge takes the other's kept items only, whatever its buffer
        /// holds and whatever its capacity.
        #[test]
        fn value_sample_merges_the_others_kept_items(a in proptest::collection::vec((0u64..1000, -3i32..3), 0..200),
                                                     b in proptest::collection::vec((0u64..1000, -3i32..3), 0..200),
                                                     ka in 1usize..40, kb in 1usize..40) {
            let smallest = |rows: &[(u64, i32)], k: usize| {
                let mut v: Vec<(u64, u64)> = rows.iter().map(|(p, x)| (*p, order_key(f64::from(*x)))).collect();
                v.sort_unstable();
                v.truncate(k);
                v
            };
            let (mut sa, mut sb) = (ValueSample::new(ka), ValueSample::new(kb));
            for (p, x) in &a { sa.offer(*p, f64::from(*x)); }
            for (p, x) in &b { sb.offer(*p, f64::from(*x)); }
            sa.merge(&sb);
            let mut union = smallest(&a, ka);
            union.extend(smallest(&b, kb));
            union.sort_unstable();
            union.truncate(ka);
            prop_assert_eq!(sa.kept(), union);
            prop_assert_eq!(sa.seen(), (a.len() + b.len()) as u64);
        }
    }

    #[test]
    fn value_sample_round_trips_values_and_serde() {
        let mut s = ValueSample::new(10);
        for (i, v) in [-2.5, 0.0, -0.0, 3.25, f64::INFINITY, -1e300]
            .iter()
            .enumerate()
        {
            s.offer(i as u64, *v);
        }
        let v = s.sorted_values();
        assert_eq!(v, vec![-1e300, -2.5, -0.0, 0.0, 3.25, f64::INFINITY]);
        let back: ValueSample = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn keeps_everything_below_capacity() {
        let mut s = BottomK::new(10, 2);
        for i in 0..5u64 {
            s.offer(i * 7919, vec![i as f64, f64::NAN]);
        }
        assert!(s.is_complete());
        assert_eq!(s.column(0).len(), 5);
        assert!(s.column(1).is_empty());
    }
}
