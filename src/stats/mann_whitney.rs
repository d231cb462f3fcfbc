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

use super::{Alternative, StatsError, check_sample};

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

impl std::str::FromStr for MwuMethod {
    type Err = StatsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "asymptotic" | "asymp" => Ok(Self::Asymptotic),
            other => Err(StatsError::InvalidArgument {
                name: "method",
                reason: format!("`{other}` is not one of auto, exact, asymptotic"),
            }),
        }
    }
}

/// Result of [`mannwhitneyu`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MwuResult {
    /// U statistic of the first sample.
    pub statistic: f64,
    /// p-value.
    pub p_value: f64,
}

/// Sum of the (average, 1-based) ranks of `a` in `a ++ b`, and the tie term
/// `sum(t^3 - t)`. Both samples are sorted on their own and merged by value,
/// which is much faster than ranking an index array through a comparator.
fn rank_sum_first(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable_by(f64::total_cmp);
    b.sort_unstable_by(f64::total_cmp);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut r1, mut tie_term, mut pos) = (0.0f64, 0.0f64, 0usize);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        let i0 = i;
        while i < a.len() && a[i] == v {
            i += 1;
        }
        let j0 = j;
        while j < b.len() && b[j] == v {
            j += 1;
        }
        let (ca, t) = ((i - i0) as f64, (i - i0 + j - j0) as f64);
        // Ranks pos+1 ..= pos+t share their average.
        r1 += ca * (pos as f64 + (t + 1.0) / 2.0);
        tie_term += t * t * t - t;
        pos += i - i0 + j - j0;
    }
    (r1, tie_term)
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
    check_sample(a, "a")?;
    check_sample(b, "b")?;
    let (n1, n2) = (a.len(), b.len());
    let (r1, tie_term) = rank_sum_first(a, b);
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
        // a ++ b = [2, 1, 2, 3]: ranks 2.5, 1, 2.5, 4; a = [2, 1] sums to 3.5.
        let (r1, t) = rank_sum_first(&[2.0, 1.0], &[2.0, 3.0]);
        assert_eq!(r1, 3.5);
        assert_eq!(t, 6.0);
    }
}
