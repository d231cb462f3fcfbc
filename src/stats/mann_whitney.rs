//! Mann-Whitney U test, as `scipy.stats.mannwhitneyu`.
//!
//! `statistic` is U1 = R1 - n1(n1+1)/2 for the first sample, with average
//! ranks for ties. **Asymptotic** p-values use the normal approximation with
//! the tie-corrected variance `n1 n2 / 12 * ((n+1) - sum(t^3 - t) / (n(n-1)))`
//! and an optional continuity correction of 0.5; two-sided tests use
//! `U = max(U1, U2)` and double the tail. **Exact** p-values use the exact
//! null distribution of U (no tie correction), counted by dynamic programming
//! over the generating function. `auto` is exact when `min(n1, n2) <= 8` and
//! there are no ties. p is clipped to 1. Empty samples and NaN are errors.

use statrs::distribution::{ContinuousCDF, Normal};

use super::{Alternative, StatsError};

/// How the p-value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MwuMethod {
    /// Exact for small samples without ties, else asymptotic.
    #[default]
    Auto,
    /// Exact null distribution.
    Exact,
    /// Normal approximation.
    Asymptotic,
}

/// Result of [`mannwhitneyu`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MwuResult {
    /// U statistic of the first sample.
    pub statistic: f64,
    /// p-value.
    pub p_value: f64,
}

/// Average ranks (1-based) of `values`, and the tie term `sum(t^3 - t)`.
fn rank_with_ties(values: &[f64]) -> (Vec<f64>, f64) {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_unstable_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && values[idx[j + 1]] == values[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    (ranks, tie_term)
}

/// `P(U >= u)` under the null for sample sizes `m`, `n` (no ties).
fn exact_sf(u: f64, m: usize, n: usize) -> f64 {
    // freq[k] = number of arrangements with U = k, built one element of the
    // second sample at a time: f(m, j) = sum over placements.
    let max_u = m * n;
    // dp[j][k]: arrangements of m x's and j y's with U = k; rolling over j
    // with the recurrence f(i, j, k) = f(i-1, j, k-j) + f(i, j-1, k).
    let mut table = vec![vec![0.0f64; max_u + 1]; n + 1];
    table[0][0] = 1.0;
    // Iterate i (x's) from 0..=m, updating in place for each j.
    let mut prev = table.clone();
    for i in 0..=m {
        let mut cur = vec![vec![0.0f64; max_u + 1]; n + 1];
        for j in 0..=n {
            for k in 0..=i * j {
                let mut v = 0.0;
                if i == 0 || j == 0 {
                    v = if k == 0 { 1.0 } else { 0.0 };
                } else {
                    if k >= j {
                        v += prev[j][k - j];
                    }
                    v += cur[j - 1][k];
                }
                cur[j][k] = v;
            }
        }
        prev = cur;
    }
    table = prev;
    let freqs = &table[n];
    let total: f64 = freqs.iter().sum();
    let start = u.floor().max(0.0) as usize;
    if start > max_u {
        return 0.0;
    }
    freqs[start..].iter().sum::<f64>() / total
}

/// Mann-Whitney U test of `a` against `b`.
pub fn mannwhitneyu(
    a: &[f64],
    b: &[f64],
    alternative: Alternative,
    method: MwuMethod,
    use_continuity: bool,
) -> Result<MwuResult, StatsError> {
    for (x, name) in [(a, "a"), (b, "b")] {
        if x.is_empty() {
            return Err(StatsError::EmptySample { name });
        }
        if x.iter().any(|v| v.is_nan()) {
            return Err(StatsError::NanInput { name });
        }
    }
    let (n1, n2) = (a.len(), b.len());
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let (ranks, tie_term) = rank_with_ties(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u1 = r1 - n1f * (n1f + 1.0) / 2.0;
    let u2 = n1f * n2f - u1;
    let u = match alternative {
        Alternative::Greater => u1,
        Alternative::Less => u2,
        Alternative::TwoSided => u1.max(u2),
    };
    let method = match method {
        MwuMethod::Auto if n1.min(n2) <= 8 && tie_term == 0.0 => MwuMethod::Exact,
        MwuMethod::Auto => MwuMethod::Asymptotic,
        m => m,
    };
    let mut p = match method {
        MwuMethod::Exact => exact_sf(u, n1, n2),
        _ => {
            let n = n1f + n2f;
            let mu = n1f * n2f / 2.0;
            let s = (n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
            let mut num = u - mu;
            if use_continuity {
                num -= 0.5;
            }
            let z = num / s;
            let normal = Normal::new(0.0, 1.0).expect("standard normal");
            normal.cdf(-z)
        }
    };
    if alternative == Alternative::TwoSided {
        p *= 2.0;
    }
    Ok(MwuResult {
        statistic: u1,
        p_value: p.clamp(0.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_distribution_sums_to_one_and_is_symmetric() {
        assert!((exact_sf(0.0, 3, 4) - 1.0).abs() < 1e-15);
        // U is symmetric around mn/2 = 6: P(U >= 12) = P(U <= 0) = 1/35.
        assert!((exact_sf(12.0, 3, 4) - 1.0 / 35.0).abs() < 1e-15);
    }

    #[test]
    fn ranks_average_ties() {
        let (r, t) = rank_with_ties(&[2.0, 1.0, 2.0]);
        assert_eq!(r, vec![2.5, 1.0, 2.5]);
        assert_eq!(t, 6.0);
    }
}
