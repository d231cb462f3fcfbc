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
//! p-value methods drift below their threshold (0.05; KS at or below);
//! distances drift at or above theirs (0.1). The dataset drifts when the
//! share of drifted columns reaches `drift_share` (0.5).
//!
//! **Not testable.** Each result carries a [`Verdict`]: `drift`, `no_drift`
//! or `not_testable`. A NaN value (the kernels return what scipy returns on
//! degenerate input, e.g. p = NaN for a goodness of fit over one category)
//! is not testable rather than "no drift", and so is a test on counts
//! (`chi_square`, `chi2_contingency`, `z_test`) when reference and current
//! hold a single category between them: such a test has no degrees of
//! freedom, whatever p-value convention the reference library reports
//! (scipy's `chi2_contingency` and Evidently's z-test say p = 1). `drifted`
//! stays `false` there, as in Evidently, and the dataset share counts
//! drifted columns over all columns, as Evidently does; the dataset is not
//! testable only when none of its columns is.

use std::collections::BTreeSet;

use super::chi_square::{Divergence, chi2_contingency, chisquare};
use super::distance::{self, Binned};
use super::ks::{KsMethod, ks_2samp};
use super::proportions::std_normal_cdf;
use super::{Alternative, StatsError};

/// A column's values in both samples.
#[derive(Debug, Clone)]
pub enum ColumnData {
    /// Numbers (NaN = missing, dropped).
    Numeric(Vec<f64>, Vec<f64>),
    /// Categories (missing values dropped by the caller).
    Categorical(Vec<String>, Vec<String>),
}

/// A drift method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
}

impl DriftMethod {
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
        }
    }

    /// Default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::Ks | Self::ChiSquare | Self::Chi2Contingency | Self::ZTest => 0.05,
            _ => 0.1,
        }
    }

    /// Parses a method's configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ks" => Self::Ks,
            "wasserstein" => Self::Wasserstein,
            "psi" => Self::Psi,
            "js" => Self::JensenShannon,
            "chi2" => Self::ChiSquare,
            "z" => Self::ZTest,
            _ => return None,
        })
    }

    /// The method's configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ks => "ks",
            Self::Wasserstein => "wasserstein",
            Self::Psi => "psi",
            Self::JensenShannon => "js",
            Self::ChiSquare => "chi2",
            Self::Chi2Contingency => "chi2_contingency",
            Self::ZTest => "z",
        }
    }

    /// Whether the method applies to a numeric column.
    pub fn fits_numeric(self) -> bool {
        true
    }

    /// Whether the method applies to a categorical column.
    pub fn fits_categorical(self) -> bool {
        !matches!(self, Self::Ks | Self::Wasserstein)
    }

    /// Whether the value is a p-value (small = drift) rather than a distance.
    pub fn is_p_value(self) -> bool {
        matches!(
            self,
            Self::Ks | Self::ChiSquare | Self::Chi2Contingency | Self::ZTest
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

/// A column's training profile.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// A numeric column's values, sorted ascending, without NaN.
    Numeric {
        /// The values.
        sorted: Vec<f64>,
    },
    /// A categorical column's counts.
    Categorical(super::summary::CategoryCounts),
}

/// Drift of a numeric column: `current` against the sorted reference.
pub fn numeric_drift(
    reference_sorted: &[f64],
    current: &[f64],
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    column_drift(
        &ColumnData::Numeric(reference_sorted.to_vec(), current.to_vec()),
        method,
        threshold,
    )
}

/// Drift of a categorical column from counts (one `other` bucket when a
/// side overflowed its cap).
pub fn categorical_drift(
    reference: &super::summary::CategoryCounts,
    current: &super::summary::CategoryCounts,
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    let a = reference.aligned(current);
    let names: Vec<String> = a
        .categories
        .iter()
        .cloned()
        .chain(a.other.map(|_| "\u{0}other".to_string()))
        .collect();
    let (r, c) = a.buckets();
    let expand = |counts: &[u64]| -> Vec<String> {
        names
            .iter()
            .zip(counts)
            .flat_map(|(n, k)| std::iter::repeat_n(n.clone(), *k as usize))
            .collect()
    };
    column_drift(
        &ColumnData::Categorical(expand(&r), expand(&c)),
        method,
        threshold,
    )
}

/// Result for one column.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColumnDrift {
    /// Method used.
    pub method: DriftMethod,
    /// The test statistic (the distance itself for distance methods).
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

/// Evidently's default method for a column.
pub fn default_method(data: &ColumnData) -> DriftMethod {
    let n = distinct(data);
    match data {
        ColumnData::Numeric(r, _) if r.len() <= 1000 => {
            if n > 5 {
                DriftMethod::Ks
            } else if n > 2 {
                DriftMethod::ChiSquare
            } else {
                DriftMethod::ZTest
            }
        }
        ColumnData::Categorical(r, _) if r.len() <= 1000 => {
            if n > 2 {
                DriftMethod::ChiSquare
            } else {
                DriftMethod::ZTest
            }
        }
        ColumnData::Numeric(..) if n > 5 => DriftMethod::Wasserstein,
        _ => DriftMethod::JensenShannon,
    }
}

/// Categories as strings (numbers by their bits), for count-based methods.
fn as_categories(data: &ColumnData) -> (Vec<String>, Vec<String>) {
    match data {
        ColumnData::Numeric(r, c) => {
            let f = |v: &Vec<f64>| v.iter().map(|x| format!("{:016x}", key(*x))).collect();
            (f(r), f(c))
        }
        ColumnData::Categorical(r, c) => (r.clone(), c.clone()),
    }
}

fn binned(data: &ColumnData) -> Result<Binned, StatsError> {
    match data {
        ColumnData::Numeric(r, c) => distance::evidently_bins(r, c),
        ColumnData::Categorical(r, c) => distance::evidently_bins_categorical(r, c),
    }
}

/// Drift of one column with `method` (or the default) and `threshold` (or
/// the method's default).
pub fn column_drift(
    data: &ColumnData,
    method: Option<DriftMethod>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, StatsError> {
    let method = method.unwrap_or_else(|| default_method(data));
    let threshold = threshold.unwrap_or(method.default_threshold());
    let value = match method {
        DriftMethod::Ks => match data {
            ColumnData::Numeric(r, c) => {
                ks_2samp(r, c, Alternative::TwoSided, KsMethod::Auto)?.p_value
            }
            ColumnData::Categorical(..) => {
                return Err(StatsError::InvalidArgument {
                    name: "method",
                    reason: "ks needs a numeric column".into(),
                });
            }
        },
        DriftMethod::Wasserstein => match data {
            ColumnData::Numeric(r, c) => distance::wasserstein_normed(r, c)?,
            ColumnData::Categorical(..) => {
                return Err(StatsError::InvalidArgument {
                    name: "method",
                    reason: "wasserstein needs a numeric column".into(),
                });
            }
        },
        DriftMethod::ChiSquare => {
            let (r, c) = as_categories(data);
            let (_, rc, cc) = distance::category_counts(&r, &c);
            let scale = c.len() as f64 / r.len() as f64;
            let exp: Vec<f64> = rc.iter().map(|v| *v as f64 * scale).collect();
            let obs: Vec<f64> = cc.iter().map(|v| *v as f64).collect();
            chisquare(&obs, Some(&exp), Divergence::Pearson)?.p_value
        }
        DriftMethod::Chi2Contingency => {
            let (r, c) = as_categories(data);
            let (_, rc, cc) = distance::category_counts(&r, &c);
            let table = vec![
                rc.iter().map(|v| *v as f64).collect::<Vec<_>>(),
                cc.iter().map(|v| *v as f64).collect(),
            ];
            chi2_contingency(&table, true, Divergence::Pearson)?.p_value
        }
        DriftMethod::ZTest => {
            let (r, c) = as_categories(data);
            z_test(&r, &c)?
        }
        DriftMethod::JensenShannon => distance::evidently_jensen_shannon(&binned(data)?)?,
        DriftMethod::Psi => distance::evidently_psi(&binned(data)?),
    };
    let counts_test = matches!(
        method,
        DriftMethod::ChiSquare | DriftMethod::Chi2Contingency | DriftMethod::ZTest
    );
    let verdict = if counts_test && distinct(data) < 2 {
        // No degrees of freedom, whatever p the convention reports.
        Verdict::NotTestable
    } else if method.is_p_value() {
        Verdict::from_p_value(value, threshold, method == DriftMethod::Ks)
    } else {
        Verdict::from_distance(value, threshold)
    };
    Ok(ColumnDrift {
        method,
        statistic: value,
        value,
        threshold,
        drifted: verdict.is_drift(),
        verdict,
    })
}

/// Evidently's two-proportion z-test on a binary column: the share of one
/// category in each sample, pooled variance, `2 (1 - Phi(|z|))`.
fn z_test(reference: &[String], current: &[String]) -> Result<f64, StatsError> {
    if reference.is_empty() || current.is_empty() {
        return Err(StatsError::EmptySample {
            name: if reference.is_empty() {
                "reference"
            } else {
                "current"
            },
        });
    }
    let cats: BTreeSet<&String> = reference.iter().chain(current).collect();
    if cats.len() == 1 {
        return Ok(1.0);
    }
    let target = cats.into_iter().next().expect("non-empty");
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    let p1 = reference.iter().filter(|v| *v == target).count() as f64 / n1;
    let p2 = current.iter().filter(|v| *v == target).count() as f64 / n2;
    let p = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    // Evidently computes 1 - cdf, not sf; keep its underflow behaviour.
    Ok(2.0 * (1.0 - std_normal_cdf(z.abs())))
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
