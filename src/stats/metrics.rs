//! Model quality metrics per variant, as scikit-learn 1.9: accuracy,
//! precision / recall / F1 (binary with `pos_label = 1`, or macro, micro and
//! weighted averages over the sorted union of labels, `zero_division = 0`),
//! confusion matrix, ROC AUC (ties in scores count 1/2; NaN with a single
//! class), log loss (probabilities clipped to `[eps, 1 - eps]`), Brier score
//! (`pos_label = 1`), MAE, MSE, RMSE, R² (`force_finite = True`: 1 or 0 when
//! the labels are constant; NaN below two samples) and the mean error
//! `mean(y_pred - y_true)` (bias, numpy; not in scikit-learn). Class labels
//! are integers, regression values floats; mismatched lengths and empty
//! input are errors.

use super::StatsError;

fn same_len(a: usize, b: usize) -> Result<(), StatsError> {
    if a == 0 {
        return Err(StatsError::EmptySample { name: "y_true" });
    }
    if a != b {
        return Err(StatsError::InvalidArgument {
            name: "y_pred",
            reason: format!("{b} predictions for {a} labels"),
        });
    }
    Ok(())
}

/// Fraction of exact matches.
pub fn accuracy(y_true: &[i64], y_pred: &[i64]) -> Result<f64, StatsError> {
    same_len(y_true.len(), y_pred.len())?;
    Ok(y_true.iter().zip(y_pred).filter(|(a, b)| a == b).count() as f64 / y_true.len() as f64)
}

/// Sorted union of the labels in both vectors.
pub fn labels(y_true: &[i64], y_pred: &[i64]) -> Vec<i64> {
    let mut l: Vec<i64> = y_true.iter().chain(y_pred).copied().collect();
    l.sort_unstable();
    l.dedup();
    l
}

/// Confusion matrix over `labels` (rows: true, columns: predicted).
pub fn confusion_matrix(
    y_true: &[i64],
    y_pred: &[i64],
    labels: &[i64],
) -> Result<Vec<Vec<u64>>, StatsError> {
    same_len(y_true.len(), y_pred.len())?;
    let mut m = vec![vec![0u64; labels.len()]; labels.len()];
    for (t, p) in y_true.iter().zip(y_pred) {
        if let (Ok(i), Ok(j)) = (labels.binary_search(t), labels.binary_search(p)) {
            m[i][j] += 1;
        }
    }
    Ok(m)
}

/// How per-class scores are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// Only the class `pos_label = 1`.
    Binary,
    /// Unweighted mean over classes.
    Macro,
    /// From global counts of true/false positives and negatives.
    Micro,
    /// Mean over classes weighted by their support.
    Weighted,
}

/// Precision, recall and F1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1 score.
    pub f1: f64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn prf_counts(tp: u64, fp: u64, fn_: u64) -> Prf {
    Prf {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
    }
}

/// Precision, recall and F1 with `average`.
pub fn precision_recall_f1(
    y_true: &[i64],
    y_pred: &[i64],
    average: Average,
) -> Result<Prf, StatsError> {
    same_len(y_true.len(), y_pred.len())?;
    let count = |class: i64| {
        let mut c = (0u64, 0u64, 0u64, 0u64); // tp, fp, fn, support
        for (t, p) in y_true.iter().zip(y_pred) {
            match (*t == class, *p == class) {
                (true, true) => c.0 += 1,
                (false, true) => c.1 += 1,
                (true, false) => c.2 += 1,
                _ => {}
            }
            if *t == class {
                c.3 += 1;
            }
        }
        c
    };
    let classes = labels(y_true, y_pred);
    Ok(match average {
        Average::Binary => {
            let (tp, fp, fn_, _) = count(1);
            prf_counts(tp, fp, fn_)
        }
        Average::Micro => {
            let (mut tp, mut fp, mut fn_) = (0, 0, 0);
            for &c in &classes {
                let k = count(c);
                tp += k.0;
                fp += k.1;
                fn_ += k.2;
            }
            prf_counts(tp, fp, fn_)
        }
        Average::Macro | Average::Weighted => {
            let mut acc = (0.0, 0.0, 0.0);
            let mut total_w = 0.0;
            for &c in &classes {
                let k = count(c);
                let s = prf_counts(k.0, k.1, k.2);
                let w = if average == Average::Macro {
                    1.0
                } else {
                    k.3 as f64
                };
                acc.0 += w * s.precision;
                acc.1 += w * s.recall;
                acc.2 += w * s.f1;
                total_w += w;
            }
            let d = if total_w == 0.0 { 1.0 } else { total_w };
            Prf {
                precision: acc.0 / d,
                recall: acc.1 / d,
                f1: acc.2 / d,
            }
        }
    })
}

/// Area under the ROC curve of scores for the positive class 1.
pub fn roc_auc(y_true: &[i64], score: &[f64]) -> Result<f64, StatsError> {
    same_len(y_true.len(), score.len())?;
    if score.iter().any(|s| s.is_nan()) {
        return Err(StatsError::NanInput { name: "y_score" });
    }
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_unstable_by(|&a, &b| score[a].total_cmp(&score[b]));
    let (mut rank_sum_pos, mut n_pos) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if y_true[k] == 1 {
                rank_sum_pos += avg;
                n_pos += 1.0;
            }
        }
        i = j + 1;
    }
    let n_neg = y_true.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return Ok(f64::NAN);
    }
    Ok((rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// ROC AUC of positive-class scores `pos` against negative-class scores
/// `neg`, with DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988):
/// the structural components `V10_i` (share of negatives below positive
/// `i`, ties half) and `V01_j` (share of positives above negative `j`)
/// give `var = s²(V10) / m + s²(V01) / n` (sample variances, ddof 1).
/// Returns `(auc, variance)`; NaN for both without two scores per class.
pub fn auc_delong(pos: &[f64], neg: &[f64]) -> (f64, f64) {
    let (m, n) = (pos.len(), neg.len());
    if m < 2 || n < 2 || pos.iter().chain(neg).any(|v| v.is_nan()) {
        return (f64::NAN, f64::NAN);
    }
    let mut p = pos.to_vec();
    let mut q = neg.to_vec();
    p.sort_unstable_by(f64::total_cmp);
    q.sort_unstable_by(f64::total_cmp);
    // (# values below x, # values equal to x) in a sorted slice.
    let below_equal = |sorted: &[f64], x: f64| {
        let lo = sorted.partition_point(|v| *v < x);
        let hi = sorted.partition_point(|v| *v <= x);
        (lo as f64, (hi - lo) as f64)
    };
    let v10: Vec<f64> = p
        .iter()
        .map(|x| {
            let (b, e) = below_equal(&q, *x);
            (b + 0.5 * e) / n as f64
        })
        .collect();
    let v01: Vec<f64> = q
        .iter()
        .map(|y| {
            let (b, e) = below_equal(&p, *y);
            (m as f64 - b - e + 0.5 * e) / m as f64
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64], mu: f64| {
        v.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / (v.len() - 1) as f64
    };
    let auc = mean(&v10);
    let variance = var(&v10, auc) / m as f64 + var(&v01, mean(&v01)) / n as f64;
    (auc, variance)
}

/// F1 of the positive class from confusion counts, with its delta-method
/// variance under multinomial sampling of `n = tp + fp + fn + tn` pairs:
/// with `a = tp / n`, `b = (fp + fn) / n`, `F1 = 2a / (2a + b)` and
/// `var = 4 a b (a + b) / (n (2a + b)^4)`. Returns `(f1, variance)`; NaN
/// for both when there is no positive prediction nor label.
pub fn f1_delta(tp: u64, fp: u64, fn_: u64, tn: u64) -> (f64, f64) {
    let n = (tp + fp + fn_ + tn) as f64;
    let (a, b) = (tp as f64 / n, (fp + fn_) as f64 / n);
    let d = 2.0 * a + b;
    if n == 0.0 || d == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    (2.0 * a / d, 4.0 * a * b * (a + b) / (n * d.powi(4)))
}

/// Binary cross-entropy of `P(y = 1)` scores.
pub fn log_loss(y_true: &[i64], prob: &[f64]) -> Result<f64, StatsError> {
    same_len(y_true.len(), prob.len())?;
    let eps = f64::EPSILON;
    let total: f64 = y_true
        .iter()
        .zip(prob)
        .map(|(y, p)| {
            let p = p.clamp(eps, 1.0 - eps);
            if *y == 1 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    Ok(total / y_true.len() as f64)
}

/// Brier score of `P(y = 1)` scores: the mean of `(prob - [y == 1])²`, as
/// `sklearn.metrics.brier_score_loss` with `pos_label = 1` (its binary form
/// is halved over the two columns, which is the same mean). Like
/// [`log_loss`], probabilities are not checked against `[0, 1]` (scikit-learn
/// rejects values outside) and a NaN propagates into the result.
pub fn brier_score(y_true: &[i64], prob: &[f64]) -> Result<f64, StatsError> {
    same_len(y_true.len(), prob.len())?;
    let total: f64 = y_true
        .iter()
        .zip(prob)
        .map(|(y, p)| {
            let d = p - if *y == 1 { 1.0 } else { 0.0 };
            d * d
        })
        .sum();
    Ok(total / y_true.len() as f64)
}

/// Regression errors.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RegressionErrors {
    /// Mean absolute error.
    pub mae: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
}

/// MAE, MSE and RMSE.
pub fn regression_errors(y_true: &[f64], y_pred: &[f64]) -> Result<RegressionErrors, StatsError> {
    same_len(y_true.len(), y_pred.len())?;
    let n = y_true.len() as f64;
    let (mut abs, mut sq) = (0.0, 0.0);
    for (t, p) in y_true.iter().zip(y_pred) {
        let d = t - p;
        abs += d.abs();
        sq += d * d;
    }
    Ok(RegressionErrors {
        mae: abs / n,
        mse: sq / n,
        rmse: (sq / n).sqrt(),
    })
}

/// Coefficient of determination `1 - SS_res / SS_tot`, as
/// `sklearn.metrics.r2_score` with its default `force_finite = True`: when
/// `y_true` is constant (`SS_tot = 0`) it is 1.0 if every prediction is
/// exact and 0.0 otherwise. With a single sample it is NaN, as scikit-learn
/// (which also warns).
///
/// Constancy is decided by comparing the values, not by the rounding of
/// their mean: scikit-learn takes `SS_tot` around numpy's mean, which for a
/// constant such as 0.1 can be off by one ulp and make `SS_tot` a tiny
/// positive number and R² about -5e31; here that case is 0.0.
pub fn r2_score(y_true: &[f64], y_pred: &[f64]) -> Result<f64, StatsError> {
    same_len(y_true.len(), y_pred.len())?;
    if y_true.len() < 2 {
        return Ok(f64::NAN);
    }
    let ss_res: f64 = y_true
        .iter()
        .zip(y_pred)
        .map(|(t, p)| {
            let d = t - p;
            d * d
        })
        .sum();
    let ss_tot: f64 = if y_true.iter().all(|t| *t == y_true[0]) {
        0.0
    } else {
        let mean = y_true.iter().sum::<f64>() / y_true.len() as f64;
        y_true
            .iter()
            .map(|t| {
                let d = t - mean;
                d * d
            })
            .sum()
    };
    Ok(if ss_tot == 0.0 {
        if ss_res == 0.0 { 1.0 } else { 0.0 }
    } else {
        1.0 - ss_res / ss_tot
    })
}

/// Mean error `mean(y_pred - y_true)`: the bias of the predictions, positive
/// when the model over-predicts (numpy; scikit-learn has no such metric).
pub fn mean_error(y_true: &[f64], y_pred: &[f64]) -> Result<f64, StatsError> {
    same_len(y_true.len(), y_pred.len())?;
    let total: f64 = y_true.iter().zip(y_pred).map(|(t, p)| p - t).sum();
    Ok(total / y_true.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-12 * y.abs().max(1.0)
    }

    /// DeLong's AUC is the rank AUC; its variance is that of the O(mn)
    /// definition, and it covers the spread of AUC over repeated samples.
    #[test]
    fn delong_matches_its_definition_and_the_spread_of_auc() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pos: Vec<f64> = (0..60)
            .map(|_| (rng.random::<f64>() * 10.0).round() / 10.0 + 0.2)
            .collect();
        let neg: Vec<f64> = (0..45)
            .map(|_| (rng.random::<f64>() * 10.0).round() / 10.0)
            .collect();
        let (auc, var) = auc_delong(&pos, &neg);
        let y: Vec<i64> = pos.iter().map(|_| 1).chain(neg.iter().map(|_| 0)).collect();
        let s: Vec<f64> = pos.iter().chain(&neg).copied().collect();
        assert!(close(auc, roc_auc(&y, &s).unwrap()));
        let psi = |x: f64, y: f64| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        };
        let v10: Vec<f64> = pos
            .iter()
            .map(|x| neg.iter().map(|y| psi(*x, *y)).sum::<f64>() / 45.0)
            .collect();
        let v01: Vec<f64> = neg
            .iter()
            .map(|y| pos.iter().map(|x| psi(*x, *y)).sum::<f64>() / 60.0)
            .collect();
        let sv = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
        };
        assert!(close(var, sv(&v10) / 60.0 + sv(&v01) / 45.0));
        // Repeated samples of a fixed population: DeLong's variance of one
        // sample is close to the variance of AUC across samples.
        let mut aucs = Vec::new();
        let mut vars = Vec::new();
        for _ in 0..400 {
            let p: Vec<f64> = (0..80).map(|_| rng.random::<f64>() + 0.3).collect();
            let q: Vec<f64> = (0..80).map(|_| rng.random::<f64>()).collect();
            let (a, v) = auc_delong(&p, &q);
            aucs.push(a);
            vars.push(v);
        }
        let spread = sv(&aucs);
        let mean_var = vars.iter().sum::<f64>() / vars.len() as f64;
        assert!(
            (mean_var / spread - 1.0).abs() < 0.2,
            "{mean_var} vs {spread}"
        );
        assert!(auc_delong(&[1.0], &[0.0, 1.0]).0.is_nan());
    }

    /// The delta-method variance of F1 against the spread of F1 over
    /// multinomial draws.
    #[test]
    fn f1_delta_variance_matches_simulation() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let probs = [0.3, 0.1, 0.15, 0.45]; // tp, fp, fn, tn
        let n = 2000;
        let mut f1s = Vec::new();
        for _ in 0..2000 {
            let mut c = [0u64; 4];
            for _ in 0..n {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                for (i, p) in probs.iter().enumerate() {
                    acc += p;
                    if u < acc || i == 3 {
                        c[i] += 1;
                        break;
                    }
                }
            }
            f1s.push(f1_delta(c[0], c[1], c[2], c[3]).0);
        }
        let m = f1s.iter().sum::<f64>() / f1s.len() as f64;
        let spread = f1s.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (f1s.len() - 1) as f64;
        let (f1, var) = f1_delta(600, 200, 300, 900);
        assert!(close(f1, 2.0 * 600.0 / (1200.0 + 500.0)));
        assert!((var / spread - 1.0).abs() < 0.15, "{var} vs {spread}");
        assert!(f1_delta(0, 0, 0, 10).0.is_nan());
    }

    /// scikit-learn's docstring example: squares 0.01, 0.01, 0.04, 0.09.
    #[test]
    fn brier_score_by_hand() {
        let b = brier_score(&[0, 1, 1, 0], &[0.1, 0.9, 0.8, 0.3]).unwrap();
        assert!(close(b, 0.0375), "{b}");
        // Labels other than 1 are negatives; a perfect forecast scores 0.
        assert_eq!(brier_score(&[1, 0, 2], &[1.0, 0.0, 0.0]).unwrap(), 0.0);
        assert_eq!(brier_score(&[1], &[0.0]).unwrap(), 1.0);
    }

    /// Mean 2.875, SS_tot = 29.1875, SS_res = 1.5 (scikit-learn's example).
    #[test]
    fn r2_by_hand() {
        let r = r2_score(&[3.0, -0.5, 2.0, 7.0], &[2.5, 0.0, 2.0, 8.0]).unwrap();
        assert!(close(r, 1.0 - 1.5 / 29.1875), "{r}");
        assert!(close(r, 0.9486081370449679), "{r}");
        // Predicting the mean scores 0; worse than the mean is negative.
        let r = r2_score(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0]).unwrap();
        assert_eq!(r, 0.0);
        let r = r2_score(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert!(close(r, -3.0), "{r}");
    }

    /// force_finite: constant labels give 1 (exact) or 0 (any residual),
    /// also for a constant whose mean does not round back to itself.
    #[test]
    fn r2_constant_labels_and_single_sample() {
        assert_eq!(r2_score(&[3.0; 4], &[3.0; 4]).unwrap(), 1.0);
        assert_eq!(r2_score(&[3.0; 4], &[3.0, 3.0, 3.5, 3.0]).unwrap(), 0.0);
        assert_eq!(r2_score(&[0.1; 20], &[0.2; 20]).unwrap(), 0.0);
        assert_eq!(r2_score(&[0.1; 20], &[0.1; 20]).unwrap(), 1.0);
        assert!(r2_score(&[1.0], &[2.0]).unwrap().is_nan());
    }

    /// (0.5 + 0 - 1) / 3: under-predicting on balance.
    #[test]
    fn mean_error_by_hand() {
        let e = mean_error(&[1.0, 2.0, 3.0], &[1.5, 2.0, 2.0]).unwrap();
        assert!(close(e, -1.0 / 6.0), "{e}");
        assert_eq!(mean_error(&[1.0, 2.0], &[2.0, 4.0]).unwrap(), 1.5);
    }

    #[test]
    fn empty_and_mismatched_inputs_are_errors() {
        assert!(matches!(
            brier_score(&[], &[]),
            Err(StatsError::EmptySample { .. })
        ));
        assert!(matches!(
            r2_score(&[], &[]),
            Err(StatsError::EmptySample { .. })
        ));
        assert!(matches!(
            mean_error(&[1.0], &[1.0, 2.0]),
            Err(StatsError::InvalidArgument { .. })
        ));
        assert!(matches!(
            r2_score(&[1.0, 2.0], &[1.0]),
            Err(StatsError::InvalidArgument { .. })
        ));
    }
}
