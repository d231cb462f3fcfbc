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
    let (us, vs) = (sorted(u), sorted(v));
    let mut all: Vec<f64> = us.iter().chain(&vs).copied().collect();
    all.sort_unstable_by(f64::total_cmp);
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut acc = 0.0;
    for w in all.windows(2) {
        let x = w[0];
        while i < us.len() && us[i] <= x {
            i += 1;
        }
        while j < vs.len() && vs[j] <= x {
            j += 1;
        }
        let d = (i as f64 / nu - j as f64 / nv).abs();
        let delta = w[1] - w[0];
        acc += if p == 1 { d * delta } else { d * d * delta };
    }
    Ok(if p == 1 { acc } else { acc.sqrt() })
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
    let wd = wasserstein(reference, current)?;
    let n = reference.len() as f64;
    let mean = reference.iter().sum::<f64>() / n;
    let var = reference
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum::<f64>()
        / n;
    Ok(wd / var.sqrt().max(0.001))
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
    check(current, "current")?;
    let distinct = {
        let s = sorted(reference);
        let mut d = s.clone();
        d.dedup();
        d.len()
    };
    if distinct <= 20 {
        let mut keys: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        // total_cmp-consistent key: the bits of the value with -0.0 folded into 0.0.
        let key = |v: f64| if v == 0.0 { 0u64 } else { v.to_bits() };
        for &v in reference {
            keys.entry(key(v)).or_default().0 += 1;
        }
        for &v in current {
            keys.entry(key(v)).or_default().1 += 1;
        }
        let (rn, cn) = (reference.len() as f64, current.len() as f64);
        return Ok(Binned {
            reference: keys.values().map(|(r, _)| *r as f64 / rn).collect(),
            current: keys.values().map(|(_, c)| *c as f64 / cn).collect(),
        });
    }
    let all: Vec<f64> = reference.iter().chain(current).copied().collect();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in &all {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let width = (hi - lo) / ((all.len() as f64).log2() + 1.0);
    let n_bins = if width > 0.0 {
        ((hi - lo) / width).ceil() as usize
    } else {
        1
    };
    let step = (hi - lo) / n_bins as f64;
    let mut edges: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step + lo).collect();
    edges[n_bins] = hi;
    let hist = |x: &[f64]| -> Vec<f64> {
        let mut counts = vec![0u64; n_bins];
        for &v in x {
            // [e_i, e_{i+1}) except the last bin, which is closed.
            let idx = edges.partition_point(|e| *e <= v);
            let b = if v == hi {
                n_bins - 1
            } else {
                idx.saturating_sub(1).min(n_bins - 1)
            };
            counts[b] += 1;
        }
        counts.iter().map(|c| *c as f64 / x.len() as f64).collect()
    };
    Ok(Binned {
        reference: hist(reference),
        current: hist(current),
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

    #[test]
    fn empty_is_an_error() {
        assert!(psi_deciles(&[], &[1.0]).is_err());
        assert!(wasserstein(&[1.0], &[]).is_err());
    }
}
