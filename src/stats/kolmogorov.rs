//! The distribution of the two-sided one-sample Kolmogorov statistic `D_n`
//! for finite `n` (`scipy.stats.kstwo`), and the one-sided Smirnov tail.
//!
//! The asymptotic two-sample KS p-value in scipy is `kstwo.sf(D, round(en))`,
//! so this is needed to reproduce it. The choice of algorithm per region of
//! `(n, x)` follows Simard & L'Ecuyer (2011), "Computing the Two-Sided
//! Kolmogorov-Smirnov Distribution", J. Stat. Software 39(11), as scipy does:
//!
//! * Ruben-Gambino closed forms near `x = 1/(2n)` and `x = 1 - 1/n`;
//! * `2 * smirnov(n, x)` for `x >= 0.5` (exact there) and in the far tail;
//! * Durbin's matrix method in the Marsaglia-Tsang-Wang form for small `n x^2`;
//! * Pomeranz's recursion for moderate `n x^2` and `n <= 140`;
//! * the Pelz-Good asymptotic series otherwise.
//!
//! `smirnov(n, x) = P(D+_n >= x)` is evaluated with the Birnbaum-Tingey sum,
//! every term in log space (all terms are positive, so there is no
//! cancellation); relative error is a few ulps times `log(n)`.

use statrs::function::factorial::ln_binomial;

const SCALE_EXP: i32 = 128;
const PI2: f64 = std::f64::consts::PI * std::f64::consts::PI;
const MIN_LOG: f64 = -708.0;

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// `P(D+_n >= x)`, the one-sided Smirnov survival function (scipy's
/// `special.smirnov(n, x)`). `n` must be positive.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    // Terms j = 0..=floor(n(1-x)); the last factor vanishes when x + j/n == 1
    // unless the exponent n-j is zero.
    let jmax = (nf * (1.0 - x)).floor() as u64;
    let mut logs = Vec::with_capacity(jmax as usize + 1);
    for j in 0..=jmax.min(n) {
        let jf = j as f64;
        let a = x + jf / nf;
        let b = 1.0 - a;
        let exp_b = (n - j) as f64;
        let log_b = if exp_b == 0.0 {
            0.0
        } else if b <= 0.0 {
            continue;
        } else {
            exp_b * b.ln()
        };
        let l = ln_binomial(n, j) + (jf - 1.0) * a.ln() + log_b;
        logs.push(l);
    }
    if logs.is_empty() {
        return 0.0;
    }
    let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    clip(x * sum * max.exp())
}

/// `P(D_n >= x)`: the survival function of the two-sided one-sample
/// Kolmogorov statistic, as `scipy.stats.kstwo.sf(x, n)`.
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    kolmogn(n, x, false)
}

/// `P(D_n <= x)`, as `scipy.stats.kstwo.cdf(x, n)`.
pub fn kstwo_cdf(n: u64, x: f64) -> f64 {
    kolmogn(n, x, true)
}

fn pick(cdf_value: f64, want_cdf: bool) -> f64 {
    if want_cdf {
        clip(cdf_value)
    } else {
        clip(1.0 - cdf_value)
    }
}

fn kolmogn(n: u64, x: f64, want_cdf: bool) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return if want_cdf { 1.0 } else { 0.0 };
    }
    if x <= 0.0 {
        return if want_cdf { 0.0 } else { 1.0 };
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben-Gambino: P(D_n <= x) = n!/n^n (2t-1)^n for 1/2n <= x <= 1/n.
        if t <= 0.5 {
            return if want_cdf { 0.0 } else { 1.0 };
        }
        let prob = if n <= 140 {
            let mut p = 1.0;
            for i in 1..=n {
                p *= i as f64 / nf * (2.0 * t - 1.0);
            }
            p
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return pick(prob, want_cdf);
    }
    if t >= nf - 1.0 {
        let sf = 2.0 * (1.0 - x).powf(nf);
        return pick(1.0 - sf, want_cdf);
    }
    if x >= 0.5 {
        let sf = 2.0 * smirnov_sf(n, x);
        return pick(1.0 - sf, want_cdf);
    }
    let nxx = t * x;
    if n <= 140 {
        if nxx <= 0.754693 {
            return pick(durbin_mtw_cdf(n, x), want_cdf);
        }
        if nxx <= 4.0 {
            return pick(pomeranz_cdf(n, x), want_cdf);
        }
        let sf = 2.0 * smirnov_sf(n, x);
        return pick(1.0 - sf, want_cdf);
    }
    if !want_cdf {
        if nxx >= 370.0 {
            return 0.0;
        }
        if nxx >= 2.2 {
            return clip(2.0 * smirnov_sf(n, x));
        }
    }
    let cdf = if nxx >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_mtw_cdf(n, x)
    } else {
        pelz_good_cdf(n, x)
    };
    pick(cdf, want_cdf)
}

/// `log(n! / n^n)` by Stirling's series with `n log n` removed up front.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // Bernoulli-number coefficients B_{2j}/(2j(2j-1)), j = 8..1.
    const C: [f64; 8] = [
        -2.955_065_359_477_124e-2,
        6.410_256_410_256_41e-3,
        -1.917_526_917_526_917_5e-3,
        8.417_508_417_508_417e-4,
        -5.952_380_952_380_952e-4,
        7.936_507_936_507_937e-4,
        -2.777_777_777_777_778e-3,
        8.333_333_333_333_333e-2,
    ];
    let rn = 1.0 / n;
    let u = rn / n;
    let poly = C.iter().fold(0.0, |acc, c| acc * u + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// Durbin's matrix algorithm (Marsaglia, Tsang & Wang 2003) for
/// `P(D_n <= d)`: the k-th diagonal entry of `n!/n^n H^n`, with `H` of size
/// `2k-1` and exponent tracking to avoid overflow.
fn durbin_mtw_cdf(n: u64, d: f64) -> f64 {
    let nf = n as f64;
    let nd = nf * d;
    if d >= 1.0 {
        return 1.0;
    }
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v = vec![0.0; m];
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] = (1.0 - h.powi(j as i32)) * fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;

    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }

    let matmul = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; m * m];
        for i in 0..m {
            for l in 0..m {
                let a_il = a[i * m + l];
                if a_il == 0.0 {
                    continue;
                }
                let row = &b[l * m..(l + 1) * m];
                let dst = &mut out[i * m..(i + 1) * m];
                for (o, bv) in dst.iter_mut().zip(row) {
                    *o += a_il * bv;
                }
            }
        }
        out
    };

    let big = 2f64.powi(SCALE_EXP);
    let mut pw: Vec<f64> = (0..m * m)
        .map(|i| if i % (m + 1) == 0 { 1.0 } else { 0.0 })
        .collect();
    let mut expnt: i32 = 0;
    let mut h_expnt: i32 = 0;
    let mut nn = n;
    while nn > 0 {
        if nn % 2 == 1 {
            pw = matmul(&pw, &hm);
            expnt += h_expnt;
        }
        hm = matmul(&hm, &hm);
        h_expnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > big {
            for e in hm.iter_mut() {
                *e /= big;
            }
            h_expnt += SCALE_EXP;
        }
        nn /= 2;
    }
    let mut p = pw[(k - 1) * m + (k - 1)];
    let small = 2f64.powi(-SCALE_EXP);
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < small {
            p *= big;
            expnt -= SCALE_EXP;
        }
    }
    if expnt != 0 {
        p *= 2f64.powi(expnt);
    }
    clip(p)
}

/// Pomeranz (1974) recursion for `P(D_n <= x)`: `2n+1` convolutions of a row
/// vector with truncated Poisson-like weights, keeping only the band of
/// non-zero entries and rescaling to avoid underflow.
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let n_i = n as i64;
    let nf = n as f64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf: i64 = if f > 0.0 { 1 } else { 0 };
    let roundf: i64 = if f > 0.5 { 1 } else { 0 };
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gp = vec![0.0; npwrs];
    let mut g2p = vec![0.0; npwrs];
    let mut g12p = vec![0.0; npwrs];
    gp[0] = 1.0;
    g2p[0] = 1.0;
    g12p[0] = 1.0;
    let (a, b, c) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        let mf = m as f64;
        gp[m] = gp[m - 1] * a / mf;
        g2p[m] = g2p[m - 1] * b / mf;
        g12p[m] = g12p[m - 1] * c / mf;
    }
    let bounds = |i: i64| -> (i64, i64) {
        let (j1, j2) = if i == 0 {
            (-ll - ceilf - 1, ll + ceilf - 1)
        } else {
            let half = (i + 1) / 2;
            if (i + 1) % 2 == 0 {
                if half == n_i + 1 {
                    (n_i - ll - ceilf - 1, n_i + ll + ceilf - 1)
                } else {
                    (half - 1 - ll - roundf - 1, half + ll - 1 + ceilf - 1)
                }
            } else {
                (half - 1 - ll - 1, half + ll + roundf - 1)
            }
        };
        ((j1 + 2).max(0), j2.min(n_i))
    };
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s): (i64, i64) = (0, 0);
    let mut expnt: i32 = 0;
    let small = 2f64.powi(-SCALE_EXP);
    let big = 2f64.powi(SCALE_EXP);
    let (mut j1, _) = bounds(0);
    for i in 1..(2 * n_i + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|e| *e = 0.0);
        let (nj1, nj2) = bounds(i);
        j1 = nj1;
        let j2 = nj2;
        let pw = if i == 1 || i == 2 * n_i + 1 {
            &gp
        } else if i % 2 == 1 {
            &g2p
        } else {
            &g12p
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let ln2 = ln2 as usize;
            let off = (k1 - v0s) as usize;
            let conv_start = (j1 - k1) as usize;
            let conv_len = (j2 - j1 + 1).max(0) as usize;
            // Full convolution of v0[off..off+ln2] with pw[..ln2] (both cut
            // at the end of their buffers), entries conv_start..+conv_len.
            let a_len = ln2.min(npwrs - off);
            let b_len = ln2.min(npwrs);
            let full_len = a_len + b_len - 1;
            for (dst, ci) in (conv_start..(conv_start + conv_len).min(full_len)).enumerate() {
                let mut s = 0.0;
                let lo = (ci + 1).saturating_sub(b_len);
                for q in lo..=ci.min(a_len - 1) {
                    s += v0[off + q] * pw[ci - q];
                }
                v1[dst] = s;
            }
            let mx = v1.iter().cloned().fold(0.0, f64::max);
            if mx > 0.0 && mx < small {
                v1.iter_mut().for_each(|e| *e *= big);
                expnt -= SCALE_EXP;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1[(n_i - v1s) as usize];
    for m in 1..=n {
        if ans.abs() > big {
            ans *= small;
            expnt += SCALE_EXP;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans *= 2f64.powi(expnt);
    }
    clip(ans)
}

/// Pelz & Good (1976) approximation of `P(D_n <= x)`: the Li-Chien /
/// Korolyuk expansion `K0 + K1/sqrt(n) + K2/n + K3/n^1.5` rewritten with
/// Jacobi theta identities so it converges fast for small `z = x sqrt(n)`.
fn pelz_good_cdf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let z = nf.sqrt() * x;
    let z2 = z * z;
    let z3 = z2 * z;
    let z4 = z2 * z2;
    let z6 = z4 * z2;
    let qlog = -PI2 / 8.0 / z2;
    if qlog < MIN_LOG {
        return 0.0;
    }
    let q = qlog.exp();
    let pi4 = PI2 * PI2;
    let pi6 = pi4 * PI2;
    let k1a = -z2;
    let k1b = PI2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * PI2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = PI2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z4 * z4;

    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / std::f64::consts::PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qp = q.powf(8.0 * kk as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (ki, c) in k.iter_mut().zip(coeffs) {
            *ki = *ki * qp + c;
        }
    }
    let sqrt2pi = (2.0 * std::f64::consts::PI).sqrt();
    let denom = [z, 6.0 * z4, 72.0 * z6 * z, 6480.0 * z4 * z6];
    for (ki, d) in k.iter_mut().zip(denom) {
        *ki = *ki * q * sqrt2pi / d;
    }
    let q2 = (-PI2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let mut extra2 = 0.0;
    let mut extra3 = 0.0;
    for kk in (1..=maxk).rev() {
        let kf = kk as f64;
        let ksq = kf * kf;
        let qk = q2.powf(ksq);
        extra2 += ksq * qk;
        let kpi = std::f64::consts::PI * kf;
        extra3 += (sqrt3z + kpi) * (sqrt3z - kpi) * ksq * qk;
    }
    k[2] += extra2 * PI2 * sqrt2pi / (-36.0 * z3);
    k[3] += extra3 * PI2 * sqrt2pi / (216.0 * z6);
    let mut sum = 0.0;
    for (i, ki) in k.iter().enumerate() {
        sum += ki / nf.powf(i as f64 / 2.0);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smirnov_known_values() {
        // n = 1: P(D+ >= x) = 1 - x.
        assert!((smirnov_sf(1, 0.3) - 0.7).abs() < 1e-15);
        assert_eq!(smirnov_sf(5, 0.0), 1.0);
        assert_eq!(smirnov_sf(5, 1.0), 0.0);
    }

    #[test]
    fn kstwo_cdf_and_sf_are_complements() {
        for &(n, x) in &[(3u64, 0.4), (20, 0.1), (55, 0.14), (150, 0.09), (500, 0.03)] {
            let s = kstwo_sf(n, x) + kstwo_cdf(n, x);
            assert!((s - 1.0).abs() < 1e-9, "n={n} x={x} sum={s}");
        }
    }

    #[test]
    fn kstwo_n1_is_uniform_tail() {
        // D_1 = max(U, 1-U) so P(D_1 >= x) = 2(1-x) for x in [1/2, 1].
        assert!((kstwo_sf(1, 0.75) - 0.5).abs() < 1e-12);
    }
}
