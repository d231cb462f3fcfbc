//! Two-sample t-tests (Welch and Student) with confidence intervals for the
//! difference in means, as `scipy.stats.ttest_ind` and its
//! `confidence_interval()`.
//!
//! The p-value comes from the Student t distribution with Welch-Satterthwaite
//! df (or `n1 + n2 - 2` pooled). Quantiles for the interval are polished with
//! Newton steps on the CDF so they are accurate to a few ulps. One-sided
//! alternatives give a half-infinite interval.
//!
//! **Degenerate input.** Fewer than two values in a sample is an error. With
//! zero variance in both samples the standard error is 0: the statistic is
//! `±inf` (or NaN when the means are equal) and Welch's df, 0/0, is taken as
//! 1 — scipy's choice (statsmodels returns NaN there).

use statrs::distribution::{Continuous, ContinuousCDF, StudentsT};

use super::{Alternative, StatsError};

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

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var)
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
    for (x, name) in [(a, "a"), (b, "b")] {
        if x.len() < 2 {
            return Err(StatsError::InvalidArgument {
                name,
                reason: format!("needs at least 2 values, got {}", x.len()),
            });
        }
        if x.iter().any(|v| v.is_nan()) {
            return Err(StatsError::NanInput { name });
        }
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "confidence",
            reason: format!("{confidence} is not in (0, 1)"),
        });
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let ((ma, va), (mb, vb)) = (mean_var(a), mean_var(b));
    let (se, df) = if equal_var {
        let df = na + nb - 2.0;
        let sp2 = ((na - 1.0) * va + (nb - 1.0) * vb) / df;
        ((sp2 * (1.0 / na + 1.0 / nb)).sqrt(), df)
    } else {
        let (qa, qb) = (va / na, vb / nb);
        let df = (qa + qb).powi(2) / (qa * qa / (na - 1.0) + qb * qb / (nb - 1.0));
        ((qa + qb).sqrt(), if df.is_nan() { 1.0 } else { df })
    };
    let diff = ma - mb;
    let t = diff / se;
    let p = match alternative {
        Alternative::TwoSided => (2.0 * t_sf(t.abs(), df)).min(1.0),
        Alternative::Less => t_sf(-t, df),
        Alternative::Greater => t_sf(t, df),
    };
    let (lo, hi) = match alternative {
        Alternative::TwoSided => {
            let q = t_quantile(0.5 + confidence / 2.0, df);
            (diff - q * se, diff + q * se)
        }
        Alternative::Less => (f64::NEG_INFINITY, diff + t_quantile(confidence, df) * se),
        Alternative::Greater => (diff - t_quantile(confidence, df) * se, f64::INFINITY),
    };
    Ok(TTestResult {
        statistic: t,
        p_value: p,
        df,
        difference: diff,
        ci_low: lo,
        ci_high: hi,
    })
}
