//! Properties every statistical result must have, on random input including
//! ties, constant samples and tiny sizes: p-values in [0, 1] (or NaN where
//! scipy gives NaN, e.g. a t-test with zero variance), distances in their
//! range, intervals ordered, and symmetries. Each kernel either returns such
//! a result or an error; none panics.

use mlwatch::stats::chi_square::{Divergence, chi2_contingency, chisquare, srm};
use mlwatch::stats::detectors::{Adwin, Ddm, PageHinkley};
use mlwatch::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use mlwatch::stats::proportions::{DiffCi, confint_diff, proportions_ztest};
use mlwatch::stats::summary::Moments;
use mlwatch::stats::{Alternative, distance, sequential, t_test};
use proptest::prelude::*;

const ALTERNATIVES: [Alternative; 3] = [
    Alternative::TwoSided,
    Alternative::Less,
    Alternative::Greater,
];

/// Samples with many ties (values on a coarse grid) or continuous ones.
fn sample(max: usize) -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        proptest::collection::vec((0i32..6).prop_map(f64::from), 1..max),
        proptest::collection::vec(-1e3f64..1e3, 1..max),
    ]
}

fn p_ok(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn t_tests_give_probabilities_and_ordered_intervals(a in sample(40), b in sample(40)) {
        for equal_var in [false, true] {
            for alt in ALTERNATIVES {
                let Ok(r) = t_test::ttest_ind(&a, &b, equal_var, alt, 0.95) else { continue };
                prop_assert!(p_ok(r.p_value) || r.p_value.is_nan(), "{r:?}");
                if r.p_value.is_nan() {
                    // Only when both samples are constant, or a sample has one
                    // value (scipy gives NaN there).
                    let constant = |x: &[f64]| x.iter().all(|v| *v == x[0]);
                    let single = a.len() < 2 || b.len() < 2;
                    prop_assert!((constant(&a) && constant(&b)) || single, "{r:?}");
                }
                if r.ci_low.is_nan() || r.ci_high.is_nan() {
                    // A zero or undefined standard error: scipy's interval
                    // end is then `±inf * 0 + difference`, NaN.
                    prop_assert!(!r.statistic.is_finite(), "{r:?}");
                } else {
                    prop_assert!(r.ci_low <= r.ci_high, "{r:?}");
                }
            }
        }
    }

    #[test]
    fn mann_whitney_gives_probabilities_and_u_adds_up(a in sample(30), b in sample(30)) {
        for method in [MwuMethod::Auto, MwuMethod::Exact, MwuMethod::Asymptotic] {
            for alt in ALTERNATIVES {
                for cc in [false, true] {
                    let r = mannwhitneyu(&a, &b, alt, method, cc).unwrap();
                    // scipy: 0/0 = NaN when every value is tied, the normal
                    // approximation is used, and there is no continuity correction.
                    let all_tied = a.iter().chain(&b).all(|v| *v == a[0]);
                    let nan_ok = all_tied && !cc && r.p_value.is_nan();
                    prop_assert!(p_ok(r.p_value) || nan_ok, "{r:?}");
                    let s = mannwhitneyu(&b, &a, alt, method, cc).unwrap();
                    prop_assert!((r.statistic + s.statistic - (a.len() * b.len()) as f64).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn chi_square_tests_give_probabilities(
        first in proptest::collection::vec(0u32..200, 1..8),
        second in proptest::collection::vec(0u32..200, 1..8),
    ) {
        let k = first.len().min(second.len());
        let table = vec![
            first[..k].iter().map(|v| f64::from(*v)).collect::<Vec<_>>(),
            second[..k].iter().map(|v| f64::from(*v)).collect::<Vec<_>>(),
        ];
        for kind in [Divergence::Pearson, Divergence::LogLikelihood] {
            for correction in [false, true] {
                if let Ok(r) = chi2_contingency(&table, correction, kind) {
                    prop_assert!(p_ok(r.p_value) && r.statistic >= 0.0, "{r:?}");
                }
            }
            if let Ok(r) = chisquare(&table[0], None, kind) {
                prop_assert!(p_ok(r.p_value) || r.p_value.is_nan(), "{r:?}");
            }
        }
        let weights: Vec<f64> = (1..=k).map(|i| i as f64).collect();
        if k >= 2 && table[0].iter().sum::<f64>() > 0.0 {
            let r = srm(&table[0], &weights).unwrap();
            prop_assert!(p_ok(r.p_value), "{r:?}");
        }
    }

    #[test]
    fn proportion_tests_give_probabilities(n1 in 1u32..500, n2 in 1u32..500, f1 in 0f64..=1.0, f2 in 0f64..=1.0) {
        let (n1, n2) = (f64::from(n1), f64::from(n2));
        let (c1, c2) = ((n1 * f1).floor(), (n2 * f2).floor());
        let z = proportions_ztest(c1, n1, c2, n2).unwrap();
        // NaN only when every trial (or none) succeeded in both arms.
        prop_assert!(p_ok(z.p_value) || (z.p_value.is_nan() && (c1 + c2 == 0.0 || c1 + c2 == n1 + n2)), "{z:?}");
        for method in [DiffCi::Wald, DiffCi::AgrestiCaffo, DiffCi::Newcombe] {
            let ci = confint_diff(c1, n1, c2, n2, 0.05, method).unwrap();
            prop_assert!(ci.low <= ci.high + 1e-12, "{ci:?}");
        }
    }

    #[test]
    fn distances_stay_in_their_ranges(a in sample(60), b in sample(60)) {
        let w = distance::wasserstein(&a, &b).unwrap();
        prop_assert!(w >= 0.0);
        prop_assert!((w - distance::wasserstein(&b, &a).unwrap()).abs() <= 1e-9 * w.max(1.0));
        let psi = distance::psi_deciles(&a, &b).unwrap();
        prop_assert!(psi.psi >= 0.0);
        let f = |c: &[u64]| c.iter().map(|v| *v as f64).collect::<Vec<_>>();
        let (p, q) = (f(&psi.ref_counts), f(&psi.cur_counts));
        let js = distance::jensen_shannon(&p, &q, Some(2.0)).unwrap();
        prop_assert!((0.0..=1.0 + 1e-12).contains(&js), "{js}");
        let h = distance::hellinger(&p, &q).unwrap();
        prop_assert!((0.0..=1.0).contains(&h), "{h}");
        let bins = distance::evidently_bins(&a, &b).unwrap();
        prop_assert!(distance::evidently_psi(&bins) >= 0.0);
        let ejs = distance::evidently_jensen_shannon(&bins).unwrap();
        prop_assert!((0.0..=1.0 + 1e-12).contains(&ejs), "{ejs}");
    }

    #[test]
    fn confidence_sequences_contain_the_estimate(a in sample(50), b in sample(50), alpha in 0.001f64..0.5) {
        let m = |x: &[f64]| { let mut m = Moments::default(); x.iter().for_each(|v| m.push(*v)); m };
        if let Ok(r) = sequential::mean_difference(&m(&a), &m(&b), alpha, 100.0) {
            prop_assert!(r.cs_low <= r.difference && r.difference <= r.cs_high, "{r:?}");
            prop_assert!(p_ok(r.always_valid_p), "{r:?}");
            prop_assert_eq!(r.cs_low > 0.0 || r.cs_high < 0.0, r.always_valid_p < alpha);
        }
    }

    #[test]
    fn detectors_take_any_value(xs in proptest::collection::vec(prop_oneof![Just(f64::NAN), -1e6f64..1e6, 0f64..=1.0], 0..500)) {
        let (mut d, mut p, mut a) = (Ddm::default(), PageHinkley::default(), Adwin::default());
        for x in &xs {
            d.update(*x);
            p.update(*x);
            a.update(*x);
        }
        prop_assert!(a.width() <= xs.len() as u64);
    }
}

/// The all-tied corner, against scipy 1.17 `mannwhitneyu([2, 2], [2, 2, 2], ...)`.
#[test]
fn mann_whitney_all_tied_matches_scipy() {
    let (a, b) = ([2.0, 2.0], [2.0, 2.0, 2.0]);
    for alt in ALTERNATIVES {
        let with_cc = mannwhitneyu(&a, &b, alt, MwuMethod::Asymptotic, true).unwrap();
        assert_eq!(with_cc.p_value, 1.0);
        let without = mannwhitneyu(&a, &b, alt, MwuMethod::Auto, false).unwrap();
        assert!(without.p_value.is_nan());
        let exact = mannwhitneyu(&a, &b, alt, MwuMethod::Exact, false).unwrap();
        let expected = if alt == Alternative::TwoSided {
            1.0
        } else {
            0.6
        };
        assert!(
            (exact.p_value - expected).abs() < 1e-12,
            "{alt:?} {exact:?}"
        );
    }
}
