//! Distribution distances used for drift: PSI (two binning rules),
//! Jensen-Shannon, Wasserstein, energy distance, and Evidently's variants.
//!
//! * **PSI, deciles rule**: edges are the unique 10%..90% quantiles of the
//!   reference (numpy's default "linear" quantile, reproduced bit for bit);
//!   bins are right-closed, `(-inf, e1], ..., (ek, inf)`; a zero proportion
//!   becomes `1e-4` on each side independently, without renormalising;
//!   `psi = sum((cur - ref) ln(cur / ref))`.
//! * **Evidently's rule** ([`evidently_bins`]): if the reference has more than
//!   20 distinct values, Sturges bins over reference and current together
//!   (`numpy.histogram_bin_edges(..., "sturges")`), else one bin per distinct
//!   value. Evidently's PSI replaces zeros by `min_nonzero / 1e6` when that
//!   minimum is at most `1e-4`, else by `1e-4`.
//! * **Jensen-Shannon**: `scipy.spatial.distance.jensenshannon` (a distance,
//!   the square root of the divergence), on counts or proportions.
//! * **Wasserstein / energy**: the 1-D unweighted distances between the
//!   empirical CDFs, as scipy; Evidently's normed Wasserstein divides by
//!   `max(std_ref, 0.001)` (population std).
//! * **Hellinger**: [`hellinger`] on counts or proportions,
//!   `sqrt(1 - sum sqrt(p q))` without the `1/sqrt(2)` of some texts, as
//!   Evidently 0.7's `hellinger_stat_test` for categorical columns; for
//!   numeric columns Evidently bins differently from its PSI and JS, see
//!   [`evidently_hellinger`].
//!
//! Functions named `*_sorted` take a reference already sorted ascending
//! (the monitor keeps training samples sorted), do not sort it again, and
//! return the same value as their unsorted counterpart, which sorts and
//! calls them.
//!
//! Empty samples are errors; NaN values are errors (drop missing values first).

use std::collections::BTreeMap;

use super::{StatsError, check_sample as check};

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_unstable_by(f64::total_cmp);
    s
}

/// numpy's default ("linear", Hyndman-Fan 7) quantile of sorted data,
/// including its two-sided lerp that decides values sitting on an edge.
pub fn quantile_linear(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let v = (n - 1) as f64 * p;
    let i = v.floor();
    let t = v - i;
    let i = i as usize;
    let a = sorted[i];
    let b = sorted[(i + 1).min(n - 1)];
    let d = b - a;
    if t < 0.5 {
        a + d * t
    } else {
        b - d * (1.0 - t)
    }
}

/// Result of [`psi_deciles`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PsiResult {
    /// The population stability index.
    pub psi: f64,
    /// Inner bin edges.
    pub edges: Vec<f64>,
    /// Reference counts per bin.
    pub ref_counts: Vec<u64>,
    /// Current counts per bin.
    pub cur_counts: Vec<u64>,
}

/// `sum((cur - ref) ln(cur/ref))` over proportions with zeros replaced by `1e-4`.
pub fn psi_from_counts(ref_counts: &[u64], cur_counts: &[u64]) -> f64 {
    let share = |c: &[u64]| {
        let n = c.iter().sum::<u64>() as f64;
        c.iter().map(|v| *v as f64 / n).collect::<Vec<_>>()
    };
    psi_from_proportions(&share(ref_counts), &share(cur_counts))
}

/// As [`psi_from_counts`], for proportions that each sum to 1.
pub fn psi_from_proportions(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let r = if *r == 0.0 { 1e-4 } else { *r };
            let c = if *c == 0.0 { 1e-4 } else { *c };
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// PSI with bins at the reference deciles (see the module docs).
pub fn psi_deciles(reference: &[f64], current: &[f64]) -> Result<PsiResult, StatsError> {
    check(reference, "reference")?;
    check(current, "current")?;
    let rs = sorted(reference);
    let mut edges: Vec<f64> = (1..10)
        .map(|k| quantile_linear(&rs, k as f64 / 10.0))
        .collect();
    edges.dedup();
    let bin = |v: f64| edges.partition_point(|e| *e < v); // searchsorted(side='left')
    let mut ref_counts = vec![0u64; edges.len() + 1];
    let mut cur_counts = vec![0u64; edges.len() + 1];
    for &v in reference {
        ref_counts[bin(v)] += 1;
    }
    for &v in current {
        cur_counts[bin(v)] += 1;
    }
    Ok(PsiResult {
        psi: psi_from_counts(&ref_counts, &cur_counts),
        edges,
        ref_counts,
        cur_counts,
    })
}

/// Two vectors of equal length, each divided by its sum.
fn normalized_pair(p: &[f64], q: &[f64]) -> Result<(Vec<f64>, Vec<f64>), StatsError> {
    if p.len() != q.len() {
        return Err(StatsError::InvalidArgument {
            name: "q",
            reason: format!("{} values for {} in p", q.len(), p.len()),
        });
    }
    check(p, "p")?;
    check(q, "q")?;
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    Ok((
        p.iter().map(|v| v / sp).collect(),
        q.iter().map(|v| v / sq).collect(),
    ))
}

/// `scipy.spatial.distance.jensenshannon(p, q, base)`: each vector is
/// normalised to sum 1; `base = None` means natural log.
pub fn jensen_shannon(p: &[f64], q: &[f64], base: Option<f64>) -> Result<f64, StatsError> {
    let (p, q) = normalized_pair(p, q)?;
    let rel_entr = |x: f64, y: f64| -> f64 {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let mut js = 0.0;
    for (&a, &b) in p.iter().zip(&q) {
        let m = (a + b) / 2.0;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    if let Some(base) = base {
        js /= base.ln();
    }
    Ok((js / 2.0).sqrt())
}

/// Integral of `|F_u - F_v|^p` over the real line, the core of scipy's
/// `wasserstein_distance` (p = 1) and `energy_distance` (p = 2).
fn cdf_distance(p: i32, u: &[f64], v: &[f64]) -> Result<f64, StatsError> {
    check(u, "u")?;
    check(v, "v")?;
    Ok(cdf_distance_sorted(p, &sorted(u), &sorted(v)))
}

/// [`cdf_distance`] of two sorted, checked samples.
fn cdf_distance_sorted(p: i32, us: &[f64], vs: &[f64]) -> f64 {
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut acc = 0.0;
    // The pooled values in order, by merging: consecutive pairs (x, next).
    let mut prev: Option<f64> = None;
    let (mut a, mut b) = (0usize, 0usize);
    while a < us.len() || b < vs.len() {
        let take_u = b >= vs.len() || (a < us.len() && us[a].total_cmp(&vs[b]).is_le());
        let next = if take_u {
            a += 1;
            us[a - 1]
        } else {
            b += 1;
            vs[b - 1]
        };
        if let Some(x) = prev {
            while i < us.len() && us[i] <= x {
                i += 1;
            }
            while j < vs.len() && vs[j] <= x {
                j += 1;
            }
            let d = (i as f64 / nu - j as f64 / nv).abs();
            let delta = next - x;
            acc += if p == 1 { d * delta } else { d * d * delta };
        }
        prev = Some(next);
    }
    if p == 1 { acc } else { acc.sqrt() }
}

/// `scipy.stats.wasserstein_distance(u, v)` (unweighted, 1-D).
pub fn wasserstein(u: &[f64], v: &[f64]) -> Result<f64, StatsError> {
    cdf_distance(1, u, v)
}

/// `scipy.stats.energy_distance(u, v)` (unweighted, 1-D).
pub fn energy_distance(u: &[f64], v: &[f64]) -> Result<f64, StatsError> {
    Ok(cdf_distance(2, u, v)? * std::f64::consts::SQRT_2)
}

/// Hellinger distance between two count (or proportion) vectors, each
/// normalised to sum 1: `sqrt(1 - sum(sqrt(p q)))`, in [0, 1].
pub fn hellinger(p: &[f64], q: &[f64]) -> Result<f64, StatsError> {
    let (p, q) = normalized_pair(p, q)?;
    let bc: f64 = p.iter().zip(&q).map(|(a, b)| (a * b).sqrt()).sum();
    Ok((1.0 - bc).max(0.0).sqrt())
}

/// Evidently's normed Wasserstein: `wasserstein / max(std(reference), 0.001)`.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Result<f64, StatsError> {
    check(reference, "reference")?;
    wasserstein_normed_sorted(&sorted(reference), current)
}

/// As [`wasserstein_normed`] for a reference already sorted ascending (not
/// re-sorted); the same value.
pub fn wasserstein_normed_sorted(
    reference_sorted: &[f64],
    current: &[f64],
) -> Result<f64, StatsError> {
    check_sorted(reference_sorted, "reference")?;
    check(current, "current")?;
    let wd = cdf_distance_sorted(1, reference_sorted, &sorted(current));
    let n = reference_sorted.len() as f64;
    let mean = reference_sorted.iter().sum::<f64>() / n;
    let var = reference_sorted
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum::<f64>()
        / n;
    Ok(wd / var.sqrt().max(0.001))
}

/// A reference must be non-empty, free of NaN and sorted ascending.
pub(crate) fn check_sorted(v: &[f64], name: &'static str) -> Result<(), StatsError> {
    check(v, name)?;
    if v.windows(2).any(|w| w[0] > w[1]) {
        return Err(StatsError::InvalidArgument {
            name,
            reason: "must be sorted ascending".into(),
        });
    }
    Ok(())
}

/// `numpy.histogram_bin_edges(data, bins="sturges")` for data with
/// minimum `lo`, maximum `hi` and `n` values: the bin width is
/// `(hi - lo) / (log2(n) + 1)`, the number of bins `ceil((hi - lo) /
/// width)` (one bin when all values are equal, with the range widened to
/// `lo - 0.5 .. hi + 0.5`), the edges `lo + i * step` with the last set to
/// `hi`, as `numpy.linspace`. Infinite data is an error, as in numpy.
pub fn sturges_edges(lo: f64, hi: f64, n: usize) -> Result<Vec<f64>, StatsError> {
    if !lo.is_finite() || !hi.is_finite() {
        return Err(StatsError::InvalidArgument {
            name: "values",
            reason: format!("the range [{lo}, {hi}] is not finite, so bins are undefined"),
        });
    }
    let width = (hi - lo) / ((n as f64).log2() + 1.0);
    let (lo, hi) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let n_bins = if width > 0.0 {
        ((hi - lo) / width).ceil() as usize
    } else {
        1
    };
    let step = (hi - lo) / n_bins as f64;
    let mut edges: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step + lo).collect();
    edges[n_bins] = hi;
    Ok(edges)
}

/// `numpy.histogram(x, edges)[0]` of sorted `x`: bins `[e_i, e_{i+1})`, the
/// last one closed, values outside the edges not counted.
fn histogram_sorted(xs: &[f64], edges: &[f64]) -> Vec<u64> {
    let below = |e: f64| xs.partition_point(|v| *v < e);
    let last = edges.len() - 1;
    (0..last)
        .map(|i| {
            let hi = if i + 1 == last {
                xs.partition_point(|v| *v <= edges[last])
            } else {
                below(edges[i + 1])
            };
            (hi - below(edges[i])) as u64
        })
        .collect()
}

/// The number of distinct values in two sorted samples together.
fn distinct_union(a: &[f64], b: &[f64]) -> usize {
    let (mut i, mut j, mut n) = (0usize, 0usize, 0usize);
    while i < a.len() || j < b.len() {
        let z = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < a.len() && a[i] == z {
            i += 1;
        }
        while j < b.len() && b[j] == z {
            j += 1;
        }
        n += 1;
    }
    n
}

/// Evidently 0.7's Hellinger distance of a numeric column
/// (`hellinger_stat_test`), which does **not** use [`evidently_bins`]:
/// Sturges edges over the *distinct* values of reference and current
/// together (`numpy.histogram_bin_edges(keys, "sturges")`, so `n` is the
/// number of distinct values), density histograms of each sample
/// (`counts / (n_sample * bin_width_i)`), and
/// `sqrt(1 - clip(sum_i sqrt(h1_i h2_i) * w, 0, 1))` with `w` the mean bin
/// width. In [0, 1]; drift at or above 0.1.
pub fn evidently_hellinger(reference: &[f64], current: &[f64]) -> Result<f64, StatsError> {
    check(reference, "reference")?;
    evidently_hellinger_sorted(&sorted(reference), current)
}

/// As [`evidently_hellinger`] for a reference already sorted ascending.
pub fn evidently_hellinger_sorted(
    reference_sorted: &[f64],
    current: &[f64],
) -> Result<f64, StatsError> {
    check_sorted(reference_sorted, "reference")?;
    check(current, "current")?;
    let cs = sorted(current);
    let rs = reference_sorted;
    let lo = rs[0].min(cs[0]);
    let hi = rs[rs.len() - 1].max(cs[cs.len() - 1]);
    let edges = sturges_edges(lo, hi, distinct_union(rs, &cs))?;
    let density = |xs: &[f64]| -> Vec<f64> {
        let counts = histogram_sorted(xs, &edges);
        let total: u64 = counts.iter().sum();
        counts
            .iter()
            .zip(edges.windows(2))
            .map(|(c, e)| *c as f64 / (e[1] - e[0]) / total as f64)
            .collect()
    };
    let (h1, h2) = (density(rs), density(&cs));
    let width = (edges[edges.len() - 1] - edges[0]) / (edges.len() - 1) as f64;
    let mut bc = 0.0;
    for (p, q) in h1.iter().zip(&h2) {
        bc += (p * q).sqrt() * width;
    }
    Ok((1.0 - bc.clamp(0.0, 1.0)).sqrt())
}

/// Proportions of reference and current per bin, by Evidently's rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    /// Reference proportions.
    pub reference: Vec<f64>,
    /// Current proportions.
    pub current: Vec<f64>,
}

/// Evidently's `get_binned_data` for a numeric column (see module docs).
pub fn evidently_bins(reference: &[f64], current: &[f64]) -> Result<Binned, StatsError> {
    check(reference, "reference")?;
    evidently_bins_sorted(&sorted(reference), current)
}

/// As [`evidently_bins`] for a reference already sorted ascending (not
/// re-sorted); the same proportions.
pub fn evidently_bins_sorted(
    reference_sorted: &[f64],
    current: &[f64],
) -> Result<Binned, StatsError> {
    check_sorted(reference_sorted, "reference")?;
    check(current, "current")?;
    let rs = reference_sorted;
    let distinct = 1 + rs.windows(2).filter(|w| w[0] != w[1]).count();
    let (rn, cn) = (rs.len() as f64, current.len() as f64);
    if distinct <= 20 {
        let mut keys: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        // total_cmp-consistent key: the bits of the value with -0.0 folded into 0.0.
        let key = |v: f64| if v == 0.0 { 0u64 } else { v.to_bits() };
        for &v in rs {
            keys.entry(key(v)).or_default().0 += 1;
        }
        for &v in current {
            keys.entry(key(v)).or_default().1 += 1;
        }
        return Ok(Binned {
            reference: keys.values().map(|(r, _)| *r as f64 / rn).collect(),
            current: keys.values().map(|(_, c)| *c as f64 / cn).collect(),
        });
    }
    let cs = sorted(current);
    let lo = rs[0].min(cs[0]);
    let hi = rs[rs.len() - 1].max(cs[cs.len() - 1]);
    let edges = sturges_edges(lo, hi, rs.len() + cs.len())?;
    let share = |xs: &[f64], n: f64| -> Vec<f64> {
        histogram_sorted(xs, &edges)
            .iter()
            .map(|c| *c as f64 / n)
            .collect()
    };
    Ok(Binned {
        reference: share(rs, rn),
        current: share(&cs, cn),
    })
}

/// Counts of each distinct value (sorted union of both samples), for
/// categorical columns: `(reference counts, current counts)`.
pub fn category_counts<T: Ord + Clone>(
    reference: &[T],
    current: &[T],
) -> (Vec<T>, Vec<u64>, Vec<u64>) {
    let mut m: BTreeMap<T, (u64, u64)> = BTreeMap::new();
    for v in reference {
        m.entry(v.clone()).or_default().0 += 1;
    }
    for v in current {
        m.entry(v.clone()).or_default().1 += 1;
    }
    let keys = m.keys().cloned().collect();
    let (r, c) = m.values().map(|(r, c)| (*r, *c)).unzip();
    (keys, r, c)
}

/// Evidently's binning of a categorical column: proportions per category.
pub fn evidently_bins_categorical<T: Ord + Clone>(
    reference: &[T],
    current: &[T],
) -> Result<Binned, StatsError> {
    if reference.is_empty() {
        return Err(StatsError::EmptySample { name: "reference" });
    }
    if current.is_empty() {
        return Err(StatsError::EmptySample { name: "current" });
    }
    let (_, r, c) = category_counts(reference, current);
    let (rn, cn) = (reference.len() as f64, current.len() as f64);
    Ok(Binned {
        reference: r.iter().map(|v| *v as f64 / rn).collect(),
        current: c.iter().map(|v| *v as f64 / cn).collect(),
    })
}

/// Evidently's zero fill, applied to each side separately.
fn feel_zeroes(p: &[f64]) -> Vec<f64> {
    let min_nonzero = p
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let fill = if min_nonzero <= 1e-4 {
        min_nonzero / 1e6
    } else {
        1e-4
    };
    p.iter()
        .map(|v| if *v == 0.0 { fill } else { *v })
        .collect()
}

/// Evidently's PSI on binned proportions: `sum((ref - cur) ln(ref / cur))`.
pub fn evidently_psi(bins: &Binned) -> f64 {
    let (r, c) = (feel_zeroes(&bins.reference), feel_zeroes(&bins.current));
    r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()).sum()
}

/// Evidently's Jensen-Shannon on binned proportions (natural log, no zero fill).
pub fn evidently_jensen_shannon(bins: &Binned) -> Result<f64, StatsError> {
    jensen_shannon(&bins.reference, &bins.current, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_have_zero_distance() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(wasserstein(&x, &x).unwrap(), 0.0);
        assert_eq!(psi_deciles(&x, &x).unwrap().psi, 0.0);
        assert_eq!(
            jensen_shannon(&[1.0, 2.0], &[2.0, 4.0], Some(2.0)).unwrap(),
            0.0
        );
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let x = [0.0, 1.0, 2.0];
        let y = [0.5, 1.5, 2.5];
        assert!((wasserstein(&x, &y).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn hellinger_bounds() {
        assert_eq!(hellinger(&[1.0, 2.0], &[2.0, 4.0]).unwrap(), 0.0);
        assert!((hellinger(&[1.0, 0.0], &[0.0, 1.0]).unwrap() - 1.0).abs() < 1e-15);
    }

    /// The sorted fast paths give the same values as the general functions,
    /// and reject an unsorted reference.
    #[test]
    fn sorted_paths_equal_general() {
        let reference: Vec<f64> = (0..400).map(|i| ((i * 7919) % 613) as f64 / 7.0).collect();
        let current: Vec<f64> = (0..150)
            .map(|i| ((i * 104_729) % 577) as f64 / 6.0)
            .collect();
        let few: Vec<f64> = (0..100).map(|i| (i % 6) as f64).collect();
        let rs = sorted(&reference);
        assert_eq!(
            wasserstein_normed(&reference, &current).unwrap(),
            wasserstein_normed_sorted(&rs, &current).unwrap()
        );
        assert_eq!(
            wasserstein(&reference, &current).unwrap(),
            cdf_distance_sorted(1, &rs, &sorted(&current))
        );
        assert_eq!(
            evidently_hellinger(&reference, &current).unwrap(),
            evidently_hellinger_sorted(&rs, &current).unwrap()
        );
        for r in [&reference, &few] {
            assert_eq!(
                evidently_bins(r, &current).unwrap(),
                evidently_bins_sorted(&sorted(r), &current).unwrap()
            );
        }
        assert!(evidently_bins_sorted(&reference, &current).is_err());
        assert!(evidently_hellinger_sorted(&reference, &current).is_err());
    }

    /// numpy's Sturges rule: ceil((hi - lo) / width) bins, one bin over
    /// `[v - 0.5, v + 0.5]` when all values are equal, and no bins over an
    /// infinite range.
    #[test]
    fn sturges_edges_as_numpy() {
        // 8 values over [0, 10]: width 10 / 4 = 2.5, so 4 bins.
        assert_eq!(
            sturges_edges(0.0, 10.0, 8).unwrap(),
            vec![0.0, 2.5, 5.0, 7.5, 10.0]
        );
        assert_eq!(sturges_edges(3.0, 3.0, 5).unwrap(), vec![2.5, 3.5]);
        assert!(sturges_edges(0.0, f64::INFINITY, 5).is_err());
        // One distinct value in both samples: one bin, distance 0.
        assert_eq!(evidently_hellinger(&[2.0; 4], &[2.0; 3]).unwrap(), 0.0);
        // Disjoint samples: no overlap, distance 1.
        assert_eq!(evidently_hellinger(&[0.0, 1.0], &[9.0, 10.0]).unwrap(), 1.0);
    }

    #[test]
    fn empty_is_an_error() {
        assert!(psi_deciles(&[], &[1.0]).is_err());
        assert!(wasserstein(&[1.0], &[]).is_err());
    }
}
