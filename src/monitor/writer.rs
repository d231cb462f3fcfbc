//! A task that tests and writes closed windows while the consumer goes on.
//!
//! The pipeline hands each closed window to [`WindowWriter::submit`]; a
//! single task runs the drift query and writes the Parquet file, so the
//! DataFusion work of one window overlaps with consuming the next records
//! (on another core). The channel is bounded, so a slow store slows the
//! consumer instead of piling up windows in memory. Before a checkpoint the
//! pipeline calls [`WindowWriter::flush`], which returns once every window
//! submitted before it is durable: offsets are never committed ahead of the
//! results derived from them.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::DriftMonitor;
use crate::error::{Error, Result};
use crate::event::ModelCatalog;
use crate::storage::Storage;
use crate::storage::tables::{self, col};
use crate::window::ClosedWindow;

/// What the writer did since the last flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Windows tested and written.
    pub windows: u64,
    /// Result rows written.
    pub rows: u64,
    /// Result rows marked drifted.
    pub drifted: u64,
}

enum Msg {
    Window(ClosedWindow),
    Flush(oneshot::Sender<WriterStats>),
}

/// Handle of the writer task.
pub struct WindowWriter {
    tx: mpsc::Sender<Msg>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Windows queued ahead of the writer before `submit` waits.
const QUEUE: usize = 2;

impl WindowWriter {
    /// Starts the writer task.
    pub fn spawn(monitor: DriftMonitor, storage: Storage, catalog: Arc<ModelCatalog>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(monitor, storage, catalog, rx));
        Self {
            tx,
            task: Some(task),
        }
    }

    /// Queues a closed window; waits while the queue is full.
    pub async fn submit(&mut self, window: ClosedWindow) -> Result<()> {
        if self.tx.send(Msg::Window(window)).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// Waits until every window submitted so far is written.
    pub async fn flush(&mut self) -> Result<WriterStats> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_err() {
            return Err(self.failure().await);
        }
        match rx.await {
            Ok(stats) => Ok(stats),
            Err(_) => Err(self.failure().await),
        }
    }

    /// The error the task stopped with.
    async fn failure(&mut self) -> Error {
        match self.task.take() {
            Some(t) => match t.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => Error::Task {
                    task: "window writer",
                    reason: "stopped".into(),
                },
                Err(e) => Error::Task {
                    task: "window writer",
                    reason: e.to_string(),
                },
            },
            None => Error::Task {
                task: "window writer",
                reason: "already failed".into(),
            },
        }
    }
}

async fn run(
    monitor: DriftMonitor,
    storage: Storage,
    catalog: Arc<ModelCatalog>,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<()> {
    let mut stats = WriterStats::default();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Flush(reply) => {
                let _ = reply.send(std::mem::take(&mut stats));
            }
            Msg::Window(w) => {
                let t0 = Instant::now();
                let results = monitor.evaluate(&w).await?;
                let test_ms = t0.elapsed().as_secs_f64() * 1e3;
                for r in results {
                    let name = &catalog.models[r.model].name;
                    let drifted = r
                        .batch
                        .column_by_name(col::DRIFTED)
                        .map_or(0, |c| c.as_boolean().true_count() as u64);
                    let path = tables::drift_file(name, w.start, w.end);
                    storage
                        .write_parquet(&path, std::slice::from_ref(&r.batch))
                        .await?;
                    stats.rows += r.batch.num_rows() as u64;
                    stats.drifted += drifted;
                    tracing::info!(model = %name, window_start = w.start, rows = r.batch.num_rows(), drifted, test_ms, "window written");
                }
                stats.windows += 1;
            }
        }
    }
    Ok(())
}
