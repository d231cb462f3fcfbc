//! DataFusion glue: SQL functions backed by `crate::stats` kernels:
//! the two-sample aggregates of [`two_sample`] (`ks_2samp`, t-tests,
//! Mann-Whitney, distances), the tests on counts of [`categorical`]
//! (`chi2_contingency`, `g_test`, `proportions_ztest`, `srm`) and the
//! drift tests of [`drift`] (every drift method, against held profiles or
//! with both samples as rows).
//!
//! [`register_all`] is called on every `SessionContext` mlwatch creates (the
//! window drift computation, `mlwatch sql`), so the same functions work
//! everywhere.

pub mod categorical;
pub mod drift;
pub mod two_sample;

use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::AggregateUDF;

pub use categorical::{Categorical, CategoricalKind};
pub use two_sample::{TwoSample, TwoSampleKind};

use crate::stats::ks::KsMethod;

/// The result struct of every test aggregate: the named float fields
/// (nullable: NULL when the test is undefined), then `n_reference` and
/// `n_current`.
pub(crate) fn result_fields(float_fields: &[&str]) -> datafusion::arrow::datatypes::Fields {
    use datafusion::arrow::datatypes::{DataType, Field};
    let mut f: Vec<Field> = float_fields
        .iter()
        .map(|n| Field::new(*n, DataType::Float64, true))
        .collect();
    f.push(Field::new("n_reference", DataType::Int64, false));
    f.push(Field::new("n_current", DataType::Int64, false));
    f.into()
}

/// One value of [`result_fields`]: `values` in field order, or all NULL.
pub(crate) fn result_scalar(
    float_fields: &[&str],
    values: Option<&[f64]>,
    n_reference: i64,
    n_current: i64,
) -> datafusion::common::Result<datafusion::common::ScalarValue> {
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StructArray};
    use std::sync::Arc;
    let mut arrays: Vec<ArrayRef> = (0..float_fields.len())
        .map(|i| Arc::new(Float64Array::from(vec![values.map(|v| v[i])])) as ArrayRef)
        .collect();
    arrays.push(Arc::new(Int64Array::from(vec![n_reference])));
    arrays.push(Arc::new(Int64Array::from(vec![n_current])));
    Ok(datafusion::common::ScalarValue::Struct(Arc::new(
        StructArray::try_new(result_fields(float_fields), arrays, None)?,
    )))
}

/// Registers every mlwatch SQL function on `ctx`; `ks_2samp` uses `ks_method`.
pub fn register_all(ctx: &SessionContext, ks_method: KsMethod) {
    ctx.register_udaf(AggregateUDF::from(TwoSample::new(TwoSampleKind::Ks(
        ks_method,
    ))));
    for kind in TwoSampleKind::ALL {
        ctx.register_udaf(AggregateUDF::from(TwoSample::new(kind)));
    }
    for kind in CategoricalKind::ALL {
        ctx.register_udaf(AggregateUDF::from(Categorical::new(kind)));
    }
    // The drift aggregates; `drift_reference*` find no profile here (the
    // monitor registers its own with the models' profiles).
    let none: drift::Baselines = Default::default();
    for kind in drift::DriftKind::ALL {
        ctx.register_udaf(AggregateUDF::from(drift::DriftUdaf::new(
            kind,
            none.clone(),
        )));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    /// `drift_reference` against a held profile, `drift_2samp` with the
    /// same sample as rows, and the kernel agree for every numeric method;
    /// the counts versions agree with `categorical_drift`.
    #[tokio::test]
    async fn drift_functions_match_the_kernels() -> datafusion::error::Result<()> {
        use crate::stats::drift::{DriftMethod, Reference, categorical_drift, numeric_drift};
        let mut reference = vec![0.1, 0.4, 0.45, 0.9, 1.3, 2.0, 2.2, 3.1, 0.7, 1.1, 1.9, 2.6];
        reference.sort_by(f64::total_cmp); // profiles are held sorted
        let current = [1.0, 1.5, 2.5, 3.0, 3.5, 4.0, 0.2, 2.9, 1.2];
        let baselines: drift::Baselines = Default::default();
        let mut counts = crate::stats::summary::CategoryCounts::new(10);
        for (k, n) in [("a", 40), ("b", 30), ("c", 30)] {
            counts.add(k, n);
        }
        {
            let mut b = baselines.write().expect("not poisoned");
            b.insert(
                "m/x".into(),
                Arc::new(Reference::Numeric {
                    sorted: reference.clone(),
                    count: None,
                }),
            );
            b.insert(
                "m/c".into(),
                Arc::new(Reference::Categorical(counts.clone())),
            );
        }
        let ctx = crate::query::new_context(KsMethod::Auto);
        for kind in drift::DriftKind::ALL {
            ctx.register_udaf(AggregateUDF::from(drift::DriftUdaf::new(
                kind,
                baselines.clone(),
            )));
        }
        let values = |v: &[f64]| {
            v.iter()
                .map(|x| format!("({x})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let both: Vec<String> = reference
            .iter()
            .map(|v| format!("({v}, false)"))
            .chain(current.iter().map(|v| format!("({v}, true)")))
            .collect();
        for method in [
            "ks",
            "wasserstein",
            "psi",
            "js",
            "hellinger",
            "anderson",
            "cramer_von_mises",
        ] {
            let held = ctx
                .sql(&format!(
                    "SELECT d['statistic'] AS s, d['p_value'] AS p, d['distance'] AS d, d['drifted'] AS x \
                     FROM (SELECT drift_reference(v, 'm/x', '{method}', NULL) AS d FROM (VALUES {}) AS t(v))",
                    values(&current)
                ))
                .await?
                .collect()
                .await?;
            let rows = ctx
                .sql(&format!(
                    "SELECT d['statistic'] AS s, d['p_value'] AS p, d['distance'] AS d, d['drifted'] AS x \
                     FROM (SELECT drift_2samp(v, c, '{method}', NULL) AS d FROM (VALUES {}) AS t(v, c))",
                    both.join(", ")
                ))
                .await?
                .collect()
                .await?;
            // The sample split into lists over two rows (as a window's
            // table holds it) tests the same values.
            let (first, second) = current.split_at(current.len() / 3);
            let list = |v: &[f64]| {
                let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                format!("(make_array({}))", items.join(", "))
            };
            let listed = ctx
                .sql(&format!(
                    "SELECT d['statistic'] AS s, d['p_value'] AS p, d['distance'] AS d, d['drifted'] AS x \
                     FROM (SELECT drift_reference(v, 'm/x', '{method}', NULL) AS d FROM (VALUES {}, {}) AS t(v))",
                    list(first),
                    list(second)
                ))
                .await?
                .collect()
                .await?;
            let (a, b, c) = (
                pretty_format_batches(&held)?.to_string(),
                pretty_format_batches(&rows)?.to_string(),
                pretty_format_batches(&listed)?.to_string(),
            );
            assert_eq!(a, b, "{method}");
            assert_eq!(a, c, "{method}: values as lists");
            let k = numeric_drift(&reference, &current, DriftMethod::parse(method), None)
                .expect("valid samples");
            let shown = if k.statistic.is_nan() {
                "".to_string()
            } else {
                k.statistic.to_string()
            };
            assert!(
                a.contains(&shown),
                "{method}: kernel statistic {shown} not in\n{a}"
            );
        }
        for method in ["chi2", "g_test", "psi", "js", "hellinger"] {
            let held = ctx
                .sql(&format!(
                    "SELECT d['statistic'] AS s, d['drifted'] AS x FROM (SELECT drift_reference_counts(c, n, 'm/c', '{method}', NULL) AS d \
                     FROM (VALUES ('a', 10), ('b', 10), ('c', 25), ('d', 5)) AS t(c, n))"
                ))
                .await?
                .collect()
                .await?;
            let mut cur = crate::stats::summary::CategoryCounts::new(10);
            for (k, n) in [("a", 10), ("b", 10), ("c", 25), ("d", 5)] {
                cur.add(k, n);
            }
            let k = categorical_drift(&counts, &cur, DriftMethod::parse(method), None)
                .expect("valid counts");
            let a = pretty_format_batches(&held)?.to_string();
            assert!(
                a.contains(&k.statistic.to_string()),
                "{method}: {} not in\n{a}",
                k.statistic
            );
            assert!(
                a.contains(if k.drifted { "true" } else { "false" }),
                "{method}\n{a}"
            );
        }
        Ok(())
    }

    /// Every two-sample SQL function returns what its kernel returns.
    #[tokio::test]
    async fn two_sample_functions_match_their_kernels() -> datafusion::error::Result<()> {
        let a = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 0.5, 4.5, 1.5, 2.5, 3.5];
        let b = [2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 2.5, 6.0, 3.5, 1.0];
        let rows: Vec<String> = a
            .iter()
            .map(|v| format!("({v}, false)"))
            .chain(b.iter().map(|v| format!("({v}, true)")))
            .collect();
        let ctx = crate::query::new_context(KsMethod::Auto);
        let sql = format!(
            "SELECT welch_ttest(v, s)['p_value'] AS w, student_ttest(v, s)['ci_low'] AS st, \
             mannwhitney_u(v, s)['statistic'] AS u, wasserstein(v, s)['distance'] AS wd, \
             psi(v, s)['distance'] AS psi, js_distance(v, s)['n_current'] AS n \
             FROM (VALUES {}) AS t(v, s)",
            rows.join(", ")
        );
        let out = ctx.sql(&sql).await?.collect().await?;
        let b0 = &out[0];
        let f = |i: usize| {
            b0.column(i)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(0)
        };
        use crate::stats::{Alternative, distance, mann_whitney, t_test};
        use datafusion::arrow::array::AsArray;
        let welch = t_test::ttest_ind(&a, &b, false, Alternative::TwoSided, 0.95).unwrap();
        let student = t_test::ttest_ind(&a, &b, true, Alternative::TwoSided, 0.95).unwrap();
        let mwu = mann_whitney::mannwhitneyu(
            &a,
            &b,
            Alternative::TwoSided,
            mann_whitney::MwuMethod::Auto,
            true,
        )
        .unwrap();
        assert_eq!(f(0), welch.p_value);
        assert_eq!(f(1), student.ci_low);
        assert_eq!(f(2), mwu.statistic);
        assert_eq!(f(3), distance::wasserstein(&a, &b).unwrap());
        assert_eq!(f(4), distance::psi_deciles(&a, &b).unwrap().psi);
        let n = b0
            .column(5)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(n, b.len() as i64);
        Ok(())
    }

    /// Every categorical SQL function returns what its kernel returns, also
    /// when the input arrives in several partitions (the state merges).
    #[tokio::test]
    async fn categorical_functions_match_their_kernels() -> datafusion::error::Result<()> {
        use crate::stats::chi_square::{Divergence, chi2_contingency, srm};
        use crate::stats::proportions::{DiffCi, confint_diff, proportions_ztest};
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Float64Type, Int64Type};

        // Reference: a x30 b x50 c x20; current: a x40 b x35 c x25, in several batches.
        let mut rows = Vec::new();
        for (cat, n_ref, n_cur) in [("a", 30, 40), ("b", 50, 35), ("c", 20, 25)] {
            rows.extend((0..n_ref).map(|i| format!("('{cat}', false, {})", i % 3 == 0)));
            rows.extend((0..n_cur).map(|i| format!("('{cat}', true, {})", i % 2 == 0)));
        }
        let ctx = crate::query::new_context(KsMethod::Auto);
        let batch = ctx
            .sql(&format!(
                "SELECT * FROM (VALUES {}) AS t(c, s, ok)",
                rows.join(", ")
            ))
            .await?
            .collect()
            .await?
            .remove(0);
        // Three partitions, so partial states are merged.
        let parts = (0..3)
            .map(|i| vec![batch.slice(i * 67, (batch.num_rows() - i * 67).min(67))])
            .collect();
        let t = datafusion::datasource::MemTable::try_new(batch.schema(), parts)?;
        ctx.register_table("t", Arc::new(t))?;
        let sql = "SELECT chi2_contingency(c, s)['statistic'], chi2_contingency(c, s)['p_value'], \
                   g_test(c, s)['statistic'], proportions_ztest(ok, s)['p_value'], \
                   proportions_ztest(ok, s)['ci_low'], srm(c, 'a:1, b:1, c:1')['p_value'], \
                   srm(c, 'a:1,b:1,c:1')['n_reference'], chi2_contingency(c, s)['n_current'] \
                   FROM t";
        let out = ctx.sql(sql).await?.collect().await?;
        let b0 = &out[0];
        let f = |i: usize| b0.column(i).as_primitive::<Float64Type>().value(0);
        let table = vec![vec![30.0, 50.0, 20.0], vec![40.0, 35.0, 25.0]];
        let chi = chi2_contingency(&table, true, Divergence::Pearson).unwrap();
        let g = chi2_contingency(&table, true, Divergence::LogLikelihood).unwrap();
        assert!((f(0) - chi.statistic).abs() < 1e-12);
        assert!((f(1) - chi.p_value).abs() < 1e-15);
        assert!((f(2) - g.statistic).abs() < 1e-12);
        // ok = true: reference 10 + 17 + 7 = 34 of 100; current 20 + 18 + 13 = 51 of 100.
        let z = proportions_ztest(34.0, 100.0, 51.0, 100.0).unwrap();
        let ci = confint_diff(34.0, 100.0, 51.0, 100.0, 0.05, DiffCi::Wald).unwrap();
        assert!((f(3) - z.p_value).abs() < 1e-15);
        assert!((f(4) - ci.low).abs() < 1e-15);
        let s = srm(&[70.0, 85.0, 45.0], &[1.0, 1.0, 1.0]).unwrap();
        assert!((f(5) - s.p_value).abs() < 1e-15);
        assert_eq!(b0.column(6).as_primitive::<Int64Type>().value(0), 200);
        assert_eq!(b0.column(7).as_primitive::<Int64Type>().value(0), 100);

        // A variant without a weight is an error that names it.
        let err = ctx
            .sql("SELECT srm(c, 'a:1,b:1') FROM t")
            .await?
            .collect()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("variant 'c' has no weight"),
            "{err}"
        );
        Ok(())
    }

    /// Data a numeric test is undefined on gives an untestable row, not a
    /// failed query (a window's query failing would stop the stream on
    /// every replay); ±inf is dropped before a test, as Evidently does.
    #[tokio::test]
    async fn degenerate_numeric_samples_are_untestable_and_infinities_dropped()
    -> datafusion::error::Result<()> {
        let ctx = crate::query::new_context(KsMethod::Auto);
        async fn two_sample(
            ctx: &SessionContext,
            method: &str,
            rows: &[String],
        ) -> datafusion::error::Result<String> {
            let b = ctx
                .sql(&format!(
                    "SELECT d['statistic'] AS s, d['testable'] AS t FROM (SELECT drift_2samp(v, c, '{method}', NULL) AS d FROM (VALUES {}) AS t(v, c))",
                    rows.join(", ")
                ))
                .await?
                .collect()
                .await?;
            Ok(pretty_format_batches(&b)?.to_string())
        }
        let constant: Vec<String> = (0..40).map(|i| format!("(1.0, {})", i % 2 == 0)).collect();
        let shown = two_sample(&ctx, "anderson", &constant).await?;
        assert_eq!(
            shown.lines().nth(3),
            Some("|   | false |"),
            "a constant column under `anderson`: no statistic, not testable\n{shown}"
        );
        // 30 distinct reference values (Sturges bins over both samples),
        // with and without infinities on either side.
        let finite: Vec<String> = (0..60)
            .map(|i| format!("({}.5, {})", i % 30 + (i / 30) * 3, i >= 30))
            .collect();
        let with_inf: Vec<String> = finite
            .iter()
            .cloned()
            .chain(
                ["('inf', true)", "('-inf', false)", "('-inf', true)"]
                    .iter()
                    .map(|s| s.replace('(', "(CAST(").replacen(", ", " AS DOUBLE), ", 1)),
            )
            .collect();
        for method in ["psi", "js", "hellinger", "ks", "wasserstein"] {
            let a = two_sample(&ctx, method, &finite).await?;
            let b = two_sample(&ctx, method, &with_inf).await?;
            assert!(a.contains("| true |"), "{method}: {a}");
            assert_eq!(a, b, "{method}");
        }
        Ok(())
    }
}
