//! The checkpoint: one JSON object per consumer group,
//! `_checkpoints/<group>.json`, written atomically.
//!
//! It holds the source's next offsets (the source of truth for where to
//! resume), the window state, the open runs of the tracking topic, the
//! counters, and one named part per evaluator and sink that carries state
//! from window to window (`evaluator.<name>`, `sink.<name>`).

use serde::{Deserialize, Serialize};

use super::Counters;
use super::evaluate::Parts;
use crate::error::{Error, Result};
use crate::labels::LabelsSnapshot;
use crate::storage::Storage;
use crate::storage::tables;
use crate::tracking::stream::TrackingSnapshot;
use crate::window::WindowsSnapshot;

/// The format written; older formats are refused with a message.
const FORMAT: u32 = 2;

/// What the checkpoint file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub format: u32,
    /// Next offset to read per (topic, partition).
    pub offsets: Vec<(String, i32, i64)>,
    pub windows: WindowsSnapshot,
    /// Predictions and labels waiting to be joined.
    #[serde(default)]
    pub labels: LabelsSnapshot,
    /// Open runs of the tracking topic.
    #[serde(default)]
    pub tracking: TrackingSnapshot,
    pub counters: Counters,
    /// Evaluators' and sinks' state.
    #[serde(default)]
    pub parts: Parts,
    /// This checkpoint's number (1, 2, ...; 0 in checkpoints written before
    /// it was kept): the files of the interval it ends are named after it,
    /// so a replay of that interval after a crash writes the same names.
    #[serde(default)]
    pub sequence: u64,
}

impl Checkpoint {
    /// A checkpoint of the current format.
    pub fn new(
        offsets: Vec<(String, i32, i64)>,
        windows: WindowsSnapshot,
        labels: LabelsSnapshot,
        tracking: TrackingSnapshot,
        counters: Counters,
        parts: Parts,
        sequence: u64,
    ) -> Self {
        Self {
            format: FORMAT,
            offsets,
            windows,
            labels,
            tracking,
            counters,
            parts,
            sequence,
        }
    }

    /// Reads the checkpoint of `group`, if any.
    pub async fn load(storage: &Storage, group: &str) -> Result<Option<Self>> {
        let location = tables::checkpoint_file(group);
        let Some(bytes) = storage.get_opt(&location).await? else {
            return Ok(None);
        };
        let err = |reason: String| Error::Checkpoint {
            location: location.clone(),
            reason,
        };
        let head: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        let format = head.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format != u64::from(FORMAT) {
            return Err(err(format!(
                "format {format} was written by an older mlwatch (this one reads format {FORMAT}); \
                 finish it with that version (`mlwatch run --until-idle`), or delete the file to \
                 start the group from its committed Kafka offsets"
            )));
        }
        serde_json::from_value(head)
            .map(Some)
            .map_err(|e| err(e.to_string()))
    }

    /// Writes this checkpoint for `group` (one atomic put); returns its
    /// size in bytes.
    pub async fn save(&self, storage: &Storage, group: &str) -> Result<usize> {
        let location = tables::checkpoint_file(group);
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Checkpoint {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        let size = bytes.len();
        storage.put(&location, bytes.into()).await?;
        Ok(size)
    }
}
