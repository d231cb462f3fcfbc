//! Tests and intervals for proportions, as statsmodels 0.15:
//! `proportions_ztest` (pooled variance), `test_proportions_2indep(method=
//! "wald")` (unpooled), `confint_proportions_2indep` (Wald, Agresti-Caffo,
//! Newcombe) for `p1 - p2`, and `proportion_confint` (normal, Wilson) for one
//! proportion. Two-sided tests; intervals at level `1 - alpha`.
//!
//! A zero count of trials is an error. A pooled proportion of 0 or 1 makes
//! the z statistic 0/0 = NaN, as in statsmodels.

use statrs::distribution::{ContinuousCDF, Normal};

use super::StatsError;

fn std_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("standard normal")
}

/// Upper tail of the standard normal.
pub fn norm_sf(z: f64) -> f64 {
    std_normal().cdf(-z)
}

/// Quantile of the standard normal: Wichura's algorithm AS 241 (PPND16),
/// accurate to about 1e-16 relative. (statrs' inverse is about 1e-11 off,
/// which shows in confidence intervals whose ends nearly cancel.)
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
pub fn norm_ppf(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        let num = ((((((2509.0809287301227 * r + 33430.575583588128) * r + 67265.7709270087)
            * r
            + 45921.95393154987)
            * r
            + 13731.693765509461)
            * r
            + 1971.5909503065513)
            * r
            + 133.14166789178438)
            * r
            + 3.3871328727963665;
        let den = ((((((5226.495278852545 * r + 28729.085735721943) * r + 39307.89580009271)
            * r
            + 21213.794301586597)
            * r
            + 5394.196021424751)
            * r
            + 687.1870074920579)
            * r
            + 42.31333070160091)
            * r
            + 1.0;
        return q * num / den;
    }
    let r0 = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r0.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        let num = ((((((7.745450142783414e-4 * r + 0.022723844989269184) * r
            + 0.2417807251774506)
            * r
            + 1.2704582524523684)
            * r
            + 3.6478483247632045)
            * r
            + 5.769497221460691)
            * r
            + 4.630337846156546)
            * r
            + 1.4234371107496835;
        let den = ((((((1.0507500716444169e-9 * r + 5.475938084995345e-4) * r
            + 0.015198666563616457)
            * r
            + 0.14810397642748008)
            * r
            + 0.6897673349851)
            * r
            + 1.6763848301838038)
            * r
            + 2.053191626637759)
            * r
            + 1.0;
        num / den
    } else {
        let r = r - 5.0;
        let num = ((((((2.010334399292288e-7 * r + 2.7115555687434876e-5) * r
            + 0.0012426609473880784)
            * r
            + 0.026532189526576124)
            * r
            + 0.2965605718285049)
            * r
            + 1.7848265399172913)
            * r
            + 5.463784911164114)
            * r
            + 6.657904643501103;
        let den = ((((((2.0442631033899397e-15 * r + 1.421511758316446e-7) * r
            + 1.8463183175100548e-5)
            * r
            + 7.868691311456133e-4)
            * r
            + 0.014875361290850615)
            * r
            + 0.1369298809227358)
            * r
            + 0.599832206555888)
            * r
            + 1.0;
        num / den
    };
    if q < 0.0 { -x } else { x }
}

/// A z statistic and its two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ZTestResult {
    /// z statistic of p1 - p2.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

fn check(count: f64, nobs: f64, name: &'static str) -> Result<(), StatsError> {
    let valid = nobs > 0.0 && (0.0..=nobs).contains(&count);
    if !valid {
        return Err(StatsError::InvalidArgument {
            name,
            reason: format!("count {count} of {nobs} trials is not a proportion"),
        });
    }
    Ok(())
}

fn check_pair(c1: f64, n1: f64, c2: f64, n2: f64) -> Result<(), StatsError> {
    check(c1, n1, "count1")?;
    check(c2, n2, "count2")
}

fn two_sided(z: f64) -> ZTestResult {
    ZTestResult {
        statistic: z,
        p_value: if z.is_nan() {
            f64::NAN
        } else {
            (2.0 * norm_sf(z.abs())).min(1.0)
        },
    }
}

/// Two-proportion z-test with the pooled variance (`proportions_ztest`).
pub fn proportions_ztest(c1: f64, n1: f64, c2: f64, n2: f64) -> Result<ZTestResult, StatsError> {
    check_pair(c1, n1, c2, n2)?;
    let p = (c1 + c2) / (n1 + n2);
    let se = (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    Ok(two_sided((c1 / n1 - c2 / n2) / se))
}

/// Wald test of `p1 - p2 = 0` with the unpooled variance.
pub fn proportions_wald_test(
    c1: f64,
    n1: f64,
    c2: f64,
    n2: f64,
) -> Result<ZTestResult, StatsError> {
    check_pair(c1, n1, c2, n2)?;
    Ok(two_sided((c1 / n1 - c2 / n2) / unpooled_se(c1, n1, c2, n2)))
}

/// Standard error of `p1 - p2` without pooling.
fn unpooled_se(c1: f64, n1: f64, c2: f64, n2: f64) -> f64 {
    let (p1, p2) = (c1 / n1, c2 / n2);
    (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt()
}

/// Interval method for one proportion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneSampleCi {
    /// Normal approximation, clipped to [0, 1].
    Normal,
    /// Wilson score interval.
    Wilson,
}

/// `proportion_confint(count, nobs, alpha, method)`.
pub fn proportion_confint(
    count: f64,
    nobs: f64,
    alpha: f64,
    method: OneSampleCi,
) -> Result<Interval, StatsError> {
    check(count, nobs, "count")?;
    let z = norm_ppf(1.0 - alpha / 2.0);
    let p = count / nobs;
    Ok(match method {
        OneSampleCi::Normal => {
            let h = z * (p * (1.0 - p) / nobs).sqrt();
            Interval {
                low: (p - h).clamp(0.0, 1.0),
                high: (p + h).clamp(0.0, 1.0),
            }
        }
        OneSampleCi::Wilson => {
            let z2 = z * z;
            let denom = 1.0 + z2 / nobs;
            let center = (p + z2 / (2.0 * nobs)) / denom;
            let dist = z * (p * (1.0 - p) / nobs + z2 / (4.0 * nobs * nobs)).sqrt() / denom;
            Interval {
                low: center - dist,
                high: center + dist,
            }
        }
    })
}

/// Interval method for `p1 - p2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffCi {
    /// Wald (unpooled normal approximation).
    Wald,
    /// Agresti-Caffo: one success and one failure added to each arm.
    AgrestiCaffo,
    /// Newcombe's hybrid score interval from two Wilson intervals.
    Newcombe,
}

/// `confint_proportions_2indep(c1, n1, c2, n2, method, compare="diff")`.
pub fn confint_diff(
    c1: f64,
    n1: f64,
    c2: f64,
    n2: f64,
    alpha: f64,
    method: DiffCi,
) -> Result<Interval, StatsError> {
    check_pair(c1, n1, c2, n2)?;
    let z = norm_ppf(1.0 - alpha / 2.0);
    let wald = |c1: f64, n1: f64, c2: f64, n2: f64| {
        let d = c1 / n1 - c2 / n2;
        let h = z * unpooled_se(c1, n1, c2, n2);
        Interval {
            low: d - h,
            high: d + h,
        }
    };
    Ok(match method {
        DiffCi::Wald => wald(c1, n1, c2, n2),
        DiffCi::AgrestiCaffo => wald(c1 + 1.0, n1 + 2.0, c2 + 1.0, n2 + 2.0),
        DiffCi::Newcombe => {
            let (p1, p2) = (c1 / n1, c2 / n2);
            let w1 = proportion_confint(c1, n1, alpha, OneSampleCi::Wilson)?;
            let w2 = proportion_confint(c2, n2, alpha, OneSampleCi::Wilson)?;
            let d = p1 - p2;
            Interval {
                low: d - ((p1 - w1.low).powi(2) + (w2.high - p2).powi(2)).sqrt(),
                high: d + ((w1.high - p1).powi(2) + (p2 - w2.low).powi(2)).sqrt(),
            }
        }
    })
}

/// CDF of the standard normal.
pub fn std_normal_cdf(z: f64) -> f64 {
    std_normal().cdf(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_as241_in_every_region() {
        // Reference values from CPython's statistics.NormalDist.inv_cdf.
        let cases = [
            (1e-300, -37.0470962993612),
            (1e-20, -9.262340089798405),
            (1e-12, -7.034483825301132),
            (1e-5, -4.2648907939228256),
            (0.02, -2.0537489106318225),
            (0.3, -0.5244005127080407),
            (0.5, 0.0),
            (0.975, 1.9599639845400536),
            (0.99999, 4.26489079392384),
        ];
        for (p, want) in cases {
            let got = norm_ppf(p);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "p={p}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn zero_trials_is_an_error() {
        assert!(proportions_ztest(0.0, 0.0, 1.0, 2.0).is_err());
    }
}
