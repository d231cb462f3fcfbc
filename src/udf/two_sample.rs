//! Two-sample SQL aggregates over `(value, in_second)`: rows with
//! `in_second = false` form the first sample (reference, or arm A), rows
//! with `true` the second (current, or arm B); NULL and NaN are skipped.
//!
//! | function | result struct |
//! |---|---|
//! | `ks_2samp` | `statistic, p_value, n_reference, n_current` (p-value method from the config) |
//! | `welch_ttest`, `student_ttest` | `statistic, p_value, df, ci_low, ci_high, n_reference, n_current` (95% interval of mean(first) - mean(second)) |
//! | `mannwhitney_u` | `statistic, p_value, n_reference, n_current` (auto method, continuity correction) |
//! | `wasserstein`, `psi`, `js_distance` | `distance, n_reference, n_current` (PSI on reference deciles; JS base 2 on the same bins) |
//!
//! Results are NULL when a sample is too small for the test. The partial
//! state is the two value lists, as for `ks_2samp`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::stats::ks::{KsMethod, ks_2samp};
use crate::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use crate::stats::{Alternative, distance, t_test};

/// Which test a [`TwoSample`] aggregate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TwoSampleKind {
    /// Two-sample Kolmogorov-Smirnov, two-sided, with this p-value method.
    Ks(KsMethod),
    /// Welch's t-test.
    Welch,
    /// Student's pooled t-test.
    Student,
    /// Mann-Whitney U.
    MannWhitney,
    /// Wasserstein distance.
    Wasserstein,
    /// PSI on reference deciles.
    Psi,
    /// Jensen-Shannon distance (base 2) on reference deciles.
    JensenShannon,
}

impl TwoSampleKind {
    /// Every kind but KS (whose method comes from the configuration).
    pub const ALL: [TwoSampleKind; 6] = [
        Self::Welch,
        Self::Student,
        Self::MannWhitney,
        Self::Wasserstein,
        Self::Psi,
        Self::JensenShannon,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Ks(_) => "ks_2samp",
            Self::Welch => "welch_ttest",
            Self::Student => "student_ttest",
            Self::MannWhitney => "mannwhitney_u",
            Self::Wasserstein => "wasserstein",
            Self::Psi => "psi",
            Self::JensenShannon => "js_distance",
        }
    }

    pub(crate) fn float_fields(self) -> &'static [&'static str] {
        match self {
            Self::Welch | Self::Student => &["statistic", "p_value", "df", "ci_low", "ci_high"],
            Self::Ks(_) | Self::MannWhitney => &["statistic", "p_value"],
            Self::Wasserstein | Self::Psi | Self::JensenShannon => &["distance"],
        }
    }

    /// Fields of the result struct.
    pub fn fields(self) -> Fields {
        super::result_fields(self.float_fields())
    }

    /// The float fields for samples `a`, `b`, or `None` when undefined.
    fn compute(self, a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
        match self {
            Self::Ks(method) => {
                let r = ks_2samp(a, b, Alternative::TwoSided, method).ok()?;
                Some(vec![r.statistic, r.p_value])
            }
            Self::Welch | Self::Student => {
                // The kernel follows scipy with one value (NaN or Student's
                // pooled answer); SQL keeps NULL below two values a side.
                if a.len() < 2 || b.len() < 2 {
                    return None;
                }
                let r = t_test::ttest_ind(a, b, self == Self::Student, Alternative::TwoSided, 0.95)
                    .ok()?;
                Some(vec![r.statistic, r.p_value, r.df, r.ci_low, r.ci_high])
            }
            Self::MannWhitney => {
                let r = mannwhitneyu(a, b, Alternative::TwoSided, MwuMethod::Auto, true).ok()?;
                Some(vec![r.statistic, r.p_value])
            }
            Self::Wasserstein => Some(vec![distance::wasserstein(a, b).ok()?]),
            Self::Psi => Some(vec![distance::psi_deciles(a, b).ok()?.psi]),
            Self::JensenShannon => {
                let p = distance::psi_deciles(a, b).ok()?;
                let f = |c: &[u64]| c.iter().map(|v| *v as f64).collect::<Vec<_>>();
                Some(vec![
                    distance::jensen_shannon(&f(&p.ref_counts), &f(&p.cur_counts), Some(2.0))
                        .ok()?,
                ])
            }
        }
    }
}

/// A two-sample aggregate UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TwoSample {
    signature: Signature,
    kind: TwoSampleKind,
}

impl TwoSample {
    /// The aggregate for `kind`.
    pub fn new(kind: TwoSampleKind) -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Boolean],
                Volatility::Immutable,
            ),
            kind,
        }
    }
}

impl AggregateUDFImpl for TwoSample {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return exec_err!(
                "{} takes (value, in_second), got {} arguments",
                self.kind.name(),
                arg_types.len()
            );
        }
        Ok(vec![DataType::Float64, DataType::Boolean])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.kind.fields()))
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(TwoSampleAccumulator {
            kind: self.kind,
            a: Vec::new(),
            b: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Arc::new(Field::new_list_field(DataType::Float64, true));
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_first", args.name),
                DataType::List(item.clone()),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_second", args.name),
                DataType::List(item),
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct TwoSampleAccumulator {
    kind: TwoSampleKind,
    a: Vec<f64>,
    b: Vec<f64>,
}

/// A sample as a one-row `List<Float64>` state value.
pub(crate) fn list_scalar(values: &[f64]) -> ScalarValue {
    let arr = ListArray::from_iter_primitive::<Float64Type, _, _>(std::iter::once(Some(
        values.iter().map(|v| Some(*v)),
    )));
    ScalarValue::List(Arc::new(arr))
}

/// Appends every value of a `List<Float64>` state column to `dst`.
pub(crate) fn extend_from_lists(dst: &mut Vec<f64>, state: &ArrayRef) {
    let lists = state.as_list::<i32>();
    for i in 0..lists.len() {
        if !lists.is_null(i) {
            dst.extend(
                lists
                    .value(i)
                    .as_primitive::<Float64Type>()
                    .iter()
                    .flatten(),
            );
        }
    }
}

impl Accumulator for TwoSampleAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = cast(&values[0], &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        let flag = values[1].as_boolean();
        for i in 0..v.len() {
            if v.is_null(i) || flag.is_null(i) || v.value(i).is_nan() {
                continue;
            }
            if flag.value(i) {
                self.b.push(v.value(i))
            } else {
                self.a.push(v.value(i))
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        extend_from_lists(&mut self.a, &states[0]);
        extend_from_lists(&mut self.b, &states[1]);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![list_scalar(&self.a), list_scalar(&self.b)])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let values = self.kind.compute(&self.a, &self.b);
        super::result_scalar(
            self.kind.float_fields(),
            values.as_deref(),
            self.a.len() as i64,
            self.b.len() as i64,
        )
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * (self.a.capacity() + self.b.capacity())
    }
}
