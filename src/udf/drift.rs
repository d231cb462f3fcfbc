//! Drift tests as SQL aggregates, with every method of [`crate::stats::drift`].
//!
//! | function | arguments | use |
//! |---|---|---|
//! | `drift_reference` | `value DOUBLE` (or `LIST<DOUBLE>`: every value of each row's list)`, reference VARCHAR, method VARCHAR, threshold DOUBLE` | a group's values against a named training profile (numeric) |
//! | `drift_reference_counts` | `category VARCHAR, n BIGINT, reference VARCHAR, method VARCHAR, threshold DOUBLE` | a group's category counts against a named profile; a NULL category is the `other` bucket |
//! | `drift_2samp` | `value DOUBLE, in_current BOOLEAN, method VARCHAR, threshold DOUBLE` | both samples as rows (ad hoc) |
//! | `drift_2samp_counts` | `category VARCHAR, in_current BOOLEAN, method VARCHAR, threshold DOUBLE` | both samples as rows, one observation each (ad hoc) |
//!
//! `method` is a config name (`ks`, `wasserstein`, `psi`, `js`, `hellinger`,
//! `anderson`, `cramer_von_mises`, `chi2`, `g_test`, `z`) or `auto`/NULL for
//! Evidently's choice by type and size; `threshold` NULL takes the method's
//! default. `reference`, `method` and `threshold` are constant within a
//! group. The result is a struct: `method` (the one used), `statistic`,
//! `p_value` (NULL for distances), `distance` (NULL for p-value methods),
//! `threshold`, `p_value_method`, `drifted` (unadjusted verdict), `testable` (false when the
//! test is undefined on these data, e.g. one category in all), `capped`
//! (a side had categories counted as `other`), `n_reference`, `n_current`.
//! A group without current values gives NULLs (and `testable` false).
//!
//! Profiles are held by the functions (numeric ones sorted), so a window
//! only sorts its own values; they are shared with the monitor, which can
//! swap in a new version's baseline without re-registering the functions.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use serde::{Deserialize, Serialize};

use crate::stats::drift::{self, ColumnDrift, DriftMethod, Reference, Verdict};
use crate::stats::summary::CategoryCounts;

/// Training profiles by name (`<model>/<baseline>/<column>`).
pub type Baselines = Arc<RwLock<BTreeMap<String, Arc<Reference>>>>;

/// Most distinct categories an ad-hoc or reference-count aggregate keeps.
const CATEGORY_CAP: usize = 100_000;

/// Which drift aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriftKind {
    /// `drift_reference`
    Reference,
    /// `drift_reference_counts`
    ReferenceCounts,
    /// `drift_2samp`
    TwoSample,
    /// `drift_2samp_counts`
    TwoSampleCounts,
}

impl DriftKind {
    /// Every kind.
    pub const ALL: [DriftKind; 4] = [
        Self::Reference,
        Self::ReferenceCounts,
        Self::TwoSample,
        Self::TwoSampleCounts,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Reference => "drift_reference",
            Self::ReferenceCounts => "drift_reference_counts",
            Self::TwoSample => "drift_2samp",
            Self::TwoSampleCounts => "drift_2samp_counts",
        }
    }

    fn arg_types(self) -> Vec<DataType> {
        use DataType::*;
        match self {
            Self::Reference => vec![Float64, Utf8, Utf8, Float64],
            Self::ReferenceCounts => vec![Utf8, Int64, Utf8, Utf8, Float64],
            Self::TwoSample => vec![Float64, Boolean, Utf8, Float64],
            Self::TwoSampleCounts => vec![Utf8, Boolean, Utf8, Float64],
        }
    }

    fn counts(self) -> bool {
        matches!(self, Self::ReferenceCounts | Self::TwoSampleCounts)
    }
}

/// The result struct's fields.
pub fn result_fields() -> Fields {
    vec![
        Field::new("method", DataType::Utf8, true),
        Field::new("statistic", DataType::Float64, true),
        Field::new("p_value", DataType::Float64, true),
        Field::new("distance", DataType::Float64, true),
        Field::new("threshold", DataType::Float64, true),
        Field::new("p_value_method", DataType::Boolean, false),
        Field::new("drifted", DataType::Boolean, false),
        Field::new("testable", DataType::Boolean, false),
        Field::new("capped", DataType::Boolean, false),
        Field::new("n_reference", DataType::Int64, false),
        Field::new("n_current", DataType::Int64, false),
    ]
    .into()
}

/// A drift aggregate UDF.
#[derive(Debug)]
pub struct DriftUdaf {
    kind: DriftKind,
    signature: Signature,
    baselines: Baselines,
}

impl PartialEq for DriftUdaf {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && Arc::ptr_eq(&self.baselines, &o.baselines)
    }
}
impl Eq for DriftUdaf {}
impl Hash for DriftUdaf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        (Arc::as_ptr(&self.baselines) as usize).hash(state);
    }
}

impl DriftUdaf {
    /// The aggregate `kind`, reading profiles from `baselines`.
    pub fn new(kind: DriftKind, baselines: Baselines) -> Self {
        Self {
            // `drift_reference` also takes a list of values per row (a
            // window's sample in one row): `coerce_types` decides.
            signature: if kind == DriftKind::Reference {
                Signature::user_defined(Volatility::Immutable)
            } else {
                Signature::exact(kind.arg_types(), Volatility::Immutable)
            },
            kind,
            baselines,
        }
    }
}

impl AggregateUDFImpl for DriftUdaf {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let want = self.kind.arg_types();
        if arg_types.len() != want.len() {
            return exec_err!(
                "{} takes {} arguments, got {}",
                self.kind.name(),
                want.len(),
                arg_types.len()
            );
        }
        let mut want = want;
        if self.kind == DriftKind::Reference {
            let numeric = |t: &DataType| t.is_numeric() || t.is_null();
            match &arg_types[0] {
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                    if numeric(f.data_type()) =>
                {
                    want[0] = value_list()
                }
                t if numeric(t) => {}
                t => {
                    return plan_err!(
                        "{}: `value` must be numeric or a list of numbers, not {t}",
                        self.kind.name()
                    );
                }
            }
        }
        Ok(want)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(result_fields()))
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(DriftAccumulator {
            kind: self.kind,
            baselines: self.baselines.clone(),
            state: State::default(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_state", args.name),
            DataType::Utf8,
            true,
        ))])
    }
}

/// The list type `drift_reference` takes a row's values as.
fn value_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// The non-null, finite values of a `DOUBLE` column or of every list in a
/// `LIST<DOUBLE>` column (Evidently drops NaN and ±inf before a test; a
/// window's summaries count them apart).
fn extend_values(out: &mut Vec<f64>, a: &ArrayRef) -> Result<()> {
    let mut push = |values: &ArrayRef| -> Result<()> {
        let v = cast(values, &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        out.extend(v.iter().flatten().filter(|x| x.is_finite()));
        Ok(())
    };
    match a.data_type() {
        DataType::List(_) => a
            .as_list::<i32>()
            .iter()
            .flatten()
            .try_for_each(|l| push(&l)),
        _ => push(a),
    }
}

/// Partial state (JSON between partitions).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    reference_name: Option<String>,
    method: Option<String>,
    threshold: Option<f64>,
    current: Vec<f64>,
    reference: Vec<f64>,
    current_counts: BTreeMap<String, u64>,
    current_other: u64,
    reference_counts: BTreeMap<String, u64>,
}

impl State {
    fn merge(&mut self, o: State) {
        self.reference_name = self.reference_name.take().or(o.reference_name);
        self.method = self.method.take().or(o.method);
        self.threshold = self.threshold.or(o.threshold);
        self.current.extend(o.current);
        self.reference.extend(o.reference);
        for (k, v) in o.current_counts {
            *self.current_counts.entry(k).or_default() += v;
        }
        self.current_other += o.current_other;
        for (k, v) in o.reference_counts {
            *self.reference_counts.entry(k).or_default() += v;
        }
    }
}

#[derive(Debug)]
struct DriftAccumulator {
    kind: DriftKind,
    baselines: Baselines,
    state: State,
}

fn first_str(a: &ArrayRef) -> Result<Option<String>> {
    let a = cast(a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>()
        .iter()
        .flatten()
        .next()
        .map(str::to_string))
}

fn first_f64(a: &ArrayRef) -> Result<Option<f64>> {
    let a = cast(a, &DataType::Float64)?;
    Ok(a.as_primitive::<Float64Type>().iter().flatten().next())
}

fn ext(e: impl std::error::Error + Send + Sync + 'static) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

fn counts_of(map: &BTreeMap<String, u64>, other: u64) -> CategoryCounts {
    let mut c = CategoryCounts::new(CATEGORY_CAP.max(map.len()));
    for (k, v) in map {
        c.add(k, *v);
    }
    c.add_other(other);
    c
}

impl Accumulator for DriftAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (method_col, threshold_col) = match self.kind {
            DriftKind::ReferenceCounts => (3, 4),
            _ => (2, 3),
        };
        let s = &mut self.state;
        if s.method.is_none() {
            s.method = first_str(&values[method_col])?;
        }
        if s.threshold.is_none() {
            s.threshold = first_f64(&values[threshold_col])?;
        }
        match self.kind {
            DriftKind::Reference => {
                if s.reference_name.is_none() {
                    s.reference_name = first_str(&values[1])?;
                }
                extend_values(&mut s.current, &values[0])?;
            }
            DriftKind::ReferenceCounts => {
                if s.reference_name.is_none() {
                    s.reference_name = first_str(&values[2])?;
                }
                let cats = cast(&values[0], &DataType::Utf8)?;
                let cats = cats.as_string::<i32>();
                let n = cast(&values[1], &DataType::Int64)?;
                let n = n.as_primitive::<Int64Type>();
                for i in 0..cats.len() {
                    if n.is_null(i) || n.value(i) <= 0 {
                        continue;
                    }
                    let k = n.value(i) as u64;
                    if cats.is_null(i) {
                        s.current_other += k;
                    } else {
                        *s.current_counts
                            .entry(cats.value(i).to_string())
                            .or_default() += k;
                    }
                }
            }
            DriftKind::TwoSample => {
                let v = cast(&values[0], &DataType::Float64)?;
                let v = v.as_primitive::<Float64Type>();
                let side = values[1].as_boolean();
                for i in 0..v.len() {
                    if v.is_null(i) || side.is_null(i) || !v.value(i).is_finite() {
                        continue;
                    }
                    if side.value(i) {
                        s.current.push(v.value(i));
                    } else {
                        s.reference.push(v.value(i));
                    }
                }
            }
            DriftKind::TwoSampleCounts => {
                let cats = cast(&values[0], &DataType::Utf8)?;
                let cats = cats.as_string::<i32>();
                let side = values[1].as_boolean();
                for i in 0..cats.len() {
                    if cats.is_null(i) || side.is_null(i) {
                        continue;
                    }
                    let map = if side.value(i) {
                        &mut s.current_counts
                    } else {
                        &mut s.reference_counts
                    };
                    *map.entry(cats.value(i).to_string()).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let js = states[0].as_string::<i32>();
        for s in js.iter().flatten() {
            let o: State = serde_json::from_str(s).map_err(ext)?;
            self.state.merge(o);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let s = std::mem::take(&mut self.state);
        let json = serde_json::to_string(&s).map_err(ext)?;
        self.state = s;
        Ok(vec![ScalarValue::Utf8(Some(json))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let s = &mut self.state;
        let name = self.kind.name();
        let method = match s.method.as_deref() {
            None | Some("auto") => None,
            Some(m) => match DriftMethod::parse(m) {
                Some(m) => Some(m),
                None => return exec_err!("{name}: unknown method `{m}`"),
            },
        };
        let reference = match self.kind {
            DriftKind::Reference | DriftKind::ReferenceCounts => {
                let Some(key) = &s.reference_name else {
                    return exec_err!("{name}: no reference name in the group");
                };
                let map = self.baselines.read().map_err(|_| {
                    datafusion::error::DataFusionError::Internal("baselines lock poisoned".into())
                })?;
                match map.get(key) {
                    Some(r) => Some(r.clone()),
                    None => return exec_err!("{name}: no reference profile named `{key}`"),
                }
            }
            _ => None,
        };
        let (result, n_ref, n_cur, capped) = if self.kind.counts() {
            let current = counts_of(&s.current_counts, s.current_other);
            let owned;
            let reference_counts = match reference.as_deref() {
                Some(Reference::Categorical(c)) => c,
                Some(Reference::Numeric { .. }) => {
                    return exec_err!(
                        "{name}: the reference profile is numeric; use drift_reference"
                    );
                }
                None => {
                    owned = counts_of(&s.reference_counts, 0);
                    &owned
                }
            };
            let (n_ref, n_cur) = (reference_counts.total(), current.total());
            let capped = current.is_capped() || reference_counts.is_capped();
            let r = if n_cur == 0 || n_ref == 0 {
                None
            } else {
                untestable_on_error(
                    name,
                    drift::categorical_drift(reference_counts, &current, method, s.threshold),
                )?
            };
            (r, n_ref, n_cur, capped)
        } else {
            s.current.sort_unstable_by(f64::total_cmp);
            let (sorted_ref, count): (&[f64], Option<u64>) = match reference.as_deref() {
                Some(Reference::Numeric { sorted, count }) => (sorted, *count),
                Some(Reference::Categorical(_)) => {
                    return exec_err!(
                        "{name}: the reference profile is categorical; use drift_reference_counts"
                    );
                }
                None => {
                    s.reference.sort_unstable_by(f64::total_cmp);
                    (&s.reference, None)
                }
            };
            let (n_ref, n_cur) = (sorted_ref.len() as u64, s.current.len() as u64);
            let r = if n_cur == 0 || n_ref == 0 {
                None
            } else {
                untestable_on_error(
                    name,
                    drift::numeric_drift_sampled(
                        sorted_ref,
                        count.unwrap_or(n_ref),
                        &s.current,
                        method,
                        s.threshold,
                    ),
                )?
            };
            (r, n_ref, n_cur, false)
        };
        result_scalar(result.as_ref(), n_ref as i64, n_cur as i64, capped)
    }

    fn size(&self) -> usize {
        let s = &self.state;
        std::mem::size_of_val(self)
            + 8 * (s.current.capacity() + s.reference.capacity())
            + 48 * (s.current_counts.len() + s.reference_counts.len())
    }
}

/// A kernel's result; an error the data caused (a degenerate sample, a
/// non-finite value) gives an untestable row instead of failing the window
/// (which would stop the stream and fail again on every replay). A method
/// that does not fit the column is a query error.
fn untestable_on_error(
    name: &str,
    r: std::result::Result<ColumnDrift, crate::stats::StatsError>,
) -> Result<Option<ColumnDrift>> {
    match r {
        Ok(r) => Ok(Some(r)),
        Err(e @ crate::stats::StatsError::InvalidArgument { name: "method", .. }) => Err(ext(e)),
        Err(e) => {
            tracing::warn!(function = name, error = %e, "drift test undefined on this data");
            Ok(None)
        }
    }
}

fn result_scalar(
    r: Option<&ColumnDrift>,
    n_ref: i64,
    n_cur: i64,
    capped: bool,
) -> Result<ScalarValue> {
    let f = |v: Option<f64>| Arc::new(Float64Array::from(vec![v])) as ArrayRef;
    let (method, statistic, p, d, th, is_p, drifted, testable) = match r {
        None => (None, None, None, None, None, false, false, false),
        Some(r) => {
            let is_p = r.method.is_p_value();
            let finite = |x: f64| (!x.is_nan()).then_some(x);
            (
                Some(r.method.name()),
                finite(r.statistic),
                if is_p { finite(r.value) } else { None },
                if is_p { None } else { finite(r.value) },
                Some(r.threshold),
                is_p,
                r.drifted,
                r.verdict != Verdict::NotTestable,
            )
        }
    };
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![method])),
        f(statistic),
        f(p),
        f(d),
        f(th),
        Arc::new(BooleanArray::from(vec![is_p])),
        Arc::new(BooleanArray::from(vec![drifted])),
        Arc::new(BooleanArray::from(vec![testable])),
        Arc::new(BooleanArray::from(vec![capped])),
        Arc::new(Int64Array::from(vec![n_ref])),
        Arc::new(Int64Array::from(vec![n_cur])),
    ];
    Ok(ScalarValue::Struct(Arc::new(StructArray::try_new(
        result_fields(),
        arrays,
        None,
    )?)))
}
