//! Checks the statistical kernels against `../shared/oracle`: every case file
//! listed in `index.json` is loaded; every entry for a function mlwatch
//! implements is checked with the tolerance the file gives.

use std::path::PathBuf;

use mlwatch::stats::Alternative;
use mlwatch::stats::anderson::{anderson_ksamp, anderson_ksamp_sorted};
use mlwatch::stats::chi_square::{Divergence, chi2_contingency, chisquare};
use mlwatch::stats::cramer_von_mises::{
    CvmMethod, cramervonmises_2samp, cramervonmises_2samp_sorted,
};
use mlwatch::stats::distance;
use mlwatch::stats::drift::{self, ColumnData, DriftMethod};
use mlwatch::stats::ks::{KsMethod, ks_2samp};
use mlwatch::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use mlwatch::stats::metrics::{self, Average};
use mlwatch::stats::proportions::{self, DiffCi, OneSampleCi};
use mlwatch::stats::sample_size::{
    normal_ind_power, normal_ind_solve_nobs1, proportion_effectsize, ttest_ind_solve_nobs1,
};
use mlwatch::stats::summary::CategoryCounts;
use mlwatch::stats::t_test::ttest_ind;
use serde_json::Value;

use crate::TestResult;

/// `$MLWATCH_ORACLE_DIR`, else the vectors vendored in `tests/data/oracle`
/// (a copy of the shared oracle, so a fresh clone tests on its own).
pub(crate) fn oracle_dir() -> PathBuf {
    std::env::var_os("MLWATCH_ORACLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::manifest_dir().join("tests/data/oracle"))
}

/// A number from the oracle, where non-finite values are strings.
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(num).collect())
        .unwrap_or_default()
}

/// The README's rule: both NaN, same infinity, within max(abs, rel*|e|), or
/// under the floor.
fn matches(actual: f64, expected: f64, tol: &Value) -> bool {
    if expected.is_nan() || actual.is_nan() {
        return expected.is_nan() && actual.is_nan();
    }
    if expected.is_infinite() || actual.is_infinite() {
        return expected == actual;
    }
    let rel = tol.get("rel").and_then(num).unwrap_or(0.0);
    let abs = tol.get("abs").and_then(num).unwrap_or(0.0);
    if (actual - expected).abs() <= abs.max(rel * expected.abs()) {
        return true;
    }
    if let Some(floor) = tol.get("floor").and_then(num) {
        return expected < floor && (0.0..floor).contains(&actual);
    }
    false
}

/// The `alternative` keyword (scipy's default when absent).
fn alternative(kwargs: &Value) -> Option<Alternative> {
    kwargs["alternative"]
        .as_str()
        .unwrap_or("two-sided")
        .parse()
        .ok()
}

/// Outputs of one call, by the oracle's field names; scalars are 1-vectors.
type Outputs = Vec<(&'static str, Vec<f64>)>;

fn ints_to_f64(v: &Value) -> Vec<f64> {
    floats(v)
}

/// Runs the port on one expected entry; `None` when mlwatch does not
/// implement that function yet.
fn evaluate(doc: &Value, e: &Value) -> Option<Result<Outputs, mlwatch::stats::StatsError>> {
    let inputs = &doc["inputs"];
    let function = e["function"].as_str().unwrap_or_default();
    let id = e["id"].as_str().unwrap_or_default();
    let kwargs = &e["kwargs"];
    match function {
        "scipy.stats.ks_2samp" => {
            let alt = alternative(kwargs)?;
            let method: KsMethod = kwargs["method"].as_str().unwrap_or("auto").parse().ok()?;
            Some(
                ks_2samp(&floats(&inputs["x"]), &floats(&inputs["y"]), alt, method).map(|r| {
                    vec![
                        ("statistic", vec![r.statistic]),
                        ("pvalue", vec![r.p_value]),
                        ("statistic_location", vec![r.statistic_location]),
                        ("statistic_sign", vec![f64::from(r.statistic_sign)]),
                    ]
                }),
            )
        }
        "scipy.stats.chi2_contingency" => {
            let table: Vec<Vec<f64>> = inputs["counts_table"]
                .as_array()?
                .iter()
                .map(ints_to_f64)
                .collect();
            let correction = kwargs["correction"].as_bool().unwrap_or(true);
            let kind = if kwargs["lambda_"] == "log-likelihood" {
                Divergence::LogLikelihood
            } else {
                Divergence::Pearson
            };
            Some(chi2_contingency(&table, correction, kind).map(|r| {
                vec![
                    ("statistic", vec![r.statistic]),
                    ("pvalue", vec![r.p_value]),
                    ("dof", vec![r.df]),
                    ("expected_freq", r.expected),
                ]
            }))
        }
        "scipy.stats.chisquare" => {
            let (obs, exp): (Vec<f64>, Vec<f64>) = match (doc["category"].as_str()?, id) {
                ("srm", _) => {
                    let obs = ints_to_f64(&inputs["observed"]);
                    let total: f64 = obs.iter().sum();
                    let exp = floats(&inputs["expected_ratios"])
                        .iter()
                        .map(|r| r * total)
                        .collect();
                    (obs, exp)
                }
                (
                    "categorical_drift",
                    "chisquare_gof_vs_reference_props" | "chisquare_gof_reference_categories_only",
                ) => {
                    let rc = ints_to_f64(&inputs["reference_counts"]);
                    let cc = ints_to_f64(&inputs["current_counts"]);
                    let keep: Vec<bool> = rc
                        .iter()
                        .map(|r| id.ends_with("_props") || *r > 0.0)
                        .collect();
                    let rc: Vec<f64> = rc
                        .iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(v, _)| *v)
                        .collect();
                    let cc: Vec<f64> = cc
                        .iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(v, _)| *v)
                        .collect();
                    let (rs, cs): (f64, f64) = (rc.iter().sum(), cc.iter().sum());
                    (cc, rc.iter().map(|r| r / rs * cs).collect())
                }
                _ => return None,
            };
            Some(chisquare(&obs, Some(&exp), Divergence::Pearson).map(|r| {
                vec![
                    ("statistic", vec![r.statistic]),
                    ("pvalue", vec![r.p_value]),
                ]
            }))
        }
        f if f.starts_with("documented PSI rule on reference deciles") => Some(
            distance::psi_deciles(&floats(&inputs["reference"]), &floats(&inputs["current"])).map(
                |r| {
                    vec![
                        ("psi", vec![r.psi]),
                        ("n_bins", vec![(r.edges.len() + 1) as f64]),
                        ("edges", r.edges),
                        (
                            "ref_counts",
                            r.ref_counts.iter().map(|c| *c as f64).collect(),
                        ),
                        (
                            "cur_counts",
                            r.cur_counts.iter().map(|c| *c as f64).collect(),
                        ),
                    ]
                },
            ),
        ),
        f if f.starts_with("documented PSI rule over sorted category union") => {
            let rc: Vec<u64> = floats(&inputs["reference_counts"])
                .iter()
                .map(|v| *v as u64)
                .collect();
            let cc: Vec<u64> = floats(&inputs["current_counts"])
                .iter()
                .map(|v| *v as u64)
                .collect();
            Some(Ok(vec![("psi", vec![distance::psi_from_counts(&rc, &cc)])]))
        }
        "scipy.spatial.distance.jensenshannon" => {
            let (p, q) = if doc["category"] == "distance_numeric" {
                match distance::psi_deciles(
                    &floats(&inputs["reference"]),
                    &floats(&inputs["current"]),
                ) {
                    Ok(r) => (
                        r.ref_counts.iter().map(|c| *c as f64).collect(),
                        r.cur_counts.iter().map(|c| *c as f64).collect(),
                    ),
                    Err(e) => return Some(Err(e)),
                }
            } else {
                (
                    floats(&inputs["reference_counts"]),
                    floats(&inputs["current_counts"]),
                )
            };
            let base = num(&kwargs["base"]);
            Some(distance::jensen_shannon(&p, &q, base).map(|d| vec![("distance", vec![d])]))
        }
        "scipy.stats.wasserstein_distance" => Some(
            distance::wasserstein(&floats(&inputs["reference"]), &floats(&inputs["current"]))
                .map(|d| vec![("distance", vec![d])]),
        ),
        "scipy.stats.energy_distance" => Some(
            distance::energy_distance(&floats(&inputs["reference"]), &floats(&inputs["current"]))
                .map(|d| vec![("distance", vec![d])]),
        ),
        "scipy.stats.ttest_ind"
        | "statsmodels.stats.weightstats.CompareMeans.tconfint_diff / ttest_ind" => {
            let equal_var =
                kwargs["equal_var"].as_bool().unwrap_or(false) || kwargs["usevar"] == "pooled";
            let alt = alternative(kwargs)?;
            let conf = 1.0 - num(&kwargs["alpha"]).unwrap_or(0.05);
            Some(
                ttest_ind(
                    &floats(&inputs["a"]),
                    &floats(&inputs["b"]),
                    equal_var,
                    alt,
                    conf,
                )
                .map(|r| {
                    vec![
                        ("statistic", vec![r.statistic]),
                        ("pvalue", vec![r.p_value]),
                        ("df", vec![r.df]),
                        ("ci95_low", vec![r.ci_low]),
                        ("ci95_high", vec![r.ci_high]),
                    ]
                }),
            )
        }
        "scipy.stats.mannwhitneyu" => {
            let alt = alternative(kwargs)?;
            let method: MwuMethod = kwargs["method"].as_str().unwrap_or("auto").parse().ok()?;
            let cc = kwargs["use_continuity"].as_bool().unwrap_or(true);
            Some(
                mannwhitneyu(
                    &floats(&inputs["a"]),
                    &floats(&inputs["b"]),
                    alt,
                    method,
                    cc,
                )
                .map(|r| {
                    vec![
                        ("statistic", vec![r.statistic]),
                        ("pvalue", vec![r.p_value]),
                    ]
                }),
            )
        }
        "statsmodels.stats.proportion.proportions_ztest"
        | "statsmodels.stats.proportion.test_proportions_2indep"
        | "statsmodels.stats.proportion.confint_proportions_2indep" => {
            let [c1, n1, c2, n2] =
                ["count1", "nobs1", "count2", "nobs2"].map(|k| num(&inputs[k]).unwrap_or(f64::NAN));
            let alpha = num(&kwargs["alpha"]).unwrap_or(0.05);
            Some(match function {
                "statsmodels.stats.proportion.proportions_ztest" => {
                    proportions::proportions_ztest(c1, n1, c2, n2).map(|r| {
                        vec![
                            ("statistic", vec![r.statistic]),
                            ("pvalue", vec![r.p_value]),
                        ]
                    })
                }
                "statsmodels.stats.proportion.test_proportions_2indep" => {
                    proportions::proportions_wald_test(c1, n1, c2, n2).map(|r| {
                        vec![
                            ("statistic", vec![r.statistic]),
                            ("pvalue", vec![r.p_value]),
                        ]
                    })
                }
                _ => {
                    let method = match kwargs["method"].as_str()? {
                        "wald" => DiffCi::Wald,
                        "agresti-caffo" => DiffCi::AgrestiCaffo,
                        "newcomb" => DiffCi::Newcombe,
                        _ => return None,
                    };
                    proportions::confint_diff(c1, n1, c2, n2, alpha, method)
                        .map(|i| vec![("ci95_low", vec![i.low]), ("ci95_high", vec![i.high])])
                }
            })
        }
        "statsmodels.stats.proportion.proportion_confint" => {
            let args = e["args"].as_array()?;
            let arg = |i: usize| num(&inputs[args[i].as_str()?.trim_start_matches('$')]);
            let (count, nobs) = (arg(0)?, arg(1)?);
            let method = match kwargs["method"].as_str()? {
                "normal" => OneSampleCi::Normal,
                "wilson" => OneSampleCi::Wilson,
                _ => return None,
            };
            let alpha = num(&kwargs["alpha"]).unwrap_or(0.05);
            Some(
                proportions::proportion_confint(count, nobs, alpha, method)
                    .map(|i| vec![("ci95_low", vec![i.low]), ("ci95_high", vec![i.high])]),
            )
        }
        "statsmodels.stats.proportion.proportion_effectsize" => {
            let h = proportion_effectsize(num(&inputs["p2"])?, num(&inputs["p1"])?);
            Some(Ok(vec![("effect_size", vec![h])]))
        }
        "statsmodels.stats.power.TTestIndPower().solve_power" => {
            let effect = num(&inputs["effect_size"])?;
            let alpha = num(&kwargs["alpha"]).unwrap_or(0.05);
            let ratio = num(&kwargs["ratio"]).unwrap_or(1.0);
            let alt = alternative(kwargs)?;
            let power = num(&inputs["power"]).unwrap_or(0.8);
            Some(
                ttest_ind_solve_nobs1(effect, alpha, power, ratio, alt).map(|n1| {
                    vec![
                        ("nobs1", vec![n1]),
                        ("nobs1_ceil", vec![n1.ceil()]),
                        ("nobs2", vec![n1 * ratio]),
                    ]
                }),
            )
        }
        "statsmodels.stats.power.NormalIndPower().solve_power"
        | "statsmodels.stats.power.NormalIndPower().power" => {
            let effect = match num(&inputs["effect_size"]) {
                Some(d) => d,
                None => proportion_effectsize(num(&inputs["p2"])?, num(&inputs["p1"])?),
            };
            let alpha = num(&kwargs["alpha"]).unwrap_or(0.05);
            let ratio = num(&kwargs["ratio"]).unwrap_or(1.0);
            let alt = alternative(kwargs)?;
            let power = num(&inputs["power"]).unwrap_or(0.8);
            let solved = normal_ind_solve_nobs1(effect, alpha, power, ratio, alt);
            Some(solved.map(|n1| {
                if function.ends_with(".power") {
                    vec![(
                        "power",
                        vec![normal_ind_power(effect, n1.ceil(), alpha, ratio, alt)],
                    )]
                } else {
                    vec![
                        ("nobs1", vec![n1]),
                        ("nobs1_ceil", vec![n1.ceil()]),
                        ("nobs2", vec![n1 * ratio]),
                    ]
                }
            }))
        }
        f if f.starts_with("sklearn.metrics.") => {
            let args = e["args"].as_array()?;
            let arg = |i: usize| -> Option<&Value> {
                let path = args.get(i)?.as_str()?.trim_start_matches('$');
                let (variant, field) = path.split_once('.')?;
                Some(&inputs[variant][field])
            };
            let ints = |v: &Value| -> Vec<i64> { floats(v).iter().map(|x| *x as i64).collect() };
            let value =
                |r: Result<f64, mlwatch::stats::StatsError>| r.map(|v| vec![("value", vec![v])]);
            let name = f.trim_start_matches("sklearn.metrics.");
            Some(match name {
                "accuracy_score" => value(metrics::accuracy(&ints(arg(0)?), &ints(arg(1)?))),
                "precision_score" | "recall_score" | "f1_score" => {
                    let avg = match kwargs["average"].as_str().unwrap_or("binary") {
                        "binary" => Average::Binary,
                        "macro" => Average::Macro,
                        "micro" => Average::Micro,
                        "weighted" => Average::Weighted,
                        _ => return None,
                    };
                    value(
                        metrics::precision_recall_f1(&ints(arg(0)?), &ints(arg(1)?), avg).map(
                            |p| match name {
                                "precision_score" => p.precision,
                                "recall_score" => p.recall,
                                _ => p.f1,
                            },
                        ),
                    )
                }
                "confusion_matrix" => {
                    let (t, p) = (ints(arg(0)?), ints(arg(1)?));
                    let labels = match kwargs["labels"].as_array() {
                        Some(l) => l.iter().filter_map(|v| v.as_i64()).collect(),
                        None => metrics::labels(&t, &p),
                    };
                    metrics::confusion_matrix(&t, &p, &labels).map(|m| {
                        vec![(
                            "confusion_matrix",
                            m.into_iter().flatten().map(|c| c as f64).collect(),
                        )]
                    })
                }
                "roc_auc_score" => value(metrics::roc_auc(&ints(arg(0)?), &floats(arg(1)?))),
                "log_loss" => value(metrics::log_loss(&ints(arg(0)?), &floats(arg(1)?))),
                "mean_absolute_error" | "mean_squared_error" | "root_mean_squared_error" => value(
                    metrics::regression_errors(&floats(arg(0)?), &floats(arg(1)?)).map(|r| {
                        match name {
                            "mean_absolute_error" => r.mae,
                            "mean_squared_error" => r.mse,
                            _ => r.rmse,
                        }
                    }),
                ),
                _ => return None,
            })
        }
        f if f.starts_with("evidently.Report([evidently.presets.DataDriftPreset()])") => {
            let mut out: Outputs = Vec::new();
            let mut results = Vec::new();
            let numeric: Vec<&str> = kwargs["numerical_columns"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            let categorical: Vec<&str> = kwargs["categorical_columns"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            for name in numeric.iter().chain(&categorical) {
                let (r, c) = (&inputs["reference"][*name], &inputs["current"][*name]);
                let data = if numeric.contains(name) {
                    ColumnData::Numeric(floats(r), floats(c))
                } else {
                    ColumnData::Categorical(strings(r), strings(c))
                };
                match drift::column_drift(&data, None, None) {
                    Ok(d) => {
                        COLUMN_FIELDS.with(|f| {
                            f.borrow_mut()
                                .push((name.to_string(), d.method.label().to_string()))
                        });
                        out.push((leak(format!("columns.{name}.value")), vec![d.value]));
                        out.push((leak(format!("columns.{name}.threshold")), vec![d.threshold]));
                        results.push(d);
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            let share = num(&kwargs["drift_share"]).unwrap_or(0.5);
            let ds = drift::dataset_drift(&results, share);
            out.push(("drifted_count", vec![ds.drifted_count as f64]));
            out.push(("drifted_share", vec![ds.drifted_share]));
            Some(Ok(out))
        }
        f if f.starts_with("evidently.Report([evidently.metrics.ValueDrift") => {
            evidently_value_drift(doc, e)
        }
        "scipy.stats.anderson_ksamp" => {
            let samples: Vec<Vec<f64>> = inputs["samples"].as_array()?.iter().map(floats).collect();
            let views: Vec<&[f64]> = samples.iter().map(Vec::as_slice).collect();
            let midrank = kwargs["midrank"].as_bool().unwrap_or(true);
            Some(anderson_ksamp(&views, midrank).map(|r| {
                vec![
                    ("statistic", vec![r.statistic]),
                    ("critical_values", r.critical_values.to_vec()),
                    ("pvalue", vec![r.significance_level]),
                ]
            }))
        }
        "scipy.stats.cramervonmises_2samp" => {
            let method: CvmMethod = kwargs["method"].as_str().unwrap_or("auto").parse().ok()?;
            Some(
                cramervonmises_2samp(&floats(&inputs["x"]), &floats(&inputs["y"]), method).map(
                    |r| {
                        vec![
                            ("statistic", vec![r.statistic]),
                            ("pvalue", vec![r.p_value]),
                        ]
                    },
                ),
            )
        }
        "scipy.stats.power_divergence" => {
            // The goodness of fit of current counts to reference proportions,
            // through the drift entry point on category counts.
            let method = match kwargs["lambda_"].as_str()? {
                "pearson" => DriftMethod::ChiSquare,
                "log-likelihood" => DriftMethod::GTest,
                _ => return None,
            };
            let counts = |field: &str| {
                let mut c = CategoryCounts::new(usize::MAX);
                for (k, n) in strings(&inputs["categories"])
                    .iter()
                    .zip(floats(&inputs[field]))
                {
                    c.add(k, n as u64);
                }
                c
            };
            let (r, c) = (counts("reference_counts"), counts("current_counts"));
            Some(
                drift::categorical_drift(&r, &c, Some(method), None)
                    .map(|d| vec![("statistic", vec![d.statistic]), ("pvalue", vec![d.value])]),
            )
        }
        f if f.starts_with("evidently.legacy.calculations.stattests.") => {
            evidently_stattest(doc, e)
        }
        _ => None,
    }
}

/// An Evidently drift test called directly (`evidently.legacy...stattests`):
/// the port's drift entry points on the same data, numeric columns through
/// [`drift::numeric_drift`] on the sorted reference and categorical ones
/// through [`drift::categorical_drift`] on (uncapped) counts.
fn evidently_stattest(
    doc: &Value,
    e: &Value,
) -> Option<Result<Outputs, mlwatch::stats::StatsError>> {
    let inputs = &doc["inputs"];
    let method = match e["kwargs"]["stattest"].as_str()? {
        "hellinger" => DriftMethod::Hellinger,
        "psi" => DriftMethod::Psi,
        "jensenshannon" => DriftMethod::JensenShannon,
        "anderson" => DriftMethod::Anderson,
        "cramer_von_mises" => DriftMethod::CramerVonMises,
        "chisquare" => DriftMethod::ChiSquare,
        "g_test" => DriftMethod::GTest,
        "z" => DriftMethod::ZTest,
        "ks" => DriftMethod::Ks,
        "wasserstein" => DriftMethod::Wasserstein,
        _ => return None,
    };
    let result = if e["kwargs"]["feature_type"] == "num" {
        let mut reference = floats(&inputs["reference"]);
        reference.sort_by(f64::total_cmp);
        drift::numeric_drift(&reference, &floats(&inputs["current"]), Some(method), None)
    } else {
        let counts = |v: &Value| {
            let mut c = CategoryCounts::new(usize::MAX);
            strings(v).iter().for_each(|s| c.add(s, 1));
            c
        };
        drift::categorical_drift(
            &counts(&inputs["reference"]),
            &counts(&inputs["current"]),
            Some(method),
            None,
        )
    };
    Some(result.map(|d| {
        vec![
            ("value", vec![d.value]),
            ("threshold", vec![d.threshold]),
            ("drifted", vec![if d.drifted { 1.0 } else { 0.0 }]),
        ]
    }))
}

thread_local! {
    /// (column, method label) of the last DataDriftPreset evaluation, checked
    /// against the expected `method` strings.
    static COLUMN_FIELDS: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output names are `&'static str`; the nested Evidently report needs a few
/// built at run time (a handful per test run).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Outputs with Evidently's nested `columns.<name>.<field>` flattened; the
/// method names (strings) are checked separately.
fn flatten_outputs(o: &serde_json::Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (k, v) in o {
        if k == "columns" && v.is_object() {
            for (col, fields) in v.as_object().into_iter().flatten() {
                for (f, val) in fields.as_object().into_iter().flatten() {
                    if f != "method" {
                        out.push((format!("columns.{col}.{f}"), val.clone()));
                    }
                }
            }
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

/// The tolerance of `field`, with the report's wildcard entries.
fn tolerance<'a>(e: &'a Value, field: &str) -> &'a Value {
    let t = &e["tolerance"];
    if !t[field].is_null() {
        return &t[field];
    }
    if field.starts_with("columns.") && field.ends_with(".value") {
        // p-value methods get the p-value tolerance, distances the default.
        let col = field
            .trim_start_matches("columns.")
            .trim_end_matches(".value");
        let method = e["outputs"]["columns"][col]["method"]
            .as_str()
            .unwrap_or("");
        if method.ends_with("p_value") {
            return &t["columns.*.value(p-value methods)"];
        }
        return &t["columns.*.value"];
    }
    if field.starts_with("columns.") {
        return &t["columns.*.value"];
    }
    &t[field]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Evidently's per-column drift value, drifted flag and threshold, through
/// the library's `drift::column_drift` with the method the entry names.
fn evidently_value_drift(
    doc: &Value,
    e: &Value,
) -> Option<Result<Outputs, mlwatch::stats::StatsError>> {
    let inputs = &doc["inputs"];
    let method = match e["kwargs"]["method"].as_str()? {
        "psi" => DriftMethod::Psi,
        "jensenshannon" => DriftMethod::JensenShannon,
        "chisquare" => DriftMethod::ChiSquare,
        "wasserstein" => DriftMethod::Wasserstein,
        "ks" => DriftMethod::Ks,
        _ => return None,
    };
    let (r, c) = (&inputs["reference"], &inputs["current"]);
    let data = if doc["category"] == "categorical_drift" {
        ColumnData::Categorical(strings(r), strings(c))
    } else {
        ColumnData::Numeric(floats(r), floats(c))
    };
    Some(drift::column_drift(&data, Some(method), None).map(|d| {
        vec![
            ("value", vec![d.value]),
            ("threshold", vec![d.threshold]),
            ("drifted", vec![if d.drifted { 1.0 } else { 0.0 }]),
        ]
    }))
}

/// Entries checked and skipped per function, and the mismatches.
#[derive(Default)]
struct Tally {
    checked: std::collections::BTreeMap<String, usize>,
    skipped: std::collections::BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// Checks every expected entry of one case document (`file` names it in
/// the failures).
fn check_case(doc: &Value, file: &str, tally: &mut Tally) -> TestResult {
    let expected = doc["expected"].as_array().ok_or("case without expected")?;
    let failures = &mut tally.failures;
    for e in expected {
        let function = e["function"].as_str().unwrap_or("?").to_string();
        let id = format!("{file}#{}", e["id"].as_str().unwrap_or("?"));
        let Some(got) = evaluate(doc, e) else {
            *tally.skipped.entry(function).or_default() += 1;
            continue;
        };
        *tally.checked.entry(function).or_default() += 1;
        if !e["error"].is_null() {
            if got.is_ok() {
                failures.push(format!("{id}: expected an error, got {got:?}"));
            }
            continue;
        }
        let got = match got {
            Ok(r) => r,
            Err(err) => {
                failures.push(format!("{id}: unexpected error {err}"));
                continue;
            }
        };
        let outputs = flatten_outputs(e["outputs"].as_object().ok_or("entry without outputs")?);
        COLUMN_FIELDS.with(|f| {
            for (col, label) in f.borrow_mut().drain(..) {
                let want = &e["outputs"]["columns"][&col]["method"];
                if want.as_str() != Some(label.as_str()) {
                    failures.push(format!(
                        "{id}: column {col} method {label}, expected {want}"
                    ));
                }
            }
        });
        for (field, want) in &outputs {
            let field = field.as_str();
            let Some((_, actual)) = got.iter().find(|(name, _)| *name == field) else {
                failures.push(format!("{id}: the port does not produce `{field}`"));
                continue;
            };
            let want: Vec<f64> = match want {
                Value::Array(a) => a
                    .iter()
                    .flat_map(|v| match v {
                        Value::Array(inner) => inner.iter().filter_map(num).collect::<Vec<_>>(),
                        other => num(other).into_iter().collect(),
                    })
                    .collect(),
                other => num(other).into_iter().collect(),
            };
            if want.len() != actual.len() {
                failures.push(format!(
                    "{id}: {field} has {} values, expected {}",
                    actual.len(),
                    want.len()
                ));
                continue;
            }
            for (a, w) in actual.iter().zip(&want) {
                if !matches(*a, *w, tolerance(e, field)) {
                    failures.push(format!("{id}: {field} = {a:e}, expected {w:e}"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn every_oracle_entry_matches() -> TestResult {
    let dir = oracle_dir();
    let index_bytes = std::fs::read(dir.join("index.json")).map_err(|e| {
        format!(
            "oracle vectors not found at {} ({e}); set MLWATCH_ORACLE_DIR",
            dir.display()
        )
    })?;
    let index: Value = serde_json::from_slice(&index_bytes)?;
    let cases = index["cases"].as_array().ok_or("index.json has no cases")?;
    assert!(!cases.is_empty());
    let mut tally = Tally::default();
    for case in cases {
        let file = case["file"].as_str().ok_or("case without file")?;
        let doc: Value = serde_json::from_slice(&std::fs::read(dir.join(file))?)?;
        let expected = doc["expected"].as_array().ok_or("case without expected")?;
        assert_eq!(
            expected.len() as u64,
            case["n_expected"].as_u64().unwrap_or(0),
            "{file}"
        );
        check_case(&doc, file, &mut tally)?;
    }
    let Tally {
        checked,
        skipped,
        failures,
    } = tally;
    eprintln!("oracle entries checked: {checked:?}");
    eprintln!("oracle entries for functions not implemented yet: {skipped:?}");
    assert!(
        skipped.is_empty(),
        "every oracle function is implemented: {skipped:?}"
    );
    assert!(checked.values().sum::<usize>() >= 370, "{checked:?}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// The hard inputs of `tests/data/hard_inputs_oracle.json` (written by
/// `tests/data/make_hard_vectors.py` with scipy 1.17.1 and statsmodels
/// 0.15.0): t-tests on values around 1e9 and 1.7e9 with noise of about 1
/// (expected values from scipy on the exactly shifted values, since scipy
/// on the raw values is itself off by about 1e-6), and degenerate inputs
/// (constant samples, one value, one category, one SRM arm, 0/0
/// proportions) where scipy returns NaN, infinities or its conventions.
/// Every entry is checked with the oracle's tolerances.
#[test]
fn hard_input_entries_match() -> TestResult {
    let path = crate::manifest_dir().join("tests/data/hard_inputs_oracle.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let cases = doc["cases"].as_array().ok_or("no cases")?;
    let mut tally = Tally::default();
    let mut entries = 0;
    for case in cases {
        let id = case["id"].as_str().ok_or("case without id")?;
        entries += case["expected"].as_array().map_or(0, Vec::len);
        check_case(case, id, &mut tally)?;
    }
    assert!(
        tally.skipped.is_empty(),
        "every entry is checked: {:?}",
        tally.skipped
    );
    assert_eq!(tally.checked.values().sum::<usize>(), entries);
    assert!(entries >= 50, "{entries} entries");
    assert!(
        tally.failures.is_empty(),
        "{} mismatches:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    Ok(())
}

/// The drift-method vectors of `tests/data/drift_methods_oracle.json`
/// (written by `tests/data/make_drift_vectors.py` with scipy 1.17.1 and
/// Evidently 0.7.23): `anderson_ksamp` (sizes from 7 values to 3,500, ties,
/// midrank and right variants, three samples, p capped at 0.25 and floored
/// at 0.001), `cramervonmises_2samp` (exact and asymptotic on both sides of
/// the `auto` switch, ties), chi-square and G goodness of fit on counts,
/// and Evidently's Hellinger, PSI, Jensen-Shannon, Anderson-Darling,
/// Cramér-von Mises, chi-square, G and z tests (value, threshold, verdict).
/// The two-sample Anderson-Darling and Cramér-von Mises cases are also run
/// through the sorted-reference fast paths, which must agree exactly.
#[test]
fn drift_method_entries_match() -> TestResult {
    let path = crate::manifest_dir().join("tests/data/drift_methods_oracle.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let cases = doc["cases"].as_array().ok_or("no cases")?;
    let mut tally = Tally::default();
    let mut entries = 0;
    let mut fast_paths = 0;
    for case in cases {
        let id = case["id"].as_str().ok_or("case without id")?;
        entries += case["expected"].as_array().map_or(0, Vec::len);
        check_case(case, id, &mut tally)?;
        let inputs = &case["inputs"];
        let pair = match case["category"].as_str() {
            Some("anderson_ksamp") => match inputs["samples"].as_array() {
                Some(s) if s.len() == 2 => Some((floats(&s[0]), floats(&s[1]))),
                _ => None,
            },
            Some("cramervonmises_2samp") => Some((floats(&inputs["x"]), floats(&inputs["y"]))),
            _ => None,
        };
        if let Some((x, y)) = pair {
            let mut xs = x.clone();
            xs.sort_by(f64::total_cmp);
            if case["category"] == "anderson_ksamp" {
                for midrank in [true, false] {
                    assert_eq!(
                        anderson_ksamp(&[&x, &y], midrank)?,
                        anderson_ksamp_sorted(&xs, &y, midrank)?,
                        "{id}"
                    );
                }
            } else {
                for method in [CvmMethod::Auto, CvmMethod::Asymptotic] {
                    assert_eq!(
                        cramervonmises_2samp(&x, &y, method)?,
                        cramervonmises_2samp_sorted(&xs, &y, method)?,
                        "{id}"
                    );
                }
            }
            fast_paths += 1;
        }
    }
    assert!(
        tally.skipped.is_empty(),
        "every entry is checked: {:?}",
        tally.skipped
    );
    assert_eq!(tally.checked.values().sum::<usize>(), entries);
    assert!(entries >= 80, "{entries} entries");
    assert!(
        fast_paths >= 15,
        "{fast_paths} cases through the fast paths"
    );
    eprintln!("drift method entries checked: {:?}", tally.checked);
    assert!(
        tally.failures.is_empty(),
        "{} mismatches:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    Ok(())
}
