//! Multiple-testing corrections of p-values, as
//! `statsmodels.stats.multitest.multipletests`: Holm's step-down
//! (family-wise error) and Benjamini-Hochberg (false discovery rate).
//! Adjusted p-values are in the input order and capped at 1; NaN inputs are
//! an error.

use super::StatsError;

/// Indexes of `p` in ascending order, after checking every p is in [0, 1].
fn ascending(p: &[f64]) -> Result<Vec<usize>, StatsError> {
    if p.iter().any(|v| v.is_nan() || !(0.0..=1.0).contains(v)) {
        return Err(StatsError::InvalidArgument {
            name: "p_values",
            reason: "every p-value must be in [0, 1]".into(),
        });
    }
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    Ok(idx)
}

/// Holm-Bonferroni adjusted p-values.
pub fn holm(p: &[f64]) -> Result<Vec<f64>, StatsError> {
    let idx = ascending(p)?;
    let m = p.len();
    let mut out = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in idx.iter().enumerate() {
        let adj = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(adj);
        out[i] = running;
    }
    Ok(out)
}

/// Benjamini-Hochberg adjusted p-values (q-values).
pub fn benjamini_hochberg(p: &[f64]) -> Result<Vec<f64>, StatsError> {
    let idx = ascending(p)?;
    let m = p.len();
    let mut out = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in idx.iter().enumerate().rev() {
        let adj = (p[i] * m as f64 / (rank + 1) as f64).min(1.0);
        running = running.min(adj);
        out[i] = running;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_statsmodels() {
        // statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.2], method=...)
        let p = [0.01, 0.04, 0.03, 0.2];
        let h = holm(&p).unwrap();
        let want_h = [0.04, 0.09, 0.09, 0.2];
        for (a, b) in h.iter().zip(want_h) {
            assert!((a - b).abs() < 1e-12, "{h:?}");
        }
        let q = benjamini_hochberg(&p).unwrap();
        let want_q = [
            0.04,
            0.053_333_333_333_333_33,
            0.053_333_333_333_333_33,
            0.2,
        ];
        for (a, b) in q.iter().zip(want_q) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        assert!(holm(&[f64::NAN]).is_err());
    }
}
