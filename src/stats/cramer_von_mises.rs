//! The two-sample Cramér-von Mises test, as
//! `scipy.stats.cramervonmises_2samp` (scipy 1.17.1).
//!
//! **Statistic** (Anderson 1962, "On the distribution of the two-sample
//! Cramér-von Mises criterion", eqs. 9-10). With `r` the ranks in the pooled
//! sample (mid-ranks for ties) and both samples sorted,
//! `U = n sum_i (r(x_i) - i)^2 + m sum_j (r(y_j) - j)^2` and
//! `T = U / (n m (n + m)) - (4 n m - 1) / (6 (n + m))`. `U` is a multiple of
//! 1/4; it is summed here in exact integer arithmetic.
//!
//! **p-value.**
//! * `exact`: the null distribution of `U` over all `C(n+m, n)` splits,
//!   counted with the recursion of Xiao, Gordon & Yakovlev (2006, J. Stat.
//!   Soft. 17(8), Algorithm 1) on frequency tables of
//!   `sum (a v - b u)^2` along lattice paths (`a = lcm/n`, `b = lcm/m`);
//!   `p = #{paths with value >= zeta} / C(n+m, n)`, where `zeta` is `U` on
//!   that integer scale, computed with scipy's float expression and numpy's
//!   floor division. Counts are exact (`u128`); an exact test whose
//!   `C(n+m, n)` does not fit is [`StatsError::InvalidArgument`] (scipy
//!   would count with Python integers, for hours). Ties do not change the
//!   exact distribution (as scipy: conservative for discrete data).
//! * `asymptotic`: `T` is standardised with its exact mean and variance
//!   (Anderson's eqs. 11 and 14) to `tn = 1/6 + (T - E T) / sqrt(45 Var T)`
//!   and `p = max(0, 1 - F(tn))` with `F` the limiting distribution of the
//!   one-sample statistic (scipy's `_cdf_cvm_inf`, Csörgő & Faraway 1996,
//!   eq. 1.2): `F(x) = sum_k Γ(k+1/2)/(Γ(1/2) k!) ... ` in the form
//!   `sum_k Γ(k+1/2)/k! / (π^1.5 sqrt x) sqrt(4k+1) e^{-q} K_{1/4}(q)`,
//!   `q = (4k+1)^2 / (16 x)`, summed term by term until a term is below
//!   `1e-7` (that term included), as scipy does. For `tn < 0.003`, p = 1.
//!   `e^{-q} K_{1/4}(q)` is computed from the integral
//!   `∫_0^∞ exp(-q (1 + cosh t)) cosh(t/4) dt` by the trapezoidal rule,
//!   which for this analytic, even integrand converges exponentially in
//!   the step (relative error below 1e-20; see [`scaled_bessel_k`]).
//! * `auto`: exact when both samples have at most 20 values, else
//!   asymptotic.
//!
//! **Accuracy of large statistics.** `1 - F(tn)` is a difference: for
//! `tn` beyond about 2 it is below 1e-5 and carries the absolute rounding
//! of the sum (about 1e-16), in scipy as here; for `tn` beyond about 6 both
//! return rounding noise or 0.
//!
//! **Edge cases.** An empty sample is [`StatsError::EmptySample`], NaN is
//! [`StatsError::NanInput`]. A sample of one value gives NaN statistic and
//! p-value, as scipy (which warns that the sample is too small).
//!
//! [`cramervonmises_2samp_sorted`] is the fast path for a reference kept
//! sorted: one merge pass, no sort of the reference, the same result.

use super::anderson::is_sorted;
use super::{StatsError, check_sample as check};

/// How the p-value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CvmMethod {
    /// Exact when both samples have at most [`MAX_AUTO_EXACT_N`] values.
    #[default]
    Auto,
    /// The exact null distribution.
    Exact,
    /// The limiting distribution.
    Asymptotic,
}

impl std::str::FromStr for CvmMethod {
    type Err = StatsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "asymptotic" => Ok(Self::Asymptotic),
            other => Err(StatsError::InvalidArgument {
                name: "method",
                reason: format!("`{other}` is not one of auto, exact, asymptotic"),
            }),
        }
    }
}

/// Largest sample size for which `auto` is exact (scipy's rule).
pub const MAX_AUTO_EXACT_N: usize = 20;

/// Result of [`cramervonmises_2samp`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CvmResult {
    /// The statistic `T`.
    pub statistic: f64,
    /// The p-value.
    pub p_value: f64,
    /// The method that produced the p-value (`Exact` or `Asymptotic`).
    pub method: CvmMethod,
}

/// Two-sample Cramér-von Mises test of `x` against `y` (module docs).
pub fn cramervonmises_2samp(
    x: &[f64],
    y: &[f64],
    method: CvmMethod,
) -> Result<CvmResult, StatsError> {
    check(x, "x")?;
    check(y, "y")?;
    let mut xs = x.to_vec();
    xs.sort_unstable_by(f64::total_cmp);
    let mut ys = y.to_vec();
    ys.sort_unstable_by(f64::total_cmp);
    from_sorted(&xs, &ys, method)
}

/// As [`cramervonmises_2samp`] with `x` a reference already sorted
/// ascending (not re-sorted) and `y` unsorted. A reference that is not
/// sorted is [`StatsError::InvalidArgument`].
pub fn cramervonmises_2samp_sorted(
    reference_sorted: &[f64],
    current: &[f64],
    method: CvmMethod,
) -> Result<CvmResult, StatsError> {
    check(reference_sorted, "x")?;
    check(current, "y")?;
    if !is_sorted(reference_sorted) {
        return Err(StatsError::InvalidArgument {
            name: "x",
            reason: "the reference must be sorted ascending".into(),
        });
    }
    let mut ys = current.to_vec();
    ys.sort_unstable_by(f64::total_cmp);
    from_sorted(reference_sorted, &ys, method)
}

/// `sum_i (2 r(x_i) - 2 i)^2` for each sample, exactly: twice the mid-rank
/// of a run of `c` tied values after `below` smaller ones is
/// `2 below + c + 1`.
fn rank_sums(xs: &[f64], ys: &[f64]) -> (u128, u128) {
    let (mut i, mut j) = (0usize, 0usize);
    let (mut sx, mut sy) = (0u128, 0u128);
    while i < xs.len() || j < ys.len() {
        let z = match (xs.get(i), ys.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        let (i0, j0) = (i, j);
        while i < xs.len() && xs[i] == z {
            i += 1;
        }
        while j < ys.len() && ys[j] == z {
            j += 1;
        }
        let (cx, cy) = (i - i0, j - j0);
        let twice_rank = (2 * (i0 + j0) + cx + cy + 1) as i128;
        for p in i0..i {
            let d = twice_rank - 2 * (p as i128 + 1);
            sx += (d * d) as u128;
        }
        for p in j0..j {
            let d = twice_rank - 2 * (p as i128 + 1);
            sy += (d * d) as u128;
        }
    }
    (sx, sy)
}

fn from_sorted(xs: &[f64], ys: &[f64], method: CvmMethod) -> Result<CvmResult, StatsError> {
    let (nx, ny) = (xs.len(), ys.len());
    let method = match method {
        CvmMethod::Auto if nx.max(ny) > MAX_AUTO_EXACT_N => CvmMethod::Asymptotic,
        CvmMethod::Auto => CvmMethod::Exact,
        m => m,
    };
    if nx < 2 || ny < 2 {
        return Ok(CvmResult {
            statistic: f64::NAN,
            p_value: f64::NAN,
            method,
        });
    }
    let (sx, sy) = rank_sums(xs, ys);
    // The sums of squares of (r - i), multiples of 1/4.
    let (qx, qy) = (sx as f64 / 4.0, sy as f64 / 4.0);
    let u = nx as f64 * qx + ny as f64 * qy;
    let k = (nx * ny) as u128;
    let n = (nx + ny) as u128;
    let t = u / (k * n) as f64 - (4 * k - 1) as f64 / (6 * n) as f64;
    let p_value = match method {
        CvmMethod::Exact => exact_p(u, nx as u64, ny as u64)?,
        _ => asymptotic_p(t, nx as u128, ny as u128),
    };
    Ok(CvmResult {
        statistic: t,
        p_value,
        method,
    })
}

/// numpy's float floor division (`npy_divmod`), which the exact p-value's
/// threshold `zeta` goes through in scipy.
fn np_floor_divide(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f64.copysign(a / b)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `C(n, k)` when it fits in `u128`.
fn binomial(n: u64, k: u64) -> Option<u128> {
    let k = k.min(n - k) as u128;
    let mut c: u128 = 1;
    for i in 1..=k {
        // c * num / i is C(n-k+i, i), an integer; with g = gcd(c, i), i / g
        // divides num, so the only overflow is a result that does not fit.
        let num = n as u128 - k + i;
        let g = gcd128(c, i);
        c = (c / g).checked_mul(num / (i / g))?;
    }
    Some(c)
}

fn gcd128(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A frequency table: sorted distinct values with their counts.
type Table = Vec<(u64, u128)>;

/// The union of two tables, counts of equal values added.
fn merge(a: &Table, b: &Table) -> Table {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The exact p-value of `U = u` for sizes `m` (x) and `n` (y): scipy's
/// `_pval_cvm_2samp_exact`.
fn exact_p(u: f64, m: u64, n: u64) -> Result<f64, StatsError> {
    let combinations = binomial(m + n, m).ok_or_else(|| StatsError::InvalidArgument {
        name: "method",
        reason: format!("the exact p-value for sizes {m} and {n} needs more than 128-bit counts"),
    })?;
    let lcm = m / gcd(m, n) * n;
    let (a, b) = (lcm / m, lcm / n);
    let mn = m * n;
    // scipy: lcm**2 * (m + n) * (6 * s - mn * (4 * mn - 1)) // (6 * mn**2),
    // an int64 times a float, floor-divided as floats.
    let scale = (lcm as u128 * lcm as u128 * (m + n) as u128) as f64;
    let inner = 6.0 * u - (mn as u128 * (4 * mn as u128 - 1)) as f64;
    let zeta = np_floor_divide(scale * inner, (6 * mn as u128 * mn as u128) as f64);
    // gs[v] is the table of g_{u-1, v}; a virtual row before u = 0 holds
    // the empty path at v = 0.
    let mut gs: Vec<Table> = vec![Vec::new(); m as usize + 1];
    gs[0] = vec![(0, 1)];
    for uu in 0..=n {
        let mut next = Vec::with_capacity(gs.len());
        let mut tmp: Table = Vec::new();
        for (v, g) in gs.iter().enumerate() {
            tmp = merge(&tmp, g);
            let d = (a * v as u64) as i128 - (b * uu) as i128;
            let add = (d * d) as u64;
            for e in tmp.iter_mut() {
                e.0 += add;
            }
            next.push(tmp.clone());
        }
        gs = next;
    }
    let hits: u128 = gs[m as usize]
        .iter()
        .filter(|(v, _)| *v as f64 >= zeta)
        .map(|(_, c)| c)
        .sum();
    Ok(hits as f64 / combinations as f64)
}

/// The asymptotic p-value of `T = t` (scipy's `_pval_cvm_2samp_asymptotic`).
fn asymptotic_p(t: f64, nx: u128, ny: u128) -> f64 {
    let n = nx + ny;
    let k = nx * ny;
    let nf = n as f64;
    let et = (1.0 + 1.0 / nf) / 6.0;
    // scipy evaluates vt in Python integers, then divides.
    let num =
        (n as i128 + 1) * (4 * (k * n) as i128 - 3 * (nx * nx + ny * ny) as i128 - 2 * k as i128);
    let den = 45 * n * n * 4 * k;
    let vt = num as f64 / den as f64;
    let tn = 1.0 / 6.0 + (t - et) / (45.0 * vt).sqrt();
    if tn >= 0.003 {
        (1.0 - cdf_cvm_inf(tn)).max(0.0)
    } else {
        1.0
    }
}

/// The limiting CDF of the one-sample Cramér-von Mises statistic (scipy's
/// `_cdf_cvm_inf`): the series of Csörgő & Faraway, summed until a term is
/// below 1e-7.
pub fn cdf_cvm_inf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    // Γ(k + 1/2) / Γ(k + 1), by its recurrence from Γ(1/2) = sqrt(π).
    let mut ratio = std::f64::consts::PI.sqrt();
    let pi_1_5 = std::f64::consts::PI.powf(1.5);
    let mut total = 0.0;
    let mut k = 0u64;
    loop {
        if k > 0 {
            ratio *= (k as f64 - 0.5) / k as f64;
        }
        let u = ratio / (pi_1_5 * x.sqrt());
        let y = (4 * k + 1) as f64;
        let q = y * y / (16.0 * x);
        let z = u * y.sqrt() * scaled_bessel_k(0.25, q);
        total += z;
        if z.abs() < 1e-7 {
            return total;
        }
        k += 1;
    }
}

/// `exp(-x) K_nu(x)` for `x > 0`: the trapezoidal rule on
/// `∫_0^∞ exp(-x (1 + cosh t)) cosh(nu t) dt`, stopped once past the
/// integrand's peak and below 1e-18 of the sum.
///
/// The integrand is even and analytic, so the rule converges
/// exponentially: with step `h` the relative error is about
/// `exp(-2π d / h + x (1 - cos d))` for any strip half-width `d < π/2`.
/// With `h = min(0.1, 0.5 / sqrt(x))` that is below `exp(-49)` for small
/// `x` (d = π/4) and about `exp(-2π² / (h² x)) = exp(-79)` for large `x`
/// (d = 2π / (h x)), where the peak at 0 narrows like `1 / sqrt(x)`.
pub fn scaled_bessel_k(nu: f64, x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return if x == 0.0 { f64::INFINITY } else { f64::NAN };
    }
    let h = 0.1f64.min(0.5 / x.sqrt());
    let f = |t: f64| (-x * (1.0 + t.cosh())).exp() * (nu * t).cosh();
    let mut sum = f(0.0) / 2.0;
    let mut i = 1u32;
    loop {
        let t = i as f64 * h;
        let v = f(t);
        sum += v;
        // Past the peak (x sinh t > nu tanh(nu t) once x cosh t > 1 + nu t)
        // the integrand falls faster than exponentially.
        if (v <= 1e-18 * sum && x * t.cosh() > 1.0 + nu * t) || i > 100_000 {
            return sum * h;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    /// `scipy.special.kv(0.25, q) * exp(-q)` at small, moderate and large q.
    #[test]
    fn bessel_k_matches_scipy() {
        for (q, kv) in [
            (1e-4, 21.351915864398094),
            (0.01, 6.165741264139234),
            (0.5, 0.9603163249318826),
            (1.0, 0.4307397744485814),
            (5.0, 0.0037123027320318403),
            (20.0, 5.750002072403683e-10),
            (100.0, 4.65807645150984e-45),
        ] {
            let got = scaled_bessel_k(0.25, q) * q.exp();
            assert!(close(got, kv, 1e-13), "K(0.25, {q}) = {got}, scipy {kv}");
        }
        // Large arguments, against `scipy.special.kve(0.25, x) = exp(x) K(x)`.
        for (x, kve) in [(300.0, 0.07233755399641476), (350.0, 0.0669745421164061)] {
            let got = scaled_bessel_k(0.25, x) * x.exp() * x.exp();
            assert!(
                close(got, kve, 1e-13),
                "kve(0.25, {x}) = {got}, scipy {kve}"
            );
        }
    }

    /// scipy's `_cdf_cvm_inf` at a few points.
    #[test]
    fn limiting_cdf_matches_scipy() {
        for (x, want) in [
            (0.01, 5.864432809868958e-06),
            (0.05, 0.12371906895864906),
            (0.2, 0.7325295694592229),
            (0.5, 0.9601667824343908),
            (1.0, 0.9975395478198642),
            (2.0, 0.9999872192637342),
        ] {
            let got = cdf_cvm_inf(x);
            assert!(close(got, want, 1e-12), "F({x}) = {got}, scipy {want}");
        }
    }

    #[test]
    fn floor_divide_is_numpys() {
        assert_eq!(np_floor_divide(7.0, 2.0), 3.0);
        assert_eq!(np_floor_divide(-7.0, 2.0), -4.0);
        assert_eq!(np_floor_divide(7.5, -2.0), -4.0);
        assert_eq!(np_floor_divide(6.0, 3.0), 2.0);
    }

    /// `C(n, k)` by Pascal's rule on one row, with checked additions.
    fn binomial_slow(n: u64, k: u64) -> Option<u128> {
        let k = k as usize;
        let mut row = vec![0u128; k + 1];
        row[0] = 1;
        for i in 1..=n as usize {
            for j in (1..=k.min(i)).rev() {
                row[j] = row[j].checked_add(row[j - 1])?;
            }
        }
        Some(row[k])
    }

    #[test]
    fn binomials() {
        assert_eq!(binomial(40, 20), Some(137_846_528_820));
        assert_eq!(binomial(5, 0), Some(1));
        assert_eq!(binomial(130, 65), binomial_slow(130, 65));
        assert!(binomial(200, 100).is_none());
    }

    /// scipy 1.17.1: `cramervonmises_2samp([1,2,2,3,4,5,5,6], [2,3,3,4,7,8,9,9.5,10])`
    /// exact and asymptotic, and the NaN of a one-value sample.
    #[test]
    fn matches_scipy_on_a_tied_pair() {
        let x = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0];
        let y = [2.0, 3.0, 3.0, 4.0, 7.0, 8.0, 9.0, 9.5, 10.0];
        let e = cramervonmises_2samp(&x, &y, CvmMethod::Auto).unwrap();
        assert_eq!(e.method, CvmMethod::Exact);
        let a = cramervonmises_2samp(&x, &y, CvmMethod::Asymptotic).unwrap();
        assert_eq!(e.statistic, a.statistic);
        assert!(close(e.statistic, 0.33108660130718937, 1e-12), "{e:?}");
        assert!(close(e.p_value, 0.11941587823940765, 1e-12), "{e:?}");
        assert!(close(a.p_value, 0.11389233168157109, 1e-9), "{a:?}");
        let one = cramervonmises_2samp(&[1.0], &y, CvmMethod::Auto).unwrap();
        assert!(one.statistic.is_nan() && one.p_value.is_nan());
        assert!(matches!(
            cramervonmises_2samp(&[], &y, CvmMethod::Auto),
            Err(StatsError::EmptySample { .. })
        ));
    }

    #[test]
    fn sorted_path_equals_general() {
        let reference: Vec<f64> = (0..300).map(|i| ((i * 37) % 41) as f64 * 0.25).collect();
        let current: Vec<f64> = (0..90)
            .map(|i| ((i * 13) % 29) as f64 * 0.25 + 0.5)
            .collect();
        let mut sorted = reference.clone();
        sorted.sort_by(f64::total_cmp);
        for method in [CvmMethod::Auto, CvmMethod::Asymptotic] {
            let a = cramervonmises_2samp(&reference, &current, method).unwrap();
            let b = cramervonmises_2samp_sorted(&sorted, &current, method).unwrap();
            assert_eq!(a, b);
        }
        let small =
            cramervonmises_2samp(&reference[..12], &current[..15], CvmMethod::Auto).unwrap();
        let mut s = reference[..12].to_vec();
        s.sort_by(f64::total_cmp);
        let fast = cramervonmises_2samp_sorted(&s, &current[..15], CvmMethod::Auto).unwrap();
        assert_eq!(small, fast);
        assert!(cramervonmises_2samp_sorted(&reference, &current, CvmMethod::Auto).is_err());
    }

    /// The exact distribution sums to one: p at the smallest possible U is 1.
    #[test]
    fn exact_p_of_the_minimum_is_one() {
        let r = cramervonmises_2samp(&[1.0, 3.0, 5.0], &[2.0, 4.0, 6.0], CvmMethod::Exact).unwrap();
        assert_eq!(r.p_value, 1.0, "{r:?}");
        let r = cramervonmises_2samp(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], CvmMethod::Exact).unwrap();
        // The most extreme split of 3 + 3: 2 of the 20 splits are as extreme.
        assert!(close(r.p_value, 0.1, 1e-15), "{r:?}");
    }
}
