//! The k-sample Anderson-Darling test, as `scipy.stats.anderson_ksamp`
//! (scipy 1.17.1, default behaviour: no permutation `method`).
//!
//! **Statistic** (Scholz & Stephens 1987, "K-Sample Anderson-Darling
//! Tests", JASA 82, 918-924). Over the distinct values `z_j` of the pooled
//! sample (size `N`, `l_j` copies of `z_j`), with `M_ij` the number of
//! values of sample `i` (size `n_i`) at or below `z_j`:
//! * `midrank = true` (scipy's default, eq. 7, for continuous and discrete
//!   data): `A2akN = (N-1)/N sum_i 1/n_i sum_j l_j/N (N Ma_ij - Ba_j n_i)^2 /
//!   (Ba_j (N - Ba_j) - N l_j / 4)` with the mid-ranks `Ma_ij = M_ij -
//!   f_ij / 2` (`f_ij` copies of `z_j` in sample `i`) and `Ba_j = #{Z < z_j}
//!   + l_j / 2`;
//! * `midrank = false` (eq. 6, the right-continuous empirical CDF):
//!   `A2kN = sum_i 1/n_i sum_{j < last} l_j/N (N M_ij - B_j n_i)^2 /
//!   (B_j (N - B_j))`, `B_j = #{Z <= z_j}`.
//!
//! The reported statistic is the standardised `A2 = (A2kN - (k-1)) /
//! sigma_N`, with scipy's exact finite-sample variance `sigma_N^2` (eq. 4,
//! in terms of `H = sum 1/n_i`, `h = sum_{i<N} 1/i` and `g`).
//!
//! **p-value** ("significance level"): interpolated, as scipy does, from
//! the critical values of Table 2 for `m = k-1`: `log(sig)` at the seven
//! levels 25%, 10%, 5%, 2.5%, 1%, 0.5%, 0.1% is fitted by a least-squares
//! quadratic in the critical value (numpy's `polyfit`, solved here by a
//! Householder QR on the column-scaled Vandermonde matrix) and evaluated at
//! `A2`. Outside the table the p-value is **capped at 0.25** (A2 below the
//! smallest critical value) and **floored at 0.001** (above the largest):
//! so `p = 0.25` means "0.25 or more" and `p = 0.001` "0.001 or less". scipy
//! warns there; [`AndersonResult::p_bound`] says which bound applies.
//!
//! **Sums** over the distinct values are compensated (Neumaier), where
//! numpy sums pairwise; the two agree to a few ulps of the sum.
//!
//! **Errors.** Fewer than two samples, fewer than two distinct values, or
//! fewer than four values in all is [`StatsError::InvalidArgument`] (scipy
//! raises for the first two; at `N <= 3` its variance divides by zero or
//! indexes an empty array); an empty sample is [`StatsError::EmptySample`];
//! NaN is [`StatsError::NanInput`].
//!
//! [`anderson_ksamp_sorted`] is the two-sample fast path for a reference
//! kept sorted (the monitor's training profile): one merge pass, no sort of
//! the reference, and the same result as [`anderson_ksamp`].

use super::{StatsError, check_sample as check};

/// Significance levels of the critical values: 25%, 10%, 5%, 2.5%, 1%,
/// 0.5%, 0.1%.
pub const SIGNIFICANCE_LEVELS: [f64; 7] = [0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001];

/// Interpolation coefficients of Scholz & Stephens' Table 2 (as in scipy):
/// `critical = b0 + b1 / sqrt(m) + b2 / m`.
const B0: [f64; 7] = [0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085];
const B1: [f64; 7] = [-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615];
const B2: [f64; 7] = [-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154];

/// Result of [`anderson_ksamp`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AndersonResult {
    /// The standardised statistic `A2`.
    pub statistic: f64,
    /// Critical values at [`SIGNIFICANCE_LEVELS`].
    pub critical_values: [f64; 7],
    /// The interpolated p-value, capped at 0.25 and floored at 0.001.
    pub significance_level: f64,
}

/// Which bound of the tabulated range a p-value sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PBound {
    /// The statistic is below every critical value: the true p is at least 0.25.
    Capped,
    /// The statistic is above every critical value: the true p is at most 0.001.
    Floored,
}

impl AndersonResult {
    /// Whether the p-value is a bound rather than an interpolated value.
    pub fn p_bound(&self) -> Option<PBound> {
        let lo = self
            .critical_values
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = self
            .critical_values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if self.statistic < lo {
            Some(PBound::Capped)
        } else if self.statistic > hi {
            Some(PBound::Floored)
        } else {
            None
        }
    }
}

/// The k-sample Anderson-Darling test of `samples` (see the module docs).
pub fn anderson_ksamp(samples: &[&[f64]], midrank: bool) -> Result<AndersonResult, StatsError> {
    if samples.len() < 2 {
        return Err(StatsError::InvalidArgument {
            name: "samples",
            reason: "anderson_ksamp needs at least two samples".into(),
        });
    }
    for s in samples {
        check(s, "samples")?;
    }
    let sorted: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| {
            let mut v = s.to_vec();
            v.sort_unstable_by(f64::total_cmp);
            v
        })
        .collect();
    let views: Vec<&[f64]> = sorted.iter().map(Vec::as_slice).collect();
    from_sorted(&views, midrank)
}

/// Two-sample test of a reference already sorted ascending against an
/// unsorted current sample; equal to `anderson_ksamp(&[reference, current],
/// midrank)`. A reference that is not sorted is
/// [`StatsError::InvalidArgument`].
pub fn anderson_ksamp_sorted(
    reference_sorted: &[f64],
    current: &[f64],
    midrank: bool,
) -> Result<AndersonResult, StatsError> {
    check(reference_sorted, "reference")?;
    check(current, "current")?;
    if !is_sorted(reference_sorted) {
        return Err(StatsError::InvalidArgument {
            name: "reference",
            reason: "the reference must be sorted ascending".into(),
        });
    }
    let mut cur = current.to_vec();
    cur.sort_unstable_by(f64::total_cmp);
    from_sorted(&[reference_sorted, &cur], midrank)
}

/// Whether `v` is sorted ascending (`-0.0` and `0.0` count as equal).
pub(crate) fn is_sorted(v: &[f64]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1])
}

/// A compensated sum (Neumaier's variant of Kahan summation).
#[derive(Default, Clone, Copy)]
pub(crate) struct Sum {
    sum: f64,
    comp: f64,
}

impl Sum {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn value(self) -> f64 {
        self.sum + self.comp
    }
}

/// The test on sorted, non-empty, NaN-free samples.
fn from_sorted(samples: &[&[f64]], midrank: bool) -> Result<AndersonResult, StatsError> {
    let k = samples.len();
    let n: Vec<usize> = samples.iter().map(|s| s.len()).collect();
    let big_n: usize = n.iter().sum();
    let nf = big_n as f64;
    // One pass over the distinct values of the pooled sample, in order:
    // per sample, the pointer `pos[i]` is `M_ij` after the step.
    let mut pos = vec![0usize; k];
    let mut f = vec![0usize; k];
    let mut sums = vec![Sum::default(); k];
    let mut below = 0usize; // #{Z < z_j}
    let mut distinct = 0usize;
    // The right variant skips the last distinct value: its terms are held
    // back one step and added when a next value exists.
    let mut pending: Option<(f64, f64, Vec<usize>)> = None;
    loop {
        let z = samples
            .iter()
            .zip(&pos)
            .filter_map(|(s, p)| s.get(*p).copied())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        let Some(z) = z else { break };
        distinct += 1;
        let mut lj = 0usize;
        for i in 0..k {
            let start = pos[i];
            while pos[i] < n[i] && samples[i][pos[i]] == z {
                pos[i] += 1;
            }
            f[i] = pos[i] - start;
            lj += f[i];
        }
        let ljf = lj as f64;
        if midrank {
            let bj = below as f64 + ljf / 2.0;
            let denom = bj * (nf - bj) - nf * ljf / 4.0;
            for i in 0..k {
                let mij = pos[i] as f64 - f[i] as f64 / 2.0;
                let d = nf * mij - bj * n[i] as f64;
                sums[i].add(ljf / nf * (d * d) / denom);
            }
        } else {
            if let Some((lp, bp, mp)) = pending.take() {
                for i in 0..k {
                    let d = nf * mp[i] as f64 - bp * n[i] as f64;
                    sums[i].add(lp / nf * (d * d) / (bp * (nf - bp)));
                }
            }
            pending = Some((ljf, (below + lj) as f64, pos.clone()));
        }
        below += lj;
    }
    if distinct < 2 {
        return Err(StatsError::InvalidArgument {
            name: "samples",
            reason: "anderson_ksamp needs more than one distinct observation".into(),
        });
    }
    if big_n < 4 {
        return Err(StatsError::InvalidArgument {
            name: "samples",
            reason: format!("the variance of the statistic needs at least 4 values, got {big_n}"),
        });
    }
    let mut a2kn = 0.0;
    for i in 0..k {
        a2kn += sums[i].value() / n[i] as f64;
    }
    if midrank {
        a2kn *= (nf - 1.0) / nf;
    }

    // The variance of A2kN under the null (scipy's expressions).
    let kf = k as f64;
    let big_h: f64 = n.iter().map(|ni| 1.0 / *ni as f64).sum();
    // hs_cs[j] = sum_{t <= j} 1 / (N - 1 - t), j = 0..N-3 (a running sum,
    // as numpy's cumsum); h = hs_cs[last] + 1; g = sum_j hs_cs[j] / (j + 2).
    let mut hs = 0.0;
    let mut g = Sum::default();
    for j in 0..big_n - 2 {
        hs += 1.0 / (big_n - 1 - j) as f64;
        g.add(hs / (j + 2) as f64);
    }
    let h = hs + 1.0;
    let g = g.value();
    let a = (4.0 * g - 6.0) * (kf - 1.0) + (10.0 - 6.0 * g) * big_h;
    let b = (2.0 * g - 4.0) * kf * kf + 8.0 * h * kf + (2.0 * g - 14.0 * h - 4.0) * big_h - 8.0 * h
        + 4.0 * g
        - 6.0;
    let c = (6.0 * h + 2.0 * g - 2.0) * kf * kf
        + (4.0 * h - 4.0 * g + 6.0) * kf
        + (2.0 * h - 6.0) * big_h
        + 4.0 * h;
    let d = (2.0 * h + 6.0) * kf * kf - 4.0 * h * kf;
    let sigmasq =
        (a * nf.powi(3) + b * nf * nf + c * nf + d) / ((nf - 1.0) * (nf - 2.0) * (nf - 3.0));
    let m = kf - 1.0;
    let statistic = (a2kn - m) / sigmasq.sqrt();

    let critical_values: [f64; 7] = std::array::from_fn(|i| B0[i] + B1[i] / m.sqrt() + B2[i] / m);
    let lo = critical_values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = critical_values
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let significance_level = if statistic < lo {
        0.25
    } else if statistic > hi {
        0.001
    } else {
        let logs = SIGNIFICANCE_LEVELS.map(f64::ln);
        let [c2, c1, c0] = polyfit2(&critical_values, &logs);
        // numpy's polyval: Horner from the highest power.
        ((c2 * statistic + c1) * statistic + c0).exp()
    };
    Ok(AndersonResult {
        statistic,
        critical_values,
        significance_level,
    })
}

/// `numpy.polyfit(x, y, 2)`: the least-squares quadratic, highest power
/// first. As numpy, the Vandermonde columns are scaled to unit norm; the
/// problem is then solved by Householder QR (numpy uses an SVD; both give
/// the unique least-squares solution, to rounding).
fn polyfit2(x: &[f64; 7], y: &[f64; 7]) -> [f64; 3] {
    // Columns x^2, x, 1, each scaled to unit norm.
    let mut cols: [[f64; 7]; 3] = [x.map(|v| v * v), *x, [1.0; 7]];
    let scale: [f64; 3] =
        std::array::from_fn(|j| cols[j].iter().map(|v| v * v).sum::<f64>().sqrt());
    for (col, s) in cols.iter_mut().zip(scale) {
        col.iter_mut().for_each(|v| *v /= s);
    }
    let mut rhs = *y;
    // Householder reflections: column j below the diagonal becomes zero.
    for j in 0..3 {
        let norm = cols[j][j..].iter().map(|v| v * v).sum::<f64>().sqrt();
        let alpha = if cols[j][j] > 0.0 { -norm } else { norm };
        let mut v = [0.0f64; 7];
        v[j..].copy_from_slice(&cols[j][j..]);
        v[j] -= alpha;
        let vv: f64 = v.iter().map(|e| e * e).sum();
        if vv == 0.0 {
            continue;
        }
        let reflect = |target: &mut [f64; 7]| {
            let dot: f64 = v.iter().zip(target.iter()).map(|(a, b)| a * b).sum();
            for (t, vi) in target.iter_mut().zip(&v) {
                *t -= 2.0 * dot / vv * vi;
            }
        };
        cols[j..].iter_mut().for_each(reflect);
        reflect(&mut rhs);
    }
    // Back substitution on the upper-triangular 3 x 3 block.
    let mut c = [0.0f64; 3];
    for j in (0..3).rev() {
        let s: f64 = (j + 1..3).map(|t| cols[t][j] * c[t]).sum();
        c[j] = (rhs[j] - s) / cols[j][j];
    }
    for (cj, s) in c.iter_mut().zip(scale) {
        *cj /= s;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy 1.17.1 on hand-made samples with ties (midrank and right
    /// variants, two and three samples); the oracle file checks many more.
    #[test]
    #[allow(clippy::approx_constant)] // 2.718 is Table 2's value, not e
    fn matches_scipy_on_small_tied_samples() {
        let a = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0];
        let b = [2.0, 3.0, 3.0, 4.0, 7.0, 8.0, 9.0, 9.5, 10.0];
        let close = |x: f64, y: f64, rel: f64| (x - y).abs() <= rel * y.abs();
        let r = anderson_ksamp(&[&a, &b], true).unwrap();
        assert!(close(r.statistic, 1.470228017353517, 1e-12), "{r:?}");
        assert!(
            close(r.significance_level, 0.08039874119078486, 1e-9),
            "{r:?}"
        );
        let r = anderson_ksamp(&[&a, &b], false).unwrap();
        assert!(close(r.statistic, 1.3468011691850548, 1e-12), "{r:?}");
        assert!(
            close(r.significance_level, 0.09047859675772243, 1e-9),
            "{r:?}"
        );
        let want = [0.325, 1.226, 1.961, 2.718, 3.752, 4.592, 6.546];
        for (c, w) in r.critical_values.iter().zip(want) {
            assert!(close(*c, w, 1e-12), "{c} vs {w}");
        }
        let r = anderson_ksamp(&[&a, &b, &[0.5, 4.0, 6.0, 11.0]], true).unwrap();
        assert!(close(r.statistic, 0.5608665287322732, 1e-12), "{r:?}");
        assert!(
            close(r.significance_level, 0.22273141783720343, 1e-9),
            "{r:?}"
        );
        assert!(close(r.critical_values[0], 0.44925883860929594, 1e-12));
        assert!(close(r.critical_values[6], 5.564191013989369, 1e-12));
    }

    /// The quadratic fit reproduces a quadratic exactly.
    #[test]
    fn polyfit_recovers_a_quadratic() {
        let x = [0.3, 1.2, 2.0, 2.7, 3.8, 4.6, 6.5];
        let y = x.map(|v| 0.5 * v * v - 2.0 * v + 3.0);
        let c = polyfit2(&x, &y);
        for (got, want) in c.iter().zip([0.5, -2.0, 3.0]) {
            assert!((got - want).abs() < 1e-12, "{c:?}");
        }
    }

    /// At every critical value the interpolated p is close to its level
    /// (the quadratic fits the table closely), and the p-value is capped
    /// and floored outside the table.
    #[test]
    fn p_is_capped_floored_and_monotone() {
        // Same distribution: a small statistic, p capped at 0.25.
        let x: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..50).map(|i| i as f64 + 0.5).collect();
        let r = anderson_ksamp(&[&x, &y], true).unwrap();
        assert_eq!(r.significance_level, 0.25);
        assert_eq!(r.p_bound(), Some(PBound::Capped));
        // Disjoint samples: p floored at 0.001.
        let z: Vec<f64> = (0..50).map(|i| 100.0 + i as f64).collect();
        let r = anderson_ksamp(&[&x, &z], false).unwrap();
        assert_eq!(r.significance_level, 0.001);
        assert_eq!(r.p_bound(), Some(PBound::Floored));
        // Between the bounds p decreases as the shift grows.
        let mut last = 1.0;
        for shift in [4.0, 5.0, 6.0, 7.0, 8.0, 9.0] {
            let w: Vec<f64> = (0..50).map(|i| i as f64 + shift + 0.25).collect();
            let r = anderson_ksamp(&[&x, &w], true).unwrap();
            assert!(r.p_bound().is_none(), "{shift}: {r:?}");
            assert!(r.significance_level < last, "{shift}: {r:?}");
            last = r.significance_level;
        }
    }

    /// The sorted fast path equals the general test, with ties.
    #[test]
    fn sorted_path_equals_general() {
        let reference: Vec<f64> = (0..200).map(|i| ((i * 37) % 23) as f64 * 0.5).collect();
        let current: Vec<f64> = (0..70)
            .map(|i| ((i * 11) % 19) as f64 * 0.5 + 1.0)
            .collect();
        let mut sorted = reference.clone();
        sorted.sort_by(f64::total_cmp);
        for midrank in [true, false] {
            let a = anderson_ksamp(&[&reference, &current], midrank).unwrap();
            let b = anderson_ksamp_sorted(&sorted, &current, midrank).unwrap();
            assert_eq!(a, b);
        }
        assert!(anderson_ksamp_sorted(&reference, &current, true).is_err());
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        assert!(matches!(
            anderson_ksamp(&[&[1.0, 2.0]], true),
            Err(StatsError::InvalidArgument { .. })
        ));
        assert!(matches!(
            anderson_ksamp(&[&[1.0, 1.0], &[1.0, 1.0, 1.0]], true),
            Err(StatsError::InvalidArgument { .. })
        ));
        assert!(matches!(
            anderson_ksamp(&[&[1.0, 2.0], &[]], true),
            Err(StatsError::EmptySample { .. })
        ));
        assert!(matches!(
            anderson_ksamp(&[&[1.0, f64::NAN], &[2.0]], true),
            Err(StatsError::NanInput { .. })
        ));
        assert!(matches!(
            anderson_ksamp(&[&[1.0, 2.0], &[3.0]], true),
            Err(StatsError::InvalidArgument { .. })
        ));
    }
}
