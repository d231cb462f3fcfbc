//! Always-valid confidence intervals for a difference in means, so an A/B
//! test can be looked at after every batch without inflating the error rate.
//!
//! Method: the asymptotic confidence sequence of Waudby-Smith, Arnold, Wu,
//! Lindon & Ramdas, "Time-uniform central limit theory and asymptotic
//! confidence sequences" (Annals of Statistics, 2024; arXiv:2103.06476),
//! with its Gaussian-mixture boundary. For an estimate `theta_t` from `t`
//! observations with (plug-in) per-observation standard deviation `sigma_t`,
//!
//! ```text
//! theta_t ± sigma_t * sqrt( 2 (t rho² + 1) / (t² rho²) * ln( sqrt(t rho² + 1) / alpha ) )
//! ```
//!
//! covers the true value at every `t` simultaneously with probability
//! `1 - alpha` (asymptotically). `rho` tunes where the sequence is tightest;
//! the paper's choice for tightness at `t*` observations is
//! `rho² = (-2 ln alpha + ln(-2 ln alpha + 1)) / t*`.
//!
//! For two independent arms A and B we take `theta = mean(A) - mean(B)`,
//! `t = n_A + n_B` and `sigma² = t (s_A² / n_A + s_B² / n_B)` (sample
//! variances, ddof 1): the variance of the difference expressed per
//! observation, so the boundary above applies with `t` counting every unit
//! in the experiment, as experimentation platforms that cite the paper do.
//!
//! The always-valid p-value is the smallest `alpha` whose sequence, at the
//! same `rho`, excludes 0: `min(1, sqrt(t rho² + 1) exp(-theta² t² rho² /
//! (2 sigma² (t rho² + 1))))`. Stopping when it falls below `alpha` keeps
//! the type-I error at `alpha` however often one looks.
//!
//! Each arm needs two values; `alpha` must lie in (0, 1) and `t*` be
//! positive; a zero variance in both arms gives a zero-width interval.

use super::StatsError;
use super::summary::Moments;

/// The tuning `rho²` that makes the sequence tightest at `t_star` observations.
pub fn optimal_rho2(alpha: f64, t_star: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    (l + (l + 1.0).ln()) / t_star
}

/// Half-width of the Gaussian-mixture sequence for `t` observations with
/// per-observation standard deviation `sigma`.
pub fn half_width(sigma: f64, t: f64, rho2: f64, alpha: f64) -> f64 {
    let a = t * rho2 + 1.0;
    sigma * (2.0 * a / (t * t * rho2) * (a.sqrt() / alpha).ln()).sqrt()
}

/// An always-valid interval for `mean(A) - mean(B)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SequentialInterval {
    /// `mean(A) - mean(B)`.
    pub difference: f64,
    /// Lower end of the confidence sequence at this time.
    pub cs_low: f64,
    /// Upper end.
    pub cs_high: f64,
    /// Always-valid p-value for "no difference".
    pub always_valid_p: f64,
    /// `n_A + n_B`.
    pub t: u64,
}

/// The confidence sequence for `mean(a) - mean(b)` from two arms' running
/// moments, at level `1 - alpha`, tuned to be tightest at `t_star` units.
pub fn mean_difference(
    a: &Moments,
    b: &Moments,
    alpha: f64,
    t_star: f64,
) -> Result<SequentialInterval, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidArgument {
            name: "alpha",
            reason: format!("{alpha} is not in (0, 1)"),
        });
    }
    if !(t_star > 0.0 && t_star.is_finite()) {
        return Err(StatsError::InvalidArgument {
            name: "t_star",
            reason: format!("{t_star} is not a positive number"),
        });
    }
    for (m, name) in [(a, "a"), (b, "b")] {
        if m.count < 2 {
            return Err(StatsError::InvalidArgument {
                name,
                reason: format!("{} values; an arm needs at least 2", m.count),
            });
        }
    }
    let (na, nb) = (a.count as f64, b.count as f64);
    let t = na + nb;
    let sigma2 = t * (a.variance() / na + b.variance() / nb);
    let sigma = sigma2.sqrt();
    let rho2 = optimal_rho2(alpha, t_star);
    let w = half_width(sigma, t, rho2, alpha);
    // Taken between the shifted means, so a large common offset (epoch
    // timestamps) does not cost the difference its digits.
    let difference = a.mean_difference(b);
    let always_valid_p = if sigma2 == 0.0 {
        if difference == 0.0 { 1.0 } else { 0.0 }
    } else {
        let s = t * rho2 + 1.0;
        (s.sqrt() * (-difference * difference * t * t * rho2 / (2.0 * sigma2 * s)).exp()).min(1.0)
    };
    Ok(SequentialInterval {
        difference,
        cs_low: difference - w,
        cs_high: difference + w,
        always_valid_p,
        t: a.count + b.count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::proportions::norm_ppf;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn moments(xs: &[f64]) -> Moments {
        let mut m = Moments::default();
        xs.iter().for_each(|x| m.push(*x));
        m
    }

    #[test]
    fn boundary_matches_a_python_evaluation() {
        // alpha 0.05, t* = t = 1000, sigma 2; values computed in Python from the formula.
        let rho2 = optimal_rho2(0.05, 1000.0);
        assert!((rho2 - 0.007_936_154_6).abs() < 1e-10, "{rho2}");
        let w = half_width(2.0, 1000.0, rho2, 0.05);
        assert!((w - 0.191_963_471_7).abs() < 1e-9, "{w}");
        // Wider than the fixed-sample 95% interval at the same t (2 * 1.96 / sqrt(1000)).
        assert!(w > norm_ppf(0.975) * 2.0 / 1000f64.sqrt());
    }

    #[test]
    fn p_value_and_interval_agree() {
        let a = moments(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = moments(&[0.0, 1.0, 0.5, 1.5, 0.2]);
        let r = mean_difference(&a, &b, 0.05, 11.0).unwrap();
        assert!(r.cs_low < r.difference && r.difference < r.cs_high);
        // 0 is outside the 1 - alpha sequence exactly when p < alpha.
        for alpha in [0.01, 0.05, 0.2, 0.5] {
            let s = mean_difference(&a, &b, alpha, 11.0).unwrap();
            let p = {
                let rho2 = optimal_rho2(alpha, 11.0);
                let sigma2 = 11.0 * (a.variance() / 6.0 + b.variance() / 5.0);
                let st = 11.0 * rho2 + 1.0;
                (st.sqrt() * (-s.difference.powi(2) * 121.0 * rho2 / (2.0 * sigma2 * st)).exp())
                    .min(1.0)
            };
            assert_eq!(s.cs_low > 0.0, p < alpha, "alpha {alpha}");
        }
        assert!(mean_difference(&a, &moments(&[1.0]), 0.05, 10.0).is_err());
        assert!(mean_difference(&a, &b, 1.5, 10.0).is_err());
        assert!(mean_difference(&a, &b, 0.05, 0.0).is_err());
        let flat = mean_difference(&moments(&[1.0, 1.0]), &moments(&[1.0, 1.0]), 0.05, 4.0);
        assert_eq!(flat.unwrap().always_valid_p, 1.0);
    }

    /// Arms around 1e9 with noise of about 1: the difference is the exact
    /// difference of the means (integer arithmetic), not the difference of
    /// two means each rounded (or accumulated) at 1e9.
    #[test]
    fn large_offset_difference_keeps_its_digits() {
        // 1e9 + k / 1024 is exact; the arms' noise is a fixed pattern.
        let ka: Vec<i64> = (0..5_000).map(|i| (i * 7919 % 2048) - 1024).collect();
        let kb: Vec<i64> = (0..4_000).map(|i| (i * 104_729 % 2048) - 1000).collect();
        let m = |ks: &[i64]| {
            moments(
                &ks.iter()
                    .map(|k| 1e9 + *k as f64 / 1024.0)
                    .collect::<Vec<_>>(),
            )
        };
        let exact = |ks: &[i64]| ks.iter().sum::<i64>() as f64 / (ks.len() as f64 * 1024.0);
        let want = exact(&ka) - exact(&kb);
        let r = mean_difference(&m(&ka), &m(&kb), 0.05, 9_000.0).unwrap();
        assert!(
            (r.difference - want).abs() <= 1e-12 * want.abs(),
            "{} vs {want}",
            r.difference
        );
    }

    /// Time-uniform coverage: under no difference, the share of experiments
    /// whose sequence ever excludes 0 (looking after every pair of units,
    /// from 50 units on) stays near alpha, where a fixed-sample interval
    /// looked at as often would exclude 0 in most of them.
    #[test]
    fn peeking_keeps_the_error_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261126);
        let (na, nb) = (
            Normal::new(1.0, 1.0).unwrap(),
            Normal::new(1.0, 2.0).unwrap(),
        );
        let (runs, steps, alpha) = (400, 2000, 0.05);
        let (mut cs_errors, mut fixed_errors) = (0, 0);
        for _ in 0..runs {
            let (mut a, mut b) = (Moments::default(), Moments::default());
            let (mut cs_hit, mut fixed_hit) = (false, false);
            for step in 0..steps {
                a.push(na.sample(&mut rng));
                b.push(nb.sample(&mut rng));
                if step < 25 {
                    continue;
                }
                let r = mean_difference(&a, &b, alpha, 2.0 * steps as f64).unwrap();
                cs_hit |= r.cs_low > 0.0 || r.cs_high < 0.0;
                let se = (a.variance() / a.count as f64 + b.variance() / b.count as f64).sqrt();
                fixed_hit |= r.difference.abs() > norm_ppf(1.0 - alpha / 2.0) * se;
            }
            cs_errors += usize::from(cs_hit);
            fixed_errors += usize::from(fixed_hit);
        }
        let (cs_rate, fixed_rate) = (
            cs_errors as f64 / runs as f64,
            fixed_errors as f64 / runs as f64,
        );
        assert!(cs_rate <= 0.08, "confidence sequence error rate {cs_rate}");
        assert!(fixed_rate > 0.2, "fixed interval error rate {fixed_rate}");
    }
}
