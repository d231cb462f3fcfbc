//! Pure statistical kernels and mergeable summaries.
//!
//! Nothing in this module touches Arrow, DataFusion or tokio: every function
//! takes plain slices and returns a result struct with named fields, so the
//! kernels can be tested against the reference libraries (see
//! `../shared/oracle`) and reused from SQL functions (`crate::udf`), window
//! state (`crate::window`) and the CLI alike.
//!
//! * [`ks`]: two-sample Kolmogorov-Smirnov test, matching `scipy.stats.ks_2samp`
//!   (exact and asymptotic p-values and scipy's `auto` switch).
//! * [`anderson`]: the k-sample Anderson-Darling test, matching
//!   `scipy.stats.anderson_ksamp` (midrank and right variants, the
//!   interpolated p-value capped at 0.25 and floored at 0.001).
//! * [`cramer_von_mises`]: the two-sample Cramér-von Mises test, matching
//!   `scipy.stats.cramervonmises_2samp` (exact and asymptotic p-values).
//! * [`kolmogorov`]: the one-sample Kolmogorov distribution for finite `n`
//!   (`scipy.stats.kstwo`), used by the asymptotic KS p-value.
//! * [`sample`]: a deterministic, mergeable bottom-k row sample, the bounded
//!   window state from which KS runs exactly while a window holds at most `k`
//!   rows and on a uniform sample of `k` rows beyond that.
//! * [`sketch`]: a KLL quantile sketch and KS, PSI, JS and Wasserstein
//!   computed from two sketches, with the error of each stated.
//! * [`sequential`]: an always-valid confidence sequence for a difference
//!   in means (Waudby-Smith et al.), safe to watch continuously.
//! * [`detectors`]: DDM, Page-Hinkley and ADWIN over an error stream.
//! * [`distinct`]: a mergeable sample of distinct keys (KMV), for unit
//!   counts and the sample-ratio check.

pub mod anderson;
pub mod chi_square;
pub mod correction;
pub mod cramer_von_mises;
pub mod detectors;
pub mod distance;
pub mod distinct;
pub mod drift;
pub mod kolmogorov;
pub mod ks;
pub mod mann_whitney;
pub mod metrics;
pub mod noncentral_t;
pub mod proportions;
pub mod sample;
pub mod sample_size;
pub mod sequential;
pub mod sketch;
pub mod summary;
pub mod t_test;

/// Errors of the statistical kernels. Kernels never panic on data: empty
/// input, NaN and other undefined cases come back as one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A sample that must hold at least one value is empty.
    #[error("sample `{name}` is empty")]
    EmptySample {
        /// Which argument was empty.
        name: &'static str,
    },
    /// A value is NaN where the test has no defined treatment for it.
    #[error("sample `{name}` contains NaN")]
    NanInput {
        /// Which argument held the NaN.
        name: &'static str,
    },
    /// An option is outside its domain.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A sample must be non-empty and free of NaN (callers drop missing values).
pub(crate) fn check_sample(v: &[f64], name: &'static str) -> Result<(), StatsError> {
    if v.is_empty() {
        return Err(StatsError::EmptySample { name });
    }
    if v.iter().any(|x| x.is_nan()) {
        return Err(StatsError::NanInput { name });
    }
    Ok(())
}

/// Which side of the null hypothesis a test rejects, as in scipy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// `two-sided`
    #[default]
    TwoSided,
    /// `less`
    Less,
    /// `greater`
    Greater,
}

impl std::str::FromStr for Alternative {
    type Err = StatsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "two-sided" | "two_sided" => Ok(Self::TwoSided),
            "less" => Ok(Self::Less),
            "greater" => Ok(Self::Greater),
            other => Err(StatsError::InvalidArgument {
                name: "alternative",
                reason: format!("`{other}` is not one of two-sided, less, greater"),
            }),
        }
    }
}
