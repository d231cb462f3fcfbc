//! The statistics of an experiment: each variant's metrics against the
//! control, the sample-ratio check, the planned sample size and the
//! decision. Pure functions over the summaries of [`super::summary`].
//!
//! **Tests, each variant against the control** (two-sided, at the
//! experiment's `alpha`):
//! * means (`latency_mean`, `log_loss`, `mae`): Welch's t from the
//!   fixed-point moments, with Welch's interval;
//! * rates (`accuracy`, `conversion`): the two-proportion z-test with the
//!   pooled variance (statsmodels' `proportions_ztest`) and the Wald
//!   interval of the difference;
//! * `f1`: the **delta method** on the confusion counts
//!   ([`crate::stats::metrics::f1_delta`]); `roc_auc`: **DeLong's**
//!   variance on the per-class score samples
//!   ([`crate::stats::metrics::auc_delong`]); `rmse`: the delta method on
//!   the mean squared error. Both arms are independent, so the variance of
//!   the difference is the sum; the z-test and interval follow. Chosen
//!   over the bootstrap because they are deterministic (a replay after a
//!   restart gives the same interval, which resampling would not without
//!   carrying its random state) and cost one pass per evaluation instead of
//!   hundreds;
//! * distributions (`latency_p50/p95/p99`, `score`): Mann-Whitney U on the
//!   bottom-k samples (asymptotic, tie-corrected); quantile rows carry the
//!   difference of the sample quantiles and no interval.
//!
//! **Relative lift** `variant / control − 1` with a delta-method interval
//! (`var ≈ var_v / c² + v² var_c / c⁴`). **Holm** adjusts the p-values of
//! every (variant, metric) test of one evaluation together.
//!
//! **Always-valid intervals** (`cs_low`, `cs_high`): the Gaussian-mixture
//! confidence sequence of [`crate::stats::sequential`] around the same
//! difference and variance, tuned to be tightest at the planned total
//! sample; the decision stops on them, so it may be looked at after every
//! window without inflating the false-positive rate.
//!
//! **Sample ratio**: the chi-square goodness-of-fit of the unit counts
//! against the weights ([`crate::stats::chi_square::srm`]), on the
//! experiment's smallest `window.unit_sample` unit hashes (an exact random
//! sample of its units, [`crate::stats::distinct::split_counts`]); flagged
//! below p = 0.001 as GrowthBook and Eppo do.

use std::cell::OnceCell;

use serde::Serialize;

use super::Experiment;
use super::summary::{FixedMoments, VariantOutcomes};
use crate::config::Task;
use crate::stats::Alternative;
use crate::stats::distinct::{Kmv, split_counts};
use crate::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use crate::stats::metrics::{auc_delong, f1_delta};
use crate::stats::proportions::{norm_ppf, norm_sf, proportions_ztest};
use crate::stats::sample::ValueSample;
use crate::stats::sample_size::{
    normal_ind_solve_nobs1, proportion_effectsize, ttest_ind_solve_nobs1,
};
use crate::stats::sequential::{half_width, optimal_rho2};
use crate::stats::summary::Moments;
use crate::stats::t_test::ttest_ind_from_moments;

/// SRM is flagged below this p-value.
pub const SRM_ALPHA: f64 = 0.001;

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Larger is better.
    Higher,
    /// Smaller is better.
    Lower,
    /// No direction (counts, the score distribution).
    Neither,
}

/// The direction of `metric`.
pub fn better(metric: &str) -> Better {
    match metric {
        "accuracy" | "f1" | "roc_auc" | "conversion" => Better::Higher,
        "log_loss" | "mae" | "rmse" | "latency_mean" | "latency_p50" | "latency_p95"
        | "latency_p99" => Better::Lower,
        _ => Better::Neither,
    }
}

/// Metrics computed from a window's events, in row order.
pub const EVENT_METRICS: &[&str] = &[
    "events",
    "units",
    "latency_mean",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "score",
];

/// Metrics computed from the joined labels, by task, in row order.
pub fn outcome_metrics(task: Option<Task>) -> Vec<&'static str> {
    match task {
        Some(Task::Binary) => vec!["accuracy", "conversion", "f1", "roc_auc", "log_loss"],
        Some(Task::Multiclass) => vec!["accuracy"],
        Some(Task::Regression) => vec!["mae", "rmse"],
        None => Vec::new(),
    }
}

/// Observations each arm needs before its always-valid interval is drawn
/// (and so before a ship or a stop can rest on it).
pub const MIN_N: u64 = 30;

/// Metric names an experiment may decide on (`primary`) or guard, by
/// task. Quantiles can be guarded (a rank test, Bonferroni over the looks)
/// but not decided on: they have no always-valid interval.
pub fn known_metrics(task: Option<Task>, primary: bool) -> Vec<&'static str> {
    let mut m = vec!["latency_mean"];
    if !primary {
        m.extend(["latency_p50", "latency_p95", "latency_p99"]);
    }
    // ROC AUC is estimated on a bounded sample of scores per class: its
    // interval stops narrowing there, so a plan beyond it (the usual case)
    // would never be reached. It can be a guardrail.
    m.extend(
        outcome_metrics(task)
            .into_iter()
            .filter(|x| !(primary && *x == "roc_auc")),
    );
    m
}

/// Whether `metric` comes from the joined labels.
pub fn from_labels(metric: &str) -> bool {
    matches!(
        metric,
        "accuracy" | "conversion" | "f1" | "roc_auc" | "log_loss" | "mae" | "rmse"
    )
}

/// One arm's cumulative or window state as the tests see it.
#[derive(Debug, Clone)]
pub struct ArmData<'a> {
    /// Variant name.
    pub variant: &'a str,
    /// Model version.
    pub version: &'a str,
    /// Predictions.
    pub predictions: u64,
    /// Latency moments.
    pub latency: FixedMoments,
    /// Latency sample.
    pub latency_sample: Option<&'a ValueSample>,
    /// Score sample (numeric predictions).
    pub scores: Option<&'a ValueSample>,
    /// Units.
    pub units: Option<&'a Kmv>,
    /// Labelled outcomes.
    pub outcomes: Option<&'a VariantOutcomes>,
}

/// One row of `ab_results` (without the window and experiment).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricRow {
    /// Variant.
    pub variant: String,
    /// Its model version.
    pub version: String,
    /// Whether it is the control.
    pub is_control: bool,
    /// Metric.
    pub metric: String,
    /// Observations behind the estimate.
    pub n: u64,
    /// The variant's value.
    #[serde(with = "crate::stats::detectors::extended")]
    pub estimate: f64,
    /// Variant minus control.
    pub effect: Option<f64>,
    /// Interval of the effect at 1 − alpha.
    pub ci_low: Option<f64>,
    /// Upper end.
    pub ci_high: Option<f64>,
    /// `variant / control − 1`.
    pub relative_lift: Option<f64>,
    /// Its interval.
    pub lift_low: Option<f64>,
    /// Upper end.
    pub lift_high: Option<f64>,
    /// Fixed-horizon p-value.
    pub p_value: Option<f64>,
    /// Holm-adjusted across the evaluation's tests.
    pub p_value_adjusted: Option<f64>,
    /// Always-valid interval of the effect.
    pub cs_low: Option<f64>,
    /// Upper end.
    pub cs_high: Option<f64>,
    /// Which test.
    pub test: Option<String>,
    /// `p_value_adjusted < alpha`.
    pub significant: Option<bool>,
    /// Variance of `effect` (for the always-valid interval; not a column).
    pub var: Option<f64>,
    /// The control's observations (not a column).
    pub n_control: u64,
    /// Rank-tested metrics: the Mann-Whitney U of the variant over
    /// `n · n_control`, less 1/2 (the chance a variant's value exceeds
    /// the control's, ties halved, centred): which way the rank test leans
    /// (not a column).
    #[serde(default)]
    pub rank_lean: Option<f64>,
}

/// An arm's value of a metric with the variance of that value.
#[derive(Debug, Clone, Copy)]
struct Est {
    n: u64,
    value: f64,
    /// Variance of `value` (NaN when unknown).
    var: f64,
}

fn proportion(c: u64, n: u64) -> Option<Est> {
    (n > 0).then(|| {
        let p = c as f64 / n as f64;
        Est {
            n,
            value: p,
            var: p * (1.0 - p) / n as f64,
        }
    })
}

fn mean_of(m: &Moments) -> Option<Est> {
    (m.count >= 2).then(|| Est {
        n: m.count,
        value: m.mean(),
        var: m.variance() / m.count as f64,
    })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Linear interpolation between closest ranks (numpy's default).
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// An arm's samples sorted once per evaluation, and its Mann-Whitney
/// p-values against the control: the quantile metrics of one sample
/// (`latency_p50/p95/p99`) share them instead of sorting and testing it
/// again for each.
#[derive(Default)]
struct Sorted {
    latency: OnceCell<Vec<f64>>,
    scores: OnceCell<Vec<f64>>,
    pos_scores: OnceCell<Vec<f64>>,
    neg_scores: OnceCell<Vec<f64>>,
    /// (p-value, lean) of the rank test against the control.
    latency_mwu: OnceCell<Option<(f64, f64)>>,
    scores_mwu: OnceCell<Option<(f64, f64)>>,
}

fn sorted<'c>(cell: &'c OnceCell<Vec<f64>>, s: &ValueSample) -> &'c [f64] {
    cell.get_or_init(|| s.sorted_values())
}

/// The value of `metric` for an arm.
fn estimate(metric: &str, a: &ArmData<'_>, s: &Sorted, task: Option<Task>) -> Option<Est> {
    let o = a.outcomes;
    match metric {
        "events" => Some(Est {
            n: a.predictions,
            value: a.predictions as f64,
            var: f64::NAN,
        }),
        "units" => a.units.map(|u| Est {
            n: u.estimate().round() as u64,
            value: u.estimate(),
            var: f64::NAN,
        }),
        "latency_mean" => mean_of(&a.latency.moments()),
        "latency_p50" | "latency_p95" | "latency_p99" | "score" => {
            let v = match metric {
                "score" => sorted(&s.scores, a.scores?),
                _ => sorted(&s.latency, a.latency_sample?),
            };
            let q = match metric {
                "latency_p95" => 0.95,
                "latency_p99" => 0.99,
                _ => 0.5,
            };
            (!v.is_empty()).then(|| Est {
                n: v.len() as u64,
                value: quantile(v, q),
                var: f64::NAN,
            })
        }
        "accuracy" => o.and_then(|o| proportion(o.correct, o.labeled)),
        "conversion" => o.and_then(|o| proportion(o.positives, o.labeled)),
        "f1" if task == Some(Task::Binary) => o.and_then(|o| {
            let (f, var) = f1_delta(o.tp, o.fp, o.fn_, o.tn);
            f.is_finite().then_some(Est {
                n: o.labeled,
                value: f,
                var,
            })
        }),
        "roc_auc" => o.and_then(|o| {
            let (auc, var) = auc_delong(
                sorted(&s.pos_scores, &o.pos_scores),
                sorted(&s.neg_scores, &o.neg_scores),
            );
            auc.is_finite().then_some(Est {
                n: (o.pos_scores.len() + o.neg_scores.len()) as u64,
                value: auc,
                var,
            })
        }),
        "log_loss" => o.and_then(|o| mean_of(&o.log_loss)),
        "mae" => o.and_then(|o| mean_of(&o.abs_err)),
        "rmse" => o.and_then(|o| {
            let mse = mean_of(&o.sq_err)?;
            let rmse = mse.value.sqrt();
            (rmse > 0.0).then(|| Est {
                n: mse.n,
                value: rmse,
                var: mse.var / (4.0 * mse.value),
            })
        }),
        _ => None,
    }
}

/// The rows of `metrics` for every arm (in declared order; `control`
/// indexes the control): estimates, and for the other arms the effect, its
/// interval, lift and p-value. Holm and the always-valid intervals are
/// added by [`holm`] and [`add_sequential`] once an evaluation's rows are
/// all in.
pub fn results(
    e: &Experiment,
    task: Option<Task>,
    arms: &[ArmData<'_>],
    control: usize,
    metrics: &[&str],
) -> Vec<MetricRow> {
    let c = &arms[control];
    let cache: Vec<Sorted> = arms.iter().map(|_| Sorted::default()).collect();
    let z = norm_ppf(1.0 - e.alpha / 2.0);
    let mut rows = Vec::new();
    for metric in metrics {
        let ce = estimate(metric, c, &cache[control], task);
        for (i, a) in arms.iter().enumerate() {
            let Some(ae) = estimate(metric, a, &cache[i], task) else {
                continue;
            };
            let mut row = MetricRow {
                variant: a.variant.to_string(),
                version: a.version.to_string(),
                is_control: i == control,
                metric: metric.to_string(),
                n: ae.n,
                estimate: ae.value,
                effect: None,
                ci_low: None,
                ci_high: None,
                relative_lift: None,
                lift_low: None,
                lift_high: None,
                p_value: None,
                p_value_adjusted: None,
                cs_low: None,
                cs_high: None,
                test: None,
                significant: None,
                var: None,
                n_control: ce.map_or(0, |c| c.n),
                rank_lean: None,
            };
            if i != control
                && let Some(ce) = ce
            {
                let arms = (a, c, &cache[i], &cache[control]);
                compare(&mut row, metric, arms, ae, ce, z, e.alpha);
            }
            // Undefined numbers are absent (NULL), never NaN.
            for v in [
                &mut row.effect,
                &mut row.ci_low,
                &mut row.ci_high,
                &mut row.relative_lift,
                &mut row.lift_low,
                &mut row.lift_high,
                &mut row.p_value,
                &mut row.var,
            ] {
                if v.is_some_and(|x| !x.is_finite()) {
                    *v = None;
                }
            }
            rows.push(row);
        }
    }
    rows
}

/// Holm-adjusts the p-values of `rows` (one evaluation's tests) together
/// and marks those below `alpha`.
pub fn holm(rows: &mut [MetricRow], alpha: f64) {
    let idx: Vec<usize> = (0..rows.len())
        .filter(|i| rows[*i].p_value.is_some_and(|p| p.is_finite()))
        .collect();
    let ps: Vec<f64> = idx
        .iter()
        .map(|i| rows[*i].p_value.unwrap_or(1.0))
        .collect();
    if let Ok(adj) = crate::stats::correction::holm(&ps) {
        for (i, p) in idx.into_iter().zip(adj) {
            rows[i].p_value_adjusted = Some(p);
            rows[i].significant = Some(p < alpha);
        }
    }
}

/// The level of the always-valid intervals: `alpha` split over the
/// variants compared with the control (Bonferroni), so that with several
/// challengers the chance of shipping any without a true effect stays at
/// `alpha`.
pub fn sequential_alpha(e: &Experiment) -> f64 {
    e.alpha / (e.arms.len().saturating_sub(1).max(1)) as f64
}

/// Adds the always-valid interval (`cs_low`, `cs_high`) to the rows with
/// a variance once both arms have [`MIN_N`] observations: the
/// Gaussian-mixture sequence of [`crate::stats::sequential`] at level
/// `alpha`, tightest at `t_star` observations in all (fixed per
/// experiment: tuning it anew at every look would void the guarantee).
pub fn add_sequential(rows: &mut [MetricRow], alpha: f64, t_star: f64) {
    if !(t_star > 0.0 && t_star.is_finite()) {
        return;
    }
    let rho2 = optimal_rho2(alpha, t_star);
    for r in rows.iter_mut() {
        let (Some(effect), Some(var)) = (r.effect, r.var) else {
            continue;
        };
        if r.n < MIN_N || r.n_control < MIN_N || !(var > 0.0 && var.is_finite()) {
            continue;
        }
        let t = (r.n + r.n_control) as f64;
        let w = half_width((t * var).sqrt(), t, rho2, alpha);
        r.cs_low = Some(effect - w);
        r.cs_high = Some(effect + w);
    }
}

#[allow(clippy::too_many_arguments)]
fn compare(
    row: &mut MetricRow,
    metric: &str,
    (a, c, sa_cache, sc_cache): (&ArmData<'_>, &ArmData<'_>, &Sorted, &Sorted),
    ae: Est,
    ce: Est,
    z: f64,
    alpha: f64,
) {
    let effect = ae.value - ce.value;
    row.effect = Some(effect);
    if ce.value != 0.0 && ce.value.is_finite() {
        row.relative_lift = Some(ae.value / ce.value - 1.0);
    }
    let var = ae.var + ce.var;
    let (p, test) = match metric {
        "events" | "units" => return,
        "latency_p50" | "latency_p95" | "latency_p99" | "score" => {
            let (sa, sc, ca, cc, p) = if metric == "score" {
                let (ca, cc) = (&sa_cache.scores, &sc_cache.scores);
                (a.scores, c.scores, ca, cc, &sa_cache.scores_mwu)
            } else {
                let (ca, cc) = (&sa_cache.latency, &sc_cache.latency);
                (
                    a.latency_sample,
                    c.latency_sample,
                    ca,
                    cc,
                    &sa_cache.latency_mwu,
                )
            };
            let (Some(sa), Some(sc)) = (sa, sc) else {
                return;
            };
            let tested = *p.get_or_init(|| {
                let (x, y) = (sorted(ca, sa), sorted(cc, sc));
                let pairs = x.len() as f64 * y.len() as f64;
                mannwhitneyu(x, y, Alternative::TwoSided, MwuMethod::Asymptotic, true)
                    .map(|r| (r.p_value, r.statistic / pairs - 0.5))
                    .ok()
            });
            row.p_value = tested.map(|t| t.0);
            row.rank_lean = tested.map(|t| t.1);
            row.test = Some("mann_whitney".into());
            return;
        }
        "latency_mean" | "log_loss" | "mae" => {
            let (ma, mc) = match metric {
                "latency_mean" => (a.latency.moments(), c.latency.moments()),
                "log_loss" => match (a.outcomes, c.outcomes) {
                    (Some(x), Some(y)) => (x.log_loss, y.log_loss),
                    _ => return,
                },
                _ => match (a.outcomes, c.outcomes) {
                    (Some(x), Some(y)) => (x.abs_err, y.abs_err),
                    _ => return,
                },
            };
            match ttest_ind_from_moments(&ma, &mc, false, Alternative::TwoSided, 1.0 - alpha) {
                Ok(t) => {
                    row.ci_low = Some(t.ci_low);
                    row.ci_high = Some(t.ci_high);
                    (t.p_value, "welch_t")
                }
                Err(_) => return,
            }
        }
        "accuracy" | "conversion" => {
            let (xa, xc) = match (a.outcomes, c.outcomes) {
                (Some(x), Some(y)) if metric == "accuracy" => (x.correct, y.correct),
                (Some(x), Some(y)) => (x.positives, y.positives),
                _ => return,
            };
            let p = proportions_ztest(xa as f64, ae.n as f64, xc as f64, ce.n as f64)
                .map(|r| r.p_value)
                .unwrap_or(f64::NAN);
            let h = z * var.sqrt();
            row.ci_low = Some(effect - h);
            row.ci_high = Some(effect + h);
            (p, "z_test")
        }
        _ => {
            // f1, roc_auc, rmse: normal approximation with the delta /
            // DeLong variance.
            if !(var > 0.0 && var.is_finite()) {
                return;
            }
            let se = var.sqrt();
            let h = z * se;
            row.ci_low = Some(effect - h);
            row.ci_high = Some(effect + h);
            let p = 2.0 * norm_sf((effect / se).abs());
            (
                p,
                if metric == "roc_auc" {
                    "delong_z"
                } else {
                    "delta_z"
                },
            )
        }
    };
    row.p_value = p.is_finite().then_some(p);
    row.test = Some(test.into());
    if ce.value != 0.0 && var.is_finite() {
        let lv = ae.var / (ce.value * ce.value) + ae.value * ae.value * ce.var / ce.value.powi(4);
        let l = ae.value / ce.value - 1.0;
        let h = z * lv.sqrt();
        row.lift_low = Some(l - h);
        row.lift_high = Some(l + h);
    }
    if var.is_finite() && var > 0.0 {
        row.var = Some(var);
    }
}

/// Observations per variant needed to detect the experiment's MDE on
/// `metric` with its alpha and power (two-sided, equal arms), from the
/// control's current value and spread; NaN until they are known.
pub fn required_per_variant(e: &Experiment, task: Option<Task>, control: &ArmData<'_>) -> f64 {
    let metric = e.primary_metric.as_str();
    let Some(c) = estimate(metric, control, &Sorted::default(), task) else {
        return f64::NAN;
    };
    let alt = Alternative::TwoSided;
    let n = match metric {
        "accuracy" | "conversion" => {
            let p0 = c.value.clamp(1e-6, 1.0 - 1e-6);
            let p1 = match better(metric) {
                Better::Lower => (p0 - e.mde).max(1e-6),
                _ => (p0 + e.mde).min(1.0 - 1e-6),
            };
            let h = proportion_effectsize(p1, p0).abs();
            normal_ind_solve_nobs1(h, e.alpha, e.power, 1.0, alt)
        }
        _ => {
            // Per-observation standard deviation from the variance of the
            // control's estimate.
            let sd = (c.var * c.n as f64).sqrt();
            if !(sd > 0.0 && sd.is_finite()) {
                return f64::NAN;
            }
            if matches!(metric, "latency_mean" | "log_loss" | "mae") {
                ttest_ind_solve_nobs1(e.mde / sd, e.alpha, e.power, 1.0, alt)
            } else {
                let zz = norm_ppf(1.0 - e.alpha / 2.0) + norm_ppf(e.power);
                Ok(2.0 * (zz * sd / e.mde).powi(2))
            }
        }
    };
    n.map(f64::ceil).unwrap_or(f64::NAN)
}

/// The sample-ratio check of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Srm {
    /// Units (or predictions, `by_predictions`) per arm.
    pub counts: Vec<u64>,
    /// Chi-square p-value of the counts against the weights.
    pub p_value: Option<f64>,
    /// No event carried a `unit_id`: each prediction counts as a unit.
    /// (Defaults to false: a checkpoint written before it held the
    /// counts and the p-value as a pair, which still reads.)
    #[serde(default)]
    pub by_predictions: bool,
}

/// The sample-ratio check: unit counts (of the smallest `unit_k` unit
/// hashes of the experiment) per arm and the chi-square p-value against
/// the weights; an arm without traffic counts zero units. When no event
/// carried a `unit_id`, the predictions per arm are the units (the check
/// is not skipped: a broken router shows in them too).
pub fn srm(e: &Experiment, arms: &[ArmData<'_>], unit_k: usize) -> Srm {
    let sketches: Vec<Kmv> = arms
        .iter()
        .map(|a| a.units.cloned().unwrap_or_else(|| Kmv::new(unit_k)))
        .collect();
    let refs: Vec<&Kmv> = sketches.iter().collect();
    let mut counts = split_counts(&refs);
    let by_predictions = counts.iter().all(|c| *c == 0);
    if by_predictions {
        counts = arms.iter().map(|a| a.predictions).collect();
    }
    let weights: Vec<f64> = e.arms.iter().map(|a| a.weight).collect();
    let total: u64 = counts.iter().sum();
    let p_value = if total == 0 {
        None
    } else {
        let obs: Vec<f64> = counts.iter().map(|c| *c as f64).collect();
        crate::stats::chi_square::srm(&obs, &weights)
            .ok()
            .map(|r| r.p_value)
    };
    Srm {
        counts,
        p_value,
        by_predictions: by_predictions && total > 0,
    }
}

/// What to do with an experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// `ship`, `keep_control`, `keep_running`, `stop` or `invalid`.
    pub decision: String,
    /// The variant it is about (ship, stop).
    pub variant: Option<String>,
    /// The metric it is about (the primary; stop: the guardrail).
    pub metric: Option<String>,
    /// One line with the numbers behind it.
    pub reason: String,
    /// SRM p-value.
    pub srm_p_value: Option<f64>,
    /// Units per variant (the SRM counts).
    pub unit_counts: Vec<u64>,
    /// Planned observations of the arm furthest from its plan (per
    /// variant at an equal split; see `plan_shares`).
    pub required_per_variant: f64,
    /// Observations of the primary metric in that arm.
    pub smallest_n: u64,
    /// `smallest_n / required_per_variant`.
    pub progress: f64,
    /// The experiment's primary metric.
    pub primary_metric: String,
}

impl Decision {
    /// The text the README and reports use (`ship challenger`, `keep
    /// running (about N more labelled predictions per variant)`, ...; N
    /// counts observations of the primary metric).
    pub fn label(&self) -> String {
        match self.decision.as_str() {
            "ship" => format!("ship {}", self.variant.as_deref().unwrap_or("")),
            "keep_control" => "keep control".into(),
            "stop" => format!(
                "stop: guardrail {} degraded on {}",
                self.metric.as_deref().unwrap_or(""),
                self.variant.as_deref().unwrap_or("")
            ),
            "invalid" => "invalid: sample ratio mismatch".into(),
            _ => {
                let more = (self.required_per_variant - self.smallest_n as f64).max(0.0);
                let what = if from_labels(&self.primary_metric) {
                    "labelled predictions"
                } else {
                    "predictions"
                };
                if more.is_finite() {
                    format!("keep running (about {more:.0} more {what} per variant)")
                } else {
                    "keep running".into()
                }
            }
        }
    }
}

/// Each arm's planned observations as a multiple of the plan per arm at an
/// equal split: against a control of weight `c`, a variant of weight `w`
/// needs `(1 + w / c) / 2` of it and the control `(1 + c / w) / 2`
/// (statsmodels' `nobs1` with `ratio = c / w`; the control's largest over
/// the variants). All 1 at an equal split.
fn plan_shares(e: &Experiment) -> Vec<f64> {
    let c = e.arms.iter().find(|a| a.control).map_or(1.0, |a| a.weight);
    let variants = e.arms.iter().filter(|a| !a.control);
    let control = variants
        .clone()
        .map(|a| (1.0 + c / a.weight) / 2.0)
        .fold(1.0_f64, f64::max);
    e.arms
        .iter()
        .map(|a| {
            if a.control {
                control
            } else {
                (1.0 + a.weight / c) / 2.0
            }
        })
        .collect()
}

/// The decision from the cumulative results after `looks` evaluations.
pub fn decide(
    e: &Experiment,
    rows: &[MetricRow],
    srm: &Srm,
    required: f64,
    looks: u64,
) -> Decision {
    let primary = e.primary_metric.as_str();
    let prim: Vec<&MetricRow> = rows
        .iter()
        .filter(|r| r.metric == primary && !r.is_control)
        .collect();
    // An arm with no estimate of the primary metric yet (no labels joined,
    // no traffic) has no observations: the experiment waits for it.
    // Each arm against its own plan (the weights' ratio); the arm furthest
    // from it sets the progress. At an equal split every plan is `required`
    // and that arm is the smallest.
    let shares = plan_shares(e);
    let arm_n: Vec<u64> = e
        .arms
        .iter()
        .map(|a| {
            rows.iter()
                .find(|r| r.metric == primary && r.variant == a.name)
                .map_or(0, |r| r.n)
        })
        .collect();
    let unmeasured = e.arms.iter().any(|a| {
        !rows
            .iter()
            .any(|r| r.metric == primary && r.variant == a.name)
    });
    let limiting = (0..e.arms.len()).min_by(|&i, &j| {
        let at = |k: usize| arm_n[k] as f64 / shares[k];
        at(i).total_cmp(&at(j))
    });
    let (smallest_n, required) = match limiting {
        Some(i) => (arm_n[i], required * shares[i]),
        None => (0, required),
    };
    let progress = if required > 0.0 {
        smallest_n as f64 / required
    } else {
        f64::NAN
    };
    let mut d = Decision {
        decision: "keep_running".into(),
        variant: None,
        metric: Some(primary.to_string()),
        reason: String::new(),
        srm_p_value: srm.p_value,
        unit_counts: srm.counts.clone(),
        required_per_variant: required,
        smallest_n,
        progress,
        primary_metric: primary.to_string(),
    };
    if let Some(p) = srm.p_value
        && p < SRM_ALPHA
    {
        d.decision = "invalid".into();
        d.reason = format!(
            "{} per variant {:?} against weights {:?}: chi-square p = {p:.3e} < {SRM_ALPHA}",
            if srm.by_predictions {
                "predictions (no unit_id)"
            } else {
                "units"
            },
            srm.counts,
            e.arms.iter().map(|a| a.weight).collect::<Vec<_>>()
        );
        return d;
    }
    // Guardrails: worse than allowed, and the always-valid interval (or,
    // for quantiles, the adjusted rank test) says it is worse.
    for (g, allowed) in &e.guardrails {
        let dir = better(g);
        for r in rows.iter().filter(|r| &r.metric == g && !r.is_control) {
            let Some(lift) = r.relative_lift else {
                continue;
            };
            let worse_by = match dir {
                Better::Higher => -lift,
                Better::Lower => lift,
                Better::Neither => continue,
            };
            let confirmed = match (r.cs_low, r.cs_high) {
                (Some(lo), Some(hi)) => match dir {
                    Better::Higher => hi < 0.0,
                    _ => lo > 0.0,
                },
                // Quantiles: the Holm-adjusted rank test, Bonferroni over
                // the looks so far (it is re-checked every window), leaning
                // the worse way (a faster variant with a heavier tail is
                // not confirmed worse by its being faster). Other metrics
                // (no lean) wait for their interval (30 observations a
                // side, a variance): a fixed-horizon p-value re-checked
                // every window is no confirmation.
                _ => {
                    let leans_worse = r.rank_lean.is_some_and(|l| match dir {
                        Better::Higher => l < 0.0,
                        _ => l > 0.0,
                    });
                    leans_worse
                        && r.p_value_adjusted
                            .is_some_and(|p| p < e.alpha / looks.max(1) as f64)
                }
            };
            if worse_by > *allowed && confirmed {
                d.decision = "stop".into();
                d.variant = Some(r.variant.clone());
                d.metric = Some(g.clone());
                d.reason = format!(
                    "{g} of {} is {:.1}% worse than control (allowed {:.1}%), effect {:.4}",
                    r.variant,
                    worse_by * 100.0,
                    allowed * 100.0,
                    r.effect.unwrap_or(f64::NAN)
                );
                return d;
            }
        }
    }
    let dir = better(primary);
    let sign = if dir == Better::Lower { -1.0 } else { 1.0 };
    let winners: Vec<&&MetricRow> = prim
        .iter()
        .filter(|r| match (r.cs_low, r.cs_high) {
            (Some(lo), Some(hi)) => {
                if sign > 0.0 {
                    lo > 0.0
                } else {
                    hi < 0.0
                }
            }
            _ => false,
        })
        .collect();
    if let Some(best) = winners.iter().max_by(|a, b| {
        (sign * a.estimate)
            .partial_cmp(&(sign * b.estimate))
            .unwrap_or(std::cmp::Ordering::Equal)
    }) {
        d.decision = "ship".into();
        d.variant = Some(best.variant.clone());
        d.metric = Some(primary.to_string());
        d.reason = format!(
            "{primary}: {} {:.4} vs control, effect {:+.4}, always-valid interval [{:.4}, {:.4}], p = {:.2e}",
            best.variant,
            best.estimate,
            best.effect.unwrap_or(f64::NAN),
            best.cs_low.unwrap_or(f64::NAN),
            best.cs_high.unwrap_or(f64::NAN),
            best.p_value.unwrap_or(f64::NAN)
        );
        return d;
    }
    let all_worse = !prim.is_empty()
        && !unmeasured
        && prim.iter().all(|r| match (r.cs_low, r.cs_high) {
            (Some(lo), Some(hi)) => {
                if sign > 0.0 {
                    hi < 0.0
                } else {
                    lo > 0.0
                }
            }
            _ => false,
        });
    // At the planned sample, no variant can be better by the MDE: the
    // fixed-horizon interval excludes it.
    let none_can_win = progress >= 1.0
        && !prim.is_empty()
        && !unmeasured
        && prim.iter().all(|r| match (r.ci_low, r.ci_high) {
            (Some(lo), Some(hi)) => {
                if sign > 0.0 {
                    hi < e.mde
                } else {
                    lo > -e.mde
                }
            }
            _ => false,
        });
    if all_worse || none_can_win {
        d.decision = "keep_control".into();
        d.metric = Some(primary.to_string());
        d.reason = if all_worse {
            format!("{primary}: every variant is worse than control (always-valid intervals)")
        } else {
            format!(
                "{primary}: planned sample reached ({smallest_n} of {required:.0}) and no variant can be better by the MDE {}",
                e.mde
            )
        };
        return d;
    }
    d.metric = Some(primary.to_string());
    d.reason = if required.is_finite() {
        format!(
            "{primary}: no variant differs yet; {smallest_n} of {required:.0} planned per variant"
        )
    } else {
        format!("{primary}: waiting for data")
    };
    d
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::config::{ExperimentConfig, VariantConfig};

    fn experiment(weights: &[f64], mde: f64) -> Experiment {
        let names = ["control", "challenger", "third"];
        let ec = ExperimentConfig {
            model: "m".into(),
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| VariantConfig {
                    name: names[i].into(),
                    version: (i + 1).to_string(),
                    weight: *w,
                })
                .collect(),
            control: "control".into(),
            salt: None,
            start: "2026-01-01T00:00:00Z".parse().unwrap(),
            end: None,
            primary_metric: "accuracy".into(),
            guardrails: Default::default(),
            mde,
            alpha: 0.05,
            power: 0.8,
        };
        Experiment::from_config("e", &ec)
    }

    /// One evaluation of the cumulative arms, as the evaluator runs it.
    fn evaluate(
        e: &Experiment,
        a: &[ArmData<'_>],
        t_star: &mut Option<f64>,
        looks: u64,
    ) -> (Vec<MetricRow>, Decision) {
        let mut metrics = vec!["latency_mean"];
        metrics.extend(outcome_metrics(Some(Task::Binary)));
        let mut rows = results(e, Some(Task::Binary), a, 0, &metrics);
        let required = required_per_variant(e, Some(Task::Binary), &a[0]);
        if t_star.is_none() && required.is_finite() {
            *t_star = Some(2.0 * required);
        }
        if let Some(t) = *t_star {
            add_sequential(&mut rows, sequential_alpha(e), t);
        }
        holm(&mut rows, e.alpha);
        let d = decide(e, &rows, &Srm::default(), required, looks);
        (rows, d)
    }

    fn outcomes(rng: &mut rand::rngs::StdRng, n: u64, p: f64) -> VariantOutcomes {
        let mut o = VariantOutcomes::new(16);
        for _ in 0..n {
            let ok = rng.random::<f64>() < p;
            o.labeled += 1;
            o.predictions += 1;
            o.correct += u64::from(ok);
        }
        o
    }

    fn arms<'a>(e: &'a Experiment, o: &'a [VariantOutcomes]) -> Vec<ArmData<'a>> {
        e.arms
            .iter()
            .zip(o)
            .map(|(a, o)| ArmData {
                variant: &a.name,
                version: &a.version,
                predictions: o.predictions,
                latency: FixedMoments::default(),
                latency_sample: None,
                scores: None,
                units: None,
                outcomes: Some(o),
            })
            .collect()
    }

    /// Runs `experiments` streams of `windows` windows with `per_window`
    /// labelled predictions per arm, evaluated after every window; returns
    /// (share ending in a ship on the sequential rule, share that a
    /// fixed-horizon p < alpha at any look would have shipped, n per arm
    /// at each sequential ship).
    fn simulate(
        experiments: usize,
        windows: usize,
        per_window: u64,
        p: (f64, f64),
        seed: u64,
    ) -> (f64, f64, Vec<u64>, f64) {
        let e = experiment(&[50.0, 50.0], 0.02);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut seq_ships, mut fixed_ships, mut at) = (0, 0, Vec::new());
        let mut planned = f64::NAN;
        for _ in 0..experiments {
            let mut cum = vec![VariantOutcomes::new(16), VariantOutcomes::new(16)];
            let (mut shipped, mut fixed) = (false, false);
            let mut t_star = None;
            for look in 1..=windows as u64 {
                cum[0].merge(&outcomes(&mut rng, per_window, p.0));
                cum[1].merge(&outcomes(&mut rng, per_window, p.1));
                let a = arms(&e, &cum);
                let (rows, d) = evaluate(&e, &a, &mut t_star, look);
                planned = d.required_per_variant;
                let r = rows
                    .iter()
                    .find(|r| r.metric == "accuracy" && !r.is_control)
                    .unwrap();
                if r.p_value.is_some_and(|p| p < e.alpha) && r.effect.unwrap() > 0.0 {
                    fixed = true;
                }
                if d.decision == "ship" {
                    shipped = true;
                    at.push(cum[1].labeled);
                    break;
                }
            }
            seq_ships += u64::from(shipped);
            fixed_ships += u64::from(fixed);
        }
        (
            seq_ships as f64 / experiments as f64,
            fixed_ships as f64 / experiments as f64,
            at,
            planned,
        )
    }

    /// A/A: no true difference, 400 experiments looked at every window.
    /// The sequential rule ships wrongly at most alpha of the time; a
    /// fixed-horizon test looked at as often would ship far more.
    #[test]
    fn a_a_streams_ship_wrongly_at_most_alpha_of_the_time() {
        let (seq, fixed, _, _) = simulate(400, 20, 400, (0.8, 0.8), 1);
        println!(
            "A/A, 400 experiments x 20 looks: wrong ship {seq:.4} with always-valid intervals, {fixed:.4} with fixed-horizon p < alpha at any look"
        );
        assert!(seq <= 0.05, "sequential wrong-ship share {seq}");
        assert!(fixed > seq, "peeking at fixed-horizon p-values: {fixed}");
    }

    /// An effect above the MDE (0.80 vs 0.83, MDE 0.02) ships at about the
    /// planned sample size.
    #[test]
    fn a_true_effect_ships_at_about_the_planned_sample() {
        let (share, _, at, planned) = simulate(100, 60, 250, (0.80, 0.83), 2);
        let mut at = at;
        at.sort_unstable();
        let median = at[at.len() / 2] as f64;
        println!(
            "0.80 vs 0.83: shipped {share:.2} of 100, median n per arm at ship {median}, planned {planned:.0}"
        );
        assert!(share >= 0.9, "{share}");
        assert!(
            median > 0.3 * planned && median < 1.5 * planned,
            "{median} vs {planned}"
        );
        // An effect of exactly the MDE: the fixed-horizon test has 80% power
        // at the planned size; the always-valid interval, which pays for
        // being watched, needs somewhat more.
        let (share, _, mut at, planned) = simulate(100, 80, 250, (0.80, 0.82), 5);
        at.sort_unstable();
        let median = at[at.len() / 2] as f64;
        println!(
            "0.80 vs 0.82 (the MDE): shipped {share:.2} of 100 within 20,000 per arm, median n per arm at ship {median}, planned {planned:.0}"
        );
        assert!(share >= 0.8, "{share}");
        assert!(
            median > 0.5 * planned && median < 2.5 * planned,
            "{median} vs {planned}"
        );
    }

    /// 45/55 on a 50/50 experiment: invalid whatever the metrics say.
    #[test]
    fn a_broken_split_is_invalid() {
        let e = experiment(&[50.0, 50.0], 0.02);
        let (mut a, mut b) = (Kmv::new(10_000), Kmv::new(10_000));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..40_000 {
            let h: u64 = rng.random();
            if rng.random::<f64>() < 0.45 {
                &mut a
            } else {
                &mut b
            }
            .insert(h);
        }
        let mut cum = [VariantOutcomes::new(4), VariantOutcomes::new(4)];
        cum[0] = outcomes(&mut rng, 1000, 0.8);
        cum[1] = outcomes(&mut rng, 1000, 0.9);
        let mut data = arms(&e, &cum);
        data[0].units = Some(&a);
        data[1].units = Some(&b);
        let check = srm(&e, &data, 10_000);
        assert_eq!(check.counts.iter().sum::<u64>(), 10_000);
        assert!(check.p_value.unwrap() < SRM_ALPHA);
        assert!(!check.by_predictions);
        let (rows, _) = evaluate(&e, &data, &mut None, 1);
        let d = decide(&e, &rows, &check, 5000.0, 1);
        assert_eq!(d.decision, "invalid");
        assert_eq!(d.label(), "invalid: sample ratio mismatch");
        // A fair split of the same size passes.
        let (mut c, mut f) = (Kmv::new(10_000), Kmv::new(10_000));
        for _ in 0..40_000 {
            let h: u64 = rng.random();
            if rng.random::<f64>() < 0.5 {
                &mut c
            } else {
                &mut f
            }
            .insert(h);
        }
        data[0].units = Some(&c);
        data[1].units = Some(&f);
        assert!(srm(&e, &data, 10_000).p_value.unwrap() > SRM_ALPHA);
        // An arm without any traffic is the worst mismatch of all.
        data[1].units = None;
        let check = srm(&e, &data, 10_000);
        assert_eq!(check.counts, vec![10_000, 0]);
        assert!(check.p_value.unwrap() < SRM_ALPHA);
        // Without unit ids the predictions are the units: a 45/55 router
        // is still caught, and the reason says what was counted.
        data[0].units = None;
        (data[0].predictions, data[1].predictions) = (4_500, 5_500);
        let check = srm(&e, &data, 10_000);
        assert!(check.by_predictions);
        assert_eq!(check.counts, vec![4_500, 5_500]);
        assert!(check.p_value.unwrap() < SRM_ALPHA);
        let d = decide(&e, &rows, &check, 5000.0, 1);
        assert_eq!(d.decision, "invalid");
        assert!(
            d.reason
                .starts_with("predictions (no unit_id) per variant [4500, 5500]"),
            "{}",
            d.reason
        );
        (data[0].predictions, data[1].predictions) = (5_010, 4_990);
        assert!(srm(&e, &data, 10_000).p_value.unwrap() > SRM_ALPHA);
        // A checkpoint written before `by_predictions` held a pair.
        let old: Srm = serde_json::from_str("[[4895, 5105], 0.0357]").unwrap();
        assert_eq!(old.counts, vec![4895, 5105]);
        assert_eq!(old.p_value, Some(0.0357));
        assert!(!old.by_predictions);
    }

    /// A quantile guardrail stops only when the rank test leans the worse
    /// way: a challenger faster for most requests with a heavier tail has
    /// a worse p95, and a rank test significant for its being faster.
    #[test]
    fn a_quantile_guardrail_needs_the_rank_test_to_lean_worse() {
        let mut e = experiment(&[50.0, 50.0], 0.02);
        e.guardrails.insert("latency_p95".into(), 0.10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let cum = [outcomes(&mut rng, 3000, 0.8), outcomes(&mut rng, 3000, 0.8)];
        let run = |challenger: &dyn Fn(f64, f64) -> f64, rng: &mut rand::rngs::StdRng| {
            let (mut l0, mut l1) = (ValueSample::new(5_000), ValueSample::new(5_000));
            for _ in 0..4_000 {
                let (u, v): (f64, f64) = (rng.random(), rng.random());
                l0.offer(rng.random(), 20.0 + 4.0 * u);
                l1.offer(rng.random(), challenger(u, v));
            }
            let mut data = arms(&e, &cum);
            data[0].latency_sample = Some(&l0);
            data[1].latency_sample = Some(&l1);
            let mut rows = results(&e, Some(Task::Binary), &data, 0, &["latency_p95"]);
            holm(&mut rows, e.alpha);
            let d = decide(&e, &rows, &Srm::default(), 10_000.0, 1);
            (rows, d)
        };
        // 90% of requests at 10-14 ms, 10% at 40 ms: p95 +67%, mostly faster.
        let faster = |u: f64, v: f64| if v < 0.9 { 10.0 + 4.0 * u } else { 40.0 };
        let (rows, d) = run(&faster, &mut rng);
        let p95 = rows
            .iter()
            .find(|r| r.metric == "latency_p95" && !r.is_control)
            .unwrap();
        assert!(p95.relative_lift.unwrap() > 0.5, "{p95:?}");
        assert!(p95.p_value_adjusted.unwrap() < 1e-6, "{p95:?}");
        assert!(p95.rank_lean.unwrap() < -0.3, "{p95:?}");
        assert_ne!(d.decision, "stop", "{d:?}");
        // Slower across the board: stopped.
        let slower = |u: f64, _: f64| 25.0 + 4.0 * u;
        let (_, d) = run(&slower, &mut rng);
        assert_eq!(d.decision, "stop", "{d:?}");
        assert_eq!(d.metric.as_deref(), Some("latency_p95"));
    }

    /// At 80/20 each arm is held to its own plan (statsmodels' `ratio`):
    /// the 20% arm needs 0.625 of the equal-split plan, the control 2.5.
    #[test]
    fn unequal_splits_plan_each_arm_by_the_ratio() {
        let e = experiment(&[80.0, 20.0], 0.02);
        assert_eq!(plan_shares(&e), vec![2.5, 0.625]);
        assert_eq!(
            plan_shares(&experiment(&[50.0, 50.0], 0.02)),
            vec![1.0, 1.0]
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cum = [
            outcomes(&mut rng, 20_000, 0.8),
            outcomes(&mut rng, 5_000, 0.8),
        ];
        let data = arms(&e, &cum);
        let mut rows = results(&e, Some(Task::Binary), &data, 0, &["accuracy"]);
        holm(&mut rows, e.alpha);
        let d = decide(&e, &rows, &Srm::default(), 10_000.0, 1);
        assert!((d.progress - 0.8).abs() < 1e-12, "{d:?}");
        assert_eq!(d.decision, "keep_running");
        // The label counts what the arm furthest from its plan still needs.
        assert!(
            (d.required_per_variant - 25_000.0).abs() < 1e-9
                || (d.required_per_variant - 6_250.0).abs() < 1e-9,
            "{d:?}"
        );
    }

    /// A/B/C where the third arm has no labels yet: the worse challenger
    /// does not make it "keep control"; the experiment waits for the third.
    #[test]
    fn an_arm_without_estimates_keeps_the_experiment_running() {
        let e = experiment(&[34.0, 33.0, 33.0], 0.02);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let cum = [
            outcomes(&mut rng, 20_000, 0.9),
            outcomes(&mut rng, 20_000, 0.8),
            VariantOutcomes::new(16),
        ];
        let mut data = arms(&e, &cum);
        // Two arms measured: control decisively better.
        let (rows, d) = evaluate(&e, &data[..2], &mut Some(10_000.0), 1);
        let two = Experiment {
            arms: e.arms[..2].to_vec(),
            ..e.clone()
        };
        let d2 = decide(&two, &rows, &Srm::default(), d.required_per_variant, 1);
        assert_eq!(d2.decision, "keep_control", "{d2:?}");
        // The same with the third arm unmeasured.
        data[2].outcomes = None;
        let (_, d) = evaluate(&e, &data, &mut Some(10_000.0), 1);
        assert_eq!(d.decision, "keep_running", "{d:?}");
        assert_eq!(d.smallest_n, 0);
    }

    /// Guardrails stop a variant that is worse beyond its allowance.
    #[test]
    fn a_degraded_guardrail_stops_the_experiment() {
        let mut e = experiment(&[50.0, 50.0], 0.02);
        e.guardrails.insert("latency_mean".into(), 0.10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let cum = [outcomes(&mut rng, 3000, 0.8), outcomes(&mut rng, 3000, 0.8)];
        let mut data = arms(&e, &cum);
        let (mut l0, mut l1) = (FixedMoments::default(), FixedMoments::default());
        for _ in 0..3000 {
            l0.push(20.0 + rng.random::<f64>() * 4.0);
            l1.push(25.0 + rng.random::<f64>() * 4.0);
        }
        data[0].latency = l0;
        data[1].latency = l1;
        let (_, d) = evaluate(&e, &data, &mut Some(10_000.0), 1);
        assert_eq!(d.decision, "stop", "{d:?}");
        assert_eq!(
            d.label(),
            "stop: guardrail latency_mean degraded on challenger"
        );
    }
}
