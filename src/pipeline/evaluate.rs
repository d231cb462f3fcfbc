//! Closed windows → evaluators → sinks, on a task of their own.
//!
//! Each [`Evaluator`] (drift today; quality, performance, A/B later) turns a
//! closed window into rows for its table and owns whatever state it carries
//! from window to window, which it hands to the checkpoint as a named part.
//! Each [`Sink`] takes every window's rows (Parquet files today; alerts
//! later). Adding one is an entry in the lists built by
//! [`super::Pipeline::new`]: the consumer loop does not change.
//!
//! The pipeline hands each closed window to [`WindowWriter::submit`]; one
//! task evaluates and writes, so the DataFusion work of a window overlaps
//! with consuming the next records (on another core). The channel is
//! bounded, so a slow store slows the consumer instead of piling up windows
//! in memory. Before a checkpoint the pipeline calls [`WindowWriter::flush`],
//! which returns once every window submitted before it is durable, with the
//! evaluators' and sinks' checkpoint parts as of that point: offsets are
//! never committed ahead of the results derived from them, and the parts
//! match the offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::storage::tables::{self, col};
use crate::window::ClosedWindow;

/// Rows of one table for one model and window.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// Table name ([`crate::storage::tables`]).
    pub table: &'static str,
    /// Model name.
    pub model: String,
    /// Rows in the table's file schema.
    pub batch: RecordBatch,
    /// The file (relative path) when not the one named after the table,
    /// model and hand-over window (an evaluator that completes earlier
    /// windows later, or writes several files of one table per window).
    pub path: Option<String>,
}

/// Checkpoint parts by owner name.
pub(crate) type Parts = BTreeMap<String, serde_json::Value>;

/// Turns a closed window into rows.
#[async_trait]
pub(crate) trait Evaluator: Send {
    /// Name (also the key of its checkpoint part).
    fn name(&self) -> &'static str;
    /// Prepares what every window needs (e.g. planning its queries), once,
    /// when the writer task starts: before the first window arrives.
    async fn start(&mut self) -> Result<()> {
        Ok(())
    }
    /// The rows of `window`.
    async fn evaluate(&mut self, window: &ClosedWindow) -> Result<Vec<Output>>;
    /// State carried between windows, for the checkpoint.
    fn snapshot(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
    /// Restores what [`Evaluator::snapshot`] returned.
    fn restore(&mut self, _part: serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// Takes the rows of every closed window.
#[async_trait]
pub(crate) trait Sink: Send {
    /// Name (also the key of its checkpoint part).
    fn name(&self) -> &'static str;
    /// Takes the rows of `window`, in evaluator order.
    async fn write(&mut self, window: &ClosedWindow, outputs: &[Output]) -> Result<()>;
    /// State carried between windows, for the checkpoint.
    fn snapshot(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
    /// Restores what [`Sink::snapshot`] returned.
    fn restore(&mut self, _part: serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// Writes result files, each with one atomic put (a replay overwrites
/// the same file). For a backfill it also remembers what it wrote (the
/// backfill then removes the files of its windows it did not rewrite) and,
/// restricted to one model version, keeps the rows of the other versions
/// already in a file.
#[derive(Clone)]
pub(crate) struct ResultFiles {
    storage: Storage,
    only_version: Option<String>,
    written: Option<Arc<Mutex<BTreeSet<String>>>>,
}

impl ResultFiles {
    /// Plain writes (the stream).
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            only_version: None,
            written: None,
        }
    }

    /// Writes that are remembered, and with `only_version` merged into the
    /// other versions' rows (a backfill).
    pub fn tracked(storage: Storage, only_version: Option<String>) -> Self {
        Self {
            storage,
            only_version,
            written: Some(Arc::default()),
        }
    }

    /// The files written so far (a tracked writer's).
    pub fn written(&self) -> BTreeSet<String> {
        self.written
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Writes `batch` as the file `path`.
    pub async fn write(&self, path: &str, batch: RecordBatch) -> Result<()> {
        let batch = match &self.only_version {
            Some(v) if batch.schema().column_with_name(col::VERSION).is_some() => {
                let schema = batch.schema();
                let mut parts = Vec::new();
                // Kept rows in this schema, by column name (a file of an
                // older release may lack a later column, or order them
                // otherwise).
                for old in self.other_versions(path, v).await? {
                    parts.push(conform(&old, &schema)?);
                }
                parts.push(batch);
                datafusion::arrow::compute::concat_batches(&schema, &parts)?
            }
            _ => batch,
        };
        self.storage
            .write_parquet(path, std::slice::from_ref(&batch))
            .await?;
        if let Some(w) = &self.written {
            w.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_string());
        }
        Ok(())
    }

    /// Removes the rows of `only_version` from the file `path` (deleting
    /// it when nothing else is left), or the whole file without a version
    /// restriction or when its table has no `version` column.
    pub async fn remove(&self, path: &str) -> Result<()> {
        if let Some(v) = &self.only_version {
            let Some(bytes) = self.storage.get_opt(path).await? else {
                return Ok(());
            };
            let batches = crate::storage::decode_parquet(bytes)?;
            let Some(kept) = without_version(batches, v)? else {
                // A table without versions (A/B) is not a version's to remove.
                return Ok(());
            };
            if kept.iter().any(|b| b.num_rows() > 0) {
                return self.storage.write_parquet(path, &kept).await;
            }
        }
        self.storage.delete(path).await
    }

    /// The rows of `path` whose version is not `version`.
    async fn other_versions(&self, path: &str, version: &str) -> Result<Vec<RecordBatch>> {
        let Some(bytes) = self.storage.get_opt(path).await? else {
            return Ok(Vec::new());
        };
        let batches = crate::storage::decode_parquet(bytes)?;
        Ok(without_version(batches, version)?.unwrap_or_default())
    }
}

/// `batch` with `schema`'s columns, matched by name: cast to their type,
/// NULL where `batch` lacks one.
fn conform(
    batch: &RecordBatch,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::new_null_array;
    use datafusion::arrow::compute::cast;
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `batches` without the rows of `version`; `None` when they have no
/// `version` column.
fn without_version(batches: Vec<RecordBatch>, version: &str) -> Result<Option<Vec<RecordBatch>>> {
    use datafusion::arrow::array::{Scalar, StringArray};
    use datafusion::arrow::compute::{cast, filter_record_batch, kernels::cmp::distinct};
    use datafusion::arrow::datatypes::DataType;
    let mut kept = Vec::new();
    for b in batches {
        let Some(c) = b.column_by_name(col::VERSION) else {
            return Ok(None);
        };
        let c = cast(c, &DataType::Utf8)?;
        let mask = distinct(&c, &Scalar::new(StringArray::from(vec![version])))?;
        kept.push(filter_record_batch(&b, &mask)?);
    }
    Ok(Some(kept))
}

/// Writes each output as one Parquet file named after its table, model and
/// window, with one atomic put: a replay overwrites the same file.
pub(crate) struct ParquetSink {
    files: ResultFiles,
}

impl ParquetSink {
    pub fn new(files: ResultFiles) -> Self {
        Self { files }
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> &'static str {
        "parquet"
    }

    async fn write(&mut self, window: &ClosedWindow, outputs: &[Output]) -> Result<()> {
        for o in outputs {
            let path = o.path.clone().unwrap_or_else(|| {
                tables::window_file(o.table, &o.model, window.start, window.end)
            });
            self.files.write(&path, o.batch.clone()).await?;
        }
        Ok(())
    }
}

/// What the writer did since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WriterStats {
    /// Windows evaluated and written.
    pub windows: u64,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// `drift_results` rows marked drifted.
    pub drifted: u64,
}

/// What a flush returns.
pub(crate) struct Flushed {
    pub stats: WriterStats,
    pub parts: Parts,
}

enum Msg {
    Window(ClosedWindow),
    Flush(oneshot::Sender<Result<Flushed>>),
}

/// Handle of the writer task.
pub(crate) struct WindowWriter {
    tx: mpsc::Sender<Msg>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Windows queued ahead of the writer before `submit` waits.
const QUEUE: usize = 2;

/// Key of a part in the checkpoint.
fn part_key(kind: &str, name: &str) -> String {
    format!("{kind}.{name}")
}

impl WindowWriter {
    /// Restores each evaluator's and sink's part from `parts`, then starts
    /// the task.
    pub fn spawn(
        mut evaluators: Vec<Box<dyn Evaluator>>,
        mut sinks: Vec<Box<dyn Sink>>,
        parts: &Parts,
    ) -> Result<Self> {
        for e in &mut evaluators {
            if let Some(p) = parts.get(&part_key("evaluator", e.name())) {
                e.restore(p.clone())?;
            }
        }
        for s in &mut sinks {
            if let Some(p) = parts.get(&part_key("sink", s.name())) {
                s.restore(p.clone())?;
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(evaluators, sinks, rx));
        Ok(Self {
            tx,
            task: Some(task),
        })
    }

    /// Queues a closed window; waits while the queue is full.
    pub async fn submit(&mut self, window: ClosedWindow) -> Result<()> {
        if self.tx.send(Msg::Window(window)).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// Waits until every window submitted so far is written; returns what
    /// was written and the checkpoint parts as of now.
    pub async fn flush(&mut self) -> Result<Flushed> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_err() {
            return Err(self.failure().await);
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.failure().await),
        }
    }

    /// Ends the task once it has written what was submitted and waits for
    /// it, so its sinks (the alert producer) are dropped while the broker
    /// is still there.
    pub async fn close(self) -> Result<()> {
        let Self { tx, task } = self;
        drop(tx);
        match task {
            Some(t) => t.await.map_err(|e| Error::Task {
                task: "window writer",
                reason: e.to_string(),
            })?,
            None => Ok(()),
        }
    }

    /// The error the task stopped with.
    async fn failure(&mut self) -> Error {
        let task = "window writer";
        match self.task.take() {
            Some(t) => match t.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => Error::Task {
                    task,
                    reason: "stopped".into(),
                },
                Err(e) => Error::Task {
                    task,
                    reason: e.to_string(),
                },
            },
            None => Error::Task {
                task,
                reason: "already failed".into(),
            },
        }
    }
}

fn parts_of(evaluators: &[Box<dyn Evaluator>], sinks: &[Box<dyn Sink>]) -> Result<Parts> {
    let mut parts = Parts::new();
    for e in evaluators {
        if let Some(p) = e.snapshot()? {
            parts.insert(part_key("evaluator", e.name()), p);
        }
    }
    for s in sinks {
        if let Some(p) = s.snapshot()? {
            parts.insert(part_key("sink", s.name()), p);
        }
    }
    Ok(parts)
}

async fn run(
    mut evaluators: Vec<Box<dyn Evaluator>>,
    mut sinks: Vec<Box<dyn Sink>>,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<()> {
    let mut stats = WriterStats::default();
    for e in &mut evaluators {
        e.start().await?;
    }
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Flush(reply) => {
                let r = parts_of(&evaluators, &sinks).map(|parts| Flushed {
                    stats: std::mem::take(&mut stats),
                    parts,
                });
                let _ = reply.send(r);
            }
            Msg::Window(w) => {
                let mut outputs = Vec::new();
                let mut times = Vec::with_capacity(evaluators.len() + sinks.len());
                for e in &mut evaluators {
                    let t = Instant::now();
                    outputs.extend(e.evaluate(&w).await?);
                    times.push((e.name(), t.elapsed()));
                    crate::telemetry::part_time(e.name(), t.elapsed().as_secs_f64());
                }
                let eval_ms = times.iter().map(|(_, t)| t.as_secs_f64()).sum::<f64>() * 1e3;
                for s in &mut sinks {
                    let t = Instant::now();
                    s.write(&w, &outputs).await?;
                    times.push((s.name(), t.elapsed()));
                    crate::telemetry::part_time(s.name(), t.elapsed().as_secs_f64());
                }
                for o in &outputs {
                    *stats.rows.entry(o.table).or_default() += o.batch.num_rows() as u64;
                    if o.table == tables::DRIFT_RESULTS {
                        stats.drifted += o
                            .batch
                            .column_by_name(col::DRIFTED)
                            .map_or(0, |c| c.as_boolean().true_count() as u64);
                    }
                }
                // A window handed over only for its final labels was
                // counted when it closed.
                if !w.is_performance() {
                    stats.windows += 1;
                }
                tracing::info!(
                    window_start = w.start,
                    outputs = outputs.len(),
                    eval_ms,
                    "window written"
                );
                tracing::debug!(
                    window_start = w.start,
                    ms = ?times.iter().map(|(n, t)| (*n, t.as_secs_f64() * 1e3)).collect::<Vec<_>>(),
                    "window time by part"
                );
            }
        }
    }
    Ok(())
}
