//! Categorical SQL aggregates: tests on counts per category.
//!
//! | function | arguments | result struct |
//! |---|---|---|
//! | `chi2_contingency` | `(category, in_second)` | `statistic, p_value, df, n_reference, n_current` (2 x k table, Yates for 2 x 2, as scipy) |
//! | `g_test` | `(category, in_second)` | as `chi2_contingency`, log-likelihood ratio (scipy `lambda_="log-likelihood"`) |
//! | `proportions_ztest` | `(success, in_second)` | `statistic, p_value, ci_low, ci_high, n_reference, n_current` (pooled z; Wald 95% interval of p(first) - p(second)) |
//! | `srm` | `(variant, weights)` | `statistic, p_value, df, n_reference, n_current` (goodness of fit of variant counts to `weights`, e.g. `'control:1,treatment:1'`; `n_reference` is the total, `n_current` the number of variants) |
//!
//! The category argument is cast to text, so any column type works; NULL
//! categories and flags are skipped. The partial state is the distinct
//! categories with their two counts: bounded by the number of categories,
//! and merged across partitions by adding counts. Results are NULL when the
//! test is undefined (e.g. an empty sample).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::stats::chi_square::{Divergence, chi2_contingency, srm};
use crate::stats::proportions::{DiffCi, confint_diff, proportions_ztest};

/// Which test a [`Categorical`] aggregate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CategoricalKind {
    /// Pearson chi-square on the 2 x k table.
    Chi2,
    /// G-test on the 2 x k table.
    GTest,
    /// Two-proportion z-test on a boolean outcome.
    Proportions,
    /// Sample-ratio mismatch against configured weights.
    Srm,
}

impl CategoricalKind {
    /// Every categorical aggregate.
    pub const ALL: [CategoricalKind; 4] = [Self::Chi2, Self::GTest, Self::Proportions, Self::Srm];

    fn name(self) -> &'static str {
        match self {
            Self::Chi2 => "chi2_contingency",
            Self::GTest => "g_test",
            Self::Proportions => "proportions_ztest",
            Self::Srm => "srm",
        }
    }

    fn float_fields(self) -> &'static [&'static str] {
        match self {
            Self::Chi2 | Self::GTest | Self::Srm => &["statistic", "p_value", "df"],
            Self::Proportions => &["statistic", "p_value", "ci_low", "ci_high"],
        }
    }

    fn fields(self) -> Fields {
        super::result_fields(self.float_fields())
    }

    fn second_type(self) -> DataType {
        match self {
            Self::Srm => DataType::Utf8,
            _ => DataType::Boolean,
        }
    }
}

/// A categorical aggregate UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Categorical {
    signature: Signature,
    kind: CategoricalKind,
}

impl Categorical {
    /// The aggregate for `kind`.
    pub fn new(kind: CategoricalKind) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            kind,
        }
    }
}

impl AggregateUDFImpl for Categorical {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            let args = match self.kind {
                CategoricalKind::Srm => "(variant, weights)",
                CategoricalKind::Proportions => "(success, in_second)",
                _ => "(category, in_second)",
            };
            return exec_err!(
                "{} takes {args}, got {} arguments",
                self.kind.name(),
                arg_types.len()
            );
        }
        let first = match self.kind {
            CategoricalKind::Proportions => DataType::Boolean,
            _ => arg_types[0].clone(),
        };
        Ok(vec![first, self.kind.second_type()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.kind.fields()))
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(CountsAccumulator {
            kind: self.kind,
            counts: BTreeMap::new(),
            weights: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_categories", args.name),
                list(DataType::Utf8),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_first", args.name),
                list(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_second", args.name),
                list(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_weights", args.name),
                DataType::Utf8,
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct CountsAccumulator {
    kind: CategoricalKind,
    /// Category -> (count in the first sample, count in the second).
    counts: BTreeMap<String, (i64, i64)>,
    /// SRM only: the weights argument, as given.
    weights: Option<String>,
}

impl CountsAccumulator {
    fn set_weights(&mut self, w: &str) -> Result<()> {
        match &self.weights {
            Some(old) if old != w => {
                exec_err!("srm: weights must be the same on every row ('{old}' and '{w}')")
            }
            _ => {
                self.weights = Some(w.to_string());
                Ok(())
            }
        }
    }

    /// The float fields, or `None` when the test is undefined.
    fn compute(&self) -> Result<Option<Vec<f64>>> {
        let first: Vec<f64> = self.counts.values().map(|c| c.0 as f64).collect();
        let second: Vec<f64> = self.counts.values().map(|c| c.1 as f64).collect();
        Ok(match self.kind {
            CategoricalKind::Chi2 | CategoricalKind::GTest => {
                let kind = if self.kind == CategoricalKind::Chi2 {
                    Divergence::Pearson
                } else {
                    Divergence::LogLikelihood
                };
                chi2_contingency(&[first, second], true, kind)
                    .ok()
                    .map(|r| vec![r.statistic, r.p_value, r.df])
            }
            CategoricalKind::Proportions => {
                let get = |k: &str| self.counts.get(k).copied().unwrap_or((0, 0));
                let (t, f) = (get("true"), get("false"));
                let (c1, n1) = (t.0 as f64, (t.0 + f.0) as f64);
                let (c2, n2) = (t.1 as f64, (t.1 + f.1) as f64);
                match (
                    proportions_ztest(c1, n1, c2, n2),
                    confint_diff(c1, n1, c2, n2, 0.05, DiffCi::Wald),
                ) {
                    (Ok(z), Ok(ci)) => Some(vec![z.statistic, z.p_value, ci.low, ci.high]),
                    _ => None,
                }
            }
            CategoricalKind::Srm => {
                let Some(spec) = &self.weights else {
                    return Ok(None);
                };
                let weights = parse_weights(spec)?;
                let observed: Vec<f64> = weights
                    .iter()
                    .map(|(arm, _)| self.counts.get(arm).map_or(0.0, |c| c.0 as f64))
                    .collect();
                if let Some(other) = self
                    .counts
                    .keys()
                    .find(|k| !weights.iter().any(|w| &w.0 == *k))
                {
                    return exec_err!("srm: variant '{other}' has no weight in '{spec}'");
                }
                let w: Vec<f64> = weights.iter().map(|(_, w)| *w).collect();
                srm(&observed, &w)
                    .ok()
                    .map(|r| vec![r.statistic, r.p_value, r.df])
            }
        })
    }

    fn sizes(&self) -> (i64, i64) {
        match self.kind {
            CategoricalKind::Srm => (
                self.counts.values().map(|c| c.0).sum(),
                self.weights
                    .as_deref()
                    .and_then(|w| parse_weights(w).ok())
                    .map_or(0, |w| w.len() as i64),
            ),
            _ => (
                self.counts.values().map(|c| c.0).sum(),
                self.counts.values().map(|c| c.1).sum(),
            ),
        }
    }
}

/// `'a:1,b:2'` -> `[("a", 1.0), ("b", 2.0)]`, naming what is wrong.
fn parse_weights(spec: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((arm, w)) = part.rsplit_once(':') else {
            return exec_err!("srm: weight '{part}' is not 'variant:weight'");
        };
        let Ok(w) = w.trim().parse::<f64>() else {
            return exec_err!("srm: weight of '{}' is not a number: '{w}'", arm.trim());
        };
        out.push((arm.trim().to_string(), w));
    }
    if out.len() < 2 {
        return exec_err!("srm: weights '{spec}' name fewer than two variants");
    }
    Ok(out)
}

fn int_list(values: impl Iterator<Item = i64>) -> ScalarValue {
    let arr =
        ListArray::from_iter_primitive::<Int64Type, _, _>(std::iter::once(Some(values.map(Some))));
    ScalarValue::List(Arc::new(arr))
}

impl Accumulator for CountsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let cats = cast(&values[0], &DataType::Utf8)?;
        let cats = cats.as_string::<i32>();
        if self.kind == CategoricalKind::Srm {
            let weights = values[1].as_string::<i32>();
            for i in 0..cats.len() {
                if !weights.is_null(i) {
                    self.set_weights(weights.value(i))?;
                }
                if !cats.is_null(i) {
                    self.counts.entry(cats.value(i).to_string()).or_default().0 += 1;
                }
            }
            return Ok(());
        }
        let flag = values[1].as_boolean();
        for i in 0..cats.len() {
            if cats.is_null(i) || flag.is_null(i) {
                continue;
            }
            let c = self.counts.entry(cats.value(i).to_string()).or_default();
            if flag.value(i) {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (keys, first, second) = (
            states[0].as_list::<i32>(),
            states[1].as_list::<i32>(),
            states[2].as_list::<i32>(),
        );
        let weights = states[3].as_string::<i32>();
        for row in 0..keys.len() {
            if !weights.is_null(row) {
                self.set_weights(weights.value(row))?;
            }
            if keys.is_null(row) {
                continue;
            }
            let k = keys.value(row);
            let (k, a, b) = (k.as_string::<i32>(), first.value(row), second.value(row));
            let (a, b) = (a.as_primitive::<Int64Type>(), b.as_primitive::<Int64Type>());
            for i in 0..k.len() {
                let c = self.counts.entry(k.value(i).to_string()).or_default();
                c.0 += a.value(i);
                c.1 += b.value(i);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let keys = StringArray::from_iter_values(self.counts.keys());
        let keys = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([keys.len()]),
            Arc::new(keys),
            None,
        );
        Ok(vec![
            ScalarValue::List(Arc::new(keys)),
            int_list(self.counts.values().map(|c| c.0)),
            int_list(self.counts.values().map(|c| c.1)),
            ScalarValue::Utf8(self.weights.clone()),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let values = self.compute()?;
        let (n1, n2) = self.sizes();
        super::result_scalar(self.kind.float_fields(), values.as_deref(), n1, n2)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .keys()
                .map(|k| k.capacity() + 16 + 48)
                .sum::<usize>()
    }
}
