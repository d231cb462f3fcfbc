//! CDF of the noncentral t distribution, by Lenth's algorithm AS 243 (1989):
//! a Poisson-weighted series of incomplete beta functions, summed until the
//! error bound falls below 1e-14. Negative arguments use
//! `F(t; df, d) = 1 - F(-t; df, -d)`. Used for the power of t-tests.

use statrs::function::beta::beta_reg;
use statrs::function::gamma::ln_gamma;

use super::proportions::norm_sf;

/// `P(T <= t)` for `T` noncentral t with `df` degrees of freedom and
/// noncentrality `delta`.
pub fn nct_cdf(t: f64, df: f64, delta: f64) -> f64 {
    if t.is_nan() || df.is_nan() || delta.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t == f64::INFINITY {
        return 1.0;
    }
    if t == f64::NEG_INFINITY {
        return 0.0;
    }
    let (negative, tt, del) = if t < 0.0 {
        (true, -t, -delta)
    } else {
        (false, t, delta)
    };
    let mut tnc = 0.0;
    let x = tt * tt / (tt * tt + df);
    if x > 0.0 {
        let lambda = del * del;
        let mut p = 0.5 * (-0.5 * lambda).exp();
        let mut q = (2.0 / std::f64::consts::PI).sqrt() * p * del;
        let mut s = 0.5 - p;
        let mut a = 0.5;
        let b = 0.5 * df;
        let rxb = (1.0 - x).powf(b);
        let albeta = std::f64::consts::PI.sqrt().ln() + ln_gamma(b) - ln_gamma(0.5 + b);
        let mut xodd = beta_reg(a, b, x);
        let mut godd = 2.0 * rxb * (a * x.ln() - albeta).exp();
        let mut xeven = 1.0 - rxb;
        let mut geven = b * x * rxb;
        tnc = p * xodd + q * xeven;
        let mut en = 1.0;
        while en <= 10_000.0 {
            a += 1.0;
            xodd -= godd;
            xeven -= geven;
            godd *= x * (a + b - 1.0) / a;
            geven *= x * (a + b - 0.5) / (a + 0.5);
            p *= lambda / (2.0 * en);
            q *= lambda / (2.0 * en + 1.0);
            s -= p;
            en += 1.0;
            tnc += p * xodd + q * xeven;
            let errbd = 2.0 * s * (xodd - godd);
            if errbd.abs() <= 1e-14 && en > lambda / 2.0 {
                break;
            }
        }
    }
    tnc += norm_sf(del);
    let tnc = tnc.clamp(0.0, 1.0);
    if negative { 1.0 - tnc } else { tnc }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::t_test::t_sf;

    #[test]
    fn zero_noncentrality_is_students_t() {
        for &(t, df) in &[(0.5, 3.0), (2.0, 10.5), (-1.3, 7.0)] {
            let want = 1.0 - t_sf(t, df);
            assert!((nct_cdf(t, df, 0.0) - want).abs() < 1e-12, "t={t} df={df}");
        }
    }
}
