//! Archive rows decoded straight from their columns.
//!
//! A backfill over the archive could rebuild every row into its event
//! payload ([`super::payloads`]) and decode that as the stream does; this
//! module makes the same [`Decoded`] batches from the archive's columns
//! without the JSON round trip. The decoder stays the definition: a row is
//! taken here only when the rules below give what the decoder makes of its
//! rebuilt payload, and every other row (a value of the wrong type, a
//! required field that is NULL, a model not declared, a declared feature
//! given twice, a non-finite number) is handed back for the payload path,
//! which decodes it or dead-letters it with the decoder's reason. The test
//! below holds the two paths equal.
//!
//! The rules, per archived value `t` (the map convention of the archive):
//! * a numeric column takes `t` when it is a JSON number that parses to a
//!   finite float (the payload carries it as that number);
//! * a categorical column takes `t` as is (a JSON number goes back as a
//!   number, which the decoder's primitive coercion reads as its text; any
//!   other text goes back as a string);
//! * NULL is a null value; a feature the row lacks is a null value; a row
//!   without a `features` map has a null `features` struct; keys the model
//!   does not declare are counted as unknown features.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, Float64Builder, MapArray,
    PrimitiveArray, RecordBatch, StringArray, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};

use super::is_json_number;
use crate::config::FeatureType;
use crate::error::{Error, Result};
use crate::event::{Decoded, EventKind, ModelCatalog, ModelSchema, field};

/// One batch of an archive table, with each row's model.
pub(crate) struct ArchivedBatch {
    /// The rows, in the table's file schema plus the `model` (and `date`)
    /// partitions.
    pub batch: Arc<RecordBatch>,
    /// The `model` partition as text, per row.
    names: StringArray,
    /// Each row's model in the catalog (`None`: not declared).
    models: Vec<Option<usize>>,
}

impl ArchivedBatch {
    /// Reads the `model` partition of `batch` against `catalog`.
    pub fn new(kind: EventKind, batch: Arc<RecordBatch>, catalog: &ModelCatalog) -> Result<Self> {
        let model = batch.column_by_name("model").ok_or_else(|| {
            Error::Config(format!(
                "archive table `{}` has no column `model`",
                super::table_of(kind)
            ))
        })?;
        let names = datafusion::arrow::compute::cast(model, &DataType::Utf8)?
            .as_string::<i32>()
            .clone();
        let mut last: Option<(&str, Option<usize>)> = None;
        let models = (0..names.len())
            .map(|i| {
                if names.is_null(i) {
                    return None;
                }
                let name = names.value(i);
                match last {
                    Some((n, m)) if n == name => m,
                    _ => {
                        let m = catalog.index(name);
                        last = Some((name, m));
                        m
                    }
                }
            })
            .collect();
        Ok(Self {
            batch,
            names,
            models,
        })
    }

    /// The model named by row `row`'s partition ("" when none).
    pub fn model_name(&self, row: usize) -> &str {
        if self.names.is_null(row) {
            ""
        } else {
            self.names.value(row)
        }
    }
}

/// What [`decode`] made of archived rows.
pub(crate) struct ColumnarOutput {
    /// Rows decoded, by model; `seq` indexes the `rows` given.
    pub decoded: Vec<Decoded>,
    /// Feature names the decoded rows carried that their model does not
    /// declare.
    pub unknown_features: u64,
    /// Rows (indexes into `rows`) to decode from their rebuilt payloads.
    pub fallback: Vec<u32>,
}

/// Decodes archived rows of `kind` (`rows`: (batch, row) in `batches`), as
/// the decoder decodes their rebuilt payloads.
pub(crate) fn decode(
    catalog: &ModelCatalog,
    kind: EventKind,
    batches: &[ArchivedBatch],
    rows: &[(u32, u32)],
) -> ColumnarOutput {
    let views: Vec<View<'_>> = batches.iter().map(|b| View::new(&b.batch)).collect();
    let mut groups: Vec<Option<Builders>> = (0..catalog.models.len()).map(|_| None).collect();
    let mut out = ColumnarOutput {
        decoded: Vec::new(),
        unknown_features: 0,
        fallback: Vec::new(),
    };
    let (mut slots, mut seen) = (Vec::new(), Vec::new());
    for (seq, &(b, row)) in rows.iter().enumerate() {
        let (b, row) = (b as usize, row as usize);
        let Some(m) = batches[b].models[row] else {
            out.fallback.push(seq as u32);
            continue;
        };
        let schema = &catalog.models[m];
        let Some(unknown) = views[b].read(kind, schema, row, &mut slots, &mut seen) else {
            out.fallback.push(seq as u32);
            continue;
        };
        out.unknown_features += unknown;
        groups[m]
            .get_or_insert_with(|| Builders::new(schema))
            .push(&views[b], row, seq as u32, &slots);
    }
    for (m, g) in groups.into_iter().enumerate() {
        if let Some(g) = g {
            out.decoded.push(g.finish(kind, m, &catalog.models[m]));
        }
    }
    out
}

/// One value a row holds for a declared column.
#[derive(Clone, Copy)]
enum Slot<'a> {
    /// Absent or NULL.
    Null,
    Number(f64),
    Text(&'a str),
}

/// The archive columns of one batch (absent ones `None`).
struct View<'a> {
    event_id: Option<&'a StringArray>,
    ts: Option<&'a PrimitiveArray<TimestampMillisecondType>>,
    version: Option<&'a StringArray>,
    variant: Option<&'a StringArray>,
    unit_id: Option<&'a StringArray>,
    label: Option<&'a StringArray>,
    prediction: Option<&'a StringArray>,
    latency: Option<&'a Float64Array>,
    features: Option<&'a MapArray>,
}

fn text(c: Option<&StringArray>, row: usize) -> Option<&str> {
    c.filter(|c| !c.is_null(row)).map(|c| c.value(row))
}

/// The value `t` gives a column of type `ty`; `None` when the decoder
/// would not take it as is.
fn slot(t: Option<&str>, ty: FeatureType) -> Option<Slot<'_>> {
    let Some(t) = t else {
        return Some(Slot::Null);
    };
    match ty {
        FeatureType::Categorical => Some(Slot::Text(t)),
        FeatureType::Numeric => {
            if !is_json_number(t) {
                return None;
            }
            t.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Slot::Number)
        }
    }
}

impl<'a> View<'a> {
    fn new(b: &'a RecordBatch) -> Self {
        let s = |n: &str| b.column_by_name(n).and_then(|c| c.as_string_opt::<i32>());
        Self {
            event_id: s(field::EVENT_ID),
            ts: b
                .column_by_name(field::TS)
                .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()),
            version: s(field::VERSION),
            variant: s(field::VARIANT),
            unit_id: s(field::UNIT_ID),
            label: s(field::LABEL),
            prediction: s(field::PREDICTION),
            latency: b
                .column_by_name(field::LATENCY_MS)
                .and_then(|c| c.as_primitive_opt::<Float64Type>()),
            features: b
                .column_by_name(field::FEATURES)
                .and_then(|c| c.as_map_opt()),
        }
    }

    /// Checks row `row` and fills `slots` with its declared features, then
    /// its prediction (`seen`: scratch); the count of undeclared features,
    /// or `None` for a row the payload path must decode.
    fn read(
        &self,
        kind: EventKind,
        schema: &ModelSchema,
        row: usize,
        slots: &mut Vec<Slot<'a>>,
        seen: &mut Vec<bool>,
    ) -> Option<u64> {
        slots.clear();
        text(self.event_id, row)?;
        self.ts
            .filter(|c| !c.is_null(row) && crate::event::ts_in_range(c.value(row)))?;
        match kind {
            EventKind::Prediction => {
                text(self.version, row)?;
                text(self.prediction, row)?;
            }
            EventKind::Outcome => {
                text(self.label, row)?;
                return Some(0);
            }
            EventKind::Feature => {}
        }
        if let Some(l) = self.latency.filter(|c| !c.is_null(row))
            && !l.value(row).is_finite()
        {
            return None;
        }
        slots.resize(schema.features.len(), Slot::Null);
        seen.clear();
        seen.resize(schema.features.len(), false);
        let mut unknown = 0;
        if let Some(f) = self.features.filter(|f| !f.is_null(row)) {
            let keys = f.keys().as_string_opt::<i32>()?;
            let values = f.values().as_string_opt::<i32>()?;
            let offsets = f.value_offsets();
            for e in offsets[row] as usize..offsets[row + 1] as usize {
                let key = keys.value(e);
                match schema
                    .features
                    .binary_search_by(|(n, _)| n.as_str().cmp(key))
                {
                    Err(_) => unknown += 1,
                    Ok(i) => {
                        if std::mem::replace(&mut seen[i], true) {
                            return None;
                        }
                        slots[i] = slot(text(Some(values), e), schema.features[i].1)?;
                    }
                }
            }
        }
        if kind == EventKind::Prediction {
            let ty = schema.columns.last().map(|c| c.ty)?;
            slots.push(slot(text(self.prediction, row), ty)?);
        }
        Some(unknown)
    }
}

/// A column being built.
enum Values {
    Number(Float64Builder),
    Text(StringBuilder),
}

impl Values {
    fn new(ty: FeatureType) -> Self {
        match ty {
            FeatureType::Numeric => Self::Number(Float64Builder::new()),
            FeatureType::Categorical => Self::Text(StringBuilder::new()),
        }
    }

    fn push(&mut self, s: Slot<'_>) {
        match (self, s) {
            (Self::Number(b), Slot::Number(x)) => b.append_value(x),
            (Self::Text(b), Slot::Text(t)) => b.append_value(t),
            (Self::Number(b), _) => b.append_null(),
            (Self::Text(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Number(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// The columns of one model's decoded rows.
struct Builders {
    seq: Vec<u32>,
    event_id: StringBuilder,
    ts: TimestampMillisecondBuilder,
    version: StringBuilder,
    variant: StringBuilder,
    unit_id: StringBuilder,
    label: StringBuilder,
    latency: Float64Builder,
    has_features: BooleanBufferBuilder,
    features: Vec<Values>,
    prediction: Values,
}

impl Builders {
    fn new(schema: &ModelSchema) -> Self {
        let ty = schema.columns.last().map_or(FeatureType::Numeric, |c| c.ty);
        Self {
            seq: Vec::new(),
            event_id: StringBuilder::new(),
            ts: TimestampMillisecondBuilder::new(),
            version: StringBuilder::new(),
            variant: StringBuilder::new(),
            unit_id: StringBuilder::new(),
            label: StringBuilder::new(),
            latency: Float64Builder::new(),
            has_features: BooleanBufferBuilder::new(0),
            features: schema
                .features
                .iter()
                .map(|(_, t)| Values::new(*t))
                .collect(),
            prediction: Values::new(ty),
        }
    }

    /// Appends a row [`View::read`] accepted (`slots` as it filled them).
    fn push(&mut self, v: &View<'_>, row: usize, seq: u32, slots: &[Slot<'_>]) {
        self.seq.push(seq);
        self.event_id.append_option(text(v.event_id, row));
        self.ts.append_option(v.ts.map(|c| c.value(row)));
        self.version.append_option(text(v.version, row));
        self.variant.append_option(text(v.variant, row));
        self.unit_id.append_option(text(v.unit_id, row));
        self.label.append_option(text(v.label, row));
        self.latency
            .append_option(v.latency.filter(|c| !c.is_null(row)).map(|c| c.value(row)));
        self.has_features
            .append(v.features.is_some_and(|f| !f.is_null(row)));
        for (b, s) in self.features.iter_mut().zip(slots) {
            b.push(*s);
        }
        if let Some(p) = slots.get(self.features.len()) {
            self.prediction.push(*p);
        }
    }

    /// The batch in the model's schema for `kind`.
    fn finish(mut self, kind: EventKind, index: usize, schema: &ModelSchema) -> Decoded {
        let target = schema.schema(kind).clone();
        let n = self.seq.len();
        let model: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            schema.name.as_str(),
            n,
        )));
        let columns: Vec<ArrayRef> = target
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    field::EVENT_ID => Arc::new(self.event_id.finish()),
                    field::TS => Arc::new(self.ts.finish().with_timezone("UTC")),
                    field::MODEL => model.clone(),
                    field::VERSION => Arc::new(self.version.finish()),
                    field::VARIANT => Arc::new(self.variant.finish()),
                    field::UNIT_ID => Arc::new(self.unit_id.finish()),
                    field::LABEL => Arc::new(self.label.finish()),
                    field::LATENCY_MS => Arc::new(self.latency.finish()),
                    field::PREDICTION => self.prediction.finish(),
                    field::FEATURES => {
                        let DataType::Struct(fields) = f.data_type() else {
                            unreachable!("`features` is a struct in every event schema")
                        };
                        let nulls = NullBuffer::new(self.has_features.finish());
                        let nulls = (nulls.null_count() > 0).then_some(nulls);
                        if fields.is_empty() {
                            return Arc::new(StructArray::new_empty_fields(n, nulls));
                        }
                        let children = self.features.iter_mut().map(Values::finish).collect();
                        Arc::new(StructArray::new(fields.clone(), children, nulls))
                    }
                    other => unreachable!("no event schema has a field `{other}`"),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(target, columns)
            .expect("the columns are built in the event schema, required fields checked");
        Decoded {
            model: index,
            batch,
            seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::MapBuilder;

    use super::*;
    use crate::config::Config;
    use crate::event::DecodeOutput;

    fn catalog(features: &str, prediction: &str) -> ModelCatalog {
        let cfg = Config::from_toml_str(&format!(
            "[models.m]\nreference = \"r.csv\"\nprediction = \"{prediction}\"\n\
             [models.m.features]\n{features}\n\
             [models.other]\nreference = \"r.csv\"\n[models.other.features]\nx = \"numeric\""
        ))
        .unwrap();
        ModelCatalog::from_config(&cfg)
    }

    /// A prediction row of an archive file (or an export in its layout).
    struct Row {
        /// `None`: a time of its own, a millisecond after the row before.
        ts: Option<i64>,
        model: &'static str,
        event_id: Option<&'static str>,
        version: Option<&'static str>,
        features: Option<Vec<(&'static str, Option<&'static str>)>>,
        prediction: Option<&'static str>,
        latency: Option<f64>,
    }

    fn row(features: Vec<(&'static str, Option<&'static str>)>, prediction: &'static str) -> Row {
        Row {
            ts: None,
            model: "m",
            event_id: Some("e"),
            version: Some("1"),
            features: Some(features),
            prediction: Some(prediction),
            latency: Some(3.5),
        }
    }

    fn batch(rows: &[Row]) -> RecordBatch {
        let n = rows.len();
        let mut features = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for r in rows {
            match &r.features {
                None => features.append(false).unwrap(),
                Some(f) => {
                    for (k, v) in f {
                        features.keys().append_value(k);
                        features.values().append_option(*v);
                    }
                    features.append(true).unwrap();
                }
            }
        }
        let strings = |f: &dyn Fn(&Row) -> Option<&'static str>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<ArrayRef> = vec![
            strings(&|r| r.event_id),
            Arc::new(
                PrimitiveArray::<TimestampMillisecondType>::from_iter_values(
                    rows.iter()
                        .enumerate()
                        .map(|(i, r)| r.ts.unwrap_or(1_767_225_600_000 + i as i64)),
                )
                .with_timezone("UTC"),
            ),
            strings(&|r| r.version),
            strings(&|_| Some("ctl")),
            strings(&|_| None),
            Arc::new(features.finish()),
            strings(&|r| r.prediction),
            Arc::new(rows.iter().map(|r| r.latency).collect::<Float64Array>()),
            strings(&|_| Some("t")),
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![0; n])),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                0..n as i64,
            )),
            strings(&|r| Some(r.model)),
        ];
        let mut fields: Vec<_> = super::super::PREDICTIONS_SCHEMA
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(datafusion::arrow::datatypes::Field::new(
            "model",
            DataType::Utf8,
            false,
        ));
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// Each decoded row by its seq, one-row batches.
    fn by_seq(decoded: &[Decoded], seq_of: impl Fn(u32) -> u32) -> Vec<(u32, RecordBatch)> {
        let mut out: Vec<(u32, RecordBatch)> = decoded
            .iter()
            .flat_map(|d| {
                d.seq
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (seq_of(*s), d.batch.slice(i, 1)))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }

    /// The columns, with the payload path for the rows handed back, give
    /// exactly what the decoder makes of every rebuilt payload.
    #[test]
    fn columns_decode_as_the_rebuilt_payloads_do() {
        let rows = vec![
            row(vec![("x", Some("1.5")), ("region", Some("north"))], "0.25"),
            // Numbers as categories keep their text; categories of any JSON.
            row(vec![("x", Some("-0")), ("region", Some("1.50"))], "1e3"),
            row(
                vec![("region", Some(r#"{"k":[1,2]}"#)), ("extra", Some("1"))],
                "0",
            ),
            row(vec![("region", Some("true")), ("x", None)], "0.5"),
            row(vec![("region", Some("05")), ("x", Some("12"))], "-0.5"),
            row(vec![], "0.75"),
            Row {
                features: None,
                ..row(vec![], "0.5")
            },
            Row {
                latency: None,
                ..row(vec![("x", Some("2"))], "0.5")
            },
            // Handed back: the decoder has the last word on these.
            row(vec![("x", Some("north"))], "0.5"),
            row(vec![("x", Some("1e400"))], "0.5"),
            row(vec![("x", Some(" 1"))], "0.5"),
            row(vec![("x", Some("1")), ("x", Some("2"))], "0.5"),
            row(vec![("x", Some("1"))], "high"),
            Row {
                prediction: None,
                ..row(vec![], "0")
            },
            Row {
                version: None,
                ..row(vec![], "0")
            },
            Row {
                latency: Some(f64::INFINITY),
                ..row(vec![], "0")
            },
            Row {
                model: "gone",
                ..row(vec![], "0")
            },
            Row {
                model: "other",
                ..row(vec![("x", Some("7")), ("region", Some("a"))], "1")
            },
            Row {
                event_id: Some("q\"uote\\d"),
                ..row(vec![("region", Some("é\n"))], "0.5")
            },
            // Times at the edges of years 0 to 9999 are taken; past them,
            // handed back and refused.
            Row {
                ts: Some(crate::event::TS_MIN),
                ..row(vec![("x", Some("1"))], "0.5")
            },
            Row {
                ts: Some(crate::event::TS_MAX),
                ..row(vec![("x", Some("1"))], "0.5")
            },
            Row {
                ts: Some(i64::MIN),
                ..row(vec![("x", Some("1"))], "0.5")
            },
            Row {
                ts: Some(crate::event::TS_MAX + 1),
                ..row(vec![("x", Some("1"))], "0.5")
            },
        ];
        let predictions = batch(&rows);
        // The same rows as feature events and as labels (`prediction`'s text
        // as the label), in those tables' layouts.
        let of_kind = |kind: EventKind| -> RecordBatch {
            let table = super::super::schema_of(kind);
            let mut fields = Vec::new();
            let mut columns = Vec::new();
            for f in table
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .chain(["model"])
            {
                let from = if f == field::LABEL {
                    field::PREDICTION
                } else {
                    f
                };
                let i = predictions.schema().index_of(from).unwrap();
                fields.push(predictions.schema().field(i).clone().with_name(f));
                columns.push(predictions.column(i).clone());
            }
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
            RecordBatch::try_new(schema, columns).unwrap()
        };
        let kinds = [
            EventKind::Prediction,
            EventKind::Feature,
            EventKind::Outcome,
        ];
        for (cat, kind) in [
            catalog("x = \"numeric\"\nregion = \"categorical\"", "numeric"),
            catalog(
                "x = \"categorical\"\nregion = \"categorical\"",
                "categorical",
            ),
            catalog("region = \"numeric\"", "numeric"),
            catalog("absent = \"numeric\"", "categorical"),
        ]
        .iter()
        .flat_map(|c| kinds.map(|k| (c, k)))
        {
            let b = of_kind(kind);
            let cat = cat.clone();
            let model = b
                .column_by_name("model")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let payloads = super::super::payloads(kind, &b, |r| model.value(r)).unwrap();
            let payloads: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
            let json: DecodeOutput = crate::event::decode(&cat, kind, &payloads);
            let out_of_range: Vec<u32> = json
                .rejected
                .iter()
                .filter(|r| r.reason == crate::event::Reason::InvalidValue)
                .map(|r| r.seq)
                .collect();
            let n = payloads.len() as u32;
            assert_eq!(out_of_range, [n - 2, n - 1], "{kind:?}");

            // The `model` partition as DataFusion gives it (a dictionary) in
            // the second batch; rows of both.
            let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
            let mut columns = b.columns().to_vec();
            let last = columns.len() - 1;
            columns[last] = datafusion::arrow::compute::cast(&columns[last], &dict).unwrap();
            let mut fields: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields[last] = fields[last].clone().with_data_type(dict);
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
            let b2 = RecordBatch::try_new(schema, columns).unwrap();
            let archived = [
                ArchivedBatch::new(kind, Arc::new(b.clone()), &cat).unwrap(),
                ArchivedBatch::new(kind, Arc::new(b2), &cat).unwrap(),
            ];
            let n = b.num_rows() as u32;
            let all: Vec<(u32, u32)> = (0..n).map(|r| (r % 2, r)).collect();
            let col = decode(&cat, kind, &archived, &all);
            let back: Vec<&[u8]> = col.fallback.iter().map(|s| payloads[*s as usize]).collect();
            let rest = crate::event::decode(&cat, kind, &back);
            assert!(!col.fallback.is_empty(), "{kind:?}");
            assert!(!col.decoded.is_empty());

            let mut decoded = by_seq(&col.decoded, |s| s);
            decoded.extend(by_seq(&rest.decoded, |s| col.fallback[s as usize]));
            decoded.sort_by_key(|(s, _)| *s);
            assert_eq!(decoded, by_seq(&json.decoded, |s| s));
            let reasons = |r: &[crate::event::Rejected], map: &dyn Fn(u32) -> u32| {
                let mut v: Vec<(u32, crate::event::Reason, Option<Vec<usize>>)> = r
                    .iter()
                    .map(|r| {
                        let cols = r.type_error.as_ref().map(|t| t.columns.clone());
                        (map(r.seq), r.reason, cols)
                    })
                    .collect();
                v.sort_by_key(|x| x.0);
                v
            };
            assert_eq!(
                reasons(&rest.rejected, &|s| col.fallback[s as usize]),
                reasons(&json.rejected, &|s| s)
            );
            assert_eq!(
                col.unknown_features + rest.unknown_features,
                json.unknown_features
            );
        }
    }
}
