//! Model quality metrics per variant, as scikit-learn 1.9: accuracy,
//! precision / recall / F1 (binary with `pos_label = 1`, or macro, micro and
//! weighted averages over the sorted union of labels, `zero_division = 0`),
//! confusion matrix, ROC AUC (ties in scores count 1/2; NaN with a single
//! class), log loss (probabilities clipped to `[eps, 1 - eps]`), MAE, MSE and
//! RMSE. Labels are integers; mismatched lengths and empty input are errors.

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
