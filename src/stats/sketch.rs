//! A mergeable quantile sketch for numeric window state too large to keep
//! raw, and the drift measures computed from two sketches.
//!
//! The sketch is Apache DataSketches' KLL sketch (`datasketches` crate; Karnin,
//! Lang & Liberty 2016). It keeps `O(k)` values whatever the stream length,
//! merges across partitions and processes, and serialises to the DataSketches
//! binary format. While it has never compacted ([`QuantileSketch::is_exact`])
//! it holds every value and its CDF is exact; after that each CDF value
//! `F(x)` is within `eps` of the true one with 99% confidence,
//! `eps = 2.296 / k^0.9723`, as documented by DataSketches.
//!
//! mlwatch's default is `k = 1024` rather than DataSketches' 200: about 3,000
//! retained values (24 KiB) per sketch for `eps = 0.0027` instead of 0.0133,
//! because PSI on deciles magnifies rank error (a 0.013 shift of a 0.1 bin
//! moved PSI by 15% in our tests), and window state is per feature, so the
//! extra memory is small.
//!
//! When mlwatch tests exactly and when on a sketch:
//! * `ks_2samp`, `psi`, `wasserstein`, ... on raw samples (the `stats`
//!   command, the SQL aggregates, and stream windows, whose bottom-k sample
//!   holds every row up to `k` and a uniform sample beyond) are exact.
//! * The functions here compare two sketches. Both CDFs are evaluated on the
//!   union of a grid of `G = 4096` evenly spaced quantiles of each sketch
//!   (every value while the sketch is exact), which adds at most `1/G` to
//!   the rank error of a sketch in estimation mode. With
//!   `e = eps_ref + eps_cur + 1/G_ref + 1/G_cur` ([`SketchComparison::rank_error`]):
//!   - KS: `|D_sketch - D| <= e`; the p-value is the asymptotic one
//!     (`scipy`'s `method="asymp"`) of `D_sketch` at the true sizes.
//!   - PSI and JS use the reference deciles read from the reference sketch as
//!     edges; each bin proportion is off by at most `2 e`. For PSI the
//!     stated error is the first-order propagation of that: `sum over bins
//!     of 2 e (|dPSI/dcur| + |dPSI/dref|)`.
//!   - Wasserstein: `|W_sketch - W| <= e * (max - min)` over both samples.
//!
//! NaN values are not inserted; they are counted in [`QuantileSketch::nan_count`].
//! Comparing an empty sketch is an [`StatsError::EmptySample`].

use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch, SortedView};

use super::{StatsError, distance, ks};

/// Largest number of grid points read from one sketch.
const MAX_GRID: usize = 4096;

/// A KLL quantile sketch of `f64` values.
#[derive(Debug, Clone)]
pub struct QuantileSketch {
    inner: KllSketch<KllFloat<f64>>,
    nan: u64,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::with_k(Self::DEFAULT_K).expect("DEFAULT_K is a valid k")
    }
}

impl QuantileSketch {
    /// mlwatch's default accuracy parameter (see the module docs).
    pub const DEFAULT_K: u16 = 1024;

    /// A sketch with accuracy parameter `k` (8..=65535; larger is more accurate).
    pub fn with_k(k: u16) -> Result<Self, StatsError> {
        let inner = KllSketch::new(k).map_err(|e| StatsError::InvalidArgument {
            name: "k",
            reason: e.to_string(),
        })?;
        Ok(Self { inner, nan: 0 })
    }

    /// Adds one value (NaN is counted, not inserted).
    pub fn push(&mut self, x: f64) {
        match KllFloat::<f64>::new(x) {
            Ok(v) => self.inner.update(v),
            Err(_) => self.nan += 1,
        }
    }

    /// Adds every value of `xs`.
    pub fn extend(&mut self, xs: &[f64]) {
        for &x in xs {
            self.push(x);
        }
    }

    /// Folds `other` into `self`; the result summarises both streams.
    pub fn merge(&mut self, other: &QuantileSketch) {
        // KLL merges sketches of any k (the result keeps the smaller k's bound),
        // and both hold non-NaN values, so the crate has no error to return here.
        if let Err(e) = self.inner.merge(&other.inner) {
            unreachable!("KLL merge of two f64 sketches failed: {e}");
        }
        self.nan += other.nan;
    }

    /// Number of (non-NaN) values summarised.
    pub fn n(&self) -> u64 {
        self.inner.n()
    }

    /// Number of NaN values seen and skipped.
    pub fn nan_count(&self) -> u64 {
        self.nan
    }

    /// Values currently retained.
    pub fn retained(&self) -> usize {
        self.inner.num_retained()
    }

    /// True while the sketch still holds every value (its CDF is exact).
    pub fn is_exact(&self) -> bool {
        !self.inner.is_estimation_mode()
    }

    /// Normalised rank error of a CDF value (99% confidence), 0 when exact.
    pub fn rank_error(&self) -> f64 {
        if self.is_exact() {
            0.0
        } else {
            self.inner.normalized_rank_error()
        }
    }

    /// The value at normalised rank `p` in `[0, 1]` (`None` when empty).
    pub fn quantile(&self, p: f64) -> Result<Option<f64>, StatsError> {
        self.inner
            .quantile(p, SearchCriteria::Inclusive)
            .map(|v| v.map(KllFloat::into_inner))
            .map_err(|e| StatsError::InvalidArgument {
                name: "p",
                reason: e.to_string(),
            })
    }

    /// `F(x) = P(X <= x)` (`None` when empty).
    pub fn cdf(&self, x: f64) -> Option<f64> {
        let x = KllFloat::<f64>::new(x).ok()?;
        self.inner.rank(&x, SearchCriteria::Inclusive)
    }

    /// The DataSketches serialisation (readable by its Java, C++ and Python
    /// libraries), followed by nothing else: the NaN count is not kept.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner.serialize()
    }

    /// Reads [`QuantileSketch::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StatsError> {
        let inner = KllSketch::deserialize(bytes).map_err(|e| StatsError::InvalidArgument {
            name: "bytes",
            reason: e.to_string(),
        })?;
        Ok(Self { inner, nan: 0 })
    }

    fn view(&self, name: &'static str) -> Result<View, StatsError> {
        if self.n() == 0 {
            return Err(StatsError::EmptySample { name });
        }
        let view = self.inner.sorted_view();
        // In exact mode (at most a few hundred values) this grid hits every value.
        let g = MAX_GRID;
        let at = |p: f64| {
            view.quantile(p, SearchCriteria::Inclusive)
                .ok()
                .flatten()
                .map(KllFloat::into_inner)
        };
        let grid: Vec<f64> = (0..=g).filter_map(|i| at(i as f64 / g as f64)).collect();
        Ok(View {
            view,
            grid,
            error: self.rank_error() + if self.is_exact() { 0.0 } else { 1.0 / g as f64 },
            n: self.n(),
        })
    }
}

struct View {
    view: SortedView<KllFloat<f64>>,
    grid: Vec<f64>,
    error: f64,
    n: u64,
}

impl View {
    fn cdf(&self, x: f64) -> f64 {
        KllFloat::<f64>::new(x)
            .ok()
            .and_then(|x| self.view.rank(&x, SearchCriteria::Inclusive))
            .unwrap_or(f64::NAN)
    }
}

/// Both sketches' CDFs on the union of their grids.
struct Paired {
    points: Vec<f64>,
    f_ref: Vec<f64>,
    f_cur: Vec<f64>,
    rank_error: f64,
    n_reference: u64,
    n_current: u64,
}

fn pair(reference: &QuantileSketch, current: &QuantileSketch) -> Result<Paired, StatsError> {
    let r = reference.view("reference")?;
    let c = current.view("current")?;
    let mut points: Vec<f64> = r.grid.iter().chain(&c.grid).copied().collect();
    points.sort_unstable_by(f64::total_cmp);
    points.dedup();
    Ok(Paired {
        f_ref: points.iter().map(|x| r.cdf(*x)).collect(),
        f_cur: points.iter().map(|x| c.cdf(*x)).collect(),
        points,
        rank_error: r.error + c.error,
        n_reference: r.n,
        n_current: c.n,
    })
}

/// A drift measure computed from two sketches, with its error bound.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SketchComparison {
    /// KS statistic `D`, PSI, JS distance or Wasserstein distance.
    pub statistic: f64,
    /// The asymptotic KS p-value (NaN for the distances).
    pub p_value: f64,
    /// Bound on the error of any CDF difference used (see the module docs).
    pub rank_error: f64,
    /// Bound on `|statistic - exact statistic|` where one is stated (KS,
    /// Wasserstein, and to first order PSI); NaN for JS, whose error follows
    /// from `2 e` per bin.
    pub statistic_error: f64,
    /// Values in the reference sketch.
    pub n_reference: u64,
    /// Values in the current sketch.
    pub n_current: u64,
}

/// Two-sample KS between two sketches (see the module docs for the error).
pub fn ks_sketch(
    reference: &QuantileSketch,
    current: &QuantileSketch,
) -> Result<SketchComparison, StatsError> {
    let p = pair(reference, current)?;
    let d = p
        .f_ref
        .iter()
        .zip(&p.f_cur)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    Ok(SketchComparison {
        statistic: d,
        p_value: ks::asymp_two_sided_p(d, p.n_reference as usize, p.n_current as usize),
        rank_error: p.rank_error,
        statistic_error: p.rank_error,
        n_reference: p.n_reference,
        n_current: p.n_current,
    })
}

/// Wasserstein-1 distance between two sketches: `integral |F_ref - F_cur| dx`
/// over the grid (both CDFs are step functions between grid points).
pub fn wasserstein_sketch(
    reference: &QuantileSketch,
    current: &QuantileSketch,
) -> Result<SketchComparison, StatsError> {
    let p = pair(reference, current)?;
    let w: f64 = p
        .points
        .windows(2)
        .zip(p.f_ref.iter().zip(&p.f_cur))
        .map(|(x, (a, b))| (a - b).abs() * (x[1] - x[0]))
        .sum();
    let range = p.points.last().copied().unwrap_or(0.0) - p.points.first().copied().unwrap_or(0.0);
    Ok(SketchComparison {
        statistic: w,
        p_value: f64::NAN,
        rank_error: p.rank_error,
        statistic_error: p.rank_error * range,
        n_reference: p.n_reference,
        n_current: p.n_current,
    })
}

/// Bin proportions of both sketches on the reference deciles, the edges
/// `psi_deciles` uses on raw data (right-closed bins).
fn decile_bins(
    reference: &QuantileSketch,
    current: &QuantileSketch,
) -> Result<(Vec<f64>, Vec<f64>, Paired), StatsError> {
    let p = pair(reference, current)?;
    let mut edges = Vec::with_capacity(9);
    for k in 1..10 {
        if let Some(e) = reference.quantile(k as f64 / 10.0)? {
            edges.push(e);
        }
    }
    edges.dedup();
    let shares = |s: &QuantileSketch| {
        let mut cum: Vec<f64> = edges.iter().map(|e| s.cdf(*e).unwrap_or(0.0)).collect();
        cum.push(1.0);
        let mut prev = 0.0;
        cum.into_iter()
            .map(|c| {
                let share = (c - prev).max(0.0);
                prev = c;
                share
            })
            .collect::<Vec<_>>()
    };
    Ok((shares(reference), shares(current), p))
}

/// PSI between two sketches on reference deciles (zeros become `1e-4`, as
/// [`distance::psi_deciles`]).
pub fn psi_sketch(
    reference: &QuantileSketch,
    current: &QuantileSketch,
) -> Result<SketchComparison, StatsError> {
    let (r, c, p) = decile_bins(reference, current)?;
    let floor = |v: f64| if v == 0.0 { 1e-4 } else { v };
    // d/dc (c - r) ln(c/r) = ln(c/r) + 1 - r/c; d/dr = -ln(c/r) - 1 + c/r.
    let slope: f64 = r
        .iter()
        .zip(&c)
        .map(|(r, c)| {
            let (r, c) = (floor(*r), floor(*c));
            let l = (c / r).ln();
            (l + 1.0 - r / c).abs() + (-l - 1.0 + c / r).abs()
        })
        .sum();
    Ok(SketchComparison {
        statistic: distance::psi_from_proportions(&r, &c),
        p_value: f64::NAN,
        rank_error: p.rank_error,
        statistic_error: 2.0 * p.rank_error * slope,
        n_reference: p.n_reference,
        n_current: p.n_current,
    })
}

/// Jensen-Shannon distance (base 2) between two sketches on reference deciles.
pub fn js_sketch(
    reference: &QuantileSketch,
    current: &QuantileSketch,
) -> Result<SketchComparison, StatsError> {
    let (r, c, p) = decile_bins(reference, current)?;
    Ok(SketchComparison {
        statistic: distance::jensen_shannon(&r, &c, Some(2.0))?,
        p_value: f64::NAN,
        rank_error: p.rank_error,
        statistic_error: f64::NAN,
        n_reference: p.n_reference,
        n_current: p.n_current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Alternative;
    use crate::stats::ks::{KsMethod, ks_2samp};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn normal(n: usize, mean: f64, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let d = Normal::new(mean, 1.0).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    fn sketch(xs: &[f64]) -> QuantileSketch {
        let mut s = QuantileSketch::default();
        s.extend(xs);
        s
    }

    #[test]
    fn sketch_statistics_stay_within_their_stated_error() {
        let a = normal(200_000, 0.0, 1);
        for (shift, seed) in [(0.0, 2), (0.05, 3), (0.3, 4)] {
            let b = normal(150_000, shift, seed);
            let (sa, sb) = (sketch(&a), sketch(&b));
            assert!(!sa.is_exact() && sa.retained() < 4_000);

            let exact = ks_2samp(&a, &b, Alternative::TwoSided, KsMethod::Asymp).unwrap();
            let approx = ks_sketch(&sa, &sb).unwrap();
            assert!(
                (approx.statistic - exact.statistic).abs() <= approx.statistic_error,
                "KS {} vs {} (bound {})",
                approx.statistic,
                exact.statistic,
                approx.statistic_error
            );
            assert_eq!((approx.n_reference, approx.n_current), (200_000, 150_000));
            assert!((0.0..=1.0).contains(&approx.p_value));
            if shift >= 0.3 {
                assert!(approx.p_value < 1e-10);
            }

            let w = distance::wasserstein(&a, &b).unwrap();
            let ws = wasserstein_sketch(&sa, &sb).unwrap();
            assert!(
                (ws.statistic - w).abs() <= ws.statistic_error,
                "{ws:?} vs {w}"
            );

            let psi = distance::psi_deciles(&a, &b).unwrap().psi;
            let psis = psi_sketch(&sa, &sb).unwrap();
            assert!(
                (psis.statistic - psi).abs() <= psis.statistic_error,
                "{psis:?} vs {psi}"
            );
            let js = js_sketch(&sa, &sb).unwrap();
            assert!((0.0..=1.0).contains(&js.statistic));
        }
    }

    #[test]
    fn exact_mode_matches_raw_kernels() {
        let a = normal(900, 0.0, 5);
        let b = normal(700, 0.5, 6);
        let (sa, sb) = (sketch(&a), sketch(&b));
        assert!(sa.is_exact() && sb.is_exact());
        let exact = ks_2samp(&a, &b, Alternative::TwoSided, KsMethod::Asymp).unwrap();
        let approx = ks_sketch(&sa, &sb).unwrap();
        assert_eq!(approx.rank_error, 0.0);
        assert!((approx.statistic - exact.statistic).abs() < 1e-12);
        assert!((approx.p_value - exact.p_value).abs() < 1e-12);
        let w = distance::wasserstein(&a, &b).unwrap();
        assert!((wasserstein_sketch(&sa, &sb).unwrap().statistic - w).abs() < 1e-9);
    }

    #[test]
    fn empty_nan_and_bytes() {
        let mut s = QuantileSketch::default();
        s.push(f64::NAN);
        assert_eq!((s.n(), s.nan_count()), (0, 1));
        assert!(matches!(
            ks_sketch(&s, &sketch(&[1.0])),
            Err(StatsError::EmptySample { name: "reference" })
        ));
        assert_eq!(s.quantile(0.5).unwrap(), None);
        assert!(s.quantile(1.5).is_err());
        let full = sketch(&normal(10_000, 0.0, 7));
        let back = QuantileSketch::from_bytes(&full.to_bytes()).unwrap();
        assert_eq!(back.n(), 10_000);
        assert_eq!(back.quantile(0.5).unwrap(), full.quantile(0.5).unwrap());
        assert!(QuantileSketch::from_bytes(&[1, 2, 3]).is_err());
        assert!(QuantileSketch::with_k(2).is_err());
    }

    proptest! {
        /// Merging equals one pass over the concatenation: exactly while no
        /// compaction happened, and within the rank error after.
        #[test]
        fn merge_equals_one_pass(
            a in proptest::collection::vec(-1e6f64..1e6, 0..6000),
            b in proptest::collection::vec(-1e6f64..1e6, 0..6000),
        ) {
            let mut merged = sketch(&a);
            merged.merge(&sketch(&b));
            let all: Vec<f64> = a.iter().chain(&b).copied().collect();
            let one = sketch(&all);
            prop_assert_eq!(merged.n(), one.n());
            let mut sorted = all.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            // The documented bound holds with 99% confidence; 1.5x keeps a
            // property test over thousands of sketches from flaking.
            let bound = 1.5 * merged.rank_error().max(one.rank_error()) + 1e-12;
            for x in sorted.iter().step_by(97) {
                let truth = sorted.partition_point(|v| v <= x) as f64 / sorted.len() as f64;
                let (m, o) = (merged.cdf(*x).unwrap(), one.cdf(*x).unwrap());
                if merged.is_exact() && one.is_exact() {
                    prop_assert_eq!(m, o);
                }
                prop_assert!((m - truth).abs() <= bound, "merged {} vs {}", m, truth);
                prop_assert!((o - truth).abs() <= bound, "one pass {} vs {}", o, truth);
            }
        }
    }
}
