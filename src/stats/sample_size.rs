//! Power and sample size for two independent groups with the normal
//! approximation, as statsmodels' `NormalIndPower` and
//! `proportion_effectsize` (Cohen's h).
//!
//! The power function keeps both tails of the two-sided test, so the solved
//! sample size matches statsmodels' root (the textbook closed form, which
//! drops the far tail, is about 2.5e-6 too large). `nobs1` is found by
//! bisection on a bracket to 1e-12 relative. `ratio = nobs2 / nobs1`.

use super::noncentral_t::nct_cdf;
use super::proportions::{norm_ppf, norm_sf};
use super::t_test::t_quantile;
use super::{Alternative, StatsError};

/// Cohen's h for proportions: `2 asin(sqrt(p1)) - 2 asin(sqrt(p2))`.
pub fn proportion_effectsize(p1: f64, p2: f64) -> f64 {
    2.0 * p1.sqrt().asin() - 2.0 * p2.sqrt().asin()
}

/// Power of the two-sample z-test for standardized effect `effect` with
/// `nobs1` in group one and `nobs1 * ratio` in group two.
pub fn normal_ind_power(
    effect: f64,
    nobs1: f64,
    alpha: f64,
    ratio: f64,
    alternative: Alternative,
) -> f64 {
    let nobs = if ratio > 0.0 {
        1.0 / (1.0 / nobs1 + 1.0 / (nobs1 * ratio))
    } else {
        nobs1
    };
    let shift = effect * nobs.sqrt();
    match alternative {
        Alternative::TwoSided => {
            let crit = norm_ppf(1.0 - alpha / 2.0);
            norm_sf(crit - shift) + norm_sf(crit + shift)
        }
        Alternative::Greater => norm_sf(norm_ppf(1.0 - alpha) - shift),
        Alternative::Less => norm_sf(norm_ppf(1.0 - alpha) + shift),
    }
}

/// Sample size of group one for the target power (`NormalIndPower().solve_power`).
pub fn normal_ind_solve_nobs1(
    effect: f64,
    alpha: f64,
    power: f64,
    ratio: f64,
    alternative: Alternative,
) -> Result<f64, StatsError> {
    check(effect, alpha, power, ratio)?;
    solve_increasing(
        |n| normal_ind_power(effect, n, alpha, ratio, alternative) - power,
        1e-10,
    )
}

/// Power of the two-sample t-test (`TTestIndPower().power`): noncentral t
/// with `df = nobs1 + nobs2 - 2` and noncentrality `effect * sqrt(nobs)`,
/// `nobs = 1 / (1/nobs1 + 1/nobs2)`.
pub fn ttest_ind_power(
    effect: f64,
    nobs1: f64,
    alpha: f64,
    ratio: f64,
    alternative: Alternative,
) -> f64 {
    let nobs2 = nobs1 * ratio;
    let df = nobs1 + nobs2 - 2.0;
    let nobs = 1.0 / (1.0 / nobs1 + 1.0 / nobs2);
    let nc = effect * nobs.sqrt();
    match alternative {
        Alternative::TwoSided => {
            let crit = t_quantile(1.0 - alpha / 2.0, df);
            (1.0 - nct_cdf(crit, df, nc)) + nct_cdf(-crit, df, nc)
        }
        Alternative::Greater => 1.0 - nct_cdf(t_quantile(1.0 - alpha, df), df, nc),
        Alternative::Less => nct_cdf(-t_quantile(1.0 - alpha, df), df, nc),
    }
}

/// Sample size of group one for the target power (`TTestIndPower().solve_power`).
pub fn ttest_ind_solve_nobs1(
    effect: f64,
    alpha: f64,
    power: f64,
    ratio: f64,
    alternative: Alternative,
) -> Result<f64, StatsError> {
    check(effect, alpha, power, ratio)?;
    // Below two observations in all the t distribution has no df.
    let floor = (2.0 / (1.0 + ratio)).max(1.0) + 1e-9;
    solve_increasing(
        |n| ttest_ind_power(effect, n, alpha, ratio, alternative) - power,
        floor,
    )
}

fn check(effect: f64, alpha: f64, power: f64, ratio: f64) -> Result<(), StatsError> {
    if effect == 0.0 || effect.is_nan() {
        return Err(StatsError::InvalidArgument {
            name: "effect_size",
            reason: "must be non-zero: no sample size detects a zero effect".into(),
        });
    }
    let valid = alpha > 0.0 && alpha < power && power < 1.0 && ratio > 0.0;
    if !valid {
        return Err(StatsError::InvalidArgument {
            name: "alpha/power/ratio",
            reason: format!(
                "need 0 < alpha < power < 1 and ratio > 0 (alpha {alpha}, power {power}, ratio {ratio})"
            ),
        });
    }
    Ok(())
}

/// Root of `f`, increasing in `n`, on `[lo, inf)`: the bracket doubles until
/// `f` changes sign, then bisection runs to 1e-13 relative.
fn solve_increasing(f: impl Fn(f64) -> f64, lo: f64) -> Result<f64, StatsError> {
    let (mut lo, mut hi) = (lo, lo.max(1.0) * 2.0);
    while f(hi) < 0.0 {
        lo = hi;
        hi *= 2.0;
        if hi > 1e18 {
            return Err(StatsError::InvalidArgument {
                name: "effect_size",
                reason: "the target power is not reachable in this direction".into(),
            });
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < 0.0 {
            lo = mid
        } else {
            hi = mid
        }
        if (hi - lo) <= 1e-13 * hi {
            break;
        }
    }
    Ok(0.5 * (lo + hi))
}
