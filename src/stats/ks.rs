//! Two-sample Kolmogorov-Smirnov test, as `scipy.stats.ks_2samp` (1.17).
//!
//! **Statistic.** Both samples are sorted; each empirical CDF is evaluated at
//! every point of `concat(sort(x), sort(y))` with "side=right" semantics, so
//! ties are handled exactly. `D+ = max(F_x - F_y)`, `D- = max(F_y - F_x)`;
//! the two-sided statistic is the larger, with `statistic_sign = -1` when the
//! `D-` side wins. The location is the first data point (in that concatenated
//! order) where the maximum is reached.
//!
//! **p-value.** `method = auto` is exact when `max(n1, n2) <= 10000`, else
//! asymptotic. Exact p-values count lattice paths (Hodges 1958): two-sided
//! with the closed form for `n1 == n2` and with Viehmann's (2021) stable
//! "outer" recursion otherwise; one-sided with the closed form for equal
//! sizes and by counting paths that cross the boundary otherwise. On the exact
//! path `D` is snapped to the lattice `h / lcm(n1, n2)`. If the exact count
//! overflows `f64`, the test falls back to the asymptotic p-value (as scipy
//! does, with a warning there; `KsResult::method` tells here). Asymptotic
//! two-sided p-values use the finite-`n` Kolmogorov distribution
//! `kstwo.sf(D, round(n1 n2 / (n1 + n2)))`; one-sided ones use Hodges'
//! approximation. p is clipped to `[0, 1]`.
//!
//! **Edge cases.** An empty sample is [`StatsError::EmptySample`]; NaN is
//! [`StatsError::NanInput`] (filter missing values before calling). With
//! one value in each sample the asymptotic two-sided p-value is NaN, as in
//! scipy (`kstwo` with `n = round(0.5) = 0`); the exact p-value is defined.

use super::kolmogorov::kstwo_sf;
use super::{Alternative, StatsError, check_sample as check};

/// Sample size above which `auto` switches from exact to asymptotic.
pub const MAX_AUTO_EXACT_N: usize = 10_000;

/// How the p-value is computed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KsMethod {
    /// Exact when both samples have at most 10,000 values, else asymptotic.
    #[default]
    Auto,
    /// Exact path counting (falls back to asymptotic on overflow).
    Exact,
    /// Asymptotic distribution.
    Asymp,
}

impl std::str::FromStr for KsMethod {
    type Err = StatsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "asymp" | "asymptotic" => Ok(Self::Asymp),
            other => Err(StatsError::InvalidArgument {
                name: "method",
                reason: format!("`{other}` is not one of auto, exact, asymp"),
            }),
        }
    }
}

/// Result of [`ks_2samp`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KsResult {
    /// The KS statistic (D, D+ or D- depending on the alternative).
    pub statistic: f64,
    /// The p-value in `[0, 1]`.
    pub p_value: f64,
    /// The data value at which the statistic is reached.
    pub statistic_location: f64,
    /// `+1` when `F_x - F_y` gives the statistic, `-1` when `F_y - F_x` does.
    pub statistic_sign: i8,
    /// The method that actually produced the p-value (`Exact` or `Asymp`).
    pub method: KsMethod,
    /// Size of the first sample.
    pub n1: usize,
    /// Size of the second sample.
    pub n2: usize,
}

/// Two-sample KS test of `x` against `y`. See the module docs.
pub fn ks_2samp(
    x: &[f64],
    y: &[f64],
    alternative: Alternative,
    method: KsMethod,
) -> Result<KsResult, StatsError> {
    check(x, "x")?;
    check(y, "y")?;
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    xs.sort_unstable_by(f64::total_cmp);
    ys.sort_unstable_by(f64::total_cmp);
    ks_2samp_sorted(&xs, &ys, alternative, method)
}

/// As [`ks_2samp`], for samples that are already sorted ascending (no NaN).
pub fn ks_2samp_sorted(
    xs: &[f64],
    ys: &[f64],
    alternative: Alternative,
    method: KsMethod,
) -> Result<KsResult, StatsError> {
    check(xs, "x")?;
    check(ys, "y")?;
    let (n1, n2) = (xs.len(), ys.len());
    let ext = extremes(xs, ys);
    let (d, location, sign) = match alternative {
        Alternative::TwoSided => {
            if ext.min_s > ext.max_s {
                (ext.min_s, ext.min_loc, -1)
            } else {
                (ext.max_s, ext.max_loc, 1)
            }
        }
        Alternative::Less => (ext.min_s, ext.min_loc, -1),
        Alternative::Greater => (ext.max_s, ext.max_loc, 1),
    };
    let (statistic, p_value, used) = p_value(d, n1, n2, alternative, method);
    Ok(KsResult {
        statistic,
        p_value,
        statistic_location: location,
        statistic_sign: sign,
        method: used,
        n1,
        n2,
    })
}

struct Extremes {
    /// `max(F_y - F_x)` (scipy's `minS`, i.e. minus the minimum of `F_x - F_y`).
    min_s: f64,
    min_loc: f64,
    /// `max(F_x - F_y)`.
    max_s: f64,
    max_loc: f64,
}

/// One merge-like pass over both sorted samples. The ECDF difference is
/// evaluated at every point of `concat(xs, ys)`; the first arg-min / arg-max
/// in that order is reported, as numpy's argmin/argmax would.
fn extremes(xs: &[f64], ys: &[f64]) -> Extremes {
    let (n1, n2) = (xs.len() as f64, ys.len() as f64);
    // Evaluate at all points of xs, then all points of ys, tracking the
    // first extreme in each part. Counting "<= v" in a sorted slice is a
    // monotone pointer walk because the query points are sorted too.
    let mut best_max = (f64::NEG_INFINITY, 0.0);
    let mut best_min = (f64::INFINITY, 0.0);
    for part in [xs, ys] {
        let (mut i, mut j) = (0usize, 0usize);
        for &v in part {
            while i < xs.len() && xs[i] <= v {
                i += 1;
            }
            while j < ys.len() && ys[j] <= v {
                j += 1;
            }
            let diff = i as f64 / n1 - j as f64 / n2;
            if diff > best_max.0 {
                best_max = (diff, v);
            }
            if diff < best_min.0 {
                best_min = (diff, v);
            }
        }
    }
    Extremes {
        min_s: -best_min.0,
        min_loc: best_min.1,
        max_s: best_max.0,
        max_loc: best_max.1,
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The two-sided asymptotic p-value of a KS distance `d` between samples of
/// sizes `n1` and `n2` (the path `ks_2samp` takes with `method = asymp`),
/// for statistics computed elsewhere, e.g. on quantile sketches.
pub fn asymp_two_sided_p(d: f64, n1: usize, n2: usize) -> f64 {
    p_value(d, n1, n2, Alternative::TwoSided, KsMethod::Asymp).1
}

/// Returns `(statistic, p, method used)`; the statistic is snapped to the
/// lattice when the exact path succeeds.
fn p_value(
    d: f64,
    n1: usize,
    n2: usize,
    alternative: Alternative,
    method: KsMethod,
) -> (f64, f64, KsMethod) {
    let (n1u, n2u) = (n1 as u64, n2 as u64);
    let g = gcd(n1u, n2u);
    let mut mode = match method {
        KsMethod::Auto if n1.max(n2) <= MAX_AUTO_EXACT_N => KsMethod::Exact,
        KsMethod::Auto => KsMethod::Asymp,
        m => m,
    };
    if mode == KsMethod::Exact && (n1u / g) as f64 >= i64::MAX as f64 / (n2u / g) as f64 {
        mode = KsMethod::Asymp;
    }
    if mode == KsMethod::Exact
        && let Some((d_exact, p)) = exact(n1u, n2u, g, d, alternative)
    {
        return (d_exact, p.clamp(0.0, 1.0), KsMethod::Exact);
    }
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = m * n / (m + n);
    let p = match alternative {
        Alternative::TwoSided => kstwo_sf(en.round_ties_even() as u64, d),
        _ => {
            let z = en.sqrt() * d;
            let expt = -2.0 * z * z - 2.0 * z * (m + 2.0 * n) / (m * n * (m + n)).sqrt() / 3.0;
            expt.exp()
        }
    };
    (d, p.clamp(0.0, 1.0), KsMethod::Asymp)
}

/// Exact p-value, or `None` when the computation leaves the range of f64.
fn exact(n1: u64, n2: u64, g: u64, d: f64, alternative: Alternative) -> Option<(f64, f64)> {
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Some((d, 1.0));
    }
    let p = match alternative {
        Alternative::TwoSided if n1 == n2 => prob_outside_square(n1, h),
        Alternative::TwoSided => outer_prob_inside(n1, n2, g, h),
        _ if n1 == n2 => {
            let n = n1 as f64;
            (0..h).fold(1.0, |acc, j| acc * (n - j as f64) / (n + j as f64 + 1.0))
        }
        _ => {
            let paths = count_paths_outside(n1, n2, g, h)?;
            let total = binom(n1 + n2, n1);
            if !total.is_finite() || !paths.is_finite() || paths > total {
                return None;
            }
            paths / total
        }
    };
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    Some((d, p))
}

/// `P(D_{n,n} >= h/n)` for two samples of equal size: the alternating sum of
/// binomial ratios evaluated in Horner form to avoid cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let nf = n as f64;
    let mut p = 0.0;
    let mut k = n / h;
    loop {
        let kh = (k * h) as f64;
        let mut p1 = 1.0;
        for j in 0..h {
            let jf = j as f64;
            p1 = (nf - kh - jf) * p1 / (nf + kh + jf + 1.0);
        }
        p = p1 * (1.0 - p);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * p
}

/// Proportion of lattice paths from (0,0) to (m,n) that leave the band
/// `|x/m - y/n| < h/lcm`, computed directly as `1 - inside` column by column
/// (Viehmann 2021, arXiv:2102.08037) so small p-values keep their precision.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as f64, (n / g) as f64);
    let hf = h as f64;
    let n_i = n as i64;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((hf / mg).ceil() as i64).min(n_i + 1);
    let mut curlen = maxj - minj;
    let len_a = ((2 * maxj + 2) as usize).min(n as usize + 1);
    let mut a = vec![1.0f64; len_a.max(n as usize + 1)];
    for e in a.iter_mut().take(maxj as usize) {
        *e = 0.0;
    }
    for i in 1..=m {
        let fi = i as f64;
        let (last_minj, last_len) = (minj, curlen);
        minj = (((ng * fi - hf) / mg).floor() as i64 + 1).max(0).min(n_i);
        maxj = (((ng * fi + hf) / mg).ceil() as i64).min(n_i + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = (jj + minj) as f64;
            val = (a[(jj + minj - last_minj) as usize] * fi + val * j) / (fi + j);
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if last_len > curlen {
            let start = (maxj - minj) as usize;
            let end = (start + (last_len - curlen) as usize).min(a.len());
            a[start..end].iter_mut().for_each(|e| *e = 1.0);
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// Binomial coefficient in f64 (inf when it overflows), as `scipy.special.binom`
/// rounded to an integer.
fn binom(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    if k < 64 {
        let mut r = 1.0f64;
        for i in 1..=k {
            r = r * (n - k + i) as f64 / i as f64;
        }
        return r.round();
    }
    statrs::function::factorial::ln_binomial(n, k).exp().round()
}

/// Number of lattice paths from (0,0) to (m,n) that reach the line
/// `m y <= n x - h g` (one-sided exact test, Hodges 1958). `None` on overflow.
fn count_paths_outside(m: u64, n: u64, g: u64, h: u64) -> Option<f64> {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    // Python's floor division on non-negative operands here, except mg - h
    // which may be negative: use signed arithmetic.
    let lxj = n as i64 + (mg as i64 - h as i64).div_euclid(mg as i64);
    if lxj <= 0 {
        return Some(binom(m + n, n));
    }
    let lxj = lxj as usize;
    let xj: Vec<u64> = (0..lxj as u64).map(|j| (h + mg * j).div_ceil(ng)).collect();
    let mut b = vec![0.0f64; lxj];
    b[0] = 1.0;
    for j in 1..lxj {
        let mut bj = binom(xj[j] + j as u64, j as u64);
        if !bj.is_finite() {
            return None;
        }
        for i in 0..j {
            let c = binom(xj[j] - xj[i] + (j - i) as u64, (j - i) as u64);
            bj -= c * b[i];
        }
        if !bj.is_finite() {
            return None;
        }
        b[j] = bj;
    }
    let mut num = 0.0;
    for j in 0..lxj {
        let c = binom((m - xj[j]) + (n - j as u64), n - j as u64);
        let term = b[j] * c;
        if !term.is_finite() {
            return None;
        }
        num += term;
    }
    Some(num.round())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn p_in_unit_interval_and_two_sided_symmetric(
            x in proptest::collection::vec(-5.0f64..5.0, 1..60),
            y in proptest::collection::vec(-5.0f64..5.0, 1..60),
            exact in any::<bool>(),
        ) {
            let m = if exact { KsMethod::Exact } else { KsMethod::Asymp };
            let a = ks_2samp(&x, &y, Alternative::TwoSided, m).unwrap();
            let b = ks_2samp(&y, &x, Alternative::TwoSided, m).unwrap();
            // scipy's asymptotic two-sided p uses kstwo with n = round(n1 n2 / (n1 + n2)),
            // which is 0 (undefined, NaN) only for two samples of one value each.
            if m == KsMethod::Asymp && x.len() == 1 && y.len() == 1 {
                prop_assert!(a.p_value.is_nan());
                return Ok(());
            }
            prop_assert!((0.0..=1.0).contains(&a.p_value));
            prop_assert!((a.statistic - b.statistic).abs() < 1e-12);
            prop_assert!((a.p_value - b.p_value).abs() <= 1e-9 * a.p_value.max(1e-300));
            for alt in [Alternative::Less, Alternative::Greater] {
                let r = ks_2samp(&x, &y, alt, m).unwrap();
                prop_assert!((0.0..=1.0).contains(&r.p_value));
                prop_assert!(r.statistic <= a.statistic + 1e-12);
            }
        }
    }

    #[test]
    fn empty_and_nan_are_errors() {
        assert!(matches!(
            ks_2samp(&[], &[1.0], Alternative::TwoSided, KsMethod::Auto),
            Err(StatsError::EmptySample { name: "x" })
        ));
        assert!(matches!(
            ks_2samp(&[1.0], &[f64::NAN], Alternative::TwoSided, KsMethod::Auto),
            Err(StatsError::NanInput { name: "y" })
        ));
    }

    #[test]
    fn disjoint_samples_give_d_one() {
        let r = ks_2samp(
            &[1.0, 2.0, 3.0],
            &[4.0, 5.0],
            Alternative::TwoSided,
            KsMethod::Exact,
        )
        .unwrap();
        assert_eq!(r.statistic, 1.0);
        // All C(5,2) = 10 orderings; only the two extreme ones give D = 1.
        assert!((r.p_value - 0.2).abs() < 1e-12);
    }
}
