//! Chi-square tests on counts, as scipy: `chi2_contingency` (Pearson or
//! G-test, with Yates' correction for one degree of freedom) and
//! `chisquare` (goodness of fit of observed counts to expected counts).
//!
//! p-values are the upper tail of the chi-square distribution (statrs'
//! regularised incomplete gamma). Edge cases follow scipy 1.17: a table
//! with one category has `dof = 0`, statistic 0 and p = 1 (scipy's
//! convention in `chi2_contingency`); a zero expected cell in a contingency
//! table is an error; in goodness of fit a single category has no degrees of
//! freedom and p is NaN (`chi2.sf(x, 0)`), an expected count of 0 with a
//! positive observed count gives an infinite statistic and p = 0, and 0
//! observed against 0 expected gives a NaN statistic. Callers that turn a
//! p-value into a verdict report NaN as "not testable"
//! (`crate::stats::drift::Verdict`).

use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::StatsError;

/// Result of a chi-square test.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChiSquareResult {
    /// The test statistic.
    pub statistic: f64,
    /// Upper-tail p-value.
    pub p_value: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// Expected counts (row-major for a contingency table).
    pub expected: Vec<f64>,
}

/// The divergence a statistic measures (scipy's `lambda_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Divergence {
    /// Pearson's chi-square, `sum((O-E)^2/E)`.
    #[default]
    Pearson,
    /// The G-test, `2 sum(O ln(O/E))`.
    LogLikelihood,
}

/// Upper-tail probability of chi-square with `df` degrees of freedom; NaN
/// for `df <= 0`, where the distribution is undefined (as `scipy.stats.
/// chi2.sf`).
pub fn chi2_sf(statistic: f64, df: f64) -> f64 {
    if statistic.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if statistic == f64::INFINITY {
        return 0.0;
    }
    if statistic <= 0.0 {
        return 1.0;
    }
    match ChiSquared::new(df) {
        Ok(d) => d.sf(statistic).clamp(0.0, 1.0),
        Err(_) => f64::NAN,
    }
}

fn divergence(observed: &[f64], expected: &[f64], kind: Divergence) -> f64 {
    match kind {
        Divergence::Pearson => observed
            .iter()
            .zip(expected)
            .map(|(o, e)| {
                let d = o - e;
                d * d / e
            })
            .sum(),
        Divergence::LogLikelihood => {
            2.0 * observed
                .iter()
                .zip(expected)
                .map(|(o, e)| if *o == 0.0 { 0.0 } else { o * (o / e).ln() })
                .sum::<f64>()
        }
    }
}

/// Test of independence on an `r x c` table of counts (`rows[i][j]`), as
/// `scipy.stats.chi2_contingency(table, correction, lambda_)`.
pub fn chi2_contingency(
    rows: &[Vec<f64>],
    correction: bool,
    kind: Divergence,
) -> Result<ChiSquareResult, StatsError> {
    let r = rows.len();
    let c = rows.first().map_or(0, Vec::len);
    if r == 0 || c == 0 {
        return Err(StatsError::EmptySample { name: "table" });
    }
    if rows.iter().any(|row| row.len() != c) {
        return Err(StatsError::InvalidArgument {
            name: "table",
            reason: "rows have different lengths".into(),
        });
    }
    if rows.iter().flatten().any(|v| v.is_nan() || *v < 0.0) {
        return Err(StatsError::InvalidArgument {
            name: "table",
            reason: "counts must be non-negative numbers".into(),
        });
    }
    let row_sums: Vec<f64> = rows.iter().map(|row| row.iter().sum()).collect();
    let col_sums: Vec<f64> = (0..c)
        .map(|j| rows.iter().map(|row| row[j]).sum())
        .collect();
    let total: f64 = row_sums.iter().sum();
    let expected: Vec<f64> = (0..r)
        .flat_map(|i| {
            let rs = row_sums[i];
            col_sums
                .iter()
                .map(move |cs| rs * cs / total)
                .collect::<Vec<_>>()
        })
        .collect();
    if expected.contains(&0.0) {
        return Err(StatsError::InvalidArgument {
            name: "table",
            reason: "an expected frequency is zero (a row or column sums to zero)".into(),
        });
    }
    let dof = (r * c) as f64 - (r + c) as f64 + 1.0;
    if dof == 0.0 {
        return Ok(ChiSquareResult {
            statistic: 0.0,
            p_value: 1.0,
            df: 0.0,
            expected,
        });
    }
    let mut observed: Vec<f64> = rows.iter().flatten().copied().collect();
    if dof == 1.0 && correction {
        // Yates: move every cell towards its expectation by at most 0.5.
        for (o, e) in observed.iter_mut().zip(&expected) {
            let diff = e - *o;
            *o += diff.signum() * diff.abs().min(0.5);
        }
    }
    let statistic = divergence(&observed, &expected, kind);
    Ok(ChiSquareResult {
        statistic,
        p_value: chi2_sf(statistic, dof),
        df: dof,
        expected,
    })
}

/// Goodness of fit of `observed` counts to `expected` counts, as
/// `scipy.stats.chisquare(f_obs, f_exp)`; `expected = None` means uniform.
/// The two must have the same total (relative 1e-8), as scipy requires.
pub fn chisquare(
    observed: &[f64],
    expected: Option<&[f64]>,
    kind: Divergence,
) -> Result<ChiSquareResult, StatsError> {
    if observed.is_empty() {
        return Err(StatsError::EmptySample { name: "observed" });
    }
    if observed.iter().any(|v| v.is_nan()) {
        return Err(StatsError::NanInput { name: "observed" });
    }
    let total: f64 = observed.iter().sum();
    let expected: Vec<f64> = match expected {
        None => vec![total / observed.len() as f64; observed.len()],
        Some(e) => {
            if e.len() != observed.len() {
                return Err(StatsError::InvalidArgument {
                    name: "expected",
                    reason: format!(
                        "{} expected counts for {} observed",
                        e.len(),
                        observed.len()
                    ),
                });
            }
            let et: f64 = e.iter().sum();
            if (et - total).abs() > 1e-8 * total.abs().max(et.abs()) {
                return Err(StatsError::InvalidArgument {
                    name: "expected",
                    reason: format!(
                        "expected counts sum to {et}, observed to {total}; they must agree"
                    ),
                });
            }
            e.to_vec()
        }
    };
    let statistic = divergence(observed, &expected, kind);
    let df = observed.len() as f64 - 1.0;
    Ok(ChiSquareResult {
        statistic,
        p_value: chi2_sf(statistic, df),
        df,
        expected,
    })
}

/// Sample-ratio-mismatch test: `observed` arm counts against configured
/// `weights` (any positive scale, normalised here), a Pearson goodness of fit
/// to `weights / sum(weights) * sum(observed)`.
pub fn srm(observed: &[f64], weights: &[f64]) -> Result<ChiSquareResult, StatsError> {
    if observed.len() != weights.len() {
        return Err(StatsError::InvalidArgument {
            name: "weights",
            reason: format!("{} weights for {} arms", weights.len(), observed.len()),
        });
    }
    if weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
        return Err(StatsError::InvalidArgument {
            name: "weights",
            reason: "every weight must be a positive number".into(),
        });
    }
    let total: f64 = observed.iter().sum();
    let wsum: f64 = weights.iter().sum();
    let expected: Vec<f64> = weights.iter().map(|w| w / wsum * total).collect();
    chisquare(observed, Some(&expected), Divergence::Pearson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_category_has_no_dof() {
        let r = chi2_contingency(&[vec![5.0], vec![7.0]], true, Divergence::Pearson).unwrap();
        assert_eq!((r.statistic, r.p_value, r.df), (0.0, 1.0, 0.0));
    }

    #[test]
    fn zero_expected_in_goodness_of_fit_is_infinite() {
        let r = chisquare(&[3.0, 2.0], Some(&[5.0, 0.0]), Divergence::Pearson).unwrap();
        assert_eq!(r.statistic, f64::INFINITY);
        assert_eq!(r.p_value, 0.0);
    }

    /// One category: scipy's `chisquare` has no degrees of freedom and
    /// returns p = NaN (it said p = 1, or p = 0 when the scaled expected
    /// count rounded away from the observed one).
    #[test]
    fn single_category_goodness_of_fit_is_undefined() {
        let r = chisquare(&[7.0], Some(&[7.0]), Divergence::Pearson).unwrap();
        assert_eq!((r.statistic, r.df), (0.0, 0.0));
        assert!(r.p_value.is_nan(), "{r:?}");
        // 10 current values against 3 reference values scaled by 10 / 3.
        let e = 3.0 * (10.0 / 3.0);
        let r = chisquare(&[10.0], Some(&[e]), Divergence::Pearson).unwrap();
        assert!(r.p_value.is_nan(), "{r:?}");
        let s = srm(&[100.0], &[1.0]).unwrap();
        assert!(s.p_value.is_nan(), "{s:?}");
        // 0 observed against 0 expected: NaN statistic, as scipy.
        let z = chisquare(&[7.0, 0.0], Some(&[7.0, 0.0]), Divergence::Pearson).unwrap();
        assert!(z.statistic.is_nan() && z.p_value.is_nan());
    }

    #[test]
    fn totals_must_agree() {
        assert!(chisquare(&[3.0, 2.0], Some(&[3.0, 3.0]), Divergence::Pearson).is_err());
    }
}
