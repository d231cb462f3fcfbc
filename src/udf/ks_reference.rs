//! `ks_reference(value, reference)`: the two-sample KS test of a group's
//! values against a named reference sample held by the function.
//!
//! The window drift query runs once per closed window against the same
//! training samples. Keeping each reference sorted inside the function
//! means a window only sorts its own values and makes one merge pass,
//! instead of joining, copying and re-sorting the reference every time
//! (`ks_2samp(value, is_current)` does that, and stays for ad-hoc SQL).
//! `reference` is the reference's name (constant within a group). The
//! result is the same struct as `ks_2samp`; statistic and p-value are NULL
//! for a group without values, and an unknown name is an error.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use super::two_sample::{TwoSampleKind, extend_from_lists, list_scalar};
use crate::stats::Alternative;
use crate::stats::ks::{KsMethod, ks_2samp_sorted};

/// Sorted reference samples by name.
pub type References = BTreeMap<String, Arc<Vec<f64>>>;

/// The `ks_reference` aggregate UDF.
#[derive(Debug)]
pub struct KsReference {
    signature: Signature,
    method: KsMethod,
    references: Arc<References>,
}

impl PartialEq for KsReference {
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method && Arc::ptr_eq(&self.references, &other.references)
    }
}
impl Eq for KsReference {}
impl Hash for KsReference {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.method.hash(state);
        (Arc::as_ptr(&self.references) as usize).hash(state);
    }
}

impl KsReference {
    /// A `ks_reference` over `references` (each sorted ascending, no NaN).
    pub fn new(method: KsMethod, references: Arc<References>) -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Utf8],
                Volatility::Immutable,
            ),
            method,
            references,
        }
    }
}

impl AggregateUDFImpl for KsReference {
    fn name(&self) -> &str {
        "ks_reference"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return exec_err!(
                "ks_reference takes (value, reference), got {} arguments",
                arg_types.len()
            );
        }
        Ok(vec![DataType::Float64, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(TwoSampleKind::Ks(self.method).fields()))
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(RefAccumulator {
            method: self.method,
            references: self.references.clone(),
            key: None,
            current: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Arc::new(Field::new_list_field(DataType::Float64, true));
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_values", args.name),
                DataType::List(item),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_reference", args.name),
                DataType::Utf8,
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct RefAccumulator {
    method: KsMethod,
    references: Arc<References>,
    key: Option<String>,
    current: Vec<f64>,
}

impl RefAccumulator {
    fn note_key(&mut self, keys: &ArrayRef) -> Result<()> {
        if self.key.is_some() {
            return Ok(());
        }
        let keys = cast(keys, &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        if let Some(k) = keys.iter().flatten().next() {
            self.key = Some(k.to_string());
        }
        Ok(())
    }
}

impl Accumulator for RefAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.note_key(&values[1])?;
        let v = cast(&values[0], &DataType::Float64)?;
        self.current.extend(
            v.as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .filter(|x| !x.is_nan()),
        );
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.note_key(&states[1])?;
        extend_from_lists(&mut self.current, &states[0]);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            list_scalar(&self.current),
            ScalarValue::Utf8(self.key.clone()),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let Some(key) = &self.key else {
            return exec_err!("ks_reference: no reference name in the group");
        };
        let Some(reference) = self.references.get(key) else {
            return exec_err!("ks_reference: no reference sample named `{key}`");
        };
        let values = if reference.is_empty() || self.current.is_empty() {
            None
        } else {
            self.current.sort_unstable_by(f64::total_cmp);
            let r = ks_2samp_sorted(reference, &self.current, Alternative::TwoSided, self.method)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            Some([r.statistic, r.p_value])
        };
        super::result_scalar(
            TwoSampleKind::Ks(self.method).float_fields(),
            values.as_ref().map(|v| v.as_slice()),
            reference.len() as i64,
            self.current.len() as i64,
        )
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * self.current.capacity()
    }
}
