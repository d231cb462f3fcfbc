//! Bounded sources: the records a backfill reads (archive rows, or event
//! payloads) with where they came from, in the order the step takes them.
//!
//! * **The archive** (`predictions/`, `features/`, `outcomes/` under a
//!   folder or bucket prefix, Hive-partitioned by model and date; mlwatch's
//!   own or exported in its layout): two minutes of event time (whole
//!   windows) at a time, one DataFusion query per table with the `date`
//!   partitions pruned and the rows sorted by event time, the three merged
//!   by event time; slices follow each other in time, so the order holds
//!   across them and the sorts hold two slices. Each slice's queries run on
//!   tasks of their own, started when the slice before begins to be taken:
//!   the next slice is sorted while this one is taken (a sort gives nothing
//!   before it has read all its input). Sorted input never makes an event
//!   late, so the windows get exactly the events the stream archived.
//! * **JSON lines** (a file or glob, local or S3): one event per line, the
//!   kind told by its fields (`label`: outcome; `prediction`: prediction;
//!   else features), files in path order and lines in file order, as a
//!   topic replays: events behind the watermark are late, as in the stream.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMillisecondType};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{Expr, SessionConfig, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

use super::range::Covered;
use crate::archive::{self, col as acol};
use crate::error::{Error, Result};
use crate::event::{EventKind, field};
use crate::storage::Storage;

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
            Self::Archive(a) => {
                let mut n = 0;
                for (_, _, df) in &a.tables {
                    n += df.clone().count().await? as u64;
                }
                Ok(Some(n))
            }
            Self::JsonLines(_) => Ok(None),
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

/// One table's sorted rows, a batch at a time.
struct Cursor {
    kind: EventKind,
    /// Serial of the next batch read (shared by the slice's cursors).
    serials: Arc<std::sync::atomic::AtomicU64>,
    stream: Ahead,
    rows: std::vec::IntoIter<(i64, Record)>,
    head: Option<(i64, Record)>,
    /// Where the last record taken came from.
    last: Option<(Arc<str>, i32, i64)>,
    done: bool,
}

impl Cursor {
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
                    let serial = self
                        .serials
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.rows = records(self.kind, Arc::new(b?), serial)?.into_iter();
                }
                None => {
                    // The task ended: it sent every batch, or it failed
                    // (an error sent) or panicked (said here, not taken
                    // for the end of the table).
                    self.done = true;
                    (&mut self.stream.task).await.map_err(|e| Error::Task {
                        task: "backfill slice reader",
                        reason: e.to_string(),
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// One table's sorted rows of a slice, read by a task of its own (which
/// stops when this is dropped).
struct Ahead {
    batches: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
    task: tokio::task::JoinHandle<()>,
}

/// Sorted batches a slice's task holds ready for its cursor.
const BATCHES_AHEAD: usize = 2;

impl Ahead {
    /// Starts running `query`.
    fn spawn(query: datafusion::dataframe::DataFrame) -> Self {
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
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The archive's three tables, merged by event time.
pub(crate) struct ArchiveSource {
    /// The current slice's cursors.
    cursors: Vec<Cursor>,
    /// The next slice's end and its cursors, already reading.
    ahead: Option<(i64, Vec<Cursor>)>,
    /// Each table, filtered to the selection, with the end of its range.
    tables: Vec<(EventKind, i64, datafusion::dataframe::DataFrame)>,
    /// End of the last slice.
    end: i64,
    /// Length of a slice (whole windows).
    slice_ms: i64,
    /// Serials of the batches read.
    serials: Arc<std::sync::atomic::AtomicU64>,
}

/// Event time read and sorted at a time (rounded to whole windows, at least
/// one): the sorts' memory holds two slices (the one taken and the next),
/// not the range; nothing is taken before the first slice is sorted.
const SLICE_MS: i64 = 2 * 60_000;

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

impl ArchiveSource {
    async fn open(storage: &Storage, s: &Selection) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(SORT_MEMORY, 1.0)
            .build_arc()?;
        // One partition: one sorter per table, not one per core.
        let cfg = SessionConfig::new().with_target_partitions(1);
        let ctx = SessionContext::new_with_config_rt(cfg, runtime);
        let mut tables = Vec::new();
        for kind in [
            EventKind::Prediction,
            EventKind::Feature,
            EventKind::Outcome,
        ] {
            let table = archive::table_of(kind);
            storage.register_listing(
                &ctx,
                table,
                table,
                archive::schema_of(kind),
                &[("model", DataType::Utf8), ("date", DataType::Utf8)],
                None,
            )?;
            let until = match kind {
                EventKind::Outcome => s.covered.labels_to,
                _ => s.covered.to,
            };
            let mut filter = time_filter(s.covered.from, until);
            if !s.models.is_empty() {
                filter = filter.and(
                    col("model").in_list(s.models.iter().map(|m| lit(m.clone())).collect(), false),
                );
            }
            if let (Some(v), false) = (&s.version, kind == EventKind::Outcome) {
                filter = filter.and(col(field::VERSION).eq(lit(v.clone())));
            }
            tables.push((kind, until, ctx.table(table).await?.filter(filter)?));
        }
        let mut source = Self {
            cursors: Vec::new(),
            ahead: None,
            tables,
            end: s.covered.labels_to.max(s.covered.to),
            slice_ms: SLICE_MS.div_euclid(s.covered.window_ms).max(1) * s.covered.window_ms,
            serials: Arc::default(),
        };
        source.ahead = source.open_slice(s.covered.from)?;
        source.next_slice()?;
        Ok(source)
    }

    /// Moves on to the slice read ahead, and starts reading the one after
    /// it; false at the end.
    fn next_slice(&mut self) -> Result<bool> {
        self.cursors.clear();
        let Some((to, cursors)) = self.ahead.take() else {
            return Ok(false);
        };
        self.cursors = cursors;
        self.ahead = self.open_slice(to)?;
        Ok(true)
    }

    /// Starts reading the sorted rows of the slice of event time from
    /// `from` (`None` past the end).
    fn open_slice(&self, from: i64) -> Result<Option<(i64, Vec<Cursor>)>> {
        if from >= self.end {
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
            cursors.push(Cursor {
                kind: *kind,
                serials: self.serials.clone(),
                stream: Ahead::spawn(sorted),
                rows: Vec::new().into_iter(),
                head: None,
                last: None,
                done: false,
            });
        }
        Ok(Some((to, cursors)))
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(max);
        for c in &mut self.cursors {
            c.fill().await?;
        }
        while out.len() < max {
            // The earliest head; ties go to predictions, then features.
            let Some(i) = (0..self.cursors.len())
                .filter(|&i| self.cursors[i].head.is_some())
                .min_by_key(|&i| self.cursors[i].head.as_ref().map(|h| h.0))
            else {
                // This slice is read: on to the next one (slices follow in
                // event time, so the order holds across them).
                if !self.next_slice()? {
                    break;
                }
                for c in &mut self.cursors {
                    c.fill().await?;
                }
                continue;
            };
            let c = &mut self.cursors[i];
            if let Some((_, r)) = c.head.take() {
                // The same record twice (files of two runs that overlap) is
                // read once: copies sort next to each other.
                let again = c.last.as_ref().is_some_and(|(t, p, o)| {
                    **t == *r.topic && *p == r.partition && *o == r.offset
                });
                if !again {
                    c.last = Some((r.topic.clone(), r.partition, r.offset));
                    out.push(r);
                }
            }
            c.fill().await?;
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
            let line = rest[..end].trim_ascii();
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
}
