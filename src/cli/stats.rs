//! `mlwatch stats`: the statistics library on files, for ad-hoc checks.
//!
//! Samples are read by [`crate::files`] from CSV, Parquet or JSON lines (by
//! extension: `.csv`, `.parquet`, `.jsonl`/`.ndjson`/`.json`) with
//! `--column`, or from a text file with one value per line; each file is a
//! path or a `file://` or `s3://` URL. Output is one JSON object per test (an
//! array for `drift`) with the fields named as in the library: `statistic`,
//! `p_value`, `df`, `ci_low`, `ci_high`, `distance`, `drifted`,
//! `n_reference`, `n_current`, as they apply. Wherever a result is read as
//! drift (or, for `srm`, as a mismatch), `verdict` says `drift`, `no_drift`
//! or `not_testable`: a NaN p-value or distance (a test undefined on the
//! data, e.g. one category) is not testable, never "no drift"; NaN numbers
//! are printed as `null`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use datafusion::arrow::array::RecordBatch;
use serde_json::{Value, json};

use crate::files::{self, Format, TableFile};
use crate::stats::chi_square::{Divergence, chi2_contingency, srm};
use crate::stats::drift::{self, ColumnData, DriftMethod, Verdict};
use crate::stats::ks::{KsMethod, ks_2samp};
use crate::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use crate::stats::{
    Alternative, distance, metrics, proportions, sample_size, sequential, summary, t_test,
};

/// Arguments of `mlwatch stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Output: one JSON object per test (an array for several), or a text table.
    #[arg(long, value_enum, default_value_t = OutFormat::Json, global = true)]
    pub format: OutFormat,
    /// The test to run.
    #[command(subcommand)]
    pub test: StatsTest,
}

/// Output formats of `mlwatch stats`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutFormat {
    /// Pretty-printed JSON.
    Json,
    /// `field  value` lines, one block per test.
    Table,
}

/// Renders results as aligned `field  value` lines.
fn table(v: &Value) -> String {
    let mut out = String::new();
    let objects: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for (i, o) in objects.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if let Some(map) = o.as_object() {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!("{k:<width$}  {v}\n"));
            }
        }
    }
    out
}

/// Two samples from files.
#[derive(Debug, Args)]
pub struct TwoSamples {
    /// First (reference, or A) sample file.
    pub a: PathBuf,
    /// Second (current, or B) sample file.
    pub b: PathBuf,
    /// Column to read from both files (not needed for one-value-per-line text).
    #[arg(long)]
    pub column: Option<String>,
}

/// Alternatives, as scipy names them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Alt {
    /// two-sided
    TwoSided,
    /// less
    Less,
    /// greater
    Greater,
}

impl From<Alt> for Alternative {
    fn from(a: Alt) -> Self {
        match a {
            Alt::TwoSided => Alternative::TwoSided,
            Alt::Less => Alternative::Less,
            Alt::Greater => Alternative::Greater,
        }
    }
}

/// Tests of `mlwatch stats`.
#[derive(Debug, Subcommand)]
pub enum StatsTest {
    /// Two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp).
    Ks {
        #[command(flatten)]
        samples: TwoSamples,
        /// Alternative hypothesis.
        #[arg(long, value_enum, default_value_t = Alt::TwoSided)]
        alternative: Alt,
        /// auto, exact or asymp.
        #[arg(long, default_value = "auto")]
        method: String,
    },
    /// Chi-square test of independence of category counts (scipy.stats.chi2_contingency).
    Chi2 {
        #[command(flatten)]
        samples: TwoSamples,
        /// No Yates correction for 2x2 tables.
        #[arg(long)]
        no_correction: bool,
        /// Use the G-test (log-likelihood ratio).
        #[arg(long)]
        g_test: bool,
    },
    /// Population stability index (reference deciles, or Evidently's bins with --evidently).
    Psi {
        #[command(flatten)]
        samples: TwoSamples,
        /// Evidently's binning and zero fill instead of reference deciles.
        #[arg(long)]
        evidently: bool,
    },
    /// Jensen-Shannon distance (base 2 on decile bins; Evidently's with --evidently).
    Js {
        #[command(flatten)]
        samples: TwoSamples,
        /// Evidently's binning and natural log.
        #[arg(long)]
        evidently: bool,
    },
    /// Wasserstein distance (scipy); --normed divides by the reference std as Evidently.
    Wasserstein {
        #[command(flatten)]
        samples: TwoSamples,
        /// Evidently's normed variant.
        #[arg(long)]
        normed: bool,
    },
    /// Welch (or Student with --equal-var) t-test with a confidence interval.
    Ttest {
        #[command(flatten)]
        samples: TwoSamples,
        /// Alternative hypothesis.
        #[arg(long, value_enum, default_value_t = Alt::TwoSided)]
        alternative: Alt,
        /// Pool the variances (Student's t).
        #[arg(long)]
        equal_var: bool,
        /// Confidence level of the interval for mean(a) - mean(b).
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Also give the always-valid interval (asymptotic confidence
        /// sequence, Waudby-Smith et al. 2024) at the same confidence:
        /// cs_low, cs_high and always_valid_p, safe to watch continuously.
        #[arg(long)]
        sequential: bool,
        /// Units (both arms) at which the sequence is tuned to be tightest;
        /// default: the current total.
        #[arg(long, requires = "sequential")]
        t_star: Option<f64>,
    },
    /// Mann-Whitney U test (scipy.stats.mannwhitneyu).
    Mannwhitney {
        #[command(flatten)]
        samples: TwoSamples,
        /// Alternative hypothesis.
        #[arg(long, value_enum, default_value_t = Alt::TwoSided)]
        alternative: Alt,
        /// auto, exact or asymptotic.
        #[arg(long, default_value = "auto")]
        method: String,
        /// No continuity correction.
        #[arg(long)]
        no_continuity: bool,
    },
    /// Welch's t-test and Mann-Whitney U on the same two samples (read once).
    Means {
        #[command(flatten)]
        samples: TwoSamples,
        /// Alternative hypothesis.
        #[arg(long, value_enum, default_value_t = Alt::TwoSided)]
        alternative: Alt,
        /// Confidence level of the interval for mean(a) - mean(b).
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
    },
    /// Two-proportion z-test with a confidence interval for p1 - p2.
    Proportions {
        /// Successes in arm 1.
        #[arg(long)]
        count1: f64,
        /// Trials in arm 1.
        #[arg(long)]
        nobs1: f64,
        /// Successes in arm 2.
        #[arg(long)]
        count2: f64,
        /// Trials in arm 2.
        #[arg(long)]
        nobs2: f64,
        /// Interval method: wald, agresti-caffo or newcomb.
        #[arg(long, default_value = "newcomb")]
        ci: String,
        /// Confidence level.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
    },
    /// Sample-ratio-mismatch chi-square test of arm counts against weights.
    Srm {
        /// Observed counts per arm, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        observed: Vec<f64>,
        /// Configured weights per arm, comma-separated (normalised).
        #[arg(long, value_delimiter = ',', required = true)]
        weights: Vec<f64>,
    },
    /// Sample size per arm (statsmodels NormalIndPower / TTestIndPower).
    SampleSize {
        /// Baseline proportion (with --p2 or --relative-lift).
        #[arg(long)]
        p1: Option<f64>,
        /// Target proportion.
        #[arg(long)]
        p2: Option<f64>,
        /// Relative lift over --p1 (0.1 = +10%).
        #[arg(long)]
        relative_lift: Option<f64>,
        /// Cohen's d for a difference in means (uses the t-test power).
        #[arg(long)]
        effect_size: Option<f64>,
        /// Significance level.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Target power.
        #[arg(long, default_value_t = 0.8)]
        power: f64,
        /// nobs2 / nobs1.
        #[arg(long, default_value_t = 1.0)]
        ratio: f64,
    },
    /// Model metrics from one table of labels, predictions and scores.
    Metrics {
        /// Table file (CSV, Parquet, JSON lines).
        file: PathBuf,
        /// Column of true labels (integers; numbers with --regression).
        #[arg(long)]
        y_true: String,
        /// Column of predicted labels (numbers with --regression).
        #[arg(long)]
        y_pred: String,
        /// Column of P(y = 1) scores, for ROC AUC and log loss.
        #[arg(long)]
        y_score: Option<String>,
        /// binary, macro, micro or weighted.
        #[arg(long, default_value = "binary")]
        average: String,
        /// Regression errors (MAE, MSE, RMSE) instead of classification metrics.
        #[arg(long)]
        regression: bool,
    },
    /// Per-column drift of two tables, with Evidently's default method per column.
    Drift {
        /// Reference table file.
        reference: PathBuf,
        /// Current table file.
        current: PathBuf,
        /// Method for every column instead of the default choice.
        #[arg(long)]
        method: Option<String>,
        /// Method for numeric columns (e.g. ks), overriding the default choice.
        #[arg(long)]
        numeric_method: Option<String>,
        /// Method for string columns (e.g. chi2_contingency), overriding the default choice.
        #[arg(long)]
        categorical_method: Option<String>,
        /// Share of drifted columns for the dataset verdict.
        #[arg(long, default_value_t = 0.5)]
        drift_share: f64,
    },
}

impl StatsTest {
    /// The file arguments, each with its name in the usage line.
    fn files(&self) -> Vec<(&'static str, &Path)> {
        match self {
            StatsTest::Ks { samples, .. }
            | StatsTest::Chi2 { samples, .. }
            | StatsTest::Psi { samples, .. }
            | StatsTest::Js { samples, .. }
            | StatsTest::Wasserstein { samples, .. }
            | StatsTest::Ttest { samples, .. }
            | StatsTest::Mannwhitney { samples, .. }
            | StatsTest::Means { samples, .. } => {
                vec![("<A>", samples.a.as_path()), ("<B>", samples.b.as_path())]
            }
            StatsTest::Metrics { file, .. } => vec![("<FILE>", file.as_path())],
            StatsTest::Drift {
                reference, current, ..
            } => vec![
                ("<REFERENCE>", reference.as_path()),
                ("<CURRENT>", current.as_path()),
            ],
            StatsTest::Proportions { .. }
            | StatsTest::Srm { .. }
            | StatsTest::SampleSize { .. } => Vec::new(),
        }
    }
}

pub(super) async fn run(args: StatsArgs) -> anyhow::Result<()> {
    // A missing file is reported with the argument it was given as.
    for (arg, path) in args.test.files() {
        if !is_url(path) {
            super::input_file(arg, path)?;
        }
    }
    let out = match args.test {
        StatsTest::Ks {
            samples,
            alternative,
            method,
        } => {
            let (a, b) = numeric_pair(&samples).await?;
            let m: KsMethod = method.parse()?;
            let r = ks_2samp(&a, &b, alternative.into(), m)?;
            json!({"test": "ks", "statistic": r.statistic, "p_value": r.p_value,
                   "statistic_location": r.statistic_location, "statistic_sign": r.statistic_sign,
                   "method": format!("{:?}", r.method).to_lowercase(), "n_reference": r.n1, "n_current": r.n2})
        }
        StatsTest::Chi2 {
            samples,
            no_correction,
            g_test,
        } => {
            let (a, b) = category_pair(&samples).await?;
            let (_, ra, rb) = distance::category_counts(&a, &b);
            let table = vec![
                ra.iter().map(|v| *v as f64).collect::<Vec<_>>(),
                rb.iter().map(|v| *v as f64).collect(),
            ];
            let kind = if g_test {
                Divergence::LogLikelihood
            } else {
                Divergence::Pearson
            };
            let r = chi2_contingency(&table, !no_correction, kind)?;
            json!({"test": if g_test { "g_test" } else { "chi2" }, "statistic": r.statistic, "p_value": r.p_value,
                   "df": r.df, "n_reference": a.len(), "n_current": b.len()})
        }
        StatsTest::Psi { samples, evidently } => {
            let (a, b) = numeric_pair(&samples).await?;
            let d = if evidently {
                distance::evidently_psi(&distance::evidently_bins(&a, &b)?)
            } else {
                distance::psi_deciles(&a, &b)?.psi
            };
            let verdict = Verdict::from_distance(d, 0.1);
            json!({"test": "psi", "distance": d, "drifted": verdict.is_drift(), "verdict": verdict,
                   "n_reference": a.len(), "n_current": b.len()})
        }
        StatsTest::Js { samples, evidently } => {
            let (a, b) = numeric_pair(&samples).await?;
            let d = if evidently {
                distance::evidently_jensen_shannon(&distance::evidently_bins(&a, &b)?)?
            } else {
                let p = distance::psi_deciles(&a, &b)?;
                let f = |c: &[u64]| c.iter().map(|v| *v as f64).collect::<Vec<_>>();
                distance::jensen_shannon(&f(&p.ref_counts), &f(&p.cur_counts), Some(2.0))?
            };
            let verdict = Verdict::from_distance(d, 0.1);
            json!({"test": "js", "distance": d, "drifted": verdict.is_drift(), "verdict": verdict,
                   "n_reference": a.len(), "n_current": b.len()})
        }
        StatsTest::Wasserstein { samples, normed } => {
            let (a, b) = numeric_pair(&samples).await?;
            let d = if normed {
                distance::wasserstein_normed(&a, &b)?
            } else {
                distance::wasserstein(&a, &b)?
            };
            let mut v = json!({"test": "wasserstein", "distance": d, "n_reference": a.len(), "n_current": b.len()});
            if normed {
                let verdict = Verdict::from_distance(d, 0.1);
                v["drifted"] = json!(verdict.is_drift());
                v["verdict"] = json!(verdict);
            }
            v
        }
        StatsTest::Ttest {
            samples,
            alternative,
            equal_var,
            confidence,
            sequential,
            t_star,
        } => {
            let (a, b) = numeric_pair(&samples).await?;
            let r = t_test::ttest_ind(&a, &b, equal_var, alternative.into(), confidence)?;
            let mut v = ttest_json(
                if equal_var { "student_t" } else { "welch_t" },
                &r,
                a.len(),
                b.len(),
            );
            if sequential {
                let moments = |xs: &[f64]| {
                    let mut m = summary::Moments::default();
                    xs.iter().for_each(|x| m.push(*x));
                    m
                };
                let t_star = t_star.unwrap_or((a.len() + b.len()) as f64);
                let s = sequential::mean_difference(
                    &moments(&a),
                    &moments(&b),
                    1.0 - confidence,
                    t_star,
                )?;
                v["cs_low"] = json!(s.cs_low);
                v["cs_high"] = json!(s.cs_high);
                v["always_valid_p"] = json!(s.always_valid_p);
            }
            v
        }
        StatsTest::Mannwhitney {
            samples,
            alternative,
            method,
            no_continuity,
        } => {
            let (a, b) = numeric_pair(&samples).await?;
            let m: MwuMethod = method.parse()?;
            let r = mannwhitneyu(&a, &b, alternative.into(), m, !no_continuity)?;
            mwu_json(&r, a.len(), b.len())
        }
        StatsTest::Means {
            samples,
            alternative,
            confidence,
        } => {
            let (a, b) = numeric_pair(&samples).await?;
            // The two tests are independent: run them on two cores.
            let (t, u) = std::thread::scope(|s| {
                let u = s.spawn(|| mannwhitneyu(&a, &b, alternative.into(), MwuMethod::Auto, true));
                let t = t_test::ttest_ind(&a, &b, false, alternative.into(), confidence);
                (t, u.join())
            });
            let t = t?;
            let u = u.map_err(|_| anyhow::anyhow!("the Mann-Whitney worker panicked"))??;
            json!([
                ttest_json("welch_t", &t, a.len(), b.len()),
                mwu_json(&u, a.len(), b.len())
            ])
        }
        StatsTest::Proportions {
            count1,
            nobs1,
            count2,
            nobs2,
            ci,
            confidence,
        } => {
            let z = proportions::proportions_ztest(count1, nobs1, count2, nobs2)?;
            let method = match ci.as_str() {
                "wald" => proportions::DiffCi::Wald,
                "agresti-caffo" => proportions::DiffCi::AgrestiCaffo,
                "newcomb" | "newcombe" => proportions::DiffCi::Newcombe,
                other => bail!("--ci {other}: use wald, agresti-caffo or newcomb"),
            };
            let i =
                proportions::confint_diff(count1, nobs1, count2, nobs2, 1.0 - confidence, method)?;
            json!({"test": "proportions_z", "statistic": z.statistic, "p_value": z.p_value,
                   "difference": count1 / nobs1 - count2 / nobs2, "ci_low": i.low, "ci_high": i.high})
        }
        StatsTest::Srm { observed, weights } => {
            if observed.len() != weights.len() {
                bail!(
                    "--observed has {} arms but --weights has {}",
                    observed.len(),
                    weights.len()
                );
            }
            let r = srm(&observed, &weights)?;
            // One arm has no degrees of freedom: p is NaN, not "no mismatch".
            let verdict = Verdict::from_p_value(r.p_value, 0.001, false);
            json!({"test": "srm", "statistic": r.statistic, "p_value": r.p_value, "df": r.df,
                   "expected": r.expected, "drifted": verdict.is_drift(), "verdict": verdict})
        }
        StatsTest::SampleSize {
            p1,
            p2,
            relative_lift,
            effect_size,
            alpha,
            power,
            ratio,
        } => {
            let alt = Alternative::TwoSided;
            let (n1, effect, kind) = match (effect_size, p1) {
                (Some(d), _) => (
                    sample_size::ttest_ind_solve_nobs1(d, alpha, power, ratio, alt)?,
                    d,
                    "means",
                ),
                (None, Some(p1)) => {
                    let p2 = match (p2, relative_lift) {
                        (Some(p2), _) => p2,
                        (None, Some(l)) => p1 * (1.0 + l),
                        _ => bail!("give --p2 or --relative-lift with --p1"),
                    };
                    let h = sample_size::proportion_effectsize(p2, p1);
                    (
                        sample_size::normal_ind_solve_nobs1(h, alpha, power, ratio, alt)?,
                        h,
                        "proportions",
                    )
                }
                _ => bail!("give --p1 (proportions) or --effect-size (means)"),
            };
            json!({"test": "sample_size", "kind": kind, "effect_size": effect, "nobs1": n1,
                   "nobs1_ceil": n1.ceil(), "nobs2": n1 * ratio, "alpha": alpha, "power": power})
        }
        StatsTest::Metrics {
            file,
            y_true,
            y_pred,
            y_score,
            average,
            regression,
        } => {
            let loc = location(&file)?;
            let batches = files::read_table(loc).await?;
            let t = numeric_values(&batches, &y_true, loc)?;
            let p = numeric_values(&batches, &y_pred, loc)?;
            if regression {
                let r = metrics::regression_errors(&t, &p)?;
                json!({"test": "metrics", "mae": r.mae, "mse": r.mse, "rmse": r.rmse, "n": t.len()})
            } else {
                let ints = |v: &[f64]| v.iter().map(|x| *x as i64).collect::<Vec<_>>();
                let (t, p) = (ints(&t), ints(&p));
                let avg = match average.as_str() {
                    "binary" => metrics::Average::Binary,
                    "macro" => metrics::Average::Macro,
                    "micro" => metrics::Average::Micro,
                    "weighted" => metrics::Average::Weighted,
                    other => bail!("--average {other}: use binary, macro, micro or weighted"),
                };
                let prf = metrics::precision_recall_f1(&t, &p, avg)?;
                let labels = metrics::labels(&t, &p);
                let mut v = json!({"test": "metrics", "accuracy": metrics::accuracy(&t, &p)?,
                    "precision": prf.precision, "recall": prf.recall, "f1": prf.f1, "labels": labels,
                    "confusion_matrix": metrics::confusion_matrix(&t, &p, &labels)?, "n": t.len()});
                if let Some(score) = y_score {
                    let s = numeric_values(&batches, &score, loc)?;
                    let auc = metrics::roc_auc(&t, &s)?;
                    v["roc_auc"] = if auc.is_nan() {
                        Value::Null
                    } else {
                        json!(auc)
                    };
                    v["log_loss"] = json!(metrics::log_loss(&t, &s)?);
                }
                v
            }
        }
        StatsTest::Drift {
            reference,
            current,
            method,
            numeric_method,
            categorical_method,
            drift_share,
        } => {
            let parse = |flag: &str, m: Option<&str>| -> anyhow::Result<Option<DriftMethod>> {
                m.map(|m| {
                    // Config names (`js`, `chi2`, `z`, ...) or the names in the output.
                    DriftMethod::parse(m)
                        .or_else(|| serde_json::from_value::<DriftMethod>(json!(m)).ok())
                        .ok_or_else(|| {
                            let names: Vec<&str> =
                                DriftMethod::ALL.iter().map(|m| m.name()).collect();
                            anyhow::anyhow!("--{flag} {m}: use one of {}", names.join(", "))
                        })
                })
                .transpose()
            };
            let method = parse("method", method.as_deref())?;
            let numeric_method = parse("numeric-method", numeric_method.as_deref())?.or(method);
            let categorical_method =
                parse("categorical-method", categorical_method.as_deref())?.or(method);
            // One column at a time from each file, so memory holds a column
            // per worker rather than both tables.
            let reference = TableFile::open(location(&reference)?, &Default::default()).await?;
            let current = TableFile::open(location(&current)?, &Default::default()).await?;
            let (rl, cl) = (reference.location(), current.location());
            let schema = reference.schema().clone();
            let runtime = tokio::runtime::Handle::current();
            // Columns are independent: test them on every core.
            let one_column = |field: &datafusion::arrow::datatypes::Field| -> anyhow::Result<(Value, drift::ColumnDrift)> {
                let name = field.name();
                let rb = runtime.block_on(reference.read_column(name))?;
                let cb = runtime.block_on(current.read_column(name))?;
                let (data, method) = if field.data_type().is_numeric() {
                    let data = ColumnData::Numeric(numeric_values(&rb, name, rl)?, numeric_values(&cb, name, cl)?);
                    (data, numeric_method)
                } else {
                    let data = ColumnData::Categorical(text_values(&rb, name, rl)?, text_values(&cb, name, cl)?);
                    (data, categorical_method)
                };
                let d = drift::column_drift(&data, method, None).with_context(|| format!("column `{name}`"))?;
                let (nr, nc) = match &data {
                    ColumnData::Numeric(r, c) => (r.len(), c.len()),
                    ColumnData::Categorical(r, c) => (r.len(), c.len()),
                };
                let mut row = json!({"column": name, "method": d.method, "threshold": d.threshold,
                                     "drifted": d.drifted, "verdict": d.verdict,
                                     "n_reference": nr, "n_current": nc});
                row[if d.method.is_p_value() { "p_value" } else { "distance" }] = json!(d.value);
                Ok((row, d))
            };
            let fields = schema.fields();
            let next = std::sync::atomic::AtomicUsize::new(0);
            let workers = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(fields.len().max(1));
            let mut done: Vec<(usize, anyhow::Result<(Value, drift::ColumnDrift)>)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..workers)
                        .map(|_| {
                            scope.spawn(|| {
                                let mut out = Vec::new();
                                loop {
                                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    let Some(field) = fields.get(i) else { break };
                                    out.push((i, one_column(field)));
                                }
                                out
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| match h.join() {
                            Ok(v) => v,
                            Err(_) => {
                                vec![(usize::MAX, Err(anyhow::anyhow!("a drift worker panicked")))]
                            }
                        })
                        .collect()
                });
            done.sort_by_key(|(i, _)| *i);
            let mut rows = Vec::new();
            let mut results = Vec::new();
            for (_, r) in done {
                let (row, d) = r?;
                rows.push(row);
                results.push(d);
            }
            let ds = drift::dataset_drift(&results, drift_share);
            rows.push(json!({"dataset": true, "drifted_count": ds.drifted_count,
                             "not_testable_count": ds.not_testable_count,
                             "drifted_share": ds.drifted_share, "drifted": ds.dataset_drifted,
                             "verdict": ds.verdict}));
            Value::Array(rows)
        }
    };
    match args.format {
        OutFormat::Json => super::print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?)),
        OutFormat::Table => super::print_out(&table(&out)),
    }
}

fn ttest_json(name: &str, r: &t_test::TTestResult, na: usize, nb: usize) -> Value {
    json!({"test": name, "statistic": r.statistic, "p_value": r.p_value, "df": r.df,
           "difference": r.difference, "ci_low": finite(r.ci_low), "ci_high": finite(r.ci_high),
           "n_reference": na, "n_current": nb})
}

fn mwu_json(r: &crate::stats::mann_whitney::MwuResult, na: usize, nb: usize) -> Value {
    json!({"test": "mannwhitney", "statistic": r.statistic, "p_value": r.p_value,
           "n_reference": na, "n_current": nb})
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    }
}

async fn numeric_pair(s: &TwoSamples) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    Ok((
        read_numeric(&s.a, s.column.as_deref()).await?,
        read_numeric(&s.b, s.column.as_deref()).await?,
    ))
}

async fn category_pair(s: &TwoSamples) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let col = s.column.as_deref();
    Ok((
        read_categories(&s.a, col).await?,
        read_categories(&s.b, col).await?,
    ))
}

async fn read_categories(p: &Path, column: Option<&str>) -> anyhow::Result<Vec<String>> {
    let loc = location(p)?;
    if Format::of(loc).is_none() {
        return Ok(files::read_lines(loc).await?);
    }
    let col = column.ok_or_else(|| anyhow::anyhow!("{loc}: give --column"))?;
    let file = TableFile::open(loc, &Default::default()).await?;
    text_values(&file.read_column(col).await?, col, loc)
}

async fn read_numeric(p: &Path, column: Option<&str>) -> anyhow::Result<Vec<f64>> {
    let loc = location(p)?;
    if Format::of(loc).is_none() {
        return Ok(files::read_numbers(loc).await?);
    }
    let col = column.ok_or_else(|| anyhow::anyhow!("{loc}: give --column"))?;
    let file = TableFile::open(loc, &Default::default()).await?;
    numeric_values(&file.read_column(col).await?, col, loc)
}

/// A file argument as the location string the readers take.
fn location(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{}: the file name is not UTF-8", p.display()))
}

/// Whether a file argument is a URL (checked by the reader, not locally).
fn is_url(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.contains("://"))
}

/// [`files::column_f64`], refusing a column without numeric values.
fn numeric_values(batches: &[RecordBatch], name: &str, loc: &str) -> anyhow::Result<Vec<f64>> {
    let out = files::column_f64(batches, name, loc)?;
    if out.is_empty() {
        bail!("{loc}: column `{name}` has no numeric values");
    }
    Ok(out)
}

/// [`files::column_str`], refusing a column without values.
fn text_values(batches: &[RecordBatch], name: &str, loc: &str) -> anyhow::Result<Vec<String>> {
    let out = files::column_str(batches, name, loc)?;
    if out.is_empty() {
        bail!("{loc}: column `{name}` has no values");
    }
    Ok(out)
}
