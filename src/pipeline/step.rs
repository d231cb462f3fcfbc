//! The source-agnostic step: decoded batches with their provenance in,
//! window state updated, closed windows out.
//!
//! A source (the Kafka consumer, or a backfill's files) decodes
//! its records into [`Input`]: Arrow batches per (event kind, model) and,
//! for every record position, where it came from ([`Origin`]). [`Step::apply`]
//! applies the valid rows in record order, so lateness depends only on the
//! record sequence, and returns the rows it refused as late; the source
//! turns those into dead letters (it holds the payloads).

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, StringArray, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};
use xxhash_rust::xxh3::xxh3_64;

use super::Counters;
use crate::ab::summary::VariantEvents;
use crate::config::Config;
use crate::event::{Decoded, EventKind, ModelCatalog, field};
use crate::labels::{LabelJoin, LabelLetter, LabelOrigin, LabelsSnapshot, Value};
use crate::window::{ClosedWindow, ColumnSummary, Windows, WindowsSnapshot};

/// Where a record came from: a partition of a source (a topic's
/// partition; a file). Watermarks are kept per (source, partition); the
/// source keeps the position within it (offset, row) for its dead letters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// Topic, or file.
    pub source: &'a str,
    /// Partition within the source.
    pub partition: i32,
    /// Position within the partition (offset, row).
    pub offset: i64,
}

/// The `batch` index marking a type error in the application order.
const TYPE_ERROR: u32 = u32::MAX;

/// Decoded records of one poll batch or file chunk.
pub(crate) struct Input<'a> {
    /// Valid events by (kind, model); each batch's `seq` indexes `origins`.
    pub batches: Vec<(EventKind, Decoded)>,
    /// Provenance of every record position (valid or not).
    pub origins: Vec<Origin<'a>>,
    /// Records refused for a value of the wrong type, by position: counted
    /// against their window and column (in record order, like valid rows).
    pub type_errors: Vec<(u32, crate::event::TypeError)>,
}

/// Records of one batch from any source, decoded per event kind.
pub(crate) struct DecodedRecords {
    /// Valid events by (kind, model); `seq` holds record positions.
    pub batches: Vec<(EventKind, Decoded)>,
    /// Records with a value of the wrong type, by position.
    pub type_errors: Vec<(u32, crate::event::TypeError)>,
    /// Records the decoder refused: (position, reason, message).
    pub rejected: Vec<(usize, crate::event::Reason, String)>,
    /// Feature names seen that the model does not declare.
    pub unknown_features: u64,
}

/// Decodes `payloads` (one per record position) of the kinds `kinds` says
/// (`None`: not an event, left alone), one decode per kind and model.
pub(crate) fn decode_records(
    catalog: &ModelCatalog,
    payloads: &[&[u8]],
    kinds: &[Option<EventKind>],
) -> DecodedRecords {
    const ORDER: [EventKind; 3] = [
        EventKind::Prediction,
        EventKind::Feature,
        EventKind::Outcome,
    ];
    let mut out = DecodedRecords {
        batches: Vec::new(),
        type_errors: Vec::new(),
        rejected: Vec::new(),
        unknown_features: 0,
    };
    for kind in ORDER {
        let idxs: Vec<usize> = (0..payloads.len())
            .filter(|&i| kinds[i] == Some(kind))
            .collect();
        if idxs.is_empty() {
            continue;
        }
        let selected: Vec<&[u8]> = idxs.iter().map(|&i| payloads[i]).collect();
        let d = crate::event::decode_parallel(catalog, kind, &selected);
        out.unknown_features += d.unknown_features;
        for r in d.rejected {
            let pos = idxs[r.seq as usize];
            if let Some(te) = r.type_error {
                out.type_errors.push((pos as u32, te));
            }
            out.rejected.push((pos, r.reason, r.error));
        }
        for mut b in d.decoded {
            for s in b.seq.iter_mut() {
                *s = idxs[*s as usize] as u32;
            }
            out.batches.push((kind, b));
        }
    }
    out
}

/// A row the step refused.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    /// Record position in [`Input::origins`].
    pub pos: usize,
    /// The dead-letter reason.
    pub reason: crate::event::Reason,
    /// What was wrong, for the dead letter's message.
    pub error: String,
}

/// Window state and the rules that fill it.
pub(crate) struct Step {
    catalog: std::sync::Arc<ModelCatalog>,
    windows: Windows,
    labels: LabelJoin,
    /// (watermark, label watermark) the join was last advanced to.
    label_marks: (i64, i64),
    max_groups: usize,
    /// Per model: whether an experiment runs on it (its groups then keep
    /// latency and units).
    in_experiment: Vec<bool>,
    /// Latency sample size and unit sample size of those groups.
    ab_sizes: (usize, usize),
}

impl Step {
    /// An empty step for `config`'s windows.
    pub fn new(config: &Config, catalog: std::sync::Arc<ModelCatalog>) -> Self {
        let w = &config.window;
        let mut windows = Windows::new(
            w.size.as_millis() as i64,
            w.allowed_lateness.as_millis() as i64,
            w.sample_size,
            w.max_categories,
        );
        let horizon = config
            .models
            .values()
            .filter(|m| m.task.is_some())
            .map(|m| m.label_horizon.as_millis() as i64)
            .max();
        if let Some(h) = horizon {
            windows.set_label_horizon(h, w.max_ahead_ms());
        }
        Self {
            labels: LabelJoin::new(config, &catalog),
            label_marks: (i64::MIN, i64::MIN),
            catalog: catalog.clone(),
            windows,
            max_groups: w.max_groups,
            in_experiment: catalog
                .models
                .iter()
                .map(|m| config.experiments.values().any(|e| e.model == m.name))
                .collect(),
            ab_sizes: (w.sample_size, w.unit_sample),
        }
    }

    /// The windows (watermark bookkeeping for sources).
    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// Sets the partitions that still hold unread data (see
    /// [`Windows::set_pending`]).
    pub fn set_pending(&mut self, pending: Vec<(String, i32)>, labels: Vec<(String, i32)>) {
        self.windows.set_pending(pending);
        self.windows.set_label_pending(labels);
    }

    /// Applies `input` in record order; returns the rows refused as late.
    pub fn apply(&mut self, input: &Input<'_>, counters: &mut Counters) -> Vec<Refused> {
        let mut order: Vec<(u32, u32, u32)> = Vec::new(); // (position, batch, row)
        for (bi, (_, d)) in input.batches.iter().enumerate() {
            order.extend(
                d.seq
                    .iter()
                    .enumerate()
                    .map(|(row, s)| (*s, bi as u32, row as u32)),
            );
        }
        order.extend(
            input
                .type_errors
                .iter()
                .enumerate()
                .map(|(i, (pos, _))| (*pos, TYPE_ERROR, i as u32)),
        );
        order.sort_unstable_by_key(|o| o.0);
        let views: Vec<RowView<'_>> = input
            .batches
            .iter()
            .map(|(k, d)| RowView::new(*k, d, &self.catalog))
            .collect();
        let mut refused = Vec::new();
        for (pos, bi, row) in order {
            let (pos, row) = (pos as usize, row as usize);
            if bi == TYPE_ERROR {
                let te = &input.type_errors[row].1;
                if !self.windows.is_late(te.ts) {
                    let start = self.windows.window_start(te.ts);
                    let types = &self.catalog.models[te.model].column_types;
                    let keys = (te.version.as_str(), te.variant.as_str());
                    if let Some(g) =
                        self.windows
                            .group_mut(start, te.model, keys, types, self.max_groups)
                    {
                        for c in &te.columns {
                            if let Some(col) = g.columns.get_mut(*c) {
                                col.count_type_error();
                            }
                        }
                    }
                }
                continue;
            }
            let view = &views[bi as usize];
            if view.kind == EventKind::Outcome {
                counters.outcomes += 1;
                let origin = input.origins[pos];
                let label = view.string(view.label, row);
                let joined = self.labels.outcome(
                    view.model,
                    view.event_id.value(row),
                    view.ts[row],
                    label,
                    LabelOrigin {
                        source: origin.source,
                        partition: origin.partition,
                        offset: origin.offset,
                    },
                    self.windows.watermark(),
                );
                if let Err((reason, error)) = joined {
                    refused.push(Refused { pos, reason, error });
                }
                self.windows
                    .observe_label(origin.source, origin.partition, view.ts[row]);
                self.advance_labels();
                continue;
            }
            let ts = view.ts[row];
            if self.windows.is_late(ts) {
                refused.push(Refused {
                    pos,
                    reason: crate::event::Reason::Late,
                    error: format!(
                        "event time {ts} is behind the watermark {}; its window already closed",
                        self.windows.watermark()
                    ),
                });
                continue;
            }
            let start = self.windows.window_start(ts);
            let (version, variant) = (
                view.string(view.version, row),
                view.string(view.variant, row),
            );
            let types = &self.catalog.models[view.model].column_types;
            let max = self.max_groups;
            let Some(group) =
                self.windows
                    .group_mut(start, view.model, (version, variant), types, max)
            else {
                refused.push(Refused {
                    pos,
                    reason: crate::event::Reason::TooManyGroups,
                    error: format!(
                        "version `{version}` and variant `{variant}` would be group {} of the model in its window (window.max_groups)",
                        max + 1
                    ),
                });
                // Its time still moves its partition on (a partition of
                // refused events alone would hold every window open).
                let origin = input.origins[pos];
                self.windows.observe(origin.source, origin.partition, ts);
                self.advance_labels();
                continue;
            };
            counters.events += 1;
            let priority = xxh3_64(view.event_id.value(row).as_bytes());
            match view.kind {
                EventKind::Prediction => group.predictions += 1,
                _ => group.feature_events += 1,
            }
            if view.kind == EventKind::Prediction && self.in_experiment[view.model] {
                let (k, unit_k) = self.ab_sizes;
                let latency = view
                    .latency
                    .filter(|c| !c.is_null(row))
                    .map(|c| c.value(row));
                let unit = view
                    .unit_id
                    .filter(|c| !c.is_null(row))
                    .map(|c| xxh3_64(c.value(row).as_bytes()));
                group
                    .ab
                    .get_or_insert_with(|| Box::new(VariantEvents::new(k, unit_k)))
                    .push(priority, latency, unit);
            }
            if view.kind == EventKind::Prediction && self.labels.joins(view.model) {
                let prediction = match view.columns.last() {
                    Some(Col::Numeric(c, _)) => Some(Value::Number(c.value(row))),
                    Some(Col::Categorical(c, _)) => Some(Value::Class(c.value(row).to_string())),
                    Some(Col::Bool(c)) => Some(Value::Class(c.value(row).to_string())),
                    _ => None,
                };
                // A non-finite score cannot be scored (nor checkpointed as JSON).
                let prediction =
                    prediction.filter(|p| !matches!(p, Value::Number(v) if !v.is_finite()));
                if let Some(p) = prediction {
                    self.labels.prediction(
                        view.model,
                        start,
                        (version, variant),
                        view.event_id.value(row),
                        ts,
                        p,
                    );
                }
            }
            let struct_null = view.features.is_none_or(|f| f.is_null(row));
            for (summary, col) in group.columns.iter_mut().zip(&view.columns) {
                match (summary, col) {
                    (_, Col::Absent) => {}
                    // An event without `features` does not carry them (a
                    // prediction logged apart from its features).
                    (_, Col::Numeric(_, true) | Col::Categorical(_, true)) if struct_null => {}
                    (ColumnSummary::Numeric(s), Col::Numeric(c, _)) => {
                        let missing = c.is_null(row);
                        s.push(priority, if missing { f64::NAN } else { c.value(row) });
                    }
                    (ColumnSummary::Numeric(s), Col::Missing) => s.push(priority, f64::NAN),
                    (ColumnSummary::Categorical(s), Col::Categorical(c, _)) => {
                        s.push((!c.is_null(row)).then(|| c.value(row)));
                    }
                    (ColumnSummary::Categorical(s), Col::Bool(c)) => {
                        s.push(
                            (!c.is_null(row)).then(|| if c.value(row) { "true" } else { "false" }),
                        );
                    }
                    (ColumnSummary::Categorical(s), Col::Missing) => s.push(None),
                    _ => debug_assert!(false, "column view does not match its summary"),
                }
            }
            let origin = input.origins[pos];
            self.windows.observe(origin.source, origin.partition, ts);
            self.advance_labels();
        }
        let open = self.windows.open_windows() as u64;
        counters.peak_open_windows = counters.peak_open_windows.max(open);
        let joined = self.labels.take_stats();
        counters.labels_joined += joined.joined;
        counters.duplicate_labels += joined.duplicates;
        counters.join_sampled_out += joined.sampled_out;
        refused
    }

    /// Moves the label join on to the current watermarks (after every
    /// record, so that what it holds never depends on batch boundaries).
    fn advance_labels(&mut self) {
        let marks = (self.windows.watermark(), self.windows.label_watermark());
        if marks != self.label_marks {
            self.label_marks = marks;
            self.labels.advance(marks.0, marks.1);
        }
    }

    /// Removes the windows the watermark has passed, and hands over the
    /// performance windows whose labels became final.
    pub fn take_closable(&mut self) -> Vec<ClosedWindow> {
        let closed = self.windows.take_closable();
        with_performance(closed, self.labels.take_finals())
    }

    /// Closes every open window and finalizes every performance window
    /// (end of input).
    pub fn take_all(&mut self) -> Vec<ClosedWindow> {
        let closed = self.windows.take_all();
        self.labels.finish();
        with_performance(closed, self.labels.take_finals())
    }

    /// Labels that waited in vain for their prediction, for the dead letters.
    pub fn take_label_letters(&mut self) -> Vec<LabelLetter> {
        self.labels.take_letters()
    }

    /// The window and join state for the checkpoint.
    pub fn snapshot(&self) -> (WindowsSnapshot, LabelsSnapshot) {
        (self.windows.snapshot(), self.labels.snapshot())
    }

    /// Restores the window and join state of a checkpoint.
    pub fn restore(&mut self, windows: WindowsSnapshot, labels: LabelsSnapshot) {
        self.windows.restore(windows);
        self.labels.restore(labels);
    }
}

/// `closed`, then the final performance windows, one hand-over per start
/// (never merged with a closed window: which batch a window closes in and
/// which its labels become final in may differ between runs, and sinks name
/// files after the hand-over).
fn with_performance(
    mut closed: Vec<ClosedWindow>,
    finals: Vec<crate::labels::PerformanceWindow>,
) -> Vec<ClosedWindow> {
    for f in finals {
        match closed
            .iter_mut()
            .find(|w| w.start == f.start && w.is_performance())
        {
            Some(w) => w.performance.push(f),
            None => {
                let mut w = ClosedWindow::new(f.start, f.end, Vec::new());
                w.performance.push(f);
                closed.push(w);
            }
        }
    }
    closed
}

/// How a batch holds one monitored column.
enum Col<'a> {
    /// A Float64 column (`true`: a field of the `features` struct).
    Numeric(&'a Float64Array, bool),
    /// A Utf8 column (`true`: a field of the `features` struct).
    Categorical(&'a StringArray, bool),
    /// A boolean prediction read as a category.
    Bool(&'a BooleanArray),
    /// Declared but absent from the batch: every row is missing.
    Missing,
    /// Not carried by this kind of event (the prediction of a feature
    /// event): not counted.
    Absent,
}

/// Typed access to the columns of one decoded batch.
struct RowView<'a> {
    kind: EventKind,
    model: usize,
    ts: &'a [i64],
    event_id: &'a StringArray,
    version: Option<&'a StringArray>,
    variant: Option<&'a StringArray>,
    label: Option<&'a StringArray>,
    unit_id: Option<&'a StringArray>,
    latency: Option<&'a Float64Array>,
    features: Option<&'a StructArray>,
    /// One per column of the model, in [`crate::event::ModelSchema::columns`] order.
    columns: Vec<Col<'a>>,
}

impl<'a> RowView<'a> {
    fn new(kind: EventKind, d: &'a Decoded, catalog: &ModelCatalog) -> Self {
        let b = &d.batch;
        let schema = &catalog.models[d.model];
        let ts = b
            .column_by_name(field::TS)
            .expect("ts is in every schema")
            .as_primitive::<TimestampMillisecondType>()
            .values();
        let event_id = b
            .column_by_name(field::EVENT_ID)
            .expect("event_id is in every schema")
            .as_string::<i32>();
        let string_col = |name: &str| b.column_by_name(name).map(|c| c.as_string::<i32>());
        let features = b.column_by_name(field::FEATURES).map(|c| c.as_struct());
        let typed = |c: &'a dyn Array, in_struct: bool| match c.data_type() {
            DataType::Float64 => Col::Numeric(c.as_primitive::<Float64Type>(), in_struct),
            DataType::Utf8 => Col::Categorical(c.as_string::<i32>(), in_struct),
            DataType::Boolean => Col::Bool(c.as_boolean()),
            _ => Col::Missing,
        };
        let columns = schema
            .columns
            .iter()
            .map(|c| match c.kind {
                crate::event::ColumnKind::Feature => match features {
                    Some(f) => f
                        .column_by_name(&c.name)
                        .map_or(Col::Missing, |a| typed(a.as_ref(), true)),
                    None => Col::Missing,
                },
                crate::event::ColumnKind::Prediction => match b.column_by_name(&c.name) {
                    Some(a) if kind == EventKind::Prediction => typed(a.as_ref(), false),
                    _ => Col::Absent,
                },
            })
            .collect();
        Self {
            kind,
            model: d.model,
            ts,
            event_id,
            version: string_col(field::VERSION),
            variant: string_col(field::VARIANT),
            label: string_col(field::LABEL),
            unit_id: string_col(field::UNIT_ID),
            latency: b
                .column_by_name(field::LATENCY_MS)
                .and_then(|c| c.as_primitive_opt::<Float64Type>()),
            features,
            columns,
        }
    }

    fn string(&self, col: Option<&'a StringArray>, row: usize) -> &'a str {
        match col {
            Some(v) if !v.is_null(row) => v.value(row),
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events refused for `window.max_groups` still move their partition's
    /// watermark: a partition now carrying only such events does not hold
    /// every window open.
    #[test]
    fn refused_groups_still_move_their_partition_on() {
        let cfg = Config::from_toml_str(
            "[window]\nsize = \"1m\"\nallowed_lateness = \"0s\"\nmax_groups = 1\n\
             [models.m]\nreference = \"r.csv\"\n[models.m.features]\nx = \"numeric\"",
        )
        .unwrap();
        let catalog = std::sync::Arc::new(ModelCatalog::from_config(&cfg));
        let mut step = Step::new(&cfg, catalog.clone());
        let event = |id: u32, ts: i64, version: &str| {
            format!(
                r#"{{"event_id":"e{id}","ts":{ts},"model":"m","version":"{version}","features":{{"x":1}},"prediction":0.5}}"#
            )
        };
        // (partition, ts in s, version): A's v1 fills each window's one
        // group first; B's v2 after its first event are all refused.
        let records = [
            (0, 0, "1"),
            (1, 1, "1"),
            (0, 65, "1"),
            (1, 66, "2"),
            (0, 130, "1"),
            (1, 131, "2"),
        ];
        let payloads: Vec<String> = records
            .iter()
            .enumerate()
            .map(|(i, (_, ts, v))| event(i as u32, ts * 1000, v))
            .collect();
        let bytes: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        let kinds = vec![Some(EventKind::Prediction); bytes.len()];
        let decoded = decode_records(&catalog, &bytes, &kinds);
        let input = Input {
            batches: decoded.batches,
            origins: records
                .iter()
                .enumerate()
                .map(|(i, (p, _, _))| Origin {
                    source: "t",
                    partition: *p,
                    offset: i as i64,
                })
                .collect(),
            type_errors: decoded.type_errors,
        };
        let refused = step.apply(&input, &mut Counters::default());
        let reasons: Vec<_> = refused.iter().map(|r| (r.pos, r.reason)).collect();
        assert_eq!(
            reasons,
            [
                (3, crate::event::Reason::TooManyGroups),
                (5, crate::event::Reason::TooManyGroups)
            ]
        );
        assert_eq!(step.windows().watermark(), 130_000);
        let closed: Vec<i64> = step.take_closable().iter().map(|w| w.start).collect();
        assert_eq!(closed, [0, 60_000]);
    }
}
