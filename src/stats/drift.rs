//! Per-column drift with Evidently's default method choice (0.7,
//! `DataDriftPreset`), and the dataset-level verdict.
//!
//! Method by column type and size (distinct values counted over reference
//! and current together):
//!
//! | reference rows | numeric | categorical |
//! |---|---|---|
//! | <= 1000 | KS if > 5 distinct, chi-square if > 2, else Z-test | chi-square if > 2 distinct, else Z-test |
//! | > 1000 | normed Wasserstein if > 5 distinct, else Jensen-Shannon | Jensen-Shannon |
//!
//! **Methods** ([`DriftMethod`], with their config names) and what they
//! report as `value` (and `statistic`):
//!
//! | config name | value (statistic) | default threshold | drift when |
//! |---|---|---|---|
//! | `ks` | KS p-value (D) | 0.05 | p <= threshold |
//! | `chi2` | p of the chi-square goodness of fit of current counts to reference proportions (chi-square) | 0.05 | p < threshold |
//! | `g_test` | p of the same fit with the G statistic (G) | 0.1 | p < threshold |
//! | `chi2_contingency` | p of the 2 x k test of independence (chi-square) | 0.05 | p < threshold |
//! | `z` | two-proportion z-test p (z) | 0.05 | p < threshold |
//! | `anderson` | Anderson-Darling p, in [0.001, 0.25] (standardised A2) | 0.1 | p < threshold |
//! | `cramer_von_mises` | Cramér-von Mises p (T) | 0.1 | p <= threshold |
//! | `wasserstein` | Wasserstein distance / max(std_ref, 0.001) | 0.1 | value >= threshold |
//! | `psi` | PSI on Evidently's bins | 0.1 | value >= threshold |
//! | `js` | Jensen-Shannon distance (natural log) on Evidently's bins | 0.1 | value >= threshold |
//! | `hellinger` | Hellinger distance (Evidently's numeric bins, or category proportions) | 0.1 | value >= threshold |
//!
//! Thresholds and comparisons are Evidently 0.7's (`StatTest.default_threshold`
//! and each test's own `<` or `<=`): Anderson-Darling, Cramér-von Mises and
//! the G-test default to 0.1 there, not 0.05. Evidently's own `g_test` passes
//! the raw reference counts as expected frequencies, which scipy 1.17
//! rejects unless both samples have the same size; here it is the G version
//! of the chi-square goodness of fit
//! (`power_divergence(current, reference_props * n_current,
//! lambda_="log-likelihood")`), which equals Evidently's whenever
//! Evidently's runs. The dataset drifts when the share of drifted columns
//! reaches `drift_share` (0.5).
//!
//! **From summaries.** The streaming monitor keeps a [`Reference`] per
//! column: numeric training values sorted once, or capped
//! [`CategoryCounts`]. [`numeric_drift`] never sorts the reference again
//! (each kernel has a sorted-reference fast path) and gives exactly the
//! result of [`column_drift`] on the raw values, which sorts and calls it.
//! [`categorical_drift`] works on counts: the categories kept exactly on
//! both sides plus one `other` bucket when either side overflowed its cap
//! ([`CategoryCounts::aligned`]); on uncapped counts it is exactly
//! [`column_drift`] on the raw categories.
//!
//! **Not testable.** Each result carries a [`Verdict`]: `drift`, `no_drift`
//! or `not_testable`. A NaN value (the kernels return what scipy returns on
//! degenerate input, e.g. p = NaN for a goodness of fit over one category)
//! is not testable rather than "no drift", and so is a test on counts
//! (`chi2`, `g_test`, `chi2_contingency`, `z`) when reference and current
//! hold a single category between them: such a test has no degrees of
//! freedom, whatever p-value convention the reference library reports
//! (scipy's `chi2_contingency` and Evidently's z-test say p = 1). `drifted`
//! stays `false` there, as in Evidently, and the dataset share counts
//! drifted columns over all columns, as Evidently does; the dataset is not
//! testable only when none of its columns is.
//!
//! **Errors.** An empty sample is [`StatsError::EmptySample`] (the caller
//! skips the column), NaN in a numeric sample [`StatsError::NanInput`], and
//! a method that does not fit the column type [`StatsError::InvalidArgument`]
//! naming the method.

use std::collections::{BTreeMap, BTreeSet};

use super::anderson::anderson_ksamp_sorted;
use super::chi_square::{Divergence, chi2_contingency, chisquare};
use super::cramer_von_mises::{CvmMethod, cramervonmises_2samp_sorted};
use super::distance::{self, Binned, check_sorted};
use super::ks::{KsMethod, ks_2samp_sorted};
use super::proportions::std_normal_cdf;
use super::summary::CategoryCounts;
use super::{Alternative, StatsError, check_sample};

/// A column's values in both samples.
#[derive(Debug, Clone)]
pub enum ColumnData {
    /// Numbers (NaN = missing, dropped).
    Numeric(Vec<f64>, Vec<f64>),
    /// Categories (missing values dropped by the caller).
    Categorical(Vec<String>, Vec<String>),
}

/// A column's training profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The numeric training values, sorted ascending, without NaN.
    Numeric {
        /// The values, sorted ascending.
        sorted: Vec<f64>,
        /// The finite training values `sorted` was sampled from (`None`:
        /// `sorted` is all of them). Evidently picks a column's default
        /// method by this count, not by a sample's size.
        #[serde(default)]
        count: Option<u64>,
    },
    /// Capped counts of the training categories.
    Categorical(CategoryCounts),
}

impl Reference {
    /// The profile of numeric training values: NaN (missing) dropped, the
    /// rest sorted once.
    pub fn numeric(mut values: Vec<f64>) -> Self {
        values.retain(|v| !v.is_nan());
        values.sort_unstable_by(f64::total_cmp);
        Self::Numeric {
            sorted: values,
            count: None,
        }
    }
}

/// A drift method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMethod {
    /// Two-sample KS p-value.
    Ks,
    /// Chi-square goodness of fit of current counts to reference proportions.
    ChiSquare,
    /// Chi-square test of independence on the 2 x k table of counts
    /// (`scipy.stats.chi2_contingency`, Yates for one degree of freedom).
    Chi2Contingency,
    /// Two-proportion z-test p-value (binary columns).
    ZTest,
    /// Wasserstein distance normed by the reference std.
    Wasserstein,
    /// Jensen-Shannon distance (natural log) on Evidently's bins.
    JensenShannon,
    /// PSI on Evidently's bins.
    Psi,
    /// Hellinger distance: Evidently's numeric bins, or category proportions.
    Hellinger,
    /// k-sample Anderson-Darling p-value (midrank, scipy's default).
    Anderson,
    /// Two-sample Cramér-von Mises p-value (scipy's `auto` method).
    CramerVonMises,
    /// G-test (log-likelihood) goodness of fit of current counts to
    /// reference proportions.
    GTest,
}

impl DriftMethod {
    /// Every method.
    pub const ALL: [DriftMethod; 11] = [
        Self::Ks,
        Self::ChiSquare,
        Self::Chi2Contingency,
        Self::ZTest,
        Self::Wasserstein,
        Self::JensenShannon,
        Self::Psi,
        Self::Hellinger,
        Self::Anderson,
        Self::CramerVonMises,
        Self::GTest,
    ];

    /// The method of a config name: `ks`, `wasserstein`, `psi`, `js`,
    /// `hellinger`, `anderson`, `cramer_von_mises`, `chi2`, `g_test`, `z`
    /// (and `chi2_contingency`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The config name, which [`DriftMethod::parse`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ks => "ks",
            Self::ChiSquare => "chi2",
            Self::Chi2Contingency => "chi2_contingency",
            Self::ZTest => "z",
            Self::Wasserstein => "wasserstein",
            Self::JensenShannon => "js",
            Self::Psi => "psi",
            Self::Hellinger => "hellinger",
            Self::Anderson => "anderson",
            Self::CramerVonMises => "cramer_von_mises",
            Self::GTest => "g_test",
        }
    }

    /// Evidently's display name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ks => "K-S p_value",
            Self::ChiSquare => "chi-square p_value",
            Self::Chi2Contingency => "chi2_contingency p_value",
            Self::ZTest => "Z-test p_value",
            Self::Wasserstein => "Wasserstein distance (normed)",
            Self::JensenShannon => "Jensen-Shannon distance",
            Self::Psi => "PSI",
            Self::Hellinger => "Hellinger distance",
            Self::Anderson => "Anderson-Darling",
            Self::CramerVonMises => "Cramer-von Mises",
            Self::GTest => "g_test",
        }
    }

    /// Default threshold (Evidently's `default_threshold`).
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::Ks | Self::ChiSquare | Self::Chi2Contingency | Self::ZTest => 0.05,
            _ => 0.1,
        }
    }

    /// Whether the value is a p-value (small = drift) rather than a distance.
    pub fn is_p_value(self) -> bool {
        matches!(
            self,
            Self::Ks
                | Self::ChiSquare
                | Self::Chi2Contingency
                | Self::ZTest
                | Self::Anderson
                | Self::CramerVonMises
                | Self::GTest
        )
    }

    /// Whether a p-value equal to the threshold is drift (Evidently's `<=`
    /// for KS and Cramér-von Mises, `<` elsewhere).
    fn drifts_at_threshold(self) -> bool {
        matches!(self, Self::Ks | Self::CramerVonMises)
    }

    /// Whether the method tests counts of categories (no degrees of freedom
    /// with a single category).
    fn tests_counts(self) -> bool {
        matches!(
            self,
            Self::ChiSquare | Self::Chi2Contingency | Self::ZTest | Self::GTest
        )
    }

    /// Whether the method applies to a numeric column: KS, Wasserstein,
    /// PSI, Jensen-Shannon, Hellinger, Anderson-Darling, Cramér-von Mises,
    /// and the count tests Evidently's rule picks for few distinct values
    /// (chi-square, z, and the contingency test).
    pub fn fits_numeric(self) -> bool {
        self != Self::GTest
    }

    /// Whether the method applies to a categorical column: chi-square,
    /// G-test, contingency test, PSI, Jensen-Shannon, Hellinger, z.
    pub fn fits_categorical(self) -> bool {
        !matches!(
            self,
            Self::Ks | Self::Wasserstein | Self::Anderson | Self::CramerVonMises
        )
    }
}

/// What a test result says about drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The value crossed the threshold.
    Drift,
    /// The value did not cross the threshold.
    NoDrift,
    /// The test is undefined for these inputs (a NaN p-value or distance, or
    /// no degrees of freedom): neither drift nor no drift.
    NotTestable,
}

impl Verdict {
    /// The verdict of a p-value: drift below `threshold` (or at it when
    /// `inclusive`), not testable when NaN.
    pub fn from_p_value(p: f64, threshold: f64, inclusive: bool) -> Self {
        if p.is_nan() {
            Self::NotTestable
        } else if p < threshold || (inclusive && p == threshold) {
            Self::Drift
        } else {
            Self::NoDrift
        }
    }

    /// The verdict of a distance: drift at or above `threshold`, not
    /// testable when NaN.
    pub fn from_distance(d: f64, threshold: f64) -> Self {
        if d.is_nan() {
            Self::NotTestable
        } else if d >= threshold {
            Self::Drift
        } else {
            Self::NoDrift
        }
    }

    /// Whether this is [`Verdict::Drift`].
    pub fn is_drift(self) -> bool {
        self == Self::Drift
    }
}

/// Result for one column.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColumnDrift {
    /// Method used.
    pub method: DriftMethod,
    /// The test statistic: KS D, chi-square or G, z, the standardised
    /// Anderson-Darling A2, the Cramér-von Mises T; for distance methods
    /// the distance (NaN when undefined).
    pub statistic: f64,
    /// p-value or distance (NaN when the method is undefined on the data).
    pub value: f64,
    /// Threshold applied.
    pub threshold: f64,
    /// Whether the column drifted (`false` when not testable, as Evidently).
    pub drifted: bool,
    /// Drift, no drift, or not testable.
    pub verdict: Verdict,
}

fn key(v: f64) -> u64 {
    if v == 0.0 { 0 } else { v.to_bits() }
}

fn distinct(data: &ColumnData) -> usize {
    match data {
        ColumnData::Numeric(r, c) => r
            .iter()
            .chain(c)
            .map(|v| key(*v))
            .collect::<BTreeSet<_>>()
            .len(),
        ColumnData::Categorical(r, c) => r.iter().chain(c).collect::<BTreeSet<_>>().len(),
    }
}

/// Evidently's default method for a numeric column with `reference_rows`
/// reference values and `distinct` distinct values in both samples.
pub fn default_numeric_method(reference_rows: u64, distinct: usize) -> DriftMethod {
    match (reference_rows <= 1000, distinct) {
        (true, n) if n > 5 => DriftMethod::Ks,
        (true, n) if n > 2 => DriftMethod::ChiSquare,
        (true, _) => DriftMethod::ZTest,
        (false, n) if n > 5 => DriftMethod::Wasserstein,
        (false, _) => DriftMethod::JensenShannon,
    }
}

/// Evidently's default method for a categorical column.
pub fn default_categorical_method(reference_rows: u64, distinct: usize) -> DriftMethod {
    match (reference_rows <= 1000, distinct) {
        (true, n) if n > 2 => DriftMethod::ChiSquare,
        (true, _) => DriftMethod::ZTest,
        (false, _) => DriftMethod::JensenShannon,
    }
}

/// Evidently's default method for a column.
pub fn default_method(data: &ColumnData) -> DriftMethod {
    let n = distinct(data);
    match data {
        ColumnData::Numeric(r, _) => default_numeric_method(r.len() as u64, n),
        ColumnData::Categorical(r, _) => default_categorical_method(r.len() as u64, n),
    }
}

/// Drift of one column with `method` (or the default) and `threshold` (or
/// the method's default). Numeric data goes through [`numeric_drift`] with
/// the reference sorted, categorical data through [`categorical_drift`] on
/// uncapped counts, so the three agree exactly.
pub fn column_drift(
    data: &ColumnData,
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    match data {
        ColumnData::Numeric(r, c) => {
            check_sample(r, "reference")?;
            let mut sorted = r.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            numeric_drift(&sorted, c, method, threshold)
        }
        ColumnData::Categorical(r, c) => {
            let counts = |v: &[String]| {
                let mut m: BTreeMap<&str, u64> = BTreeMap::new();
                v.iter().for_each(|s| *m.entry(s).or_default() += 1);
                let mut cc = CategoryCounts::new(m.len());
                m.iter().for_each(|(k, n)| cc.add(k, *n));
                cc
            };
            categorical_drift(&counts(r), &counts(c), method, threshold)
        }
    }
}

fn not_fitting(method: DriftMethod, kind: &str) -> StatsError {
    StatsError::InvalidArgument {
        name: "method",
        reason: format!("`{}` does not apply to a {kind} column", method.name()),
    }
}

/// Counts of each distinct value of two sorted samples, in order.
fn value_counts(rs: &[f64], cs: &[f64]) -> (Vec<u64>, Vec<u64>) {
    let (mut i, mut j) = (0usize, 0usize);
    let (mut rc, mut cc) = (Vec::new(), Vec::new());
    while i < rs.len() || j < cs.len() {
        let z = match (rs.get(i), cs.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        let (i0, j0) = (i, j);
        while i < rs.len() && rs[i] == z {
            i += 1;
        }
        while j < cs.len() && cs[j] == z {
            j += 1;
        }
        rc.push((i - i0) as u64);
        cc.push((j - j0) as u64);
    }
    (rc, cc)
}

/// Drift of a numeric column from its sorted training values (see the
/// module docs): `reference_sorted` must be sorted ascending and free of
/// NaN (as [`Reference::numeric`] keeps it); it is not sorted again.
pub fn numeric_drift(
    reference_sorted: &[f64],
    current: &[f64],
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    numeric_drift_sampled(
        reference_sorted,
        reference_sorted.len() as u64,
        current,
        method,
        threshold,
    )
}

/// [`numeric_drift`] against a sample of `reference_count` training values:
/// the default method is chosen by that count (as Evidently chooses by the
/// training rows), the test runs on the sample.
pub fn numeric_drift_sampled(
    reference_sorted: &[f64],
    reference_count: u64,
    current: &[f64],
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    check_sorted(reference_sorted, "reference")?;
    check_sample(current, "current")?;
    let mut cur = current.to_vec();
    cur.sort_unstable_by(f64::total_cmp);
    let rs = reference_sorted;
    let counts = || value_counts(rs, &cur);
    let method = match method {
        Some(m) => m,
        None => default_numeric_method(reference_count.max(rs.len() as u64), counts().0.len()),
    };
    if !method.fits_numeric() {
        return Err(not_fitting(method, "numeric"));
    }
    let (statistic, value, buckets) = match method {
        DriftMethod::Ks => {
            let r = ks_2samp_sorted(rs, &cur, Alternative::TwoSided, KsMethod::Auto)?;
            (r.statistic, r.p_value, None)
        }
        DriftMethod::Anderson => {
            let r = anderson_ksamp_sorted(rs, &cur, true)?;
            (r.statistic, r.significance_level, None)
        }
        DriftMethod::CramerVonMises => {
            let r = cramervonmises_2samp_sorted(rs, &cur, CvmMethod::Auto)?;
            (r.statistic, r.p_value, None)
        }
        DriftMethod::Wasserstein => {
            let d = distance::wasserstein_normed_sorted(rs, &cur)?;
            (d, d, None)
        }
        DriftMethod::Hellinger => {
            let d = distance::evidently_hellinger_sorted(rs, &cur)?;
            (d, d, None)
        }
        DriftMethod::Psi => {
            let d = distance::evidently_psi(&distance::evidently_bins_sorted(rs, &cur)?);
            (d, d, None)
        }
        DriftMethod::JensenShannon => {
            let d =
                distance::evidently_jensen_shannon(&distance::evidently_bins_sorted(rs, &cur)?)?;
            (d, d, None)
        }
        _ => {
            let (rc, cc) = counts();
            let (s, p) = counts_test(method, &rc, &cc)?;
            (s, p, Some(rc.len()))
        }
    };
    Ok(verdict(method, statistic, value, threshold, buckets))
}

/// Drift of a categorical column from capped counts (see the module docs).
/// An empty side is [`StatsError::EmptySample`].
pub fn categorical_drift(
    reference: &CategoryCounts,
    current: &CategoryCounts,
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    if reference.total() == 0 {
        return Err(StatsError::EmptySample { name: "reference" });
    }
    if current.total() == 0 {
        return Err(StatsError::EmptySample { name: "current" });
    }
    let (rc, cc) = reference.aligned(current).buckets();
    let method = method.unwrap_or_else(|| default_categorical_method(reference.total(), rc.len()));
    if !method.fits_categorical() {
        return Err(not_fitting(method, "categorical"));
    }
    let (statistic, value) = match method {
        DriftMethod::Psi | DriftMethod::JensenShannon => {
            let share = |c: &[u64]| {
                let n = c.iter().sum::<u64>() as f64;
                c.iter().map(|v| *v as f64 / n).collect()
            };
            let bins = Binned {
                reference: share(&rc),
                current: share(&cc),
            };
            let d = if method == DriftMethod::Psi {
                distance::evidently_psi(&bins)
            } else {
                distance::evidently_jensen_shannon(&bins)?
            };
            (d, d)
        }
        DriftMethod::Hellinger => {
            let f = |c: &[u64]| c.iter().map(|v| *v as f64).collect::<Vec<_>>();
            let d = distance::hellinger(&f(&rc), &f(&cc))?;
            (d, d)
        }
        _ => counts_test(method, &rc, &cc)?,
    };
    Ok(verdict(method, statistic, value, threshold, Some(rc.len())))
}

/// `(statistic, p)` of a test on counts per category (both non-empty).
fn counts_test(method: DriftMethod, rc: &[u64], cc: &[u64]) -> Result<(f64, f64), StatsError> {
    let f = |c: &[u64]| c.iter().map(|v| *v as f64).collect::<Vec<_>>();
    let (rn, cn) = (rc.iter().sum::<u64>() as f64, cc.iter().sum::<u64>() as f64);
    match method {
        DriftMethod::ChiSquare | DriftMethod::GTest => {
            // Evidently: f_exp = reference counts * len(current) / len(reference).
            let scale = cn / rn;
            let exp: Vec<f64> = rc.iter().map(|v| *v as f64 * scale).collect();
            let kind = if method == DriftMethod::GTest {
                Divergence::LogLikelihood
            } else {
                Divergence::Pearson
            };
            let r = chisquare(&f(cc), Some(&exp), kind)?;
            Ok((r.statistic, r.p_value))
        }
        DriftMethod::Chi2Contingency => {
            let r = chi2_contingency(&[f(rc), f(cc)], true, Divergence::Pearson)?;
            Ok((r.statistic, r.p_value))
        }
        DriftMethod::ZTest => Ok(z_test(rc, cc)),
        other => Err(StatsError::InvalidArgument {
            name: "method",
            reason: format!("`{}` is not a test on counts", other.name()),
        }),
    }
}

/// The result of a method's statistic and value; `buckets` is the number
/// of categories (or distinct values) for tests on counts.
fn verdict(
    method: DriftMethod,
    statistic: f64,
    value: f64,
    threshold: Option<f64>,
    buckets: Option<usize>,
) -> ColumnDrift {
    let threshold = threshold.unwrap_or(method.default_threshold());
    let verdict = if method.tests_counts() && buckets.is_some_and(|b| b < 2) {
        // No degrees of freedom, whatever p the convention reports.
        Verdict::NotTestable
    } else if method.is_p_value() {
        Verdict::from_p_value(value, threshold, method.drifts_at_threshold())
    } else {
        Verdict::from_distance(value, threshold)
    };
    ColumnDrift {
        method,
        statistic,
        value,
        threshold,
        drifted: verdict.is_drift(),
        verdict,
    }
}

/// Evidently's two-proportion z-test (`_z_stat_test`) on counts per
/// category, the first category against the rest: the shares `p1`, `p2`
/// of the rest, pooled variance, `p = 2 (1 - Phi(|z|))`; `(z, p)`. With a
/// single category on both sides, p = 1 (Evidently's convention) and z NaN.
fn z_test(rc: &[u64], cc: &[u64]) -> (f64, f64) {
    if rc.len() < 2 {
        return (f64::NAN, 1.0);
    }
    let (n1, n2) = (rc.iter().sum::<u64>() as f64, cc.iter().sum::<u64>() as f64);
    let p1 = (n1 - rc[0] as f64) / n1;
    let p2 = (n2 - cc[0] as f64) / n2;
    let p = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    // Evidently computes 1 - cdf, not sf; keep its underflow behaviour.
    (z, 2.0 * (1.0 - std_normal_cdf(z.abs())))
}

/// Dataset-level drift.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetDrift {
    /// Columns that drifted.
    pub drifted_count: usize,
    /// Columns whose test was not testable.
    pub not_testable_count: usize,
    /// `drifted_count / columns` (over all columns, as Evidently).
    pub drifted_share: f64,
    /// Whether `drifted_share >= drift_share`.
    pub dataset_drifted: bool,
    /// Drift or no drift by the share; not testable when no column was.
    pub verdict: Verdict,
}

/// Combines column results into the dataset verdict.
pub fn dataset_drift(columns: &[ColumnDrift], drift_share: f64) -> DatasetDrift {
    let drifted_count = columns.iter().filter(|c| c.drifted).count();
    let not_testable_count = columns
        .iter()
        .filter(|c| c.verdict == Verdict::NotTestable)
        .count();
    let drifted_share = if columns.is_empty() {
        0.0
    } else {
        drifted_count as f64 / columns.len() as f64
    };
    let dataset_drifted = drifted_share >= drift_share;
    let verdict = if !columns.is_empty() && not_testable_count == columns.len() {
        Verdict::NotTestable
    } else if dataset_drifted {
        Verdict::Drift
    } else {
        Verdict::NoDrift
    };
    DatasetDrift {
        drifted_count,
        not_testable_count,
        drifted_share,
        dataset_drifted,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// One category in both samples: the goodness of fit is NaN (scipy),
    /// `chi2_contingency` and Evidently's z-test say p = 1 by convention;
    /// every one of them is reported not testable, never "no drift".
    #[test]
    fn single_category_is_not_testable() {
        let data = ColumnData::Categorical(cats(&["a"; 3]), cats(&["a"; 10]));
        for method in [
            DriftMethod::ChiSquare,
            DriftMethod::Chi2Contingency,
            DriftMethod::ZTest,
        ] {
            let d = column_drift(&data, Some(method), None).unwrap();
            assert_eq!(d.verdict, Verdict::NotTestable, "{method:?}: {d:?}");
            assert!(!d.drifted);
        }
        let gof = column_drift(&data, Some(DriftMethod::ChiSquare), None).unwrap();
        assert!(gof.value.is_nan(), "{gof:?}");
        let z = column_drift(&data, None, None).unwrap();
        assert_eq!((z.method, z.value), (DriftMethod::ZTest, 1.0));
        // Two categories are testable.
        let two = ColumnData::Categorical(cats(&["a", "b", "a"]), cats(&["a", "b"]));
        let d = column_drift(&two, Some(DriftMethod::ChiSquare), None).unwrap();
        assert_eq!(d.verdict, Verdict::NoDrift);
    }

    /// A deterministic pseudo-random sample: `n` values of `f(u)` for `u`
    /// uniform in [0, 1) from a 64-bit LCG.
    fn sample(n: usize, seed: u64, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                f((state >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    }

    fn sorted(v: &[f64]) -> Vec<f64> {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    }

    /// For every numeric method, `numeric_drift` on the sorted reference is
    /// `column_drift` on the raw values, and its value is the raw kernel's
    /// on the unsorted samples: many distinct values (Sturges bins), few
    /// distinct values (one bin per value, count tests), and the default
    /// choice at both reference sizes.
    #[test]
    fn numeric_drift_equals_column_drift_and_the_kernels() {
        use crate::stats::anderson::anderson_ksamp;
        use crate::stats::cramer_von_mises::cramervonmises_2samp;
        use crate::stats::ks::ks_2samp;
        let wide = (
            sample(700, 1, |u| (u * 50.0).floor() / 4.0),
            sample(240, 2, |u| (u * 46.0).floor() / 4.0 + 1.5),
        );
        let few = (
            sample(300, 3, |u| (u * 5.0).floor()),
            sample(90, 4, |u| (u * u * 5.0).floor()),
        );
        let small = (sample(15, 5, |u| u * 3.0), sample(18, 6, |u| u * 3.0 + 0.8));
        for (r, c) in [&wide, &few, &small] {
            let rs = sorted(r);
            for method in DriftMethod::ALL.into_iter().filter(|m| m.fits_numeric()) {
                let fast = numeric_drift(&rs, c, Some(method), None).unwrap();
                let raw = column_drift(
                    &ColumnData::Numeric(r.clone(), c.clone()),
                    Some(method),
                    None,
                )
                .unwrap();
                assert_eq!(fast, raw, "{method:?}");
                let kernel = match method {
                    DriftMethod::Ks => {
                        ks_2samp(r, c, Alternative::TwoSided, KsMethod::Auto)
                            .unwrap()
                            .p_value
                    }
                    DriftMethod::Anderson => {
                        anderson_ksamp(&[r, c], true).unwrap().significance_level
                    }
                    DriftMethod::CramerVonMises => {
                        cramervonmises_2samp(r, c, CvmMethod::Auto).unwrap().p_value
                    }
                    DriftMethod::Wasserstein => distance::wasserstein_normed(r, c).unwrap(),
                    DriftMethod::Hellinger => distance::evidently_hellinger(r, c).unwrap(),
                    DriftMethod::Psi => {
                        distance::evidently_psi(&distance::evidently_bins(r, c).unwrap())
                    }
                    DriftMethod::JensenShannon => {
                        distance::evidently_jensen_shannon(&distance::evidently_bins(r, c).unwrap())
                            .unwrap()
                    }
                    _ => continue,
                };
                assert_eq!(fast.value, kernel, "{method:?}");
                if !method.is_p_value() {
                    assert_eq!(fast.statistic, fast.value, "{method:?}");
                }
            }
        }
        // Default choice, as Evidently's rule.
        let pick =
            |r: &Vec<f64>, c: &Vec<f64>| numeric_drift(&sorted(r), c, None, None).unwrap().method;
        assert_eq!(pick(&wide.0, &wide.1), DriftMethod::Ks);
        assert_eq!(pick(&few.0, &few.1), DriftMethod::ChiSquare);
        let big = sample(1500, 7, |u| u);
        assert_eq!(pick(&big, &wide.1), DriftMethod::Wasserstein);
        let big_few = sample(1500, 8, |u| (u * 4.0).floor());
        assert_eq!(pick(&big_few, &few.1), DriftMethod::JensenShannon);
        let binary = sample(50, 9, |u| (u * 2.0).floor());
        assert_eq!(pick(&binary, &binary), DriftMethod::ZTest);
    }

    /// The fast path refuses an unsorted reference and methods that do not
    /// fit, naming the method.
    #[test]
    fn numeric_drift_checks_its_inputs() {
        let r = [3.0, 1.0, 2.0];
        assert!(matches!(
            numeric_drift(&r, &[1.0], Some(DriftMethod::Ks), None),
            Err(StatsError::InvalidArgument {
                name: "reference",
                ..
            })
        ));
        match numeric_drift(&[1.0, 2.0], &[1.0], Some(DriftMethod::GTest), None) {
            Err(StatsError::InvalidArgument { name, reason }) => {
                assert_eq!(name, "method");
                assert!(reason.contains("g_test"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            numeric_drift(&[1.0, 2.0], &[], None, None),
            Err(StatsError::EmptySample { name: "current" })
        ));
        assert!(matches!(
            numeric_drift(&[1.0, 2.0], &[f64::NAN], None, None),
            Err(StatsError::NanInput { .. })
        ));
    }

    fn counts_of(v: &[&str], cap: usize) -> CategoryCounts {
        let mut c = CategoryCounts::new(cap);
        v.iter().for_each(|s| c.add(s, 1));
        c
    }

    /// On uncapped counts, `categorical_drift` is `column_drift` on the raw
    /// categories; the G-test is `power_divergence` with the log-likelihood
    /// on the same expected counts as the chi-square.
    #[test]
    fn categorical_drift_equals_column_drift() {
        let r: Vec<&str> = "aabbbccccdddddeee"
            .split("")
            .filter(|s| !s.is_empty())
            .collect();
        let c: Vec<&str> = "abbcccccccdddeefff"
            .split("")
            .filter(|s| !s.is_empty())
            .collect();
        let (rc, cc) = (counts_of(&r, 100), counts_of(&c, 100));
        let data = ColumnData::Categorical(cats(&r), cats(&c));
        for method in DriftMethod::ALL
            .into_iter()
            .filter(|m| m.fits_categorical())
        {
            let a = categorical_drift(&rc, &cc, Some(method), None).unwrap();
            let b = column_drift(&data, Some(method), None).unwrap();
            assert_eq!(a, b, "{method:?}");
            assert!(
                (0.0..=1.0).contains(&a.value) || !method.is_p_value(),
                "{a:?}"
            );
        }
        // Categories a..f: reference counts 2,3,4,5,3,0; current 1,2,7,3,2,3.
        let exp: Vec<f64> = [2.0, 3.0, 4.0, 5.0, 3.0, 0.0]
            .iter()
            .map(|v| v * 18.0 / 17.0)
            .collect();
        let g = chisquare(
            &[1.0, 2.0, 7.0, 3.0, 2.0, 3.0],
            Some(&exp),
            Divergence::LogLikelihood,
        )
        .unwrap();
        let d = categorical_drift(&rc, &cc, Some(DriftMethod::GTest), None).unwrap();
        assert_eq!((d.statistic, d.value), (g.statistic, g.p_value));
        // A category new in current: infinite statistic, p = 0, drift.
        assert_eq!(
            (d.statistic, d.value, d.verdict),
            (f64::INFINITY, 0.0, Verdict::Drift)
        );
        // Default: chi-square for more than two categories at <= 1000 rows.
        let d = categorical_drift(&rc, &cc, None, None).unwrap();
        assert_eq!((d.method, d.threshold), (DriftMethod::ChiSquare, 0.05));
    }

    /// Capped counts: the test runs on the categories kept on both sides
    /// plus one `other` bucket, and equals the raw test where every other
    /// category is relabelled to one bucket.
    #[test]
    fn capped_categorical_drift_uses_common_buckets() {
        use crate::stats::summary::category_hash;
        let names: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
        let r: Vec<&str> = (0..600)
            .map(|i| names[(i * 7 + i / 5) % 30].as_str())
            .collect();
        let c: Vec<&str> = (0..400)
            .map(|i| names[(i * 11 + i / 3) % 25].as_str())
            .collect();
        let (rc, cc) = (counts_of(&r, 8), counts_of(&c, 12));
        assert!(rc.is_capped() && cc.is_capped());
        let aligned = rc.aligned(&cc);
        // Every bucket but `other` holds exact counts on both sides (a
        // category may be absent from one side: an exact zero).
        assert!(aligned.categories.len() >= 8, "{aligned:?}");
        for (i, k) in aligned.categories.iter().enumerate() {
            let exact = |v: &[&str]| v.iter().filter(|s| **s == k).count() as u64;
            assert_eq!(
                (aligned.reference[i], aligned.current[i]),
                (exact(&r), exact(&c))
            );
        }
        let bound = rc.kept_bound().unwrap().min(cc.kept_bound().unwrap());
        // '~' sorts after the kept names, so the bucket comes last as `other`.
        let relabel = |v: &[&str]| -> Vec<String> {
            v.iter()
                .map(|s| {
                    if (category_hash(s), *s) <= bound {
                        s.to_string()
                    } else {
                        "~other".to_string()
                    }
                })
                .collect()
        };
        let data = ColumnData::Categorical(relabel(&r), relabel(&c));
        for method in DriftMethod::ALL
            .into_iter()
            .filter(|m| m.fits_categorical())
        {
            let a = categorical_drift(&rc, &cc, Some(method), None).unwrap();
            let b = column_drift(&data, Some(method), None).unwrap();
            assert_eq!(a, b, "{method:?}");
        }
        // Over 1000 reference rows: Jensen-Shannon by default.
        let many: Vec<&str> = (0..1200).map(|i| names[i % 30].as_str()).collect();
        let d = categorical_drift(&counts_of(&many, 8), &cc, None, None).unwrap();
        assert_eq!(d.method, DriftMethod::JensenShannon);
    }

    #[test]
    fn categorical_drift_errors() {
        let r = counts_of(&["a", "b"], 10);
        assert_eq!(
            categorical_drift(&r, &CategoryCounts::new(10), None, None),
            Err(StatsError::EmptySample { name: "current" })
        );
        match categorical_drift(&r, &r, Some(DriftMethod::Anderson), None) {
            Err(StatsError::InvalidArgument { reason, .. }) => {
                assert!(reason.contains("anderson"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let e = column_drift(
            &ColumnData::Categorical(cats(&["a"]), cats(&["b"])),
            Some(DriftMethod::Ks),
            None,
        );
        assert!(matches!(e, Err(StatsError::InvalidArgument { .. })));
    }

    /// Config names round-trip, the former serde names are unchanged, and
    /// thresholds and comparisons are Evidently's.
    #[test]
    fn method_names_and_defaults() {
        for m in DriftMethod::ALL {
            assert_eq!(DriftMethod::parse(m.name()), Some(m));
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(serde_json::from_value::<DriftMethod>(json).unwrap(), m);
            assert!(m.fits_numeric() || m.fits_categorical());
        }
        assert_eq!(DriftMethod::parse("js"), Some(DriftMethod::JensenShannon));
        assert_eq!(DriftMethod::parse("chi2"), Some(DriftMethod::ChiSquare));
        assert_eq!(DriftMethod::parse("z"), Some(DriftMethod::ZTest));
        assert_eq!(DriftMethod::parse("jensen_shannon"), None);
        let serde_names: Vec<String> = [
            DriftMethod::Ks,
            DriftMethod::ChiSquare,
            DriftMethod::Chi2Contingency,
            DriftMethod::ZTest,
            DriftMethod::Wasserstein,
            DriftMethod::JensenShannon,
            DriftMethod::Psi,
            DriftMethod::CramerVonMises,
            DriftMethod::GTest,
        ]
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        assert_eq!(
            serde_names,
            [
                "ks",
                "chi_square",
                "chi2_contingency",
                "z_test",
                "wasserstein",
                "jensen_shannon",
                "psi",
                "cramer_von_mises",
                "g_test"
            ]
        );
        let numeric: Vec<&str> = DriftMethod::ALL
            .iter()
            .filter(|m| m.fits_numeric() && !m.fits_categorical())
            .map(|m| m.name())
            .collect();
        assert_eq!(
            numeric,
            ["ks", "wasserstein", "anderson", "cramer_von_mises"]
        );
        assert!(!DriftMethod::GTest.fits_numeric());
        for (m, t) in [
            (DriftMethod::Ks, 0.05),
            (DriftMethod::ChiSquare, 0.05),
            (DriftMethod::ZTest, 0.05),
            (DriftMethod::Anderson, 0.1),
            (DriftMethod::CramerVonMises, 0.1),
            (DriftMethod::GTest, 0.1),
            (DriftMethod::Hellinger, 0.1),
        ] {
            assert_eq!(m.default_threshold(), t, "{m:?}");
        }
        // p exactly at the threshold: drift for KS and CvM (<=), not for AD (<).
        let at = |m: DriftMethod| verdict(m, 0.0, 0.1, Some(0.1), None).verdict;
        assert_eq!(at(DriftMethod::CramerVonMises), Verdict::Drift);
        assert_eq!(at(DriftMethod::Anderson), Verdict::NoDrift);
        assert_eq!(at(DriftMethod::Hellinger), Verdict::Drift);
    }

    /// The default method follows the training values a profile was
    /// sampled from, as Evidently's follows the training rows.
    #[test]
    fn a_sampled_profile_picks_the_method_of_its_training_rows() {
        let sorted: Vec<f64> = (0..800).map(|i| f64::from(i) / 8.0).collect();
        let current: Vec<f64> = (0..400).map(|i| f64::from(i) / 4.0 + 0.3).collect();
        let m = |count: u64| {
            numeric_drift_sampled(&sorted, count, &current, None, None)
                .unwrap()
                .method
        };
        assert_eq!(m(800), DriftMethod::Ks);
        assert_eq!(m(1_000), DriftMethod::Ks);
        assert_eq!(m(1_001), DriftMethod::Wasserstein);
        assert_eq!(m(1_000_000), DriftMethod::Wasserstein);
        assert_eq!(
            numeric_drift(&sorted, &current, None, None).unwrap().method,
            DriftMethod::Ks
        );
    }

    #[test]
    fn reference_profiles() {
        let r = Reference::numeric(vec![3.0, f64::NAN, 1.0, 2.0]);
        assert_eq!(
            r,
            Reference::Numeric {
                sorted: vec![1.0, 2.0, 3.0],
                count: None,
            }
        );
        let c = Reference::Categorical(counts_of(&["x", "y", "x"], 5));
        for p in [r, c] {
            let back: Reference =
                serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn verdicts_of_values() {
        assert_eq!(
            Verdict::from_p_value(f64::NAN, 0.05, false),
            Verdict::NotTestable
        );
        assert_eq!(Verdict::from_p_value(0.05, 0.05, true), Verdict::Drift);
        assert_eq!(Verdict::from_p_value(0.05, 0.05, false), Verdict::NoDrift);
        assert_eq!(Verdict::from_distance(f64::NAN, 0.1), Verdict::NotTestable);
        assert_eq!(Verdict::from_distance(0.1, 0.1), Verdict::Drift);
        assert_eq!(
            serde_json::to_value(Verdict::NotTestable).unwrap(),
            serde_json::json!("not_testable")
        );
    }

    #[test]
    fn dataset_counts_not_testable_columns() {
        let col = |verdict: Verdict| ColumnDrift {
            method: DriftMethod::ChiSquare,
            statistic: f64::NAN,
            value: f64::NAN,
            threshold: 0.05,
            drifted: verdict.is_drift(),
            verdict,
        };
        let ds = dataset_drift(&[col(Verdict::NotTestable), col(Verdict::Drift)], 0.5);
        assert_eq!((ds.drifted_count, ds.not_testable_count), (1, 1));
        assert_eq!(ds.verdict, Verdict::Drift);
        let none = dataset_drift(&[col(Verdict::NotTestable)], 0.5);
        assert_eq!(none.verdict, Verdict::NotTestable);
        assert!(!none.dataset_drifted);
    }
}
