//! Bounded sources: the records a backfill reads (archive rows, or event
//! payloads) with where they came from, in the order the step takes them.
//!
//! * **The archive** (`predictions/`, `features/`, `outcomes/` under a
//!   folder or bucket prefix, Hive-partitioned by model and date; mlwatch's
//!   own or exported in its layout), merged in event-time order (then kind,
//!   topic, partition, offset). Only the selected models' folders of the
//!   dates in range are listed. The files whose footers say they are sorted
//!   as `mlwatch run` writes them ([`crate::archive::sorted_span`]) and that
//!   span at most 30 minutes of event time are merged as they are: each is
//!   read whole by a task of its own, started when the merge comes within a
//!   minute of event time of its first row (or when it needs the file), and
//!   checked to hold the order it declares. Any other files (archives
//!   written before files were sorted, exports, files a few very late
//!   events stretch, paths DataFusion would percent-decode) are sorted by DataFusion,
//!   two minutes of event time (whole windows) at a time, one query per
//!   table with the `date` partitions pruned, in the same merge; slices
//!   follow each other in time, so the order holds across them and the
//!   sorts hold two slices (the next is sorted, on tasks of its own, while
//!   this one is taken). Sorted input never makes an event late, so the
//!   windows get exactly the events the stream archived. A record two
//!   files hold (a crashed run's and its replay's) is read once.
//! * **JSON lines** (a file or glob, local or S3): one event per line, the
//!   kind told by its fields (`label`: outcome; `prediction`: prediction;
//!   else features), files in path order and lines in file order, as a
//!   topic replays: events behind the watermark are late, as in the stream.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMillisecondType};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{Expr, SessionConfig, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

use super::range::Covered;
use crate::archive::{self, col as acol};
use crate::error::{Error, Result};
use crate::event::{EventKind, field};
use crate::storage::Storage;
use crate::storage::objects::{ListFilter, Listed};

/// Memory DataFusion may use to sort a table's rows before it spills.
const SORT_MEMORY: usize = 512 << 20;

/// One record read.
pub(crate) struct Record {
    /// Its kind.
    pub kind: EventKind,
    /// The event.
    pub body: Body,
    /// Topic or input it came from (its dead letter's `topic`).
    pub topic: Arc<str>,
    /// Partition within it.
    pub partition: i32,
    /// Offset or line within the partition.
    pub offset: i64,
}

/// A record's event.
pub(crate) enum Body {
    /// As the stream would have received it.
    Json(Vec<u8>),
    /// A row of an archive batch (read from its columns; see
    /// [`crate::archive::columnar`]).
    Archived(ArchivedRow),
    /// Decoded from its columns, its batch let go.
    Decoded,
}

/// A row of an archive batch.
pub(crate) struct ArchivedRow {
    /// The batch (the table's file schema and the `model` partition).
    pub batch: Arc<RecordBatch>,
    /// Which batch of the source it is (batches of a chunk are told apart
    /// by it).
    pub serial: u64,
    /// The row.
    pub row: u32,
}

/// What to read.
#[derive(Clone)]
pub(crate) struct Selection {
    /// The windows covered.
    pub covered: Covered,
    /// Models to read (all when empty).
    pub models: Vec<String>,
    /// Only this version's predictions and feature events.
    pub version: Option<String>,
}

/// A bounded source of records.
pub(crate) enum Source {
    Archive(Box<ArchiveSource>),
    JsonLines(Box<JsonLines>),
}

impl Source {
    /// Opens `input` (the archive under `storage` when `None`).
    pub async fn open(
        input: Option<&str>,
        storage: &Storage,
        options: &std::collections::BTreeMap<String, String>,
        selection: &Selection,
    ) -> Result<Self> {
        let Some(input) = input else {
            return Ok(Self::Archive(Box::new(
                ArchiveSource::open(storage, selection).await?,
            )));
        };
        let (base, pattern) = split_glob(input);
        let lower = input.to_ascii_lowercase();
        let json = [".jsonl", ".json", ".ndjson"]
            .iter()
            .any(|e| lower.ends_with(e));
        let named = |e: Error| Error::Config(format!("--input `{input}`: {e}"));
        if json {
            let store = Storage::open_existing(base, options).map_err(named)?;
            return Ok(Self::JsonLines(Box::new(
                JsonLines::open(store, input, pattern).await?,
            )));
        }
        if input.contains(['*', '?', '[']) || lower.ends_with(".parquet") {
            return Err(Error::Config(format!(
                "--input `{input}`: Parquet input is read as an archive folder \
                 (predictions/, features/, outcomes/ partitioned by model=/date=); \
                 give the folder, or JSON lines files (.jsonl, .json, .ndjson)"
            )));
        }
        let store = Storage::open_existing(input, options).map_err(named)?;
        Ok(Self::Archive(Box::new(
            ArchiveSource::open(&store, selection).await?,
        )))
    }

    /// Records to read in all, when a count can tell (the archive's, by an
    /// extra pass over its event times).
    pub async fn total(&mut self) -> Result<Option<u64>> {
        match self {
            Self::Archive(a) => Ok(Some(a.total().await?)),
            Self::JsonLines(_) => Ok(None),
        }
    }

    /// Archive files in range (merged as written, sorted by DataFusion).
    pub fn files(&self) -> (u64, u64) {
        match self {
            Self::Archive(a) => a.counts,
            Self::JsonLines(_) => (0, 0),
        }
    }

    /// The next records, up to `max` (none at the end).
    pub async fn next(&mut self, max: usize) -> Result<Vec<Record>> {
        match self {
            Self::Archive(a) => a.next(max).await,
            Self::JsonLines(j) => j.next(max).await,
        }
    }
}

/// `input` split into the folder before its first glob character and the
/// pattern after it (`""` without one).
fn split_glob(input: &str) -> (&str, &str) {
    match input.find(['*', '?', '[']) {
        Some(i) => match input[..i].rfind('/') {
            Some(slash) => (&input[..=slash], &input[slash + 1..]),
            None => (".", input),
        },
        None => match input.rfind('/') {
            Some(slash) => (&input[..=slash], &input[slash + 1..]),
            None => (".", input),
        },
    }
}

/// One table's rows in event-time order, a batch at a time: a slice of
/// the files DataFusion sorts, or one file written sorted.
struct Cursor {
    kind: EventKind,
    /// Whether it reads a sorted file (else a slice of the sorted query).
    file: bool,
    /// Serial of the next batch read (shared by the source's cursors).
    serials: Arc<std::sync::atomic::AtomicU64>,
    stream: Ahead,
    rows: std::vec::IntoIter<(i64, Record)>,
    head: Option<(i64, Record)>,
    done: bool,
}

impl Cursor {
    fn new(kind: EventKind, file: bool, serials: &Arc<AtomicU64>, stream: Ahead) -> Self {
        Self {
            kind,
            file,
            serials: serials.clone(),
            stream,
            rows: Vec::new().into_iter(),
            head: None,
            done: false,
        }
    }

    /// Makes `head` the next row, fetching batches as needed.
    async fn fill(&mut self) -> Result<()> {
        while self.head.is_none() {
            if let Some(r) = self.rows.next() {
                self.head = Some(r);
                return Ok(());
            }
            if self.done {
                return Ok(());
            }
            match self.stream.batches.recv().await {
                Some(b) => {
                    let serial = self.serials.fetch_add(1, Ordering::Relaxed);
                    self.rows = records(self.kind, Arc::new(b?), serial)?.into_iter();
                }
                None => {
                    // The task ended: it sent every batch, or it failed
                    // (an error sent) or panicked (said here, not taken
                    // for the end of the table).
                    self.done = true;
                    (&mut self.stream.task).await.map_err(|e| Error::Task {
                        task: "backfill reader",
                        reason: e.to_string(),
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Where a row goes in the merge: event time, then kind (predictions,
/// features, outcomes), topic, partition, offset. Two copies of a record
/// (files of runs that overlap) have equal keys, so they come one after
/// the other.
fn key(h: &(i64, Record)) -> (i64, u8, &str, i32, i64) {
    (h.0, rank(h.1.kind), &h.1.topic, h.1.partition, h.1.offset)
}

fn rank(kind: EventKind) -> u8 {
    match kind {
        EventKind::Prediction => 0,
        EventKind::Feature => 1,
        EventKind::Outcome => 2,
    }
}

/// Batches read by a task of its own (which stops when this is dropped).
struct Ahead {
    batches: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
    task: tokio::task::JoinHandle<()>,
}

/// Batches a reading task holds ready for its cursor.
const BATCHES_AHEAD: usize = 2;

/// Rows per batch read from a sorted file.
const FILE_BATCH_ROWS: usize = 8192;

impl Ahead {
    /// Starts running `query`.
    fn query(query: datafusion::dataframe::DataFrame) -> Self {
        let (tx, batches) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
        let task = tokio::spawn(async move {
            let mut stream = match query.execute_stream().await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            while let Some(b) = stream.next().await {
                let failed = b.is_err();
                if tx.send(b.map_err(Error::from)).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { batches, task }
    }

    /// Starts reading the sorted file `f`: its rows of `[from, until)` (of
    /// `version`, when given), with its `model` partition as a column.
    fn file(
        storage: Storage,
        f: &SortedFile,
        (from, until): (i64, i64),
        version: Option<String>,
    ) -> Self {
        let (tx, batches) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
        let (rel, model, first) = (f.rel.clone(), f.model.clone(), f.first_ts);
        let task = tokio::spawn(async move {
            let read = async {
                let bytes = storage.get(&rel).await?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
                    .with_batch_size(FILE_BATCH_ROWS)
                    .build()?;
                // Not before the first event time its footer gave (the
                // file rewritten since, by a replay, would break the merge).
                let mut last = (first, i64::MIN);
                for b in reader {
                    let b = file_rows(
                        &rel,
                        b?,
                        &model,
                        (from, until),
                        version.as_deref(),
                        &mut last,
                    )?;
                    if b.num_rows() > 0 && tx.send(Ok(b)).await.is_err() {
                        break;
                    }
                }
                Ok::<_, Error>(())
            };
            if let Err(e) = read.await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Self { batches, task }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The rows of a batch of the sorted file `rel` in `[from, until)` (and of
/// `version`), with a `model` column; checks that the file holds the order
/// it declares (`last`: the (event time, offset) of the row before).
fn file_rows(
    rel: &str,
    b: RecordBatch,
    model: &str,
    (from, until): (i64, i64),
    version: Option<&str>,
    last: &mut (i64, i64),
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Scalar, StringArray};
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::arrow::compute::kernels::cmp::eq;
    let column = |name: &str| {
        b.column_by_name(name)
            .ok_or_else(|| Error::Config(format!("archive file `{rel}` has no column `{name}`")))
    };
    let ts = column(field::TS)?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| Error::Config(format!("archive file `{rel}`: `ts` is not a timestamp")))?
        .values()
        .clone();
    let offsets = column(acol::OFFSET)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::Config(format!("archive file `{rel}`: `offset` is not Int64")))?
        .values()
        .clone();
    for (t, o) in ts.iter().zip(offsets.iter()) {
        let next = (*t, *o);
        if next < *last {
            return Err(Error::Config(format!(
                "archive file `{rel}` does not hold the order its footer gave when the \
                 backfill opened it (sorted by event time and offset, from its first event \
                 time): ({}, {}) comes after ({}, {}); run the backfill again (a replay may \
                 have rewritten it), or rewrite the file without `sorting_columns`",
                next.0, next.1, last.0, last.1
            )));
        }
        *last = next;
    }
    let lo = ts.partition_point(|t| *t < from);
    let hi = ts.partition_point(|t| *t < until);
    let mut b = b.slice(lo, hi - lo);
    if let Some(v) = version {
        b = match b.column_by_name(field::VERSION) {
            Some(c) => filter_record_batch(&b, &eq(c, &Scalar::new(StringArray::from(vec![v])))?)?,
            None => b.slice(0, 0),
        };
    }
    let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        "model",
        DataType::Utf8,
        false,
    )));
    let mut columns = b.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(model, b.num_rows()),
    )));
    Ok(RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )?)
}

/// An archive file written sorted by event time (see
/// [`archive::sorted_span`]), waiting for the merge to reach it.
struct SortedFile {
    kind: EventKind,
    rel: String,
    model: Arc<str>,
    /// Its earliest event time, as its footer said.
    first_ts: i64,
    /// Its earliest event time in the range.
    min_ts: i64,
    /// Its reader, when started ahead of the merge.
    ahead: Option<Ahead>,
}

/// Sorted files are read ahead of the merge from this much event time
/// before their first row.
const FILE_LOOKAHEAD_MS: i64 = 60_000;

/// A sorted file is in the merge, whole, from its first event time to its
/// last: one spanning more (a few very late events) is sorted by
/// DataFusion instead, so that the files held at once are those of about
/// this much event time, not those of every file a late event reaches back
/// past.
const MAX_MERGED_SPAN_MS: i64 = 30 * 60_000;

/// Footers read at a time when a backfill opens the archive.
const FOOTERS_AT_ONCE: usize = 16;

/// Hides the sorted files from the listing DataFusion sorts.
#[derive(Debug)]
struct HideSorted(HashSet<String>);

impl ListFilter for HideSorted {
    fn hidden<'a>(
        &'a self,
        listed: &'a [Listed],
    ) -> futures::future::BoxFuture<'a, Result<HashSet<String>>> {
        Box::pin(async move {
            Ok(listed
                .iter()
                .filter(|l| self.0.contains(&l.rel))
                .map(|l| l.rel.clone())
                .collect())
        })
    }
}

/// The `model` and `date` partition values of an archive file under
/// `table` (`None` for any other layout, or values DataFusion would
/// percent-decode: DataFusion reads those).
fn partitions<'a>(rel: &'a str, table: &str) -> Option<(&'a str, &'a str)> {
    let rest = rel.strip_prefix(table)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let model = parts.next()?.strip_prefix("model=")?;
    let date = parts.next()?.strip_prefix("date=")?;
    let name = parts.next()?;
    let plain = parts.next().is_none()
        && name.ends_with(".parquet")
        && !model.contains('%')
        && !date.contains('%');
    plain.then_some((model, date))
}

/// The archive's three tables, merged by event time: files written sorted
/// are merged as they are; any others (older archives, exported files) are
/// sorted by DataFusion a slice of event time at a time, in the same merge.
pub(crate) struct ArchiveSource {
    /// The cursors in the merge: sorted files', and the current slice's.
    cursors: Vec<Cursor>,
    /// Sorted files not yet in the merge, by first event time.
    files: VecDeque<SortedFile>,
    /// How many of the first `files` are read ahead.
    started: usize,
    /// The next slice's end and its cursors, already reading.
    ahead: Option<(i64, Vec<Cursor>)>,
    /// End of the current slice.
    slice_end: i64,
    /// Each table that has unsorted files, filtered to the selection, with
    /// the end of its range.
    tables: Vec<(EventKind, i64, datafusion::dataframe::DataFrame)>,
    /// End of the last slice.
    end: i64,
    /// Length of a slice (whole windows).
    slice_ms: i64,
    /// Serials of the batches read.
    serials: Arc<AtomicU64>,
    /// The event time of the last record of each kind taken, and where it
    /// came from.
    last: [Option<Taken>; 3],
    storage: Storage,
    selection: Selection,
    /// Files in range: merged as written, and sorted by DataFusion.
    counts: (u64, u64),
}

/// A record taken: its event time, topic, partition and offset.
type Taken = (i64, Arc<str>, i32, i64);

/// Event time read and sorted at a time (rounded to whole windows, at least
/// one): the sorts' memory holds two slices (the one taken and the next),
/// not the range; nothing is taken before the first slice is sorted.
const SLICE_MS: i64 = 2 * 60_000;

const KINDS: [EventKind; 3] = [
    EventKind::Prediction,
    EventKind::Feature,
    EventKind::Outcome,
];

/// Rows of `[from, until)` in event time, with the `date` partitions pruned.
fn time_filter(from: i64, until: i64) -> Expr {
    let ts = |ms: i64| {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    };
    col("date")
        .gt_eq(lit(crate::archive::date_of(from)))
        .and(col("date").lt_eq(lit(crate::archive::date_of(until - 1))))
        .and(col(field::TS).gt_eq(ts(from)))
        .and(col(field::TS).lt(ts(until)))
}

impl Selection {
    /// Where the rows of `kind` end: labels are read a wait past the windows.
    fn until(&self, kind: EventKind) -> i64 {
        match kind {
            EventKind::Outcome => self.covered.labels_to,
            _ => self.covered.to,
        }
    }
}

/// The files of the archive table `table` that `s` may read: those under
/// each selected model's folders of the dates `[from, until)` spans (the
/// whole table when no model is named).
async fn listed(
    storage: &Storage,
    table: &str,
    s: &Selection,
    from: i64,
    until: i64,
) -> Result<Vec<Listed>> {
    const DAY_MS: i64 = 86_400_000;
    if s.models.is_empty() {
        return storage.list(table).await;
    }
    let days = from.div_euclid(DAY_MS)..=(until - 1).div_euclid(DAY_MS);
    let folders: Vec<String> = s
        .models
        .iter()
        .flat_map(|m| {
            days.clone()
                .map(move |d| format!("{table}/model={m}/date={}", archive::date_of(d * DAY_MS)))
        })
        .collect();
    let lists: Vec<_> = folders.iter().map(|f| storage.list(f)).collect();
    let lists: Vec<Vec<Listed>> = futures::stream::iter(lists)
        .buffered(FOOTERS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(lists.into_iter().flatten().collect())
}

/// The tables of `kinds` as DataFusion reads them from `storage` (through
/// `hide` when given), filtered to the selection, with their ends.
async fn tables(
    storage: &Storage,
    s: &Selection,
    kinds: &[EventKind],
    hide: Option<Arc<dyn ListFilter>>,
) -> Result<Vec<(EventKind, i64, datafusion::dataframe::DataFrame)>> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(SORT_MEMORY, 1.0)
        .build_arc()?;
    // One partition: one sorter per table, not one per core.
    let cfg = SessionConfig::new().with_target_partitions(1);
    let ctx = SessionContext::new_with_config_rt(cfg, runtime);
    let mut out = Vec::new();
    for kind in kinds {
        let table = archive::table_of(*kind);
        storage.register_listing(
            &ctx,
            table,
            table,
            archive::schema_of(*kind),
            &[("model", DataType::Utf8), ("date", DataType::Utf8)],
            hide.clone(),
        )?;
        let until = s.until(*kind);
        let mut filter = time_filter(s.covered.from, until);
        if !s.models.is_empty() {
            filter = filter.and(
                col("model").in_list(s.models.iter().map(|m| lit(m.clone())).collect(), false),
            );
        }
        if let (Some(v), false) = (&s.version, *kind == EventKind::Outcome) {
            filter = filter.and(col(field::VERSION).eq(lit(v.clone())));
        }
        out.push((*kind, until, ctx.table(table).await?.filter(filter)?));
    }
    Ok(out)
}

impl ArchiveSource {
    async fn open(storage: &Storage, s: &Selection) -> Result<Self> {
        let from = s.covered.from;
        let mut files = Vec::new();
        let mut sorted = HashSet::new();
        let mut unsorted_kinds = Vec::new();
        let mut counts = (0, 0);
        for kind in KINDS {
            let table = archive::table_of(kind);
            let until = s.until(kind);
            let (first, last) = (archive::date_of(from), archive::date_of(until - 1));
            let mut unsorted = false;
            let mut candidates = Vec::new();
            for l in listed(storage, table, s, from, until).await? {
                if !l.rel.ends_with(".parquet") {
                    continue;
                }
                let Some((model, date)) = partitions(&l.rel, table) else {
                    unsorted = true;
                    counts.1 += 1;
                    continue;
                };
                let wanted = s.models.is_empty() || s.models.iter().any(|m| m == model);
                if wanted && *date >= *first.as_str() && *date <= *last.as_str() {
                    candidates.push((model.to_string(), l));
                }
            }
            let footers: Vec<_> = candidates
                .into_iter()
                .map(|(model, l)| async move {
                    let meta = storage.parquet_metadata(&l.rel, l.size).await;
                    (model, l.rel, meta)
                })
                .collect();
            let mut footers = futures::stream::iter(footers).buffer_unordered(FOOTERS_AT_ONCE);
            while let Some((model, rel, meta)) = footers.next().await {
                let span = archive::sorted_span(kind, &meta?)
                    .filter(|(min, max)| max.saturating_sub(*min) <= MAX_MERGED_SPAN_MS);
                let Some((min, max)) = span else {
                    unsorted = true;
                    counts.1 += 1;
                    continue;
                };
                sorted.insert(rel.clone());
                if max >= from && min < until {
                    counts.0 += 1;
                    files.push(SortedFile {
                        kind,
                        rel,
                        model: Arc::from(model),
                        first_ts: min,
                        min_ts: min.max(from),
                        ahead: None,
                    });
                }
            }
            if unsorted {
                unsorted_kinds.push(kind);
            }
        }
        files.sort_by(|a, b| {
            (a.min_ts, rank(a.kind), &a.rel).cmp(&(b.min_ts, rank(b.kind), &b.rel))
        });
        let hide: Arc<dyn ListFilter> = Arc::new(HideSorted(sorted));
        let tables = if unsorted_kinds.is_empty() {
            Vec::new()
        } else {
            tables(storage, s, &unsorted_kinds, Some(hide)).await?
        };
        let mut source = Self {
            cursors: Vec::new(),
            files: files.into(),
            started: 0,
            ahead: None,
            slice_end: i64::MIN,
            tables,
            end: s.covered.labels_to.max(s.covered.to),
            slice_ms: SLICE_MS.div_euclid(s.covered.window_ms).max(1) * s.covered.window_ms,
            serials: Arc::default(),
            last: [None, None, None],
            storage: storage.clone(),
            selection: s.clone(),
            counts,
        };
        source.ahead = source.open_slice(from)?;
        source.next_slice()?;
        Ok(source)
    }

    /// Rows to read in all (an extra pass over every file's event times).
    async fn total(&self) -> Result<u64> {
        let mut n = 0;
        for (_, _, df) in tables(&self.storage, &self.selection, &KINDS, None).await? {
            n += df.count().await? as u64;
        }
        Ok(n)
    }

    /// Moves on to the slice read ahead, and starts reading the one after
    /// it; false at the end.
    fn next_slice(&mut self) -> Result<bool> {
        self.cursors.retain(|c| c.file);
        let Some((to, cursors)) = self.ahead.take() else {
            return Ok(false);
        };
        self.cursors.extend(cursors);
        self.slice_end = to;
        self.ahead = self.open_slice(to)?;
        Ok(true)
    }

    /// Starts reading the sorted rows of the unsorted files in the slice of
    /// event time from `from` (`None` past the end, or without such files).
    fn open_slice(&self, from: i64) -> Result<Option<(i64, Vec<Cursor>)>> {
        if from >= self.end || self.tables.is_empty() {
            return Ok(None);
        }
        let to = from.saturating_add(self.slice_ms).min(self.end);
        let mut cursors = Vec::new();
        for (kind, until, df) in &self.tables {
            if from >= *until {
                continue;
            }
            let sorted = df
                .clone()
                .filter(time_filter(from, to.min(*until)))?
                .sort(vec![
                    col(field::TS).sort(true, false),
                    col(acol::TOPIC).sort(true, false),
                    col(acol::PARTITION).sort(true, false),
                    col(acol::OFFSET).sort(true, false),
                ])?;
            cursors.push(Cursor::new(
                *kind,
                false,
                &self.serials,
                Ahead::query(sorted),
            ));
        }
        Ok(Some((to, cursors)))
    }

    /// Starts reading the sorted files that begin within the lookahead of
    /// event time `at`.
    fn read_ahead(&mut self, at: i64) {
        while let Some(f) = self.files.get(self.started) {
            if f.min_ts > at.saturating_add(FILE_LOOKAHEAD_MS) {
                break;
            }
            let range = (self.selection.covered.from, self.selection.until(f.kind));
            let ahead = Ahead::file(self.storage.clone(), f, range, self.version(f.kind));
            self.files[self.started].ahead = Some(ahead);
            self.started += 1;
        }
    }

    /// The version to keep of a kind's rows (outcomes have none).
    fn version(&self, kind: EventKind) -> Option<String> {
        self.selection
            .version
            .clone()
            .filter(|_| kind != EventKind::Outcome)
    }

    /// The cursor with the first row in the merge.
    fn first(&self) -> Option<(usize, i64)> {
        let mut best: Option<(usize, &(i64, Record))> = None;
        for (i, c) in self.cursors.iter().enumerate() {
            let Some(h) = &c.head else { continue };
            if best.is_none_or(|(_, b)| h.0 < b.0 || (h.0 == b.0 && key(h) < key(b))) {
                best = Some((i, h));
            }
        }
        best.map(|(i, h)| (i, h.0))
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(max);
        for c in &mut self.cursors {
            c.fill().await?;
        }
        self.cursors.retain(|c| !c.file || c.head.is_some());
        while out.len() < max {
            let first = self.first();
            let at = first.map(|(_, ts)| ts);
            // A sorted file whose rows may come first joins the merge.
            if self
                .files
                .front()
                .is_some_and(|f| at.is_none_or(|t| f.min_ts <= t))
            {
                let mut f = self.files.pop_front().expect("checked");
                self.started = self.started.saturating_sub(1);
                let range = (self.selection.covered.from, self.selection.until(f.kind));
                let stream = match f.ahead.take() {
                    Some(a) => a,
                    None => Ahead::file(self.storage.clone(), &f, range, self.version(f.kind)),
                };
                let mut c = Cursor::new(f.kind, true, &self.serials, stream);
                c.fill().await?;
                if c.head.is_some() {
                    self.cursors.push(c);
                }
                continue;
            }
            // The slice of the unsorted files is read and the merge has
            // reached its end: on to the next slice (slices follow in event
            // time, so the order holds across them).
            let slice_read = self.cursors.iter().all(|c| c.file || c.head.is_none());
            if slice_read && self.ahead.is_some() && at.is_none_or(|t| t >= self.slice_end) {
                self.next_slice()?;
                for c in self.cursors.iter_mut().filter(|c| !c.file) {
                    c.fill().await?;
                }
                continue;
            }
            let Some((i, ts)) = first else {
                break;
            };
            self.read_ahead(ts);
            let c = &mut self.cursors[i];
            let Some((ts, r)) = c.head.take() else {
                unreachable!("the first cursor has a head")
            };
            // The same record twice (files of two runs that overlap) is
            // read once: copies have the same place in the merge.
            let last = &mut self.last[rank(r.kind) as usize];
            let again = last.as_ref().is_some_and(|(s, t, p, o)| {
                *s == ts && **t == *r.topic && *p == r.partition && *o == r.offset
            });
            if !again {
                *last = Some((ts, r.topic.clone(), r.partition, r.offset));
                out.push(r);
            }
            c.fill().await?;
            if c.file && c.head.is_none() {
                self.cursors.swap_remove(i);
            }
        }
        Ok(out)
    }
}

/// The records of one archive batch (with `model` from its partition).
fn records(kind: EventKind, b: Arc<RecordBatch>, serial: u64) -> Result<Vec<(i64, Record)>> {
    let missing = |name: &str| {
        Error::Config(format!(
            "archive table `{}` has no column `{name}`",
            archive::table_of(kind)
        ))
    };
    b.column_by_name("model").ok_or_else(|| missing("model"))?;
    let ts = b
        .column_by_name(field::TS)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| missing(field::TS))?;
    let topic = b
        .column_by_name(acol::TOPIC)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(acol::TOPIC))?;
    let partition = b
        .column_by_name(acol::PARTITION)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| missing(acol::PARTITION))?;
    let offset = b
        .column_by_name(acol::OFFSET)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| missing(acol::OFFSET))?;
    let mut last_topic: Option<Arc<str>> = None;
    let mut out = Vec::with_capacity(b.num_rows());
    for row in 0..b.num_rows() {
        let t = topic.value(row);
        let name = match &last_topic {
            Some(n) if &**n == t => n.clone(),
            _ => {
                let n: Arc<str> = Arc::from(format!("backfill.{t}"));
                last_topic = Some(n.clone());
                n
            }
        };
        out.push((
            ts.value(row),
            Record {
                kind,
                body: Body::Archived(ArchivedRow {
                    batch: b.clone(),
                    serial,
                    row: row as u32,
                }),
                topic: name,
                partition: partition.value(row),
                offset: offset.value(row),
            },
        ));
    }
    Ok(out)
}

/// What a line's fields say about its kind.
#[derive(Deserialize)]
struct KindOf {
    #[serde(default)]
    prediction: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    label: Option<serde::de::IgnoredAny>,
}

/// JSON-lines files, one after the other.
pub(crate) struct JsonLines {
    storage: Storage,
    files: std::collections::VecDeque<String>,
    current: Option<OpenFile>,
}

struct OpenFile {
    bytes: bytes::Bytes,
    pos: usize,
    line: i64,
    partition: i32,
}

impl JsonLines {
    async fn open(storage: Storage, input: &str, pattern: &str) -> Result<Self> {
        let glob = glob::Pattern::new(pattern)
            .map_err(|e| Error::Config(format!("--input `{input}`: bad glob pattern: {e}")))?;
        // `*` stays within a folder, as in a shell.
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        // List only below the pattern's literal folders.
        let fixed = pattern
            .find(['*', '?', '['])
            .and_then(|i| pattern[..i].rfind('/'))
            .map_or("", |slash| &pattern[..slash]);
        let mut files: Vec<String> = storage
            .list(fixed)
            .await
            .map_err(|e| Error::Config(format!("--input `{input}`: {e}")))?
            .into_iter()
            .map(|l| l.rel)
            .filter(|r| glob.matches_with(r, options))
            .collect();
        if files.is_empty() {
            return Err(Error::Config(format!("--input `{input}`: no file matches")));
        }
        files.sort();
        Ok(Self {
            storage,
            files: files.into(),
            current: None,
        })
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Record>> {
        let topic: Arc<str> = Arc::from("backfill");
        let mut out = Vec::with_capacity(max);
        while out.len() < max {
            let Some(f) = &mut self.current else {
                let Some(rel) = self.files.pop_front() else {
                    break;
                };
                let bytes = self.storage.get(&rel).await?;
                self.current = Some(OpenFile {
                    bytes,
                    pos: 0,
                    line: 0,
                    partition: (xxh3_64(rel.as_bytes()) & 0x7fff_ffff) as i32,
                });
                continue;
            };
            if f.pos >= f.bytes.len() {
                self.current = None;
                continue;
            }
            let rest = &f.bytes[f.pos..];
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let mut line = rest[..end].trim_ascii();
            if f.line == 0 {
                // A byte-order mark (Windows exports) is not part of the JSON.
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            f.pos += end + 1;
            f.line += 1;
            if line.is_empty() {
                continue;
            }
            let kind = match serde_json::from_slice::<KindOf>(line) {
                Ok(k) if k.label.is_some() => EventKind::Outcome,
                Ok(k) if k.prediction.is_none() => EventKind::Feature,
                // Predictions, and lines that are not JSON objects (the
                // decoder dead-letters them with its reason).
                _ => EventKind::Prediction,
            };
            out.push(Record {
                kind,
                body: Body::Json(line.to_vec()),
                topic: topic.clone(),
                partition: f.partition,
                offset: f.line,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_at_their_folder() {
        assert_eq!(split_glob("s3://b/x/*.jsonl"), ("s3://b/x/", "*.jsonl"));
        assert_eq!(split_glob("/d/2026-*/e.jsonl"), ("/d/", "2026-*/e.jsonl"));
        assert_eq!(split_glob("/d/e.jsonl"), ("/d/", "e.jsonl"));
        assert_eq!(split_glob("e.jsonl"), (".", "e.jsonl"));
    }

    #[test]
    fn archive_paths_give_their_partitions() {
        let p = "predictions/model=m-1/date=2026-01-01/t-0-00000000000000000007.parquet";
        assert_eq!(partitions(p, "predictions"), Some(("m-1", "2026-01-01")));
        for other in [
            "outcomes/model=m/date=2026-01-01/a.parquet",
            "predictions/model=m/a.parquet",
            "predictions/date=2026-01-01/model=m/a.parquet",
            "predictions/model=m/date=2026-01-01/x/a.parquet",
            "predictions/model=m%2F/date=2026-01-01/a.parquet",
            "predictions/model=m/date=2026-01-01/a.json",
        ] {
            assert_eq!(partitions(other, "predictions"), None, "{other}");
        }
    }

    /// A batch of a sorted file: (ts, offset, version) rows.
    fn batch(rows: &[(i64, i64, Option<&str>)]) -> RecordBatch {
        use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
        use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
        let schema = Schema::new(vec![
            Field::new(
                field::TS,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new(acol::OFFSET, DataType::Int64, false),
            Field::new(field::VERSION, DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.0))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sorted_file_rows_are_cut_to_the_range_and_version_and_checked() -> Result<()> {
        let rows = [
            (5, 1, Some("1")),
            (10, 2, Some("2")),
            (10, 3, None),
            (19, 4, Some("2")),
            (20, 5, Some("2")),
        ];
        let mut last = (i64::MIN, i64::MIN);
        let b = file_rows("f", batch(&rows), "m", (10, 20), None, &mut last)?;
        let offsets = |b: &RecordBatch| -> Vec<i64> {
            b.column_by_name(acol::OFFSET)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(offsets(&b), [2, 3, 4]);
        let model = b.column_by_name("model").unwrap().as_string::<i32>();
        assert_eq!(model.iter().flatten().collect::<Vec<_>>(), ["m"; 3]);
        assert_eq!(last, (20, 5), "the order is checked over every row read");

        let mut last = (i64::MIN, i64::MIN);
        let b = file_rows("f", batch(&rows), "m", (0, 100), Some("2"), &mut last)?;
        assert_eq!(offsets(&b), [2, 4, 5]);

        // The next batch must go on from where the last one ended.
        let e = file_rows("f", batch(&[(20, 4, None)]), "m", (0, 100), None, &mut last)
            .expect_err("out of order");
        assert!(e.to_string().contains("archive file `f`"), "{e}");
        let mut last = (i64::MIN, i64::MIN);
        let unsorted = batch(&[(7, 1, None), (6, 2, None)]);
        assert!(file_rows("f", unsorted, "m", (0, 100), None, &mut last).is_err());
        // A row before the first event time the footer gave (the file was
        // rewritten after the backfill read its footer).
        let mut last = (7, i64::MIN);
        let earlier = batch(&[(6, 1, None), (8, 2, None)]);
        assert!(file_rows("f", earlier, "m", (0, 100), None, &mut last).is_err());
        Ok(())
    }
}
