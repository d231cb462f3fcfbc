//! `ks_2samp(value, is_current)`: the two-sample KS test as an aggregate.
//!
//! Rows with `is_current = false` form the reference sample, rows with
//! `is_current = true` the current one; NULL and NaN values are skipped. The
//! result is a struct `{statistic, p_value, n_reference, n_current}`;
//! statistic and p-value are NULL when either sample is empty. The partial
//! state is the two value lists, so the function works with DataFusion's
//! repartitioned two-phase aggregation.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::stats::Alternative;
use crate::stats::ks::{KsMethod, ks_2samp};

/// The `ks_2samp` aggregate UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Ks2Samp {
    signature: Signature,
    method: KsMethod,
}

impl Ks2Samp {
    /// A `ks_2samp` whose p-values use `method`.
    pub fn new(method: KsMethod) -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Boolean],
                Volatility::Immutable,
            ),
            method,
        }
    }

    /// Fields of the result struct (shared with `ks_reference`).
    pub(crate) fn result_fields() -> Fields {
        Fields::from(vec![
            Field::new("statistic", DataType::Float64, true),
            Field::new("p_value", DataType::Float64, true),
            Field::new("n_reference", DataType::Int64, false),
            Field::new("n_current", DataType::Int64, false),
        ])
    }
}

impl AggregateUDFImpl for Ks2Samp {
    fn name(&self) -> &str {
        "ks_2samp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return exec_err!(
                "ks_2samp takes (value, is_current), got {} arguments",
                arg_types.len()
            );
        }
        Ok(vec![DataType::Float64, DataType::Boolean])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::result_fields()))
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(KsAccumulator {
            method: self.method,
            reference: Vec::new(),
            current: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Arc::new(Field::new_list_field(DataType::Float64, true));
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_reference", args.name),
                DataType::List(item.clone()),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_current", args.name),
                DataType::List(item),
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct KsAccumulator {
    method: KsMethod,
    reference: Vec<f64>,
    current: Vec<f64>,
}

fn list_scalar(values: &[f64]) -> ScalarValue {
    let arr = ListArray::from_iter_primitive::<Float64Type, _, _>(std::iter::once(Some(
        values.iter().map(|v| Some(*v)),
    )));
    ScalarValue::List(Arc::new(arr))
}

impl Accumulator for KsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = cast(&values[0], &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        let flag = values[1].as_boolean();
        for i in 0..v.len() {
            if v.is_null(i) || flag.is_null(i) {
                continue;
            }
            let x = v.value(i);
            if x.is_nan() {
                continue;
            }
            if flag.value(i) {
                self.current.push(x);
            } else {
                self.reference.push(x);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for (state, dst) in states.iter().zip([&mut self.reference, &mut self.current]) {
            let lists = state.as_list::<i32>();
            for i in 0..lists.len() {
                if lists.is_null(i) {
                    continue;
                }
                let inner = lists.value(i);
                let inner: &Float64Array = inner.as_primitive::<Float64Type>();
                dst.extend(inner.iter().flatten());
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            list_scalar(&self.reference),
            list_scalar(&self.current),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (stat, p) = if self.reference.is_empty() || self.current.is_empty() {
            (None, None)
        } else {
            let r = ks_2samp(
                &self.reference,
                &self.current,
                Alternative::TwoSided,
                self.method,
            )
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            (Some(r.statistic), Some(r.p_value))
        };
        let fields = Ks2Samp::result_fields();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![stat])),
            Arc::new(Float64Array::from(vec![p])),
            Arc::new(datafusion::arrow::array::Int64Array::from(vec![
                self.reference.len() as i64,
            ])),
            Arc::new(datafusion::arrow::array::Int64Array::from(vec![
                self.current.len() as i64,
            ])),
        ];
        let s = datafusion::arrow::array::StructArray::try_new(fields, arrays, None)?;
        Ok(ScalarValue::Struct(Arc::new(s)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * (self.reference.capacity() + self.current.capacity())
    }
}
