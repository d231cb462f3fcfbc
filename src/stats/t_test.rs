//! Two-sample t-tests (Welch and Student) with confidence intervals for the
//! difference in means, as `scipy.stats.ttest_ind` and its
//! `confidence_interval()`.
//!
//! The p-value comes from the Student t distribution with Welch-Satterthwaite
//! df (or `n1 + n2 - 2` pooled). Quantiles for the interval are polished with
//! Newton steps on the CDF so they are accurate to a few ulps. One-sided
//! alternatives give a half-infinite interval.
//!
//! **Stability.** Means and variances come from [`Moments`]: two passes over
//! the values kept relative to a shift (the first value), and the difference
//! of the means taken between the shifted means. Values sharing a large
//! offset (about 1e9 with noise of about 1) keep their digits: a plain
//! `sum / n` mean is off by about 1e-6 there, and the statistic lost about
//! six digits. [`ttest_ind_from_moments`] runs the same test on two
//! mergeable summaries, for streaming A/B statistics.
//!
//! **Degenerate input** (as scipy 1.17). An empty sample is an error. With
//! one value in a sample the Welch variance is undefined and every output
//! but `df` (taken as 1, below) is NaN; Student's pooled variance still
//! exists when the other sample has two values. With zero variance in both
//! samples the standard error is 0: the statistic is `±inf` (p = 0 two-sided)
//! or NaN when the means are equal (p NaN), the interval collapses to the
//! difference, and a one-sided interval's infinite end becomes NaN (scipy
//! computes it as `-inf * 0 + difference`). Welch's df, 0/0 there, is taken
//! as 1 — scipy's choice (statsmodels returns NaN).

use statrs::distribution::{Continuous, ContinuousCDF, StudentsT};

use super::summary::Moments;
use super::{Alternative, StatsError, check_sample};

/// Result of [`ttest_ind`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TTestResult {
    /// t statistic of mean(a) - mean(b).
    pub statistic: f64,
    /// p-value for the alternative.
    pub p_value: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// Difference in means, mean(a) - mean(b).
    pub difference: f64,
    /// Lower bound of the confidence interval for the difference.
    pub ci_low: f64,
    /// Upper bound of the confidence interval for the difference.
    pub ci_high: f64,
}

fn t_dist(df: f64) -> Option<StudentsT> {
    StudentsT::new(0.0, 1.0, df).ok()
}

/// Upper tail of Student's t with `df` degrees of freedom.
pub fn t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() {
        return f64::NAN;
    }
    if t == f64::INFINITY {
        return 0.0;
    }
    if t == f64::NEG_INFINITY {
        return 1.0;
    }
    match t_dist(df) {
        // sf(t) = cdf(-t) keeps precision in the upper tail.
        Some(d) => d.cdf(-t),
        None => f64::NAN,
    }
}

/// Quantile of Student's t, refined with Newton steps on the CDF.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let Some(d) = t_dist(df) else { return f64::NAN };
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let mut x = d.inverse_cdf(p);
    for _ in 0..4 {
        let f = if p > 0.5 {
            (1.0 - d.cdf(-x)) - p
        } else {
            d.cdf(x) - p
        };
        let dens = d.pdf(x);
        if dens <= 0.0 || !dens.is_finite() {
            break;
        }
        let step = f / dens;
        x -= step;
        if step.abs() <= 1e-15 * x.abs().max(1e-300) {
            break;
        }
    }
    x
}

/// Two-sample t-test of `a` against `b`; `equal_var` selects Student's pooled
/// test, otherwise Welch's. `confidence` is the interval's level (e.g. 0.95).
pub fn ttest_ind(
    a: &[f64],
    b: &[f64],
    equal_var: bool,
    alternative: Alternative,
    confidence: f64,
) -> Result<TTestResult, StatsError> {
    check_sample(a, "a")?;
    check_sample(b, "b")?;
    ttest_ind_from_moments(
        &Moments::from_slice(a),
        &Moments::from_slice(b),
        equal_var,
        alternative,
        confidence,
    )
}

/// [`ttest_ind`] from two samples' summaries (as `scipy.stats.
/// ttest_ind_from_stats`, but from the mergeable [`Moments`], whose mean
/// difference keeps its digits at large offsets). NaN values the summaries
/// counted apart are ignored.
pub fn ttest_ind_from_moments(
    a: &Moments,
    b: &Moments,
    equal_var: bool,
    alternative: Alternative,
    confidence: f64,
) -> Result<TTestResult, StatsError> {
    for (m, name) in [(a, "a"), (b, "b")] {
        if m.count == 0 {
            return Err(StatsError::EmptySample { name });
        }
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "confidence",
            reason: format!("{confidence} is not in (0, 1)"),
        });
    }
    let (na, nb) = (a.count as f64, b.count as f64);
    let (se, df) = if equal_var {
        let df = na + nb - 2.0;
        // (n - 1) s² is m2, also for a single value (0), as in scipy.
        let sp2 = (a.m2 + b.m2) / df;
        ((sp2 * (1.0 / na + 1.0 / nb)).sqrt(), df)
    } else {
        let (qa, qb) = (a.variance() / na, b.variance() / nb);
        let df = (qa + qb).powi(2) / (qa * qa / (na - 1.0) + qb * qb / (nb - 1.0));
        ((qa + qb).sqrt(), if df.is_nan() { 1.0 } else { df })
    };
    let diff = a.mean_difference(b);
    let t = diff / se;
    let p = match alternative {
        Alternative::TwoSided => 2.0 * t_sf(t.abs(), df),
        Alternative::Less => t_sf(-t, df),
        Alternative::Greater => t_sf(t, df),
    };
    // The quantiles of the interval, then `q * se + diff` as scipy does, so
    // an infinite end times a zero standard error is NaN there too.
    let (q_low, q_high) = match alternative {
        Alternative::TwoSided => {
            let q = t_quantile(0.5 + confidence / 2.0, df);
            (-q, q)
        }
        Alternative::Less => (f64::NEG_INFINITY, t_quantile(confidence, df)),
        Alternative::Greater => (-t_quantile(confidence, df), f64::INFINITY),
    };
    Ok(TTestResult {
        statistic: t,
        // `f64::min` would turn a NaN p-value into 1.
        p_value: if p > 1.0 { 1.0 } else { p },
        df,
        difference: diff,
        ci_low: q_low * se + diff,
        ci_high: q_high * se + diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values `k / 1024` for integer noise `k`: adding 1e9 to them is exact.
    fn noise(n: usize, seed: u64, centre: f64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                centre + (((state >> 33) % 2048) as f64 - 1024.0) / 1024.0
            })
            .collect()
    }

    /// The t-test is translation invariant, and the shift by 1e9 is exact
    /// here, so the test on the shifted values (well conditioned) is the
    /// reference. A `sum / n` mean lost about six digits of the statistic.
    #[test]
    fn large_offset_keeps_the_digits() {
        let (a, b) = (noise(3_001, 3, 0.0), noise(2_500, 5, 40.0 / 1024.0));
        let shift = |v: &[f64]| v.iter().map(|x| x + 1e9).collect::<Vec<_>>();
        let (sa, sb) = (shift(&a), shift(&b));
        for equal_var in [false, true] {
            let small = ttest_ind(&a, &b, equal_var, Alternative::TwoSided, 0.95).unwrap();
            let large = ttest_ind(&sa, &sb, equal_var, Alternative::TwoSided, 0.95).unwrap();
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-10 * y.abs();
            assert!(
                close(large.statistic, small.statistic),
                "{} vs {}",
                large.statistic,
                small.statistic
            );
            assert!(close(large.p_value, small.p_value));
            assert!(close(large.df, small.df));
            assert!(close(large.difference, small.difference));
            assert!(close(large.ci_low, small.ci_low) && close(large.ci_high, small.ci_high));
        }
    }

    /// Both samples constant: what scipy 1.17 returns.
    #[test]
    fn constant_samples_follow_scipy() {
        let (five, seven) = ([5.0; 4], [7.0; 6]);
        let w = ttest_ind(&five, &[5.0; 6], false, Alternative::TwoSided, 0.95).unwrap();
        assert!(w.statistic.is_nan() && w.p_value.is_nan(), "{w:?}");
        assert_eq!((w.df, w.ci_low, w.ci_high), (1.0, 0.0, 0.0));
        let s = ttest_ind(&five, &[5.0; 6], true, Alternative::TwoSided, 0.95).unwrap();
        assert!(s.statistic.is_nan() && s.p_value.is_nan(), "{s:?}");
        assert_eq!(s.df, 8.0);
        let d = ttest_ind(&five, &seven, false, Alternative::TwoSided, 0.95).unwrap();
        assert_eq!(
            (d.statistic, d.p_value, d.df),
            (f64::NEG_INFINITY, 0.0, 1.0)
        );
        assert_eq!((d.ci_low, d.ci_high), (-2.0, -2.0));
        let l = ttest_ind(&five, &seven, false, Alternative::Less, 0.95).unwrap();
        assert_eq!((l.p_value, l.ci_high), (0.0, -2.0));
        assert!(l.ci_low.is_nan(), "-inf * 0 + diff, as scipy: {l:?}");
        // A constant that does not divide evenly still has zero variance.
        let c = ttest_ind(&[0.1; 3], &[0.1; 7], false, Alternative::TwoSided, 0.95).unwrap();
        assert!(c.statistic.is_nan() && c.p_value.is_nan(), "{c:?}");
    }

    /// One value in a sample: Welch is undefined, Student is not (scipy).
    #[test]
    fn single_value_follows_scipy() {
        let w = ttest_ind(&[5.0], &[5.0, 6.0, 7.0], false, Alternative::TwoSided, 0.95).unwrap();
        assert!(w.statistic.is_nan() && w.p_value.is_nan() && w.ci_low.is_nan());
        assert_eq!(w.df, 1.0);
        let s = ttest_ind(&[5.0], &[5.0, 6.0, 7.0], true, Alternative::TwoSided, 0.95).unwrap();
        // scipy.stats.ttest_ind([5], [5, 6, 7], equal_var=True)
        assert!((s.statistic - -0.8660254037844387).abs() < 1e-14);
        assert!((s.p_value - 0.47776703213290644).abs() < 1e-12);
        assert_eq!(s.df, 2.0);
        assert!(ttest_ind(&[], &[1.0, 2.0], false, Alternative::TwoSided, 0.95).is_err());
    }
}
